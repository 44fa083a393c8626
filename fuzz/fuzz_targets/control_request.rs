//! Control-socket request lines from any local client that may open the
//! socket: never panic; a request renders back to a line that parses to the
//! same request; a duration renders back to the seconds it parsed to.
#![no_main]
use flor_vertex::control::{parse_duration, Request, MAX_REQUEST};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The agent reads at most MAX_REQUEST bytes and parses them as text.
    let line = String::from_utf8_lossy(&data[..data.len().min(MAX_REQUEST)]);
    if let Some(r) = Request::parse(line.trim()) {
        let back = r.to_line();
        assert!(back.len() <= MAX_REQUEST);
        assert_eq!(Request::parse(&back), Some(r));
    }
    if let Ok(s) = core::str::from_utf8(data) {
        if let Some(secs) = parse_duration(s) {
            assert_eq!(parse_duration(&format!("{secs}s")), Some(secs));
            assert_eq!(parse_duration(&secs.to_string()), Some(secs));
        }
    }
});
