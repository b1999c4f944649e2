//! [`ModelManager`]: every model the server knows, the versions loaded, the
//! routing of a request's `model` to a ready engine, and the memory budget
//! they share.
//!
//! Locks are held only for bookkeeping, never across a load or a drain:
//! loads run on their own threads and report through a watch channel, so a
//! request never waits on another model's load.

mod aliases;
pub use aliases::AliasError;
mod load;
mod retire;
mod sync;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Instant;

use tessera_engine::engine::EngineHandle;
use tokio::sync::watch;

use crate::aliases::{Alias, Target};
use crate::budget::MemoryBudget;
use crate::keep_alive::KeepAlive;
use crate::lifecycle::{ManagerEvent, ModelState};
use crate::model_ref::{ModelRef, Selector};
use crate::repository::{ModelOptions, ModelSpec, Repository};

pub use load::LoadWait;

/// A loaded model the manager can route to and drain.
pub trait Servable: Send + Sync + 'static {
    /// The engine running it.
    fn engine(&self) -> &EngineHandle;
}

/// Puts models on the device: owns the device and the compute pool.
pub trait Loader<M>: Send + Sync + 'static {
    /// The bytes the model at `path` will hold once loaded with `options`
    /// (weights and KV cache), read from its header before loading, when the
    /// memory budget is `budget` bytes in all.
    fn plan(&self, path: &Path, options: &ModelOptions, budget: u64) -> Result<u64, String>;

    /// Loads the model and warms it with a real forward step.
    fn load(&self, target: &LoadTarget<'_>) -> Result<M, String>;
}

/// What [`Loader::load`] loads.
#[derive(Debug, Clone, Copy)]
pub struct LoadTarget<'a> {
    /// The model's name.
    pub name: &'a str,
    /// The version.
    pub version: u64,
    /// Its GGUF file or Hugging Face directory.
    pub path: &'a Path,
    /// Its engine options.
    pub options: &'a ModelOptions,
    /// The whole memory budget (what [`Loader::plan`] was given).
    pub budget: u64,
}

/// The manager's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerSettings {
    /// Bytes every loaded model's weights and KV cache share.
    pub memory_budget: u64,
    /// Most versions loaded at once (`None`: no limit but the budget).
    pub max_loaded_models: Option<usize>,
    /// How long an idle model stays loaded unless its settings say otherwise.
    pub keep_alive: KeepAlive,
    /// Whether a request for a model that is not loaded loads it.
    pub autoload: bool,
}

/// A request's route: the engine to run it on, and a shadow copy's.
pub struct Route<M> {
    /// The model that answers.
    pub model: Arc<M>,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// A shadow version that gets a copy, when the alias mirrors this request.
    pub mirror: Option<(u64, Arc<M>)>,
}

/// Why a `model` field could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No model of that name (HTTP 404).
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    UnknownModel(String),
    /// The model has no such version (404).
    #[error("The model `{name}` has no version {version}.")]
    UnknownVersion { name: String, version: u64 },
    /// The model has no such alias (404).
    #[error("The model `{name}` has no alias `{alias}`.")]
    UnknownAlias { name: String, alias: String },
    /// The version exists but is not loaded; loading it would serve it.
    #[error("The model `{name}` version {version} is not loaded.")]
    NotLoaded { name: String, version: u64 },
    /// The version cannot serve now (failed, draining; HTTP 503).
    #[error("The model `{name}` version {version} is {state}{}.", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Unavailable {
        name: String,
        version: u64,
        state: ModelState,
        reason: Option<String>,
    },
    /// No model is known at all (a request without `model`).
    #[error("no model is being served")]
    NoModels,
}

/// One version as listings show it.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionStatus {
    /// The model's name.
    pub name: String,
    /// The version.
    pub version: u64,
    /// Its state.
    pub state: ModelState,
    /// Why it failed, when it did.
    pub reason: Option<String>,
    /// Bytes reserved for it in the budget (weights and KV cache).
    pub resident_bytes: u64,
    /// Longest sequence it serves, when loaded.
    pub max_model_len: Option<usize>,
    /// Unix time it became ready.
    pub loaded_at: Option<u64>,
}

/// An id a request may name and what it points at.
#[derive(Debug, Clone, PartialEq)]
pub struct ServableId {
    /// The id (`name`, `name:3`, `name@prod`).
    pub id: String,
    /// The model's name.
    pub name: String,
    /// The version or versions it routes to.
    pub target: Target,
}

