//! Vapi phone numbers: import, list, fetch, route, delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{
    ListQuery, VapiNumber, admit, bad_request, check_name, is_uuid, string_prop, unknown_properties,
};
use crate::standins::{Endpoint, Inner, Standins, answer_lost, vapi_error};

/// Properties of a Twilio number Vapi takes on create besides the required ones;
/// accepted and not kept (nothing here uses them).
const IMPORT_EXTRAS: &[&str] = &[
    "squadId",
    "workflowId",
    "fallbackDestination",
    "hooks",
    "smsEnabled",
    "server",
];

/// The Twilio side of a number's credentials, checked as Vapi checks them: the
/// account must accept the token, and own the number.
fn check_with_twilio(
    inner: &Inner,
    sid: &str,
    token: &str,
    number: &str,
) -> Result<(), Box<Response>> {
    if inner.twilio.account_token(sid) != Some(token) {
        return Err(Box::new(vapi_error(
            StatusCode::BAD_REQUEST,
            json!("Twilio Error: Authenticate. Check the twilioAccountSid and twilioAuthToken."),
        )));
    }
    if !inner.twilio.owns(sid, number) {
        return Err(Box::new(vapi_error(
            StatusCode::BAD_REQUEST,
            json!("Number Not Found on Twilio."),
        )));
    }
    Ok(())
}

pub(super) async fn import(State(s): State<Standins>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match admit(&s, &headers, Endpoint::Import, Some(&body)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut allowed = vec![
        "provider",
        "number",
        "twilioAccountSid",
        "twilioAuthToken",
        "name",
        "assistantId",
    ];
    allowed.extend_from_slice(IMPORT_EXTRAS);
    let mut problems = unknown_properties(&body, &allowed);
    if body.get("provider") != Some(&json!("twilio")) {
        problems.push(
            "provider must be one of the following values: twilio (this stand-in imports Twilio numbers only)"
                .into(),
        );
    }
    let number = string_prop(&body, "number", &mut problems);
    let sid = string_prop(&body, "twilioAccountSid", &mut problems);
    let token = string_prop(&body, "twilioAuthToken", &mut problems);
    let name = string_prop(&body, "name", &mut problems);
    let assistant = string_prop(&body, "assistantId", &mut problems);
    for (key, value) in [
        ("number", &number),
        ("twilioAccountSid", &sid),
        ("twilioAuthToken", &token),
    ] {
        if value.as_deref().is_none_or(str::is_empty) {
            problems.push(format!("{key} should not be empty"));
        }
    }
    check_name(&name, &mut problems);
    if assistant.as_deref().is_some_and(|a| !is_uuid(a)) {
        problems.push("assistantId must be a UUID".into());
    }
    if !problems.is_empty() {
        return bad_request(problems);
    }
    let (number, sid, token) = (
        number.unwrap_or_default(),
        sid.unwrap_or_default(),
        token.unwrap_or_default(),
    );
    let answer = {
        let mut inner = s.lock();
        if let Err(r) = check_with_twilio(&inner, &sid, &token, &number) {
            return *r;
        }
        let id = inner.vapi_id();
        let now = inner.stamp();
        let created = VapiNumber {
            number,
            twilio_account_sid: sid,
            assistant_id: assistant,
            name,
            created_at: now,
            updated_at: now,
        };
        let answer = created.to_json(&id);
        inner.vapi.phone_numbers.insert(id, created);
        (StatusCode::CREATED, Json(answer)).into_response()
    };
    answer_lost(&s, Endpoint::Import, answer).await
}

/// `GET /phone-number`: newest first, at most `limit`.
pub(super) async fn list(
    State(s): State<Standins>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    if let Err(r) = admit(&s, &headers, Endpoint::List, None).await {
        return r;
    }
    let q = match ListQuery::parse(&query) {
        Ok(q) => q,
        Err(problems) => return bad_request(problems),
    };
    let inner = s.lock();
    let page = q.page(
        inner.vapi.phone_numbers.iter(),
        |n| (n.created_at, n.updated_at),
        |id, n| n.to_json(id),
    );
    Json(page).into_response()
}

fn number_not_found() -> Response {
    vapi_error(StatusCode::NOT_FOUND, json!("Phone number not found"))
}

pub(super) async fn fetch(
    State(s): State<Standins>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&s, &headers, Endpoint::List, None).await {
        return r;
    }
    match s.lock().vapi.phone_numbers.get(&id) {
        Some(n) => Json(n.to_json(&id)).into_response(),
        None => number_not_found(),
    }
}

/// `PATCH /phone-number/{id}`: the assistant, the name, or the Twilio credentials.
pub(super) async fn route(
    State(s): State<Standins>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match admit(&s, &headers, Endpoint::Route, Some(&body)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut problems = unknown_properties(
        &body,
        &["assistantId", "name", "twilioAccountSid", "twilioAuthToken"],
    );
    // `null` detaches the assistant.
    let assistant: Option<Option<String>> = match body.get("assistantId") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(a)) if is_uuid(a) => Some(Some(a.clone())),
        Some(_) => {
            problems.push("assistantId must be a UUID".into());
            None
        }
    };
    let name = string_prop(&body, "name", &mut problems);
    check_name(&name, &mut problems);
    let sid = string_prop(&body, "twilioAccountSid", &mut problems);
    let token = string_prop(&body, "twilioAuthToken", &mut problems);
    if !problems.is_empty() {
        return bad_request(problems);
    }
    let answer = {
        let mut inner = s.lock();
        let Some(current) = inner.vapi.phone_numbers.get(&id).cloned() else {
            return number_not_found();
        };
        if sid.is_some() || token.is_some() {
            let sid = sid.as_deref().unwrap_or(&current.twilio_account_sid);
            let Some(token) = token.as_deref() else {
                return bad_request(vec!["twilioAuthToken should not be empty".into()]);
            };
            if let Err(r) = check_with_twilio(&inner, sid, token, &current.number) {
                return *r;
            }
        }
        let now = inner.stamp();
        let Some(n) = inner.vapi.phone_numbers.get_mut(&id) else {
            return number_not_found();
        };
        if let Some(a) = assistant {
            n.assistant_id = a;
        }
        if let Some(name) = name {
            n.name = Some(name);
        }
        if let Some(sid) = sid {
            n.twilio_account_sid = sid;
        }
        n.updated_at = now;
        Json(n.to_json(&id)).into_response()
    };
    answer_lost(&s, Endpoint::Route, answer).await
}

pub(super) async fn delete(
    State(s): State<Standins>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&s, &headers, Endpoint::Delete, None).await {
        return r;
    }
    let removed = s.lock().vapi.phone_numbers.remove(&id);
    match removed {
        Some(n) => {
            let answer = Json(n.to_json(&id)).into_response();
            answer_lost(&s, Endpoint::Delete, answer).await
        }
        None => number_not_found(),
    }
}
