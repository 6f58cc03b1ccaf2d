#!/usr/bin/env python3
"""Drives Alibaba Cloud's own published ECI SDKs, unchanged, against the vk-eci ECI simulator.

The fidelity bar for the simulator: the current Tea SDK (alibabacloud-eci20180808, V3
`ACS3-HMAC-SHA256` signatures and its `v2` HMAC-SHA1 mode) and the legacy
aliyun-python-sdk-eci (HMAC-SHA1 query signatures) must work against it as against ECI.

Usage: ECI_ENDPOINT=127.0.0.1:PORT ECI_ACCESS_KEY=... ECI_SECRET_KEY=... check_sdks.py
Prints one line per check and a closing 'N passed, M failed' line; exits 1 on any failure.
"""

import json
import os
import sys
import time
import traceback

from alibabacloud_eci20180808 import models as eci_models
from alibabacloud_eci20180808.client import Client as TeaClient
from alibabacloud_tea_openapi import models as openapi_models
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkeci.request.v20180808 import (
    CreateContainerGroupRequest,
    DeleteContainerGroupRequest,
    DescribeContainerGroupsRequest,
)

ENDPOINT = os.environ["ECI_ENDPOINT"]
KEY_ID = os.environ["ECI_ACCESS_KEY"]
KEY_SECRET = os.environ["ECI_SECRET_KEY"]
REGION = os.environ.get("ECI_REGION", "cn-hangzhou")

results = []


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print(f"ok      {name}")
        except Exception as error:  # noqa: BLE001 - every failure is reported, none stops the run
            results.append((name, error))
            print(f"FAILED  {name}: {error!r}")
            traceback.print_exc(limit=3)
        return fn

    return wrap


def tea_client(signature_algorithm=None, secret=KEY_SECRET):
    config = openapi_models.Config(
        access_key_id=KEY_ID,
        access_key_secret=secret,
        region_id=REGION,
        endpoint=ENDPOINT,
        protocol="http",
    )
    if signature_algorithm:
        config.signature_algorithm = signature_algorithm
    return TeaClient(config)


def tea_create(client, name):
    container = eci_models.CreateContainerGroupRequestContainer(
        name="app",
        image="nginx:latest",
        cpu=1.0,
        memory=2.0,
        command=["/bin/sh", "-c"],
        arg=["echo hello world"],
        environment_var=[
            eci_models.CreateContainerGroupRequestContainerEnvironmentVar(key="A", value="b c+d*e~f")
        ],
    )
    request = eci_models.CreateContainerGroupRequest(
        region_id=REGION,
        container_group_name=name,
        container=[container],
        tag=[eci_models.CreateContainerGroupRequestTag(key="sdk", value="tea")],
        restart_policy="Never",
        client_token=f"tok-{name}",
    )
    return client.create_container_group(request).body.container_group_id


def wait_running(describe):
    deadline = time.time() + 15
    while time.time() < deadline:
        group = describe()
        if group is not None and group["Status"] == "Running":
            return group
        time.sleep(0.05)
    raise AssertionError("container group never reached Running")


def tea_lifecycle(signature_algorithm):
    client = tea_client(signature_algorithm)
    name = f"tea-{signature_algorithm or 'v3'}"
    group_id = tea_create(client, name)
    assert group_id.startswith("eci-"), group_id
    assert tea_create(client, name) == group_id, "ClientToken must make creates idempotent"

    def describe():
        response = client.describe_container_groups(
            eci_models.DescribeContainerGroupsRequest(
                region_id=REGION, container_group_ids=json.dumps([group_id]), with_event=True
            )
        )
        groups = response.body.to_map()["ContainerGroups"]
        return groups[0] if groups else None

    group = wait_running(describe)
    container = group["Containers"][0]
    assert container["EnvironmentVars"][0]["Value"] == "b c+d*e~f", container
    assert container["Args"] == ["echo hello world"], container
    assert group["IntranetIp"], group
    assert any(event["Reason"] == "Started" for event in group["Events"]), group["Events"]

    tagged = client.describe_container_groups(
        eci_models.DescribeContainerGroupsRequest(
            region_id=REGION,
            tag=[eci_models.DescribeContainerGroupsRequestTag(key="sdk", value="tea")],
            limit=20,
        )
    ).body
    assert group_id in [g.container_group_id for g in tagged.container_groups]

    status = client.describe_container_group_status(
        eci_models.DescribeContainerGroupStatusRequest(
            region_id=REGION, container_group_ids=json.dumps([group_id])
        )
    ).body.to_map()
    assert status["Data"][0]["PodStatus"]["Phase"] == "Running", status

    events = client.describe_container_group_events(
        eci_models.DescribeContainerGroupEventsRequest(
            region_id=REGION, container_group_ids=json.dumps([group_id])
        )
    ).body.to_map()
    assert events["Data"][0]["Events"], events

    logs = client.describe_container_log(
        eci_models.DescribeContainerLogRequest(
            region_id=REGION, container_group_id=group_id, container_name="app", tail=10
        )
    ).body
    assert "started container app" in logs.content, logs.content

    client.delete_container_group(
        eci_models.DeleteContainerGroupRequest(region_id=REGION, container_group_id=group_id)
    )
    assert describe() is None


