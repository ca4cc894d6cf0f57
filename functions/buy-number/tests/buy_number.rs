//! buy-number end to end: API Gateway events through the real handler, real
//! Postgres, KMS on the emulator, and Twilio and Vapi as wiremock servers that keep
//! what was bought and imported (a timed-out purchase really happened), asserting
//! every call sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use buy_number::{State, handle};
use serde_json::{Value, json};
use shared::config::Env;
use shared::ids::OrgId;
use testkit::TestDb;
use testkit::event::{ApiEvent, read_response};
use testkit::fakes::{FakeTwilio, FakeVapi, TWILIO_MAIN_SID, TWILIO_MAIN_TOKEN, VAPI_KEY};
use testkit::probe::PoolProbe;
use testkit::vapi_credentials::VapiCredentials;
use wiremock::matchers::{basic_auth, bearer_token, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

const ROUTE: &str = "/api/managed-telephony/numbers";
const SUB: &str = "AC5ab5ab5ab5ab5ab5ab5ab5ab5ab5ab5a";
const SUB_TOKEN: &str = "5ab70ce05ab70ce05ab70ce05ab70ce0";
const ASSISTANT: &str = "0d3e0000-0000-4000-8000-0000000000aa";
const NUMBER: &str = "+14155550150";

/// What Twilio and Vapi hold, and how they misbehave.
#[derive(Default)]
struct Held {
    subaccounts: Vec<String>,
    /// (subaccount, number, PN sid)
    bought: Vec<(String, String, String)>,
    /// (id, number, body)
    imported: Vec<(String, String, Value)>,
    /// Numbers Twilio no longer offers (21422).
    taken: Vec<String>,
    buy_delay: Duration,
    buy_fails_500: bool,
    /// Twilio's own refusal of the purchase: (status, code).
    buy_refused: Option<(u16, u32)>,
    subaccount_delay: Duration,
    subaccount_lookup_delay: Duration,
    /// The next `n` lookups of bought numbers miss (Twilio's read-after-write lag).
    lookup_lag: u32,
    import_answer: Option<ResponseTemplate>,
    import_delay: Duration,
    /// The next `n` reads of Vapi's phone-number list miss what was imported
    /// (Vapi's read-after-write lag).
    vapi_lookup_lag: u32,
    /// PATCH /phone-number/{id} bodies, in order.
    routed: Vec<(String, Value)>,
    /// ASSISTANT was deleted at Vapi (its GET is 404 from then on).
    assistant_deleted: bool,
    released: Vec<String>,
}

#[derive(Clone, Default)]
struct Providers {
    held: Arc<Mutex<Held>>,
    probe: Option<PoolProbe>,
}

impl Providers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap()
    }
}

fn form(req: &Request) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(&req.body).into_owned().collect()
}

impl Respond for Providers {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        if let Some(p) = &self.probe {
            p.sample();
        }
        let mut h = self.lock();
        let p = req.url.path().to_owned();
        let q: std::collections::HashMap<String, String> =
            req.url.query_pairs().into_owned().collect();
        match (req.method.as_str(), p.as_str()) {
            ("GET", "/Accounts.json") => {
                let accounts: Vec<Value> = h
                    .subaccounts
                    .iter()
                    .filter(|_| q.contains_key("FriendlyName"))
                    .map(|sid| json!({"sid": sid, "friendly_name": q["FriendlyName"], "status": "active", "auth_token": SUB_TOKEN}))
                    .collect();
                ResponseTemplate::new(200)
                    .set_body_json(json!({"accounts": accounts}))
                    .set_delay(h.subaccount_lookup_delay)
            }
            ("POST", "/Accounts.json") => {
                let f = form(req);
                assert!(f["FriendlyName"].len() <= 64);
                // The first is SUB; any later one another SID (a spare).
                let sid = if h.subaccounts.is_empty() {
                    SUB.to_owned()
                } else {
                    format!("AC{:0>32}", h.subaccounts.len())
                };
                h.subaccounts.push(sid.clone());
                ResponseTemplate::new(201)
                    .set_body_json(json!({
                        "sid": sid, "auth_token": SUB_TOKEN, "friendly_name": f["FriendlyName"], "status": "active"
                    }))
                    .set_delay(h.subaccount_delay)
            }
            ("GET", x)
                if x.starts_with("/Accounts/AC")
                    && x.ends_with(".json")
                    && x.matches('/').count() == 2 =>
            {
                let sid = x.trim_start_matches("/Accounts/").trim_end_matches(".json");
                ResponseTemplate::new(200)
                    .set_body_json(json!({"sid": sid, "auth_token": SUB_TOKEN, "status": "active"}))
            }
            ("POST", x) if x.ends_with("/IncomingPhoneNumbers.json") => {
                let sub = x
                    .trim_start_matches("/Accounts/")
                    .trim_end_matches("/IncomingPhoneNumbers.json")
                    .to_owned();
                let number = form(req)["PhoneNumber"].clone();
                // Not available: taken by another buyer, or already bought (also by us).
                if h.taken.contains(&number) || h.bought.iter().any(|(_, n, _)| *n == number) {
                    return FakeTwilio::error(400, 21422, "PhoneNumber is not available");
                }
                if let Some((status, code)) = h.buy_refused {
                    return FakeTwilio::error(status, code, "refused");
                }
                if h.buy_fails_500 {
                    return FakeTwilio::error(500, 20500, "Internal Server Error");
                }
                let sid = format!("PN{:0>32}", h.bought.len() + h.released.len() + 1);
                h.bought.push((sub.clone(), number.clone(), sid.clone()));
                ResponseTemplate::new(201)
                    .set_body_json(json!({"sid": sid, "account_sid": sub, "phone_number": number, "status": "in-use"}))
                    .set_delay(h.buy_delay)
            }
            ("GET", x) if x.ends_with("/IncomingPhoneNumbers.json") => {
                let sub = x
                    .trim_start_matches("/Accounts/")
                    .trim_end_matches("/IncomingPhoneNumbers.json")
                    .to_owned();
                if h.lookup_lag > 0 {
                    h.lookup_lag -= 1;
                    return ResponseTemplate::new(200)
                        .set_body_json(json!({"incoming_phone_numbers": []}));
                }
                let found: Vec<Value> = h
                    .bought
                    .iter()
                    .filter(|(s, n, _)| *s == sub && Some(n) == q.get("PhoneNumber"))
                    .map(|(_, n, sid)| json!({"sid": sid, "phone_number": n}))
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({"incoming_phone_numbers": found}))
            }
            ("DELETE", x) if x.contains("/IncomingPhoneNumbers/PN") => {
                let sid = x
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .trim_end_matches(".json")
                    .to_owned();
                h.bought.retain(|(_, _, s)| *s != sid);
                h.released.push(sid);
                ResponseTemplate::new(204)
            }
            ("GET", x) if x.starts_with("/assistant/") => {
                if x.ends_with(ASSISTANT) && !h.assistant_deleted {
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"id": ASSISTANT, "name": "Receptionist"}))
                } else {
                    FakeVapi::error(404, "Couldn't Get Assistant. `assistantId` 404 Not Found")
                }
            }
            ("POST", "/phone-number") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                if let Some(answer) = h.import_answer.take() {
                    return answer;
                }
                let id = format!("vapi-phone-{}", h.imported.len() + 1);
                h.imported.push((
                    id.clone(),
                    body["number"].as_str().unwrap().into(),
                    body.clone(),
                ));
                ResponseTemplate::new(201)
                    .set_body_json(vapi_number(&id, &body))
                    .set_delay(h.import_delay)
            }
            ("GET", "/phone-number") => {
                // Vapi's list: newest first, `createdAtGe` / `createdAtLe` bounds and
                // `limit` honoured, no other filter.
                if h.vapi_lookup_lag > 0 {
                    h.vapi_lookup_lag -= 1;
                    return ResponseTemplate::new(200).set_body_json(json!([]));
                }
                let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
                let all: Vec<Value> = h
                    .imported
                    .iter()
                    .rev()
                    .map(|(id, _, body)| vapi_number(id, body))
                    .filter(|n| {
                        let at = n["createdAt"].as_str().unwrap_or_default();
                        q.get("createdAtGe").is_none_or(|ge| at >= ge.as_str())
                            && q.get("createdAtLe").is_none_or(|le| at <= le.as_str())
                    })
                    .take(limit)
                    .collect();
                ResponseTemplate::new(200).set_body_json(all)
            }
            ("PATCH", x) if x.starts_with("/phone-number/") => {
                let id = x.trim_start_matches("/phone-number/").to_owned();
                let patch: Value = serde_json::from_slice(&req.body).unwrap();
                h.routed.push((id.clone(), patch.clone()));
                let Some((_, _, body)) = h.imported.iter_mut().find(|(i, _, _)| *i == id) else {
                    return FakeVapi::error(404, "Phone number not found");
                };
                for (k, v) in patch.as_object().unwrap() {
                    body[k] = v.clone();
                }
                let answer = vapi_number(&id, body);
                ResponseTemplate::new(200).set_body_json(answer)
            }
            ("DELETE", x) if x.starts_with("/phone-number/") => {
                let id = x.trim_start_matches("/phone-number/").to_owned();
                h.imported.retain(|(i, _, _)| *i != id);
                ResponseTemplate::new(200).set_body_json(json!({"id": id}))
            }
            other => panic!("unexpected provider call {other:?}"),
        }
    }
}

