//! Vapi credentials: create, list, update.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{
    ListQuery, Secret, VapiCredential, admit, bad_request, check_name, check_provider,
    note_twilio_token, string_prop, unknown_properties,
};
use crate::standins::{Endpoint, Standins, answer_acted, vapi_error};

/// The properties of Vapi's Twilio credential DTOs (`CreateTwilioCredentialDTO`,
/// `UpdateTwilioCredentialDTO`); any other is refused.
const TWILIO_CREDENTIAL_PROPERTIES: &[&str] = &[
    "provider",
    "accountSid",
    "authToken",
    "apiKey",
    "apiSecret",
    "name",
];

/// A Twilio credential body, checked as Vapi checks it. What the stand-in keeps:
/// the name, the account SID and the token (a [`Secret`], never answered: Vapi
/// never answers one; kept only for the control state's `twilioToken`).
struct CredentialBody {
    name: Option<String>,
    account_sid: Option<String>,
    token: Option<String>,
}

impl CredentialBody {
    /// On create `provider: "twilio"` and `accountSid` are required, and a secret:
    /// `authToken`, or the `apiKey` and `apiSecret` pair. An update requires
    /// nothing; what it gives must be well-formed (`provider` too, if given).
    fn parse(body: &Map<String, Value>, create: bool) -> Result<Self, Vec<String>> {
        let mut problems = unknown_properties(body, TWILIO_CREDENTIAL_PROPERTIES);
        check_provider(body, create, &mut problems);
        let account_sid = string_prop(body, "accountSid", &mut problems);
        let token = string_prop(body, "authToken", &mut problems);
        let api_key = string_prop(body, "apiKey", &mut problems);
        let api_secret = string_prop(body, "apiSecret", &mut problems);
        let name = string_prop(body, "name", &mut problems);
        let sid_missing = if create {
            account_sid.as_deref().is_none_or(str::is_empty)
        } else {
            account_sid.as_deref().is_some_and(str::is_empty)
        };
        if sid_missing {
            problems.push("accountSid should not be empty".into());
        }
        if token.as_deref().is_some_and(str::is_empty) {
            problems.push("authToken should not be empty".into());
        }
        let key_pair = api_key.is_some() && api_secret.is_some();
        if create && token.is_none() && !key_pair {
            problems.push("authToken should not be empty (or give apiKey and apiSecret)".into());
        }
        check_name(&name, &mut problems);
        if problems.is_empty() {
            Ok(Self {
                name,
                account_sid,
                token,
            })
        } else {
            Err(problems)
        }
    }
}

/// `POST /credential`: 201 with the credential (never its token). Vapi's check of
/// the token with Twilio is not made here (a credential is accepted as given).
pub(super) async fn create(State(s): State<Standins>, headers: HeaderMap, body: Bytes) -> Response {
    note_twilio_token(&s, &headers, Endpoint::Credential, "POST", None, &body);
    let body = match admit(&s, &headers, Endpoint::Credential, Some(&body)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let b = match CredentialBody::parse(&body, true) {
        Ok(b) => b,
        Err(problems) => return bad_request(problems),
    };
    let answer = {
        let mut inner = s.lock();
        let id = inner.vapi_id();
        let now = inner.stamp();
        let credential = VapiCredential {
            name: b.name.unwrap_or_default(),
            account_sid: b.account_sid.unwrap_or_default(),
            auth_token: b.token.map(Secret),
            created_at: now,
            updated_at: now,
        };
        let answer = credential.to_json(&id);
        inner.vapi.credentials.insert(id, credential);
        inner.changed();
        (StatusCode::CREATED, Json(answer)).into_response()
    };
    answer_acted(&s, Endpoint::Credential, answer).await
}

/// `PATCH /credential/{id}`: what the body gives replaces what the credential
/// held (a new key pair alone leaves the stored token as it was); 200 with the
/// credential, never its token.
pub(super) async fn update(
    State(s): State<Standins>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    note_twilio_token(
        &s,
        &headers,
        Endpoint::Credential,
        "PATCH",
        Some(&id),
        &body,
    );
    let body = match admit(&s, &headers, Endpoint::Credential, Some(&body)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let b = match CredentialBody::parse(&body, false) {
        Ok(b) => b,
        Err(problems) => return bad_request(problems),
    };
    let answer = {
        let mut inner = s.lock();
        let now = inner.stamp();
        match inner.vapi.credentials.get_mut(&id) {
            Some(credential) => {
                if let Some(name) = b.name {
                    credential.name = name;
                }
                if let Some(sid) = b.account_sid {
                    credential.account_sid = sid;
                }
                if let Some(token) = b.token {
                    credential.auth_token = Some(Secret(token));
                }
                credential.updated_at = now;
                let answer = Json(credential.to_json(&id)).into_response();
                inner.changed();
                answer
            }
            None => vapi_error(StatusCode::NOT_FOUND, json!("Credential not found")),
        }
    };
    answer_acted(&s, Endpoint::Credential, answer).await
}

/// `DELETE /credential/{id}`: 200 with the deleted credential, Vapi's JSON 404
/// for one it does not have.
pub(super) async fn delete(
    State(s): State<Standins>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&s, &headers, Endpoint::Credential, None).await {
        return r;
    }
    let answer = {
        let mut inner = s.lock();
        match inner.vapi.credentials.remove(&id) {
            Some(credential) => {
                let answer = Json(credential.to_json(&id)).into_response();
                inner.changed();
                answer
            }
            None => vapi_error(StatusCode::NOT_FOUND, json!("Credential not found")),
        }
    };
    answer_acted(&s, Endpoint::Credential, answer).await
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
    let mut inner = s.lock();
    // Lookup lag: a credential created within it is not listed yet.
    let listed = inner.list_cutoff(Endpoint::Credential);
    let page = q.page(
        inner
            .vapi
            .credentials
            .iter()
            .filter(|(_, c)| listed(c.created_at)),
        |c| (c.created_at, c.updated_at),
        |id, c| c.to_json(id),
    );
    Json(page).into_response()
}
