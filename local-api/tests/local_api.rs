//! The local API over real HTTP: the authorizer's checks (signature, `exp`, `nbf`,
//! `iss`, `aud`, the write scope), CORS as the template sets it, the page's origin,
//! and the stand-ins' state, auth and failure control.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use local_api::demo::{DEMO_NUMBERS, DEMO_ORG, OTHER_NUMBER};
use local_api::gateway::DEFAULT_LOCAL_JWT_SECRET;
use local_api::server::Running;
use local_api::standins::FailMode;
use serde_json::{Value, json};
use testkit::TestDb;

mod common;

struct Local {
    _db: TestDb,
    running: Running,
    http: reqwest::Client,
}

impl Local {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let running = common::start_local(&db).await;
        Self {
            _db: db,
            running,
            http: reqwest::Client::new(),
        }
    }

    fn api(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.api)
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().expect("method"), self.api(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A token with the local authorizer's defaults, overridden by `changes`.
fn token_with(changes: Value, secret: &str) -> String {
    let mut claims = json!({
        "iss": "http://localhost/local-issuer", "aud": "telephony-local", "sub": "tester",
        "org_id": DEMO_ORG, "scope": "telephony:write", "nbf": now() - 5, "exp": now() + 600,
    });
    for (k, v) in changes.as_object().expect("object") {
        if v.is_null() {
            claims.as_object_mut().expect("object").remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

const STATUS: &str = "/api/managed-telephony/status";

#[tokio::test]
async fn the_authorizer_checks_signature_time_issuer_and_audience() {
    let l = Local::start().await;
    let good = token_with(json!({}), DEFAULT_LOCAL_JWT_SECRET);
    assert_eq!(l.call("GET", STATUS, Some(&good)).await.0, 200);
    assert_eq!(
        l.call("GET", STATUS, Some(&l.running.token)).await.0,
        200,
        "the printed token works"
    );

    let refused = [
        ("no token", None),
        (
            "wrong key",
            Some(token_with(json!({}), "another-secret-entirely")),
        ),
        (
            "expired",
            Some(token_with(
                json!({"exp": now() - 120}),
                DEFAULT_LOCAL_JWT_SECRET,
            )),
        ),
        (
            "not yet valid",
            Some(token_with(
                json!({"nbf": now() + 600}),
                DEFAULT_LOCAL_JWT_SECRET,
            )),
        ),
        (
            "wrong issuer",
            Some(token_with(
                json!({"iss": "https://evil.example"}),
                DEFAULT_LOCAL_JWT_SECRET,
            )),
        ),
        (
            "wrong audience",
            Some(token_with(
                json!({"aud": "another-api"}),
                DEFAULT_LOCAL_JWT_SECRET,
            )),
        ),
        (
            "no exp",
            Some(token_with(json!({"exp": null}), DEFAULT_LOCAL_JWT_SECRET)),
        ),
    ];
    for (why, token) in refused {
        let (status, body) = l.call("GET", STATUS, token.as_deref()).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(body, json!({"message": "Unauthorized"}), "{why}");
    }
    // Like API Gateway, its own refusals carry its request id.
    let resp = l.http.get(l.api(STATUS)).send().await.expect("request");
    assert!(resp.headers().contains_key("apigw-requestid"));

    // A verified token whose org claim is not a UUID reaches the function: its 401.
    let bad_org = token_with(json!({"org_id": "acme"}), DEFAULT_LOCAL_JWT_SECRET);
    let (status, body) = l.call("GET", STATUS, Some(&bad_org)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthenticated");
}

#[tokio::test]
async fn state_changing_routes_need_the_write_scope() {
    let l = Local::start().await;
    let read_only = token_with(json!({"scope": "telephony:read"}), DEFAULT_LOCAL_JWT_SECRET);
    assert_eq!(l.call("GET", STATUS, Some(&read_only)).await.0, 200);
    let number = format!("/api/managed-telephony/numbers/{}", DEMO_NUMBERS[0]);
    // The authorizer's own refusal (API Gateway's shape), before any function runs.
    let forbidden = (403, json!({"message": "Forbidden"}));
    assert_eq!(l.call("DELETE", &number, Some(&read_only)).await, forbidden);
    assert_eq!(
        l.call("PUT", "/api/telephony/credentials/twilio", Some(&read_only))
            .await,
        forbidden
    );
    // Nothing changed: the number is still listed as active, and Twilio holds it.
    let (_, status) = l
        .call(
            "GET",
            &format!("{STATUS}?include=released"),
            Some(&read_only),
        )
        .await;
    let listed = status["numbers"]
        .as_array()
        .expect("numbers")
        .iter()
        .find(|n| n["phoneNumber"] == DEMO_NUMBERS[0])
        .cloned();
    assert_eq!(listed.map(|n| n["status"].clone()), Some(json!("active")));
    let twilio = l.running.standins_state.state()["twilio_numbers"].to_string();
    assert!(twilio.contains(DEMO_NUMBERS[0]), "{twilio}");
}

#[tokio::test]
async fn release_through_the_local_api_and_stateful_standins() {
    let l = Local::start().await;
    let token = l.running.token.clone();
    let standins = &l.running.standins_state;
    let held = |s: &Value, n: &str| s["twilio_numbers"].to_string().contains(n);

    // `%2B` as a browser sends it.
    let encoded = format!(
        "/api/managed-telephony/numbers/{}",
        DEMO_NUMBERS[1].replace('+', "%2B")
    );
    let (status, body) = l.call("DELETE", &encoded, Some(&token)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("released")));
    assert!(!held(&standins.state(), DEMO_NUMBERS[1]));
    // Released again: the same answer, and the stand-ins are not called again (they
    // would fail now).
    standins.fail("vapi", FailMode::ServerError, None);
    standins.fail("twilio", FailMode::ServerError, None);
    let (status, again) = l.call("DELETE", &encoded, Some(&token)).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("released")));
    standins.fail("vapi", FailMode::None, None);
    standins.fail("twilio", FailMode::None, None);

    // Another org's number: 404 and the stand-in still holds it.
    let other = format!("/api/managed-telephony/numbers/{OTHER_NUMBER}");
    assert_eq!(l.call("DELETE", &other, Some(&token)).await.0, 404);
    assert!(held(&standins.state(), OTHER_NUMBER));

    // Twilio failing (told through the control endpoint) → pending; cleared → released.
    let control = format!("http://{}/__control/fail", l.running.standins);
    let told = l
        .http
        .post(&control)
        .json(&json!({"provider": "twilio", "mode": "500"}))
        .send()
        .await
        .expect("control");
    assert_eq!(told.status(), 200);
    let path = format!("/api/managed-telephony/numbers/{}", DEMO_NUMBERS[2]);
    let (status, body) = l.call("DELETE", &path, Some(&token)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "release_pending");
    assert_eq!(body["pending"], json!(["twilio"]));
    assert!(held(&standins.state(), DEMO_NUMBERS[2]));
    l.http
        .post(&control)
        .json(&json!({"provider": "twilio", "mode": "none"}))
        .send()
        .await
        .expect("control");
    let (status, body) = l.call("DELETE", &path, Some(&token)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("released")));
    assert!(!held(&standins.state(), DEMO_NUMBERS[2]));
}

#[tokio::test]
async fn standins_check_auth_and_answer_the_providers_error_json() {
    let l = Local::start().await;
    let base = format!("http://{}", l.running.standins);
    let resp = l
        .http
        .delete(format!("{base}/vapi/phone-number/vapi-phone-14155550100"))
        .bearer_auth("not-the-key")
        .send()
        .await
        .expect("vapi");
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["statusCode"], 401);
    assert!(body["message"].is_string() && body["error"].is_string());

    let resp = l
        .http
        .get(format!(
            "{base}/twilio/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef.json"
        ))
        .basic_auth(
            "AC0123456789abcdef0123456789abcdef",
            Some("00000000000000000000000000000000"),
        )
        .send()
        .await
        .expect("twilio");
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], 20003);
    assert!(body["more_info"].is_string());

    // A SID ending in `dead` is a suspended account.
    let dead = "AC0123456789abcdef0123456789abdead";
    let account: Value = l
        .http
        .get(format!("{base}/twilio/2010-04-01/Accounts/{dead}.json"))
        .basic_auth(dead, Some("11111111111111111111111111111111"))
        .send()
        .await
        .expect("twilio")
        .json()
        .await
        .expect("json");
    assert_eq!(account["status"], "suspended");

    // A released Vapi number is gone the next time; `times` fails only that many calls.
    let delete_phone = || {
        l.http
            .delete(format!("{base}/vapi/phone-number/vapi-phone-14155550100"))
            .bearer_auth(local_api::standins::LOCAL_VAPI_KEY)
            .send()
    };
    l.running
        .standins_state
        .fail("vapi", FailMode::RateLimited, Some(1));
    let statuses = [
        delete_phone().await.expect("vapi").status().as_u16(),
        delete_phone().await.expect("vapi").status().as_u16(),
        delete_phone().await.expect("vapi").status().as_u16(),
    ];
    assert_eq!(statuses, [429, 200, 404]);

    // Vapi validates the credential body as Vapi does: `message` is an array.
    let resp = l
        .http
        .post(format!("{base}/vapi/credential"))
        .bearer_auth(local_api::standins::LOCAL_VAPI_KEY)
        .json(&json!({"provider": "twilio", "accountSid": "AC1", "authToken": "t", "extra": 1}))
        .send()
        .await
        .expect("vapi");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert!(body["message"].is_array(), "{body}");
}

#[tokio::test]
async fn cors_allows_the_pages_origin_only_and_the_page_learns_the_api() {
    let l = Local::start().await;
    let page_origin = format!("http://127.0.0.1:{}", l.running.web.port());
    let preflight = |origin: String| {
        l.http
            .request(
                reqwest::Method::OPTIONS,
                l.api("/api/managed-telephony/numbers/%2B14155550100"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "DELETE")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight(page_origin.clone()).await.expect("preflight");
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(page_origin.as_str())
    );
    let other = preflight("https://evil.example".into())
        .await
        .expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let config: Value = l
        .http
        .get(format!("http://{}/config.json", l.running.web))
        .send()
        .await
        .expect("config")
        .json()
        .await
        .expect("json");
    assert_eq!(config["apiBase"], format!("http://{}", l.running.api));
    assert_eq!(config["token"], l.running.token);
}
