//! The Twilio stand-in: the REST API under `/twilio/2010-04-01`, the Pricing API
//! under `/twilio-pricing/v1` and the Accounts API's auth-token rotation under
//! `/twilio-accounts/v1` (`auth_tokens.rs`), HTTP Basic auth, form bodies,
//! Twilio's error JSON `{"code","message","more_info","status"}`.
//!
//! Who may call: the local main account (`LOCAL_TWILIO_MAIN_SID` /
//! `LOCAL_TWILIO_MAIN_TOKEN`) on itself and its subaccounts (whatever their
//! status), and an active subaccount with its own token on itself. Wrong
//! credentials, and a suspended or closed subaccount's own, are 401 (20003); an
//! account these credentials may not act on is Twilio's 404 (20404).
//!
//! Tokens: each subaccount has a primary token (`subaccount_token(sid)` when made,
//! the one the main account reads as its `auth_token`) and, while a rotation is
//! under way, a secondary one; until the secondary is promoted both authenticate
//! everywhere (this API as the subaccount, the Accounts API, Vapi's checks with
//! Twilio). The Accounts API (`/twilio-accounts/v1`, as the subaccount):
//! `POST /AuthTokens/Secondary` → 201 with `secondary_auth_token` (a new random
//! 32-hex token; one made while another exists replaces it, and the old one fails
//! at once), `DELETE /AuthTokens/Secondary` → 204 (none: 404, 20404), `POST
//! /AuthTokens/Promote` → 200 with the promoted token as `auth_token` (the old
//! primary fails at once, 401 / 20003; no secondary: 400, 20001). The main
//! account is refused there with 403 (20403): at real Twilio it would rotate the
//! platform's MAIN token. A rotation by hand (`/__control/twilio/accounts/{sid}/
//! rotate-token`, Twilio's console) replaces the primary at once and drops the
//! secondary. Each subaccount keeps its retired tokens (a replaced or deleted
//! secondary, a replaced primary) as `Secret`s, never shown, so the control state
//! can say what a token Vapi holds is (`twilioToken`) and which Vapi calls carried
//! a dead one (`deadTokenCalls`). Rotated tokens live in memory only: a restart of
//! the stand-ins knows each subaccount by `subaccount_token(sid)` again.
//!
//! - `GET /Accounts.json` (`FriendlyName`, `Status`; paged: `PageSize`, `Page`,
//!   `PageToken`, see `paging.rs`) — the main account first, then its subaccounts
//!   by SID — and `POST /Accounts.json` (`FriendlyName` ≤ 64) → 201 with the new
//!   subaccount's `sid` and `auth_token`; `GET /Accounts/{sid}.json` answers an
//!   account with its `auth_token` and `status` to the main account and to the
//!   account itself. `POST /Accounts/{sid}.json` as the main account (`Status`
//!   `active`|`suspended`|`closed`, `FriendlyName`): 200 with the account; closing
//!   releases the subaccount's numbers and is for good (a later change: 400,
//!   20001). An account the stand-in does not know, read with its own
//!   credentials, is accepted when well-formed (so a BYOC save can be shown),
//!   except the token `000…0` (401, 20003) and SIDs ending in `dead`: a suspended
//!   account, which Twilio answers not with 200 and its status but with an error
//!   (here 403, code 20403).
//! - `GET /Accounts/{sid}/AvailablePhoneNumbers/{ISO}/{Local|TollFree}.json`
//!   (`AreaCode` — three digits, else 21451 — `Contains`, `VoiceEnabled`,
//!   `SmsEnabled`, `MmsEnabled`, `Exclude{All,Local,Foreign}AddressRequired`,
//!   `InRegion`, `InLocality`, `InPostalCode`, `PageSize`): the inventory
//!   ([`super::seed_numbers`]) minus what was bought or taken.
//! - `POST /Accounts/{sid}/IncomingPhoneNumbers.json` (`PhoneNumber` or `AreaCode`,
//!   `FriendlyName` ≤ 64): 201 with `sid` `PN…`; a number not offered (never, or
//!   taken in between) is 400 code 21422, a malformed one 21421, one that needs an
//!   address 21631; on a closed subaccount 404 (20404). `GET
//!   …/IncomingPhoneNumbers.json` (`PhoneNumber`, `FriendlyName`; paged as the
//!   accounts, by PN SID), `GET` and `DELETE …/IncomingPhoneNumbers/{PN}.json`
//!   (204, then 404 code 20404). A released number is not offered again (Twilio
//!   ages numbers). Listing, fetching or checking an account's numbers reads only
//!   that account's: O(its numbers), however many the stand-in holds.
//! - A number's `voice_url` (and `sms_url`) is `""` until Vapi imports it
//!   ([`super::VAPI_TWILIO_VOICE_URL`], [`super::VAPI_TWILIO_SMS_URL`]) or a hand
//!   sets it (`/__control/twilio/voice-url`).
//! - Pricing `GET /PhoneNumbers/Countries/{US|CA}`: local 1.15, toll free 2.15 USD.

