//! Every full pass checks the group each live pod records: one that vanished fails its pod
//! (or, if nothing of it ever ran, makes the pod get another); one that is not the pod's is
//! forgotten, so the pod gets its own.

use std::sync::Arc;

use chrono::Utc;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::cache::CachedPod;
use vk_eci_core::lifecycle::CreateRetry;
use vk_eci_core::ownership::{
    CONTAINER_INSTANCE_LOST, LostInstance, RecordedInstance, lost_instance, recorded_instance,
};

use super::listing::{Listing, known_present};
use super::{StatusSync, owner_key};
use crate::pod_lifecycle::{Error, annotations_of, groups::IDS_PER_CALL, writes};

impl StatusSync {
    /// Checks, by a describe by id, the recorded group of every live pod that is not known
    /// to be present after the full `listing` (see [`known_present`]) or whose tags (as last
    /// fetched) name another pod: one that vanished fails its pod (or, if nothing of it ever
    /// ran, makes the pod get another); one that is not the pod's is forgotten, so the pod
    /// gets its own.
    pub(super) async fn verify_recorded_instances(
        &mut self,
        listing: &Listing,
    ) -> Result<(), Error> {
        let ctx = self.ctx.clone();
        let present = known_present(&self.seen, listing);
        let doubtful: Vec<(String, Arc<CachedPod>)> = ctx
            .pods
            .state()
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter(|pod| !matches!(pod.phase(), Some("Succeeded" | "Failed")))
            .filter_map(|pod| {
                let id = pod.annotations().get(INSTANCE_ID)?.clone();
                let owner = pod.uid().map(|uid| owner_key(&uid));
                let doubtful =
                    !present.contains(id.as_str()) || self.owners.get(&id) != owner.as_ref();
                doubtful.then_some((id, pod))
            })
            .collect();
        for chunk in doubtful.chunks(IDS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let found = self.fetch(&ids).await?;
            self.note_owners(&found);
            for (id, pod) in chunk {
                let group = found.iter().find(|g| &g.container_group_id == id);
                let uid = pod.uid().unwrap_or_default();
                let settings = &ctx.settings;
                let verdict =
                    recorded_instance(group, &settings.cluster_id, &settings.node_name, &uid);
                let outcome = match verdict {
                    RecordedInstance::Present => Ok(()),
                    RecordedInstance::Lost => self.instance_lost(pod, id).await,
                    RecordedInstance::Foreign => self.instance_foreign(pod, id).await,
                };
                if let Err(error) = outcome {
                    warn!(pod = %pod.name_any(), %id, ?verdict, %error, "cannot act on the pod's recorded container group; retried next full pass");
                }
            }
        }
        Ok(())
    }

    async fn instance_lost(&self, pod: &CachedPod, id: &str) -> Result<(), Error> {
        let ctx = &self.ctx;
        match lost_instance(pod, &annotations_of(pod)) {
            LostInstance::Recreate => {
                let retry = CreateRetry::of(pod.annotations()).failed(true, Utc::now());
                info!(pod = %pod.name_any(), %id, "container group vanished before it ran; creating another");
                writes::event(
                    ctx,
                    pod,
                    EventType::Warning,
                    CONTAINER_INSTANCE_LOST,
                    format!("ECI container group {id} no longer exists; creating another"),
                )
                .await;
                writes::clear_instance(ctx, pod, Some(&retry)).await
            }
            LostInstance::Fail => {
                let message = format!(
                    "ECI container group {id} no longer exists: the pod's containers are gone"
                );
                warn!(pod = %pod.name_any(), %id, "container group vanished; the pod fails");
                writes::event(
                    ctx,
                    pod,
                    EventType::Warning,
                    CONTAINER_INSTANCE_LOST,
                    message.clone(),
                )
                .await;
                writes::lost(ctx, pod, CONTAINER_INSTANCE_LOST, &message).await
            }
        }
    }

    async fn instance_foreign(&self, pod: &CachedPod, id: &str) -> Result<(), Error> {
        let ctx = &self.ctx;
        warn!(pod = %pod.name_any(), %id, "the pod's instance-id annotation names a container group that is not its own; ignoring it");
        writes::event(
            ctx,
            pod,
            EventType::Warning,
            "ForeignInstanceId",
            format!(
                "{INSTANCE_ID} names container group {id}, which vk-eci did not create for this pod; the annotation is dropped and the pod gets its own"
            ),
        )
        .await;
        writes::clear_instance(ctx, pod, None).await
    }
}
