//! Local stand-ins for Vapi and Twilio. They keep state (a released number is 404
//! the next time), check auth and bodies, answer with the providers' real error JSON,
//! and can be told to fail through the control endpoints (`control.rs`):
//!
//! - `POST /__control/fail` `{"provider"?: "vapi"|"twilio", "endpoint"?: …, "mode":
//!   "500"|"429"|"timeout"|"lost"|"late"|"refuse"|"lag"|"none", "times": n?}` — the
//!   next `times` calls (all, if omitted) to that provider, or to that one endpoint,
//!   go wrong that way:
//!   - `500`, `429` (Twilio code 20429): the provider's error JSON; nothing is done.
//!     A 429 carries `Retry-After: <seconds>` (`"retryAfter"?`, default 1, 0–3600).
//!   - `timeout`: no answer (it hangs 40 s, longer than any client waits); nothing
//!     is done.
//!   - `lost`: a call that changes something is carried out and its answer never
//!     comes, as when a timeout struck after the provider acted.
//!   - `late` with `"delayMs": n`: a call that changes something is carried out and
//!     its answer comes `n` ms later — beyond the client's timeout the classic
//!     "acted, but the client gave up", below it a slow answer.
//!   - `refuse` (`"status"?`, a 4xx, default 400; `"code"?`, Twilio's; `"message"?`):
//!     the provider refuses in its own error JSON and does nothing — Vapi
//!     `{"message": [..], "error": "Bad Request", "statusCode": 400}`, Twilio
//!     `{"code", "message", "more_info", "status"}` with 21422 ("not available")
//!     for a purchase and 20001 elsewhere unless a code is given.
//!   - `lag` with `"lagMs": n`: lookup lag — the lists of an endpoint (Vapi `list`:
//!     `GET /phone-number`; `credential`: `GET /credential`; Twilio `bought`: `GET
//!     …/IncomingPhoneNumbers.json`; `subaccount`: `GET /Accounts.json`), or of
//!     each of a provider's, do not show what was created within the last `n` ms
//!     (fetching one by its id does). Kept apart from the failure plans, so an
//!     endpoint can lag and fail at once.
//!
//!   On an endpoint whose calls change nothing, `lost` is a timeout and `late` a
//!   slow answer; on one with both kinds (`credential`, `subaccount`), `lost` and
//!   `late` wait for a call that acts. Endpoints ([`Endpoint`]): Twilio `account` (an
//!   account read with its own credentials), `subaccount` (list, create, read or
//!   update accounts as the main account), `accounts_list` (`GET /Accounts.json`
//!   only), `search`, `pricing`, `buy`, `bought` (the incoming-numbers list and a
//!   number's read), `numbers_list` (`GET …/IncomingPhoneNumbers.json` only),
//!   `release`; Vapi `credential`, `import` (`POST /phone-number`), `list` (`GET
//!   /phone-number`), `route` (`PATCH /phone-number/{id}`), `delete`, `assistant`.
//!   An endpoint's plan comes before its broader endpoint's (`accounts_list` before
//!   `subaccount`, `numbers_list` before `bought`), which comes before its
//!   provider's; `"mode": "none"` clears an endpoint's plan and lag, and without an
//!   endpoint its provider's plan and all of its endpoints'. Twilio's
//!   `auth_tokens` (Accounts v1 `POST`/`DELETE /AuthTokens/Secondary`, `POST
//!   /AuthTokens/Promote`) acts: `lost` there rotates and loses the answer.
//! - `POST /__control/take` `{"phoneNumber"}` — another buyer takes an available
//!   number: Twilio no longer offers it (21422 when bought).
//! - `GET /__control/state` — what the stand-ins hold (never a token: subaccounts
//!   with their status, numbers with their `voice_url` and `sms_url`), the plans
//!   and the lags. For a checker of token rotations, token statuses instead of
//!   tokens: each subaccount's `"hasSecondaryToken": bool` and `"tokenRotations":
//!   n` (how many times its primary changed); each Vapi credential's and phone
//!   number's `"twilioToken"` — what the Twilio token Vapi holds for it is at the
//!   Twilio stand-in now: `"primary"`, `"secondary"`, `"retired"` (one of that
//!   account's tokens that no longer works: a replaced or deleted secondary, a
//!   primary replaced by a promotion or a rotation by hand), `"unknown"` (an
//!   account the stand-in does not know, or a token it never gave out), `null`
//!   (no token: an API key pair); and `"deadTokenCalls": [{"endpoint", "method",
//!   "accountSid", "at"}]`, every Vapi call (`credential` `POST`/`PATCH`, `import`
//!   `POST`, `route` `PATCH`) that carried a Twilio token already retired for
//!   that account when it came, whether the call then succeeded or not (noted
//!   with Vapi's key, before a planned failure or the body's checks).
//!   `deadTokenCalls` is a record, not a holding: noting a call is no change
//!   ([`Standins::version`]), and a journal snapshot carries the calls noted up
//!   to it.
//! - Drift made by hand, as in Twilio's console or Vapi's dashboard, and a fleet
//!   seeded in bulk for a scale benchmark: `/__control/twilio/…`,
//!   `/__control/vapi/…` and `/__control/fleet`, listed in `control.rs`.
//!
//! For a checker, [`Standins::keep_journal`] keeps what the providers held after
//! every change ([`Standins::journal_since`]), so an answer can be held against each
//! moment its request ran; each snapshot is [`Standins::holdings`], token
//! statuses and `deadTokenCalls` included.
//!
//! Vapi lives under `/vapi` (`vapi/`), Twilio under `/twilio/2010-04-01` (and, as
//! its page URIs name it, under `/2010-04-01` too), its Pricing API under
//! `/twilio-pricing/v1` and its Accounts API (auth-token rotation: a subaccount's
//! secondary token created, deleted, promoted) under `/twilio-accounts/v1`
//! ([`TWILIO_ACCOUNTS_PREFIX`]; `twilio/`). Every other path under a
//! provider's prefix answers that provider's own 404 JSON (Vapi: `Cannot GET /x`;
//! Twilio: code 20404), and a wrong method Vapi's 404 or Twilio's 405 (code 20004):
//! a client never meets a 404 here that the real provider would not send.

