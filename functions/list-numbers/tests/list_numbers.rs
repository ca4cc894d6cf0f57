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

/// The status query before it returned plain columns: the server built the JSON
/// (`jsonb_build_object`/`jsonb_agg`). Kept here as the reference the flat rows
/// and [`shared::numbers::status`]'s assembly must reproduce, state by state.
const SERVER_BUILT_STATUS_SQL: &str = r#"SELECT
    (SELECT jsonb_build_object(
            'accountSid', cr.metadata->>'accountSid',
            'phoneNumber', cr.metadata->>'phoneNumber',
            'source', cr.source,
            'vapiCredentialId', o.vapi_credential_id,
            'updatedAt', cr.updated_at,
            'vapi', jsonb_build_object(
                'synced', o.vapi_credential_id IS NOT NULL
                          AND o.synced_generation = o.sync_generation,
                'syncedAt', o.vapi_synced_at,
                'code', CASE WHEN o.synced_generation < o.sync_generation THEN
                    CASE WHEN o.sync_lease_until >= now() THEN 'sync_in_progress'
                         ELSE coalesce(o.vapi_sync_error, 'sync_unfinished') END END))
       FROM org_credentials cr JOIN organizations o ON o.id = cr.org_id
      WHERE cr.org_id = $1 AND cr.provider = 'twilio' AND cr.is_active),
    (SELECT coalesce(jsonb_agg(jsonb_build_object(
            'phoneNumber', n.phone_number,
            'status', n.status,
            'vapiPhoneId', n.vapi_phone_id,
            'twilioPhoneSid', n.twilio_phone_sid,
            'assistantId', n.assistant_id,
            'name', n.display_name,
            'assistantPending', n.assistant_pending,
            'createdAt', n.created_at,
            'releasedAt', n.released_at,
            'release', CASE WHEN n.status IN ('releasing', 'release_pending', 'needs_attention') THEN
                jsonb_build_object(
                    'pending', to_jsonb(array_remove(ARRAY[
                        CASE WHEN n.vapi_phone_id IS NOT NULL AND n.vapi_released_at IS NULL THEN 'vapi' END,
                        CASE WHEN n.twilio_released_at IS NULL THEN 'twilio' END], NULL)),
                    'attempts', n.release_attempts,
                    'nextAttemptAt', CASE WHEN n.status = 'release_pending' THEN n.next_attempt_at END,
                    'errors', coalesce((SELECT jsonb_object_agg(step, err->'code')
                                          FROM jsonb_each(n.last_release_error) AS e(step, err)),
                                       '{}'::jsonb))
            END,
            'purchase', CASE WHEN n.status = 'provisioning' THEN
                jsonb_build_object(
                    'pending', to_jsonb(array_remove(ARRAY[
                        CASE WHEN n.twilio_subaccount_sid IS NULL THEN 'subaccount' END,
                        CASE WHEN n.bought_at IS NULL THEN 'twilio' END,
                        CASE WHEN n.imported_at IS NULL THEN 'vapi' END], NULL)),
                    'attempts', n.purchase_attempts,
                    'nextAttemptAt', CASE WHEN n.claim_token IS NULL THEN n.next_attempt_at END,
                    'errors', coalesce((SELECT jsonb_object_agg(step, err->'code')
                                          FROM jsonb_each(n.last_purchase_error) AS e(step, err)),
                                       '{}'::jsonb))
            END,
            'assistantChange', CASE WHEN n.status = 'active' AND n.assistant_pending THEN
                jsonb_build_object(
                    'attempts', n.route_attempts,
                    'nextAttemptAt', CASE WHEN n.route_gave_up_at IS NULL THEN n.next_route_attempt_at END,
                    'code', n.last_route_error->>'code',
                    'needsAttention', n.route_gave_up_at IS NOT NULL)
            END)
            ORDER BY n.created_at DESC, n.id), '[]'::jsonb)
       FROM managed_phone_numbers n
      WHERE n.org_id = $1 AND ($2 OR n.status <> 'released'))"#;

