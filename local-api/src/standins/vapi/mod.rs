//! The Vapi stand-in, under `/vapi`: `Authorization: Bearer <LOCAL_VAPI_KEY>`.
//! Bodies are checked against Vapi's published DTOs: what they allow is accepted,
//! anything else is refused with Vapi's 400 (`{"message": ["property x should
//! not exist"], "error": "Bad Request", "statusCode": 400}`).
//!
//! - `POST /credential` (`CreateTwilioCredentialDTO`: `provider: "twilio"`,
//!   `accountSid`, and `authToken` or `apiKey` + `apiSecret`; `name` ≤ 40),
//!   `GET /credential`, `PATCH /credential/{id}` (`UpdateTwilioCredentialDTO`:
//!   the same properties, none required), `DELETE /credential/{id}` (200 with the
//!   deleted credential; Vapi's JSON 404 for an unknown id). Never a secret in an
//!   answer. The token is not checked with Twilio here; it is kept (never
//!   answered) so the control state can say what it is at Twilio now
//!   (`twilioToken`).
//! - `POST /phone-number` (`CreateTwilioPhoneNumberDTO`: `provider: "twilio"`,
//!   `number`, `twilioAccountSid`, and `twilioAuthToken` or `twilioApiKey` +
//!   `twilioApiSecret`; optional `name` ≤ 40, `assistantId` (a UUID), `squadId`,
//!   `workflowId`, `server`, `fallbackDestination`, `hooks`, `smsEnabled` (default
//!   true, kept and shown in the control state)). An import points the Twilio
//!   number's `voice_url` at Vapi ([`super::VAPI_TWILIO_VOICE_URL`]) and, unless
//!   `smsEnabled` is false, its `sms_url` ([`super::VAPI_TWILIO_SMS_URL`]), as
//!   Vapi documents. As Vapi does, it checks the
//!   credentials with Twilio (here: the Twilio stand-in must know the account with
//!   that token; it knows no API keys, so a key pair alone is refused) and that the
//!   account owns the number; either failing is a 400, and so is an `assistantId`
//!   the stand-in does not know (`00000000-…`, as `GET /assistant/{id}`; the text
//!   of Vapi's answer to an unknown assistant elsewhere, since its answer here is
//!   undocumented) — on `PATCH` too. Importing a number twice is
//!   not refused (Vapi's behaviour is undocumented), so a client's duplicate shows
//!   in the state.
//! - `GET /phone-number` (newest first, ties by id; `limit`, default 100, at most
//!   1000; the `createdAt…`/`updatedAt…` `Gt|Lt|Ge|Le` filters; any other parameter
//!   is a 400), read from an index by `createdAt` (a page costs O(log n + page)).
//!   Every object the stand-in stamps gets a `createdAt` a millisecond later than
//!   the one before ([`super::Inner`]'s `stamp`), and a fleet's numbers are spaced
//!   a millisecond apart (`fleet.rs`), so a walk bounded by `createdAtLe` of the
//!   oldest item seen never meets a page of ties; only numbers made by hand with
//!   `ageSecs` or seeded may share one with another number. Each item carries
//!   `assistantId` (`null` when it routes to none).
//! - `GET /phone-number/{id}` (Vapi's JSON 404 for an unknown id), `PATCH
//!   /phone-number/{id}`
//!   (`UpdateTwilioPhoneNumberDTO`: the same properties, none required;
//!   `assistantId` may be `null` to detach), `DELETE /phone-number/{id}` (200 with
//!   the deleted number, then 404; the Twilio number's URLs stay as they were —
//!   whether Vapi clears them is unconfirmed).
//!
//! A number's answers carry its `twilioAuthToken` (and API key pair, if given):
//! Vapi's `TwilioPhoneNumber` documents them as answered fields, with no "not
//! returned" note, so a client must expect them. The control state never shows
//! them; it shows `twilioToken`, what the token is at Twilio now.
//!
//! A credential or number write that carries a Twilio token already retired for
//! its account (`authToken` / `twilioAuthToken`, with the body's account or the
//! stored one's) is recorded in the state's `deadTokenCalls` as it comes in,
//! whatever becomes of it.

mod credentials;
mod numbers;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use axum::Router;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{get, patch, post};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{
    Endpoint, LOCAL_VAPI_KEY, Secret, Standins, authorization, injected, vapi_error, vapi_time,
};

