//! update-number end to end: API Gateway events through the real handler, real
//! Postgres, wiremock Vapi asserting every PATCH.

use std::time::Duration;

use serde_json::{Value, json};
use shared::config::Env;
use shared::ids::OrgId;
use testkit::event::{ApiEvent, read_response};
use testkit::fakes::{FakeVapi, VAPI_KEY};
use testkit::probe::PoolProbe;
use testkit::{SeededNumber, TestDb};
use update_number::{State, handle};
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, ResponseTemplate};

const ROUTE: &str = "/api/managed-telephony/numbers/{phoneNumber}";
const OLD: &str = "0d3e0000-0000-4000-8000-0000000000aa";
const NEW: &str = "0d3e0000-0000-4000-8000-0000000000bb";

struct World {
    t: TestDb,
    vapi: FakeVapi,
    aws: aws_config::SdkConfig,
    state: State,
    org: OrgId,
    n: SeededNumber,
}

async fn build_state(t: &TestDb, vapi: &FakeVapi, aws: &aws_config::SdkConfig) -> State {
    build_state_with(t, vapi, aws, &[]).await
}

async fn build_state_with(
    t: &TestDb,
    vapi: &FakeVapi,
    aws: &aws_config::SdkConfig,
    extra: &[(&str, &str)],
) -> State {
    let (url, v) = (t.url(), vapi.uri());
    let mut pairs = vec![
        ("DATABASE_URL", url.as_str()),
        ("VAPI_BASE_URL", v.as_str()),
        ("VAPI_PRIVATE_KEY", VAPI_KEY),
        ("PROVIDER_TIMEOUT_MS", "1000"),
        ("PROVIDER_MIN_BACKOFF_MS", "10"),
        ("PROVIDER_MAX_BACKOFF_MS", "40"),
        ("STEPS_DEADLINE_MS", "5000"),
        ("CLAIM_SECS", "30"),
    ];
    pairs.extend_from_slice(extra);
    State::from_env(&Env::from_pairs(pairs), aws)
        .await
        .expect("state")
}

impl World {
    async fn new() -> Self {
        let t = TestDb::new().await;
        let aws = testkit::aws_config().await;
        let vapi = FakeVapi::start().await;
        let state = build_state(&t, &vapi, &aws).await;
        let org = t.org().await;
        let n = t
            .managed_number(org, "+14155550100", Some("vapi-phone-1"))
            .await;
        let c = t.client().await;
        c.execute(
            "UPDATE managed_phone_numbers SET assistant_id = $1, display_name = 'Front desk' WHERE phone_number = $2",
            &[&OLD, &n.number],
        )
        .await
        .unwrap();
        c.execute(
            "UPDATE phone_number_mapping SET vapi_assistant_id = $1 WHERE inbound_phone_number = $2",
            &[&OLD, &n.number],
        )
        .await
        .unwrap();
        Self {
            t,
            vapi,
            aws,
            state,
            org,
            n,
        }
    }

    fn event(&self, org: OrgId, raw: &str, body: &Value) -> ApiEvent {
        ApiEvent::new(
            "PATCH",
            ROUTE,
            &format!("/api/managed-telephony/numbers/{raw}"),
        )
        .caller(&org.to_string(), "user-1")
        .scopes(&["telephony:write"])
        .path_parameter("phoneNumber", raw)
        .json(body)
    }

    async fn patch_with(&self, state: &State, body: Value) -> (u16, Value) {
        let ev = self.event(self.org, &self.n.number, &body);
        read_response(&handle(state, ev.request()).await)
    }

    async fn patch(&self, body: Value) -> (u16, Value) {
        self.patch_with(&self.state, body).await
    }

    /// Whether a claim holds the number now.
    async fn claimed(&self) -> bool {
        self.t
            .client()
            .await
            .query_one(
                "SELECT claimed_until > now() FROM managed_phone_numbers WHERE phone_number = $1",
                &[&self.n.number],
            )
            .await
            .unwrap()
            .get::<_, Option<bool>>(0)
            .unwrap_or(false)
    }

    /// Time passes: claims expire, backoffs pass, the change is old enough for
    /// reconcile.
    async fn time_passes(&self) {
        self.t
            .client()
            .await
            .execute(
                "UPDATE managed_phone_numbers
                    SET updated_at = now() - interval '2 minutes',
                        claimed_until = CASE WHEN claimed_until IS NOT NULL THEN now() - interval '1 second' END,
                        next_route_attempt_at = CASE WHEN next_route_attempt_at IS NOT NULL
                                                     THEN now() - interval '1 second' END",
                &[],
            )
            .await
            .unwrap();
    }

