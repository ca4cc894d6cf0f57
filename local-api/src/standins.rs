//! Local stand-ins for Vapi and Twilio. They keep state (a released number is 404
//! the next time), check auth and bodies, answer with the providers' real error JSON,
//! and can be told to fail through the control endpoint:
//!
//! - `POST /__control/fail` `{"provider": "vapi"|"twilio", "mode": "500"|"429"|"timeout"|"none", "times": n?}`
//!   — the next `times` calls (all, if omitted) to that provider fail that way.
//! - `GET /__control/state` — what the stand-ins hold.
//!
//! Vapi lives under `/vapi`, Twilio under `/twilio/2010-04-01`. Twilio accepts any
//! well-formed account SID and token for `GET /Accounts/{sid}.json`, except the token
//! `00000000000000000000000000000000` (401, code 20003) and SIDs ending in `dead`
//! (status `suspended`), so the refusal paths can be shown by hand.
//!
//! Vapi serves `POST /credential`, `GET /credential` (newest first; `limit`, default
//! 100, at most 1000; the `createdAt…`/`updatedAt…` `Gt|Lt|Ge|Le` filters; any other
//! parameter is a 400, as Vapi's validation refuses it; never a token),
//! `PATCH /credential/{id}` and `DELETE /phone-number/{id}`. Every other path under a
//! provider's prefix answers that provider's own 404 JSON (Vapi: `Cannot GET /x`;
//! Twilio: code 20404), and a wrong method Vapi's 404 or Twilio's 405 (code 20004):
//! a client never meets a 404 here that the real provider would not send.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

pub const LOCAL_VAPI_KEY: &str = "local-vapi-private-key";
pub const LOCAL_TWILIO_MAIN_SID: &str = "AC00000000000000000000000000000001";
pub const LOCAL_TWILIO_MAIN_TOKEN: &str = "11111111111111111111111111111111";
const REJECTED_TOKEN: &str = "00000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum FailMode {
    #[serde(rename = "500")]
    ServerError,
    #[serde(rename = "429")]
    RateLimited,
    #[serde(rename = "timeout")]
    Timeout,
    #[serde(rename = "none")]
    None,
}

#[derive(Debug, Default, serde::Serialize)]
struct FailPlan {
    mode: Option<FailMode>,
    /// `None`: every call until cleared.
    remaining: Option<u32>,
}

