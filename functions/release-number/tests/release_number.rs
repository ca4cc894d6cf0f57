//! release-number and reconcile end to end: API Gateway events through the real
//! handler, real Postgres, wiremock Vapi and Twilio asserting every call.

use std::time::Duration;

use release_number::{State, handle};
use serde_json::{Value, json};
use shared::config::Env;
use shared::ids::OrgId;
use testkit::event::{ApiEvent, read_response};
use testkit::fakes::{FakeTwilio, FakeVapi, TWILIO_MAIN_SID, TWILIO_MAIN_TOKEN, VAPI_KEY};
use testkit::{SeededNumber, TestDb};
use wiremock::matchers::{any, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

const ROUTE: &str = "/api/managed-telephony/numbers/{phoneNumber}";

struct World {
    t: TestDb,
    vapi: FakeVapi,
    twilio: FakeTwilio,
    aws: aws_config::SdkConfig,
    state: State,
    org: OrgId,
}

async fn build_state(
    t: &TestDb,
    vapi: &FakeVapi,
    twilio: &FakeTwilio,
    aws: &aws_config::SdkConfig,
    extra: &[(&str, &str)],
) -> State {
    let (url, v, tw) = (t.url(), vapi.uri(), twilio.uri());
    let mut pairs = vec![
        ("DATABASE_URL", url.as_str()),
        ("VAPI_BASE_URL", v.as_str()),
        ("TWILIO_BASE_URL", tw.as_str()),
        ("VAPI_PRIVATE_KEY", VAPI_KEY),
        ("TWILIO_MAIN_ACCOUNT_SID", TWILIO_MAIN_SID),
        ("TWILIO_MAIN_AUTH_TOKEN", TWILIO_MAIN_TOKEN),
        ("PROVIDER_TIMEOUT_MS", "1000"),
        ("PROVIDER_MIN_BACKOFF_MS", "10"),
        ("PROVIDER_MAX_BACKOFF_MS", "40"),
        ("STEPS_DEADLINE_MS", "3000"),
    ];
    pairs.extend_from_slice(extra);
    State::from_env(&Env::from_pairs(pairs), aws)
        .await
        .expect("state")
}

impl World {
    async fn new() -> Self {
        Self::with_env(&[]).await
    }

    async fn with_env(extra: &[(&str, &str)]) -> Self {
        let t = TestDb::new().await;
        let aws = testkit::aws_config().await;
        let vapi = FakeVapi::start().await;
        let twilio = FakeTwilio::start().await;
        let state = build_state(&t, &vapi, &twilio, &aws, extra).await;
        let org = t.org().await;
        Self {
            t,
            vapi,
            twilio,
            aws,
            state,
            org,
        }
    }

    async fn another_instance(&self) -> State {
        build_state(&self.t, &self.vapi, &self.twilio, &self.aws, &[]).await
    }

    async fn number(&self, number: &str) -> SeededNumber {
        self.t
            .managed_number(self.org, number, Some(&format!("vapi-{}", &number[1..])))
            .await
    }

    fn vapi_delete(&self, n: &SeededNumber) -> wiremock::MockBuilder {
        self.vapi
            .authed(Mock::given(method("DELETE")).and(path(format!(
                "/phone-number/{}",
                n.vapi_phone_id.as_deref().unwrap()
            ))))
    }

    fn twilio_delete(&self, n: &SeededNumber) -> wiremock::MockBuilder {
        self.twilio
            .as_main_account(Mock::given(method("DELETE")).and(path(format!(
                "/Accounts/{}/IncomingPhoneNumbers/{}.json",
                n.subaccount_sid, n.number_sid
            ))))
    }

    /// `GET /Accounts/{sub}/IncomingPhoneNumbers.json?PhoneNumber=<E.164>`.
    fn twilio_list(&self, n: &SeededNumber) -> wiremock::MockBuilder {
        self.twilio.as_main_account(
            Mock::given(method("GET"))
                .and(path(format!(
                    "/Accounts/{}/IncomingPhoneNumbers.json",
                    n.subaccount_sid
                )))
                .and(query_param("PhoneNumber", n.number.as_str())),
        )
    }

    /// Twilio's page of incoming numbers.
    fn incoming_page(&self, numbers: &[Value]) -> Value {
        json!({
            "incoming_phone_numbers": numbers,
            "page": 0,
            "page_size": 50,
            "next_page_uri": null,
        })
    }

    async fn both_succeed(&self, n: &SeededNumber) {
        self.vapi_delete(n)
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"id": n.vapi_phone_id, "number": n.number})),
            )
            .expect(1)
            .mount(&self.vapi.server)
            .await;
        self.twilio_delete(n)
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&self.twilio.server)
            .await;
    }

    async fn nothing_called(&self) {
        Mock::given(any())
            .respond_with(ResponseTemplate::new(500))
            .expect(0)
            .mount(&self.vapi.server)
            .await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(500))
            .expect(0)
            .mount(&self.twilio.server)
            .await;
    }

    fn event(&self, raw: &str) -> ApiEvent {
        ApiEvent::new(
            "DELETE",
            ROUTE,
            &format!("/api/managed-telephony/numbers/{raw}"),
        )
        .caller(&self.org.to_string(), "user-1")
        .scopes(&["telephony:write"])
        .path_parameter("phoneNumber", raw)
    }

    async fn delete_with(&self, state: &State, raw: &str) -> (u16, Value) {
        read_response(&handle(state, self.event(raw).request()).await)
    }

    async fn delete(&self, raw: &str) -> (u16, Value) {
        self.delete_with(&self.state, raw).await
    }

    /// (status, released_at set, vapi done, twilio done, attempts, last_release_error)
    async fn row(&self, number: &str) -> (String, bool, bool, bool, i32, Option<Value>) {
        let r = self
            .t
            .client()
            .await
            .query_one(
                "SELECT status, released_at IS NOT NULL, vapi_released_at IS NOT NULL, twilio_released_at IS NOT NULL,
                        release_attempts, last_release_error
                   FROM managed_phone_numbers WHERE phone_number = $1 ORDER BY created_at DESC LIMIT 1",
                &[&number],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
    }

    async fn routed(&self, number: &str) -> bool {
        self.t
            .client()
            .await
            .query_opt(
                "SELECT 1 FROM phone_number_mapping WHERE inbound_phone_number = $1",
                &[&number],
            )
            .await
            .unwrap()
            .is_some()
    }

    async fn audit(&self) -> Vec<(String, String, String)> {
        self.t
            .client()
            .await
            .query(
                "SELECT action, target, outcome FROM audit_log ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

#[tokio::test]
async fn releases_at_both_providers_then_marks_released_and_stops_routing() {
    let w = World::new().await;
    let n = w.number("+14155550100").await;
    w.both_succeed(&n).await;
    let (status, body) = w.delete("+14155550100").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "released");
    assert_eq!(body["phoneNumber"], "+14155550100");
    assert!(body["releasedAt"].as_str().is_some());
    let (st, released, vapi_done, twilio_done, attempts, err) = w.row(&n.number).await;
    assert_eq!(
        (st.as_str(), released, vapi_done, twilio_done, attempts, err),
        ("released", true, true, true, 1, None)
    );
    assert!(!w.routed(&n.number).await);
    assert_eq!(
        w.audit().await,
        vec![("number.release".into(), n.number.clone(), "released".into())]
    );
}

#[tokio::test]
async fn plus_and_percent_encoded_forms_both_find_the_number() {
    let w = World::new().await;
    let a = w.number("+14155550101").await;
    let b = w.number("+14155550102").await;
    w.both_succeed(&a).await;
    w.both_succeed(&b).await;
    assert_eq!(
        w.delete("+14155550101").await.0,
        200,
        "as API Gateway hands it over"
    );
    assert_eq!(
        w.delete("%2B14155550102").await.0,
        200,
        "as a browser encodes it"
    );
}

#[tokio::test]
async fn malformed_numbers_are_400_and_call_nothing() {
    let w = World::new().await;
    w.number("+14155550100").await;
    w.nothing_called().await;
    for raw in [
        "14155550100",
        "%252B14155550100",
        "+1-415-555-0100",
        "+",
        "abc",
        "%2B",
        "+1415555010012345",
        "%ZZ",
    ] {
        let (status, body) = w.delete(raw).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_phone_number")),
            "{raw}: {body}"
        );
    }
    assert_eq!(w.row("+14155550100").await.0, "active");
}

#[tokio::test]
async fn unknown_or_another_orgs_number_is_404_and_changes_nothing() {
    let w = World::new().await;
    let other = w.t.org().await;
    let theirs =
        w.t.managed_number(other, "+14155550177", Some("vapi-theirs"))
            .await;
    w.nothing_called().await;
    for raw in ["+14155550199", theirs.number.as_str()] {
        let (status, body) = w.delete(raw).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("number_not_found")),
            "{raw}"
        );
    }
    assert_eq!(w.row(&theirs.number).await.0, "active");
    assert!(w.routed(&theirs.number).await);
    assert!(w.audit().await.is_empty());
}