    fn vapi_patch(&self) -> wiremock::MockBuilder {
        self.vapi
            .authed(Mock::given(method("PATCH")).and(path("/phone-number/vapi-phone-1")))
    }

    /// (assistant_id, display_name, assistant_pending, routing row's assistant)
    async fn routing(&self) -> (Option<String>, Option<String>, bool, Option<String>) {
        let r = self
            .t
            .client()
            .await
            .query_one(
                "SELECT n.assistant_id, n.display_name, n.assistant_pending, m.vapi_assistant_id
                   FROM managed_phone_numbers n
                   LEFT JOIN phone_number_mapping m ON m.inbound_phone_number = n.phone_number
                  WHERE n.phone_number = $1",
                &[&self.n.number],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    }
}

#[tokio::test]
async fn routes_the_number_to_another_assistant_at_vapi_and_in_the_database() {
    let w = World::new().await;
    let probe = PoolProbe::new([w.state.db.clone()]);
    w.vapi_patch()
        .and(body_json(json!({"assistantId": NEW, "name": "Sales"})))
        .respond_with(
            probe.answering(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"id": "vapi-phone-1", "assistantId": NEW})),
            ),
        )
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    let (status, body) = w.patch(json!({"assistantId": NEW, "name": "Sales"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"phoneNumber": w.n.number, "assistantId": NEW, "name": "Sales", "routed": true})
    );
    assert_eq!(
        w.routing().await,
        (
            Some(NEW.into()),
            Some("Sales".into()),
            false,
            Some(NEW.into())
        )
    );
    assert_eq!(
        probe.samples(),
        vec![0],
        "no connection held during the PATCH"
    );
    let audit: (String, Value) = {
        let r =
            w.t.client()
                .await
                .query_one(
                    "SELECT outcome, detail FROM audit_log WHERE action = 'number.route'",
                    &[],
                )
                .await
                .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(audit.0, "routed");
    assert_eq!(audit.1["previousAssistantId"], OLD);
}

#[tokio::test]
async fn vapi_down_leaves_it_pending_and_reconcile_sends_it_again() {
    let w = World::new().await;
    w.vapi_patch()
        .respond_with(FakeVapi::error(503, "Service Unavailable"))
        .expect(3)
        .mount(&w.vapi.server)
        .await;
    let (status, body) = w.patch(json!({"assistantId": NEW})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["routed"].clone(), body["code"].clone()),
        (json!(false), json!("vapi_unavailable"))
    );
    assert_eq!(
        w.routing().await,
        (
            Some(NEW.into()),
            Some("Front desk".into()),
            true,
            Some(OLD.into())
        ),
        "recorded as pending; routing unchanged until Vapi confirms"
    );
    w.vapi.server.verify().await;
    w.vapi.server.reset().await;
    w.vapi_patch()
        .and(body_json(json!({"assistantId": NEW, "name": "Front desk"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "vapi-phone-1"})))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    // A 503 may have been applied: the claim is kept until it expires, so no
    // later change can be overtaken by a late copy of this one.
    assert!(w.claimed().await, "claim kept after an unknown outcome");
    w.time_passes().await;
    let router = shared::routing::Router {
        db: &w.state.db,
        vapi: &w.state.vapi,
        config: &w.state.steps,
    };
    assert_eq!(
        router
            .resume_one("reconcile", Duration::from_secs(600))
            .await
            .unwrap(),
        Some(shared::routing::RouteResumed::Confirmed)
    );
    assert_eq!(
        w.routing().await,
        (
            Some(NEW.into()),
            Some("Front desk".into()),
            false,
            Some(NEW.into())
        )
    );
}

