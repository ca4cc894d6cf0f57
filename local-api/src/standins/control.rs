//! The stand-ins' control endpoints (`/__control/…`): failure injection, a number
//! taken by another buyer, and the state.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Endpoint, FailMode, Standins};

fn refused(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "message": message }))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FailRequest {
    provider: Option<String>,
    endpoint: Option<Endpoint>,
    mode: FailMode,
    times: Option<u32>,
}

/// `POST /__control/fail`: `{"provider", "mode", "times"?}` for every endpoint of a
/// provider, or with `"endpoint"` (its provider may be left out) for one. Answers
/// the state.
pub(super) async fn fail(
    State(s): State<Standins>,
    req: Result<Json<FailRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return refused(e.body_text()),
    };
    match (req.provider.as_deref(), req.endpoint) {
        (Some(p), _) if p != "vapi" && p != "twilio" => {
            return refused("provider must be vapi or twilio".into());
        }
        (Some(p), Some(e)) if (p == "vapi") != e.is_vapi() => {
            return refused(format!("endpoint {} is not {p}'s", json!(e)));
        }
        (_, Some(endpoint)) => s.fail_endpoint(endpoint, req.mode, req.times),
        (Some(provider), None) => s.fail(provider, req.mode, req.times),
        (None, None) => return refused("give a provider, an endpoint, or both".into()),
    }
    Json(s.state()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct TakeRequest {
    phone_number: String,
}

/// `POST /__control/take` `{"phoneNumber"}`: another buyer takes an available
/// number (a search no longer finds it; buying it is Twilio's 21422). 404 when it
/// is not offered.
pub(super) async fn take(
    State(s): State<Standins>,
    req: Result<Json<TakeRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match req {
        Ok(r) => r,
        Err(e) => return refused(e.body_text()),
    };
    if s.take(&req.phone_number) {
        Json(json!({ "phoneNumber": req.phone_number, "taken": true })).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": format!("{} is not available at Twilio", req.phone_number) })),
        )
            .into_response()
    }
}

pub(super) async fn state(State(s): State<Standins>) -> Json<Value> {
    Json(s.state())
}
