//! Alias operations: look one up for a request, move it (after loading and
//! warming its new target), delete it, roll it back.

use std::sync::Arc;

use super::{Entry, ModelManager, ResolveError, Servable};
use crate::aliases::{Alias, Mirror, Target};
use crate::lifecycle::ManagerEvent;
use crate::repository::is_valid_alias;

/// Why an alias operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    /// The model, version or alias does not exist (HTTP 404).
    #[error(transparent)]
    NotFound(#[from] ResolveError),
    /// The request is malformed (400).
    #[error("{0}")]
    Invalid(String),
    /// A target version failed to load; the alias did not move (503).
    #[error("{0}")]
    LoadFailed(String),
}

/// An alias's target and mirror; `{alias}.previous` is the target before the
/// alias's last move.
pub(super) fn lookup(entry: &Entry, alias: &str) -> Result<(Target, Option<Mirror>), ResolveError> {
    let unknown = || ResolveError::UnknownAlias {
        name: entry.spec.name.clone(),
        alias: alias.to_string(),
    };
    if let Some(base) = alias.strip_suffix(".previous") {
        let a = entry.aliases.get(base).ok_or_else(unknown)?;
        return Ok((a.previous.clone().ok_or_else(unknown)?, None));
    }
    let a = entry.aliases.get(alias).ok_or_else(unknown)?;
    Ok((a.target.clone(), a.mirror))
}

impl<M: Servable> ModelManager<M> {
    /// Points `alias` of `name` at `target` (with an optional `mirror`).
    /// Availability-preserving: every version it names is loaded and warmed
    /// first, then the alias moves at once; the old target stays reachable
    /// as `{alias}.previous`. Requests already running keep their version.
    pub async fn set_alias(
        self: &Arc<Self>,
        name: &str,
        alias: &str,
        target: Target,
        mirror: Option<Mirror>,
    ) -> Result<(), AliasError> {
        if !is_valid_alias(alias) {
            return Err(AliasError::Invalid(format!(
                "invalid alias name '{alias}': use letters, digits, '.', '_' and '-', not ending in '.previous'"
            )));
        }
        target.check().map_err(AliasError::Invalid)?;
        if let Some(m) = &mirror {
            m.check().map_err(AliasError::Invalid)?;
        }
        let mut versions = target.versions();
        versions.extend(mirror.map(|m| m.version));
        self.load_all(name, &versions).await?;
        let mut inner = self.lock();
        let entry = inner
            .entry_mut(name)
            .ok_or_else(|| ResolveError::UnknownModel(name.to_string()))?;
        let moved = match entry.aliases.get_mut(alias) {
            Some(a) if a.target == target => {
                a.mirror = mirror;
                false
            }
            Some(a) => {
                a.previous = Some(std::mem::replace(&mut a.target, target));
                a.mirror = mirror;
                true
            }
            None => {
                entry.aliases.insert(
                    alias.to_string(),
                    Alias {
                        target,
                        previous: None,
                        mirror,
                    },
                );
                true
            }
        };
        drop(inner);
        if moved {
            self.emit(ManagerEvent::AliasMoved {
                name: name.to_string(),
                alias: alias.to_string(),
            });
        }
        Ok(())
    }

    /// Moves `alias` back to its previous target (loading it first), so that
    /// a second rollback undoes the first. Returns the target now in force.
    pub async fn rollback_alias(
        self: &Arc<Self>,
        name: &str,
        alias: &str,
    ) -> Result<Target, AliasError> {
        let previous = {
            let inner = self.lock();
            let entry = inner
                .entry(name)
                .ok_or_else(|| ResolveError::UnknownModel(name.to_string()))?;
            let a = entry
                .aliases
                .get(alias)
                .ok_or_else(|| ResolveError::UnknownAlias {
                    name: name.to_string(),
                    alias: alias.to_string(),
                })?;
            a.previous.clone().ok_or_else(|| {
                AliasError::Invalid(format!(
                    "alias '{alias}' of '{name}' has not moved; there is nothing to roll back to"
                ))
            })?
        };
        self.load_all(name, &previous.versions()).await?;
        let mut inner = self.lock();
        let entry = inner
            .entry_mut(name)
            .ok_or_else(|| ResolveError::UnknownModel(name.to_string()))?;
        let a = entry
            .aliases
            .get_mut(alias)
            .ok_or_else(|| ResolveError::UnknownAlias {
                name: name.to_string(),
                alias: alias.to_string(),
            })?;
        // Moved again meanwhile: roll back to what is previous now.
        let back = a.previous.take().unwrap_or(previous);
        a.previous = Some(std::mem::replace(&mut a.target, back.clone()));
        drop(inner);
        self.emit(ManagerEvent::AliasMoved {
            name: name.to_string(),
            alias: alias.to_string(),
        });
        Ok(back)
    }

    /// Deletes `alias` of `name`.
    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<(), AliasError> {
        let mut inner = self.lock();
        let entry = inner
            .entry_mut(name)
            .ok_or_else(|| ResolveError::UnknownModel(name.to_string()))?;
        if entry.spec.settings.default.as_deref() == Some(alias) {
            return Err(AliasError::Invalid(format!(
                "alias '{alias}' is the model's default (model.toml); point it elsewhere instead"
            )));
        }
        entry.aliases.remove(alias).map(|_| ()).ok_or_else(|| {
            AliasError::NotFound(ResolveError::UnknownAlias {
                name: name.to_string(),
                alias: alias.to_string(),
            })
        })
    }

    async fn load_all(self: &Arc<Self>, name: &str, versions: &[u64]) -> Result<(), AliasError> {
        for &v in versions {
            self.load(name, Some(v))?
                .wait()
                .await
                .map_err(|e| AliasError::LoadFailed(format!("{name}: {e}")))?;
        }
        Ok(())
    }
}
