//! Which container group is whose. Every destructive decision about a group rests on its
//! tags (cluster, node, pod namespace/name/UID), which vk-eci writes at create time and
//! nobody else can forge into our account; never on a pod annotation, which any pod author
//! can set, nor on the informer cache alone, which can be empty or behind (design §8a).

use std::collections::HashSet;

use eci_types::wire::{ContainerGroup, status};

use crate::annotations::EciAnnotations;
use crate::cache::{CachedContainerState, CachedPod};
use crate::lifecycle::reschedule_after_schedule_failure;
use crate::translate::tags;

/// The pod a group was created for, as its tags say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedPod<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

fn tag<'a>(group: &'a ContainerGroup, key: &str) -> Option<&'a str> {
    group
        .tags
        .iter()
        .find(|t| t.key == key)
        .map(|t| t.value.as_str())
}

/// The pod `group` belongs to, if its tags say it is one of this cluster's and node's and
/// name the pod completely.
pub fn tagged_pod<'a>(
    group: &'a ContainerGroup,
    cluster_id: &str,
    node: &str,
) -> Option<TaggedPod<'a>> {
    if tag(group, tags::CLUSTER_ID) != Some(cluster_id) || tag(group, tags::NODE) != Some(node) {
        return None;
    }
    Some(TaggedPod {
        namespace: tag(group, tags::NAMESPACE)?,
        name: tag(group, tags::NAME)?,
        uid: tag(group, tags::UID)?,
    })
}

/// Whether `group` is the one vk-eci created for the pod with `pod_uid` on this node.
pub fn owned_by(group: &ContainerGroup, cluster_id: &str, node: &str, pod_uid: &str) -> bool {
    tagged_pod(group, cluster_id, node).is_some_and(|pod| pod.uid == pod_uid)
}

/// Groups of this cluster and node whose pod the cache does not know: suspects only. Before
/// one is deleted it must stay a suspect for two full passes and the API server itself must
/// say its pod is gone ([`confirmed_orphan`]). Groups whose tags do not name a pod completely
/// are never suspects: they are not ours to judge.
pub fn orphan_suspects<'a>(
    groups: &'a [ContainerGroup],
    cluster_id: &str,
    node: &str,
    cached_pod_uids: &HashSet<String>,
) -> Vec<&'a ContainerGroup> {
    groups
        .iter()
        .filter(|g| {
            tagged_pod(g, cluster_id, node).is_some_and(|pod| !cached_pod_uids.contains(pod.uid))
        })
        .collect()
}

/// Whether the API server's answer for a suspect's pod (GET by the tagged namespace/name:
/// `None` for 404, else the live pod's UID) makes the group an orphan.
pub fn confirmed_orphan(tagged: &TaggedPod<'_>, live_uid: Option<&str>) -> bool {
    live_uid != Some(tagged.uid)
}

/// What a direct describe by id says about the group a pod's annotation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedInstance {
    /// It exists and is this pod's.
    Present,
    /// ECI has no such group any more.
    Lost,
    /// It exists but is not this pod's (the annotation was set by someone else, or names a
    /// group of another pod, node or cluster).
    Foreign,
}

pub fn recorded_instance(
    found: Option<&ContainerGroup>,
    cluster_id: &str,
    node: &str,
    pod_uid: &str,
) -> RecordedInstance {
    match found {
        None => RecordedInstance::Lost,
        Some(group) if owned_by(group, cluster_id, node, pod_uid) => RecordedInstance::Present,
        Some(_) => RecordedInstance::Foreign,
    }
}

/// What to do with a pod whose container group vanished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostInstance {
    /// Nothing of it ever ran: create another group for the same pod (as a reschedule does).
    Recreate,
    /// It ran: fail the pod so its controller replaces it; its processes are gone.
    Fail,
}

/// The reason on a pod whose container group vanished under it.
pub const CONTAINER_INSTANCE_LOST: &str = "ContainerInstanceLost";

pub fn lost_instance(pod: &CachedPod, annotations: &EciAnnotations) -> LostInstance {
    let pending = pod.phase().is_none_or(|p| p == "Pending");
    let anything_started = pod.status.container_statuses.iter().any(|c| {
        c.restart_count > 0
            || matches!(
                c.state,
                CachedContainerState::Running { .. } | CachedContainerState::Terminated
            )
    });
    if pending && !anything_started && reschedule_after_schedule_failure(annotations) {
        LostInstance::Recreate
    } else {
        LostInstance::Fail
    }
}

/// The group to adopt for a pod whose create is retried: ECI may hold one from an attempt
/// whose answer was lost, or whose parameters differ from this attempt's (a fresh service
/// account token), so it answers `IdempotentParameterMismatch`. A group that could not be
/// scheduled is not adopted: the reschedule path replaces it.
pub fn adoptable<'a>(
    groups: &'a [ContainerGroup],
    cluster_id: &str,
    node: &str,
    pod_uid: &str,
) -> Option<&'a ContainerGroup> {
    groups
        .iter()
        .filter(|g| owned_by(g, cluster_id, node, pod_uid) && g.status != status::SCHEDULE_FAILED)
        .max_by(|a, b| a.creation_time.cmp(&b.creation_time))
}

