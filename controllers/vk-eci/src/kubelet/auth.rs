//! Authentication and authorization like the kubelet's webhook mode: a client certificate
//! verified against `--kubelet-client-ca` (user from CN, groups from O) or a bearer token
//! through `TokenReview`; then a `SubjectAccessReview` on `nodes/<node>`. Results are cached
//! briefly (tokens 2 min, allowed 5 min, denied 30 s), keyed by a hash of the token so the
//! cache never holds one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use tracing::warn;
use vk_eci_core::kubelet::authz::{Attributes, Identity, TtlCache, certificate_identity};

use crate::tls::Peer;

const TOKEN_TTL: Duration = Duration::from_secs(120);
const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
const CACHE_ENTRIES: usize = 4096;

/// Why a request is refused before it reaches a handler.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 401: no usable credentials.
    #[error("Unauthorized")]
    Unauthenticated,
    /// 403.
    #[error("Forbidden (user={user}, verb={verb}, resource=nodes, subresource={subresource})")]
    Forbidden {
        user: String,
        verb: &'static str,
        subresource: &'static str,
    },
    /// 503: the API server could not be asked.
    #[error("cannot review the request with the API server: {0}")]
    Review(String),
}

type TokenKey = [u8; 32];

pub struct Authenticator {
    client: kube::Client,
    node: String,
    tokens: Mutex<TtlCache<TokenKey, Option<Identity>>>,
    decisions: Mutex<TtlCache<(Identity, Attributes), bool>>,
}

fn token_key(token: &str) -> TokenKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Authenticator {
    pub fn new(client: kube::Client, node: String) -> Self {
        Self {
            client,
            node,
            tokens: Mutex::new(TtlCache::new(CACHE_ENTRIES)),
            decisions: Mutex::new(TtlCache::new(CACHE_ENTRIES)),
        }
    }

    /// Who is asking: the verified client certificate first, then a bearer token.
    pub async fn authenticate(
        &self,
        peer: Option<&Peer>,
        headers: &HeaderMap,
    ) -> Result<Identity, AuthError> {
        if let Some(identity) = peer
            .and_then(|p| p.certificates.first())
            .and_then(|leaf| certificate_identity(leaf.as_ref()))
        {
            return Ok(identity);
        }
        let token = bearer(headers).ok_or(AuthError::Unauthenticated)?;
        let key = token_key(token);
        let cached = self
            .tokens
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key, Instant::now()));
        let identity = match cached {
            Some(identity) => identity,
            None => {
                let identity = self.review_token(token).await?;
                if let Ok(mut cache) = self.tokens.lock() {
                    cache.insert(key, identity.clone(), TOKEN_TTL, Instant::now());
                }
                identity
            }
        };
        identity.ok_or(AuthError::Unauthenticated)
    }

    async fn review_token(&self, token: &str) -> Result<Option<Identity>, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| {
                warn!(%error, "TokenReview failed");
                AuthError::Review(error.to_string())
            })?;
        let Some(status) = answer.status.filter(|s| s.authenticated == Some(true)) else {
            return Ok(None);
        };
        let Some(user) = status.user else {
            return Ok(None);
        };
        let Some(name) = user.username.filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let mut extra: Vec<(String, Vec<String>)> =
            user.extra.unwrap_or_default().into_iter().collect();
        extra.sort();
        Ok(Some(Identity {
            user: name,
            groups: user.groups.unwrap_or_default(),
            uid: user.uid,
            extra,
        }))
    }

    /// Whether `identity` may do `attributes` on this node.
    pub async fn authorize(
        &self,
        identity: &Identity,
        attributes: &Attributes,
    ) -> Result<(), AuthError> {
        let key = (identity.clone(), attributes.clone());
        let cached = self
            .decisions
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key, Instant::now()));
        let allowed = match cached {
            Some(allowed) => allowed,
            None => {
                let allowed = self.review_access(identity, attributes).await?;
                let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
                if let Ok(mut cache) = self.decisions.lock() {
                    cache.insert(key, allowed, ttl, Instant::now());
                }
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                user: identity.user.clone(),
                verb: attributes.verb,
                subresource: attributes.subresource,
            })
        }
    }

    async fn review_access(
        &self,
        identity: &Identity,
        attributes: &Attributes,
    ) -> Result<bool, AuthError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(identity.user.clone()),
                groups: Some(identity.groups.clone()),
                uid: identity.uid.clone(),
                extra: (!identity.extra.is_empty())
                    .then(|| identity.extra.iter().cloned().collect()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(attributes.subresource.into()),
                    name: Some(self.node.clone()),
                    verb: Some(attributes.verb.into()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| {
                warn!(%error, "SubjectAccessReview failed");
                AuthError::Review(error.to_string())
            })?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bearer_tokens_are_read_from_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer abc.def".parse().unwrap(),
        );
        assert_eq!(bearer(&headers), Some("abc.def"));
        headers.insert(
            http::header::AUTHORIZATION,
            "Basic dXNlcjpwdw==".parse().unwrap(),
        );
        assert_eq!(bearer(&headers), None);
        headers.insert(http::header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn token_keys_are_digests_not_tokens() {
        let key = token_key("secret-token");
        assert_ne!(&key[..12], b"secret-token");
        assert_eq!(key, token_key("secret-token"));
        assert_ne!(key, token_key("other-token"));
    }
}
