//! What Vapi and Twilio calls share: one HTTP client built at cold start, one log line
//! per call (provider, method, path template, status, duration; never a body or a
//! header), errors classified for retrying, and bounded exponential backoff (backon)
//! for the calls that are safe to repeat.

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;

/// Limits for provider calls.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// Per attempt, connect included.
    pub attempt_timeout: Duration,
    /// Attempts after the first, for retryable failures of idempotent calls.
    pub retries: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` a retry waits for; a provider asking for longer
    /// ends the call's retries.
    pub max_retry_after: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        // Worst case per call: 3 × 5 s + 0.2 + 0.4 s of backoff, inside API Gateway's 30 s.
        Self {
            attempt_timeout: Duration::from_secs(5),
            retries: 2,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(5),
        }
    }
}

impl CallPolicy {
    /// `PROVIDER_TIMEOUT_MS`, `PROVIDER_RETRIES`, `PROVIDER_MIN_BACKOFF_MS`,
    /// `PROVIDER_MAX_BACKOFF_MS`, `PROVIDER_MAX_RETRY_AFTER_MS`; defaults above.
    pub fn from_env(env: &crate::config::Env) -> Result<Self, crate::config::ConfigError> {
        let d = Self::default();
        let ms = |name, default: Duration| {
            env.parse_or(name, default.as_millis() as u64)
                .map(Duration::from_millis)
        };
        Ok(Self {
            attempt_timeout: ms("PROVIDER_TIMEOUT_MS", d.attempt_timeout)?,
            retries: env.parse_or("PROVIDER_RETRIES", d.retries)?,
            min_backoff: ms("PROVIDER_MIN_BACKOFF_MS", d.min_backoff)?,
            max_backoff: ms("PROVIDER_MAX_BACKOFF_MS", d.max_backoff)?,
            max_retry_after: ms("PROVIDER_MAX_RETRY_AFTER_MS", d.max_retry_after)?,
        })
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff)
            .with_max_times(self.retries)
            .with_jitter()
    }
}

/// The one HTTP client of a function instance for the providers (connection pool,
/// TLS, timeouts): HTTP/1.1 over [`crate::tls::client_config`], so building it reads
/// no certificate files.
pub fn http_client() -> Result<reqwest::Client, crate::tls::HttpClientError> {
    Ok(crate::tls::http_client_builder()?
        .connect_timeout(Duration::from_secs(3))
        .user_agent(concat!("telephony-backend/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// A failed provider call, classified. Carries the provider's error code and
/// message for logs and the pending-release record; never shown to API callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider} did not answer within the deadline")]
    Timeout { provider: &'static str },
    #[error("{provider} could not be reached")]
    Unreachable { provider: &'static str },
    #[error("{provider} answered {status}")]
    Status {
        provider: &'static str,
        status: u16,
        /// Twilio's numeric `code`, when given.
        code: Option<i64>,
        /// The provider's `message`, shortened.
        message: Option<String>,
    },
    #[error("{provider} answered with an unexpected body")]
    UnexpectedBody { provider: &'static str, status: u16 },
    /// The provider's router does not know the path (Vapi's JSON 404 `Cannot
    /// PATCH /credential/…`): the endpoint is gone from its API, or the base URL is
    /// wrong. Not "not found", and repeating it cannot help.
    #[error("{provider} does not know this endpoint")]
    UnknownRoute { provider: &'static str, status: u16 },
}

