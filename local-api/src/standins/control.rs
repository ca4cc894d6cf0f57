//! The stand-ins' control endpoints (`/__control/…`): failure injection, a number
//! taken by another buyer, and the state.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Endpoint, FailMode, Refusal, Standins};

fn refused(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "message": message }))).into_response()
}

/// The modes `POST /__control/fail` takes (their parameters are beside them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum ModeName {
    #[serde(rename = "500")]
    ServerError,
    #[serde(rename = "429")]
    RateLimited,
    #[serde(rename = "timeout")]
    Timeout,
    #[serde(rename = "lost")]
    Lost,
    #[serde(rename = "late")]
    Late,
    #[serde(rename = "refuse")]
    Refuse,
    #[serde(rename = "lag")]
    Lag,
    #[serde(rename = "none")]
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct FailRequest {
    provider: Option<String>,
    endpoint: Option<Endpoint>,
    mode: ModeName,
    times: Option<u32>,
    /// `late`: how long after acting the answer comes.
    delay_ms: Option<u64>,
    /// `lag`: how long a new item stays out of lists.
    lag_ms: Option<u64>,
    /// `refuse`: the 4xx status (default 400), Twilio's code, the message.
    status: Option<u16>,
    code: Option<u32>,
    message: Option<String>,
}

impl FailRequest {
    /// The planned mode, or why the request makes no sense. `Ok(None)`: lookup lag
    /// (not a failure plan).
    fn mode(&self) -> Result<Option<FailMode>, String> {
        let given = |name: &str, v: bool| v.then(|| name.to_owned());
        let params: Vec<String> = [
            given("delayMs", self.delay_ms.is_some()),
            given("lagMs", self.lag_ms.is_some()),
            given("status", self.status.is_some()),
            given("code", self.code.is_some()),
            given("message", self.message.is_some()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let allowed: &[&str] = match self.mode {
            ModeName::Late => &["delayMs"],
            ModeName::Lag => &["lagMs"],
            ModeName::Refuse => &["status", "code", "message"],
            _ => &[],
        };
        if let Some(p) = params.iter().find(|p| !allowed.contains(&p.as_str())) {
            return Err(format!("{p} does not go with this mode"));
        }
        Ok(Some(match self.mode {
            ModeName::ServerError => FailMode::ServerError,
            ModeName::RateLimited => FailMode::RateLimited,
            ModeName::Timeout => FailMode::Timeout,
            ModeName::Lost => FailMode::Lost,
            ModeName::None => FailMode::None,
            ModeName::Late => match self.delay_ms {
                Some(ms) => FailMode::Late(Duration::from_millis(ms)),
                None => return Err("mode late needs delayMs".into()),
            },
            ModeName::Refuse => {
                if self.status.is_some_and(|s| !(400..500).contains(&s)) {
                    return Err("a refusal's status is a 4xx".into());
                }
                let vapi = self.provider.as_deref() == Some("vapi")
                    || self.endpoint.is_some_and(Endpoint::is_vapi);
                if vapi && self.code.is_some() {
                    return Err("Vapi's errors carry no code".into());
                }
                FailMode::Refuse(Refusal {
                    status: self.status,
                    code: self.code,
                    message: self.message.clone(),
                })
            }
            ModeName::Lag => {
                if self.lag_ms.is_none() {
                    return Err("mode lag needs lagMs".into());
                }
                if self.endpoint.is_some_and(|e| !e.lists()) {
                    return Err(
                        "lookup lag is for the list endpoints: Vapi list and credential, Twilio bought and subaccount"
                            .into(),
                    );
                }
                return Ok(None);
            }
        }))
    }
}

/// `POST /__control/fail`: `{"provider", "mode", "times"?}` for every endpoint of a
/// provider, or with `"endpoint"` (its provider may be left out) for one; `late`
/// takes `delayMs`, `refuse` `status`/`code`/`message`, `lag` `lagMs` (a provider
/// without an endpoint: each of its list endpoints). Answers the state.
pub(super) async fn fail(
    State(s): State<Standins>,
    req: Result<Json<FailRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return refused(e.body_text()),
    };
    match (req.provider.as_deref(), req.endpoint) {
        (Some(p), _) if p != "vapi" && p != "twilio" => {
            return refused("provider must be vapi or twilio".into());
        }
        (Some(p), Some(e)) if (p == "vapi") != e.is_vapi() => {
            return refused(format!("endpoint {} is not {p}'s", e.name()));
        }
        (None, None) => return refused("give a provider, an endpoint, or both".into()),
        _ => {}
    }
    let mode = match req.mode() {
        Ok(mode) => mode,
        Err(why) => return refused(why),
    };
    let lag = Duration::from_millis(req.lag_ms.unwrap_or_default());
    match (mode, req.provider.as_deref(), req.endpoint) {
        (Some(mode), _, Some(endpoint)) => s.fail_endpoint(endpoint, mode, req.times),
        (Some(mode), Some(provider), None) => s.fail(provider, mode, req.times),
        (None, _, Some(endpoint)) => s.lag(endpoint, lag, req.times),
        (None, Some(provider), None) => {
            for endpoint in Endpoint::ALL {
                if endpoint.lists() && endpoint.is_vapi() == (provider == "vapi") {
                    s.lag(endpoint, lag, req.times);
                }
            }
        }
        (_, None, None) => return refused("give a provider, an endpoint, or both".into()),
    }
    Json(s.state()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct TakeRequest {
    phone_number: String,
}

/// `POST /__control/take` `{"phoneNumber"}`: another buyer takes an available
/// number (a search no longer finds it; buying it is Twilio's 21422). 404 when it
/// is not offered.
pub(super) async fn take(
    State(s): State<Standins>,
    req: Result<Json<TakeRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return refused(e.body_text()),
    };
    if s.take(&req.phone_number) {
        Json(json!({ "phoneNumber": req.phone_number, "taken": true })).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": format!("{} is not available at Twilio", req.phone_number) })),
        )
            .into_response()
    }
}

pub(super) async fn state(State(s): State<Standins>) -> Json<Value> {
    Json(s.state())
}