/// What a Twilio token Vapi holds for an account is at Twilio now
/// ([`super::Inner::token_status`]): the state's `twilioToken`.
pub(super) type TokenStatus<'a> = &'a dyn Fn(&str, Option<&str>) -> Value;

/// The Vapi org the local key belongs to.
const LOCAL_VAPI_ORG: &str = "local-vapi-org";

pub(super) fn routes() -> Router<Standins> {
    Router::new()
        .route(
            "/vapi/credential",
            post(credentials::create).get(credentials::list),
        )
        .route(
            "/vapi/credential/{id}",
            patch(credentials::update).delete(credentials::delete),
        )
        .route(
            "/vapi/phone-number",
            post(numbers::import).get(numbers::list),
        )
        .route(
            "/vapi/phone-number/{id}",
            get(numbers::fetch)
                .patch(numbers::route)
                .delete(numbers::delete),
        )
        .route("/vapi/assistant/{id}", get(assistant))
}

/// `GET /assistant/{id}`: the stand-in knows every assistant id (a lowercase UUID)
/// except those starting `00000000-`, which are Vapi's JSON 404, so the purchase's
/// "unknown assistant" answer can be shown locally.
async fn assistant(
    axum::extract::State(s): axum::extract::State<Standins>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&s, &headers, Endpoint::Assistant, None).await {
        return r;
    }
    if !knows_assistant(&id) {
        return vapi_error(
            StatusCode::NOT_FOUND,
            json!("Couldn't Get Assistant. `assistantId` 404 Not Found"),
        );
    }
    axum::Json(json!({
        "id": id,
        "orgId": LOCAL_VAPI_ORG,
        "name": format!("Assistant {}", &id[id.len() - 4..]),
        "createdAt": vapi_time(Utc::now()),
        "updatedAt": vapi_time(Utc::now()),
    }))
    .into_response()
}

/// Whether the stand-in knows the assistant: every lowercase UUID except those
/// starting `00000000-`.
pub(super) fn knows_assistant(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id)
        && !id.starts_with("00000000-")
}

/// A phone number routed to an assistant the stand-in does not know: Vapi's 400,
/// worded as Vapi answers an unknown `assistantId` elsewhere (a call's; its answer
/// to a phone number's is not documented).
fn unknown_assistant(b: &Option<Option<String>>) -> Option<Response> {
    let Some(Some(id)) = b else {
        return None;
    };
    (!knows_assistant(id)).then(|| {
        vapi_error(
            StatusCode::BAD_REQUEST,
            json!(format!(
                "Couldn't Get Assistant. `assistantId` {id} Does Not Exist."
            )),
        )
    })
}

/// A Vapi credential the stand-in holds. Its token is kept (as a [`Secret`]) only
/// so the control state can say what it is at Twilio (`twilioToken`): Vapi never
/// answers it, and neither does the stand-in.
#[derive(Debug, Clone)]
struct VapiCredential {
    name: String,
    account_sid: String,
    /// The `authToken` it was created or last updated with; `None` with an API key
    /// pair only.
    auth_token: Option<Secret>,
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

/// A Twilio number imported into Vapi, with what Vapi keeps of it. Vapi's
/// `TwilioPhoneNumber` has `twilioAuthToken` (and the API key pair) as answered
/// fields with no "not returned" note, unlike a credential's `authToken`: the
/// stand-in answers them, as the real one may, so a client that logs or stores an
/// answer is caught. The control state never shows them.
#[derive(Debug, Clone)]
struct VapiNumber {
    number: String,
    twilio_account_sid: String,
    twilio_auth_token: Option<Secret>,
    twilio_api_key: Option<String>,
    twilio_api_secret: Option<Secret>,
    assistant_id: Option<String>,
    squad_id: Option<String>,
    workflow_id: Option<String>,
    name: Option<String>,
    /// Whether Vapi set the Twilio number's messaging URL too (Vapi's default: true).
    sms_enabled: bool,
    /// `server`, `fallbackDestination`, `hooks`: kept and answered as given.
    server: Option<Value>,
    fallback_destination: Option<Value>,
    hooks: Option<Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// What the control state leaves out of a number: its secrets, and the `server`'s
/// headers (which may carry one).
const SECRET_NUMBER_FIELDS: &[&str] = &["twilioAuthToken", "twilioApiSecret"];

impl VapiNumber {
    fn to_json(&self, id: &str) -> Value {
        let mut v = json!({
            "id": id,
            "orgId": LOCAL_VAPI_ORG,
            "provider": "twilio",
            "number": self.number,
            "status": "active",
            "twilioAccountSid": self.twilio_account_sid,
            "smsEnabled": self.sms_enabled,
            // Null when it routes to none (a list's reader compares it with the
            // database's).
            "assistantId": self.assistant_id,
            "createdAt": vapi_time(self.created_at),
            "updatedAt": vapi_time(self.updated_at),
        });
        // Vapi leaves out what was never set.
        let optional = [
            (
                "twilioAuthToken",
                self.twilio_auth_token.as_ref().map(|t| json!(t.expose())),
            ),
            (
                "twilioApiKey",
                self.twilio_api_key.as_ref().map(|k| json!(k)),
            ),
            (
                "twilioApiSecret",
                self.twilio_api_secret.as_ref().map(|t| json!(t.expose())),
            ),
            ("squadId", self.squad_id.as_ref().map(|a| json!(a))),
            ("workflowId", self.workflow_id.as_ref().map(|a| json!(a))),
            ("name", self.name.as_ref().map(|n| json!(n))),
            ("server", self.server.clone()),
            ("fallbackDestination", self.fallback_destination.clone()),
            ("hooks", self.hooks.clone()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                v[key] = value;
            }
        }
        v
    }

