//! Local stand-ins for Vapi and Twilio. They keep state (a released number is 404
//! the next time), check auth and bodies, answer with the providers' real error JSON,
//! and can be told to fail through the control endpoints (`control.rs`):
//!
//! - `POST /__control/fail` `{"provider"?: "vapi"|"twilio", "endpoint"?: …, "mode":
//!   "500"|"429"|"timeout"|"lost"|"none", "times": n?}` — the next `times` calls
//!   (all, if omitted) to that provider, or to that one endpoint, fail that way
//!   (`lost`: a call that changes something is carried out and its answer never
//!   comes, as when a timeout struck after the provider acted; elsewhere it is a
//!   timeout). Endpoints
//!   ([`Endpoint`]): Twilio `account` (an account read with its own credentials),
//!   `subaccount` (list, create or read accounts as the main account), `search`,
//!   `pricing`, `buy`, `bought` (the incoming-numbers list), `release`; Vapi
//!   `credential`, `import` (`POST /phone-number`), `list` (`GET /phone-number`),
//!   `route` (`PATCH /phone-number/{id}`), `delete`. An endpoint's plan comes before
//!   its provider's; `"mode": "none"` without an endpoint clears the provider's plan
//!   and all of its endpoints'.
//! - `POST /__control/take` `{"phoneNumber"}` — another buyer takes an available
//!   number: Twilio no longer offers it (21422 when bought).
//! - `GET /__control/state` — what the stand-ins hold (never a token).
//!
//! Vapi lives under `/vapi` (`vapi/`), Twilio under `/twilio/2010-04-01` and its
//! Pricing API under `/twilio-pricing/v1` (`twilio/`). Every other path under a
//! provider's prefix answers that provider's own 404 JSON (Vapi: `Cannot GET /x`;
//! Twilio: code 20404), and a wrong method Vapi's 404 or Twilio's 405 (code 20004):
//! a client never meets a 404 here that the real provider would not send.

mod control;
mod inventory;
mod twilio;
mod vapi;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

pub use inventory::{NumberType, Offer, seed_numbers};
pub use twilio::subaccount_token;
pub use vapi::SeededVapiNumber;

pub const LOCAL_VAPI_KEY: &str = "local-vapi-private-key";
pub const LOCAL_TWILIO_MAIN_SID: &str = "AC00000000000000000000000000000001";
pub const LOCAL_TWILIO_MAIN_TOKEN: &str = "11111111111111111111111111111111";
const REJECTED_TOKEN: &str = "00000000000000000000000000000000";

/// Where the stand-ins serve each provider.
pub const VAPI_PREFIX: &str = "/vapi";
pub const TWILIO_PREFIX: &str = "/twilio";
/// Twilio's REST API (`TWILIO_BASE_URL` is the stand-ins' address plus this).
pub const TWILIO_API_PREFIX: &str = "/twilio/2010-04-01";
/// Twilio's Pricing API (`TWILIO_PRICING_BASE_URL` is the address plus this).
pub const TWILIO_PRICING_PREFIX: &str = "/twilio-pricing/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum FailMode {
    #[serde(rename = "500")]
    ServerError,
    #[serde(rename = "429")]
    RateLimited,
    #[serde(rename = "timeout")]
    Timeout,
    /// The call is carried out, then its answer is lost (a timeout): what a client
    /// must look up before trying again. On endpoints that change nothing, a timeout.
    #[serde(rename = "lost")]
    Lost,
    #[serde(rename = "none")]
    None,
}

/// One provider endpoint failure injection can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// Twilio `GET /Accounts/{sid}.json` with the account's own credentials.
    Account,
    /// Twilio `GET`/`POST /Accounts.json`, `GET /Accounts/{sid}.json` as the main account.
    Subaccount,
    /// Twilio `GET …/AvailablePhoneNumbers/{ISO}/{Type}.json`.
    Search,
    /// Twilio Pricing `GET /PhoneNumbers/Countries/{ISO}`.
    Pricing,
    /// Twilio `POST …/IncomingPhoneNumbers.json`.
    Buy,
    /// Twilio `GET …/IncomingPhoneNumbers.json` and `…/{PN}.json`.
    Bought,
    /// Twilio `DELETE …/IncomingPhoneNumbers/{PN}.json`.
    Release,
    /// Vapi `/credential` (create, list, update).
    Credential,
    /// Vapi `POST /phone-number`.
    Import,
    /// Vapi `GET /phone-number` and `GET /phone-number/{id}`.
    List,
    /// Vapi `PATCH /phone-number/{id}`.
    Route,
    /// Vapi `DELETE /phone-number/{id}`.
    Delete,
    /// Vapi `GET /assistant/{id}`.
    Assistant,
}

