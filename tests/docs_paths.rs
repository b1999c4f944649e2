//! The documentation points only at things in this repository.
//!
//! Every backticked path in the Markdown files and in doc comments (`//!`,
//! `///`) must resolve: a path that starts with one of the repository's
//! top-level folders exists from the repository root (or, inside a crate, from
//! that crate's root, where a path under tests or src means the crate's own; a
//! `*` matches any name), and a
//! bare source-file name (`budget.rs`, `attention.cu`) names a file somewhere
//! in the tree. Names of formats that are not files of ours (`model.toml`,
//! `config.json`) are not paths and are not checked. No text may cite a
//! document outside the repository or a tracker number, which a reader of the
//! repository alone cannot follow.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Folders that are not the project's text: build outputs, environments,
/// fetched models, the benchmark peers' sources and venvs.
const SKIPPED_DIRS: &[&str] = &[
    "target",
    ".git",
    ".venv",
    ".venv-llama-cpp",
    ".peers",
    "models",
    ".whl",
];

/// Extensions of files whose bare name in backticks claims a file of ours.
const SOURCE_EXTENSIONS: &[&str] = &["rs", "cu", "cuh", "cpp", "h", "py"];

struct Tree {
    root: PathBuf,
    /// Every file and folder, relative to the root, with `/` separators.
    entries: BTreeSet<String>,
    top_level: BTreeSet<String>,
}

impl Tree {
    fn scan(root: &Path) -> Tree {
        let mut entries = BTreeSet::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).expect("read a repository folder") {
                let path = entry.expect("read a folder entry").path();
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if dir == root && SKIPPED_DIRS.contains(&name.as_str()) {
                    continue;
                }
                let relative = path.strip_prefix(root).expect("under the root");
                entries.insert(relative.to_string_lossy().replace('\\', "/"));
                if path.is_dir() {
                    stack.push(path);
                }
            }
        }
        let top_level = entries
            .iter()
            .filter(|e| !e.contains('/'))
            .cloned()
            .collect();
        Tree {
            root: root.to_path_buf(),
            entries,
            top_level,
        }
    }

    fn files_with_extension(&self, extensions: &[&str]) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| extensions.iter().any(|x| e.ends_with(&format!(".{x}"))))
            .filter(|e| self.root.join(e).is_file())
            .cloned()
            .collect()
    }

    /// Whether `path` exists; a `*` in it stands for any part of one name.
    fn has(&self, path: &str) -> bool {
        let path = path.trim_end_matches('/');
        match path.split_once('*') {
            None => self.entries.contains(path),
            Some((before, after)) => self.entries.iter().any(|e| {
                e.len() >= before.len() + after.len()
                    && e.starts_with(before)
                    && e.ends_with(after)
                    && !e[before.len()..e.len() - after.len()].contains('/')
            }),
        }
    }

    /// Whether `token`, written in `file`, names something in the tree; `None`
    /// when the token does not claim to be a path of ours.
    fn resolves(&self, file: &str, token: &str) -> Option<bool> {
        let token = token.trim_end_matches(['.', ',', ':', ')']);
        let first = token.split('/').next().unwrap_or_default();
        if token.contains('/') && self.top_level.contains(first) {
            let crate_root = crate_root_of(file);
            let in_crate = crate_root.is_some_and(|c| self.has(&format!("{c}/{token}")));
            return Some(self.has(token) || in_crate);
        }
        let is_source_name = !token.contains('/')
            && SOURCE_EXTENSIONS
                .iter()
                .any(|x| token.strip_suffix(&format!(".{x}")).is_some_and(is_name));
        if is_source_name {
            let suffix = format!("/{token}");
            return Some(
                self.entries
                    .iter()
                    .any(|e| e == token || e.ends_with(&suffix)),
            );
        }
        None
    }
}

fn is_name(stem: &str) -> bool {
    !stem.is_empty()
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The crate folder (under crates) of a file inside a crate of the workspace.
fn crate_root_of(file: &str) -> Option<String> {
    let mut parts = file.split('/');
    match (parts.next(), parts.next()) {
        (Some("crates"), Some(name)) => Some(format!("crates/{name}")),
        _ => None,
    }
}

/// The backticked spans of one line, split into whitespace-separated tokens.
fn backticked_tokens(line: &str) -> Vec<&str> {
    line.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|span| span.split_whitespace())
        .filter(|t| !t.contains("://") && !t.starts_with('$') && !t.starts_with('-'))
        .collect()
}

