//! Fault injection through the real kube-rs client, the HTTP endpoints and the command line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Client, Config};
use kube_sandbox::{Effect, Fault, FaultId, RunningSandbox, Sandbox};
use serde_json::{Value, json};

async fn start() -> (RunningSandbox, Client) {
    let running = Sandbox::new()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = client(&running, None);
    (running, client)
}

/// A client that surfaces every error at once (kube retries 429/503/504 by default).
fn client(running: &RunningSandbox, read_timeout: Option<Duration>) -> Client {
    let mut config = Config::new(running.url().parse().unwrap());
    config.default_retry = false;
    config.read_timeout = read_timeout;
    Client::try_from(config).unwrap()
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"faults": "test"}}, "data": {"k": "v"}}),
    )
    .unwrap()
}

async fn with_config_maps(client: &Client, names: &[&str]) -> Api<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for name in names {
        api.create(&PostParams::default(), &config_map(name))
            .await
            .unwrap();
    }
    api
}

fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn labelled() -> ListParams {
    ListParams::default().labels("faults=test")
}

#[tokio::test]
async fn a_delayed_list_takes_the_delay_and_still_returns_the_objects() {
    let (running, client) = start().await;
    let api = with_config_maps(&client, &["a", "b", "c"]).await;
    let delay = Duration::from_millis(800);
    let id = running
        .sandbox
        .faults()
        .inject(Fault::on("list", "configmaps").delay(delay));

    let started = Instant::now();
    let listed = api.list(&labelled()).await.unwrap();
    assert!(started.elapsed() >= delay, "took {:?}", started.elapsed());
    let mut names: Vec<String> = listed
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);

    api.get("a").await.unwrap();
    Api::<Lease>::namespaced(client, "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        running.sandbox.faults().fired(id),
        1,
        "a get and another resource's list are not this fault's"
    );
}

#[tokio::test]
async fn injected_errors_reach_the_client_with_their_code_and_reason_and_write_nothing() {
    let (running, client) = start().await;
    let api = with_config_maps(&client, &["a"]).await;
    let faults = running.sandbox.faults();

    faults.inject(Fault::on("create", "configmaps").error(429));
    assert_eq!(
        api_error(api.create(&PostParams::default(), &config_map("b")).await),
        (429, "TooManyRequests".into())
    );
    faults.clear();
    assert_eq!(
        api_error(api.get("b").await).0,
        404,
        "the create was refused"
    );

    faults.inject(Fault::on("patch", "configmaps").error(500));
    let patch = Patch::Merge(json!({"data": {"k": "patched"}}));
    assert_eq!(
        api_error(api.patch("a", &PatchParams::default(), &patch).await),
        (500, "InternalError".into())
    );
    faults.clear();

    faults.inject(Fault::on("update", "configmaps").error(409));
    let mut changed = api.get("a").await.unwrap();
    changed.data = Some([("k".to_string(), "replaced".to_string())].into());
    assert_eq!(
        api_error(api.replace("a", &PostParams::default(), &changed).await),
        (409, "Conflict".into())
    );
    faults.clear();
    assert_eq!(
        api.get("a").await.unwrap().data.unwrap()["k"],
        "v",
        "neither the patch nor the update was applied"
    );

    for (code, reason) in [(503, "ServiceUnavailable"), (504, "Timeout"), (418, "")] {
        let id = faults.inject(Fault::on("get", "configmaps").error(code));
        assert_eq!(api_error(api.get("a").await), (code, reason.to_string()));
        faults.remove(id);
    }
}

