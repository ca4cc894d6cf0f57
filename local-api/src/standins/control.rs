//! The stand-ins' control endpoints (`/__control/…`): failure injection, a number
//! taken by another buyer, the state, drift made by hand and a fleet seeded in
//! bulk. Bodies are JSON; a malformed one (or an unknown property) is 400, and
//! every refusal answers `{"message"}`.
//!
//! - `POST /__control/fail` — failure injection (see the stand-ins' module doc);
//!   a `429` takes `"retryAfter"` (seconds, default 1), sent as `Retry-After`.
//! - `POST /__control/take` `{"phoneNumber"}` — another buyer takes an available
//!   number.
//! - `GET /__control/state` — what the stand-ins hold: `twilio_subaccounts` (by SID:
//!   `friendly_name`, `status`, `hasSecondaryToken`, `tokenRotations`),
//!   `twilio_numbers` (by `sub/PN`: `sid`, `account_sid`, `phone_number`,
//!   `friendly_name`, `voice_url`, `sms_url`), `vapi_phone_numbers` and
//!   `credentials` (by id, as Vapi answers them without secrets, each with
//!   `twilioToken`: `"primary"|"secondary"|"retired"|"unknown"|null`),
//!   `deadTokenCalls` (`[{"endpoint", "method", "accountSid", "at"}]`),
//!   `available_numbers`, the plans and lags. Never a token (the stand-ins'
//!   module doc says what the token fields mean).
//!
//! Drift made by hand, as in Twilio's console or Vapi's dashboard (`drift.rs`).
//! `ageSecs` (optional, default 0) makes the object that long ago, so it is past
//! an audit's grace period without waiting:
//!
//! - `POST /__control/twilio/numbers` `{"accountSid", "phoneNumber",
//!   "friendlyName"?, "ageSecs"?}` — a number bought in the console on that
//!   subaccount (no purchase operation in its name unless given; `voice_url` "").
//!   201 `{"sid", "accountSid", "phoneNumber", "friendlyName", "voiceUrl",
//!   "smsUrl"}`; 404 unknown account; 409 a closed account, or a number held
//!   already; 400 not E.164.
//! - `POST /__control/twilio/accounts` `{"friendlyName", "ageSecs"?}` — a
//!   subaccount created in the console (e.g. `org:<uuid>` of an org that does not
//!   exist), active, its token `subaccount_token(sid)`. 201 `{"sid",
//!   "friendlyName", "status"}`.
//! - `POST /__control/twilio/accounts/{sid}/status` `{"status": "active" |
//!   "suspended" | "closed"}` — as in the console, with the effects of `POST
//!   /Accounts/{sid}.json`: closing releases its numbers, for good. 200 `{"sid",
//!   "friendlyName", "status", "releasedNumbers"}`; 404 unknown; 409 a change to a
//!   closed account; 400 another status.
//! - `POST /__control/twilio/accounts/{sid}/rotate-token` (no body) — the
//!   subaccount's auth token rotated in the console: its primary replaced at once
//!   by a new random token, the old one and any secondary retired (both fail from
//!   now on; a Vapi call still carrying one is a dead-token call). 200
//!   `{"accountSid", "rotated": true}`, never the token (the main account reads it
//!   as the account's `auth_token`); 404 unknown (or the main account, never
//!   rotated); 409 a closed account.
//! - `POST /__control/twilio/voice-url` `{"phoneNumber", "voiceUrl"}` — the
//!   number's voice URL changed in the console. 200 with the number as above; 404
//!   when Twilio holds no such number.
//! - `POST /__control/vapi/numbers` `{"number", "twilioAccountSid",
//!   "assistantId"?, "name"?, "ageSecs"?}` — a number imported in Vapi's dashboard
//!   (Twilio need not hold it; if the account does, its URLs point at Vapi). 201
//!   with the number as the state shows it (`id`, `number`, `twilioAccountSid`,
//!   `assistantId`, `createdAt`, …); 400 a malformed number, SID or assistant.
//! - `DELETE /__control/vapi/numbers/{id}` — deleted in the dashboard. 204; 404
//!   unknown.
//! - `POST /__control/vapi/numbers/{id}/assistant` `{"assistantId": "<uuid>" |
//!   null}` — its assistant changed (or detached) there. 200 with the number; 404
//!   unknown; 400 a malformed or unknown assistant, or no `assistantId`.
//! - `POST /__control/fleet` `{"orgs", "numbersPerOrg", "seed", "describe"?,
//!   "ageSecs"?}` — a fleet seeded in bulk for a benchmark (`fleet.rs`). 201 with
//!   the counts and, unless `"describe": false`, every org and number made; 409 if
//!   any of it is held already.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ControlError, Endpoint, FailMode, FleetRequest, HandNumber, Refusal, Standins};

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
    /// `429`: the `Retry-After` in seconds (default 1).
    retry_after: Option<u64>,
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
            given("retryAfter", self.retry_after.is_some()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let allowed: &[&str] = match self.mode {
            ModeName::Late => &["delayMs"],
            ModeName::Lag => &["lagMs"],
            ModeName::Refuse => &["status", "code", "message"],
            ModeName::RateLimited => &["retryAfter"],
            _ => &[],
        };
        if let Some(p) = params.iter().find(|p| !allowed.contains(&p.as_str())) {
            return Err(format!("{p} does not go with this mode"));
        }
        if self.retry_after.is_some_and(|s| s > 3600) {
            return Err("retryAfter is 0 to 3600 seconds".into());
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
    if let (Some(FailMode::RateLimited), Some(secs)) = (&mode, req.retry_after) {
        let provider = match (req.provider.as_deref(), req.endpoint) {
            (Some(p), _) => p,
            (None, Some(e)) if e.is_vapi() => "vapi",
            _ => "twilio",
        };
        s.rate_limit(provider, req.endpoint, req.times, secs);
        return Json(s.state()).into_response();
    }
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

/// A refusal of a change by hand: its status with `{"message"}`.
fn control_error(e: &ControlError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(json!({ "message": e.message() }))).into_response()
}

/// What a change by hand answers: `ok` with its JSON, or its refusal.
fn answer(ok: StatusCode, result: Result<Value, ControlError>) -> Response {
    match result {
        Ok(v) => (ok, Json(v)).into_response(),
        Err(e) => control_error(&e),
    }
}

fn age(secs: Option<u64>) -> Duration {
    Duration::from_secs(secs.unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct TwilioNumberRequest {
    account_sid: String,
    phone_number: String,
    friendly_name: Option<String>,
    age_secs: Option<u64>,
}

/// `POST /__control/twilio/numbers`: a number bought in Twilio's console.
pub(super) async fn twilio_number(
    State(s): State<Standins>,
    req: Result<Json<TwilioNumberRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return refused(e.body_text()),
    };
    answer(
        StatusCode::CREATED,
        s.buy_by_hand(HandNumber {
            account_sid: &req.account_sid,
            phone_number: &req.phone_number,
            friendly_name: req.friendly_name.as_deref(),
            age: age(req.age_secs),
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct TwilioAccountRequest {
    friendly_name: String,
    age_secs: Option<u64>,
}

/// `POST /__control/twilio/accounts`: a subaccount created in Twilio's console.
pub(super) async fn twilio_account(
    State(s): State<Standins>,
    req: Result<Json<TwilioAccountRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return refused(e.body_text()),
    };
    answer(
        StatusCode::CREATED,
        s.create_subaccount_by_hand(&req.friendly_name, age(req.age_secs)),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct StatusRequest {
    status: String,
}

/// `POST /__control/twilio/accounts/{sid}/rotate-token` (no body): a subaccount's
/// auth token rotated in Twilio's console.
pub(super) async fn twilio_rotate_token(
    State(s): State<Standins>,
    Path(sid): Path<String>,
) -> Response {
    answer(StatusCode::OK, s.rotate_token_by_hand(&sid))
}

/// `POST /__control/twilio/accounts/{sid}/status`: a subaccount suspended,
/// reactivated or closed in Twilio's console.
pub(super) async fn twilio_account_status(
    State(s): State<Standins>,
    Path(sid): Path<String>,
    req: Result<Json<StatusRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return refused(e.body_text()),
    };
    answer(StatusCode::OK, s.set_subaccount_status(&sid, &req.status))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct VoiceUrlRequest {
    phone_number: String,
    voice_url: String,
}

/// `POST /__control/twilio/voice-url`: a number's voice URL changed in Twilio's
/// console.
pub(super) async fn twilio_voice_url(
    State(s): State<Standins>,
    req: Result<Json<VoiceUrlRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return refused(e.body_text()),
    };
    answer(
        StatusCode::OK,
        s.set_voice_url(&req.phone_number, &req.voice_url),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct VapiNumberRequest {
    number: String,
    twilio_account_sid: String,
    assistant_id: Option<String>,
    name: Option<String>,
    age_secs: Option<u64>,
}

/// `POST /__control/vapi/numbers`: a number imported in Vapi's dashboard.
pub(super) async fn vapi_number(
    State(s): State<Standins>,
    req: Result<Json<VapiNumberRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return refused(e.body_text()),
    };
    answer(
        StatusCode::CREATED,
        s.import_by_hand(
            &req.number,
            &req.twilio_account_sid,
            req.assistant_id.as_deref(),
            req.name.as_deref(),
            age(req.age_secs),
        ),
    )
}

/// `DELETE /__control/vapi/numbers/{id}`: a number deleted in Vapi's dashboard.
pub(super) async fn vapi_number_delete(
    State(s): State<Standins>,
    Path(id): Path<String>,
) -> Response {
    match s.delete_vapi_number(&id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => control_error(&e),
    }
}

/// `POST /__control/vapi/numbers/{id}/assistant` `{"assistantId": uuid | null}`:
/// the number's assistant changed in Vapi's dashboard.
pub(super) async fn vapi_number_assistant(
    State(s): State<Standins>,
    Path(id): Path<String>,
    req: Result<Json<Map<String, Value>>, JsonRejection>,
) -> Response {
    let Json(body) = match req {
        Ok(r) => r,
        Err(e) => return refused(e.body_text()),
    };
    if let Some(other) = body.keys().find(|k| *k != "assistantId") {
        return refused(format!("unknown field `{other}`, expected `assistantId`"));
    }
    let assistant = match body.get("assistantId") {
        Some(Value::Null) => None,
        Some(Value::String(a)) => Some(a.as_str()),
        Some(_) => return refused("assistantId is a UUID or null".into()),
        None => return refused("missing field `assistantId` (a UUID, or null to detach)".into()),
    };
    answer(StatusCode::OK, s.set_vapi_assistant(&id, assistant))
}

/// `POST /__control/fleet`: a fleet seeded in bulk (`fleet.rs`).
pub(super) async fn fleet(
    State(s): State<Standins>,
    req: Result<Json<FleetRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return refused(e.body_text()),
    };
    // Seeding a large fleet takes a moment: off the async workers.
    let seeded = tokio::task::spawn_blocking(move || s.seed_fleet(&req)).await;
    match seeded {
        Ok(Ok(fleet)) => (StatusCode::CREATED, Json(fleet)).into_response(),
        Ok(Err(e)) => control_error(&e),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "message": format!("seeding the fleet failed: {e}") })),
        )
            .into_response(),
    }
}
