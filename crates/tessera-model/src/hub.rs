//! Pulling model repositories from a Hugging Face hub into the local hub cache.
//!
//! The cache layout, the endpoint and the credentials are hf-hub's: `HF_HOME` (cache
//! under `$HF_HOME/hub`, token read from `$HF_HOME/token`) and `HF_ENDPOINT` are read
//! by hf-hub itself; `HF_TOKEN`, which hf-hub 0.4 ignores, is read here and wins over
//! the token file.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Repo, RepoType};

use crate::error::{ModelError, Result};

/// Files pulled when [`PullOptions::include`] is empty: what a safetensors model
/// directory needs to load and chat.
pub const DEFAULT_INCLUDE: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "*.safetensors",
    "model.safetensors.index.json",
];

/// What [`pull`] downloads and how.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Branch, tag or commit; `main` when `None`.
    pub revision: Option<String>,
    /// Glob patterns (`*` and `?`, matched against the whole path in the repo, `*`
    /// not crossing `/`); a file is pulled when any matches. Empty: [`DEFAULT_INCLUDE`].
    pub include: Vec<String>,
    /// Whether to draw a progress bar per file on stderr.
    pub progress: bool,
}

/// Downloads the files of model repo `repo_id` chosen by `opts` (files already in the
/// cache are not downloaded again) and returns the local snapshot directory that holds
/// them, laid out as in the repo.
pub fn pull(repo_id: &str, opts: &PullOptions) -> Result<PathBuf> {
    validate_repo_id(repo_id)?;
    let revision = opts.revision.as_deref().unwrap_or("main");
    validate_revision(repo_id, revision)?;

    let mut builder = ApiBuilder::from_env().with_progress(opts.progress);
    if let Some(token) = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        builder = builder.with_token(Some(token.trim().to_string()));
    }
    let api = builder
        .build()
        .map_err(|e| ModelError::Hub(format!("{repo_id}: cannot set up the hub client: {e}")))?;
    let repo = api.repo(Repo::with_revision(
        repo_id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));

    let files = select_files(repo_id, revision, &repo, &opts.include)?;
    let mut snapshot = None;
    for file in &files {
        let local = repo.get(file).map_err(|e| {
            ModelError::Hub(format!(
                "{repo_id}: downloading '{file}' at {revision}: {e}"
            ))
        })?;
        if snapshot.is_none() {
            snapshot = Some(snapshot_dir(&local, file, repo_id)?);
        }
    }
    snapshot.ok_or_else(|| ModelError::Hub(format!("{repo_id}: no files were downloaded")))
}

/// Lists the repo at `revision` and keeps the safe file names that match `include`
/// (or [`DEFAULT_INCLUDE`]); errors when none does.
fn select_files(
    repo_id: &str,
    revision: &str,
    repo: &ApiRepo,
    include: &[String],
) -> Result<Vec<String>> {
    let info = repo.info().map_err(|e| {
        ModelError::Hub(format!(
            "{repo_id}: listing files at revision {revision}: {e}"
        ))
    })?;
    let patterns: Vec<&str> = if include.is_empty() {
        DEFAULT_INCLUDE.to_vec()
    } else {
        include.iter().map(String::as_str).collect()
    };
    let files: Vec<String> = info
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|name| is_safe_relative_path(name))
        .filter(|name| patterns.iter().any(|p| glob_match(p, name)))
        .collect();
    if files.is_empty() {
        return Err(ModelError::Hub(format!(
            "{repo_id}: no file at revision {revision} matches {}",
            patterns.join(", ")
        )));
    }
    Ok(files)
}

/// The snapshot directory holding `local`, the cached copy of repo file `file`.
fn snapshot_dir(local: &Path, file: &str, repo_id: &str) -> Result<PathBuf> {
    let depth = file.split('/').count();
    local
        .ancestors()
        .nth(depth)
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            ModelError::Hub(format!(
                "{repo_id}: unexpected cache path {} for '{file}'",
                local.display()
            ))
        })
}

