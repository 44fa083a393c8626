//! The data plane's side of [`crate::counters`]: what a failed dial counts
//! as. Here, so the site in `socks` stays one call and `counters` needs
//! nothing from `net`. (A flow's bytes are counted by the pump as they move.)

use super::dial::DialError;
use crate::counters::{Refusal, DIAL, DIAL_HANDSHAKES};

/// Counts a failed dial of the SOCKS5 side by its error.
pub(crate) fn dial_failed(e: &DialError) {
    let why = match e {
        DialError::Denied => Refusal::Acl,
        DialError::UnknownService => Refusal::UnknownService,
        DialError::UpstreamRefused | DialError::UpstreamUnreachable => Refusal::Upstream,
        DialError::Overloaded => Refusal::Overloaded,
        DialError::NotPinned => Refusal::NotPinned,
        DialError::Unreachable => Refusal::Unreachable,
        DialError::Handshake(h) => {
            DIAL_HANDSHAKES.failed_with(h);
            Refusal::Handshake
        }
        _ => Refusal::Other,
    };
    DIAL.refused(why);
}
