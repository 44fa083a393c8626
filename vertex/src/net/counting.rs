//! The data plane's side of [`crate::counters`]: what a failed dial or a
//! finished flow counts as. Here, so the sites in `serve`/`socks` stay one
//! call each and `counters` needs nothing from `net`.

use std::io;

use super::dial::DialError;
use super::forward::Moved;
use crate::counters::{Flows, Refusal, DIAL, DIAL_HANDSHAKES};

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

/// Counts the bytes of a flow's end on `side` (when it ended cleanly) and hands the result on.
pub(crate) fn ended(side: &Flows, r: io::Result<Moved>) -> io::Result<Moved> {
    if let Ok(m) = &r {
        side.moved(m.to_peer, m.from_peer);
    }
    r
}
