//! RBAC tables: which caller may reach which published service.
//!
//! retectl walks users/services/groups → roles → services and writes, per
//! node, one row per caller with the services it may reach. The vertex turns
//! those rows into an [`Acl`] once and answers every handshake from it. The
//! table is immutable; [`AclHandle`] holds it behind an `Arc` so a new table
//! replaces the old one whole while live flows keep the one they started with.
//!
//! A row may pin the caller's certificates (schema 1.2): then the caller must
//! present one of them, by SHA-256 of its DER, so a certificate the CA signed
//! outside retectl's record is refused even though its SPIFFE ID is granted.
//! A row without pins accepts any CA-signed certificate naming the caller.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::artifact::{Pins, VertexConfig};
use crate::identity::SpiffeId;

/// The answer for one (caller, service) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The caller holds a role that grants the service.
    Allowed,
    /// The service is published here, but no role of the caller grants it.
    Denied,
    /// The service is not published on this node.
    UnknownService,
    /// The caller's row pins certificates and this one is none of them (or its pin ran out).
    NotPinned,
}

/// An immutable RBAC table for one vertex.
#[derive(Debug, Default)]
pub struct Acl {
    /// Published service → its bit in a caller's grant mask.
    services: HashMap<SpiffeId, u64>,
    /// Caller → mask of granted services, and its pins (empty: not pinned).
    callers: HashMap<SpiffeId, (u64, Pins)>,
}

impl Acl {
    /// Builds the table from a validated vertex artifact.
    pub fn from_config(cfg: &VertexConfig) -> Acl {
        let services = cfg
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), 1u64 << i))
            .collect();
        let callers = cfg
            .acl
            .iter()
            .map(|row| {
                let mask = row
                    .services
                    .iter()
                    .filter(|&&i| usize::from(i) < 64)
                    .fold(0u64, |m, &i| m | (1u64 << i));
                (row.caller.clone(), (mask, row.pins.clone()))
            })
            .collect();
        Acl { services, callers }
    }

    /// May `caller`, presenting the certificate whose DER hashes to
    /// `cert_sha256`, reach `service` at `now_unix`? The pins are checked
    /// before the grant: a certificate that is not the caller's real one
    /// says so whatever it asks for.
    pub fn check(
        &self,
        caller: &SpiffeId,
        cert_sha256: &[u8; 32],
        service: &SpiffeId,
        now_unix: u64,
    ) -> Verdict {
        let Some(bit) = self.services.get(service) else {
            return Verdict::UnknownService;
        };
        match self.callers.get(caller) {
            Some((_, pins))
                if !pins.is_empty() && !pins.iter().any(|p| p.accepts(cert_sha256, now_unix)) =>
            {
                Verdict::NotPinned
            }
            Some((mask, _)) if mask & bit != 0 => Verdict::Allowed,
            _ => Verdict::Denied,
        }
    }

    /// Does `caller`'s row grant `service`, pins aside? For a caller whose
    /// certificate a vertex already checked against the pins when it admitted
    /// the flow (the side-channel names only admitted callers).
    pub fn grants(&self, caller: &SpiffeId, service: &SpiffeId) -> bool {
        match (self.services.get(service), self.callers.get(caller)) {
            (Some(bit), Some((mask, _))) => mask & bit != 0,
            _ => false,
        }
    }

    /// Number of callers with any grant.
    pub fn callers(&self) -> usize {
        self.callers.len()
    }
}

/// A shared, swappable [`Acl`]: readers take a snapshot, a reload swaps the whole table.
pub type AclHandle = Swap<Acl>;