#[tokio::test]
async fn identity_and_scope_are_required() {
    let w = World::new().await;
    w.number("+14155550100").await;
    w.nothing_called().await;
    let no_scope = w.event("+14155550100").scopes(&["telephony:read"]);
    assert_eq!(
        read_response(&handle(&w.state, no_scope.request()).await).0,
        403
    );
    let no_org = w.event("+14155550100").without_claim("org_id");
    assert_eq!(
        read_response(&handle(&w.state, no_org.request()).await).0,
        401
    );
    let query = w.event("+14155550100").query("force=true");
    assert_eq!(
        read_response(&handle(&w.state, query.request()).await).0,
        400
    );
    assert_eq!(w.row("+14155550100").await.0, "active");
}

#[tokio::test]
async fn already_gone_at_either_provider_counts_as_done() {
    let w = World::new().await;
    let a = w.number("+14155550103").await;
    w.vapi_delete(&a)
        .respond_with(FakeVapi::error(404, "Phone number not found"))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&a)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    assert_eq!(w.delete(&a.number).await.0, 200);
    let b = w.number("+14155550104").await;
    w.vapi_delete(&b)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&b)
        .respond_with(FakeTwilio::error(
            404,
            20404,
            "The requested resource was not found",
        ))
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    // Twilio's 20404 is believed only once the subaccount's list confirms it.
    w.twilio_list(&b)
        .respond_with(ResponseTemplate::new(200).set_body_json(w.incoming_page(&[])))
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    assert_eq!(w.delete(&b.number).await.0, 200);
    assert_eq!(w.row(&b.number).await.0, "released");
}

