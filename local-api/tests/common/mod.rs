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

/// A local API on a fresh database, with an HTTP client: what the API-level tests
/// drive (each test file adds its own helpers in an `impl Local` of its own).
#[allow(dead_code)] // not every test file that includes this module uses it
pub struct Local {
    pub db: TestDb,
    pub running: local_api::server::Running,
    pub http: reqwest::Client,
}

#[allow(dead_code)] // not every test file that includes this module uses every helper
impl Local {
    pub async fn start() -> Self {
        let db = TestDb::new().await;
        let running = start_local(&db).await;
        Self {
            db,
            running,
            http: reqwest::Client::new(),
        }
    }

    /// An API path on the local API.
    pub fn api(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.api)
    }

    /// A `/__control/…` path on the stand-ins' port.
    pub fn control(&self, path: &str) -> String {
        format!("http://{}/__control/{path}", self.running.standins)
    }

    /// Send with `token`: the status and the JSON body (`null` when none).
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
        token: &str,
    ) -> (u16, serde_json::Value) {
        let resp = req.bearer_auth(token).send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// A token for `org` with `scopes`, signed as the local authorizer signs.
    pub fn token_for(&self, org: &str, scopes: &[&str]) -> String {
        self.running
            .gateway
            .authorizer
            .mint(org, "someone", scopes, std::time::Duration::from_secs(600))
            .expect("token")
    }

    /// `GET /api/managed-telephony/status` (`query`: e.g. `?include=released`).
    pub async fn status_with(&self, token: &str, query: &str) -> serde_json::Value {
        self.send(
            self.http
                .get(self.api(&format!("/api/managed-telephony/status{query}"))),
            token,
        )
        .await
        .1
    }

    /// `POST /__control/{path}` with `body`: its JSON answer (it must succeed).
    pub async fn post_control(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let resp = self
            .http
            .post(self.control(path))
            .json(&body)
            .send()
            .await
            .expect("control call");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }
}