/// A Vapi phone number as its API answers one (the token left out).
fn vapi_number(id: &str, body: &Value) -> Value {
    json!({
        "id": id,
        "provider": "twilio",
        "number": body["number"],
        "twilioAccountSid": body["twilioAccountSid"],
        "assistantId": body.get("assistantId"),
        "name": body.get("name"),
        "createdAt": chrono_now(),
    })
}

fn chrono_now() -> String {
    // Vapi's form; a fixed recent time is enough for lookups bounded below by the
    // purchase's start minus five minutes.
    "2100-01-01T00:00:00.000Z".into()
}

struct World {
    t: TestDb,
    vapi: FakeVapi,
    twilio: FakeTwilio,
    aws: aws_config::SdkConfig,
    kms_key: String,
    state: State,
    providers: Providers,
    credentials: VapiCredentials,
}

async fn build_state(
    t: &TestDb,
    vapi: &FakeVapi,
    twilio: &FakeTwilio,
    aws: &aws_config::SdkConfig,
    kms_key: &str,
    extra: &[(&str, &str)],
) -> State {
    try_build_state(t, vapi, twilio, aws, kms_key, extra)
        .await
        .expect("state")
}

async fn try_build_state(
    t: &TestDb,
    vapi: &FakeVapi,
    twilio: &FakeTwilio,
    aws: &aws_config::SdkConfig,
    kms_key: &str,
    extra: &[(&str, &str)],
) -> Result<State, buy_number::Error> {
    let (url, v, tw) = (t.url(), vapi.uri(), twilio.uri());
    let mut pairs = vec![
        ("DATABASE_URL", url.as_str()),
        ("KEYRING", "kms"),
        ("KMS_KEY_ID", kms_key),
        ("VAPI_BASE_URL", v.as_str()),
        ("TWILIO_BASE_URL", tw.as_str()),
        ("VAPI_PRIVATE_KEY", VAPI_KEY),
        ("TWILIO_MAIN_ACCOUNT_SID", TWILIO_MAIN_SID),
        ("TWILIO_MAIN_AUTH_TOKEN", TWILIO_MAIN_TOKEN),
        (
            "TOKEN_FINGERPRINT_KEY",
            "buy-number-tests-token-fingerprint-key-0123",
        ),
        ("PROVIDER_TIMEOUT_MS", "1000"),
        ("PROVIDER_MIN_BACKOFF_MS", "10"),
        ("PROVIDER_MAX_BACKOFF_MS", "40"),
        ("STEPS_DEADLINE_MS", "8000"),
        ("CLAIM_SECS", "30"),
    ];
    pairs.extend_from_slice(extra);
    State::from_env(&Env::from_pairs(pairs), aws).await
}

impl World {
    async fn new() -> Self {
        Self::with_env(&[]).await
    }

    async fn with_env(extra: &[(&str, &str)]) -> Self {
        let t = TestDb::new().await;
        let aws = testkit::aws_config().await;
        let kms_key = testkit::kms_key(&aws).await;
        let (vapi, twilio) = (FakeVapi::start().await, FakeTwilio::start().await);
        let state = build_state(&t, &vapi, &twilio, &aws, &kms_key, extra).await;
        let probe = PoolProbe::new([state.db.clone()]);
        let providers = Providers {
            probe: Some(probe.clone()),
            ..Default::default()
        };
        // Twilio only as the platform's main account; Vapi only with its key.
        Mock::given(path_regex(r"^/Accounts"))
            .and(basic_auth(TWILIO_MAIN_SID, TWILIO_MAIN_TOKEN))
            .respond_with(providers.clone())
            .mount(&twilio.server)
            .await;
        Mock::given(path_regex(r"^/(phone-number|assistant/)"))
            .and(bearer_token(VAPI_KEY))
            .respond_with(providers.clone())
            .mount(&vapi.server)
            .await;
        let credentials = VapiCredentials::new().probed(probe);
        credentials.mount(&vapi).await;
        Self {
            t,
            vapi,
            twilio,
            aws,
            kms_key,
            state,
            providers,
            credentials,
        }
    }

    async fn another_instance(&self) -> State {
        self.another_instance_with(&[]).await
    }

    /// A second instance (its own pool) with `extra` settings.
    async fn another_instance_with(&self, extra: &[(&str, &str)]) -> State {
        build_state(
            &self.t,
            &self.vapi,
            &self.twilio,
            &self.aws,
            &self.kms_key,
            extra,
        )
        .await
    }

    fn event(&self, org: OrgId, body: &Value) -> ApiEvent {
        ApiEvent::new("POST", ROUTE, ROUTE)
            .caller(&org.to_string(), "user-1")
            .scopes(&["telephony:write"])
            .json(body)
    }

    async fn buy_with(&self, state: &State, org: OrgId, body: Value) -> (u16, Value) {
        read_response(&handle(state, self.event(org, &body).request()).await)
    }

    async fn buy(&self, org: OrgId, number: &str) -> (u16, Value) {
        self.buy_with(
            &self.state,
            org,
            json!({"phoneNumber": number, "assistantId": ASSISTANT, "name": "Front desk"}),
        )
        .await
    }

