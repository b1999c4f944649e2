//! Loading a version: plan its memory, make room (evicting idle models least
//! recently used first), load and warm it off every lock, then route to it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Key, LoadTarget, ModelManager, ResolveError, Servable, Slot};
use crate::lifecycle::{ManagerEvent, ModelState, UnloadCause};
use crate::signal::Signal;

/// How long a load waits for one evicted model to drain.
const DRAIN_WAIT: Duration = Duration::from_secs(120);

type Outcome = Option<Result<(), String>>;

/// Waits for loads started by [`ModelManager::load`].
pub struct LoadWait {
    waits: Vec<(u64, watch::Receiver<Outcome>)>,
}

impl LoadWait {
    /// The versions being loaded.
    pub fn versions(&self) -> Vec<u64> {
        self.waits.iter().map(|(v, _)| *v).collect()
    }

    /// Waits for every load; the first failure is `version N: reason`.
    pub async fn wait(self) -> Result<Vec<u64>, String> {
        let mut done = Vec::new();
        for (version, mut rx) in self.waits {
            let outcome = rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| format!("version {version}: the load was abandoned"))?
                .clone();
            match outcome {
                Some(Ok(())) => done.push(version),
                Some(Err(e)) => return Err(format!("version {version}: {e}")),
                None => unreachable!("waited for Some"),
            }
        }
        Ok(done)
    }

    /// [`Self::wait`] for threads outside an async runtime.
    pub fn wait_blocking(self) -> Result<Vec<u64>, String> {
        let mut done = Vec::new();
        for (version, rx) in self.waits {
            loop {
                let outcome = rx.borrow().clone();
                match outcome {
                    Some(Ok(())) => break done.push(version),
                    Some(Err(e)) => return Err(format!("version {version}: {e}")),
                    None if rx.has_changed().is_err() => {
                        return Err(format!("version {version}: the load was abandoned"))
                    }
                    None => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        Ok(done)
    }
}

impl<M: Servable> ModelManager<M> {
    /// Loads `version` of `name` (none: the versions its policy serves and
    /// its aliases name) and
    /// warms it, on a thread of its own. Idempotent: a ready version is
    /// done at once, and a load in progress is joined, not repeated.
    pub fn load(
        self: &Arc<Self>,
        name: &str,
        version: Option<u64>,
    ) -> Result<LoadWait, ResolveError> {
        let mut inner = self.lock();
        let entry = inner
            .entry(name)
            .ok_or_else(|| ResolveError::UnknownModel(name.to_string()))?;
        let versions = match version {
            Some(v) if entry.spec.versions.contains_key(&v) => vec![v],
            Some(v) => {
                return Err(ResolveError::UnknownVersion {
                    name: name.to_string(),
                    version: v,
                })
            }
            None => served_versions(entry),
        };
        let mut waits = Vec::new();
        for v in versions {
            let key = (name.to_string(), v);
            let rx = match inner.slots.get(&key) {
                Some(slot) if slot.state == ModelState::Ready => watch::channel(Some(Ok(()))).1,
                Some(Slot { load: Some(tx), .. }) => tx.subscribe(),
                _ => {
                    let (tx, rx) = watch::channel(None);
                    let mut slot = Slot::new(ModelState::Loading);
                    slot.load = Some(tx);
                    inner.slots.insert(key.clone(), slot);
                    let manager = Arc::clone(self);
                    std::thread::Builder::new()
                        .name(format!("tessera-load-{name}-{v}"))
                        .spawn(move || manager.run_load(key))
                        .map_err(|e| ResolveError::Unavailable {
                            name: name.to_string(),
                            version: v,
                            state: ModelState::Failed,
                            reason: Some(format!("cannot start a loader thread: {e}")),
                        })?;
                    rx
                }
            };
            waits.push((v, rx));
        }
        Ok(LoadWait { waits })
    }

    /// The loader thread's work for `key` (whose slot is `Loading`).
    fn run_load(self: Arc<Self>, key: Key) {
        let (name, version) = (&key.0, key.1);
        let Some(path) = self.version_path(name, version) else {
            return self.finish_load(&key, Err("its directory is gone".into()), 0);
        };
        let options = {
            let inner = self.lock();
            inner
                .entry(name)
                .map(|e| e.spec.settings.options.clone())
                .unwrap_or_default()
        };
        let budget = self.settings.memory_budget;
        let bytes = match self.loader.plan(&path, &options, budget) {
            Ok(bytes) => bytes,
            Err(e) => return self.finish_load(&key, Err(e), 0),
        };
        if let Err(e) = self.make_room(&key, bytes) {
            return self.finish_load(&key, Err(e), 0);
        }
        let started = Instant::now();
        let target = LoadTarget {
            name,
            version,
            path: &path,
            options: &options,
            budget,
        };
        // A loader bug must fail this load, not leave it `loading` forever.
        let loaded = std::panic::catch_unwind(AssertUnwindSafe(|| self.loader.load(&target)))
            .unwrap_or_else(|_| Err("the loader panicked".into()));
        match loaded {
            Ok(model) => {
                let max_len = model.engine().max_len();
                let mut inner = self.lock();
                let known = inner.entry(name).is_some();
                if let Some(slot) = inner.slots.get_mut(&key) {
                    slot.state = ModelState::Ready;
                    slot.served = Some(Arc::new(model));
                    slot.max_model_len = Some(max_len);
                    slot.loaded_at = Some(unix_now());
                    slot.last_used = Instant::now();
                    if let Some(tx) = slot.load.take() {
                        tx.send_replace(Some(Ok(())));
                    }
                }
                if !known {
                    // The model left the repository while it loaded.
                    self.retire_locked(&mut inner, &key, UnloadCause::Policy);
                }
                drop(inner);
                self.emit(ManagerEvent::Loaded {
                    name: name.clone(),
                    version,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            Err(e) => self.finish_load(&key, Err(e), bytes),
        }
    }

    /// Ends a load that failed: gives back its `reserved` bytes, marks it
    /// failed with the reason, and wakes its waiters.
    fn finish_load(&self, key: &Key, result: Result<(), String>, reserved: u64) {
        let Err(reason) = result else { return };
        let mut inner = self.lock();
        if reserved > 0 {
            inner.budget.release(reserved);
        }
        if let Some(slot) = inner.slots.get_mut(key) {
            slot.state = ModelState::Failed;
            slot.reason = Some(reason.clone());
            slot.resident = 0;
            if let Some(tx) = slot.load.take() {
                tx.send_replace(Some(Err(reason.clone())));
            }
        }
        drop(inner);
        tracing::warn!(model = %key.0, version = key.1, "load failed: {reason}");
        self.emit(ManagerEvent::LoadFailed {
            name: key.0.clone(),
            version: key.1,
            reason,
        });
    }

    /// Reserves `bytes` for `key`, evicting idle ready models (least recently
    /// used first) and waiting for drains until they fit under the budget
    /// and `--max-loaded-models`.
    fn make_room(&self, key: &Key, bytes: u64) -> Result<(), String> {
        loop {
            let wait: Signal = {
                let mut inner = self.lock();
                let total = inner.budget.total();
                if bytes > total {
                    return Err(format!(
                        "needs {} of memory, more than the whole budget of {}",
                        mib(bytes),
                        mib(total)
                    ));
                }
                let holding = inner
                    .slots
                    .iter()
                    .filter(|(k, s)| *k != key && s.resident > 0)
                    .count()
                    + inner.draining.len();
                let under_cap = self
                    .settings
                    .max_loaded_models
                    .is_none_or(|max| holding < max);
                if under_cap && inner.budget.try_reserve(bytes) {
                    if let Some(slot) = inner.slots.get_mut(key) {
                        slot.resident = bytes;
                    }
                    return Ok(());
                }
                let victim = inner
                    .slots
                    .iter()
                    .filter(|(k, s)| {
                        *k != key
                            && s.state == ModelState::Ready
                            && s.served.as_ref().is_some_and(|m| m.engine().is_idle())
                    })
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(k, _)| k.clone());
                match (victim, inner.draining.first()) {
                    (Some(victim), _) => {
                        self.retire_locked(&mut inner, &victim, UnloadCause::Evicted)
                    }
                    (None, Some(draining)) => draining.done.clone(),
                    (None, None) => {
                        let why = if under_cap {
                            format!(
                                "needs {} of memory; {} of the {} budget is free and every other loaded model has requests in flight",
                                mib(bytes),
                                mib(inner.budget.free()),
                                mib(total)
                            )
                        } else {
                            format!(
                                "--max-loaded-models {} are loaded and every one has requests in flight",
                                holding
                            )
                        };
                        return Err(why);
                    }
                }
            };
            if !wait.wait(DRAIN_WAIT) {
                return Err(format!(
                    "waited {}s for a model to drain to make room",
                    DRAIN_WAIT.as_secs()
                ));
            }
        }
    }
}

/// What a model serves: the versions its policy picks and those its
/// aliases (and their mirrors) name.
fn served_versions(entry: &super::Entry) -> Vec<u64> {
    let mut versions = entry.spec.policy_versions();
    for alias in entry.aliases.values() {
        versions.extend(alias.target.versions());
        versions.extend(alias.mirror.map(|m| m.version));
    }
    versions.retain(|v| entry.spec.versions.contains_key(v));
    versions.sort_unstable();
    versions.dedup();
    versions
}

/// Bytes as MiB, for messages.
pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
