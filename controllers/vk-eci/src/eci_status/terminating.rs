//! Deleted pods whose groups were stopping: each is removed once its group is gone.

use std::collections::HashMap;

use eci_types::params::JsonList;
use eci_types::wire::{DescribeContainerGroupStatusRequest, status};
use tracing::warn;

use super::{STATUS_PAGE, StatusSync};
use crate::pod_lifecycle::{groups::IDS_PER_CALL, writes};

impl StatusSync {
    /// Removes the pods whose terminating group is gone (or finished). One pod that cannot
    /// be removed, or one ECI call that fails, holds up nobody else: they are retried next
    /// pass.
    pub(super) async fn finish_terminating(&mut self) {
        let ctx = self.ctx.clone();
        let tracked = self.inbox.terminating();
        for chunk in tracked.chunks(IDS_PER_CALL) {
            let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let still = ctx
                .eci
                .call(&DescribeContainerGroupStatusRequest {
                    container_group_ids: Some(JsonList(ids)),
                    limit: Some(STATUS_PAGE),
                    ..DescribeContainerGroupStatusRequest::default()
                })
                .await;
            let still: HashMap<String, String> = match still {
                Ok(found) => found
                    .data
                    .into_iter()
                    .map(|g| (g.container_group_id, g.status))
                    .collect(),
                Err(error) => {
                    warn!(%error, "cannot check terminating container groups; retried next pass");
                    continue;
                }
            };
            for (id, key) in chunk {
                if still.get(id).is_some_and(|s| s == status::TERMINATING) {
                    continue;
                }
                if let Some(pod) = ctx.pods.get(key)
                    && let Err(error) = writes::remove(&ctx, &pod).await
                {
                    warn!(pod = %key, %error, "cannot remove a deleted pod; retried next pass");
                    continue;
                }
                self.inbox.forget(id);
            }
        }
    }
}