    async fn row(&self, number: &str) -> Option<Value> {
        self.t
            .client()
            .await
            .query_opt(
                "SELECT to_jsonb(n) FROM managed_phone_numbers n WHERE phone_number = $1 ORDER BY created_at DESC LIMIT 1",
                &[&number],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
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

    async fn calls(&self, server: &wiremock::MockServer, m: &str, p: &str) -> Vec<Request> {
        server
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.method.as_str() == m && r.url.path() == p)
            .collect()
    }

    /// release-number (and reconcile) on the same database and providers.
    async fn release_state(&self) -> release_number::State {
        self.release_state_with(&[]).await
    }

    async fn release_state_with(&self, extra: &[(&str, &str)]) -> release_number::State {
        let (url, v, tw) = (self.t.url(), self.vapi.uri(), self.twilio.uri());
        let mut pairs = vec![
            ("DATABASE_URL", url.as_str()),
            ("VAPI_BASE_URL", v.as_str()),
            ("TWILIO_BASE_URL", tw.as_str()),
            ("VAPI_PRIVATE_KEY", VAPI_KEY),
            ("TWILIO_MAIN_ACCOUNT_SID", TWILIO_MAIN_SID),
            ("TWILIO_MAIN_AUTH_TOKEN", TWILIO_MAIN_TOKEN),
        ];
        pairs.extend_from_slice(extra);
        release_number::State::from_env(&Env::from_pairs(pairs), &self.aws)
            .await
            .expect("release state")
    }

    /// Make the org's claim look abandoned (its instance was killed).
    async fn expire_claims(&self) {
        self.t
            .client()
            .await
            .execute(
                "UPDATE managed_phone_numbers SET claimed_until = now() - interval '1 second',
                        next_attempt_at = now() - interval '1 second', updated_at = now() - interval '1 minute'
                  WHERE status = 'provisioning'",
                &[],
            )
            .await
            .unwrap();
    }
}

fn new_org() -> OrgId {
    OrgId::new(uuid::Uuid::new_v4())
}

#[tokio::test]
async fn a_first_purchase_creates_the_subaccount_fills_the_slot_buys_imports_and_routes() {
    let (logs, _guard) = testkit::logs::capture();
    let w = World::new().await;
    let org = new_org();
    let (status, body) = w.buy(org, NUMBER).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(body["phoneNumber"], NUMBER);
    assert_eq!(body["assistantId"], ASSISTANT);
    assert_eq!(body["name"], "Front desk");
    assert_eq!(body["vapiPhoneId"], "vapi-phone-1");
    let pn = body["twilioPhoneSid"].as_str().unwrap().to_owned();

    // Twilio: looked the subaccount up by name, created it, bought exactly the number on it.
    let looked = w.calls(&w.twilio.server, "GET", "/Accounts.json").await;
    assert_eq!(looked.len(), 1);
    let q: Vec<(String, String)> = looked[0].url.query_pairs().into_owned().collect();
    assert!(
        q.contains(&("FriendlyName".into(), format!("org:{org}"))),
        "{q:?}"
    );
    assert!(q.contains(&("Status".into(), "active".into())));
    assert_eq!(
        w.calls(&w.twilio.server, "POST", "/Accounts.json")
            .await
            .len(),
        1
    );
    let buys = w
        .calls(
            &w.twilio.server,
            "POST",
            &format!("/Accounts/{SUB}/IncomingPhoneNumbers.json"),
        )
        .await;
    assert_eq!(buys.len(), 1);
    let f = form(&buys[0]);
    assert_eq!(f["PhoneNumber"], NUMBER);
    let row = w.row(NUMBER).await.unwrap();
    assert_eq!(
        f["FriendlyName"],
        format!("purchase {}", row["operation_id"].as_str().unwrap())
    );
    // Vapi: imported with the subaccount's credentials, the assistant and the name.
    let imports = w.calls(&w.vapi.server, "POST", "/phone-number").await;
    assert_eq!(imports.len(), 1);
    let sent: Value = serde_json::from_slice(&imports[0].body).unwrap();
    assert_eq!(
        sent,
        json!({"provider": "twilio", "number": NUMBER, "twilioAccountSid": SUB,
               "twilioAuthToken": SUB_TOKEN, "assistantId": ASSISTANT, "name": "Front desk",
               "smsEnabled": true})
    );
    // The slot holds the subaccount, mirrored to Vapi as the org's credential.
    let held = w.credentials.held();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].account_sid.as_str(), held[0].auth_token.as_str()),
        (SUB, SUB_TOKEN)
    );
    assert_eq!(held[0].name.as_deref(), Some(format!("org-{org}").as_str()));
    let slot: (String, Value) = {
        let r =
            w.t.client()
                .await
                .query_one(
                    "SELECT source, metadata FROM org_credentials WHERE org_id = $1",
                    &[&org.as_uuid()],
                )
                .await
                .unwrap();
        (r.get(0), r.get(1))
    };
    // With the keyed fingerprint of the token (never the token): how a token
    // rotated elsewhere is noticed by the next purchase.
    let fp = slot.1["tokenFingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(fp.len(), 64, "{slot:?}");
    assert!(!slot.1.to_string().contains(SUB_TOKEN));
    assert_eq!(
        slot,
        (
            "managed".into(),
            json!({"accountSid": SUB, "phoneNumber": NUMBER, "tokenFingerprint": fp})
        )
    );
    // The database: active, both SIDs, routed to the assistant, audited; the import
    // carries the token whose fingerprint the slot keeps.
    assert_eq!(row["status"], "active");
    assert_eq!(row["twilio_token_fp"], fp.as_str());
    assert_eq!(row["twilio_phone_sid"], pn.as_str());
    assert_eq!(row["twilio_subaccount_sid"], SUB);
    assert_eq!(row["assistant_id"], ASSISTANT);
    let routed: String = w
        .t
        .client()
        .await
        .query_one(
            "SELECT vapi_assistant_id FROM phone_number_mapping WHERE inbound_phone_number = $1",
            &[&NUMBER],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(routed, ASSISTANT);
    assert_eq!(
        w.count("SELECT count(*) FROM audit_log WHERE action = 'number.purchase'")
            .await,
        2,
        "requested, active"
    );
    let sub_on_org: Option<String> =
        w.t.client()
            .await
            .query_one(
                "SELECT twilio_subaccount_sid FROM organizations WHERE id = $1",
                &[&org.as_uuid()],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(sub_on_org.as_deref(), Some(SUB));
    // The subaccount's token reached Twilio-side calls and Vapi only: never a log
    // line, the database in the clear, or the answer.
    assert!(!body.to_string().contains(SUB_TOKEN));
    assert!(!w.t.dump().await.contains(SUB_TOKEN));
    assert!(
        !logs.text().contains(SUB_TOKEN),
        "the subaccount token reached the logs"
    );
    assert!(logs.text().contains("provider call"));

    // A second purchase: the subaccount is known (its token read back), the slot is
    // already it, so only the purchase and the import happen.
    let (status, body) = w.buy(org, "+14155550151").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        w.calls(&w.twilio.server, "POST", "/Accounts.json")
            .await
            .len(),
        1
    );
    assert_eq!(
        w.calls(&w.twilio.server, "GET", "/Accounts.json")
            .await
            .len(),
        1
    );
    assert_eq!(
        w.calls(&w.twilio.server, "GET", &format!("/Accounts/{SUB}.json"))
            .await
            .len(),
        1
    );
    assert_eq!(w.credentials.held().len(), 1, "no second Vapi credential");
}

#[tokio::test]
async fn no_connection_is_held_while_a_provider_is_called() {
    let w = World::new().await;
    assert_eq!(w.buy(new_org(), NUMBER).await.0, 201);
    let probe = w.providers.probe.clone().unwrap();
    let samples = probe.samples();
    assert!(samples.len() >= 5, "{samples:?}");
    assert!(samples.iter().all(|n| *n == 0), "{samples:?}");
}

#[tokio::test]
async fn repeating_a_finished_purchase_answers_200_and_calls_nothing() {
    let w = World::new().await;
    let org = new_org();
    assert_eq!(w.buy(org, NUMBER).await.0, 201);
    let before = w.twilio.server.received_requests().await.unwrap().len()
        + w.vapi.server.received_requests().await.unwrap().len();
    let (status, body) = w.buy(org, NUMBER).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("active")),
        "{body}"
    );
    let after = w.twilio.server.received_requests().await.unwrap().len()
        + w.vapi.server.received_requests().await.unwrap().len();
    assert_eq!(before, after);
}

