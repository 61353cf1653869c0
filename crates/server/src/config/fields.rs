//! How settings are read from the file and the environment: whole numbers as numbers or text,
//! durations in the unit their name ends with, rate limits as text.

/// Whole numbers from the file (numbers) or the environment (text), also where serde's
/// `flatten` hands them over as they came.
pub mod lenient {
    use std::{fmt, marker::PhantomData, str::FromStr};

    use serde::de::{Deserializer, Error, Visitor};

    pub fn number<'de, D, T>(from: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64> + FromStr,
    {
        struct Number<T>(PhantomData<T>);
        impl<T: TryFrom<u64> + FromStr> Visitor<'_> for Number<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative whole number")
            }

            fn visit_u64<E: Error>(self, value: u64) -> Result<T, E> {
                T::try_from(value).map_err(|_| E::custom(format!("{value} is too large")))
            }

            fn visit_i64<E: Error>(self, value: i64) -> Result<T, E> {
                let value = u64::try_from(value).map_err(|_| E::custom("must not be negative"))?;
                self.visit_u64(value)
            }

            fn visit_str<E: Error>(self, value: &str) -> Result<T, E> {
                value
                    .parse()
                    .map_err(|_| E::custom(format!("{value:?} is not a non-negative whole number")))
            }
        }
        from.deserialize_any(Number(PhantomData))
    }
}

/// Durations in the file and the environment are whole numbers of the unit their name ends
/// with (`_ms`, `_secs`).
pub mod millis {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Duration, D::Error> {
        super::lenient::number(from).map(Duration::from_millis)
    }
}

/// Settings written as text and parsed by the type's `FromStr` (rate limits).
pub mod text {
    use std::{fmt::Display, str::FromStr};

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<T: Display, S: Serializer>(value: &T, to: S) -> Result<S::Ok, S::Error> {
        to.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(from: D) -> Result<T, D::Error>
    where
        T: FromStr<Err = String>,
        D: Deserializer<'de>,
    {
        String::deserialize(from)?.parse().map_err(D::Error::custom)
    }
}

pub mod secs {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Duration, D::Error> {
        super::lenient::number(from).map(Duration::from_secs)
    }
}

/// An address that may be switched off: written as `host:port`, or empty for none.
pub mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Option<SocketAddr>, to: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(addr) => to.collect_str(addr),
            None => to.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(from)?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            D::Error::custom(format!("{text:?} is not an address (host:port), nor empty"))
        })
    }
}
