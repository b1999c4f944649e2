//! What a request's `model` field names: a model, one of its versions, or
//! one of its aliases (`name`, `name:3`, `name@prod`).

use std::fmt;

/// Which version of a model a reference picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The model's `default` alias, else its highest ready version.
    Default,
    /// One version.
    Version(u64),
    /// An alias (`prod`, `canary`, `prod.previous`).
    Alias(String),
}

/// A parsed `model` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// The model's name.
    pub name: String,
    /// Which of its versions.
    pub selector: Selector,
}

impl ModelRef {
    /// Reads `name@alias` (split at the last `@`), `name:N` (a positive
    /// integer after the last `:`), or a bare name. Anything else after a `:`
    /// stays part of the name, so names like `llama3:8b` still work as names.
    pub fn parse(text: &str) -> Self {
        if let Some((name, alias)) = text.rsplit_once('@') {
            if !name.is_empty() && !alias.is_empty() {
                return Self {
                    name: name.to_string(),
                    selector: Selector::Alias(alias.to_string()),
                };
            }
        }
        if let Some((name, version)) = text.rsplit_once(':') {
            if let Some(v) = parse_version(version) {
                if !name.is_empty() {
                    return Self {
                        name: name.to_string(),
                        selector: Selector::Version(v),
                    };
                }
            }
        }
        Self {
            name: text.to_string(),
            selector: Selector::Default,
        }
    }

    /// The name alone, as the reference a bare name makes.
    pub fn bare(name: &str) -> Self {
        Self {
            name: name.to_string(),
            selector: Selector::Default,
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Default => write!(f, "{}", self.name),
            Selector::Version(v) => write!(f, "{}:{v}", self.name),
            Selector::Alias(a) => write!(f, "{}@{a}", self.name),
        }
    }
}

/// A version number: a positive integer in plain decimal digits.
pub fn parse_version(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&v| v > 0)
}

/// Whether `name` may name a model or an alias: ASCII letters, digits, `.`,
/// `_` and `-`, not starting with `.`, at most 128 bytes. Names are
/// directory names in the repository, so this is also what keeps a name from
/// reaching outside it (`..`, `/`).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_into_name_and_selector() {
        let r = ModelRef::parse("smol");
        assert_eq!((r.name.as_str(), r.selector), ("smol", Selector::Default));
        let r = ModelRef::parse("smol:3");
        assert_eq!(
            (r.name.as_str(), r.selector),
            ("smol", Selector::Version(3))
        );
        let r = ModelRef::parse("smol@prod");
        assert_eq!(
            (r.name.as_str(), r.selector),
            ("smol", Selector::Alias("prod".into()))
        );
        let r = ModelRef::parse("smol@prod.previous");
        assert_eq!(r.selector, Selector::Alias("prod.previous".into()));
        // Not versions: kept whole as names.
        for name in [
            "llama3:8b",
            "smol:0",
            "smol:",
            ":3",
            "smol:-1",
            "@prod",
            "smol@",
        ] {
            assert_eq!(ModelRef::parse(name), ModelRef::bare(name), "{name}");
        }
        assert_eq!(ModelRef::parse("org/model:2").name, "org/model");
        assert_eq!(ModelRef::parse("smol@prod").to_string(), "smol@prod");
        assert_eq!(ModelRef::parse("smol:12").to_string(), "smol:12");
    }

    #[test]
    fn names_cannot_leave_the_repository() {
        for bad in [
            "", "..", ".hidden", "a/b", "../etc", "a\\b", "a b", "ü", "a\0",
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        for good in ["smol", "SmolLM2-135M-Instruct.Q4_1", "a_b-c.d", "7"] {
            assert!(is_valid_name(good), "{good}");
        }
        assert!(!is_valid_name(&"a".repeat(129)));
    }
}
