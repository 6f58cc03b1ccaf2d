//! The ECI calls the pod controllers make about container groups. Lookups by the pod-UID tag
//! rather than by the pod's annotation: the tag is ours, the annotation anyone's. Deletes
//! re-check leadership just before they go out (design §8a).

use eci_types::EciFailure;
use eci_types::params::JsonList;
use eci_types::wire::{
    ContainerGroup, DeleteContainerGroupRequest, DescribeContainerGroupsRequest, Tag,
};
use vk_eci_core::translate::tags;

use super::Error;
use crate::runtime::context::Context;

/// Ids one DescribeContainerGroups call takes.
pub const IDS_PER_CALL: usize = 20;

/// The groups with these ids (at most [`IDS_PER_CALL`]), with their events and tags; a
/// group ECI does not have is simply absent.
pub async fn describe(ctx: &Context, ids: &[String]) -> Result<Vec<ContainerGroup>, Error> {
    let result = ctx
        .eci
        .call(&DescribeContainerGroupsRequest {
            container_group_ids: Some(JsonList(ids.to_vec())),
            with_event: Some(true),
            limit: Some(IDS_PER_CALL as i64),
            ..DescribeContainerGroupsRequest::default()
        })
        .await;
    ctx.observe_eci(&result);
    Ok(result?.container_groups)
}

/// Every group ECI holds that is tagged with this cluster and the pod's UID.
pub async fn of_pod(ctx: &Context, uid: &str) -> Result<Vec<ContainerGroup>, Error> {
    let result = ctx
        .eci
        .call(&DescribeContainerGroupsRequest {
            tag: vec![
                Tag::new(tags::CLUSTER_ID, ctx.settings.cluster_id.clone()),
                Tag::new(tags::UID, uid),
            ],
            limit: Some(IDS_PER_CALL as i64),
            ..DescribeContainerGroupsRequest::default()
        })
        .await;
    ctx.observe_eci(&result);
    Ok(result?.container_groups)
}

/// Deletes a group; one that is already gone counts as deleted.
pub async fn delete(ctx: &Context, id: &str) -> Result<(), Error> {
    ctx.leadership.ensure()?;
    let result = ctx
        .eci
        .call(&DeleteContainerGroupRequest {
            container_group_id: id.to_string(),
            client_token: Some(format!("delete-{id}")),
            ..DeleteContainerGroupRequest::default()
        })
        .await;
    ctx.observe_eci(&result);
    match result {
        Ok(_) => Ok(()),
        Err(error) if error.is_not_found() => Ok(()),
        Err(error) => Err(error.into()),
    }
}
