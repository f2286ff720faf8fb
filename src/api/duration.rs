//! Gateway API style durations: one to four `<number><unit>` parts, units
//! `h`, `m`, `s` and `ms`, for example `1h`, `1m30s`, `250ms` or `0s`.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("{0:?} is not a duration: use numbers with units h, m, s or ms, such as 5s or 1m30s")]
    Malformed(String),
}

/// Parses a Gateway API duration (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_owned());
    let bytes = text.as_bytes();
    let mut total = Duration::ZERO;
    let mut parts = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[start..i];
        if digits.is_empty() || digits.len() > 5 {
            return Err(malformed());
        }
        let n: u64 = digits.parse().map_err(|_| malformed())?;
        let unit = if text[i..].starts_with("ms") {
            i += 2;
            Duration::from_millis(1)
        } else {
            let unit = match bytes.get(i) {
                Some(b'h') => Duration::from_secs(3600),
                Some(b'm') => Duration::from_secs(60),
                Some(b's') => Duration::from_secs(1),
                _ => return Err(malformed()),
            };
            i += 1;
            unit
        };
        total += unit * n as u32;
        parts += 1;
        if parts > 4 {
            return Err(malformed());
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_api_durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(Duration::from_millis(3_723_004)));
    }

    #[test]
    fn rejects_other_forms() {
        for bad in ["", "5", "s", "1.5s", "-1s", "5 s", "1d", "123456s", "1h1h1h1h1h", "5S"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
