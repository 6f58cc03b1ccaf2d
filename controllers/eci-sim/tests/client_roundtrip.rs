//! The real ECI client against the simulator over HTTP: both signature styles, the lifecycle,
//! pagination, retries, typed errors and the admin API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

mod support;

use eci_client::impl_action;
use eci_client::{
    Credentials, EciClient, EciClientConfig, EciError, RetryPolicy, SignatureVersion,
};
use eci_sim::{CredentialConfig, FaultConfig, RunningSimulator, SimConfig, Simulator};
use eci_types::EciFailure;
use eci_types::params::CommaList;
use eci_types::wire::*;
use serde::Serialize;
use support::SimOnly;

const KEY_ID: &str = "LTAI-test";
const KEY_SECRET: &str = "test-secret-value";

async fn start(config: SimConfig) -> RunningSimulator {
    eci_client::install_crypto_provider();
    let credentials = vec![
        CredentialConfig {
            access_key_id: KEY_ID.into(),
            access_key_secret: KEY_SECRET.into(),
            security_token: None,
        },
        CredentialConfig {
            access_key_id: "STS.test".into(),
            access_key_secret: KEY_SECRET.into(),
            security_token: Some("sts-token-value".into()),
        },
    ];
    Simulator::new(config, credentials)
        .unwrap()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn client_config(sim: &RunningSimulator, signature: SignatureVersion) -> EciClientConfig {
    let mut config = EciClientConfig::new("cn-hangzhou", Credentials::new(KEY_ID, KEY_SECRET));
    config.endpoint = Some(sim.endpoint());
    config.signature = signature;
    config.timeout = Duration::from_secs(5);
    config.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    config
}

fn client(sim: &RunningSimulator, signature: SignatureVersion) -> EciClient {
    EciClient::new(client_config(sim, signature)).unwrap()
}

fn group_request(name: &str, tags: Vec<Tag>) -> CreateContainerGroupRequest {
    CreateContainerGroupRequest {
        container_group_name: name.into(),
        container: vec![Container {
            name: "app".into(),
            image: "registry.example.com/app:1".into(),
            cpu: Some(1.0),
            memory: Some(2.0),
            command: vec!["/bin/sh".into(), "-c".into()],
            arg: vec!["echo hello world; sleep 3600".into()],
            environment_var: vec![EnvironmentVar {
                key: "GREETING".into(),
                value: Some("b c+d*e~f".into()),
                field_ref: None,
            }],
            port: vec![ContainerPort {
                port: 8080,
                protocol: Some("TCP".into()),
            }],
            ..Container::default()
        }],
        v_switch_id: Some(CommaList(vec!["vsw-sim-a".into(), "vsw-sim-b".into()])),
        tag: tags,
        client_token: Some(format!("token-{name}")),
        ..CreateContainerGroupRequest::default()
    }
}

async fn wait_for_status(client: &EciClient, id: &str, wanted: &str) -> ContainerGroup {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = client
            .call(&DescribeContainerGroupsRequest {
                container_group_ids: Some(eci_types::params::JsonList(vec![id.to_string()])),
                with_event: Some(true),
                ..DescribeContainerGroupsRequest::default()
            })
            .await
            .unwrap();
        if let Some(group) = page.container_groups.into_iter().next()
            && group.status == wanted
        {
            return group;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never reached {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn lifecycle_with(signature: SignatureVersion) {
    let sim = start(SimConfig::fast()).await;
    let client = client(&sim, signature);
    let mine = Tag::new("vk-eci.io/cluster-id", "c-test");
    let mut ids = Vec::new();
    for i in 0..25 {
        let created = client
            .call(&group_request(&format!("pod-{i}"), vec![mine.clone()]))
            .await
            .unwrap();
        assert!(created.container_group_id.starts_with("eci-"));
        ids.push(created.container_group_id);
    }
    client
        .call(&group_request(
            "not-mine",
            vec![Tag::new("vk-eci.io/cluster-id", "other")],
        ))
        .await
        .unwrap();

    let running = wait_for_status(&client, &ids[0], status::RUNNING).await;
    assert!(!running.intranet_ip.is_empty());
    assert_eq!(running.containers[0].environment_vars[0].value, "b c+d*e~f");
    assert_eq!(running.containers[0].args, ["echo hello world; sleep 3600"]);
    assert!(running.events.iter().any(|e| e.reason == "Started"));

    let filter = DescribeContainerGroupsRequest {
        tag: vec![mine.clone()],
        ..DescribeContainerGroupsRequest::default()
    };
    let first_page = client.call(&filter).await.unwrap();
    assert_eq!(first_page.container_groups.len(), 20);
    assert_eq!(first_page.total_count, 25);
    assert!(!first_page.next_token.is_empty());
    let all = client.describe_all_container_groups(&filter).await.unwrap();
    let mut listed: Vec<String> = all.iter().map(|g| g.container_group_id.clone()).collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);

    for id in &ids {
        client
            .call(&DeleteContainerGroupRequest {
                container_group_id: id.clone(),
                ..DeleteContainerGroupRequest::default()
            })
            .await
            .unwrap();
    }
    assert!(
        client
            .describe_all_container_groups(&filter)
            .await
            .unwrap()
            .is_empty()
    );
    let stats = sim.simulator.with_state(|s| s.stats.clone());
    assert_eq!(stats.groups_created, 26);
    assert_eq!(stats.groups_deleted, 25);
}

#[tokio::test]
async fn lifecycle_and_pagination_with_v3_signatures() {
    lifecycle_with(SignatureVersion::V3).await;
}

#[tokio::test]
async fn lifecycle_and_pagination_with_v1_signatures() {
    lifecycle_with(SignatureVersion::V1).await;
}

#[tokio::test]
async fn sts_credentials_work_and_a_wrong_secret_is_typed_and_scrubbed() {
    let sim = start(SimConfig::fast()).await;
    for signature in [SignatureVersion::V3, SignatureVersion::V1] {
        let mut config = client_config(&sim, signature);
        config.credentials =
            Credentials::new("STS.test", KEY_SECRET).with_security_token("sts-token-value");
        let sts = EciClient::new(config).unwrap();
        sts.call(&DescribeContainerGroupsRequest::default())
            .await
            .unwrap();

        let mut config = client_config(&sim, signature);
        config.credentials = Credentials::new("STS.test", "wrong-secret-value")
            .with_security_token("sts-token-value");
        let error = EciClient::new(config)
            .unwrap()
            .call(&DescribeContainerGroupsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some("SignatureDoesNotMatch"));
        assert!(error.is_auth() && !error.is_retryable());
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("sts-token-value"), "{shown}");
        assert!(!shown.contains("wrong-secret-value"), "{shown}");
    }
    let mut config = client_config(&sim, SignatureVersion::V3);
    config.credentials = Credentials::new("LTAI-nobody", "x");
    let error = EciClient::new(config)
        .unwrap()
        .call(&DescribeContainerGroupsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.http_status()),
        (Some("InvalidAccessKeyId.NotFound"), Some(404))
    );
}

/// A V1 signature mismatch quotes the server's string to sign, which carries every request
/// parameter (encoded twice): the secrets among them never reach the error.
#[tokio::test]
async fn a_signature_mismatch_never_repeats_env_values_or_registry_passwords() {
    let sim = start(SimConfig::fast()).await;
    let mut config = client_config(&sim, SignatureVersion::V1);
    config.credentials = Credentials::new(KEY_ID, "wrong-secret-value");
    let mut request = group_request("leaky", Vec::new());
    request.container[0].environment_var.push(EnvironmentVar {
        key: "DB_PASSWORD".into(),
        value: Some("s3cret db/pass+word".into()),
        field_ref: None,
    });
    request.image_registry_credential = vec![ImageRegistryCredential {
        server: "registry.example.com".into(),
        user_name: "robot".into(),
        password: "registry-pass-123".into(),
    }];
    let error = EciClient::new(config)
        .unwrap()
        .call(&request)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("SignatureDoesNotMatch"));
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("string to sign is:POST"), "{shown}");
    assert!(
        shown.contains("ContainerGroupName"),
        "the rest stays: {shown}"
    );
    for secret in ["s3cret db/pass+word", "registry-pass-123", "b c+d*e~f"] {
        let once = eci_client::sign::percent_encode(secret);
        let twice = eci_client::sign::percent_encode(&once);
        for form in [secret.to_string(), once, twice] {
            assert!(!shown.contains(&form), "{form} in {shown}");
        }
    }
}

