//! Keeping the manager in step with the repository directory: new versions
//! loaded and warmed before the versions they replace leave, removed ones
//! unloaded.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::{ModelManager, Servable};
use crate::lifecycle::{ModelState, UnloadCause};
use crate::repository::RepositoryError;

impl<M: Servable> ModelManager<M> {
    /// Reads the repository and applies it: every model's versions and
    /// settings are refreshed, the versions its policy serves are loaded,
    /// and versions neither served by the policy nor named by an alias
    /// leave once a served version is ready. Models whose directory is gone
    /// leave at once. Returns the models that could not be read.
    pub fn sync_repository(self: &Arc<Self>) -> Result<Vec<RepositoryError>, RepositoryError> {
        let Some(repository) = &self.repository else {
            return Ok(Vec::new());
        };
        let scan = repository.scan()?;
        let present: BTreeSet<String> = scan.models.iter().map(|m| m.name.clone()).collect();
        // Models whose directory went away (or is unreadable now: a broken
        // model.toml keeps what is serving, so only truly absent ones go).
        let broken: BTreeSet<String> = scan
            .problems
            .iter()
            .filter_map(|p| {
                let rel = std::path::Path::new(&p.path)
                    .strip_prefix(repository.dir())
                    .ok()?;
                Some(
                    rel.components()
                        .next()?
                        .as_os_str()
                        .to_string_lossy()
                        .into_owned(),
                )
            })
            .collect();
        let gone: Vec<String> = self
            .model_names()
            .into_iter()
            .filter(|n| !present.contains(n) && !broken.contains(n))
            .collect();
        for name in gone {
            self.remove_model(&name);
        }
        for spec in scan.models {
            let name = spec.name.clone();
            let on_disk: BTreeSet<u64> = spec.versions.keys().copied().collect();
            self.add_model(spec);
            self.retire_where(&name, |v| !on_disk.contains(&v));
            match self.load(&name, None) {
                Ok(wait) => {
                    let manager = Arc::clone(self);
                    let spawned = std::thread::Builder::new()
                        .name(format!("tessera-sync-{name}"))
                        .spawn(move || {
                            let wanted = wait.versions();
                            match wait.wait_blocking() {
                                Ok(_) => manager.retire_unwanted(&name, &wanted),
                                Err(e) => tracing::warn!(model = %name, "repository: {e}; the versions serving stay"),
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::error!("repository: cannot start a thread: {e}");
                    }
                }
                Err(e) => tracing::warn!("repository: {e}"),
            }
        }
        Ok(scan.problems)
    }

    /// Re-reads the repository every `every`, until the manager is dropped.
    pub fn start_polling(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("tessera-repository-poll".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let Some(manager) = weak.upgrade() else {
                    return;
                };
                match manager.sync_repository() {
                    Ok(problems) => {
                        for p in problems {
                            tracing::warn!("repository: {p}");
                        }
                    }
                    Err(e) => tracing::warn!("repository: {e}"),
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the repository poller: {e}");
        }
    }

    /// Retires ready versions of `name` outside `wanted` that no alias names.
    fn retire_unwanted(&self, name: &str, wanted: &[u64]) {
        let aliased: BTreeSet<u64> = self
            .aliases()
            .into_iter()
            .filter(|a| a.name == name && !a.alias.ends_with(".previous"))
            .flat_map(|a| a.target.versions())
            .collect();
        self.retire_where(name, |v| !wanted.contains(&v) && !aliased.contains(&v));
    }

    /// Retires the ready versions of `name` for which `unwanted` holds, and
    /// forgets failed ones.
    fn retire_where(&self, name: &str, unwanted: impl Fn(u64) -> bool) {
        let mut inner = self.lock();
        let keys: Vec<_> = inner
            .slots
            .iter()
            .filter(|((n, v), _)| n == name && unwanted(*v))
            .map(|(k, s)| (k.clone(), s.state))
            .collect();
        for (key, state) in keys {
            match state {
                ModelState::Ready => {
                    self.retire_locked(&mut inner, &key, UnloadCause::Policy);
                }
                ModelState::Failed => {
                    inner.slots.remove(&key);
                }
                _ => {}
            }
        }
    }

    /// Retires every version of `name` and forgets the model.
    fn remove_model(&self, name: &str) {
        self.retire_where(name, |_| true);
        self.lock().entries.retain(|e| e.spec.name != name);
    }
}