/// The lines of `text` that are prose: Markdown outside code blocks, or doc
/// comments in Rust.
fn prose_lines(file: &str, text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut in_code_block = false;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if file.ends_with(".md") {
            if trimmed.starts_with("```") {
                in_code_block = !in_code_block;
            } else if !in_code_block {
                lines.push((index + 1, line.to_string()));
            }
        } else if let Some(doc) = trimmed
            .strip_prefix("//!")
            .or_else(|| trimmed.strip_prefix("///"))
        {
            lines.push((index + 1, doc.to_string()));
        }
    }
    lines
}

fn repository() -> Tree {
    Tree::scan(Path::new(env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn every_backticked_path_resolves_in_the_repository() {
    let tree = repository();
    let mut unresolved = Vec::new();
    let mut checked = 0;
    for file in tree.files_with_extension(&["md", "rs"]) {
        let text = fs::read_to_string(tree.root.join(&file)).expect("read a text file");
        for (line, prose) in prose_lines(&file, &text) {
            for token in backticked_tokens(&prose) {
                match tree.resolves(&file, token) {
                    Some(true) => checked += 1,
                    Some(false) => unresolved.push(format!("{file}:{line}: `{token}`")),
                    None => {}
                }
            }
        }
    }
    assert!(
        unresolved.is_empty(),
        "paths that name nothing here:\n{}",
        unresolved.join("\n")
    );
    // The scan reads the real documents: ARCHITECTURE.md alone names dozens.
    assert!(
        checked > 100,
        "only {checked} paths checked: is the scan reading the docs?"
    );
}

#[test]
fn no_text_cites_documents_outside_the_repository() {
    let tree = repository();
    // Spelled in pieces so that this file does not match itself.
    let outside = [
        ["..", "/shared"].concat(),
        ["DESIGN", ".md"].concat(),
        ["METHOD", ".md"].concat(),
        ["HOPPER", ".md"].concat(),
    ];
    let mut cited = Vec::new();
    let this_file = "tests/docs_paths.rs"; // its examples are citations on purpose
    let files = tree.files_with_extension(&["md", "rs", "toml", "cu", "cuh", "py", "yaml", "yml"]);
    for file in files.into_iter().filter(|f| f != this_file) {
        let text = fs::read_to_string(tree.root.join(&file)).expect("read a text file");
        for (index, line) in text.lines().enumerate() {
            let hit = outside.iter().any(|o| line.contains(o.as_str())) || cites_a_ticket(line);
            if hit {
                cited.push(format!("{file}:{}: {}", index + 1, line.trim()));
            }
        }
    }
    assert!(
        cited.is_empty(),
        "lines that point outside the repository:\n{}",
        cited.join("\n")
    );
}

/// `issue 12`, the same with a `#` before the number, `(#12)`: a tracker
/// reference.
fn cites_a_ticket(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let numbered = |rest: &str| {
        let rest = rest.trim_start_matches([' ', '#']);
        rest.chars().next().is_some_and(|c| c.is_ascii_digit())
    };
    lower
        .match_indices("issue")
        .any(|(i, m)| numbered(&lower[i + m.len()..]))
        || lower
            .match_indices("(#")
            .any(|(i, m)| numbered(&lower[i + m.len()..]))
}

#[test]
fn the_checks_catch_what_they_are_for() {
    let tree = repository();
    assert_eq!(
        tree.resolves("README.md", "crates/tessera-engine/src/request.rs"),
        Some(true)
    );
    assert_eq!(
        tree.resolves("README.md", "crates/tessera-engine/src/nothing.rs"),
        Some(false)
    );
    assert_eq!(
        tree.resolves("crates/tessera-model/src/lib.rs", "tests/gguf_logits.rs"),
        Some(true)
    );
    assert_eq!(
        tree.resolves("README.md", "tests/gguf_logits.rs"),
        Some(false)
    );
    assert_eq!(tree.resolves("ARCHITECTURE.md", "budget.rs"), Some(true));
    assert_eq!(tree.resolves("ARCHITECTURE.md", "nowhere.rs"), Some(false));
    assert_eq!(tree.resolves("README.md", "model.toml"), None);
    assert_eq!(tree.resolves("README.md", "kernels/*.cu"), Some(true));
    assert_eq!(tree.resolves("README.md", "kernels/*.py"), Some(false));
    assert!(cites_a_ticket(&["fixed in issue ", "#7"].concat()));
    assert!(cites_a_ticket("see (#12)"));
    assert!(!cites_a_ticket("issues are welcome"));
}