/// One alias as listings show it.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasStatus {
    /// The model's name.
    pub name: String,
    /// The alias (`prod`, or `prod.previous`).
    pub alias: String,
    /// What it points at.
    pub target: Target,
}

/// One model version's place in the manager.
struct Slot<M> {
    state: ModelState,
    /// The model while ready.
    served: Option<Arc<M>>,
    reason: Option<String>,
    /// Bytes reserved in the budget (while loading, ready, draining, unloading).
    resident: u64,
    last_used: Instant,
    /// The keep-alive the latest request asked for.
    keep_alive: Option<KeepAlive>,
    /// Waiters on a load in progress.
    load: Option<watch::Sender<Option<Result<(), String>>>>,
    loaded_at: Option<u64>,
    max_model_len: Option<usize>,
}

impl<M> Slot<M> {
    fn new(state: ModelState) -> Self {
        Self {
            state,
            served: None,
            reason: None,
            resident: 0,
            last_used: Instant::now(),
            keep_alive: None,
            load: None,
            loaded_at: None,
            max_model_len: None,
        }
    }
}

/// A known model: its versions on disk, settings and aliases.
struct Entry {
    spec: ModelSpec,
    aliases: BTreeMap<String, Alias>,
}

type Key = (String, u64);

struct Inner<M> {
    /// Known models, in the order they were added (the first answers
    /// requests that name none).
    entries: Vec<Entry>,
    slots: BTreeMap<Key, Slot<M>>,
    /// Versions out of service whose memory is not yet free.
    draining: Vec<retire::Draining>,
    next_drain_id: u64,
    budget: MemoryBudget,
}

impl<M> Inner<M> {
    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.spec.name == name)
    }

    fn entry_mut(&mut self, name: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.spec.name == name)
    }

    /// A version's state: its slot's, else a drain's, else unavailable.
    fn state(&self, key: &Key) -> ModelState {
        if let Some(slot) = self.slots.get(key) {
            return slot.state;
        }
        self.draining
            .iter()
            .find(|d| &d.key == key)
            .map_or(ModelState::Unavailable, |d| d.state)
    }
}

type Observer = Box<dyn Fn(&ManagerEvent) + Send + Sync>;

/// Owns the loader (device and compute pool), the memory budget and every
/// model: which are known, which versions are loaded and in what state, and
/// where each request goes.
pub struct ModelManager<M> {
    loader: Box<dyn Loader<M>>,
    settings: ManagerSettings,
    repository: Option<Repository>,
    inner: Mutex<Inner<M>>,
    observer: OnceLock<Observer>,
    /// Itself, for the threads it starts.
    me: OnceLock<Weak<Self>>,
}

impl<M: Servable> ModelManager<M> {
    /// A manager over `loader` with nothing known yet.
    pub fn new(loader: Box<dyn Loader<M>>, settings: ManagerSettings) -> Arc<Self> {
        Self::build(loader, settings, None)
    }

    /// A manager over the models of `repository` (read by [`Self::sync_repository`]).
    pub fn with_repository(
        loader: Box<dyn Loader<M>>,
        settings: ManagerSettings,
        repository: Repository,
    ) -> Arc<Self> {
        Self::build(loader, settings, Some(repository))
    }

    fn build(
        loader: Box<dyn Loader<M>>,
        settings: ManagerSettings,
        repository: Option<Repository>,
    ) -> Arc<Self> {
        let manager = Arc::new(Self {
            loader,
            inner: Mutex::new(Inner {
                entries: Vec::new(),
                slots: BTreeMap::new(),
                draining: Vec::new(),
                next_drain_id: 0,
                budget: MemoryBudget::new(settings.memory_budget),
            }),
            settings,
            repository,
            observer: OnceLock::new(),
            me: OnceLock::new(),
        });
        retire::start_reaper(&manager);
        manager
    }

    /// Sends every later event to `observer` (metrics, logs); set once.
    pub fn set_observer(&self, observer: impl Fn(&ManagerEvent) + Send + Sync + 'static) {
        let _ = self.observer.set(Box::new(observer));
    }

    /// The settings.
    pub fn settings(&self) -> &ManagerSettings {
        &self.settings
    }

