//! `vk-eci-bench-chaos`: the safety contract (design §8a) under chaos, against the real
//! `vk-eci run` (two replicas) and `vk-eci sim` processes. A Deployment of spot pods under a
//! Surge SpotRotationPolicy and a Deployment of `api-evict` spot pods with a
//! PodDisruptionBudget run while, in seeded rounds, the leader is SIGKILLed (and restarted
//! under its identity a few seconds later), the pod LIST is slowed by seconds, the API server
//! answers 503 to everything for 5 s, ECI fails 20 % of calls and loses answers, and ECI
//! releases spot instances. A sampler reads the truth every second, in process from the
//! sandbox's store and from the simulator's admin API (neither is faulted), and counts what
//! must never happen. Prints JSON (`hack/bench-chaos.sh` saves it to `hack/results/`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube_sandbox::{Fault, Sandbox};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::time::Instant;
use vk_eci_e2e::bench::{ReadyPods, percentile, report};
use vk_eci_e2e::stack::{Process, Stack, StackError, vk_eci_binary};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 500)]
    pods: usize,
    /// How long the chaos lasts.
    #[arg(long, default_value_t = 180)]
    chaos_seconds: u64,
    /// One round of chaos starts this often.
    #[arg(long, default_value_t = 20)]
    round_seconds: u64,
    /// Seeds the chaos plan and the simulator.
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// The operator's full status pass (its default); a pod Ready without a group counts as a
    /// violation only after two of these plus `grace_seconds`.
    #[arg(long, default_value_t = 60)]
    full_pass_seconds: u64,
    #[arg(long, default_value_t = 15)]
    grace_seconds: u64,
    /// After the chaos, at most this long for the workloads to settle.
    #[arg(long, default_value_t = 300)]
    settle_seconds: u64,
    #[arg(long)]
    vk_eci: Option<PathBuf>,
    #[arg(long, default_value = "/tmp/vk-eci-bench-chaos")]
    dir: PathBuf,
}

const REPLICAS: [&str; 2] = ["chaos-a", "chaos-b"];
/// `vk-eci run`'s defaults: node `virtual-kubelet`, Lease in `kube-system`.
const LEASE: &str = "vk-eci-virtual-kubelet";
const LEASE_NAMESPACE: &str = "kube-system";
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Pod failures that are ECI's verdict or a confirmed lost instance, not our retries.
const NOT_OURS: [&str; 3] = [
    "BidFailed",
    "ContainerInstanceLost",
    "ContainerInstanceExpired",
];
const TERMINAL_GROUP: [&str; 3] = ["Succeeded", "Failed", "Expired"];

fn harness(what: impl std::fmt::Display) -> StackError {
    StackError::NotReady(what.to_string())
}

// ---------------------------------------------------------------------------------------
// What one sample sees.

#[derive(Debug, Clone, PartialEq)]
struct GroupView {
    id: String,
    status: String,
    /// The `vk-eci.io/uid` tag: the pod it was made for.
    uid: Option<String>,
}

impl GroupView {
    fn from_json(group: &Value) -> Option<Self> {
        let uid = group["tags"].as_array().and_then(|tags| {
            tags.iter()
                .find(|t| t["Key"] == "vk-eci.io/uid")
                .and_then(|t| t["Value"].as_str())
                .map(str::to_string)
        });
        Some(Self {
            id: group["id"].as_str()?.to_string(),
            status: group["status"].as_str().unwrap_or_default().to_string(),
            uid,
        })
    }

