//! API Gateway's part, locally: route matching, the JWT authorizer (with the
//! template's scope rules: the read scope on the GET routes, the write scope on the
//! state-changing ones), the HTTP API 2.0 event, and a call to the same handler
//! Lambda calls.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use lambda_http::request::RequestContext;
use lambda_http::{Body, RequestExt};
use serde_json::json;
use shared::config::Env;
use shared::gateway_event::ApiEvent;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const SAVE_ROUTE: &str = "PUT /api/telephony/credentials/twilio";
pub const STATUS_ROUTE: &str = "GET /api/managed-telephony/status";
pub const RELEASE_ROUTE: &str = "DELETE /api/managed-telephony/numbers/{phoneNumber}";
pub const SEARCH_ROUTE: &str = "GET /api/managed-telephony/available-numbers";
pub const BUY_ROUTE: &str = "POST /api/managed-telephony/numbers";
pub const UPDATE_ROUTE: &str = "PATCH /api/managed-telephony/numbers/{phoneNumber}";
pub const OFFBOARD_ROUTE: &str = "POST /api/managed-telephony/offboard";
pub const DISCONNECT_ROUTE: &str = "DELETE /api/telephony/credentials/twilio";
pub const ROTATE_ROUTE: &str = "POST /api/telephony/credentials/twilio/rotate";

/// Routes that need the read scope; every other route needs the write scope (the
/// template's `AuthorizationScopes`). Neither implies the other.
pub const READ_ROUTES: &[&str] = &[STATUS_ROUTE, SEARCH_ROUTE];

/// The route functions, built exactly as their Lambda `main`s build them.
pub struct Functions {
    pub save: save_credential::State,
    pub list: list_numbers::State,
    pub release: release_number::State,
    pub search: search_numbers::State,
    pub buy: buy_number::State,
    pub update: update_number::State,
    pub offboard: offboard_org::State,
    pub disconnect: disconnect_credential::State,
    pub rotate: rotate_credential::State,
}

impl Functions {
    /// Each function as its `main` builds it; list-numbers from `reader_env` (its
    /// read-only database login), the others from `env` (the routes' login).
    pub async fn from_env(
        env: &Env,
        reader_env: &Env,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, BoxError> {
        Ok(Self {
            save: save_credential::State::from_env(env, aws).await?,
            list: list_numbers::State::from_env(reader_env, aws).await?,
            release: release_number::State::from_env(env, aws).await?,
            search: search_numbers::State::from_env(env, aws).await?,
            buy: buy_number::State::from_env(env, aws).await?,
            update: update_number::State::from_env(env, aws).await?,
            offboard: offboard_org::State::from_env(env, aws).await?,
            disconnect: disconnect_credential::State::from_env(env, aws).await?,
            rotate: rotate_credential::State::from_env(env, aws).await?,
        })
    }

    /// Call the handler of the event's route, as API Gateway's integration does.
    pub async fn dispatch(&self, req: lambda_http::Request) -> lambda_http::Response<Body> {
        let route = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx.route_key.clone().unwrap_or_default(),
            #[allow(unreachable_patterns)]
            _ => String::new(),
        };
        match route.as_str() {
            SAVE_ROUTE => save_credential::handle(&self.save, req).await,
            STATUS_ROUTE => list_numbers::handle(&self.list, req).await,
            RELEASE_ROUTE => release_number::handle(&self.release, req).await,
            SEARCH_ROUTE => search_numbers::handle(&self.search, req).await,
            BUY_ROUTE => buy_number::handle(&self.buy, req).await,
            UPDATE_ROUTE => update_number::handle(&self.update, req).await,
            OFFBOARD_ROUTE => offboard_org::handle(&self.offboard, req).await,
            DISCONNECT_ROUTE => disconnect_credential::handle(&self.disconnect, req).await,
            ROTATE_ROUTE => rotate_credential::handle(&self.rotate, req).await,
            _ => {
                let mut resp = lambda_http::Response::new(Body::Text(
                    json!({"message": "Not Found"}).to_string(),
                ));
                *resp.status_mut() = StatusCode::NOT_FOUND;
                resp
            }
        }
    }
}

pub use crate::authorizer::LocalAuthorizer;