mod accounts;
mod auth_tokens;
mod numbers;
mod paging;

pub use accounts::subaccount_token;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use axum::Router;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use super::inventory::{Offer, friendly_name};
use super::{
    Inner, LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN, Secret, Standins, VAPI_TWILIO_SMS_URL,
    VAPI_TWILIO_VOICE_URL, authorization, twilio_error, twilio_time,
};

const API: &str = "/2010-04-01";

pub(super) fn routes() -> Router<Standins> {
    api_routes(super::TWILIO_API_PREFIX)
        // Twilio's page URIs (`next_page_uri`, …) are paths on its API host
        // (`/2010-04-01/…`): a client that follows one on its base URL's host
        // meets the same API there.
        .merge(api_routes(super::TWILIO_ROOT_API_PREFIX))
        .route(
            &format!(
                "{}/PhoneNumbers/Countries/{{iso}}",
                super::TWILIO_PRICING_PREFIX
            ),
            get(accounts::prices),
        )
        .route(
            &format!("{}/AuthTokens/Secondary", super::TWILIO_ACCOUNTS_PREFIX),
            post(auth_tokens::create_secondary).delete(auth_tokens::delete_secondary),
        )
        .route(
            &format!("{}/AuthTokens/Promote", super::TWILIO_ACCOUNTS_PREFIX),
            post(auth_tokens::promote),
        )
}

/// The REST API's routes under `api`.
fn api_routes(api: &str) -> Router<Standins> {
    Router::new()
        .route(
            &format!("{api}/Accounts.json"),
            get(accounts::list).post(accounts::create),
        )
        .route(
            &format!("{api}/Accounts/{{sid}}"),
            get(accounts::fetch).post(accounts::update),
        )
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
}

/// A Twilio account's status (`active`, `suspended`, `closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    /// Its credentials work; its numbers bill.
    Active,
    /// Its own credentials are refused (401, 20003); its numbers stay and bill.
    Suspended,
    /// For good: its numbers are released, its own credentials refused (401,
    /// 20003); the main account still reads it, with this status.
    Closed,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// A subaccount of the local main account.
#[derive(Clone)]
pub(super) struct Account {
    friendly_name: String,
    /// The primary token: what the main account reads as the account's
    /// `auth_token`.
    auth_token: Secret,
    /// The secondary token and when it was made, until it is promoted, deleted or
    /// replaced: until then it authenticates as the primary does.
    secondary: Option<(Secret, DateTime<Utc>)>,
    /// When the primary became the primary (the account's creation, a promotion or
    /// a rotation by hand).
    primary_since: DateTime<Utc>,
    /// The account's tokens that no longer work: a secondary replaced by another or
    /// deleted, a primary replaced by a promotion or a rotation by hand (and the
    /// secondary such a rotation dropped). Kept only as [`Secret`]s, to tell a call
    /// with one (`deadTokenCalls`, `twilioToken: "retired"`).
    retired: Vec<Secret>,
    /// How many times the primary changed.
    token_rotations: u64,
    status: AccountStatus,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
}

/// Never a token.
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("friendly_name", &self.friendly_name)
            .field("status", &self.status)
            .field("has_secondary_token", &self.secondary.is_some())
            .field("token_rotations", &self.token_rotations)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// Retires the secondary, if any (replaced, deleted or dropped).
    fn retire_secondary(&mut self) -> bool {
        match self.secondary.take() {
            Some((token, _)) => {
                self.retired.push(token);
                true
            }
            None => false,
        }
    }

    /// `primary` is the primary from `now` on; the old one is retired.
    fn replace_primary(&mut self, primary: Secret, now: DateTime<Utc>) {
        let old = std::mem::replace(&mut self.auth_token, primary);
        self.retired.push(old);
        self.primary_since = now;
        self.token_rotations += 1;
        self.updated = now.max(self.created);
    }
}

