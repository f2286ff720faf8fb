//! The SSE event-boundary tracker must give the same answer however the
//! stream is cut into chunks: the first byte picks the cut points.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssegate::proxy::sse::EventBoundary;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };
    let mut whole = EventBoundary::default();
    whole.feed(stream);
    let mut chunked = EventBoundary::default();
    let step = usize::from(seed % 7) + 1;
    for chunk in stream.chunks(step) {
        chunked.feed(chunk);
    }
    assert_eq!(whole, chunked);
    // Byte by byte, a boundary is never reported right after a field byte.
    let mut bytewise = EventBoundary::default();
    for &b in stream {
        bytewise.feed(&[b]);
        if bytewise.at_boundary() {
            assert!(b == b'\n' || b == b'\r', "boundary after {b:#x}");
        }
    }
    assert_eq!(whole, bytewise);
});