impl Endpoint {
    /// Endpoints whose calls change something: a `lost` answer there means the
    /// change was made.
    fn acts(self) -> bool {
        matches!(
            self,
            Self::Subaccount
                | Self::Buy
                | Self::Release
                | Self::Credential
                | Self::Import
                | Self::Route
                | Self::Delete
        )
    }

    fn is_vapi(self) -> bool {
        matches!(
            self,
            Self::Credential
                | Self::Import
                | Self::List
                | Self::Route
                | Self::Delete
                | Self::Assistant
        )
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct FailPlan {
    mode: Option<FailMode>,
    /// `None`: every call until cleared.
    remaining: Option<u32>,
}

impl FailPlan {
    fn new(mode: FailMode, times: Option<u32>) -> Self {
        Self {
            mode: (mode != FailMode::None && times != Some(0)).then_some(mode),
            remaining: times,
        }
    }

    /// The planned mode for the next call, if `wanted`; counted only when taken.
    fn take(&mut self, wanted: impl Fn(FailMode) -> bool) -> Option<FailMode> {
        let mode = self.mode.filter(|m| wanted(*m))?;
        match &mut self.remaining {
            Some(0) => {
                self.mode = None;
                None
            }
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    self.mode = None;
                    self.remaining = None;
                }
                Some(mode)
            }
            None => Some(mode),
        }
    }
}

/// Everything both stand-ins hold, behind one lock (Vapi checks an import against
/// Twilio's accounts and numbers, as the real one does).
#[derive(Debug, Default)]
pub struct Inner {
    vapi: vapi::VapiState,
    twilio: twilio::TwilioState,
    vapi_fail: FailPlan,
    twilio_fail: FailPlan,
    endpoint_fail: BTreeMap<Endpoint, FailPlan>,
    /// The last time stamped on a Vapi object.
    last_stamp: Option<DateTime<Utc>>,
}

impl Inner {
    /// Now, at Vapi's millisecond precision, and later than every earlier stamp: so
    /// `createdAtLt` paging over the stand-in never meets two objects created in the
    /// same millisecond.
    fn stamp(&mut self) -> DateTime<Utc> {
        let now = Utc::now();
        let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let stamp = match self.last_stamp {
            Some(last) if now <= last => last + TimeDelta::milliseconds(1),
            _ => now,
        };
        self.last_stamp = Some(stamp);
        stamp
    }

    /// A fresh id, a UUID as Vapi's are: random, so ids made before a restart (and
    /// learnt again from the database) never collide with new ones.
    fn vapi_id(&mut self) -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// The failure planned for a call to `endpoint`, if any and `wanted`: the
    /// endpoint's own plan first, then its provider's.
    fn planned_failure(
        &mut self,
        endpoint: Endpoint,
        wanted: impl Fn(FailMode) -> bool + Copy,
    ) -> Option<FailMode> {
        if let Some(mode) = self
            .endpoint_fail
            .get_mut(&endpoint)
            .and_then(|p| p.take(wanted))
        {
            return Some(mode);
        }
        if endpoint.is_vapi() {
            self.vapi_fail.take(wanted)
        } else {
            self.twilio_fail.take(wanted)
        }
    }
}

/// Shared state of both stand-ins.
#[derive(Clone, Default)]
pub struct Standins(Arc<Mutex<Inner>>);

impl Standins {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A Vapi phone number the stand-in knows (imported before it started).
    pub fn add_vapi_phone_number(&self, number: SeededVapiNumber<'_>) {
        let mut inner = self.lock();
        let now = inner.stamp();
        let token = inner.twilio.account_token(number.twilio_account_sid);
        let token = token.map(str::to_owned);
        inner.vapi.add_phone_number(number, token, now);
    }