    fn terminal(&self) -> bool {
        TERMINAL_GROUP.contains(&self.status.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
struct PodView {
    uid: String,
    name: String,
    deleting: bool,
    phase: String,
    reason: String,
    /// Running with Ready=True.
    serving: bool,
    /// The group recorded on the pod (`k8s.aliyun.com/eci-instance-id`).
    instance: Option<String>,
}

impl PodView {
    fn from_json(pod: &Value) -> Option<Self> {
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let phase = pod["status"]["phase"].as_str().unwrap_or_default();
        Some(Self {
            uid: pod["metadata"]["uid"].as_str()?.to_string(),
            name: pod["metadata"]["name"].as_str()?.to_string(),
            deleting: !pod["metadata"]["deletionTimestamp"].is_null(),
            phase: phase.to_string(),
            reason: pod["status"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            serving: phase == "Running" && ready,
            instance: pod["metadata"]["annotations"]["k8s.aliyun.com/eci-instance-id"]
                .as_str()
                .filter(|id| !id.is_empty())
                .map(str::to_string),
        })
    }

    fn terminal(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }
}

/// A pod seen serving while its recorded group is absent, since `since` (seconds).
#[derive(Debug, Clone, Copy)]
struct Unbacked {
    since: f64,
    samples: u32,
}

/// Judges consecutive samples against the safety contract. Groups are read before pods in
/// each sample, so a pod seen alive and not terminating was so when its group was read.
#[derive(Debug, Default)]
struct Observer {
    /// Seconds a pod may serve without its group before it counts (2 full passes + grace).
    unbacked_limit: f64,
    previous: Option<(HashMap<String, GroupView>, HashMap<String, PodView>)>,
    samples: usize,
    /// Groups that vanished while their pod existed, alive and not terminating.
    deleted_under_live_pod: BTreeMap<String, String>,
    unbacked: HashMap<String, Unbacked>,
    unbacked_seen: BTreeSet<String>,
    unbacked_over_limit: BTreeSet<String>,
    longest_unbacked: f64,
    /// Pod UIDs that had more than one live group at once.
    duplicated: BTreeSet<String>,
    most_live_groups_per_pod: usize,
    /// Failed pods, by UID, with their reason.
    failed: BTreeMap<String, (String, String)>,
}

impl Observer {
    fn new(unbacked_limit: f64) -> Self {
        Self {
            unbacked_limit,
            ..Self::default()
        }
    }

    fn observe(&mut self, at: f64, groups: Vec<GroupView>, pods: Vec<PodView>) {
        self.samples += 1;
        let groups: HashMap<String, GroupView> =
            groups.into_iter().map(|g| (g.id.clone(), g)).collect();
        let pods: HashMap<String, PodView> = pods.into_iter().map(|p| (p.uid.clone(), p)).collect();

        if let Some((before, pods_before)) = &self.previous {
            for (id, group) in before {
                if groups.contains_key(id) || group.terminal() {
                    continue;
                }
                let Some(uid) = &group.uid else { continue };
                let alive_now = pods.get(uid).is_some_and(|p| !p.deleting);
                let was_live = pods_before.get(uid).is_none_or(|p| !p.terminal());
                if alive_now && was_live {
                    let name = pods.get(uid).map(|p| p.name.clone()).unwrap_or_default();
                    self.deleted_under_live_pod.insert(id.clone(), name);
                }
            }
        }

        let mut live_per_pod: HashMap<&str, usize> = HashMap::new();
        for group in groups.values().filter(|g| !g.terminal()) {
            if let Some(uid) = &group.uid {
                *live_per_pod.entry(uid).or_default() += 1;
            }
        }
        for (uid, count) in live_per_pod {
            self.most_live_groups_per_pod = self.most_live_groups_per_pod.max(count);
            if count > 1 {
                self.duplicated.insert(uid.to_string());
            }
        }

        for pod in pods.values() {
            let unbacked = pod.serving
                && !pod.deleting
                && pod
                    .instance
                    .as_ref()
                    .is_some_and(|id| !groups.contains_key(id));
            if !unbacked {
                self.unbacked.remove(&pod.uid);
            } else {
                let entry = self.unbacked.entry(pod.uid.clone()).or_insert(Unbacked {
                    since: at,
                    samples: 0,
                });
                entry.samples += 1;
                if entry.samples >= 2 {
                    let lasted = at - entry.since;
                    self.unbacked_seen.insert(pod.name.clone());
                    self.longest_unbacked = self.longest_unbacked.max(lasted);
                    if lasted > self.unbacked_limit {
                        self.unbacked_over_limit.insert(pod.name.clone());
                    }
                }
            }
            if pod.phase == "Failed" {
                self.failed
                    .entry(pod.uid.clone())
                    .or_insert_with(|| (pod.name.clone(), pod.reason.clone()));
            }
        }
        self.unbacked.retain(|uid, _| pods.contains_key(uid));
        self.previous = Some((groups, pods));
    }

    fn failed_by_reason(&self) -> BTreeMap<String, usize> {
        let mut reasons = BTreeMap::new();
        for (_, reason) in self.failed.values() {
            *reasons.entry(reason.clone()).or_default() += 1;
        }
        reasons
    }

    fn failed_by_our_retries(&self) -> Vec<String> {
        self.failed
            .values()
            .filter(|(_, reason)| !NOT_OURS.contains(&reason.as_str()))
            .map(|(name, reason)| format!("{name}: {reason}"))
            .collect()
    }

    fn summary(&self) -> Value {
        json!({
            "samples": self.samples,
            "groups_deleted_while_pod_existed": self.deleted_under_live_pod.len(),
            "groups_deleted_while_pod_existed_examples":
                self.deleted_under_live_pod.iter().take(10).map(|(id, pod)| format!("{id} ({pod})")).collect::<Vec<_>>(),
            "pods_ready_without_group": self.unbacked_over_limit.len(),
            "pods_ready_without_group_examples": self.unbacked_over_limit.iter().take(10).collect::<Vec<_>>(),
            "pods_ready_without_group_any_duration": self.unbacked_seen.len(),
            "longest_ready_without_group_seconds": self.longest_unbacked,
            "ready_without_group_limit_seconds": self.unbacked_limit,
            "pods_with_duplicate_groups": self.duplicated.len(),
            "most_live_groups_per_pod": self.most_live_groups_per_pod,
            "pods_failed_by_our_retries": self.failed_by_our_retries().len(),
            "pods_failed_by_our_retries_examples": self.failed_by_our_retries().into_iter().take(10).collect::<Vec<_>>(),
            "failed_pods_by_reason": self.failed_by_reason(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// The instruments: the simulator's admin API and the sandbox's store, neither faulted.

#[derive(Clone)]
struct Truth {
    sandbox: Sandbox,
    http: reqwest::Client,
    sim: String,
}

impl Truth {
    async fn groups(&self) -> Result<Vec<GroupView>, String> {
        let answer = self
            .http
            .get(format!("{}/_sim/groups", self.sim))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body = answer.bytes().await.map_err(|e| e.to_string())?;
        let groups: Vec<Value> = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(groups.iter().filter_map(GroupView::from_json).collect())
    }

    fn pods(&self) -> Vec<PodView> {
        self.sandbox
            .objects("", "v1", "pods")
            .iter()
            .filter_map(PodView::from_json)
            .collect()
    }

    /// The leader Lease's holder and last renewal.
    fn lease(&self) -> Option<(String, DateTime<Utc>)> {
        let lease = self
            .sandbox
            .objects("coordination.k8s.io", "v1", "leases")
            .into_iter()
            .find(|l| {
                l["metadata"]["name"] == LEASE && l["metadata"]["namespace"] == LEASE_NAMESPACE
            })?;
        let holder = lease["spec"]["holderIdentity"].as_str()?.to_string();
        let renewed = DateTime::parse_from_rfc3339(lease["spec"]["renewTime"].as_str()?).ok()?;
        Some((holder, renewed.with_timezone(&Utc)))
    }

    /// One call to the simulator's admin API (`/_sim/<path>`), with a JSON body if given.
    async fn sim(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, StackError> {
        let mut request = self
            .http
            .request(method, format!("{}/_sim/{path}", self.sim))
            .timeout(Duration::from_secs(10));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let answer = request
            .send()
            .await
            .map_err(|e| harness(format!("simulator {path}: {e}")))?;
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(harness(format!(
                "simulator {path} answered {status}: {text}"
            )));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// Samples every second until `stop` turns true.
async fn sample(
    truth: Truth,
    observer: Arc<Mutex<Observer>>,
    start: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> usize {
    let mut missed = 0;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return missed,
        }
        let groups = match truth.groups().await {
            Ok(groups) => groups,
            Err(_) => {
                missed += 1;
                continue;
            }
        };
        let pods = truth.pods();
        if let Ok(mut observer) = observer.lock() {
            observer.observe(start.elapsed().as_secs_f64(), groups, pods);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The chaos.

/// What one round does.
#[derive(Debug, Clone, Default, PartialEq)]
struct Round {
    kill_leader: Option<Duration>,
    slow_list: bool,
    flap_after: Option<Duration>,
    eci_faults: bool,
    spot_release: bool,
}

impl Round {
    /// Round `n`: one action in turn (so every kind runs within five rounds), each other with
    /// a chance of 30 % (a kill 50 %), a slow LIST with most kills (a restart's first LIST is the one that
    /// matters); the restart delay straddles the lease duration (6 s), so sometimes the
    /// restarted replica takes its own lease back and sometimes the standby takes over.
    fn plan(n: usize, rng: &mut StdRng) -> Self {
        let mut pick = |kind: usize, p: f64| n % 5 == kind || rng.random_bool(p);
        let kill = pick(0, 0.5);
        let slow_list = pick(1, 0.3);
        let flap = pick(2, 0.3);
        let eci_faults = pick(3, 0.3);
        let spot_release = pick(4, 0.3);
        Self {
            kill_leader: kill.then(|| Duration::from_millis(rng.random_range(2_000..=12_000))),
            slow_list: slow_list || (kill && rng.random_bool(0.7)),
            flap_after: flap.then(|| Duration::from_millis(rng.random_range(0..=8_000))),
            eci_faults,
            spot_release,
        }
    }
}

#[derive(Debug, Default)]
struct Failovers {
    /// Seconds from a SIGKILL to the Lease renewed by a live replica.
    seconds: Vec<f64>,
    by_standby: usize,
    by_restarted: usize,
    not_completed: usize,
}

struct Chaos<'a> {
    stack: &'a Stack,
    truth: Truth,
    replicas: HashMap<String, Process>,
    failovers: Failovers,
    actions: BTreeMap<&'static str, usize>,
    list_delays_fired: u64,
    flap_requests_failed: u64,
}

impl Chaos<'_> {
    fn count(&mut self, action: &'static str) {
        *self.actions.entry(action).or_default() += 1;
    }

    async fn round(&mut self, round: &Round, length: Duration) -> Result<(), StackError> {
        let faults = self.truth.sandbox.faults();
        let slow_list = round.slow_list.then(|| {
            faults.inject(
                Fault::on("list", "pods")
                    .delay_between(Duration::from_secs(3), Duration::from_secs(5))
                    .times(4),
            )
        });
        let truth = self.truth.clone();
        let flap = async {
            let Some(after) = round.flap_after else {
                return 0;
            };
            tokio::time::sleep(after).await;
            let id = truth.sandbox.faults().inject(Fault::any().error(503));
            tokio::time::sleep(Duration::from_secs(5)).await;
            let failed = truth.sandbox.faults().fired(id);
            truth.sandbox.faults().remove(id);
            failed
        };
        let eci = async {
            if !round.eci_faults {
                return Ok(());
            }
            truth
                .sim(
                    reqwest::Method::PUT,
                    "faults",
                    Some(json!({"action": "*", "error_rate": 0.2, "lost_response_rate": 0.1})),
                )
                .await?;
            tokio::time::sleep(length.mul_f64(0.75)).await;
            truth
                .sim(reqwest::Method::DELETE, "faults", None)
                .await
                .map(|_| ())
        };
        let spot = async {
            if !round.spot_release {
                return Ok(0);
            }
            let released = truth
                .sim(
                    reqwest::Method::POST,
                    "spot-release",
                    Some(json!({"fraction": 0.03, "lead_seconds": 60.0})),
                )
                .await?;
            Ok::<usize, StackError>(released["released"].as_array().map_or(0, Vec::len))
        };
        let stack = self.stack;
        let replicas = &mut self.replicas;
        let failovers = &mut self.failovers;
        let kill = async {
            match round.kill_leader {
                Some(restart_after) => {
                    kill_leader(stack, &truth, replicas, failovers, restart_after).await
                }
                None => Ok(false),
            }
        };
        let ((), flapped, eci, released, killed) =
            tokio::join!(tokio::time::sleep(length), flap, eci, spot, kill);
        if let Some(id) = slow_list {
            self.list_delays_fired += faults.fired(id);
            faults.remove(id);
        }
        eci?;
        if killed? {
            self.count("leader_killed");
        }
        if round.slow_list {
            self.count("pod_list_slowed");
        }
        if round.flap_after.is_some() {
            self.flap_requests_failed += flapped;
            self.count("api_flapped");
        }
        if round.eci_faults {
            self.count("eci_faults");
        }
        let released = released?;
        if round.spot_release {
            self.count("spot_releases");
            *self.actions.entry("spot_instances_released").or_default() += released;
        }
        Ok(())
    }
}

/// SIGKILLs the Lease's holder, restarts it under the same identity after `restart_after`,
/// and records how long until a live replica renewed the Lease. False if no replica we run
/// holds the Lease.
async fn kill_leader(
    stack: &Stack,
    truth: &Truth,
    replicas: &mut HashMap<String, Process>,
    failovers: &mut Failovers,
    restart_after: Duration,
) -> Result<bool, StackError> {
    let Some((holder, _)) = truth.lease() else {
        return Ok(false);
    };
    let Some(leader) = replicas.remove(&holder) else {
        return Ok(false);
    };
    let killed_at = Utc::now();
    let killed = Instant::now();
    leader.kill();
    let mut restarted = false;
    let mut taken_over = false;
    let deadline = killed + Duration::from_secs(60);
    while !(restarted && taken_over) && Instant::now() < deadline {
        if !restarted && killed.elapsed() >= restart_after {
            replicas.insert(holder.clone(), stack.operator(&holder)?);
            restarted = true;
        }
        if !taken_over
            && let Some((now_holder, renewed)) = truth.lease()
            && renewed > killed_at
        {
            taken_over = true;
            failovers.seconds.push(killed.elapsed().as_secs_f64());
            if now_holder == holder {
                failovers.by_restarted += 1;
            } else {
                failovers.by_standby += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !restarted {
        replicas.insert(holder.clone(), stack.operator(&holder)?);
    }
    if !taken_over {
        failovers.not_completed += 1;
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------

fn deployment(name: &str, replicas: usize, annotations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"nodeSelector": {"type": "virtual-kubelet"},
                    "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
                    "containers": [{"name": "app", "image": "nginx"}]}}}
    })
}

fn budget(name: &str) -> Value {
    json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
        "spec": {"maxUnavailable": "10%", "selector": {"matchLabels": {"app": name}}}
    })
}

/// Each workload's desired, spec and Ready replicas.
async fn workloads(
    deployments: &Api<Deployment>,
    desired: &[(&str, usize)],
) -> Result<Vec<(String, usize, i32, i32)>, StackError> {
    let mut seen = Vec::new();
    for (name, wanted) in desired {
        let deployment = deployments.get(name).await?;
        let spec = deployment.spec.and_then(|s| s.replicas).unwrap_or(0);
        let ready = deployment
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        seen.push((name.to_string(), *wanted, spec, ready));
    }
    Ok(seen)
}

fn panics(stack: &Stack) -> usize {
    REPLICAS
        .iter()
        .filter_map(|identity| std::fs::read_to_string(stack.log(identity)).ok())
        .map(|log| log.lines().filter(|l| l.contains("panicked")).count())
        .sum()
}

fn summary(sorted: &[f64]) -> Value {
    json!({
        "p50": percentile(sorted, 0.5),
        "p99": percentile(sorted, 0.99),
        "max": sorted.last(),
        "samples": sorted.len(),
    })
}

async fn run(args: Args) -> Result<Value, StackError> {
    let vk_eci = match args.vk_eci {
        Some(path) => path,
        None => vk_eci_binary()?,
    };
    for identity in REPLICAS {
        let _absent = std::fs::remove_file(args.dir.join(format!("{identity}.log")));
    }
    let seed = args.seed.to_string();
    let stack = Stack::start(&vk_eci, &args.dir, &["--seed", &seed]).await?;
    let mut replicas = HashMap::new();
    for identity in REPLICAS {
        replicas.insert(identity.to_string(), stack.operator(identity)?);
    }
    stack.apply_crds().await?;
    let fleet = args.pods * 4 / 5;
    let evictees = args.pods - fleet;
    let spot = json!({"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"});
    let evict = json!({"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo",
        "k8s.aliyun.com/eci-spot-release-strategy": "api-evict"});
    let policy = json!({
        "apiVersion": "spot.vk-eci.io/v1alpha1", "kind": "SpotRotationPolicy",
        "metadata": {"name": "fleet"},
        "spec": {"targetRef": {"kind": "Deployment", "name": "fleet"}, "strategy": "Surge",
            "maxSurge": "10%", "maxConcurrent": 50, "historyLimit": args.pods}
    });
    for object in [
        deployment("fleet", fleet, spot),
        budget("fleet"),
        policy,
        deployment("evictees", evictees, evict),
        budget("evictees"),
    ] {
        stack.apply_yaml(&object.to_string(), "default").await?;
    }
    let setup = Instant::now();
    for (app, count) in [("fleet", fleet), ("evictees", evictees)] {
        let mut ready = ReadyPods::watch(stack.client.clone(), "default", &format!("app={app}"));
        ready.at_least(count, Duration::from_secs(1800)).await?;
    }
    let setup_seconds = setup.elapsed().as_secs_f64();

    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    let sandbox = stack
        .sandbox
        .as_ref()
        .ok_or_else(|| StackError::NotReady("the chaos benchmark runs on the sandbox".into()))?
        .sandbox
        .clone();
    let truth = Truth {
        sandbox,
        http: reqwest::Client::new(),
        sim: stack.sim_endpoint.clone(),
    };
    let unbacked_limit = (2 * args.full_pass_seconds + args.grace_seconds) as f64;
    let observer = Arc::new(Mutex::new(Observer::new(unbacked_limit)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let sampler = tokio::spawn(sample(truth.clone(), observer.clone(), start, stopped));

    let mut chaos = Chaos {
        stack: &stack,
        truth: truth.clone(),
        replicas,
        failovers: Failovers::default(),
        actions: BTreeMap::new(),
        list_delays_fired: 0,
        flap_requests_failed: 0,
    };
    let mut rng = StdRng::seed_from_u64(args.seed);
    let round_length = Duration::from_secs(args.round_seconds.max(10));
    let chaos_end = start + Duration::from_secs(args.chaos_seconds);
    let mut rounds = Vec::new();
    while Instant::now() + round_length <= chaos_end + round_length / 2 {
        let round = Round::plan(rounds.len(), &mut rng);
        eprintln!(
            "[{:>5.0}s] round {}: {round:?}",
            start.elapsed().as_secs_f64(),
            rounds.len()
        );
        chaos.round(&round, round_length).await?;
        rounds.push(round);
    }
    let chaos_seconds = start.elapsed().as_secs_f64();
    truth.sandbox.faults().clear();
    truth.sim(reqwest::Method::DELETE, "faults", None).await?;

    // Settle: the workloads back to their size, and long enough for any pod left serving
    // without a group to be either fixed or counted.
    let deployments: Api<Deployment> = Api::namespaced(stack.client.clone(), "default");
    let desired = [("fleet", fleet), ("evictees", evictees)];
    let settled_by = Instant::now() + Duration::from_secs(args.settle_seconds);
    let observed_until = Instant::now() + Duration::from_secs_f64(unbacked_limit + 5.0);
    let mut settle_seconds = None;
    let final_workloads = loop {
        let seen = workloads(&deployments, &desired).await?;
        let settled = seen.iter().all(|(_, wanted, spec, ready)| {
            *spec as usize == *wanted && *ready as usize == *wanted
        });
        if settled && settle_seconds.is_none() {
            settle_seconds = Some(start.elapsed().as_secs_f64() - chaos_seconds);
        }
        let now = Instant::now();
        if (settled || now >= settled_by) && now >= observed_until {
            break seen;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let _stopped = stop.send(true);
    let missed_samples = sampler.await.map_err(harness)?;

    let off: Vec<Value> = final_workloads
        .iter()
        .filter(|(_, wanted, spec, ready)| *spec as usize != *wanted || *ready as usize != *wanted)
        .map(|(name, wanted, spec, ready)| {
            json!({"deployment": name, "desired": wanted, "replicas": spec, "ready": ready})
        })
        .collect();
    let panics = panics(&stack);
    let mut failover = std::mem::take(&mut chaos.failovers);
    failover.seconds.sort_by(f64::total_cmp);
    let mut sim_stats = truth
        .sim(reqwest::Method::GET, "stats", None)
        .await
        .unwrap_or(Value::Null);
    if let Some(stats) = sim_stats.as_object_mut() {
        stats.remove("stock");
    }
    let observed = observer.lock().map_err(|_| harness("observer poisoned"))?;
    let mut result = json!({
        "pods": args.pods,
        "settings": {
            "fleet": fleet, "evictees": evictees, "seed": args.seed, "replicas": REPLICAS.len(),
            "lease_duration_seconds": 6, "chaos_seconds": args.chaos_seconds,
            "round_seconds": round_length.as_secs(), "rounds": rounds.len(),
            "slow_list": "3-5 s on pod list, 4 requests", "api_flap": "5 s of 503 on every request",
            "eci_faults": "20 % errors + 10 % lost responses on every action, 15 s",
            "spot_release": "3 % of spot instances, 60 s lead",
            "restart_after": "2-12 s, same identity",
        },
        "setup_seconds": setup_seconds,
        "actions": chaos.actions,
        "pod_list_requests_slowed": chaos.list_delays_fired,
        "requests_failed_by_flaps": chaos.flap_requests_failed,
        "missed_samples": missed_samples,
        "workloads_left_surged_or_short": off.len(),
        "workloads_off": off,
        "settle_seconds": settle_seconds,
        "panics": panics,
        "failover_seconds": summary(&failover.seconds),
        "failover_by_standby": failover.by_standby,
        "failover_by_restarted_replica": failover.by_restarted,
        "failover_not_completed_in_60s": failover.not_completed,
        "simulator": sim_stats,
        "note": "groups_deleted_while_pod_existed: a non-terminal group in one sample, gone in the next, whose pod (by its vk-eci.io/uid tag) then exists with no deletionTimestamp and was not terminal before. pods_ready_without_group: Running+Ready pods whose recorded eci-instance-id was absent from the simulator for longer than 2 full status passes + grace (the operator confirms lost groups on its full pass); the any_duration count and the longest span include shorter, legitimate detection delays. duplicate groups: more than one non-terminal group with one pod UID in a sample. pods_failed_by_our_retries: Failed pods whose reason is not BidFailed, ContainerInstanceLost or ContainerInstanceExpired. failover: SIGKILL of the Lease holder until a live replica renewed the Lease (the restarted replica takes its own lease back at once; the standby waits the 6 s lease out).",
    });
    if let (Some(object), Value::Object(figures)) = (result.as_object_mut(), observed.summary()) {
        object.extend(figures);
    }
    drop(observed);
    for (_, replica) in chaos.replicas.drain() {
        let _stopped = replica.terminate(Duration::from_secs(10));
    }
    Ok(result)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    report("vk-eci-bench-chaos", run(Args::parse()).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, uid: &str, status: &str) -> GroupView {
        GroupView {
            id: id.into(),
            status: status.into(),
            uid: Some(uid.into()),
        }
    }

    fn pod(uid: &str, instance: &str) -> PodView {
        PodView {
            uid: uid.into(),
            name: format!("pod-{uid}"),
            deleting: false,
            phase: "Running".into(),
            reason: String::new(),
            serving: true,
            instance: Some(instance.into()),
        }
    }

    #[test]
    fn a_group_gone_under_a_live_pod_counts_but_not_under_a_terminating_one() {
        let mut observer = Observer::new(135.0);
        observer.observe(
            0.0,
            vec![group("g1", "u1", "Running"), group("g2", "u2", "Running")],
            vec![pod("u1", "g1"), pod("u2", "g2")],
        );
        let mut leaving = pod("u2", "g2");
        leaving.deleting = true;
        observer.observe(1.0, vec![], vec![pod("u1", "g1"), leaving]);
        assert_eq!(
            observer.deleted_under_live_pod.keys().collect::<Vec<_>>(),
            ["g1"]
        );
    }

    #[test]
    fn an_expired_group_pruned_is_not_a_deletion() {
        let mut observer = Observer::new(135.0);
        observer.observe(
            0.0,
            vec![group("g1", "u1", "Expired")],
            vec![pod("u1", "g1")],
        );
        observer.observe(1.0, vec![], vec![pod("u1", "g1")]);
        assert!(observer.deleted_under_live_pod.is_empty());
    }

    #[test]
    fn a_pod_serving_without_its_group_counts_only_past_the_limit() {
        let mut observer = Observer::new(10.0);
        observer.observe(0.0, vec![], vec![pod("u1", "g1")]);
        observer.observe(5.0, vec![], vec![pod("u1", "g1")]);
        assert_eq!(observer.unbacked_seen.len(), 1);
        assert!(observer.unbacked_over_limit.is_empty());
        observer.observe(11.0, vec![], vec![pod("u1", "g1")]);
        assert_eq!(observer.unbacked_over_limit.len(), 1);
        assert_eq!(observer.longest_unbacked, 11.0);
    }

    #[test]
    fn the_unbacked_clock_restarts_once_the_pod_stops_serving() {
        let mut observer = Observer::new(10.0);
        observer.observe(0.0, vec![], vec![pod("u1", "g1")]);
        let mut lost = pod("u1", "g1");
        lost.serving = false;
        lost.phase = "Failed".into();
        lost.reason = "ContainerInstanceLost".into();
        observer.observe(1.0, vec![], vec![lost]);
        observer.observe(20.0, vec![], vec![pod("u1", "g1")]);
        assert!(observer.unbacked_over_limit.is_empty());
        assert!(observer.failed_by_our_retries().is_empty());
    }

    #[test]
    fn two_live_groups_for_one_pod_are_duplicates_a_finished_one_is_not() {
        let mut observer = Observer::new(135.0);
        observer.observe(
            0.0,
            vec![
                group("g1", "u1", "Running"),
                group("g2", "u1", "Pending"),
                group("g3", "u2", "Running"),
                group("g4", "u2", "Expired"),
            ],
            vec![],
        );
        assert_eq!(observer.duplicated.iter().collect::<Vec<_>>(), ["u1"]);
        assert_eq!(observer.most_live_groups_per_pod, 2);
    }

    #[test]
    fn failures_other_than_ecis_verdicts_are_ours() {
        let mut observer = Observer::new(135.0);
        let mut bid = pod("u1", "g1");
        bid.phase = "Failed".into();
        bid.reason = "BidFailed".into();
        let mut mismatch = pod("u2", "g2");
        mismatch.phase = "Failed".into();
        mismatch.reason = "IdempotentParameterMismatch".into();
        observer.observe(0.0, vec![], vec![bid, mismatch]);
        assert_eq!(
            observer.failed_by_our_retries(),
            ["pod-u2: IdempotentParameterMismatch"]
        );
    }

    #[test]
    fn plans_are_reproducible_and_cover_every_action_in_five_rounds() {
        let plans = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..5).map(|n| Round::plan(n, &mut rng)).collect::<Vec<_>>()
        };
        let first = plans(3);
        assert_eq!(first, plans(3));
        assert!(first[0].kill_leader.is_some());
        assert!(first[1].slow_list);
        assert!(first[2].flap_after.is_some());
        assert!(first[3].eci_faults);
        assert!(first[4].spot_release);
    }
}