@check("Tea SDK (alibabacloud-eci20180808), V3 ACS3-HMAC-SHA256: create, describe, status, events, logs, delete")
def _tea_v3():
    tea_lifecycle(None)


@check("Tea SDK, signature_algorithm=v2 (HMAC-SHA1): the same lifecycle")
def _tea_v2():
    tea_lifecycle("v2")


@check("Tea SDK: a wrong secret is SignatureDoesNotMatch")
def _tea_bad_secret():
    try:
        tea_client(secret="not-the-secret").describe_container_groups(
            eci_models.DescribeContainerGroupsRequest(region_id=REGION)
        )
    except Exception as error:  # noqa: BLE001
        assert getattr(error, "code", None) == "SignatureDoesNotMatch", repr(error)
        return
    raise AssertionError("a wrong secret was accepted")


@check("Tea SDK: a missing required parameter is MissingParameter")
def _tea_missing():
    try:
        tea_client().create_container_group(
            eci_models.CreateContainerGroupRequest(region_id=REGION, container_group_name="no-containers")
        )
    except Exception as error:  # noqa: BLE001
        assert getattr(error, "code", None) == "MissingParameter", repr(error)
        return
    raise AssertionError("a create without containers was accepted")


def legacy_client():
    return AcsClient(KEY_ID, KEY_SECRET, REGION)


def legacy_send(client, request):
    request.set_endpoint(ENDPOINT)
    request.set_protocol_type("http")
    return json.loads(client.do_action_with_exception(request))


@check("legacy SDK (aliyun-python-sdk-eci + core), HMAC-SHA1: create, describe, delete")
def _legacy():
    client = legacy_client()
    create = CreateContainerGroupRequest.CreateContainerGroupRequest()
    create.set_ContainerGroupName("legacy-sdk")
    create.set_RestartPolicy("Always")
    create.set_Containers([{"Name": "web", "Image": "nginx", "Cpu": 0.5, "Memory": 1.0}])
    create.set_Tags([{"Key": "sdk", "Value": "legacy"}])
    group_id = legacy_send(client, create)["ContainerGroupId"]

    def describe():
        request = DescribeContainerGroupsRequest.DescribeContainerGroupsRequest()
        request.set_ContainerGroupIds(json.dumps([group_id]))
        groups = legacy_send(client, request)["ContainerGroups"]
        return groups[0] if groups else None

    group = wait_running(describe)
    assert group["Cpu"] == 0.5 and group["Memory"] == 1.0, group
    delete = DeleteContainerGroupRequest.DeleteContainerGroupRequest()
    delete.set_ContainerGroupId(group_id)
    legacy_send(client, delete)
    assert describe() is None


@check("legacy SDK: an unknown AccessKey is InvalidAccessKeyId.NotFound")
def _legacy_unknown_key():
    client = AcsClient("LTAI-unknown", KEY_SECRET, REGION)
    try:
        legacy_send(client, DescribeContainerGroupsRequest.DescribeContainerGroupsRequest())
    except ServerException as error:
        assert error.get_error_code() == "InvalidAccessKeyId.NotFound", repr(error)
        return
    raise AssertionError("an unknown AccessKey was accepted")


failed = sum(1 for _, error in results if error is not None)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
