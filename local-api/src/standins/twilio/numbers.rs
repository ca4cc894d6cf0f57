//! Available numbers (search) and incoming numbers (buy, list, fetch, release).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use std::borrow::Cow;

use chrono::Utc;

use super::paging::{self, Paging, page_size};
use super::{
    API, AccountStatus, Incoming, NewIncoming, bad_request, form, may_act_on, not_found, param,
    query_pairs,
};
use crate::standins::inventory::{NumberType, Offer};
use crate::standins::{Endpoint, Standins, answer_acted, injected, is_e164};

/// The keypad digit of a letter in a `Contains` pattern.
fn keypad(c: char) -> char {
    match c.to_ascii_lowercase() {
        'a'..='c' => '2',
        'd'..='f' => '3',
        'g'..='i' => '4',
        'j'..='l' => '5',
        'm'..='o' => '6',
        'p'..='s' => '7',
        't'..='v' => '8',
        'w'..='z' => '9',
        d => d,
    }
}

/// Whether the number's digits contain `pattern` (`*` is any one digit).
fn contains(e164: &str, pattern: &str) -> bool {
    let digits: Vec<char> = e164.chars().filter(char::is_ascii_digit).collect();
    let pattern: Vec<char> = pattern.chars().map(keypad).collect();
    digits
        .windows(pattern.len())
        .any(|w| w.iter().zip(&pattern).all(|(d, p)| *p == '*' || d == p))
}

fn flag(pairs: &[(String, String)], name: &str) -> Result<bool, Box<Response>> {
    match param(pairs, name).map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(Box::new(bad_request(
            20001,
            &format!("{name} must be true or false"),
        ))),
    }
}

/// Which numbers a search asks for.
struct Search {
    area_code: Option<String>,
    contains: Option<String>,
    voice: bool,
    sms: bool,
    mms: bool,
    exclude_all: bool,
    exclude_local: bool,
    exclude_foreign: bool,
    size: usize,
}

impl Search {
    fn parse(pairs: &[(String, String)]) -> Result<Self, Box<Response>> {
        let area_code = param(pairs, "AreaCode").map(str::to_owned);
        if area_code
            .as_ref()
            .is_some_and(|a| a.len() != 3 || !a.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Box::new(bad_request(21451, "Invalid area code")));
        }
        let contains = param(pairs, "Contains").map(str::to_owned);
        if contains.as_ref().is_some_and(|c| {
            !(2..=16).contains(&c.len())
                || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '*')
        }) {
            return Err(Box::new(bad_request(
                20001,
                "Contains must be 2 to 16 characters: digits, letters or *",
            )));
        }
        Ok(Self {
            area_code,
            contains,
            voice: flag(pairs, "VoiceEnabled")?,
            sms: flag(pairs, "SmsEnabled")?,
            mms: flag(pairs, "MmsEnabled")?,
            exclude_all: flag(pairs, "ExcludeAllAddressRequired")?,
            exclude_local: flag(pairs, "ExcludeLocalAddressRequired")?,
            exclude_foreign: flag(pairs, "ExcludeForeignAddressRequired")?,
            size: page_size(pairs)?,
        })
    }

    fn admits(&self, o: &Offer, pairs: &[(String, String)]) -> bool {
        let same = |name: &str, v: &Option<String>| {
            param(pairs, name)
                .is_none_or(|want| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(want)))
        };
        let needs = o.address_requirements.as_str();
        self.area_code
            .as_deref()
            .is_none_or(|a| o.area_code() == Some(a))
            && self
                .contains
                .as_deref()
                .is_none_or(|c| contains(&o.phone_number, c))
            && (!self.voice || o.voice)
            && (!self.sms || o.sms)
            && (!self.mms || o.mms)
            && !(self.exclude_all && needs != "none")
            && !(self.exclude_local && needs == "local")
            && !(self.exclude_foreign && needs == "foreign")
            && same("InRegion", &o.region)
            && same("InLocality", &o.locality)
            && same("InPostalCode", &o.postal_code)
    }
}

