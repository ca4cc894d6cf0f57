//! The Twilio stand-in: the REST API under `/twilio/2010-04-01` and the Pricing API
//! under `/twilio-pricing/v1`, HTTP Basic auth, form bodies, Twilio's error JSON
//! `{"code","message","more_info","status"}`.
//!
//! Who may call: the local main account (`LOCAL_TWILIO_MAIN_SID` /
//! `LOCAL_TWILIO_MAIN_TOKEN`) on itself and its subaccounts, and a subaccount with
//! its own token on itself. Wrong credentials are 401 (20003); an account these
//! credentials may not act on is Twilio's 404 (20404).
//!
//! - `GET /Accounts.json` (`FriendlyName`, `Status`, `PageSize`) and `POST
//!   /Accounts.json` (`FriendlyName` ≤ 64) → 201 with the new subaccount's `sid` and
//!   `auth_token`; `GET /Accounts/{sid}.json` answers an account with its
//!   `auth_token` to the main account and to the account itself. An account the
//!   stand-in does not know, read with its own credentials, is accepted when
//!   well-formed (so a BYOC save can be shown), except the token `000…0` (401, 20003)
//!   and SIDs ending in `dead`: a suspended account, which Twilio answers not with
//!   200 and its status but with an error (here 403, code 20403).
//! - `GET /Accounts/{sid}/AvailablePhoneNumbers/{ISO}/{Local|TollFree}.json`
//!   (`AreaCode` — three digits, else 21451 — `Contains`, `VoiceEnabled`,
//!   `SmsEnabled`, `MmsEnabled`, `Exclude{All,Local,Foreign}AddressRequired`,
//!   `InRegion`, `InLocality`, `InPostalCode`, `PageSize`): the inventory
//!   ([`super::seed_numbers`]) minus what was bought or taken.
//! - `POST /Accounts/{sid}/IncomingPhoneNumbers.json` (`PhoneNumber` or `AreaCode`,
//!   `FriendlyName` ≤ 64): 201 with `sid` `PN…`; a number not offered (never, or
//!   taken in between) is 400 code 21422, a malformed one 21421, one that needs an
//!   address 21631. `GET …/IncomingPhoneNumbers.json` (`PhoneNumber`,
//!   `FriendlyName`), `GET` and `DELETE …/IncomingPhoneNumbers/{PN}.json` (204, then
//!   404 code 20404). A released number is not offered again (Twilio ages numbers).
//! - Pricing `GET /PhoneNumbers/Countries/{US|CA}`: local 1.15, toll free 2.15 USD.

mod accounts;
mod numbers;

pub use accounts::subaccount_token;

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use super::inventory::{Offer, friendly_name};
use super::{
    Inner, LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN, Standins, authorization, twilio_error,
    twilio_time,
};

const API: &str = "/2010-04-01";

pub(super) fn routes() -> Router<Standins> {
    let api = super::TWILIO_API_PREFIX;
    Router::new()
        .route(
            &format!("{api}/Accounts.json"),
            get(accounts::list).post(accounts::create),
        )
        .route(&format!("{api}/Accounts/{{sid}}"), get(accounts::fetch))
        .route(
            &format!("{api}/Accounts/{{sid}}/AvailablePhoneNumbers/{{iso}}/{{kind}}"),
            get(numbers::search),
        )
        .route(
            &format!("{api}/Accounts/{{sid}}/IncomingPhoneNumbers.json"),
            get(numbers::list).post(numbers::buy),
        )
        .route(
            &format!("{api}/Accounts/{{sid}}/IncomingPhoneNumbers/{{pn}}"),
            get(numbers::fetch).delete(numbers::release),
        )
        .route(
            &format!(
                "{}/PhoneNumbers/Countries/{{iso}}",
                super::TWILIO_PRICING_PREFIX
            ),
            get(accounts::prices),
        )
}

/// A subaccount of the local main account.
#[derive(Clone)]
pub(super) struct Account {
    friendly_name: String,
    auth_token: String,
    status: String,
    created: DateTime<Utc>,
}

/// Never the token.
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("friendly_name", &self.friendly_name)
            .field("status", &self.status)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// A number an account bought.
#[derive(Debug, Clone)]
pub(super) struct Incoming {
    sid: String,
    account_sid: String,
    phone_number: String,
    friendly_name: String,
    created: DateTime<Utc>,
    offer: Option<Offer>,
}

impl Incoming {
    fn to_json(&self) -> Value {
        let caps = self.offer.as_ref();
        json!({
            "sid": self.sid,
            "account_sid": self.account_sid,
            "phone_number": self.phone_number,
            "friendly_name": self.friendly_name,
            "status": "in-use",
            "origin": "twilio",
            "address_requirements": caps.map_or("none", |o| o.address_requirements.as_str()),
            "capabilities": {
                "voice": caps.is_none_or(|o| o.voice),
                "sms": caps.is_none_or(|o| o.sms),
                "mms": caps.is_none_or(|o| o.mms),
                "fax": false,
            },
            "voice_url": "",
            "sms_url": "",
            "api_version": "2010-04-01",
            "date_created": twilio_time(self.created),
            "date_updated": twilio_time(self.created),
            "uri": format!("{API}/Accounts/{}/IncomingPhoneNumbers/{}.json", self.account_sid, self.sid),
        })
    }
}

#[derive(Debug, Default)]
pub(super) struct TwilioState {
    pub(super) subaccounts: BTreeMap<String, Account>,
    /// By `subaccount/PN…`.
    incoming: BTreeMap<String, Incoming>,
    /// What a search finds, by E.164.
    pub(super) available: BTreeMap<String, Offer>,
}

