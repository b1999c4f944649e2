//! A drift reference made offline: `tessera drift baseline --from
//! payload.jsonl -o baseline.json` reads a file sink's response events and
//! keeps each signal's values; a server given the file (`--drift-baseline`)
//! starts its versions of that model with this reference instead of waiting
//! for their first requests. Signals the payload cannot show (time to first
//! token) still take their reference from live traffic.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::payload::RESPONSE_TYPE;
use super::signals::{finish_reason_value, Signal};

/// Why a baseline could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A line or the file is not what it should be.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The 1-based line, for JSON lines.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

/// One model's reference values per signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The model it describes.
    pub model: String,
    /// Per signal name, its values (at most the server's reference size is
    /// used: an even spread of them).
    pub signals: BTreeMap<String, Vec<f64>>,
}

impl Baseline {
    /// Reads response events of `model` (or, when `None`, of the only model
    /// in the file) from payload-log JSON lines.
    pub fn from_payload(path: &Path, model: Option<&str>) -> Result<Baseline, BaselineError> {
        let io = |source| BaselineError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut per_model: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let event: Value = serde_json::from_str(&line).map_err(|e| BaselineError::Invalid {
                path: path.to_path_buf(),
                line: Some(i + 1),
                message: format!("not a payload event: {e}"),
            })?;
            if event["type"] != RESPONSE_TYPE || event["status"] != 200 {
                continue;
            }
            let name = event["model"].as_str().unwrap_or_default().to_string();
            if model.is_some_and(|m| m != name) {
                continue;
            }
            let signals = per_model.entry(name).or_default();
            for (signal, value) in response_values(&event["body"]) {
                signals
                    .entry(signal.as_str().to_string())
                    .or_default()
                    .push(value);
            }
        }
        let invalid = |message: String| BaselineError::Invalid {
            path: path.to_path_buf(),
            line: None,
            message,
        };
        let names: Vec<String> = per_model.keys().cloned().collect();
        let (model, signals) = match (model, per_model.into_iter().next()) {
            (_, None) => return Err(invalid("no successful response events".into())),
            (None, Some(_)) if names.len() > 1 => {
                return Err(invalid(format!(
                    "responses of several models ({}): choose one with --model",
                    names.join(", ")
                )))
            }
            (_, Some(first)) => first,
        };
        Ok(Baseline { model, signals })
    }

    /// Reads a baseline file.
    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| BaselineError::Invalid {
            path: path.to_path_buf(),
            line: None,
            message: format!("not a drift baseline: {e}"),
        })
    }

    /// Writes it as JSON.
    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|source| BaselineError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// `signal`'s values, spread evenly down to at most `n`.
    pub fn values(&self, signal: Signal, n: usize) -> Vec<f64> {
        let all = self
            .signals
            .get(signal.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        if all.len() <= n {
            return all.to_vec();
        }
        (0..n).map(|i| all[i * all.len() / n]).collect()
    }
}

/// The signals a (whole or streamed) response body shows.
fn response_values(body: &Value) -> Vec<(Signal, f64)> {
    let mut out = Vec::new();
    // A streamed response is logged as its chunks.
    let parts: Vec<&Value> = match body {
        Value::Array(chunks) => chunks.iter().collect(),
        other => vec![other],
    };
    for part in parts {
        if let Some(p) = part["usage"]["prompt_tokens"].as_f64() {
            out.push((Signal::PromptTokens, p));
        }
        let choices = part["choices"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let whole = !body.is_array();
        for c in choices {
            if let Some(reason) = c["finish_reason"].as_str() {
                out.push((Signal::FinishReason, finish_reason_value(reason)));
            }
            // Per-choice completion lengths are only known from a whole
            // body with one choice (usage sums over choices).
            if whole && choices.len() == 1 {
                if let Some(n) = part["usage"]["completion_tokens"].as_f64() {
                    out.push((Signal::CompletionTokens, n));
                }
            }
            let lps: Vec<f64> = c["logprobs"]["token_logprobs"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .or_else(|| {
                    c["logprobs"]["content"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|t| t["logprob"].as_f64()).collect())
                })
                .unwrap_or_default();
            if whole && !lps.is_empty() {
                out.push((
                    Signal::MeanLogprob,
                    lps.iter().sum::<f64>() / lps.len() as f64,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_become_reference_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        let lines = [
            r#"{"type":"org.kubeflow.serving.inference.request","model":"m","status":null,"body":{}}"#,
            r#"{"type":"org.kubeflow.serving.inference.response","model":"m","status":200,"body":{"choices":[{"finish_reason":"length","logprobs":{"token_logprobs":[-1.0,-3.0]}}],"usage":{"prompt_tokens":7,"completion_tokens":2}}}"#,
            r#"{"type":"org.kubeflow.serving.inference.response","model":"m","status":400,"body":{}}"#,
            r#"{"type":"org.kubeflow.serving.inference.response","model":"other","status":200,"body":{"usage":{"prompt_tokens":1}}}"#,
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let b = Baseline::from_payload(&path, Some("m")).unwrap();
        assert_eq!(b.values(Signal::PromptTokens, 10), vec![7.0]);
        assert_eq!(b.values(Signal::CompletionTokens, 10), vec![2.0]);
        assert_eq!(b.values(Signal::MeanLogprob, 10), vec![-2.0]);
        assert_eq!(b.values(Signal::FinishReason, 10), vec![1.0]);
        let e = Baseline::from_payload(&path, None).unwrap_err().to_string();
        assert!(e.contains("several models") && e.contains("p.jsonl"), "{e}");
        let out = dir.path().join("b.json");
        b.save(&out).unwrap();
        assert_eq!(Baseline::load(&out).unwrap(), b);
        std::fs::write(&path, "{not json\n").unwrap();
        let e = Baseline::from_payload(&path, None).unwrap_err().to_string();
        assert!(e.contains("p.jsonl:1"), "{e}");
    }

    #[test]
    fn values_are_spread_down_to_the_reference_size() {
        let b = Baseline {
            model: "m".into(),
            signals: [(
                "prompt_tokens".to_string(),
                (0..100).map(f64::from).collect(),
            )]
            .into(),
        };
        assert_eq!(
            b.values(Signal::PromptTokens, 4),
            vec![0.0, 25.0, 50.0, 75.0]
        );
        assert!(b.values(Signal::TimeToFirstToken, 4).is_empty());
    }
}
