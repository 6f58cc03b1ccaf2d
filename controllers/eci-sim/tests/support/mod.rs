//! The actions the simulator serves and vk-eci never calls, which the client therefore does
//! not list: the tests name them here.

use eci_client::action::Action;
use eci_types::wire::{
    DescribeContainerGroupMetricRequest, DescribeContainerGroupMetricResponse, EmptyResponse,
    RestartContainerGroupRequest, UpdateContainerGroupRequest,
};
use serde::Serialize;

/// A request of an action only the simulator's tests call.
#[derive(Serialize)]
#[serde(transparent)]
pub struct SimOnly<R>(pub R);

macro_rules! sim_only_action {
    ($request:ty, $name:literal, $response:ty) => {
        impl Action for SimOnly<$request> {
            const NAME: &'static str = $name;
            type Response = $response;
        }
    };
}

sim_only_action!(
    UpdateContainerGroupRequest,
    "UpdateContainerGroup",
    EmptyResponse
);
sim_only_action!(
    RestartContainerGroupRequest,
    "RestartContainerGroup",
    EmptyResponse
);
sim_only_action!(
    DescribeContainerGroupMetricRequest,
    "DescribeContainerGroupMetric",
    DescribeContainerGroupMetricResponse
);
