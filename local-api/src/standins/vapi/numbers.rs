//! Vapi phone numbers: import, list, fetch, route, delete.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{
    ListQuery, Secret, VapiNumber, admit, bad_request, bool_prop, check_name, check_provider,
    is_uuid, json_prop, note_twilio_token, string_prop, unknown_assistant, unknown_properties,
};
use crate::standins::{Endpoint, Inner, Standins, answer_acted, vapi_error};

/// The properties of Vapi's Twilio phone-number DTOs (`CreateTwilioPhoneNumberDTO`
/// and, the `provider: "twilio"` branch of `PATCH`'s `oneOf`,
/// `UpdateTwilioPhoneNumberDTO`): the same set, all optional on update. Any other
/// property is refused, as Vapi's whitelist validation does (there is no
/// `serverUrl` or `credentialId` on a Twilio number).
const TWILIO_NUMBER_PROPERTIES: &[&str] = &[
    "provider",
    "number",
    "twilioAccountSid",
    "twilioAuthToken",
    "twilioApiKey",
    "twilioApiSecret",
    "name",
    "assistantId",
    "squadId",
    "workflowId",
    "server",
    "fallbackDestination",
    "hooks",
    "smsEnabled",
];

/// A Twilio phone-number body, checked as Vapi checks it.
struct NumberBody {
    number: Option<String>,
    sid: Option<String>,
    token: Option<String>,
    api_key: Option<String>,
    api_secret: Option<String>,
    name: Option<String>,
    /// `Some(None)`: `null`, which detaches the assistant (update only).
    assistant: Option<Option<String>>,
    squad: Option<String>,
    workflow: Option<String>,
    sms_enabled: Option<bool>,
    server: Option<Value>,
    fallback_destination: Option<Value>,
    hooks: Option<Value>,
}

impl NumberBody {
    /// `Err` holds the messages of Vapi's 400. On create, `provider`, `number` and
    /// `twilioAccountSid` are required, and a credential: `twilioAuthToken`, or the
    /// `twilioApiKey` and `twilioApiSecret` pair.
    fn parse(body: &Map<String, Value>, create: bool) -> Result<Self, Vec<String>> {
        let mut problems = unknown_properties(body, TWILIO_NUMBER_PROPERTIES);
        check_provider(body, create, &mut problems);
        let assistant = match body.get("assistantId") {
            None => None,
            Some(Value::Null) if !create => Some(None),
            Some(Value::String(a)) if is_uuid(a) => Some(Some(a.clone())),
            Some(_) => {
                problems.push("assistantId must be a UUID".into());
                None
            }
        };
        let b = Self {
            number: string_prop(body, "number", &mut problems),
            sid: string_prop(body, "twilioAccountSid", &mut problems),
            token: string_prop(body, "twilioAuthToken", &mut problems),
            api_key: string_prop(body, "twilioApiKey", &mut problems),
            api_secret: string_prop(body, "twilioApiSecret", &mut problems),
            name: string_prop(body, "name", &mut problems),
            assistant,
            squad: string_prop(body, "squadId", &mut problems),
            workflow: string_prop(body, "workflowId", &mut problems),
            sms_enabled: bool_prop(body, "smsEnabled", &mut problems),
            server: json_prop(body, "server", false, &mut problems),
            fallback_destination: json_prop(body, "fallbackDestination", false, &mut problems),
            hooks: json_prop(body, "hooks", true, &mut problems),
        };
        for (key, value) in [("number", &b.number), ("twilioAccountSid", &b.sid)] {
            let missing = if create {
                value.as_deref().is_none_or(str::is_empty)
            } else {
                value.as_deref().is_some_and(str::is_empty)
            };
            if missing {
                problems.push(format!("{key} should not be empty"));
            }
        }
        let key_pair = b.api_key.is_some() && b.api_secret.is_some();
        if create && b.token.as_deref().is_none_or(str::is_empty) && !key_pair {
            problems.push(
                "twilioAuthToken should not be empty (or give twilioApiKey and twilioApiSecret)"
                    .into(),
            );
        }
        check_name(&b.name, &mut problems);
        if problems.is_empty() {
            Ok(b)
        } else {
            Err(problems)
        }
    }
}