    /// The repository directory, when models come from one.
    pub fn repository_dir(&self) -> Option<&Path> {
        self.repository.as_ref().map(Repository::dir)
    }

    /// Adds a model (or replaces its versions and settings, keeping the
    /// aliases set through the API). Its settings' aliases are set when the
    /// model is first added.
    pub fn add_model(&self, spec: ModelSpec) {
        let mut inner = self.lock();
        match inner.entry_mut(&spec.name) {
            Some(entry) => entry.spec = spec,
            None => {
                let aliases = spec
                    .settings
                    .aliases
                    .iter()
                    .map(|(alias, &version)| {
                        let alias_state = Alias {
                            target: Target::version(version),
                            previous: None,
                            mirror: None,
                        };
                        (alias.clone(), alias_state)
                    })
                    .collect();
                inner.entries.push(Entry { spec, aliases });
            }
        }
    }

    /// Routes a request's `model` (none: the first model) to a ready
    /// version. `session` keeps a client on one version of a weighted alias.
    pub fn resolve(
        &self,
        model: Option<&str>,
        session: Option<&str>,
    ) -> Result<Route<M>, ResolveError> {
        let inner = self.lock();
        let reference = match model {
            None => ModelRef::bare(
                &inner
                    .entries
                    .first()
                    .ok_or(ResolveError::NoModels)?
                    .spec
                    .name,
            ),
            // A name that itself contains `:` or `@` is taken whole first.
            Some(text) if inner.entry(text).is_some() => ModelRef::bare(text),
            Some(text) => ModelRef::parse(text),
        };
        let entry = inner
            .entry(&reference.name)
            .ok_or_else(|| ResolveError::UnknownModel(model.unwrap_or_default().to_string()))?;
        let name = entry.spec.name.clone();
        let (version, mirror) = match &reference.selector {
            Selector::Version(v) => (*v, None),
            Selector::Alias(alias) => {
                let (target, mirror) = aliases::lookup(entry, alias)?;
                (target.pick(session), mirror.filter(|m| m.sample()))
            }
            Selector::Default => match entry.spec.settings.default.as_ref() {
                Some(alias) if entry.aliases.contains_key(alias) => {
                    let (target, mirror) = aliases::lookup(entry, alias)?;
                    (target.pick(session), mirror.filter(|m| m.sample()))
                }
                _ => (default_version(&inner, entry)?, None),
            },
        };
        if !entry.spec.versions.contains_key(&version)
            && !inner.slots.contains_key(&(name.clone(), version))
        {
            return Err(ResolveError::UnknownVersion { name, version });
        }
        let key = (name.clone(), version);
        let slot = inner.slots.get(&key);
        let Some(model) = slot.and_then(|s| s.served.clone()) else {
            return Err(match inner.state(&key) {
                state @ (ModelState::Failed | ModelState::Draining | ModelState::Unloading) => {
                    ResolveError::Unavailable {
                        name,
                        version,
                        state,
                        reason: slot.and_then(|s| s.reason.clone()),
                    }
                }
                _ => ResolveError::NotLoaded { name, version },
            });
        };
        let mirror = mirror.and_then(|m| {
            let shadow = inner
                .slots
                .get(&(name.clone(), m.version))?
                .served
                .clone()?;
            Some((m.version, shadow))
        });
        Ok(Route {
            model,
            name,
            version,
            mirror,
        })
    }

    /// Marks a version used now; `keep_alive` (a request's) replaces how long
    /// it stays loaded once idle.
    pub fn touch(&self, name: &str, version: u64, keep_alive: Option<KeepAlive>) {
        let mut inner = self.lock();
        if let Some(slot) = inner.slots.get_mut(&(name.to_string(), version)) {
            slot.last_used = Instant::now();
            if keep_alive.is_some() {
                slot.keep_alive = keep_alive;
            }
        }
    }