    /// The number as the control state shows it: no secret, but what its token is
    /// at Twilio now (`twilioToken`).
    fn to_state_json(&self, id: &str, token_status: TokenStatus<'_>) -> Value {
        let mut v = self.to_json(id);
        if let Some(map) = v.as_object_mut() {
            for key in SECRET_NUMBER_FIELDS {
                map.remove(*key);
            }
            if let Some(server) = map.get_mut("server").and_then(Value::as_object_mut) {
                server.remove("headers");
            }
            map.insert(
                "twilioToken".into(),
                token_status(
                    &self.twilio_account_sid,
                    self.twilio_auth_token.as_ref().map(Secret::expose),
                ),
            );
        }
        v
    }
}

/// A number imported before the stand-in started (the demo data).
pub struct SeededVapiNumber<'a> {
    pub id: &'a str,
    pub number: &'a str,
    pub twilio_account_sid: &'a str,
    pub assistant_id: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Vapi's phone numbers by id, with an index by creation time: a page of `GET
/// /phone-number` reads O(log n + page) of them, newest first, instead of sorting
/// every number on each call.
#[derive(Debug, Default)]
pub(super) struct PhoneNumbers {
    by_id: BTreeMap<String, VapiNumber>,
    /// `(createdAt, id)` of every number.
    by_created: BTreeSet<(DateTime<Utc>, String)>,
}

impl PhoneNumbers {
    fn get(&self, id: &str) -> Option<&VapiNumber> {
        self.by_id.get(id)
    }

    /// A number to change; its `created_at` stays as it is (the index keys it).
    fn get_mut(&mut self, id: &str) -> Option<&mut VapiNumber> {
        self.by_id.get_mut(id)
    }

    fn insert(&mut self, id: String, n: VapiNumber) {
        self.by_created.insert((n.created_at, id.clone()));
        if let Some(old) = self.by_id.insert(id.clone(), n)
            && let Some(new) = self.by_id.get(&id)
            && old.created_at != new.created_at
        {
            self.by_created.remove(&(old.created_at, id));
        }
    }

    fn remove(&mut self, id: &str) -> Option<VapiNumber> {
        let n = self.by_id.remove(id)?;
        self.by_created.remove(&(n.created_at, id.to_owned()));
        Some(n)
    }

    /// As if `by` had passed (every number made that much earlier).
    fn age(&mut self, by: chrono::TimeDelta) {
        for n in self.by_id.values_mut() {
            n.created_at -= by;
            n.updated_at -= by;
        }
        self.by_created = self
            .by_id
            .iter()
            .map(|(id, n)| (n.created_at, id.clone()))
            .collect();
    }

