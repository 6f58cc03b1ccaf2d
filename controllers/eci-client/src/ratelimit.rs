//! Client-side per-action rate limiting, so bursts stay within ECI's published limits instead
//! of being answered with `Throttling`.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::{Duration, Instant};

/// A token bucket: up to `burst` calls at once, refilled at `per_second`.
#[derive(Debug)]
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    pub fn new(limit: Limit) -> Self {
        Self {
            burst: limit.burst.max(1.0),
            per_second: limit.per_second.max(f64::MIN_POSITIVE),
            state: Mutex::new(BucketState {
                tokens: limit.burst.max(1.0),
                refilled_at: Instant::now(),
            }),
        }
    }

    /// Takes a token if one is there; otherwise says how long until one will be.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let mut state = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        let elapsed = now
            .saturating_duration_since(state.refilled_at)
            .as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.per_second).min(self.burst);
        state.refilled_at = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - state.tokens) / self.per_second,
            ))
        }
    }

    /// Waits for a token. Returns whether the caller had to wait.
    pub async fn acquire(&self) -> bool {
        let mut waited = false;
        loop {
            match self.try_acquire() {
                Ok(()) => return waited,
                Err(wait) => {
                    waited = true;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// One action's limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub burst: f64,
    pub per_second: f64,
}

impl Limit {
    /// A limit that never lets more than `calls` through in any 60-second window: a fifth of it
    /// as burst, the rest spread over the minute.
    pub fn per_minute(calls: f64) -> Self {
        Self {
            burst: (calls * 0.2).max(1.0),
            per_second: calls * 0.8 / 60.0,
        }
    }
}

/// Per-action limits; actions without an entry use `default`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    pub per_action: HashMap<String, Limit>,
    pub default: Limit,
}

impl Default for RateLimits {
    /// The published ECI limits (eci-api.md §4). Create/Delete use the documented bucket
    /// (burst 100) refilled no faster than their 1000-per-minute cap.
    fn default() -> Self {
        let create_delete = Limit {
            burst: 100.0,
            per_second: 1000.0 / 60.0,
        };
        let per_action = [
            ("CreateContainerGroup", create_delete),
            ("DeleteContainerGroup", create_delete),
            ("DescribeContainerGroups", Limit::per_minute(2000.0)),
            ("DescribeContainerGroupStatus", Limit::per_minute(10000.0)),
            ("DescribeContainerGroupEvents", Limit::per_minute(10000.0)),
            ("DescribeContainerGroupMetric", Limit::per_minute(2000.0)),
            // The current limits page says 2000, an older one 500: stay within the lower.
            (
                "DescribeMultiContainerGroupMetric",
                Limit::per_minute(500.0),
            ),
            ("UpdateContainerGroup", Limit::per_minute(500.0)),
            ("RestartContainerGroup", Limit::per_minute(500.0)),
            ("ExecContainerCommand", Limit::per_minute(500.0)),
            ("DescribeContainerLog", Limit::per_minute(500.0)),
        ]
        .into_iter()
        .map(|(action, limit)| (action.to_string(), limit))
        .collect();
        Self {
            per_action,
            default: Limit::per_minute(500.0),
        }
    }
}

/// One bucket per action.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: HashMap<String, TokenBucket>,
    default: TokenBucket,
}

impl RateLimiter {
    pub fn new(limits: &RateLimits) -> Self {
        Self {
            buckets: limits
                .per_action
                .iter()
                .map(|(action, limit)| (action.clone(), TokenBucket::new(*limit)))
                .collect(),
            default: TokenBucket::new(limits.default),
        }
    }

    pub fn bucket(&self, action: &str) -> &TokenBucket {
        self.buckets.get(action).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_refills_at_rate() {
        let bucket = TokenBucket::new(Limit {
            burst: 100.0,
            per_second: 20.0,
        });
        for _ in 0..100 {
            assert!(bucket.try_acquire().is_ok());
        }
        let wait = bucket.try_acquire().unwrap_err();
        assert!((wait.as_secs_f64() - 0.05).abs() < 1e-6, "{wait:?}");
        let start = Instant::now();
        for _ in 0..20 {
            bucket.acquire().await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (elapsed - 1.0).abs() < 0.01,
            "20 tokens at 20/s took {elapsed}s"
        );
    }

    #[test]
    fn per_minute_limit_never_exceeds_the_cap_in_a_window() {
        let limit = Limit::per_minute(2000.0);
        let most_in_a_minute = limit.burst + limit.per_second * 60.0;
        assert!(most_in_a_minute <= 2000.0 + 1e-9);
    }
}