/// What a token is to an account at the stand-in now (the control state's
/// `twilioToken`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenKind {
    Primary,
    Secondary,
    /// It was one of the account's tokens and works no more.
    Retired,
    /// An account the stand-in does not know, or a token it never gave it.
    Unknown,
}

impl TokenKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Secondary => "secondary",
            Self::Retired => "retired",
            Self::Unknown => "unknown",
        }
    }
}

/// A new random token: 32 lowercase hex characters, as Twilio's (and
/// [`subaccount_token`]'s) are.
fn new_token() -> Secret {
    Secret(uuid::Uuid::new_v4().simple().to_string())
}

/// Why an account's status was not changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StatusRefused {
    /// No such subaccount (the main account's status is not changed here).
    Unknown,
    /// Closed for good: no later change.
    Closed,
}

/// A number an account bought.
#[derive(Debug, Clone)]
pub(super) struct Incoming {
    sid: String,
    account_sid: String,
    phone_number: String,
    friendly_name: String,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    /// Where Twilio sends its calls: `""` until an import (or a hand) sets it.
    voice_url: Cow<'static, str>,
    /// Where Twilio sends its messages: `""` until set.
    sms_url: Cow<'static, str>,
    offer: Option<Box<Offer>>,
}

impl Incoming {
    fn to_json(&self) -> Value {
        let caps = self.offer.as_deref();
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
            "voice_url": self.voice_url,
            "voice_method": "POST",
            "sms_url": self.sms_url,
            "sms_method": "POST",
            "api_version": "2010-04-01",
            "date_created": twilio_time(self.created),
            "date_updated": twilio_time(self.updated),
            "uri": format!("{API}/Accounts/{}/IncomingPhoneNumbers/{}.json", self.account_sid, self.sid),
        })
    }
}

/// A number to add to an account, as a purchase (or a hand, or the fleet) makes it.
pub(super) struct NewIncoming<'a> {
    pub account_sid: &'a str,
    pub sid: &'a str,
    pub e164: &'a str,
    /// Twilio's display form of the number when `None`.
    pub friendly_name: Option<String>,
    pub offer: Option<Offer>,
    pub created: DateTime<Utc>,
    pub voice_url: Cow<'static, str>,
    pub sms_url: Cow<'static, str>,
}

/// The key of an account's number: `account/PN…`, so an account's numbers are one
/// range of the map.
fn number_key(account_sid: &str, pn: &str) -> String {
    format!("{account_sid}/{pn}")
}

/// The bounds of an account's numbers in the map: from `account/` (before every
/// `account/PN…`) to `account0` (`0` follows `/`).
fn account_range(account_sid: &str) -> (Bound<String>, Bound<String>) {
    (
        Bound::Included(format!("{account_sid}/")),
        Bound::Excluded(format!("{account_sid}0")),
    )
}

#[derive(Debug, Default)]
pub(super) struct TwilioState {
    pub(super) subaccounts: BTreeMap<String, Account>,
    /// By `subaccount/PN…` ([`number_key`]): listing, fetching or checking one
    /// account's numbers reads only its range, never every number.
    incoming: BTreeMap<String, Incoming>,
    /// The key of the number that holds each E.164.
    by_number: HashMap<String, String>,
    /// What a search finds, by E.164.
    pub(super) available: BTreeMap<String, Offer>,
}

impl TwilioState {
    pub(super) fn add_subaccount(&mut self, sid: &str, friendly_name: &str, auth_token: &str) {
        self.add_subaccount_at(sid, friendly_name, auth_token, Utc::now());
    }

