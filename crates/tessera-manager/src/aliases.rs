//! Aliases: names for versions (`prod`, `canary`), weighted splits across
//! versions for canaries, sticky per session, and shadow copies (mirrors).

use serde::{Deserialize, Serialize};

/// What an alias points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Target {
    /// One version.
    Version {
        /// The version.
        version: u64,
    },
    /// Several versions, each taking a share of requests by weight.
    Weighted {
        /// The versions and their weights.
        versions: Vec<WeightedVersion>,
    },
}

/// One version of a weighted alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedVersion {
    /// The version.
    pub version: u64,
    /// Its share, relative to the others' weights.
    pub weight: u32,
}

/// A shadow version that receives a copy of a share of the alias's requests;
/// its answers are counted and discarded, never returned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The shadow version.
    pub version: u64,
    /// Percent of requests copied, in [0, 100].
    pub percent: f64,
}

/// An alias: its target, the target before its last move (`{alias}.previous`,
/// what a rollback returns to), and an optional mirror.
#[derive(Debug, Clone, PartialEq)]
pub struct Alias {
    /// Where requests go.
    pub target: Target,
    /// Where they went before the last move.
    pub previous: Option<Target>,
    /// Copies of requests to a shadow version.
    pub mirror: Option<Mirror>,
}

impl Target {
    /// A single-version target.
    pub fn version(version: u64) -> Self {
        Self::Version { version }
    }

    /// Every version the target can route to.
    pub fn versions(&self) -> Vec<u64> {
        match self {
            Self::Version { version } => vec![*version],
            Self::Weighted { versions } => versions.iter().map(|w| w.version).collect(),
        }
    }

    /// The version most requests go to (the heaviest; the first of equals).
    pub fn primary(&self) -> u64 {
        match self {
            Self::Version { version } => *version,
            Self::Weighted { versions } => versions
                .iter()
                .rev()
                .max_by_key(|w| w.weight)
                .map_or(0, |w| w.version),
        }
    }

    /// Weights are positive in sum and versions positive and distinct.
    pub fn check(&self) -> Result<(), String> {
        let versions = self.versions();
        if versions.contains(&0) {
            return Err("versions are positive integers".into());
        }
        if let Self::Weighted { versions: v } = self {
            if v.is_empty() {
                return Err("versions is empty".into());
            }
            let mut seen = versions.clone();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() != versions.len() {
                return Err("a version appears twice in versions".into());
            }
            if v.iter().map(|w| u64::from(w.weight)).sum::<u64>() == 0 {
                return Err("the weights sum to 0".into());
            }
        }
        Ok(())
    }

    /// The version for one request. A `session` (the request's `user` or
    /// `x-session-id`) always lands on the same version of a weighted
    /// target; without one the pick is random by weight.
    pub fn pick(&self, session: Option<&str>) -> u64 {
        match self {
            Self::Version { version } => *version,
            Self::Weighted { versions } => {
                let total: u64 = versions.iter().map(|w| u64::from(w.weight)).sum();
                let point = match session {
                    Some(s) => stable_hash(s) % total.max(1),
                    None => rand::random::<u64>() % total.max(1),
                };
                let mut acc = 0;
                for w in versions {
                    acc += u64::from(w.weight);
                    if point < acc {
                        return w.version;
                    }
                }
                versions.last().map_or(0, |w| w.version)
            }
        }
    }
}

impl Mirror {
    /// Percent in [0, 100] and a positive version.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=100.0).contains(&self.percent) {
            return Err(format!(
                "mirror.percent {} is not in [0, 100]",
                self.percent
            ));
        }
        if self.version == 0 {
            return Err("mirror.version: versions are positive integers".into());
        }
        Ok(())
    }

    /// Whether this request is copied.
    pub fn sample(&self) -> bool {
        rand::random::<f64>() * 100.0 < self.percent
    }
}

/// FNV-1a: the same session maps to the same point in every process and
/// release (std's hasher is randomly seeded).
fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(a: u32, b: u32) -> Target {
        Target::Weighted {
            versions: vec![
                WeightedVersion {
                    version: 3,
                    weight: a,
                },
                WeightedVersion {
                    version: 4,
                    weight: b,
                },
            ],
        }
    }

    #[test]
    fn targets_parse_as_the_api_sends_them() {
        let t: Target = serde_json::from_str(r#"{"version": 4}"#).expect("parses");
        assert_eq!(t, Target::version(4));
        let t: Target = serde_json::from_str(
            r#"{"versions": [{"version": 3, "weight": 90}, {"version": 4, "weight": 10}]}"#,
        )
        .expect("parses");
        assert_eq!(t, split(90, 10));
        assert_eq!(t.primary(), 3);
        assert_eq!(split(5, 5).primary(), 3);
        assert_eq!(split(1, 9).primary(), 4);
    }

    #[test]
    fn bad_targets_are_named() {
        assert!(Target::version(0).check().is_err());
        assert!(split(0, 0).check().unwrap_err().contains("sum to 0"));
        assert!(Target::Weighted { versions: vec![] }.check().is_err());
        let twice = Target::Weighted {
            versions: vec![
                WeightedVersion {
                    version: 1,
                    weight: 1,
                },
                WeightedVersion {
                    version: 1,
                    weight: 1,
                },
            ],
        };
        assert!(twice.check().unwrap_err().contains("twice"));
        assert!(Mirror {
            version: 1,
            percent: 101.0
        }
        .check()
        .is_err());
    }

    #[test]
    fn sessions_are_sticky_and_zero_weights_never_picked() {
        let t = split(50, 50);
        for s in ["alice", "bob", "carol", "dave"] {
            let first = t.pick(Some(s));
            assert!((0..100).all(|_| t.pick(Some(s)) == first), "{s}");
        }
        let only_four = split(0, 7);
        assert!((0..1000).all(|_| only_four.pick(None) == 4));
        // Different sessions do spread over both versions.
        let picks: Vec<u64> = (0..200)
            .map(|i| t.pick(Some(&format!("user-{i}"))))
            .collect();
        assert!(picks.contains(&3) && picks.contains(&4));
    }
}
