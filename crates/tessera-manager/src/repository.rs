//! The model repository on disk, laid out as TensorFlow Serving and Triton lay
//! theirs out: `DIR/<name>/<version>/` holding a GGUF file or a Hugging Face
//! model directory, and an optional `DIR/<name>/model.toml` with the model's
//! settings ([`ModelSettings`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::keep_alive::KeepAlive;
use crate::model_ref::{is_valid_name, parse_version};

/// The settings file of a model directory.
pub const SETTINGS_FILE: &str = "model.toml";

/// A problem with the repository or one of its models, naming the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct RepositoryError {
    /// The file or directory at fault.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl RepositoryError {
    fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

/// A model's engine options as its settings give them (flag names as
/// keys); the loader checks them.
pub type ModelOptions = toml::Table;

/// Which versions of a model are loaded when the repository is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The highest N versions (`{ latest = N }`; the default is 1).
    Latest(usize),
    /// Every version (`"all"`).
    All,
    /// These versions (`{ specific = [1, 3] }`).
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        Self::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions of `available` (ascending) this policy serves.
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        match self {
            Self::Latest(n) => available[available.len().saturating_sub(*n)..].to_vec(),
            Self::All => available.to_vec(),
            Self::Specific(wanted) => available
                .iter()
                .copied()
                .filter(|v| wanted.contains(v))
                .collect(),
        }
    }
}

impl<'de> Deserialize<'de> for VersionPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Table(Table),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            latest: Option<usize>,
            specific: Option<Vec<u64>>,
        }
        let why = "version_policy must be \"all\", { latest = N } or { specific = [1, 3] }";
        match Raw::deserialize(d).map_err(|_| de::Error::custom(why))? {
            Raw::Word(w) if w == "all" => Ok(Self::All),
            Raw::Table(Table {
                latest: Some(n),
                specific: None,
            }) if n > 0 => Ok(Self::Latest(n)),
            Raw::Table(Table {
                latest: None,
                specific: Some(v),
            }) if !v.is_empty() && !v.contains(&0) => Ok(Self::Specific(v)),
            _ => Err(de::Error::custom(why)),
        }
    }
}

/// A model's settings: `DIR/<name>/model.toml`, or a `[[models]]` table of
/// the server's configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ModelSettings {
    /// Which versions are loaded when the repository is read.
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Named versions (`prod = 3`).
    #[serde(default)]
    pub aliases: BTreeMap<String, u64>,
    /// The alias a bare name resolves to; unset: the highest ready version.
    pub default: Option<String>,
    /// How long the model stays loaded when idle (default: the server's).
    pub keep_alive: Option<KeepAlive>,
    /// A drift reference made by `tessera drift baseline`, which the
    /// model's versions are compared with instead of their first requests;
    /// a relative path is read from the model's directory.
    pub drift_baseline: Option<PathBuf>,
    /// Engine options, named as the server's flags (`max-model-len`,
    /// `kv-cache-memory`, ...); the loader checks them.
    #[serde(flatten)]
    pub options: ModelOptions,
}

impl ModelSettings {
    /// Reads a settings file's text; errors name `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, RepositoryError> {
        let settings: Self =
            toml::from_str(text).map_err(|e| RepositoryError::new(path, e.to_string()))?;
        settings
            .check()
            .map_err(|e| RepositoryError::new(path, e))?;
        Ok(settings)
    }

    /// Alias names are valid and `default` names an alias.
    pub fn check(&self) -> Result<(), String> {
        if let Some(bad) = self.aliases.keys().find(|a| !is_valid_alias(a)) {
            return Err(format!("invalid alias name '{bad}'"));
        }
        if let Some(v) = self.aliases.values().find(|&&v| v == 0) {
            return Err(format!("alias version {v}: versions are positive integers"));
        }
        if let Some(default) = &self.default {
            if !self.aliases.contains_key(default) {
                return Err(format!("default = '{default}' is not one of the aliases"));
            }
        }
        Ok(())
    }
}

/// Whether `alias` may be set: a valid name that does not end in
/// `.previous` (that suffix names the target an alias had before its last move).
pub fn is_valid_alias(alias: &str) -> bool {
    is_valid_name(alias) && !alias.ends_with(".previous")
}

