//! The sandbox through the real kube-rs client: the API semantics vk-eci's controllers rely on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use kube_sandbox::{RunningSandbox, Sandbox};
use serde_json::json;

async fn start(sandbox: Sandbox) -> (RunningSandbox, Client) {
    let running = sandbox.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut config = Config::new(running.url().parse().unwrap());
    // kube retries 429 by default; a refused eviction must surface at once (as it must for
    // vk-eci's eviction controller, which schedules its own deadline-aware retries).
    config.default_retry = false;
    let client = Client::try_from(config).unwrap();
    (running, client)
}

/// The resourceVersion of a list of `api`: where a watch of it starts.
async fn listed_version<K>(api: &Api<K>) -> String
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
}

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn api_error(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_get_list_with_selectors_and_conflicts() {
    let (_sandbox, client) = start(Sandbox::new()).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = api
        .create(
            &PostParams::default(),
            &config_map("a", json!({"app": "web", "tier": "front"})),
        )
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    api.create(
        &PostParams::default(),
        &config_map("b", json!({"app": "api"})),
    )
    .await
    .unwrap();
    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let generated = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(generated.metadata.name.unwrap().starts_with("gen-"));

    let duplicate = api
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_error(duplicate), (409, "AlreadyExists".into()));
    let missing = api.get("nope").await.unwrap_err();
    assert_eq!(api_error(missing).0, 404);
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "no-such-namespace");
    assert_eq!(
        api_error(
            elsewhere
                .create(&PostParams::default(), &config_map("x", json!({})))
                .await
                .unwrap_err()
        )
        .0,
        404
    );

    let names = |list: kube::core::ObjectList<ConfigMap>| {
        list.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
        ),
        ["a"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app in (web,api),tier!=front"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let rest = api
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);

    let mut stale = created.clone();
    let mut fresh = api.get("a").await.unwrap();
    fresh.data = Some([("k".to_string(), "new".to_string())].into());
    api.replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    stale.data = Some([("k".to_string(), "stale".to_string())].into());
    assert_eq!(
        api_error(
            api.replace("a", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        )
        .0,
        409
    );
}

#[tokio::test]
async fn patches_of_every_kind_and_the_status_subresource() {
    let (_sandbox, client) = start(Sandbox::new()).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "nginx"}, {"name": "side", "image": "envoy"}]},
        "status": {"phase": "Running"},
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(
        created.status.unwrap().phase.as_deref(),
        Some("Pending"),
        "status is not taken on create"
    );

    api.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"extra": "1"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "p",
        &PatchParams::default(),
        &Patch::<()>::Json(
            serde_json::from_value(
                json!([{"op": "replace", "path": "/metadata/labels/app", "value": "api"}]),
            )
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    api.patch(
        "p",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"containers": [{"name": "side", "image": "envoy:2"}]}})),
    )
    .await
    .unwrap();
    let stale_uid = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"uid": "not-this-pod", "labels": {"x": "1"}}})),
        )
        .await;
    assert_eq!(
        api_error(stale_uid.unwrap_err()).0,
        409,
        "a UID in a patch is a precondition"
    );
    let pod = api.get("p").await.unwrap();
    let labels = pod.metadata.labels.unwrap();
    assert!(!labels.contains_key("x"));
    assert_eq!(
        (labels["app"].as_str(), labels["extra"].as_str()),
        ("api", "1")
    );
    let containers = pod.spec.unwrap().containers;
    assert_eq!(
        containers.len(),
        2,
        "strategic merge keeps the other container"
    );
    assert_eq!(containers[1].image.as_deref(), Some("envoy:2"));

    let status = json!({"status": {"phase": "Running", "podIP": "10.1.0.9", "conditions": [{"type": "Ready", "status": "True"}]}});
    api.patch_status("p", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    api.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed"}})),
    )
    .await
    .unwrap();
    let pod = api.get("p").await.unwrap();
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Running"),
        "the main resource cannot change status"
    );
    assert_eq!(pod.status.unwrap().pod_ip.as_deref(), Some("10.1.0.9"));

    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let apply = PatchParams::apply("vk-eci").force();
    cms.patch("applied", &apply, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1"}}))).await.unwrap();
    cms.patch("applied", &apply, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"b": "2"}}))).await.unwrap();
    let applied = cms.get("applied").await.unwrap();
    assert_eq!(applied.data.unwrap()["b"], "2");
    assert_eq!(
        applied.metadata.managed_fields.unwrap()[0]
            .manager
            .as_deref(),
        Some("vk-eci")
    );
}

