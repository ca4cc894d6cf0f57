//! `DB_AUTH=iam`: each login presents an RDS IAM auth token instead of a password.
//! A real PostgreSQL stands in for the proxy by holding the token the function must
//! present as the role's password, so only the exact token (host, port, user, region,
//! credentials and time all signed in) gets in. The clock is the SDK config's, moved
//! by the test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_async::time::TimeSource;
use secrecy::ExposeSecret;
use shared::config::{ConfigError, Env, SecretLoader};
use shared::db::{Db, DbAuth};
use shared::rds_iam::RdsIamAuth;
use testkit::{TestDb, ask};
use tokio_postgres::error::SqlState;

#[derive(Debug, Clone)]
struct Clock(Arc<Mutex<SystemTime>>);

impl TimeSource for Clock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

impl Clock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

fn credentials() -> Credentials {
    Credentials::new(
        "AKIAIAMAUTHTEST",
        "iam-secret-key",
        Some("session/token+value=".into()),
        None,
        "test",
    )
}

fn sdk_config(clock: &Clock) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(credentials()))
        .time_source(clock.clone())
        .build()
}

/// The token a login as `user` at the test database must present at `clock`'s time.
fn expected_token(aws: &aws_config::SdkConfig, t: &TestDb, user: &str, clock: &Clock) -> String {
    RdsIamAuth::from_sdk_config(aws)
        .unwrap()
        .sign(
            credentials(),
            &t.config.host,
            t.config.port,
            user,
            clock.now(),
        )
        .unwrap()
        .expose_secret()
        .to_owned()
}

#[tokio::test]
async fn logins_present_a_fresh_iam_token_and_no_secret_is_read() {
    let t = TestDb::new().await;
    let clock = Clock(Arc::new(Mutex::new(
        UNIX_EPOCH + Duration::from_secs(1_790_000_000),
    )));
    let aws = sdk_config(&clock);
    let role = t.login_role("not-the-token").await;
    let port = t.config.port.to_string();
    let env = Env::from_pairs([
        ("DB_AUTH", "iam"),
        ("DB_HOST", t.config.host.as_str()),
        ("DB_PORT", port.as_str()),
        ("DB_NAME", t.name.as_str()),
        ("DB_USER", role.as_str()),
        ("DB_TLS", "disable"),
    ]);
    let secrets = SecretLoader::new(&env, &aws);
    let cfg = secrets.db().await.expect("db config");
    assert!(matches!(cfg.auth, DbAuth::Iam(_)));
    assert!(cfg.password().is_none());
    let db = Db::new(&cfg).expect("pool").refetching_secret_from(secrets);
    let (logs, _guard) = testkit::logs::capture();

    // The role's password is the token for now: only it gets in.
    let first = expected_token(&aws, &t, &role, &clock);
    t.change_password(&role, &first).await;
    assert_eq!(ask(&db).await.expect("logs in with the token"), 7);

    // Five minutes on, the connection is dropped: the reconnect reuses the token
    // (a freshly signed one would differ, and be refused).
    clock.advance(Duration::from_secs(5 * 60));
    t.change_password(&role, &first).await;
    assert_eq!(ask(&db).await.expect("cached token reused"), 7);

    // Past the reuse window a new token is signed for the next login.
    clock.advance(Duration::from_secs(6 * 60));
    let second = expected_token(&aws, &t, &role, &clock);
    assert_ne!(first, second);
    t.change_password(&role, &second).await;
    assert_eq!(ask(&db).await.expect("logs in with a fresh token"), 7);

    // The proxy refusing the token (say, no rds-db:connect) is a clear 28P01 with a
    // hint, not a secret refetch.
    t.change_password(&role, "refused").await;
    let err = ask(&db).await.expect_err("refused");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD));
    let text = logs.text();
    assert!(text.contains("refused the IAM auth token"), "{text}");
    assert!(!text.contains("fetching its secret again"), "{text}");
    // A token is a credential for 15 minutes: never logged, never in Debug.
    for token in [&first, &second] {
        let signature = token.rsplit("X-Amz-Signature=").next().unwrap();
        assert!(!text.contains(signature), "token logged: {text}");
        assert!(!format!("{cfg:?} {db:?}").contains(signature));
    }
    assert!(!text.contains("iam-secret-key") && !text.contains("session/token"));
}

#[tokio::test]
async fn iam_configuration_is_checked() {
    let clock = Clock(Arc::new(Mutex::new(UNIX_EPOCH)));
    let aws = sdk_config(&clock);
    let db = |pairs: &[(&'static str, &'static str)]| {
        let loader = SecretLoader::new(&Env::from_pairs(pairs.iter().copied()), &aws);
        async move { loader.db().await }
    };
    let proxy = [("DB_AUTH", "iam"), ("DB_HOST", "proxy.example.internal")];
    assert!(matches!(
        db(&proxy).await,
        Err(ConfigError::Missing("DB_USER"))
    ));
    let with_secret = [
        proxy[0],
        proxy[1],
        ("DB_USER", "app"),
        (
            "DB_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf",
        ),
    ];
    assert!(matches!(
        db(&with_secret).await,
        Err(ConfigError::Invalid {
            name: "DB_SECRET_ARN",
            ..
        })
    ));
    assert!(matches!(
        db(&[
            ("DB_AUTH", "token"),
            ("DATABASE_URL", "postgres://u:p@localhost/d")
        ])
        .await,
        Err(ConfigError::Invalid {
            name: "DB_AUTH",
            ..
        })
    ));
    // Plain TCP is still loopback-only.
    let plain = [
        proxy[0],
        proxy[1],
        ("DB_USER", "app"),
        ("DB_TLS", "disable"),
    ];
    assert!(matches!(
        db(&plain).await,
        Err(ConfigError::Invalid { name: "DB_TLS", .. })
    ));
    let ok = db(&[
        proxy[0],
        proxy[1],
        ("DB_USER", "app"),
        ("DB_NAME", "telephony"),
    ])
    .await
    .expect("valid");
    assert_eq!(
        (ok.user.as_str(), ok.dbname.as_str(), ok.port),
        ("app", "telephony", 5432)
    );

    // No region, no signing.
    let no_region = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(credentials()))
        .build();
    let loader = SecretLoader::new(
        &Env::from_pairs([proxy[0], proxy[1], ("DB_USER", "app")]),
        &no_region,
    );
    assert!(matches!(
        loader.db().await,
        Err(ConfigError::Missing("AWS_REGION"))
    ));
}