#[tokio::test]
async fn a_byoc_org_gets_409_and_nothing_happens() {
    let w = World::new().await;
    let org = new_org();
    w.t.client()
        .await
        .batch_execute(&format!(
            "INSERT INTO organizations (id) VALUES ('{org}');
             INSERT INTO org_credentials (org_id, provider, source, encrypted_config, metadata)
             VALUES ('{org}', 'twilio', 'byoc', '{{\"v\":1,\"kid\":\"k\",\"edk\":\"e\",\"iv\":\"i\",\"ct\":\"c\"}}', '{{}}')"
        ))
        .await
        .unwrap();
    let (status, body) = w.buy(org, NUMBER).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("byoc_in_use")),
        "{body}"
    );
    assert!(w.row(NUMBER).await.is_none());
    assert!(
        w.twilio
            .server
            .received_requests()
            .await
            .unwrap()
            .is_empty()
    );
    assert!(w.vapi.server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn another_orgs_number_is_409_and_calls_nothing() {
    let w = World::new().await;
    let other = w.t.org().await;
    w.t.managed_number(other, NUMBER, Some("vapi-x")).await;
    let (status, body) = w.buy(new_org(), NUMBER).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("number_taken")),
        "{body}"
    );
    assert!(
        w.twilio
            .server
            .received_requests()
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn two_orgs_buying_one_number_from_two_instances_buy_it_once() {
    let w = World::new().await;
    let b = w.another_instance().await;
    w.providers.lock().buy_delay = Duration::from_millis(200);
    let (x, y) = tokio::join!(
        w.buy_with(&w.state, new_org(), json!({"phoneNumber": NUMBER})),
        w.buy_with(&b, new_org(), json!({"phoneNumber": NUMBER})),
    );
    let mut statuses = [x.0, y.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{x:?} {y:?}");
    let loser = if x.0 == 409 { &x.1 } else { &y.1 };
    assert_eq!(loser["error"]["code"], "number_taken");
    assert_eq!(w.providers.lock().bought.len(), 1, "bought once");
    assert_eq!(
        w.count("SELECT count(*) FROM managed_phone_numbers").await,
        1
    );
}

#[tokio::test]
async fn one_org_buying_twice_at_once_buys_once() {
    let w = World::new().await;
    let b = w.another_instance().await;
    w.providers.lock().buy_delay = Duration::from_millis(300);
    let org = new_org();
    let (x, y) = tokio::join!(
        w.buy_with(&w.state, org, json!({"phoneNumber": NUMBER})),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            w.buy_with(&b, org, json!({"phoneNumber": NUMBER})).await
        }
    );
    let mut got = [(x.0, x.1["status"].clone()), (y.0, y.1["status"].clone())];
    got.sort_by_key(|g| g.0);
    assert_eq!(
        got,
        [(201, json!("active")), (202, json!("provisioning"))],
        "{x:?} {y:?}"
    );
    assert_eq!(w.providers.lock().bought.len(), 1);
}

#[tokio::test]
async fn a_number_taken_in_between_is_409_and_leaves_nothing() {
    let w = World::new().await;
    w.providers.lock().taken.push(NUMBER.into());
    let (status, body) = w.buy(new_org(), NUMBER).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("number_unavailable")),
        "{body}"
    );
    assert!(w.row(NUMBER).await.is_none(), "the intent is closed");
    assert!(
        w.calls(&w.vapi.server, "POST", "/phone-number")
            .await
            .is_empty()
    );
    assert_eq!(
        w.count("SELECT count(*) FROM audit_log WHERE action = 'number.purchase' AND outcome = 'refused'").await,
        1
    );
}

#[tokio::test]
async fn a_purchase_that_timed_out_after_twilio_bought_is_adopted() {
    let w = World::new().await;
    // Twilio buys the number but answers after the client gave up.
    w.providers.lock().buy_delay = Duration::from_secs(3);
    let (status, body) = w.buy(new_org(), NUMBER).await;
    assert_eq!(status, 201, "{body}");
    let buys = w
        .calls(
            &w.twilio.server,
            "POST",
            &format!("/Accounts/{SUB}/IncomingPhoneNumbers.json"),
        )
        .await;
    assert_eq!(buys.len(), 1, "never bought twice");
    let lookups = w
        .calls(
            &w.twilio.server,
            "GET",
            &format!("/Accounts/{SUB}/IncomingPhoneNumbers.json"),
        )
        .await;
    assert_eq!(lookups.len(), 1);
    assert_eq!(w.providers.lock().bought.len(), 1);
    assert_eq!(
        body["twilioPhoneSid"],
        w.providers.lock().bought[0].2.as_str()
    );
}

#[tokio::test]
async fn twilio_failing_leaves_it_provisioning_and_a_repeat_finishes_it() {
    let w = World::new().await;
    let org = new_org();
    w.providers.lock().buy_fails_500 = true;
    let (status, body) = w.buy(org, NUMBER).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "provisioning");
    assert_eq!(body["pending"], json!(["twilio", "vapi"]));
    assert_eq!(body["errors"], json!({"twilio": "twilio_unavailable"}));
    let row = w.row(NUMBER).await.unwrap();
    assert_eq!(row["status"], "provisioning");
    // A 500 may have bought (the lookup did not find it yet): the claim stays
    // until it expires, so no copy of the purchase is sent while one may land.
    assert!(!row["claim_token"].is_null(), "the claim is kept");
    // The status route shows it.
    let list = list_numbers::State::from_env(
        &Env::from_pairs([("DATABASE_URL", w.t.url().as_str())]),
        &w.aws,
    )
    .await
    .unwrap();
    let ev = ApiEvent::new(
        "GET",
        "/api/managed-telephony/status",
        "/api/managed-telephony/status",
    )
    .caller(&org.to_string(), "user-1")
    .scopes(&["telephony:read"]);
    let (_, listed) = read_response(&list_numbers::handle(&list, ev.request()).await);
    let n = &listed["numbers"][0];
    assert_eq!(n["status"], "provisioning");
    assert_eq!(n["purchase"]["pending"], json!(["twilio", "vapi"]));
    assert_eq!(
        n["purchase"]["errors"],
        json!({"twilio": "twilio_unavailable"})
    );
    assert!(n["twilioPhoneSid"].is_null());

    w.providers.lock().buy_fails_500 = false;
    let (status, body) = w.buy(org, NUMBER).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("provisioning")),
        "held while a late copy may land: {body}"
    );
    w.expire_claims().await;
    let (status, body) = w.buy(org, NUMBER).await;
    assert_eq!(status, 201, "{body}");
    // The resumed purchase looked before buying.
    let path = format!("/Accounts/{SUB}/IncomingPhoneNumbers.json");
    assert_eq!(
        w.calls(&w.twilio.server, "GET", &path).await.len(),
        2,
        "after the 500, and on resume"
    );
    assert_eq!(w.providers.lock().bought.len(), 1);
}

#[tokio::test]
async fn vapi_refusing_the_import_releases_what_was_bought() {
    let w = World::new().await;
    let org = new_org();
    w.providers.lock().import_answer = Some(FakeVapi::error(400, "twilioAuthToken is invalid"));
    let (status, body) = w.buy(org, NUMBER).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("vapi_refused_import")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("was released"),
        "{body}"
    );
    {
        let h = w.providers.lock();
        assert!(h.bought.is_empty(), "released at Twilio");
        assert_eq!(h.released.len(), 1);
    }
    let row = w.row(NUMBER).await.unwrap();
    assert_eq!(row["status"], "released");
    assert_eq!(
        w.count("SELECT count(*) FROM phone_number_mapping").await,
        0
    );
    // And the number can be bought again.
    let (status, _) = w.buy(org, NUMBER).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn an_import_without_an_answer_is_found_at_vapi_and_adopted() {
    let w = World::new().await;
    w.providers.lock().import_delay = Duration::from_secs(3);
    let (status, body) = w.buy(new_org(), NUMBER).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        w.calls(&w.vapi.server, "POST", "/phone-number").await.len(),
        1,
        "never imported twice"
    );
    assert_eq!(
        w.calls(&w.vapi.server, "GET", "/phone-number").await.len(),
        1
    );
    assert_eq!(body["vapiPhoneId"], "vapi-phone-1");
}

