//! Request framing that a proxy must refuse rather than interpret: the
//! shapes request smuggling is built from. hyper refuses most of them while
//! parsing (differing Content-Lengths, obs-fold, bare CR, bad chunk sizes);
//! these two it accepts, so ssegate refuses them before routing, as NGINX
//! does since 1.21.1:
//! - `Content-Length` together with `Transfer-Encoding` (RFC 9112 §6.3: "ought
//!   to be handled as an error"); a peer that honours the length would read
//!   the rest of the body as a second request;
//! - any `Transfer-Encoding` other than a lone `chunked`: a coding ssegate
//!   does not apply (`gzip, chunked`) would be dropped on the way upstream.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderMap;

/// Why a request's framing is refused; the request gets a 400 and the
/// connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("Content-Length together with Transfer-Encoding")]
    LengthAndTransferEncoding,
    #[error("Transfer-Encoding {0:?}: only a lone \"chunked\" is accepted")]
    TransferCoding(String),
}

/// Checks the framing headers of a request whose head hyper has parsed.
pub fn check_request_framing(headers: &HeaderMap) -> Result<(), FramingError> {
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_none() {
        return Ok(());
    }
    if headers.contains_key(CONTENT_LENGTH) {
        return Err(FramingError::LengthAndTransferEncoding);
    }
    let all: Vec<String> = codings
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    if all.len() == 1 && all[0] == "chunked" {
        Ok(())
    } else {
        Err(FramingError::TransferCoding(all.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn lone_chunked_or_none_passes() {
        assert_eq!(check_request_framing(&headers(&[])), Ok(()));
        assert_eq!(check_request_framing(&headers(&[("content-length", "5")])), Ok(()));
        assert_eq!(
            check_request_framing(&headers(&[("transfer-encoding", "chunked")])),
            Ok(())
        );
        assert_eq!(
            check_request_framing(&headers(&[("transfer-encoding", " Chunked ")])),
            Ok(())
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        assert_eq!(
            check_request_framing(&headers(&[("transfer-encoding", "chunked"), ("content-length", "5")])),
            Err(FramingError::LengthAndTransferEncoding)
        );
        for te in ["gzip, chunked", "chunked, chunked", "identity", "chunked, identity", ""] {
            assert!(
                matches!(
                    check_request_framing(&headers(&[("transfer-encoding", te)])),
                    Err(FramingError::TransferCoding(_))
                ),
                "{te:?}"
            );
        }
        let two = headers(&[("transfer-encoding", "gzip"), ("transfer-encoding", "chunked")]);
        let mut map = HeaderMap::new();
        for (k, v) in two.iter() {
            map.append(k.clone(), v.clone());
        }
        assert!(check_request_framing(&map).is_err());
    }
}
