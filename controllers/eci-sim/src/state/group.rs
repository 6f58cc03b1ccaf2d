//! One simulated container group: its containers' run states, its events, and what is due
//! next.

use std::net::Ipv4Addr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use eci_types::wire::{self, CreateContainerGroupRequest, status};

use super::stock::StockKey;
use super::{after, behaviour_env, format_time};

const MAX_EVENTS: usize = 50;

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

pub(super) const EXPIRED_REASON: &str = "Expired";

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
pub(super) struct Behaviour {
    exit_after: Option<f64>,
    pub(super) exit_code: i64,
    ready_after: f64,
}

impl Behaviour {
    pub(super) fn of(container: &wire::Container) -> Self {
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
    pub(super) behaviour: Behaviour,
    pub(super) ready_due: Option<DateTime<Utc>>,
    pub(super) exit_due: Option<DateTime<Utc>>,
}

impl ContainerRun {
    pub(super) fn new(container: &wire::Container) -> Self {
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

    pub(super) fn start(&mut self, at: DateTime<Utc>) {
        self.current = RunState {
            phase: RunPhase::Running,
            started: Some(at),
            ..RunState::default()
        };
        self.ready = false;
        self.ready_due = Some(after(at, self.behaviour.ready_after));
        self.exit_due = self.behaviour.exit_after.map(|s| after(at, s));
    }

    pub(super) fn terminate(
        &mut self,
        at: DateTime<Utc>,
        exit_code: i64,
        reason: &'static str,
    ) -> RunState {
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

    pub(super) fn next_due(&self) -> Option<DateTime<Utc>> {
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
    pub(super) candidate_vswitches: Vec<String>,
    pub(super) candidate_specs: Vec<String>,
    pub(super) scheduled_due: Option<DateTime<Utc>>,
    pub(super) start_due: Option<DateTime<Utc>>,
    pub(super) terminate_due: Option<DateTime<Utc>>,
    pub(super) stock_held: Option<StockKey>,
}

impl Group {
    pub(super) fn next_due(&self) -> Option<DateTime<Utc>> {
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

    /// Puts the group in `to` (`Restarting`, `Updating`) at `now`, its containers not ready
    /// and nothing due until they start again at `start_at`.
    pub(super) fn restart(
        &mut self,
        to: &'static str,
        start_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        self.set_status(to, now);
        self.start_due = Some(start_at);
        for run in &mut self.containers {
            run.ready = false;
            run.ready_due = None;
            run.exit_due = None;
        }
    }

    pub(super) fn set_status(&mut self, to: &'static str, at: DateTime<Utc>) {
        if self.status != to {
            self.status = to;
            self.status_changed_at = at;
            self.changed_at = at;
        }
    }

    pub(super) fn event(
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
    pub(super) fn container_started_events(&mut self, name: &str, image: &str, at: DateTime<Utc>) {
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

    pub(super) fn restart_policy(&self) -> &str {
        self.spec.restart_policy.as_deref().unwrap_or("Always")
    }
}
