//! Starting the local API for a test: a fresh database, the local keyring, any free
//! ports, fast provider retries.

use local_api::server::{Running, start};
use shared::config::Env;
use testkit::TestDb;

#[allow(dead_code)] // not every test file that includes this module uses it
pub async fn start_local(db: &TestDb) -> Running {
    start_local_with(db, &[]).await
}

/// [`start_local`] with `extra` variables set (or overriding).
#[allow(dead_code)] // not every test file that includes this module uses it
pub async fn start_local_with(db: &TestDb, extra: &[(&str, &str)]) -> Running {
    let mut env = Env::from_pairs([
        ("DATABASE_URL", db.admin_url().as_str()),
        ("KEYRING", "local"),
        // base64 of 32 bytes: a test key.
        (
            "LOCAL_KEYRING_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ),
        ("PORT", "0"),
        ("STANDINS_PORT", "0"),
        ("WEB_PORT", "0"),
        ("PROVIDER_MIN_BACKOFF_MS", "1"),
        ("PROVIDER_MAX_BACKOFF_MS", "5"),
        // Tests run reconcile themselves (`POST /__control/reconcile`) unless they
        // set a schedule.
        ("LOCAL_RECONCILE_SECS", "0"),
    ]);
    for (name, value) in extra {
        env.set(name, *value);
    }
    let aws = testkit::aws_config().await;
    start(env, &aws).await.expect("local API starts")
}

/// Time passes: every unfinished purchase's claim expires (as it does `CLAIM_SECS`
/// after an attempt whose create went unanswered).
#[allow(dead_code)] // not every test file that includes this module uses it
pub async fn expire_purchase_claims(db: &TestDb) {
    db.client()
        .await
        .execute(
            "UPDATE managed_phone_numbers SET claimed_until = now() - interval '1 second'
              WHERE status = 'provisioning'",
            &[],
        )
        .await
        .expect("expire the purchases' claims");
}
