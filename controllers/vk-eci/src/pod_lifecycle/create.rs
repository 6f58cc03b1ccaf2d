//! Pod → container group: fetch what the pod refers to, translate, create with the pod UID as
//! ClientToken (a retry, a failover or a lost response can never make a second instance),
//! then record the instance id on the pod.
//!
//! A retried create first adopts what ECI already has for the pod (by its UID tag): the
//! earlier attempt may have made the group without our hearing of it, and this attempt's
//! parameters can differ from it (each attempt mints a fresh service account token), which
//! ECI answers with `IdempotentParameterMismatch` rather than replaying the group.

use chrono::Utc;
use eci_types::EciFailure;
use eci_types::error::code::IDEMPOTENT_MISMATCH;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{info, warn};
use vk_eci_core::annotations::{EciAnnotations, FAIL_ON_CREATE_ERR, INSTANCE_ID};
use vk_eci_core::cache::CachedPod;
use vk_eci_core::lifecycle::{
    CreateFailure, CreateRetry, create_backoff, create_failure, definitive,
};
use vk_eci_core::ownership::adoptable;
use vk_eci_core::translate::{References, Refusal, translate};

use super::{Error, PodController, groups, writes};

impl PodController {
    pub(super) async fn create(&self, cached: &CachedPod) -> Result<Action, Error> {
        let ctx = &self.ctx;
        // The cache keeps every annotation: a pod backing off is requeued without a read.
        let retry = CreateRetry::of(cached.annotations());
        if let Some(wait) = retry.wait(Utc::now()) {
            return Ok(Action::requeue(wait));
        }
        // The cache keeps only what the controllers read after the create (see
        // `vk_eci_core::cache`); the translation reads the whole pod, as it is now, and the
        // writes below go by that read (its resourceVersion and conditions).
        let Some(pod) =
            Api::<Pod>::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default())
                .get_opt(&cached.name_any())
                .await?
                .filter(|p| p.uid() == cached.uid())
        else {
            return Ok(Action::await_change());
        };
        if pod.metadata.deletion_timestamp.is_some() || pod.annotations().contains_key(INSTANCE_ID)
        {
            // Deleted or created meanwhile: the watch brings that change.
            return Ok(Action::await_change());
        }
        let pod = &pod;
        let current = &CachedPod::from(pod);
        if retry.attempts > 0 && self.adopt(current).await? {
            return Ok(Action::await_change());
        }
        let profile = ctx.profile.current();
        let mut for_eci = pod.clone();
        if let Some(profile) = profile.as_ref().filter(|p| !p.selectors.is_empty()) {
            let namespace = Api::<Namespace>::all(ctx.client.clone())
                .get_opt(&pod.namespace().unwrap_or_default())
                .await?;
            let namespace_labels = namespace.map(|n| n.labels().clone()).unwrap_or_default();
            let added = profile.additions(pod.annotations(), pod.labels(), &namespace_labels);
            for_eci.annotations_mut().extend(added.annotations);
            for_eci.labels_mut().extend(added.labels);
        }
        let references = self.references(&for_eci).await?;
        let translation = match translate(
            &for_eci,
            &ctx.node_config(),
            profile.as_ref().map(|p| &p.network),
            &references,
        ) {
            Ok(translation) => translation,
            Err(refusal) => return self.refused(current, &retry, refusal).await,
        };
        for warning in &translation.warnings {
            writes::event(
                ctx,
                current,
                EventType::Warning,
                "UnsupportedFeature",
                warning.clone(),
            )
            .await;
        }
        let mut request = translation.request;
        let uid = pod.uid().unwrap_or_default();
        request.client_token = Some(retry.client_token(&uid));
        let result = ctx.eci.call(&request).await;
        ctx.observe_eci(&result);
        match result {
            Ok(created) => {
                self.created(current, &created.container_group_id, "created")
                    .await?;
                Ok(Action::await_change())
            }
            Err(error) if error.code() == Some(IDEMPOTENT_MISMATCH) => {
                if self.adopt(current).await? {
                    return Ok(Action::await_change());
                }
                // The token is spent on parameters ECI will not replay, and no group exists
                // for it: the next attempt needs a new token.
                let next = retry.failed(true, Utc::now());
                warn!(pod = %pod.name_any(), attempt = next.attempts, "create token already used with other parameters; retrying with a new one");
                writes::record_retry(ctx, current, &next).await?;
                Ok(Action::requeue(create_backoff(next.attempts)))
            }
            Err(error) => {
                let next = retry.failed(definitive(&error), Utc::now());
                match create_failure(&error, &translation.annotations, next.attempts) {
                    CreateFailure::Retry {
                        reason,
                        message,
                        after,
                    } => {
                        warn!(pod = %pod.name_any(), %reason, attempt = next.attempts, "create failed; retrying in {after:?}");
                        writes::event(ctx, current, EventType::Warning, &reason, message.clone())
                            .await;
                        writes::not_created(ctx, current, &reason, &message).await?;
                        writes::record_retry(ctx, current, &next).await?;
                        Ok(Action::requeue(after))
                    }
                    CreateFailure::Fail { reason, message } => {
                        warn!(pod = %pod.name_any(), %reason, "create failed; the pod fails");
                        writes::event(ctx, current, EventType::Warning, &reason, message.clone())
                            .await;
                        writes::fail(ctx, current, &reason, &message).await?;
                        Ok(Action::await_change())
                    }
                }
            }
        }
    }

    /// Records a group made for `pod`; one whose pod went away meanwhile is deleted.
    async fn created(&self, pod: &CachedPod, id: &str, how: &str) -> Result<(), Error> {
        let ctx = &self.ctx;
        if !writes::record_instance_id(ctx, pod, id).await? {
            info!(pod = %pod.name_any(), %id, "pod gone during create; deleting its container group");
            return groups::delete(ctx, id).await;
        }
        info!(pod = %pod.name_any(), %id, "container group {how}");
        writes::event(
            ctx,
            pod,
            EventType::Normal,
            "ContainerGroupCreated",
            format!("ECI container group {id} {how}"),
        )
        .await;
        self.status_sync.group_created();
        Ok(())
    }

    /// Takes on the group ECI already holds for the pod, if any.
    async fn adopt(&self, pod: &CachedPod) -> Result<bool, Error> {
        let ctx = &self.ctx;
        let uid = pod.uid().unwrap_or_default();
        let found = groups::of_pod(ctx, &uid).await?;
        let settings = &ctx.settings;
        let Some(group) = adoptable(&found, &settings.cluster_id, &settings.node_name, &uid) else {
            return Ok(false);
        };
        self.created(
            pod,
            &group.container_group_id,
            "adopted (made by an earlier attempt)",
        )
        .await?;
        Ok(true)
    }

    /// A pod that cannot become a container group as it is.
    async fn refused(
        &self,
        pod: &CachedPod,
        retry: &CreateRetry,
        refusal: Refusal,
    ) -> Result<Action, Error> {
        let ctx = &self.ctx;
        writes::event(
            ctx,
            pod,
            EventType::Warning,
            refusal.reason,
            refusal.message.clone(),
        )
        .await;
        // Read the flag by hand: a refusal may come from the annotations failing to parse.
        let fail_on_error = pod
            .annotations()
            .get(FAIL_ON_CREATE_ERR)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if fail_on_error && !refusal.is_transient() {
            writes::fail(ctx, pod, refusal.reason, &refusal.message).await?;
            return Ok(Action::await_change());
        }
        // Nothing reached ECI: the ClientToken stays.
        let next = retry.failed(false, Utc::now());
        writes::not_created(ctx, pod, refusal.reason, &refusal.message).await?;
        writes::record_retry(ctx, pod, &next).await?;
        Ok(Action::requeue(create_backoff(next.attempts)))
    }

    /// The ConfigMaps, Secrets and service account token the pod refers to; what does not
    /// exist is left out (translation then says what is missing).
    async fn references(&self, pod: &Pod) -> Result<References, Error> {
        let ctx = &self.ctx;
        let namespace = pod.namespace().unwrap_or_default();
        let wanted = vk_eci_core::translate::references(pod);
        let mut references = References::default();
        let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
        for name in wanted.config_maps {
            if let Some(found) = config_maps.get_opt(&name).await? {
                references.config_maps.insert(name, found);
            }
        }
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        for name in wanted.secrets {
            if let Some(found) = secrets.get_opt(&name).await? {
                references.secrets.insert(name, found);
            }
        }
        if wanted.service_account_token {
            references.service_account_token = self.token(pod, &namespace).await;
        }
        Ok(references)
    }

    /// A token for the pod's service account, bound to the pod.
    async fn token(&self, pod: &Pod, namespace: &str) -> Option<String> {
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(3607),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.name_any()),
                    uid: pod.uid(),
                }),
            },
            ..TokenRequest::default()
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(self.ctx.client.clone(), namespace);
        match accounts
            .create_token_request(&account, &PostParams::default(), &request)
            .await
        {
            Ok(issued) => issued.status.map(|s| s.token),
            Err(error) => {
                warn!(pod = %pod.name_any(), %account, %error, "cannot issue a service account token");
                None
            }
        }
    }
}

/// The annotations the pod's create used, for decisions after it (a pod whose annotations no
/// longer parse gets the defaults).
pub fn annotations_of(pod: &CachedPod) -> EciAnnotations {
    EciAnnotations::parse(pod.annotations()).unwrap_or_default()
}
