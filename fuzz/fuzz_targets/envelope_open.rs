//! Envelope verification on arbitrary bytes: never panics; anything accepted
//! without the key must be impossible (the trusted key here signs nothing).
#![no_main]
use flor_vertex::artifact::{AgentConfig, MgmtSigner, PublicKeyHex, VertexConfig};
use flor_vertex::envelope::{open, peek_header, ArtifactKind, Expect};
use flor_vertex::identity::{Name, SpiffeId, TrustDomain};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (Ok(rete), Ok(node), Ok(id)) = (
        TrustDomain::new("demo.flor"),
        Name::new("beta"),
        SpiffeId::parse("spiffe://demo.flor/management-plane/primary"),
    ) else {
        return;
    };
    let trusted = [MgmtSigner { id, key: PublicKeyHex([9; 32]) }];
    let _ = peek_header(data);
    for kind in [ArtifactKind::Agent, ArtifactKind::Vertex] {
        let e = Expect { kind, rete: &rete, node: &node, trusted: &trusted, current_version: Some(1) };
        assert!(open::<VertexConfig>(data, &e).is_err());
        assert!(open::<AgentConfig>(data, &e).is_err());
    }
});