/// The Twilio side of a number's credentials, checked as Vapi checks them: the
/// account must accept the token, and own the number. `token` is `None` when only
/// an API key pair was given: the Twilio stand-in has no API keys, so Twilio
/// refuses it.
fn check_with_twilio(
    inner: &Inner,
    sid: &str,
    token: Option<&str>,
    number: &str,
) -> Result<(), Box<Response>> {
    // A suspended or closed account's credentials are refused, as Twilio refuses
    // them.
    if !token.is_some_and(|t| inner.twilio.authenticates(sid, t)) {
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

/// `POST /phone-number` with a Twilio number: 201 with the number as Vapi answers
/// it (its `twilioAuthToken` included).
pub(super) async fn import(State(s): State<Standins>, headers: HeaderMap, body: Bytes) -> Response {
    note_twilio_token(&s, &headers, Endpoint::Import, "POST", None, &body);
    let body = match admit(&s, &headers, Endpoint::Import, Some(&body)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let b = match NumberBody::parse(&body, true) {
        Ok(b) => b,
        Err(problems) => return bad_request(problems),
    };
    if let Some(refused) = unknown_assistant(&b.assistant) {
        return refused;
    }
    let (number, sid) = (b.number.unwrap_or_default(), b.sid.unwrap_or_default());
    // A token wins over a key pair (Vapi: the pair "will be ignored" then).
    let token = b.token.filter(|t| !t.is_empty());
    let answer = {
        let mut inner = s.lock();
        if let Err(r) = check_with_twilio(&inner, &sid, token.as_deref(), &number) {
            return *r;
        }
        let id = inner.vapi_id();
        let now = inner.stamp();
        let sms_enabled = b.sms_enabled.unwrap_or(true);
        // As Vapi does: the Twilio number's calls (and, unless `smsEnabled` is
        // false, its messages) now go to Vapi.
        inner.twilio.point_to_vapi(&sid, &number, sms_enabled);
        let created = VapiNumber {
            number,
            twilio_account_sid: sid,
            twilio_auth_token: token.map(Secret),
            twilio_api_key: b.api_key,
            twilio_api_secret: b.api_secret.map(Secret),
            assistant_id: b.assistant.flatten(),
            squad_id: b.squad,
            workflow_id: b.workflow,
            name: b.name,
            sms_enabled,
            server: b.server,
            fallback_destination: b.fallback_destination,
            hooks: b.hooks,
            created_at: now,
            updated_at: now,
        };
        let answer = created.to_json(&id);
        inner.vapi.phone_numbers.insert(id, created);
        inner.changed();
        (StatusCode::CREATED, Json(answer)).into_response()
    };
    answer_acted(&s, Endpoint::Import, answer).await
}

/// `GET /phone-number`: newest first, at most `limit`, read from the index by
/// creation time (O(log n + page) with `createdAt` bounds, however many numbers
/// there are).
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
    let mut inner = s.lock();
    // Lookup lag: a number imported within it is not listed yet.
    let listed = inner.list_cutoff(Endpoint::List);
    let page = q.phone_number_page(&inner.vapi.phone_numbers, listed);
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

/// `PATCH /phone-number/{id}` (`UpdateTwilioPhoneNumberDTO`, nothing required):
/// the assistant (`null` detaches it), squad, workflow, name, `smsEnabled`,
/// `server`, `fallbackDestination`, `hooks`, or the Twilio side — the account, the
/// token or key pair, the number — checked with Twilio as on import (a missing
/// token is the stored one).
pub(super) async fn route(
    State(s): State<Standins>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    note_twilio_token(&s, &headers, Endpoint::Route, "PATCH", Some(&id), &body);
    let body = match admit(&s, &headers, Endpoint::Route, Some(&body)).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let b = match NumberBody::parse(&body, false) {
        Ok(b) => b,
        Err(problems) => return bad_request(problems),
    };
    let answer = {
        let mut inner = s.lock();
        let Some(current) = inner.vapi.phone_numbers.get(&id).cloned() else {
            return number_not_found();
        };
        // A number Vapi does not have is 404 before its body's assistant is looked up.
        if let Some(refused) = unknown_assistant(&b.assistant) {
            return refused;
        }
        let twilio_side = b.sid.is_some()
            || b.token.is_some()
            || b.number.is_some()
            || b.api_key.is_some()
            || b.api_secret.is_some();
        if twilio_side {
            let sid = b.sid.as_deref().unwrap_or(&current.twilio_account_sid);
            let number = b.number.as_deref().unwrap_or(&current.number);
            let token = match (&b.token, &b.api_key, &b.api_secret) {
                (Some(t), _, _) => Some(t.as_str()),
                // A new key pair only: the stand-in's Twilio knows no API keys.
                (None, Some(_), _) | (None, _, Some(_)) => None,
                (None, None, None) => current.twilio_auth_token.as_ref().map(Secret::expose),
            };
            if let Err(r) = check_with_twilio(&inner, sid, token, number) {
                return *r;
            }
        }
        let now = inner.stamp();
        let Some(n) = inner.vapi.phone_numbers.get_mut(&id) else {
            return number_not_found();
        };
        if let Some(a) = b.assistant {
            n.assistant_id = a;
        }
        let replace = [
            (&mut n.name, b.name),
            (&mut n.squad_id, b.squad),
            (&mut n.workflow_id, b.workflow),
            (&mut n.twilio_api_key, b.api_key),
        ];
        for (field, value) in replace {
            if value.is_some() {
                *field = value;
            }
        }
        let replace_json = [
            (&mut n.server, b.server),
            (&mut n.fallback_destination, b.fallback_destination),
            (&mut n.hooks, b.hooks),
        ];
        for (field, value) in replace_json {
            if value.is_some() {
                *field = value;
            }
        }
        if let Some(token) = b.token {
            n.twilio_auth_token = Some(Secret(token));
        }
        if let Some(secret) = b.api_secret {
            n.twilio_api_secret = Some(Secret(secret));
        }
        if let Some(sid) = b.sid {
            n.twilio_account_sid = sid;
        }
        if let Some(number) = b.number {
            n.number = number;
        }
        if let Some(sms) = b.sms_enabled {
            n.sms_enabled = sms;
        }
        n.updated_at = now;
        let answer = Json(n.to_json(&id)).into_response();
        // Another Twilio number or account: Vapi points that number at itself.
        if twilio_side {
            let (sid, number, sms) = (
                n.twilio_account_sid.clone(),
                n.number.clone(),
                n.sms_enabled,
            );
            inner.twilio.point_to_vapi(&sid, &number, sms);
        }
        inner.changed();
        answer
    };
    answer_acted(&s, Endpoint::Route, answer).await
}

/// `DELETE /phone-number/{id}`: 200 with the deleted number, then 404. The
/// Twilio number's `voice_url` and `sms_url` stay as they are: whether Vapi
/// clears them when a number is deleted is not documented (unconfirmed), and a
/// URL left pointing at Vapi is what the audit's `voice_url` check should see.
pub(super) async fn delete(
    State(s): State<Standins>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&s, &headers, Endpoint::Delete, None).await {
        return r;
    }
    let removed = {
        let mut inner = s.lock();
        let removed = inner.vapi.phone_numbers.remove(&id);
        if removed.is_some() {
            inner.changed();
        }
        removed
    };
    match removed {
        Some(n) => {
            let answer = Json(n.to_json(&id)).into_response();
            answer_acted(&s, Endpoint::Delete, answer).await
        }
        None => number_not_found(),
    }
}
