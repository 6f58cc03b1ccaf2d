//! The pod lifecycle controller: pods bound to the virtual node become container groups
//! ([`create`]), and deleting a pod deletes its group ([`delete`]). Their status follows ECI
//! in [`crate::eci_status`], which this controller tells of every create and stop through
//! its [`Handoff`]. [`groups`] and [`writes`] are the ECI calls and pod writes both make.

mod create;
mod delete;
pub(crate) mod groups;
pub(crate) mod writes;

pub(crate) use create::annotations_of;

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::controller::{Action, Config, Controller};
use tracing::warn;
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::cache::CachedPod;

use crate::eci_status::handoff::Handoff;
use crate::runtime::context::Context;

const CONTROLLER: &str = "pods";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("ECI: {0}")]
    Eci(#[from] eci_client::EciError),
    #[error("the pod does not name this container group yet")]
    NotYetRecorded,
    #[error(transparent)]
    NotLeader(#[from] crate::runtime::leader::NotLeader),
    #[error(transparent)]
    Timeout(#[from] crate::runtime::reconcile::ReconcileTimeout),
}

pub struct PodController {
    ctx: Arc<Context>,
    status_sync: Handoff,
}

impl PodController {
    pub fn new(ctx: Arc<Context>, status_sync: Handoff) -> Arc<Self> {
        Arc::new(Self { ctx, status_sync })
    }

    async fn reconcile_pod(&self, pod: &CachedPod) -> Result<Action, Error> {
        if pod.metadata.deletion_timestamp.is_some() {
            return self.delete(pod).await;
        }
        if matches!(pod.phase(), Some("Succeeded" | "Failed"))
            || pod.annotations().contains_key(INSTANCE_ID)
        {
            return Ok(Action::await_change());
        }
        self.create(pod).await
    }
}

async fn reconcile(pod: Arc<CachedPod>, controller: Arc<PodController>) -> Result<Action, Error> {
    let ctx = controller.ctx.clone();
    crate::runtime::reconcile::as_leader(&ctx, CONTROLLER, controller.reconcile_pod(&pod)).await
}

fn error_policy(pod: Arc<CachedPod>, error: &Error, _controller: Arc<PodController>) -> Action {
    warn!(pod = %pod.name_any(), namespace = %pod.namespace().unwrap_or_default(), %error, "pod reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the controller over the shared pod stream until `shutdown`. Every pod is reconciled
/// again whenever this replica becomes the leader.
pub async fn run(
    controller: Arc<PodController>,
    pods: impl Stream<Item = Arc<CachedPod>> + Send + 'static,
    became_leader: impl Stream<Item = ()> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let store = controller.ctx.pods.clone();
    Controller::for_shared_stream(pods, store)
        // Bounded: ECI's own limits (20 creates/s) make more parallel creates pointless.
        .with_config(Config::default().concurrency(64))
        .reconcile_all_on(became_leader)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, controller)
        .for_each(|_| futures::future::ready(()))
        .await;
}
