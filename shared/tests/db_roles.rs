//! Least privilege in the database (migration V4, `shared::migrate`): the routes' login
//! can change what the routes change and nothing else; list-numbers' login only reads,
//! and not the sealed credential; migration runs exclude each other.

use shared::db::Db;
use shared::migrate::{Grant, Login, LoginAuth};
use testkit::TestDb;
use tokio_postgres::error::SqlState;

/// What the server answered to `sql` run as `cfg`'s login.
async fn refusal(t: &TestDb, cfg: &shared::db::DbConfig, sql: &str) -> Option<SqlState> {
    let c = t.client_as(cfg).await;
    match c.batch_execute(sql).await {
        Ok(()) => None,
        Err(e) => Some(
            e.code()
                .cloned()
                .expect("a server error, not a lost connection"),
        ),
    }
}

async fn seeded(t: &TestDb) -> String {
    let org = t.org().await;
    t.managed_number(org, "+14155550100", Some("vapi-1")).await;
    t.client()
        .await
        .execute(
            "INSERT INTO audit_log (org_id, actor, action, target, request_id, outcome)
             VALUES ($1, 'u', 'release', '+14155550100', 'r', 'released')",
            &[&org.as_uuid()],
        )
        .await
        .unwrap();
    org.to_string()
}

#[tokio::test]
async fn the_route_login_cannot_alter_the_schema_or_the_audit_log() {
    let t = TestDb::new().await;
    seeded(&t).await;
    let denied = Some(SqlState::INSUFFICIENT_PRIVILEGE);
    for sql in [
        "DROP TABLE managed_phone_numbers",
        "DROP TABLE audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "ALTER TABLE managed_phone_numbers DROP CONSTRAINT managed_phone_numbers_one_owner",
        "CREATE TABLE scratch (id int)",
        "UPDATE audit_log SET outcome = 'forged'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "SELECT * FROM audit_log",
        "DELETE FROM organizations",
        // (DELETE FROM org_credentials is the route login's since V7: disconnect and
        // offboarding clear a slot.)
        "SELECT * FROM refinery_schema_history",
        "CREATE ROLE sneaky LOGIN",
    ] {
        assert_eq!(refusal(&t, &t.config, sql).await, denied, "{sql}");
    }
    // Nothing happened.
    let c = t.client().await;
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM audit_log WHERE outcome = 'released'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
    assert!(
        t.dump().await.contains("+14155550100"),
        "the number is still there"
    );
}

#[tokio::test]
async fn the_route_login_can_do_what_the_routes_do() {
    let t = TestDb::new().await;
    let org = seeded(&t).await;
    let c = t.client_as(&t.config).await;
    c.batch_execute(&format!(
        "BEGIN;
         SELECT * FROM organizations WHERE id = '{org}' FOR UPDATE;
         UPDATE managed_phone_numbers SET status = 'releasing', claimed_until = now(),
                claim_token = gen_random_uuid() WHERE org_id = '{org}';
         DELETE FROM phone_number_mapping WHERE org_id = '{org}';
         DELETE FROM org_credentials WHERE org_id = '{org}';
         INSERT INTO audit_log (org_id, actor, action, target, request_id, outcome)
              VALUES ('{org}', 'u', 'release', '+14155550100', 'r2', 'released');
         SELECT purchase_operation_known('{org}', gen_random_uuid());
         INSERT INTO carrier_findings (kind, subaccount_sid, subject, last_pass)
              VALUES ('subaccount_orphan', 'AC0000000000000000000000000000aa01', 'x', 1);
         COMMIT;"
    ))
    .await
    .expect("the routes' statements are allowed");
}

