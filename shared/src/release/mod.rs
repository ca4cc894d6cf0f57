//! Releasing a managed number: the seed's four steps (delete at Vapi, release at
//! Twilio, mark released, stop routing) on the provider-step protocol
//! ([`crate::steps`]), without ever forgetting a number that may still bill.
//!
//! 1. **Intent** ([`claim`]): one conditional UPDATE takes the number
//!    (`active`/`release_pending`/`needs_attention`, or `releasing` whose claim
//!    expired, or already ours → `releasing` with our `claim_token` and a
//!    `claimed_until`). Concurrent requests, in any number of instances, serialize on
//!    the row; exactly one wins, so each provider is called at most once between
//!    them. No row lock is held after this statement.
//! 2. **Provider steps**, concurrently, within the request's deadline: Vapi
//!    `DELETE /phone-number/{id}` and Twilio `DELETE
//!    /Accounts/{subaccount}/IncomingPhoneNumbers/{PN}.json` as the platform's main
//!    account (so a number stays releasable after the org's slot switched to BYOC).
//!    "Already gone" counts as done only when the provider proved it: Vapi's JSON
//!    404, or Twilio's 20404 confirmed by a read of the subaccount's number list
//!    (a 20404 is also Twilio's answer to a wrong base URL). Steps stamped by an
//!    earlier attempt are skipped.
//! 3. **Outcome** ([`claim::record`]), one transaction, only if the claim is still
//!    ours: the routing row is deleted, the finished steps are stamped, and the
//!    number becomes `released` (both done), or `release_pending` with the failed
//!    steps' errors and a `next_attempt_at` (backoff), or `needs_attention` after
//!    `RECONCILE_MAX_ATTEMPTS`; an audit row.
//! 4. **Reconcile** ([`reconcile`]) resumes due pending releases.

pub mod claim;
pub mod reconcile;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Env;
use crate::db::{Db, DbError};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::ids::E164;
use crate::providers::ProviderError;
use crate::steps::{ClaimToken, Deadline, Step, StepsConfig};
use crate::twilio::TwilioClient;
use crate::vapi::VapiClient;

pub use claim::Claim;
pub use reconcile::ReconcileReport;

/// What a release request achieved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "status",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ReleaseOutcome {
    /// Both providers let go of it; it no longer routes or bills.
    Released {
        phone_number: String,
        released_at: DateTime<Utc>,
    },
    /// It no longer routes, but a provider step failed and will be retried: it may
    /// still bill. `errors` holds a stable code per failed step.
    ReleasePending {
        phone_number: String,
        pending: Vec<&'static str>,
        errors: BTreeMap<&'static str, &'static str>,
    },
    /// It no longer routes, but the release failed `RECONCILE_MAX_ATTEMPTS` times:
    /// reconcile stops retrying and it is shown for a person to look at. A DELETE
    /// still retries it.
    NeedsAttention {
        phone_number: String,
        pending: Vec<&'static str>,
        errors: BTreeMap<&'static str, &'static str>,
    },
    /// Another request holds the release right now.
    Releasing { phone_number: String },
}

