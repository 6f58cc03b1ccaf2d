//! The actions the simulator serves and vk-eci never calls, which the client therefore does
//! not list: the tests name them here.

use eci_client::impl_action;
use eci_types::wire::{
    DescribeContainerGroupMetricRequest, DescribeContainerGroupMetricResponse, EmptyResponse,
    RestartContainerGroupRequest, UpdateContainerGroupRequest,
};
use serde::Serialize;

/// A request of an action only the simulator's tests call.
#[derive(Serialize)]
#[serde(transparent)]
pub struct SimOnly<R>(pub R);

impl_action!(
    SimOnly<UpdateContainerGroupRequest>,
    "UpdateContainerGroup",
    EmptyResponse
);
impl_action!(
    SimOnly<RestartContainerGroupRequest>,
    "RestartContainerGroup",
    EmptyResponse
);
impl_action!(
    SimOnly<DescribeContainerGroupMetricRequest>,
    "DescribeContainerGroupMetric",
    DescribeContainerGroupMetricResponse
);