mod control;
mod drift;
mod fleet;
mod inventory;
mod twilio;
mod vapi;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};

pub use drift::{ControlError, HandNumber};
pub use fleet::{Fleet, FleetNumber, FleetOrg, FleetRequest};
pub use inventory::{NumberType, Offer, seed_numbers};
pub use twilio::subaccount_token;
pub use vapi::SeededVapiNumber;

pub const LOCAL_VAPI_KEY: &str = "local-vapi-private-key";
pub const LOCAL_TWILIO_MAIN_SID: &str = "AC00000000000000000000000000000001";
pub const LOCAL_TWILIO_MAIN_TOKEN: &str = "11111111111111111111111111111111";
const REJECTED_TOKEN: &str = "00000000000000000000000000000000";

/// The voice URL Vapi sets on a Twilio number it imports (Twilio's `voice_url`):
/// calls to the number go to Vapi. A number bought and never imported has `""`.
pub const VAPI_TWILIO_VOICE_URL: &str = "https://api.vapi.ai/twilio/inbound_call";
/// The messaging URL Vapi sets on an imported Twilio number (`sms_url`) when its
/// `smsEnabled` is true or omitted.
pub const VAPI_TWILIO_SMS_URL: &str = "https://api.vapi.ai/twilio/sms";

/// Where the stand-ins serve each provider.
pub const VAPI_PREFIX: &str = "/vapi";
pub const TWILIO_PREFIX: &str = "/twilio";
/// Twilio's REST API (`TWILIO_BASE_URL` is the stand-ins' address plus this).
pub const TWILIO_API_PREFIX: &str = "/twilio/2010-04-01";
/// Twilio's REST API again at the stand-ins' root, where Twilio's own paths are:
/// its page URIs (`next_page_uri` `/2010-04-01/Accounts.json?…`) are paths on its
/// API host, so a client that follows one on its base URL's host (dropping the
/// base's `/twilio`) meets the same API.
pub const TWILIO_ROOT_API_PREFIX: &str = "/2010-04-01";
/// Twilio's Pricing API (`TWILIO_PRICING_BASE_URL` is the address plus this).
pub const TWILIO_PRICING_PREFIX: &str = "/twilio-pricing/v1";
/// Twilio's Accounts API, v1 (`accounts.twilio.com/v1`): the auth-token rotation
/// of `twilio/auth_tokens.rs` (`TWILIO_ACCOUNTS_BASE_URL` is the address plus this).
pub const TWILIO_ACCOUNTS_PREFIX: &str = "/twilio-accounts/v1";

