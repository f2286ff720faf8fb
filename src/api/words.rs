//! Deserialization of the API's one-word enums (`Enabled`, `RoundRobin`,
//! `Exact`...) with errors that say what is allowed.
//!
//! serde's derived enum deserializer fails on a boolean with serde_yaml's
//! internals ("expected a Value::Tagged enum"). A hand-written visitor can
//! name the allowed words and explain YAML's habit of reading unquoted
//! `on`, `off`, `yes`, `no`, `true` and `false` as booleans.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;

/// The message for a value that is not one of `words`; `got` describes it.
pub(crate) fn not_one_of(words: &[&str], got: &str) -> String {
    format!("must be one of {} (got {got})", words.join(", "))
}

/// Deserializes one of `words` (matched exactly), giving `values[i]` for `words[i]`.
pub(crate) fn deserialize_word<'de, D, T>(
    d: D,
    words: &'static [&'static str],
    values: &'static [T],
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Copy + 'static,
{
    struct Word<T: 'static> {
        words: &'static [&'static str],
        values: &'static [T],
    }

    impl<T: Copy> Word<T> {
        fn fail<E: de::Error>(&self, got: &str) -> E {
            E::custom(not_one_of(self.words, got))
        }
    }

    impl<'de, T: Copy> Visitor<'de> for Word<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "one of {}", self.words.join(", "))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            match self.words.iter().position(|w| *w == v) {
                Some(i) => Ok(self.values[i]),
                None => Err(self.fail(&format!("{v:?}"))),
            }
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
            Err(self.fail(&format!(
                "a boolean {v}; YAML reads unquoted on/off/yes/no/true/false as booleans"
            )))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            Err(self.fail(&format!("a number {v}")))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            Err(self.fail(&format!("a number {v}")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            Err(self.fail(&format!("a number {v}")))
        }

        fn visit_unit<E: de::Error>(self) -> Result<T, E> {
            Err(self.fail("an empty value"))
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<T, A::Error> {
            Err(self.fail("a list"))
        }

        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<T, A::Error> {
            Err(self.fail("a mapping"))
        }
    }

    d.deserialize_any(Word { words, values })
}

/// Implements `Deserialize` for a fieldless enum from its variant names.
macro_rules! word_enum {
    ($ty:ident { $($variant:ident),+ $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::api::words::deserialize_word(
                    d,
                    &[$(stringify!($variant)),+],
                    &[$($ty::$variant),+],
                )
            }
        }
    };
}
pub(crate) use word_enum;

#[cfg(test)]
mod tests {
    use crate::api::{LoadBalancing, PathMatchType, ProxyBuffering};

    fn err<T: serde::de::DeserializeOwned + std::fmt::Debug>(yaml: &str) -> String {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        serde_yaml::from_value::<T>(value).unwrap_err().to_string()
    }

    #[test]
    fn reads_the_words_from_yaml_and_json() {
        assert_eq!(
            serde_yaml::from_str::<ProxyBuffering>("Disabled").unwrap(),
            ProxyBuffering::Disabled
        );
        assert_eq!(
            serde_json::from_str::<LoadBalancing>("\"RoundRobin\"").unwrap(),
            LoadBalancing::RoundRobin
        );
        assert_eq!(
            serde_yaml::from_value::<PathMatchType>(serde_yaml::Value::String("Exact".into())).unwrap(),
            PathMatchType::Exact
        );
    }

    #[test]
    fn booleans_are_explained() {
        assert_eq!(
            err::<ProxyBuffering>("true"),
            "must be one of Enabled, Disabled, Auto (got a boolean true; YAML reads unquoted on/off/yes/no/true/false as booleans)"
        );
    }

    #[test]
    fn other_values_name_the_allowed_words() {
        assert_eq!(
            err::<ProxyBuffering>("Sometimes"),
            "must be one of Enabled, Disabled, Auto (got \"Sometimes\")"
        );
        assert_eq!(
            err::<LoadBalancing>("5"),
            "must be one of RoundRobin, LeastConnections (got a number 5)"
        );
        assert_eq!(
            err::<PathMatchType>("[Exact]"),
            "must be one of Exact, PathPrefix (got a list)"
        );
    }
}
