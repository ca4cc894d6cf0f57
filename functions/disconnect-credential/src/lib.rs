//! `disconnect-credential` — `DELETE /api/telephony/credentials/twilio` (write
//! scope).
//!
//! Ends the org's credential: its Vapi credential is deleted (looked up by name
//! after a create whose outcome was unknown; Vapi's JSON 404 counts as gone) and its
//! slot cleared (`shared::credential::disconnect`). Answers `200 {"status":
//! "disconnected", "source", "vapiCredentialDeleted"}` (also when there was nothing
//! to disconnect); `409 managed_numbers_remain` for a managed slot while the org
//! has numbers not released (offboarding ends those), `409 org_offboarding`,
//! `409 save_in_progress`; `503` with Vapi's code when Vapi could not delete it
//! (nothing changed; repeat it).

use lambda_http::{Body, Request, Response};
use shared::clients::ClientKit;
use shared::config::{Env, IdentityConfig, SecretLoader};
use shared::credential::disconnect::Disconnector;
use shared::db::{Connect, Db};
use shared::http::{Reply, lambda_deadline, reject_unknown_query, request_id, respond};
use shared::identity::Caller;
use shared::steps::StepsConfig;
use shared::vapi::VapiClient;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The database and Vapi, built once per instance.
pub struct State {
    pub db: Db,
    pub vapi: VapiClient,
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
        let (db, vapi_key) =
            Db::open_alongside(&secrets, connect, async |_: &Db| Ok(()), secrets.vapi()).await?;
        Ok(Self {
            db,
            vapi: clients.vapi(vapi_key),
            identity: IdentityConfig::from_env(env),
            steps,
        })
    }

    pub fn disconnector(&self) -> Disconnector<'_> {
        Disconnector {
            db: &self.db,
            vapi: &self.vapi,
            config: &self.steps,
        }
    }
}

pub async fn handle(state: &State, req: Request) -> Response<Body> {
    respond(req, "disconnect-credential", async |req: Request| {
        let caller = Caller::from_request(&req, &state.identity)?;
        caller.require_scope(&state.identity.write_scope)?;
        reject_unknown_query(&req, &[])?;
        let deadline = state.steps.deadline_for(lambda_deadline(&req));
        let done = state
            .disconnector()
            .disconnect(&caller, &request_id(&req), deadline)
            .await?;
        Reply::ok(done)
    })
    .await
}
