//! `save-credential` — `PUT /api/telephony/credentials/twilio`.
//!
//! Body `{accountSid, authToken, phoneNumber}`; the org comes from the caller's
//! verified claims and the `WRITE_SCOPE` scope is required. Verifies the credentials
//! with Twilio, seals them with KMS, upserts the org's single Twilio slot
//! (`source: byoc`) and mirrors them to Vapi. Answers `200 {accountSid, phoneNumber,
//! source, vapiCredentialId, updatedAt, vapi: {synced, code?}}` — a failed Vapi sync
//! still saves (`synced: false`), and the next save repairs it; `409
//! save_in_progress` when another save of the org held its lease for half of this
//! request's deadline. See `shared::credential` for the protocol.

use lambda_http::{Body, Request, Response};
use shared::clients::ClientKit;
use shared::config::{Env, IdentityConfig, SecretLoader};
use shared::credential::{
    CredentialStore, SavedCredential, TwilioCredential, VAPI_CREDENTIALS_UNAVAILABLE,
};
use shared::db::{Connect, Db};
use shared::envelope::{Keyring, KeyringConfig};
use shared::http::{
    BODY_LIMIT, Reply, json_body, lambda_deadline, reject_unknown_query, request_id, respond,
};
use shared::identity::Caller;
use shared::ids::CredentialSource;
use shared::metrics::{MetricSet, MetricsConfig, Unit, emit};
use shared::steps::StepsConfig;
use shared::twilio::TwilioClient;
use shared::vapi::VapiClient;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Everything the handler needs, built once per instance at cold start.
pub struct State {
    pub db: Db,
    pub keyring: Keyring,
    pub vapi: VapiClient,
    pub twilio: TwilioClient,
    pub identity: IdentityConfig,
    pub steps: StepsConfig,
    pub metrics: MetricsConfig,
}

impl State {
    /// Loads this function's secrets (database, Vapi key) concurrently.
    pub async fn from_env(env: &Env, aws: &aws_config::SdkConfig) -> Result<Self, Error> {
        Self::open(env, aws, Connect::Lazily).await
    }

    /// With `connect` saying when the instance's connection opens (`main`:
    /// [`Connect::AT_INIT`]: during init) (no warm-up: its first statements
    /// write).
    pub async fn open(
        env: &Env,
        aws: &aws_config::SdkConfig,
        connect: Connect,
    ) -> Result<Self, Error> {
        // Plain settings and clients first: a bad one fails the init before any
        // network call, and their CPU work is done before the waits begin.
        let steps = StepsConfig::from_env(env)?;
        let keyring = KeyringConfig::from_env(env)?.build(aws)?;
        let secrets = SecretLoader::new(env, aws);
        let clients = ClientKit::from_env(env, &secrets)?;
        let (db, vapi_key) =
            Db::open_alongside(&secrets, connect, async |_: &Db| Ok(()), secrets.vapi()).await?;
        Ok(Self {
            db,
            keyring,
            vapi: clients.vapi(vapi_key),
            twilio: clients.twilio(),
            identity: IdentityConfig::from_env(env),
            steps,
            metrics: MetricsConfig::from_env(env),
        })
    }

    pub fn store(&self) -> CredentialStore<'_> {
        CredentialStore {
            db: &self.db,
            keyring: &self.keyring,
            vapi: &self.vapi,
            twilio: &self.twilio,
            config: &self.steps,
            // A BYOC slot: its owner rotates its token and saves the new one.
            fingerprints: None,
        }
    }
}

/// What a save counts in CloudWatch (EMF): `VapiCredentialsUnavailable` when Vapi's
/// router no longer knows its `/credential` endpoints (gone from its published
/// spec since 2024-12; `docs/deploy.md`). No repeat can fix that, so nothing
/// retries it: the template's alarm on this metric tells a person.
pub fn sync_metrics(saved: &SavedCredential, cfg: &MetricsConfig) -> Option<MetricSet> {
    (saved.vapi.code == Some(VAPI_CREDENTIALS_UNAVAILABLE))
        .then(|| MetricSet::for_stack(cfg).value("VapiCredentialsUnavailable", Unit::Count, 1.0))
}

/// The Lambda handler.
pub async fn handle(state: &State, req: Request) -> Response<Body> {
    respond(req, "save-credential", async |req: Request| {
        let caller = Caller::from_request(&req, &state.identity)?;
        caller.require_scope(&state.identity.write_scope)?;
        reject_unknown_query(&req, &[])?;
        let credential: TwilioCredential = json_body(&req, BODY_LIMIT)?;
        let deadline = state.steps.deadline_for(lambda_deadline(&req));
        let saved = state
            .store()
            .save(
                &caller,
                &request_id(&req),
                &credential,
                CredentialSource::Byoc,
                deadline,
            )
            .await?;
        if let Some(set) = sync_metrics(&saved, &state.metrics) {
            emit(&state.metrics, &[set], &mut std::io::stdout());
        }
        Reply::ok(saved)
    })
    .await
}