/// What Twilio answers for a path it does not know: 404 with code 20404, the same
/// as for a number that is gone.
fn twilio_unknown_path() -> ResponseTemplate {
    FakeTwilio::error(404, 20404, "The requested resource was not found")
}

#[tokio::test]
async fn a_wrong_twilio_base_url_leaves_the_release_pending_and_says_why() {
    // TWILIO_BASE_URL without `/2010-04-01`: every path is unknown to Twilio, which
    // answers each with 404 code 20404. Nothing may be counted as released.
    let w = World::new().await;
    let n = w.number("+14155550105").await;
    w.vapi_delete(&n)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&w.vapi.server)
        .await;
    Mock::given(any())
        .respond_with(twilio_unknown_path())
        .expect(2)
        .named("every Twilio path unknown")
        .mount(&w.twilio.server)
        .await;
    let (status, body) = w.delete(&n.number).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "release_pending");
    assert_eq!(body["pending"], json!(["twilio"]));
    assert_eq!(body["errors"], json!({"twilio": "twilio_bad_response"}));
    let (st, released, vapi_done, twilio_done, _, error) = w.row(&n.number).await;
    assert_eq!(
        (st.as_str(), released, vapi_done, twilio_done),
        ("release_pending", false, true, false)
    );
    assert_eq!(error.unwrap()["twilio"]["code"], "twilio_bad_response");
    // The calls made: the DELETE, then the confirming list read.
    let got: Vec<String> = w
        .twilio
        .server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert_eq!(
        got,
        [
            format!(
                "DELETE /Accounts/{}/IncomingPhoneNumbers/{}.json",
                n.subaccount_sid, n.number_sid
            ),
            format!(
                "GET /Accounts/{}/IncomingPhoneNumbers.json",
                n.subaccount_sid
            ),
        ]
    );
}

#[tokio::test]
async fn a_twilio_20404_with_the_number_still_listed_is_not_released() {
    let w = World::new().await;
    let a = w.number("+14155550106").await;
    let b = w.number("+14155550107").await;
    let c = w.number("+14155550108").await;
    for n in [&a, &b, &c] {
        w.vapi_delete(n)
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .mount(&w.vapi.server)
            .await;
        w.twilio_delete(n)
            .respond_with(twilio_unknown_path())
            .mount(&w.twilio.server)
            .await;
    }
    // a: its SID is still listed.
    w.twilio_list(&a)
        .respond_with(ResponseTemplate::new(200).set_body_json(
            w.incoming_page(&[json!({"sid": a.number_sid, "phone_number": a.number})]),
        ))
        .mount(&w.twilio.server)
        .await;
    // b: the subaccount holds the number under another SID.
    w.twilio_list(&b)
        .respond_with(ResponseTemplate::new(200).set_body_json(w.incoming_page(&[
            json!({"sid": "PN99999999999999999999999999999999", "phone_number": b.number}),
        ])))
        .mount(&w.twilio.server)
        .await;
    // c: a 200 that is not Twilio's list.
    w.twilio_list(&c)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&w.twilio.server)
        .await;
    for n in [&a, &b, &c] {
        let (status, body) = w.delete(&n.number).await;
        assert_eq!(status, 202, "{} {body}", n.number);
        assert_eq!(body["errors"], json!({"twilio": "twilio_bad_response"}));
        assert_eq!(w.row(&n.number).await.0, "release_pending");
    }
}

