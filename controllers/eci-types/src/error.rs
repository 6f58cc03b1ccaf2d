//! ECI's error codes and what they tell a caller, so code that never makes a call (the core's
//! create-failure policy) can tell stock-outs from throttling from bad parameters.

use std::fmt;

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

/// A failed ECI call: the gateway's error answer, or a failure to get one. The client's error
/// type implements it; the classification of the gateway's codes is here.
pub trait EciFailure: fmt::Display {
    /// The code and message of the gateway's error answer, if the gateway answered.
    fn refusal(&self) -> Option<(&str, &str)>;

    /// The HTTP status of the answer, if one came (readable or not).
    fn http_status(&self) -> Option<u16>;

    /// Worth trying again with the same ClientToken: throttling, 5xx, network trouble.
    fn is_retryable(&self) -> bool;

    /// The gateway's error code, if the gateway answered.
    fn code(&self) -> Option<&str> {
        self.refusal().map(|(code, _)| code)
    }

    /// Flow control of any kind (`Throttling`, `Throttling.User`, `Throttling.Api`, ...).
    fn is_throttling(&self) -> bool {
        is_throttling(self.code(), self.http_status())
    }

    /// Out of stock for the requested spec or zone, synchronously.
    fn is_no_stock(&self) -> bool {
        self.code().is_some_and(|c| {
            c == code::NO_STOCK || c == code::SPOT_NOT_MATCHED || c.contains("NoStock")
        })
    }

    /// The container group does not exist.
    fn is_not_found(&self) -> bool {
        self.code()
            .is_some_and(|c| c.ends_with(".NotFound") && !c.starts_with("InvalidAccessKeyId"))
            || self.http_status() == Some(404) && self.code().is_none()
    }

    /// The credentials were rejected: retrying will not help, an operator must act.
    fn is_auth(&self) -> bool {
        self.code().is_some_and(|c| {
            c.starts_with("InvalidAccessKeyId")
                || c == code::SIGNATURE_MISMATCH
                || c == "IncompleteSignature"
                || c.starts_with("Forbidden")
                || c == "NoPermission"
                || c.starts_with("InvalidSecurityToken")
        })
    }
}

/// Whether the gateway's error answer is worth trying again: throttling, or trouble on its
/// side (5xx, `ServiceUnavailable`, `InternalError`).
pub fn is_retryable_refusal(code: &str, http_status: u16) -> bool {
    is_throttling(Some(code), Some(http_status))
        || code == code::SERVICE_UNAVAILABLE
        || code == code::INTERNAL_ERROR
        || http_status >= 500
}

fn is_throttling(code: Option<&str>, http_status: Option<u16>) -> bool {
    code.is_some_and(|c| c.starts_with("Throttling") || c == "Rejected.Throttling")
        || http_status == Some(429)
}
