//! The synthetic logs and metrics of simulated containers.
//!
//! Both are pure functions of the container's run times and the clock, so they are
//! deterministic and cost nothing while nobody asks: a running container "writes" a heartbeat
//! line every `log_interval_ms` (plus whatever the admin API appended), and its CPU load and
//! working set follow slow sine waves whose phase comes from the group id and container name.
//! CPU counters are the exact integral of the load, so they only ever increase.

use std::f64::consts::TAU;
use std::hash::{Hash, Hasher};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use eci_types::wire::{ContainerMetric, CpuMetric, MemoryMetric, MetricRecord};

use crate::state::format_time;
use crate::state::group::{ContainerRun, Group, RunPhase, RunState};

/// What a `DescribeContainerLog` call selects, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQuery {
    /// At most this many lines, the newest ones.
    pub tail: usize,
    /// Only lines written at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Prefix every line with its RFC 3339 time (nanoseconds, like the kubelet).
    pub timestamps: bool,
    /// At most this many bytes, from the start of the selection (a line may be cut, as with
    /// the kubelet's `limitBytes`).
    pub limit_bytes: usize,
}

/// The log of one run (`state`) of `run`, as ECI's `Content`.
pub fn log_content(
    group_id: &str,
    run: &ContainerRun,
    state: &RunState,
    interval: TimeDelta,
    now: DateTime<Utc>,
    query: &LogQuery,
) -> String {
    let Some(started) = state.started else {
        return String::new();
    };
    let end = state.finished.unwrap_or(now).min(now);
    if end < started || query.tail == 0 {
        return String::new();
    }
    let from = query.since.map_or(started, |since| since.max(started));
    let mut lines = heartbeats(group_id, run, started, from, end, interval, query.tail);
    let appended: Vec<(DateTime<Utc>, String)> = run
        .appended
        .iter()
        .filter(|(at, _)| *at >= from && *at <= end)
        .map(|(at, text)| (*at, text.to_string()))
        .collect();
    let skip = appended.len().saturating_sub(query.tail);
    lines.extend(appended.into_iter().skip(skip));
    lines.sort_by_key(|(at, _)| *at);
    let skip = lines.len().saturating_sub(query.tail);
    let mut content = String::new();
    for (at, text) in lines.into_iter().skip(skip) {
        if query.timestamps {
            content.push_str(&at.to_rfc3339_opts(SecondsFormat::Nanos, true));
            content.push(' ');
        }
        content.push_str(&text);
        content.push('\n');
    }
    truncate_at_char(&mut content, query.limit_bytes);
    content
}

/// The newest `tail` heartbeat lines written in `[from, end]`.
fn heartbeats(
    group_id: &str,
    run: &ContainerRun,
    started: DateTime<Utc>,
    from: DateTime<Utc>,
    end: DateTime<Utc>,
    interval: TimeDelta,
    tail: usize,
) -> Vec<(DateTime<Utc>, String)> {
    let step = interval.num_milliseconds().max(1);
    let last = (end - started).num_milliseconds().max(0) / step;
    let first_since = ((from - started).num_milliseconds().max(0) + step - 1) / step;
    let first = first_since.max(last.saturating_sub(tail as i64 - 1));
    (first..=last)
        .map(|beat| {
            let at = started + TimeDelta::milliseconds(beat.saturating_mul(step));
            let text = if beat == 0 {
                format!(
                    "[eci-sim] {group_id} {}: started container {} (image {})",
                    format_time(at),
                    run.name,
                    run.image
                )
            } else {
                format!(
                    "[eci-sim] {group_id} {}: {} is alive, heartbeat {beat}",
                    format_time(at),
                    run.name
                )
            };
            (at, text)
        })
        .collect()
}

fn truncate_at_char(text: &mut String, limit: usize) {
    if text.len() > limit {
        let boundary = (0..=limit)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(boundary);
    }
}

