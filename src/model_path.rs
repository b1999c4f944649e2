//! Resolving the `--model` argument: a local GGUF file or model directory, a
//! Hugging Face repo id (pulled on first use), or nothing (the default model).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// File name of the default model, placed under `models/` by `scripts/fetch-model`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Turns the `--model` argument into a local path.
pub fn resolve(model: Option<&str>) -> Result<PathBuf> {
    let Some(model) = model else {
        return default_model();
    };
    let path = Path::new(model);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if looks_like_repo_id(model) {
        eprintln!("tessera: {model} is not a local path; pulling it from the hub");
        let dir = tessera_model::hub::pull(
            model,
            &tessera_model::hub::PullOptions {
                progress: true,
                ..Default::default()
            },
        )?;
        return Ok(dir);
    }
    bail!("model '{model}' is neither a file, a directory nor a hub repo id (owner/name)")
}

fn looks_like_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() && !a.starts_with('.'))
}

/// `models/<default>` under the working directory or the source checkout.
fn default_model() -> Result<PathBuf> {
    let candidates = [
        PathBuf::from("models").join(DEFAULT_MODEL_FILE),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(DEFAULT_MODEL_FILE),
    ];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "the default model {DEFAULT_MODEL_FILE} is not under models/: run scripts/fetch-model, or pass --model"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_owner_slash_name() {
        assert!(looks_like_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct"));
        assert!(!looks_like_repo_id("model.gguf"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("./x"));
        assert!(!looks_like_repo_id("/abs"));
    }
}