/// How the next calls to a provider or an endpoint fail, as `POST /__control/fail`
/// plans it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailMode {
    /// The provider's 500 error JSON; nothing is done.
    ServerError,
    /// The provider's 429 (Twilio code 20429); nothing is done.
    RateLimited,
    /// No answer (the call hangs longer than any client waits); nothing is done.
    Timeout,
    /// The call is carried out, then its answer is lost (a timeout): what a client
    /// must look up before trying again. On endpoints that change nothing, a timeout.
    Lost,
    /// The call is carried out and its answer comes after this delay: beyond the
    /// client's timeout, the classic "acted, but the client gave up"; below it, a
    /// slow answer. On endpoints that change nothing, the answer is delayed.
    Late(Duration),
    /// The provider refuses the call with its 4xx error JSON; nothing is done.
    Refuse(Refusal),
    /// Clears a plan.
    None,
}

impl FailMode {
    /// The mode's name in `POST /__control/fail` and in the state.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ServerError => "500",
            Self::RateLimited => "429",
            Self::Timeout => "timeout",
            Self::Lost => "lost",
            Self::Late(_) => "late",
            Self::Refuse(_) => "refuse",
            Self::None => "none",
        }
    }

    /// A mode whose call is carried out before its answer goes wrong (`lost`,
    /// `late`): on an endpoint that acts, it is taken after the call acted.
    fn answers_after_acting(&self) -> bool {
        matches!(self, Self::Lost | Self::Late(_))
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "mode": self.name() });
        match self {
            Self::Late(delay) => v["delayMs"] = json!(delay.as_millis() as u64),
            Self::Refuse(r) => {
                v["status"] = json!(r.status());
                if let Some(code) = r.code {
                    v["code"] = json!(code);
                }
                if let Some(message) = &r.message {
                    v["message"] = json!(message);
                }
            }
            _ => {}
        }
        v
    }
}

/// A provider's refusal (`"mode": "refuse"`): a 4xx in its own error JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusal {
    /// A 4xx; 400 when not given.
    pub status: Option<u16>,
    /// Twilio's error code; by default 21422 ("not available") for a purchase,
    /// 20001 otherwise. Vapi's errors carry no code.
    pub code: Option<u32>,
    /// The error's message; a default that says it was injected otherwise.
    pub message: Option<String>,
}

impl Refusal {
    fn status(&self) -> u16 {
        self.status
            .filter(|s| (400..500).contains(s))
            .unwrap_or(400)
    }

    /// The refusal as `endpoint`'s provider answers one.
    fn response(&self, endpoint: Endpoint) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::BAD_REQUEST);
        if endpoint.is_vapi() {
            let message = self.message.clone().unwrap_or_else(|| {
                format!("{} refused (injected by the stand-ins)", endpoint.name())
            });
            // Vapi's validation errors (400) carry a list of messages, its others one.
            let message = if status == StatusCode::BAD_REQUEST {
                json!([message])
            } else {
                json!(message)
            };
            return vapi_error(status, message);
        }
        let (default_code, default_message) = match endpoint {
            Endpoint::Buy => (
                21422,
                "PhoneNumber is not available (injected by the stand-ins)",
            ),
            _ => (20001, "Bad request (injected by the stand-ins)"),
        };
        twilio_error(
            status,
            self.code.unwrap_or(default_code),
            self.message.as_deref().unwrap_or(default_message),
        )
    }
}