/// Everything the local API server holds.
pub struct Gateway {
    pub functions: Functions,
    pub authorizer: LocalAuthorizer,
    /// The scope the template's `AuthorizationScopes` require on state-changing routes.
    pub write_scope: String,
    /// The scope the template's `AuthorizationScopes` require on the GET routes.
    pub read_scope: String,
    /// The scope offboarding requires (neither of the others implies it).
    pub offboard_scope: String,
}

fn gateway_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

/// The route key and path parameter for a request, as the template declares them.
/// The phone number segment is passed on as the client sent it (`%2B…` from a
/// browser), so the handler's decode-once rule is exercised.
pub fn match_route(method: &Method, path: &str) -> Option<(&'static str, Option<String>)> {
    match (method.as_str(), path) {
        ("PUT", "/api/telephony/credentials/twilio") => Some((SAVE_ROUTE, None)),
        ("DELETE", "/api/telephony/credentials/twilio") => Some((DISCONNECT_ROUTE, None)),
        ("POST", "/api/telephony/credentials/twilio/rotate") => Some((ROTATE_ROUTE, None)),
        ("GET", "/api/managed-telephony/status") => Some((STATUS_ROUTE, None)),
        ("GET", "/api/managed-telephony/available-numbers") => Some((SEARCH_ROUTE, None)),
        ("POST", "/api/managed-telephony/numbers") => Some((BUY_ROUTE, None)),
        ("POST", "/api/managed-telephony/offboard") => Some((OFFBOARD_ROUTE, None)),
        ("DELETE" | "PATCH", p) => {
            let route = if method == Method::DELETE {
                RELEASE_ROUTE
            } else {
                UPDATE_ROUTE
            };
            let number = p.strip_prefix("/api/managed-telephony/numbers/")?;
            (!number.is_empty() && !number.contains('/')).then(|| (route, Some(number.to_owned())))
        }
        _ => None,
    }
}

/// The axum handler for every API path. Like API Gateway, every answer carries an
/// `apigw-requestid` header, its own refusals (401, 403, 404) included.
pub async fn serve(
    State(gw): State<Arc<Gateway>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut resp = forward(&gw, &request_id, method, uri, headers, body).await;
    if let Ok(v) = request_id.parse() {
        resp.headers_mut().insert("apigw-requestid", v);
    }
    resp
}

async fn forward(
    gw: &Gateway,
    request_id: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((route, number)) = match_route(&method, uri.path()) else {
        return gateway_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let Some((claims, scopes)) = gw.authorizer.verify(&headers) else {
        return gateway_error(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    // API Gateway's JWT authorizer: the route's scope, or 403 before any function runs.
    let needed = if READ_ROUTES.contains(&route) {
        &gw.read_scope
    } else if route == OFFBOARD_ROUTE {
        &gw.offboard_scope
    } else {
        &gw.write_scope
    };
    if !scopes.iter().any(|s| s == needed) {
        return gateway_error(StatusCode::FORBIDDEN, "Forbidden");
    }
    let route_path = route.split_once(' ').map(|(_, p)| p).unwrap_or(route);
    let mut ev = ApiEvent::new(method.as_str(), route_path, uri.path())
        .request_id(request_id)
        .scopes(&scopes.iter().map(String::as_str).collect::<Vec<_>>());
    for (k, v) in &claims {
        ev = ev.claim(k, v.as_str().unwrap_or_default());
    }
    // API Gateway joins repeated headers with commas.
    for name in headers.keys() {
        let joined: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        ev = ev.header(name.as_str(), &joined.join(","));
    }
    if let Some(q) = uri.query() {
        ev = ev.query(q);
    }
    if let Some(n) = number {
        ev = ev.path_parameter("phoneNumber", &n);
    }
    if !body.is_empty() {
        ev = ev.body(String::from_utf8_lossy(&body).into_owned());
    }
    let req = match lambda_http::request::from_str(&ev.to_json().to_string()) {
        Ok(r) => r,
        Err(_) => return gateway_error(StatusCode::BAD_REQUEST, "Bad Request"),
    };
    let resp = gw.functions.dispatch(req).await;
    let (parts, body) = resp.into_parts();
    let bytes: Vec<u8> = match body {
        Body::Empty => Vec::new(),
        Body::Text(t) => t.into_bytes(),
        Body::Binary(b) => b,
        _ => Vec::new(),
    };
    Response::from_parts(parts, axum::body::Body::from(bytes))
}
