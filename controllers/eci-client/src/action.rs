//! The ECI actions vk-eci calls: each request type's wire name and response type.
//!
//! The simulator serves three more (`UpdateContainerGroup`, `RestartContainerGroup`,
//! `DescribeContainerGroupMetric`); their types are in [`eci_types::wire`], and a caller that
//! needs them names them on a type of its own with [`impl_action!`](crate::impl_action).

use eci_types::wire::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An ECI OpenAPI action: its wire name and its response type.
pub trait Action: Serialize {
    const NAME: &'static str;
    type Response: DeserializeOwned + Serialize;
}

/// Makes `$request` an [`Action`] named `$name` that answers `$response`.
#[macro_export]
macro_rules! impl_action {
    ($request:ty, $name:literal, $response:ty) => {
        impl $crate::action::Action for $request {
            const NAME: &'static str = $name;
            type Response = $response;
        }
    };
}

impl_action!(
    CreateContainerGroupRequest,
    "CreateContainerGroup",
    CreateContainerGroupResponse
);
impl_action!(
    DescribeContainerGroupsRequest,
    "DescribeContainerGroups",
    DescribeContainerGroupsResponse
);
impl_action!(
    DescribeContainerGroupStatusRequest,
    "DescribeContainerGroupStatus",
    DescribeContainerGroupStatusResponse
);
impl_action!(
    DescribeContainerGroupEventsRequest,
    "DescribeContainerGroupEvents",
    DescribeContainerGroupEventsResponse
);
impl_action!(
    DeleteContainerGroupRequest,
    "DeleteContainerGroup",
    EmptyResponse
);
impl_action!(
    DescribeContainerLogRequest,
    "DescribeContainerLog",
    DescribeContainerLogResponse
);
impl_action!(
    ExecContainerCommandRequest,
    "ExecContainerCommand",
    ExecContainerCommandResponse
);
impl_action!(
    DescribeMultiContainerGroupMetricRequest,
    "DescribeMultiContainerGroupMetric",
    DescribeMultiContainerGroupMetricResponse
);
