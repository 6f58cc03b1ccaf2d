//! The ECI actions vk-eci calls: each request type's wire name and response type.
//!
//! The simulator serves three more (`UpdateContainerGroup`, `RestartContainerGroup`,
//! `DescribeContainerGroupMetric`); their types are in [`eci_types::wire`], and a caller that
//! needs them names them with its own [`Action`].

use eci_types::wire::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An ECI OpenAPI action: its wire name and its response type.
pub trait Action: Serialize {
    const NAME: &'static str;
    type Response: DeserializeOwned + Serialize;
}

macro_rules! action {
    ($request:ty, $name:literal, $response:ty) => {
        impl Action for $request {
            const NAME: &'static str = $name;
            type Response = $response;
        }
    };
}

action!(
    CreateContainerGroupRequest,
    "CreateContainerGroup",
    CreateContainerGroupResponse
);
action!(
    DescribeContainerGroupsRequest,
    "DescribeContainerGroups",
    DescribeContainerGroupsResponse
);
action!(
    DescribeContainerGroupStatusRequest,
    "DescribeContainerGroupStatus",
    DescribeContainerGroupStatusResponse
);
action!(
    DescribeContainerGroupEventsRequest,
    "DescribeContainerGroupEvents",
    DescribeContainerGroupEventsResponse
);
action!(
    DeleteContainerGroupRequest,
    "DeleteContainerGroup",
    EmptyResponse
);
action!(
    DescribeContainerLogRequest,
    "DescribeContainerLog",
    DescribeContainerLogResponse
);
action!(
    ExecContainerCommandRequest,
    "ExecContainerCommand",
    ExecContainerCommandResponse
);
action!(
    DescribeMultiContainerGroupMetricRequest,
    "DescribeMultiContainerGroupMetric",
    DescribeMultiContainerGroupMetricResponse
);
