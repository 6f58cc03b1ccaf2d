//! Graceful deletion, as the kubelet does it: a pod with a deletionTimestamp has its container
//! group deleted (ECI stops the containers within the grace period the group was created
//! with), and the pod object is removed (grace 0, UID precondition) once the group is gone.

use std::time::Duration;

use chrono::Utc;
use eci_client::params::JsonList;
use eci_client::types::{
    DeleteContainerGroupRequest, DescribeContainerGroupStatusRequest,
    DescribeContainerGroupsRequest, Tag, status,
};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::info;
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::translate::tags;

use super::{Error, PodController, writes};

/// How long past its deletion deadline a pod waits for a terminating group before it is
/// removed anyway (ECI finishes the stop on its own).
const OVERDUE: Duration = Duration::from_secs(15);

impl PodController {
    pub(super) async fn delete(&self, pod: &Pod) -> Result<Action, Error> {
        let ctx = &self.ctx;
        let Some(id) = self.instance_of(pod).await? else {
            writes::remove(ctx, pod).await?;
            return Ok(Action::await_change());
        };
        let state = self.group_status(&id).await?;
        let gone = match state.as_deref() {
            None => true,
            Some(status::TERMINATING) => false,
            Some(current) => {
                let result = ctx
                    .eci
                    .call(&DeleteContainerGroupRequest {
                        container_group_id: id.clone(),
                        client_token: pod.uid().map(|uid| format!("delete-{uid}")),
                        ..DeleteContainerGroupRequest::default()
                    })
                    .await;
                ctx.observe_eci(&result);
                match result {
                    Ok(_) => {
                        info!(pod = %pod.name_any(), %id, "container group deleted");
                        let terminal = matches!(
                            current,
                            status::SUCCEEDED
                                | status::FAILED
                                | status::EXPIRED
                                | status::SCHEDULE_FAILED
                        );
                        terminal || self.group_status(&id).await?.is_none()
                    }
                    Err(error) if error.is_not_found() => true,
                    Err(error) => return Err(error.into()),
                }
            }
        };
        let overdue = pod
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .is_some_and(|deadline| {
                Utc::now().timestamp_millis() > deadline + OVERDUE.as_millis() as i64
            });
        if gone || overdue {
            writes::remove(ctx, pod).await?;
            return Ok(Action::await_change());
        }
        self.terminating.track(&id, pod);
        ctx.sync_now.notify_one();
        Ok(Action::requeue(OVERDUE))
    }

    /// The pod's container group: from its annotation, or (when the create succeeded but
    /// the annotation write did not) by the pod's UID tag.
    async fn instance_of(&self, pod: &Pod) -> Result<Option<String>, Error> {
        if let Some(id) = pod.annotations().get(INSTANCE_ID) {
            return Ok(Some(id.clone()));
        }
        let Some(uid) = pod.uid() else {
            return Ok(None);
        };
        let found = self
            .ctx
            .eci
            .call(&DescribeContainerGroupsRequest {
                tag: vec![
                    Tag::new(tags::CLUSTER_ID, self.ctx.settings.cluster_id.clone()),
                    Tag::new(tags::UID, uid),
                ],
                limit: Some(20),
                ..DescribeContainerGroupsRequest::default()
            })
            .await?;
        Ok(found
            .container_groups
            .into_iter()
            .next()
            .map(|g| g.container_group_id))
    }

    async fn group_status(&self, id: &str) -> Result<Option<String>, Error> {
        let found = self
            .ctx
            .eci
            .call(&DescribeContainerGroupStatusRequest {
                container_group_ids: Some(JsonList(vec![id.to_string()])),
                ..DescribeContainerGroupStatusRequest::default()
            })
            .await?;
        Ok(found
            .data
            .into_iter()
            .find(|g| g.container_group_id == id)
            .map(|g| g.status))
    }
}
