//! The simulated ECI region: container groups, their lifecycle, stock, IPs and spot releases.
//!
//! Pure state: every operation takes `now`, and time only moves when [`Sim::advance`] is
//! called (the server does so before each request). Due transitions sit in one min-heap, so a
//! fleet of 10,000 groups costs no timers or tasks, and a seeded run replays exactly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use eci_types::wire::{self, CreateContainerGroupRequest, Tag, status};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::{MillisRange, SimConfig, TimingConfig};
use crate::error::ApiError;
use eci_types::spec;

/// Environment variables that script a simulated container (harmless on real ECI).
pub mod behaviour_env {
    /// Seconds after start at which the container exits (absent: it runs until deleted).
    pub const EXIT_AFTER_SECONDS: &str = "ECI_SIM_EXIT_AFTER_SECONDS";
    /// Its exit code (default 0).
    pub const EXIT_CODE: &str = "ECI_SIM_EXIT_CODE";
    /// Seconds after start at which it turns ready (default: the readiness probe's initial delay).
    pub const READY_AFTER_SECONDS: &str = "ECI_SIM_READY_AFTER_SECONDS";
}

const MAX_EVENTS: usize = 50;

pub fn format_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn after(at: DateTime<Utc>, seconds: f64) -> DateTime<Utc> {
    at + TimeDelta::milliseconds((seconds * 1000.0).round() as i64)
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunPhase {
    /// Never started (the `PreviousState` of a container that has not restarted).
    #[default]
    None,
    Waiting,
    Running,
    Terminated,
}

/// A container state, kept compact; rendered to the wire shape only when answering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunState {
    pub phase: RunPhase,
    pub reason: &'static str,
    pub exit_code: i64,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
}

impl RunState {
    pub fn to_wire(&self) -> wire::ContainerState {
        let (state, detail) = match self.phase {
            RunPhase::None => ("", ""),
            RunPhase::Waiting => ("Waiting", ""),
            RunPhase::Running => ("Running", "working"),
            RunPhase::Terminated => ("Terminated", ""),
        };
        wire::ContainerState {
            state: state.into(),
            detail_status: detail.into(),
            reason: self.reason.into(),
            message: if self.reason == EXPIRED_REASON {
                "The spot instance has been released".into()
            } else {
                String::new()
            },
            exit_code: self.exit_code,
            signal: if self.exit_code == 137 { 9 } else { 0 },
            start_time: self.started.map(format_time).unwrap_or_default(),
            finish_time: self.finished.map(format_time).unwrap_or_default(),
        }
    }
}

const EXPIRED_REASON: &str = "Expired";

/// An ECI event, kept compact; rendered to the wire shape only when answering.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    pub warning: bool,
    /// The container it concerns, or the group's name.
    pub name: Arc<str>,
    pub reason: &'static str,
    pub message: Box<str>,
    pub count: u32,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

impl SimEvent {
    pub fn to_wire(&self) -> wire::Event {
        wire::Event {
            count: i64::from(self.count),
            r#type: if self.warning { "Warning" } else { "Normal" }.into(),
            name: self.name.to_string(),
            reason: self.reason.into(),
            message: self.message.to_string(),
            first_timestamp: format_time(self.first),
            last_timestamp: format_time(self.last),
        }
    }
}

#[derive(Debug, Clone)]
struct Behaviour {
    exit_after: Option<f64>,
    exit_code: i64,
    ready_after: f64,
}

impl Behaviour {
    fn of(container: &wire::Container) -> Self {
        let env = |name: &str| {
            container
                .environment_var
                .iter()
                .find(|e| e.key == name)
                .and_then(|e| e.value.as_deref())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        let probe_delay = container
            .readiness_probe
            .as_ref()
            .and_then(|p| p.initial_delay_seconds)
            .unwrap_or(0)
            .max(0) as f64;
        Self {
            exit_after: env(behaviour_env::EXIT_AFTER_SECONDS),
            exit_code: env(behaviour_env::EXIT_CODE).map_or(0, |c| c as i64),
            ready_after: env(behaviour_env::READY_AFTER_SECONDS).unwrap_or(probe_delay),
        }
    }
}

/// One container's run state.
#[derive(Debug, Clone)]
pub struct ContainerRun {
    pub name: Arc<str>,
    pub image: Arc<str>,
    pub ready: bool,
    pub restart_count: i64,
    pub current: RunState,
    pub previous: RunState,
    /// Log lines written through the admin API, oldest first; each run's log shows those
    /// within its own start and finish.
    pub appended: Vec<(DateTime<Utc>, Box<str>)>,
    behaviour: Behaviour,
    ready_due: Option<DateTime<Utc>>,
    exit_due: Option<DateTime<Utc>>,
}

impl ContainerRun {
    fn new(container: &wire::Container) -> Self {
        Self {
            name: Arc::from(container.name.as_str()),
            image: Arc::from(container.image.as_str()),
            ready: false,
            restart_count: 0,
            current: RunState {
                phase: RunPhase::Waiting,
                reason: "ContainerCreating",
                ..RunState::default()
            },
            previous: RunState::default(),
            appended: Vec::new(),
            behaviour: Behaviour::of(container),
            ready_due: None,
            exit_due: None,
        }
    }

    fn start(&mut self, at: DateTime<Utc>) {
        self.current = RunState {
            phase: RunPhase::Running,
            started: Some(at),
            ..RunState::default()
        };
        self.ready = false;
        self.ready_due = Some(after(at, self.behaviour.ready_after));
        self.exit_due = self.behaviour.exit_after.map(|s| after(at, s));
    }

    fn terminate(&mut self, at: DateTime<Utc>, exit_code: i64, reason: &'static str) -> RunState {
        self.ready = false;
        self.ready_due = None;
        self.exit_due = None;
        RunState {
            phase: RunPhase::Terminated,
            reason,
            exit_code,
            started: self.current.started,
            finished: Some(at),
        }
    }

    pub fn is_terminated(&self) -> bool {
        self.current.phase == RunPhase::Terminated
    }