    /// A Vapi credential the stand-in knows (created before it started).
    pub fn add_vapi_credential(&self, id: &str, name: &str, account_sid: &str) {
        let mut inner = self.lock();
        let now = inner.stamp();
        inner.vapi.add_credential(id, name, account_sid, now);
    }

    /// A subaccount of the local main account with its auth token.
    pub fn add_subaccount(&self, sid: &str, friendly_name: &str, auth_token: &str) {
        self.lock()
            .twilio
            .add_subaccount(sid, friendly_name, auth_token);
    }

    /// Whether Twilio knows this subaccount.
    pub fn knows_subaccount(&self, sid: &str) -> bool {
        self.lock().twilio.subaccounts.contains_key(sid)
    }

    /// A Twilio number bought under `subaccount` (of the local main account).
    pub fn add_twilio_number(&self, subaccount: &str, number_sid: &str, e164: &str) {
        self.lock()
            .twilio
            .add_incoming(subaccount, number_sid, e164, None);
    }

    /// Numbers Twilio offers (search results, buyable).
    pub fn offer(&self, offers: impl IntoIterator<Item = Offer>) {
        let mut inner = self.lock();
        for o in offers {
            inner.twilio.available.insert(o.phone_number.clone(), o);
        }
    }

    /// Another buyer takes `e164`: Twilio no longer offers it. `false` if it was
    /// not offered.
    pub fn take(&self, e164: &str) -> bool {
        self.lock().twilio.available.remove(e164).is_some()
    }

    /// Fail the next `times` calls (all, without) to `provider` (`vapi` | `twilio`).
    /// `FailMode::None` clears the provider's plan and its endpoints'.
    pub fn fail(&self, provider: &str, mode: FailMode, times: Option<u32>) {
        let mut s = self.lock();
        let vapi = provider == "vapi";
        if mode == FailMode::None {
            s.endpoint_fail.retain(|e, _| e.is_vapi() != vapi);
        }
        let plan = if vapi {
            &mut s.vapi_fail
        } else {
            &mut s.twilio_fail
        };
        *plan = FailPlan::new(mode, times);
    }

    /// Fail the next `times` calls (all, without) to one endpoint.
    pub fn fail_endpoint(&self, endpoint: Endpoint, mode: FailMode, times: Option<u32>) {
        let mut s = self.lock();
        if mode == FailMode::None {
            s.endpoint_fail.remove(&endpoint);
        } else {
            s.endpoint_fail.insert(endpoint, FailPlan::new(mode, times));
        }
    }

    /// What the stand-ins hold, never a token: Vapi credentials and phone numbers,
    /// Twilio subaccounts, bought and available numbers, and the failure plans.
    pub fn state(&self) -> Value {
        let inner = self.lock();
        let endpoint_fail: BTreeMap<String, &FailPlan> = inner
            .endpoint_fail
            .iter()
            .filter(|(_, p)| p.mode.is_some())
            .map(|(e, p)| (json!(e).as_str().unwrap_or_default().to_owned(), p))
            .collect();
        json!({
            "credentials": inner.vapi.credentials_state(),
            "vapi_phone_numbers": inner.vapi.phone_numbers_state(),
            "twilio_subaccounts": inner.twilio.subaccounts_state(),
            "twilio_numbers": inner.twilio.numbers_state(),
            "available_numbers": inner.twilio.available_state(),
            "vapi_fail": inner.vapi_fail,
            "twilio_fail": inner.twilio_fail,
            "endpoint_fail": endpoint_fail,
        })
    }

    pub fn router(&self) -> Router {
        Router::new()
            .merge(vapi::routes())
            .merge(twilio::routes())
            .route("/__control/fail", post(control::fail))
            .route("/__control/take", post(control::take))
            .route("/__control/state", get(control::state))
            // After the routes: applies to each of them.
            .method_not_allowed_fallback(wrong_method)
            .fallback(unknown_path)
            .with_state(self.clone())
    }
}