#[tokio::test]
async fn vapi_refusing_the_assistant_keeps_the_previous_one() {
    let w = World::new().await;
    w.vapi_patch()
        .respond_with(FakeVapi::error(
            400,
            "assistantId must be an existing assistant",
        ))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    let (status, body) = w.patch(json!({"assistantId": NEW, "name": "Sales"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("vapi_refused_assistant")),
        "{body}"
    );
    assert_eq!(
        w.routing().await,
        (
            Some(OLD.into()),
            Some("Front desk".into()),
            false,
            Some(OLD.into())
        )
    );
}

#[tokio::test]
async fn two_changes_at_once_from_two_instances_one_waits_its_turn() {
    let w = World::new().await;
    let b = build_state(&w.t, &w.vapi, &w.aws).await;
    w.vapi_patch()
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "vapi-phone-1"}))
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&w.vapi.server)
        .await;
    let (x, y) = tokio::join!(w.patch(json!({"assistantId": NEW})), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        w.patch_with(&b, json!({"assistantId": OLD})).await
    });
    assert_eq!(x.0, 200, "{x:?}");
    assert_eq!(
        (y.0, y.1["error"]["code"].as_str()),
        (409, Some("update_in_progress")),
        "{y:?}"
    );
    assert_eq!(w.routing().await.0.as_deref(), Some(NEW));
}

#[tokio::test]
async fn another_orgs_or_an_inactive_number_is_refused_and_calls_nothing() {
    let w = World::new().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&w.vapi.server)
        .await;
    let other = w.t.org().await;
    let theirs =
        w.t.managed_number(other, "+14155550199", Some("vapi-z"))
            .await;
    let ev = w.event(w.org, &theirs.number, &json!({"assistantId": NEW}));
    let (status, body) = read_response(&handle(&w.state, ev.request()).await);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("number_not_found"))
    );
    w.t.client()
        .await
        .execute(
            "UPDATE managed_phone_numbers SET status = 'release_pending', release_requested_at = now() WHERE phone_number = $1",
            &[&w.n.number],
        )
        .await
        .unwrap();
    let (status, body) = w.patch(json!({"assistantId": NEW})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("number_not_active")),
        "{body}"
    );
    assert_eq!(w.routing().await.0.as_deref(), Some(OLD));
}

#[tokio::test]
async fn every_bad_input_is_4xx_and_changes_nothing() {
    let w = World::new().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&w.vapi.server)
        .await;
    let ok = json!({"assistantId": NEW});
    let cases: Vec<(&str, ApiEvent, u16, &str)> = vec![
        (
            "malformed JSON",
            w.event(w.org, &w.n.number, &ok)
                .header("content-type", "application/json")
                .body("{"),
            400,
            "malformed_json",
        ),
        (
            "missing assistant",
            w.event(w.org, &w.n.number, &json!({"name": "x"})),
            400,
            "invalid_body",
        ),
        (
            "bad assistant",
            w.event(w.org, &w.n.number, &json!({"assistantId": "asst_1"})),
            400,
            "invalid_body",
        ),
        (
            "null assistant",
            w.event(w.org, &w.n.number, &json!({"assistantId": null})),
            400,
            "invalid_body",
        ),
        (
            "unknown field",
            w.event(
                w.org,
                &w.n.number,
                &json!({"assistantId": NEW, "serverUrl": "x"}),
            ),
            400,
            "invalid_body",
        ),
        (
            "control char name",
            w.event(
                w.org,
                &w.n.number,
                &json!({"assistantId": NEW, "name": "a\u{7}"}),
            ),
            400,
            "invalid_body",
        ),
        (
            "bad number",
            w.event(w.org, "4155550100", &ok),
            400,
            "invalid_phone_number",
        ),
        (
            "double-encoded",
            w.event(w.org, "%252B14155550100", &ok),
            400,
            "invalid_phone_number",
        ),
        (
            "no scope",
            w.event(w.org, &w.n.number, &ok).scopes(&["telephony:read"]),
            403,
            "forbidden",
        ),
        (
            "no org",
            w.event(w.org, &w.n.number, &ok).without_claim("org_id"),
            401,
            "unauthenticated",
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
    assert_eq!(
        w.routing().await,
        (
            Some(OLD.into()),
            Some("Front desk".into()),
            false,
            Some(OLD.into())
        )
    );
    // The %2B form of a good number works.
    w.vapi.server.verify().await;
    w.vapi.server.reset().await;
    w.vapi_patch()
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "vapi-phone-1"})))
        .mount(&w.vapi.server)
        .await;
    let ev = w.event(w.org, "%2B14155550100", &ok);
    assert_eq!(read_response(&handle(&w.state, ev.request()).await).0, 200);
}

const THIRD: &str = "0d3e0000-0000-4000-8000-0000000000cc";

