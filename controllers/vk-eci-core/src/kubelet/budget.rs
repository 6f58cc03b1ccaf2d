//! Sharing ECI's per-minute call limits between the kubelet API's users.
//!
//! ECI's limits are per account and action (eci-api.md §4): 500 `DescribeContainerLog` calls a
//! minute for every log stream of every replica together, 500 (the stricter of two published
//! figures) `DescribeMultiContainerGroupMetric` calls for the metric refresher. The kubelet API
//! takes a configured share of each, so the rest stays for other tools on the same account.

use std::time::{Duration, Instant};

/// A token bucket that never lets more than `calls_per_minute` through in any 60 seconds:
/// a sixth of them at once, the rest spread over the minute.
#[derive(Debug, Clone)]
pub struct CallBudget {
    burst: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl CallBudget {
    pub fn per_minute(calls_per_minute: u32, now: Instant) -> Self {
        let burst = burst_of(calls_per_minute);
        Self {
            burst,
            per_second: (sustained_per_minute(calls_per_minute) / 60.0).max(f64::MIN_POSITIVE),
            tokens: burst,
            at: now,
        }
    }

    /// Takes a call if one is left; otherwise says how long until one will be.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - self.tokens) / self.per_second).min(3600.0),
            ))
        }
    }
}

fn burst_of(calls_per_minute: u32) -> f64 {
    (f64::from(calls_per_minute.max(1)) / 6.0).max(1.0)
}

/// The calls a minute a [`CallBudget`] of `calls_per_minute` lets through when used without
/// pause: what is left after its burst, so that no 60 seconds see more than the limit (at
/// least one, so a budget of one call a minute is not a single call for ever).
pub fn sustained_per_minute(calls_per_minute: u32) -> f64 {
    (f64::from(calls_per_minute.max(1)) - burst_of(calls_per_minute)).max(1.0)
}

/// `share` (0..=1) of `limit` calls a minute, at least one.
pub fn share_of(limit: u32, share: f64) -> u32 {
    let share = if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    ((f64::from(limit) * share).floor() as u32).max(1)
}

/// ECI's real-time metric granularity: refreshing faster only fetches the same sample again.
pub const METRIC_GRANULARITY: Duration = Duration::from_secs(15);

/// How often every pod's metrics can be refreshed when `pods` are fetched `per_call` at a
/// time within a budget of `calls_per_minute`, which pass after pass spends at its
/// [`sustained_per_minute`] rate: never faster than `floor` (normally [`METRIC_GRANULARITY`]).
///
/// 10,000 pods, 20 per call, 400 calls a minute (80 % of 500, 333 sustained): 500 calls, one
/// refresh every 90 s; with the 2,000-a-minute quota the current limits page states (80 %:
/// 1,600), 22.5 s.
pub fn refresh_interval(
    pods: usize,
    per_call: usize,
    calls_per_minute: u32,
    floor: Duration,
) -> Duration {
    let calls = pods.div_ceil(per_call.max(1)) as f64;
    let minutes = calls / sustained_per_minute(calls_per_minute);
    Duration::from_secs_f64(minutes * 60.0).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_never_exceeds_its_calls_in_a_minute() {
        let start = Instant::now();
        let mut budget = CallBudget::per_minute(400, start);
        let mut taken = 0;
        for tenth in 0..600 {
            let now = start + Duration::from_millis(tenth * 100);
            while budget.try_take(now).is_ok() {
                taken += 1;
            }
        }
        assert!(taken <= 400, "{taken} calls in 60 s");
        assert!(taken >= 390, "{taken}: the budget should be nearly usable");
    }

    #[test]
    fn a_budget_used_without_pause_spends_its_sustained_rate() {
        let start = Instant::now();
        let mut budget = CallBudget::per_minute(400, start);
        let mut taken = 0;
        for tenth in 0..3000 {
            let now = start + Duration::from_millis(tenth * 100);
            while budget.try_take(now).is_ok() {
                taken += 1;
            }
        }
        let per_minute_after_the_burst = f64::from(taken - 66) / 5.0;
        assert!(
            (per_minute_after_the_burst - sustained_per_minute(400)).abs() < 2.0,
            "{per_minute_after_the_burst} vs {}",
            sustained_per_minute(400)
        );
    }

    #[test]
    fn a_budget_of_one_call_a_minute_keeps_allowing_one() {
        let start = Instant::now();
        let mut budget = CallBudget::per_minute(1, start);
        assert!(budget.try_take(start).is_ok());
        assert!(budget.try_take(start + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn an_empty_budget_says_how_long_to_wait() {
        let start = Instant::now();
        let mut budget = CallBudget::per_minute(6, start);
        assert!(budget.try_take(start).is_ok());
        let wait = budget.try_take(start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(12), "5 calls spread over 60 s");
        assert!(budget.try_take(start + wait).is_ok());
    }

    #[test]
    fn shares_are_bounded_and_never_zero() {
        assert_eq!(share_of(500, 0.8), 400);
        assert_eq!(share_of(500, 7.0), 500);
        assert_eq!(share_of(500, 0.0), 1);
        assert_eq!(share_of(500, f64::NAN), 1);
    }

    #[test]
    fn the_refresh_interval_follows_from_the_call_budget() {
        let floor = METRIC_GRANULARITY;
        assert_eq!(
            refresh_interval(10_000, 20, 400, floor).as_secs(),
            90,
            "10,000 pods on 80 % of 500 calls/min, 333 of them sustained"
        );
        assert_eq!(
            refresh_interval(10_000, 20, 1_600, floor),
            Duration::from_millis(22_500)
        );
        assert_eq!(refresh_interval(10, 20, 400, floor), METRIC_GRANULARITY);
        assert_eq!(refresh_interval(0, 0, 0, floor), METRIC_GRANULARITY);
        assert_eq!(
            refresh_interval(10, 20, 400, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