fn vapi_error(status: StatusCode, message: Value) -> Response {
    let error = status.canonical_reason().unwrap_or("Error");
    (
        status,
        Json(json!({"message": message, "error": error, "statusCode": status.as_u16()})),
    )
        .into_response()
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status.as_u16()})),
    )
        .into_response()
}

/// How long a `timeout` or `lost` call hangs: longer than any client waits.
const HANG: Duration = Duration::from_secs(40);

/// A failure the control endpoint asked for at `endpoint`, if any, before the call
/// is carried out. (A `lost` answer of an endpoint that acts comes after:
/// [`answer_lost`].)
async fn injected(s: &Standins, endpoint: Endpoint) -> Option<Response> {
    let mode = s
        .lock()
        .planned_failure(endpoint, |m| m != FailMode::Lost || !endpoint.acts())?;
    let vapi = endpoint.is_vapi();
    Some(match (mode, vapi) {
        (FailMode::Timeout | FailMode::Lost, _) => {
            tokio::time::sleep(HANG).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        (FailMode::RateLimited, true) => {
            vapi_error(StatusCode::TOO_MANY_REQUESTS, json!("Too many requests"))
        }
        (FailMode::RateLimited, false) => {
            twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests")
        }
        (_, true) => vapi_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!("Internal server error"),
        ),
        (_, false) => twilio_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            20500,
            "Internal Server Error",
        ),
    })
}

/// The answer of a call that was carried out, unless a `lost` answer was planned:
/// then the client waits in vain (the change stays made).
async fn answer_lost(s: &Standins, endpoint: Endpoint, answer: Response) -> Response {
    if !answer.status().is_success() {
        return answer;
    }
    let lost = s
        .lock()
        .planned_failure(endpoint, |m| m == FailMode::Lost)
        .is_some();
    if !lost {
        return answer;
    }
    tokio::time::sleep(HANG).await;
    StatusCode::GATEWAY_TIMEOUT.into_response()
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `AC` + 32 lowercase hex.
fn is_account_sid(s: &str) -> bool {
    s.len() == 34 && s.starts_with("AC") && is_hex32(&s[2..])
}

/// E.164: `+`, a non-zero digit, at most 15 digits in all.
fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

/// Vapi's times: ISO 8601 with milliseconds.
fn vapi_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Twilio's times: RFC 2822.
fn twilio_time(t: DateTime<Utc>) -> String {
    t.to_rfc2822()
}

/// The path as the provider would see it: without the stand-in's prefix.
fn provider_path<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    match path.strip_prefix(prefix)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// No such route: each provider's own 404 under its prefix (Vapi's web framework
/// answers `Cannot GET /x`; Twilio code 20404), so a client's "already gone" check
/// meets here only the 404s it would meet at the provider.
async fn unknown_path(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if let Some(rest) = provider_path(path, VAPI_PREFIX) {
        return vapi_error(
            StatusCode::NOT_FOUND,
            json!(format!("Cannot {method} {rest}")),
        );
    }
    let twilio_rest =
        provider_path(path, TWILIO_PREFIX).or_else(|| provider_path(path, "/twilio-pricing"));
    if let Some(rest) = twilio_rest {
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            &format!("The requested resource {rest} was not found"),
        );
    }
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": format!("Not Found: the stand-ins serve {VAPI_PREFIX}/…, {TWILIO_API_PREFIX}/…, {TWILIO_PRICING_PREFIX}/… and /__control/…")})),
    )
        .into_response()
}

/// A known path with another method: Vapi routes by method and path, so it is a 404
/// there; Twilio answers 405, code 20004.
async fn wrong_method(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if provider_path(path, TWILIO_PREFIX).is_some()
        || provider_path(path, "/twilio-pricing").is_some()
    {
        return twilio_error(StatusCode::METHOD_NOT_ALLOWED, 20004, "Method not allowed");
    }
    if provider_path(path, VAPI_PREFIX).is_some() {
        return unknown_path(method, uri).await;
    }
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"message": "Method Not Allowed"})),
    )
        .into_response()
}

/// The `Authorization` header's value, if it is text.
fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization").and_then(|v| v.to_str().ok())
}
