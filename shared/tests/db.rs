//! The schema's constraints, migrations, and connection behaviour behind a proxy.

use std::net::SocketAddr;
use std::time::Duration;

use shared::db::{Db, DbError};
use testkit::TestDb;
use testkit::relay::TcpRelay;
use tokio_postgres::types::Type;

const PN1: &str = "PN0123456789abcdef0123456789abcdef";
const PN2: &str = "PN1123456789abcdef0123456789abcdef";
const SUB: &str = "AC0123456789abcdef0123456789abcdef";

async fn insert_number(
    c: &tokio_postgres::Client,
    org: uuid::Uuid,
    number: &str,
    pn: &str,
) -> Result<u64, tokio_postgres::Error> {
    c.execute(
        "INSERT INTO managed_phone_numbers (org_id, phone_number, twilio_phone_sid, twilio_subaccount_sid, vapi_phone_id)
         VALUES ($1, $2, $3, $4, 'vapi-phone-1')",
        &[&org, &number, &pn, &SUB],
    )
    .await
}

fn constraint_of(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .and_then(|d| d.constraint())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let t = TestDb::new().await;
    let again = shared::migrate::run(&t.owner_db()).await.unwrap();
    assert!(again.is_empty(), "nothing left to apply: {again:?}");
}

#[tokio::test]
async fn a_number_has_one_owner_until_released() {
    let t = TestDb::new().await;
    let (a, b) = (t.org().await.as_uuid(), t.org().await.as_uuid());
    let c = t.client().await;
    insert_number(&c, a, "+14155550100", PN1).await.unwrap();
    let e = insert_number(&c, b, "+14155550100", PN2).await.unwrap_err();
    assert_eq!(constraint_of(&e), "managed_phone_numbers_one_owner");

    // Pending release: still owned, still exclusive.
    c.execute(
        "UPDATE managed_phone_numbers SET status = 'release_pending'",
        &[],
    )
    .await
    .unwrap();
    assert!(insert_number(&c, b, "+14155550100", PN2).await.is_err());

    // Released (both steps done): the number may be bought again by another org.
    c.execute(
        "UPDATE managed_phone_numbers SET status = 'released', released_at = now(),
                twilio_released_at = now(), vapi_released_at = now()",
        &[],
    )
    .await
    .unwrap();
    insert_number(&c, b, "+14155550100", PN2).await.unwrap();
}