#[tokio::test]
async fn the_reader_login_only_reads_and_never_the_sealed_credential() {
    let t = TestDb::new().await;
    seeded(&t).await;
    let denied = Some(SqlState::INSUFFICIENT_PRIVILEGE);
    for sql in [
        "SELECT encrypted_config FROM org_credentials",
        "SELECT * FROM org_credentials",
        "UPDATE managed_phone_numbers SET status = 'released'",
        "INSERT INTO organizations (id) VALUES (gen_random_uuid())",
        "DELETE FROM phone_number_mapping",
        "SELECT * FROM audit_log",
        "DROP TABLE organizations",
        "INSERT INTO carrier_findings (kind, subaccount_sid, subject, last_pass) VALUES ('vapi_orphan', 'AC0000000000000000000000000000aa01', 'x', 1)",
        "SELECT purchase_operation_known(gen_random_uuid(), gen_random_uuid())",
    ] {
        assert_eq!(refusal(&t, &t.reader, sql).await, denied, "{sql}");
    }
    for sql in [
        "SELECT phone_number, status FROM managed_phone_numbers",
        "SELECT metadata, source, updated_at FROM org_credentials",
        "SELECT vapi_credential_id FROM organizations",
    ] {
        assert_eq!(refusal(&t, &t.reader, sql).await, None, "{sql}");
    }
}

#[tokio::test]
async fn a_superuser_the_owner_or_a_group_role_is_never_set_up_as_a_function_login() {
    let t = TestDb::new().await;
    let owner = t.owner_db();
    for (user, why) in [
        ("postgres", "superuser"),
        ("telephony_route", "group or system role"),
    ] {
        let err = shared::migrate::set_up_login(
            &owner,
            &Login {
                user: user.into(),
                grant: Grant::Route,
                auth: LoginAuth::Password("x".to_owned().into()),
            },
        )
        .await
        .expect_err("refused");
        assert!(err.to_string().contains(why), "{err}");
    }
    let err = shared::migrate::set_up_login(
        &owner,
        &Login {
            user: "Robert\"; DROP TABLE audit_log; --".into(),
            grant: Grant::Route,
            auth: LoginAuth::Iam,
        },
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("login name"), "{err}");
}

#[tokio::test]
async fn a_login_set_up_again_gets_its_new_password() {
    let t = TestDb::new().await;
    let owner = t.owner_db();
    let mut cfg = t.config.clone();
    let new = "rotated-password";
    shared::migrate::set_up_login(
        &owner,
        &Login {
            user: cfg.user.clone(),
            grant: Grant::Route,
            auth: LoginAuth::Password(new.to_owned().into()),
        },
    )
    .await
    .unwrap();
    cfg.auth = shared::db::DbAuth::Password(new.to_owned().into());
    assert_eq!(testkit::ask(&Db::new(&cfg).unwrap()).await.unwrap(), 7);
    // Stored as a SCRAM verifier, never in the clear.
    let stored: Option<String> = t
        .client()
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&cfg.user],
        )
        .await
        .unwrap()
        .get(0);
    let stored = stored.unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    assert!(!stored.contains(new));
}