impl ProviderError {
    /// 408, 429, 5xx, timeouts and connection failures may succeed when repeated.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            Self::UnexpectedBody { .. } | Self::UnknownRoute { .. } => false,
        }
    }

    /// A call that creates something ended without saying whether it did: it may
    /// have been created. Never repeat such a call blind; look the thing up first.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            // A success status with a body we could not read.
            Self::UnexpectedBody { status, .. } => (200..300).contains(status),
            // The router refused the path: nothing was done.
            Self::UnknownRoute { .. } => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. }
            | Self::UnexpectedBody { status, .. }
            | Self::UnknownRoute { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn provider(&self) -> &'static str {
        match self {
            Self::Timeout { provider }
            | Self::Unreachable { provider }
            | Self::Status { provider, .. }
            | Self::UnexpectedBody { provider, .. }
            | Self::UnknownRoute { provider, .. } => provider,
        }
    }

    /// The provider's own "not found": Twilio 404 with code 20404, Vapi 404 in its
    /// JSON error shape. (A 404 without the provider's error JSON is
    /// [`ProviderError::UnexpectedBody`], never this.) Not proof that a thing is
    /// gone by itself: see [`ProviderError::is_gone`].
    pub fn says_not_found(&self) -> bool {
        match self {
            Self::Status {
                provider: "twilio",
                status: 404,
                code,
                ..
            } => *code == Some(20404),
            Self::Status {
                provider: "vapi",
                status: 404,
                ..
            } => true,
            _ => false,
        }
    }

    /// The provider's answer alone proves the thing does not exist: only Vapi's
    /// JSON 404 (its unknown-route 404 is already [`ProviderError::UnexpectedBody`]).
    /// Twilio's 20404 is not proof: its own error page lists a path that does not
    /// exist and a wrong host or base URL among its causes, so a Twilio removal
    /// confirms "gone" with a read of the account first
    /// ([`crate::twilio::TwilioClient::release_number`]).
    pub fn is_gone(&self) -> bool {
        self.provider() == "vapi" && self.says_not_found()
    }

    pub fn provider_code(&self) -> Option<i64> {
        match self {
            Self::Status { code, .. } => *code,
            _ => None,
        }
    }

    /// A stable code for API responses and the database: `<provider>_<kind>`.
    pub fn stable_code(&self) -> &'static str {
        let provider = self.provider();
        let kind = match self {
            Self::Timeout { .. } => "timeout",
            Self::Status {
                status: 401 | 403, ..
            } => "unauthorized",
            Self::Status { status: 429, .. } => "rate_limited",
            Self::Status { status, .. } if *status >= 500 => "unavailable",
            Self::Unreachable { .. } => "unavailable",
            Self::Status { .. } => "rejected",
            // Kept as a bad response in general; the credential sync names it
            // (`vapi_credentials_unavailable`).
            Self::UnexpectedBody { .. } | Self::UnknownRoute { .. } => "bad_response",
        };
        match (provider, kind) {
            ("vapi", "timeout") => "vapi_timeout",
            ("vapi", "unauthorized") => "vapi_unauthorized",
            ("vapi", "rate_limited") => "vapi_rate_limited",
            ("vapi", "unavailable") => "vapi_unavailable",
            ("vapi", "rejected") => "vapi_rejected",
            ("vapi", _) => "vapi_bad_response",
            (_, "timeout") => "twilio_timeout",
            (_, "unauthorized") => "twilio_unauthorized",
            (_, "rate_limited") => "twilio_rate_limited",
            (_, "unavailable") => "twilio_unavailable",
            (_, "rejected") => "twilio_rejected",
            _ => "twilio_bad_response",
        }
    }
}

/// The error fields both providers use: Vapi `{"message","error","statusCode"}`
/// (`message` may be an array of strings), Twilio `{"code","message","more_info","status"}`.
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
    #[serde(rename = "statusCode")]
    status_code: Option<i64>,
}

impl ErrorBody {
    /// Whether the body has the provider's own error shape, so that a 404 in it
    /// means the provider looked and found nothing (not a wrong URL or a proxy).
    fn is_providers(&self, provider: &str) -> bool {
        match provider {
            "twilio" => self.code.is_some() && self.message.is_some(),
            _ => self.message.is_some() && (self.error.is_some() || self.status_code.is_some()),
        }
    }
}

