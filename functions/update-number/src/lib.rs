//! `update-number` — `PATCH /api/managed-telephony/numbers/{phoneNumber}`
//! `{assistantId, name?}` (write scope).
//!
//! Routes an active managed number of the caller's org to another Vapi assistant
//! (Vapi `PATCH /phone-number/{id}` and the routing row); another org's or an
//! unknown number is a 404. See `shared::routing`. Answers `200 {phoneNumber,
//! assistantId, name, routed: true}`, or `202` with `routed: false` and a `code`
//! when Vapi could not confirm it yet (reconcile sends it again); `409
//! number_not_active` / `update_in_progress`; `422 vapi_refused_assistant` (the
//! previous assistant stays).

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use shared::clients::ClientKit;
use shared::config::{Env, IdentityConfig, SecretLoader};
use shared::db::{Connect, Db};
use shared::http::{
    BODY_LIMIT, Reply, json_body, lambda_deadline, path_phone_number, reject_unknown_query,
    request_id, respond,
};
use shared::identity::Caller;
use shared::routing::{RouteChange, Router};
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
    /// [`Connect::AT_INIT`]: during init) and warmed up with update-number's own
    /// claim statement.
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
        let warm_up = async |db: &Db| shared::routing::warm_up(db, &steps).await;
        let (db, vapi_key) = Db::open_alongside(&secrets, connect, warm_up, secrets.vapi()).await?;
        Ok(Self {
            db,
            vapi: clients.vapi(vapi_key),
            identity: IdentityConfig::from_env(env),
            steps,
        })
    }

    pub fn router(&self) -> Router<'_> {
        Router {
            db: &self.db,
            vapi: &self.vapi,
            config: &self.steps,
        }
    }
}

pub async fn handle(state: &State, req: Request) -> Response<Body> {
    respond(req, "update-number", async |req: Request| {
        let caller = Caller::from_request(&req, &state.identity)?;
        caller.require_scope(&state.identity.write_scope)?;
        reject_unknown_query(&req, &[])?;
        let number = path_phone_number(&req)?;
        let change: RouteChange = json_body(&req, BODY_LIMIT)?;
        let deadline = state.steps.deadline_for(lambda_deadline(&req));
        let routing = state
            .router()
            .update(&caller, &request_id(&req), &number, &change, deadline)
            .await?;
        let status = if routing.routed {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        Reply::with_status(status, routing)
    })
    .await
}
