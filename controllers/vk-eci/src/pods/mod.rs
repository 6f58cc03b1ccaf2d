//! The pod-to-ECI controller: pods bound to the virtual node become container groups
//! ([`create`]), their status follows ECI ([`sync`]), and deleting a pod deletes its group
//! ([`delete`]).

mod create;
mod delete;
mod groups;
pub mod sync;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::controller::{Action, Config, Controller};
use tracing::warn;
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::cache::CachedPod;

use crate::context::Context;

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
    NotLeader(#[from] crate::leader::NotLeader),
    #[error(transparent)]
    Timeout(#[from] crate::reconcile::ReconcileTimeout),
}

pub struct PodController {
    ctx: Arc<Context>,
    terminating: sync::Terminating,
}

impl PodController {
    pub fn new(ctx: Arc<Context>) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            terminating: sync::Terminating::default(),
        })
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
    crate::reconcile::as_leader(&ctx, CONTROLLER, controller.reconcile_pod(&pod)).await
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
    status_sync: sync::StatusSyncConfig,
) {
    let store = controller.ctx.pods.clone();
    let sync = sync::StatusSync::new(controller.clone(), status_sync);
    let reconciler = Controller::for_shared_stream(pods, store)
        // Bounded: ECI's own limits (20 creates/s) make more parallel creates pointless.
        .with_config(Config::default().concurrency(64))
        .reconcile_all_on(became_leader)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, controller)
        .for_each(|_| futures::future::ready(()));
    tokio::select! {
        () = reconciler => {}
        () = sync.run() => {}
    }
}