#[tokio::test]
async fn a_purchase_left_by_a_killed_instance_is_finished_by_reconcile() {
    let w = World::new().await;
    let org = new_org();
    // The instance died after buying (stamped) and before importing.
    w.providers.lock().import_answer = Some(FakeVapi::error(503, "Service Unavailable"));
    let (status, _) = w.buy(org, NUMBER).await;
    assert_eq!(status, 202);
    w.expire_claims().await;
    let release = w.release_state().await;
    let report = release
        .release
        .reconcile(10, "reconcile", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(
        (report.purchases.claimed, report.purchases.activated),
        (1, 1),
        "{report:?}"
    );
    let row = w.row(NUMBER).await.unwrap();
    assert_eq!(row["status"], "active");
    assert_eq!(w.providers.lock().bought.len(), 1);
    assert_eq!(w.providers.lock().imported.len(), 1);
    // Vapi was looked at after the 503, and again by reconcile before importing.
    assert_eq!(
        w.calls(&w.vapi.server, "GET", "/phone-number").await.len(),
        2
    );
    let actor: String =
        w.t.client()
            .await
            .query_one("SELECT actor FROM audit_log WHERE outcome = 'active'", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(actor, "system:reconcile");
    assert_eq!(report.at_risk.stuck_purchases, 0);
}

#[tokio::test]
async fn every_bad_input_is_4xx_and_changes_nothing() {
    let w = World::new().await;
    let org = new_org();
    let base = || {
        ApiEvent::new("POST", ROUTE, ROUTE)
            .caller(&org.to_string(), "user-1")
            .scopes(&["telephony:write"])
    };
    let cases: Vec<(&str, ApiEvent, u16, &str)> = vec![
        (
            "malformed JSON",
            base()
                .header("content-type", "application/json")
                .body("{\"phoneNumber\":"),
            400,
            "malformed_json",
        ),
        (
            "unknown field",
            base().json(&json!({"phoneNumber": NUMBER, "orgId": "x"})),
            400,
            "invalid_body",
        ),
        (
            "missing number",
            base().json(&json!({"assistantId": ASSISTANT})),
            400,
            "invalid_body",
        ),
        (
            "bad number",
            base().json(&json!({"phoneNumber": "4155550150"})),
            400,
            "invalid_body",
        ),
        (
            "number as integer",
            base().json(&json!({"phoneNumber": 14155550150u64})),
            400,
            "invalid_body",
        ),
        (
            "bad assistant",
            base().json(&json!({"phoneNumber": NUMBER, "assistantId": "asst_1"})),
            400,
            "invalid_body",
        ),
        (
            "long name",
            base().json(&json!({"phoneNumber": NUMBER, "name": "n".repeat(41)})),
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
            "query parameter",
            base().query("org=x").json(&json!({"phoneNumber": NUMBER})),
            400,
            "unknown_query_parameter",
        ),
        (
            "no scope",
            base()
                .scopes(&["telephony:read"])
                .json(&json!({"phoneNumber": NUMBER})),
            403,
            "forbidden",
        ),
        (
            "no org claim",
            base()
                .without_claim("org_id")
                .json(&json!({"phoneNumber": NUMBER})),
            401,
            "unauthenticated",
        ),
        (
            "unrecordable sub",
            base()
                .claim("sub", &"u".repeat(300))
                .json(&json!({"phoneNumber": NUMBER})),
            401,
            "unrecordable_subject",
        ),
    ];
    for (what, ev, status, code) in cases {
        let (s, body) = read_response(&handle(&w.state, ev.request()).await);
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {body}"
        );
    }
    assert_eq!(w.t.dump().await, "", "nothing stored");
    assert!(
        w.twilio
            .server
            .received_requests()
            .await
            .unwrap()
            .is_empty()
    );
    assert!(w.vapi.server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_subaccount_created_without_an_answer_is_found_by_name_and_adopted() {
    let w = World::new().await;
    w.providers.lock().subaccount_delay = Duration::from_secs(3);
    let (status, body) = w.buy(new_org(), NUMBER).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        w.calls(&w.twilio.server, "POST", "/Accounts.json")
            .await
            .len(),
        1,
        "never created twice"
    );
    assert_eq!(
        w.calls(&w.twilio.server, "GET", "/Accounts.json")
            .await
            .len(),
        2,
        "before, and after the timeout"
    );
    assert_eq!(w.providers.lock().subaccounts.len(), 1);
}

#[tokio::test]
async fn twilio_refusals_close_the_intent_with_their_own_answer() {
    for ((status, code), answer, api_code) in [
        ((400, 21421), 422, "invalid_phone_number"),
        ((400, 21631), 422, "address_required"),
        ((400, 21610), 422, "twilio_refused_purchase"),
        ((403, 10002), 503, "purchasing_unavailable"),
    ] {
        let w = World::new().await;
        w.providers.lock().buy_refused = Some((status, code));
        let (s, body) = w.buy(new_org(), NUMBER).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (answer, Some(api_code)),
            "{code}: {body}"
        );
        assert!(
            w.row(NUMBER).await.is_none(),
            "{code}: the intent is closed"
        );
        assert!(
            w.calls(&w.vapi.server, "POST", "/phone-number")
                .await
                .is_empty()
        );
    }
}

#[tokio::test]
async fn releasing_a_number_still_being_bought_is_409() {
    let w = World::new().await;
    let org = new_org();
    w.providers.lock().buy_fails_500 = true;
    assert_eq!(w.buy(org, NUMBER).await.0, 202);
    let release = w.release_state().await;
    let ev = ApiEvent::new(
        "DELETE",
        "/api/managed-telephony/numbers/{phoneNumber}",
        "/api/managed-telephony/numbers/x",
    )
    .caller(&org.to_string(), "user-1")
    .scopes(&["telephony:write"])
    .path_parameter("phoneNumber", NUMBER);
    let (status, body) = read_response(&release_number::handle(&release, ev.request()).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("purchase_in_progress")),
        "{body}"
    );
    assert_eq!(w.row(NUMBER).await.unwrap()["status"], "provisioning");
}

