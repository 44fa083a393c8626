//! Identity side-channel lines (`flor_vertex::callers`) from any local
//! process that may open a service's socket: never panic; a request renders
//! back to a line that parses to the same request, within the line limit;
//! an answer line that parses renders back to itself.
#![no_main]
use flor_vertex::callers::{Answer, Request, MAX_REQUEST_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::parse(data) {
        let back = r.to_line();
        assert!(back.len() <= MAX_REQUEST_LINE, "{back:?}");
        assert_eq!(Request::parse(back.as_bytes()), Ok(r));
    }
    // The answer parser is what the config-server and collector run on the vertex's line.
    if let Ok(text) = core::str::from_utf8(data) {
        if let Ok(a) = Answer::parse(text) {
            assert_eq!(Answer::parse(&a.to_line()), Ok(a));
        }
    }
});
