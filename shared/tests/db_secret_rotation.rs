//! A database password rotated under a warm instance: the server refuses the old one
//! (28P01), the secret is fetched again once from Secrets Manager (the emulator) and
//! the pool is rebuilt with it. Without a secret to fetch, the refusal stands.

use serde_json::json;
use shared::config::{Env, SecretLoader};
use shared::db::{Db, DbConfig};
use testkit::{TestDb, ask};

#[tokio::test]
async fn a_rotated_database_password_is_fetched_again_once() {
    let t = TestDb::new().await;
    let aws = testkit::aws_config().await;
    let role = t.login_role("old-db-password").await;
    let secret = |password: &str| json!({"username": role, "password": password, "host": t.config.host, "port": t.config.port, "dbname": t.name});
    let arn = testkit::put_secret(&aws, &secret("old-db-password")).await;
    let env = Env::from_pairs([("DB_SECRET_ARN", arn.as_str()), ("DB_TLS", "disable")]);
    let secrets = SecretLoader::new(&env, &aws);
    let cfg = DbConfig::from_env(&secrets).await.expect("db config");
    let db = Db::new(&cfg)
        .expect("pool")
        .refetching_secret_from(secrets.clone());
    // Another instance started before the rotation, with fixed credentials.
    let stale = Db::new(&cfg).expect("pool");
    assert_eq!(ask(&db).await.expect("first query"), 7);
    assert_eq!(ask(&stale).await.expect("first query"), 7);

    t.change_password(&role, "new-db-password").await;
    aws_sdk_secretsmanager::Client::new(&aws)
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(secret("new-db-password").to_string())
        .send()
        .await
        .expect("rotate secret");

    let (logs, _guard) = testkit::logs::capture();
    assert_eq!(
        ask(&db)
            .await
            .expect("the new password is fetched and used"),
        7
    );
    assert!(
        logs.text().contains("fetching its secret again once"),
        "{}",
        logs.text()
    );
    assert!(!logs.text().contains("new-db-password") && !logs.text().contains("old-db-password"));
    // And the rebuilt pool keeps working, without fetching again.
    assert_eq!(ask(&db).await.expect("again"), 7);
    assert_eq!(logs.text().matches("fetching its secret again").count(), 1);

    // Without a secret to fetch again, the refusal is the answer.
    let err = ask(&stale).await.expect_err("old password refused");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD)
    );
}