    pub(super) fn add_subaccount_at(
        &mut self,
        sid: &str,
        friendly_name: &str,
        auth_token: &str,
        created: DateTime<Utc>,
    ) {
        self.subaccounts.insert(
            sid.to_owned(),
            Account {
                friendly_name: friendly_name.to_owned(),
                auth_token: Secret(auth_token.to_owned()),
                secondary: None,
                primary_since: created,
                retired: Vec::new(),
                token_rotations: 0,
                status: AccountStatus::Active,
                created,
                updated: created,
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
        self.insert_incoming(NewIncoming {
            account_sid,
            sid,
            e164,
            friendly_name: None,
            offer,
            created: Utc::now(),
            voice_url: Cow::Borrowed(""),
            sms_url: Cow::Borrowed(""),
        });
    }

    /// A number held from now on (no longer offered). The account is not checked.
    pub(super) fn insert_incoming(&mut self, n: NewIncoming<'_>) {
        self.available.remove(n.e164);
        let key = number_key(n.account_sid, n.sid);
        self.by_number.insert(n.e164.to_owned(), key.clone());
        self.incoming.insert(
            key,
            Incoming {
                sid: n.sid.to_owned(),
                account_sid: n.account_sid.to_owned(),
                phone_number: n.e164.to_owned(),
                friendly_name: n.friendly_name.unwrap_or_else(|| friendly_name(n.e164)),
                created: n.created,
                updated: n.created,
                voice_url: n.voice_url,
                sms_url: n.sms_url,
                offer: n.offer.map(Box::new),
            },
        );
    }

    /// The number `pn` of `account_sid`.
    fn incoming(&self, account_sid: &str, pn: &str) -> Option<&Incoming> {
        self.incoming.get(&number_key(account_sid, pn))
    }

    /// Releases the number `pn` of `account_sid`.
    fn remove_incoming(&mut self, account_sid: &str, pn: &str) -> Option<Incoming> {
        let key = number_key(account_sid, pn);
        let removed = self.incoming.remove(&key)?;
        if self.by_number.get(&removed.phone_number) == Some(&key) {
            self.by_number.remove(&removed.phone_number);
        }
        Some(removed)
    }

    /// `account_sid`'s numbers, in the order of their SIDs, after `after` (a PN
    /// SID, exclusive) when given.
    fn numbers_of<'a>(
        &'a self,
        account_sid: &str,
        after: Option<&str>,
    ) -> impl DoubleEndedIterator<Item = &'a Incoming> + use<'a> {
        let (low, high) = account_range(account_sid);
        let low = match after {
            Some(pn) => Bound::Excluded(number_key(account_sid, pn)),
            None => low,
        };
        self.incoming.range((low, high)).map(|(_, n)| n)
    }

    /// `account_sid`'s numbers before `before` (a PN SID, exclusive), nearest first.
    fn numbers_before<'a>(
        &'a self,
        account_sid: &str,
        before: &str,
    ) -> impl Iterator<Item = &'a Incoming> + use<'a> {
        let (low, _) = account_range(account_sid);
        let high = Bound::Excluded(number_key(account_sid, before));
        self.incoming.range((low, high)).rev().map(|(_, n)| n)
    }

    /// Who holds `e164`, if anyone: its account and PN SID.
    pub(super) fn holder(&self, e164: &str) -> Option<(&str, &str)> {
        let n = self.incoming.get(self.by_number.get(e164)?)?;
        Some((n.account_sid.as_str(), n.sid.as_str()))
    }

    /// The number `e164` held by `account_sid` (a scan of that account's numbers).
    fn held_by_mut(&mut self, account_sid: &str, e164: &str) -> Option<&mut Incoming> {
        let (low, high) = account_range(account_sid);
        self.incoming
            .range_mut((low, high))
            .map(|(_, n)| n)
            .find(|n| n.phone_number == e164)
    }

    /// As Vapi does when it imports `e164` with `account_sid`: the number's voice
    /// URL (and, if `sms`, its messaging URL) now point at Vapi. `false` when the
    /// account does not hold the number.
    pub(super) fn point_to_vapi(&mut self, account_sid: &str, e164: &str, sms: bool) -> bool {
        let now = Utc::now();
        let Some(n) = self.held_by_mut(account_sid, e164) else {
            return false;
        };
        n.voice_url = Cow::Borrowed(VAPI_TWILIO_VOICE_URL);
        if sms {
            n.sms_url = Cow::Borrowed(VAPI_TWILIO_SMS_URL);
        }
        n.updated = now.max(n.created);
        true
    }

    /// A number's voice URL changed by hand (in Twilio's console): its account and
    /// PN SID, `None` when nobody holds `e164`.
    pub(super) fn set_voice_url(&mut self, e164: &str, url: &str) -> Option<(String, String)> {
        let key = self.by_number.get(e164)?.clone();
        let n = self.incoming.get_mut(&key)?;
        n.voice_url = Cow::Owned(url.to_owned());
        n.updated = Utc::now().max(n.created);
        Some((n.account_sid.clone(), n.sid.clone()))
    }

