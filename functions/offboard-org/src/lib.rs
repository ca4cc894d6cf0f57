//! `offboard-org` — `POST /api/managed-telephony/offboard` `{"confirm": "<org id>"}`
//! (the offboard scope, `telephony:offboard` by default; the write scope does not
//! imply it).
//!
//! Ends the caller's org so that nothing bills after it: every number released, the
//! org's Vapi credential deleted, its Twilio subaccount closed, its slot cleared
//! (`shared::offboard`). Answers `202` with the progress while steps are left
//! (resumed by a repeat or by reconcile), `200` once offboarded (a repeat then
//! answers 200 and changes nothing); `422 confirmation_mismatch` when `confirm` is
//! not the caller's org id. Purchases and saves of the org are refused from the
//! first request on (409 `org_offboarding`).

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use shared::clients::ClientKit;
use shared::config::{Env, IdentityConfig, SecretLoader};
use shared::db::{Connect, Db};
use shared::http::{
    BODY_LIMIT, Reply, json_body, lambda_deadline, reject_unknown_query, request_id, respond,
};
use shared::identity::Caller;
use shared::offboard::{OffboardRequest, Offboarder};
use shared::steps::StepsConfig;
use shared::twilio::TwilioClient;
use shared::vapi::VapiClient;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The database, Vapi and Twilio as the platform's main account, built once per
/// instance (secrets fetched concurrently).
pub struct State {
    pub db: Db,
    pub vapi: VapiClient,
    pub twilio: TwilioClient,
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
        let others = async { tokio::try_join!(secrets.vapi(), secrets.twilio_main()) };
        let (db, (vapi_key, main)) =
            Db::open_alongside(&secrets, connect, async |_: &Db| Ok(()), others).await?;
        Ok(Self {
            db,
            vapi: clients.vapi(vapi_key),
            twilio: clients.twilio_main(main),
            identity: IdentityConfig::from_env(env),
            steps,
        })
    }

    pub fn offboarder(&self) -> Offboarder<'_> {
        Offboarder {
            db: &self.db,
            vapi: &self.vapi,
            twilio: &self.twilio,
            config: &self.steps,
        }
    }
}

pub async fn handle(state: &State, req: Request) -> Response<Body> {
    respond(req, "offboard-org", async |req: Request| {
        let caller = Caller::from_request(&req, &state.identity)?;
        caller.require_scope(&state.identity.offboard_scope)?;
        reject_unknown_query(&req, &[])?;
        let body: OffboardRequest = json_body(&req, BODY_LIMIT)?;
        body.check(caller.org_id)?;
        let deadline = state.steps.deadline_for(lambda_deadline(&req));
        let progress = state
            .offboarder()
            .offboard(&caller, &request_id(&req), deadline)
            .await?;
        let status = if progress.is_done() {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        Reply::with_status(status, progress)
    })
    .await
}