    /// Every version of every known model, and any still draining.
    pub fn versions(&self) -> Vec<VersionStatus> {
        let inner = self.lock();
        let mut keys: Vec<Key> = inner
            .entries
            .iter()
            .flat_map(|e| e.spec.versions.keys().map(|&v| (e.spec.name.clone(), v)))
            .collect();
        keys.extend(inner.slots.keys().cloned());
        keys.extend(inner.draining.iter().map(|d| d.key.clone()));
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|key| {
                let slot = inner.slots.get(&key);
                let drained: u64 = inner
                    .draining
                    .iter()
                    .filter(|d| d.key == key)
                    .map(|d| d.resident)
                    .sum();
                VersionStatus {
                    state: inner.state(&key),
                    reason: slot.and_then(|s| s.reason.clone()),
                    resident_bytes: slot.map_or(0, |s| s.resident) + drained,
                    max_model_len: slot.and_then(|s| s.max_model_len),
                    loaded_at: slot.and_then(|s| s.loaded_at),
                    name: key.0,
                    version: key.1,
                }
            })
            .collect()
    }

    /// Every alias of every model, with `{alias}.previous` for those that moved.
    pub fn aliases(&self) -> Vec<AliasStatus> {
        let inner = self.lock();
        let mut out = Vec::new();
        for entry in &inner.entries {
            for (alias, a) in &entry.aliases {
                out.push(AliasStatus {
                    name: entry.spec.name.clone(),
                    alias: alias.clone(),
                    target: a.target.clone(),
                });
                if let Some(previous) = &a.previous {
                    out.push(AliasStatus {
                        name: entry.spec.name.clone(),
                        alias: format!("{alias}.previous"),
                        target: previous.clone(),
                    });
                }
            }
        }
        out
    }

    /// Every id a request may name (`name`, `name:3`, `name@prod`,
    /// `name@prod.previous`), with what each points at now; a bare name
    /// whose model has no version yet is left out.
    pub fn servable_ids(&self) -> Vec<ServableId> {
        let inner = self.lock();
        let mut out = Vec::new();
        for entry in &inner.entries {
            let name = &entry.spec.name;
            let id = |id: String, target: Target| ServableId {
                id,
                name: name.clone(),
                target,
            };
            let bare = match entry.spec.settings.default.as_ref() {
                Some(alias) => aliases::lookup(entry, alias).ok().map(|(t, _)| t),
                None => default_version(&inner, entry).ok().map(Target::version),
            };
            if let Some(target) = bare {
                out.push(id(name.clone(), target));
            }
            for &v in entry.spec.versions.keys() {
                out.push(id(format!("{name}:{v}"), Target::version(v)));
            }
            for (alias, a) in &entry.aliases {
                out.push(id(format!("{name}@{alias}"), a.target.clone()));
                if let Some(previous) = &a.previous {
                    out.push(id(format!("{name}@{alias}.previous"), previous.clone()));
                }
            }
        }
        out
    }

    /// The names of every known model, first-added first.
    pub fn model_names(&self) -> Vec<String> {
        self.lock()
            .entries
            .iter()
            .map(|e| e.spec.name.clone())
            .collect()
    }

    /// The ready versions and their models (metrics read their engines).
    pub fn ready(&self) -> Vec<(String, u64, Arc<M>)> {
        self.lock()
            .slots
            .iter()
            .filter_map(|((name, v), s)| Some((name.clone(), *v, s.served.clone()?)))
            .collect()
    }

    /// Bytes of the budget, and bytes reserved.
    pub fn memory(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.budget.total(), inner.budget.used())
    }

    /// The file or directory a version loads from.
    pub fn version_path(&self, name: &str, version: u64) -> Option<PathBuf> {
        self.lock()
            .entry(name)?
            .spec
            .versions
            .get(&version)
            .cloned()
    }

    fn lock(&self) -> MutexGuard<'_, Inner<M>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, event: ManagerEvent) {
        tracing::info!(?event, "model lifecycle");
        if let Some(observer) = self.observer.get() {
            observer(&event);
        }
    }
}

/// A bare name's version when no `default` alias is set: the highest ready
/// version, else the highest its policy serves (to be loaded).
fn default_version<M>(inner: &Inner<M>, entry: &Entry) -> Result<u64, ResolveError> {
    let name = &entry.spec.name;
    let ready = inner
        .slots
        .iter()
        .filter(|((n, _), s)| n == name && s.state == ModelState::Ready)
        .map(|((_, v), _)| *v)
        .max();
    ready
        .or_else(|| entry.spec.policy_versions().last().copied())
        .or_else(|| entry.spec.versions.keys().last().copied())
        .ok_or_else(|| ResolveError::UnknownModel(name.clone()))
}

#[cfg(test)]
mod tests;
