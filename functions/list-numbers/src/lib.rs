//! `list-numbers` — `GET /api/managed-telephony/status`.
//!
//! The caller's org only: `{credential: {accountSid, phoneNumber, source,
//! vapiCredentialId, updatedAt, vapi} | null, numbers: [...]}`, newest first. By
//! default the numbers that are active or still being released; `?include=released`
//! adds the released history. Any other query parameter or value is a 400. One
//! database round trip; needs only the database.
//!
//! Needs the read scope (`READ_SCOPE`, default `telephony:read`; 403 `forbidden`
//! without it), which the template's authorizer also requires. The write scope
//! does not imply it: least privilege, a token is good for exactly the scopes it
//! carries, so a dashboard that reads and changes asks for both.

use lambda_http::{Body, Request, RequestExt, Response};
use shared::ApiError;
use shared::config::{Env, IdentityConfig, SecretLoader};
use shared::db::{Connect, Db};
use shared::http::{Reply, reject_unknown_query, respond};
use shared::identity::Caller;
use shared::numbers::{self, Listing};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub struct State {
    pub db: Db,
    pub identity: IdentityConfig,
}

impl State {
    pub async fn from_env(env: &Env, aws: &aws_config::SdkConfig) -> Result<Self, Error> {
        Self::open(env, aws, Connect::Lazily).await
    }

    /// With `connect` saying when the instance's connection opens (`main`:
    /// [`Connect::AT_INIT`]: during init). No warm-up statement: running the
    /// status statement at init made the cold start (init + first request) longer than
    /// without (0.3–9.8 ms) in every shape of `scripts/bench.sh coldstart` (the first
    /// request plans the statement again; docs/cold-start.md), whatever it saved the
    /// first request.
    pub async fn open(
        env: &Env,
        aws: &aws_config::SdkConfig,
        connect: Connect,
    ) -> Result<Self, Error> {
        let secrets = SecretLoader::new(env, aws);
        let nothing_else = async { Ok::<_, Error>(()) };
        let (db, ()) =
            Db::open_alongside(&secrets, connect, async |_: &Db| Ok(()), nothing_else).await?;
        Ok(Self {
            db,
            identity: IdentityConfig::from_env(env),
        })
    }
}

fn listing(req: &Request) -> Result<Listing, ApiError> {
    reject_unknown_query(req, &["include"])?;
    let values = req
        .query_string_parameters_ref()
        .and_then(|q| q.all("include"))
        .unwrap_or_default();
    match values.as_slice() {
        [] => Ok(Listing::Current),
        ["released"] => Ok(Listing::WithReleased),
        _ => Err(ApiError::bad_request(
            "invalid_query_parameter",
            "include accepts only the value \"released\" (once)",
        )),
    }
}

pub async fn handle(state: &State, req: Request) -> Response<Body> {
    respond(req, "list-numbers", async |req: Request| {
        let caller = Caller::from_request(&req, &state.identity)?;
        caller.require_scope(&state.identity.read_scope)?;
        let status = numbers::status(&state.db, caller.org_id, listing(&req)?).await?;
        Reply::ok(status)
    })
    .await
}
