//! Gateway errors as the real service renders them: HTTP status, `Code`, `Message`.

use eci_types::params::ParamError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn missing(name: &str) -> Self {
        Self::new(
            400,
            "MissingParameter",
            format!("{name} is mandatory for this action."),
        )
    }

    /// The gateway's own `Missing<Name>` codes for signature parameters.
    pub fn missing_named(name: &str) -> Self {
        Self::new(
            400,
            format!("Missing{name}"),
            format!("{name} is mandatory for this action."),
        )
    }

    pub fn invalid(name: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            400,
            "InvalidParameter",
            format!("Specified parameter {name} is not valid. {reason}"),
        )
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(404, "InvalidParameter.NotFound", format!("{what}"))
    }

    pub fn incorrect_status(id: &str, status: &str) -> Self {
        Self::new(
            400,
            "IncorrectStatus",
            format!(
                "The current status of the resource {id} ({status}) does not support this operation."
            ),
        )
    }

    pub fn unknown_action() -> Self {
        Self::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            500,
            "InternalError",
            "The request processing has failed due to some unknown error.",
        )
    }

    pub fn unavailable() -> Self {
        Self::new(
            503,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        )
    }
}

impl From<ParamError> for ApiError {
    fn from(error: ParamError) -> Self {
        match error {
            ParamError::Missing(name) => ApiError::missing(&name),
            ParamError::Invalid { name, reason } => ApiError::invalid(&name, reason),
        }
    }
}
