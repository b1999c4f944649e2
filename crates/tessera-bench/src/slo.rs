//! Service-level objectives for goodput (`--slo ttft=200ms,tpot=50ms`) and the
//! duration syntax they and `--timeout` share.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Parses `200ms`, `1.5s`, `250us`, `2m`; a bare number is in `bare_unit`
/// (`"ms"` for SLOs, as vLLM's `--goodput`; `"s"` for timeouts).
pub fn parse_duration(text: &str, bare_unit: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 200ms, 1.5s)"))?;
    let unit = if unit.is_empty() {
        bare_unit
    } else {
        unit.trim()
    };
    let seconds = match unit {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" | "min" => value * 60.0,
        other => return Err(format!("'{text}': unknown unit '{other}' (us, ms, s, m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("'{text}': {e}"))
}

/// The objectives a request must all meet to count towards goodput. A request
/// with one output token has no TPOT; like vLLM, it meets any TPOT objective.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// Most time to first token, in milliseconds.
    pub ttft_ms: Option<f64>,
    /// Most time per output token, in milliseconds.
    pub tpot_ms: Option<f64>,
    /// Most end-to-end latency, in milliseconds.
    pub e2el_ms: Option<f64>,
}

impl Slo {
    /// Whether a request with these times (seconds) meets every objective.
    pub fn met(&self, ttft_s: f64, tpot_s: Option<f64>, e2el_s: f64) -> bool {
        let within = |limit: Option<f64>, value_s: f64| limit.is_none_or(|ms| value_s * 1e3 <= ms);
        within(self.ttft_ms, ttft_s)
            && within(self.tpot_ms, tpot_s.unwrap_or(0.0))
            && within(self.e2el_ms, e2el_s)
    }
}

impl FromStr for Slo {
    type Err = String;

    /// `ttft=200ms,tpot=50ms,e2el=2s`; `:` works for `=` and spaces for commas
    /// (vLLM's `--goodput ttft:200 tpot:50`); a bare number is milliseconds.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut slo = Slo::default();
        let items = s.split([',', ' ']).map(str::trim).filter(|i| !i.is_empty());
        for item in items {
            let (key, value) = item
                .split_once(['=', ':'])
                .ok_or_else(|| format!("'{item}': expected METRIC=DURATION, e.g. ttft=200ms"))?;
            let ms = parse_duration(value, "ms")?.as_secs_f64() * 1e3;
            if ms <= 0.0 {
                return Err(format!("'{item}': an objective must be positive"));
            }
            let slot = match key.trim().to_ascii_lowercase().as_str() {
                "ttft" => &mut slo.ttft_ms,
                "tpot" => &mut slo.tpot_ms,
                "e2el" | "e2e" => &mut slo.e2el_ms,
                other => return Err(format!("unknown SLO metric '{other}' (ttft, tpot or e2el)")),
            };
            if slot.replace(ms).is_some() {
                return Err(format!("'{key}' is given twice"));
            }
        }
        if slo == Slo::default() {
            return Err("no objective given (e.g. ttft=200ms,tpot=50ms)".into());
        }
        Ok(slo)
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("ttft", self.ttft_ms),
            ("tpot", self.tpot_ms),
            ("e2el", self.e2el_ms),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|ms| format!("{k}={ms}ms")))
        .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_a_default() {
        assert_eq!(parse_duration("200ms", "s"), Ok(Duration::from_millis(200)));
        assert_eq!(
            parse_duration("1.5s", "ms"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(parse_duration("250us", "s"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m", "s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("50", "ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("3", "s"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast", "s").is_err());
        assert!(parse_duration("5h", "s").is_err());
        assert!(parse_duration("-5ms", "s").is_err());
    }

    #[test]
    fn slos_parse_in_both_spellings() {
        let slo: Slo = "ttft=200ms,tpot=50ms".parse().unwrap();
        assert_eq!(
            slo,
            Slo {
                ttft_ms: Some(200.0),
                tpot_ms: Some(50.0),
                e2el_ms: None
            }
        );
        let vllm: Slo = "ttft:200 tpot:50".parse().unwrap();
        assert_eq!(vllm, slo);
        assert_eq!(slo.to_string(), "ttft=200ms,tpot=50ms");
        let e2e: Slo = "e2el=1.5s".parse().unwrap();
        assert_eq!(e2e.e2el_ms, Some(1500.0));
        for bad in [
            "",
            "itl=5ms",
            "ttft=5ms,ttft=6ms",
            "ttft",
            "ttft=0ms",
            "ttft=x",
        ] {
            assert!(bad.parse::<Slo>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn a_request_meets_an_slo_only_within_every_objective() {
        let slo: Slo = "ttft=200ms,tpot=50ms".parse().unwrap();
        assert!(slo.met(0.2, Some(0.05), 10.0)); // at the limits
        assert!(!slo.met(0.201, Some(0.01), 1.0));
        assert!(!slo.met(0.1, Some(0.051), 1.0));
        assert!(slo.met(0.1, None, 1.0)); // one token: no TPOT
        let e2e: Slo = "e2el=1s".parse().unwrap();
        assert!(e2e.met(5.0, Some(5.0), 1.0) && !e2e.met(0.0, None, 1.001));
    }
}
