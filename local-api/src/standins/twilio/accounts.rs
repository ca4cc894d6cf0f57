//! Accounts (the main account and its subaccounts) and the Pricing API.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::{
    API, bad_request, basic_auth, form, not_found, page, page_size, param, query_pairs,
    unauthenticated,
};
use crate::standins::{
    Endpoint, LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN, REJECTED_TOKEN, Standins,
    answer_acted, injected, is_account_sid, is_hex32, twilio_error, twilio_time,
};

/// `GET /Accounts.json`: the main account and its subaccounts (a subaccount sees
/// itself only), filtered by `FriendlyName` and `Status`.
pub(super) async fn list(
    State(s): State<Standins>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let user = match basic_auth(&headers) {
        Some((user, token)) if s.lock().twilio.account_token(&user) == Some(&token) => user,
        _ => return unauthenticated(),
    };
    if let Some(r) = injected(&s, Endpoint::Subaccount).await {
        return r;
    }
    let pairs = query_pairs(query);
    let size = match page_size(&pairs) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let mut inner = s.lock();
    // Lookup lag: a subaccount created within it is not listed yet.
    let listed = inner.list_cutoff(Endpoint::Subaccount);
    let mut sids: Vec<&str> = vec![LOCAL_TWILIO_MAIN_SID];
    sids.extend(
        inner
            .twilio
            .subaccounts
            .iter()
            .filter(|(_, a)| listed(a.created))
            .map(|(sid, _)| sid.as_str()),
    );
    let items: Vec<Value> = sids
        .into_iter()
        .filter(|sid| user == LOCAL_TWILIO_MAIN_SID || *sid == user)
        .filter_map(|sid| inner.twilio.account_json(sid))
        .filter(|a| {
            param(&pairs, "FriendlyName").is_none_or(|n| a["friendly_name"] == n)
                && param(&pairs, "Status").is_none_or(|st| a["status"] == st)
        })
        .take(size)
        .collect();
    Json(page(
        "accounts",
        items,
        format!("{API}/Accounts.json"),
        size,
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
        // A known account: the main account may read it, the account itself with
        // its own token.
        let allowed = main || (user == sid && inner.twilio.account_token(sid) == Some(&token));
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

/// A suspended or closed account, read with its own credentials. Twilio does not
/// answer 200 with its status then: it documents "the account is suspended or
/// closed" as a cause of both 401 (code 20003) and 403 (code 20403). The stand-in
/// answers 403 / 20403 — the code whose page names only that cause — so the other
/// answer (401 / 20003, also wrong credentials: the token `000…0`) stays
/// distinguishable here, and a client that believed only a 401 would be caught.
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
        .is_some_and(|(user, token)| s.lock().twilio.account_token(&user) == Some(&token));
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
