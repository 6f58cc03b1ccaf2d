//! The ECI OpenAPI client: signs, rate-limits, retries and decodes.

use std::sync::Arc;
use std::time::Duration;

use eci_types::EciFailure as _;
use eci_types::params::to_params;
use eci_types::wire::*;
use rand::Rng as _;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderValue};
use tracing::{debug, warn};

use crate::action::Action;
use crate::credentials::Credentials;
use crate::error::EciError;
use crate::ratelimit::{RateLimiter, RateLimits};
use crate::redact::Redactions;
use crate::sign::{self, V3Request};

pub const API_VERSION: &str = "2018-08-08";

/// Which signature the client puts on requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureVersion {
    /// `ACS3-HMAC-SHA256` headers, parameters in the query (what current SDKs send).
    #[default]
    V3,
    /// Legacy HMAC-SHA1 query signature, parameters in a form body.
    V1,
}

/// Retries with full-jitter exponential back-off.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The pause before attempt `attempt + 1` (`attempt` counts from 1). A gateway
    /// `x-acs-retry-after` is honoured with the jitter added on top, so that callers throttled
    /// together do not all come back at the same instant.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponential = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_delay);
        let jittered = exponential.mul_f64(rand::rng().random_range(0.5..=1.0));
        match retry_after {
            Some(asked) => asked.min(Duration::from_secs(120)) + jittered,
            None => jittered,
        }
    }
}

/// Reports every finished call, for metrics.
pub trait CallObserver: Send + Sync {
    /// `outcome` is `"Success"` or the error's metric label; `rate_limited` says whether the
    /// client-side limiter made the call wait.
    fn observe(&self, action: &'static str, outcome: &str, elapsed: Duration, rate_limited: bool);
}

#[derive(Debug, Clone)]
pub struct EciClientConfig {
    pub region: String,
    /// `https://eci.<region>.aliyuncs.com` unless overridden (the simulator, a VPC endpoint).
    pub endpoint: Option<String>,
    pub credentials: Credentials,
    pub signature: SignatureVersion,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub rate_limits: RateLimits,
}

impl EciClientConfig {
    pub fn new(region: impl Into<String>, credentials: Credentials) -> Self {
        Self {
            region: region.into(),
            endpoint: None,
            credentials,
            signature: SignatureVersion::default(),
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            rate_limits: RateLimits::default(),
        }
    }

    pub fn endpoint_url(&self) -> Result<Url, EciError> {
        let text = match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!("https://eci.{}.aliyuncs.com", self.region),
        };
        let url = Url::parse(&text)
            .map_err(|e| EciError::Config(format!("invalid ECI endpoint `{text}`: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(EciError::Config(format!(
                "invalid ECI endpoint `{text}`: expected http(s)://host[:port]"
            )));
        }
        Ok(url)
    }
}

/// Installs rustls' ring provider as the process default (once; later calls are no-ops).
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// A cheaply clonable ECI client.
#[derive(Clone)]
pub struct EciClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: EciClientConfig,
    endpoint: Url,
    host: String,
    limiter: RateLimiter,
    observer: Option<Arc<dyn CallObserver>>,
}

impl std::fmt::Debug for EciClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EciClient")
            .field("region", &self.inner.config.region)
            .field("endpoint", &self.inner.endpoint.as_str())
            .field(
                "access_key_id",
                &self.inner.config.credentials.access_key_id,
            )
            .finish_non_exhaustive()
    }
}

impl EciClient {
    pub fn new(config: EciClientConfig) -> Result<Self, EciError> {
        Self::build(config, None)
    }

    /// A client that reports every finished call to `observer` (metrics).
    pub fn with_observer(
        config: EciClientConfig,
        observer: Arc<dyn CallObserver>,
    ) -> Result<Self, EciError> {
        Self::build(config, Some(observer))
    }

