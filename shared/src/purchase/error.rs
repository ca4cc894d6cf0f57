//! How a purchase can fail, and what the caller is told.

use crate::credential::byoc_in_use;
use crate::db::DbError;
use crate::error::ApiError;
use crate::providers::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum PurchaseError {
    #[error("the organisation uses its own Twilio account")]
    ByocInUse,
    /// The org is being offboarded (or was): nothing new is bought.
    #[error("the organisation is being offboarded")]
    OrgOffboarding,
    /// The org's token is being promoted (a rotation's last provider step).
    #[error("the organisation's Twilio token is being rotated")]
    TokenRotating,
    #[error("another organisation holds this number")]
    Taken,
    #[error("Twilio no longer offers this number")]
    Unavailable,
    #[error("Twilio says this number is invalid")]
    InvalidNumber,
    #[error("this number needs a registered address")]
    AddressRequired,
    /// Vapi does not know the assistant (checked before buying).
    #[error("Vapi has no such assistant")]
    UnknownAssistant,
    #[error("the platform's Twilio account may not buy numbers ({0})")]
    AccountRestricted(ProviderError),
    #[error("Twilio refused the purchase: {0}")]
    TwilioRefused(ProviderError),
    /// Bought, but could not be finished (Vapi refused the import, or the steps
    /// failed `RECONCILE_MAX_ATTEMPTS` times): what was bought is released.
    #[error("the purchase was undone at {step}: {error}")]
    Undone {
        step: &'static str,
        error: ProviderError,
        /// Failed too often (not refused).
        gave_up: bool,
        /// Released already (else pending release, finished by reconcile).
        released: bool,
    },
    /// Failed `RECONCILE_MAX_ATTEMPTS` times before anything was bought: closed.
    #[error("the purchase failed too often at {0}: {1}")]
    GaveUp(&'static str, ProviderError),
    #[error("the number is being released")]
    BeingReleased,
    #[error("the number routes to another organisation")]
    RoutedElsewhere,
    /// The org bought `per_day` numbers in the last 24 hours (see
    /// [`super::PurchaseLimit`]); the next purchase is allowed at `next_at`, in
    /// `retry_after_secs` (both by the database's clock). Nothing was recorded.
    #[error("the organisation's limit of {per_day} purchases in 24 hours is reached")]
    LimitReached {
        per_day: u32,
        next_at: chrono::DateTime<chrono::Utc>,
        retry_after_secs: u64,
    },
    /// A repeat of a purchase that has started buying (or has finished) asked for
    /// another assistant or name: what the caller asked for is fixed once money
    /// moved. `differs` names the request's fields that differ; `assistant` and
    /// `name` are what the purchase keeps.
    #[error("the purchase started with other values ({})", differs.join(", "))]
    Differs {
        differs: Vec<&'static str>,
        assistant: Option<String>,
        name: Option<String>,
        sms_enabled: bool,
    },
    /// The number changed state between two statements; try the intent again.
    #[error("the number changed state; try again")]
    Retry,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl PurchaseError {
    /// The stable code an audit row of a closed intent records.
    pub(super) fn refusal_code(&self) -> &'static str {
        match self {
            Self::Unavailable => "number_unavailable",
            Self::OrgOffboarding => "org_offboarding",
            Self::TokenRotating => "token_rotation_in_progress",
            Self::InvalidNumber => "invalid_phone_number",
            Self::AddressRequired => "address_required",
            Self::UnknownAssistant => "unknown_assistant",
            Self::AccountRestricted(_) => "purchasing_unavailable",
            Self::TwilioRefused(_) => "twilio_refused_purchase",
            _ => "refused",
        }
    }
}

impl From<tokio_postgres::Error> for PurchaseError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<PurchaseError> for ApiError {
    fn from(e: PurchaseError) -> Self {
        let conflict = |code, message: &str| ApiError::Conflict {
            code,
            message: message.into(),
        };
        let unprocessable = |code, message: String| ApiError::Unprocessable { code, message };
        match e {
            PurchaseError::ByocInUse => byoc_in_use(),
            PurchaseError::OrgOffboarding => crate::offboard::org_offboarding(),
            PurchaseError::TokenRotating => crate::rotation::token_rotation_in_progress(),
            PurchaseError::Taken => conflict("number_taken", "This number is not available."),
            PurchaseError::Unavailable => conflict(
                "number_unavailable",
                "Twilio no longer offers this number (another buyer may have taken it); search again and pick another. Nothing was bought.",
            ),
            PurchaseError::InvalidNumber => unprocessable(
                "invalid_phone_number",
                "Twilio says this number is not a valid number to buy. Nothing was bought.".into(),
            ),
            PurchaseError::AddressRequired => unprocessable(
                "address_required",
                "This number needs a registered address, which is not supported yet; pick a number that needs none. Nothing was bought.".into(),
            ),
            PurchaseError::UnknownAssistant => unprocessable(
                "unknown_assistant",
                "Vapi has no assistant with this assistantId; nothing was bought.".into(),
            ),
            PurchaseError::AccountRestricted(p) => {
                tracing::error!(error = %p, code = p.stable_code(), "the main Twilio account may not buy numbers");
                ApiError::Unavailable {
                    code: "purchasing_unavailable",
                    message: "Numbers cannot be bought right now; nothing was bought. Support has been told.".into(),
                }
            }
            PurchaseError::TwilioRefused(p) => unprocessable(
                "twilio_refused_purchase",
                format!(
                    "Twilio refused the purchase (HTTP {}{}). Nothing was bought.",
                    p.status().unwrap_or_default(),
                    p.provider_code().map(|c| format!(", code {c}")).unwrap_or_default()
                ),
            ),
            PurchaseError::Undone {
                step,
                error,
                gave_up,
                released,
            } => {
                let what_was_bought = if released {
                    "was released and is not billed"
                } else {
                    "is being released (see its status)"
                };
                if gave_up {
                    ApiError::Unavailable {
                        code: "purchase_failed",
                        message: format!(
                            "The purchase could not be finished ({step}: {}), so it was undone: the number {what_was_bought}. Try again later.",
                            error.stable_code()
                        ),
                    }
                } else {
                    unprocessable(
                        "vapi_refused_import",
                        format!(
                            "Vapi refused the number ({}), so the purchase was undone: the number {what_was_bought}.",
                            error.stable_code()
                        ),
                    )
                }
            }
            PurchaseError::GaveUp(step, p) => ApiError::Unavailable {
                code: "purchase_failed",
                message: format!(
                    "The purchase could not be finished ({step}: {}); nothing was bought. Try again later.",
                    p.stable_code()
                ),
            },
            PurchaseError::BeingReleased => conflict(
                "number_being_released",
                "This number of your organisation is being released; buy it again once it is released.",
            ),
            PurchaseError::RoutedElsewhere => conflict(
                "number_already_routed",
                "This number already routes to another organisation.",
            ),
            PurchaseError::LimitReached {
                per_day,
                next_at,
                retry_after_secs,
            } => ApiError::TooManyRequests {
                code: "purchase_limit_reached",
                message: format!(
                    "Your organisation has bought its limit of {per_day} {} in the last 24 hours; the next purchase is possible from {} (in {}). Nothing was bought.",
                    if per_day == 1 { "number" } else { "numbers" },
                    next_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    in_words(retry_after_secs),
                ),
                retry_after_secs,
            },
            PurchaseError::Differs {
                differs,
                assistant,
                name,
                sms_enabled,
            } => ApiError::Conflict {
                code: "purchase_differs",
                message: format!(
                    "This number's purchase has started buying with assistantId {}, name {} and smsEnabled {sms_enabled}; a repeat must ask for the same (this one differs in {}). Change the assistant once it is active.",
                    assistant.as_deref().map_or("(none)".into(), |a| format!("\"{a}\"")),
                    name.as_deref().map_or("(none)".into(), |n| format!("\"{n}\"")),
                    differs.join(" and "),
                ),
            },
            PurchaseError::Retry => ApiError::Unavailable {
                code: "try_again",
                message: "The number changed state while buying it; try again.".into(),
            },
            PurchaseError::Db(db) => db.into(),
        }
    }
}

/// A wait as a person reads it, rounded up to the minute: "3 h 12 min", "12 min",
/// "40 s".
fn in_words(secs: u64) -> String {
    if secs < 60 {
        return format!("{secs} s");
    }
    let minutes = secs.div_ceil(60);
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_a_429_saying_how_many_and_when() {
        let next_at = chrono::DateTime::parse_from_rfc3339("2026-11-25T14:03:00Z")
            .unwrap()
            .to_utc();
        let e = ApiError::from(PurchaseError::LimitReached {
            per_day: 10,
            next_at,
            retry_after_secs: 3 * 3600 + 11 * 60 + 5,
        });
        assert_eq!(
            (e.status().as_u16(), e.code()),
            (429, "purchase_limit_reached")
        );
        assert_eq!(e.retry_after_secs(), Some(11465));
        let message = e.to_string();
        assert!(
            message.contains("limit of 10 numbers in the last 24 hours"),
            "{message}"
        );
        assert!(
            message.contains("from 2026-11-25T14:03:00Z (in 3 h 12 min)"),
            "{message}"
        );
        assert!(message.contains("Nothing was bought"), "{message}");
    }

    #[test]
    fn waits_in_words() {
        for (secs, words) in [
            (0, "0 s"),
            (59, "59 s"),
            (60, "1 min"),
            (61, "2 min"),
            (3600, "1 h"),
            (3601, "1 h 1 min"),
            (86_400, "24 h"),
        ] {
            assert_eq!(in_words(secs), words, "{secs}");
        }
    }
}