#[tokio::test]
async fn injected_faults_are_retried_and_typed_when_retries_run_out() {
    let sim = start(SimConfig::fast()).await;
    let client = client(&sim, SignatureVersion::V3);
    sim.simulator.set_faults(
        "DescribeContainerGroups",
        FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        },
    );
    let error = client
        .call(&DescribeContainerGroupsRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error.code(), Some("InternalError" | "ServiceUnavailable")),
        "{error}"
    );
    let stats = sim
        .simulator
        .with_state(|s| s.stats.actions["DescribeContainerGroups"].clone());
    assert_eq!(stats.calls, 4, "every attempt reached the simulator");

    // Each attempt fails with p = 1 - 0.8 * 0.8 = 0.36; twelve attempts all failing is
    // p < 5e-6, so fifty calls succeed, and fifty calls all escaping a fault is p < 2e-5.
    let mut patient = client_config(&sim, SignatureVersion::V3);
    patient.retry.max_attempts = 12;
    let patient = EciClient::new(patient).unwrap();
    sim.simulator.set_faults(
        "DescribeContainerGroups",
        FaultConfig {
            error_rate: 0.2,
            throttle_rate: 0.2,
            ..FaultConfig::default()
        },
    );
    for _ in 0..50 {
        patient
            .call(&DescribeContainerGroupsRequest::default())
            .await
            .unwrap();
    }
    let after = sim
        .simulator
        .with_state(|s| s.stats.actions["DescribeContainerGroups"].clone());
    assert!(after.throttled > 0, "{after:?}");
    assert!(after.injected_faults > stats.injected_faults, "{after:?}");
}