#[tokio::test]
async fn a_rate_limit_is_retried() {
    let w = World::new().await;
    let n = w.number("+14155550105").await;
    w.vapi_delete(&n)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&n)
        .respond_with(FakeTwilio::error(429, 20429, "Too Many Requests"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    w.twilio_delete(&n)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    assert_eq!(w.delete(&n.number).await.0, 200);
}

#[tokio::test]
async fn a_persistent_failure_is_pending_and_a_repeat_finishes_only_the_unfinished_step() {
    let w = World::new().await;
    let n = w.number("+14155550106").await;
    w.vapi_delete(&n)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&n)
        .respond_with(FakeTwilio::error(500, 20500, "Internal Server Error"))
        .expect(3)
        .mount(&w.twilio.server)
        .await;
    let (status, body) = w.delete(&n.number).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"status": "release_pending", "phoneNumber": n.number, "pending": ["twilio"], "errors": {"twilio": "twilio_unavailable"}})
    );
    let (st, released, vapi_done, twilio_done, attempts, err) = w.row(&n.number).await;
    assert_eq!(
        (st.as_str(), released, vapi_done, twilio_done, attempts),
        ("release_pending", false, true, false, 1)
    );
    let err = err.unwrap();
    assert_eq!(err["twilio"]["code"], "twilio_unavailable");
    assert_eq!(err["twilio"]["providerCode"], 20500);
    assert!(
        !w.routed(&n.number).await,
        "a pending number no longer routes"
    );
    w.vapi.server.verify().await;
    w.twilio.server.verify().await;

    // Twilio recovers; the repeat only calls Twilio.
    w.vapi.server.verify().await;
    w.vapi.server.reset().await;
    w.twilio.server.verify().await;
    w.twilio.server.reset().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&n)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    let (status, body) = w.delete(&format!("%2B{}", &n.number[1..])).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("released")));
    let (st, _, _, _, attempts, err) = w.row(&n.number).await;
    assert_eq!((st.as_str(), attempts, err), ("released", 2, None));
    let outcomes: Vec<String> = w.audit().await.into_iter().map(|a| a.2).collect();
    assert_eq!(outcomes, ["release_pending", "released"]);
}

#[tokio::test]
async fn a_timeout_is_pending_and_reconcile_finishes_it() {
    let w = World::with_env(&[("STEPS_DEADLINE_MS", "600"), ("PROVIDER_TIMEOUT_MS", "300")]).await;
    let n = w.number("+14155550107").await;
    w.vapi_delete(&n)
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&n)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    let (status, body) = w.delete(&n.number).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["pending"], json!(["vapi"]));
    assert_eq!(body["errors"]["vapi"], "vapi_timeout");
    assert!(!w.routed(&n.number).await);

    w.vapi.server.verify().await;
    w.vapi.server.reset().await;
    w.vapi_delete(&n)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    // Backoff: the first retry is due a minute after the failure, not before.
    let c = w.t.client().await;
    let wait: f64 = c
        .query_one(
            "SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM managed_phone_numbers WHERE phone_number = $1",
            &[&n.number],
        )
        .await
        .unwrap()
        .get(0);
    assert!((50.0..=60.0).contains(&wait), "{wait}");
    let releaser = &w.state.release;
    let early = releaser
        .reconcile(10, "reconcile-early", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(early.claimed, 0, "not due yet");
    c.execute(
        "UPDATE managed_phone_numbers SET next_attempt_at = now() - interval '1 second' WHERE phone_number = $1",
        &[&n.number],
    )
    .await
    .unwrap();
    let report = releaser
        .reconcile(10, "reconcile-req", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(
        (report.claimed, report.released, report.still_pending),
        (1, 1, 0)
    );
    assert_eq!(w.row(&n.number).await.0, "released");
    w.twilio.server.verify().await;
    let last = w.audit().await.pop().unwrap();
    assert_eq!(
        last,
        ("number.release".into(), n.number.clone(), "released".into())
    );
    let actor: String =
        w.t.client()
            .await
            .query_one("SELECT actor FROM audit_log ORDER BY id DESC LIMIT 1", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(actor, "system:reconcile");
}

#[tokio::test]
async fn twenty_concurrent_deletes_from_two_instances_call_each_provider_once() {
    let w = World::new().await;
    let n = w.number("+14155550108").await;
    w.vapi_delete(&n)
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({}))
                .set_delay(Duration::from_millis(200)),
        )
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&n)
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    let second = w.another_instance().await;
    let calls = (0..20).map(|i| {
        let state = if i % 2 == 0 { &w.state } else { &second };
        let raw = if i % 3 == 0 {
            format!("%2B{}", &n.number[1..])
        } else {
            n.number.clone()
        };
        let w = &w;
        async move { w.delete_with(state, &raw).await }
    });
    let answers = futures::future::join_all(calls).await;
    let released = answers
        .iter()
        .filter(|(s, b)| *s == 200 && b["status"] == "released")
        .count();
    let in_progress = answers
        .iter()
        .filter(|(s, b)| *s == 202 && b["status"] == "releasing")
        .count();
    assert!(released >= 1, "{answers:?}");
    assert_eq!(released + in_progress, 20, "{answers:?}");
    w.vapi.server.verify().await;
    w.twilio.server.verify().await;
    let (st, _, _, _, attempts, _) = w.row(&n.number).await;
    assert_eq!((st.as_str(), attempts), ("released", 1));
    assert_eq!(w.audit().await.len(), 1);
}

