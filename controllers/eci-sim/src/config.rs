//! Simulator configuration. Every field has a default, so the simulator runs with no file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// The region this endpoint serves; requests for another region are refused.
    pub region: String,
    pub vpc_id: String,
    pub vswitches: Vec<VSwitchConfig>,
    pub security_groups: Vec<String>,
    /// Unknown vSwitch or security-group ids in a create are added on the fly (zones in turn,
    /// a fresh /20 each) instead of being refused, so any operator configuration just works.
    pub auto_create_network: bool,
    /// AccessKey pairs the gateway accepts, besides `ECI_ACCESS_KEY`/`ECI_SECRET_KEY`.
    pub credentials: Vec<CredentialConfig>,
    pub timing: TimingConfig,
    /// Instances each zone (or zone and spec) can still hold; absent = unlimited.
    pub stock: Vec<StockConfig>,
    /// Remaining stock at or below which creates in that zone get a `StockExhaust` warning.
    pub stock_exhaust_warning_at: u64,
    pub spot: SpotConfig,
    pub throttling: ThrottlingConfig,
    pub faults: BTreeMap<String, FaultConfig>,
    pub retention: RetentionConfig,
    pub telemetry: TelemetryConfig,
    /// Allowed difference between request time and server time.
    pub max_clock_skew_seconds: i64,
    /// Seed for every random choice (ids, latencies, faults): same seed, same run.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            region: "cn-hangzhou".into(),
            vpc_id: "vpc-sim0000000000000001".into(),
            vswitches: vec![
                VSwitchConfig {
                    id: "vsw-sim-a".into(),
                    zone: "cn-hangzhou-h".into(),
                    cidr: "10.1.0.0/16".into(),
                },
                VSwitchConfig {
                    id: "vsw-sim-b".into(),
                    zone: "cn-hangzhou-i".into(),
                    cidr: "10.2.0.0/16".into(),
                },
            ],
            security_groups: vec!["sg-sim0000000000000001".into()],
            auto_create_network: true,
            credentials: Vec::new(),
            timing: TimingConfig::default(),
            stock: Vec::new(),
            stock_exhaust_warning_at: 5,
            spot: SpotConfig::default(),
            throttling: ThrottlingConfig::default(),
            faults: BTreeMap::new(),
            retention: RetentionConfig::default(),
            telemetry: TelemetryConfig::default(),
            max_clock_skew_seconds: 15 * 60,
            seed: 1,
        }
    }
}

