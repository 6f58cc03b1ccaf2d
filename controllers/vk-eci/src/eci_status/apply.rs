//! Mirrors one changed group onto its pod: the status (only when it differs from what was
//! last written), ECI's events as pod Events, and a new group for a pod ECI could not
//! schedule.

use chrono::Utc;
use eci_types::wire::{ContainerGroup, status};
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, Patch, PostParams};
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::info;
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::cache::CachedPod;
use vk_eci_core::lifecycle::{CreateRetry, pod_event, reschedule_after_schedule_failure};
use vk_eci_core::status::{event_key, last_change, pod_status, status_patch, unreported_events};

use super::{StatusSync, owner_key};
use crate::pod_lifecycle::{Error, annotations_of, groups, writes};
use crate::runtime::context::patch_params;

impl StatusSync {
    /// Mirrors one group onto its pod.
    pub(super) async fn apply(&self, group: &ContainerGroup) -> Result<(), Error> {
        let ctx = self.ctx.clone();
        let Some(pod) = self.pod_of(group) else {
            // No pod: an orphan, which the full pass collects.
            return Ok(());
        };
        if pod.annotations().get(INSTANCE_ID) != Some(&group.container_group_id) {
            return Err(Error::NotYetRecorded);
        }
        let now = Utc::now();
        if group.status == status::SCHEDULE_FAILED
            && pod.metadata.deletion_timestamp.is_none()
            && reschedule_after_schedule_failure(&annotations_of(&pod))
        {
            return self.reschedule(&pod, group).await;
        }
        let desired = pod_status(&pod, group, now);
        if let Some(patch) = status_patch(&pod.status.fingerprint, &desired) {
            writes::patch_status(&ctx, &pod, patch).await?;
            // From ECI's change to the write's answer: the lag a watcher of the pod sees.
            if let Some(changed_at) = last_change(group) {
                let lag = (Utc::now() - changed_at).num_milliseconds().max(0) as f64 / 1000.0;
                ctx.metrics.status_sync_lag_seconds.observe(lag);
            }
        }
        self.mirror_events(&pod, group).await
    }

    /// ECI events become pod Events; a repeat updates the same Event's count.
    async fn mirror_events(&self, pod: &CachedPod, group: &ContainerGroup) -> Result<(), Error> {
        let ctx = self.ctx.clone();
        let owner = owner_key(&pod.uid().unwrap_or_default());
        let fresh: Vec<_> = match self.reported.lock() {
            Ok(mut reported) => {
                unreported_events(&group.events, reported.entry(owner).or_default())
                    .into_iter()
                    .cloned()
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        let api: Api<Event> =
            Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        for eci_event in fresh {
            let event = pod_event(pod, &eci_event, &ctx.settings.node_name, Utc::now());
            let name = event.metadata.name.clone().unwrap_or_default();
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let repeat = json!({
                        "count": event.count,
                        "lastTimestamp": event.last_timestamp,
                        "message": event.message,
                    });
                    api.patch(&name, &patch_params(), &Patch::Merge(&repeat))
                        .await?;
                }
                Err(error) => return Err(error.into()),
            }
            if let Ok(mut reported) = self.reported.lock() {
                reported
                    .entry(owner)
                    .or_default()
                    .insert(event_key(&eci_event), eci_event.count);
            }
        }
        Ok(())
    }

    /// Replaces a group that could not be scheduled: delete it, clear the pod's instance id
    /// and count the reschedule (the next create then uses a new ClientToken).
    /// If this is interrupted after the delete, the full pass finds the pod's group lost and
    /// finishes the job ([`LostInstance::Recreate`]).
    async fn reschedule(&self, pod: &CachedPod, group: &ContainerGroup) -> Result<(), Error> {
        let ctx = &self.ctx;
        groups::delete(ctx, &group.container_group_id).await?;
        let retry = CreateRetry::of(pod.annotations()).failed(true, Utc::now());
        let why = group
            .events
            .iter()
            .rev()
            .find(|e| e.r#type == "Warning")
            .map(|e| format!("{}: {}", e.reason, e.message))
            .unwrap_or_else(|| "ScheduleFailed".into());
        info!(pod = %pod.name_any(), id = %group.container_group_id, attempt = retry.attempts, "container group could not be scheduled; creating another");
        writes::event(
            ctx,
            pod,
            EventType::Warning,
            "Rescheduling",
            format!(
                "ECI could not schedule container group {} ({why}); creating another",
                group.container_group_id
            ),
        )
        .await;
        writes::clear_instance(ctx, pod, Some(&retry)).await
    }
}
