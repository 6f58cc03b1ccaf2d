//! Time arithmetic that cannot panic.
//!
//! chrono's operators panic on overflow (`DateTime + TimeDelta` past year 262143,
//! `TimeDelta::seconds` past ±292 million years, `TimeDelta + TimeDelta`), and the values vk-eci
//! computes with come from users (policy durations, grace periods), the cluster and ECI (the
//! minutes of a spot notice). A panic in a reconciler kills the process and every new leader
//! meets the same object again, so every such computation goes through these helpers, which
//! saturate at the ends of the representable range instead.

use chrono::{DateTime, TimeDelta, Utc};

/// `at + delta`, or the latest (earliest) representable time if that overflows.
pub fn add(at: DateTime<Utc>, delta: TimeDelta) -> DateTime<Utc> {
    at.checked_add_signed(delta)
        .unwrap_or(if delta < TimeDelta::zero() {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
}

/// `at - delta`, saturating like [`add`].
pub fn sub(at: DateTime<Utc>, delta: TimeDelta) -> DateTime<Utc> {
    at.checked_sub_signed(delta)
        .unwrap_or(if delta < TimeDelta::zero() {
            DateTime::<Utc>::MAX_UTC
        } else {
            DateTime::<Utc>::MIN_UTC
        })
}

/// `a + b`, saturating at [`TimeDelta::MIN`] / [`TimeDelta::MAX`].
pub fn sum(a: TimeDelta, b: TimeDelta) -> TimeDelta {
    a.checked_add(&b).unwrap_or(if b < TimeDelta::zero() {
        TimeDelta::MIN
    } else {
        TimeDelta::MAX
    })
}

/// `seconds` seconds, clamped to the representable range.
pub fn seconds(seconds: i64) -> TimeDelta {
    TimeDelta::try_seconds(seconds).unwrap_or(if seconds < 0 {
        TimeDelta::MIN
    } else {
        TimeDelta::MAX
    })
}

/// `milliseconds` milliseconds (fractions rounded), clamped to the representable range;
/// not-a-number is zero.
pub fn milliseconds(milliseconds: f64) -> TimeDelta {
    if milliseconds.is_nan() {
        return TimeDelta::zero();
    }
    // `as` saturates at i64::MIN/MAX; i64::MIN itself is one past TimeDelta::MIN.
    TimeDelta::try_milliseconds(milliseconds.round() as i64).unwrap_or(if milliseconds < 0.0 {
        TimeDelta::MIN
    } else {
        TimeDelta::MAX
    })
}

/// `delta` as a `std` duration; negative is zero.
pub fn to_std(delta: TimeDelta) -> std::time::Duration {
    delta.to_std().unwrap_or_default()
}

/// A `std` duration as a `TimeDelta`, clamped to [`TimeDelta::MAX`].
pub fn from_std(duration: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
        (
            DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
            0u32..1_000_000_000,
        )
            .prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap_or_default())
    }

    fn any_delta() -> impl Strategy<Value = TimeDelta> {
        prop_oneof![
            Just(TimeDelta::MAX),
            Just(TimeDelta::MIN),
            Just(TimeDelta::zero()),
            any::<i64>().prop_map(seconds),
            any::<f64>().prop_map(milliseconds),
        ]
    }

    #[test]
    fn the_ends_saturate() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(add(now, TimeDelta::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(add(now, TimeDelta::MIN), DateTime::<Utc>::MIN_UTC);
        assert_eq!(sub(now, TimeDelta::MAX), DateTime::<Utc>::MIN_UTC);
        assert_eq!(sub(now, TimeDelta::MIN), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            sum(TimeDelta::MAX, TimeDelta::milliseconds(1)),
            TimeDelta::MAX
        );
        assert_eq!(seconds(i64::MAX), TimeDelta::MAX);
        assert_eq!(seconds(i64::MIN), TimeDelta::MIN);
        assert_eq!(milliseconds(f64::INFINITY), TimeDelta::MAX);
        assert_eq!(milliseconds(-1e300), TimeDelta::MIN);
        assert_eq!(milliseconds(f64::NAN), TimeDelta::zero());
        assert_eq!(to_std(TimeDelta::seconds(-5)), std::time::Duration::ZERO);
        assert_eq!(from_std(std::time::Duration::MAX), TimeDelta::MAX);
        assert_eq!(add(now, seconds(90)), now + TimeDelta::seconds(90));
    }

    proptest! {
        #[test]
        fn add_and_sub_never_panic_and_stay_monotonic(at in any_time(), delta in any_delta()) {
            let later = add(at, delta);
            let earlier = sub(at, delta);
            if delta >= TimeDelta::zero() {
                prop_assert!(earlier <= at && at <= later);
            } else {
                prop_assert!(later <= at && at <= earlier);
            }
        }

        #[test]
        fn sums_are_exact_or_saturated(a in any_delta(), b in any_delta()) {
            let total = sum(a, b);
            match a.checked_add(&b) {
                Some(exact) => prop_assert_eq!(total, exact),
                None => prop_assert!(total == TimeDelta::MAX || total == TimeDelta::MIN),
            }
        }
    }
}