impl World {
    fn router<'a>(&'a self, state: &'a State) -> shared::routing::Router<'a> {
        shared::routing::Router {
            db: &state.db,
            vapi: &state.vapi,
            config: &state.steps,
        }
    }

    /// (route_attempts, given up, last error's code)
    async fn route_progress(&self) -> (i32, bool, Option<String>) {
        let r = self
            .t
            .client()
            .await
            .query_one(
                "SELECT route_attempts, route_gave_up_at IS NOT NULL, last_route_error->>'code'
                   FROM managed_phone_numbers WHERE phone_number = $1",
                &[&self.n.number],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    }
}

/// Issue 21, finding 3: a PATCH to NEW reached Vapi but its answer never came
/// (202, pending); the next change, to THIRD, is refused by Vapi. Before: the
/// database showed OLD as confirmed while Vapi routed to NEW, and reconcile never
/// sent anything again.
#[tokio::test]
async fn an_unconfirmed_change_then_a_refused_one_keeps_the_first_pending_until_confirmed() {
    let w = World::new().await;
    w.vapi_patch()
        .and(wiremock::matchers::body_partial_json(
            json!({"assistantId": NEW}),
        ))
        .respond_with(FakeVapi::error(503, "Service Unavailable"))
        .mount(&w.vapi.server)
        .await;
    w.vapi_patch()
        .and(wiremock::matchers::body_partial_json(
            json!({"assistantId": THIRD}),
        ))
        .respond_with(FakeVapi::error(
            400,
            "assistantId must be an existing assistant",
        ))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    assert_eq!(w.patch(json!({"assistantId": NEW})).await.0, 202);
    w.time_passes().await;
    let (status, body) = w.patch(json!({"assistantId": THIRD})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("vapi_refused_assistant")),
        "{body}"
    );
    assert_eq!(
        w.routing().await,
        (
            Some(NEW.into()),
            Some("Front desk".into()),
            true,
            Some(OLD.into())
        ),
        "NEW (which Vapi may route to) is still pending, not OLD confirmed"
    );
    w.vapi.server.verify().await;
    w.vapi.server.reset().await;
    w.vapi_patch()
        .and(body_json(json!({"assistantId": NEW, "name": "Front desk"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "vapi-phone-1"})))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    w.time_passes().await;
    assert_eq!(
        w.router(&w.state)
            .resume_one("reconcile", Duration::from_secs(600))
            .await
            .unwrap(),
        Some(shared::routing::RouteResumed::Confirmed)
    );
    assert_eq!(
        w.routing().await,
        (
            Some(NEW.into()),
            Some("Front desk".into()),
            false,
            Some(NEW.into())
        )
    );
}

/// Issue 21, finding 7: a change Vapi keeps failing gets backoff, an attempt limit
/// and a terminal state that status shows; reconcile then leaves it alone, and the
/// org's next change starts over. Before: sent every run, forever.
#[tokio::test]
async fn a_change_vapi_keeps_failing_is_given_up_after_the_limit_and_shown() {
    let w = World::new().await;
    let state = build_state_with(&w.t, &w.vapi, &w.aws, &[("RECONCILE_MAX_ATTEMPTS", "2")]).await;
    // 429: Vapi did not take it (the claim is let go at once).
    w.vapi_patch()
        .respond_with(FakeVapi::error(429, "Too Many Requests"))
        .mount(&w.vapi.server)
        .await;
    let (status, body) = w.patch_with(&state, json!({"assistantId": NEW})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (202, Some("vapi_rate_limited"))
    );
    assert!(!w.claimed().await, "a 429 was not applied: no claim kept");
    assert_eq!(
        w.route_progress().await,
        (1, false, Some("vapi_rate_limited".into()))
    );
    // Backoff: not due yet.
    w.t.client()
        .await
        .execute(
            "UPDATE managed_phone_numbers SET updated_at = now() - interval '2 minutes'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        w.router(&state)
            .resume_one("r0", Duration::from_secs(600))
            .await
            .unwrap(),
        None,
        "its backoff has not passed"
    );
    w.time_passes().await;
    assert_eq!(
        w.router(&state)
            .resume_one("r1", Duration::from_secs(600))
            .await
            .unwrap(),
        Some(shared::routing::RouteResumed::GaveUp)
    );
    assert_eq!(
        w.route_progress().await,
        (2, true, Some("vapi_rate_limited".into()))
    );
    w.time_passes().await;
    assert_eq!(
        w.router(&state)
            .resume_one("r2", Duration::from_secs(600))
            .await
            .unwrap(),
        None,
        "given up: reconcile leaves it alone"
    );
    // Status shows it.
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
    .caller(&w.org.to_string(), "user-1")
    .scopes(&["telephony:read"]);
    let (_, listed) = read_response(&list_numbers::handle(&list, ev.request()).await);
    let n = &listed["numbers"][0];
    assert_eq!(n["assistantPending"], true, "{n}");
    assert_eq!(
        n["assistantChange"],
        json!({"attempts": 2, "nextAttemptAt": null, "code": "vapi_rate_limited", "needsAttention": true})
    );
    // The org's next change starts over, and goes through.
    w.vapi.server.verify().await;
    w.vapi.server.reset().await;
    w.vapi_patch()
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "vapi-phone-1"})))
        .expect(1)
        .mount(&w.vapi.server)
        .await;
    assert_eq!(
        w.patch_with(&state, json!({"assistantId": THIRD})).await.0,
        200
    );
    assert_eq!(w.route_progress().await, (0, false, None));
}