/// One model: its versions on disk and its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The name clients use.
    pub name: String,
    /// Each version's GGUF file or Hugging Face directory.
    pub versions: BTreeMap<u64, PathBuf>,
    /// Its settings.
    pub settings: ModelSettings,
}

impl ModelSpec {
    /// The versions its policy serves, ascending.
    pub fn policy_versions(&self) -> Vec<u64> {
        let available: Vec<u64> = self.versions.keys().copied().collect();
        self.settings.version_policy.select(&available)
    }
}

/// What a scan found: the models that could be read, and a problem for each
/// one that could not (which leaves the others unaffected).
#[derive(Debug, Default)]
pub struct Scan {
    /// Readable models, by name.
    pub models: Vec<ModelSpec>,
    /// Models or versions skipped, and why.
    pub problems: Vec<RepositoryError>,
}

/// A repository directory.
#[derive(Debug, Clone)]
pub struct Repository {
    dir: PathBuf,
}

impl Repository {
    /// The repository at `dir`, which must be a directory.
    pub fn open(dir: &Path) -> Result<Self, RepositoryError> {
        if !dir.is_dir() {
            return Err(RepositoryError::new(dir, "not a directory"));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads every model directory. Entries that are not model directories
    /// (files, hidden or oddly named directories) are skipped silently;
    /// broken models are reported in [`Scan::problems`].
    pub fn scan(&self) -> Result<Scan, RepositoryError> {
        let mut scan = Scan::default();
        for entry in read_dir_sorted(&self.dir)? {
            let Some(name) = entry
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if !entry.is_dir() || !is_valid_name(&name) {
                continue;
            }
            match read_model(&entry, name) {
                Ok(Some(spec)) => scan.models.push(spec),
                Ok(None) => {}
                Err(e) => scan.problems.push(e),
            }
        }
        Ok(scan)
    }
}

/// A model directory: its settings and version directories. `None` when it
/// has no version directory at all (not a model, or not yet).
fn read_model(dir: &Path, name: String) -> Result<Option<ModelSpec>, RepositoryError> {
    let settings_path = dir.join(SETTINGS_FILE);
    let mut settings = match std::fs::read_to_string(&settings_path) {
        Ok(text) => ModelSettings::parse(&settings_path, &text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ModelSettings::default(),
        Err(e) => return Err(RepositoryError::new(&settings_path, e.to_string())),
    };
    settings.drift_baseline = settings.drift_baseline.map(|p| dir.join(p));
    let mut versions = BTreeMap::new();
    for entry in read_dir_sorted(dir)? {
        let Some(version) = entry
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_version)
        else {
            continue;
        };
        if let Some(payload) = version_payload(&entry)? {
            versions.insert(version, payload);
        }
    }
    if versions.is_empty() {
        return Ok(None);
    }
    Ok(Some(ModelSpec {
        name,
        versions,
        settings,
    }))
}

/// What a version directory serves: itself when it is a Hugging Face model
/// directory (`config.json`), else its one GGUF file. `None` while it holds
/// neither (a version being copied in).
pub fn version_payload(dir: &Path) -> Result<Option<PathBuf>, RepositoryError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    if dir.join("config.json").is_file() {
        return Ok(Some(dir.to_path_buf()));
    }
    let ggufs: Vec<PathBuf> = read_dir_sorted(dir)?
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(RepositoryError::new(
            dir,
            format!("{} GGUF files; a version directory holds one", ggufs.len()),
        )),
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, RepositoryError> {
    let entries = std::fs::read_dir(dir).map_err(|e| RepositoryError::new(dir, e.to_string()))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    Ok(paths)
}

impl fmt::Display for VersionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest(n) => write!(f, "latest {n}"),
            Self::All => write!(f, "all"),
            Self::Specific(v) => write!(f, "specific {v:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn policies_pick_versions() {
        let all = [1, 2, 3, 5];
        assert_eq!(VersionPolicy::default().select(&all), vec![5]);
        assert_eq!(VersionPolicy::Latest(2).select(&all), vec![3, 5]);
        assert_eq!(VersionPolicy::Latest(9).select(&all), vec![1, 2, 3, 5]);
        assert_eq!(VersionPolicy::All.select(&all), vec![1, 2, 3, 5]);
        assert_eq!(
            VersionPolicy::Specific(vec![5, 1, 4]).select(&all),
            vec![1, 5]
        );
    }

    #[test]
    fn settings_parse_and_name_their_problems() {
        let p = Path::new("m/model.toml");
        let s = ModelSettings::parse(
            p,
            "version_policy = \"all\"\naliases = { prod = 3, canary = 4 }\ndefault = \"prod\"\n\
             keep_alive = \"10m\"\nmax-model-len = 2048\n",
        )
        .expect("parses");
        assert_eq!(s.version_policy, VersionPolicy::All);
        assert_eq!(s.aliases.get("canary"), Some(&4));
        assert_eq!(s.default.as_deref(), Some("prod"));
        assert_eq!(
            s.options.get("max-model-len").and_then(|v| v.as_integer()),
            Some(2048)
        );
        let s = ModelSettings::parse(p, "version_policy = { specific = [1, 3] }").expect("ok");
        assert_eq!(s.version_policy, VersionPolicy::Specific(vec![1, 3]));
        let s = ModelSettings::parse(p, "version_policy = { latest = 2 }").expect("ok");
        assert_eq!(s.version_policy, VersionPolicy::Latest(2));
        for (bad, says) in [
            ("version_policy = \"some\"", "version_policy must be"),
            ("version_policy = { latest = 0 }", "version_policy must be"),
            (
                "version_policy = { latest = 1, specific = [1] }",
                "version_policy must be",
            ),
            ("default = \"prod\"", "not one of the aliases"),
            ("aliases = { \"../x\" = 1 }", "invalid alias name"),
            ("aliases = { \"a.previous\" = 1 }", "invalid alias name"),
            ("aliases = { prod = 0 }", "positive"),
            ("keep_alive = \"soon\"", "keep_alive"),
        ] {
            let e = ModelSettings::parse(p, bad).expect_err(bad);
            assert!(e.to_string().contains(says), "{bad}: {e}");
            assert!(e.to_string().starts_with("m/model.toml: "), "{e}");
        }
    }

    #[test]
    fn scans_find_versions_and_report_broken_models() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path();
        write(&dir.join("a/1/model.gguf"), "GGUF");
        write(&dir.join("a/3/model.gguf"), "GGUF");
        write(&dir.join("a/3/notes.txt"), "");
        write(&dir.join("a/x/model.gguf"), "GGUF"); // not a version
        write(&dir.join("a/0/model.gguf"), "GGUF"); // not a version
        std::fs::create_dir_all(dir.join("a/4")).expect("mkdir"); // empty: being copied
        write(
            &dir.join("a/model.toml"),
            "aliases = { prod = 1 }\ndrift_baseline = \"baseline.json\"",
        );
        write(&dir.join("hf/2/config.json"), "{}");
        write(&dir.join("two/1/a.gguf"), "GGUF");
        write(&dir.join("two/1/b.gguf"), "GGUF");
        write(&dir.join("bad/1/m.gguf"), "GGUF");
        write(&dir.join("bad/model.toml"), "version_policy = 3");
        write(&dir.join(".hidden/1/m.gguf"), "GGUF");
        write(&dir.join("notamodel/readme.txt"), "");
        write(&dir.join("file.gguf"), "GGUF");
        let scan = Repository::open(dir).expect("dir").scan().expect("scans");
        let names: Vec<&str> = scan.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "hf"]);
        let a = &scan.models[0];
        assert_eq!(a.versions.keys().copied().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(a.versions[&3], dir.join("a/3/model.gguf"));
        assert_eq!(a.settings.aliases.get("prod"), Some(&1));
        assert_eq!(a.settings.drift_baseline, Some(dir.join("a/baseline.json")));
        assert_eq!(a.policy_versions(), [3]);
        assert_eq!(scan.models[1].versions[&2], dir.join("hf/2"));
        let problems: Vec<String> = scan.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("bad/model.toml"), "{problems:?}");
        assert!(problems[1].contains("2 GGUF files"), "{problems:?}");
        assert!(Repository::open(&dir.join("file.gguf")).is_err());
    }
}