    /// A subaccount's status changed (by the main account, or in the console):
    /// closing releases every number it holds (how many is answered) and is for
    /// good; a closed account may be "closed" again, nothing else.
    pub(super) fn set_status(
        &mut self,
        sid: &str,
        status: AccountStatus,
        friendly_name: Option<&str>,
    ) -> Result<usize, StatusRefused> {
        let account = self
            .subaccounts
            .get_mut(sid)
            .ok_or(StatusRefused::Unknown)?;
        if account.status == AccountStatus::Closed {
            let unchanged = status == AccountStatus::Closed
                && friendly_name.is_none_or(|n| n == account.friendly_name);
            return if unchanged {
                Ok(0)
            } else {
                Err(StatusRefused::Closed)
            };
        }
        account.status = status;
        if let Some(name) = friendly_name {
            account.friendly_name = name.to_owned();
        }
        account.updated = Utc::now().max(account.created);
        if status != AccountStatus::Closed {
            return Ok(0);
        }
        let released: Vec<String> = self.numbers_of(sid, None).map(|n| n.sid.clone()).collect();
        for pn in &released {
            self.remove_incoming(sid, pn);
        }
        Ok(released.len())
    }

    /// A subaccount's status, if the stand-in knows it.
    pub(super) fn status(&self, sid: &str) -> Option<AccountStatus> {
        self.subaccounts.get(sid).map(|a| a.status)
    }

    /// As if `by` had passed: every account and number was made that much earlier.
    pub(super) fn age(&mut self, by: TimeDelta) {
        for a in self.subaccounts.values_mut() {
            a.created -= by;
            a.updated -= by;
            a.primary_since -= by;
            if let Some((_, made)) = &mut a.secondary {
                *made -= by;
            }
        }
        for n in self.incoming.values_mut() {
            n.created -= by;
            n.updated -= by;
        }
    }

    /// The primary token of an account (the main account's, or a known
    /// subaccount's, whatever its status).
    pub(super) fn account_token(&self, sid: &str) -> Option<&str> {
        if sid == LOCAL_TWILIO_MAIN_SID {
            return Some(LOCAL_TWILIO_MAIN_TOKEN);
        }
        self.subaccounts.get(sid).map(|a| a.auth_token.expose())
    }

    /// Whether Twilio accepts these credentials: the main account's, or an active
    /// subaccount's own with its primary or (until promoted) its secondary token
    /// (a suspended or closed one's are refused, 20003).
    pub(super) fn authenticates(&self, sid: &str, token: &str) -> bool {
        if sid == LOCAL_TWILIO_MAIN_SID {
            return token == LOCAL_TWILIO_MAIN_TOKEN;
        }
        self.subaccounts.get(sid).is_some_and(|a| {
            a.status == AccountStatus::Active
                && matches!(
                    self.token_kind(sid, token),
                    TokenKind::Primary | TokenKind::Secondary
                )
        })
    }

    /// What `token` is to the account `sid` now (whatever its status).
    pub(super) fn token_kind(&self, sid: &str, token: &str) -> TokenKind {
        if sid == LOCAL_TWILIO_MAIN_SID {
            return if token == LOCAL_TWILIO_MAIN_TOKEN {
                TokenKind::Primary
            } else {
                TokenKind::Unknown
            };
        }
        let Some(a) = self.subaccounts.get(sid) else {
            return TokenKind::Unknown;
        };
        if a.auth_token.expose() == token {
            TokenKind::Primary
        } else if a
            .secondary
            .as_ref()
            .is_some_and(|(t, _)| t.expose() == token)
        {
            TokenKind::Secondary
        } else if a.retired.iter().any(|t| t.expose() == token) {
            TokenKind::Retired
        } else {
            TokenKind::Unknown
        }
    }

    /// Whether `token` was one of the account's and works no more.
    pub(super) fn is_retired(&self, sid: &str, token: &str) -> bool {
        self.token_kind(sid, token) == TokenKind::Retired
    }

    /// A new secondary token for the subaccount, made `now`: it replaces (and
    /// retires) the secondary it had. The token and its time; `None` for a
    /// subaccount the stand-in does not know.
    pub(super) fn create_secondary(
        &mut self,
        sid: &str,
        now: DateTime<Utc>,
    ) -> Option<(String, DateTime<Utc>)> {
        let a = self.subaccounts.get_mut(sid)?;
        a.retire_secondary();
        let token = new_token();
        let answer = (token.expose().to_owned(), now);
        a.secondary = Some((token, now));
        a.updated = now.max(a.created);
        Some(answer)
    }

    /// The subaccount's secondary token deleted (and retired): `false` if it had
    /// none.
    pub(super) fn delete_secondary(&mut self, sid: &str, now: DateTime<Utc>) -> bool {
        let Some(a) = self.subaccounts.get_mut(sid) else {
            return false;
        };
        let deleted = a.retire_secondary();
        if deleted {
            a.updated = now.max(a.created);
        }
        deleted
    }