#[tokio::test]
async fn two_migration_runs_at_once_apply_each_migration_once() {
    let admin_url = std::env::var("TEST_DATABASE_URL").expect("run through scripts/test.sh");
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let (c, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut cfg = shared::db::DbConfig::from_url(&admin_url).unwrap();
    cfg.dbname = name;
    // Two instances: two pools, so the database, not a process lock, excludes.
    let (a, b) = (Db::new(&cfg).unwrap(), Db::new(&cfg).unwrap());
    let (ra, rb) = tokio::join!(shared::migrate::run(&a), shared::migrate::run(&b));
    let (ra, rb) = (ra.expect("first run"), rb.expect("second run"));
    let total = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .unwrap()
        .count();
    assert_eq!(ra.len() + rb.len(), total, "{ra:?} {rb:?}");
    assert!(
        ra.is_empty() || rb.is_empty(),
        "one run applied all: {ra:?} {rb:?}"
    );
}

/// As on RDS: the owner is no superuser, only CREATEROLE and the database's owner.
/// Migrations and the logins must still be set up, and a login with rights of its
/// own is refused.
#[tokio::test]
async fn an_owner_that_is_no_superuser_migrates_and_sets_up_the_logins() {
    let admin_url = std::env::var("TEST_DATABASE_URL").expect("run through scripts/test.sh");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (owner, dbname) = (format!("own_{id}"), format!("t_{id}"));
    let (c, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!(
        "CREATE ROLE {owner} LOGIN NOSUPERUSER CREATEROLE PASSWORD 'owner-pw'"
    ))
    .await
    .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {dbname} OWNER {owner}"))
        .await
        .unwrap();
    let mut cfg = shared::db::DbConfig::from_url(&admin_url).unwrap();
    cfg.dbname = dbname.clone();
    cfg.user = owner.clone();
    cfg.auth = shared::db::DbAuth::Password("owner-pw".to_owned().into());
    let db = Db::new(&cfg).unwrap();
    let route = Login {
        user: format!("r_{id}"),
        grant: Grant::Route,
        auth: LoginAuth::Password("route-pw".to_owned().into()),
    };
    shared::migrate::run_and_set_up(&db, std::slice::from_ref(&route))
        .await
        .expect("a CREATEROLE owner migrates and sets up the route login");
    let mut as_route = cfg.clone();
    as_route.user = route.user.clone();
    as_route.auth = shared::db::DbAuth::Password("route-pw".to_owned().into());
    let r = Db::new(&as_route).unwrap();
    r.query("SELECT count(*) FROM managed_phone_numbers", &[])
        .await
        .expect("the route login reads its tables");

    // A login that could create roles is never made a function login.
    c.batch_execute(&format!("CREATE ROLE x_{id} LOGIN CREATEROLE"))
        .await
        .unwrap();
    let err = shared::migrate::set_up_login(
        &db,
        &Login {
            user: format!("x_{id}"),
            grant: Grant::Route,
            auth: LoginAuth::Iam,
        },
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("CREATEROLE"), "{err}");
    // And the route login may not also be the reader.
    let err = shared::migrate::set_up_login(
        &db,
        &Login {
            user: route.user.clone(),
            grant: Grant::Read,
            auth: LoginAuth::Password("route-pw".to_owned().into()),
        },
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("must differ"), "{err}");
}

/// Issue 24, staging finding 2: since PostgreSQL 16 adding members needs ADMIN OPTION
/// on the role (CREATEROLE alone no longer does), so migrate checks, before it grants,
/// what PostgreSQL will decide — ADMIN OPTION, or CREATEROLE before 16 — and fails
/// saying what to run. (This machine runs 15: the refusal is shown with an owner that
/// has neither; then the ADMIN OPTION it names is enough for the check.)
#[tokio::test]
async fn an_owner_that_may_not_add_members_is_told_which_admin_option_to_grant() {
    let admin_url = std::env::var("TEST_DATABASE_URL").expect("run through scripts/test.sh");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (owner, dbname) = (format!("own_{id}"), format!("t_{id}"));
    let (c, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!(
        "CREATE ROLE {owner} LOGIN NOSUPERUSER NOCREATEROLE PASSWORD 'owner-pw'"
    ))
    .await
    .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {dbname} OWNER {owner}"))
        .await
        .unwrap();
    // The schema (and its group roles) exist, as after an earlier owner's run.
    let mut cfg = shared::db::DbConfig::from_url(&admin_url).unwrap();
    cfg.dbname = dbname.clone();
    shared::migrate::run(&Db::new(&cfg).unwrap())
        .await
        .expect("migrated as the admin");
    let mut as_owner = cfg.clone();
    as_owner.user = owner.clone();
    as_owner.auth = shared::db::DbAuth::Password("owner-pw".to_owned().into());
    let db = Db::new(&as_owner).unwrap();
    let route = Login {
        user: format!("r_{id}"),
        grant: Grant::Route,
        auth: LoginAuth::Password("route-pw".to_owned().into()),
    };
    let err = shared::migrate::set_up_login(&db, &route)
        .await
        .expect_err("refused before any GRANT");
    let text = err.to_string();
    assert!(text.contains("ADMIN OPTION"), "{text}");
    assert!(
        text.contains(&format!(
            "GRANT telephony_route TO \"{owner}\" WITH ADMIN OPTION;"
        )),
        "{text}"
    );
    let exists: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
            &[&route.user],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "nothing was created");
    // With the ADMIN OPTION it names, the check passes (PostgreSQL 15 still wants
    // CREATEROLE to create the login itself: the next error is PostgreSQL's own).
    c.batch_execute(&format!(
        "GRANT telephony_route TO {owner} WITH ADMIN OPTION"
    ))
    .await
    .unwrap();
    let err = shared::migrate::set_up_login(&db, &route)
        .await
        .expect_err("no CREATEROLE");
    assert!(!err.to_string().contains("ADMIN OPTION"), "{err}");
}