/// An available number as Twilio answers it. Twilio's casing of the capability
/// keys varies (`SMS`/`MMS` in US local answers, `sms`/`mms` in its spec and other
/// answers): here local numbers answer capitals and toll-free numbers lower case,
/// so a client meets both.
fn offer_json(o: &Offer) -> Value {
    let capabilities = match o.number_type {
        NumberType::Local => json!({"voice": o.voice, "SMS": o.sms, "MMS": o.mms, "fax": false}),
        NumberType::TollFree => {
            json!({"voice": o.voice, "sms": o.sms, "mms": o.mms, "fax": false})
        }
    };
    json!({
        "friendly_name": o.friendly_name(),
        "phone_number": o.phone_number,
        "lata": null,
        "rate_center": o.locality.as_ref().map(|l| l.to_uppercase()),
        "latitude": null,
        "longitude": null,
        "locality": o.locality,
        "region": o.region,
        "postal_code": o.postal_code,
        "iso_country": o.iso_country,
        "address_requirements": o.address_requirements,
        "beta": false,
        "capabilities": capabilities,
    })
}

/// `GET /Accounts/{sid}/AvailablePhoneNumbers/{ISO}/{Local|TollFree}.json`.
pub(super) async fn search(
    State(s): State<Standins>,
    Path((sid, iso, kind)): Path<(String, String, String)>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let path = format!("{API}/Accounts/{sid}/AvailablePhoneNumbers/{iso}/{kind}");
    if let Err(r) = may_act_on(&s.lock(), &headers, &sid, &path) {
        return *r;
    }
    if let Some(r) = injected(&s, Endpoint::Search).await {
        return r;
    }
    let number_type = match kind.as_str() {
        "Local.json" => Some(NumberType::Local),
        "TollFree.json" => Some(NumberType::TollFree),
        // Types the stand-in has none of.
        "Mobile.json"
        | "National.json"
        | "Voip.json"
        | "SharedCost.json"
        | "MachineToMachine.json" => None,
        _ => return not_found(&path),
    };
    // Twilio answers 404 (code 20404) for a country it does not know (`XX`), as for
    // a malformed or lower-case code.
    if !shared::search::is_iso_country(&iso) {
        return not_found(&path);
    }
    let pairs = query_pairs(query);
    let search = match Search::parse(&pairs) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let inner = s.lock();
    let found: Vec<Value> = inner
        .twilio
        .available
        .values()
        .filter(|o| Some(o.number_type) == number_type && o.iso_country == iso)
        .filter(|o| search.admits(o, &pairs))
        .take(search.size)
        .map(offer_json)
        .collect();
    Json(json!({ "available_phone_numbers": found, "uri": path })).into_response()
}

/// `POST /Accounts/{sid}/IncomingPhoneNumbers.json`: buy exactly `PhoneNumber` (or
/// the first number of `AreaCode` that needs no address).
pub(super) async fn buy(
    State(s): State<Standins>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("{API}/Accounts/{sid}/IncomingPhoneNumbers.json");
    if let Err(r) = may_act_on(&s.lock(), &headers, &sid, &path) {
        return *r;
    }
    if let Some(r) = injected(&s, Endpoint::Buy).await {
        return r;
    }
    let pairs = form(&body);
    let friendly = param(&pairs, "FriendlyName").map(str::to_owned);
    if friendly.as_ref().is_some_and(|n| n.chars().count() > 64) {
        return bad_request(20001, "FriendlyName must be 64 characters or fewer");
    }
    let answer = {
        let mut inner = s.lock();
        // A closed subaccount holds nothing and buys nothing: Twilio's 404.
        if inner.twilio.status(&sid) == Some(AccountStatus::Closed) {
            return not_found(&path);
        }
        let number = match (param(&pairs, "PhoneNumber"), param(&pairs, "AreaCode")) {
            (Some(n), _) => n.to_owned(),
            (None, Some(area)) => {
                let first = inner.twilio.available.values().find(|o| {
                    o.number_type == NumberType::Local
                        && o.area_code() == Some(area)
                        && o.address_requirements == "none"
                });
                match first {
                    Some(o) => o.phone_number.clone(),
                    None => return bad_request(21452, "No phone numbers found in area code"),
                }
            }
            (None, None) => {
                return bad_request(21421, "A 'PhoneNumber' or 'AreaCode' is required");
            }
        };
        if !is_e164(&number) {
            return bad_request(21421, &format!("PhoneNumber {number} is invalid"));
        }
        let Some(offer) = inner.twilio.available.get(&number).cloned() else {
            return bad_request(21422, &format!("PhoneNumber {number} is not available"));
        };
        if offer.address_requirements != "none" {
            return bad_request(
                21631,
                &format!(
                    "Phone Number Requires an Address: {number} needs a {} address (AddressSid)",
                    offer.address_requirements
                ),
            );
        }
        let pn = format!("PN{}", uuid::Uuid::new_v4().simple());
        inner.twilio.insert_incoming(NewIncoming {
            account_sid: &sid,
            sid: &pn,
            e164: &number,
            friendly_name: friendly,
            offer: Some(offer),
            created: Utc::now(),
            voice_url: Cow::Borrowed(""),
            sms_url: Cow::Borrowed(""),
        });
        inner.changed();
        let Some(bought) = inner.twilio.incoming(&sid, &pn) else {
            return not_found(&path);
        };
        (StatusCode::CREATED, Json(bought.to_json())).into_response()
    };
    answer_acted(&s, Endpoint::Buy, answer).await
}

