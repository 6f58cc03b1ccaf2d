//! The whole product on one machine, as separate processes: the sandbox (in this process),
//! `vk-eci sim` and one or more `vk-eci run` replicas, wired together the way a user would.
//! The quick start and the whole-binary scenarios use it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use kube::{Client, Config};
use serde_json::Value;

use crate::control_plane::{self, Installation};
use kube_sandbox::{RunningSandbox, Sandbox};

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    NotReady(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("cannot make the webhook's certificates: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// The admission webhook's TLS, as the chart's `genCA`/`genSignedCert` make it: a CA (for the
/// MutatingWebhookConfiguration's `caBundle`) and a serving pair it signed, in PEM files.
pub struct WebhookTls {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl WebhookTls {
    /// A new CA and a certificate for `names` (DNS names or IP addresses), written to `dir`.
    pub fn generate(dir: &Path, names: &[&str]) -> Result<Self, StackError> {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vk-eci-webhook-ca");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
        let key = rcgen::KeyPair::generate()?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)?.signed_by(&key, &ca)?;
        let (cert_path, key_path) = (dir.join("webhook.crt"), dir.join("webhook.key"));
        std::fs::write(&cert_path, cert.pem()).map_err(io("cannot write webhook.crt"))?;
        std::fs::write(&key_path, key.serialize_pem()).map_err(io("cannot write webhook.key"))?;
        Ok(Self {
            ca_pem: ca.pem(),
            cert: cert_path,
            key: key_path,
        })
    }

    /// The `vk-eci run` arguments that serve the webhook on `listen` with this certificate.
    pub fn run_args(&self, listen: SocketAddr) -> Vec<String> {
        vec![
            "--webhook".into(),
            "--webhook-listen".into(),
            listen.to_string(),
            "--webhook-cert".into(),
            self.cert.display().to_string(),
            "--webhook-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// A MutatingWebhookConfiguration calling `url` for pod CREATE, as the chart's (outside
    /// `kube-system`, failurePolicy Ignore unless `fail_closed`).
    pub fn configuration(&self, name: &str, url: &str, fail_closed: bool) -> Value {
        use base64::Engine as _;
        serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "pods.vk-eci.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": if fail_closed { "Fail" } else { "Ignore" },
                "timeoutSeconds": 3,
                "reinvocationPolicy": "IfNeeded",
                "clientConfig": {
                    "url": url,
                    "caBundle": base64::engine::general_purpose::STANDARD.encode(&self.ca_pem),
                },
                "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
            }],
        })
    }
}

/// A short lease, so the failover tests run fast.
pub const TEST_LEASE_SECONDS: u64 = 6;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let what = what.into();
    move |source| StackError::Io { what, source }
}

/// A child process, killed when dropped.
pub struct Process {
    child: Child,
    /// Its admin address (`/metrics`, `/healthz`, `/readyz`), for operators.
    pub admin: Option<SocketAddr>,
    /// Its kubelet API address, for operators.
    pub kubelet: Option<SocketAddr>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `grace` for it to exit (then kills it).
    pub fn terminate(mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _signalled = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _already_exited = self.child.kill();
        let _reaped = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _already_exited = self.child.kill();
        let _reaped = self.child.wait();
    }
}

pub struct Stack {
    /// The sandbox the stack runs on; `None` on a real control plane.
    pub sandbox: Option<RunningSandbox>,
    /// An administrator's client.
    pub client: Client,
    pub sim_endpoint: String,
    /// An administrator's kubeconfig.
    pub kubeconfig: PathBuf,
    pub cluster_id: String,
    /// Where the workloads go: `default` on the sandbox, a namespace of the stack's own on a
    /// shared control plane.
    pub namespace: String,
    /// The virtual node the operators register.
    pub node: String,
    /// Extra environment of every replica `operator` starts (kubelet API certificates...).
    pub operator_env: Vec<(String, String)>,
    operator_kubeconfig: PathBuf,
    operator_namespace: String,
    /// The replicas' leader lease: [`TEST_LEASE_SECONDS`] unless changed; benchmarks set the
    /// operator's own default.
    pub lease_seconds: u64,
    vk_eci: PathBuf,
    dir: PathBuf,
    _sim: Process,
}

