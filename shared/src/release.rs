//! Releasing a managed number: the seed's four steps (delete at Vapi, release at
//! Twilio, mark released, stop routing), without ever forgetting a number that may
//! still bill.
//!
//! 1. **Claim** the number with one conditional UPDATE (`active`/`release_pending`,
//!    or `releasing` whose claim expired → `releasing` with a fresh `claim_token` and
//!    `claimed_until`). Concurrent requests, in any number of instances, serialize on
//!    the row; exactly one wins, so each provider is called at most once between them.
//!    No row lock is held after this statement.
//! 2. **Provider steps**, concurrently, each within the release deadline and retried
//!    with backoff for 408/429/5xx/timeouts: Vapi `DELETE /phone-number/{id}` and
//!    Twilio `DELETE /Accounts/{subaccount}/IncomingPhoneNumbers/{PN}.json` as the
//!    platform's main account (so a number stays releasable after the org's slot
//!    switched to BYOC). "Already gone" (404) counts as done. Steps already done by an
//!    earlier attempt are skipped.
//! 3. **Outcome**, one transaction, only if the claim is still ours: the routing row
//!    is deleted, the finished steps are stamped, and the number becomes `released`
//!    (both done) or `release_pending` with the failed steps' errors; an audit row.
//!
//! A pending release is resumed by repeating the DELETE or by `reconcile`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use tracing::Instrument;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::config::{ConfigError, Env};
use crate::db::{Db, DbError};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::ids::{AccountSid, E164, OrgId, PhoneNumberSid};
use crate::providers::ProviderError;
use crate::twilio::TwilioClient;
use crate::vapi::VapiClient;

#[derive(Debug, Clone)]
pub struct ReleaseConfig {
    /// Both provider steps must finish within this (`RELEASE_DEADLINE_MS`, default
    /// 20 s: well inside API Gateway's 30 s, leaving time for the outcome write).
    pub deadline: Duration,
    /// How long a claim holds (`RELEASE_CLAIM_SECS`, default 60 s). Longer than the
    /// deadline, so only a killed or frozen instance's claim ever expires.
    pub claim_ttl: Duration,
}

impl ReleaseConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            deadline: Duration::from_millis(env.parse_or("RELEASE_DEADLINE_MS", 20_000u64)?),
            claim_ttl: Duration::from_secs(env.parse_or("RELEASE_CLAIM_SECS", 60u64)?),
        })
    }
}

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
        errors: Map<String, Value>,
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
            ReleaseError::Db(db) => db.into(),
        }
    }
}

/// A number this release holds.
#[derive(Debug)]
struct Claim {
    id: Uuid,
    org: OrgId,
    phone_number: String,
    token: Uuid,
    number_sid: Result<PhoneNumberSid, String>,
    subaccount: Result<AccountSid, String>,
    vapi_phone_id: Option<String>,
    vapi_done: bool,
    twilio_done: bool,
}

const CLAIM_SET: &str = "SET status = 'releasing',
           claimed_until = now() + make_interval(secs => $1),
           claim_token = $2,
           release_attempts = release_attempts + 1,
           release_requested_at = coalesce(release_requested_at, now()),
           updated_at = now()";
const CLAIMABLE: &str =
    "(status IN ('active', 'release_pending') OR (status = 'releasing' AND claimed_until < now()))";
const CLAIM_RETURNING: &str =
    "RETURNING id, org_id, phone_number, twilio_phone_sid, twilio_subaccount_sid,
           vapi_phone_id, vapi_released_at IS NOT NULL, twilio_released_at IS NOT NULL";

impl Claim {
    fn from_row(row: &Row, token: Uuid) -> Self {
        let number_sid: String = row.get(3);
        let subaccount: String = row.get(4);
        Self {
            id: row.get(0),
            org: OrgId::new(row.get(1)),
            phone_number: row.get(2),
            token,
            // The schema's CHECKs guarantee these parse; kept fallible all the same.
            number_sid: number_sid.parse().map_err(|_| number_sid),
            subaccount: subaccount.parse().map_err(|_| subaccount),
            vapi_phone_id: row.get(5),
            vapi_done: row.get(6),
            twilio_done: row.get(7),
        }
    }
}

