//! Per-caller rate limits: token buckets for requests and for tokens.
//!
//! A bucket holds up to `limit` and refills continuously at `limit / window`.
//! A request that finds too little is refused with the time until there will
//! be enough (`Retry-After`), which is a fraction of the window, not the rest
//! of it. Token costs are reserved up front (prompt plus `n x max_tokens`)
//! and what was not generated is given back when the request ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::auth::Caller;
use crate::config::RateLimitConfig;

/// Above this many callers, buckets that are full again are forgotten (a
/// full bucket is the same as none), so the map cannot grow without bound.
const PRUNE_ABOVE: usize = 10_000;

/// What a caller ran out of.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    /// `requests` or `tokens`.
    pub what: &'static str,
    /// The limit per window.
    pub limit: u64,
    /// The window.
    pub window: Duration,
    /// How long until the request would fit; `None` if it never can (it
    /// costs more than the whole limit).
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, capacity: f64, per_sec: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * per_sec).min(capacity);
        self.updated = now;
    }
}

#[derive(Debug, Default)]
struct Buckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// The rate limiter of one server.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<Caller, Buckets>>,
}

impl RateLimiter {
    /// A limiter with `config`'s limits (none set: everything passes).
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a token limit is set (so requests must reserve tokens).
    pub fn limits_tokens(&self) -> bool {
        self.config.tokens.is_some()
    }

    /// Takes one request from `caller`'s bucket.
    pub fn check_request(&self, caller: Caller) -> Result<(), Limited> {
        let Some(limit) = self.config.requests else {
            return Ok(());
        };
        self.take(caller, "requests", limit, 1)
    }

    /// Reserves `cost` tokens for `caller`. Dropping the reservation gives
    /// back what [`TokenReservation::settle`] says was not used: all of it
    /// when the request never ran (refused by the engine, say).
    pub fn reserve_tokens(
        self: &Arc<Self>,
        caller: Caller,
        cost: u64,
    ) -> Result<Option<TokenReservation>, Limited> {
        let Some(limit) = self.config.tokens else {
            return Ok(None);
        };
        self.take(caller, "tokens", limit, cost)?;
        Ok(Some(TokenReservation {
            limiter: self.clone(),
            caller,
            reserved: cost,
            used: 0,
        }))
    }

    fn take(
        &self,
        caller: Caller,
        what: &'static str,
        limit: u64,
        cost: u64,
    ) -> Result<(), Limited> {
        let window = self.config.window;
        let limited = |retry_after| Limited {
            what,
            limit,
            window,
            retry_after,
        };
        if cost > limit {
            return Err(limited(None));
        }
        let capacity = limit as f64;
        let per_sec = capacity / window.as_secs_f64();
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > PRUNE_ABOVE {
            prune(&mut map, &self.config, now);
        }
        let buckets = map.entry(caller).or_default();
        let slot = if what == "requests" {
            &mut buckets.requests
        } else {
            &mut buckets.tokens
        };
        let bucket = slot.get_or_insert(Bucket {
            level: capacity,
            updated: now,
        });
        bucket.refill(capacity, per_sec, now);
        let cost = cost as f64;
        if bucket.level >= cost {
            bucket.level -= cost;
            return Ok(());
        }
        // Saturates: a window of centuries must not panic the server.
        let wait =
            Duration::try_from_secs_f64((cost - bucket.level) / per_sec).unwrap_or(Duration::MAX);
        Err(limited(Some(wait)))
    }

    fn give_back(&self, caller: Caller, tokens: u64) {
        let Some(limit) = self.config.tokens else {
            return;
        };
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = map.get_mut(&caller).and_then(|b| b.tokens.as_mut()) {
            bucket.level = (bucket.level + tokens as f64).min(limit as f64);
        }
    }
}

/// Drops every caller whose buckets have refilled completely.
fn prune(map: &mut HashMap<Caller, Buckets>, config: &RateLimitConfig, now: Instant) {
    let secs = config.window.as_secs_f64();
    let full = |b: &Option<Bucket>, limit: Option<u64>| match (b, limit) {
        (Some(b), Some(limit)) => {
            let mut b = *b;
            b.refill(limit as f64, limit as f64 / secs, now);
            b.level >= limit as f64
        }
        _ => true,
    };
    map.retain(|_, b| !(full(&b.requests, config.requests) && full(&b.tokens, config.tokens)));
}

/// Tokens held for a running request.
#[derive(Debug)]
pub struct TokenReservation {
    limiter: Arc<RateLimiter>,
    caller: Caller,
    reserved: u64,
    used: u64,
}

impl TokenReservation {
    /// Records how many of the reserved tokens the request really used.
    pub fn settle(&mut self, used: u64) {
        self.used = used.min(self.reserved);
    }
}

impl Drop for TokenReservation {
    fn drop(&mut self) {
        let unused = self.reserved - self.used;
        if unused > 0 {
            self.limiter.give_back(self.caller, unused);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests: Option<u64>, tokens: Option<u64>, window_ms: u64) -> Arc<RateLimiter> {
        Arc::new(RateLimiter::new(RateLimitConfig {
            requests,
            tokens,
            window: Duration::from_millis(window_ms),
        }))
    }

    #[test]
    fn requests_run_out_and_refill_continuously() {
        let l = limiter(Some(2), None, 60_000);
        let c = Caller::Key(0);
        assert!(l.check_request(c).is_ok());
        assert!(l.check_request(c).is_ok());
        let e = l.check_request(c).expect_err("third");
        assert_eq!((e.what, e.limit), ("requests", 2));
        // One request refills in 30 s; a little of it has passed already.
        let wait = e.retry_after.expect("can retry");
        assert!(
            wait <= Duration::from_secs(30) && wait > Duration::from_secs(29),
            "{wait:?}"
        );
        // Another caller has its own bucket.
        assert!(l.check_request(Caller::Key(1)).is_ok());
    }

    #[test]
    fn a_short_window_recovers_quickly() {
        let l = limiter(Some(1), None, 50);
        let c = Caller::Unknown;
        assert!(l.check_request(c).is_ok());
        assert!(l.check_request(c).is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.check_request(c).is_ok());
    }

    #[test]
    fn unused_tokens_come_back_and_oversized_requests_never_fit() {
        let l = limiter(None, Some(100), 60_000);
        let c = Caller::Key(0);
        let mut r = l.reserve_tokens(c, 80).expect("fits").expect("reserved");
        assert!(l.reserve_tokens(c, 30).is_err());
        r.settle(20);
        drop(r);
        // 60 of the 80 came back.
        assert!(l.reserve_tokens(c, 75).expect("fits again").is_some());
        let e = l.reserve_tokens(c, 101).expect_err("over the limit");
        assert_eq!(e.retry_after, None);
        assert!(limiter(None, None, 1000)
            .reserve_tokens(c, 1 << 40)
            .expect("no limit")
            .is_none());
    }
}
