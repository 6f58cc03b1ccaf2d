//! The simulated ECI region: container groups, their lifecycle, stock, IPs and spot releases.
//!
//! Pure state: every operation takes `now`, and time only moves when [`Sim::advance`] is
//! called (the server does so before each request). Due transitions sit in one min-heap, so a
//! fleet of 10,000 groups costs no timers or tasks, and a seeded run replays exactly.
//!
//! Here: the region's state and what every part shares. By responsibility: one group's
//! record ([`group`]), creating groups (`create`), their due transitions (`lifecycle`),
//! delete/restart/update (`changes`), spot releases ([`spot`]), listing ([`query`]), stock
//! (`stock`), vSwitches and IPs (`network`), ClientTokens (`tokens`) and counts ([`stats`]).

pub mod group;
pub mod query;
pub mod spot;
pub mod stats;

mod changes;
mod create;
mod lifecycle;
mod network;
mod stock;
mod tokens;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{MillisRange, SimConfig, TimingConfig};

use group::{Group, RunPhase};
use network::IpPool;
use stats::Stats;
use stock::StockKey;
use tokens::TokenMemo;

/// Environment variables that script a simulated container (harmless on real ECI).
pub mod behaviour_env {
    /// Seconds after start at which the container exits (absent: it runs until deleted).
    pub const EXIT_AFTER_SECONDS: &str = "ECI_SIM_EXIT_AFTER_SECONDS";
    /// Its exit code (default 0).
    pub const EXIT_CODE: &str = "ECI_SIM_EXIT_CODE";
    /// Seconds after start at which it turns ready (default: the readiness probe's initial delay).
    pub const READY_AFTER_SECONDS: &str = "ECI_SIM_READY_AFTER_SECONDS";
}

pub fn format_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn after(at: DateTime<Utc>, seconds: f64) -> DateTime<Utc> {
    at + TimeDelta::milliseconds((seconds * 1000.0).round() as i64)
}

/// The region: every group, the due-transition heap, stock, networks and ClientTokens.
pub struct Sim {
    config: SimConfig,
    rng: StdRng,
    /// Boxed: the map keeps spare buckets, which should cost a pointer each, not a group.
    groups: HashMap<String, Box<Group>>,
    order: BTreeMap<u64, String>,
    timers: BinaryHeap<Reverse<(DateTime<Utc>, u64, String)>>,
    stock: HashMap<StockKey, u64>,
    pools: BTreeMap<String, IpPool>,
    security_groups: HashSet<String>,
    /// ClientToken memos, keyed by a hash of (action, token).
    tokens: HashMap<u64, TokenMemo>,
    next_seq: u64,
    last_prune: Option<DateTime<Utc>>,
    /// `ExecContainerCommand` sessions not yet connected to, by the `s` of their WebSocket URI.
    exec_sessions: HashMap<String, ExecSession>,
    pub stats: Stats,
}

/// An interactive command ECI was asked to run: its WebSocket URI is valid until `expires`.
#[derive(Debug, Clone)]
pub struct ExecSession {
    pub group_id: String,
    pub argv: Vec<String>,
    pub tty: bool,
    pub container: crate::commands::Container,
    pub expires: DateTime<Utc>,
}

impl Sim {
    /// Keeps an interactive exec session for its WebSocket, dropping expired ones.
    pub fn add_exec_session(&mut self, id: String, session: ExecSession, now: DateTime<Utc>) {
        self.exec_sessions.retain(|_, s| s.expires > now);
        self.exec_sessions.insert(id, session);
    }

    /// Takes the session `id` (a WebSocket URI is good for one connection), if still valid.
    pub fn take_exec_session(&mut self, id: &str, now: DateTime<Utc>) -> Option<ExecSession> {
        self.exec_sessions.remove(id).filter(|s| s.expires > now)
    }

    pub fn new(config: SimConfig) -> Result<Self, String> {
        let mut pools = BTreeMap::new();
        for vswitch in &config.vswitches {
            let pool = IpPool::parse(&vswitch.zone, &vswitch.cidr)
                .ok_or_else(|| format!("vSwitch {}: invalid CIDR {}", vswitch.id, vswitch.cidr))?;
            pools.insert(vswitch.id.clone(), pool);
        }
        if pools.is_empty() {
            return Err("at least one vSwitch must be configured".into());
        }
        let stock = config
            .stock
            .iter()
            .map(|s| ((s.zone.clone(), s.spec.clone()), s.count))
            .collect();
        Ok(Self {
            rng: StdRng::seed_from_u64(config.seed),
            security_groups: config.security_groups.iter().cloned().collect(),
            groups: HashMap::new(),
            order: BTreeMap::new(),
            timers: BinaryHeap::new(),
            tokens: HashMap::new(),
            next_seq: 1,
            last_prune: None,
            exec_sessions: HashMap::new(),
            stats: Stats::default(),
            stock,
            pools,
            config,
        })
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id).map(|g| &**g)
    }

    /// Appends `lines` to the log of a running container, as if it had written them at `now`.
    pub fn append_log(
        &mut self,
        id: &str,
        container: &str,
        lines: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let keep = self.config.telemetry.max_appended_lines;
        let group = self
            .groups
            .get_mut(id)
            .ok_or_else(|| format!("no container group {id}"))?;
        let run = group
            .containers
            .iter_mut()
            .find(|c| *c.name == *container)
            .ok_or_else(|| format!("no container {container} in {id}"))?;
        if run.current.phase != RunPhase::Running {
            return Err(format!("container {container} in {id} is not running"));
        }
        run.appended
            .extend(lines.iter().map(|line| (now, Box::from(line.as_str()))));
        let excess = run.appended.len().saturating_sub(keep);
        run.appended.drain(..excess);
        Ok(())
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.order
            .values()
            .filter_map(|id| self.groups.get(id).map(|g| &**g))
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn draw(&mut self, range: MillisRange) -> TimeDelta {
        let (lo, hi) = (range.min.min(range.max), range.max.max(range.min));
        TimeDelta::milliseconds(self.rng.random_range(lo..=hi) as i64)
    }

    /// An id like the real ones: `eci-` and 20 lower-case alphanumerics.
    fn new_id(&mut self) -> String {
        const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        loop {
            let suffix: String = (0..20)
                .map(|_| char::from(CHARS[self.rng.random_range(0..CHARS.len())]))
                .collect();
            let id = format!("eci-{suffix}");
            if !self.groups.contains_key(&id) {
                return id;
            }
        }
    }

    /// An upper-case UUID-shaped request id.
    pub fn request_id(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string()
            .to_ascii_uppercase()
    }

    /// How long instances created (or restarted) from now on take.
    pub fn set_timing(&mut self, timing: TimingConfig) {
        self.config.timing = timing;
    }
}

#[cfg(test)]
mod tests;
