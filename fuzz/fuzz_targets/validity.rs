//! A certificate's validity window from arbitrary bytes: never panics; what
//! parses has a window whose arithmetic does not overflow.
#![no_main]
use flor_vertex::validity::{Utc, Validity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Validity::of_der(data) {
        let _ = v.window(0);
        let _ = v.days_left(i64::MAX);
        let _ = v.days_left(i64::MIN);
        let _ = Utc(v.not_after).to_string();
    }
});
