//! HTTP/1.1 heads from any client of the config-server's loopback listeners
//! (through a Florete service) and from any server the agent fetches from:
//! never panic; a complete head lies inside the input and inside MAX_HEAD; a
//! request written back by `write_request` parses to the same method and path.
#![no_main]
use flor_vertex::http::{parse_request, parse_response, write_request, Parsed, MAX_HEAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Complete(r)) = parse_request(data) {
        assert!(r.head_len <= data.len() && r.head_len <= MAX_HEAD);
        let mut out = [0u8; 2 * MAX_HEAD];
        let written = write_request(r.method, "h", r.path, Some(r.content_length), &mut out);
        // A head written back may outgrow MAX_HEAD (Host and Content-Length added).
        if let Some(n) = written.ok().filter(|&n| n < MAX_HEAD) {
            match parse_request(&out[..n]) {
                Ok(Parsed::Complete(back)) => {
                    assert_eq!((back.method, back.path), (r.method, r.path));
                    assert_eq!(back.content_length, r.content_length);
                }
                other => panic!("a written head did not parse back: {other:?}"),
            }
        }
    }
    if let Ok(Parsed::Complete(r)) = parse_response(data) {
        assert!(r.head_len <= data.len() && r.head_len <= MAX_HEAD);
        assert!(r.status <= 999, "three digits");
    }
});
