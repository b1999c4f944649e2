//! Where `tessera serve`'s models come from, and how they load: the
//! `--model` argument (a one-model repository), `[[models]]` tables of the
//! config file, or `--model-repository`; [`ServerLoader`] loads each version
//! onto the process's one [`Compute`] as a [`ServedModel`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use tessera_manager::model_ref::is_valid_name;
use tessera_manager::{LoadTarget, Loader, ModelOptions, ModelSettings, ModelSpec, VersionPolicy};
use tessera_server::ServedModel;

use crate::engine_setup::{Compute, EngineOptions};
use crate::text_model::ModelText;

/// Loads models onto the device with the flags' engine options under each
/// model's own settings.
pub struct ServerLoader {
    compute: Compute,
    base: EngineOptions,
}

impl ServerLoader {
    /// A loader onto `compute` with `base` as every model's default options.
    pub fn new(compute: Compute, base: EngineOptions) -> Self {
        Self { compute, base }
    }
}

impl Loader<ServedModel> for ServerLoader {
    fn plan(&self, path: &Path, options: &ModelOptions, budget: u64) -> Result<u64, String> {
        let options = self.base.with_settings(options)?;
        self.compute
            .plan(path, &options, budget)
            .map(|plan| plan.total())
            .map_err(|e| format!("{e:#}"))
    }

    fn load(&self, t: &LoadTarget<'_>) -> Result<ServedModel, String> {
        let options = self.base.with_settings(t.options)?;
        let plan = self
            .compute
            .plan(t.path, &options, t.budget)
            .map_err(|e| format!("{e:#}"))?;
        let loaded = self
            .compute
            .load(t.path, &options, &plan)
            .map_err(|e| format!("{e:#}"))?;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let kv = match (&loaded.embedding, plan.kv_bytes) {
            (Some(info), 0) => format!("an encoder of {} dimensions, no KV cache", info.dimensions),
            _ => format!(
                "KV cache {} tokens ({:.1} MiB, {})",
                plan.num_blocks() * 16,
                mib(plan.kv_bytes),
                options.kv_cache_dtype
            ),
        };
        eprintln!(
            "tessera: loaded {}:{} ({}) in {:.2}s on {}: weights {:.1} MiB, {kv}; context {}",
            t.name,
            t.version,
            t.path.display(),
            loaded.load_time.as_secs_f64(),
            self.compute.backend_name(),
            mib(plan.weight_bytes),
            plan.max_model_len,
        );
        let embedding = loaded.embedding;
        let text = Arc::new(ModelText::new(loaded.tokenizer, loaded.chat_template));
        let served = ServedModel::new(t.name, t.version, loaded.engine, text);
        Ok(match embedding {
            Some(info) => served.with_embedding(info),
            None => served,
        })
    }
}

/// `--model`: one model, version 1, all of whose settings are the flags.
pub fn single(name: &str, path: PathBuf) -> ModelSpec {
    ModelSpec {
        name: name.to_string(),
        versions: BTreeMap::from([(1, path)]),
        settings: ModelSettings::default(),
    }
}

/// The config file's `[[models]]` tables: `name`, `path` (a GGUF file or
/// model directory), `version` (default 1), and the settings `model.toml`
/// takes. Tables of one name are that model's versions; its settings go in
/// the first. Every listed version is served unless `version_policy` says
/// otherwise.
pub fn from_config(file: &Path, tables: &[toml::Table]) -> Result<Vec<ModelSpec>> {
    let mut specs: Vec<ModelSpec> = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let at = |why: String| anyhow!("config file {}: models[{i}]: {why}", file.display());
        let mut table = table.clone();
        let name = match table.remove("name") {
            Some(toml::Value::String(n)) if is_valid_name(&n) => n,
            Some(v) => {
                return Err(at(format!(
                    "invalid name {v}: use letters, digits, '.', '_' and '-'"
                )))
            }
            None => return Err(at("a model needs a name".into())),
        };
        let path = match table.remove("path") {
            Some(toml::Value::String(p)) => resolve_relative(file, &p),
            _ => {
                return Err(at(
                    "a model needs a path (a GGUF file or a model directory)".into(),
                ))
            }
        };
        let version = match table.remove("version") {
            None => 1,
            Some(toml::Value::Integer(v)) if v > 0 => v.unsigned_abs(),
            Some(v) => return Err(at(format!("version must be a positive integer, got {v}"))),
        };
        match specs.iter_mut().find(|s| s.name == name) {
            Some(spec) => {
                if !table.is_empty() {
                    return Err(at(format!(
                        "'{name}' is listed before: its settings go in its first table"
                    )));
                }
                if spec.versions.insert(version, path).is_some() {
                    return Err(at(format!("'{name}' version {version} is listed twice")));
                }
            }
            None => {
                let explicit_policy = table.contains_key("version_policy");
                let mut settings: ModelSettings = toml::Value::Table(table)
                    .try_into()
                    .map_err(|e: toml::de::Error| at(e.message().to_string()))?;
                settings.check().map_err(at)?;
                settings.drift_baseline = settings
                    .drift_baseline
                    .map(|p| resolve_relative(file, &p.to_string_lossy()));
                if !explicit_policy {
                    settings.version_policy = VersionPolicy::All;
                }
                specs.push(ModelSpec {
                    name,
                    versions: BTreeMap::from([(version, path)]),
                    settings,
                });
            }
        }
    }
    Ok(specs)
}