#[tokio::test]
async fn a_429_carries_retry_after_and_a_real_status_body() {
    let (running, _client) = start().await;
    running
        .sandbox
        .faults()
        .inject(Fault::on("list", "pods").error(429));
    let response = http()
        .get(format!("{}/api/v1/namespaces/default/pods", running.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let status: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["code"], 429);
    assert_eq!(status["details"]["retryAfterSeconds"], 1);
    assert!(status["message"].as_str().unwrap().contains("fault 1"));
}

#[tokio::test]
async fn times_probability_namespace_and_name_limit_what_a_fault_hits() {
    let (running, client) = start().await;
    let api = with_config_maps(&client, &["a", "b"]).await;
    let faults = running.sandbox.faults();

    let twice = faults.inject(Fault::on("get", "configmaps").error(500).times(2));
    assert_eq!(api_error(api.get("a").await).0, 500);
    assert_eq!(api_error(api.get("a").await).0, 500);
    api.get("a").await.unwrap();
    api.get("a").await.unwrap();
    assert_eq!(faults.fired(twice), 2);
    faults.clear();

    let never = faults.inject(Fault::on("get", "configmaps").error(500).probability(0.0));
    for _ in 0..5 {
        api.get("a").await.unwrap();
    }
    assert_eq!(faults.fired(never), 0);
    faults.clear();

    let always = faults.inject(Fault::on("get", "configmaps").error(500).probability(1.0));
    for _ in 0..5 {
        assert_eq!(api_error(api.get("a").await).0, 500);
    }
    assert_eq!(faults.fired(always), 5);
    faults.clear();

    let named = faults.inject(Fault::resource("configmaps").name("b").error(503));
    api.get("a").await.unwrap();
    api.list(&labelled()).await.unwrap();
    assert_eq!(api_error(api.get("b").await).0, 503);
    assert_eq!(faults.fired(named), 1);
    faults.clear();

    let elsewhere = faults.inject(Fault::any().namespace("kube-system").error(503));
    api.get("a").await.unwrap();
    let system: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    assert_eq!(api_error(system.list(&ListParams::default()).await).0, 503);
    assert_eq!(faults.fired(elsewhere), 1);
}

async fn fired_reaches(running: &RunningSandbox, id: FaultId, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.sandbox.faults().fired(id) < count {
        assert!(
            Instant::now() < deadline,
            "fault {id} never fired {count} times"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_hang_times_out_a_client_while_other_requests_are_served() {
    let (running, client) = start().await;
    let api = with_config_maps(&client, &["a"]).await;
    let id = running
        .sandbox
        .faults()
        .inject(Fault::on("get", "leases").hang());

    let impatient = client_with_timeout(&running);
    let hung = tokio::spawn(async move {
        let leases: Api<Lease> = Api::namespaced(impatient, "kube-node-lease");
        tokio::time::timeout(Duration::from_secs(30), leases.get("node")).await
    });
    fired_reaches(&running, id, 1).await;
    assert_eq!(api.list(&labelled()).await.unwrap().items.len(), 1);
    Api::<Lease>::namespaced(client.clone(), "kube-node-lease")
        .list(&ListParams::default())
        .await
        .unwrap();

    let answer = hung
        .await
        .unwrap()
        .expect("the client's read timeout fired first");
    match answer {
        Err(kube::Error::Api(status)) => panic!("the hung request was answered: {status:?}"),
        Err(_timed_out) => {}
        Ok(lease) => panic!("the hung request was answered: {lease:?}"),
    }

    running.sandbox.faults().remove(id);
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    assert_eq!(api_error(leases.get("node").await).0, 404, "served again");
}

fn client_with_timeout(running: &RunningSandbox) -> Client {
    client(running, Some(Duration::from_millis(500)))
}

#[tokio::test]
async fn a_dropped_watch_breaks_the_connection_after_its_time() {
    let (running, client) = start().await;
    let api = with_config_maps(&client, &["a"]).await;
    let after = Duration::from_millis(300);
    running
        .sandbox
        .faults()
        .inject(Fault::on("watch", "configmaps").drop_watch_after(after));

    // The wire: events, then a body that breaks off instead of ending.
    let started = Instant::now();
    let mut response = http()
        .get(format!(
            "{}/api/v1/namespaces/default/configmaps?watch=true",
            running.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut received = String::new();
    let ending = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => break None,
            Err(error) => break Some(error),
        }
    };
    assert!(started.elapsed() >= after);
    assert!(received.contains(r#""type":"ADDED""#), "{received}");
    assert!(
        ending.is_some(),
        "the body breaks off rather than ending cleanly"
    );

    // kube-rs reads a broken-off watch as one to resume: the stream just ends.
    let events: Vec<Result<WatchEvent<ConfigMap>, kube::Error>> = api
        .watch(&WatchParams::default().labels("faults=test"), "0")
        .await
        .unwrap()
        .collect()
        .await;
    assert!(
        matches!(events.as_slice(), [Ok(WatchEvent::Added(c))] if c.metadata.name.as_deref() == Some("a")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_watcher_recovers_from_a_dropped_watch_and_sees_later_changes() {
    let (running, client) = start().await;
    let api = with_config_maps(&client, &["a"]).await;
    let faults = running.sandbox.faults();
    let watches = faults.inject(Fault::on("watch", "configmaps").delay(Duration::ZERO));
    let dropped = faults.inject(
        Fault::on("watch", "configmaps")
            .drop_watch_after(Duration::from_millis(300))
            .times(1),
    );

    // Once the watcher has watched again (after the drop), a change it must still see.
    let creator = {
        let (running_faults, api) = (faults.clone(), api.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while running_faults.fired(watches) < 2 {
                assert!(Instant::now() < deadline, "the watcher never watched again");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            api.create(&PostParams::default(), &config_map("later"))
                .await
                .unwrap();
        })
    };
    let mut stream = watcher(api, watcher::Config::default().labels("faults=test")).boxed();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(15), stream.next())
            .await
            .expect("the watcher never saw the later change")
            .expect("a watcher never ends");
        if let Ok(watcher::Event::Apply(c)) = event
            && c.metadata.name.as_deref() == Some("later")
        {
            break;
        }
    }
    creator.await.unwrap();
    assert_eq!(faults.fired(dropped), 1);
    assert_eq!(faults.fired(watches), 2, "one watch dropped, one resumed");
}

#[tokio::test]
async fn removing_or_clearing_faults_restores_service_and_non_resource_paths_are_never_faulted() {
    let (running, client) = start().await;
    let api = with_config_maps(&client, &["a"]).await;
    let faults = running.sandbox.faults();

    let everything = faults.inject(Fault::any().error(503));
    assert_eq!(api_error(api.get("a").await).0, 503);
    client.apiserver_version().await.unwrap();
    for path in ["/healthz", "/api", "/apis", "/api/v1", "/_sandbox/faults"] {
        let response = http()
            .get(format!("{}{path}", running.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    assert!(faults.remove(everything));
    assert!(!faults.remove(everything));
    api.get("a").await.unwrap();

    faults.inject(Fault::verb("get").error(500));
    faults.inject(Fault::verb("list").hang());
    assert_eq!(faults.list().len(), 2);
    faults.clear();
    assert!(faults.list().is_empty());
    api.get("a").await.unwrap();
    api.list(&labelled()).await.unwrap();
}

fn http() -> reqwest::Client {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    let text = response.text().await.unwrap();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_http_endpoints_add_list_and_remove_faults() {
    let (running, client) = start().await;
    let api = with_config_maps(&client, &["a"]).await;
    let http = http();
    let endpoint = format!("{}/_sandbox/faults", running.url());
    let post = |body: &str| {
        http.post(&endpoint)
            .header("content-type", "application/json")
            .body(body.to_string())
    };

    let mut ids = Vec::new();
    for body in [
        r#"{"verb":"list","resource":"pods","delay_ms":3000}"#,
        r#"{"error":429,"probability":0.2}"#,
        r#"{"hang":true,"resource":"leases"}"#,
        r#"{"drop_watch_after_ms":500,"resource":"pods"}"#,
        r#"{"verb":"get","resource":"configmaps","namespace":"default","name":"a","error":500,"times":1}"#,
    ] {
        let (code, answer) = send(post(body)).await;
        assert_eq!(code, 201, "{body}: {answer}");
        ids.push(answer["id"].as_u64().unwrap());
    }
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    let listed = running.sandbox.faults().list();
    assert_eq!(
        listed[2].fault.effect,
        Effect::Hang,
        "the JSON became the fault"
    );
    assert_eq!(listed[4].fault.matches.name.as_deref(), Some("a"));

    running.sandbox.faults().remove(FaultId(2));
    assert_eq!(api_error(api.get("a").await).0, 500);
    let (code, listing) = send(http.get(&endpoint)).await;
    assert_eq!(code, 200);
    let last = &listing["faults"][3];
    assert_eq!(
        (
            &last["id"],
            &last["fired"],
            &last["error"],
            &last["name"],
            &last["times"]
        ),
        (&json!(5), &json!(1), &json!(500), &json!("a"), &json!(1)),
        "{listing}"
    );
    assert_eq!(listing["faults"][0]["delay_ms"], 3000);

    for (body, says) in [
        ("{", "not a fault"),
        (r#"{"verb":"list"}"#, "no effect"),
        (r#"{"error":429,"hang":true}"#, "one effect per fault"),
        (r#"{"error":500,"verbs":"get"}"#, "unknown field"),
    ] {
        let (code, status) = send(post(body)).await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(status["reason"], "BadRequest");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }

    assert_eq!(send(http.delete(format!("{endpoint}/1"))).await.0, 204);
    let (code, status) = send(http.delete(format!("{endpoint}/1"))).await;
    assert_eq!(
        (code, status["message"].as_str()),
        (404, Some("no fault 1"))
    );
    assert_eq!(send(http.delete(format!("{endpoint}/one"))).await.0, 400);
    assert_eq!(send(http.delete(&endpoint)).await.0, 204);
    assert_eq!(send(http.get(&endpoint)).await.1, json!({"faults": []}));
}

/// Runs the built `kube-sandbox` to completion off the runtime's threads.
async fn kube_sandbox(args: &[impl AsRef<str>]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kube-sandbox"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test]
async fn the_command_line_drives_a_running_sandbox() {
    let (running, client) = start().await;
    let api = with_config_maps(&client, &["a"]).await;
    let url = running.url();
    let faults = |rest: &[&str]| -> Vec<String> {
        ["faults", "--server", url.as_str()]
            .iter()
            .chain(rest)
            .map(|a| a.to_string())
            .collect()
    };

    let added = kube_sandbox(&faults(&[
        "add",
        "--verb",
        "get",
        "--resource",
        "configmaps",
        "--name",
        "a",
        "--error",
        "409",
    ]))
    .await;
    assert_eq!(stdout(&added), "1");
    assert_eq!(api_error(api.get("a").await), (409, "Conflict".into()));

    let listed = stdout(&kube_sandbox(&faults(&["list"])).await);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["fired"], 1, "{listed}");
    assert_eq!(listed[0]["verb"], "get");

    stdout(&kube_sandbox(&faults(&["remove", "1"])).await);
    api.get("a").await.unwrap();

    let delayed = kube_sandbox(&faults(&[
        "add",
        "--verb",
        "list",
        "--resource",
        "pods",
        "--delay-ms",
        "3000",
    ]))
    .await;
    assert_eq!(stdout(&delayed), "2");
    assert_eq!(
        running.sandbox.faults().list()[0].fault,
        Fault::on("list", "pods").delay(Duration::from_secs(3))
    );
    stdout(&kube_sandbox(&faults(&["clear"])).await);
    assert!(running.sandbox.faults().list().is_empty());

    let missing = kube_sandbox(&faults(&["remove", "7"])).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no fault 7"));
    let refused = kube_sandbox(&faults(&["add", "--error", "200"])).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("400-599"));
}

#[tokio::test]
async fn faults_given_at_start_apply_from_the_first_request() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_kube-sandbox"))
        .args([
            "--listen",
            &listen,
            "--fault",
            r#"{"verb":"get","resource":"namespaces","error":503}"#,
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{listen}");
    let http = http();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "kube-sandbox never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = Client::try_from({
        let mut config = Config::new(url.parse().unwrap());
        config.default_retry = false;
        config
    })
    .unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    let refused = namespaces.get("default").await;
    namespaces.list(&ListParams::default()).await.unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(api_error(refused), (503, "ServiceUnavailable".into()));
}
