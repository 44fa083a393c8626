//! Bundles and CSR requests from a USB stick or an email: never panic.
#![no_main]
use flor_vertex::bundle::{Bundle, CsrRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Bundle::parse(data);
    let _ = CsrRequest::parse(data);
});
