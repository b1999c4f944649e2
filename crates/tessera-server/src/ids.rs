//! Response ids and timestamps.

use rand::Rng;

/// `prefix` followed by 24 random hex digits, e.g. `chatcmpl-3f9a...`.
pub fn new_id(prefix: &str) -> String {
    let n: u128 = rand::rng().random();
    format!("{prefix}{:024x}", n & ((1u128 << 96) - 1))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_prefixed_and_distinct() {
        let (a, b) = (super::new_id("cmpl-"), super::new_id("cmpl-"));
        assert!(a.starts_with("cmpl-") && a.len() == 5 + 24, "{a}");
        assert_ne!(a, b);
    }
}
