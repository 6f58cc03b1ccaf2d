//! Wires the operator: one informer cache (a reflector per kind; pods field-selected to this
//! node and shared by the controllers that read them), the leader election, the controllers
//! and the admin server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eci_client::{EciClient, EciClientConfig};
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tracing::{error, info};
use vk_eci_core::cache::CachedPod;
use vk_eci_core::crd::{NODE_LABEL, SpotRotation, SpotRotationPolicy, node_label_value};
use vk_eci_core::node::EciHealth;
use vk_eci_core::settings::Settings;

use crate::node_heartbeat::Heartbeat;
use crate::runtime::admin::{self, AdminState};
use crate::runtime::context::{Context, ProfileHolder};
use crate::runtime::events::EventRecorder;
use crate::runtime::fanout::Fanout;
use crate::runtime::leader::{Elector, Leadership, Timing};
use crate::runtime::liveness::Liveness;
use crate::runtime::metrics::Metrics;
use crate::spot::{self, SpotContext};
use crate::webhook::{self, WebhookServing, WebhookState};
use crate::{eci_status, pod_lifecycle, profile};

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot build the ECI client: {0}")]
    Eci(#[from] eci_client::EciError),
    #[error("cannot serve the admin port {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Leader(#[from] crate::runtime::leader::LeaderError),
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error(transparent)]
    Kubelet(#[from] crate::kubelet::KubeletError),
    #[error("a controller stopped unexpectedly")]
    ControllerStopped,
}

pub struct Operator {
    pub client: Client,
    pub eci: EciClientConfig,
    pub settings: Settings,
    /// This replica's identity in the leader election (its pod name in a cluster).
    pub identity: String,
    /// Where the leader Lease lives (the operator's own namespace).
    pub lease_namespace: String,
    pub admin: Option<SocketAddr>,
    /// The kubelet API (HTTPS on `KUBELET_PORT`); `None` serves none.
    pub kubelet: Option<crate::kubelet::KubeletConfig>,
    pub leader_timing: Timing,
    /// How often the status sync lists every group (catching what incremental passes missed,
    /// collecting orphans, checking that recorded groups exist).
    pub full_sync_every: Duration,
    /// The admission webhook, when this replica serves it.
    pub webhook: Option<WebhookServing>,
}

/// How many changes each controller's subscription to a watch buffers.
const SUBSCRIPTION_BUFFER: usize = 4096;

type ShutdownSignal = Shared<BoxFuture<'static, ()>>;

/// The Kubernetes client vk-eci uses: identified as `vk-eci/<version>` (audit logs), and not
/// retrying 429s itself: a refused eviction must surface at once, since the eviction
/// controller schedules its own deadline-aware retries (the controllers requeue the rest).
pub fn kube_client(mut config: kube::Config) -> Result<Client, kube::Error> {
    config.default_retry = false;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("vk-eci/", env!("CARGO_PKG_VERSION"))),
    ));
    Client::try_from(config)
}

impl Operator {
    /// The Lease the replicas of one virtual node contend for.
    pub fn lease_name(&self) -> String {
        format!("vk-eci-{}", self.settings.node_name)
    }

    /// Runs until `shutdown` resolves (then gives the leader lease up) or something fatal
    /// happens.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), OperatorError> {
        let shutdown: ShutdownSignal = shutdown.boxed().shared();
        let metrics = Arc::new(Metrics::new());
        let eci = EciClient::with_observer(self.eci.clone(), metrics.clone())?;
        let (elector, leadership) = Elector::new(
            Api::<Lease>::namespaced(self.client.clone(), &self.lease_namespace),
            self.lease_name(),
            self.identity.clone(),
            self.leader_timing,
        );
        let node_name = self.settings.node_name.clone();

        let (pod_store, pod_writer) = reflector::store::<CachedPod>();
        let (pod_fanout, [pod_subscriber, notice_pods, rotation_pods, eviction_pods]) =
            Fanout::new(SUBSCRIPTION_BUFFER);
        let pod_reflector = pod_fanout.forward(
            "Pod",
            pod_store.clone(),
            watcher(
                Api::<CachedPod>::all(self.client.clone()),
                watcher::Config::default().fields(&format!("spec.nodeName={node_name}")),
            )
            .default_backoff()
            .reflect(pod_writer),
        );

