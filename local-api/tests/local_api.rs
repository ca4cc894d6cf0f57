//! The local API over real HTTP: the authorizer's checks (signature, `exp`, `nbf`,
//! `iss`, `aud`, the read and write scopes), CORS as the template sets it, the page's origin,
//! and the stand-ins' state, auth and failure control.

use std::time::{SystemTime, UNIX_EPOCH};

use local_api::demo::{DEMO_NUMBERS, DEMO_ORG, OTHER_NUMBER, OTHER_ORG};
use local_api::server::{LOCAL_DB_POOL_SIZE, Running};
use local_api::standins::{FailMode, LOCAL_VAPI_KEY};
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

/// The local authorizer's default claims, overridden by `changes` (`null` removes one).
fn claims_with(iss: &str, changes: Value) -> Value {
    let mut claims = json!({
        "iss": iss, "aud": "telephony-local", "sub": "tester",
        "org_id": DEMO_ORG, "scope": "telephony:read telephony:write", "nbf": now() - 5, "exp": now() + 600,
    });
    for (k, v) in changes.as_object().expect("object") {
        if v.is_null() {
            claims.as_object_mut().expect("object").remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

impl Local {
    /// A token signed as the local authorizer signs (RS256, its key id).
    fn token_with(&self, changes: Value) -> String {
        let a = &self.running.gateway.authorizer;
        a.sign(&claims_with(&a.issuer, changes)).expect("sign")
    }

    /// The authorizer's key id, from its JWKS.
    async fn kid(&self) -> String {
        let jwks: Value = self
            .http
            .get(self.api("/.well-known/jwks.json"))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("json");
        jwks["keys"][0]["kid"].as_str().expect("kid").to_owned()
    }
}

/// A token with `header` (any algorithm, or none) over `claims`, signed with HMAC
/// under `secret` when the header says HS256, unsigned otherwise.
fn hand_made(header: Value, claims: &Value, secret: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let signed = format!("{}.{}", b64(&header), b64(claims));
    let signature = if header["alg"] == "HS256" {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(aws_lc_rs::hmac::sign(&key, signed.as_bytes()).as_ref())
    } else {
        String::new()
    };
    format!("{signed}.{signature}")
}

const STATUS: &str = "/api/managed-telephony/status";

#[tokio::test]
async fn the_authorizer_checks_signature_time_issuer_and_audience() {
    let l = Local::start().await;
    let good = l.token_with(json!({}));
    assert_eq!(l.call("GET", STATUS, Some(&good)).await.0, 200);
    assert_eq!(
        l.call("GET", STATUS, Some(&l.running.token)).await.0,
        200,
        "the printed token works"
    );

    let refused = [
        ("no token", None),
        (
            "HS256 (the old local secret)",
            Some(hand_made(
                json!({"alg": "HS256", "typ": "JWT"}),
                &claims_with(&l.running.gateway.authorizer.issuer, json!({})),
                b"local-dev-only-jwt-secret",
            )),
        ),
        (
            "alg none",
            Some(hand_made(
                json!({"alg": "none", "typ": "JWT"}),
                &claims_with(&l.running.gateway.authorizer.issuer, json!({})),
                b"",
            )),
        ),
        (
            "another key under this key's id",
            Some({
                let other = local_api::authorizer::LocalAuthorizer::from_env(
                    &shared::config::Env::from_pairs([(
                        "LOCAL_JWT_KEY_FILE",
                        std::env::temp_dir()
                            .join(format!("jwt-{}.pem", uuid::Uuid::new_v4()))
                            .to_str()
                            .expect("path"),
                    )]),
                    &l.running.gateway.authorizer.issuer,
                )
                .expect("another key");
                let token = other
                    .sign(&claims_with(
                        &l.running.gateway.authorizer.issuer,
                        json!({}),
                    ))
                    .expect("sign");
                // Its header names the local API's key id instead.
                let kid = l.kid().await;
                let mut parts = token.splitn(2, '.');
                let (_, rest) = (parts.next(), parts.next().expect("rest"));
                use base64::Engine as _;
                format!(
                    "{}.{rest}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string())
                )
            }),
        ),
        ("expired", Some(l.token_with(json!({"exp": now() - 120})))),
        (
            "not yet valid",
            Some(l.token_with(json!({"nbf": now() + 600}))),
        ),
        (
            "wrong issuer",
            Some(l.token_with(json!({"iss": "https://evil.example"}))),
        ),
        (
            "wrong audience",
            Some(l.token_with(json!({"aud": "another-api"}))),
        ),
        ("no exp", Some(l.token_with(json!({"exp": null})))),
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
    let bad_org = l.token_with(json!({"org_id": "acme"}));
    let (status, body) = l.call("GET", STATUS, Some(&bad_org)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthenticated");
}

#[tokio::test]
async fn state_changing_routes_need_the_write_scope() {
    let l = Local::start().await;
    let read_only = l.token_with(json!({"scope": "telephony:read"}));
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
async fn the_read_routes_need_the_read_scope_which_the_write_scope_does_not_imply() {
    let l = Local::start().await;
    let forbidden = (403, json!({"message": "Forbidden"}));
    let search = "/api/managed-telephony/available-numbers?areaCode=415";
    let providers_before = l.running.standins_state.state();
    for (why, scope) in [
        ("write only", json!("telephony:write")),
        ("no scope", Value::Null),
        ("look-alike", json!("telephony:reader")),
    ] {
        let token = l.token_with(json!({ "scope": scope }));
        for path in [STATUS, search] {
            // The authorizer's own refusal (API Gateway's shape), before any function runs.
            assert_eq!(
                l.call("GET", path, Some(&token)).await,
                forbidden,
                "{why}: {path}"
            );
        }
    }
    assert_eq!(
        l.running.standins_state.state(),
        providers_before,
        "no provider was asked"
    );
    // The read scope alone reads, and the printed token carries both scopes.
    let reader = l.token_with(json!({"scope": "telephony:read"}));
    for token in [&reader, &l.running.token] {
        assert_eq!(l.call("GET", STATUS, Some(token)).await.0, 200);
        assert_eq!(l.call("GET", search, Some(token)).await.0, 200);
    }
    let (status, _) = l
        .call(
            "DELETE",
            &format!("/api/managed-telephony/numbers/{}", DEMO_NUMBERS[0]),
            Some(&l.running.token),
        )
        .await;
    assert_eq!(status, 200, "the printed token also writes");
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

    // A SID ending in `dead` is a suspended account: refused as Twilio does (403,
    // code 20403), not answered with its status.
    let dead = "AC0123456789abcdef0123456789abdead";
    let resp = l
        .http
        .get(format!("{base}/twilio/2010-04-01/Accounts/{dead}.json"))
        .basic_auth(dead, Some("11111111111111111111111111111111"))
        .send()
        .await
        .expect("twilio");
    assert_eq!(resp.status(), 403);
    let account: Value = resp.json().await.expect("json");
    assert_eq!(account["code"], 20403);

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

#[tokio::test]
async fn vapi_standin_lists_credentials_newest_first_without_tokens() {
    let l = Local::start().await;
    let vapi = format!("http://{}/vapi", l.running.standins);
    let list = |query: &str, key: &str| {
        l.http
            .get(format!("{vapi}/credential{query}"))
            .bearer_auth(key)
            .send()
    };
    let listed = |query: &'static str| async move {
        let resp = list(query, LOCAL_VAPI_KEY).await.expect("list");
        assert_eq!(resp.status(), 200, "{query}");
        let text = resp.text().await.expect("body");
        let items: Vec<Value> = serde_json::from_str(&text).expect("a JSON array");
        (text, items)
    };

    // Two saves for the other org through the API: its credential is created, then
    // updated (the demo org's was created when the demo data was seeded).
    let token = l.token_with(json!({"org_id": OTHER_ORG}));
    let saves = [
        (
            "AC0123456789abcdef0123456789abcdef",
            "5f4dcc3b5aa765d61d8327deb882cf99",
        ),
        (
            "AC00000000000000000000000000000abc",
            "aaaabbbbccccddddeeeeffff00001111",
        ),
    ];
    for (sid, auth_token) in saves {
        let resp = l
            .http
            .put(l.api("/api/telephony/credentials/twilio"))
            .bearer_auth(&token)
            .json(
                &json!({"accountSid": sid, "authToken": auth_token, "phoneNumber": "+14155550123"}),
            )
            .send()
            .await
            .expect("save");
        let status = resp.status();
        assert!(
            status.is_success(),
            "{status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }

    let (text, items) = listed("").await;
    for (_, auth_token) in saves {
        assert!(!text.contains(auth_token), "a token in the list: {text}");
    }
    assert!(!text.contains("authToken"), "{text}");
    assert!(
        !text.contains("d3e0d3e0d3e0d3e0d3e0d3e0d3e0d3e0"),
        "the demo token: {text}"
    );
    let name = format!("org-{OTHER_ORG}");
    let mine: Vec<&Value> = items
        .iter()
        .filter(|c| c["name"] == name.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "one credential for the org: {text}");
    let mine = mine[0];
    assert_eq!(mine["provider"], "twilio");
    assert_eq!(mine["accountSid"], saves[1].0, "the last save's SID");
    for field in ["id", "orgId", "createdAt", "updatedAt"] {
        assert!(mine[field].is_string(), "{field}: {mine}");
    }
    assert!(
        mine["updatedAt"].as_str() > mine["createdAt"].as_str(),
        "updated: {mine}"
    );
    // Newest first: the other org's after the seeded demo one.
    let names: Vec<&str> = items.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, [name.clone(), format!("org-{DEMO_ORG}")]);

    // `limit` and `createdAtLt` (only strictly older): how a caller pages.
    let (_, first) = listed("?limit=1").await;
    assert_eq!(first, items[..1]);
    let newest = items[0]["createdAt"]
        .as_str()
        .expect("createdAt")
        .to_owned();
    let oldest = items[1]["createdAt"]
        .as_str()
        .expect("createdAt")
        .to_owned();
    let page = |query: String| async move {
        let resp = list(&query, LOCAL_VAPI_KEY).await.expect("list");
        assert_eq!(resp.status(), 200, "{query}");
        resp.json::<Vec<Value>>().await.expect("array")
    };
    assert_eq!(
        page(format!("?limit=1&createdAtLt={newest}")).await,
        items[1..]
    );
    assert_eq!(
        page(format!("?createdAtLt={oldest}")).await,
        Vec::<Value>::new()
    );

    // The default limit is 100, the largest 1000.
    for _ in 0..100 {
        let resp = l
            .http
            .post(format!("{vapi}/credential"))
            .bearer_auth(LOCAL_VAPI_KEY)
            .json(&json!({"provider": "twilio", "accountSid": "AC1", "authToken": "t", "name": "filler"}))
            .send()
            .await
            .expect("create");
        assert_eq!(resp.status(), 201);
    }
    assert_eq!(listed("").await.1.len(), 100);
    let (_, all) = listed("?limit=1000").await;
    assert_eq!(all.len(), 102);
    let times: Vec<&str> = all.iter().filter_map(|c| c["createdAt"].as_str()).collect();
    assert!(
        times.windows(2).all(|w| w[0] > w[1]),
        "newest first, distinct times"
    );

    // Refusals in Vapi's shape: over the maximum, not a date, an unknown parameter,
    // a wrong key; and failure injection applies.
    for query in ["?limit=1001", "?createdAtLt=yesterday", "?name=x"] {
        let resp = list(query, LOCAL_VAPI_KEY).await.expect("list");
        assert_eq!(resp.status(), 400, "{query}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["statusCode"], 400, "{query}");
        assert!(body["message"].is_array(), "{query}: {body}");
    }
    let resp = list("", "not-the-key").await.expect("list");
    assert_eq!(resp.status(), 401);
    l.running
        .standins_state
        .fail("vapi", FailMode::ServerError, Some(1));
    let statuses = [
        list("", LOCAL_VAPI_KEY)
            .await
            .expect("list")
            .status()
            .as_u16(),
        list("", LOCAL_VAPI_KEY)
            .await
            .expect("list")
            .status()
            .as_u16(),
    ];
    assert_eq!(statuses, [500, 200]);
}

#[tokio::test]
async fn every_standin_404_is_the_providers_own_json() {
    let l = Local::start().await;
    let base = format!("http://{}", l.running.standins);
    let twilio_main = (
        local_api::standins::LOCAL_TWILIO_MAIN_SID,
        local_api::standins::LOCAL_TWILIO_MAIN_TOKEN,
    );
    // Each with the right credentials, so a 404 is about the path, not the caller.
    let send = |method: &str, path: &str| {
        let req = l
            .http
            .request(method.parse().expect("method"), format!("{base}{path}"));
        let req = if path.starts_with("/vapi") {
            req.bearer_auth(LOCAL_VAPI_KEY)
                .json(&json!({"accountSid": "AC1", "authToken": "t"}))
        } else {
            req.basic_auth(twilio_main.0, Some(twilio_main.1))
        };
        req.send()
    };

    let vapi_404s = [
        ("DELETE", "/vapi/phone-number/no-such-phone"),
        ("PATCH", "/vapi/credential/no-such-credential"),
        ("GET", "/vapi/no-such-resource"),
        ("GET", "/vapi/credential/some-id"),
        ("DELETE", "/vapi/credential"),
        ("GET", "/vapi"),
    ];
    for (method, path) in vapi_404s {
        let resp = send(method, path).await.expect("vapi");
        assert_eq!(resp.status(), 404, "{method} {path}");
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(body["statusCode"], 404, "{method} {path}: {body}");
        assert_eq!(body["error"], "Not Found", "{method} {path}: {body}");
        assert!(body["message"].is_string(), "{method} {path}: {body}");
    }

    let sub = "AC0000000000000000000000000000d3e0";
    let twilio_404s = [
        (
            "DELETE",
            format!(
                "/twilio/2010-04-01/Accounts/{sub}/IncomingPhoneNumbers/PN{:0>32}.json",
                9
            ),
        ),
        (
            "GET",
            "/twilio/2010-04-01/Accounts/no-json-suffix".to_owned(),
        ),
        (
            "GET",
            format!("/twilio/2010-04-01/Accounts/{sub}/Calls.json"),
        ),
        ("GET", "/twilio/2010-04-01/Nothing".to_owned()),
        ("GET", "/twilio".to_owned()),
    ];
    for (method, path) in &twilio_404s {
        let resp = send(method, path).await.expect("twilio");
        assert_eq!(resp.status(), 404, "{method} {path}");
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(body["code"], 20404, "{method} {path}: {body}");
        assert_eq!(body["status"], 404, "{method} {path}: {body}");
        assert!(
            body["message"].is_string() && body["more_info"].is_string(),
            "{body}"
        );
    }
    // A wrong method on a Twilio resource: its 405, not a 404.
    let resp = send("DELETE", &format!("/twilio/2010-04-01/Accounts/{sub}.json"))
        .await
        .expect("twilio");
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["code"], 20004, "{body}");
}

#[tokio::test]
async fn the_local_api_pools_several_connections_per_function() {
    let db = TestDb::new().await;
    let running = common::start_local(&db).await;
    let pool = running.gateway.functions.list.db.status().max_size;
    assert_eq!(
        pool, LOCAL_DB_POOL_SIZE,
        "more than a Lambda instance's one"
    );
    drop(running);
    let running = common::start_local_with(&db, &[("DB_POOL_SIZE", "3")]).await;
    assert_eq!(
        running.gateway.functions.list.db.status().max_size,
        3,
        "DB_POOL_SIZE wins"
    );
}

/// Issue 24, staging finding 4: the local authorizer signs RS256 (API Gateway's JWT
/// authorizer supports only RSA) and serves its JWKS at the issuer's
/// `/.well-known/jwks.json`; the printed token verifies against that JWKS alone, as
/// API Gateway would verify it; `POST /__control/token` signs odd claims the same way.
#[tokio::test]
async fn the_issuer_serves_its_jwks_and_the_printed_token_verifies_against_it() {
    let l = Local::start().await;
    let jwks: Value = l
        .http
        .get(l.api("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["alg"].as_str(),
            key["use"].as_str()
        ),
        (Some("RSA"), Some("RS256"), Some("sig")),
        "{jwks}"
    );
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
    // The issuer is the API's own address: its JWKS is where API Gateway looks.
    let issuer = &l.running.gateway.authorizer.issuer;
    assert_eq!(issuer, &format!("http://{}", l.running.api));
    let header = jsonwebtoken::decode_header(&l.running.token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), key["kid"].as_str());
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        key["n"].as_str().expect("n"),
        key["e"].as_str().expect("e"),
    )
    .expect("the JWK is a usable RSA key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&["telephony-local"]);
    let data = jsonwebtoken::decode::<Value>(&l.running.token, &decoding, &validation)
        .expect("the printed token verifies against the JWKS");
    assert_eq!(data.claims["org_id"], DEMO_ORG);

    // The control endpoint: a token with one claim changed, signed the same way.
    let minted: Value = l
        .http
        .post(format!("http://{}/__control/token", l.running.standins))
        .json(&json!({"claims": {"scope": "telephony:read"}}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = minted["token"].as_str().expect("token");
    assert_eq!(l.call("GET", STATUS, Some(token)).await.0, 200);
    let (status, _) = l
        .call(
            "DELETE",
            "/api/managed-telephony/numbers/%2B14155550100",
            Some(token),
        )
        .await;
    assert_eq!(status, 403, "the read scope only");
}

/// The key file (`LOCAL_JWT_KEY_FILE`, as `scripts/run-local.sh` sets it) is made
/// once, readable by its owner only, and used again after a restart: a token from
/// before still verifies.
#[tokio::test]
async fn the_signing_key_file_is_made_once_and_kept() {
    use local_api::authorizer::LocalAuthorizer;
    use shared::config::Env;
    let path = std::env::temp_dir().join(format!("jwt-{}.pem", uuid::Uuid::new_v4()));
    let env = Env::from_pairs([("LOCAL_JWT_KEY_FILE", path.to_str().expect("path"))]);
    let first = LocalAuthorizer::from_env(&env, "http://127.0.0.1:1").expect("made");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = first
        .mint(
            DEMO_ORG,
            "someone",
            &["telephony:read"],
            std::time::Duration::from_secs(60),
        )
        .expect("mint");
    let again = LocalAuthorizer::from_env(&env, "http://127.0.0.1:1").expect("loaded");
    assert_eq!(again.jwks(), first.jwks());
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    assert!(again.verify(&headers).is_some());
    let _ = std::fs::remove_file(&path);
}
