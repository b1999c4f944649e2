//! Constrained decoding, as the engine sees it: a per-sequence state machine
//! that says which tokens may come next. The grammar engine behind it lives
//! outside this crate (the model crate implements it over llguidance); the
//! engine only asks for a bitmask before sampling, commits each sampled token,
//! and ends the sequence when the constraint is complete.

use std::fmt;
use std::sync::Arc;

/// One sequence's constraint state.
pub trait TokenConstraint: Send {
    /// Writes the tokens allowed next into `mask`: bit `t % 32` of word
    /// `t / 32` set means token `t` is allowed. Tokens beyond the mask's
    /// width are disallowed. An error ends the sequence as a failure.
    fn fill_mask(&mut self, mask: &mut Vec<u32>) -> Result<(), String>;

    /// Advances past the sampled `token`.
    fn commit(&mut self, token: u32) -> Result<(), String>;

    /// Whether the constraint is complete and nothing more may be generated
    /// (the sequence then finishes with reason `stop`).
    fn is_finished(&self) -> bool;
}

/// A compiled constraint that starts a fresh [`TokenConstraint`] for each
/// sequence of a request (each of `n` samples walks its own state).
pub trait ConstraintFactory: Send + Sync {
    /// A new state at the grammar's start.
    fn start(&self) -> Box<dyn TokenConstraint>;

    /// A short description for logs (e.g. "json_schema").
    fn describe(&self) -> String;
}

/// A request's constraint: a shared compiled grammar. Two are equal when they
/// are the same compiled object.
#[derive(Clone)]
pub struct Constraint(pub Arc<dyn ConstraintFactory>);

impl Constraint {
    /// Wraps a compiled grammar.
    pub fn new(factory: impl ConstraintFactory + 'static) -> Self {
        Self(Arc::new(factory))
    }

    /// A new per-sequence state.
    pub fn start(&self) -> Box<dyn TokenConstraint> {
        self.0.start()
    }
}

impl fmt::Debug for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Constraint({})", self.0.describe())
    }
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Whether bit `token` of `mask` is set.
pub fn is_allowed(mask: &[u32], token: u32) -> bool {
    mask.get(token as usize / 32)
        .is_some_and(|w| w >> (token % 32) & 1 == 1)
}
