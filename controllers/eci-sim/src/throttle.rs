//! Server-side flow control like the real gateway: a token bucket for Create/Delete, fixed
//! 60-second windows of calls per minute for everything else (eci-api.md §4).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::config::ThrottlingConfig;

/// The published per-minute limits.
pub fn published_per_minute(action: &str) -> u64 {
    match action {
        "DescribeContainerGroupEvents" | "DescribeContainerGroupStatus" | "DescribeRegions" => {
            10_000
        }
        "DescribeContainerGroups" | "DescribeContainerGroupMetric" => 2_000,
        // The current limits page says 2000 for the multi-group call, an older one 500; the
        // simulator holds clients to the stricter figure.
        "ExecContainerCommand" | "DescribeContainerLog" | "DescribeMultiContainerGroupMetric" => {
            500
        }
        _ => 1_000,
    }
}

fn uses_bucket(action: &str) -> bool {
    matches!(action, "CreateContainerGroup" | "DeleteContainerGroup")
}

enum Limiter {
    Bucket { tokens: f64, at: DateTime<Utc> },
    Window { started: DateTime<Utc>, calls: u64 },
}

pub struct Throttle {
    config: ThrottlingConfig,
    limiters: HashMap<String, Limiter>,
}

impl Throttle {
    pub fn new(config: ThrottlingConfig) -> Self {
        Self {
            config,
            limiters: HashMap::new(),
        }
    }

    /// Counts the call; false when it is over the limit.
    pub fn admit(&mut self, action: &str, now: DateTime<Utc>) -> bool {
        if !self.config.enabled {
            return true;
        }
        let burst = self.config.create_delete_burst as f64;
        let per_second = self.config.create_delete_per_second;
        let per_minute = self
            .config
            .per_minute
            .get(action)
            .copied()
            .unwrap_or_else(|| published_per_minute(action));
        let limiter = self.limiters.entry(action.to_string()).or_insert_with(|| {
            if uses_bucket(action) {
                Limiter::Bucket {
                    tokens: burst,
                    at: now,
                }
            } else {
                Limiter::Window {
                    started: now,
                    calls: 0,
                }
            }
        });
        match limiter {
            Limiter::Bucket { tokens, at } => {
                let elapsed = (now - *at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                *tokens = (*tokens + elapsed * per_second).min(burst);
                *at = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    true
                } else {
                    false
                }
            }
            Limiter::Window { started, calls } => {
                if (now - *started).num_milliseconds() >= 60_000 {
                    *started = now;
                    *calls = 0;
                }
                *calls += 1;
                *calls <= per_minute
            }
        }
    }

    pub fn config(&self) -> &ThrottlingConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn create_bucket_allows_100_then_20_per_second() {
        let mut throttle = Throttle::new(ThrottlingConfig::default());
        let t0 = Utc::now();
        let admitted = (0..150)
            .filter(|_| throttle.admit("CreateContainerGroup", t0))
            .count();
        assert_eq!(admitted, 100);
        let t1 = t0 + TimeDelta::seconds(1);
        let admitted = (0..50)
            .filter(|_| throttle.admit("CreateContainerGroup", t1))
            .count();
        assert_eq!(admitted, 20);
    }

    #[test]
    fn describe_window_resets_after_a_minute() {
        let mut config = ThrottlingConfig::default();
        config
            .per_minute
            .insert("DescribeContainerGroups".into(), 3);
        let mut throttle = Throttle::new(config);
        let t0 = Utc::now();
        let admitted = (0..5)
            .filter(|_| throttle.admit("DescribeContainerGroups", t0))
            .count();
        assert_eq!(admitted, 3);
        assert!(throttle.admit("DescribeContainerGroups", t0 + TimeDelta::seconds(61)));
    }
}
