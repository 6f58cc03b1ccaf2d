//! Orphan GC: container groups of this node whose pod is gone are deleted, carefully. It runs
//! on the status sync's full pass, over the listing that pass made, so it costs no listing of
//! its own.
//!
//! Safety (design §8a): a group is deleted as an orphan only after two full passes found no
//! pod for it in the cache and the API server itself says its pod is gone.

use std::collections::HashSet;
use std::sync::Arc;

use eci_types::wire::ContainerGroup;
use kube::ResourceExt;
use kube::api::Api;
use tracing::{debug, info, warn};
use vk_eci_core::annotations::INSTANCE_ID;
use vk_eci_core::cache::CachedPod;
use vk_eci_core::ownership::{confirmed_orphan, orphan_suspects, tagged_pod};

use crate::pod_lifecycle::Error;
use crate::pod_lifecycle::groups::{self, IDS_PER_CALL};
use crate::runtime::context::Context;

pub struct OrphanGc {
    ctx: Arc<Context>,
    /// Groups the last full pass found no cached pod for: deleted only if the next full pass
    /// finds none either (and the API server confirms).
    suspects: HashSet<String>,
}

impl OrphanGc {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            suspects: HashSet::new(),
        }
    }

    /// A new leadership term suspects afresh: what an earlier term saw may be stale.
    pub fn forget_suspects(&mut self) {
        self.suspects.clear();
    }

    /// Deletes the groups of this node among `listed` (a full listing) whose pod is gone.
    /// Suspects are groups no cached pod's
    /// annotation or UID claims; one is deleted only when the previous full pass suspected it
    /// too and the API server answers that its pod (by the namespace and name in its tags)
    /// does not exist or is another pod (a different UID).
    pub async fn collect(&mut self, listed: &[&str]) -> Result<(), Error> {
        let ctx = self.ctx.clone();
        let pods = ctx.pods.state();
        let claimed: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.annotations().get(INSTANCE_ID).map(String::as_str))
            .collect();
        let unclaimed: Vec<String> = listed
            .iter()
            .filter(|id| !claimed.contains(*id))
            .map(|id| id.to_string())
            .collect();
        let cached: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        let mut suspects = HashSet::new();
        for chunk in unclaimed.chunks(IDS_PER_CALL) {
            let groups = groups::describe(&ctx, chunk).await?;
            let settings = &ctx.settings;
            for group in
                orphan_suspects(&groups, &settings.cluster_id, &settings.node_name, &cached)
            {
                let id = &group.container_group_id;
                suspects.insert(id.clone());
                if !self.suspects.contains(id) {
                    debug!(%id, "container group without a pod in the cache; checked again next full pass");
                    continue;
                }
                if let Err(error) = self.delete_if_orphan(group).await {
                    warn!(%id, %error, "cannot collect a container group that looks orphaned");
                }
            }
        }
        self.suspects = suspects;
        Ok(())
    }

    async fn delete_if_orphan(&self, group: &ContainerGroup) -> Result<(), Error> {
        let ctx = &self.ctx;
        let settings = &ctx.settings;
        let Some(tagged) = tagged_pod(group, &settings.cluster_id, &settings.node_name) else {
            return Ok(());
        };
        let live = Api::<CachedPod>::namespaced(ctx.client.clone(), tagged.namespace)
            .get_opt(tagged.name)
            .await?;
        let live_uid = live.as_ref().and_then(|p| p.metadata.uid.as_deref());
        if !confirmed_orphan(&tagged, live_uid) {
            debug!(id = %group.container_group_id, pod = %tagged.name, "the API server still has the pod; not an orphan");
            return Ok(());
        }
        groups::delete(ctx, &group.container_group_id).await?;
        info!(id = %group.container_group_id, name = %group.container_group_name, pod = %tagged.name, "deleted an orphaned container group");
        ctx.metrics.orphans_deleted.inc();
        Ok(())
    }
}