    /// The numbers created in `[from, until)` (either open when `None`), newest
    /// first (ties: the greater id first).
    fn newest_first(
        &self,
        from: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> impl Iterator<Item = (&String, &VapiNumber)> + '_ {
        let empty = matches!((from, until), (Some(f), Some(u)) if f >= u);
        let low = match from {
            Some(f) if !empty => Bound::Included((f, String::new())),
            _ => Bound::Unbounded,
        };
        let high = match until {
            Some(u) if !empty => Bound::Excluded((u, String::new())),
            _ => Bound::Unbounded,
        };
        let range = (!empty).then(|| self.by_created.range((low, high)).rev());
        range
            .into_iter()
            .flatten()
            .filter_map(|(_, id)| self.by_id.get_key_value(id))
    }
}

#[derive(Debug, Default)]
pub(super) struct VapiState {
    credentials: BTreeMap<String, VapiCredential>,
    phone_numbers: PhoneNumbers,
}

impl VapiState {
    /// A seeded number was imported with its account's token (`None`: an account
    /// the Twilio stand-in does not know).
    pub(super) fn add_phone_number(
        &mut self,
        n: SeededVapiNumber<'_>,
        twilio_auth_token: Option<String>,
        now: DateTime<Utc>,
    ) {
        self.phone_numbers.insert(
            n.id.to_owned(),
            VapiNumber {
                number: n.number.to_owned(),
                twilio_account_sid: n.twilio_account_sid.to_owned(),
                twilio_auth_token: twilio_auth_token.map(Secret),
                twilio_api_key: None,
                twilio_api_secret: None,
                assistant_id: n.assistant_id.map(str::to_owned),
                squad_id: None,
                workflow_id: None,
                name: n.name.map(str::to_owned),
                sms_enabled: true,
                server: None,
                fallback_destination: None,
                hooks: None,
                created_at: now,
                updated_at: now,
            },
        );
    }

    /// Whether Vapi has the phone number `id`.
    pub(super) fn has_phone_number(&self, id: &str) -> bool {
        self.phone_numbers.get(id).is_some()
    }

    /// A phone number deleted (in Vapi's dashboard): `false` if there was none.
    pub(super) fn remove_phone_number(&mut self, id: &str) -> bool {
        self.phone_numbers.remove(id).is_some()
    }

    /// A phone number's assistant changed (in Vapi's dashboard; `None` detaches
    /// it): `false` if there is no such number.
    pub(super) fn set_assistant(
        &mut self,
        id: &str,
        assistant: Option<String>,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(n) = self.phone_numbers.get_mut(id) else {
            return false;
        };
        n.assistant_id = assistant;
        n.updated_at = now.max(n.created_at);
        true
    }

    /// A phone number as the control state shows it (no secret).
    pub(super) fn phone_number_state(
        &self,
        id: &str,
        token_status: TokenStatus<'_>,
    ) -> Option<Value> {
        self.phone_numbers
            .get(id)
            .map(|n| n.to_state_json(id, token_status))
    }

    /// As if `by` had passed: every credential and number was made (and last
    /// changed) that much earlier.
    pub(super) fn age(&mut self, by: chrono::TimeDelta) {
        for c in self.credentials.values_mut() {
            c.created_at -= by;
            c.updated_at -= by;
        }
        self.phone_numbers.age(by);
    }

    pub(super) fn add_credential(
        &mut self,
        id: &str,
        name: &str,
        account_sid: &str,
        auth_token: Option<String>,
        now: DateTime<Utc>,
    ) {
        self.credentials.insert(
            id.to_owned(),
            VapiCredential {
                name: name.to_owned(),
                account_sid: account_sid.to_owned(),
                auth_token: auth_token.map(Secret),
                created_at: now,
                updated_at: now,
            },
        );
    }

    /// The account a credential is for, if Vapi has it.
    pub(super) fn credential_account(&self, id: &str) -> Option<&str> {
        self.credentials.get(id).map(|c| c.account_sid.as_str())
    }

    /// The account a phone number's Twilio side is, if Vapi has it.
    pub(super) fn phone_number_account(&self, id: &str) -> Option<&str> {
        self.phone_numbers
            .get(id)
            .map(|n| n.twilio_account_sid.as_str())
    }

    /// The credentials as the control state shows them: as Vapi answers them
    /// (`id`, `name`, `accountSid`, …, never the token) with `twilioToken`.
    pub(super) fn credentials_state(&self, token_status: TokenStatus<'_>) -> Value {
        let map: Map<String, Value> = self
            .credentials
            .iter()
            .map(|(id, c)| {
                let mut v = c.to_json(id);
                v["twilioToken"] =
                    token_status(&c.account_sid, c.auth_token.as_ref().map(Secret::expose));
                (id.clone(), v)
            })
            .collect();
        Value::Object(map)
    }

