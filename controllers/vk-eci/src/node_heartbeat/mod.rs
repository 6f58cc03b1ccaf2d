//! The node heartbeat: the virtual Node exists with our labels, taint and status, and its
//! Lease in `kube-node-lease` is renewed every 10 s. Node and status are written with
//! server-side apply under our field manager, so labels, taints and conditions that others
//! own stay theirs; the status is re-applied when it changes and at least every minute.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use tokio::time::Instant;
use tracing::{info, warn};
use vk_eci_core::node::{
    STATUS_REPORT_SECONDS, lease_spec, node_metadata, node_status, status_due,
};

use crate::runtime::context::{Context, FIELD_MANAGER};

const CONTROLLER: &str = "node";
/// Lease renewal period (the kubelet's).
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
const LEASE_NAMESPACE: &str = "kube-node-lease";

pub struct Heartbeat {
    ctx: Arc<Context>,
    /// This node, as the API server has it.
    node: Store<Node>,
    reported: Option<NodeStatus>,
    last_report: Option<DateTime<Utc>>,
}

impl Heartbeat {
    pub fn new(ctx: Arc<Context>, node: Store<Node>) -> Self {
        Self {
            ctx,
            node,
            reported: None,
            last_report: None,
        }
    }

    /// Beats while this replica leads; a deleted Node is recreated on the next beat, and a
    /// change of ECI health is reported at once.
    pub async fn run(mut self) {
        let mut leadership = self.ctx.leadership.clone();
        let mut health = self.ctx.health.subscribe();
        loop {
            if !leadership.is_leader() {
                leadership.acquired().await;
                self.reported = None;
                self.last_report = None;
            }
            let started = Instant::now();
            let result = self.beat().await;
            if let Err(error) = &result {
                warn!(%error, "node heartbeat failed");
            }
            self.ctx
                .metrics
                .reconciled(CONTROLLER, result.is_ok(), started.elapsed());
            let pause = if result.is_ok() {
                RENEW_EVERY
            } else {
                Duration::from_secs(2)
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = health.changed() => {}
                () = leadership.lost() => {}
            }
        }
    }

    fn node_api(&self) -> Api<Node> {
        Api::all(self.ctx.client.clone())
    }

    fn apply_params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    async fn beat(&mut self) -> Result<(), kube::Error> {
        let settings = &self.ctx.settings;
        let name = settings.node_name.clone();
        let cached = self.node.get(&ObjectRef::new(&name));
        let now = Utc::now();
        // The metadata is re-applied with every periodic status report too, so a label of
        // ours that someone removed comes back within a minute.
        let report_due = self
            .last_report
            .is_none_or(|at| (now - at).num_seconds() >= STATUS_REPORT_SECONDS);
        let node = match cached.filter(|n| n.metadata.deletion_timestamp.is_none()) {
            Some(node) if !report_due => node,
            _ => Arc::new(self.apply_node().await?),
        };
        self.renew_lease(&node, now).await?;
        let health = self.ctx.health.borrow().clone();
        let previous = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let desired = node_status(settings, &health, self.ctx.version, &previous, now);
        if status_due(self.reported.as_ref(), &desired, self.last_report, now) {
            let patch = json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": { "name": name },
                "status": desired,
            });
            self.node_api()
                .patch_status(&name, &Self::apply_params(), &Patch::Apply(&patch))
                .await?;
            self.reported = Some(desired);
            self.last_report = Some(now);
        }
        Ok(())
    }

    /// Creates or updates the Node's metadata and taint (our fields only).
    async fn apply_node(&self) -> Result<Node, kube::Error> {
        let settings = &self.ctx.settings;
        let (metadata, spec) = node_metadata(settings, self.ctx.version);
        let patch = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": settings.node_name,
                "labels": metadata.labels,
                "annotations": metadata.annotations,
            },
            "spec": spec,
        });
        let node = self
            .node_api()
            .patch(
                &settings.node_name,
                &Self::apply_params(),
                &Patch::Apply(&patch),
            )
            .await?;
        info!(node = %settings.node_name, simulated = settings.simulated, "virtual node registered");
        Ok(node)
    }

    async fn renew_lease(&self, node: &Node, now: DateTime<Utc>) -> Result<(), kube::Error> {
        let settings = &self.ctx.settings;
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node.name_any(),
            uid: node.uid().unwrap_or_default(),
            ..OwnerReference::default()
        };
        let patch = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": settings.node_name,
                "namespace": LEASE_NAMESPACE,
                "ownerReferences": [owner],
            },
            "spec": lease_spec(settings, now),
        });
        Api::<Lease>::namespaced(self.ctx.client.clone(), LEASE_NAMESPACE)
            .patch(
                &settings.node_name,
                &Self::apply_params(),
                &Patch::Apply(&patch),
            )
            .await?;
        Ok(())
    }
}
