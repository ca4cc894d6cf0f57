//! The Lambda adapter every route shares: request id, the request span (request id
//! and org id on every log line), typed JSON in, typed JSON or [`ApiError`] out.
//!
//! A route is written as `async fn(&State, Request) -> Result<Reply, ApiError>` and
//! wrapped with [`respond`]; the function's `main`, the tests and the local server all
//! call that same wrapped handler.

use std::future::Future;
use std::time::Instant;

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::ApiError;

/// Default cap on request bodies: every route's body is a few hundred bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// A successful answer: a status and a JSON body.
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    body: serde_json::Value,
}

impl Reply {
    pub fn ok(body: impl Serialize) -> Result<Self, ApiError> {
        Self::with_status(StatusCode::OK, body)
    }

    pub fn with_status(status: StatusCode, body: impl Serialize) -> Result<Self, ApiError> {
        Ok(Self {
            status,
            body: serde_json::to_value(body).map_err(ApiError::internal)?,
        })
    }
}

/// The request id [`respond`] chose, kept on the request for the handler.
#[derive(Debug, Clone)]
struct RequestId(String);

/// The id a caller quotes when something went wrong: the Lambda request id (what
/// CloudWatch Logs Insights filters on), else API Gateway's, else a fresh one.
pub fn request_id(req: &Request) -> String {
    if let Some(RequestId(id)) = req.extensions().get::<RequestId>() {
        return id.clone();
    }
    if let Some(ctx) = req.lambda_context_ref()
        && !ctx.request_id.is_empty()
    {
        return ctx.request_id.clone();
    }
    if let Some(RequestContext::ApiGatewayV2(ctx)) = req.request_context_ref()
        && let Some(id) = ctx.request_id.as_deref().filter(|s| !s.is_empty())
    {
        return id.to_owned();
    }
    uuid::Uuid::new_v4().to_string()
}

fn json_response(status: StatusCode, body: &serde_json::Value, request_id: &str) -> Response<Body> {
    let mut resp = Response::new(Body::Text(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Credential summaries are per-org: never cached by a browser or a proxy.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    resp
}

/// Run `route` for `req` inside the request span and turn its result into the HTTP
/// response. Errors are logged here once: 5xx with their cause at `error`, 4xx at
/// `info` with their code. An error that says when to come back (a 429) carries it
/// as `Retry-After` (seconds).
pub async fn respond<F, Fut>(mut req: Request, route: &'static str, handler: F) -> Response<Body>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    let request_id = request_id(&req);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        route,
        org_id = tracing::field::Empty,
    );
    async move {
        let started = Instant::now();
        let mut retry_after = None;
        let (status, body) = match handler(req).await {
            Ok(reply) => (reply.status, reply.body),
            Err(err) => {
                retry_after = err.retry_after_secs();
                if err.status().is_server_error() {
                    let cause = std::error::Error::source(&err)
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| err.to_string());
                    tracing::error!(code = err.code(), cause = %cause, "request failed");
                } else {
                    tracing::info!(code = err.code(), "request refused");
                }
                (err.status(), err.body(&request_id))
            }
        };
        tracing::info!(
            status = status.as_u16(),
            duration_ms = started.elapsed().as_millis() as u64,
            "request done"
        );
        let mut resp = json_response(status, &body, &request_id);
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
    .instrument(span)
    .await
}

/// The body as `T`: JSON content type, at most `limit` bytes, and `T`'s own parsing
/// (which should `deny_unknown_fields` and use the newtypes in [`crate::ids`]).
pub fn json_body<T: DeserializeOwned>(req: &Request, limit: usize) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the request body is empty",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            "malformed_json"
        } else {
            "invalid_body"
        };
        ApiError::bad_request(code, e.to_string())
    })
}

/// [`json_body`] for a body that may be left out: an empty one (whatever its
/// `Content-Type`) is `T::default()`; anything else must be JSON that parses.
pub fn optional_json_body<T: DeserializeOwned + Default>(
    req: &Request,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    json_body(req, limit)
}

/// The invocation's deadline, from the Lambda context (`None` outside Lambda: the
/// local API and tests, whose contexts carry no deadline).
pub fn lambda_deadline(req: &Request) -> Option<std::time::SystemTime> {
    req.lambda_context_ref()
        .filter(|ctx| ctx.deadline > 0)
        .map(|ctx| ctx.deadline())
}

/// A path parameter as API Gateway matched it. API Gateway HTTP APIs hand it over
/// already percent-decoded (`+1415…`); other callers (a local server, a test) may
/// pass it encoded (`%2B1415…`). It is decoded at most once, so `%252B` stays
/// `%2B…` and fails to parse rather than being decoded twice.
pub fn path_param(req: &Request, name: &str) -> Option<String> {
    let raw = req.path_parameters_ref()?.first(name)?;
    if raw.contains('%') {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    } else {
        Some(raw.to_owned())
    }
}

/// The `{phoneNumber}` path parameter as E.164 (`+1415…` or `%2B1415…`, decoded at
/// most once); anything else is a 400 `invalid_phone_number`.
pub fn path_phone_number(req: &Request) -> Result<crate::ids::E164, ApiError> {
    path_param(req, "phoneNumber")
        .unwrap_or_default()
        .parse()
        .map_err(|e: crate::ids::FormatError| ApiError::bad_request("invalid_phone_number", e.0))
}

/// 400 for any query parameter not in `allowed`.
pub fn reject_unknown_query(req: &Request, allowed: &[&str]) -> Result<(), ApiError> {
    if let Some(q) = req.query_string_parameters_ref() {
        for (name, _) in q.iter() {
            if !allowed.contains(&name) {
                return Err(ApiError::bad_request(
                    "unknown_query_parameter",
                    format!("unknown query parameter {name:?}; allowed: {allowed:?}"),
                ));
            }
        }
    }
    Ok(())
}