impl FailPlan {
    fn take(&mut self) -> Option<FailMode> {
        let mode = self.mode?;
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

/// A Vapi credential the stand-in holds. Not its token: Vapi never returns it, and
/// nothing here needs it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct VapiCredential {
    name: String,
    account_sid: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl VapiCredential {
    /// The credential object as Vapi answers it (times in its millisecond ISO form).
    fn to_json(&self, id: &str) -> Value {
        json!({
            "id": id,
            "provider": "twilio",
            "orgId": LOCAL_VAPI_ORG,
            "createdAt": vapi_time(self.created_at),
            "updatedAt": vapi_time(self.updated_at),
            "name": self.name,
            "accountSid": self.account_sid,
        })
    }
}

/// The Vapi org the local key belongs to.
const LOCAL_VAPI_ORG: &str = "local-vapi-org";

fn vapi_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Inner {
    /// Vapi credentials by id.
    credentials: BTreeMap<String, VapiCredential>,
    /// Vapi phone-number ids.
    vapi_phone_numbers: BTreeSet<String>,
    /// Twilio incoming numbers: "subaccount/PN…" → E.164.
    twilio_numbers: BTreeMap<String, String>,
    vapi_fail: FailPlan,
    twilio_fail: FailPlan,
    next_id: u64,
    /// The last time stamped on a credential.
    last_stamp: Option<DateTime<Utc>>,
}

impl Inner {
    /// Now, at Vapi's millisecond precision, and later than every earlier stamp: so
    /// `createdAtLt` paging over the stand-in never meets two credentials created in
    /// the same millisecond.
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
}

/// Shared state of both stand-ins.
#[derive(Clone, Default)]
pub struct Standins(Arc<Mutex<Inner>>);

impl Standins {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A Vapi phone number the stand-in knows.
    pub fn add_vapi_phone_number(&self, id: &str) {
        self.lock().vapi_phone_numbers.insert(id.to_owned());
    }

    /// A Twilio number under `subaccount` (of the local main account).
    pub fn add_twilio_number(&self, subaccount: &str, number_sid: &str, e164: &str) {
        self.lock()
            .twilio_numbers
            .insert(format!("{subaccount}/{number_sid}"), e164.to_owned());
    }

    pub fn fail(&self, provider: &str, mode: FailMode, times: Option<u32>) {
        let mut s = self.lock();
        let plan = if provider == "vapi" {
            &mut s.vapi_fail
        } else {
            &mut s.twilio_fail
        };
        *plan = FailPlan {
            mode: (mode != FailMode::None).then_some(mode),
            remaining: times,
        };
    }

    pub fn state(&self) -> Value {
        serde_json::to_value(&*self.lock()).unwrap_or(Value::Null)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/vapi/credential", post(vapi_create).get(vapi_list))
            .route("/vapi/credential/{id}", patch(vapi_update))
            .route("/vapi/phone-number/{id}", delete(vapi_delete_phone))
            .route("/twilio/2010-04-01/Accounts/{sid}", get(twilio_account))
            .route(
                "/twilio/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers/{pn}",
                delete(twilio_release),
            )
            .route("/__control/fail", post(control_fail))
            .route("/__control/state", get(control_state))
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

/// A failure the control endpoint asked for, if any.
async fn injected(s: &Standins, vapi: bool) -> Option<Response> {
    let mode = {
        let mut inner = s.lock();
        if vapi {
            inner.vapi_fail.take()
        } else {
            inner.twilio_fail.take()
        }
    }?;
    Some(match (mode, vapi) {
        (FailMode::Timeout, _) => {
            tokio::time::sleep(Duration::from_secs(40)).await;
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

fn vapi_authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {LOCAL_VAPI_KEY}"))
}

fn vapi_unauthorized() -> Response {
    vapi_error(
        StatusCode::UNAUTHORIZED,
        json!("Invalid Key. Hot tip, make sure you're using the private key."),
    )
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Vapi's validation: the fields it accepts for a Twilio credential. `Err` holds
/// the messages Vapi would answer in its 400 (`message` as an array).
fn check_credential_body(body: &Value, create: bool) -> Result<(String, String), Vec<String>> {
    let mut problems = Vec::new();
    let Some(obj) = body.as_object() else {
        return Err(vec!["body must be an object".into()]);
    };
    let allowed: &[&str] = if create {
        &["provider", "accountSid", "authToken", "name"]
    } else {
        &["accountSid", "authToken", "name"]
    };
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            problems.push(format!("property {key} should not exist"));
        }
    }
    if create && obj.get("provider") != Some(&json!("twilio")) {
        problems.push("provider must be one of the following values: twilio".into());
    }
    let text = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (sid, token, name) = (text("accountSid"), text("authToken"), text("name"));
    if sid.is_empty() {
        problems.push("accountSid must be a string".into());
    }
    if token.is_empty() {
        problems.push("authToken must be a string".into());
    }
    if name.chars().count() > 40 {
        problems.push("name must be shorter than or equal to 40 characters".into());
    }
    if problems.is_empty() {
        Ok((name, sid))
    } else {
        Err(problems)
    }
}

/// What every Vapi credential write goes through, in Vapi's order: the key, a failure
/// the control endpoint asked for, the body (JSON; an empty body is `{}`, as for
/// Vapi's body parser). `Ok((name, accountSid))`.
async fn credential_write(
    s: &Standins,
    headers: &HeaderMap,
    body: &[u8],
    create: bool,
) -> Result<(String, String), Box<Response>> {
    if !vapi_authorized(headers) {
        return Err(Box::new(vapi_unauthorized()));
    }
    if let Some(r) = injected(s, true).await {
        return Err(Box::new(r));
    }
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            Box::new(vapi_error(
                StatusCode::BAD_REQUEST,
                json!(format!("Unexpected token in JSON: {e}")),
            ))
        })?
    };
    check_credential_body(&body, create)
        .map_err(|problems| Box::new(vapi_error(StatusCode::BAD_REQUEST, json!(problems))))
}

async fn vapi_create(State(s): State<Standins>, headers: HeaderMap, body: Bytes) -> Response {
    let (name, account_sid) = match credential_write(&s, &headers, &body, true).await {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let mut inner = s.lock();
    inner.next_id += 1;
    let id = format!(
        "{:08x}-0000-4000-8000-{:012x}",
        inner.next_id, inner.next_id
    );
    let now = inner.stamp();
    let credential = VapiCredential {
        name,
        account_sid,
        created_at: now,
        updated_at: now,
    };
    let answer = credential.to_json(&id);
    inner.credentials.insert(id, credential);
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn vapi_update(
    State(s): State<Standins>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (name, account_sid) = match credential_write(&s, &headers, &body, false).await {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let mut inner = s.lock();
    let now = inner.stamp();
    match inner.credentials.get_mut(&id) {
        Some(credential) => {
            credential.name = name;
            credential.account_sid = account_sid;
            credential.updated_at = now;
            Json(credential.to_json(&id)).into_response()
        }
        None => vapi_error(StatusCode::NOT_FOUND, json!("Credential not found")),
    }
}

/// The query of Vapi's `GET /credential`, as its validation reads it.
struct ListQuery {
    limit: usize,
    /// `(createdAt?, greater?, inclusive?, bound)` for each `createdAtGt`, `…Lt`, `…Ge`,
    /// `…Le`, `updatedAt…` given.
    bounds: Vec<(bool, bool, bool, DateTime<Utc>)>,
}

/// An ISO-8601 time as JavaScript's `Date` reads one: a full RFC 3339 time, or a
/// date (midnight UTC).
fn parse_time(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.to_utc());
    }
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

impl ListQuery {
    /// `Err` holds the messages Vapi would answer in its 400.
    fn parse(pairs: &[(String, String)]) -> Result<Self, Vec<String>> {
        let mut q = Self {
            limit: 100,
            bounds: Vec::new(),
        };
        let mut problems = Vec::new();
        for (key, value) in pairs {
            if key == "limit" {
                match value.parse::<f64>() {
                    Ok(n) if n.is_finite() && n > 1000.0 => {
                        problems.push("limit must not be greater than 1000".into())
                    }
                    Ok(n) if n.is_finite() && n < 0.0 => {
                        problems.push("limit must not be less than 0".into())
                    }
                    // In range: a whole number of items.
                    Ok(n) if n.is_finite() => q.limit = n as usize,
                    _ => problems.push(
                        "limit must be a number conforming to the specified constraints".into(),
                    ),
                }
                continue;
            }
            let (created, op) = match key.strip_prefix("createdAt") {
                Some(op) => (true, op),
                None => (false, key.strip_prefix("updatedAt").unwrap_or_default()),
            };
            let (greater, inclusive) = match op {
                "Gt" => (true, false),
                "Ge" => (true, true),
                "Lt" => (false, false),
                "Le" => (false, true),
                _ => {
                    problems.push(format!("property {key} should not exist"));
                    continue;
                }
            };
            match parse_time(value) {
                Some(t) => q.bounds.push((created, greater, inclusive, t)),
                None => problems.push(format!("{key} must be a Date instance")),
            }
        }
        if problems.is_empty() {
            Ok(q)
        } else {
            Err(problems)
        }
    }

    fn admits(&self, c: &VapiCredential) -> bool {
        self.bounds
            .iter()
            .all(|&(created, greater, inclusive, bound)| {
                let t = if created { c.created_at } else { c.updated_at };
                match (greater, inclusive) {
                    (true, false) => t > bound,
                    (true, true) => t >= bound,
                    (false, false) => t < bound,
                    (false, true) => t <= bound,
                }
            })
    }
}

/// `GET /credential`: the org's credentials, newest first, at most `limit`.
async fn vapi_list(
    State(s): State<Standins>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    if !vapi_authorized(&headers) {
        return vapi_unauthorized();
    }
    if let Some(r) = injected(&s, true).await {
        return r;
    }
    let parsed = match &query {
        Ok(Query(pairs)) => ListQuery::parse(pairs),
        Err(e) => Err(vec![e.body_text()]),
    };
    let q = match parsed {
        Ok(q) => q,
        Err(problems) => return vapi_error(StatusCode::BAD_REQUEST, json!(problems)),
    };
    let inner = s.lock();
    let mut found: Vec<(&String, &VapiCredential)> = inner
        .credentials
        .iter()
        .filter(|(_, c)| q.admits(c))
        .collect();
    found.sort_by(|a, b| b.1.created_at.cmp(&a.1.created_at).then(b.0.cmp(a.0)));
    let page: Vec<Value> = found
        .into_iter()
        .take(q.limit)
        .map(|(id, c)| c.to_json(id))
        .collect();
    Json(page).into_response()
}

async fn vapi_delete_phone(
    State(s): State<Standins>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !vapi_authorized(&headers) {
        return vapi_unauthorized();
    }
    if let Some(r) = injected(&s, true).await {
        return r;
    }
    if s.lock().vapi_phone_numbers.remove(&id) {
        Json(json!({"id": id, "provider": "twilio", "status": "active"})).into_response()
    } else {
        vapi_error(StatusCode::NOT_FOUND, json!("Phone number not found"))
    }
}

/// HTTP Basic credentials, if well-formed.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

fn twilio_unauthenticated() -> Response {
    twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
}

async fn twilio_account(
    State(s): State<Standins>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(sid) = file.strip_suffix(".json") else {
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        );
    };
    let Some((user, token)) = basic_auth(&headers) else {
        return twilio_unauthenticated();
    };
    if let Some(r) = injected(&s, false).await {
        return r;
    }
    let well_formed = user == sid
        && sid.len() == 34
        && sid.starts_with("AC")
        && is_hex32(&sid[2..])
        && is_hex32(&token);
    if !well_formed || token == REJECTED_TOKEN {
        return twilio_unauthenticated();
    }
    let status = if sid.ends_with("dead") {
        "suspended"
    } else {
        "active"
    };
    Json(
        json!({"sid": sid, "friendly_name": "Local account", "status": status, "type": "Full",
                "uri": format!("/2010-04-01/Accounts/{sid}.json")}),
    )
    .into_response()
}

async fn twilio_release(
    State(s): State<Standins>,
    Path((sub, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some((user, token)) = basic_auth(&headers) else {
        return twilio_unauthenticated();
    };
    // The main account may act on its subaccounts; nobody else here may.
    if user != LOCAL_TWILIO_MAIN_SID || token != LOCAL_TWILIO_MAIN_TOKEN {
        return twilio_unauthenticated();
    }
    if let Some(r) = injected(&s, false).await {
        return r;
    }
    let pn = file.strip_suffix(".json").unwrap_or(&file);
    match s.lock().twilio_numbers.remove(&format!("{sub}/{pn}")) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            &format!(
                "The requested resource /2010-04-01/Accounts/{sub}/IncomingPhoneNumbers/{pn}.json was not found"
            ),
        ),
    }
}

const VAPI_PREFIX: &str = "/vapi";
const TWILIO_PREFIX: &str = "/twilio";

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
    if let Some(rest) = provider_path(path, TWILIO_PREFIX) {
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            &format!("The requested resource {rest} was not found"),
        );
    }
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": format!("Not Found: the stand-ins serve {VAPI_PREFIX}/…, {TWILIO_PREFIX}/2010-04-01/… and /__control/…")})),
    )
        .into_response()
}

/// A known path with another method: Vapi routes by method and path, so it is a 404
/// there; Twilio answers 405, code 20004.
async fn wrong_method(method: Method, uri: Uri) -> Response {
    if provider_path(uri.path(), TWILIO_PREFIX).is_some() {
        return twilio_error(StatusCode::METHOD_NOT_ALLOWED, 20004, "Method not allowed");
    }
    if provider_path(uri.path(), VAPI_PREFIX).is_some() {
        return unknown_path(method, uri).await;
    }
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"message": "Method Not Allowed"})),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    provider: String,
    mode: FailMode,
    times: Option<u32>,
}

async fn control_fail(State(s): State<Standins>, Json(req): Json<FailRequest>) -> Response {
    if req.provider != "vapi" && req.provider != "twilio" {
        return (StatusCode::BAD_REQUEST, "provider must be vapi or twilio").into_response();
    }
    s.fail(&req.provider, req.mode, req.times);
    Json(s.state()).into_response()
}

async fn control_state(State(s): State<Standins>) -> Json<Value> {
    Json(s.state())
}
