//! Hostnames from SOCKS5 clients and SPIFFE IDs from certificates: never
//! panic; what resolves renders back to the same name (lowercased, no final dot).
#![no_main]
use flor_vertex::identity::{render, resolve, SpiffeId, TrustDomain};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = core::str::from_utf8(data) else { return };
    if let Ok(id) = SpiffeId::parse(s) {
        assert_eq!(id.to_string(), s);
    }
    let Ok(td) = TrustDomain::new("demo.flor") else { return };
    if let Ok(d) = resolve(s, &td) {
        let want = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        assert_eq!(render(&d).as_str(), want);
    }
});
