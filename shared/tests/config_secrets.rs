//! Secrets from Secrets Manager (the emulator) and from the environment.

use secrecy::ExposeSecret;
use serde_json::json;
use shared::config::{ConfigError, Env, SecretLoader};
use shared::db::{DbConfig, TlsMode};

#[tokio::test]
async fn every_secret_from_secrets_manager() {
    let aws = testkit::aws_config().await;
    let db_arn = testkit::put_secret(
        &aws,
        &json!({"username": "app", "password": "db-pass-from-sm", "host": "instance.internal", "port": 5432, "dbname": "telephony", "engine": "postgres"}),
    )
    .await;
    let vapi_arn = testkit::put_secret(&aws, &json!({"privateKey": "vapi-key-from-sm"})).await;
    let twilio_arn = testkit::put_secret(
        &aws,
        &json!({"accountSid": "AC0123456789abcdef0123456789abcdef", "authToken": "twilio-token-from-sm"}),
    )
    .await;
    let env = Env::from_pairs([
        ("DB_SECRET_ARN", db_arn.as_str()),
        ("DB_HOST", "127.0.0.1"),
        ("DB_TLS", "disable"),
        ("VAPI_SECRET_ARN", vapi_arn.as_str()),
        ("TWILIO_MAIN_SECRET_ARN", twilio_arn.as_str()),
    ]);
    let loader = SecretLoader::new(&env, &aws);
    // Fetched concurrently, as a function's cold start does.
    let (db, vapi, twilio) = tokio::try_join!(
        DbConfig::from_env(&loader),
        loader.vapi(),
        loader.twilio_main()
    )
    .unwrap();
    assert_eq!(db.user, "app");
    assert_eq!(db.password().unwrap().expose_secret(), "db-pass-from-sm");
    assert_eq!(
        db.host, "127.0.0.1",
        "DB_HOST (the proxy endpoint) overrides the secret's host"
    );
    assert_eq!(db.dbname, "telephony");
    assert_eq!(db.tls, TlsMode::Disable);
    assert_eq!(vapi.0.expose_secret(), "vapi-key-from-sm");
    assert_eq!(
        twilio.account_sid.as_str(),
        "AC0123456789abcdef0123456789abcdef"
    );
    assert_eq!(twilio.auth_token.expose_secret(), "twilio-token-from-sm");
    for dbg in [
        format!("{db:?}"),
        format!("{vapi:?}"),
        format!("{twilio:?}"),
        format!("{loader:?}"),
    ] {
        assert!(!dbg.contains("from-sm"), "Debug leaks a secret: {dbg}");
    }
}

#[tokio::test]
async fn env_fallback_for_local_runs() {
    let aws = testkit::aws_config().await;
    let env = Env::from_pairs([
        (
            "DATABASE_URL",
            "postgres://u:p@127.0.0.1:5433/x?sslmode=disable",
        ),
        ("VAPI_PRIVATE_KEY", "local-vapi"),
        (
            "TWILIO_MAIN_ACCOUNT_SID",
            "AC0123456789abcdef0123456789abcdef",
        ),
        ("TWILIO_MAIN_AUTH_TOKEN", "local-twilio"),
    ]);
    let loader = SecretLoader::new(&env, &aws);
    assert_eq!(DbConfig::from_env(&loader).await.unwrap().port, 5433);
    assert_eq!(loader.vapi().await.unwrap().0.expose_secret(), "local-vapi");
    assert_eq!(
        loader
            .twilio_main()
            .await
            .unwrap()
            .auth_token
            .expose_secret(),
        "local-twilio"
    );
}

#[tokio::test]
async fn a_function_loads_only_what_it_asks_for() {
    let aws = testkit::aws_config().await;
    // No Vapi or Twilio settings at all: a DB-only function still starts.
    let env = Env::from_pairs([("DATABASE_URL", "postgres://u:p@127.0.0.1/x?sslmode=disable")]);
    let loader = SecretLoader::new(&env, &aws);
    assert!(DbConfig::from_env(&loader).await.is_ok());
    assert!(matches!(
        loader.vapi().await,
        Err(ConfigError::Missing("VAPI_PRIVATE_KEY"))
    ));
}

#[tokio::test]
async fn unreadable_secrets_fail_without_echoing_content() {
    let aws = testkit::aws_config().await;
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-AbCdEf";
    let env = Env::from_pairs([("VAPI_SECRET_ARN", missing)]);
    let err = SecretLoader::new(&env, &aws).vapi().await.unwrap_err();
    assert!(matches!(err, ConfigError::Secret { .. }), "{err:?}");

    let wrong = testkit::put_secret(&aws, &json!({"apiKey": "do-not-print-me"})).await;
    let env = Env::from_pairs([("VAPI_SECRET_ARN", wrong.as_str())]);
    let err = SecretLoader::new(&env, &aws).vapi().await.unwrap_err();
    assert!(!err.to_string().contains("do-not-print-me"), "{err}");
}

#[tokio::test]
async fn plain_tcp_to_a_remote_host_is_refused() {
    let aws = testkit::aws_config().await;
    let env = Env::from_pairs([
        ("DATABASE_URL", "postgres://u:p@db.example.internal/x"),
        ("DB_TLS", "disable"),
    ]);
    let err = DbConfig::from_env(&SecretLoader::new(&env, &aws))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::Invalid { name: "DB_TLS", .. }),
        "{err:?}"
    );
}
