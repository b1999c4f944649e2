//! Open streamed responses per caller (`--max-streams-per-key`): a long-lived
//! stream holds a slot until it ends or its client goes away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::auth::Caller;

/// The open streams of every caller.
#[derive(Debug, Default)]
pub struct StreamSlots {
    max: Option<usize>,
    open: Mutex<HashMap<Caller, usize>>,
}

/// A caller already has as many streams open as allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyStreams {
    /// The limit.
    pub max: usize,
}

impl StreamSlots {
    /// At most `max` streams per caller (`None`: no limit).
    pub fn new(max: Option<usize>) -> Self {
        Self {
            max,
            open: Mutex::default(),
        }
    }

    /// Takes a slot for `caller`, released when the returned guard drops.
    pub fn acquire(self: &Arc<Self>, caller: Caller) -> Result<Option<StreamSlot>, TooManyStreams> {
        let Some(max) = self.max else {
            return Ok(None);
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(caller).or_insert(0);
        if *count >= max {
            return Err(TooManyStreams { max });
        }
        *count += 1;
        Ok(Some(StreamSlot {
            slots: self.clone(),
            caller,
        }))
    }

    /// Streams `caller` has open.
    pub fn open(&self, caller: Caller) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&caller).copied().unwrap_or(0)
    }
}

/// One open stream.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    caller: Caller,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.caller) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_caller_and_come_back() {
        let slots = Arc::new(StreamSlots::new(Some(2)));
        let (a, b) = (Caller::Key(0), Caller::Key(1));
        let first = slots.acquire(a).expect("1");
        let _second = slots.acquire(a).expect("2");
        assert_eq!(slots.acquire(a).err(), Some(TooManyStreams { max: 2 }));
        assert!(slots.acquire(b).is_ok());
        drop(first);
        assert_eq!(slots.open(a), 1);
        assert!(slots.acquire(a).expect("freed").is_some());
        assert!(Arc::new(StreamSlots::new(None))
            .acquire(a)
            .expect("no limit")
            .is_none());
    }
}
