//! Typed ECI errors, so callers can tell stock-outs from throttling from bad parameters.

use std::time::Duration;

/// Error codes callers branch on.
pub mod code {
    pub const NO_STOCK: &str = "OperationDenied.NoStock";
    pub const SPOT_NOT_MATCHED: &str = "Spot.NotMatched";
    pub const NOT_FOUND: &str = "InvalidParameter.NotFound";
    pub const INCORRECT_STATUS: &str = "IncorrectStatus";
    pub const IDEMPOTENT_MISMATCH: &str = "IdempotentParameterMismatch";
    pub const THROTTLING_USER: &str = "Throttling.User";
    pub const INTERNAL_ERROR: &str = "InternalError";
    pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";
    pub const SIGNATURE_MISMATCH: &str = "SignatureDoesNotMatch";
    pub const ACCESS_KEY_NOT_FOUND: &str = "InvalidAccessKeyId.NotFound";
}

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

impl EciError {
    /// The gateway's error code, if the gateway answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            EciError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            EciError::Api { http_status, .. } | EciError::Decode { http_status, .. } => {
                Some(*http_status)
            }
            _ => None,
        }
    }

    /// Flow control of any kind (`Throttling`, `Throttling.User`, `Throttling.Api`, ...).
    pub fn is_throttling(&self) -> bool {
        self.code()
            .is_some_and(|c| c.starts_with("Throttling") || c == "Rejected.Throttling")
            || self.http_status() == Some(429)
    }

    /// Out of stock for the requested spec or zone, synchronously.
    pub fn is_no_stock(&self) -> bool {
        self.code().is_some_and(|c| {
            c == code::NO_STOCK || c == code::SPOT_NOT_MATCHED || c.contains("NoStock")
        })
    }

    /// The container group does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code()
            .is_some_and(|c| c.ends_with(".NotFound") && !c.starts_with("InvalidAccessKeyId"))
            || self.http_status() == Some(404) && self.code().is_none()
    }

    /// The credentials were rejected: retrying will not help, an operator must act.
    pub fn is_auth(&self) -> bool {
        self.code().is_some_and(|c| {
            c.starts_with("InvalidAccessKeyId")
                || c == code::SIGNATURE_MISMATCH
                || c == "IncompleteSignature"
                || c.starts_with("Forbidden")
                || c == "NoPermission"
                || c.starts_with("InvalidSecurityToken")
        })
    }

    /// Worth trying again with the same ClientToken: throttling, 5xx, network trouble.
    pub fn is_retryable(&self) -> bool {
        match self {
            EciError::Api {
                code, http_status, ..
            } => {
                self.is_throttling()
                    || code == code::SERVICE_UNAVAILABLE
                    || code == code::INTERNAL_ERROR
                    || *http_status >= 500
            }
            EciError::Transport { .. } | EciError::Timeout { .. } => true,
            EciError::Decode { http_status, .. } => *http_status >= 500,
            EciError::Encode { .. } | EciError::Config(_) => false,
        }
    }

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