    /// The subaccount's secondary token becomes its primary `now`; the old primary
    /// is retired at once. The new primary and when it was made as a secondary;
    /// `None` without a secondary.
    pub(super) fn promote_secondary(
        &mut self,
        sid: &str,
        now: DateTime<Utc>,
    ) -> Option<(String, DateTime<Utc>)> {
        let a = self.subaccounts.get_mut(sid)?;
        let (token, made) = a.secondary.take()?;
        let answer = (token.expose().to_owned(), made);
        a.replace_primary(token, now);
        Some(answer)
    }

    /// The subaccount's primary token replaced by a new random one `now`, as in
    /// Twilio's console: the old primary and any secondary are retired. `false`
    /// for a subaccount the stand-in does not know.
    pub(super) fn rotate_primary(&mut self, sid: &str, now: DateTime<Utc>) -> bool {
        let Some(a) = self.subaccounts.get_mut(sid) else {
            return false;
        };
        a.retire_secondary();
        a.replace_primary(new_token(), now);
        true
    }

    /// Whether `account_sid` holds `e164` (a scan of that account's numbers).
    pub(super) fn owns(&self, account_sid: &str, e164: &str) -> bool {
        self.numbers_of(account_sid, None)
            .any(|n| n.phone_number == e164)
    }

    /// An account's name, status and creation time.
    fn account_view(&self, sid: &str) -> Option<(&str, AccountStatus, DateTime<Utc>)> {
        if sid == LOCAL_TWILIO_MAIN_SID {
            return Some((
                "Local main account",
                AccountStatus::Active,
                DateTime::UNIX_EPOCH,
            ));
        }
        let a = self.subaccounts.get(sid)?;
        Some((a.friendly_name.as_str(), a.status, a.created))
    }

    fn account_json(&self, sid: &str) -> Option<Value> {
        let (name, token, status, created, updated) = if sid == LOCAL_TWILIO_MAIN_SID {
            let created = DateTime::UNIX_EPOCH;
            (
                "Local main account",
                LOCAL_TWILIO_MAIN_TOKEN,
                AccountStatus::Active,
                created,
                created,
            )
        } else {
            let a = self.subaccounts.get(sid)?;
            (
                a.friendly_name.as_str(),
                a.auth_token.expose(),
                a.status,
                a.created,
                a.updated,
            )
        };
        Some(json!({
            "sid": sid,
            "owner_account_sid": LOCAL_TWILIO_MAIN_SID,
            "friendly_name": name,
            "status": status.as_str(),
            "auth_token": token,
            "type": "Full",
            "date_created": twilio_time(created),
            "date_updated": twilio_time(updated),
            "uri": format!("{API}/Accounts/{sid}.json"),
            "subresource_uris": {
                "incoming_phone_numbers": format!("{API}/Accounts/{sid}/IncomingPhoneNumbers.json"),
            },
        }))
    }

    /// A subaccount as the control endpoints answer it (never its token).
    pub(super) fn account_state_json(&self, sid: &str) -> Option<Value> {
        let a = self.subaccounts.get(sid)?;
        Some(json!({"sid": sid, "friendlyName": a.friendly_name, "status": a.status.as_str()}))
    }

    /// A number as the control endpoints answer it.
    pub(super) fn number_state_json(&self, account_sid: &str, pn: &str) -> Option<Value> {
        let n = self.incoming(account_sid, pn)?;
        Some(json!({
            "sid": n.sid, "accountSid": n.account_sid, "phoneNumber": n.phone_number,
            "friendlyName": n.friendly_name, "voiceUrl": n.voice_url, "smsUrl": n.sms_url,
        }))
    }

    pub(super) fn subaccounts_state(&self) -> Value {
        let map: Map<String, Value> = self
            .subaccounts
            .iter()
            .map(|(sid, a)| {
                (
                    sid.clone(),
                    json!({"friendly_name": a.friendly_name, "status": a.status.as_str(),
                           "hasSecondaryToken": a.secondary.is_some(),
                           "tokenRotations": a.token_rotations}),
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
                           "phone_number": n.phone_number, "friendly_name": n.friendly_name,
                           "voice_url": n.voice_url, "sms_url": n.sms_url}),
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
    if !inner.twilio.authenticates(&user, &token) {
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