fn error_from(provider: &'static str, status: StatusCode, body: &[u8]) -> ProviderError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let theirs = parsed.as_ref().is_some_and(|b| b.is_providers(provider));
    // Vapi's router answers an unknown path in its own JSON shape too ("Cannot
    // DELETE /v1/phone-number/…"): that 404 is about the URL, not the resource.
    let unknown_route = parsed
        .as_ref()
        .and_then(|b| b.message.as_ref())
        .and_then(|m| m.as_str())
        .is_some_and(|m| {
            ["GET", "POST", "PUT", "PATCH", "DELETE"]
                .iter()
                .any(|verb| m.starts_with(&format!("Cannot {verb} /")))
        });
    let status = status.as_u16();
    // A 4xx that is not in the provider's error JSON did not come from the
    // provider's API (a wrong base URL, a proxy's HTML page): nothing can be
    // concluded from it, least of all "not found". 401/403/408/429 and 5xx keep
    // their meaning whatever the body.
    let refusable = (400..500).contains(&status) && ![401, 403, 408, 429].contains(&status);
    if theirs && unknown_route && refusable {
        return ProviderError::UnknownRoute { provider, status };
    }
    if !theirs && refusable {
        return ProviderError::UnexpectedBody { provider, status };
    }
    let message = parsed.as_ref().and_then(|b| b.message.as_ref()).map(|m| {
        let text = match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        text.chars().take(200).collect()
    });
    ProviderError::Status {
        provider,
        status,
        code: parsed.and_then(|b| b.code),
        message,
    }
}

/// A successful answer: status and raw body.
pub struct Answer {
    pub status: StatusCode,
    pub body: bytes::Bytes,
}

/// Never the body: Twilio's account list carries every subaccount's auth token.
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Answer {
    pub fn json<T: for<'de> Deserialize<'de>>(
        &self,
        provider: &'static str,
    ) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|_| ProviderError::UnexpectedBody {
            provider,
            status: self.status.as_u16(),
        })
    }
}

/// One call, one attempt, one log line. `path` is the template (`/credential/{id}`),
/// so log lines group by endpoint and carry no identifiers.
pub async fn call_once(
    provider: &'static str,
    method: Method,
    path: &'static str,
    request: RequestBuilder,
    policy: &CallPolicy,
) -> Result<Answer, ProviderError> {
    attempt(provider, method, path, request, policy)
        .await
        .map_err(|f| f.error)
}

/// A failed attempt, with the provider's `Retry-After` (429 and 503 answers).
struct Failed {
    error: ProviderError,
    retry_after: Option<Duration>,
}

async fn attempt(
    provider: &'static str,
    method: Method,
    path: &'static str,
    request: RequestBuilder,
    policy: &CallPolicy,
) -> Result<Answer, Failed> {
    let started = Instant::now();
    let result = async {
        let resp = request.send().await?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let body = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, retry_after, body))
    };
    let outcome = tokio::time::timeout(policy.attempt_timeout, result).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let fail = |error| Failed {
        error,
        retry_after: None,
    };
    let answer = match outcome {
        Err(_) => Err(fail(ProviderError::Timeout { provider })),
        Ok(Err(e)) if e.is_timeout() => Err(fail(ProviderError::Timeout { provider })),
        Ok(Err(_)) => Err(fail(ProviderError::Unreachable { provider })),
        Ok(Ok((status, _, body))) if status.is_success() => Ok(Answer { status, body }),
        Ok(Ok((status, retry_after, body))) => Err(Failed {
            error: error_from(provider, status, &body),
            retry_after: retry_after.filter(|_| matches!(status.as_u16(), 429 | 503)),
        }),
    };
    let status = match &answer {
        Ok(a) => Some(a.status.as_u16()),
        Err(f) => f.error.status(),
    };
    tracing::info!(
        provider,
        method = %method,
        path,
        status,
        error = answer.as_ref().err().map(|f| f.error.stable_code()),
        retry_after_ms = answer
            .as_ref()
            .err()
            .and_then(|f| f.retry_after)
            .map(|d| d.as_millis() as u64),
        duration_ms,
        "provider call"
    );
    answer
}