impl SimConfig {
    /// Reads a YAML (or JSON) file.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// Timings small enough for tests, same logic as the defaults.
    pub fn fast() -> Self {
        Self {
            timing: TimingConfig::fast(),
            telemetry: TelemetryConfig::fast(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VSwitchConfig {
    pub id: String,
    pub zone: String,
    pub cidr: String,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    pub access_key_id: String,
    pub access_key_secret: String,
    #[serde(default)]
    pub security_token: Option<String>,
}

impl std::fmt::Debug for CredentialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialConfig")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A duration range in milliseconds; each instance draws uniformly from it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MillisRange {
    pub min: u64,
    pub max: u64,
}

impl MillisRange {
    pub const fn fixed(ms: u64) -> Self {
        Self { min: ms, max: ms }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimingConfig {
    /// Create accepted → scheduled on a host (`Scheduling` → `Pending`).
    pub schedule_ms: MillisRange,
    /// Scheduled → containers running (image pull and start).
    pub start_ms: MillisRange,
    /// Restart and update take this long to come back to `Running`.
    pub restart_ms: MillisRange,
    /// Longest `Terminating` phase of a deleted instance with preStop hooks.
    pub max_terminating_ms: u64,
}

impl Default for TimingConfig {
    /// Like real ECI: a few seconds to schedule, pulls and starts of several seconds more.
    fn default() -> Self {
        Self {
            schedule_ms: MillisRange {
                min: 1_000,
                max: 4_000,
            },
            start_ms: MillisRange {
                min: 4_000,
                max: 20_000,
            },
            restart_ms: MillisRange {
                min: 3_000,
                max: 10_000,
            },
            max_terminating_ms: 30_000,
        }
    }
}

impl TimingConfig {
    pub fn fast() -> Self {
        Self {
            schedule_ms: MillisRange { min: 20, max: 60 },
            start_ms: MillisRange { min: 50, max: 150 },
            restart_ms: MillisRange { min: 50, max: 100 },
            max_terminating_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockConfig {
    pub zone: String,
    /// An instance type (`ecs.c6.large`) or a `<cpu>-<memory>Gi` spec; absent = any spec.
    #[serde(default)]
    pub spec: Option<String>,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpotConfig {
    /// Warning time between `SpotToBeReleased` and `Expired` when none is given.
    pub default_lead_seconds: f64,
}

impl Default for SpotConfig {
    fn default() -> Self {
        Self {
            default_lead_seconds: 180.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottlingConfig {
    pub enabled: bool,
    /// Documented as 400; the current gateway has been seen answering 429.
    pub http_status: u16,
    /// Sent as `x-acs-retry-after` (milliseconds) with throttling errors, when set.
    pub retry_after_ms: Option<u64>,
    /// Per-action overrides of the published calls-per-minute limits.
    pub per_minute: BTreeMap<String, u64>,
    /// Create/Delete token bucket.
    pub create_delete_burst: u64,
    pub create_delete_per_second: f64,
}

impl Default for ThrottlingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            http_status: 400,
            retry_after_ms: None,
            per_minute: BTreeMap::new(),
            create_delete_burst: 100,
            create_delete_per_second: 20.0,
        }
    }
}

/// Faults injected into one action (or every action, under the key `*`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Fraction of calls answered `InternalError`/`ServiceUnavailable` without acting.
    pub error_rate: f64,
    /// Fraction of calls answered with the throttling error.
    pub throttle_rate: f64,
    /// Extra latency before answering.
    pub latency_ms: Option<MillisRange>,
    /// Fraction of calls that hang for `timeout_ms` and then fail.
    pub timeout_rate: f64,
    pub timeout_ms: u64,
    /// Fraction of calls that are carried out but whose answer is lost (503), which is what
    /// makes ClientToken idempotency matter.
    pub lost_response_rate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Terminal instances stay fully visible this long...
    pub full_seconds: i64,
    /// ...after which only the newest this many are kept.
    pub keep_latest: usize,
    /// `ScheduleFailed` instances are deleted after this long.
    pub schedule_failed_seconds: i64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            full_seconds: 3600,
            keep_latest: 100,
            schedule_failed_seconds: 24 * 3600,
        }
    }
}

/// The synthetic logs and metrics of running containers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// A running container writes a heartbeat line this often.
    pub log_interval_ms: u64,
    /// Metric samples are taken at multiples of this many seconds (ECI's real-time
    /// granularity is 15 s).
    pub metric_sample_seconds: u64,
    /// Lines appended through the admin API that a container keeps.
    pub max_appended_lines: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_interval_ms: 10_000,
            metric_sample_seconds: 15,
            max_appended_lines: 10_000,
        }
    }
}

impl TelemetryConfig {
    pub fn fast() -> Self {
        Self {
            log_interval_ms: 1_000,
            metric_sample_seconds: 1,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yaml_and_rejects_unknown_keys() {
        let config = SimConfig::from_yaml(
            "region: cn-beijing\nseed: 7\nstock:\n  - zone: cn-beijing-a\n    count: 3\ntiming:\n  schedule_ms: {min: 1, max: 2}\n",
        )
        .unwrap();
        assert_eq!(config.region, "cn-beijing");
        assert_eq!(config.stock[0].count, 3);
        assert_eq!(config.timing.schedule_ms, MillisRange { min: 1, max: 2 });
        assert_eq!(config.timing.start_ms, TimingConfig::default().start_ms);
        assert!(SimConfig::from_yaml("regoin: typo\n").is_err());
    }
}