/// What the server-built query gives for `org`, through the same types.
async fn reference_status(t: &TestDb, org: OrgId, with_released: bool) -> Value {
    let row = t
        .client()
        .await
        .query_one(SERVER_BUILT_STATUS_SQL, &[&org.as_uuid(), &with_released])
        .await
        .unwrap();
    let credential: Option<Value> = row.get(0);
    let numbers: Value = row.get(1);
    serde_json::to_value(shared::numbers::Status {
        credential: credential.map(|c| serde_json::from_value(c).unwrap()),
        numbers: serde_json::from_value(numbers).unwrap(),
        // The old SQL knew no offboarding (none of these orgs asked for one).
        offboarding: None,
        // Nor token rotations (none of these orgs had one).
        token_rotation: None,
    })
    .unwrap()
}

#[tokio::test]
async fn every_state_reads_as_the_server_built_json_did() {
    let (t, state) = setup().await;
    let (org, synced_org, stale_org, bare_org) =
        (t.org().await, t.org().await, t.org().await, t.org().await);
    let c = t.client().await;
    for (i, (o, source)) in [(org, "managed"), (synced_org, "byoc"), (stale_org, "byoc")]
        .into_iter()
        .enumerate()
    {
        c.execute(
            "INSERT INTO org_credentials (org_id, provider, source, encrypted_config, metadata)
             VALUES ($1, 'twilio', $2, '{\"v\":1,\"kid\":\"k\",\"edk\":\"ZWRr\",\"iv\":\"aXY=\",\"ct\":\"Y3Q=\"}',
                     jsonb_build_object('accountSid', 'AC0123456789abcdef0123456789abcde' || $3::text,
                                        'phoneNumber', '+1415555010' || $3::text))",
            &[&o.as_uuid(), &source, &i.to_string()],
        )
        .await
        .unwrap();
    }
    // The first org's Vapi mirror is behind with a live lease; the second's is current.
    c.execute(
        "UPDATE organizations SET vapi_credential_id = 'vapi-cred-1', vapi_synced_at = now() - interval '1 hour',
                sync_generation = 3, synced_generation = 2,
                sync_lease_token = gen_random_uuid(), sync_lease_until = now() + interval '1 minute'
          WHERE id = $1",
        &[&org.as_uuid()],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE organizations SET vapi_credential_id = 'vapi-cred-2', vapi_synced_at = now(),
                sync_generation = 1, synced_generation = 1 WHERE id = $1",
        &[&synced_org.as_uuid()],
    )
    .await
    .unwrap();

    // The third org's mirror is behind and its lease expired, with a recorded error,
    // never synced (no Vapi id); its slot's metadata lacks the account SID.
    c.execute(
        "UPDATE organizations SET sync_generation = 2, synced_generation = 1,
                sync_lease_token = gen_random_uuid(), sync_lease_until = now() - interval '1 minute',
                vapi_sync_error = 'vapi_unavailable' WHERE id = $1",
        &[&stale_org.as_uuid()],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE org_credentials SET metadata = metadata - 'accountSid' WHERE org_id = $1",
        &[&stale_org.as_uuid()],
    )
    .await
    .unwrap();

    // One number in every state, with the columns each state's progress reads.
    let states = [
        (
            "+14155550110",
            Some("vapi-a"),
            "UPDATE managed_phone_numbers SET assistant_id = '0d3e0000-0000-4000-8000-0000000000aa',
                    display_name = 'Front desk', assistant_pending = true, route_attempts = 2,
                    next_route_attempt_at = now() + interval '2 minutes',
                    last_route_error = '{\"code\": \"vapi_timeout\", \"status\": null}'",
        ),
        (
            "+14155550119",
            Some("vapi-h"),
            "UPDATE managed_phone_numbers SET assistant_id = '0d3e0000-0000-4000-8000-0000000000bb',
                    assistant_pending = true, route_attempts = 8, route_gave_up_at = now(),
                    next_route_attempt_at = now() + interval '1 hour',
                    last_route_error = '{\"code\": \"vapi_rejected\", \"status\": 400}'",
        ),
        (
            "+14155550111",
            Some("vapi-b"),
            "UPDATE managed_phone_numbers SET status = 'releasing', claim_token = gen_random_uuid(),
                    claimed_until = now() + interval '1 minute', release_attempts = 1,
                    next_attempt_at = now(), last_release_error = '{\"vapi\": {\"message\": \"no code\"}}'",
        ),
        (
            "+14155550112",
            Some("vapi-c"),
            "UPDATE managed_phone_numbers SET status = 'release_pending', vapi_released_at = now(),
                    release_attempts = 2, next_attempt_at = now() + interval '5 minutes',
                    last_release_error = '{\"twilio\": {\"code\": \"twilio_unavailable\", \"message\": \"provider text\"}}'",
        ),
        (
            "+14155550113",
            None,
            "UPDATE managed_phone_numbers SET status = 'needs_attention', release_attempts = 8,
                    next_attempt_at = now(),
                    last_release_error = '{\"twilio\": {\"code\": \"twilio_error\"}, \"vapi\": {\"code\": \"vapi_error\"}}'",
        ),
        (
            "+14155550114",
            Some("vapi-e"),
            "UPDATE managed_phone_numbers SET status = 'released', released_at = now(),
                    vapi_released_at = now(), twilio_released_at = now()",
        ),
        (
            "+14155550115",
            None,
            "UPDATE managed_phone_numbers SET status = 'provisioning', twilio_phone_sid = NULL,
                    twilio_subaccount_sid = NULL, operation_id = gen_random_uuid(), purchase_attempts = 3,
                    next_attempt_at = now() + interval '2 minutes',
                    last_purchase_error = '{\"subaccount\": {\"code\": \"twilio_unavailable\", \"message\": \"x\"}}'",
        ),
        (
            "+14155550116",
            Some("vapi-g"),
            "UPDATE managed_phone_numbers SET status = 'provisioning', operation_id = gen_random_uuid(),
                    bought_at = now(), claim_token = gen_random_uuid(), claimed_until = now() + interval '1 minute',
                    next_attempt_at = now()",
        ),
    ];
    for (minutes_ago, (number, vapi, update)) in (10..).zip(states) {
        t.managed_number(org, number, vapi).await;
        c.execute(&format!("{update} WHERE phone_number = $1"), &[&number])
            .await
            .unwrap();
        set_created(&t, number, minutes_ago).await;
    }
    // Two numbers created in the same instant: the id breaks the tie.
    t.managed_number(org, "+14155550117", None).await;
    t.managed_number(org, "+14155550118", None).await;
    c.execute(
        "UPDATE managed_phone_numbers SET created_at = '2026-01-01T00:00:00Z'
          WHERE phone_number IN ('+14155550117', '+14155550118')",
        &[],
    )
    .await
    .unwrap();

    for (o, query, with_released) in [
        (org, None, false),
        (org, Some("include=released"), true),
        (synced_org, None, false),
        (stale_org, None, false),
        (bare_org, Some("include=released"), true),
    ] {
        let (status, body) = get(&state, o, query).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            reference_status(&t, o, with_released).await,
            "{query:?}"
        );
    }
    let (_, body) = get(&state, org, Some("include=released")).await;
    assert_eq!(body["numbers"].as_array().unwrap().len(), 10);
    let changes: Vec<&Value> = body["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.get("assistantChange"))
        .collect();
    assert_eq!(changes.len(), 2, "{body}");
    assert!(
        changes.iter().any(|c| c["needsAttention"] == true
            && c["code"] == "vapi_rejected"
            && c["nextAttemptAt"].is_null()),
        "{changes:?}"
    );
    assert_eq!(body["credential"]["vapi"]["code"], "sync_in_progress");
    let (_, body) = get(&state, stale_org, None).await;
    assert_eq!(body["credential"]["vapi"]["code"], "vapi_unavailable");
    assert_eq!(body["credential"]["accountSid"], Value::Null);
}
