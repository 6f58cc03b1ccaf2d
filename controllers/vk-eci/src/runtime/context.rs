//! What the controllers share: the clients, the settings, the informer cache readers, the
//! leadership flag, the current ECI profile and the last ECI health seen.

use std::sync::{Arc, RwLock};

use eci_client::EciClient;
use eci_types::EciFailure;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::PatchParams;
use kube::runtime::events::{Event, Reporter};
use kube::runtime::reflector::Store;
use tokio::sync::watch;
use tracing::warn;
use vk_eci_core::cache::CachedPod;
use vk_eci_core::node::EciHealth;
use vk_eci_core::profile::Profile;
use vk_eci_core::settings::Settings;
use vk_eci_core::translate::NodeConfig;

use crate::runtime::events::EventRecorder;
use crate::runtime::leader::Leadership;
use crate::runtime::metrics::Metrics;

/// The field manager of every write vk-eci makes.
pub const FIELD_MANAGER: &str = "vk-eci";

/// The parameters of every merge patch vk-eci makes: its field manager.
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// The `eci-profile` as last parsed successfully (a malformed update keeps this one), and
/// whether the first watch of it has been seen whole (present or not).
#[derive(Debug, Clone)]
pub struct ProfileHolder {
    profile: Arc<RwLock<Option<Arc<Profile>>>>,
    synced: Arc<watch::Sender<bool>>,
}

impl Default for ProfileHolder {
    fn default() -> Self {
        Self {
            profile: Arc::default(),
            synced: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl ProfileHolder {
    pub fn current(&self) -> Option<Arc<Profile>> {
        self.profile.read().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn set(&self, profile: Option<Profile>) {
        if let Ok(mut slot) = self.profile.write() {
            *slot = profile.map(Arc::new);
        }
    }

    /// The first listing of the profile has been applied.
    pub fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    /// Resolves once [`Self::mark_synced`] has been called.
    pub async fn synced(&self) {
        let mut synced = self.synced.subscribe();
        // The sender lives in `self`, so the wait cannot end with the channel closed.
        let _ = synced.wait_for(|synced| *synced).await;
    }
}

pub struct Context {
    pub client: kube::Client,
    pub eci: EciClient,
    pub settings: Arc<Settings>,
    pub version: &'static str,
    pub metrics: Arc<Metrics>,
    pub leadership: Leadership,
    /// Events go out through [`Context::publish`].
    pub(super) recorder: EventRecorder,
    pub profile: ProfileHolder,
    pub health: watch::Sender<EciHealth>,
    /// Pods bound to this node (field-selected watch).
    pub pods: Store<CachedPod>,
}

impl Context {
    pub fn node_config(&self) -> NodeConfig {
        let settings = &self.settings;
        NodeConfig {
            cluster_id: settings.cluster_id.clone(),
            node_name: settings.node_name.clone(),
            vswitches: settings.vswitches.clone(),
            security_group: settings.security_group.clone(),
            resource_group: settings.resource_group.clone(),
            cluster_dns: settings.cluster_dns.map(|ip| ip.to_string()),
            cluster_domain: settings.cluster_domain.clone(),
        }
    }

    /// Records what the last ECI call said about ECI's availability, for the Node's Ready
    /// condition.
    pub fn observe_eci<T>(&self, result: &Result<T, eci_client::EciError>) {
        let health = match result {
            Ok(_) => EciHealth::Reachable,
            Err(error) if error.is_auth() => EciHealth::CredentialsRejected(error.to_string()),
            Err(error) if error.is_retryable() && !error.is_throttling() => {
                EciHealth::Unreachable(error.to_string())
            }
            Err(_) => return,
        };
        self.health.send_if_modified(|current| {
            let changed = *current != health;
            *current = health;
            changed
        });
    }

    /// Publishes `event` about `about`. An Event is a record, not a step: failing to publish
    /// one is logged, never fatal.
    pub async fn publish(&self, event: &Event, about: &ObjectReference) {
        if let Err(error) = self.recorder.publish(event, about).await {
            warn!(
                object = about.name.as_deref().unwrap_or_default(),
                reason = %event.reason,
                %error,
                "cannot publish an event"
            );
        }
    }

    pub fn reporter(instance: Option<String>) -> Reporter {
        Reporter {
            controller: "vk-eci".into(),
            instance,
        }
    }
}
