//! list-numbers end to end through API Gateway events and real Postgres.

use list_numbers::{State, handle};
use serde_json::{Value, json};
use shared::config::Env;
use shared::ids::OrgId;
use testkit::TestDb;
use testkit::event::{ApiEvent, read_response};

const ROUTE: &str = "/api/managed-telephony/status";

async fn setup() -> (TestDb, State) {
    let t = TestDb::new().await;
    let aws = testkit::aws_config().await;
    let url = t.reader_url();
    let state = State::from_env(&Env::from_pairs([("DATABASE_URL", url.as_str())]), &aws)
        .await
        .unwrap();
    (t, state)
}

/// A GET as a caller with the read scope.
async fn get(state: &State, org: OrgId, query: Option<&str>) -> (u16, Value) {
    let mut ev = ApiEvent::new("GET", ROUTE, ROUTE)
        .caller(&org.to_string(), "user-1")
        .scopes(&["telephony:read"]);
    if let Some(q) = query {
        ev = ev.query(q);
    }
    read_response(&handle(state, ev.request()).await)
}

async fn set_created(t: &TestDb, number: &str, minutes_ago: i32) {
    t.client()
        .await
        .execute(
            "UPDATE managed_phone_numbers SET created_at = now() - make_interval(mins => $2) WHERE phone_number = $1",
            &[&number, &minutes_ago],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn only_the_callers_numbers_newest_first_with_the_right_states() {
    let (t, state) = setup().await;
    let (org, other) = (t.org().await, t.org().await);
    t.managed_number(org, "+14155550100", Some("vapi-a")).await;
    t.managed_number(org, "+14155550101", Some("vapi-b")).await;
    t.managed_number(org, "+14155550102", None).await;
    t.managed_number(other, "+14155550199", Some("vapi-z"))
        .await;
    set_created(&t, "+14155550100", 30).await;
    set_created(&t, "+14155550101", 20).await;
    set_created(&t, "+14155550102", 10).await;
    let c = t.client().await;
    c.execute(
        "UPDATE managed_phone_numbers SET status = 'release_pending', release_attempts = 2,
                vapi_released_at = now(), release_requested_at = now(),
                last_release_error = '{\"twilio\": {\"code\": \"twilio_unavailable\", \"message\": \"provider text\"}}'
          WHERE phone_number = '+14155550101'",
        &[],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE managed_phone_numbers SET status = 'released', released_at = now(), vapi_released_at = now(),
                twilio_released_at = now() WHERE phone_number = '+14155550100'",
        &[],
    )
    .await
    .unwrap();

    let (status, body) = get(&state, org, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["credential"].is_null());
    let numbers = body["numbers"].as_array().unwrap();
    let listed: Vec<&str> = numbers
        .iter()
        .map(|n| n["phoneNumber"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["+14155550102", "+14155550101"],
        "newest first, released hidden, other org's absent"
    );
    assert_eq!(numbers[0]["status"], "active");
    assert_eq!(numbers[0]["vapiPhoneId"], Value::Null);
    assert!(numbers[0].get("release").is_none());
    assert_eq!(numbers[1]["status"], "release_pending");
    assert_eq!(
        numbers[1]["release"],
        json!({"pending": ["twilio"], "attempts": 2, "nextAttemptAt": null, "errors": {"twilio": "twilio_unavailable"}}),
        "codes only, never the provider's text"
    );
    assert!(
        numbers[1]["twilioPhoneSid"]
            .as_str()
            .unwrap()
            .starts_with("PN")
    );
    assert!(numbers[1]["createdAt"].as_str().unwrap().ends_with('Z'));

    let (status, body) = get(&state, org, Some("include=released")).await;
    assert_eq!(status, 200);
    let all: Vec<(&str, &str)> = body["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["phoneNumber"].as_str().unwrap(),
                n["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        all,
        [
            ("+14155550102", "active"),
            ("+14155550101", "release_pending"),
            ("+14155550100", "released")
        ]
    );
    assert!(body["numbers"][2]["releasedAt"].as_str().is_some());
}

#[tokio::test]
async fn the_credential_summary_never_carries_the_token() {
    let (t, state) = setup().await;
    let org = t.org().await;
    let c = t.client().await;
    c.execute(
        "INSERT INTO org_credentials (org_id, provider, source, encrypted_config, metadata)
         VALUES ($1, 'twilio', 'managed', '{\"v\":1,\"kid\":\"k\",\"edk\":\"ZWRr\",\"iv\":\"aXY=\",\"ct\":\"Y3Q=\"}',
                 '{\"accountSid\":\"AC0123456789abcdef0123456789abcdef\",\"phoneNumber\":\"+14155550100\"}')",
        &[&org.as_uuid()],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE organizations SET vapi_credential_id = 'vapi-cred-1', vapi_synced_at = now() WHERE id = $1",
        &[&org.as_uuid()],
    )
    .await
    .unwrap();
    let (status, body) = get(&state, org, None).await;
    assert_eq!(status, 200);
    let cred = &body["credential"];
    assert_eq!(cred["accountSid"], "AC0123456789abcdef0123456789abcdef");
    assert_eq!(cred["phoneNumber"], "+14155550100");
    assert_eq!(cred["source"], "managed");
    assert_eq!(cred["vapiCredentialId"], "vapi-cred-1");
    assert_eq!(cred["vapi"]["synced"], true);
    let keys: Vec<&String> = cred.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "accountSid",
            "phoneNumber",
            "source",
            "updatedAt",
            "vapi",
            "vapiCredentialId"
        ]
    );
    assert!(
        !body.to_string().contains("Y3Q="),
        "not even the ciphertext"
    );
    assert_eq!(body["numbers"], json!([]));
}

#[tokio::test]
async fn bad_queries_and_missing_identity_are_refused() {
    let (t, state) = setup().await;
    let org = t.org().await;
    for (q, code) in [
        ("include=all", "invalid_query_parameter"),
        (
            "include=released&include=released",
            "invalid_query_parameter",
        ),
        ("include=", "invalid_query_parameter"),
        ("page=2", "unknown_query_parameter"),
        ("orgId=someone-else", "unknown_query_parameter"),
    ] {
        let (status, body) = get(&state, org, Some(q)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{q}"
        );
    }
    let ev = ApiEvent::new("GET", ROUTE, ROUTE)
        .caller(&org.to_string(), "u")
        .scopes(&["telephony:read"])
        .without_claim("org_id");
    assert_eq!(read_response(&handle(&state, ev.request()).await).0, 401);
    // Reading needs no write scope.
    let (status, _) = get(&state, org, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn without_the_read_scope_it_is_403_and_shows_nothing() {
    let (t, state) = setup().await;
    let org = t.org().await;
    t.managed_number(org, "+14155550100", Some("vapi-a")).await;
    let before = t.dump().await;
    // No scopes at all, only the write scope (it does not imply reading), a
    // look-alike, and a read scope of another name in the `scope` claim.
    let base = || ApiEvent::new("GET", ROUTE, ROUTE).caller(&org.to_string(), "user-1");
    for (why, ev) in [
        ("no scope", base()),
        ("write only", base().scopes(&["telephony:write"])),
        ("look-alike", base().scopes(&["telephony:read-all"])),
        (
            "other claim",
            base().claim("scope", "openid telephony:write"),
        ),
    ] {
        let (status, body) = read_response(&handle(&state, ev.request()).await);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{why}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("telephony:read"),
            "{why}: {body}"
        );
        assert!(body.get("numbers").is_none() && body.get("credential").is_none());
        assert!(!body.to_string().contains("+14155550100"), "{why}: {body}");
    }
    assert_eq!(t.dump().await, before, "nothing changed");
    // The scope from the `scope` claim counts as well as the authorizer's list.
    let ev = base().claim("scope", "openid telephony:read");
    assert_eq!(read_response(&handle(&state, ev.request()).await).0, 200);
}

#[tokio::test]
async fn the_read_scope_is_configurable() {
    let t = TestDb::new().await;
    let aws = testkit::aws_config().await;
    let url = t.reader_url();
    let state = State::from_env(
        &Env::from_pairs([
            ("DATABASE_URL", url.as_str()),
            ("READ_SCOPE", "numbers/read"),
        ]),
        &aws,
    )
    .await
    .unwrap();
    let org = t.org().await;
    let ev = |scope: &str| {
        ApiEvent::new("GET", ROUTE, ROUTE)
            .caller(&org.to_string(), "user-1")
            .scopes(&[scope])
            .request()
    };
    assert_eq!(
        read_response(&handle(&state, ev("numbers/read")).await).0,
        200
    );
    assert_eq!(
        read_response(&handle(&state, ev("telephony:read")).await).0,
        403
    );
}
