//! `DB_AUTH=iam`: each login presents an RDS IAM auth token instead of a password.
//! A real PostgreSQL stands in for the proxy by holding the token the function must
//! present as the role's password, so only the exact token (host, port, user, region,
//! credentials and time all signed in) gets in. The clock is the SDK config's, moved
//! by the test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_smithy_async::time::TimeSource;
use secrecy::ExposeSecret;
use shared::config::{ConfigError, Env, SecretLoader};
use shared::db::{Db, DbAuth, DbConfig, DbError};
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

/// [`credentials`], until told to fail (an unreachable instance metadata service, say).
#[derive(Debug, Clone, Default)]
struct Outage(Arc<AtomicBool>);

impl ProvideCredentials for Outage {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(if self.0.load(Ordering::SeqCst) {
            Err(CredentialsError::not_loaded("test: no credentials"))
        } else {
            Ok(credentials())
        })
    }
}

fn sdk_config(clock: &Clock, credentials: &Outage) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(credentials.clone()))
        .time_source(clock.clone())
        .build()
}

fn clock() -> Clock {
    Clock(Arc::new(Mutex::new(
        UNIX_EPOCH + Duration::from_secs(1_790_000_000),
    )))
}

/// `DB_AUTH=iam` configuration for logging in as `role` to the test database.
async fn iam_config(
    t: &TestDb,
    aws: &aws_config::SdkConfig,
    role: &str,
) -> (DbConfig, SecretLoader) {
    let port = t.config.port.to_string();
    let env = Env::from_pairs([
        ("DB_AUTH", "iam"),
        ("DB_HOST", t.config.host.as_str()),
        ("DB_PORT", port.as_str()),
        ("DB_NAME", t.name.as_str()),
        ("DB_USER", role),
        ("DB_TLS", "disable"),
    ]);
    let secrets = SecretLoader::new(&env, aws);
    (
        DbConfig::from_env(&secrets).await.expect("db config"),
        secrets,
    )
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
    let clock = clock();
    let aws = sdk_config(&clock, &Outage::default());
    let role = t.login_role("not-the-token").await;
    let (cfg, secrets) = iam_config(&t, &aws, &role).await;
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
    // Nor its parts: the session token (raw or %-encoded), the key id, the secret.
    for part in [
        "iam-secret-key",
        "session/token",
        "session%2Ftoken",
        "X-Amz-Security-Token",
        "AKIAIAMAUTHTEST",
    ] {
        assert!(!text.contains(part), "{part} logged: {text}");
    }
}

#[tokio::test]
async fn a_credentials_outage_fails_only_logins_that_have_no_token() {
    let t = TestDb::new().await;
    let clock = clock();
    let outage = Outage::default();
    let aws = sdk_config(&clock, &outage);
    let role = t.login_role("not-the-token").await;
    let (cfg, _) = iam_config(&t, &aws, &role).await;

    // No token was ever signed: nothing to try.
    outage.0.store(true, Ordering::SeqCst);
    let db = Db::new(&cfg).expect("pool");
    let err = ask(&db).await.expect_err("no credentials, no login");
    assert!(matches!(err, DbError::IamToken(_)), "{err:?}");

    // Signed once, the token is due again 11 minutes later while credentials are
    // out: the open connection still answers, with a warning.
    outage.0.store(false, Ordering::SeqCst);
    let token = expected_token(&aws, &t, &role, &clock);
    t.change_password(&role, &token).await;
    assert_eq!(ask(&db).await.expect("logs in"), 7);
    clock.advance(Duration::from_secs(11 * 60));
    outage.0.store(true, Ordering::SeqCst);
    let (logs, _guard) = testkit::logs::capture();
    assert_eq!(ask(&db).await.expect("open connection used"), 7);
    assert!(
        logs.text()
            .contains("could not sign a new database auth token"),
        "{}",
        logs.text()
    );
    // And a new login in the outage presents the last token.
    t.change_password(&role, &token).await;
    assert_eq!(ask(&db).await.expect("logs in with the last token"), 7);
}

#[tokio::test]
async fn iam_configuration_is_checked() {
    let clock = Clock(Arc::new(Mutex::new(UNIX_EPOCH)));
    let aws = sdk_config(&clock, &Outage::default());
    let db = |pairs: &[(&'static str, &'static str)]| {
        let loader = SecretLoader::new(&Env::from_pairs(pairs.iter().copied()), &aws);
        async move { DbConfig::from_env(&loader).await }
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
        DbConfig::from_env(&loader).await,
        Err(ConfigError::Missing("AWS_REGION"))
    ));
}