#[cfg(test)]
mod tests {
    use eci_types::wire::Tag;
    use serde_json::json;

    use super::*;

    fn group(uid: &str, cluster: &str, node: &str) -> ContainerGroup {
        ContainerGroup {
            container_group_id: format!("eci-{uid}"),
            tags: vec![
                Tag::new(tags::CLUSTER_ID, cluster),
                Tag::new(tags::NODE, node),
                Tag::new(tags::NAMESPACE, "default"),
                Tag::new(tags::NAME, format!("pod-{uid}")),
                Tag::new(tags::UID, uid),
            ],
            status: status::RUNNING.into(),
            ..ContainerGroup::default()
        }
    }

    #[test]
    fn suspects_are_groups_of_this_node_that_name_a_pod_the_cache_lacks() {
        let mut untagged = group("no-uid", "c1", "vk");
        untagged.tags.retain(|t| t.key != tags::UID);
        let groups = vec![
            group("live", "c1", "vk"),
            group("gone", "c1", "vk"),
            group("other-cluster", "c2", "vk"),
            group("other-node", "c1", "vk-2"),
            untagged,
        ];
        let cached: HashSet<String> = ["live".to_string()].into();
        let suspects: Vec<&str> = orphan_suspects(&groups, "c1", "vk", &cached)
            .iter()
            .map(|g| g.container_group_id.as_str())
            .collect();
        assert_eq!(suspects, ["eci-gone"]);
    }

    #[test]
    fn only_the_api_server_saying_the_pod_is_gone_makes_an_orphan() {
        let g = group("u1", "c1", "vk");
        let tagged = tagged_pod(&g, "c1", "vk").unwrap();
        assert_eq!(tagged.name, "pod-u1");
        assert!(confirmed_orphan(&tagged, None), "404");
        assert!(
            confirmed_orphan(&tagged, Some("u2")),
            "a new pod of that name"
        );
        assert!(!confirmed_orphan(&tagged, Some("u1")), "the pod lives");
    }

    #[test]
    fn a_recorded_instance_is_ours_only_by_its_tags() {
        let ours = group("u1", "c1", "vk");
        assert_eq!(
            recorded_instance(Some(&ours), "c1", "vk", "u1"),
            RecordedInstance::Present
        );
        assert_eq!(
            recorded_instance(Some(&ours), "c1", "vk", "u2"),
            RecordedInstance::Foreign,
            "another pod's group"
        );
        assert_eq!(
            recorded_instance(Some(&ours), "c1", "vk-2", "u1"),
            RecordedInstance::Foreign
        );
        assert_eq!(
            recorded_instance(None, "c1", "vk", "u1"),
            RecordedInstance::Lost
        );
    }

    fn pod(status: serde_json::Value) -> CachedPod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn a_lost_instance_is_recreated_only_if_nothing_ran() {
        let defaults = EciAnnotations::default();
        let fail_fast = EciAnnotations {
            fail_on_create_error: true,
            ..EciAnnotations::default()
        };
        let pending = pod(json!({"phase": "Pending"}));
        assert_eq!(lost_instance(&pending, &defaults), LostInstance::Recreate);
        assert_eq!(lost_instance(&pending, &fail_fast), LostInstance::Fail);
        let running = pod(json!({"phase": "Running"}));
        assert_eq!(lost_instance(&running, &defaults), LostInstance::Fail);
        let started = pod(json!({"phase": "Pending", "containerStatuses": [
            {"name": "a", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 1}}}]}));
        assert_eq!(lost_instance(&started, &defaults), LostInstance::Fail);
    }

    #[test]
    fn the_newest_schedulable_group_of_the_pod_is_adopted() {
        let mut failed = group("u1", "c1", "vk");
        failed.container_group_id = "eci-failed".into();
        failed.status = status::SCHEDULE_FAILED.into();
        failed.creation_time = "2026-01-01T00:00:03Z".into();
        let mut old = group("u1", "c1", "vk");
        old.container_group_id = "eci-old".into();
        old.creation_time = "2026-01-01T00:00:01Z".into();
        let mut new = group("u1", "c1", "vk");
        new.container_group_id = "eci-new".into();
        new.status = status::PENDING.into();
        new.creation_time = "2026-01-01T00:00:02Z".into();
        let other = group("u2", "c1", "vk");
        let groups = [failed, old, new, other];
        assert_eq!(
            adoptable(&groups, "c1", "vk", "u1").map(|g| g.container_group_id.as_str()),
            Some("eci-new")
        );
        assert_eq!(adoptable(&groups[..1], "c1", "vk", "u1"), None);
    }
}
