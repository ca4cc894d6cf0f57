//! Accounts (the main account and its subaccounts) and the Pricing API.

use std::ops::Bound;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::paging::{self, Paging};
use super::{
    API, AccountStatus, StatusRefused, bad_request, basic_auth, form, not_found, param,
    query_pairs, unauthenticated,
};
use crate::standins::{
    Endpoint, LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN, REJECTED_TOKEN, Standins,
    answer_acted, injected, is_account_sid, is_hex32, twilio_error, twilio_time,
};

/// `GET /Accounts.json`: the main account and its subaccounts (a subaccount sees
/// itself only), filtered by `FriendlyName` and `Status`, paged ([`paging`]): the
/// main account first, then the subaccounts by SID; a page token names an
/// account's SID (`PA<sid>`).
pub(super) async fn list(
    State(s): State<Standins>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let user = match basic_auth(&headers) {
        Some((user, token)) if s.lock().twilio.authenticates(&user, &token) => user,
        _ => return unauthenticated(),
    };
    if let Some(r) = injected(&s, Endpoint::AccountsList).await {
        return r;
    }
    let pairs = query_pairs(query);
    let paging = match Paging::parse(&pairs) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let name = param(&pairs, "FriendlyName");
    let status = param(&pairs, "Status");
    let mut inner = s.lock();
    // Lookup lag: a subaccount created within it is not listed yet.
    let listed = inner.list_cutoff(Endpoint::Subaccount);
    let twilio = &inner.twilio;
    let main = user == LOCAL_TWILIO_MAIN_SID;
    let shown = |sid: &str| -> Option<(String, Value)> {
        if !main && sid != user {
            return None;
        }
        let (friendly, st, created) = twilio.account_view(sid)?;
        let admitted = listed(created)
            && name.is_none_or(|n| n == friendly)
            && status.is_none_or(|want| want == st.as_str());
        admitted
            .then(|| twilio.account_json(sid))
            .flatten()
            .map(|a| (sid.to_owned(), a))
    };
    let subs = &twilio.subaccounts;
    let after = |after: Option<&str>| -> Box<dyn Iterator<Item = &str> + '_> {
        match after {
            None => Box::new(
                std::iter::once(LOCAL_TWILIO_MAIN_SID).chain(subs.keys().map(String::as_str)),
            ),
            Some(LOCAL_TWILIO_MAIN_SID) => Box::new(subs.keys().map(String::as_str)),
            Some(key) => Box::new(
                subs.range::<str, _>((Bound::Excluded(key), Bound::Unbounded))
                    .map(|(sid, _)| sid.as_str()),
            ),
        }
    };
    let before = |before: &str| -> Box<dyn Iterator<Item = &str> + '_> {
        if before == LOCAL_TWILIO_MAIN_SID {
            return Box::new(std::iter::empty());
        }
        Box::new(
            subs.range::<str, _>((Bound::Unbounded, Bound::Excluded(before)))
                .rev()
                .map(|(sid, _)| sid.as_str())
                .chain(std::iter::once(LOCAL_TWILIO_MAIN_SID)),
        )
    };
    let (items, more) = paging.take(
        |a| after(a).filter_map(shown),
        |b| before(b).filter_map(shown),
    );
    let filters: Vec<(&str, &str)> = [("FriendlyName", name), ("Status", status)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let path = format!("{API}/Accounts.json");
    Json(paging::answer(
        "accounts", &path, &filters, &paging, items, more,
    ))
    .into_response()
}

/// `POST /Accounts.json` as the main account: a new subaccount (201).
pub(super) async fn create(State(s): State<Standins>, headers: HeaderMap, body: Bytes) -> Response {
    match basic_auth(&headers) {
        Some((user, token))
            if user == LOCAL_TWILIO_MAIN_SID && token == LOCAL_TWILIO_MAIN_TOKEN => {}
        // A subaccount may not create subaccounts.
        _ => return unauthenticated(),
    }
    if let Some(r) = injected(&s, Endpoint::Subaccount).await {
        return r;
    }
    let pairs = form(&body);
    let name = param(&pairs, "FriendlyName").map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.chars().count() > 64) {
        return bad_request(20001, "FriendlyName must be 64 characters or fewer");
    }
    let sid = format!("AC{}", uuid::Uuid::new_v4().simple());
    let name = name.unwrap_or_else(|| format!("SubAccount Created at {}", twilio_time(Utc::now())));
    let answer = {
        let mut inner = s.lock();
        inner
            .twilio
            .add_subaccount(&sid, &name, &subaccount_token(&sid));
        inner.changed();
        let answer = inner.twilio.account_json(&sid);
        (StatusCode::CREATED, Json(answer)).into_response()
    };
    answer_acted(&s, Endpoint::Subaccount, answer).await
}

