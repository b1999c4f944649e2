//! tessera's model lifecycle: which models a server knows, which of their
//! versions are loaded, and where each request goes.
//!
//! - [`ModelManager`] owns a [`Loader`] (the device and the compute pool),
//!   one [`MemoryBudget`] and every model. A version moves through
//!   [`ModelState`]s `loading → ready → draining → unloading`, or `failed`.
//!   Loads run on their own threads; idle models are evicted least recently
//!   used first when a load needs room, and unloaded after their
//!   [`KeepAlive`].
//! - [`Repository`] reads a model repository directory
//!   (`DIR/<name>/<version>/`, `model.toml` as [`ModelSettings`]);
//!   [`VersionPolicy`] says which versions to serve.
//! - [`ModelRef`] parses a request's `model` (`name`, `name:3`, `name@prod`);
//!   [`Target`] is what an alias points at, weighted for canaries, with an
//!   optional [`Mirror`].
//!
//! The crate knows the engine (to see whether a model is idle and when its
//! engine has exited) but no tensors: the binary's loader brings the model.

pub mod aliases;
pub mod budget;
pub mod keep_alive;
pub mod lifecycle;
mod manager;
pub mod model_ref;
pub mod repository;
mod signal;
pub mod units;

pub use aliases::{Mirror, Target, WeightedVersion};
pub use budget::MemoryBudget;
pub use keep_alive::KeepAlive;
pub use lifecycle::{ManagerEvent, ModelState, UnloadCause};
pub use manager::{
    AliasError, AliasStatus, LoadTarget, LoadWait, Loader, ManagerSettings, ModelManager,
    ResolveError, Route, Servable, ServableId, VersionStatus,
};
pub use model_ref::{ModelRef, Selector};
pub use repository::{
    ModelOptions, ModelSettings, ModelSpec, Repository, RepositoryError, VersionPolicy,
};