/// One provider endpoint failure injection can target.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
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
    /// Twilio `GET /Accounts.json` only; a plan for [`Endpoint::Subaccount`]
    /// applies too.
    AccountsList,
    /// Twilio `GET …/IncomingPhoneNumbers.json` only; a plan for
    /// [`Endpoint::Bought`] applies too.
    NumbersList,
    /// Twilio Accounts v1 `POST` and `DELETE /AuthTokens/Secondary`, `POST
    /// /AuthTokens/Promote` (as the subaccount whose token is rotated).
    AuthTokens,
}

impl Endpoint {
    pub const ALL: [Endpoint; 16] = [
        Self::Account,
        Self::Subaccount,
        Self::Search,
        Self::Pricing,
        Self::Buy,
        Self::Bought,
        Self::Release,
        Self::Credential,
        Self::Import,
        Self::List,
        Self::Route,
        Self::Delete,
        Self::Assistant,
        Self::AccountsList,
        Self::NumbersList,
        Self::AuthTokens,
    ];

    /// The broader endpoint whose plan applies when this one has none: the list
    /// endpoints are part of `subaccount` and `bought`.
    fn broader(self) -> Option<Endpoint> {
        match self {
            Self::AccountsList => Some(Self::Subaccount),
            Self::NumbersList => Some(Self::Bought),
            _ => None,
        }
    }

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
                | Self::AuthTokens
        )
    }

    /// Endpoints that list what the provider holds: where lookup lag shows.
    pub fn lists(self) -> bool {
        matches!(
            self,
            Self::Subaccount | Self::Bought | Self::Credential | Self::List
        )
    }

    /// The endpoint's name in `POST /__control/fail`.
    pub fn name(self) -> String {
        json!(self).as_str().unwrap_or_default().to_owned()
    }

    pub fn is_vapi(self) -> bool {
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

#[derive(Debug, Default, Clone)]
struct FailPlan {
    mode: Option<FailMode>,
    /// `None`: every call until cleared.
    remaining: Option<u32>,
    /// A 429's `Retry-After` in seconds ([`DEFAULT_RETRY_AFTER`] when not given).
    retry_after: Option<u64>,
}

/// A 429's `Retry-After` (seconds) unless the plan says otherwise.
pub const DEFAULT_RETRY_AFTER: u64 = 1;

impl FailPlan {
    fn new(mode: FailMode, times: Option<u32>) -> Self {
        Self {
            mode: (mode != FailMode::None && times != Some(0)).then_some(mode),
            remaining: times,
            retry_after: None,
        }
    }

    /// The planned mode for the next call, if `wanted`; counted only when taken.
    fn take(&mut self, wanted: impl Fn(&FailMode) -> bool) -> Option<FailMode> {
        let mode = self.mode.clone().filter(|m| wanted(m))?;
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

    fn to_json(&self) -> Value {
        let mut v = match &self.mode {
            Some(mode) => mode.to_json(),
            None => json!({ "mode": null }),
        };
        if self.mode == Some(FailMode::RateLimited) {
            v["retryAfter"] = json!(self.retry_after.unwrap_or(DEFAULT_RETRY_AFTER));
        }
        v["remaining"] = json!(self.remaining);
        v
    }
}

/// Lookup lag at a list endpoint (`"mode": "lag"`): the next `remaining` lists
/// (all, when `None`) do not show what was created within the last `lag`.
#[derive(Debug, Clone)]
struct LagPlan {
    lag: Duration,
    remaining: Option<u32>,
}

impl LagPlan {
    /// The lag of the next list, counted.
    fn take(&mut self) -> Option<Duration> {
        match &mut self.remaining {
            Some(0) => None,
            Some(n) => {
                *n -= 1;
                Some(self.lag)
            }
            None => Some(self.lag),
        }
    }
}

/// A secret the stand-ins keep (a Twilio token or API secret): never in `Debug`,
/// never in the control state or a journal snapshot.
#[derive(Clone, PartialEq, Eq)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    fn expose(&self) -> &str {
        &self.0
    }
}

/// A Vapi call that carried a Twilio token already retired for its account when
/// the call came (`deadTokenCalls` in the state): what a rotation that promoted
/// before reaching Vapi leaves behind.
#[derive(Debug, Clone)]
struct DeadTokenCall {
    /// `credential`, `import` or `route` ([`Endpoint::name`]).
    endpoint: Endpoint,
    method: &'static str,
    account_sid: String,
    at: DateTime<Utc>,
}

