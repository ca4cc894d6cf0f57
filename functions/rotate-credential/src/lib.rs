//! `rotate-credential` — `POST /api/telephony/credentials/twilio/rotate` (write
//! scope; no body, or `{}`).
//!
//! Rotates the caller's managed Twilio subaccount token so that no number stops
//! calling (`shared::rotation`): a secondary token is created, the org's Vapi
//! credential and every Vapi number are PATCHed with it, and only then is it
//! promoted (the old token stops working at once) and sealed into the slot. Until
//! the promotion both tokens work, so a failed step leaves calls working and the job
//! pending (resumed by a repeat of the request or by reconcile). Answers:
//!
//! - `200 {status: "rotated", numbers: {updated, pending: []}, …}` — done;
//! - `202 {status: "rotating", numbers: {updated, pending}, errors, nextAttemptAt, …}`
//!   — steps left; a repeat resumes the same job (never a second secondary);
//! - `404 no_credential`, `409 byoc_credential` (a BYOC org rotates its token in
//!   Twilio and saves the new one), `409 org_offboarding`.
//!
//! A repeat after a rotation finished starts a new one.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use shared::clients::ClientKit;
use shared::config::{Env, IdentityConfig, SecretLoader};
use shared::db::{Connect, Db};
use shared::http::{
    BODY_LIMIT, Reply, lambda_deadline, optional_json_body, reject_unknown_query, request_id,
    respond,
};
use shared::identity::Caller;
use shared::rotation::{RotateRequest, Rotator, TokenKit};
use shared::steps::StepsConfig;
use shared::twilio::TwilioClient;
use shared::vapi::VapiClient;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The database, Vapi, Twilio as the platform's main account, the keyring (KMS data
/// keys; opening only the rotation's own secondary tokens) and the fingerprint key,
/// built once per instance (secrets fetched concurrently).
pub struct State {
    pub db: Db,
    pub vapi: VapiClient,
    pub twilio: TwilioClient,
    pub tokens: TokenKit,
    pub identity: IdentityConfig,
    pub steps: StepsConfig,
}

impl State {
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
        let secrets = SecretLoader::new(env, aws);
        let clients = ClientKit::from_env(env, &secrets)?;
        let others = async {
            tokio::try_join!(
                secrets.vapi(),
                secrets.twilio_main(),
                TokenKit::from_env(env, aws, &secrets)
            )
        };
        let (db, (vapi_key, main, tokens)) =
            Db::open_alongside(&secrets, connect, async |_: &Db| Ok(()), others).await?;
        Ok(Self {
            db,
            vapi: clients.vapi(vapi_key),
            twilio: clients.twilio_main(main),
            tokens,
            identity: IdentityConfig::from_env(env),
            steps,
        })
    }

    pub fn rotator(&self) -> Rotator<'_> {
        Rotator {
            db: &self.db,
            vapi: &self.vapi,
            twilio: &self.twilio,
            keyring: &self.tokens.keyring,
            fingerprints: &self.tokens.fingerprints,
            config: &self.steps,
        }
    }
}

pub async fn handle(state: &State, req: Request) -> Response<Body> {
    respond(req, "rotate-credential", async |req: Request| {
        let caller = Caller::from_request(&req, &state.identity)?;
        caller.require_scope(&state.identity.write_scope)?;
        reject_unknown_query(&req, &[])?;
        let _: RotateRequest = optional_json_body(&req, BODY_LIMIT)?;
        let deadline = state.steps.deadline_for(lambda_deadline(&req));
        let rotation = state
            .rotator()
            .rotate(&caller, &request_id(&req), deadline)
            .await?;
        let status = if rotation.is_done() {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        Reply::with_status(status, rotation)
    })
    .await
}
