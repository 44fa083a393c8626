//! Certificate pins: which of a caller's certificates a serving vertex
//! accepts, from the certificates retectl issued (`enrollment.log`).
//!
//! ```text
//! enrollment.log (every certificate retectl issued) + rete.yaml pin_overlap_days
//!   -> per principal: the newest certificate (no end), and each older one
//!      until its successor's issue time + pin_overlap_days (or its expiry)
//!   -> the `pins` of the principal's ACL rows in every vertex artifact
//! ```
//!
//! A certificate the CA signed without retectl (no line in the log) is in no
//! pin list, so a vertex refuses it even though its SPIFFE ID is granted. An
//! older certificate keeps its pin through a renewal, so a node can enroll its
//! new bundle after the artifacts that pin both were published; the pin ends
//! at a time written into the artifact, which the vertex compares with its own
//! clock, so the old certificate falls out without another compile.
//!
//! Deterministic: only the log's own times are used, never the clock of the
//! machine that compiles, so the same repo gives the same artifacts.

use std::collections::BTreeMap;

use flor_vertex::artifact::{Pin, Pins, Sha256Hex};
use flor_vertex::validity::DAY_S;

use crate::certs::Logged;

/// `rete.yaml pin_overlap_days` when it is not set: a week to enroll a renewed bundle.
pub const DEFAULT_OVERLAP_DAYS: u32 = 7;

/// The pins of every principal the log names, by SPIFFE ID (as logged).
///
/// For each principal, newest first: its newest certificate, with no end;
/// then each older certificate whose pin has not ended when the newest was
/// issued, ending at the earlier of its own expiry and its successor's issue
/// time plus `overlap_days`. At most [`Pins::CAPACITY`]; older ones beyond
/// that are dropped. Lines of the CA and the signers name no caller and are
/// never looked up.
pub fn from_log(log: &[Logged], overlap_days: u32) -> BTreeMap<String, Pins> {
    let overlap = i64::from(overlap_days) * DAY_S;
    let mut by_principal: BTreeMap<&str, Vec<&Logged>> = BTreeMap::new();
    for l in log {
        by_principal
            .entry(l.issued.principal.as_str())
            .or_default()
            .push(l);
    }
    let mut out = BTreeMap::new();
    for (principal, mut certs) in by_principal {
        // The log is append-only, so this keeps its order; sorting makes a
        // hand-merged log behave the same.
        certs.sort_by_key(|l| l.issued_unix);
        let Some(newest) = certs.last() else {
            continue;
        };
        let mut pins = Pins::default();
        let _ = pins.push(Pin {
            sha256: Sha256Hex(newest.sha256),
            until: None,
        });
        for pair in certs.windows(2).rev() {
            let (old, successor) = (pair[0], pair[1]);
            let until = old
                .issued
                .not_after
                .min(successor.issued_unix.saturating_add(overlap));
            if until <= newest.issued_unix {
                // Its pin had ended before the newest was issued; so had every older one's
                // (their successors were issued earlier still).
                break;
            }
            // A Unix time past u32 (year 2106) is beyond any certificate's life: no end.
            let pin = Pin {
                sha256: Sha256Hex(old.sha256),
                until: u32::try_from(until).ok(),
            };
            if pins.push(pin).is_err() {
                break;
            }
        }
        out.insert(principal.to_owned(), pins);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::Issued;

    const T0: i64 = 1_800_000_000;

    fn cert(who: &str, n: u8, issued_unix: i64, days: i64) -> Logged {
        Logged {
            issued: Issued {
                issued_at: String::new(),
                flow: "flow-a".into(),
                principal: who.into(),
                not_after: issued_unix + days * DAY_S,
            },
            issued_unix,
            sha256: [n; 32],
        }
    }

    fn pins(log: &[Logged], overlap: u32, who: &str) -> Vec<(u8, Option<u32>)> {
        from_log(log, overlap)[who]
            .iter()
            .map(|p| (p.sha256.0[0], p.until))
            .collect()
    }

    fn at(t: i64) -> Option<u32> {
        Some(u32::try_from(t).unwrap())
    }

    #[test]
    fn a_renewal_keeps_the_old_certificate_for_the_overlap() {
        let bob = "spiffe://t/user/bob";
        let renewed = T0 + 330 * DAY_S;
        let log = [cert(bob, 1, T0, 365), cert(bob, 2, renewed, 365)];
        assert_eq!(
            pins(&log, 7, bob),
            [(2, None), (1, at(renewed + 7 * DAY_S))]
        );
        // The old certificate expires before the overlap ends: its expiry ends the pin.
        assert_eq!(pins(&log, 60, bob), [(2, None), (1, at(T0 + 365 * DAY_S))]);
        // No overlap: only the newest.
        assert_eq!(pins(&log, 0, bob), [(2, None)]);
    }

    #[test]
    fn only_pins_still_running_when_the_newest_was_issued_are_kept() {
        let bob = "spiffe://t/user/bob";
        let alice = "spiffe://t/user/alice";
        let log = [
            cert(bob, 1, T0, 365),
            cert(alice, 9, T0, 365),
            // Renewed on day 90, then twice in two days: the day-90 and day-100
            // ones still overlap the newest; the first one's pin ended on day 97.
            cert(bob, 2, T0 + 90 * DAY_S, 365),
            cert(bob, 3, T0 + 100 * DAY_S, 365),
            cert(bob, 4, T0 + 102 * DAY_S, 365),
        ];
        assert_eq!(
            pins(&log, 7, bob),
            [
                (4, None),
                (3, at(T0 + 109 * DAY_S)),
                (2, at(T0 + 107 * DAY_S)),
            ]
        );
        assert_eq!(pins(&log, 7, alice), [(9, None)]);
        // Renewed again 98 days later: only the certificate it replaced keeps a pin.
        let mut later = log.to_vec();
        later.push(cert(bob, 5, T0 + 200 * DAY_S, 365));
        assert_eq!(pins(&later, 7, bob), [(5, None), (4, at(T0 + 207 * DAY_S))]);
    }

    #[test]
    fn at_most_the_device_limit_newest_first() {
        let bob = "spiffe://t/user/bob";
        let log: Vec<Logged> = (0..10u8)
            .map(|i| cert(bob, i, T0 + i64::from(i) * 60, 365))
            .collect();
        let got = pins(&log, 7, bob);
        assert_eq!(got.len(), Pins::CAPACITY);
        assert_eq!(got[0], (9, None));
        assert_eq!(got[1].0, 8);
    }

    #[test]
    fn the_same_log_gives_the_same_pins_in_any_order() {
        let bob = "spiffe://t/user/bob";
        let a = [cert(bob, 1, T0, 365), cert(bob, 2, T0 + DAY_S, 365)];
        let b = [a[1].clone(), a[0].clone()];
        assert_eq!(from_log(&a, 7), from_log(&b, 7));
    }
}
