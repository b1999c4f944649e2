//! `--sweep concurrency=1,2,4` or `--sweep rate=1,2,inf`: the runs of one
//! invocation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What one run is driven at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Most requests in flight; `None` for no cap.
    pub max_concurrency: Option<usize>,
    /// Mean arrivals per second; `None` for all at once (an infinite rate).
    pub request_rate: Option<f64>,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.max_concurrency {
            Some(c) => write!(f, "concurrency {c}")?,
            None => write!(f, "concurrency unlimited")?,
        }
        match self.request_rate {
            Some(r) => write!(f, ", rate {r}/s"),
            None => write!(f, ", rate inf"),
        }
    }
}

/// The values a sweep walks through; the other setting stays as given.
#[derive(Debug, Clone, PartialEq)]
pub enum Sweep {
    /// `--max-concurrency` values.
    Concurrency(Vec<usize>),
    /// `--request-rate` values (`None` = inf).
    Rate(Vec<Option<f64>>),
}

/// Parses a request rate: a positive number, or `inf` for all at once.
pub fn parse_rate(s: &str) -> Result<Option<f64>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("inf") || s.eq_ignore_ascii_case("infinity") {
        return Ok(None);
    }
    match s.parse::<f64>() {
        Ok(r) if r.is_infinite() && r > 0.0 => Ok(None),
        Ok(r) if r > 0.0 && r.is_finite() => Ok(Some(r)),
        _ => Err(format!(
            "'{s}' is not a request rate (a positive number or inf)"
        )),
    }
}

impl FromStr for Sweep {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (key, values) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}': expected concurrency=1,2,4 or rate=1,2,inf"))?;
        let values: Vec<&str> = values.split(',').map(str::trim).collect();
        let sweep = match key.trim() {
            "concurrency" | "max-concurrency" => Sweep::Concurrency(
                values
                    .iter()
                    .map(|v| match v.parse::<usize>() {
                        Ok(c) if c > 0 => Ok(c),
                        _ => Err(format!("'{v}' is not a concurrency (a positive integer)")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "rate" | "request-rate" => Sweep::Rate(
                values
                    .iter()
                    .map(|v| parse_rate(v))
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(format!("cannot sweep '{other}' (concurrency or rate)")),
        };
        Ok(sweep)
    }
}

/// The runs: one per sweep value, or the single given setting.
pub fn points(
    sweep: Option<&Sweep>,
    max_concurrency: Option<usize>,
    rate: Option<f64>,
) -> Vec<Point> {
    match sweep {
        None => vec![Point {
            max_concurrency,
            request_rate: rate,
        }],
        Some(Sweep::Concurrency(cs)) => cs
            .iter()
            .map(|&c| Point {
                max_concurrency: Some(c),
                request_rate: rate,
            })
            .collect(),
        Some(Sweep::Rate(rs)) => rs
            .iter()
            .map(|&r| Point {
                max_concurrency,
                request_rate: r,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_parse_and_expand_into_points() {
        let s: Sweep = "concurrency=1,2,4".parse().unwrap();
        assert_eq!(s, Sweep::Concurrency(vec![1, 2, 4]));
        let p = points(Some(&s), Some(99), Some(5.0));
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].max_concurrency, Some(4));
        assert_eq!(p[2].request_rate, Some(5.0));

        let r: Sweep = "rate=0.5, 2,inf".parse().unwrap();
        assert_eq!(r, Sweep::Rate(vec![Some(0.5), Some(2.0), None]));
        let p = points(Some(&r), Some(8), None);
        assert_eq!(p[0].max_concurrency, Some(8));
        assert_eq!(p[2].request_rate, None);
        assert_eq!(p[0].to_string(), "concurrency 8, rate 0.5/s");

        assert_eq!(points(None, None, None).len(), 1);
        for bad in [
            "concurrency=0",
            "concurrency=1,x",
            "rate=-1",
            "rate=0",
            "batch=1",
            "1,2",
        ] {
            assert!(bad.parse::<Sweep>().is_err(), "{bad:?} should not parse");
        }
    }
}