#[tokio::test]
async fn lost_responses_do_not_create_twice_thanks_to_the_client_token() {
    let sim = start(SimConfig::fast()).await;
    // A quarter of the answers are lost: ten attempts all lost is p < 1e-6 per create, and
    // forty creates without a single loss (nothing replayed) is p < 1e-5.
    let mut config = client_config(&sim, SignatureVersion::V3);
    config.retry.max_attempts = 10;
    let client = EciClient::new(config).unwrap();
    sim.simulator.set_faults(
        "CreateContainerGroup",
        FaultConfig {
            lost_response_rate: 0.25,
            ..FaultConfig::default()
        },
    );
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            client
                .call(&group_request(&format!("idem-{i}"), vec![]))
                .await
                .unwrap()
                .container_group_id,
        );
    }
    let stats = sim.simulator.with_state(|s| s.stats.clone());
    assert_eq!(stats.groups_created, 40);
    assert!(
        stats.idempotent_replays > 0,
        "some responses were lost and replayed"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
}

#[tokio::test]
async fn server_throttling_of_creates_is_absorbed_by_retries() {
    let mut config = SimConfig::fast();
    config.throttling.create_delete_burst = 5;
    config.throttling.create_delete_per_second = 50.0;
    config.throttling.retry_after_ms = Some(30);
    let sim = start(config).await;
    let mut client_config = client_config(&sim, SignatureVersion::V3);
    client_config.retry.max_attempts = 10;
    let client = EciClient::new(client_config).unwrap();
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..15 {
        let client = client.clone();
        creates.spawn(async move {
            client
                .call(&group_request(&format!("burst-{i}"), vec![]))
                .await
        });
    }
    while let Some(result) = creates.join_next().await {
        result.unwrap().unwrap();
    }
    let stats = sim
        .simulator
        .with_state(|s| s.stats.actions["CreateContainerGroup"].clone());
    assert!(
        stats.throttled > 0,
        "the burst exceeded the bucket: {stats:?}"
    );
}