    pub(super) fn phone_numbers_state(&self, token_status: TokenStatus<'_>) -> Value {
        let map: Map<String, Value> = self
            .phone_numbers
            .by_id
            .iter()
            .map(|(id, n)| (id.clone(), n.to_state_json(id, token_status)))
            .collect();
        Value::Object(map)
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    authorization(headers).is_some_and(|v| v == format!("Bearer {LOCAL_VAPI_KEY}"))
}

fn unauthorized() -> Response {
    vapi_error(
        StatusCode::UNAUTHORIZED,
        json!("Invalid Key. Hot tip, make sure you're using the private key."),
    )
}

fn bad_request(problems: Vec<String>) -> Response {
    vapi_error(StatusCode::BAD_REQUEST, json!(problems))
}

/// Vapi's order for every call: the key, a failure the control endpoint asked for,
/// then (for writes) the body as JSON (an empty body is `{}`, as for Vapi's body
/// parser), which must be an object.
async fn admit(
    s: &Standins,
    headers: &HeaderMap,
    endpoint: Endpoint,
    body: Option<&[u8]>,
) -> Result<Map<String, Value>, Response> {
    if !authorized(headers) {
        return Err(unauthorized());
    }
    if let Some(r) = injected(s, endpoint).await {
        return Err(r);
    }
    let Some(body) = body else {
        return Ok(Map::new());
    };
    let value: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            vapi_error(
                StatusCode::BAD_REQUEST,
                json!(format!("Unexpected token in JSON: {e}")),
            )
        })?
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(bad_request(vec!["body must be an object".into()])),
    }
}

/// A credential or phone-number write that carries a Twilio token (`authToken`,
/// `twilioAuthToken`), as it comes in with Vapi's key: `deadTokenCalls` records
/// it when the token had been retired for its account already (the body's
/// `accountSid` / `twilioAccountSid`, else the stored credential's or number's, by
/// `id`). Noted before anything else happens to the call (a planned failure, a
/// refusal of its body, a check with Twilio), so it is recorded whatever becomes
/// of it.
fn note_twilio_token(
    s: &Standins,
    headers: &HeaderMap,
    endpoint: Endpoint,
    method: &'static str,
    id: Option<&str>,
    body: &[u8],
) {
    if !authorized(headers) {
        return;
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let (token_key, sid_key) = if endpoint == Endpoint::Credential {
        ("authToken", "accountSid")
    } else {
        ("twilioAuthToken", "twilioAccountSid")
    };
    let Some(token) = body
        .get(token_key)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    else {
        return;
    };
    let mut inner = s.lock();
    let sid = match (body.get(sid_key).and_then(Value::as_str), id) {
        (Some(sid), _) => Some(sid.to_owned()),
        (None, Some(id)) if endpoint == Endpoint::Credential => {
            inner.vapi.credential_account(id).map(str::to_owned)
        }
        (None, Some(id)) => inner.vapi.phone_number_account(id).map(str::to_owned),
        (None, None) => None,
    };
    if let Some(sid) = sid {
        inner.note_twilio_token(endpoint, method, &sid, token);
    }
}

/// Properties that are not in `allowed`, as Vapi's whitelist validation words them.
fn unknown_properties(body: &Map<String, Value>, allowed: &[&str]) -> Vec<String> {
    body.keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("property {k} should not exist"))
        .collect()
}

/// `Some(text)` for a string property, `None` when absent; a problem otherwise.
fn string_prop(body: &Map<String, Value>, key: &str, problems: &mut Vec<String>) -> Option<String> {
    match body.get(key) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.push(format!("{key} must be a string"));
            None
        }
    }
}

/// A boolean property (`smsEnabled`), as class-validator's `IsBoolean` words it.
fn bool_prop(body: &Map<String, Value>, key: &str, problems: &mut Vec<String>) -> Option<bool> {
    match body.get(key) {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            problems.push(format!("{key} must be a boolean value"));
            None
        }
    }
}

