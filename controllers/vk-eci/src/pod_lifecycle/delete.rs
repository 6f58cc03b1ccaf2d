//! Graceful deletion, as the kubelet does it: a pod with a deletionTimestamp has its container
//! groups deleted (ECI stops the containers within the grace period the group was created
//! with), and the pod object is removed (grace 0, UID precondition) once they are gone.
//!
//! The groups are found by the pod-UID tag, never by the pod's annotation: a pod author can
//! write any group id there, and a group of another pod must never be deleted for it.

use std::time::Duration;

use chrono::Utc;
use eci_types::wire::status;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::{info, warn};
use vk_eci_core::cache::CachedPod;
use vk_eci_core::ownership::owned_by;

use super::{Error, PodController, groups, writes};

/// How long past its deletion deadline a pod waits for its groups before it is removed
/// anyway: ECI finishes a stop on its own, and a group still there then is an orphan that
/// the orphan GC collects once the API server says its pod is gone.
const OVERDUE: Duration = Duration::from_secs(15);

/// Where stopping a deleted pod's groups stands.
enum Stopping {
    /// No group of the pod exists any more.
    Done,
    /// These are still stopping.
    Terminating(Vec<String>),
}

impl PodController {
    pub(super) async fn delete(&self, pod: &CachedPod) -> Result<Action, Error> {
        let ctx = &self.ctx;
        let overdue = pod
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .is_some_and(|deadline| {
                Utc::now().timestamp_millis() > deadline.saturating_add(OVERDUE.as_millis() as i64)
            });
        match self.stop_groups(pod).await {
            Ok(Stopping::Done) => {}
            Ok(Stopping::Terminating(ids)) if !overdue => {
                for id in &ids {
                    self.status_sync.group_stopping(id, pod);
                }
                return Ok(Action::requeue(OVERDUE));
            }
            Ok(Stopping::Terminating(ids)) => {
                warn!(pod = %pod.name_any(), ?ids, "container groups still stopping past the grace period; removing the pod");
            }
            Err(error @ Error::NotLeader(_)) => return Err(error),
            Err(error) if overdue => {
                warn!(pod = %pod.name_any(), %error, "cannot stop the container groups past the grace period; removing the pod, the orphan GC finishes the stop");
            }
            Err(error) => return Err(error),
        }
        writes::remove(ctx, pod).await?;
        Ok(Action::await_change())
    }

    /// Deletes every group of the pod that is not already stopping.
    async fn stop_groups(&self, pod: &CachedPod) -> Result<Stopping, Error> {
        let ctx = &self.ctx;
        let Some(uid) = pod.uid() else {
            return Ok(Stopping::Done);
        };
        let owned = |groups: Vec<eci_types::wire::ContainerGroup>| {
            groups
                .into_iter()
                .filter(|g| owned_by(g, &ctx.settings.cluster_id, &ctx.settings.node_name, &uid))
                .collect::<Vec<_>>()
        };
        let mut running = false;
        for group in owned(groups::of_pod(ctx, &uid).await?) {
            if group.status == status::TERMINATING {
                running = true;
                continue;
            }
            groups::delete(ctx, &group.container_group_id).await?;
            info!(pod = %pod.name_any(), id = %group.container_group_id, "container group deleted");
            let finished = matches!(
                group.status.as_str(),
                status::SUCCEEDED | status::FAILED | status::EXPIRED | status::SCHEDULE_FAILED
            );
            running |= !finished;
        }
        if !running {
            return Ok(Stopping::Done);
        }
        let left: Vec<String> = owned(groups::of_pod(ctx, &uid).await?)
            .into_iter()
            .map(|g| g.container_group_id)
            .collect();
        Ok(if left.is_empty() {
            Stopping::Done
        } else {
            Stopping::Terminating(left)
        })
    }
}