/// A port nobody listens on yet.
pub fn free_port() -> Result<SocketAddr, StackError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io("cannot find a free port"))
}

impl Stack {
    /// Starts the sandbox and `vk-eci sim` (fast timing, with `sim_args` added); logs and the
    /// kubeconfig go to `dir`.
    pub async fn start(vk_eci: &Path, dir: &Path, sim_args: &[&str]) -> Result<Self, StackError> {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let sandbox = Sandbox::new()
            .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(io("cannot start the sandbox"))?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, sandbox.kubeconfig())
            .map_err(io(format!("cannot write {}", kubeconfig.display())))?;
        let (sim, sim_endpoint) = start_sim(vk_eci, dir, sim_args).await?;
        // The operators trust the sandbox's kubelet client certificate, as a cluster's kubelets
        // trust the API server's.
        let mut operator_env = Vec::new();
        if let Some(ca) = sandbox.kubelet_client_ca() {
            let path = dir.join("kubelet-client-ca.pem");
            std::fs::write(&path, ca).map_err(io(format!("cannot write {}", path.display())))?;
            operator_env.push((
                "VK_ECI_KUBELET_CLIENT_CA".to_string(),
                path.display().to_string(),
            ));
        }
        let mut config = Config::new(
            sandbox
                .url()
                .parse()
                .map_err(|e| StackError::NotReady(format!("sandbox url: {e}")))?,
        );
        config.default_retry = false;
        let client = Client::try_from(config)?;
        Ok(Self {
            sandbox: Some(sandbox),
            client,
            sim_endpoint,
            operator_env,
            operator_kubeconfig: kubeconfig.clone(),
            kubeconfig,
            cluster_id: "quickstart".into(),
            namespace: "default".into(),
            node: "virtual-kubelet".into(),
            operator_namespace: "kube-system".into(),
            lease_seconds: TEST_LEASE_SECONDS,
            vk_eci: vk_eci.to_path_buf(),
            dir: dir.to_path_buf(),
            _sim: sim,
        })
    }

    /// Starts `vk-eci sim` beside the real control plane that `admin_kubeconfig` administers
    /// (`hack/control-plane.sh`), and installs vk-eci's CRDs and the chart's RBAC for a node and
    /// namespace named `name` ([`Installation`]): the operators run as the chart's
    /// ServiceAccount. Several stacks can share one control plane if their names differ.
    pub async fn on_control_plane(
        vk_eci: &Path,
        dir: &Path,
        sim_args: &[&str],
        admin_kubeconfig: &Path,
        name: &str,
    ) -> Result<Self, StackError> {
        Self::on_control_plane_with(vk_eci, dir, sim_args, admin_kubeconfig, name, "").await
    }

    /// [`Stack::on_control_plane`] with the chart's RBAC rendered with `chart_values` (YAML)
    /// as well, for an installation whose options need other rights.
    pub async fn on_control_plane_with(
        vk_eci: &Path,
        dir: &Path,
        sim_args: &[&str],
        admin_kubeconfig: &Path,
        name: &str,
        chart_values: &str,
    ) -> Result<Self, StackError> {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let client = control_plane::client(admin_kubeconfig).await?;
        let installation =
            Installation::create(&client, admin_kubeconfig, name, chart_values).await?;
        let operator_kubeconfig = dir.join("operator.kubeconfig");
        std::fs::write(&operator_kubeconfig, &installation.operator_kubeconfig).map_err(io(
            format!("cannot write {}", operator_kubeconfig.display()),
        ))?;
        let (sim, sim_endpoint) = start_sim(vk_eci, dir, sim_args).await?;
        // The CA of the API server's kubelet client certificate (`hack/control-plane.sh`
        // keeps its PKI beside the admin kubeconfig).
        let operator_env = admin_kubeconfig
            .parent()
            .map(|state| state.join("pki").join("ca.crt"))
            .filter(|ca| ca.exists())
            .map(|ca| {
                (
                    "VK_ECI_KUBELET_CLIENT_CA".to_string(),
                    ca.display().to_string(),
                )
            })
            .into_iter()
            .collect();
        Ok(Self {
            sandbox: None,
            client,
            sim_endpoint,
            kubeconfig: admin_kubeconfig.to_path_buf(),
            operator_env,
            operator_kubeconfig,
            cluster_id: name.into(),
            operator_namespace: installation.namespace.clone(),
            lease_seconds: TEST_LEASE_SECONDS,
            namespace: installation.namespace,
            node: installation.node,
            vk_eci: vk_eci.to_path_buf(),
            dir: dir.to_path_buf(),
            _sim: sim,
        })
    }

    /// Starts a `vk-eci run` replica in simulator mode, on the simulator at ECI_ENDPOINT. Its
    /// log is `<identity>.log`, appended to, so a replica restarted under the same identity
    /// keeps its predecessor's log (a panic stays on record).
    pub fn operator(&self, identity: &str) -> Result<Process, StackError> {
        self.operator_with(identity, &[])
    }

    /// [`Self::operator`] with more arguments for `vk-eci run`.
    pub fn operator_with(&self, identity: &str, args: &[String]) -> Result<Process, StackError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(identity))
            .map_err(io(format!("cannot open {identity}.log")))?;
        let admin = free_port()?;
        // Each replica its own kubelet port: they share this machine's address.
        let kubelet = free_port()?;
        let child = Command::new(&self.vk_eci)
            .args([
                "run",
                "--simulator",
                "--cluster-id",
                &self.cluster_id,
                "--region",
                "cn-hangzhou",
            ])
            .args(["--identity", identity, "--admin-listen", &admin.to_string()])
            .args(["--lease-duration-seconds", &self.lease_seconds.to_string()])
            .args(args)
            .env("KUBECONFIG", &self.operator_kubeconfig)
            .env("VKUBELET_NODE_NAME", &self.node)
            .env("POD_NAMESPACE", &self.operator_namespace)
            .env("ECI_ENDPOINT", &self.sim_endpoint)
            .env("KUBELET_PORT", kubelet.port().to_string())
            .env("VKUBELET_POD_IP", "127.0.0.1")
            .envs(self.operator_env.iter().map(|(k, v)| (k, v)))
            .env_remove("ECI_ACCESS_KEY")
            .env_remove("ECI_SECRET_KEY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io(format!("cannot start {} run", self.vk_eci.display())))?;
        Ok(Process {
            child,
            admin: Some(admin),
            kubelet: Some(kubelet),
        })
    }

    /// The log file of the replica with this identity.
    pub fn log(&self, identity: &str) -> PathBuf {
        self.dir.join(format!("{identity}.log"))
    }

    /// Writes `lines` to the log of `container` in the simulator's group `group`.
    pub async fn append_log(
        &self,
        group: &str,
        container: &str,
        lines: &[&str],
    ) -> Result<(), StackError> {
        let body = serde_json::json!({"container_group_id": group, "container": container, "lines": lines});
        let response = reqwest::Client::new()
            .post(format!("{}/_sim/log", self.sim_endpoint))
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| StackError::NotReady(format!("cannot append to the log: {e}")))?;
        if response.status() != reqwest::StatusCode::NO_CONTENT {
            return Err(StackError::NotReady(format!(
                "the simulator refused the log lines: {}",
                response.status()
            )));
        }
        Ok(())
    }

    /// `kubectl ARGS` as the admin, in the stack's namespace: whether it succeeded, and its
    /// stdout followed by its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<(bool, String), StackError> {
        let output = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", &self.namespace])
            .args(args)
            .output()
            .map_err(io("cannot run kubectl"))?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        ))
    }

    /// Runs `vk-eci sim-ctl` against the simulator.
    pub fn sim_ctl(&self, args: &[&str]) -> Result<Output, StackError> {
        Command::new(&self.vk_eci)
            .args(["sim-ctl", "--endpoint", &self.sim_endpoint])
            .args(args)
            .output()
            .map_err(io("cannot run vk-eci sim-ctl"))
    }

    /// Server-side applies every document of a YAML stream (`namespace` for namespaced ones
    /// that name none).
    pub async fn apply_yaml(&self, text: &str, namespace: &str) -> Result<(), StackError> {
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|e| StackError::Manifest(e.to_string()))?;
        for document in documents.into_iter().filter(|d| !d.is_null()) {
            apply(&self.client, &document, namespace).await?;
        }
        Ok(())
    }

    /// Applies vk-eci's CustomResourceDefinitions from the repository's `crds/`.
    pub async fn apply_crds(&self) -> Result<(), StackError> {
        let dir = repository().join("crds");
        for crd in [
            "spotrotationpolicies.spot.vk-eci.io.yaml",
            "spotrotations.spot.vk-eci.io.yaml",
        ] {
            let text = std::fs::read_to_string(dir.join(crd))
                .map_err(io(format!("cannot read crds/{crd}")))?;
            self.apply_yaml(&text, &self.namespace).await?;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Starts `vk-eci sim --fast` (with `sim_args` added) on a free port, logging to `dir/sim.log`,
/// and waits until it listens; returns it and its endpoint.
async fn start_sim(
    vk_eci: &Path,
    dir: &Path,
    sim_args: &[&str],
) -> Result<(Process, String), StackError> {
    let sim_addr = free_port()?;
    let log = std::fs::File::create(dir.join("sim.log")).map_err(io("cannot create sim.log"))?;
    let sim = Command::new(vk_eci)
        .args(["sim", "--fast", "--listen", &sim_addr.to_string()])
        .args(sim_args)
        .env_remove("ECI_ACCESS_KEY")
        .env_remove("ECI_SECRET_KEY")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(io(format!("cannot start {} sim", vk_eci.display())))?;
    let sim = Process {
        child: sim,
        admin: None,
        kubelet: None,
    };
    wait("the ECI simulator", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(sim_addr)
            .await
            .ok()
            .map(|_| ())
    })
    .await?;
    Ok((sim, format!("http://{sim_addr}")))
}

/// The repository this crate was built from (its samples and CRDs are read from there).
pub fn repository() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Server-side applies one object of any kind the server knows (`namespace` for a
/// namespaced object that names none).
pub async fn apply(client: &Client, object: &Value, namespace: &str) -> Result<(), StackError> {
    let api_version = object["apiVersion"]
        .as_str()
        .ok_or_else(|| StackError::Manifest("a document without apiVersion".into()))?;
    let kind = object["kind"]
        .as_str()
        .ok_or_else(|| StackError::Manifest("a document without kind".into()))?;
    let name = object["metadata"]["name"]
        .as_str()
        .ok_or_else(|| StackError::Manifest(format!("a {kind} without a name")))?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, capabilities) = pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = if capabilities.scope == Scope::Namespaced {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or(namespace);
        Api::namespaced_with(client.clone(), namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    api.patch(
        name,
        &PatchParams::apply("vk-eci-e2e").force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

/// Polls `probe` every 100 ms until it answers, for at most `limit`.
pub async fn wait<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> Result<T, StackError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StackError::NotReady(format!("{what} within {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `vk-eci` binary next to the running test or tool (`target/<profile>/vk-eci`), built
/// first if `cargo` has not built it yet.
pub fn vk_eci_binary() -> Result<PathBuf, StackError> {
    let exe = std::env::current_exe().map_err(io("cannot find the current executable"))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join("vk-eci");
    if !binary.exists() {
        let release = dir.ends_with("release");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args(["build", "--bin", "vk-eci"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().map_err(io("cannot run cargo build"))?;
        if !status.success() {
            return Err(StackError::NotReady(
                "cargo build --bin vk-eci failed".into(),
            ));
        }
    }
    Ok(binary)
}
