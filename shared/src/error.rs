//! The one error type every route answers with: an HTTP status and a stable
//! `{"error":{"code","message","requestId"}}` body. Internal causes are logged with
//! the request id and never echoed.

use lambda_http::http::StatusCode;
use serde_json::json;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (body, path or query).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: no usable identity in the authorizer's claims.
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    /// 403: identified, but lacking the scope this route needs.
    #[error("{0}")]
    Forbidden(String),
    /// 404: nothing of the caller's org by that name.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// 409: conflicts with the current state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 413
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// 422: well-formed but refused (e.g. Twilio rejected the credentials).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// 429: a limit of the caller's org is reached; allowed again in
    /// `retry_after_secs` (sent as the `Retry-After` header).
    #[error("{message}")]
    TooManyRequests {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    /// 503: a dependency is down; worth retrying later.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// 500: a bug or an unexpected failure. The cause is logged, not shown.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// 401 with the general `unauthenticated` code.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::Unauthenticated {
            code: "unauthenticated",
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::Internal(cause.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable code the frontend can switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::NotFound { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::TooManyRequests { code, .. }
            | Self::Unavailable { code, .. }
            | Self::Unauthenticated { code, .. } => code,
            Self::Forbidden(_) => "forbidden",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Internal(_) => "internal",
        }
    }

    /// Seconds after which the request may succeed (the `Retry-After` header).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::TooManyRequests {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The JSON body. `Internal` says only that something went wrong and which
    /// request id to quote.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        let message = match self {
            Self::Internal(_) => {
                "Something went wrong on our side. Quote the request id when reporting it."
                    .to_owned()
            }
            other => other.to_string(),
        };
        json!({"error": {"code": self.code(), "message": message, "requestId": request_id}})
    }
}

impl From<crate::db::DbError> for ApiError {
    /// A lost database is a 503; a constraint a request ran into is a 4xx with a
    /// stable code ([`constraint_error`]); anything else is a 500.
    fn from(e: crate::db::DbError) -> Self {
        if let Some(api) = e.constraint().and_then(constraint_error) {
            tracing::info!(
                constraint = e.constraint(),
                "request refused by a database constraint"
            );
            return api;
        }
        match e {
            crate::db::DbError::Pool(_) => Self::Unavailable {
                code: "database_unavailable",
                message: "The database is unavailable; try again shortly.".into(),
            },
            e if e.is_connection_lost() => Self::Unavailable {
                code: "database_unavailable",
                message: "The database connection was lost; try again shortly.".into(),
            },
            other => Self::internal(other),
        }
    }
}

/// Every constraint of the schema (`migrations/`) that a request's values can
/// reach, as the 4xx it means. Constraints only a bug can reach (envelope shape,
/// the release CHECKs) stay 500s. A test per entry is in `shared/tests/db.rs`.
pub fn constraint_error(constraint: &str) -> Option<ApiError> {
    let (status, code, message) = match constraint {
        "managed_phone_numbers_one_owner" => (
            409,
            "number_taken",
            "this number already belongs to an organisation",
        ),
        "phone_number_mapping_one_route" => (
            409,
            "number_already_routed",
            "this number already routes to an organisation",
        ),
        "org_credentials_one_slot" => (
            409,
            "credential_slot_taken",
            "the organisation's credential slot was written concurrently; try again",
        ),
        "audit_log_actor_check" => (
            401,
            "unrecordable_subject",
            "the token's sub claim cannot be recorded (1 to 256 characters)",
        ),
        "audit_log_target_check" | "org_credentials_metadata_check" => (
            422,
            "unrecordable_value",
            "a value of this request cannot be recorded",
        ),
        _ => return None,
    };
    Some(match status {
        401 => ApiError::Unauthenticated {
            code,
            message: message.into(),
        },
        409 => ApiError::Conflict {
            code,
            message: message.into(),
        },
        _ => ApiError::Unprocessable {
            code,
            message: message.into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_cause_is_never_in_the_body() {
        let e = ApiError::internal("connection string postgres://u:secret@h");
        let body = e.body("req-1").to_string();
        assert!(!body.contains("secret"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("req-1"));
    }

    #[test]
    fn body_shape() {
        let e = ApiError::bad_request("invalid_phone_number", "phone number must be E.164");
        assert_eq!(
            e.body("r"),
            json!({"error": {"code": "invalid_phone_number", "message": "phone number must be E.164", "requestId": "r"}})
        );
    }
}
