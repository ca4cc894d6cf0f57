//! save-credential end to end: real API Gateway events through the real handler,
//! real Postgres, KMS on the emulator, wiremock Vapi and Twilio asserting each call.

use std::time::Duration;

use save_credential::{State, handle};
use serde_json::{Value, json};
use shared::config::Env;
use shared::credential::TwilioCredential;
use shared::envelope::{EncryptionContext, Envelope};
use shared::ids::{CredentialSource, OrgId, Provider};
use testkit::TestDb;
use testkit::event::{ApiEvent, read_response};
use testkit::fakes::{FakeTwilio, FakeVapi, VAPI_KEY};
use wiremock::matchers::{basic_auth, body_partial_json, method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "5f4dcc3b5aa765d61d8327deb882cf99";
const SID2: &str = "AC9999999999abcdef0123456789abcdef";
const TOKEN2: &str = "fedcba9876543210fedcba9876543210";
const ROUTE: &str = "/api/telephony/credentials/twilio";

struct World {
    t: TestDb,
    vapi: FakeVapi,
    twilio: FakeTwilio,
    aws: aws_config::SdkConfig,
    kms_key: String,
    state: State,
}

impl World {
    async fn new() -> Self {
        Self::with_env(&[]).await
    }

    async fn with_env(extra: &[(&str, &str)]) -> Self {
        let t = TestDb::new().await;
        let aws = testkit::aws_config().await;
        let kms_key = testkit::kms_key(&aws).await;
        let vapi = FakeVapi::start().await;
        let twilio = FakeTwilio::start().await;
        Self {
            state: build_state(&t, &vapi, &twilio, &aws, &kms_key, extra).await,
            t,
            vapi,
            twilio,
            aws,
            kms_key,
        }
    }

    /// Another Lambda instance: its own pool and clients.
    async fn second_instance(&self) -> State {
        build_state(
            &self.t,
            &self.vapi,
            &self.twilio,
            &self.aws,
            &self.kms_key,
            &[],
        )
        .await
    }

    async fn twilio_accepts(&self, sid: &str, token: &str) {
        Mock::given(method("GET"))
            .and(path(format!("/Accounts/{sid}.json")))
            .and(basic_auth(sid, token))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(FakeTwilio::account(sid, "active")),
            )
            .mount(&self.twilio.server)
            .await;
    }

    async fn vapi_creates(&self, id: &str, sid: &str, token: &str, org: OrgId) {
        self.vapi
            .authed(Mock::given(method("POST")).and(path("/credential")))
            .and(body_partial_json(json!({
                "provider": "twilio", "accountSid": sid, "authToken": token, "name": format!("org-{org}")
            })))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({
                "id": id, "provider": "twilio", "orgId": "vapi-org", "createdAt": "2026-11-24T12:00:00.000Z"
            })))
            .expect(1)
            .mount(&self.vapi.server)
            .await;
    }

    async fn save(&self, state: &State, org: OrgId, body: Value) -> (u16, Value) {
        let ev = ApiEvent::new("PUT", ROUTE, ROUTE)
            .caller(&org.to_string(), "user-1")
            .scopes(&["telephony:write"])
            .json(&body);
        read_response(&handle(state, ev.request()).await)
    }

    async fn slot(&self, org: OrgId) -> Option<(String, Value, Value)> {
        let c = self.t.client().await;
        c.query_opt(
            "SELECT source, encrypted_config, metadata FROM org_credentials WHERE org_id = $1",
            &[&org.as_uuid()],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
    }

    async fn org_vapi_state(&self, org: OrgId) -> (Option<String>, Option<String>) {
        let r = self
            .t
            .client()
            .await
            .query_one(
                "SELECT vapi_credential_id, vapi_sync_error FROM organizations WHERE id = $1",
                &[&org.as_uuid()],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    }

    async fn count(&self, sql: &str) -> i64 {
        self.t
            .client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }
}

async fn build_state(
    t: &TestDb,
    vapi: &FakeVapi,
    twilio: &FakeTwilio,
    aws: &aws_config::SdkConfig,
    kms_key: &str,
    extra: &[(&str, &str)],
) -> State {
    let (url, vapi_uri, twilio_uri) = (t.url(), vapi.uri(), twilio.uri());
    let mut pairs = vec![
        ("DATABASE_URL", url.as_str()),
        ("KEYRING", "kms"),
        ("KMS_KEY_ID", kms_key),
        ("VAPI_BASE_URL", vapi_uri.as_str()),
        ("TWILIO_BASE_URL", twilio_uri.as_str()),
        ("VAPI_PRIVATE_KEY", VAPI_KEY),
        ("PROVIDER_TIMEOUT_MS", "1000"),
        ("PROVIDER_MIN_BACKOFF_MS", "10"),
        ("PROVIDER_MAX_BACKOFF_MS", "50"),
    ];
    pairs.extend_from_slice(extra);
    State::from_env(&Env::from_pairs(pairs), aws)
        .await
        .expect("state")
}

fn body(sid: &str, token: &str, phone: &str) -> Value {
    json!({"accountSid": sid, "authToken": token, "phoneNumber": phone})
}

async fn open_slot(
    w: &World,
    org: OrgId,
    stored: &Value,
) -> Result<Value, shared::envelope::CryptoError> {
    let env: Envelope = serde_json::from_value(stored.clone()).unwrap();
    let plain = w
        .state
        .keyring
        .open(&EncryptionContext::new(org, Provider::Twilio), &env)
        .await?;
    Ok(serde_json::from_slice(&plain).unwrap())
}

#[tokio::test]
async fn first_save_stores_one_slot_and_creates_the_vapi_credential() {
    let w = World::new().await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    w.twilio_accepts(SID, TOKEN).await;
    w.vapi_creates("vapi-cred-1", SID, TOKEN, org).await;

    let (status, resp) = w
        .save(&w.state, org, body(SID, TOKEN, "+14155550100"))
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["accountSid"], SID);
    assert_eq!(resp["phoneNumber"], "+14155550100");
    assert_eq!(resp["source"], "byoc");
    assert_eq!(resp["vapiCredentialId"], "vapi-cred-1");
    assert_eq!(resp["vapi"], json!({"synced": true}));
    assert!(resp["updatedAt"].as_str().is_some());
    assert!(!resp.to_string().contains(TOKEN));

    let (source, enc, meta) = w.slot(org).await.expect("slot");
    assert_eq!(source, "byoc");
    assert_eq!(
        meta,
        json!({"accountSid": SID, "phoneNumber": "+14155550100"})
    );
    assert_eq!(
        open_slot(&w, org, &enc).await.unwrap(),
        body(SID, TOKEN, "+14155550100"),
        "the blob decrypts under the org's context"
    );
    let other = OrgId::new(uuid::Uuid::new_v4());
    assert!(
        open_slot(&w, other, &enc).await.is_err(),
        "and not under another org's"
    );
    assert_eq!(
        w.org_vapi_state(org).await,
        (Some("vapi-cred-1".into()), None)
    );
    assert_eq!(w.count("SELECT count(*) FROM org_credentials").await, 1);
    let audit =
        w.t.client()
            .await
            .query_one("SELECT actor, action, target, outcome FROM audit_log", &[])
            .await
            .unwrap();
    assert_eq!(
        (
            audit.get::<_, String>(0),
            audit.get::<_, String>(1),
            audit.get::<_, String>(2),
            audit.get::<_, String>(3)
        ),
        (
            "user-1".into(),
            "credential.save".into(),
            SID.into(),
            "saved".into()
        )
    );
}