/// A value shared by every flow and replaced whole by a reload (the ACL, the
/// routes): readers take an `Arc` snapshot that stays valid after a swap, so a
/// flow decided under the old table is never half-way through the new one.
#[derive(Debug, Default)]
pub struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    /// Wraps the first value.
    pub fn new(value: T) -> Self {
        Swap(RwLock::new(Arc::new(value)))
    }

    /// The current value; the snapshot stays valid after a swap.
    pub fn load(&self) -> Arc<T> {
        match self.0.read() {
            Ok(g) => Arc::clone(&g),
            // A writer cannot panic mid-swap (it only moves an Arc), but if it
            // did, the value it left is still a whole value.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the value whole and returns the previous one.
    pub fn swap(&self, value: T) -> Arc<T> {
        let new = Arc::new(value);
        match self.0.write() {
            Ok(mut g) => core::mem::replace(&mut *g, new),
            Err(poisoned) => core::mem::replace(&mut *poisoned.into_inner(), new),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::tests::sample_vertex;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    /// Any certificate: the sample rows pin none.
    const CERT: [u8; 32] = [0; 32];

    #[test]
    fn rows_become_verdicts() {
        let acl = Acl::from_config(&sample_vertex());
        let wiki = id("spiffe://demo.flor/service/wiki");
        let echo = id("spiffe://demo.flor/service/beta/tcp-echo");
        let alice = id("spiffe://demo.flor/user/alice");
        let bob = id("spiffe://demo.flor/user/bob");
        let eve = id("spiffe://demo.flor/user/eve");
        assert_eq!(acl.check(&alice, &CERT, &wiki, 0), Verdict::Allowed);
        assert_eq!(acl.check(&alice, &CERT, &echo, 0), Verdict::Allowed);
        assert_eq!(acl.check(&bob, &CERT, &wiki, 0), Verdict::Allowed);
        assert_eq!(acl.check(&bob, &CERT, &echo, 0), Verdict::Denied);
        assert_eq!(acl.check(&eve, &CERT, &wiki, 0), Verdict::Denied);
        assert_eq!(
            acl.check(&alice, &CERT, &id("spiffe://demo.flor/service/nope"), 0),
            Verdict::UnknownService
        );
        // Same name, other kind: a user called "wiki" is not the service.
        assert_eq!(
            acl.check(&id("spiffe://demo.flor/service/alice"), &CERT, &wiki, 0),
            Verdict::Denied
        );
    }

    #[test]
    fn swap_replaces_whole_table_and_keeps_snapshots() {
        let handle = AclHandle::new(Acl::from_config(&sample_vertex()));
        let bob = id("spiffe://demo.flor/user/bob");
        let wiki = id("spiffe://demo.flor/service/wiki");
        let before = handle.load();
        let mut cfg = sample_vertex();
        cfg.acl.0.retain(|r| r.caller != bob);
        let old = handle.swap(Acl::from_config(&cfg));
        assert!(Arc::ptr_eq(&old, &before));
        // A flow that took its snapshot before the swap keeps its answer...
        assert_eq!(before.check(&bob, &CERT, &wiki, 0), Verdict::Allowed);
        // ...new flows see the new table.
        assert_eq!(handle.load().check(&bob, &CERT, &wiki, 0), Verdict::Denied);
    }

    #[test]
    fn a_pinned_row_takes_only_its_certificates_and_an_old_pin_runs_out() {
        use crate::artifact::{Pin, Sha256Hex};
        let mut cfg = sample_vertex();
        let (new, old, rogue) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let bob = &mut cfg.acl.0[1];
        bob.pins
            .push(Pin {
                sha256: Sha256Hex(new),
                until: None,
            })
            .unwrap();
        bob.pins
            .push(Pin {
                sha256: Sha256Hex(old),
                until: Some(1_000),
            })
            .unwrap();
        let acl = Acl::from_config(&cfg);
        let (bob, alice) = (
            id("spiffe://demo.flor/user/bob"),
            id("spiffe://demo.flor/user/alice"),
        );
        let (wiki, echo) = (
            id("spiffe://demo.flor/service/wiki"),
            id("spiffe://demo.flor/service/beta/tcp-echo"),
        );
        assert_eq!(acl.check(&bob, &new, &wiki, 999), Verdict::Allowed);
        assert_eq!(acl.check(&bob, &new, &wiki, 5_000), Verdict::Allowed);
        assert_eq!(acl.check(&bob, &old, &wiki, 999), Verdict::Allowed);
        // The overlap is over: the replaced certificate is refused.
        assert_eq!(acl.check(&bob, &old, &wiki, 1_000), Verdict::NotPinned);
        // A CA-signed certificate retectl never recorded.
        assert_eq!(acl.check(&bob, &rogue, &wiki, 0), Verdict::NotPinned);
        // The pin is checked before the grant.
        assert_eq!(acl.check(&bob, &rogue, &echo, 0), Verdict::NotPinned);
        assert_eq!(acl.check(&bob, &new, &echo, 0), Verdict::Denied);
        // alice's row pins nothing: any certificate naming her, as before pinning.
        assert_eq!(acl.check(&alice, &rogue, &echo, 0), Verdict::Allowed);
    }
}