#[tokio::test]
async fn a_claim_left_by_a_killed_instance_expires_and_a_retry_finishes() {
    let w = World::new().await;
    let n = w.number("+14155550109").await;
    let c = w.t.client().await;
    // An instance claimed the number and died before writing the outcome.
    c.execute(
        "UPDATE managed_phone_numbers SET status = 'releasing', claim_token = gen_random_uuid(),
                claimed_until = now() + interval '1 hour', release_attempts = 1, release_requested_at = now()
          WHERE phone_number = $1",
        &[&n.number],
    )
    .await
    .unwrap();
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&w.vapi.server)
        .await;
    let (status, body) = w.delete(&n.number).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("releasing")),
        "a live claim is respected"
    );
    w.vapi.server.verify().await;
    w.vapi.server.reset().await;

    c.execute("UPDATE managed_phone_numbers SET claimed_until = now() - interval '1 second' WHERE phone_number = $1", &[&n.number])
        .await
        .unwrap();
    w.both_succeed(&n).await;
    let (status, body) = w.delete(&n.number).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("released")));
    assert_eq!(w.row(&n.number).await.4, 2);
}

#[tokio::test]
async fn after_switching_to_byoc_the_release_still_uses_the_main_account() {
    let w = World::new().await;
    let n = w.number("+14155550110").await;
    w.t.client()
        .await
        .execute(
            "INSERT INTO org_credentials (org_id, provider, source, encrypted_config, metadata)
             VALUES ($1, 'twilio', 'byoc', '{\"v\":1,\"kid\":\"k\",\"edk\":\"\",\"iv\":\"\",\"ct\":\"\"}',
                     '{\"accountSid\":\"AC1111111111111111111111111111111a\"}')",
            &[&w.org.as_uuid()],
        )
        .await
        .unwrap();
    // twilio_delete matches only the main account's Basic auth on the subaccount's URL.
    w.both_succeed(&n).await;
    assert_eq!(w.delete(&n.number).await.0, 200);
    let sent = &w.twilio.server.received_requests().await.unwrap()[0];
    assert!(
        sent.url
            .path()
            .starts_with(&format!("/Accounts/{}/", n.subaccount_sid))
    );
}

#[tokio::test]
async fn deleting_a_released_number_again_answers_released_and_calls_nothing() {
    let w = World::new().await;
    let n = w.number("+14155550111").await;
    w.both_succeed(&n).await;
    let (_, first) = w.delete(&n.number).await;
    w.vapi.server.verify().await;
    w.vapi.server.reset().await;
    w.twilio.server.verify().await;
    w.twilio.server.reset().await;
    w.nothing_called().await;
    let (status, again) = w.delete(&n.number).await;
    assert_eq!(status, 200);
    assert_eq!(again, first);
    assert_eq!(w.audit().await.len(), 1);
}

#[tokio::test]
async fn unauthorized_main_account_is_pending_without_retries() {
    let w = World::new().await;
    let n = w.number("+14155550112").await;
    w.vapi_delete(&n)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&n)
        .respond_with(FakeTwilio::error(401, 20003, "Authenticate"))
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    let (status, body) = w.delete(&n.number).await;
    assert_eq!(status, 202);
    assert_eq!(body["errors"]["twilio"], "twilio_unauthorized");
}

#[tokio::test]
async fn a_number_without_a_vapi_id_only_needs_twilio() {
    let w = World::new().await;
    let n = w.t.managed_number(w.org, "+14155550113", None).await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&n)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    assert_eq!(w.delete(&n.number).await.0, 200);
}