#[tokio::test]
async fn graceful_pod_deletion_preconditions_and_owner_collection() {
    let (_sandbox, client) = start(Sandbox::new()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let bound: Pod = serde_json::from_value(json!({"metadata": {"name": "bound"}, "spec": {"nodeName": "virtual-kubelet", "terminationGracePeriodSeconds": 20, "containers": [{"name": "c", "image": "i"}]}})).unwrap();
    let bound = pods.create(&PostParams::default(), &bound).await.unwrap();
    pods.delete("bound", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = pods.get("bound").await.unwrap();
    assert!(
        terminating.metadata.deletion_timestamp.is_some(),
        "a bound pod waits for its node agent"
    );
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(20));
    let wrong_uid = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: Some("other".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(
        api_error(pods.delete("bound", &wrong_uid).await.unwrap_err()).0,
        409
    );
    let right_uid = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: bound.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    pods.delete("bound", &right_uid).await.unwrap();
    assert_eq!(api_error(pods.get("bound").await.unwrap_err()).0, 404);

    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let owner = cms
        .create(&PostParams::default(), &config_map("owner", json!({})))
        .await
        .unwrap();
    let owned: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owned", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap()}]}})).unwrap();
    cms.create(&PostParams::default(), &owned).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        api_error(cms.get("owned").await.unwrap_err()).0,
        404,
        "dependents are collected"
    );
}

#[tokio::test]
async fn watches_resume_from_a_resource_version_without_gaps() {
    let (_sandbox, client) = start(Sandbox::new()).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &config_map("before", json!({})))
        .await
        .unwrap();
    let rv = listed_version(&api).await;
    for name in ["one", "two"] {
        api.create(&PostParams::default(), &config_map(name, json!({})))
            .await
            .unwrap();
    }
    api.delete("one", &DeleteParams::default()).await.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(cm) => seen.push(format!("ADDED {}", cm.metadata.name.unwrap())),
            WatchEvent::Deleted(cm) => seen.push(format!("DELETED {}", cm.metadata.name.unwrap())),
            WatchEvent::Modified(cm) => {
                seen.push(format!("MODIFIED {}", cm.metadata.name.unwrap()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED one", "ADDED two", "DELETED one"]);
    api.create(&PostParams::default(), &config_map("live", json!({})))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Added(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("live")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn compacted_history_answers_410_and_a_fresh_watcher_sees_everything() {
    let (_sandbox, client) = start(Sandbox::with_history(3)).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &config_map("first", json!({})))
        .await
        .unwrap();
    let old = api
        .get("first")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &config_map(&format!("n{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &old)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(status) => assert_eq!(status.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    let objects: Vec<ConfigMap> = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .take(6)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        objects.len(),
        6,
        "a kube-runtime watcher lists and then watches"
    );
}

#[tokio::test]
async fn a_quiet_watch_is_bookmarked_at_the_current_version_and_resumes_from_it() {
    let (_sandbox, client) = start(Sandbox::with_history(3)).await;
    let quiet: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let busy: Api<Secret> = Api::namespaced(client.clone(), "default");
    quiet
        .create(&PostParams::default(), &config_map("only", json!({})))
        .await
        .unwrap();
    let listed = listed_version(&quiet).await;
    let mut stream = quiet
        .watch(&WatchParams::default().timeout(30), &listed)
        .await
        .unwrap()
        .boxed();
    // More changes of another type than the history holds: the ConfigMaps' last version is
    // compacted away while their watch has nothing to deliver.
    for i in 0..5 {
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": format!("s{i}")}})).unwrap();
        busy.create(&PostParams::default(), &secret).await.unwrap();
    }
    let latest = listed_version(&busy).await;
    let bookmarked = match tokio::time::timeout(Duration::from_secs(15), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Bookmark(bookmark) => bookmark.metadata.resource_version,
        other => panic!("expected a bookmark, got {other:?}"),
    };
    assert_eq!(bookmarked, latest);
    let mut resumed = quiet
        .watch(&WatchParams::default().timeout(5), &bookmarked)
        .await
        .unwrap()
        .boxed();
    quiet
        .create(&PostParams::default(), &config_map("later", json!({})))
        .await
        .unwrap();
    match resumed.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("later")),
        other => panic!("the resumed watch should see the next change, got {other:?}"),
    }
}

#[tokio::test]
async fn custom_resources_work_once_their_crd_exists() {
    let (_sandbox, client) = start(Sandbox::new()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crds/spotrotationpolicies.spot.vk-eci.io.yaml"
    ))
    .unwrap();
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = crds
        .get("spotrotationpolicies.spot.vk-eci.io")
        .await
        .unwrap();
    assert!(
        established
            .status
            .unwrap()
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("spot.vk-eci.io", "v1alpha1", "SpotRotationPolicy"),
        "spotrotationpolicies",
    );
    let policies: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
        "metadata": {"name": "web"}, "spec": {"targetRef": {"kind": "Deployment", "name": "web"}, "strategy": "Surge"},
        "status": {"active": 9},
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let stored = policies.get("web").await.unwrap();
    assert!(
        stored.data.get("status").is_none(),
        "status comes only through the status subresource"
    );
    assert_eq!(
        stored.data["spec"]["onDeadline"], "Delete",
        "schema defaults are applied"
    );
    let invalid: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
        "metadata": {"name": "bad"}, "spec": {"strategy": "Yolo", "targetRef": {"kind": "Deployment", "name": "web"}},
    }))
    .unwrap();
    let (code, _) = api_error(
        policies
            .create(&PostParams::default(), &invalid)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    policies
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": 1, "completed": 4}})),
        )
        .await
        .unwrap();

    let request = get_table(
        &client,
        "/apis/spot.vk-eci.io/v1alpha1/namespaces/default/spotrotationpolicies",
    )
    .await;
    assert_eq!(request["kind"], "Table");
    let columns: Vec<&str> = request["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Strategy",
            "Target",
            "Active",
            "Completed",
            "Degraded",
            "Failed",
            "Last",
            "Age"
        ]
    );
    let cells = &request["rows"][0]["cells"];
    assert_eq!(
        (
            cells[0].as_str(),
            cells[1].as_str(),
            cells[2].as_str(),
            cells[3].as_i64()
        ),
        (Some("web"), Some("Surge"), Some("web"), Some(1))
    );
    assert!(
        cells[8].as_str().unwrap().ends_with('s'),
        "ages are rendered: {}",
        cells[8]
    );
}