/// How one provider step ended.
#[derive(Debug)]
enum Step {
    Done,
    Failed(ProviderError),
}

impl Step {
    fn from_result(
        r: Result<Result<(), ProviderError>, tokio::time::error::Elapsed>,
        provider: &'static str,
    ) -> Self {
        match r {
            Ok(Ok(())) => Step::Done,
            // Already gone counts as done (Vapi 404, Twilio 404 / 20404).
            Ok(Err(e)) if e.status() == Some(404) => Step::Done,
            Ok(Err(e)) => Step::Failed(e),
            Err(_) => Step::Failed(ProviderError::Timeout { provider }),
        }
    }

    fn done(&self) -> bool {
        matches!(self, Step::Done)
    }
}

/// What a reconcile run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub claimed: usize,
    pub released: usize,
    pub still_pending: usize,
    /// Claims another run took over (this one was too slow); its outcome was dropped.
    pub lost: usize,
}

/// What release-number and reconcile build at cold start: the database, Vapi, and
/// Twilio as the platform's main account (secrets fetched concurrently).
pub struct ReleaseService {
    pub db: Db,
    pub vapi: VapiClient,
    pub twilio: TwilioClient,
    pub config: ReleaseConfig,
}

impl ReleaseService {
    pub async fn from_env(
        env: &Env,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, crate::error::BoxError> {
        let secrets = crate::config::SecretLoader::new(env, aws);
        let (db, vapi_key, main) =
            tokio::try_join!(secrets.db(), secrets.vapi(), secrets.twilio_main())?;
        let urls = crate::config::ProviderUrls::from_env(env);
        let policy = crate::providers::CallPolicy::from_env(env)?;
        let http = crate::providers::http_client()?;
        Ok(Self {
            db: Db::new(&db)?.refetching_secret_from(secrets.clone()),
            vapi: VapiClient::new(
                http.clone(),
                urls.vapi,
                vapi_key,
                Some(secrets.clone()),
                policy.clone(),
            ),
            twilio: TwilioClient::new(http, urls.twilio, policy)
                .with_main_account(main, Some(secrets)),
            config: ReleaseConfig::from_env(env)?,
        })
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
    pub config: &'a ReleaseConfig,
}

impl Releaser<'_> {
    /// Release `number` of the caller's org (or resume its pending release).
    pub async fn release(
        &self,
        caller: &Caller,
        request_id: &str,
        number: &E164,
    ) -> Result<ReleaseOutcome, ReleaseError> {
        for _ in 0..2 {
            if let Some(claim) = self.claim_number(caller.org_id, number).await? {
                return self.finish(claim, caller, request_id).await;
            }
            // Not claimable: say what state it is in. An active or pending number here
            // means another release just ended between the two statements: try again.
            match self.current(caller.org_id, number).await? {
                Some(outcome) => return Ok(outcome),
                None => continue,
            }
        }
        Ok(ReleaseOutcome::Releasing {
            phone_number: number.to_string(),
        })
    }

    /// Resume up to `batch` unfinished releases, oldest first. Rows another release
    /// holds are skipped; each row is tried at most once per run.
    pub async fn reconcile(
        &self,
        batch: usize,
        request_id: &str,
        time_left: impl Fn() -> Duration,
    ) -> Result<ReconcileReport, DbError> {
        let run_started: DateTime<Utc> = Utc::now();
        let mut report = ReconcileReport::default();
        while report.claimed < batch && time_left() > self.config.deadline + Duration::from_secs(3)
        {
            let Some(claim) = self.claim_next(run_started).await? else {
                break;
            };
            report.claimed += 1;
            let caller = Caller::system(claim.org, "system:reconcile");
            let span = tracing::info_span!("reconcile_item", org_id = %claim.org);
            match self
                .finish(claim, &caller, request_id)
                .instrument(span)
                .await
            {
                Ok(ReleaseOutcome::Released { .. }) => report.released += 1,
                Ok(ReleaseOutcome::ReleasePending { .. }) => report.still_pending += 1,
                Ok(ReleaseOutcome::Releasing { .. }) => report.lost += 1,
                Err(ReleaseError::Db(e)) => return Err(e),
                Err(ReleaseError::NotFound(_)) => report.lost += 1,
            }
        }
        Ok(report)
    }

    async fn claim_number(&self, org: OrgId, number: &E164) -> Result<Option<Claim>, DbError> {
        let token = Uuid::new_v4();
        let ttl = self.config.claim_ttl.as_secs_f64();
        let sql = format!(
            "UPDATE managed_phone_numbers {CLAIM_SET}
              WHERE org_id = $3 AND phone_number = $4 AND {CLAIMABLE}
             {CLAIM_RETURNING}"
        );
        let row = self
            .db
            .query_opt(
                &sql,
                &[
                    (&ttl, Type::FLOAT8),
                    (&token, Type::UUID),
                    (&org.as_uuid(), Type::UUID),
                    (&number.as_str(), Type::TEXT),
                ],
            )
            .await?;
        Ok(row.map(|r| Claim::from_row(&r, token)))
    }

    async fn claim_next(&self, run_started: DateTime<Utc>) -> Result<Option<Claim>, DbError> {
        let token = Uuid::new_v4();
        let ttl = self.config.claim_ttl.as_secs_f64();
        let sql = format!(
            "UPDATE managed_phone_numbers {CLAIM_SET}
              WHERE id = (SELECT id FROM managed_phone_numbers
                           WHERE {CLAIMABLE} AND status <> 'active' AND updated_at < $3
                           ORDER BY release_requested_at, id
                           LIMIT 1 FOR UPDATE SKIP LOCKED)
             {CLAIM_RETURNING}"
        );
        let row = self
            .db
            .query_opt(
                &sql,
                &[
                    (&ttl, Type::FLOAT8),
                    (&token, Type::UUID),
                    (&run_started, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        Ok(row.map(|r| Claim::from_row(&r, token)))
    }

    /// The state of a number this request could not claim.
    async fn current(
        &self,
        org: OrgId,
        number: &E164,
    ) -> Result<Option<ReleaseOutcome>, ReleaseError> {
        let row = self
            .db
            .query_opt(
                "SELECT status, released_at FROM managed_phone_numbers
                  WHERE org_id = $1 AND phone_number = $2
                  ORDER BY (status <> 'released') DESC, released_at DESC NULLS LAST
                  LIMIT 1",
                &[(&org.as_uuid(), Type::UUID), (&number.as_str(), Type::TEXT)],
            )
            .await?;
        let Some(row) = row else {
            return Err(ReleaseError::NotFound(number.to_string()));
        };
        let phone_number = number.to_string();
        Ok(match row.get::<_, &str>(0) {
            "released" => Some(ReleaseOutcome::Released {
                phone_number,
                released_at: row.get(1),
            }),
            "releasing" => Some(ReleaseOutcome::Releasing { phone_number }),
            _ => None,
        })
    }

    async fn finish(
        &self,
        claim: Claim,
        caller: &Caller,
        request_id: &str,
    ) -> Result<ReleaseOutcome, ReleaseError> {
        let (vapi, twilio) = self.provider_steps(&claim).await;
        self.record(&claim, &vapi, &twilio, caller, request_id)
            .await
    }

    /// Both provider steps, concurrently, each bounded by the deadline.
    async fn provider_steps(&self, claim: &Claim) -> (Step, Step) {
        let deadline = self.config.deadline;
        let vapi = async {
            match (&claim.vapi_phone_id, claim.vapi_done) {
                (None, _) | (_, true) => Step::Done,
                (Some(id), false) => Step::from_result(
                    tokio::time::timeout(deadline, self.vapi.delete_phone_number(id)).await,
                    "vapi",
                ),
            }
        };
        let twilio = async {
            if claim.twilio_done {
                return Step::Done;
            }
            match (&claim.subaccount, &claim.number_sid) {
                (Ok(sub), Ok(pn)) => Step::from_result(
                    tokio::time::timeout(deadline, self.twilio.release_number(sub, pn)).await,
                    "twilio",
                ),
                _ => Step::Failed(ProviderError::UnexpectedBody {
                    provider: "twilio",
                    status: 0,
                }),
            }
        };
        tokio::join!(vapi, twilio)
    }

    /// Write the outcome if the claim is still ours.
    async fn record(
        &self,
        claim: &Claim,
        vapi: &Step,
        twilio: &Step,
        caller: &Caller,
        request_id: &str,
    ) -> Result<ReleaseOutcome, ReleaseError> {
        let mut errors = Map::new();
        let mut codes = Map::new();
        let mut pending = Vec::new();
        for (name, step) in [("vapi", vapi), ("twilio", twilio)] {
            if let Step::Failed(e) = step {
                tracing::warn!(step = name, error = %e, code = e.stable_code(), "release step failed; the number stays pending");
                pending.push(name);
                codes.insert(name.into(), json!(e.stable_code()));
                errors.insert(
                    name.into(),
                    json!({
                        "code": e.stable_code(),
                        "status": e.status(),
                        "providerCode": e.provider_code(),
                        "message": match e { ProviderError::Status { message, .. } => message.clone(), _ => None },
                        "at": Utc::now(),
                    }),
                );
            }
        }
        let (vapi_done, twilio_done) = (vapi.done(), twilio.done());
        let last_error = (!errors.is_empty()).then_some(Value::Object(errors));
        let phone_number = claim.phone_number.clone();
        self.db
            .transaction(async |tx| {
                let row = tx
                    .query_typed_opt(
                        "UPDATE managed_phone_numbers
                            SET vapi_released_at = CASE WHEN $3 THEN coalesce(vapi_released_at, now()) ELSE vapi_released_at END,
                                twilio_released_at = CASE WHEN $4 THEN coalesce(twilio_released_at, now()) ELSE twilio_released_at END,
                                status = CASE WHEN $3 AND $4 THEN 'released' ELSE 'release_pending' END,
                                released_at = CASE WHEN $3 AND $4 THEN now() END,
                                last_release_error = $5,
                                claimed_until = NULL, claim_token = NULL, updated_at = now()
                          WHERE id = $1 AND claim_token = $2 AND status = 'releasing'
                          RETURNING released_at, release_attempts",
                        &[
                            (&claim.id, Type::UUID),
                            (&claim.token, Type::UUID),
                            (&vapi_done, Type::BOOL),
                            (&twilio_done, Type::BOOL),
                            (&last_error, Type::JSONB),
                        ],
                    )
                    .await?;
                let Some(row) = row else {
                    // Our claim expired and another release took the number over; it
                    // will write the outcome (the steps we finished are idempotent).
                    tracing::warn!("release claim was taken over; leaving the outcome to its new holder");
                    return Ok(ReleaseOutcome::Releasing { phone_number: phone_number.clone() });
                };
                let released_at: Option<DateTime<Utc>> = row.get(0);
                let attempts: i32 = row.get(1);
                // The number stops routing either way.
                tx.query_typed(
                    "DELETE FROM phone_number_mapping WHERE org_id = $1 AND inbound_phone_number = $2",
                    &[(&claim.org.as_uuid(), Type::UUID), (&claim.phone_number, Type::TEXT)],
                )
                .await?;
                let outcome = match released_at {
                    Some(released_at) => ReleaseOutcome::Released {
                        phone_number: phone_number.clone(),
                        released_at,
                    },
                    None => ReleaseOutcome::ReleasePending {
                        phone_number: phone_number.clone(),
                        pending: pending.clone(),
                        errors: codes.clone(),
                    },
                };
                audit::record(
                    tx,
                    &AuditEntry {
                        caller,
                        action: "number.release",
                        target: &phone_number,
                        request_id,
                        outcome: if outcome.is_released() { "released" } else { "release_pending" },
                        detail: json!({ "attempt": attempts, "pending": pending, "errors": codes }),
                    },
                )
                .await?;
                Ok::<_, ReleaseError>(outcome)
            })
            .await
    }
}
