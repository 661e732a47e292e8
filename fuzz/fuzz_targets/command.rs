//! The command decoder on arbitrary bytes, raw and mapped into an SMTP-ish alphabet so that
//! the fuzzer reaches the verb parsers (Stalwart's smtp-proto fuzz target does the same).
//! Invariants: no panic, every call consumes input or asks for more, the buffer stays
//! bounded by the line limit.
#![no_main]

use bytes::BytesMut;
use intake_proto::{CommandDecoder, LineEndings};
use libfuzzer_sys::fuzz_target;

const ALPHABET: &[u8] = b"EHLOMAILFROMRCPTTODATABDATLASTRSETNOOPQUITVRFYHELP:<>@. =-\r\n\r\n0123456789abcSIZEBODY8BITMIMESMTPUTF8\"\\";

fn run(input: &[u8], le: LineEndings) {
    let mut d = CommandDecoder::new(512, le);
    let mut buf = BytesMut::new();
    for chunk in input.chunks(37) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match d.decode(&mut buf) {
                Ok(Some(_)) | Err(_) => assert!(buf.len() < before, "a result must consume input"),
                Ok(None) => break,
            }
        }
        assert!(buf.len() <= 512 + 37, "buffer bounded by the line limit");
    }
}

fuzz_target!(|data: &[u8]| {
    run(data, LineEndings::Reject);
    run(data, LineEndings::Normalize);
    let mapped: Vec<u8> = data.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()]).collect();
    run(&mapped, LineEndings::Reject);
});
