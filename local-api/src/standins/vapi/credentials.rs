//! Vapi credentials: create, list, update.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{
    ListQuery, VapiCredential, admit, bad_request, check_name, string_prop, unknown_properties,
};
use crate::standins::{Endpoint, Standins, answer_lost, vapi_error};

/// Vapi's validation of a Twilio credential. `Ok((name, accountSid))`.
fn check_credential_body(
    body: &Map<String, Value>,
    create: bool,
) -> Result<(String, String), Vec<String>> {
    let allowed: &[&str] = if create {
        &["provider", "accountSid", "authToken", "name"]
    } else {
        &["accountSid", "authToken", "name"]
    };
    let mut problems = unknown_properties(body, allowed);
    if create && body.get("provider") != Some(&json!("twilio")) {
        problems.push("provider must be one of the following values: twilio".into());
    }
    let sid = string_prop(body, "accountSid", &mut problems).unwrap_or_default();
    let token = string_prop(body, "authToken", &mut problems).unwrap_or_default();
    let name = string_prop(body, "name", &mut problems);
    if sid.is_empty() {
        problems.push("accountSid must be a string".into());
    }
    if token.is_empty() {
        problems.push("authToken must be a string".into());
    }
    check_name(&name, &mut problems);
    if problems.is_empty() {
        Ok((name.unwrap_or_default(), sid))
    } else {
        Err(problems)
    }
}

pub(super) async fn create(State(s): State<Standins>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match admit(&s, &headers, Endpoint::Credential, Some(&body)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (name, account_sid) = match check_credential_body(&body, true) {
        Ok(v) => v,
        Err(problems) => return bad_request(problems),
    };
    let answer = {
        let mut inner = s.lock();
        let id = inner.vapi_id();
        let now = inner.stamp();
        let credential = VapiCredential {
            name,
            account_sid,
            created_at: now,
            updated_at: now,
        };
        let answer = credential.to_json(&id);
        inner.vapi.credentials.insert(id, credential);
        (StatusCode::CREATED, Json(answer)).into_response()
    };
    answer_lost(&s, Endpoint::Credential, answer).await
}

pub(super) async fn update(
    State(s): State<Standins>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match admit(&s, &headers, Endpoint::Credential, Some(&body)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (name, account_sid) = match check_credential_body(&body, false) {
        Ok(v) => v,
        Err(problems) => return bad_request(problems),
    };
    let answer = {
        let mut inner = s.lock();
        let now = inner.stamp();
        match inner.vapi.credentials.get_mut(&id) {
            Some(credential) => {
                credential.name = name;
                credential.account_sid = account_sid;
                credential.updated_at = now;
                Json(credential.to_json(&id)).into_response()
            }
            None => vapi_error(StatusCode::NOT_FOUND, json!("Credential not found")),
        }
    };
    answer_lost(&s, Endpoint::Credential, answer).await
}

/// `GET /credential`: the org's credentials, newest first, at most `limit`.
pub(super) async fn list(
    State(s): State<Standins>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    if let Err(r) = admit(&s, &headers, Endpoint::Credential, None).await {
        return r;
    }
    let q = match ListQuery::parse(&query) {
        Ok(q) => q,
        Err(problems) => return bad_request(problems),
    };
    let inner = s.lock();
    let page = q.page(
        inner.vapi.credentials.iter(),
        |c| (c.created_at, c.updated_at),
        |id, c| c.to_json(id),
    );
    Json(page).into_response()
}