#[tokio::test]
async fn reconcile_takes_oldest_first_in_bounded_batches_and_skips_held_rows() {
    let w = World::new().await;
    let c = w.t.client().await;
    let mut numbers = Vec::new();
    for (i, age) in [(0, 30), (1, 20), (2, 10)] {
        let n = w.number(&format!("+1415555012{i}")).await;
        c.execute(
            "UPDATE managed_phone_numbers SET status = 'release_pending', release_attempts = 1,
                    release_requested_at = now() - make_interval(mins => $2), updated_at = now() - interval '1 minute'
              WHERE phone_number = $1",
            &[&n.number, &age],
        )
        .await
        .unwrap();
        numbers.push(n);
    }
    // A fourth is held by a live claim: skipped.
    let held = w.number("+14155550129").await;
    c.execute(
        "UPDATE managed_phone_numbers SET status = 'releasing', claim_token = gen_random_uuid(),
                claimed_until = now() + interval '1 hour', release_requested_at = now() - interval '1 day'
          WHERE phone_number = $1",
        &[&held.number],
    )
    .await
    .unwrap();
    for n in &numbers {
        w.vapi_delete(n)
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .mount(&w.vapi.server)
            .await;
        w.twilio_delete(n)
            .respond_with(ResponseTemplate::new(204))
            .mount(&w.twilio.server)
            .await;
    }
    let releaser = &w.state.release;
    let report = releaser
        .reconcile(2, "r1", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!((report.claimed, report.released), (2, 2));
    assert_eq!(
        w.row(&numbers[0].number).await.0,
        "released",
        "oldest first"
    );
    assert_eq!(w.row(&numbers[1].number).await.0, "released");
    assert_eq!(w.row(&numbers[2].number).await.0, "release_pending");
    let report = releaser
        .reconcile(10, "r2", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!((report.claimed, report.released), (1, 1));
    assert_eq!(
        w.row(&held.number).await.0,
        "releasing",
        "a held row is left alone"
    );
    // No time left: nothing is started.
    let report = releaser
        .reconcile(10, "r3", || Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(report.claimed, 0);
}

#[tokio::test]
async fn a_failing_number_is_tried_once_per_reconcile_run() {
    let w = World::new().await;
    let n = w.number("+14155550130").await;
    w.t.client()
        .await
        .execute(
            "UPDATE managed_phone_numbers SET status = 'release_pending', release_requested_at = now(),
                    updated_at = now() - interval '1 minute' WHERE phone_number = $1",
            &[&n.number],
        )
        .await
        .unwrap();
    w.vapi_delete(&n)
        .respond_with(FakeVapi::error(500, "down"))
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&n)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    let report = w
        .state
        .release
        .reconcile(10, "r", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!((report.claimed, report.still_pending), (1, 1));
    let (st, _, vapi_done, twilio_done, _, _) = w.row(&n.number).await;
    assert_eq!(
        (st.as_str(), vapi_done, twilio_done),
        ("release_pending", false, true)
    );
}

// ---- Issue 11: strict "already gone", re-sent claims, backoff, needs_attention ----

use shared::release::claim::claim_number;
use shared::steps::ClaimToken;
use testkit::probe::PoolProbe;

#[tokio::test]
async fn a_404_without_the_providers_error_json_is_a_failed_step() {
    let w = World::new().await;
    let a = w.number("+14155550140").await;
    // A wrong base URL or a proxy's page: nothing can be concluded from it.
    w.vapi_delete(&a)
        .respond_with(ResponseTemplate::new(404).set_body_string("<html>Not Found</html>"))
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&a)
        .respond_with(ResponseTemplate::new(404).set_body_string("Not Found"))
        .mount(&w.twilio.server)
        .await;
    let (status, body) = w.delete(&a.number).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "release_pending");
    assert_eq!(
        body["errors"],
        json!({"vapi": "vapi_bad_response", "twilio": "twilio_bad_response"})
    );
    // Twilio JSON 404 with another code than 20404 is not "gone" either.
    let b = w.number("+14155550141").await;
    w.vapi_delete(&b)
        .respond_with(FakeVapi::error(404, "Phone number not found"))
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&b)
        .respond_with(FakeTwilio::error(404, 20003, "Authentication Error"))
        .mount(&w.twilio.server)
        .await;
    let (status, body) = w.delete(&b.number).await;
    assert_eq!(
        (status, body["pending"].clone()),
        (202, json!(["twilio"])),
        "{body}"
    );
    let (st, released, vapi_done, twilio_done, _, _) = w.row(&b.number).await;
    assert_eq!(
        (st.as_str(), released, vapi_done, twilio_done),
        ("release_pending", false, true, false)
    );
}

#[tokio::test]
async fn a_claim_re_sent_with_the_same_token_is_still_ours() {
    let w = World::new().await;
    let n = w.number("+14155550142").await;
    let number: shared::ids::E164 = n.number.parse().unwrap();
    let cfg = &w.state.release.config;
    let db = &w.state.release.db;
    let token = ClaimToken::new();
    let first = claim_number(db, cfg, w.org, &number, token)
        .await
        .unwrap()
        .expect("claimed");
    // The statement re-sent after a dropped connection whose first run committed.
    let again = claim_number(db, cfg, w.org, &number, token)
        .await
        .unwrap()
        .expect("still ours");
    assert_eq!((first.token(), again.token()), (token, token));
    assert_eq!((first.attempts(), again.attempts()), (1, 1), "counted once");
    // Anybody else's claim is refused while ours is live.
    assert!(
        claim_number(db, cfg, w.org, &number, ClaimToken::new())
            .await
            .unwrap()
            .is_none()
    );
    let (status, body) = w.delete(&n.number).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("releasing")));
}

