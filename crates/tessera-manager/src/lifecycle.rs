//! The states a model version moves through, and what the manager tells an
//! observer (metrics, logs) as it does.

use std::fmt;

/// Where a model version is in its life:
/// `loading → ready → draining → unloading` (then gone), or `failed`;
/// `unavailable` is a version in the repository that is not loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelState {
    /// Reading weights and warming up; not yet routed to.
    Loading,
    /// Serving requests.
    Ready,
    /// No new requests routed to it; those in flight finish.
    Draining,
    /// Drained; its memory is being freed.
    Unloading,
    /// In the repository, not loaded (a request may load it).
    Unavailable,
    /// The last load failed (see the reason).
    Failed,
}

impl ModelState {
    /// Every state, for gauges that show one series per state.
    pub const ALL: [Self; 6] = [
        Self::Loading,
        Self::Ready,
        Self::Draining,
        Self::Unloading,
        Self::Unavailable,
        Self::Failed,
    ];

    /// The lower-case name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Unloading => "unloading",
            Self::Unavailable => "unavailable",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for ModelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a version left service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnloadCause {
    /// Asked for (the management API).
    Requested,
    /// Evicted to make room for another load.
    Evicted,
    /// Idle longer than its keep-alive.
    Idle,
    /// The repository's version policy no longer serves it, or its directory went away.
    Policy,
}

impl UnloadCause {
    /// The lower-case name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Evicted => "evicted",
            Self::Idle => "idle",
            Self::Policy => "policy",
        }
    }
}

/// Something the manager did, for metrics and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum ManagerEvent {
    /// A version became ready after `seconds` of loading and warming.
    Loaded {
        name: String,
        version: u64,
        seconds: f64,
    },
    /// A load failed.
    LoadFailed {
        name: String,
        version: u64,
        reason: String,
    },
    /// A version stopped taking new requests.
    Retired {
        name: String,
        version: u64,
        cause: UnloadCause,
    },
    /// A drained version's memory was freed.
    Unloaded { name: String, version: u64 },
    /// An alias moved to another target (a swap or a rollback).
    AliasMoved { name: String, alias: String },
}