#[tokio::test]
async fn a_purchase_failing_too_often_after_buying_is_undone_and_released() {
    let w = World::with_env(&[("RECONCILE_MAX_ATTEMPTS", "2")]).await;
    let org = new_org();
    w.providers.lock().import_answer = Some(FakeVapi::error(503, "Service Unavailable"));
    let (status, _) = w.buy(org, NUMBER).await;
    assert_eq!(status, 202);
    assert_eq!(
        w.providers.lock().bought.len(),
        1,
        "bought on the first attempt"
    );
    // A user repeating the request during the outage never gives it up.
    for _ in 0..3 {
        w.providers.lock().import_answer = Some(FakeVapi::error(503, "Service Unavailable"));
        assert_eq!(w.buy(org, NUMBER).await.0, 202);
    }
    assert_eq!(w.providers.lock().bought.len(), 1, "still held");
    // Reconcile, after its backoff, does: its last attempt (the second) meets the
    // 503 again, an import whose outcome is unknown, so it keeps the claim while a
    // late copy may land; the next run sends nothing new, looks the import up and
    // gives up: what was bought is released.
    let reconcile = w
        .release_state_with(&[("RECONCILE_MAX_ATTEMPTS", "2")])
        .await;
    w.providers.lock().import_answer = Some(FakeVapi::error(503, "Service Unavailable"));
    w.expire_claims().await;
    let report = reconcile
        .release
        .reconcile(10, "reconcile", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(
        (report.purchases.claimed, report.purchases.still_pending),
        (1, 1),
        "{report:?}"
    );
    let imports = w.calls(&w.vapi.server, "POST", "/phone-number").await.len();
    w.expire_claims().await;
    let report = reconcile
        .release
        .reconcile(10, "reconcile", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(
        (report.purchases.claimed, report.purchases.undone),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(
        w.calls(&w.vapi.server, "POST", "/phone-number").await.len(),
        imports,
        "giving up sends no import"
    );
    assert!(
        w.providers.lock().bought.is_empty(),
        "what was bought is released"
    );
    assert_eq!(w.row(NUMBER).await.unwrap()["status"], "released");
}

#[tokio::test]
async fn an_assistant_vapi_does_not_know_is_422_before_anything_is_bought() {
    let w = World::new().await;
    let (status, body) = w
        .buy_with(
            &w.state,
            new_org(),
            json!({"phoneNumber": NUMBER, "assistantId": "0d3e0000-0000-4000-8000-0000000000ff"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("unknown_assistant")),
        "{body}"
    );
    assert!(w.providers.lock().bought.is_empty(), "nothing bought");
    assert!(w.row(NUMBER).await.is_none());
}

#[tokio::test]
async fn a_purchase_landing_late_is_never_forgotten() {
    let w = World::new().await;
    let org = new_org();
    // Twilio buys, answers after the client gave up, and its lookups lag twice.
    {
        let mut h = w.providers.lock();
        h.buy_delay = Duration::from_secs(3);
        h.lookup_lag = 2;
    }
    let (status, body) = w.buy(org, NUMBER).await;
    assert_eq!(status, 202, "{body}");
    w.providers.lock().buy_delay = Duration::ZERO;
    // A late copy may still land: the claim is kept, and a repeat meanwhile sends
    // nothing.
    let buys = || async {
        w.calls(
            &w.twilio.server,
            "POST",
            &format!("/Accounts/{SUB}/IncomingPhoneNumbers.json"),
        )
        .await
        .len()
    };
    assert!(!w.row(NUMBER).await.unwrap()["claim_token"].is_null());
    let (status, body) = w.buy(org, NUMBER).await;
    assert_eq!((status, body["errors"].clone()), (202, json!({})), "{body}");
    assert_eq!(buys().await, 1);
    // Once the claim expired, the repeat looks (lag: nothing), buys again, and
    // Twilio says "not available" — it is ours: the intent stays, it is not closed.
    w.expire_claims().await;
    let (status, body) = w.buy(org, NUMBER).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["errors"], json!({"twilio": "twilio_rejected"}));
    assert_eq!(w.row(NUMBER).await.unwrap()["status"], "provisioning");
    // Now the lookup sees it: adopted, imported, active. Bought once.
    let (status, body) = w.buy(org, NUMBER).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(w.providers.lock().bought.len(), 1);
}

#[tokio::test]
async fn two_first_purchases_of_one_org_end_on_one_subaccount() {
    let w = World::new().await;
    let b = w.another_instance().await;
    let org = new_org();
    {
        let mut h = w.providers.lock();
        h.subaccount_delay = Duration::from_millis(300);
        h.subaccount_lookup_delay = Duration::from_millis(300);
    }
    let (x, y) = tokio::join!(
        w.buy_with(&w.state, org, json!({"phoneNumber": NUMBER})),
        w.buy_with(&b, org, json!({"phoneNumber": "+14155550151"})),
    );
    assert_eq!((x.0, y.0), (201, 201), "{x:?} {y:?}");
    assert_eq!(w.providers.lock().subaccounts.len(), 2, "both created one");
    let subs: Vec<String> =
        w.t.client()
            .await
            .query(
                "SELECT DISTINCT twilio_subaccount_sid FROM managed_phone_numbers",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    let on_org: String =
        w.t.client()
            .await
            .query_one(
                "SELECT twilio_subaccount_sid FROM organizations WHERE id = $1",
                &[&org.as_uuid()],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(
        subs,
        vec![on_org.clone()],
        "both numbers on the org's one subaccount"
    );
    assert!(
        w.providers
            .lock()
            .bought
            .iter()
            .all(|(s, _, _)| *s == on_org)
    );
}

/// All the requests Twilio and Vapi received so far.
async fn provider_requests(w: &World) -> usize {
    w.twilio.server.received_requests().await.unwrap().len()
        + w.vapi.server.received_requests().await.unwrap().len()
}

/// The org's purchase, refused by the daily limit: the 429, its message and
/// `Retry-After` (seconds).
async fn refused_by_the_limit(w: &World, state: &State, org: OrgId, number: &str) -> (Value, u64) {
    let body = json!({"phoneNumber": number, "assistantId": ASSISTANT});
    let resp = handle(state, w.event(org, &body).request()).await;
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (status, body) = read_response(&resp);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("purchase_limit_reached")),
        "{number}: {body}"
    );
    let retry_after = retry_after.unwrap_or_else(|| panic!("no Retry-After: {:?}", resp.headers()));
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    (body, retry_after)
}

#[tokio::test]
async fn the_purchase_over_the_orgs_daily_limit_is_429_and_nothing_happens() {
    let w = World::with_env(&[("PURCHASES_PER_ORG_PER_DAY", "2")]).await;
    let org = new_org();
    assert_eq!(w.buy(org, NUMBER).await.0, 201);
    assert_eq!(w.buy(org, "+14155550151").await.0, 201);

    let (db_before, calls_before) = (w.t.dump().await, provider_requests(&w).await);
    let (body, retry_after) = refused_by_the_limit(&w, &w.state, org, "+14155550152").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("limit of 2 numbers in the last 24 hours"),
        "{message}"
    );
    assert!(
        message.contains("the next purchase is possible from 20"),
        "{message}"
    );
    assert!(message.contains("Nothing was bought"), "{message}");
    // The first of the two leaves the window in 24 hours from its purchase: now.
    assert!(retry_after > 86_400 - 120, "{retry_after}");
    assert_eq!(
        provider_requests(&w).await,
        calls_before,
        "no provider called"
    );
    assert!(w.row("+14155550152").await.is_none(), "no row");
    assert_eq!(
        w.t.dump().await,
        db_before,
        "nothing recorded, nothing audited"
    );

    // Another org has its own limit.
    assert_eq!(w.buy(new_org(), "+14155550152").await.0, 201);

    // A rolling window: once the first purchase is 24 hours old, one more passes,
    // and the next is refused until the second one leaves the window.
    w.t.client()
        .await
        .execute(
            "UPDATE managed_phone_numbers SET created_at = now() - interval '24 hours 1 minute'
              WHERE phone_number = $1",
            &[&NUMBER],
        )
        .await
        .unwrap();
    assert_eq!(w.buy(org, "+14155550153").await.0, 201);
    w.t.client()
        .await
        .execute(
            "UPDATE managed_phone_numbers SET created_at = now() - interval '23 hours'
              WHERE phone_number = '+14155550151'",
            &[],
        )
        .await
        .unwrap();
    let (_, retry_after) = refused_by_the_limit(&w, &w.state, org, "+14155550154").await;
    assert!(
        (3600 - 120..=3600).contains(&retry_after),
        "the second purchase leaves the window in an hour: {retry_after}"
    );
}

#[tokio::test]
async fn a_released_number_still_counts_toward_the_limit() {
    let w = World::with_env(&[("PURCHASES_PER_ORG_PER_DAY", "1")]).await;
    let org = new_org();
    assert_eq!(w.buy(org, NUMBER).await.0, 201);
    let release = w.release_state().await;
    let ev = ApiEvent::new(
        "DELETE",
        "/api/managed-telephony/numbers/{phoneNumber}",
        "/api/managed-telephony/numbers/x",
    )
    .caller(&org.to_string(), "user-1")
    .scopes(&["telephony:write"])
    .path_parameter("phoneNumber", NUMBER);
    let (status, body) = read_response(&release_number::handle(&release, ev.request()).await);
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("released")),
        "{body}"
    );
    assert_eq!(w.row(NUMBER).await.unwrap()["status"], "released");

    let calls_before = provider_requests(&w).await;
    refused_by_the_limit(&w, &w.state, org, "+14155550151").await;
    // Buying the released number again is a new purchase too.
    refused_by_the_limit(&w, &w.state, org, NUMBER).await;
    assert_eq!(provider_requests(&w).await, calls_before);
    assert_eq!(
        w.count("SELECT count(*) FROM managed_phone_numbers").await,
        1,
        "only the released row"
    );
}

#[tokio::test]
async fn a_repeat_of_a_purchase_made_or_in_progress_is_not_refused_by_the_limit() {
    let w = World::with_env(&[("PURCHASES_PER_ORG_PER_DAY", "1")]).await;
    // Made: the repeat answers 200 as before.
    let org = new_org();
    assert_eq!(w.buy(org, NUMBER).await.0, 201);
    let (status, body) = w.buy(org, NUMBER).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("active")),
        "{body}"
    );
    refused_by_the_limit(&w, &w.state, org, "+14155550152").await;

    // In progress: it counts against a new purchase, and its repeat finishes it.
    let other = new_org();
    w.providers.lock().buy_fails_500 = true;
    assert_eq!(w.buy(other, "+14155550151").await.0, 202);
    refused_by_the_limit(&w, &w.state, other, "+14155550152").await;
    w.providers.lock().buy_fails_500 = false;
    w.expire_claims().await;
    let (status, body) = w.buy(other, "+14155550151").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (201, Some("active")),
        "{body}"
    );
}