        let (node_store, node_writer) = reflector::store::<Node>();
        let node_reflector = watcher(
            Api::<Node>::all(self.client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={node_name}")),
        )
        .default_backoff()
        .reflect(node_writer)
        .for_each(|_| futures::future::ready(()));

        let (rotation_store, rotation_writer) = reflector::store::<SpotRotation>();
        let (rotation_fanout, [rotation_stream, eviction_stream]) =
            Fanout::new(SUBSCRIPTION_BUFFER);
        let rotation_reflector = rotation_fanout.forward(
            "SpotRotation",
            rotation_store.clone(),
            watcher(
                Api::<SpotRotation>::all(self.client.clone()),
                watcher::Config::default()
                    .labels(&format!("{NODE_LABEL}={}", node_label_value(&node_name))),
            )
            .default_backoff()
            .reflect(rotation_writer),
        );
        let (policy_store, policy_writer) = reflector::store::<SpotRotationPolicy>();
        let policy_reflector = watcher(
            Api::<SpotRotationPolicy>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(policy_writer)
        .for_each(|_| futures::future::ready(()));

        // Only the webhook reads namespaces (their labels send pods to ECI).
        let (namespace_store, namespace_writer) = reflector::store::<Namespace>();
        let namespace_reflector = {
            let watch = self.webhook.is_some().then(|| {
                watcher(
                    Api::<Namespace>::all(self.client.clone()),
                    watcher::Config::default(),
                )
                .default_backoff()
                .modify(|namespace| {
                    namespace.managed_fields_mut().clear();
                    namespace.annotations_mut().clear();
                    namespace.spec = None;
                    namespace.status = None;
                })
                .reflect(namespace_writer)
                .for_each(|_| futures::future::ready(()))
            });
            async move {
                match watch {
                    Some(watch) => watch.await,
                    None => futures::future::pending().await,
                }
            }
        };

        let profile_changes = watcher(
            Api::<ConfigMap>::namespaced(self.client.clone(), vk_eci_core::profile::NAMESPACE),
            watcher::Config::default()
                .fields(&format!("metadata.name={}", vk_eci_core::profile::NAME)),
        )
        .default_backoff();

        let kubelet_listener = match &self.kubelet {
            Some(config) => Some(crate::kubelet::bind(config).await?),
            None => None,
        };
        let (health, _) = watch::channel(EciHealth::Reachable);
        let ctx = Arc::new(Context {
            client: self.client.clone(),
            eci,
            settings: Arc::new(self.settings.clone()),
            version: env!("CARGO_PKG_VERSION"),
            metrics: metrics.clone(),
            leadership: leadership.clone(),
            recorder: EventRecorder::new(
                self.client.clone(),
                Context::reporter(Some(self.identity.clone())),
            ),
            profile: ProfileHolder::default(),
            health,
            pods: pod_store.clone(),
        });
        if self.settings.simulated {
            tracing::warn!(
                node = %node_name,
                "SIMULATOR MODE (--simulator): pods on this node run in an ECI SIMULATOR, not on Alibaba Cloud"
            );
        }

        let ready = Arc::new(AtomicBool::new(false));
        let readiness = {
            let ready = ready.clone();
            let (pods, node) = (pod_store.clone(), node_store.clone());
            let webhook_inputs = self
                .webhook
                .is_some()
                .then(|| (namespace_store.clone(), ctx.profile.clone()));
            async move {
                let mut synced =
                    pods.wait_until_ready().await.is_ok() && node.wait_until_ready().await.is_ok();
                // A webhook answering before these synced would send pods the wrong way.
                if let Some((namespaces, profile)) = webhook_inputs {
                    synced = synced && namespaces.wait_until_ready().await.is_ok();
                    profile.synced().await;
                }
                if synced {
                    ready.store(true, Ordering::Release);
                    info!("informer caches synced");
                }
                futures::future::pending::<()>().await;
            }
        };
        let liveness = Liveness::default();
        // A round of the election takes at most its renew deadline plus its retry period.
        let election_beat = liveness.register(
            "leader election",
            (self.leader_timing.renew_deadline + self.leader_timing.retry_period) * 3,
        );
        let sync_beat = liveness.register("status sync", eci_status::STUCK_AFTER);
        let admin = serve_admin(
            self.admin,
            AdminState {
                metrics: metrics.clone(),
                ready,
                liveness,
            },
            shutdown.clone(),
        );
        let leader_gauge = {
            let mut leadership = leadership.clone();
            let metrics = metrics.clone();
            async move {
                loop {
                    leadership.acquired().await;
                    metrics.leader.set(1);
                    leadership.lost().await;
                    metrics.leader.set(0);
                }
            }
        };

        let webhook = {
            let state = Arc::new(WebhookState {
                profile: ctx.profile.clone(),
                namespaces: namespace_store,
                node: vk_eci_core::admission::VirtualNode::from_settings(
                    &self.settings,
                    ctx.version,
                ),
                live_node: node_store.clone(),
                metrics: metrics.clone(),
            });
            let serving = self.webhook.clone();
            let stopping = shutdown.clone();
            async move {
                match serving {
                    Some(serving) => webhook::serve(serving, state, stopping).await,
                    None => futures::future::pending().await,
                }
            }
        };
        let (status_handoff, status_inbox) = eci_status::handoff::channel();
        let pod_controller = pod_lifecycle::run(
            pod_lifecycle::PodController::new(ctx.clone(), status_handoff),
            pod_subscriber,
            acquisitions(leadership.clone()),
            shutdown.clone(),
        );
        let status_sync = eci_status::StatusSync::new(
            ctx.clone(),
            status_inbox,
            eci_status::StatusSyncConfig {
                full_every: self.full_sync_every,
                beat: sync_beat,
            },
        );
        let stopping = shutdown.clone();
        let spot = Arc::new(SpotContext {
            ctx: ctx.clone(),
            rotations: rotation_store,
            policies: policy_store,
        });
        let notices = spot::notice::run(
            spot.clone(),
            notice_pods,
            acquisitions(leadership.clone()),
            shutdown.clone(),
        );
        let rotations = spot::rotation::run(
            spot::rotation::Rotations::new(spot.clone()),
            rotation_stream,
            rotation_pods,
            acquisitions(leadership.clone()),
            shutdown.clone(),
        );
        let evictions = spot::eviction::run(
            spot,
            eviction_stream,
            eviction_pods,
            acquisitions(leadership.clone()),
            shutdown.clone(),
        );
        let kubelet_api = {
            let (ctx, config, stopping) = (ctx.clone(), self.kubelet.clone(), shutdown.clone());
            async move {
                match (config, kubelet_listener) {
                    (Some(config), Some(listener)) => {
                        crate::kubelet::serve(ctx, config, listener, stopping.clone()).await?;
                        stopping.await;
                        futures::future::pending::<Result<(), OperatorError>>().await
                    }
                    _ => futures::future::pending::<Result<(), OperatorError>>().await,
                }
            }
        };
        let work = async move {
            tokio::select! {
                () = pod_reflector => {}
                () = rotation_reflector => {}
                () = policy_reflector => {}
                () = notices => {}
                () = rotations => {}
                () = evictions => {}
                () = node_reflector => {}
                () = namespace_reflector => {}
                result = webhook => result?,
                () = profile::follow(ctx.clone(), profile_changes) => {}
                () = pod_controller => {}
                () = status_sync.run() => {}
                () = Heartbeat::new(ctx.clone(), node_store).run() => {}
                () = readiness => {}
                () = leader_gauge => {}
                result = admin => result?,
                result = kubelet_api => result?,
            }
            if stopping.peek().is_some() {
                // Stopping on request: the election hands the lease back, then returns.
                return futures::future::pending().await;
            }
            Err(OperatorError::ControllerStopped)
        };
        tokio::select! {
            result = elector.run(shutdown.clone(), election_beat) => {
                result?;
                info!("stopped; leader lease released");
                Ok(())
            }
            result = work => {
                if let Err(error) = &result {
                    error!(%error, "vk-eci stops");
                }
                result
            }
        }
    }
}

/// One item each time this replica becomes the leader.
fn acquisitions(leadership: Leadership) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(leadership, |mut leadership| async move {
        leadership.lost().await;
        leadership.acquired().await;
        Some(((), leadership))
    })
}

async fn serve_admin(
    addr: Option<SocketAddr>,
    state: AdminState,
    shutdown: ShutdownSignal,
) -> Result<(), OperatorError> {
    let Some(addr) = addr else {
        return futures::future::pending().await;
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| OperatorError::Admin { addr, source })?;
    info!(%addr, "admin server: /metrics /healthz /readyz");
    axum::serve(listener, admin::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| OperatorError::Admin { addr, source })?;
    futures::future::pending().await
}