impl TwilioState {
    pub(super) fn add_subaccount(&mut self, sid: &str, friendly_name: &str, auth_token: &str) {
        self.subaccounts.insert(
            sid.to_owned(),
            Account {
                friendly_name: friendly_name.to_owned(),
                auth_token: auth_token.to_owned(),
                status: "active".into(),
                created: Utc::now(),
            },
        );
    }

    pub(super) fn add_incoming(
        &mut self,
        account_sid: &str,
        sid: &str,
        e164: &str,
        offer: Option<Offer>,
    ) {
        self.available.remove(e164);
        self.incoming.insert(
            format!("{account_sid}/{sid}"),
            Incoming {
                sid: sid.to_owned(),
                account_sid: account_sid.to_owned(),
                phone_number: e164.to_owned(),
                friendly_name: friendly_name(e164),
                created: Utc::now(),
                offer,
            },
        );
    }

    /// As if `by` had passed: every account and number was made that much earlier.
    pub(super) fn age(&mut self, by: TimeDelta) {
        for a in self.subaccounts.values_mut() {
            a.created -= by;
        }
        for n in self.incoming.values_mut() {
            n.created -= by;
        }
    }

    /// The token an account authenticates with (the main account's, or a known
    /// subaccount's).
    pub(super) fn account_token(&self, sid: &str) -> Option<&str> {
        if sid == LOCAL_TWILIO_MAIN_SID {
            return Some(LOCAL_TWILIO_MAIN_TOKEN);
        }
        self.subaccounts.get(sid).map(|a| a.auth_token.as_str())
    }

    /// Whether `account_sid` holds `e164`.
    pub(super) fn owns(&self, account_sid: &str, e164: &str) -> bool {
        self.incoming
            .values()
            .any(|n| n.account_sid == account_sid && n.phone_number == e164)
    }

    fn account_json(&self, sid: &str) -> Option<Value> {
        let (name, token, status, created, owner) = if sid == LOCAL_TWILIO_MAIN_SID {
            let created = DateTime::UNIX_EPOCH;
            (
                "Local main account",
                LOCAL_TWILIO_MAIN_TOKEN,
                "active",
                created,
                sid,
            )
        } else {
            let a = self.subaccounts.get(sid)?;
            let owner = LOCAL_TWILIO_MAIN_SID;
            (
                a.friendly_name.as_str(),
                a.auth_token.as_str(),
                a.status.as_str(),
                a.created,
                owner,
            )
        };
        Some(json!({
            "sid": sid,
            "owner_account_sid": owner,
            "friendly_name": name,
            "status": status,
            "auth_token": token,
            "type": "Full",
            "date_created": twilio_time(created),
            "date_updated": twilio_time(created),
            "uri": format!("{API}/Accounts/{sid}.json"),
        }))
    }

    pub(super) fn subaccounts_state(&self) -> Value {
        let map: Map<String, Value> = self
            .subaccounts
            .iter()
            .map(|(sid, a)| {
                (
                    sid.clone(),
                    json!({"friendly_name": a.friendly_name, "status": a.status}),
                )
            })
            .collect();
        Value::Object(map)
    }

    pub(super) fn numbers_state(&self) -> Value {
        let map: Map<String, Value> = self
            .incoming
            .iter()
            .map(|(key, n)| {
                (
                    key.clone(),
                    json!({"sid": n.sid, "account_sid": n.account_sid,
                           "phone_number": n.phone_number, "friendly_name": n.friendly_name}),
                )
            })
            .collect();
        Value::Object(map)
    }

    pub(super) fn available_state(&self) -> Value {
        json!(self.available.keys().collect::<Vec<_>>())
    }
}

/// HTTP Basic credentials, if well-formed.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = authorization(headers)?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

fn unauthenticated() -> Response {
    twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
}

fn not_found(path: &str) -> Response {
    twilio_error(
        StatusCode::NOT_FOUND,
        20404,
        &format!("The requested resource {path} was not found"),
    )
}

fn bad_request(code: u32, message: &str) -> Response {
    twilio_error(StatusCode::BAD_REQUEST, code, message)
}

/// Who the credentials are: `Ok(true)` the main account, `Ok(false)` a known
/// subaccount acting on itself as `sid`. `path` names the resource for a 404.
fn may_act_on(
    inner: &Inner,
    headers: &HeaderMap,
    sid: &str,
    path: &str,
) -> Result<bool, Box<Response>> {
    let Some((user, token)) = basic_auth(headers) else {
        return Err(Box::new(unauthenticated()));
    };
    if inner.twilio.account_token(&user) != Some(token.as_str()) {
        return Err(Box::new(unauthenticated()));
    }
    let main = user == LOCAL_TWILIO_MAIN_SID;
    let visible = if main {
        inner.twilio.account_token(sid).is_some()
    } else {
        user == sid
    };
    if visible {
        Ok(main)
    } else {
        Err(Box::new(not_found(path)))
    }
}

/// A form body (`application/x-www-form-urlencoded`), as Twilio reads one.
fn form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn query_pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Vec<(String, String)> {
    query.map(|Query(q)| q).unwrap_or_default()
}

/// A Twilio `PageSize`: 1 to 1000 (default 50).
fn page_size(pairs: &[(String, String)]) -> Result<usize, Box<Response>> {
    match param(pairs, "PageSize") {
        None => Ok(50),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(Box::new(bad_request(
                20001,
                "PageSize must be an integer from 1 to 1000",
            ))),
        },
    }
}

/// A list answer with Twilio's paging fields.
fn page(key: &str, items: Vec<Value>, uri: String, size: usize) -> Value {
    let mut v = json!({
        "first_page_uri": uri, "next_page_uri": null, "previous_page_uri": null,
        "page": 0, "page_size": size, "start": 0, "end": items.len().saturating_sub(1), "uri": uri,
    });
    v[key] = Value::Array(items);
    v
}