    fn next_due(&self) -> Option<DateTime<Utc>> {
        [self.ready_due, self.exit_due].into_iter().flatten().min()
    }
}

/// A simulated container group.
#[derive(Debug, Clone)]
pub struct Group {
    pub seq: u64,
    pub id: String,
    pub spec: CreateContainerGroupRequest,
    pub zone: String,
    pub vswitch: String,
    pub security_group: String,
    pub ip: Option<Ipv4Addr>,
    pub instance_type: String,
    pub cpu: f64,
    pub memory: f64,
    pub status: &'static str,
    pub status_changed_at: DateTime<Utc>,
    /// Last change of anything a status poll shows (status, containers, events): what
    /// `SinceSecond` filters on, so incremental polling sees readiness, restarts and notices.
    pub changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub release_at: Option<DateTime<Utc>>,
    pub containers: Vec<ContainerRun>,
    pub init_containers: Vec<ContainerRun>,
    pub events: Vec<SimEvent>,
    candidate_vswitches: Vec<String>,
    candidate_specs: Vec<String>,
    scheduled_due: Option<DateTime<Utc>>,
    start_due: Option<DateTime<Utc>>,
    terminate_due: Option<DateTime<Utc>>,
    stock_held: Option<StockKey>,
}

impl Group {
    fn next_due(&self) -> Option<DateTime<Utc>> {
        let own = [
            self.scheduled_due,
            self.start_due,
            self.release_at,
            self.terminate_due,
        ];
        own.into_iter()
            .flatten()
            .chain(self.containers.iter().filter_map(ContainerRun::next_due))
            .min()
    }

    pub fn is_spot(&self) -> bool {
        matches!(
            self.spec.spot_strategy.as_deref(),
            Some("SpotAsPriceGo" | "SpotWithPriceLimit")
        )
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status,
            status::SUCCEEDED | status::FAILED | status::EXPIRED | status::SCHEDULE_FAILED
        )
    }

    fn set_status(&mut self, to: &'static str, at: DateTime<Utc>) {
        if self.status != to {
            self.status = to;
            self.status_changed_at = at;
            self.changed_at = at;
        }
    }

    fn event(
        &mut self,
        kind: &str,
        name: &str,
        reason: &'static str,
        message: String,
        at: DateTime<Utc>,
    ) {
        self.changed_at = at;
        if let Some(existing) = self
            .events
            .iter_mut()
            .find(|e| e.reason == reason && *e.message == *message && *e.name == *name)
        {
            existing.count += 1;
            existing.last = at;
            return;
        }
        if self.events.len() >= MAX_EVENTS {
            self.events.remove(0);
        }
        // Share the name with the container it concerns rather than copying it per event.
        let name = self
            .containers
            .iter()
            .chain(&self.init_containers)
            .map(|c| &c.name)
            .find(|n| ***n == *name)
            .cloned()
            .unwrap_or_else(|| Arc::from(name));
        self.events.push(SimEvent {
            warning: kind == "Warning",
            name,
            reason,
            message: message.into_boxed_str(),
            count: 1,
            first: at,
            last: at,
        });
    }

    /// The kubelet-style events of a container that just started.
    fn container_started_events(&mut self, name: &str, image: &str, at: DateTime<Utc>) {
        self.event(
            "Normal",
            name,
            "Pulled",
            format!("Successfully pulled image \"{image}\""),
            at,
        );
        self.event(
            "Normal",
            name,
            "Created",
            format!("Created container {name}"),
            at,
        );
        self.event(
            "Normal",
            name,
            "Started",
            format!("Started container {name}"),
            at,
        );
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.spec
            .tag
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }

    fn restart_policy(&self) -> &str {
        self.spec.restart_policy.as_deref().unwrap_or("Always")
    }
}

type StockKey = (String, Option<String>);

#[derive(Debug)]
struct IpPool {
    zone: String,
    base: u32,
    size: u32,
    next_offset: u32,
    free: Vec<u32>,
}

impl IpPool {
    fn parse(zone: &str, cidr: &str) -> Option<Self> {
        let (addr, prefix) = cidr.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u32 = prefix.parse().ok().filter(|p| (8..=29).contains(p))?;
        let size = 1u32 << (32 - prefix);
        Some(Self {
            zone: zone.to_string(),
            base: u32::from(addr) & !(size - 1),
            size,
            // The first addresses are the network and reserved gateway addresses.
            next_offset: 3,
            free: Vec::new(),
        })
    }

    fn allocate(&mut self) -> Option<Ipv4Addr> {
        if let Some(offset) = self.free.pop() {
            return Some(Ipv4Addr::from(self.base + offset));
        }
        // The last address is the broadcast address.
        if self.next_offset >= self.size - 1 {
            return None;
        }
        let offset = self.next_offset;
        self.next_offset += 1;
        Some(Ipv4Addr::from(self.base + offset))
    }

    fn release(&mut self, ip: Ipv4Addr) {
        let offset = u32::from(ip).wrapping_sub(self.base);
        if offset < self.size {
            self.free.push(offset);
        }
    }
}

/// Calls and outcomes, for the admin API and benchmarks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub actions: BTreeMap<String, ActionStats>,
    pub groups_created: u64,
    pub groups_deleted: u64,
    pub idempotent_replays: u64,
    pub spot_notices: u64,
    pub spot_expired: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ActionStats {
    pub calls: u64,
    pub succeeded: u64,
    pub throttled: u64,
    pub injected_faults: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Stats {
    pub fn action(&mut self, action: &str) -> &mut ActionStats {
        self.actions.entry(action.to_string()).or_default()
    }
}

#[derive(Debug, Clone)]
struct TokenMemo {
    fingerprint: u64,
    result: Result<String, ApiError>,
}

/// Filters shared by the Describe* actions.
#[derive(Debug, Default, Clone)]
pub struct GroupFilter {
    pub ids: Option<Vec<String>>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub zone: Option<String>,
    pub vswitch: Option<String>,
    pub security_group: Option<String>,
    pub resource_group: Option<String>,
    pub tags: Vec<Tag>,
    pub changed_since: Option<DateTime<Utc>>,
}

impl GroupFilter {
    fn matches(&self, group: &Group) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(&group.id))
            && self
                .name
                .as_ref()
                .is_none_or(|n| *n == group.spec.container_group_name)
            && self.status.as_ref().is_none_or(|s| s == group.status)
            && self.zone.as_ref().is_none_or(|z| *z == group.zone)
            && self.vswitch.as_ref().is_none_or(|v| *v == group.vswitch)
            && self
                .security_group
                .as_ref()
                .is_none_or(|s| *s == group.security_group)
            && self
                .resource_group
                .as_ref()
                .is_none_or(|r| group.spec.resource_group_id.as_ref() == Some(r))
            && self.tags.iter().all(|t| {
                group
                    .tag(&t.key)
                    .is_some_and(|v| t.value.is_empty() || v == t.value)
            })
            && self
                .changed_since
                .is_none_or(|since| group.changed_at >= since)
    }
}

/// A page of matches in creation order.
pub struct Page<'a> {
    pub groups: Vec<&'a Group>,
    pub next_token: String,
    pub total: usize,
}

