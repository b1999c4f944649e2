//! How long an idle model stays loaded (Ollama's `keep_alive`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::units::parse_duration;

/// An idle model's time to live: unloaded after this long without requests
/// (zero: as soon as the current requests end), or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Never unloaded for idleness (a negative value).
    Forever,
    /// Unloaded after this long idle.
    For(Duration),
}

impl KeepAlive {
    /// Reads `5m`, `30s`, `500ms`, `0`, or a negative value (`-1`, `-1m`: forever).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix('-') {
            parse_duration(rest).map_err(|e| format!("keep_alive: {e}"))?;
            return Ok(Self::Forever);
        }
        parse_duration(text)
            .map(Self::For)
            .map_err(|e| format!("keep_alive: {e}"))
    }

    /// A number of seconds, as JSON clients send it (negative: forever).
    pub fn from_seconds(seconds: f64) -> Result<Self, String> {
        if seconds.is_nan() {
            return Err("keep_alive: not a number".into());
        }
        if seconds < 0.0 {
            return Ok(Self::Forever);
        }
        Duration::try_from_secs_f64(seconds)
            .map(Self::For)
            .map_err(|_| format!("keep_alive: {seconds} seconds is out of range"))
    }

    /// Whether a model idle for `idle` should be unloaded.
    pub fn expired(&self, idle: Duration) -> bool {
        match self {
            Self::Forever => false,
            Self::For(limit) => idle >= *limit,
        }
    }
}

impl fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forever => write!(f, "-1"),
            Self::For(d) => write!(f, "{}s", d.as_secs_f64()),
        }
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeepAlive;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like \"5m\" or a number of seconds (negative: forever)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeepAlive, E> {
                KeepAlive::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeepAlive, E> {
                KeepAlive::from_seconds(v as f64).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeepAlive, E> {
                KeepAlive::from_seconds(v as f64).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeepAlive, E> {
                KeepAlive::from_seconds(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_reads_durations_numbers_and_negatives() {
        assert_eq!(
            KeepAlive::parse("5m"),
            Ok(KeepAlive::For(Duration::from_secs(300)))
        );
        assert_eq!(KeepAlive::parse("0"), Ok(KeepAlive::For(Duration::ZERO)));
        assert_eq!(KeepAlive::parse("-1"), Ok(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse("-1m"), Ok(KeepAlive::Forever));
        assert!(KeepAlive::parse("soon").is_err());
        assert!(KeepAlive::parse("-soon").is_err());
        assert_eq!(KeepAlive::from_seconds(-1.0), Ok(KeepAlive::Forever));
        assert_eq!(
            KeepAlive::from_seconds(1.5),
            Ok(KeepAlive::For(Duration::from_millis(1500)))
        );
        assert!(KeepAlive::from_seconds(f64::NAN).is_err());
        assert!(KeepAlive::For(Duration::ZERO).expired(Duration::ZERO));
        assert!(!KeepAlive::For(Duration::from_secs(2)).expired(Duration::from_secs(1)));
        assert!(!KeepAlive::Forever.expired(Duration::MAX));
    }

    #[test]
    fn keep_alive_deserializes_from_toml() {
        #[derive(Deserialize)]
        struct T {
            a: KeepAlive,
            b: KeepAlive,
            c: KeepAlive,
        }
        let t: T = toml::from_str("a = \"10m\"\nb = -1\nc = 30").expect("parses");
        assert_eq!(t.a, KeepAlive::For(Duration::from_secs(600)));
        assert_eq!(t.b, KeepAlive::Forever);
        assert_eq!(t.c, KeepAlive::For(Duration::from_secs(30)));
    }
}
