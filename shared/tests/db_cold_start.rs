//! A function's init ([`Db::open_alongside`], issue 26): without a database secret to
//! wait for (IAM auth, or a `DATABASE_URL`), the instance's connection and its warm-up
//! run while the function's other secrets are still being fetched, not after them.
//! Lazily, nothing connects until the first request.

use std::time::Duration;

use serde_json::json;
use shared::config::{ConfigError, Env, SecretLoader};
use shared::db::{Connect, Db};
use testkit::{TestDb, ask};
use tokio::sync::oneshot;

/// The other secrets' fetch finishes only once the warm-up has run on the instance's
/// connection: had the connect waited for them (as it did before), this would never
/// end, and the bound fails the test instead.
#[tokio::test]
async fn the_connection_and_its_warm_up_run_while_the_other_secrets_are_fetched() {
    let t = TestDb::new().await;
    let aws = testkit::aws_config().await;
    let env = Env::from_pairs([("DATABASE_URL", t.url().as_str())]);
    let secrets = SecretLoader::new(&env, &aws);
    let (warmed, on_warm) = oneshot::channel::<usize>();
    let warm_up = async |db: &Db| {
        let open = db.status().size;
        ask(db).await?;
        let _ = warmed.send(open);
        Ok(())
    };
    let others = async {
        let open_when_warmed = on_warm.await.expect("the warm-up ran");
        Ok::<_, ConfigError>(open_when_warmed)
    };
    let (db, open_when_warmed) = tokio::time::timeout(
        Duration::from_secs(20),
        Db::open_alongside(
            &secrets,
            Connect::AtColdStart(Duration::from_secs(10)),
            warm_up,
            others,
        ),
    )
    .await
    .expect("the connect did not wait for the other secrets")
    .expect("opened");
    assert_eq!(
        open_when_warmed, 1,
        "the warm-up ran on the instance's connection"
    );
    let status = db.status();
    assert_eq!(
        (status.size, status.available),
        (1, 1),
        "kept for the first request"
    );
}

#[tokio::test]
async fn lazily_nothing_connects_and_no_warm_up_runs() {
    let t = TestDb::new().await;
    let aws = testkit::aws_config().await;
    let env = Env::from_pairs([("DATABASE_URL", t.url().as_str())]);
    let secrets = SecretLoader::new(&env, &aws);
    let (db, seven) = Db::open_alongside(
        &secrets,
        Connect::Lazily,
        async |_: &Db| panic!("no warm-up when lazy"),
        async { Ok::<_, ConfigError>(7) },
    )
    .await
    .expect("opened");
    assert_eq!((seven, db.status().size), (7, 0));
    assert_eq!(ask(&db).await.expect("the first request connects"), 7);
}

/// With a database secret (password auth) the connection waits for that secret, and
/// a failing other secret fails the init (as before: nothing half-built is served).
#[tokio::test]
async fn with_a_database_secret_it_connects_after_fetching_it_and_other_failures_fail_init() {
    let t = TestDb::new().await;
    let aws = testkit::aws_config().await;
    let role = t.login_role("cold-start-password").await;
    let arn = testkit::put_secret(
        &aws,
        &json!({"username": role, "password": "cold-start-password", "host": t.config.host, "port": t.config.port, "dbname": t.name}),
    )
    .await;
    let env = Env::from_pairs([("DB_SECRET_ARN", arn.as_str()), ("DB_TLS", "disable")]);
    let secrets = SecretLoader::new(&env, &aws);
    let (db, ()) = Db::open_alongside(
        &secrets,
        Connect::AtColdStart(Duration::from_secs(10)),
        async |db: &Db| ask(db).await.map(drop),
        async { Ok::<_, ConfigError>(()) },
    )
    .await
    .expect("opened");
    assert_eq!(db.status().size, 1);

    let err = Db::open_alongside(
        &secrets,
        Connect::AtColdStart(Duration::from_secs(10)),
        async |_: &Db| Ok(()),
        async { Err::<(), _>(ConfigError::Missing("VAPI_PRIVATE_KEY")) },
    )
    .await
    .expect_err("a missing secret fails the init");
    assert!(err.to_string().contains("VAPI_PRIVATE_KEY"), "{err}");
}
