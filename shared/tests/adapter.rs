//! The shared Lambda adapter, driven through real API Gateway HTTP API 2.0 events.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;
use shared::ApiError;
use shared::config::IdentityConfig;
use shared::http::{BODY_LIMIT, Reply, json_body, path_param, reject_unknown_query, respond};
use shared::identity::Caller;
use shared::ids::E164;
use testkit::event::{ApiEvent, read_response};

const ORG: &str = "7b0c2e1a-3f4d-4c5b-9a8e-1f2d3c4b5a69";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Input {
    phone_number: E164,
}

/// A miniature state-changing route: identity, scope, typed body, path parameter.
async fn example_route(req: Request) -> Response<Body> {
    respond(req, "example", async |req: Request| {
        let cfg = IdentityConfig::default();
        let caller = Caller::from_request(&req, &cfg)?;
        caller.require_scope(&cfg.write_scope)?;
        reject_unknown_query(&req, &["verbose"])?;
        let input: Input = json_body(&req, BODY_LIMIT)?;
        let from_path = path_param(&req, "phoneNumber")
            .ok_or_else(|| ApiError::bad_request("invalid_phone_number", "missing"))?
            .parse::<E164>()
            .map_err(|e| ApiError::bad_request("invalid_phone_number", e.0))?;
        tracing::info!("route ran");
        Reply::with_status(
            StatusCode::CREATED,
            json!({"org": caller.org_id, "body": input.phone_number, "path": from_path}),
        )
    })
    .await
}

fn event() -> ApiEvent {
    ApiEvent::new("PUT", "/numbers/{phoneNumber}", "/numbers/%2B14155550100")
        .caller(ORG, "user-1")
        .scopes(&["telephony:write"])
        .path_parameter("phoneNumber", "+14155550100")
        .json(&json!({"phoneNumber": "+14155550100"}))
}

#[tokio::test]
async fn success_carries_request_id_and_logs_are_json_with_request_and_org() {
    let (logs, _guard) = testkit::logs::capture();
    let ev = event();
    let req = ev.request();
    let resp = example_route(req).await;
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        request_id.starts_with("apigw-"),
        "falls back to API Gateway's id: {request_id}"
    );
    assert_eq!(resp.headers()["content-type"], "application/json");
    let (status, body) = read_response(&resp);
    assert_eq!(status, 201);
    assert_eq!(
        body,
        json!({"org": ORG, "body": "+14155550100", "path": "+14155550100"})
    );
    let lines = logs.lines();
    let ran = lines
        .iter()
        .find(|l| l["message"] == "route ran")
        .expect("route's line");
    assert_eq!(ran["span"]["request_id"], request_id.as_str());
    assert_eq!(ran["span"]["org_id"], ORG);
    let done = lines
        .iter()
        .find(|l| l["message"] == "request done")
        .expect("summary line");
    assert_eq!(done["status"], 201);
    assert_eq!(done["span"]["org_id"], ORG);
}

#[tokio::test]
async fn the_lambda_request_id_wins_when_present() {
    let mut ctx = lambda_http::Context::default();
    ctx.request_id = "lambda-req-42".into();
    let req = lambda_http::RequestExt::with_lambda_context(event().request(), ctx);
    let resp = example_route(req).await;
    assert_eq!(resp.headers()["x-request-id"], "lambda-req-42");
}

#[tokio::test]
async fn percent_encoded_path_parameters_are_decoded_once() {
    for (raw, expect) in [
        ("+14155550100", 201),
        ("%2B14155550100", 201),
        ("%252B14155550100", 400),
        ("14155550100", 400),
    ] {
        let resp = example_route(event().path_parameter("phoneNumber", raw).request()).await;
        assert_eq!(read_response(&resp).0, expect, "{raw}");
    }
}

async fn refused(ev: ApiEvent) -> (u16, serde_json::Value) {
    read_response(&example_route(ev.request()).await)
}

#[tokio::test]
async fn every_refusal_has_the_error_shape() {
    let cases: Vec<(ApiEvent, u16, &str)> = vec![
        (event().without_claim("org_id"), 401, "unauthenticated"),
        (event().claim("org_id", ""), 401, "unauthenticated"),
        (event().claim("org_id", "acme"), 401, "unauthenticated"),
        (event().scopes(&["telephony:read"]), 403, "forbidden"),
        (event().query("debug=1"), 400, "unknown_query_parameter"),
        (
            event().header("content-type", "text/plain"),
            415,
            "unsupported_media_type",
        ),
        (event().body("{\"phoneNumber\": "), 400, "malformed_json"),
        (event().body(""), 400, "invalid_body"),
        (
            event().body("{\"phoneNumber\": 14155550100}"),
            400,
            "invalid_body",
        ),
        (
            event().body("{\"phoneNumber\": \"+14155550100\", \"orgId\": \"x\"}"),
            400,
            "invalid_body",
        ),
        (event().body("{}"), 400, "invalid_body"),
        (
            event().body(format!(
                "{{\"phoneNumber\": \"+1{}\"}}",
                "0".repeat(BODY_LIMIT)
            )),
            413,
            "payload_too_large",
        ),
    ];
    for (ev, status, code) in cases {
        let (s, body) = refused(ev).await;
        assert_eq!(
            (s, body["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(body["error"]["requestId"].as_str().is_some());
    }
}

#[tokio::test]
async fn an_event_without_an_authorizer_is_401() {
    let mut ev = event().to_json();
    ev["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    let req = lambda_http::request::from_str(&ev.to_string()).unwrap();
    let (status, body) = read_response(&example_route(req).await);
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthenticated");
}

#[tokio::test]
async fn internal_errors_are_logged_not_echoed() {
    let (logs, _guard) = testkit::logs::capture();
    let resp = respond(event().request(), "boom", async |_req| {
        Err::<Reply, _>(ApiError::internal("pool exploded at host db.internal"))
    })
    .await;
    let (status, body) = read_response(&resp);
    assert_eq!(status, 500);
    assert!(!body.to_string().contains("db.internal"));
    assert!(
        logs.text().contains("pool exploded"),
        "the cause is logged for operators"
    );
}
