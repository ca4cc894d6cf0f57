//! Twilio's Accounts API v1 (`accounts.twilio.com/v1`, here under
//! [`crate::standins::TWILIO_ACCOUNTS_PREFIX`]): an account's auth-token rotation,
//! called with HTTP Basic as the account whose token is rotated, answering JSON.
//!
//! - `POST /AuthTokens/Secondary` → 201 `{"account_sid", "date_created",
//!   "date_updated", "secondary_auth_token", "url"}`: a new secondary token (32
//!   lowercase hex). One made while another exists replaces it: the old one is
//!   retired and fails at once.
//! - `DELETE /AuthTokens/Secondary` → 204 (the secondary retired); none: 404
//!   (20404).
//! - `POST /AuthTokens/Promote` → 200 `{"account_sid", "auth_token",
//!   "date_created", "date_updated", "url"}`: the secondary becomes the primary
//!   (`auth_token` is it); the old primary is retired and fails at once (401,
//!   20003). No secondary: 400 (20001).
//!
//! Until a promotion both tokens authenticate everywhere (the REST API, these
//! endpoints, Vapi's checks with Twilio). Who may call: an active subaccount with
//! its primary or secondary token; wrong credentials, a suspended or closed
//! subaccount's: 401 (20003). The main account is refused with 403 (20403): real
//! Twilio would rotate the platform's MAIN token, which the service must never do.
//! Dates are ISO 8601 (the v1 APIs' form, unlike the 2010 API's RFC 2822).
//! Failure injection: the endpoint `auth_tokens` (all three calls).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use super::{basic_auth, unauthenticated};
use crate::standins::{
    Endpoint, LOCAL_TWILIO_MAIN_SID, Standins, answer_acted, injected, twilio_error,
};

const SECONDARY_URL: &str = "https://accounts.twilio.com/v1/AuthTokens/Secondary";
const PROMOTED_URL: &str = "https://accounts.twilio.com/v1/AuthTokens";

/// The v1 APIs' times: ISO 8601 in UTC, to the second.
fn v1_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The main account's credentials on these endpoints: refused, loudly. Real
/// Twilio would rotate the platform's MAIN token (every subaccount's management,
/// every release, every purchase runs on it).
fn main_account_refused() -> Response {
    tracing::error!(
        "stand-ins: the main account called the AuthTokens API; refused (the stand-ins never rotate the platform's main token)"
    );
    twilio_error(
        StatusCode::FORBIDDEN,
        20403,
        "Refused: the stand-ins never rotate the platform's main token. These AuthTokens \
         calls were made with the MAIN account's credentials, which at real Twilio would \
         rotate the main account's own auth token. Call them as the subaccount whose token \
         is rotated (its SID and its current token).",
    )
}

/// The subaccount these credentials are (active, with its primary or secondary
/// token), or the refusal: the main account 403 (20403), anything else 401 (20003).
fn caller(s: &Standins, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let Some((user, token)) = basic_auth(headers) else {
        return Err(Box::new(unauthenticated()));
    };
    let inner = s.lock();
    if !inner.twilio.authenticates(&user, &token) {
        return Err(Box::new(unauthenticated()));
    }
    if user == LOCAL_TWILIO_MAIN_SID {
        return Err(Box::new(main_account_refused()));
    }
    Ok(user)
}

/// Whether the caller's credentials still work once a planned delay has passed
/// (the token may have been rotated in between).
fn still_authenticates(s: &Standins, headers: &HeaderMap) -> bool {
    basic_auth(headers).is_some_and(|(user, token)| s.lock().twilio.authenticates(&user, &token))
}

/// `POST /AuthTokens/Secondary`: 201 with a new secondary token.
pub(super) async fn create_secondary(State(s): State<Standins>, headers: HeaderMap) -> Response {
    let sid = match caller(&s, &headers) {
        Ok(sid) => sid,
        Err(r) => return *r,
    };
    if let Some(r) = injected(&s, Endpoint::AuthTokens).await {
        return r;
    }
    if !still_authenticates(&s, &headers) {
        return unauthenticated();
    }
    let answer = {
        let mut inner = s.lock();
        let Some((token, made)) = inner.twilio.create_secondary(&sid, Utc::now()) else {
            return unauthenticated();
        };
        inner.changed();
        (
            StatusCode::CREATED,
            Json(json!({
                "account_sid": sid,
                "date_created": v1_time(made),
                "date_updated": v1_time(made),
                "secondary_auth_token": token,
                "url": SECONDARY_URL,
            })),
        )
            .into_response()
    };
    answer_acted(&s, Endpoint::AuthTokens, answer).await
}

/// `DELETE /AuthTokens/Secondary`: 204; 404 (20404) without one.
pub(super) async fn delete_secondary(State(s): State<Standins>, headers: HeaderMap) -> Response {
    let sid = match caller(&s, &headers) {
        Ok(sid) => sid,
        Err(r) => return *r,
    };
    if let Some(r) = injected(&s, Endpoint::AuthTokens).await {
        return r;
    }
    if !still_authenticates(&s, &headers) {
        return unauthenticated();
    }
    let deleted = {
        let mut inner = s.lock();
        let deleted = inner.twilio.delete_secondary(&sid, Utc::now());
        if deleted {
            inner.changed();
        }
        deleted
    };
    if !deleted {
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource /v1/AuthTokens/Secondary was not found",
        );
    }
    answer_acted(
        &s,
        Endpoint::AuthTokens,
        StatusCode::NO_CONTENT.into_response(),
    )
    .await
}

/// `POST /AuthTokens/Promote`: 200 with the promoted token; 400 (20001) without a
/// secondary.
pub(super) async fn promote(State(s): State<Standins>, headers: HeaderMap) -> Response {
    let sid = match caller(&s, &headers) {
        Ok(sid) => sid,
        Err(r) => return *r,
    };
    if let Some(r) = injected(&s, Endpoint::AuthTokens).await {
        return r;
    }
    if !still_authenticates(&s, &headers) {
        return unauthenticated();
    }
    let answer = {
        let mut inner = s.lock();
        let now = Utc::now();
        let Some((token, made)) = inner.twilio.promote_secondary(&sid, now) else {
            return twilio_error(
                StatusCode::BAD_REQUEST,
                20001,
                "no secondary auth token to promote",
            );
        };
        inner.changed();
        Json(json!({
            "account_sid": sid,
            "auth_token": token,
            "date_created": v1_time(made),
            "date_updated": v1_time(now),
            "url": PROMOTED_URL,
        }))
        .into_response()
    };
    answer_acted(&s, Endpoint::AuthTokens, answer).await
}