#[tokio::test]
async fn instances_racing_for_the_last_slot_buy_once() {
    let limit = [("PURCHASES_PER_ORG_PER_DAY", "2")];
    let w = World::with_env(&limit).await;
    // Four instances, each its own pool, each connected already.
    let mut instances = Vec::new();
    for _ in 0..4 {
        let s = w.another_instance_with(&limit).await;
        testkit::ask(&s.db).await.unwrap();
        instances.push(s);
    }
    let w = &w;
    let mut next_number = 150;
    let mut number = || {
        next_number += 1;
        format!("+1415555{next_number:04}")
    };

    // An org with one purchase; the four race for its last slot, a few times over.
    // The test holds the org's row FOR UPDATE, which every intent waits for (the
    // org lock, or else the new row's foreign-key check), so all reach the count
    // together when it lets go.
    for round in 0..3 {
        let org = new_org();
        assert_eq!(w.buy(org, &number()).await.0, 201);
        let mut c = w.t.client().await;
        let hold = c.transaction().await.unwrap();
        hold.execute(
            "SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE",
            &[&org.as_uuid()],
        )
        .await
        .unwrap();
        let racers = instances.iter().map(|s| {
            let body = json!({"phoneNumber": number()});
            async move { w.buy_with(s, org, body).await }
        });
        let (answers, ()) = tokio::join!(futures::future::join_all(racers), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            hold.commit().await.unwrap();
        });
        let mut statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
        statuses.sort();
        assert_eq!(statuses, [201, 429, 429, 429], "round {round}: {answers:?}");
        assert!(
            answers
                .iter()
                .filter(|a| a.0 == 429)
                .all(|a| a.1["error"]["code"] == "purchase_limit_reached")
        );
        let rows: i64 =
            w.t.client()
                .await
                .query_one(
                    "SELECT count(*) FROM managed_phone_numbers WHERE org_id = $1",
                    &[&org.as_uuid()],
                )
                .await
                .unwrap()
                .get(0);
        assert_eq!(rows, 2, "round {round}");
    }

    // A new org's first purchases (its row created by the first intent), three at
    // once from three instances: two pass.
    let fresh = new_org();
    let racers = instances[..3].iter().map(|s| {
        let body = json!({"phoneNumber": number()});
        async move { w.buy_with(s, fresh, body).await }
    });
    let answers = futures::future::join_all(racers).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 201, 429], "{answers:?}");
    assert_eq!(
        w.providers.lock().bought.len(),
        3 * 2 + 2,
        "bought exactly what passed"
    );
}

#[tokio::test]
async fn a_bad_purchase_limit_fails_the_configuration() {
    let w = World::new().await;
    for bad in ["0", "-3", "ten", "2.5"] {
        let e = try_build_state(
            &w.t,
            &w.vapi,
            &w.twilio,
            &w.aws,
            &w.kms_key,
            &[("PURCHASES_PER_ORG_PER_DAY", bad)],
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("{bad} was accepted"));
        assert!(
            e.to_string().contains("PURCHASES_PER_ORG_PER_DAY"),
            "{bad}: {e}"
        );
    }
    assert_eq!(w.state.purchase_limit.per_day.get(), 10, "the default");
}

// Issue 21: a purchase or an assistant change can never strand a billed number or
// route calls where the database doesn't say. Each test below failed on the code
// before its fix.

const OTHER_ASSISTANT: &str = "0d3e0000-0000-4000-8000-0000000000bb";
const UNKNOWN_ASSISTANT: &str = "00000000-0000-4000-8000-0000000000ff";

fn request(assistant: &str) -> Value {
    json!({"phoneNumber": NUMBER, "assistantId": assistant})
}

/// Finding 1. Twilio bought but answered late and its lookups lagged (202); the
/// org repeats with an assistant Vapi does not know. Before: 422 "nothing was
/// bought" and the row deleted while Twilio billed the number.
#[tokio::test]
async fn a_repeat_after_an_unanswered_purchase_never_closes_what_twilio_may_hold() {
    let w = World::new().await;
    let org = new_org();
    {
        let mut h = w.providers.lock();
        h.buy_delay = Duration::from_secs(3);
        h.lookup_lag = 1;
    }
    let (status, body) = w.buy_with(&w.state, org, request(ASSISTANT)).await;
    assert_eq!(status, 202, "{body}");
    w.providers.lock().buy_delay = Duration::ZERO;
    w.expire_claims().await;
    // Another assistant (unknown to Vapi): the values are fixed once buying began.
    let (status, body) = w.buy_with(&w.state, org, request(UNKNOWN_ASSISTANT)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("purchase_differs")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(ASSISTANT) && message.contains("assistantId"),
        "{message}"
    );
    assert!(!message.contains("nothing was bought"), "{message}");
    // The same assistant, which Vapi deleted meanwhile: never "nothing was bought",
    // never closed; the number Twilio holds stays on a live row.
    w.providers.lock().assistant_deleted = true;
    let (status, body) = w.buy_with(&w.state, org, request(ASSISTANT)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["errors"], json!({"vapi": "vapi_rejected"}), "{body}");
    assert_eq!(w.providers.lock().bought.len(), 1, "Twilio holds it");
    let row = w
        .row(NUMBER)
        .await
        .expect("a live row for the billed number");
    assert_eq!(row["status"], "provisioning");
    assert!(!row["twilio_phone_sid"].is_null(), "adopted: {row}");
    assert_eq!(
        w.calls(
            &w.twilio.server,
            "POST",
            &format!("/Accounts/{SUB}/IncomingPhoneNumbers.json")
        )
        .await
        .len(),
        1,
        "bought once"
    );
}

/// Finding 2. The import with assistant X answered late and its lookup missed
/// (202); a repeat with assistant Y. Before: 201 with Y while Vapi routed to X.
#[tokio::test]
async fn a_repeat_with_another_assistant_after_a_late_import_is_409() {
    let w = World::new().await;
    let org = new_org();
    {
        let mut h = w.providers.lock();
        h.import_delay = Duration::from_secs(3);
        h.vapi_lookup_lag = 1;
    }
    let (status, body) = w.buy_with(&w.state, org, request(ASSISTANT)).await;
    assert_eq!(status, 202, "{body}");
    w.providers.lock().import_delay = Duration::ZERO;
    w.expire_claims().await;
    let (status, body) = w.buy_with(&w.state, org, request(OTHER_ASSISTANT)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("purchase_differs")),
        "{body}"
    );
    // The same request finishes it, routed where Vapi routes.
    let (status, body) = w.buy_with(&w.state, org, request(ASSISTANT)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["assistantId"], ASSISTANT);
    let h = w.providers.lock();
    assert_eq!(h.imported.len(), 1, "imported once");
    assert_eq!(h.imported[0].2["assistantId"], ASSISTANT);
}

/// An adopted import is brought to what the database says before the outcome
/// is written (a late copy may carry what an earlier attempt sent).
#[tokio::test]
async fn an_adopted_import_routing_elsewhere_is_patched_to_the_database_s_assistant() {
    let w = World::new().await;
    let org = new_org();
    {
        let mut h = w.providers.lock();
        h.import_delay = Duration::from_secs(3);
        h.vapi_lookup_lag = 1;
    }
    assert_eq!(w.buy_with(&w.state, org, request(ASSISTANT)).await.0, 202);
    {
        let mut h = w.providers.lock();
        h.import_delay = Duration::ZERO;
        // What Vapi holds routes elsewhere.
        h.imported[0].2["assistantId"] = json!(OTHER_ASSISTANT);
    }
    w.expire_claims().await;
    let (status, body) = w.buy_with(&w.state, org, request(ASSISTANT)).await;
    assert_eq!(status, 201, "{body}");
    let h = w.providers.lock();
    assert_eq!(h.routed.len(), 1, "one PATCH");
    assert_eq!(h.routed[0].1["assistantId"], ASSISTANT);
    assert_eq!(
        h.imported[0].2["assistantId"], ASSISTANT,
        "Vapi routes as the database says"
    );
}

/// Finding 4. Bought, import unanswered (202); the repeat's import is refused by
/// Vapi. Before: the paid number was released by the user's repeat.
#[tokio::test]
async fn a_users_repeat_never_releases_what_was_bought() {
    let w = World::new().await;
    let org = new_org();
    w.providers.lock().import_answer = Some(FakeVapi::error(503, "Service Unavailable"));
    assert_eq!(w.buy_with(&w.state, org, request(ASSISTANT)).await.0, 202);
    w.expire_claims().await;
    w.providers.lock().import_answer = Some(FakeVapi::error(
        400,
        "assistantId must be an existing assistant",
    ));
    let (status, body) = w.buy_with(&w.state, org, request(ASSISTANT)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("provisioning")),
        "{body}"
    );
    assert_eq!(body["errors"], json!({"vapi": "vapi_rejected"}));
    {
        let h = w.providers.lock();
        assert_eq!(h.bought.len(), 1, "still bought");
        assert!(h.released.is_empty(), "nothing released");
    }
    assert_eq!(w.row(NUMBER).await.unwrap()["status"], "provisioning");
}