/// Issue 21, finding 6: after an unknown outcome the claim is kept until it
/// expires, so a later change cannot be overtaken by a late copy of this one.
#[tokio::test]
async fn a_change_whose_answer_was_lost_holds_the_number_until_its_claim_expires() {
    let w = World::new().await;
    w.vapi_patch()
        .respond_with(FakeVapi::error(503, "Service Unavailable"))
        .mount(&w.vapi.server)
        .await;
    assert_eq!(w.patch(json!({"assistantId": NEW})).await.0, 202);
    let (status, body) = w.patch(json!({"assistantId": THIRD})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("update_in_progress")),
        "{body}"
    );
    assert_eq!(w.routing().await.0.as_deref(), Some(NEW));
}

/// Review of issue 21: a change reconcile resends to a number Vapi no longer has
/// is given up (shown, alarmed), not put back and resent every run.
#[tokio::test]
async fn a_resent_change_to_a_number_vapi_no_longer_has_is_given_up() {
    let w = World::new().await;
    w.vapi_patch()
        .respond_with(FakeVapi::error(503, "Service Unavailable"))
        .up_to_n_times(3)
        .mount(&w.vapi.server)
        .await;
    assert_eq!(w.patch(json!({"assistantId": NEW})).await.0, 202);
    w.vapi_patch()
        .respond_with(FakeVapi::error(404, "Phone number not found"))
        .mount(&w.vapi.server)
        .await;
    w.time_passes().await;
    assert_eq!(
        w.router(&w.state)
            .resume_one("r1", Duration::from_secs(600))
            .await
            .unwrap(),
        Some(shared::routing::RouteResumed::GaveUp)
    );
    let (_, gave_up, code) = w.route_progress().await;
    assert_eq!((gave_up, code.as_deref()), (true, Some("vapi_rejected")));
    w.time_passes().await;
    assert_eq!(
        w.router(&w.state)
            .resume_one("r2", Duration::from_secs(600))
            .await
            .unwrap(),
        None,
        "not resent every run"
    );
}

/// Review of issue 21: a change given up after an unanswered PATCH keeps its
/// claim until it expires, so the org's next change is not overtaken by a late
/// copy.
#[tokio::test]
async fn a_change_given_up_after_an_unanswered_patch_keeps_its_claim() {
    let w = World::new().await;
    let state = build_state_with(&w.t, &w.vapi, &w.aws, &[("RECONCILE_MAX_ATTEMPTS", "2")]).await;
    w.vapi_patch()
        .respond_with(FakeVapi::error(503, "Service Unavailable"))
        .mount(&w.vapi.server)
        .await;
    assert_eq!(
        w.patch_with(&state, json!({"assistantId": NEW})).await.0,
        202
    );
    w.time_passes().await;
    assert_eq!(
        w.router(&state)
            .resume_one("r1", Duration::from_secs(600))
            .await
            .unwrap(),
        Some(shared::routing::RouteResumed::GaveUp)
    );
    assert!(w.claimed().await, "kept while a late copy may land");
    let (status, body) = w.patch_with(&state, json!({"assistantId": THIRD})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("update_in_progress")),
        "{body}"
    );
}