impl DeadTokenCall {
    fn to_json(&self) -> Value {
        json!({
            "endpoint": self.endpoint.name(),
            "method": self.method,
            "accountSid": self.account_sid,
            "at": vapi_time(self.at),
        })
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
    /// Lookup lag per list endpoint.
    lag: BTreeMap<Endpoint, LagPlan>,
    /// The last time stamped on a Vapi object.
    last_stamp: Option<DateTime<Utc>>,
    /// Counts the changes to what the providers hold.
    version: u64,
    /// What they held after each change, once [`Standins::keep_journal`] asked.
    journal: Option<Vec<(u64, Value)>>,
    /// Every Vapi call that carried a retired Twilio token, oldest first. A
    /// record, not a holding: noting one is not a change ([`Inner::changed`]).
    dead_token_calls: Vec<DeadTokenCall>,
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

    /// The failure planned for a call to `endpoint`, if any and `wanted`, with a
    /// 429's `Retry-After`: the endpoint's own plan first, then its broader
    /// endpoint's ([`Endpoint::broader`]), then its provider's.
    fn planned_failure(
        &mut self,
        endpoint: Endpoint,
        wanted: impl Fn(&FailMode) -> bool + Copy,
    ) -> Option<(FailMode, u64)> {
        let retry_after = |p: &FailPlan| p.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
        for e in std::iter::once(endpoint).chain(endpoint.broader()) {
            if let Some(plan) = self.endpoint_fail.get_mut(&e)
                && let Some(mode) = plan.take(wanted)
            {
                return Some((mode, retry_after(plan)));
            }
        }
        let plan = if endpoint.is_vapi() {
            &mut self.vapi_fail
        } else {
            &mut self.twilio_fail
        };
        let mode = plan.take(wanted)?;
        Some((mode, retry_after(plan)))
    }

    /// What a list at `endpoint` may show, `true` for an item created at
    /// `created`: all of them, unless lookup lag is planned for the endpoint (then
    /// only those created before now less the lag). Without lag nothing is held
    /// back: stamps may run a little ahead of the clock ([`Inner::stamp`]).
    fn list_cutoff(&mut self, endpoint: Endpoint) -> impl Fn(DateTime<Utc>) -> bool + use<> {
        let lag = self.lag.get_mut(&endpoint).and_then(LagPlan::take);
        let cutoff = lag
            .and_then(|l| TimeDelta::from_std(l).ok())
            .map(|lag| Utc::now() - lag);
        move |created| cutoff.is_none_or(|cutoff| created <= cutoff)
    }

    /// What the providers hold (never a token): Twilio's subaccounts (with
    /// `hasSecondaryToken` and `tokenRotations`) and numbers, Vapi's credentials
    /// and phone numbers (each with `twilioToken`: what the Twilio token Vapi holds
    /// for it is at Twilio now, [`Inner::token_status`]), and `deadTokenCalls`.
    fn holdings(&self) -> Value {
        let status = |sid: &str, token: Option<&str>| self.token_status(sid, token);
        json!({
            "credentials": self.vapi.credentials_state(&status),
            "vapi_phone_numbers": self.vapi.phone_numbers_state(&status),
            "twilio_subaccounts": self.twilio.subaccounts_state(),
            "twilio_numbers": self.twilio.numbers_state(),
            "deadTokenCalls": self
                .dead_token_calls
                .iter()
                .map(DeadTokenCall::to_json)
                .collect::<Vec<_>>(),
        })
    }

    /// What a Twilio token Vapi holds for `account_sid` is at the Twilio stand-in
    /// now, never the token: `"primary"`, `"secondary"`, `"retired"` (it was one of
    /// the account's and no longer works), `"unknown"` (an account the stand-in
    /// does not know, or a token it never gave out); `null` when Vapi holds no
    /// token (an API key pair, or a credential seeded for an unknown account).
    fn token_status(&self, account_sid: &str, token: Option<&str>) -> Value {
        match token {
            None => Value::Null,
            Some(t) => json!(self.twilio.token_kind(account_sid, t).as_str()),
        }
    }

    /// A Vapi call (`endpoint`, `method`) carrying `token` for `account_sid`:
    /// recorded in `deadTokenCalls` when that token had been retired for that
    /// account already, whatever then becomes of the call.
    fn note_twilio_token(
        &mut self,
        endpoint: Endpoint,
        method: &'static str,
        account_sid: &str,
        token: &str,
    ) {
        if self.twilio.is_retired(account_sid, token) {
            self.dead_token_calls.push(DeadTokenCall {
                endpoint,
                method,
                account_sid: account_sid.to_owned(),
                at: Utc::now(),
            });
        }
    }

    /// After every change to what the providers hold: counted, and journaled if
    /// asked.
    fn changed(&mut self) {
        self.version += 1;
        if self.journal.is_some() {
            let now = self.holdings();
            let version = self.version;
            if let Some(journal) = &mut self.journal {
                journal.push((version, now));
            }
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

    /// A Vapi phone number the stand-in knows (imported before it started). As an
    /// import does, it points the Twilio number (if its account holds it) at Vapi.
    pub fn add_vapi_phone_number(&self, number: SeededVapiNumber<'_>) {
        let mut inner = self.lock();
        let now = inner.stamp();
        let token = inner.twilio.account_token(number.twilio_account_sid);
        let token = token.map(str::to_owned);
        inner
            .twilio
            .point_to_vapi(number.twilio_account_sid, number.number, true);
        inner.vapi.add_phone_number(number, token, now);
        inner.changed();
    }

    /// A Vapi credential the stand-in knows (created before it started), holding
    /// the account's current primary token if Twilio's stand-in knows the account
    /// (as a seeded number does); none otherwise (its `twilioToken` is `null`).
    pub fn add_vapi_credential(&self, id: &str, name: &str, account_sid: &str) {
        let mut inner = self.lock();
        let now = inner.stamp();
        let token = inner.twilio.account_token(account_sid).map(str::to_owned);
        inner.vapi.add_credential(id, name, account_sid, token, now);
        inner.changed();
    }

    /// A subaccount of the local main account with its auth token.
    pub fn add_subaccount(&self, sid: &str, friendly_name: &str, auth_token: &str) {
        let mut inner = self.lock();
        inner.twilio.add_subaccount(sid, friendly_name, auth_token);
        inner.changed();
    }

    /// Whether Twilio knows this subaccount.
    pub fn knows_subaccount(&self, sid: &str) -> bool {
        self.lock().twilio.subaccounts.contains_key(sid)
    }

    /// A Twilio number bought under `subaccount` (of the local main account).
    pub fn add_twilio_number(&self, subaccount: &str, number_sid: &str, e164: &str) {
        let mut inner = self.lock();
        inner
            .twilio
            .add_incoming(subaccount, number_sid, e164, None);
        inner.changed();
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
    /// `FailMode::None` clears the provider's plan and its endpoints' (lookup lag
    /// included).
    pub fn fail(&self, provider: &str, mode: FailMode, times: Option<u32>) {
        let mut s = self.lock();
        let vapi = provider == "vapi";
        if mode == FailMode::None {
            s.endpoint_fail.retain(|e, _| e.is_vapi() != vapi);
            s.lag.retain(|e, _| e.is_vapi() != vapi);
        }
        let plan = if vapi {
            &mut s.vapi_fail
        } else {
            &mut s.twilio_fail
        };
        *plan = FailPlan::new(mode, times);
    }

    /// Fail the next `times` calls (all, without) to one endpoint. `FailMode::None`
    /// clears its plan and its lookup lag.
    pub fn fail_endpoint(&self, endpoint: Endpoint, mode: FailMode, times: Option<u32>) {
        let mut s = self.lock();
        if mode == FailMode::None {
            s.endpoint_fail.remove(&endpoint);
            s.lag.remove(&endpoint);
        } else {
            s.endpoint_fail.insert(endpoint, FailPlan::new(mode, times));
        }
    }

    /// Answer the next `times` calls (all, without) to `endpoint` — or, without
    /// one, to `provider` (`vapi` | `twilio`) — with the provider's 429 and
    /// `Retry-After: <retry_after_secs>`.
    pub fn rate_limit(
        &self,
        provider: &str,
        endpoint: Option<Endpoint>,
        times: Option<u32>,
        retry_after_secs: u64,
    ) {
        let mut plan = FailPlan::new(FailMode::RateLimited, times);
        plan.retry_after = Some(retry_after_secs);
        let mut s = self.lock();
        match endpoint {
            Some(e) => {
                s.endpoint_fail.insert(e, plan);
            }
            None if provider == "vapi" => s.vapi_fail = plan,
            None => s.twilio_fail = plan,
        }
    }

    /// Lookup lag: the next `times` lists (all, without) at `endpoint` (one that
    /// [`Endpoint::lists`]; others are left alone) do not show what was created
    /// within the last `lag`. A zero `lag` clears it.
    pub fn lag(&self, endpoint: Endpoint, lag: Duration, times: Option<u32>) {
        if !endpoint.lists() {
            return;
        }
        let mut s = self.lock();
        if lag.is_zero() || times == Some(0) {
            s.lag.remove(&endpoint);
        } else {
            s.lag.insert(
                endpoint,
                LagPlan {
                    lag,
                    remaining: times,
                },
            );
        }
    }

    /// As if `by` had passed for what the providers hold: every object's creation
    /// (and update) time moves that much into the past, so lookup lag and
    /// `createdAt` bounds see it as older. For a test that moves its database's
    /// clock forward (claims expiring, backoffs passing) without waiting: the
    /// stand-ins' objects age with it. Later stamps stay later than earlier ones.
    pub fn age(&self, by: Duration) {
        let Ok(by) = TimeDelta::from_std(by) else {
            return;
        };
        let mut s = self.lock();
        s.vapi.age(by);
        s.twilio.age(by);
    }

    /// Keep a journal of what the providers hold after each change from now on
    /// ([`Standins::journal_since`]): for a checker that asks whether an answer
    /// was true at some moment while its request ran.
    pub fn keep_journal(&self) {
        let mut s = self.lock();
        if s.journal.is_none() {
            s.journal = Some(Vec::new());
        }
    }

    /// How many changes to what the providers hold there have been.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// What the providers hold now, with its version: Vapi credentials and phone
    /// numbers, Twilio subaccounts and numbers (as in [`Standins::state`]).
    pub fn holdings(&self) -> (u64, Value) {
        let s = self.lock();
        (s.version, s.holdings())
    }

    /// What the providers held after each change later than `version` (with the
    /// change's version), oldest first; empty unless [`Standins::keep_journal`].
    pub fn journal_since(&self, version: u64) -> Vec<(u64, Value)> {
        let s = self.lock();
        s.journal
            .iter()
            .flatten()
            .filter(|(v, _)| *v > version)
            .cloned()
            .collect()
    }

    /// What the stand-ins hold, never a token: Vapi credentials and phone numbers,
    /// Twilio subaccounts, bought and available numbers, and the failure plans and
    /// lookup lags.
    pub fn state(&self) -> Value {
        let inner = self.lock();
        let endpoint_fail: serde_json::Map<String, Value> = inner
            .endpoint_fail
            .iter()
            .filter(|(_, p)| p.mode.is_some())
            .map(|(e, p)| (e.name(), p.to_json()))
            .collect();
        let lag: serde_json::Map<String, Value> = inner
            .lag
            .iter()
            .filter(|(_, p)| p.remaining != Some(0))
            .map(|(e, p)| {
                (
                    e.name(),
                    json!({"lagMs": p.lag.as_millis() as u64, "remaining": p.remaining}),
                )
            })
            .collect();
        let mut state = inner.holdings();
        state["available_numbers"] = inner.twilio.available_state();
        state["vapi_fail"] = inner.vapi_fail.to_json();
        state["twilio_fail"] = inner.twilio_fail.to_json();
        state["endpoint_fail"] = Value::Object(endpoint_fail);
        state["lag"] = Value::Object(lag);
        state
    }

    pub fn router(&self) -> Router {
        Router::new()
            .merge(vapi::routes())
            .merge(twilio::routes())
            .route("/__control/fail", post(control::fail))
            .route("/__control/take", post(control::take))
            .route("/__control/state", get(control::state))
            .route("/__control/twilio/numbers", post(control::twilio_number))
            .route("/__control/twilio/accounts", post(control::twilio_account))
            .route(
                "/__control/twilio/accounts/{sid}/status",
                post(control::twilio_account_status),
            )
            .route(
                "/__control/twilio/accounts/{sid}/rotate-token",
                post(control::twilio_rotate_token),
            )
            .route(
                "/__control/twilio/voice-url",
                post(control::twilio_voice_url),
            )
            .route("/__control/vapi/numbers", post(control::vapi_number))
            .route(
                "/__control/vapi/numbers/{id}",
                delete(control::vapi_number_delete),
            )
            .route(
                "/__control/vapi/numbers/{id}/assistant",
                post(control::vapi_number_assistant),
            )
            .route("/__control/fleet", post(control::fleet))
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
/// is carried out; a `late` answer of an endpoint that changes nothing is delayed
/// here. (A `lost` or `late` answer of an endpoint that acts comes after the call
/// acted: [`answer_acted`].)
async fn injected(s: &Standins, endpoint: Endpoint) -> Option<Response> {
    let (mode, retry_after) = s
        .lock()
        .planned_failure(endpoint, |m| !(m.answers_after_acting() && endpoint.acts()))?;
    let vapi = endpoint.is_vapi();
    let rate_limited = |mut r: Response| {
        r.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, retry_after.into());
        r
    };
    Some(match (mode, vapi) {
        (FailMode::Timeout | FailMode::Lost, _) => {
            tokio::time::sleep(HANG).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        (FailMode::Late(delay), _) => {
            tokio::time::sleep(delay).await;
            return None;
        }
        (FailMode::Refuse(refusal), _) => refusal.response(endpoint),
        (FailMode::RateLimited, true) => rate_limited(vapi_error(
            StatusCode::TOO_MANY_REQUESTS,
            json!("Too many requests"),
        )),
        (FailMode::RateLimited, false) => rate_limited(twilio_error(
            StatusCode::TOO_MANY_REQUESTS,
            20429,
            "Too Many Requests",
        )),
        (FailMode::None, _) => return None,
        (FailMode::ServerError, true) => vapi_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!("Internal server error"),
        ),
        (FailMode::ServerError, false) => twilio_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            20500,
            "Internal Server Error",
        ),
    })
}

/// The answer of a call that was carried out: on time, unless a `late` answer was
/// planned (it comes after the delay) or a `lost` one (the client waits in vain).
/// Either way the change stays made.
async fn answer_acted(s: &Standins, endpoint: Endpoint, answer: Response) -> Response {
    if !answer.status().is_success() {
        return answer;
    }
    let planned = s
        .lock()
        .planned_failure(endpoint, FailMode::answers_after_acting)
        .map(|(mode, _)| mode);
    match planned {
        None => answer,
        Some(FailMode::Late(delay)) => {
            tokio::time::sleep(delay).await;
            answer
        }
        Some(_) => {
            tokio::time::sleep(HANG).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
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
    let twilio_rest = provider_path(path, TWILIO_PREFIX)
        .or_else(|| provider_path(path, "/twilio-pricing"))
        .or_else(|| provider_path(path, "/twilio-accounts"))
        .or_else(|| provider_path(path, TWILIO_ROOT_API_PREFIX).map(|_| path));
    if let Some(rest) = twilio_rest {
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            &format!("The requested resource {rest} was not found"),
        );
    }
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": format!("Not Found: the stand-ins serve {VAPI_PREFIX}/…, {TWILIO_API_PREFIX}/…, {TWILIO_PRICING_PREFIX}/…, {TWILIO_ACCOUNTS_PREFIX}/… and /__control/…")})),
    )
        .into_response()
}

/// A known path with another method: Vapi routes by method and path, so it is a 404
/// there; Twilio answers 405, code 20004.
async fn wrong_method(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if provider_path(path, TWILIO_PREFIX).is_some()
        || provider_path(path, "/twilio-pricing").is_some()
        || provider_path(path, "/twilio-accounts").is_some()
        || provider_path(path, TWILIO_ROOT_API_PREFIX).is_some()
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
