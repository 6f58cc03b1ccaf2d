//! A Kubernetes API sandbox, an ECI simulator and the operator, all in-process, talking
//! through the real clients.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use eci_client::{Credentials, EciClientConfig};
use eci_sim::{RunningSimulator, SimConfig, Simulator};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Config};
use kube_sandbox::{RunningSandbox, Sandbox};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vk_eci::runtime::leader::Timing;
use vk_eci::runtime::operator::Operator;
use vk_eci_core::settings::{RawSettings, Settings};

pub const NODE: &str = "virtual-kubelet";
pub const CLUSTER: &str = "c-test";
/// The operators' full status pass: short, so the checks it makes show within a test.
pub const FULL_SYNC_EVERY: Duration = Duration::from_secs(2);

pub struct World {
    pub sandbox: RunningSandbox,
    pub sim: RunningSimulator,
    pub client: Client,
}

/// A simulated group as tests look at it: id, status and tags.
pub type SimGroup = (String, String, Vec<(String, String)>);

pub struct RunningOperator {
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), vk_eci::runtime::operator::OperatorError>>,
    pub admin: SocketAddr,
}

impl RunningOperator {
    /// Asks the operator to shut down and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn settings() -> Settings {
    RawSettings {
        cluster_id: Some(CLUSTER.into()),
        region: Some("cn-hangzhou".into()),
        simulator: true,
        ..RawSettings::default()
    }
    .validate()
    .unwrap()
}

pub async fn client(sandbox: &RunningSandbox) -> Client {
    let mut config = Config::new(sandbox.url().parse().unwrap());
    config.default_retry = false;
    Client::try_from(config).unwrap()
}

impl World {
    pub async fn new() -> Self {
        Self::with_sim(SimConfig::fast()).await
    }

    pub async fn with_sim(config: SimConfig) -> Self {
        eci_client::install_crypto_provider();
        // RUST_LOG=vk_eci=debug shows the operator's log in failing tests.
        let _already_set = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let sandbox = Sandbox::new()
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let sim = Simulator::new(config, Vec::new())
            .unwrap()
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let client = client(&sandbox).await;
        install_crds(&client).await;
        Self {
            sandbox,
            sim,
            client,
        }
    }

    pub fn eci_config(&self, secret: &str) -> EciClientConfig {
        let mut config = EciClientConfig::new(
            "cn-hangzhou",
            Credentials::new(eci_sim::DEFAULT_ACCESS_KEY_ID, secret),
        );
        config.endpoint = Some(self.sim.endpoint());
        config
    }

    /// Starts an operator replica named `identity`.
    pub async fn operator(&self, identity: &str) -> RunningOperator {
        self.operator_with(identity, eci_sim::DEFAULT_ACCESS_KEY_SECRET)
            .await
    }

    /// Starts an operator replica whose leader Lease lives in `namespace`.
    pub async fn operator_in(&self, identity: &str, namespace: &str) -> RunningOperator {
        self.start_operator(
            identity,
            eci_sim::DEFAULT_ACCESS_KEY_SECRET,
            namespace,
            false,
        )
        .await
    }

    /// [`Self::operator_in`], serving the admission webhook too (self-signed, on a free port).
    pub async fn operator_with_webhook(&self, identity: &str, namespace: &str) -> RunningOperator {
        self.start_operator(
            identity,
            eci_sim::DEFAULT_ACCESS_KEY_SECRET,
            namespace,
            true,
        )
        .await
    }

    pub async fn operator_with(&self, identity: &str, secret: &str) -> RunningOperator {
        self.start_operator(identity, secret, "kube-system", false)
            .await
    }