/// Outcome of an admin spot release.
#[derive(Debug, Default, Serialize)]
pub struct SpotReleaseOutcome {
    pub released: Vec<String>,
    pub skipped: Vec<String>,
    pub release_at: String,
}

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

    fn schedule_timer(&mut self, id: &str) {
        if let Some(group) = self.groups.get(id)
            && let Some(due) = group.next_due()
        {
            self.timers.push(Reverse((due, group.seq, id.to_string())));
        }
    }

    /// Applies every transition due up to `now`.
    pub fn advance(&mut self, now: DateTime<Utc>) {
        while let Some(Reverse((due, _, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, _, id))) = self.timers.pop() else {
                break;
            };
            self.advance_group(&id, now);
        }
        if self
            .last_prune
            .is_none_or(|at| (now - at).num_seconds() >= 10)
        {
            self.prune(now);
            self.last_prune = Some(now);
        }
    }

    fn advance_group(&mut self, id: &str, now: DateTime<Utc>) {
        let mut stepped = false;
        while let Some(due) = self.groups.get(id).and_then(|g| g.next_due()) {
            if due > now {
                break;
            }
            self.step(id, due);
            stepped = true;
        }
        if stepped {
            self.schedule_timer(id);
        }
    }

    fn step(&mut self, id: &str, due: DateTime<Utc>) {
        let Some(mut group) = self.groups.remove(id) else {
            return;
        };
        if group.terminate_due == Some(due) {
            self.release_resources(&mut group);
            self.order.remove(&group.seq);
            self.stats.groups_deleted += 1;
            return;
        }
        group.changed_at = due;
        if group.release_at == Some(due) {
            group.release_at = None;
            self.expire(&mut group, due);
        } else if group.scheduled_due == Some(due) {
            group.scheduled_due = None;
            self.schedule(&mut group, due);
        } else if group.start_due == Some(due) {
            group.start_due = None;
            self.start(&mut group, due);
        } else if let Some(index) = group
            .containers
            .iter()
            .position(|c| c.ready_due == Some(due))
        {
            group.containers[index].ready = true;
            group.containers[index].ready_due = None;
        } else if let Some(index) = group
            .containers
            .iter()
            .position(|c| c.exit_due == Some(due))
        {
            self.container_exit(&mut group, index, due);
        }
        self.groups.insert(id.to_string(), group);
    }

    fn stock_key(&self, zone: &str, spec: &str) -> Option<StockKey> {
        let exact = (zone.to_string(), Some(spec.to_string()));
        if self.stock.contains_key(&exact) {
            return Some(exact);
        }
        let any = (zone.to_string(), None);
        self.stock.contains_key(&any).then_some(any)
    }

    fn has_stock(&self, zone: &str, spec: &str) -> bool {
        self.stock_key(zone, spec)
            .is_none_or(|key| self.stock.get(&key).copied().unwrap_or(0) > 0)
    }

    fn schedule(&mut self, group: &mut Group, at: DateTime<Utc>) {
        let mut saw_stock = false;
        let candidate_vswitches = std::mem::take(&mut group.candidate_vswitches);
        let candidate_specs = std::mem::take(&mut group.candidate_specs);
        for vswitch in &candidate_vswitches {
            let Some(zone) = self.pools.get(vswitch).map(|p| p.zone.clone()) else {
                continue;
            };
            if group.spec.zone_id.as_ref().is_some_and(|z| *z != zone) {
                continue;
            }
            for spec_name in &candidate_specs {
                if !self.has_stock(&zone, spec_name) {
                    continue;
                }
                saw_stock = true;
                let Some(ip) = self.pools.get_mut(vswitch).and_then(IpPool::allocate) else {
                    continue;
                };
                let key = self.stock_key(&zone, spec_name);
                if let Some(key) = &key
                    && let Some(left) = self.stock.get_mut(key)
                {
                    *left -= 1;
                    if *left <= self.config.stock_exhaust_warning_at {
                        let name = group.spec.container_group_name.clone();
                        group.event(
                            "Warning",
                            &name,
                            "StockExhaust",
                            format!(
                                "The stock of the specified zones will be used up. zone: {zone}"
                            ),
                            at,
                        );
                    }
                }
                group.stock_held = key;
                group.ip = Some(ip);
                group.zone = zone.clone();
                group.vswitch = vswitch.clone();
                if let Some((cpu, memory)) = spec::parse(spec_name) {
                    group.cpu = cpu;
                    group.memory = memory;
                }
                group.instance_type = spec_name.clone();
                group.set_status(status::PENDING, at);
                for run in group
                    .init_containers
                    .iter()
                    .chain(&group.containers)
                    .cloned()
                    .collect::<Vec<_>>()
                {
                    group.event(
                        "Normal",
                        &run.name,
                        "Pulling",
                        format!("pulling image \"{}\"", run.image),
                        at,
                    );
                }
                let delay = self.draw(self.config.timing.start_ms);
                group.start_due = Some(at + delay);
                return;
            }
        }
        let name = group.spec.container_group_name.clone();
        if saw_stock {
            group.event(
                "Warning",
                &name,
                "ResourceInsufficient",
                format!(
                    "vSwitch ip not enough for {}.",
                    candidate_vswitches.join(",")
                ),
                at,
            );
        } else {
            group.event(
                "Warning",
                &name,
                "NoStock",
                format!(
                    "Create ECI failed because the specified instance is out of stock. specs: {}",
                    candidate_specs.join(",")
                ),
                at,
            );
        }
        group.set_status(status::SCHEDULE_FAILED, at);
        group.finished_at = Some(at);
    }

    fn start(&mut self, group: &mut Group, at: DateTime<Utc>) {
        let restarting = matches!(group.status, status::RESTARTING | status::UPDATING);
        for index in 0..group.init_containers.len() {
            let run = &mut group.init_containers[index];
            let (name, image, code) =
                (run.name.clone(), run.image.clone(), run.behaviour.exit_code);
            run.start(at);
            run.current = run.terminate(at, code, if code == 0 { "Completed" } else { "Error" });
            group.container_started_events(&name, &image, at);
            if code != 0 {
                for run in &mut group.containers {
                    run.current.reason = "PodInitializing";
                }
                self.finish(group, at);
                return;
            }
        }
        for run in &mut group.containers {
            if restarting && run.current.phase != RunPhase::Waiting {
                run.previous = RunState {
                    phase: RunPhase::Terminated,
                    reason: "Restarted",
                    finished: Some(at),
                    ..run.current.clone()
                };
                run.restart_count += 1;
            }
            run.start(at);
        }
        for (name, image) in group
            .containers
            .iter()
            .map(|r| (r.name.clone(), r.image.clone()))
            .collect::<Vec<_>>()
        {
            group.container_started_events(&name, &image, at);
        }
        group.set_status(status::RUNNING, at);
    }

    fn container_exit(&mut self, group: &mut Group, index: usize, at: DateTime<Utc>) {
        let restart_policy = group.restart_policy().to_string();
        let run = &mut group.containers[index];
        let code = run.behaviour.exit_code;
        let terminated = run.terminate(at, code, if code == 0 { "Completed" } else { "Error" });
        let restart = restart_policy == "Always" || (restart_policy == "OnFailure" && code != 0);
        if restart {
            run.previous = terminated;
            run.restart_count += 1;
            run.start(at);
            let name = run.name.clone();
            group.event(
                "Normal",
                &name,
                "Started",
                format!("Started container {name}"),
                at,
            );
        } else {
            run.current = terminated;
            if group.containers.iter().all(ContainerRun::is_terminated) {
                self.finish(group, at);
            }
        }
    }

    /// All containers have ended: Succeeded when every exit code was 0, else Failed.
    fn finish(&mut self, group: &mut Group, at: DateTime<Utc>) {
        let all_zero = group
            .init_containers
            .iter()
            .chain(&group.containers)
            .all(|c| !c.is_terminated() || c.current.exit_code == 0)
            && group.containers.iter().all(ContainerRun::is_terminated);
        group.set_status(
            if all_zero {
                status::SUCCEEDED
            } else {
                status::FAILED
            },
            at,
        );
        group.finished_at = Some(at);
        for run in &mut group.containers {
            run.ready = false;
            run.ready_due = None;
            run.exit_due = None;
        }
        group.release_at = None;
        self.release_resources(group);
    }

    fn expire(&mut self, group: &mut Group, at: DateTime<Utc>) {
        if group.is_terminal() || group.status == status::TERMINATING {
            return;
        }
        for run in &mut group.containers {
            if run.current.phase == RunPhase::Running {
                run.current = run.terminate(at, 137, EXPIRED_REASON);
            }
        }
        group.set_status(status::EXPIRED, at);
        group.finished_at = Some(at);
        self.stats.spot_expired += 1;
        self.release_resources(group);
    }

    fn release_resources(&mut self, group: &mut Group) {
        if let Some(ip) = group.ip.take()
            && let Some(pool) = self.pools.get_mut(&group.vswitch)
        {
            pool.release(ip);
        }
        if let Some(key) = group.stock_held.take()
            && let Some(left) = self.stock.get_mut(&key)
        {
            *left += 1;
        }
    }

    /// Keeps terminal groups visible for the retention period, then only the newest few;
    /// removes `ScheduleFailed` groups after their own (longer) period.
    fn prune(&mut self, now: DateTime<Utc>) {
        let retention = self.config.retention.clone();
        let mut terminal: Vec<(DateTime<Utc>, u64, String)> = Vec::new();
        let mut drop = Vec::new();
        for group in self.groups.values() {
            let Some(finished) = group.finished_at else {
                continue;
            };
            let age = (now - finished).num_seconds();
            if group.status == status::SCHEDULE_FAILED {
                if age > retention.schedule_failed_seconds {
                    drop.push(group.id.clone());
                }
            } else if age > retention.full_seconds {
                terminal.push((finished, group.seq, group.id.clone()));
            }
        }
        let kept_recent = self
            .groups
            .values()
            .filter(|g| g.is_terminal() && g.status != status::SCHEDULE_FAILED)
            .count()
            .saturating_sub(terminal.len());
        terminal.sort_unstable_by(|a, b| b.cmp(a));
        let keep_old = retention.keep_latest.saturating_sub(kept_recent);
        drop.extend(terminal.into_iter().skip(keep_old).map(|(_, _, id)| id));
        for id in drop {
            if let Some(group) = self.groups.remove(&id) {
                self.order.remove(&group.seq);
            }
        }
    }

    fn token_key(action: &str, token: &str) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (action, token).hash(&mut hasher);
        hasher.finish()
    }

    fn fingerprint(params: &[(String, String)]) -> u64 {
        let mut sorted: Vec<&(String, String)> =
            params.iter().filter(|(k, _)| k != "ClientToken").collect();
        sorted.sort();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        sorted.hash(&mut hasher);
        hasher.finish()
    }

    /// Looks up a ClientToken: `Some(result)` replays an earlier call with the same token.
    pub fn replay(
        &mut self,
        action: &str,
        token: Option<&str>,
        params: &[(String, String)],
    ) -> Option<Result<String, ApiError>> {
        let token = token?;
        let memo = self.tokens.get(&Self::token_key(action, token))?;
        if memo.fingerprint != Self::fingerprint(params) {
            return Some(Err(ApiError::new(
                400,
                "IdempotentParameterMismatch",
                "The request uses the same client token as a previous, but non-identical request.",
            )));
        }
        self.stats.idempotent_replays += 1;
        Some(memo.result.clone())
    }

    pub fn remember(
        &mut self,
        action: &str,
        token: Option<&str>,
        params: &[(String, String)],
        result: &Result<String, ApiError>,
    ) {
        if let Some(token) = token {
            self.tokens.insert(
                Self::token_key(action, token),
                TokenMemo {
                    fingerprint: Self::fingerprint(params),
                    result: result.clone(),
                },
            );
        }
    }

    fn ensure_vswitch(&mut self, id: &str) -> Result<(), ApiError> {
        if self.pools.contains_key(id) {
            return Ok(());
        }
        if !self.config.auto_create_network {
            return Err(ApiError::new(
                400,
                "InvalidVSwitchId.NotFound",
                format!("The specified VSwitchId {id} does not exist."),
            ));
        }
        let zones: Vec<String> = {
            let mut zones: Vec<String> = self
                .config
                .vswitches
                .iter()
                .map(|v| v.zone.clone())
                .collect();
            zones.dedup();
            zones
        };
        let index = self.pools.len();
        let zone = zones[index % zones.len()].clone();
        let cidr = format!("172.{}.{}.0/20", 16 + (index / 16) % 16, (index % 16) * 16);
        let pool = IpPool::parse(&zone, &cidr).ok_or_else(ApiError::internal)?;
        self.pools.insert(id.to_string(), pool);
        Ok(())
    }

    /// Validates and accepts a create; the group starts in `Scheduling`.
    pub fn create(
        &mut self,
        request: CreateContainerGroupRequest,
        now: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        crate::validate::create(&request, &self.config)?;
        let mut auto_match_event = None;
        let candidate_specs: Vec<String> = match &request.instance_type {
            Some(list) if !list.0.is_empty() => {
                for entry in &list.0 {
                    if spec::parse(entry).is_none() {
                        return Err(ApiError::invalid(
                            "InstanceType",
                            format!("unknown instance type {entry}"),
                        ));
                    }
                }
                list.0.clone()
            }
            _ => {
                let (cpu, memory) = match (request.cpu, request.memory) {
                    (Some(cpu), Some(memory)) => {
                        if !spec::is_valid(cpu, memory) {
                            return Err(ApiError::new(
                                400,
                                "InvalidParameter.CPU.Memory",
                                "The specified cpu and memory are not allowed",
                            ));
                        }
                        (cpu, memory)
                    }
                    _ => {
                        let cpu: f64 = request.container.iter().filter_map(|c| c.cpu).sum();
                        let memory: f64 = request.container.iter().filter_map(|c| c.memory).sum();
                        if cpu == 0.0 && memory == 0.0 {
                            (2.0, 4.0)
                        } else {
                            let rounded = spec::round_up(cpu.max(0.25), memory.max(0.5))
                                .ok_or_else(|| {
                                    ApiError::new(
                                        400,
                                        "InvalidParameter.CPU.Memory",
                                        "The specified cpu and memory are not allowed",
                                    )
                                })?;
                            if rounded != (cpu, memory) {
                                auto_match_event = Some(spec::format_spec(rounded.0, rounded.1));
                            }
                            rounded
                        }
                    }
                };
                vec![spec::format_spec(cpu, memory)]
            }
        };
        let is_spot = matches!(
            request.spot_strategy.as_deref(),
            Some("SpotAsPriceGo" | "SpotWithPriceLimit")
        );
        if is_spot
            && candidate_specs
                .iter()
                .filter_map(|s| spec::parse(s))
                .any(|(cpu, _)| cpu < 2.0)
        {
            return Err(ApiError::new(
                400,
                "InvalidSpotCpuMemorySpec",
                "Spot instances need at least 2 vCPU.",
            ));
        }
        let mut candidate_vswitches = match &request.v_switch_id {
            Some(list) if !list.0.is_empty() => list.0.clone(),
            _ => self.config.vswitches.iter().map(|v| v.id.clone()).collect(),
        };
        for vswitch in &candidate_vswitches {
            self.ensure_vswitch(vswitch)?;
        }
        let security_group = match &request.security_group_id {
            Some(sg) => {
                if !self.security_groups.contains(sg) {
                    if !self.config.auto_create_network {
                        return Err(ApiError::new(
                            400,
                            "InvalidSecurityGroupId.NotFound",
                            format!("The specified SecurityGroupId {sg} does not exist."),
                        ));
                    }
                    self.security_groups.insert(sg.clone());
                }
                sg.clone()
            }
            None => self
                .config
                .security_groups
                .first()
                .cloned()
                .unwrap_or_default(),
        };
        let zones: Vec<String> = candidate_vswitches
            .iter()
            .filter_map(|v| self.pools.get(v).map(|p| p.zone.clone()))
            .filter(|zone| request.zone_id.as_ref().is_none_or(|z| z == zone))
            .collect();
        if zones.is_empty() {
            return Err(ApiError::new(
                403,
                "OperationDenied.VswZoneMisMatch",
                "The specified vSwitch is not in the specified zone.",
            ));
        }
        let any_stock = zones
            .iter()
            .any(|zone| candidate_specs.iter().any(|s| self.has_stock(zone, s)));
        if !any_stock {
            return Err(ApiError::new(
                403,
                "OperationDenied.NoStock",
                "Sales of this resource are temporarily suspended in the specified zone; please use a different zone.",
            ));
        }
        if request.dry_run == Some(true) {
            return Err(ApiError::new(
                400,
                "DryRunOperation",
                "Request validation has been passed with DryRun flag set.",
            ));
        }
        if request.schedule_strategy.as_deref() == Some("VSwitchRandom") {
            candidate_vswitches.shuffle(&mut self.rng);
        }
        let id = self.new_id();
        let seq = self.next_seq;
        self.next_seq += 1;
        let schedule_delay = self.draw(self.config.timing.schedule_ms);
        let mut group = Group {
            seq,
            id: id.clone(),
            zone: zones[0].clone(),
            vswitch: candidate_vswitches[0].clone(),
            security_group,
            ip: None,
            instance_type: String::new(),
            cpu: 0.0,
            memory: 0.0,
            status: status::SCHEDULING,
            status_changed_at: now,
            changed_at: now,
            created_at: now,
            finished_at: None,
            release_at: None,
            containers: request.container.iter().map(ContainerRun::new).collect(),
            init_containers: request
                .init_container
                .iter()
                .map(ContainerRun::new)
                .collect(),
            events: Vec::new(),
            candidate_vswitches,
            candidate_specs: candidate_specs.clone(),
            scheduled_due: Some(now + schedule_delay),
            start_due: None,
            terminate_due: None,
            stock_held: None,
            spec: request,
        };
        if let Some((cpu, memory)) = candidate_specs.first().and_then(|s| spec::parse(s)) {
            group.cpu = cpu;
            group.memory = memory;
        }
        if let Some(matched) = auto_match_event {
            let name = group.spec.container_group_name.clone();
            group.event(
                "Normal",
                &name,
                "AutoInstanceTypeMatch",
                format!("The most-matched instanceType for current eci instance is {matched}"),
                now,
            );
        }
        self.groups.insert(id.clone(), Box::new(group));
        self.order.insert(seq, id.clone());
        self.schedule_timer(&id);
        self.stats.groups_created += 1;
        Ok(id)
    }

    pub fn delete(&mut self, id: &str, force: bool, now: DateTime<Utc>) -> Result<(), ApiError> {
        let Some(group) = self.groups.get_mut(id) else {
            return Err(ApiError::not_found(format!(
                "The specified ContainerGroupId {id} is not found."
            )));
        };
        if group.status == status::TERMINATING {
            return Ok(());
        }
        let live = matches!(
            group.status,
            status::RUNNING | status::RESTARTING | status::UPDATING
        );
        if live
            && !force
            && group
                .spec
                .container
                .iter()
                .any(wire::Container::has_pre_stop)
        {
            let grace_ms = group
                .spec
                .termination_grace_period_seconds
                .unwrap_or(30)
                .max(0)
                .saturating_mul(1000) as u64;
            let wait = grace_ms.min(self.config.timing.max_terminating_ms);
            group.set_status(status::TERMINATING, now);
            group.release_at = None;
            group.terminate_due = Some(now + TimeDelta::milliseconds(wait as i64));
            for name in group
                .containers
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
            {
                group.event(
                    "Normal",
                    &name,
                    "Killing",
                    format!("Stopping container {name}"),
                    now,
                );
            }
            self.schedule_timer(id);
            return Ok(());
        }
        if let Some(mut group) = self.groups.remove(id) {
            self.release_resources(&mut group);
            self.order.remove(&group.seq);
            self.stats.groups_deleted += 1;
        }
        Ok(())
    }

    fn live_group(&mut self, id: &str) -> Result<&mut Group, ApiError> {
        let group = self.groups.get_mut(id).ok_or_else(|| {
            ApiError::not_found(format!("The specified ContainerGroupId {id} is not found."))
        })?;
        if !matches!(group.status, status::PENDING | status::RUNNING) {
            return Err(ApiError::incorrect_status(id, group.status));
        }
        Ok(group)
    }

    pub fn restart(&mut self, id: &str, now: DateTime<Utc>) -> Result<(), ApiError> {
        let delay = self.draw(self.config.timing.restart_ms);
        let group = self.live_group(id)?;
        group.set_status(status::RESTARTING, now);
        group.start_due = Some(now + delay);
        for run in &mut group.containers {
            run.ready = false;
            run.ready_due = None;
            run.exit_due = None;
        }
        self.schedule_timer(id);
        Ok(())
    }

    pub fn update(
        &mut self,
        request: wire::UpdateContainerGroupRequest,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let delay = self.draw(self.config.timing.restart_ms);
        let id = request.container_group_id.clone();
        let group = self.live_group(&id)?;
        let incremental = request.update_type.as_deref() == Some("IncrementalUpdate");
        if let Some(policy) = request.restart_policy {
            group.spec.restart_policy = Some(policy);
        }
        if !request.tag.is_empty() {
            if incremental {
                for tag in request.tag {
                    group.spec.tag.retain(|t| t.key != tag.key);
                    group.spec.tag.push(tag);
                }
            } else {
                group.spec.tag = request.tag;
            }
        }
        let containers_changed = !request.container.is_empty();
        if containers_changed {
            group.containers = request.container.iter().map(ContainerRun::new).collect();
            group.spec.container = request.container;
        }
        if !request.image_registry_credential.is_empty() {
            group.spec.image_registry_credential = request.image_registry_credential;
        }
        if containers_changed || request.cpu.is_some() || request.memory.is_some() {
            group.set_status(status::UPDATING, now);
            group.start_due = Some(now + delay);
            for run in &mut group.containers {
                run.ready = false;
                run.ready_due = None;
                run.exit_due = None;
            }
        }
        self.schedule_timer(&id);
        Ok(())
    }

    /// Announces a spot release: event now, `Expired` after `lead_seconds`.
    pub fn spot_release(
        &mut self,
        ids: &[String],
        lead_seconds: f64,
        now: DateTime<Utc>,
    ) -> SpotReleaseOutcome {
        let release_at = after(now, lead_seconds.max(0.0));
        let minutes = lead_seconds.max(0.0) / 60.0;
        let minutes_text = if minutes.fract() == 0.0 {
            format!("{}", minutes as i64)
        } else {
            let text = format!("{minutes:.2}");
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        };
        let mut outcome = SpotReleaseOutcome {
            release_at: format_time(release_at),
            ..SpotReleaseOutcome::default()
        };
        for id in ids {
            let Some(group) = self.groups.get_mut(id) else {
                outcome.skipped.push(id.clone());
                continue;
            };
            let eligible = group.is_spot()
                && group.release_at.is_none()
                && matches!(
                    group.status,
                    status::PENDING | status::RUNNING | status::RESTARTING | status::UPDATING
                );
            if !eligible {
                outcome.skipped.push(id.clone());
                continue;
            }
            let name = group.spec.container_group_name.clone();
            group.event(
                "Warning",
                &name,
                "SpotToBeReleased",
                format!("Spot ECI will be released in {minutes_text} minutes"),
                now,
            );
            group.release_at = Some(release_at);
            self.stats.spot_notices += 1;
            outcome.released.push(id.clone());
            self.schedule_timer(id);
        }
        outcome
    }

    /// Picks `fraction` of the running spot groups matching `tags`, in seeded random order.
    pub fn pick_spot_fraction(&mut self, fraction: f64, tags: &[Tag]) -> Vec<String> {
        let filter = GroupFilter {
            tags: tags.to_vec(),
            ..GroupFilter::default()
        };
        let mut eligible: Vec<String> = self
            .groups()
            .filter(|g| {
                g.is_spot()
                    && g.status == status::RUNNING
                    && g.release_at.is_none()
                    && filter.matches(g)
            })
            .map(|g| g.id.clone())
            .collect();
        eligible.shuffle(&mut self.rng);
        let count = ((eligible.len() as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
        eligible.truncate(count);
        eligible
    }

    /// How long instances created (or restarted) from now on take.
    pub fn set_timing(&mut self, timing: TimingConfig) {
        self.config.timing = timing;
    }

    /// Sets the remaining stock of a zone (and spec); `None` makes it unlimited.
    pub fn set_stock(&mut self, zone: &str, spec: Option<&str>, count: Option<u64>) {
        let key = (zone.to_string(), spec.map(str::to_string));
        match count {
            Some(count) => {
                self.stock.insert(key, count);
            }
            None => {
                self.stock.remove(&key);
            }
        }
    }

    pub fn stock(&self) -> Vec<(String, Option<String>, u64)> {
        let mut out: Vec<_> = self
            .stock
            .iter()
            .map(|((zone, spec), count)| (zone.clone(), spec.clone(), *count))
            .collect();
        out.sort();
        out
    }

    /// A page of matching groups in creation order, from `token` on.
    pub fn page(
        &self,
        filter: &GroupFilter,
        token: Option<&str>,
        limit: usize,
    ) -> Result<Page<'_>, ApiError> {
        let start = match token.filter(|t| !t.is_empty()) {
            None => 0,
            Some(token) => u64::from_str_radix(token, 16)
                .map_err(|_| ApiError::invalid("NextToken", "The token is not valid."))?,
        };
        let mut groups = Vec::new();
        let mut next_token = String::new();
        let mut total = 0;
        for (seq, id) in &self.order {
            let Some(group) = self.groups.get(id) else {
                continue;
            };
            if !filter.matches(group) {
                continue;
            }
            total += 1;
            if *seq < start {
                continue;
            }
            if groups.len() < limit {
                groups.push(&**group);
            } else if next_token.is_empty() {
                next_token = format!("{seq:016x}");
            }
        }
        Ok(Page {
            groups,
            next_token,
            total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StockConfig, TimingConfig};
    use eci_types::wire::{Container, EnvironmentVar};

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn config() -> SimConfig {
        SimConfig {
            timing: TimingConfig {
                schedule_ms: MillisRange::fixed(1_000),
                start_ms: MillisRange::fixed(2_000),
                restart_ms: MillisRange::fixed(1_000),
                max_terminating_ms: 5_000,
            },
            ..SimConfig::default()
        }
    }

    fn container(name: &str, env: &[(&str, &str)]) -> Container {
        Container {
            name: name.into(),
            image: "nginx".into(),
            environment_var: env
                .iter()
                .map(|(k, v)| EnvironmentVar {
                    key: (*k).into(),
                    value: Some((*v).into()),
                    field_ref: None,
                })
                .collect(),
            ..Container::default()
        }
    }

    fn request(name: &str) -> CreateContainerGroupRequest {
        CreateContainerGroupRequest {
            region_id: "cn-hangzhou".into(),
            container_group_name: name.into(),
            container: vec![container("app", &[])],
            ..CreateContainerGroupRequest::default()
        }
    }

    fn spot(name: &str) -> CreateContainerGroupRequest {
        CreateContainerGroupRequest {
            spot_strategy: Some("SpotAsPriceGo".into()),
            ..request(name)
        }
    }

    #[test]
    fn lifecycle_scheduling_pending_running_with_ip_and_events() {
        let mut sim = Sim::new(config()).unwrap();
        let id = sim.create(request("web"), t(0)).unwrap();
        assert!(id.starts_with("eci-") && id.len() == 24);
        assert_eq!(sim.group(&id).unwrap().status, status::SCHEDULING);
        sim.advance(t(1));
        let group = sim.group(&id).unwrap();
        assert_eq!(group.status, status::PENDING);
        let ip = group.ip.unwrap();
        assert!(ip.to_string().starts_with("10.1."), "{ip}");
        sim.advance(t(3));
        let group = sim.group(&id).unwrap();
        assert_eq!(group.status, status::RUNNING);
        assert!(group.containers[0].ready);
        let reasons: Vec<&str> = group.events.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["Pulling", "Pulled", "Created", "Started"]);
        assert_eq!(group.cpu, 2.0);
        assert_eq!(group.memory, 4.0);
    }

    #[test]
    fn containers_exit_per_restart_policy() {
        let mut sim = Sim::new(config()).unwrap();
        let mut job = request("job");
        job.restart_policy = Some("Never".into());
        job.container = vec![container(
            "work",
            &[(behaviour_env::EXIT_AFTER_SECONDS, "5")],
        )];
        let job = sim.create(job, t(0)).unwrap();

        let mut failing = request("failing");
        failing.restart_policy = Some("OnFailure".into());
        failing.container = vec![container(
            "work",
            &[
                (behaviour_env::EXIT_AFTER_SECONDS, "5"),
                (behaviour_env::EXIT_CODE, "3"),
            ],
        )];
        let failing = sim.create(failing, t(0)).unwrap();

        let mut broken = request("broken");
        broken.restart_policy = Some("Never".into());
        broken.container = vec![container(
            "work",
            &[
                (behaviour_env::EXIT_AFTER_SECONDS, "1"),
                (behaviour_env::EXIT_CODE, "1"),
            ],
        )];
        let broken = sim.create(broken, t(0)).unwrap();

        sim.advance(t(9));
        assert_eq!(sim.group(&job).unwrap().status, status::SUCCEEDED);
        assert!(
            sim.group(&job).unwrap().ip.is_none(),
            "IP released at the end"
        );
        let failing = sim.group(&failing).unwrap();
        assert_eq!(failing.status, status::RUNNING);
        assert_eq!(failing.containers[0].restart_count, 1);
        assert_eq!(failing.containers[0].previous.exit_code, 3);
        let broken = sim.group(&broken).unwrap();
        assert_eq!(broken.status, status::FAILED);
        assert_eq!(broken.containers[0].current.exit_code, 1);
    }

    #[test]
    fn stock_is_refused_synchronously_when_gone_and_asynchronously_when_taken() {
        let mut config = config();
        config.vswitches.truncate(1);
        config.stock = vec![StockConfig {
            zone: "cn-hangzhou-h".into(),
            spec: None,
            count: 1,
        }];
        let mut sim = Sim::new(config).unwrap();
        let first = sim.create(request("first"), t(0)).unwrap();
        let second = sim.create(request("second"), t(0)).unwrap();
        sim.advance(t(1));
        assert_eq!(sim.group(&first).unwrap().status, status::PENDING);
        let second_group = sim.group(&second).unwrap();
        assert_eq!(second_group.status, status::SCHEDULE_FAILED);
        assert!(second_group.events.iter().any(|e| e.reason == "NoStock"));
        assert!(
            sim.group(&first)
                .unwrap()
                .events
                .iter()
                .any(|e| e.reason == "StockExhaust")
        );
        let refused = sim.create(request("third"), t(2)).unwrap_err();
        assert_eq!(
            (refused.status, refused.code.as_str()),
            (403, "OperationDenied.NoStock")
        );
        sim.delete(&first, false, t(3)).unwrap();
        assert!(
            sim.create(request("fourth"), t(3)).is_ok(),
            "deleting returns stock"
        );
    }

    #[test]
    fn multi_zone_falls_through_to_a_zone_with_stock() {
        let mut config = config();
        config.stock = vec![StockConfig {
            zone: "cn-hangzhou-h".into(),
            spec: None,
            count: 0,
        }];
        let mut sim = Sim::new(config).unwrap();
        let mut req = request("mz");
        req.v_switch_id = Some(eci_types::params::CommaList(vec![
            "vsw-sim-a".into(),
            "vsw-sim-b".into(),
        ]));
        let id = sim.create(req, t(0)).unwrap();
        sim.advance(t(1));
        let group = sim.group(&id).unwrap();
        assert_eq!(group.zone, "cn-hangzhou-i");
        assert!(group.ip.unwrap().to_string().starts_with("10.2."));
    }

    #[test]
    fn changed_since_sees_readiness_and_notices_not_only_status() {
        let mut sim = Sim::new(config()).unwrap();
        let mut late_ready = spot("late-ready");
        late_ready.container = vec![container(
            "app",
            &[(behaviour_env::READY_AFTER_SECONDS, "100")],
        )];
        let id = sim.create(late_ready, t(0)).unwrap();
        sim.advance(t(3));
        assert_eq!(sim.group(&id).unwrap().status, status::RUNNING);
        let changed_since = |sim: &Sim, since: i64| {
            let filter = GroupFilter {
                changed_since: Some(t(since)),
                ..GroupFilter::default()
            };
            sim.page(&filter, None, 10).unwrap().total
        };
        assert_eq!(changed_since(&sim, 50), 0);
        sim.advance(t(103));
        assert!(sim.group(&id).unwrap().containers[0].ready);
        assert_eq!(changed_since(&sim, 50), 1, "readiness is a change");
        assert_eq!(changed_since(&sim, 150), 0);
        sim.spot_release(std::slice::from_ref(&id), 180.0, t(200));
        assert_eq!(changed_since(&sim, 150), 1, "a spot notice is a change");
    }

    #[test]
    fn spot_release_warns_then_expires() {
        let mut sim = Sim::new(config()).unwrap();
        let id = sim.create(spot("spot"), t(0)).unwrap();
        let regular = sim.create(request("regular"), t(0)).unwrap();
        sim.advance(t(3));
        let outcome = sim.spot_release(&[id.clone(), regular.clone()], 180.0, t(10));
        assert_eq!(outcome.released, vec![id.clone()]);
        assert_eq!(outcome.skipped, vec![regular]);
        let notice = sim
            .group(&id)
            .unwrap()
            .events
            .iter()
            .find(|e| e.reason == "SpotToBeReleased")
            .cloned()
            .unwrap();
        assert_eq!(&*notice.message, "Spot ECI will be released in 3 minutes");
        assert!(notice.warning);
        sim.advance(t(189));
        assert_eq!(sim.group(&id).unwrap().status, status::RUNNING);
        sim.advance(t(190));
        let group = sim.group(&id).unwrap();
        assert_eq!(group.status, status::EXPIRED);
        assert_eq!(group.containers[0].current.phase, RunPhase::Terminated);

        let short = sim.create(spot("short"), t(200)).unwrap();
        sim.advance(t(203));
        sim.spot_release(std::slice::from_ref(&short), 20.0, t(203));
        let message = &sim.group(&short).unwrap().events.last().unwrap().message;
        assert_eq!(&**message, "Spot ECI will be released in 0.33 minutes");
    }

    #[test]
    fn pagination_walks_every_match_once() {
        let mut sim = Sim::new(config()).unwrap();
        for i in 0..45 {
            let mut req = request(&format!("g-{i}"));
            req.tag = vec![Tag::new(
                "cluster",
                if i % 3 == 0 { "other" } else { "mine" },
            )];
            sim.create(req, t(0)).unwrap();
        }
        let filter = GroupFilter {
            tags: vec![Tag::new("cluster", "mine")],
            ..GroupFilter::default()
        };
        let mut token: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let page = sim.page(&filter, token.as_deref(), 20).unwrap();
            assert_eq!(page.total, 30);
            seen.extend(
                page.groups
                    .iter()
                    .map(|g| g.spec.container_group_name.clone()),
            );
            if page.next_token.is_empty() {
                break;
            }
            token = Some(page.next_token);
        }
        assert_eq!(seen.len(), 30);
        seen.dedup();
        assert_eq!(seen.len(), 30);
        assert!(sim.page(&filter, Some("not-a-token"), 20).is_err());
    }

    #[test]
    fn client_token_replays_and_detects_mismatch() {
        let mut sim = Sim::new(config()).unwrap();
        let params = vec![("ContainerGroupName".to_string(), "a".to_string())];
        assert!(
            sim.replay("CreateContainerGroup", Some("tok"), &params)
                .is_none()
        );
        let result = sim.create(request("a"), t(0));
        sim.remember("CreateContainerGroup", Some("tok"), &params, &result);
        assert_eq!(
            sim.replay("CreateContainerGroup", Some("tok"), &params),
            Some(result)
        );
        let other = vec![("ContainerGroupName".to_string(), "b".to_string())];
        let mismatch = sim
            .replay("CreateContainerGroup", Some("tok"), &other)
            .unwrap()
            .unwrap_err();
        assert_eq!(mismatch.code, "IdempotentParameterMismatch");
    }

    #[test]
    fn delete_with_pre_stop_passes_terminating() {
        let mut sim = Sim::new(config()).unwrap();
        let mut req = request("graceful");
        req.container[0].lifecycle_pre_stop_handler_exec = vec!["sleep".into(), "1".into()];
        req.termination_grace_period_seconds = Some(2);
        let id = sim.create(req, t(0)).unwrap();
        sim.advance(t(3));
        sim.delete(&id, false, t(4)).unwrap();
        assert_eq!(sim.group(&id).unwrap().status, status::TERMINATING);
        sim.advance(t(6));
        assert!(sim.group(&id).is_none());
        assert_eq!(sim.delete(&id, false, t(7)).unwrap_err().status, 404);
    }

    #[test]
    fn terminal_groups_are_pruned_after_retention() {
        let mut config = config();
        config.retention.full_seconds = 60;
        config.retention.keep_latest = 2;
        let mut sim = Sim::new(config).unwrap();
        for i in 0..5 {
            let mut req = request(&format!("job-{i}"));
            req.restart_policy = Some("Never".into());
            req.container = vec![container("w", &[(behaviour_env::EXIT_AFTER_SECONDS, "1")])];
            sim.create(req, t(i)).unwrap();
        }
        sim.advance(t(30));
        assert_eq!(sim.len(), 5);
        sim.advance(t(200));
        assert_eq!(sim.len(), 2);
        let names: Vec<String> = sim
            .groups()
            .map(|g| g.spec.container_group_name.clone())
            .collect();
        assert_eq!(names, ["job-3", "job-4"]);
    }

    #[test]
    fn odd_container_sizes_round_up_with_an_event() {
        let mut sim = Sim::new(config()).unwrap();
        let mut req = request("odd");
        req.container[0].cpu = Some(1.5);
        req.container[0].memory = Some(3.0);
        let id = sim.create(req, t(0)).unwrap();
        let group = sim.group(&id).unwrap();
        assert_eq!((group.cpu, group.memory), (2.0, 4.0));
        assert!(
            group
                .events
                .iter()
                .any(|e| e.reason == "AutoInstanceTypeMatch" && e.message.ends_with("2-4Gi"))
        );
        let mut bad = request("bad");
        bad.cpu = Some(3.0);
        bad.memory = Some(5.0);
        assert_eq!(
            sim.create(bad, t(0)).unwrap_err().code,
            "InvalidParameter.CPU.Memory"
        );
    }

    #[test]
    fn same_seed_same_run() {
        let ids = |seed| {
            let mut sim = Sim::new(SimConfig { seed, ..config() }).unwrap();
            (0..3)
                .map(|i| sim.create(request(&format!("s-{i}")), t(0)).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(9), ids(9));
        assert_ne!(ids(9), ids(10));
    }
}