/// Finding 5. The import landed but its answer was lost and the lookups missed;
/// reconcile gives the purchase up. Before: release skipped Vapi (no id) and left
/// a Vapi number carrying the subaccount's token.
#[tokio::test]
async fn giving_up_finds_and_deletes_an_import_whose_answer_was_lost() {
    let w = World::with_env(&[("RECONCILE_MAX_ATTEMPTS", "1")]).await;
    let org = new_org();
    {
        let mut h = w.providers.lock();
        h.import_delay = Duration::from_secs(3);
        h.vapi_lookup_lag = 1;
    }
    assert_eq!(w.buy_with(&w.state, org, request(ASSISTANT)).await.0, 202);
    assert_eq!(w.providers.lock().imported.len(), 1, "the import landed");
    w.providers.lock().import_delay = Duration::ZERO;
    w.expire_claims().await;
    let report = w
        .release_state_with(&[("RECONCILE_MAX_ATTEMPTS", "1")])
        .await
        .release
        .reconcile(10, "reconcile", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(report.purchases.undone, 1, "{report:?}");
    {
        let h = w.providers.lock();
        assert!(h.imported.is_empty(), "deleted at Vapi: {:?}", h.imported);
        assert!(h.bought.is_empty(), "released at Twilio");
    }
    assert_eq!(
        w.calls(&w.vapi.server, "POST", "/phone-number").await.len(),
        1,
        "imported once, never again while giving up"
    );
    assert_eq!(w.row(NUMBER).await.unwrap()["status"], "released");
}

/// Finding 9. A Vapi number of the same E.164 carrying another account's
/// credentials is not ours to adopt. Before: adopted by number alone.
#[tokio::test]
async fn an_import_of_another_account_is_never_adopted() {
    let w = World::new().await;
    let org = new_org();
    {
        let mut h = w.providers.lock();
        h.imported.push((
            "vapi-foreign".into(),
            NUMBER.into(),
            json!({"number": NUMBER, "twilioAccountSid": "AC99999999999999999999999999999999"}),
        ));
        // This import is made and answered late, and is never listed.
        h.import_answer = Some(ResponseTemplate::new(201).set_delay(Duration::from_secs(3)));
    }
    let (status, body) = w.buy_with(&w.state, org, request(ASSISTANT)).await;
    assert_eq!(status, 202, "{body}");
    let row = w.row(NUMBER).await.unwrap();
    assert!(row["vapi_phone_id"].is_null(), "{row}");
}

/// Finding 10. A BYOC save committing while a purchase starts: the purchase reads
/// the slot only after the org's row lock. Before: it read the slot first and
/// bought for an org that had just switched to its own account.
#[tokio::test]
async fn a_byoc_save_committing_alongside_refuses_the_purchase() {
    let w = World::new().await;
    let org = new_org();
    let mut c = w.t.client().await;
    c.execute(
        "INSERT INTO organizations (id) VALUES ($1)",
        &[&org.as_uuid()],
    )
    .await
    .unwrap();
    // The save's slot transaction: the org's row (its lease), then the slot.
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "UPDATE organizations SET updated_at = now() WHERE id = $1",
        &[&org.as_uuid()],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO org_credentials (org_id, provider, source, encrypted_config, metadata)
         VALUES ($1, 'twilio', 'byoc', '{\"v\":1,\"kid\":\"k\",\"edk\":\"e\",\"iv\":\"i\",\"ct\":\"c\"}',
                 '{\"accountSid\":\"AC0123456789abcdef0123456789abcdef\"}')",
        &[&org.as_uuid()],
    )
    .await
    .unwrap();
    let buying = w.buy_with(&w.state, org, request(ASSISTANT));
    let commit = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.commit().await.unwrap();
    };
    let ((status, body), ()) = tokio::join!(buying, commit);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("byoc_in_use")),
        "{body}"
    );
    assert!(w.providers.lock().bought.is_empty(), "nothing bought");
    assert!(w.row(NUMBER).await.is_none());
}

/// Issue 21: whether Vapi takes the number's SMS is the caller's explicit choice,
/// always sent (omitted: true), answered, and fixed once buying started.
#[tokio::test]
async fn sms_enabled_is_sent_answered_and_fixed_once_buying_started() {
    let w = World::new().await;
    let org = new_org();
    let (status, body) = w
        .buy_with(
            &w.state,
            org,
            json!({"phoneNumber": NUMBER, "assistantId": ASSISTANT, "smsEnabled": false}),
        )
        .await;
    assert_eq!(
        (status, body["smsEnabled"].clone()),
        (201, json!(false)),
        "{body}"
    );
    let imports = w.calls(&w.vapi.server, "POST", "/phone-number").await;
    let sent: Value = serde_json::from_slice(&imports[0].body).unwrap();
    assert_eq!(sent["smsEnabled"], false);
    let (status, body) = w
        .buy_with(
            &w.state,
            org,
            json!({"phoneNumber": NUMBER, "assistantId": ASSISTANT, "smsEnabled": true}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("purchase_differs")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("smsEnabled")
    );
    // A repeat leaving it out asks for nothing.
    let (status, body) = w
        .buy_with(&w.state, org, json!({"phoneNumber": NUMBER}))
        .await;
    assert_eq!(
        (status, body["smsEnabled"].clone()),
        (200, json!(false)),
        "{body}"
    );
    // Not a boolean: 400, nothing happens.
    let (status, _) = w
        .buy_with(
            &w.state,
            new_org(),
            json!({"phoneNumber": "+14155550151", "smsEnabled": "yes"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(w.row("+14155550151").await.is_none());
}

/// Review of issue 21: a user's repeats never use up the attempts reconcile gives
/// a purchase up by. Before, repeats during a Vapi outage pushed them past the
/// limit, and reconcile's first claim released the paid number without one try.
#[tokio::test]
async fn a_users_repeats_never_use_up_reconciles_attempts() {
    let w = World::with_env(&[("RECONCILE_MAX_ATTEMPTS", "2")]).await;
    let org = new_org();
    let rate_limited = || Some(FakeVapi::error(429, "Too Many Requests"));
    w.providers.lock().import_answer = rate_limited();
    assert_eq!(w.buy_with(&w.state, org, request(ASSISTANT)).await.0, 202);
    for _ in 0..4 {
        w.providers.lock().import_answer = rate_limited();
        assert_eq!(w.buy_with(&w.state, org, request(ASSISTANT)).await.0, 202);
    }
    assert_eq!(w.row(NUMBER).await.unwrap()["purchase_attempts"], 1);
    // Vapi is back: reconcile tries, and finishes it.
    w.expire_claims().await;
    let report = w
        .release_state_with(&[("RECONCILE_MAX_ATTEMPTS", "2")])
        .await
        .release
        .reconcile(10, "reconcile", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(report.purchases.activated, 1, "{report:?}");
    assert_eq!(w.providers.lock().bought.len(), 1, "still bought");
}

/// Review of issue 21: after an attempt of ours, a refusal of a later purchase
/// says nothing of the earlier one, which may still land: never closed on it.
/// Before, a 21421 after an unanswered attempt closed the row ("nothing bought").
#[tokio::test]
async fn a_refusal_after_an_unanswered_purchase_never_closes_it() {
    let w = World::new().await;
    let org = new_org();
    w.providers.lock().buy_fails_500 = true;
    assert_eq!(w.buy_with(&w.state, org, request(ASSISTANT)).await.0, 202);
    {
        let mut h = w.providers.lock();
        h.buy_fails_500 = false;
        h.buy_refused = Some((400, 21421));
    }
    w.expire_claims().await;
    let (status, body) = w.buy_with(&w.state, org, request(ASSISTANT)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("provisioning")),
        "{body}"
    );
    assert_eq!(w.row(NUMBER).await.unwrap()["status"], "provisioning");
}