impl ReleaseOutcome {
    pub fn is_released(&self) -> bool {
        matches!(self, Self::Released { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("no managed number {0} in this organisation")]
    NotFound(String),
    /// Still being bought: the purchase finishes (or undoes) first.
    #[error("{0} is still being bought")]
    Provisioning(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for ReleaseError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<ReleaseError> for ApiError {
    fn from(e: ReleaseError) -> Self {
        match e {
            ReleaseError::NotFound(n) => ApiError::not_found(
                "number_not_found",
                format!("no managed number {n} in your organisation"),
            ),
            ReleaseError::Provisioning(n) => ApiError::Conflict {
                code: "purchase_in_progress",
                message: format!(
                    "{n} is still being bought; release it once its purchase has finished"
                ),
            },
            ReleaseError::Db(db) => db.into(),
        }
    }
}

/// What release-number and reconcile build at cold start: the database, Vapi, and
/// Twilio as the platform's main account (secrets fetched concurrently).
pub struct ReleaseService {
    pub db: Db,
    pub vapi: VapiClient,
    pub twilio: TwilioClient,
    pub config: StepsConfig,
    /// Reconcile's: token rotations are resumed (and purchases record token
    /// fingerprints) only with these; release-number has none.
    pub tokens: Option<crate::rotation::TokenKit>,
}

impl ReleaseService {
    pub async fn from_env(
        env: &Env,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, crate::error::BoxError> {
        Self::open(env, aws, crate::db::Connect::Lazily).await
    }

    /// [`ReleaseService::from_env`], with `connect` saying whether the instance's
    /// connection is opened during init (release-number's, warmed up with [`warm_up`]:
    /// its own first statements), beside the provider secrets' fetch.
    pub async fn open(
        env: &Env,
        aws: &aws_config::SdkConfig,
        connect: crate::db::Connect,
    ) -> Result<Self, crate::error::BoxError> {
        let config = StepsConfig::from_env(env)?;
        let secrets = crate::config::SecretLoader::new(env, aws);
        // Built before the waits: a bad setting fails the init without a network call.
        let clients = crate::clients::ClientKit::from_env(env, &secrets)?;
        let others = async { tokio::try_join!(secrets.vapi(), secrets.twilio_main()) };
        let (db, (vapi_key, main)) = Db::open_alongside(
            &secrets,
            connect,
            async |db: &Db| warm_up(db, &config).await,
            others,
        )
        .await?;
        Ok(Self {
            db,
            vapi: clients.vapi(vapi_key),
            twilio: clients.twilio_main(main),
            config,
            tokens: None,
        })
    }

    /// Also resume token rotations (reconcile).
    pub fn with_tokens(mut self, tokens: crate::rotation::TokenKit) -> Self {
        self.tokens = Some(tokens);
        self
    }

    pub fn releaser(&self) -> Releaser<'_> {
        Releaser {
            db: &self.db,
            vapi: &self.vapi,
            twilio: &self.twilio,
            config: &self.config,
        }
    }
}

/// Releases numbers; one per function instance.
pub struct Releaser<'a> {
    pub db: &'a Db,
    pub vapi: &'a VapiClient,
    pub twilio: &'a TwilioClient,
    pub config: &'a StepsConfig,
}

/// release-number's warm-up at init ([`Db::warm_up_at_cold_start`]): a release
/// request's first two statements, the claim and the state read, for a number no
/// row has ([`crate::ids::nobodys_number`]): the claim matches nothing, so nothing
/// changes and nothing is locked.
pub async fn warm_up(db: &Db, config: &StepsConfig) -> Result<(), DbError> {
    let (org, number) = crate::ids::nobodys_number();
    claim::claim_number(db, config, org, &number, ClaimToken::new()).await?;
    match claim::current(db, org, &number).await {
        Ok(_) | Err(ReleaseError::NotFound(_) | ReleaseError::Provisioning(_)) => Ok(()),
        Err(ReleaseError::Db(e)) => Err(e),
    }
}

impl Releaser<'_> {
    /// Release `number` of the caller's org (or resume its pending release),
    /// finishing the provider steps before `deadline`.
    pub async fn release(
        &self,
        caller: &Caller,
        request_id: &str,
        number: &E164,
        deadline: Deadline,
    ) -> Result<ReleaseOutcome, ReleaseError> {
        for _ in 0..2 {
            if let Some(claim) = claim::claim_number(
                self.db,
                self.config,
                caller.org_id,
                number,
                ClaimToken::new(),
            )
            .await?
            {
                return self.finish(claim, caller, request_id, deadline).await;
            }
            // Not claimable: say what state it is in. An active or pending number here
            // means another release just ended between the two statements: try again.
            match claim::current(self.db, caller.org_id, number).await? {
                Some(outcome) => return Ok(outcome),
                None => continue,
            }
        }
        Ok(ReleaseOutcome::Releasing {
            phone_number: number.to_string(),
        })
    }

    /// Steps 2 and 3 for a claimed number.
    async fn finish(
        &self,
        claim: Claim,
        caller: &Caller,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<ReleaseOutcome, ReleaseError> {
        let (vapi, twilio) = self.provider_steps(&claim, deadline).await;
        claim::record(
            self.db,
            self.config,
            &claim,
            &vapi,
            &twilio,
            caller,
            request_id,
        )
        .await
    }

    /// Both provider steps, concurrently, no connection checked out.
    async fn provider_steps(&self, claim: &Claim, deadline: Deadline) -> (Step, Step) {
        let vapi = async {
            match (&claim.vapi_phone_id, claim.vapi_done) {
                (None, _) | (_, true) => Step::Done,
                (Some(id), false) => Step::removal(
                    deadline
                        .run("vapi", self.vapi.delete_phone_number(id))
                        .await,
                ),
            }
        };
        let twilio = async {
            if claim.twilio_done {
                return Step::Done;
            }
            match (
                &claim.subaccount,
                &claim.number_sid,
                claim.phone_number.parse::<E164>(),
            ) {
                (Ok(sub), Ok(pn), Ok(number)) => Step::removal(
                    deadline
                        .run("twilio", self.twilio.release_number(sub, pn, &number))
                        .await,
                ),
                _ => Step::Failed(ProviderError::UnexpectedBody {
                    provider: "twilio",
                    status: 0,
                }),
            }
        };
        tokio::join!(vapi, twilio)
    }
}