    fn build(
        config: EciClientConfig,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Result<Self, EciError> {
        install_crypto_provider();
        let endpoint = config.endpoint_url()?;
        let host = match (endpoint.host_str(), endpoint.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(EciError::Config("ECI endpoint has no host".into())),
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("vk-eci/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EciError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                limiter: RateLimiter::new(&config.rate_limits),
                http,
                endpoint,
                host,
                config,
                observer,
            }),
        })
    }

    pub fn region(&self) -> &str {
        &self.inner.config.region
    }

    /// Sends one action, waiting for the rate limiter and retrying what is retryable.
    pub async fn call<A: Action>(&self, request: &A) -> Result<A::Response, EciError> {
        let mut params = to_params(request).map_err(|e| EciError::Encode {
            action: A::NAME,
            reason: e.to_string(),
        })?;
        if !params.iter().any(|(name, _)| name == "RegionId") {
            params.push(("RegionId".to_string(), self.inner.config.region.clone()));
        }
        let redactions = Redactions::new(&self.inner.config.credentials, &params);
        let started = tokio::time::Instant::now();
        let rate_limited = self.inner.limiter.bucket(A::NAME).acquire().await;
        let policy = &self.inner.config.retry;
        let mut attempt = 1;
        let result = loop {
            let result = self.send::<A>(&params, &redactions).await;
            match result {
                Err(error) if error.is_retryable() && attempt < policy.max_attempts => {
                    let retry_after = match &error {
                        EciError::Api { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let delay = policy.delay(attempt, retry_after);
                    debug!(action = A::NAME, attempt, ?delay, error = %error, "retrying ECI call");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                    self.inner.limiter.bucket(A::NAME).acquire().await;
                }
                other => break other,
            }
        };
        if let Err(error) = &result {
            warn!(action = A::NAME, attempts = attempt, error = %error, "ECI call failed");
        }
        if let Some(observer) = &self.inner.observer {
            let outcome = match &result {
                Ok(_) => "Success",
                Err(error) => error.metric_label(),
            };
            observer.observe(A::NAME, outcome, started.elapsed(), rate_limited);
        }
        result
    }

    /// One attempt. Every error it returns has been scrubbed with `redactions`.
    async fn send<A: Action>(
        &self,
        params: &[(String, String)],
        redactions: &Redactions,
    ) -> Result<A::Response, EciError> {
        let inner = &self.inner;
        let credentials = &inner.config.credentials;
        let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let request = match inner.config.signature {
            SignatureVersion::V3 => {
                let query =
                    sign::canonical_query(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                let mut url = inner.endpoint.clone();
                url.set_path("/");
                url.set_query(if query.is_empty() { None } else { Some(&query) });
                let mut signed: Vec<(&str, &str)> = vec![
                    ("host", &inner.host),
                    ("x-acs-action", A::NAME),
                    ("x-acs-version", API_VERSION),
                    ("x-acs-date", &timestamp),
                    ("x-acs-signature-nonce", &nonce),
                    ("x-acs-content-sha256", sign::EMPTY_BODY_SHA256),
                ];
                if let Some(token) = &credentials.security_token {
                    signed.push(("x-acs-security-token", token.expose()));
                }
                let v3 = V3Request {
                    method: "POST",
                    query: params
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                    signed_headers: signed.clone(),
                    payload_hash: sign::EMPTY_BODY_SHA256,
                };
                let authorization = v3.authorization(
                    &credentials.access_key_id,
                    credentials.access_key_secret.expose(),
                );
                let mut headers = HeaderMap::new();
                for (name, value) in signed
                    .iter()
                    .chain([&("authorization", authorization.as_str())])
                {
                    let value = HeaderValue::from_str(value).map_err(|_| EciError::Encode {
                        action: A::NAME,
                        reason: format!("header {name} is not valid ASCII"),
                    })?;
                    if let Ok(name) = reqwest::header::HeaderName::from_bytes(name.as_bytes()) {
                        headers.insert(name, value);
                    }
                }
                headers.insert("accept", HeaderValue::from_static("application/json"));
                inner.http.post(url).headers(headers)
            }
            SignatureVersion::V1 => {
                let mut all: Vec<(&str, &str)> = params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                all.extend([
                    ("Action", A::NAME),
                    ("Version", API_VERSION),
                    ("Format", "JSON"),
                    ("AccessKeyId", credentials.access_key_id.as_str()),
                    ("SignatureMethod", "HMAC-SHA1"),
                    ("SignatureVersion", "1.0"),
                    ("SignatureNonce", &nonce),
                    ("Timestamp", &timestamp),
                ]);
                if let Some(token) = &credentials.security_token {
                    all.push(("SecurityToken", token.expose()));
                }
                let string_to_sign = sign::v1_string_to_sign("POST", all.iter().copied());
                let signature =
                    sign::v1_signature(credentials.access_key_secret.expose(), &string_to_sign);
                all.push(("Signature", &signature));
                let body = sign::canonical_query(all.iter().copied());
                let mut url = inner.endpoint.clone();
                url.set_path("/");
                inner
                    .http
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("accept", "application/json")
                    .body(body)
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error::<A>(e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("x-acs-retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error::<A>(e))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| EciError::Decode {
                action: A::NAME,
                http_status: status,
                reason: redactions.scrub(&e.to_string()),
            });
        }
        let error: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|_| ErrorBody {
            code: format!("Http{status}"),
            // Scrubbed before it is cut short, so no secret survives in part.
            message: redactions
                .scrub(&String::from_utf8_lossy(&body))
                .chars()
                .take(512)
                .collect(),
            ..ErrorBody::default()
        });
        Err(EciError::Api {
            action: A::NAME,
            code: error.code,
            message: redactions.scrub(&error.message),
            request_id: error.request_id,
            http_status: status,
            retry_after,
        })
    }

    fn transport_error<A: Action>(&self, error: reqwest::Error) -> EciError {
        // The URL carries request parameters; errors must not.
        let error = error.without_url();
        if error.is_timeout() {
            EciError::Timeout {
                action: A::NAME,
                timeout: self.inner.config.timeout,
            }
        } else {
            EciError::Transport {
                action: A::NAME,
                source: error,
            }
        }
    }

    /// Every container group matching `filter`, following `NextToken` to the end.
    pub async fn describe_all_container_groups(
        &self,
        filter: &DescribeContainerGroupsRequest,
    ) -> Result<Vec<ContainerGroup>, EciError> {
        let mut request = filter.clone();
        request.next_token = None;
        let mut groups = Vec::new();
        loop {
            let page = self.call(&request).await?;
            groups.extend(page.container_groups);
            if page.next_token.is_empty() {
                return Ok(groups);
            }
            request.next_token = Some(page.next_token);
        }
    }

    /// What `keep` makes of every status record matching `filter`, following `NextToken` to
    /// the end. Each page is reduced as it arrives, so a caller that needs a little of each
    /// record never holds every record of a large listing at once.
    pub async fn describe_all_container_group_status<T>(
        &self,
        filter: &DescribeContainerGroupStatusRequest,
        mut keep: impl FnMut(ContainerGroupStatus) -> T,
    ) -> Result<Vec<T>, EciError> {
        let mut request = filter.clone();
        request.next_token = None;
        let mut records = Vec::new();
        loop {
            let page = self.call(&request).await?;
            records.extend(page.data.into_iter().map(&mut keep));
            if page.next_token.is_empty() {
                return Ok(records);
            }
            request.next_token = Some(page.next_token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_endpoint_is_regional_https() {
        let config = EciClientConfig::new("cn-beijing", Credentials::new("id", "secret"));
        assert_eq!(
            config.endpoint_url().unwrap().as_str(),
            "https://eci.cn-beijing.aliyuncs.com/"
        );
        let bad = EciClientConfig {
            endpoint: Some("ftp://x".into()),
            ..config
        };
        assert!(matches!(bad.endpoint_url(), Err(EciError::Config(_))));
    }

    #[test]
    fn retry_delay_grows_is_capped_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert!(policy.delay(1, None) <= Duration::from_millis(100));
        assert!(policy.delay(1, None) >= Duration::from_millis(50));
        assert!(policy.delay(8, None) <= Duration::from_secs(1));
        assert!(policy.delay(8, None) >= Duration::from_millis(500));
        let asked = policy.delay(1, Some(Duration::from_secs(3)));
        assert!(asked >= Duration::from_millis(3050) && asked <= Duration::from_millis(3100));
        let capped = policy.delay(1, Some(Duration::from_secs(900)));
        assert!(capped >= Duration::from_secs(120) && capped <= Duration::from_millis(120_100));
    }

    #[test]
    fn client_debug_shows_no_secret() {
        let client = EciClient::new(EciClientConfig::new(
            "cn-hangzhou",
            Credentials::new("LTAIvisible", "very-secret-secret").with_security_token("sts-tok-zz"),
        ))
        .unwrap();
        let shown = format!("{client:?}");
        assert!(shown.contains("LTAIvisible"));
        assert!(!shown.contains("very-secret-secret"));
        assert!(!shown.contains("sts-tok-zz"));
    }
}