#[tokio::test]
async fn an_unrecordable_subject_is_401_before_anything_happens() {
    let w = World::new().await;
    let n = w.number("+14155550143").await;
    w.nothing_called().await;
    for sub in ["u".repeat(300), "ops\u{0}admin".to_string()] {
        let ev = w.event(&n.number).claim("sub", &sub);
        let (status, body) = read_response(&handle(&w.state, ev.request()).await);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unrecordable_subject"))
        );
    }
    assert_eq!(w.row(&n.number).await.0, "active");
    assert!(w.routed(&n.number).await);
    assert!(w.audit().await.is_empty());
}

#[tokio::test]
async fn release_holds_no_connection_while_providers_are_called() {
    let w = World::new().await;
    let n = w.number("+14155550144").await;
    let probe = PoolProbe::new([w.state.release.db.clone()]);
    w.vapi_delete(&n)
        .respond_with(
            probe.answering(
                ResponseTemplate::new(200)
                    .set_body_json(json!({}))
                    .set_delay(Duration::from_millis(200)),
            ),
        )
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&n)
        .respond_with(probe.answering(ResponseTemplate::new(204)))
        .mount(&w.twilio.server)
        .await;
    assert_eq!(w.delete(&n.number).await.0, 200);
    assert_eq!(probe.samples(), vec![0, 0], "sampled at each provider call");
}