async fn get_table(client: &Client, path: &str) -> serde_json::Value {
    let request = http::Request::get(path)
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap()
}

#[tokio::test]
async fn a_table_list_in_chunks_carries_the_continue_token() {
    let (_sandbox, client) = start(Sandbox::new()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..5 {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": format!("p{i}")}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let mut names = Vec::new();
    let mut path = "/api/v1/namespaces/default/pods?limit=2".to_string();
    for _chunk in 0..5 {
        let table = get_table(&client, &path).await;
        names.extend(
            table["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row["cells"][0].as_str().unwrap().to_string()),
        );
        match table["metadata"]["continue"].as_str() {
            Some(next) => path = format!("/api/v1/namespaces/default/pods?limit=2&continue={next}"),
            None => break,
        }
    }
    assert_eq!(
        names,
        ["p0", "p1", "p2", "p3", "p4"],
        "kubectl get sees every pod"
    );
}

#[tokio::test]
async fn pods_are_watched_by_node_name() {
    let (_sandbox, client) = start(Sandbox::new()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let create = |name: &'static str, node: &'static str| {
        let pods = pods.clone();
        async move {
            let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})).unwrap();
            pods.create(&PostParams::default(), &pod).await.unwrap();
        }
    };
    // Other nodes' pods sort first, so only a working field selector yields ours first.
    create("a-theirs", "worker-1").await;
    create("mine", "virtual-kubelet").await;
    let all: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields("spec.nodeName=virtual-kubelet");
    let mut seen = watcher(all, config).applied_objects().boxed();
    let first = seen.try_next().await.unwrap().unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("mine"));
    create("b-theirs", "worker-1").await;
    create("z-mine", "virtual-kubelet").await;
    let next = tokio::time::timeout(Duration::from_secs(5), seen.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next.metadata.name.as_deref(),
        Some("z-mine"),
        "live events are filtered too"
    );
}

#[tokio::test]
async fn evictions_honour_disruption_budgets() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::EvictParams;

    let (_sandbox, client) = start(Sandbox::new()).await;
    let replica_sets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apps", "v1", "ReplicaSet"),
            "replicasets",
        ),
    );
    let rs: DynamicObject = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
    .unwrap();
    let rs = replica_sets
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ready_pod = |name: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": rs.metadata.uid, "controller": true}]},
            "spec": {"nodeName": "virtual-kubelet", "containers": [{"name": "c", "image": "i"}]}}))
        .unwrap()
    };
    let ready = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
    for name in ["a", "b", "c"] {
        pods.create(&PostParams::default(), &ready_pod(name))
            .await
            .unwrap();
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&ready))
            .await
            .unwrap();
    }
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}})).unwrap();
    budgets.create(&PostParams::default(), &pdb).await.unwrap();
    let status = budgets.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        (
            status.current_healthy,
            status.desired_healthy,
            status.disruptions_allowed,
            status.expected_pods
        ),
        (3, 2, 1, 3)
    );

    pods.evict("a", &EvictParams::default()).await.unwrap();
    assert!(
        pods.get("a")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some(),
        "eviction deletes gracefully"
    );
    assert_eq!(
        budgets
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap()
            .disruptions_allowed,
        0
    );
    let refused = pods.evict("b", &EvictParams::default()).await.unwrap_err();
    match refused {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 429);
            assert!(
                status.message.starts_with(
                    "Cannot evict pod as it would violate the pod's disruption budget."
                ),
                "{}",
                status.message
            );
        }
        other => panic!("expected 429, got {other:?}"),
    }

    pods.delete(
        "a",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &ready_pod("d"))
        .await
        .unwrap();
    pods.patch_status("d", &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .unwrap();
    // kube 5's Api::evict sends its options as `delete_options`, which API servers ignore, so
    // a UID precondition has to be posted as the Eviction body itself.
    let eviction = |uid: &str| {
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "b"},
            "deleteOptions": {"preconditions": {"uid": uid}}})
    };
    let wrong = pods
        .create_subresource::<_, serde_json::Value>(
            "eviction",
            "b",
            &PostParams::default(),
            &eviction("not-b"),
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(wrong).0, 409);
    let uid = pods.get("b").await.unwrap().metadata.uid.unwrap();
    pods.create_subresource::<_, serde_json::Value>(
        "eviction",
        "b",
        &PostParams::default(),
        &eviction(&uid),
    )
    .await
    .unwrap();
    assert!(
        pods.get("b")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
}

