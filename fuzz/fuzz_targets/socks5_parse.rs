//! SOCKS5 messages from any local process: never panic, never claim more
//! bytes than were given.
#![no_main]
use flor_vertex::socks5::{parse_greeting, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(g)) = parse_greeting(data) {
        assert!(g.len <= data.len());
    }
    if let Ok(Some(r)) = parse_request(data) {
        assert!(r.len <= data.len());
    }
});
