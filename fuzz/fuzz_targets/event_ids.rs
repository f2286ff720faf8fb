//! The last-event-id tracker must give the same id however the stream is
//! cut into chunks (the first byte picks the cut points), and the id it
//! gives must fit a `Last-Event-ID` field: at most `MAX_ID_LEN` bytes, no
//! control byte but a tab.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssegate::proxy::event_ids::{EventIds, MAX_ID_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };
    let mut whole = EventIds::default();
    whole.feed(stream);
    let mut chunked = EventIds::default();
    let step = usize::from(seed % 7) + 1;
    for chunk in stream.chunks(step) {
        chunked.feed(chunk);
    }
    assert_eq!(whole.last(), chunked.last());
    if let Some(id) = whole.last() {
        assert!(!id.is_empty() && id.len() <= MAX_ID_LEN);
        assert!(id.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)), "{id:?}");
    }
    // A rewind keeps what was committed.
    let before = whole.last().map(<[u8]>::to_vec);
    whole.rewind();
    assert_eq!(whole.last().map(<[u8]>::to_vec), before);
});