/// A created subaccount's token: 32 hex characters derived from its SID, so a
/// restart of the stand-ins against the same database knows it again
/// ([`crate::demo::seed`]). Local only.
pub fn subaccount_token(sid: &str) -> String {
    let fnv = |seed: u64| {
        sid.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// `GET /Accounts/{sid}.json`: with the main account's credentials for the main
/// account or a subaccount, or with the account's own.
pub(super) async fn fetch(
    State(s): State<Standins>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(sid) = file.strip_suffix(".json") else {
        return not_found(&format!("{API}/Accounts/{file}"));
    };
    let Some((user, token)) = basic_auth(&headers) else {
        return unauthenticated();
    };
    let main = user == LOCAL_TWILIO_MAIN_SID && token == LOCAL_TWILIO_MAIN_TOKEN;
    let endpoint = if main && sid != user {
        Endpoint::Subaccount
    } else {
        Endpoint::Account
    };
    if let Some(r) = injected(&s, endpoint).await {
        return r;
    }
    let inner = s.lock();
    if main || inner.twilio.account_token(sid).is_some() {
        // A known account: the main account may read it (whatever its status), the
        // account itself with its own token while it is active (a suspended or
        // closed account's credentials are refused: 401, 20003).
        let allowed = main || (user == sid && inner.twilio.authenticates(sid, &token));
        if !allowed {
            return unauthenticated();
        }
        return match inner.twilio.account_json(sid) {
            Some(a) => Json(a).into_response(),
            None => not_found(&format!("{API}/Accounts/{sid}.json")),
        };
    }
    // An account the stand-in does not know, with its own credentials: accepted
    // when well-formed (a BYOC account), so saves can be shown by hand.
    if user != sid || !is_account_sid(sid) || !is_hex32(&token) || token == REJECTED_TOKEN {
        return unauthenticated();
    }
    if sid.ends_with("dead") {
        return suspended();
    }
    Json(
        json!({"sid": sid, "friendly_name": "Local account", "status": "active", "type": "Full",
                "uri": format!("{API}/Accounts/{sid}.json")}),
    )
    .into_response()
}

/// `POST /Accounts/{sid}.json` as the main account (`Status` `active`,
/// `suspended` or `closed`; `FriendlyName` ≤ 64): 200 with the account. Closing
/// releases every number of the subaccount and is for good: a later change is a
/// 400 (20001) — "closing" it again changes nothing and answers 200. A subaccount
/// may change no account (401, 20003), nor may anyone change the main account here
/// (400, 20001); an unknown SID is 404 (20404).
pub(super) async fn update(
    State(s): State<Standins>,
    Path(file): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(sid) = file.strip_suffix(".json") else {
        return not_found(&format!("{API}/Accounts/{file}"));
    };
    let path = format!("{API}/Accounts/{sid}.json");
    match basic_auth(&headers) {
        Some((user, token))
            if user == LOCAL_TWILIO_MAIN_SID && token == LOCAL_TWILIO_MAIN_TOKEN => {}
        _ => return unauthenticated(),
    }
    if let Some(r) = injected(&s, Endpoint::Subaccount).await {
        return r;
    }
    let pairs = form(&body);
    let status = match param(&pairs, "Status") {
        None => None,
        Some(st) => match AccountStatus::parse(st) {
            Some(st) => Some(st),
            None => {
                return bad_request(
                    20001,
                    &format!("Status must be one of active, suspended, closed (not {st})"),
                );
            }
        },
    };
    let name = param(&pairs, "FriendlyName");
    if name.is_some_and(|n| n.chars().count() > 64) {
        return bad_request(20001, "FriendlyName must be 64 characters or fewer");
    }
    let answer = {
        let mut inner = s.lock();
        if sid == LOCAL_TWILIO_MAIN_SID {
            return bad_request(
                20001,
                "The stand-in's main account cannot be changed (only its subaccounts)",
            );
        }
        let Some(current) = inner.twilio.status(sid) else {
            return not_found(&path);
        };
        match inner
            .twilio
            .set_status(sid, status.unwrap_or(current), name)
        {
            Ok(_) => {}
            Err(StatusRefused::Unknown) => return not_found(&path),
            Err(StatusRefused::Closed) => return account_closed(sid),
        }
        inner.changed();
        match inner.twilio.account_json(sid) {
            Some(a) => Json(a).into_response(),
            None => not_found(&path),
        }
    };
    answer_acted(&s, Endpoint::Subaccount, answer).await
}

/// A change to a closed account: Twilio's 400 (20001).
fn account_closed(sid: &str) -> Response {
    bad_request(
        20001,
        &format!("Account {sid} is closed: a closed account cannot be changed"),
    )
}

/// A suspended or closed account the stand-in does not know (a BYOC SID ending in
/// `dead`), read with its own credentials. Twilio does not answer 200 with its
/// status then: it documents "the account is suspended or closed" as a cause of
/// both 401 (code 20003) and 403 (code 20403). The stand-in answers 403 / 20403 —
/// the code whose page names only that cause — so the other answer (401 / 20003,
/// also wrong credentials: the token `000…0`) stays distinguishable here, and a
/// client that believed only a 401 would be caught. A subaccount it knows and
/// that was suspended or closed (`POST /Accounts/{sid}.json`) is refused the other
/// way, 401 / 20003, on every call as itself: a client meets both.
fn suspended() -> Response {
    twilio_error(StatusCode::FORBIDDEN, 20403, "Forbidden")
}

/// Pricing `GET /PhoneNumbers/Countries/{ISO}` with any account's credentials.
pub(super) async fn prices(
    State(s): State<Standins>,
    Path(iso): Path<String>,
    headers: HeaderMap,
) -> Response {
    let authenticated = basic_auth(&headers)
        .is_some_and(|(user, token)| s.lock().twilio.authenticates(&user, &token));
    if !authenticated {
        return unauthenticated();
    }
    if let Some(r) = injected(&s, Endpoint::Pricing).await {
        return r;
    }
    let country = match iso.as_str() {
        "US" => "United States",
        "CA" => "Canada",
        _ => return not_found(&format!("/v1/PhoneNumbers/Countries/{iso}")),
    };
    let price = |number_type: &str, amount: &str| json!({"number_type": number_type, "base_price": amount, "current_price": amount});
    Json(json!({
        "country": country,
        "iso_country": iso,
        "phone_number_prices": [price("local", "1.15"), price("toll free", "2.15")],
        "price_unit": "USD",
        "url": format!("https://pricing.twilio.com/v1/PhoneNumbers/Countries/{iso}"),
    }))
    .into_response()
}
