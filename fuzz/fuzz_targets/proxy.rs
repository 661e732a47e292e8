//! The PROXY header reader on arbitrary bytes: no panic, and a parsed header never claims
//! more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, len))) = intake_smtp::proxy::parse(data) {
        assert!(len <= data.len());
    }
});
