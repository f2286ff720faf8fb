//! Kubernetes quantities for byte sizes (`64Ki`, `1Mi`, `65536`, `1M`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A quantity as written by the user. It accepts a YAML string or integer,
/// like Kubernetes' own `resource.Quantity`; its CRD schema is in `schema.rs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quantity(pub String);

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u64),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Text(s) => Quantity(s),
            Raw::Int(n) => Quantity(n.to_string()),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a byte quantity: use a whole number with an optional suffix Ki, Mi, Gi, k, M or G, such as 64Ki")]
pub struct QuantityError(pub String);

/// Parses a whole-byte quantity. Fractions and milli units make no sense for
/// a buffer size, so they are refused rather than rounded.
pub fn parse_quantity(text: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError(text.to_owned());
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    if digits.is_empty() {
        return Err(err());
    }
    let n: u64 = digits.parse().map_err(|_| err())?;
    let mult: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        assert_eq!(parse_quantity("64Ki"), Ok(65536));
        assert_eq!(parse_quantity("1Mi"), Ok(1 << 20));
        assert_eq!(parse_quantity("4096"), Ok(4096));
        assert_eq!(parse_quantity("2k"), Ok(2000));
    }

    #[test]
    fn rejects_fractions_and_unknown_suffixes() {
        for bad in ["", "Ki", "1.5Ki", "64KB", "64ki", "-1", "100m"] {
            assert!(parse_quantity(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn accepts_yaml_integers() {
        let q: Quantity = serde_yaml::from_str("65536").unwrap();
        assert_eq!(q.0, "65536");
        let q: Quantity = serde_yaml::from_str("64Ki").unwrap();
        assert_eq!(q.0, "64Ki");
    }
}