    async fn start_operator(
        &self,
        identity: &str,
        secret: &str,
        namespace: &str,
        webhook: bool,
    ) -> RunningOperator {
        let admin = free_port();
        let webhook = webhook.then(|| vk_eci::webhook::WebhookServing {
            listen: free_port(),
            cert: vk_eci::tls::ServingCert::self_signed(&["127.0.0.1".into()]).unwrap(),
        });
        let operator = Operator {
            client: vk_eci::runtime::operator::kube_client(Config::new(
                self.sandbox.url().parse().unwrap(),
            ))
            .unwrap(),
            eci: self.eci_config(secret),
            settings: settings(),
            identity: identity.into(),
            lease_namespace: namespace.into(),
            admin: Some(admin),
            kubelet: None,
            leader_timing: Timing {
                lease_duration: Duration::from_secs(3),
                renew_deadline: Duration::from_secs(2),
                retry_period: Duration::from_millis(500),
            },
            full_sync_every: FULL_SYNC_EVERY,
            webhook,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(operator.run(async move {
            let _ = stopped.await;
        }));
        RunningOperator {
            stop: Some(stop),
            task,
            admin,
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a pod bound to the virtual node.
    pub async fn create_pod(&self, name: &str, annotations: serde_json::Value) -> Pod {
        self.create_pod_from(json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "nodeName": NODE,
                "containers": [{"name": "app", "image": "nginx:1.27",
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}],
            },
        }))
        .await
    }

    pub async fn create_pod_from(&self, pod: serde_json::Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap()
    }

    /// Waits (watching, not polling) until the pod meets `condition`.
    pub async fn pod_until(&self, name: &str, what: &str, condition: impl Condition<Pod>) -> Pod {
        let waited = tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(self.pods(), name, condition),
        )
        .await;
        match waited {
            Ok(Ok(Some(pod))) => pod,
            Ok(Ok(None)) => panic!("pod {name} is gone while waiting until {what}"),
            Ok(Err(error)) => panic!("watching pod {name}: {error}"),
            Err(_) => {
                let pod = self.pods().get_opt(name).await.unwrap();
                panic!("pod {name} not {what} within 30 s; last seen: {pod:#?}")
            }
        }
    }

    /// Waits until the pod with `uid` is gone from the API.
    pub async fn pod_gone(&self, name: &str, uid: &str) {
        let waited = tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(
                self.pods(),
                name,
                kube::runtime::wait::conditions::is_deleted(uid),
            ),
        )
        .await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "pod {name} not deleted within 30 s"
        );
    }

    /// Groups the simulator holds.
    pub fn groups(&self) -> Vec<SimGroup> {
        self.sim.simulator.with_state(|sim| {
            sim.groups()
                .map(|g| {
                    (
                        g.id.clone(),
                        g.status.to_string(),
                        g.spec
                            .tag
                            .iter()
                            .map(|t| (t.key.clone(), t.value.clone()))
                            .collect(),
                    )
                })
                .collect()
        })
    }
}

/// Applies `crds/` (what `vk-eci crd` generates) to the sandbox.
pub async fn install_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let crd: CustomResourceDefinition =
                serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            api.create(&PostParams::default(), &crd).await.unwrap();
        }
    }
}

/// Polls `probe` until it returns `Some` (state that no watch can announce, such as the
/// simulator's), failing after 30 s with `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port nothing listens on, for a server the operator binds itself a moment later. Taken
/// below the ephemeral range (32768–60999 on Linux), where an outgoing connection of another
/// test could otherwise take it in between (CI saw "Address already in use"); each port is
/// handed out once per process.
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const PORTS: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % PORTS;
    loop {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % PORTS;
        let port = u16::try_from(FIRST + offset).unwrap();
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
}

pub fn condition<'a>(
    pod: &'a Pod,
    kind: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

pub fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

pub fn is_ready(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| condition(p, "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Events about `pod`: the mirrored ECI ones (core/v1) and vk-eci's own (events.k8s.io/v1;
/// one store on a real API server, two in the sandbox).
pub async fn events_of(world: &World, pod: &str) -> Vec<(String, String)> {
    let core: Api<Event> = Api::all(world.client.clone());
    let modern: Api<k8s_openapi::api::events::v1::Event> = Api::all(world.client.clone());
    let mirrored = core
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()));
    let own = modern
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()));
    mirrored.chain(own).collect()
}

pub async fn wait_for_event(world: &World, pod: &str, reason: &str) {
    eventually(&format!("a {reason} event on {pod}"), || async {
        events_of(world, pod)
            .await
            .iter()
            .any(|(r, _)| r == reason)
            .then_some(())
    })
    .await;
}

/// A sample's value on the operator's `/metrics` (the first line that starts with `series`).
pub async fn metric(operator: &RunningOperator, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", operator.admin))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}