const CPU_PERIOD_SECONDS: f64 = 300.0;
const MEMORY_PERIOD_SECONDS: f64 = 600.0;
const MIB: f64 = 1024.0 * 1024.0;

fn phase_of(group_id: &str, container: &str) -> f64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (group_id, container).hash(&mut hasher);
    (hasher.finish() % 10_000) as f64 / 10_000.0 * TAU
}

fn seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// One container's resource shape and wave phase.
struct Profile {
    phase: f64,
    /// Millicores.
    cpu_limit: f64,
    memory_limit: f64,
}

impl Profile {
    /// Mean load: a fifth of the limit, at least one millicore.
    fn base_millicores(&self) -> f64 {
        (self.cpu_limit * 0.2).max(1.0)
    }

    fn load_millicores(&self, at: DateTime<Utc>) -> f64 {
        let omega = TAU / CPU_PERIOD_SECONDS;
        self.base_millicores() * (1.0 + 0.5 * (omega * seconds(at) + self.phase).sin())
    }

    /// Core-nanoseconds used between `from` and `to`: the integral of the load.
    fn core_nanos(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        if to <= from {
            return 0;
        }
        let omega = TAU / CPU_PERIOD_SECONDS;
        let (s, t) = (seconds(from), seconds(to));
        let millicore_seconds = self.base_millicores()
            * ((t - s)
                + 0.5 * ((omega * s + self.phase).cos() - (omega * t + self.phase).cos()) / omega);
        (millicore_seconds * 1e6) as i64
    }

    fn memory(&self, at: DateTime<Utc>) -> MemoryMetric {
        let omega = TAU / MEMORY_PERIOD_SECONDS;
        let limit = self.memory_limit.max(16.0 * MIB);
        let working_set = limit * (0.3 + 0.1 * (omega * seconds(at) + self.phase).sin());
        let usage = (working_set * 1.2).min(limit);
        MemoryMetric {
            available_bytes: (limit - working_set) as i64,
            cache: (usage - working_set * 0.8) as i64,
            rss: (working_set * 0.8) as i64,
            usage_bytes: usage as i64,
            working_set: working_set as i64,
        }
    }

    fn cpu(&self, counted_from: DateTime<Utc>, at: DateTime<Utc>) -> CpuMetric {
        let load = self.load_millicores(at);
        CpuMetric {
            limit: self.cpu_limit as i64,
            load: (load / self.cpu_limit.max(1.0) * 100.0) as i64,
            usage_core_nano_seconds: self.core_nanos(counted_from, at),
            usage_nano_cores: (load * 1e6) as i64,
        }
    }
}

fn running_at(state: &RunState, at: DateTime<Utc>) -> bool {
    state.started.is_some_and(|s| s <= at)
        && state.finished.is_none_or(|f| at <= f)
        && matches!(state.phase, RunPhase::Running | RunPhase::Terminated)
}

fn profiles(group: &Group) -> Vec<Profile> {
    let count = group.containers.len().max(1) as f64;
    group
        .containers
        .iter()
        .map(|run| {
            let spec = group.spec.container.iter().find(|c| *c.name == *run.name);
            let cpu = spec.and_then(|c| c.cpu).filter(|c| *c > 0.0);
            let memory = spec.and_then(|c| c.memory).filter(|m| *m > 0.0);
            Profile {
                phase: phase_of(&group.id, &run.name),
                cpu_limit: cpu.unwrap_or(group.cpu / count) * 1000.0,
                memory_limit: memory.unwrap_or(group.memory / count) * 1024.0 * MIB,
            }
        })
        .collect()
}

