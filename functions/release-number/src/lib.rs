//! `release-number` — `DELETE /api/managed-telephony/numbers/{phoneNumber}`.
//!
//! The number comes from `pathParameters` (`+1415…` as API Gateway decodes it, or
//! `%2B1415…`; decoded at most once); anything not E.164 is a 400 and nothing is
//! called. Scoped to the caller's org (an unknown number or another org's is a 404,
//! no provider called); needs the `WRITE_SCOPE` scope. Answers:
//!
//! - `200 {phoneNumber, status: "released", releasedAt}` — done. Repeating the
//!   DELETE on a released number answers the same (DELETE is idempotent).
//! - `202 {phoneNumber, status: "release_pending", pending: [...], errors: {...}}` —
//!   it no longer routes, but a provider step failed; repeat the DELETE (or let
//!   `reconcile` run) to finish it.
//! - `202 {phoneNumber, status: "needs_attention", pending, errors}` — as pending,
//!   but it failed `RECONCILE_MAX_ATTEMPTS` times: reconcile no longer retries it;
//!   a DELETE still does.
//! - `202 {phoneNumber, status: "releasing"}` — another request is releasing it now.
//!
//! See `shared::release` for the claim / provider steps / outcome protocol.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use shared::config::{Env, IdentityConfig};
use shared::db::Connect;
use shared::http::{
    Reply, lambda_deadline, path_phone_number, reject_unknown_query, request_id, respond,
};
use shared::identity::Caller;
use shared::release::{ReleaseOutcome, ReleaseService};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub struct State {
    pub release: ReleaseService,
    pub identity: IdentityConfig,
}

impl State {
    pub async fn from_env(env: &Env, aws: &aws_config::SdkConfig) -> Result<Self, Error> {
        Self::open(env, aws, Connect::Lazily).await
    }

    /// With `connect` saying when the instance's connection opens (`main`:
    /// [`Connect::AT_INIT`]: during init) and warmed up with release-number's own
    /// first statements.
    pub async fn open(
        env: &Env,
        aws: &aws_config::SdkConfig,
        connect: Connect,
    ) -> Result<Self, Error> {
        Ok(Self {
            release: ReleaseService::open(env, aws, connect).await?,
            identity: IdentityConfig::from_env(env),
        })
    }
}

pub async fn handle(state: &State, req: Request) -> Response<Body> {
    respond(req, "release-number", async |req: Request| {
        let caller = Caller::from_request(&req, &state.identity)?;
        caller.require_scope(&state.identity.write_scope)?;
        reject_unknown_query(&req, &[])?;
        let number = path_phone_number(&req)?;
        let deadline = state.release.config.deadline_for(lambda_deadline(&req));
        let outcome = state
            .release
            .releaser()
            .release(&caller, &request_id(&req), &number, deadline)
            .await?;
        let status = match outcome {
            ReleaseOutcome::Released { .. } => StatusCode::OK,
            _ => StatusCode::ACCEPTED,
        };
        Reply::with_status(status, outcome)
    })
    .await
}