#[tokio::test]
async fn timeouts_surface_as_typed_timeouts() {
    let sim = start(SimConfig::fast()).await;
    let mut config = client_config(&sim, SignatureVersion::V3);
    config.timeout = Duration::from_millis(200);
    config.retry.max_attempts = 2;
    let client = EciClient::new(config).unwrap();
    sim.simulator.set_faults(
        "DescribeContainerGroupStatus",
        FaultConfig {
            timeout_rate: 1.0,
            timeout_ms: 1_000,
            ..FaultConfig::default()
        },
    );
    let error = client
        .call(&DescribeContainerGroupStatusRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(error, EciError::Timeout { .. }), "{error:?}");
    assert!(error.is_retryable());
}

/// Actions with arbitrary parameters, to send what the typed requests never would.
macro_rules! raw_action {
    ($name:ident, $action:literal) => {
        #[derive(Serialize)]
        struct $name(BTreeMap<String, String>);
        impl_action!($name, $action, serde_json::Value);
        impl $name {
            fn of(pairs: &[(&str, &str)]) -> Self {
                Self(
                    pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            }
        }
    };
}

raw_action!(RawCreate, "CreateContainerGroup");
raw_action!(RawDescribe, "DescribeContainerGroups");
raw_action!(RawStatus, "DescribeContainerGroupStatus");
raw_action!(RawUnknown, "LaunchRockets");

#[tokio::test]
async fn bad_input_gets_the_real_error_codes() {
    let sim = start(SimConfig::fast()).await;
    let client = client(&sim, SignatureVersion::V3);
    let cases: Vec<(Result<serde_json::Value, EciError>, u16, &str)> = vec![
        (
            client
                .call(&RawCreate::of(&[
                    ("Container.1.Name", "a"),
                    ("Container.1.Image", "i"),
                ]))
                .await,
            400,
            "MissingParameter",
        ),
        (
            client
                .call(&RawCreate::of(&[("ContainerGroupName", "ok-name")]))
                .await,
            400,
            "MissingParameter",
        ),
        (
            client
                .call(&RawCreate::of(&[
                    ("ContainerGroupName", "Bad_Name"),
                    ("Container.1.Name", "a"),
                    ("Container.1.Image", "i"),
                ]))
                .await,
            400,
            "InvalidParameter",
        ),
        (
            client
                .call(&RawCreate::of(&[
                    ("ContainerGroupName", "ok"),
                    ("Container.0.Name", "a"),
                ]))
                .await,
            400,
            "InvalidParameter",
        ),
        (
            client
                .call(&RawCreate::of(&[
                    ("ContainerGroupName", "ok"),
                    ("Container.1.Name", "a"),
                    ("Container.1.Image", "i"),
                    ("Container.1.Cpu", "lots"),
                ]))
                .await,
            400,
            "InvalidParameter",
        ),
        (
            client
                .call(&RawCreate::of(&[
                    ("ContainerGroupName", "ok"),
                    ("Container.1.Name", "a"),
                    ("Container.1.Image", "i"),
                    ("RegionId", "cn-beijing"),
                ]))
                .await,
            400,
            "InvalidRegionId",
        ),
        (
            client
                .call(&RawDescribe::of(&[(
                    "ContainerGroupIds",
                    &format!(
                        "[{}]",
                        (0..21)
                            .map(|i| format!("\"eci-{i}\""))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                )]))
                .await,
            400,
            "InvalidParameter",
        ),
        (
            client
                .call(&RawDescribe::of(&[("ContainerGroupIds", "not json")]))
                .await,
            400,
            "InvalidParameter",
        ),
        (
            client.call(&RawDescribe::of(&[("Limit", "21")])).await,
            400,
            "InvalidParameter",
        ),
        (
            client
                .call(&RawDescribe::of(&[("Status", "Sleeping")]))
                .await,
            400,
            "InvalidParameter",
        ),
        (
            client.call(&RawStatus::of(&[("SinceSecond", "5")])).await,
            400,
            "InvalidParameter",
        ),
        (
            client.call(&RawUnknown::of(&[])).await,
            404,
            "InvalidAction.NotFound",
        ),
    ];
    for (index, (result, status, code)) in cases.into_iter().enumerate() {
        let error = result.expect_err(&format!("case {index} should fail"));
        assert_eq!(
            (error.http_status(), error.code()),
            (Some(status), Some(code)),
            "case {index}: {error}"
        );
    }
    let unsigned = reqwest::get(format!(
        "{}/?Action=DescribeContainerGroups",
        sim.endpoint()
    ))
    .await
    .unwrap();
    assert_eq!(unsigned.status(), 400);
    let body: ErrorBody = serde_json::from_str(&unsigned.text().await.unwrap()).unwrap();
    assert_eq!(body.code, "MissingSignature");
    assert!(!body.request_id.is_empty() && body.recommend.contains("MissingSignature"));
}

#[tokio::test]
async fn v1_without_format_answers_xml() {
    let sim = start(SimConfig::fast()).await;
    let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let params = [
        ("AccessKeyId", KEY_ID),
        ("Action", "DescribeContainerGroups"),
        ("RegionId", "cn-hangzhou"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "xml-nonce-1"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", timestamp.as_str()),
        ("Version", "2018-08-08"),
    ];
    let string_to_sign = eci_client::sign::v1_string_to_sign("GET", params.iter().copied());
    let signature = eci_client::sign::v1_signature(KEY_SECRET, &string_to_sign);
    let query = eci_client::sign::canonical_query(
        params
            .iter()
            .copied()
            .chain([("Signature", signature.as_str())]),
    );
    let response = reqwest::get(format!("{}/?{query}", sim.endpoint()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains("<DescribeContainerGroupsResponse>")
            && text.contains("<TotalCount>0</TotalCount>"),
        "{text}"
    );
}

#[tokio::test]
async fn spot_release_via_admin_api_warns_then_expires() {
    let mut config = SimConfig::fast();
    config.spot.default_lead_seconds = 0.5;
    let sim = start(config).await;
    let client = client(&sim, SignatureVersion::V3);
    let mut request = group_request("spot-1", vec![]);
    request.spot_strategy = Some("SpotAsPriceGo".into());
    request.container[0].cpu = Some(2.0);
    request.container[0].memory = Some(4.0);
    let id = client.call(&request).await.unwrap().container_group_id;
    wait_for_status(&client, &id, status::RUNNING).await;

    let answer = reqwest::Client::new()
        .post(format!("{}/_sim/spot-release", sim.endpoint()))
        .body(serde_json::json!({"container_group_ids": [id]}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["released"], serde_json::json!([id]));

    let events = client
        .call(&DescribeContainerGroupEventsRequest {
            filter: DescribeContainerGroupStatusRequest {
                container_group_ids: Some(eci_types::params::JsonList(vec![id.clone()])),
                ..DescribeContainerGroupStatusRequest::default()
            },
            event_source: None,
        })
        .await
        .unwrap();
    let notice = events.data[0]
        .events
        .iter()
        .find(|e| e.reason == "SpotToBeReleased")
        .unwrap();
    assert_eq!(notice.r#type, "Warning");
    assert!(notice.message.starts_with("Spot ECI will be released in "));

    let expired = wait_for_status(&client, &id, status::EXPIRED).await;
    assert!(!expired.expired_time.is_empty());
    let status = client
        .call(&DescribeContainerGroupStatusRequest {
            container_group_ids: Some(eci_types::params::JsonList(vec![id.clone()])),
            ..DescribeContainerGroupStatusRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(status.data[0].pod_status.phase, "Failed");
}

/// `POST /_sim/groups` makes groups the way a create does (validation, tags, timing), one
/// answer per request in order, and spends none of the create rate limit.
#[tokio::test]
async fn groups_made_through_the_admin_api_are_real_groups() {
    let sim = start(SimConfig::fast()).await;
    let client = client(&sim, SignatureVersion::V3);
    // The client adds RegionId to every call; a body posted here carries its own.
    let mut tagged = group_request("preloaded", vec![Tag::new("vk-eci.io/uid", "u-1")]);
    tagged.region_id = "cn-hangzhou".into();
    let mut invalid = group_request("too-small", vec![]);
    invalid.region_id = "cn-hangzhou".into();
    invalid.cpu = Some(0.1);
    invalid.memory = Some(0.1);
    let answer = reqwest::Client::new()
        .post(format!("{}/_sim/groups", sim.endpoint()))
        .body(serde_json::to_string(&[tagged, invalid]).unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer: Vec<eci_sim::CreatedGroup> = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer.len(), 2);
    let id = answer[0]
        .container_group_id
        .clone()
        .unwrap_or_else(|| panic!("{:?}", answer[0].error));
    assert_eq!(
        answer[1].error.as_deref(),
        Some("InvalidParameter.CPU.Memory: The specified cpu and memory are not allowed")
    );
    assert!(answer[1].container_group_id.is_none());

    let running = wait_for_status(&client, &id, status::RUNNING).await;
    assert_eq!(running.container_group_name, "preloaded");
    assert!(
        running
            .tags
            .iter()
            .any(|t| t.key == "vk-eci.io/uid" && t.value == "u-1")
    );
    let stats = reqwest::get(format!("{}/_sim/stats", sim.endpoint()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["groups_created"], 1);
    assert!(stats["actions"].get("CreateContainerGroup").is_none());

    let bad = reqwest::Client::new()
        .post(format!("{}/_sim/groups", sim.endpoint()))
        .body("{\"not\": \"a list\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn status_logs_exec_metrics_restart_and_update() {
    let sim = start(SimConfig::fast()).await;
    let client = client(&sim, SignatureVersion::V3);
    let id = client
        .call(&group_request("ops", vec![]))
        .await
        .unwrap()
        .container_group_id;
    wait_for_status(&client, &id, status::RUNNING).await;
    let one = || Some(eci_types::params::JsonList(vec![id.clone()]));

    let status_page = client
        .call(&DescribeContainerGroupStatusRequest {
            container_group_ids: one(),
            ..Default::default()
        })
        .await
        .unwrap();
    let pod = &status_page.data[0].pod_status;
    assert_eq!(pod.phase, "Running");
    assert!(
        pod.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    );
    assert!(pod.container_statuses[0].state.running.is_some());

    let logs = client
        .call(&DescribeContainerLogRequest {
            container_group_id: id.clone(),
            container_name: "app".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        logs.content.contains("started container app"),
        "{}",
        logs.content
    );

    let exec = client
        .call(&ExecContainerCommandRequest {
            container_group_id: id.clone(),
            container_name: "app".into(),
            command: eci_types::params::JsonList(vec!["echo".into(), "hi there".into()]),
            sync: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(exec.sync_response, "hi there\n");

    // The first sample is taken at the next sampling instant after the container started.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = client
            .call(&SimOnly(DescribeContainerGroupMetricRequest {
                container_group_id: id.clone(),
                ..Default::default()
            }))
            .await
            .unwrap();
        if !metrics.records.is_empty() {
            break metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "no metric sample");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(metrics.records[0].cpu.limit, 1000, "1 vCPU in millicores");

    client
        .call(&SimOnly(RestartContainerGroupRequest {
            container_group_id: id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let restarted = wait_for_status(&client, &id, status::RUNNING).await;
    assert_eq!(restarted.containers[0].restart_count, 1);

    client
        .call(&SimOnly(UpdateContainerGroupRequest {
            container_group_id: id.clone(),
            update_type: Some("IncrementalUpdate".into()),
            tag: vec![Tag::new("team", "spot")],
            ..Default::default()
        }))
        .await
        .unwrap();
    let updated = wait_for_status(&client, &id, status::RUNNING).await;
    assert!(
        updated
            .tags
            .iter()
            .any(|t| t.key == "team" && t.value == "spot")
    );

    let missing = client
        .call(&SimOnly(RestartContainerGroupRequest {
            container_group_id: "eci-doesnotexist000000".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
}

#[tokio::test]
async fn no_stock_is_typed_and_restoring_stock_lets_creates_through() {
    let mut config = SimConfig::fast();
    config.stock = vec![
        eci_sim::config::StockConfig {
            zone: "cn-hangzhou-h".into(),
            spec: None,
            count: 0,
        },
        eci_sim::config::StockConfig {
            zone: "cn-hangzhou-i".into(),
            spec: None,
            count: 0,
        },
    ];
    let sim = start(config).await;
    let client = client(&sim, SignatureVersion::V3);
    let error = client
        .call(&group_request("nostock", vec![]))
        .await
        .unwrap_err();
    assert!(error.is_no_stock() && !error.is_retryable(), "{error}");
    let response = reqwest::Client::new()
        .put(format!("{}/_sim/stock", sim.endpoint()))
        .body(r#"{"zone":"cn-hangzhou-i","count":null}"#)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let mut retry = group_request("nostock", vec![]);
    retry.client_token = Some("token-nostock-2".into());
    let id = client.call(&retry).await.unwrap().container_group_id;
    let running = wait_for_status(&client, &id, status::RUNNING).await;
    assert_eq!(running.zone_id, "cn-hangzhou-i");
}

#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(String, String, bool)>>);

impl eci_client::CallObserver for Recorder {
    fn observe(&self, action: &'static str, outcome: &str, _elapsed: Duration, rate_limited: bool) {
        self.0
            .lock()
            .unwrap()
            .push((action.to_string(), outcome.to_string(), rate_limited));
    }
}

#[tokio::test]
async fn an_observer_sees_every_call_with_its_outcome() {
    let sim = start(SimConfig::fast()).await;
    let recorder = std::sync::Arc::new(Recorder::default());
    let mut config = client_config(&sim, SignatureVersion::V3);
    config.retry.max_attempts = 1;
    let client = EciClient::with_observer(config, recorder.clone()).unwrap();
    client
        .call(&DescribeContainerGroupsRequest::default())
        .await
        .unwrap();
    client
        .call(&DeleteContainerGroupRequest {
            container_group_id: "eci-missing00000000000".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (
                "DescribeContainerGroups".to_string(),
                "Success".to_string(),
                false
            ),
            (
                "DeleteContainerGroup".to_string(),
                "InvalidParameter.NotFound".to_string(),
                false
            ),
        ]
    );
}

/// `PUT /_sim/timing` changes how long instances created afterwards take: a fleet started
/// fast, then real ECI's start times (here a fixed 1.5 s, so the test can tell).
#[tokio::test]
async fn timing_set_at_run_time_applies_to_the_next_instances() {
    let sim = start(SimConfig::fast()).await;
    let client = client(&sim, SignatureVersion::V1);
    let admin = reqwest::Client::new();
    let refused = admin
        .put(format!("{}/_sim/timing", sim.endpoint()))
        .body(r#"{"start_ms":{"min":5,"max":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let fast = client
        .call(&group_request("fast", vec![]))
        .await
        .unwrap()
        .container_group_id;
    let started = std::time::Instant::now();
    wait_for_status(&client, &fast, status::RUNNING).await;
    assert!(started.elapsed() < Duration::from_millis(1_000));

    let set = admin
        .put(format!("{}/_sim/timing", sim.endpoint()))
        .body(r#"{"schedule_ms":{"min":0,"max":0},"start_ms":{"min":1500,"max":1500}}"#)
        .send()
        .await
        .unwrap();
    assert!(set.status().is_success(), "{}", set.text().await.unwrap());
    let slow = client
        .call(&group_request("slow", vec![]))
        .await
        .unwrap()
        .container_group_id;
    let started = std::time::Instant::now();
    wait_for_status(&client, &slow, status::RUNNING).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
}