/// The drift references models' settings name (`drift_baseline`), each for
/// its model whatever model the file was made from: read from the
/// repository's `model.toml` files, or from `[[models]]` tables.
pub fn drift_baselines(
    repository: Option<&Path>,
    config_models: &[ModelSpec],
) -> Result<Vec<tessera_server::monitoring::Baseline>> {
    let scanned;
    let specs = match repository {
        Some(dir) => {
            scanned = tessera_manager::Repository::open(dir)?.scan()?.models;
            &scanned
        }
        None => config_models,
    };
    specs
        .iter()
        .filter_map(|spec| Some((spec, spec.settings.drift_baseline.as_ref()?)))
        .map(|(spec, path)| {
            let mut baseline = tessera_server::monitoring::Baseline::load(path)
                .map_err(|e| anyhow!("model '{}': drift_baseline: {e}", spec.name))?;
            baseline.model = spec.name.clone();
            Ok(baseline)
        })
        .collect()
}

/// A path in the config file, relative to the file's directory.
fn resolve_relative(file: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    file.parent().unwrap_or(Path::new(".")).join(p)
}

/// Refuses what cannot be served together.
pub fn check_sources(repository: bool, model_flag: bool, tables: usize) -> Result<()> {
    if repository && tables > 0 {
        bail!("invalid setting 'model-repository': the config file's [[models]] tables list the models already; give one or the other");
    }
    if repository && model_flag {
        bail!("invalid setting 'model-repository': --model names one model already; give one or the other");
    }
    if tables > 0 && model_flag {
        bail!("invalid setting 'model': the config file's [[models]] tables list the models already; give one or the other");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(text: &str) -> Vec<toml::Table> {
        let t: toml::Table = text.parse().expect("toml");
        match t.get("models") {
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| v.as_table().cloned().expect("table"))
                .collect(),
            _ => panic!("no models"),
        }
    }

    #[test]
    fn model_tables_become_specs() {
        let file = Path::new("/etc/tessera/tessera.toml");
        let specs = from_config(
            file,
            &tables(
                "[[models]]\nname = \"chat\"\npath = \"m/v1.gguf\"\naliases = { prod = 1 }\nmax-model-len = 1024\n\
                 [[models]]\nname = \"chat\"\npath = \"/abs/v2.gguf\"\nversion = 2\n\
                 [[models]]\nname = \"other\"\npath = \"o.gguf\"\ndrift_baseline = \"b.json\"\n",
            ),
        )
        .expect("valid");
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].versions[&1], Path::new("/etc/tessera/m/v1.gguf"));
        assert_eq!(specs[0].versions[&2], Path::new("/abs/v2.gguf"));
        assert_eq!(specs[0].settings.aliases.get("prod"), Some(&1));
        assert_eq!(specs[0].settings.version_policy, VersionPolicy::All);
        assert_eq!(specs[0].policy_versions(), [1, 2]);
        assert!(specs[0].settings.options.contains_key("max-model-len"));
        assert_eq!(
            specs[1].settings.drift_baseline,
            Some(PathBuf::from("/etc/tessera/b.json"))
        );
        for (bad, says) in [
            ("[[models]]\npath = \"a\"", "needs a name"),
            ("[[models]]\nname = \"../x\"\npath = \"a\"", "invalid name"),
            ("[[models]]\nname = \"a\"", "needs a path"),
            ("[[models]]\nname = \"a\"\npath = \"a\"\nversion = 0", "positive integer"),
            (
                "[[models]]\nname = \"a\"\npath = \"a\"\n[[models]]\nname = \"a\"\npath = \"b\"",
                "listed twice",
            ),
            (
                "[[models]]\nname = \"a\"\npath = \"a\"\n[[models]]\nname = \"a\"\npath = \"b\"\nversion = 2\nkeep_alive = \"1m\"",
                "its first table",
            ),
            ("[[models]]\nname = \"a\"\npath = \"a\"\ndefault = \"x\"", "not one of the aliases"),
        ] {
            let e = from_config(file, &tables(bad)).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("models["), "{e}");
        }
    }
}
