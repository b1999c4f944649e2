//! Taking a version out of service: stop routing to it, let its requests
//! finish (draining), then free its memory when its engine exits
//! (unloading). Also the reaper that unloads models idle past their keep-alive.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tessera_engine::engine::EngineHandle;

use super::{Inner, Key, ModelManager, ResolveError, Servable};
use crate::lifecycle::{ManagerEvent, ModelState, UnloadCause};
use crate::signal::Signal;

/// How often the reaper looks for idle models, and a drain for an idle engine.
const TICK: Duration = Duration::from_millis(100);

/// A version out of service whose memory is not yet free.
pub(super) struct Draining {
    pub(super) key: Key,
    /// `Draining` while requests run, then `Unloading`.
    pub(super) state: ModelState,
    pub(super) resident: u64,
    /// Set once its memory is given back to the budget.
    pub(super) done: Signal,
    id: u64,
}

impl<M: Servable> ModelManager<M> {
    /// Stops routing new requests to the ready `versions` of `name` (none:
    /// every loaded one) and unloads them once drained; a failed version's
    /// state is cleared. Returns the versions taken out of service.
    pub fn unload(
        self: &Arc<Self>,
        name: &str,
        version: Option<u64>,
    ) -> Result<Vec<u64>, ResolveError> {
        let mut inner = self.lock();
        if inner.entry(name).is_none() {
            return Err(ResolveError::UnknownModel(name.to_string()));
        }
        let keys: Vec<Key> = inner
            .slots
            .keys()
            .filter(|(n, v)| n == name && version.is_none_or(|want| want == *v))
            .cloned()
            .collect();
        if let Some(v) = version {
            let known = inner
                .entry(name)
                .is_some_and(|e| e.spec.versions.contains_key(&v));
            if keys.is_empty() && !known {
                return Err(ResolveError::UnknownVersion {
                    name: name.to_string(),
                    version: v,
                });
            }
        }
        let mut retired = Vec::new();
        for key in keys {
            match inner.slots.get(&key).map(|s| s.state) {
                Some(ModelState::Ready) => {
                    self.retire_locked(&mut inner, &key, UnloadCause::Requested);
                    retired.push(key.1);
                }
                Some(ModelState::Failed) => {
                    inner.slots.remove(&key);
                }
                _ => {}
            }
        }
        Ok(retired)
    }

    /// Takes the ready version `key` out of routing and starts its drain;
    /// returns what is set once its memory is free.
    pub(super) fn retire_locked(
        &self,
        inner: &mut Inner<M>,
        key: &Key,
        cause: UnloadCause,
    ) -> Signal {
        let slot = inner
            .slots
            .remove(key)
            .unwrap_or_else(|| panic!("retiring {key:?}, which has no slot"));
        let model = slot.served.unwrap_or_else(|| {
            panic!(
                "retiring {key:?}, which is {} (only a ready version retires)",
                slot.state
            )
        });
        let engine = model.engine().clone();
        // The routing table's reference goes here; requests in flight keep
        // theirs until they finish.
        drop(model);
        inner.next_drain_id += 1;
        let done = Signal::default();
        inner.draining.push(Draining {
            key: key.clone(),
            state: ModelState::Draining,
            resident: slot.resident,
            done: done.clone(),
            id: inner.next_drain_id,
        });
        let id = inner.next_drain_id;
        let manager = self.weak_self();
        let spawned = std::thread::Builder::new()
            .name(format!("tessera-drain-{}-{}", key.0, key.1))
            .spawn(move || drain(manager, id, engine));
        if let Err(e) = spawned {
            // Without the thread the engine handle is already dropped with
            // the closure; its memory still frees, but the budget would not
            // learn of it: say so loudly.
            tracing::error!(
                "cannot start a drain thread for {key:?}: {e}; its budget stays reserved"
            );
        }
        self.emit(ManagerEvent::Retired {
            name: key.0.clone(),
            version: key.1,
            cause,
        });
        done
    }

    fn finish_drain(&self, id: u64) {
        let mut inner = self.lock();
        let Some(at) = inner.draining.iter().position(|d| d.id == id) else {
            panic!("drain {id} finished twice");
        };
        let d = inner.draining.remove(at);
        inner.budget.release(d.resident);
        drop(inner);
        d.done.set();
        self.emit(ManagerEvent::Unloaded {
            name: d.key.0,
            version: d.key.1,
        });
    }

    fn set_drain_state(&self, id: u64, state: ModelState) {
        if let Some(d) = self.lock().draining.iter_mut().find(|d| d.id == id) {
            d.state = state;
        }
    }

    /// Unloads ready versions idle past their keep-alive; a busy version
    /// counts as used now.
    fn reap_idle(&self) {
        let mut inner = self.lock();
        let now = Instant::now();
        let default = self.settings.keep_alive;
        let mut expired = Vec::new();
        let keep_alives: Vec<(Key, crate::keep_alive::KeepAlive)> = inner
            .slots
            .iter()
            .filter(|(_, s)| s.state == ModelState::Ready)
            .map(|(k, s)| {
                let configured = inner.entry(&k.0).and_then(|e| e.spec.settings.keep_alive);
                (k.clone(), s.keep_alive.or(configured).unwrap_or(default))
            })
            .collect();
        for (key, keep_alive) in keep_alives {
            let Some(slot) = inner.slots.get_mut(&key) else {
                continue;
            };
            let idle = slot.served.as_ref().is_some_and(|m| m.engine().is_idle());
            if !idle {
                slot.last_used = now;
            } else if keep_alive.expired(now - slot.last_used) {
                expired.push(key);
            }
        }
        for key in expired {
            self.retire_locked(&mut inner, &key, UnloadCause::Idle);
        }
    }

    fn weak_self(&self) -> Weak<Self> {
        self.me.get().cloned().unwrap_or_default()
    }
}

/// The drain thread: waits for the engine to go idle (`draining`), lets go of
/// it (`unloading`), waits for its thread to exit, then frees the budget.
fn drain<M: Servable>(manager: Weak<ModelManager<M>>, id: u64, engine: EngineHandle) {
    while !engine.is_idle() {
        std::thread::sleep(TICK);
    }
    let exit = engine.exit();
    if let Some(m) = manager.upgrade() {
        m.set_drain_state(id, ModelState::Unloading);
    }
    drop(engine);
    let mut waited = Duration::ZERO;
    while !exit.wait(Duration::from_secs(30)) {
        waited += Duration::from_secs(30);
        tracing::warn!(
            "drain {id}: the engine has not exited after {}s",
            waited.as_secs()
        );
    }
    if let Some(m) = manager.upgrade() {
        m.finish_drain(id);
    }
}

/// Starts the thread that unloads idle models; it ends with the manager.
pub(super) fn start_reaper<M: Servable>(manager: &Arc<ModelManager<M>>) {
    let _ = manager.me.set(Arc::downgrade(manager));
    let weak = Arc::downgrade(manager);
    let spawned = std::thread::Builder::new()
        .name("tessera-reaper".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            match weak.upgrade() {
                Some(m) => m.reap_idle(),
                None => return,
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the keep-alive thread: {e}; idle models stay loaded");
    }
}
