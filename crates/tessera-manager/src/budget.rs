//! The one memory budget every loaded model shares.

/// Bytes reserved against a fixed budget: a model's weights and KV cache are
/// reserved before it loads and released once its engine has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    total: u64,
    used: u64,
}

impl MemoryBudget {
    /// A budget of `total` bytes, nothing used.
    pub fn new(total: u64) -> Self {
        Self { total, used: 0 }
    }

    /// The budget.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes reserved.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Bytes not reserved.
    pub fn free(&self) -> u64 {
        self.total - self.used
    }

    /// Reserves `bytes` if they fit.
    pub fn try_reserve(&mut self, bytes: u64) -> bool {
        if bytes <= self.free() {
            self.used += bytes;
            true
        } else {
            false
        }
    }

    /// Gives back `bytes` reserved earlier.
    ///
    /// # Panics
    /// When more is released than is reserved: a bookkeeping bug that would
    /// let models overrun the budget, so it fails loudly.
    pub fn release(&mut self, bytes: u64) {
        assert!(
            bytes <= self.used,
            "memory budget: releasing {bytes} bytes with only {} reserved",
            self.used
        );
        self.used -= bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_or_fail_and_come_back() {
        let mut b = MemoryBudget::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(41));
        assert!(b.try_reserve(40));
        assert_eq!((b.used(), b.free()), (100, 0));
        b.release(60);
        assert_eq!(b.free(), 60);
    }

    #[test]
    #[should_panic(expected = "releasing 5 bytes with only 0 reserved")]
    fn releasing_what_was_never_reserved_is_a_bug() {
        MemoryBudget::new(10).release(5);
    }
}
