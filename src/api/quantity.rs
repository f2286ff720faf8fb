//! Kubernetes quantities for byte sizes (`64Ki`, `1Mi`, `65536`, `1M`).

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

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
    /// Hand-written so that a wrong value says what a quantity looks like,
    /// not which serde variant failed.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Quantity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_owned()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                match u64::try_from(v) {
                    Ok(n) => Ok(Quantity(n.to_string())),
                    Err(_) => Err(E::custom(format!("must be {EXPECTED}, got {v}"))),
                }
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Err(E::custom(format!("must be {EXPECTED} (whole bytes), got {v}")))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Quantity, E> {
                Err(E::custom(format!("must be {EXPECTED}, got a boolean {v}")))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// What a byte quantity looks like, for error messages.
const EXPECTED: &str = "a positive quantity such as 64Ki or 1Mi";

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

    #[test]
    fn wrong_values_say_what_a_quantity_is() {
        let err = |yaml: &str| {
            let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
            serde_yaml::from_value::<Quantity>(value).unwrap_err().to_string()
        };
        assert_eq!(err("-5"), "must be a positive quantity such as 64Ki or 1Mi, got -5");
        assert_eq!(
            err("1.5"),
            "must be a positive quantity such as 64Ki or 1Mi (whole bytes), got 1.5"
        );
        assert_eq!(
            err("true"),
            "must be a positive quantity such as 64Ki or 1Mi, got a boolean true"
        );
        assert!(err("[1]").contains("expected a positive quantity such as 64Ki or 1Mi"));
    }
}
