//! Typed ECI errors: the gateway's error answers, classified by [`EciFailure`], and the
//! client's own failures (transport, timeout, unreadable answers, configuration).

use std::time::Duration;

use eci_types::error::{EciFailure, is_retryable_refusal};

#[derive(Debug, thiserror::Error)]
pub enum EciError {
    /// The gateway answered with an error body.
    #[error(
        "ECI {action} failed with {code} (HTTP {http_status}, RequestId {request_id}): {message}"
    )]
    Api {
        action: &'static str,
        code: String,
        message: String,
        request_id: String,
        http_status: u16,
        /// The gateway's `x-acs-retry-after` back-off, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The request did not complete: connection refused or reset, DNS, TLS.
    #[error("ECI {action}: transport error: {source}")]
    Transport {
        action: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// No answer within the per-request timeout.
    #[error("ECI {action}: no answer within {timeout:?}")]
    Timeout {
        action: &'static str,
        timeout: Duration,
    },
    /// The answer was not the JSON the action returns.
    #[error("ECI {action}: unreadable response (HTTP {http_status}): {reason}")]
    Decode {
        action: &'static str,
        http_status: u16,
        reason: String,
    },
    /// The request could not be encoded (a bug in the caller's request, not a remote error).
    #[error("ECI {action}: could not encode the request: {reason}")]
    Encode {
        action: &'static str,
        reason: String,
    },
    /// The client configuration is unusable.
    #[error("ECI client configuration: {0}")]
    Config(String),
}

impl EciFailure for EciError {
    fn refusal(&self) -> Option<(&str, &str)> {
        match self {
            EciError::Api { code, message, .. } => Some((code, message)),
            _ => None,
        }
    }

    fn http_status(&self) -> Option<u16> {
        match self {
            EciError::Api { http_status, .. } | EciError::Decode { http_status, .. } => {
                Some(*http_status)
            }
            _ => None,
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            EciError::Api {
                code, http_status, ..
            } => is_retryable_refusal(code, *http_status),
            EciError::Transport { .. } | EciError::Timeout { .. } => true,
            EciError::Decode { http_status, .. } => *http_status >= 500,
            EciError::Encode { .. } | EciError::Config(_) => false,
        }
    }
}

impl EciError {
    /// A short label for metrics: the code, or the kind of local failure.
    pub fn metric_label(&self) -> &str {
        match self {
            EciError::Api { code, .. } => code,
            EciError::Transport { .. } => "Transport",
            EciError::Timeout { .. } => "Timeout",
            EciError::Decode { .. } => "Decode",
            EciError::Encode { .. } => "Encode",
            EciError::Config(_) => "Config",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, status: u16) -> EciError {
        EciError::Api {
            action: "CreateContainerGroup",
            code: code.into(),
            message: "m".into(),
            request_id: "r".into(),
            http_status: status,
            retry_after: None,
        }
    }

    #[test]
    fn classifies_codes() {
        assert!(api("Throttling.User", 400).is_throttling());
        assert!(api("Throttling.User", 400).is_retryable());
        assert!(api("Throttling", 400).is_retryable());
        assert!(api("ServiceUnavailable", 503).is_retryable());
        assert!(api("InternalError", 500).is_retryable());
        assert!(!api("InvalidParameter", 400).is_retryable());
        assert!(!api("MissingParameter", 400).is_retryable());
        assert!(api("OperationDenied.NoStock", 403).is_no_stock());
        assert!(!api("OperationDenied.NoStock", 403).is_retryable());
        assert!(api("InvalidParameter.NotFound", 404).is_not_found());
        assert!(!api("InvalidAccessKeyId.NotFound", 404).is_not_found());
        assert!(api("InvalidAccessKeyId.NotFound", 404).is_auth());
        assert!(api("SignatureDoesNotMatch", 400).is_auth());
        assert!(!api("SignatureDoesNotMatch", 400).is_retryable());
    }
}