/// `GET /Accounts/{sid}/IncomingPhoneNumbers.json` (`PhoneNumber` — exact with a
/// `+`, else digits it contains — and `FriendlyName`), paged ([`paging`]) in the
/// order of the numbers' SIDs, a page token naming a PN SID (`PA<PN…>`). It reads
/// only the account's own numbers.
pub(super) async fn list(
    State(s): State<Standins>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let path = format!("{API}/Accounts/{sid}/IncomingPhoneNumbers.json");
    if let Err(r) = may_act_on(&s.lock(), &headers, &sid, &path) {
        return *r;
    }
    if let Some(r) = injected(&s, Endpoint::NumbersList).await {
        return r;
    }
    let pairs = query_pairs(query);
    let paging = match Paging::parse(&pairs) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let number = param(&pairs, "PhoneNumber");
    let name = param(&pairs, "FriendlyName");
    let matches_number = |n: &Incoming| match number {
        None => true,
        Some(want) if want.starts_with('+') => n.phone_number == want,
        Some(want) => contains(&n.phone_number, want),
    };
    let mut inner = s.lock();
    // Lookup lag: a number bought within it is not listed yet.
    let listed = inner.list_cutoff(Endpoint::Bought);
    let twilio = &inner.twilio;
    let shown = |n: &Incoming| -> Option<(String, Value)> {
        let admitted =
            listed(n.created) && matches_number(n) && name.is_none_or(|f| n.friendly_name == f);
        admitted.then(|| (n.sid.clone(), n.to_json()))
    };
    let (items, more) = paging.take(
        |after| twilio.numbers_of(&sid, after).filter_map(shown),
        |before| twilio.numbers_before(&sid, before).filter_map(shown),
    );
    let filters: Vec<(&str, &str)> = [("PhoneNumber", number), ("FriendlyName", name)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    Json(paging::answer(
        "incoming_phone_numbers",
        &path,
        &filters,
        &paging,
        items,
        more,
    ))
    .into_response()
}

pub(super) async fn fetch(
    State(s): State<Standins>,
    Path((sid, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("{API}/Accounts/{sid}/IncomingPhoneNumbers/{file}");
    if let Err(r) = may_act_on(&s.lock(), &headers, &sid, &path) {
        return *r;
    }
    if let Some(r) = injected(&s, Endpoint::Bought).await {
        return r;
    }
    let pn = file.strip_suffix(".json").unwrap_or(&file);
    match s.lock().twilio.incoming(&sid, pn) {
        Some(n) => Json(n.to_json()).into_response(),
        None => not_found(&path),
    }
}

/// `DELETE /Accounts/{sid}/IncomingPhoneNumbers/{PN}.json`: 204, then 404 (20404).
pub(super) async fn release(
    State(s): State<Standins>,
    Path((sid, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let pn = file.strip_suffix(".json").unwrap_or(&file).to_owned();
    let path = format!("{API}/Accounts/{sid}/IncomingPhoneNumbers/{pn}.json");
    if let Err(r) = may_act_on(&s.lock(), &headers, &sid, &path) {
        return *r;
    }
    if let Some(r) = injected(&s, Endpoint::Release).await {
        return r;
    }
    let removed = {
        let mut inner = s.lock();
        let removed = inner.twilio.remove_incoming(&sid, &pn);
        if removed.is_some() {
            inner.changed();
        }
        removed
    };
    match removed {
        Some(_) => {
            answer_acted(
                &s,
                Endpoint::Release,
                StatusCode::NO_CONTENT.into_response(),
            )
            .await
        }
        None => not_found(&path),
    }
}
