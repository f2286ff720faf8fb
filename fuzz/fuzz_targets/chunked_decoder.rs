//! The chunked decoder on arbitrary input: never panics; the payload and the
//! done/error outcome are the same however the input is cut into calls (the
//! first byte picks the cuts); payload never exceeds input; a failed decoder
//! stays failed, a done one takes nothing more; and a decoded payload,
//! encoded again with `chunk_header`, decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssegate::http1::chunked::{chunk_header, ChunkedDecoder, ChunkedError, Progress, CHUNK_END, LAST_CHUNK};

/// Payload, input consumed, and whether the body is done.
type Outcome = Result<(Vec<u8>, usize, bool), ChunkedError>;

/// A small xorshift, so one seed byte gives a whole sequence of cut lengths.
struct Cuts {
    state: u32,
    max: usize,
}

impl Cuts {
    fn new(seed: u8) -> Self {
        let max = [1, 2, 3, 7, 16, 64, 255, 4096][usize::from(seed & 7)];
        Self {
            state: u32::from(seed).wrapping_mul(0x9e37_79b9) | 1,
            max,
        }
    }
    fn next(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        self.state as usize % (self.max + 1)
    }
}

/// Feeds `input` in pieces whose lengths `cut` gives, each copied into its own buffer as a caller would.
fn decode(input: &[u8], mut cut: impl FnMut() -> usize) -> Outcome {
    let mut d = ChunkedDecoder::new();
    let (mut payload, mut consumed, mut at) = (Vec::new(), 0, 0);
    // Every call but an empty one takes at least a byte, and empty calls are at most every other one.
    let mut calls = 0;
    while at < input.len() || calls == 0 {
        calls += 1;
        assert!(calls <= 2 * input.len() + 2, "no progress");
        let n = if calls % 2 == 0 { cut().max(1) } else { cut() }.min(input.len() - at);
        let piece = &input[at..at + n];
        let mut buf = [piece, b"~~"].concat();
        let result = d.decode_in_place(&mut buf, n);
        let p = match result {
            Err(e) => {
                // Failed for good.
                assert_eq!(d.decode_in_place(&mut LAST_CHUNK.to_vec(), LAST_CHUNK.len()), Err(e));
                assert!(!d.is_done());
                return Err(e);
            }
            Ok(p) => p,
        };
        assert!(p.payload <= p.consumed && p.consumed <= n, "{p:?} of {n}");
        assert_eq!(
            &buf[p.consumed..n],
            &piece[p.consumed..],
            "input after what was consumed changed"
        );
        assert_eq!(&buf[n..], b"~~", "wrote past the input");
        assert_eq!(p.done, d.is_done());
        payload.extend_from_slice(&buf[..p.payload]);
        consumed += p.consumed;
        at += n;
        if p.done {
            let mut rest = piece[p.consumed..].to_vec();
            let len = rest.len();
            assert_eq!(
                d.decode_in_place(&mut rest, len),
                Ok(Progress {
                    payload: 0,
                    consumed: 0,
                    done: true
                })
            );
            return Ok((payload, consumed, true));
        }
        assert_eq!(p.consumed, n, "input left over before done");
    }
    Ok((payload, consumed, false))
}

/// `payload` as chunks of the lengths `cut` gives (at least one byte each), then the last chunk.
fn encode(payload: &[u8], mut cut: impl FnMut() -> usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 64);
    let mut rest = payload;
    while !rest.is_empty() {
        let n = cut().clamp(1, rest.len());
        let mut head = [0; 18];
        let h = chunk_header(n, &mut head);
        out.extend_from_slice(&head[..h]);
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(CHUNK_END);
        rest = &rest[n..];
    }
    out.extend_from_slice(LAST_CHUNK);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, || usize::MAX);
    let mut cuts = Cuts::new(seed);
    assert_eq!(decode(input, || cuts.next()), whole, "cut with seed {seed}");
    let Ok((payload, consumed, done)) = whole else { return };
    assert!(payload.len() <= consumed && consumed <= input.len());
    if !done {
        return;
    }
    // Encoded again, as one chunk and as many, it decodes to itself.
    for one in [true, false] {
        let mut cuts = Cuts::new(seed.wrapping_add(1));
        let encoded = if one {
            encode(&payload, || usize::MAX)
        } else {
            encode(&payload, || cuts.next())
        };
        let again = decode(&encoded, || usize::MAX);
        assert_eq!(again, Ok((payload.clone(), encoded.len(), true)));
    }
});