/// The group's sample at `at`, or `None` when none of its containers was running then.
pub fn record_at(group: &Group, at: DateTime<Utc>) -> Option<MetricRecord> {
    let profiles = profiles(group);
    // The group's counter runs from its first container start, across restarts, like the
    // pod cgroup's; each container's from its current start, like the container cgroup's.
    let group_start = group
        .containers
        .iter()
        .flat_map(|run| [run.previous.started, run.current.started])
        .flatten()
        .min()?;
    let containers: Vec<ContainerMetric> = group
        .containers
        .iter()
        .zip(&profiles)
        .filter(|(run, _)| running_at(&run.current, at))
        .filter_map(|(run, profile)| {
            Some(ContainerMetric {
                name: run.name.to_string(),
                cpu: profile.cpu(run.current.started?, at),
                memory: profile.memory(at),
            })
        })
        .collect();
    if containers.is_empty() {
        return None;
    }
    let sum = |f: fn(&ContainerMetric) -> i64| containers.iter().map(f).sum::<i64>();
    let limit_millis = (group.cpu * 1000.0) as i64;
    let memory_limit = (group.memory * 1024.0 * MIB) as i64;
    let working_set = sum(|c| c.memory.working_set);
    let nano_cores = sum(|c| c.cpu.usage_nano_cores);
    Some(MetricRecord {
        timestamp: format_time(at),
        cpu: CpuMetric {
            limit: limit_millis,
            load: nano_cores / 10_000 / limit_millis.max(1),
            usage_core_nano_seconds: profiles.iter().map(|p| p.core_nanos(group_start, at)).sum(),
            usage_nano_cores: nano_cores,
        },
        memory: MemoryMetric {
            available_bytes: (memory_limit - working_set).max(0),
            cache: sum(|c| c.memory.cache),
            rss: sum(|c| c.memory.rss),
            usage_bytes: sum(|c| c.memory.usage_bytes),
            working_set,
        },
        containers,
    })
}

/// At most this many records per answer.
pub const MAX_RECORDS: usize = 50;

/// The group's samples at multiples of `period` within `[start, end]` (the newest
/// [`MAX_RECORDS`]), skipping instants when nothing ran.
pub fn records(
    group: &Group,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    period: TimeDelta,
) -> Vec<MetricRecord> {
    let step = period.num_seconds().max(1);
    let last = end.timestamp().div_euclid(step) * step;
    let first = (start.timestamp() + step - 1).div_euclid(step) * step;
    let first = first.max(last - step * (MAX_RECORDS as i64 - 1));
    let mut out = Vec::new();
    let mut at = first;
    while at <= last {
        if let Some(instant) = DateTime::from_timestamp(at, 0)
            && let Some(record) = record_at(group, instant)
        {
            out.push(record);
        }
        at += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile {
            phase: 1.0,
            cpu_limit: 1000.0,
            memory_limit: 1024.0 * MIB,
        }
    }

    #[test]
    fn the_cpu_counter_is_the_integral_of_the_load_and_never_decreases() {
        let p = profile();
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut previous = 0;
        for step in 1..2_000 {
            let at = t0 + TimeDelta::seconds(step);
            let counter = p.core_nanos(t0, at);
            assert!(counter > previous, "step {step}: {counter} <= {previous}");
            previous = counter;
        }
        let one_second = p.core_nanos(t0, t0 + TimeDelta::seconds(1)) as f64;
        let load = p.load_millicores(t0) * 1e6;
        assert!(
            (one_second - load).abs() / load < 0.01,
            "{one_second} vs {load}"
        );
    }

    #[test]
    fn memory_moves_but_stays_within_the_limit_and_above_zero() {
        let p = profile();
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let samples: Vec<i64> = (0..40)
            .map(|i| p.memory(t0 + TimeDelta::seconds(i * 15)).working_set)
            .collect();
        assert!(samples.iter().all(|w| *w > 0 && (*w as f64) < 1024.0 * MIB));
        assert!(samples.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn truncation_keeps_the_head_on_a_char_boundary() {
        let mut text = "añb\n".to_string();
        truncate_at_char(&mut text, 2);
        assert_eq!(text, "a");
        let mut text = "abc".to_string();
        truncate_at_char(&mut text, 10);
        assert_eq!(text, "abc");
    }
}
