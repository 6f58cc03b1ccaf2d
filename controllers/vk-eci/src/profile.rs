//! Follows the `eci-profile` ConfigMap in `kube-system`: its network settings and selectors
//! apply to pods created after each change, without a restart. A malformed profile keeps the
//! last good one and says what is wrong in the log and in a Warning Event on the ConfigMap.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use tracing::{info, warn};
use vk_eci_core::profile::Profile;

use crate::runtime::context::Context;

/// Applies each profile change from `changes` (a watch of the one ConfigMap).
pub async fn follow(
    ctx: Arc<Context>,
    changes: impl Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>>,
) {
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        match change {
            Ok(watcher::Event::Apply(map) | watcher::Event::InitApply(map)) => {
                apply(&ctx, &map).await;
            }
            Ok(watcher::Event::Delete(_)) => {
                info!("eci-profile deleted; pods now get the node's own network settings");
                ctx.profile.set(None);
            }
            Ok(watcher::Event::InitDone) => ctx.profile.mark_synced(),
            Ok(watcher::Event::Init) => {}
            Err(error) => warn!(%error, "watching eci-profile failed; retrying"),
        }
    }
}

async fn apply(ctx: &Context, map: &ConfigMap) {
    match Profile::parse(&map.data.clone().unwrap_or_default()) {
        Ok(profile) => {
            info!(
                vswitches = ?profile.network.vswitches,
                security_group = ?profile.network.security_group,
                selectors = profile.selectors.len(),
                "eci-profile applied"
            );
            ctx.profile.set(Some(profile));
        }
        Err(error) => {
            warn!(%error, "eci-profile is invalid; keeping the last good profile");
            if !ctx.leadership.is_leader() {
                return;
            }
            let event = Event {
                type_: EventType::Warning,
                reason: "InvalidProfile".into(),
                note: Some(format!("{error}; the last good profile stays in effect")),
                action: "LoadProfile".into(),
                secondary: None,
            };
            ctx.publish(&event, &map.object_ref(&())).await;
        }
    }
}