#[tokio::test]
async fn saving_again_replaces_the_slot_and_patches_vapi() {
    let w = World::new().await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    w.twilio_accepts(SID, TOKEN).await;
    w.twilio_accepts(SID2, TOKEN2).await;
    w.vapi_creates("vapi-cred-1", SID, TOKEN, org).await;
    assert_eq!(
        w.save(&w.state, org, body(SID, TOKEN, "+14155550100"))
            .await
            .0,
        200
    );
    let (_, first, _) = w.slot(org).await.unwrap();

    w.vapi
        .authed(Mock::given(method("PATCH")).and(path("/credential/vapi-cred-1")))
        .and(body_partial_json(
            json!({"accountSid": SID2, "authToken": TOKEN2}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "vapi-cred-1"})))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    let (status, resp) = w
        .save(&w.state, org, body(SID2, TOKEN2, "+14155550111"))
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["vapiCredentialId"], "vapi-cred-1");
    assert_eq!(w.count("SELECT count(*) FROM org_credentials").await, 1);
    let (_, second, meta) = w.slot(org).await.unwrap();
    assert_eq!(meta["accountSid"], SID2);
    assert_ne!(first["ct"], second["ct"], "new ciphertext");
    assert_ne!(first["edk"], second["edk"], "new data key");
    assert_eq!(
        open_slot(&w, org, &second).await.unwrap()["authToken"],
        TOKEN2
    );
    // The PATCH body had no provider field (Vapi's update DTO has none).
    let patch = w
        .vapi
        .server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.method.as_str() == "PATCH")
        .unwrap();
    let sent: Value = serde_json::from_slice(&patch.body).unwrap();
    assert!(sent.get("provider").is_none(), "{sent}");
}

