//! `buy-number` — `POST /api/managed-telephony/numbers` `{phoneNumber, assistantId?,
//! name?}` (write scope).
//!
//! Buys exactly that number for the caller's org under its Twilio subaccount
//! (created on its first purchase), imports it into Vapi with the subaccount's
//! credentials and routes it to the assistant; see `shared::purchase` for the
//! protocol. Answers:
//!
//! - `201 {phoneNumber, status: "active", twilioPhoneSid, vapiPhoneId, assistantId,
//!   name}` — bought, imported and routed; `200` with the same body when the number
//!   already was (a repeated request).
//! - `202 {phoneNumber, status: "provisioning", pending, errors}` — unfinished; a
//!   repeat of the request or reconcile finishes it (nothing is bought twice).
//! - `409 number_taken` (another org holds it), `409 number_unavailable` (Twilio no
//!   longer offers it), `409 byoc_in_use` (the org uses its own Twilio account),
//!   `409 number_being_released`, `422 invalid_phone_number`, `422 address_required`,
//!   `422 vapi_refused_import` (bought, refused by Vapi, released again).
//! - `429 purchase_limit_reached` with `Retry-After` (seconds) — the org made
//!   `PURCHASES_PER_ORG_PER_DAY` (default 10) new purchases in the last 24 hours;
//!   nothing is recorded, audited or sent to a provider. The message says the limit
//!   and when the next purchase is allowed. A repeat of a purchase already made or
//!   in progress is not a new one and is answered as above. The refusal is not
//!   audited: like the other refusals before the intent (`byoc_in_use`,
//!   `number_taken`), it changes nothing; it is logged (`warn`) with the org id.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use shared::clients::ClientKit;
use shared::config::{Env, IdentityConfig, SecretLoader};
use shared::credential::CredentialStore;
use shared::credential::fingerprint::FingerprintKey;
use shared::db::{Connect, Db};
use shared::envelope::{Keyring, KeyringConfig};
use shared::http::{
    BODY_LIMIT, Reply, json_body, lambda_deadline, reject_unknown_query, request_id, respond,
};
use shared::identity::Caller;
use shared::purchase::{PurchaseLimit, PurchaseOutcome, PurchaseRequest, Purchaser};
use shared::steps::StepsConfig;
use shared::twilio::TwilioClient;
use shared::vapi::VapiClient;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Built once per instance: the database, KMS data keys (to seal the subaccount
/// into the org's slot), Vapi, and Twilio as the platform's main account.
pub struct State {
    pub db: Db,
    pub keyring: Keyring,
    pub vapi: VapiClient,
    pub twilio: TwilioClient,
    /// Fingerprints the subaccount's token (recorded on imports and in the slot;
    /// a token rotated elsewhere is noticed by it).
    pub fingerprints: FingerprintKey,
    pub identity: IdentityConfig,
    pub steps: StepsConfig,
    /// New purchases per org in any rolling 24 hours (`PURCHASES_PER_ORG_PER_DAY`).
    pub purchase_limit: PurchaseLimit,
}

impl State {
    /// Loads the database, Vapi and Twilio main-account secrets concurrently. The
    /// plain settings are checked first, so a bad one fails the cold start before
    /// any secret is fetched.
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
        let purchase_limit = PurchaseLimit::from_env(env)?;
        let keyring = KeyringConfig::from_env(env)?.build(aws)?;
        let secrets = SecretLoader::new(env, aws);
        let clients = ClientKit::from_env(env, &secrets)?;
        let others = async {
            tokio::try_join!(
                secrets.vapi(),
                secrets.twilio_main(),
                secrets.fingerprint_key()
            )
        };
        let (db, (vapi_key, main, fingerprints)) =
            Db::open_alongside(&secrets, connect, async |_: &Db| Ok(()), others).await?;
        Ok(Self {
            db,
            keyring,
            vapi: clients.vapi(vapi_key),
            twilio: clients.twilio_main(main),
            fingerprints,
            identity: IdentityConfig::from_env(env),
            steps,
            purchase_limit,
        })
    }

    pub fn purchaser(&self) -> Purchaser<'_> {
        Purchaser {
            db: &self.db,
            vapi: &self.vapi,
            twilio: &self.twilio,
            config: &self.steps,
            credentials: Some(CredentialStore {
                db: &self.db,
                keyring: &self.keyring,
                vapi: &self.vapi,
                twilio: &self.twilio,
                config: &self.steps,
                fingerprints: Some(&self.fingerprints),
            }),
            fingerprints: Some(&self.fingerprints),
        }
    }
}

pub async fn handle(state: &State, req: Request) -> Response<Body> {
    respond(req, "buy-number", async |req: Request| {
        let caller = Caller::from_request(&req, &state.identity)?;
        caller.require_scope(&state.identity.write_scope)?;
        reject_unknown_query(&req, &[])?;
        let purchase: PurchaseRequest = json_body(&req, BODY_LIMIT)?;
        let deadline = state.steps.deadline_for(lambda_deadline(&req));
        let outcome = state
            .purchaser()
            .buy(
                &caller,
                &request_id(&req),
                &purchase,
                state.purchase_limit,
                deadline,
            )
            .await?;
        let status = match &outcome {
            PurchaseOutcome::Active { created: true, .. } => StatusCode::CREATED,
            PurchaseOutcome::Active { created: false, .. } => StatusCode::OK,
            PurchaseOutcome::Provisioning { .. } => StatusCode::ACCEPTED,
        };
        Reply::with_status(status, outcome)
    })
    .await
}