async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn deployments_schedule_pods_and_scale_down_the_cheapest() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Node;

    let (_sandbox, client) = start(Sandbox::new()).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "virtual-kubelet", "labels": {"type": "virtual-kubelet"}},
        "spec": {"taints": [{"key": "virtual-kubelet.io/provider", "value": "alibabacloud", "effect": "NoSchedule"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment =
        serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {
        "replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "nodeSelector": {"type": "virtual-kubelet"},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "nginx"}]}}}}))
        .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let bound = wait_for("three bound pods", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let bound: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("virtual-kubelet")
                })
                .collect();
            (bound.len() == 3).then_some(bound)
        }
    })
    .await;
    let cheapest = bound[1].metadata.name.clone().unwrap();
    pods.patch(&cheapest, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-1000"}}})))
        .await
        .unwrap();

    let unscheduled: Pod = serde_json::from_value(json!({"metadata": {"name": "stray"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap();
    pods.create(&PostParams::default(), &unscheduled)
        .await
        .unwrap();

    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    let leaving = wait_for("one pod to be deleted", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let leaving: Vec<String> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_some())
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            (!leaving.is_empty()).then_some(leaving)
        }
    })
    .await;
    assert_eq!(
        leaving,
        [cheapest],
        "the pod with the lowest deletion cost goes first"
    );

    let stray = wait_for("the stray pod to be marked unschedulable", || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("stray").await.ok()?;
            let condition = pod
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled")?;
            (condition.status == "False").then_some(condition)
        }
    })
    .await;
    assert_eq!(stray.reason.as_deref(), Some("Unschedulable"));
    assert!(stray.message.unwrap().contains("untolerated taint"));
}

#[tokio::test]
async fn secrets_fold_string_data_tokens_are_issued_and_requests_are_audited() {
    let (sandbox, client) = start(Sandbox::new()).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    let secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}))
            .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let stored = secrets.get("s").await.unwrap();
    assert_eq!(stored.data.unwrap()["k"].0, b"v".to_vec());
    assert!(stored.string_data.is_none(), "stringData is write-only");

    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "default");
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))
            .unwrap();
    let missing = accounts
        .create_token_request("app", &PostParams::default(), &request)
        .await;
    assert_eq!(api_error(missing.unwrap_err()).0, 404);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap(),
        )
        .await
        .unwrap();
    let issued = accounts
        .create_token_request("app", &PostParams::default(), &request)
        .await
        .unwrap();
    assert!(!issued.status.unwrap().token.is_empty());

    let audited = sandbox.sandbox.accesses();
    assert!(audited.iter().any(|a| a.verb == "create"
        && a.resource == "serviceaccounts/token"
        && a.namespace.as_deref() == Some("default")));
    assert!(
        audited
            .iter()
            .any(|a| a.verb == "get" && a.resource == "secrets")
    );
}

#[tokio::test]
async fn a_client_accepting_only_protobuf_is_refused_with_406() {
    let (running, _client) = start(Sandbox::new()).await;
    let http = reqwest::Client::new();
    let get = |accept: &'static str| {
        http.get(format!("{}/api/v1/namespaces", running.url()))
            .header("accept", accept)
            .send()
    };
    let refused = get("application/vnd.kubernetes.protobuf").await.unwrap();
    assert_eq!(refused.status(), 406);
    let status: serde_json::Value =
        serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert_eq!(status["reason"], "NotAcceptable");
    let answered = get("application/vnd.kubernetes.protobuf, application/json")
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let list: serde_json::Value = serde_json::from_slice(&answered.bytes().await.unwrap()).unwrap();
    assert_eq!(list["kind"], "NamespaceList");
}
