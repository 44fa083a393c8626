//! RBAC tables: which caller may reach which published service.
//!
//! retectl walks users/services/groups → roles → services and writes, per
//! node, one row per caller with the services it may reach. The vertex turns
//! those rows into an [`Acl`] once and answers every handshake from it. The
//! table is immutable; [`AclHandle`] holds it behind an `Arc` so a new table
//! replaces the old one whole while live flows keep the one they started with.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::artifact::VertexConfig;
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
}

/// An immutable RBAC table for one vertex.
#[derive(Debug, Default)]
pub struct Acl {
    /// Published service → its bit in a caller's grant mask.
    services: HashMap<SpiffeId, u64>,
    /// Caller → mask of granted services.
    callers: HashMap<SpiffeId, u64>,
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
                (row.caller.clone(), mask)
            })
            .collect();
        Acl { services, callers }
    }

    /// May `caller` reach `service`?
    pub fn check(&self, caller: &SpiffeId, service: &SpiffeId) -> Verdict {
        let Some(bit) = self.services.get(service) else {
            return Verdict::UnknownService;
        };
        match self.callers.get(caller) {
            Some(mask) if mask & bit != 0 => Verdict::Allowed,
            _ => Verdict::Denied,
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

    #[test]
    fn rows_become_verdicts() {
        let acl = Acl::from_config(&sample_vertex());
        let wiki = id("spiffe://demo.flor/service/wiki");
        let echo = id("spiffe://demo.flor/service/beta/tcp-echo");
        let alice = id("spiffe://demo.flor/user/alice");
        let bob = id("spiffe://demo.flor/user/bob");
        let eve = id("spiffe://demo.flor/user/eve");
        assert_eq!(acl.check(&alice, &wiki), Verdict::Allowed);
        assert_eq!(acl.check(&alice, &echo), Verdict::Allowed);
        assert_eq!(acl.check(&bob, &wiki), Verdict::Allowed);
        assert_eq!(acl.check(&bob, &echo), Verdict::Denied);
        assert_eq!(acl.check(&eve, &wiki), Verdict::Denied);
        assert_eq!(
            acl.check(&alice, &id("spiffe://demo.flor/service/nope")),
            Verdict::UnknownService
        );
        // Same name, other kind: a user called "wiki" is not the service.
        assert_eq!(
            acl.check(&id("spiffe://demo.flor/service/alice"), &wiki),
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
        assert_eq!(before.check(&bob, &wiki), Verdict::Allowed);
        // ...new flows see the new table.
        assert_eq!(handle.load().check(&bob, &wiki), Verdict::Denied);
    }
}
