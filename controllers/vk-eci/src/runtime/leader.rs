//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it:
//! every write of the Lease is a replace carrying the resourceVersion read, so two replicas can
//! never both win; expiry is judged by this replica's own clock (how long the record it sees
//! has stayed unchanged), so clock skew between replicas cannot shorten a lease.
//!
//!
//! Fencing: every round of lease calls runs under a timeout that ends at the renew deadline,
//! so a leader whose API connection hangs steps down before its lease could pass to another
//! replica (the others wait a whole `lease_duration` from the last record they saw, which was
//! written after the round we count from began). Work done as the leader runs
//! [`Leadership::fenced`] (cancelled the moment leadership is lost) and checks
//! [`Leadership::ensure`] right before every destructive call.
//!
//! kube-lease-manager was the other candidate; it relies on server-side apply field ownership
//! for mutual exclusion, which is weaker than resourceVersion preconditions against servers
//! (or sandboxes) that approximate apply.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::runtime::liveness::Beat;

/// Timing of the election. Failover takes at most `lease_duration + retry_period`.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease_duration: Duration,
    /// The leader stops acting when it could not renew for this long (< `lease_duration`, so
    /// it stops before anyone else can take over).
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(7),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Whether this replica leads, as a watchable flag.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until this replica leads.
    pub async fn acquired(&mut self) {
        let _closed = self.0.wait_for(|leading| *leading).await;
    }

    /// Waits until this replica no longer leads (or the election is gone).
    pub async fn lost(&mut self) {
        let _closed = self.0.wait_for(|leading| !*leading).await;
    }

    /// `Err` unless this replica leads right now: checked just before a destructive call.
    pub fn ensure(&self) -> Result<(), NotLeader> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(NotLeader)
        }
    }

    /// Runs `work` while this replica leads: `None` if leadership is lost first (the work is
    /// dropped mid-way, so nothing it had not sent yet goes out).
    pub async fn fenced<F: std::future::Future>(&self, work: F) -> Option<F::Output> {
        let mut leadership = self.clone();
        if !leadership.is_leader() {
            return None;
        }
        tokio::select! {
            output = work => Some(output),
            () = leadership.lost() => None,
        }
    }
}

/// A destructive call was about to go out from a replica that no longer leads.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("this replica is no longer the leader")]
pub struct NotLeader;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election stopped: the leadership channel has no receivers")]
    Abandoned,
}

/// A contender for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    state: watch::Sender<bool>,
    /// The holder and renew time last seen, and when (by our clock) it was first seen.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
    /// When the last successful round began (the lease's validity counts from then).
    last_renewal: Option<Instant>,
}

impl Elector {
    pub fn new(
        api: Api<Lease>,
        name: impl Into<String>,
        identity: impl Into<String>,
        timing: Timing,
    ) -> (Self, Leadership) {
        let (state, receiver) = watch::channel(false);
        (
            Self {
                api,
                name: name.into(),
                identity: identity.into(),
                timing,
                state,
                observed: None,
                last_renewal: None,
            },
            Leadership(receiver),
        )
    }

    /// Contends until `shutdown` resolves, then gives the lease up so a standby takes over at
    /// once. Returns an error only if nobody listens any more.
    /// `beat` tells the liveness probe that the election loop still turns.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
        beat: Beat,
    ) -> Result<(), LeaderError> {
        tokio::pin!(shutdown);
        loop {
            self.try_acquire_or_renew().await;
            beat.beat();
            if self.state.is_closed() {
                return Err(LeaderError::Abandoned);
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.timing.retry_period) => {}
            }
        }
        if self.leading() {
            self.set_leading(false);
            let release = tokio::time::timeout(self.timing.renew_deadline, self.release());
            if release.await.is_err() {
                warn!(lease = %self.name, "releasing the leader lease did not answer; it will expire");
            }
        }
        Ok(())
    }

    fn leading(&self) -> bool {
        *self.state.borrow()
    }

    fn set_leading(&self, leading: bool) {
        if self.leading() != leading {
            if leading {
                info!(lease = %self.name, identity = %self.identity, "became the leader");
            } else {
                warn!(lease = %self.name, identity = %self.identity, "no longer the leader");
            }
        }
        self.state.send_replace(leading);
    }

    fn spec(&self, acquire: bool, transitions: i32) -> LeaseSpec {
        let now = MicroTime(now_timestamp());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: acquire.then(|| now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// How long this round's lease calls may take: a leader must be done by its renew
    /// deadline; a contender gets the same bound so a hung call never stalls the loop.
    fn round_budget(&self) -> Duration {
        match self.last_renewal {
            Some(at) if self.leading() => self.timing.renew_deadline.saturating_sub(at.elapsed()),
            _ => self.timing.renew_deadline,
        }
    }

    async fn try_acquire_or_renew(&mut self) {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.round_budget(), self.attempt()).await {
            Ok(outcome) => outcome.map_err(|error| error.to_string()),
            Err(_) => Err("the lease calls did not answer in time".to_string()),
        };
        match outcome {
            Ok(true) => {
                self.last_renewal = Some(started);
                self.set_leading(true);
            }
            Ok(false) => self.set_leading(false),
            Err(error) => {
                let stale = self
                    .last_renewal
                    .is_none_or(|at| at.elapsed() >= self.timing.renew_deadline);
                if self.leading() && stale {
                    warn!(%error, "cannot renew the leader lease in time; stepping down");
                    self.set_leading(false);
                } else {
                    warn!(%error, "leader election attempt failed");
                }
            }
        }
    }

    /// One round: `Ok(true)` when we hold the lease afterwards.
    async fn attempt(&mut self) -> Result<bool, kube::Error> {
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(true, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        let record = (holder.clone(), spec.renew_time.clone());
        let seen_since = match &self.observed {
            Some((h, r, at)) if (h, r) == (&record.0, &record.1) => *at,
            _ => Instant::now(),
        };
        self.observed = Some((record.0, record.1, seen_since));
        let duration = spec
            .lease_duration_seconds
            .map_or(self.timing.lease_duration, |s| {
                Duration::from_secs(s.max(0) as u64)
            });
        let expired = holder.is_none() || seen_since.elapsed() >= duration;
        if !ours && !expired {
            return Ok(false);
        }
        let transitions = spec
            .lease_transitions
            .unwrap_or(0)
            .saturating_add(i32::from(!ours));
        let mut next = current.clone();
        next.spec = Some(LeaseSpec {
            acquire_time: if ours {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(now_timestamp()))
            },
            ..self.spec(false, transitions)
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Hands the lease back (holder cleared), best effort.
    async fn release(&self) {
        let Ok(Some(mut current)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = current.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(error) = self
            .api
            .replace(&self.name, &PostParams::default(), &current)
            .await
        {
            warn!(%error, "could not release the leader lease; it will expire");
        } else {
            info!(lease = %self.name, "released the leader lease");
        }
    }
}

fn now_timestamp() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_microsecond(Utc::now().timestamp_micros())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}