/// Issue 24, staging finding 3: a REVOKE that did nothing (PostgreSQL ≤ 14, an owner
/// that does not own schema public) leaves the function roles able to create
/// objects; migrate checks it after every run and fails saying what to run.
#[tokio::test]
async fn migrate_fails_while_a_function_role_may_create_in_schema_public() {
    let t = TestDb::new().await;
    let admin = t.client().await;
    admin
        .batch_execute("GRANT CREATE ON SCHEMA public TO telephony_route")
        .await
        .unwrap();
    let err = shared::migrate::run(&t.owner_db())
        .await
        .expect_err("refused");
    let message = err.to_string();
    assert!(message.contains("telephony_route"), "{message}");
    assert!(
        message.contains("ALTER SCHEMA public OWNER TO"),
        "{message}"
    );
    admin
        .batch_execute("REVOKE CREATE ON SCHEMA public FROM telephony_route")
        .await
        .unwrap();
    shared::migrate::run(&t.owner_db())
        .await
        .expect("migrates once the privilege is gone");
}

/// Issue 24, staging finding 1: AWS's multi-user rotation makes the clone a member of
/// the original login (`GRANT <user> TO <user>_clone`); migrate accepts that pair when
/// the original is a plain login of the same group, and still refuses any other.
#[tokio::test]
async fn the_alternating_users_rotation_pair_is_accepted_and_nothing_else() {
    let t = TestDb::new().await;
    let db = t.owner_db();
    let admin = t.client().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (user, clone) = (format!("rot_{id}"), format!("rot_{id}_clone"));
    let login = |name: &str, grant| Login {
        user: name.to_owned(),
        grant,
        auth: LoginAuth::Password("pw-one".to_owned().into()),
    };
    shared::migrate::set_up_login(&db, &login(&user, Grant::Route))
        .await
        .expect("the original login");
    // What the rotation function does when it first rotates.
    admin
        .batch_execute(&format!(
            "CREATE ROLE {clone} LOGIN PASSWORD 'pw-two'; GRANT {user} TO {clone}"
        ))
        .await
        .unwrap();
    shared::migrate::set_up_login(&db, &login(&clone, Grant::Route))
        .await
        .expect("the clone, a member of its pair");
    // Not as the other group's login: its pair is a route login.
    let err = shared::migrate::set_up_login(&db, &login(&clone, Grant::Read))
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("member of another role")
            || err.to_string().contains("must differ"),
        "{err}"
    );
    // A pair that is a member of something else is no plain login: refused.
    let (odd, odd_clone) = (format!("odd_{id}"), format!("odd_{id}_clone"));
    shared::migrate::set_up_login(&db, &login(&odd, Grant::Route))
        .await
        .expect("another login");
    admin
        .batch_execute(&format!(
            "CREATE ROLE extra_{id}; GRANT extra_{id} TO {odd};
             CREATE ROLE {odd_clone} LOGIN; GRANT {odd} TO {odd_clone}"
        ))
        .await
        .unwrap();
    let err = shared::migrate::set_up_login(&db, &login(&odd_clone, Grant::Route))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("member of another role"), "{err}");
}
