//! Request-path normalisation on arbitrary input: never panics, and what it
//! accepts comes out absolute, free of dot segments, free of encoded
//! unreserved characters, and unchanged by a second pass.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssegate::proxy::normalize::{normalize_path, EncodedSlashes};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    for mode in [EncodedSlashes::Reject, EncodedSlashes::Keep] {
        let Ok(once) = normalize_path(path, mode) else { continue };
        assert!(once.starts_with('/'), "{path:?} -> {once:?}");
        assert!(
            !once.split('/').any(|s| s == "." || s == ".."),
            "dot segment left in {once:?} from {path:?}"
        );
        let twice = normalize_path(&once, mode).expect("a normalised path normalises again");
        assert_eq!(once, twice, "not idempotent for {path:?}");
        if mode == EncodedSlashes::Reject {
            let lower = once.to_ascii_lowercase();
            assert!(!lower.contains("%2f") && !lower.contains("%5c"), "{once:?}");
        }
    }
});