/// Accepts `owner/name` or `name`, each part non-empty, of `[A-Za-z0-9._-]`, not `.`-led.
fn validate_repo_id(repo_id: &str) -> Result<()> {
    let parts: Vec<&str> = repo_id.split('/').collect();
    let part_ok = |p: &&str| {
        !p.is_empty()
            && !p.starts_with('.')
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if parts.len() > 2 || !parts.iter().all(part_ok) {
        return Err(ModelError::Hub(format!(
            "'{repo_id}' is not a repo id (expected owner/name or name, \
             of letters, digits, '-', '_' and '.')"
        )));
    }
    Ok(())
}

/// A revision becomes a path under the cache's `refs/`: it must stay inside it.
fn validate_revision(repo_id: &str, revision: &str) -> Result<()> {
    if !is_safe_relative_path(revision) {
        return Err(ModelError::Hub(format!(
            "{repo_id}: '{revision}' is not a valid revision"
        )));
    }
    Ok(())
}

/// A `/`-separated relative path with no empty, `.` or `..` part and no backslash.
fn is_safe_relative_path(path: &str) -> bool {
    !path.contains('\\')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Whether `text` matches glob `pattern` as a whole: `?` is one character, `*` any
/// run of characters; neither crosses `/`. Every other character stands for itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it is currently made to cover up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if (c == '?' && t[ti] != '/') || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character, unless that is a `/`.
                Some((sp, st)) if t[st] != '/' => {
                    star = Some((sp, st + 1));
                    pi = sp + 1;
                    ti = st + 1;
                }
                _ => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_literals_stars_and_question_marks() {
        assert!(glob_match("config.json", "config.json"));
        assert!(!glob_match("config.json", "config.jsonx"));
        assert!(glob_match(
            "*.safetensors",
            "model-00001-of-00002.safetensors"
        ));
        assert!(!glob_match("*.safetensors", "model.safetensors.index.json"));
        assert!(glob_match("*Q4_K_M.gguf", "SmolLM2.Q4_K_M.gguf"));
        assert!(glob_match("model-?.bin", "model-1.bin"));
        assert!(!glob_match("model-?.bin", "model-12.bin"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "aXXbYYbc"));
        assert!(glob_match("**", ""));
        assert!(!glob_match("?", ""));
    }

    #[test]
    fn glob_wildcards_do_not_cross_slashes() {
        assert!(!glob_match("*.safetensors", "onnx/model.safetensors"));
        assert!(glob_match("*/*.safetensors", "onnx/model.safetensors"));
        assert!(glob_match("onnx/*", "onnx/model.onnx"));
        assert!(!glob_match("onnx?model.onnx", "onnx/model.onnx"));
        assert!(!glob_match("*", "a/b"));
    }

    #[test]
    fn repo_ids_are_checked_before_any_request() {
        assert!(validate_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct").is_ok());
        assert!(validate_repo_id("gpt2").is_ok());
        for bad in [
            "", "/", "a/", "/b", "a/b/c", "../x", "a/..", "a/b..c", "a b/c", ".a/b",
        ] {
            assert!(validate_repo_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn revisions_and_file_names_stay_inside_the_cache() {
        assert!(validate_revision("r", "main").is_ok());
        assert!(validate_revision("r", "refs/pr/1").is_ok());
        assert!(validate_revision("r", "../../etc").is_err());
        assert!(validate_revision("r", "/abs").is_err());
        assert!(!is_safe_relative_path("a//b"));
        assert!(!is_safe_relative_path("a\\b"));
        assert!(is_safe_relative_path("onnx/model.onnx"));
    }

    #[test]
    fn snapshot_dir_strips_subfolders() {
        let local = Path::new("/c/snapshots/abc/onnx/model.onnx");
        let dir = snapshot_dir(local, "onnx/model.onnx", "r").map_err(|e| e.to_string());
        assert_eq!(dir, Ok(PathBuf::from("/c/snapshots/abc")));
    }
}