/// A nested object (`server`, `fallbackDestination`) or array (`hooks`), kept as
/// given: the stand-in checks its JSON type only, not its contents.
fn json_prop(
    body: &Map<String, Value>,
    key: &str,
    array: bool,
    problems: &mut Vec<String>,
) -> Option<Value> {
    let value = body.get(key)?;
    if (array && value.is_array()) || (!array && value.is_object()) {
        Some(value.clone())
    } else {
        problems.push(format!(
            "{key} must be {}",
            if array { "an array" } else { "an object" }
        ));
        None
    }
}

/// `provider`, where a body may carry it: Vapi picks the DTO of a `oneOf` by it,
/// and the stand-in knows only Twilio's. `required` on create.
fn check_provider(body: &Map<String, Value>, required: bool, problems: &mut Vec<String>) {
    match body.get("provider") {
        Some(p) if p == "twilio" => {}
        None if !required => {}
        _ => problems.push(
            "provider must be one of the following values: twilio (this stand-in knows Twilio only)"
                .into(),
        ),
    }
}

fn check_name(name: &Option<String>, problems: &mut Vec<String>) {
    if name.as_ref().is_some_and(|n| n.chars().count() > 40) {
        problems.push("name must be shorter than or equal to 40 characters".into());
    }
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok() && s.len() == 36
}

/// The query of Vapi's list endpoints, as its validation reads it.
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
    fn parse(
        query: &Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Result<Self, Vec<String>> {
        let pairs = match query {
            Ok(Query(pairs)) => pairs,
            Err(e) => return Err(vec![e.body_text()]),
        };
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

    /// The `createdAt` window the bounds leave, as `[from, until)` (`None`: open):
    /// a list reads only that range of its index. Vapi's times are milliseconds,
    /// the stand-in's stamps may be finer (after [`super::Standins::age`]): `Gt`
    /// and `Le` move their bound by a nanosecond, which no stamp falls between.
    fn created_window(&self) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        let next = |t: DateTime<Utc>| {
            t.checked_add_signed(chrono::TimeDelta::nanoseconds(1))
                .unwrap_or(t)
        };
        let (mut from, mut until): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
        for &(created, greater, inclusive, t) in &self.bounds {
            if !created {
                continue;
            }
            if greater {
                let f = if inclusive { t } else { next(t) };
                from = Some(from.map_or(f, |cur| cur.max(f)));
            } else {
                let u = if inclusive { next(t) } else { t };
                until = Some(until.map_or(u, |cur| cur.min(u)));
            }
        }
        (from, until)
    }

    fn admits(&self, created_at: DateTime<Utc>, updated_at: DateTime<Utc>) -> bool {
        self.bounds
            .iter()
            .all(|&(created, greater, inclusive, bound)| {
                let t = if created { created_at } else { updated_at };
                match (greater, inclusive) {
                    (true, false) => t > bound,
                    (true, true) => t >= bound,
                    (false, false) => t < bound,
                    (false, true) => t <= bound,
                }
            })
    }

    /// Vapi's phone numbers the query admits (and `listed`, for lookup lag),
    /// newest first, at most `limit`: from the index, O(log n + what it skips).
    fn phone_number_page(
        &self,
        numbers: &PhoneNumbers,
        listed: impl Fn(DateTime<Utc>) -> bool,
    ) -> Vec<Value> {
        let (from, until) = self.created_window();
        numbers
            .newest_first(from, until)
            .filter(|(_, n)| listed(n.created_at) && self.admits(n.created_at, n.updated_at))
            .take(self.limit)
            .map(|(id, n)| n.to_json(id))
            .collect()
    }

    /// The admitted items, newest first, at most `limit`.
    fn page<'a, T: 'a>(
        &self,
        items: impl Iterator<Item = (&'a String, &'a T)>,
        times: impl Fn(&T) -> (DateTime<Utc>, DateTime<Utc>),
        to_json: impl Fn(&str, &T) -> Value,
    ) -> Vec<Value> {
        let mut found: Vec<(&String, &T, DateTime<Utc>)> = items
            .filter_map(|(id, item)| {
                let (created, updated) = times(item);
                self.admits(created, updated).then_some((id, item, created))
            })
            .collect();
        found.sort_by(|a, b| b.2.cmp(&a.2).then(b.0.cmp(a.0)));
        found
            .into_iter()
            .take(self.limit)
            .map(|(id, item, _)| to_json(id, item))
            .collect()
    }
}