#[tokio::test]
async fn released_requires_both_provider_steps() {
    let t = TestDb::new().await;
    let org = t.org().await.as_uuid();
    let c = t.client().await;
    insert_number(&c, org, "+14155550101", PN1).await.unwrap();
    let e = c
        .execute(
            "UPDATE managed_phone_numbers SET status = 'released', released_at = now(), vapi_released_at = now()",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(constraint_of(&e), "released_only_when_both_steps_done");
    let e = c
        .execute("UPDATE managed_phone_numbers SET status = 'released'", &[])
        .await
        .unwrap_err();
    assert_eq!(constraint_of(&e), "released_iff_released_at");
    let e = c
        .execute("UPDATE managed_phone_numbers SET status = 'releasing'", &[])
        .await
        .unwrap_err();
    assert_eq!(constraint_of(&e), "releasing_has_claim");
}

#[tokio::test]
async fn formats_and_enums_are_checked() {
    let t = TestDb::new().await;
    let org = t.org().await.as_uuid();
    let c = t.client().await;
    assert!(insert_number(&c, org, "14155550100", PN1).await.is_err());
    assert!(
        insert_number(&c, org, "+14155550100", "PNxyz")
            .await
            .is_err()
    );
    let bad_status = c
        .execute(
            "INSERT INTO managed_phone_numbers (org_id, phone_number, twilio_phone_sid, twilio_subaccount_sid, status)
             VALUES ($1, '+14155550102', $2, $3, 'gone')",
            &[&org, &PN1, &SUB],
        )
        .await;
    assert!(bad_status.is_err());
    let bad_source = c
        .execute(
            "INSERT INTO org_credentials (org_id, provider, source, encrypted_config)
             VALUES ($1, 'twilio', 'borrowed', '{\"v\":1,\"kid\":\"k\",\"edk\":\"\",\"iv\":\"\",\"ct\":\"\"}')",
            &[&org],
        )
        .await;
    assert!(bad_source.is_err());
}

#[tokio::test]
async fn one_credential_slot_per_org_and_no_token_in_metadata() {
    let t = TestDb::new().await;
    let org = t.org().await.as_uuid();
    let c = t.client().await;
    let insert = "INSERT INTO org_credentials (org_id, provider, source, encrypted_config, metadata)
                  VALUES ($1, 'twilio', 'byoc', '{\"v\":1,\"kid\":\"k\",\"edk\":\"\",\"iv\":\"\",\"ct\":\"\"}', $2)";
    let meta = serde_json::json!({"accountSid": SUB, "phoneNumber": "+14155550100"});
    c.execute(insert, &[&org, &meta]).await.unwrap();
    let e = c.execute(insert, &[&org, &meta]).await.unwrap_err();
    assert_eq!(constraint_of(&e), "org_credentials_one_slot");
    let other = t.org().await.as_uuid();
    let leaky = serde_json::json!({"accountSid": SUB, "authToken": "x"});
    assert!(c.execute(insert, &[&other, &leaky]).await.is_err());
}

#[tokio::test]
async fn a_number_routes_to_one_org() {
    let t = TestDb::new().await;
    let (a, b) = (t.org().await.as_uuid(), t.org().await.as_uuid());
    let c = t.client().await;
    let insert = "INSERT INTO phone_number_mapping (org_id, inbound_phone_number) VALUES ($1, '+14155550100')";
    c.execute(insert, &[&a]).await.unwrap();
    let e = c.execute(insert, &[&b]).await.unwrap_err();
    assert_eq!(constraint_of(&e), "phone_number_mapping_one_route");
}

#[tokio::test]
async fn the_audit_log_is_append_only() {
    let t = TestDb::new().await;
    let org = t.org().await;
    let caller = shared::identity::Caller::from_claims(
        &[
            ("org_id".to_string(), org.to_string()),
            ("sub".to_string(), "user-1".to_string()),
        ]
        .into_iter()
        .collect(),
        None,
        &Default::default(),
    )
    .unwrap();
    t.db.transaction(async |tx| {
        shared::audit::record(
            tx,
            &shared::audit::AuditEntry {
                caller: &caller,
                action: "credential.save",
                target: SUB,
                request_id: "req-1",
                outcome: "saved",
                detail: serde_json::json!({}),
            },
        )
        .await
        .map_err(DbError::from)
    })
    .await
    .unwrap();
    let c = t.client().await;
    let row = c
        .query_one(
            "SELECT actor, action, target, request_id FROM audit_log",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "user-1");
    assert_eq!(row.get::<_, String>(2), SUB);
    assert!(
        c.execute("UPDATE audit_log SET outcome = 'x'", &[])
            .await
            .is_err()
    );
    assert!(c.execute("DELETE FROM audit_log", &[]).await.is_err());
    assert!(c.execute("TRUNCATE audit_log", &[]).await.is_err());
}

#[tokio::test]
async fn a_failed_transaction_leaves_nothing() {
    let t = TestDb::new().await;
    let org = t.org().await.as_uuid();
    let r: Result<(), DbError> = t
        .db
        .transaction(async |tx| {
            tx.query_typed(
                "INSERT INTO phone_number_mapping (org_id, inbound_phone_number) VALUES ($1, '+14155550100')",
                &[(&org, Type::UUID)],
            )
            .await?;
            tx.query_typed("SELECT 1/0", &[]).await?;
            Ok(())
        })
        .await;
    assert!(r.is_err());
    let n: i64 = t
        .client()
        .await
        .query_one("SELECT count(*) FROM phone_number_mapping", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

async fn backend_pid(db: &Db) -> i32 {
    db.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn one_connection_reused_across_requests() {
    let t = TestDb::new().await;
    let first = backend_pid(&t.db).await;
    for _ in 0..5 {
        assert_eq!(backend_pid(&t.db).await, first);
    }
    assert_eq!(t.db.status().size, 1);
}

#[tokio::test]
async fn reconnects_after_pg_terminate_backend() {
    let t = TestDb::new().await;
    let admin = t.client().await;
    // Repeated: whether the client sees the close before its next query (closed) or
    // as the answer to it (57P01 admin_shutdown) is a race; both must recover.
    let mut pid = backend_pid(&t.db).await;
    for _ in 0..5 {
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        let next = backend_pid(&t.db).await;
        assert_ne!(pid, next);
        pid = next;
    }
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let tx_pid: i32 =
        t.db.transaction(async |tx| {
            Ok::<_, DbError>(
                tx.query_typed_one("SELECT pg_backend_pid()", &[])
                    .await?
                    .get(0),
            )
        })
        .await
        .unwrap();
    assert_ne!(tx_pid, pid);
}

async fn db_via_relay(t: &TestDb) -> (TcpRelay, Db) {
    let target: SocketAddr = format!("{}:{}", t.config.host, t.config.port)
        .parse()
        .unwrap();
    let relay = TcpRelay::start(target).await;
    let db = Db::new(&t.config_via(relay.port)).unwrap();
    (relay, db)
}

#[tokio::test]
async fn a_silently_dropped_connection_is_retried_once_for_a_read() {
    let t = TestDb::new().await;
    let (relay, db) = db_via_relay(&t).await;
    let first = backend_pid(&db).await;
    // The proxy dropped the connection while the instance was frozen: it still looks
    // open, and the next query is answered with a reset.
    relay.cut_silently();
    let second = backend_pid(&db).await;
    assert_ne!(first, second);
}

#[tokio::test]
async fn a_silently_dropped_connection_is_retried_at_begin() {
    let t = TestDb::new().await;
    let (relay, db) = db_via_relay(&t).await;
    let first = backend_pid(&db).await;
    relay.cut_silently();
    let org = t.org().await.as_uuid();
    let pid: i32 = db
        .transaction(async |tx| {
            tx.query_typed(
                "INSERT INTO phone_number_mapping (org_id, inbound_phone_number) VALUES ($1, '+14155550199')",
                &[(&org, Type::UUID)],
            )
            .await?;
            Ok::<_, DbError>(tx.query_typed_one("SELECT pg_backend_pid()", &[]).await?.get(0))
        })
        .await
        .unwrap();
    assert_ne!(pid, first);
    let n: i64 = t
        .client()
        .await
        .query_one("SELECT count(*) FROM phone_number_mapping", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the retried transaction ran exactly once");
}

#[tokio::test]
async fn a_reset_connection_is_replaced() {
    let t = TestDb::new().await;
    let (relay, db) = db_via_relay(&t).await;
    let first = backend_pid(&db).await;
    relay.cut_now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = backend_pid(&db).await;
    assert_ne!(first, second);
}

#[tokio::test]
async fn only_one_retry() {
    let t = TestDb::new().await;
    let (relay, db) = db_via_relay(&t).await;
    backend_pid(&db).await;
    assert_eq!(relay.accepted(), 1);
    // The pooled connection is dead and so is every new one: the error surfaces after
    // exactly one reconnect.
    relay.cut_silently();
    relay.refuse_new(true);
    let r = db.query("SELECT 1", &[]).await;
    assert!(r.is_err());
    assert_eq!(relay.accepted(), 2, "one reconnect, not more");
    relay.refuse_new(false);
    backend_pid(&db).await;
}

#[tokio::test]
async fn connections_older_than_max_lifetime_are_replaced() {
    let t = TestDb::new().await;
    let mut cfg = t.config.clone();
    cfg.max_lifetime = Duration::from_millis(200);
    let db = Db::new(&cfg).unwrap();
    let first = backend_pid(&db).await;
    assert_eq!(backend_pid(&db).await, first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ne!(backend_pid(&db).await, first);
}

#[tokio::test]
async fn no_session_state_is_left_behind() {
    // query_typed uses unnamed statements: nothing prepared survives a request,
    // so RDS Proxy never has to pin the connection.
    let t = TestDb::new().await;
    let org = t.org().await.as_uuid();
    for _ in 0..3 {
        t.db.query(
            "SELECT count(*) FROM organizations WHERE id = $1",
            &[(&org, Type::UUID)],
        )
        .await
        .unwrap();
    }
    let prepared: i64 =
        t.db.query_one("SELECT count(*) FROM pg_prepared_statements", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(prepared, 0);
}

/// Every constraint `shared::error::constraint_error` maps, violated for real
/// through the pool the routes use, answers its 4xx and stable code (never a 500).
#[tokio::test]
async fn each_reachable_constraint_maps_to_a_stable_4xx() {
    use shared::ApiError;
    let t = TestDb::new().await;
    let org = t.org().await;
    let other = t.org().await;
    let n = t.managed_number(org, "+14155550100", None).await;
    let violation = async |sql: &str| -> ApiError {
        let e =
            t.db.query(sql, &[])
                .await
                .expect_err("violates a constraint");
        assert!(e.constraint().is_some(), "{e}");
        ApiError::from(e)
    };
    let cases = [
        (
            format!(
                "INSERT INTO managed_phone_numbers (org_id, phone_number, twilio_phone_sid, twilio_subaccount_sid)
                 VALUES ('{other}', '{}', '{PN2}', '{SUB}')",
                n.number
            ),
            409,
            "number_taken",
        ),
        (
            format!(
                "INSERT INTO phone_number_mapping (org_id, inbound_phone_number) VALUES ('{other}', '{}')",
                n.number
            ),
            409,
            "number_already_routed",
        ),
        (
            format!(
                "INSERT INTO audit_log (org_id, actor, action, target, request_id, outcome)
                 VALUES ('{org}', '{}', 'x', 't', 'r', 'ok')",
                "u".repeat(257)
            ),
            401,
            "unrecordable_subject",
        ),
        (
            format!(
                "INSERT INTO audit_log (org_id, actor, action, target, request_id, outcome)
                 VALUES ('{org}', 'u', 'x', '{}', 'r', 'ok')",
                "t".repeat(65)
            ),
            422,
            "unrecordable_value",
        ),
        (
            format!(
                "INSERT INTO org_credentials (org_id, provider, source, encrypted_config, metadata)
                 VALUES ('{org}', 'twilio', 'byoc', '{{\"v\":1,\"kid\":\"k\",\"edk\":\"e\",\"iv\":\"i\",\"ct\":\"c\"}}',
                         '{{\"authToken\":\"x\"}}')"
            ),
            422,
            "unrecordable_value",
        ),
    ];
    for (sql, status, code) in cases {
        let api = violation(&sql).await;
        assert_eq!((api.status().as_u16(), api.code()), (status, code), "{sql}");
    }
    // A second slot for one org: the unique constraint, should a plain INSERT race
    // the upsert.
    let slot = format!(
        "INSERT INTO org_credentials (org_id, provider, source, encrypted_config)
         VALUES ('{org}', 'twilio', 'byoc', '{{\"v\":1,\"kid\":\"k\",\"edk\":\"e\",\"iv\":\"i\",\"ct\":\"c\"}}')"
    );
    t.db.query(&slot, &[]).await.unwrap();
    let api = violation(&slot).await;
    assert_eq!(
        (api.status().as_u16(), api.code()),
        (409, "credential_slot_taken")
    );
    // A constraint only a bug can reach stays a 500.
    let api = violation(&format!(
        "UPDATE managed_phone_numbers SET status = 'released', released_at = now() WHERE phone_number = '{}'",
        n.number
    ))
    .await;
    assert_eq!(api.status().as_u16(), 500);
}

#[tokio::test]
async fn the_cold_start_connection_is_the_one_the_first_request_uses() {
    let t = TestDb::new().await;
    let (relay, db) = db_via_relay(&t).await;
    db.connect_at_cold_start(Duration::from_secs(3)).await;
    assert_eq!(
        (db.status().size, db.status().available),
        (1, 1),
        "open and back in the pool"
    );
    assert_eq!(relay.accepted(), 1);
    let first = backend_pid(&db).await;
    let _ = backend_pid(&db).await;
    assert_eq!(relay.accepted(), 1, "the first request connected no more");
    // A connection the proxy dropped while the instance waited for its first request
    // is replaced by the usual retry.
    relay.cut_silently();
    assert_ne!(backend_pid(&db).await, first);
}

#[tokio::test]
async fn a_database_down_at_cold_start_is_left_to_the_first_request() {
    let t = TestDb::new().await;
    let (relay, db) = db_via_relay(&t).await;
    relay.refuse_new(true);
    let started = std::time::Instant::now();
    db.connect_at_cold_start(Duration::from_secs(3)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused, not waited for"
    );
    assert_eq!(db.status().size, 0);
    relay.refuse_new(false);
    backend_pid(&db).await;
    assert_eq!(db.status().size, 1);
}

#[tokio::test]
async fn a_database_that_does_not_answer_at_cold_start_is_waited_for_within_the_bound() {
    // A listener that accepts and never speaks: the login never completes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let t = TestDb::new().await;
    let db = Db::new(&t.config_via(port)).unwrap();
    let started = std::time::Instant::now();
    db.connect_at_cold_start(Duration::from_millis(300)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    hold.abort();
}

#[tokio::test]
async fn the_warm_up_runs_at_cold_start_on_the_connection_the_first_request_uses() {
    let t = TestDb::new().await;
    let (relay, db) = db_via_relay(&t).await;
    let warmed_on = std::sync::Mutex::new(None);
    db.warm_up_at_cold_start(Duration::from_secs(3), async |db: &Db| {
        *warmed_on.lock().unwrap() = Some(backend_pid(db).await);
        Ok(())
    })
    .await;
    let warmed_on = warmed_on.lock().unwrap().expect("the warm-up ran");
    assert_eq!((db.status().size, db.status().available), (1, 1));
    assert_eq!(backend_pid(&db).await, warmed_on, "the same backend");
    assert_eq!(relay.accepted(), 1);
}

#[tokio::test]
async fn a_failed_warm_up_leaves_the_connection_to_the_first_request() {
    let t = TestDb::new().await;
    let (relay, db) = db_via_relay(&t).await;
    db.warm_up_at_cold_start(Duration::from_secs(3), async |db: &Db| {
        db.query("SELECT * FROM no_such_table", &[]).await.map(drop)
    })
    .await;
    assert_eq!((db.status().size, db.status().available), (1, 1));
    backend_pid(&db).await;
    assert_eq!(
        relay.accepted(),
        1,
        "the connection outlived the failed statement"
    );
}

#[tokio::test]
async fn a_warm_up_slower_than_the_bound_is_abandoned() {
    let t = TestDb::new().await;
    let (_relay, db) = db_via_relay(&t).await;
    let started = std::time::Instant::now();
    db.warm_up_at_cold_start(Duration::from_millis(500), async |db: &Db| {
        db.query("SELECT pg_sleep(5)", &[]).await.map(drop)
    })
    .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // The abandoned statement's connection is taken out of the pool, not handed to
    // the first request, which would wait behind the statement: it gets a fresh one.
    assert_eq!(db.status().size, 0);
    let started = std::time::Instant::now();
    backend_pid(&db).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_warm_ups_change_nothing_and_each_login_may_run_its_own() {
    let t = TestDb::new().await;
    let c = t.client().await;
    // Bait for a warm-up bound wrongly: a number of the nil org (a token may name
    // it), a change Vapi never confirmed (what the update claim takes without an
    // org), a release that is due (what reconcile's claim takes).
    let nil = shared::ids::OrgId::new(uuid::Uuid::nil());
    c.execute(
        "INSERT INTO organizations (id, name) VALUES ($1, 'nil')",
        &[&nil.as_uuid()],
    )
    .await
    .unwrap();
    t.managed_number(nil, "+14155550199", Some("vapi-nil"))
        .await;
    let org = t.org().await;
    t.managed_number(org, "+14155550100", Some("vapi-a")).await;
    t.managed_number(org, "+14155550101", Some("vapi-b")).await;
    c.execute(
        "UPDATE managed_phone_numbers SET assistant_pending = true,
                updated_at = now() - interval '1 day' WHERE phone_number = '+14155550100'",
        &[],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE managed_phone_numbers SET status = 'release_pending', release_attempts = 1,
                next_attempt_at = now() - interval '1 hour', updated_at = now() - interval '1 day'
          WHERE phone_number = '+14155550101'",
        &[],
    )
    .await
    .unwrap();
    let before = t.dump().await;
    let config = shared::steps::StepsConfig::default();
    // A failure would only be logged at cold start, so each is asserted here, as
    // the login its routes use (list-numbers has no warm-up since issue 26).
    let route = t.second_instance();
    shared::release::warm_up(&route, &config).await.unwrap();
    shared::routing::warm_up(&route, &config).await.unwrap();
    assert_eq!(t.dump().await, before, "no row changed");
    // Nothing left on the connections that would pin them at the proxy: no
    // prepared statement, no open transaction (in one, now() would be its start,
    // before the warm-ups ended).
    let ended: chrono::DateTime<chrono::Utc> = c
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .unwrap()
        .get(0);
    let row = route
        .query_one(
            "SELECT (SELECT count(*) FROM pg_prepared_statements), now() >= $1",
            &[(&ended, Type::TIMESTAMPTZ)],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, bool>(1)), (0, true));
    // The warm-ups' number, `+0`, is one no row can hold.
    let refused = c
        .execute(
            "UPDATE managed_phone_numbers SET phone_number = '+0' WHERE org_id = $1",
            &[&org.as_uuid()],
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.as_db_error().and_then(|e| e.constraint()),
        Some("managed_phone_numbers_phone_number_check")
    );
}
