//! A one-shot flag threads can wait on.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Set once, waited on by any number of threads.
#[derive(Clone, Default)]
pub(crate) struct Signal {
    state: Arc<(Mutex<bool>, Condvar)>,
}

impl Signal {
    pub(crate) fn set(&self) {
        let (lock, cond) = &*self.state;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cond.notify_all();
    }

    /// Waits until set or `timeout`; true when set.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let (lock, cond) = &*self.state;
        let set = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (set, _) = cond
            .wait_timeout_while(set, timeout, |set| !*set)
            .unwrap_or_else(PoisonError::into_inner);
        *set
    }
}
