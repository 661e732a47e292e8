//! The DATA and BDAT decoders on arbitrary bytes split at arbitrary points. Invariants: no
//! panic; the outcome does not depend on how the input was split; the kept content never
//! exceeds the limit; under `Reject` no message ends on anything but CRLF.CRLF.
#![no_main]

use bytes::BytesMut;
use intake_proto::{BdatDecoder, DataDecoder, LineEndings};
use libfuzzer_sys::fuzz_target;

fn decode(input: &[u8], split: usize, le: LineEndings) -> (Option<intake_proto::DataOutcome>, Vec<u8>, usize) {
    let mut d = DataDecoder::new(300, le);
    let mut out = BytesMut::new();
    let mut consumed = 0;
    let mut result = None;
    for part in [&input[..split], &input[split..]] {
        let mut b = BytesMut::from(part);
        let len = b.len();
        if result.is_none() {
            result = d.decode(&mut b, &mut out);
            consumed += len - b.len();
        }
        assert!(out.len() <= 300, "kept content bounded by the limit");
    }
    (result, out.to_vec(), consumed)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = data[0] as usize % data.len();
    let input = &data[1..];
    let split = split.min(input.len());
    for le in [LineEndings::Reject, LineEndings::Normalize] {
        let whole = decode(input, input.len(), le);
        let parts = decode(input, split, le);
        assert_eq!(whole, parts, "split-independent");
        if whole.0.is_some() {
            // The end of data was exactly CRLF.CRLF (or the input started with .CRLF).
            let end = whole.2;
            assert!(input[..end].ends_with(b".\r\n"));
            assert!(end == 3 || input[..end].ends_with(b"\r\n.\r\n"));
        }
    }
    let mut b = BdatDecoder::new(split as u64, true);
    let mut out = BytesMut::new();
    let mut inp = BytesMut::from(input);
    let done = b.decode(&mut inp, &mut out);
    assert_eq!(done, split <= input.len());
    assert_eq!(out.len(), split.min(input.len()));
});