async fn pending(w: &World, number: &str, attempts: i32, due: bool) {
    w.t.client()
        .await
        .execute(
            "UPDATE managed_phone_numbers SET status = 'release_pending', release_attempts = $2,
                    release_requested_at = now() - interval '1 day',
                    next_attempt_at = now() + CASE WHEN $3 THEN interval '-1 second' ELSE interval '1 hour' END,
                    updated_at = now() - interval '1 minute'
              WHERE phone_number = $1",
            &[&number, &attempts, &due],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn failing_numbers_cannot_starve_a_new_pending_release() {
    let w = World::with_env(&[("RECONCILE_MAX_ATTEMPTS", "20")]).await;
    // Twelve numbers that fail on every attempt, older and tried more often.
    for i in 0..12 {
        let n = w.number(&format!("+1415555020{i:02}")).await;
        pending(&w, &n.number, 5, true).await;
        w.vapi_delete(&n)
            .respond_with(FakeVapi::error(500, "down"))
            .mount(&w.vapi.server)
            .await;
        w.twilio_delete(&n)
            .respond_with(FakeTwilio::error(503, 20503, "down"))
            .mount(&w.twilio.server)
            .await;
    }
    let fresh = w.number("+14155550299").await;
    pending(&w, &fresh.number, 1, true).await;
    w.both_succeed(&fresh).await;
    let releaser = &w.state.release;
    let report = releaser
        .reconcile(3, "r1", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(report.claimed, 3);
    assert_eq!(report.released, 1, "the new one went first: {report:?}");
    assert_eq!(w.row(&fresh.number).await.0, "released");
    assert_eq!(report.failures.get("vapi_unavailable"), Some(&2));
    assert_eq!(report.failures.get("twilio_unavailable"), Some(&2));
    // The two that failed again are backed off: the next run takes others.
    let report = releaser
        .reconcile(20, "r2", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(
        report.claimed, 10,
        "each due row once, failed ones not again: {report:?}"
    );
    let backed_off: i64 =
        w.t.client()
            .await
            .query_one(
                "SELECT count(*) FROM managed_phone_numbers WHERE status = 'release_pending' AND next_attempt_at > now()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(backed_off, 12);
    assert_eq!(report.at_risk.pending_releases, 12);
    assert!(report.at_risk.oldest_pending_release_secs >= 86_400);
}

#[tokio::test]
async fn after_max_attempts_a_number_needs_attention_and_stays_visible() {
    let w = World::with_env(&[("RECONCILE_MAX_ATTEMPTS", "3")]).await;
    let n = w.number("+14155550150").await;
    pending(&w, &n.number, 2, true).await;
    w.vapi_delete(&n)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&n)
        .respond_with(FakeTwilio::error(401, 20003, "Authenticate"))
        .mount(&w.twilio.server)
        .await;
    let releaser = &w.state.release;
    let report = releaser
        .reconcile(10, "r1", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(
        (report.claimed, report.needs_attention),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(w.row(&n.number).await.0, "needs_attention");
    assert_eq!(report.at_risk.needs_attention, 1);
    assert_eq!(report.at_risk.pending_releases, 1);
    let metrics = shared::metrics::MetricsConfig {
        namespace: "Telephony".into(),
        stack: "test".into(),
    };
    let sets: Vec<Value> = report
        .metrics(&metrics)
        .iter()
        .map(|s| s.document(&metrics, 0))
        .collect();
    assert_eq!(sets[0]["NeedsAttention"], json!(1.0));
    assert_eq!(sets[0]["PendingReleases"], json!(1.0));
    assert!(
        sets.iter()
            .any(|s| s["Code"] == "twilio_unauthorized" && s["ReleaseFailures"] == json!(1.0))
    );

    // Reconcile leaves it alone, even when "due".
    w.t.client()
        .await
        .execute(
            "UPDATE managed_phone_numbers SET next_attempt_at = now() - interval '1 day', updated_at = now() - interval '1 day' WHERE phone_number = $1",
            &[&n.number],
        )
        .await
        .unwrap();
    let again = releaser
        .reconcile(10, "r2", || Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(again.claimed, 0);
    // The org sees it; a DELETE (a person) retries it.
    let (_, status_body) = {
        let state = list_state(&w).await;
        let ev = ApiEvent::new(
            "GET",
            "/api/managed-telephony/status",
            "/api/managed-telephony/status",
        )
        .caller(&w.org.to_string(), "user-1")
        .scopes(&["telephony:read"]);
        read_response(&list_numbers::handle(&state, ev.request()).await)
    };
    let listed = status_body["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["phoneNumber"] == n.number.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["status"], "needs_attention");
    assert_eq!(listed["release"]["pending"], json!(["twilio"]));
    assert_eq!(
        listed["release"]["errors"],
        json!({"twilio": "twilio_unauthorized"})
    );
    w.twilio.server.verify().await;
    w.twilio.server.reset().await;
    w.twilio_delete(&n)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&w.twilio.server)
        .await;
    let (status, body) = w.delete(&n.number).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("released")),
        "{body}"
    );
}

async fn list_state(w: &World) -> list_numbers::State {
    let url = w.t.url();
    list_numbers::State::from_env(&Env::from_pairs([("DATABASE_URL", url.as_str())]), &w.aws)
        .await
        .expect("list state")
}

#[tokio::test]
async fn the_lambda_deadline_shortens_the_provider_steps_so_the_route_answers_in_time() {
    use lambda_http::RequestExt;
    let w = World::with_env(&[
        ("STEPS_DEADLINE_MS", "20000"),
        ("OUTCOME_MARGIN_MS", "1500"),
    ])
    .await;
    let n = w.number("+14155550160").await;
    w.vapi_delete(&n)
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({}))
                .set_delay(Duration::from_secs(10)),
        )
        .mount(&w.vapi.server)
        .await;
    w.twilio_delete(&n)
        .respond_with(ResponseTemplate::new(204))
        .mount(&w.twilio.server)
        .await;
    // The invocation has 3 s left: the steps get 1.5 s, the outcome the rest.
    let mut ctx = lambda_http::Context::default();
    ctx.deadline = (std::time::SystemTime::now() + Duration::from_secs(3))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let started = std::time::Instant::now();
    let req = w.event(&n.number).request().with_lambda_context(ctx);
    let (status, body) = read_response(&handle(&w.state, req).await);
    let took = started.elapsed();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["errors"]["vapi"], "vapi_timeout");
    assert!(
        took < Duration::from_secs(3),
        "answered before the invocation's deadline: {took:?}"
    );
    assert_eq!(
        w.row(&n.number).await.0,
        "release_pending",
        "unfinished is recorded as pending"
    );
}

#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_recognised_when_re_sent() {
    let w = World::new().await;
    let n = w.number("+14155550170").await;
    let number: shared::ids::E164 = n.number.parse().unwrap();
    let target: std::net::SocketAddr = format!("{}:{}", w.t.config.host, w.t.config.port)
        .parse()
        .unwrap();
    let relay = testkit::relay::TcpRelay::start(target).await;
    let db = shared::db::Db::new(&w.t.config_via(relay.port)).unwrap();
    testkit::ask(&db).await.unwrap();
    // The claim commits, its answer is lost with the connection; Db::query sends
    // it again on a fresh one.
    relay.lose_next_answer();
    let token = ClaimToken::new();
    let claim = claim_number(&db, &w.state.release.config, w.org, &number, token)
        .await
        .unwrap()
        .expect("the re-sent claim is still ours");
    assert_eq!(relay.accepted(), 2, "reconnected once");
    assert_eq!((claim.token(), claim.attempts()), (token, 1));
    assert_eq!(w.row(&n.number).await.4, 1, "one attempt counted");
}