#[tokio::test]
async fn a_credential_vapi_lost_is_created_again() {
    let w = World::new().await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    w.twilio_accepts(SID, TOKEN).await;
    w.vapi_creates("vapi-cred-1", SID, TOKEN, org).await;
    assert_eq!(
        w.save(&w.state, org, body(SID, TOKEN, "+14155550100"))
            .await
            .0,
        200
    );
    w.vapi.server.reset().await;
    w.vapi
        .authed(Mock::given(method("PATCH")).and(path("/credential/vapi-cred-1")))
        .respond_with(FakeVapi::error(404, "Credential not found"))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    w.vapi_creates("vapi-cred-2", SID, TOKEN, org).await;
    let (status, resp) = w
        .save(&w.state, org, body(SID, TOKEN, "+14155550100"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(resp["vapiCredentialId"], "vapi-cred-2");
    assert_eq!(
        w.org_vapi_state(org).await.0.as_deref(),
        Some("vapi-cred-2")
    );
}

#[tokio::test]
async fn vapi_failing_keeps_the_save_and_a_later_save_repairs_it() {
    let w = World::new().await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    w.twilio_accepts(SID, TOKEN).await;
    // POST is never retried, even on a 500.
    w.vapi
        .authed(Mock::given(method("POST")).and(path("/credential")))
        .respond_with(FakeVapi::error(
            500,
            "Internal server error: db pool at 10.0.0.3 exhausted",
        ))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    let (status, resp) = w
        .save(&w.state, org, body(SID, TOKEN, "+14155550100"))
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp["vapi"],
        json!({"synced": false, "code": "vapi_unavailable"})
    );
    assert!(
        !resp.to_string().contains("10.0.0.3"),
        "never the provider's body"
    );
    assert!(resp["vapiCredentialId"].is_null());
    assert!(w.slot(org).await.is_some(), "the credential is saved");
    assert_eq!(
        w.org_vapi_state(org).await,
        (None, Some("vapi_unavailable".into()))
    );
    w.vapi.server.verify().await;

    w.vapi.server.reset().await;
    w.vapi_creates("vapi-cred-9", SID, TOKEN, org).await;
    let (status, resp) = w
        .save(&w.state, org, body(SID, TOKEN, "+14155550100"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(resp["vapi"], json!({"synced": true}));
    assert_eq!(
        w.org_vapi_state(org).await,
        (Some("vapi-cred-9".into()), None)
    );
}

#[tokio::test]
async fn a_failing_patch_is_retried_then_reported() {
    let w = World::new().await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    w.twilio_accepts(SID, TOKEN).await;
    w.vapi_creates("vapi-cred-1", SID, TOKEN, org).await;
    assert_eq!(
        w.save(&w.state, org, body(SID, TOKEN, "+14155550100"))
            .await
            .0,
        200
    );
    w.vapi
        .authed(Mock::given(method("PATCH")).and(path("/credential/vapi-cred-1")))
        .respond_with(FakeVapi::error(503, "Service Unavailable"))
        .expect(3)
        .mount(&w.vapi.server)
        .await;
    let (status, resp) = w
        .save(&w.state, org, body(SID, TOKEN, "+14155550100"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        resp["vapi"],
        json!({"synced": false, "code": "vapi_unavailable"})
    );
    assert_eq!(
        resp["vapiCredentialId"], "vapi-cred-1",
        "the known id is kept"
    );
    assert_eq!(
        w.org_vapi_state(org).await,
        (Some("vapi-cred-1".into()), Some("vapi_unavailable".into()))
    );
}

#[tokio::test]
async fn a_timed_out_create_is_not_retried() {
    let w = World::with_env(&[("PROVIDER_TIMEOUT_MS", "300")]).await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    w.twilio_accepts(SID, TOKEN).await;
    w.vapi
        .authed(Mock::given(method("POST")).and(path("/credential")))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": "late"}))
                .set_delay(Duration::from_secs(2)),
        )
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    let (status, resp) = w
        .save(&w.state, org, body(SID, TOKEN, "+14155550100"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        resp["vapi"],
        json!({"synced": false, "code": "vapi_timeout"})
    );
    assert!(w.slot(org).await.is_some());
}

#[tokio::test]
async fn twilio_rejecting_the_credentials_is_422_and_stores_nothing() {
    let w = World::new().await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    Mock::given(method("GET"))
        .and(path(format!("/Accounts/{SID}.json")))
        .and(basic_auth(SID, TOKEN))
        .respond_with(FakeTwilio::error(401, 20003, "Authenticate"))
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&w.vapi.server)
        .await;
    let (status, resp) = w
        .save(&w.state, org, body(SID, TOKEN, "+14155550100"))
        .await;
    assert_eq!(status, 422);
    assert_eq!(resp["error"]["code"], "twilio_rejected_credentials");
    assert_eq!(
        resp["error"]["message"],
        "Twilio rejected these credentials"
    );
    assert_eq!(w.t.dump().await, "", "nothing stored, not even the org");
}

#[tokio::test]
async fn an_inactive_twilio_account_is_422() {
    let w = World::new().await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    Mock::given(method("GET"))
        .and(path(format!("/Accounts/{SID}.json")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(FakeTwilio::account(SID, "suspended")),
        )
        .mount(&w.twilio.server)
        .await;
    let (status, resp) = w
        .save(&w.state, org, body(SID, TOKEN, "+14155550100"))
        .await;
    assert_eq!(status, 422);
    assert_eq!(resp["error"]["code"], "twilio_account_not_active");
    assert!(w.slot(org).await.is_none());
}

#[tokio::test]
async fn twilio_down_is_503_after_retries_and_stores_nothing() {
    let w = World::new().await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    Mock::given(method("GET"))
        .and(path(format!("/Accounts/{SID}.json")))
        .respond_with(FakeTwilio::error(503, 20503, "Service unavailable"))
        .expect(3)
        .mount(&w.twilio.server)
        .await;
    let (status, resp) = w
        .save(&w.state, org, body(SID, TOKEN, "+14155550100"))
        .await;
    assert_eq!(status, 503);
    assert_eq!(resp["error"]["code"], "twilio_unavailable");
    assert_eq!(w.t.dump().await, "");
}

#[tokio::test]
async fn twilio_rate_limit_then_success() {
    let w = World::new().await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    Mock::given(method("GET"))
        .and(path(format!("/Accounts/{SID}.json")))
        .respond_with(FakeTwilio::error(429, 20429, "Too Many Requests"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    w.twilio_accepts(SID, TOKEN).await;
    w.vapi_creates("vapi-cred-1", SID, TOKEN, org).await;
    assert_eq!(
        w.save(&w.state, org, body(SID, TOKEN, "+14155550100"))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn every_bad_input_is_4xx_and_changes_nothing() {
    let w = World::new().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&w.vapi.server)
        .await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&w.twilio.server)
        .await;
    let org = uuid::Uuid::new_v4().to_string();
    let ok = body(SID, TOKEN, "+14155550100");
    let base = || {
        ApiEvent::new("PUT", ROUTE, ROUTE)
            .caller(&org, "user-1")
            .scopes(&["telephony:write"])
    };
    let with = |patch: Value| {
        let mut b = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        base().json(&b)
    };
    let mut without_token = ok.clone();
    without_token.as_object_mut().unwrap().remove("authToken");
    let cases: Vec<(&str, ApiEvent, u16, &str)> = vec![
        (
            "malformed JSON",
            base()
                .header("content-type", "application/json")
                .body("{\"accountSid\":"),
            400,
            "malformed_json",
        ),
        (
            "not an object",
            base().json(&json!([1, 2])),
            400,
            "invalid_body",
        ),
        (
            "wrong type",
            with(json!({"phoneNumber": 14155550100u64})),
            400,
            "invalid_body",
        ),
        (
            "unknown field",
            with(json!({"orgId": "someone-else"})),
            400,
            "invalid_body",
        ),
        (
            "missing field",
            base().json(&without_token),
            400,
            "invalid_body",
        ),
        (
            "bad account SID",
            with(json!({"accountSid": "AC123"})),
            400,
            "invalid_body",
        ),
        (
            "PN as account SID",
            with(json!({"accountSid": "PN0123456789abcdef0123456789abcdef"})),
            400,
            "invalid_body",
        ),
        (
            "bad token",
            with(json!({"authToken": "not-a-token"})),
            400,
            "invalid_body",
        ),
        (
            "bad phone",
            with(json!({"phoneNumber": "4155550100"})),
            400,
            "invalid_body",
        ),
        (
            "null field",
            with(json!({"phoneNumber": null})),
            400,
            "invalid_body",
        ),
        (
            "oversized",
            base()
                .header("content-type", "application/json")
                .body(format!("{{\"x\":\"{}\"}}", "a".repeat(17 * 1024))),
            413,
            "payload_too_large",
        ),
        (
            "not JSON",
            base()
                .header("content-type", "application/x-www-form-urlencoded")
                .body("accountSid=AC"),
            415,
            "unsupported_media_type",
        ),
        (
            "query parameter",
            base().query("orgId=x").json(&ok),
            400,
            "unknown_query_parameter",
        ),
        (
            "no org claim",
            base().without_claim("org_id").json(&ok),
            401,
            "unauthenticated",
        ),
        (
            "malformed org claim",
            base().claim("org_id", "org-1").json(&ok),
            401,
            "unauthenticated",
        ),
        (
            "no write scope",
            base().scopes(&["telephony:read"]).json(&ok),
            403,
            "forbidden",
        ),
    ];
    for (what, ev, status, code) in cases {
        let (s, resp) = read_response(&handle(&w.state, ev.request()).await);
        assert_eq!(
            (s, resp["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {resp}"
        );
        assert!(!resp.to_string().contains(TOKEN), "{what} echoes the token");
    }
    assert_eq!(w.t.dump().await, "", "nothing stored");
}

#[tokio::test]
async fn the_token_is_nowhere_but_in_the_envelope() {
    let (logs, _guard) = testkit::logs::capture();
    let w = World::new().await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    w.twilio_accepts(SID, TOKEN).await;
    w.vapi_creates("vapi-cred-1", SID, TOKEN, org).await;
    assert_eq!(
        w.save(&w.state, org, body(SID, TOKEN, "+14155550100"))
            .await
            .0,
        200
    );
    // and a failing path too: Vapi rejects the PATCH.
    w.vapi
        .authed(Mock::given(method("PATCH")).and(path("/credential/vapi-cred-1")))
        .respond_with(FakeVapi::error(400, "authToken is invalid"))
        .mount(&w.vapi.server)
        .await;
    assert_eq!(
        w.save(&w.state, org, body(SID, TOKEN, "+14155550100"))
            .await
            .0,
        200
    );

    let dump = w.t.dump().await;
    assert!(dump.contains(SID), "the dump is real: {dump}");
    assert!(!dump.contains(TOKEN), "token stored in the clear");
    let text = logs.text();
    assert!(text.contains("provider call"), "logs were captured: {text}");
    for secret in [TOKEN, VAPI_KEY] {
        assert!(!text.contains(secret), "a secret reached the logs");
    }
    let calls: Vec<Value> = logs
        .lines()
        .into_iter()
        .filter(|l| l["message"] == "provider call")
        .collect();
    assert!(
        calls.iter().any(|l| l["provider"] == "vapi"
            && l["path"] == "/credential/{id}"
            && l["status"] == 400)
    );
    assert!(
        calls
            .iter()
            .all(|l| l["span"]["org_id"] == org.to_string().as_str())
    );
    let debug = format!(
        "{:?}",
        serde_json::from_value::<TwilioCredential>(body(SID, TOKEN, "+14155550100")).unwrap()
    );
    assert!(!debug.contains(TOKEN), "{debug}");
}

#[tokio::test]
async fn concurrent_saves_leave_the_database_and_vapi_agreeing() {
    let w = World::new().await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    Mock::given(method("GET"))
        .and(path_regex(r"^/Accounts/AC[0-9a-f]{32}\.json$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(FakeTwilio::account(SID, "active")))
        .mount(&w.twilio.server)
        .await;
    w.vapi_creates("vapi-cred-1", SID, TOKEN, org).await;
    assert_eq!(
        w.save(&w.state, org, body(SID, TOKEN, "+14155550100"))
            .await
            .0,
        200
    );
    w.vapi
        .authed(Mock::given(method("PATCH")).and(path("/credential/vapi-cred-1")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "vapi-cred-1"}))
                .set_delay(Duration::from_millis(150)),
        )
        .mount(&w.vapi.server)
        .await;
    // Six saves with different accounts from three instances at once.
    let instances = [
        w.second_instance().await,
        w.second_instance().await,
        w.second_instance().await,
    ];
    let sids: Vec<String> = (0..6).map(|i| format!("AC{i}{}", &SID[3..])).collect();
    let saves = sids.iter().enumerate().map(|(i, sid)| {
        let w = &w;
        let state = &instances[i % 3];
        async move {
            w.save(state, org, body(sid, TOKEN2, "+14155550100"))
                .await
                .0
        }
    });
    assert!(
        futures::future::join_all(saves)
            .await
            .iter()
            .all(|s| *s == 200)
    );
    let patches: Vec<Value> = w
        .vapi
        .server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(patches.len(), 6);
    let (_, _, meta) = w.slot(org).await.unwrap();
    assert_eq!(
        meta["accountSid"], patches[5]["accountSid"],
        "the last write at Vapi is the one in the database"
    );
    // The audit log's order is Vapi's order: saves were serialized, not interleaved.
    let audited: Vec<String> =
        w.t.client()
            .await
            .query("SELECT target FROM audit_log ORDER BY id OFFSET 1", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    let vapi_order: Vec<String> = patches
        .iter()
        .map(|p| p["accountSid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(audited, vapi_order);
}

#[tokio::test]
async fn the_managed_path_skips_twilio_and_shares_the_slot() {
    let w = World::new().await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    Mock::given(method("GET"))
        .and(path(format!("/Accounts/{SID2}.json")))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&w.twilio.server)
        .await;
    w.vapi_creates("vapi-cred-1", SID2, TOKEN2, org).await;
    let caller = shared::identity::Caller::from_claims(
        &[
            ("org_id".to_string(), org.to_string()),
            ("sub".to_string(), "provisioner".to_string()),
        ]
        .into_iter()
        .collect(),
        None,
        &Default::default(),
    )
    .unwrap();
    let cred: TwilioCredential =
        serde_json::from_value(body(SID2, TOKEN2, "+14155550122")).unwrap();
    let saved = w
        .state
        .store()
        .save(&caller, "req-managed", &cred, CredentialSource::Managed)
        .await
        .unwrap();
    assert_eq!(saved.source, CredentialSource::Managed);
    assert_eq!(w.slot(org).await.unwrap().0, "managed");
    w.twilio.server.verify().await;

    // The org then brings its own account: same slot, now BYOC.
    w.twilio_accepts(SID, TOKEN).await;
    w.vapi
        .authed(Mock::given(method("PATCH")).and(path("/credential/vapi-cred-1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "vapi-cred-1"})))
        .mount(&w.vapi.server)
        .await;
    assert_eq!(
        w.save(&w.state, org, body(SID, TOKEN, "+14155550100"))
            .await
            .0,
        200
    );
    assert_eq!(w.slot(org).await.unwrap().0, "byoc");
    assert_eq!(w.count("SELECT count(*) FROM org_credentials").await, 1);
}

#[tokio::test]
async fn a_rotated_vapi_key_is_fetched_again_once() {
    let aws = testkit::aws_config().await;
    let arn = testkit::put_secret(&aws, &json!({"privateKey": "old-vapi-key"})).await;
    let w = World::with_env(&[("VAPI_SECRET_ARN", arn.as_str())]).await;
    let org = OrgId::new(uuid::Uuid::new_v4());
    // Rotated after the instance started.
    aws_sdk_secretsmanager::Client::new(&aws)
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(json!({"privateKey": "new-vapi-key"}).to_string())
        .send()
        .await
        .unwrap();
    w.twilio_accepts(SID, TOKEN).await;
    Mock::given(method("POST"))
        .and(path("/credential"))
        .and(wiremock::matchers::bearer_token("old-vapi-key"))
        .respond_with(FakeVapi::error(
            401,
            "Invalid Key. Hot tip, make sure you're using the private key.",
        ))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/credential"))
        .and(wiremock::matchers::bearer_token("new-vapi-key"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "vapi-cred-1"})))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    let (status, resp) = w
        .save(&w.state, org, body(SID, TOKEN, "+14155550100"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(resp["vapi"], json!({"synced": true}));
}