/// `Retry-After` in seconds (Twilio, Vapi) or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.to_utc() - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// [`call_once`] with backoff for retryable failures. Only for idempotent calls
/// (GET, PATCH, DELETE); `build` makes a fresh request per attempt. A 429 or 503
/// that says `Retry-After` waits that long instead (at most
/// [`CallPolicy::max_retry_after`]; a longer wait ends the retries: the caller's
/// backoff or the next run takes over).
pub async fn call_idempotent<F>(
    provider: &'static str,
    method: Method,
    path: &'static str,
    build: F,
    policy: &CallPolicy,
) -> Result<Answer, ProviderError>
where
    F: Fn() -> RequestBuilder,
{
    (|| attempt(provider, method.clone(), path, build(), policy))
        .retry(policy.backoff())
        .sleep(tokio::time::sleep)
        .when(|f: &Failed| f.error.is_retryable())
        .adjust(|f: &Failed, backoff| match (f.retry_after, backoff) {
            (_, None) => None,
            (Some(wait), Some(_)) if wait > policy.max_retry_after => None,
            (Some(wait), Some(backoff)) => Some(wait.max(backoff)),
            (None, backoff) => backoff,
        })
        .await
        .map_err(|f| f.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(provider: &'static str, status: u16, body: &str) -> ProviderError {
        error_from(
            provider,
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
        )
    }

    #[test]
    fn gone_only_when_the_provider_said_so() {
        let twilio_404 = r#"{"code":20404,"message":"The requested resource was not found","more_info":"https://www.twilio.com/docs/errors/20404","status":404}"#;
        // Twilio's 20404 says "not found" but proves nothing alone (wrong base URL).
        assert!(err("twilio", 404, twilio_404).says_not_found());
        assert!(!err("twilio", 404, twilio_404).is_gone());
        let other_code = r#"{"code":20003,"message":"x","more_info":"y","status":404}"#;
        assert!(!err("twilio", 404, other_code).says_not_found());
        let vapi_404 = r#"{"message":"Not Found","error":"Not Found","statusCode":404}"#;
        assert!(err("vapi", 404, vapi_404).is_gone());
        let unknown_route = r#"{"message":"Cannot DELETE /v1/phone-number/abc","error":"Not Found","statusCode":404}"#;
        // Vapi's router: the path is unknown, not the thing.
        let e = err("vapi", 404, unknown_route);
        assert!(!e.is_gone() && !e.says_not_found() && !e.is_retryable() && !e.outcome_unknown());
        assert_eq!(
            e,
            ProviderError::UnknownRoute {
                provider: "vapi",
                status: 404
            }
        );
        assert_eq!(e.stable_code(), "vapi_bad_response");
        for bare in ["", "<html>404 Not Found</html>", "{}", r#"{"message":"x"}"#] {
            for p in ["vapi", "twilio"] {
                let e = err(p, 404, bare);
                assert!(!e.is_gone() && !e.says_not_found(), "{p} {bare:?}");
                assert_eq!(
                    e,
                    ProviderError::UnexpectedBody {
                        provider: p,
                        status: 404
                    }
                );
                assert!(e.stable_code().ends_with("_bad_response"));
            }
        }
    }

    #[test]
    fn an_answer_never_shows_its_body() {
        let a = Answer {
            status: StatusCode::OK,
            body: bytes::Bytes::from_static(br#"{"auth_token":"0123456789abcdef"}"#),
        };
        let debug = format!("{a:?}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
    }

    #[test]
    fn retryable_statuses_keep_their_meaning_without_json() {
        for status in [401, 408, 429, 500, 502, 503] {
            let e = err("twilio", status, "<html>");
            assert_eq!(e.status(), Some(status));
            assert!(matches!(e, ProviderError::Status { .. }));
        }
        assert!(err("vapi", 502, "bad gateway").is_retryable());
    }

    #[test]
    fn vapi_message_array_is_joined() {
        let e = err(
            "vapi",
            400,
            r#"{"message":["name must be shorter","accountSid must be a string"],"error":"Bad Request","statusCode":400}"#,
        );
        let ProviderError::Status { message, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            message.as_deref(),
            Some("name must be shorter; accountSid must be a string")
        );
    }
}
