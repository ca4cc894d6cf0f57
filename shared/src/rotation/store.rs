//! The rotation job's database side: intent and claim, each step's stamp (only while
//! the claim is ours), the promotion's gate, the slot's new seal, the outcome.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{Ends, Rotation, RotationError, RotationNumbers};
use crate::audit::{self, AuditEntry};
use crate::credential::fingerprint::TokenFingerprint;
use crate::db::{Db, DbError};
use crate::identity::Caller;
use crate::ids::{AccountSid, OrgId};
use crate::steps::{ClaimToken, StepsConfig, retry_backoff};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Rotate,
    Adopt,
}

/// A claimed job, with what its steps need to know of the org.
pub(super) struct Job {
    pub id: Uuid,
    pub org: OrgId,
    pub token: ClaimToken,
    pub kind: Kind,
    pub account_sid: AccountSid,
    pub secondary: Option<Value>,
    pub token_fp: Option<TokenFingerprint>,
    /// The Vapi credential holds `token_fp`'s token as of the slot's generation.
    pub credential_done: bool,
    pub promote_started: bool,
    pub promoted: bool,
    pub attempts: i32,
    pub vapi_credential_id: Option<String>,
    pub vapi_create_attempted_at: Option<DateTime<Utc>>,
    pub sync_lease_live: bool,
    pub sync_generation: i64,
    offboarding: bool,
    slot_managed_here: bool,
    /// The slot's phone number (sealed with the token), when the slot is still this
    /// subaccount's.
    pub slot_phone: Option<String>,
}

impl Job {
    /// Why the job ends without finishing, if it must.
    pub fn cancel_reason(&self) -> Option<&'static str> {
        if self.offboarding {
            Some("org_offboarding")
        } else if !self.slot_managed_here {
            Some("slot_changed")
        } else {
            None
        }
    }
}

/// A Vapi number whose token is not the job's.
pub(super) struct NumberToPatch {
    pub phone: String,
    pub vapi_id: String,
}

const JOB_COLS: &str = "r.id, r.org_id, r.kind, r.account_sid, r.secondary, r.token_fp,
    (r.credential_done_at IS NOT NULL AND r.credential_generation IS NOT DISTINCT FROM o.sync_generation),
    r.promote_started_at IS NOT NULL, r.promoted_at IS NOT NULL, r.attempts,
    o.vapi_credential_id, o.vapi_create_attempted_at, coalesce(o.sync_lease_until >= now(), false),
    o.sync_generation, o.offboard_requested_at IS NOT NULL,
    coalesce(c.source = 'managed' AND c.metadata->>'accountSid' = r.account_sid, false),
    c.metadata->>'phoneNumber'";

/// `FROM` for [`JOB_COLS`], over a CTE `claimed` of token_rotations rows.
const JOB_FROM: &str = "FROM claimed r JOIN organizations o ON o.id = r.org_id
    LEFT JOIN org_credentials c ON c.org_id = r.org_id AND c.provider = 'twilio'";

fn job_from_row(row: &Row, token: ClaimToken) -> Result<Job, DbError> {
    let shape = |e: tokio_postgres::Error| DbError::Shape(format!("rotation job: {e}"));
    let kind: String = row.try_get(2).map_err(shape)?;
    let sid: String = row.try_get(3).map_err(shape)?;
    let fp: Option<String> = row.try_get(5).map_err(shape)?;
    let managed_here: bool = row.try_get(15).map_err(shape)?;
    Ok(Job {
        id: row.try_get(0).map_err(shape)?,
        org: OrgId::new(row.try_get(1).map_err(shape)?),
        token,
        kind: if kind == "adopt" {
            Kind::Adopt
        } else {
            Kind::Rotate
        },
        account_sid: sid
            .parse()
            .map_err(|_| DbError::Shape("token_rotations.account_sid".into()))?,
        secondary: row.try_get(4).map_err(shape)?,
        token_fp: fp.as_deref().and_then(TokenFingerprint::parse),
        credential_done: row.try_get(6).map_err(shape)?,
        promote_started: row.try_get(7).map_err(shape)?,
        promoted: row.try_get(8).map_err(shape)?,
        attempts: row.try_get(9).map_err(shape)?,
        vapi_credential_id: row.try_get(10).map_err(shape)?,
        vapi_create_attempted_at: row.try_get(11).map_err(shape)?,
        sync_lease_live: row.try_get(12).map_err(shape)?,
        sync_generation: row.try_get(13).map_err(shape)?,
        offboarding: row.try_get(14).map_err(shape)?,
        slot_managed_here: managed_here,
        slot_phone: if managed_here {
            row.try_get(16).map_err(shape)?
        } else {
            None
        },
    })
}

/// What the intent found.
pub(super) enum Intent {
    Claimed(Box<Job>),
    /// Another request or reconcile holds the open job.
    Held(Uuid),
}

/// Step 1: the org's open job (a new `rotate` when none), claimed by `token`.
pub(super) async fn intent(
    db: &Db,
    config: &StepsConfig,
    caller: &Caller,
    request_id: &str,
    token: ClaimToken,
) -> Result<Intent, RotationError> {
    let org = caller.org_id.as_uuid();
    let ttl = config.claim_ttl.as_secs_f64();
    db.transaction(async |tx| {
        // Saves, purchases and offboarding take the same row lock.
        let org_row = tx
            .query_typed_opt(
                "SELECT o.offboard_requested_at IS NOT NULL, c.source, c.metadata->>'accountSid'
                   FROM organizations o
                   LEFT JOIN org_credentials c ON c.org_id = o.id AND c.provider = 'twilio'
                  WHERE o.id = $1 FOR NO KEY UPDATE OF o",
                &[(&org, Type::UUID)],
            )
            .await?;
        let Some(org_row) = org_row else {
            return Err(RotationError::NoCredential);
        };
        if org_row.get::<_, bool>(0) {
            return Err(RotationError::OrgOffboarding);
        }
        let sid: String = match (
            org_row.get::<_, Option<String>>(1).as_deref(),
            org_row.get(2),
        ) {
            (None, _) | (_, None) => return Err(RotationError::NoCredential),
            (Some("byoc"), _) => return Err(RotationError::Byoc),
            (Some(_), Some(sid)) => sid,
        };
        let inserted = tx
            .query_typed_opt(
                "INSERT INTO token_rotations (id, org_id, account_sid, kind, requested_by)
                 VALUES ($1, $2, $3, 'rotate', $4)
                 ON CONFLICT (org_id) WHERE done_at IS NULL AND cancelled_at IS NULL DO NOTHING
                 RETURNING id",
                &[
                    (&Uuid::new_v4(), Type::UUID),
                    (&org, Type::UUID),
                    (&sid, Type::TEXT),
                    (&caller.subject, Type::TEXT),
                ],
            )
            .await?;
        if let Some(row) = &inserted {
            let id: Uuid = row.get(0);
            audit::record(
                tx,
                &AuditEntry {
                    caller,
                    action: "credential.rotate_requested",
                    target: &sid,
                    request_id,
                    outcome: "rotating",
                    detail: json!({ "rotationId": id }),
                },
            )
            .await?;
        }
        let claimed = tx
            .query_typed_opt(
                &format!(
                    "WITH claimed AS (
                         UPDATE token_rotations
                            SET claim_token = $2, claimed_until = now() + make_interval(secs => $3),
                                -- A person asking again resumes what reconcile gave up,
                                -- with its attempts counted afresh.
                                attempts = CASE WHEN gave_up_at IS NULL THEN attempts ELSE 0 END,
                                gave_up_at = NULL
                          WHERE org_id = $1 AND done_at IS NULL AND cancelled_at IS NULL
                            AND (claim_token IS NULL OR claimed_until < now() OR claim_token = $2)
                          RETURNING *)
                     SELECT {JOB_COLS} {JOB_FROM}"
                ),
                &[
                    (&org, Type::UUID),
                    (&token.as_uuid(), Type::UUID),
                    (&ttl, Type::FLOAT8),
                ],
            )
            .await?;
        match claimed {
            Some(row) => Ok(Intent::Claimed(Box::new(job_from_row(&row, token)?))),
            None => {
                let open = tx
                    .query_typed_one(
                        "SELECT id FROM token_rotations
                          WHERE org_id = $1 AND done_at IS NULL AND cancelled_at IS NULL",
                        &[(&org, Type::UUID)],
                    )
                    .await?;
                Ok(Intent::Held(open.get(0)))
            }
        }
    })
    .await
}

/// Reconcile: claim the next open job whose holder is gone and whose backoff passed.
pub(super) async fn claim_next_due(
    db: &Db,
    config: &StepsConfig,
    token: ClaimToken,
) -> Result<Option<Job>, DbError> {
    let row = db
        .query_opt(
            &format!(
                "WITH claimed AS (
                     UPDATE token_rotations
                        SET claim_token = $1, claimed_until = now() + make_interval(secs => $2)
                      WHERE id = (SELECT id FROM token_rotations
                                   WHERE done_at IS NULL AND cancelled_at IS NULL
                                     -- A statement re-sent after a dropped connection
                                     -- finds the job it claimed.
                                     AND (claim_token = $1
                                          OR ((gave_up_at IS NULL
                                               -- ended by its org's offboarding even
                                               -- after reconcile gave it up
                                               OR EXISTS (SELECT 1 FROM organizations o
                                                           WHERE o.id = token_rotations.org_id
                                                             AND o.offboard_requested_at IS NOT NULL))
                                              AND (claim_token IS NULL OR claimed_until < now())
                                              AND coalesce(next_attempt_at, '-infinity') <= now()))
                                   ORDER BY claim_token IS NOT DISTINCT FROM $1 DESC,
                                            attempts, next_attempt_at NULLS FIRST, id
                                   LIMIT 1 FOR UPDATE SKIP LOCKED)
                      RETURNING *)
                 SELECT {JOB_COLS} {JOB_FROM}"
            ),
            &[
                (&token.as_uuid(), Type::UUID),
                (&config.claim_ttl.as_secs_f64(), Type::FLOAT8),
            ],
        )
        .await?;
    row.map(|r| job_from_row(&r, token)).transpose()
}

/// The token to bring is another (rotated again elsewhere): the credential step
/// and the list of numbers updated start over. `false`: the claim was taken over.
pub(super) async fn retarget(
    db: &Db,
    job: &mut Job,
    fp: &TokenFingerprint,
) -> Result<bool, DbError> {
    let row = db
        .query_opt(
            "UPDATE token_rotations SET token_fp = $3, credential_done_at = NULL,
                    numbers_updated = '{}'
              WHERE id = $1 AND claim_token = $2 RETURNING 1",
            &[
                (&job.id, Type::UUID),
                (&job.token.as_uuid(), Type::UUID),
                (&fp.as_str(), Type::TEXT),
            ],
        )
        .await?;
    job.token_fp = Some(fp.clone());
    job.credential_done = false;
    Ok(row.is_some())
}

/// The stored secondary no longer works: forget it (a new one is asked for), and
/// the numbers it reached. `false`: the claim was taken over.
pub(super) async fn forget_secondary(db: &Db, job: &mut Job) -> Result<bool, DbError> {
    let row = db
        .query_opt(
            "UPDATE token_rotations
                SET secondary = NULL, token_fp = NULL, credential_done_at = NULL,
                    promote_started_at = NULL, numbers_updated = '{}'
              WHERE id = $1 AND claim_token = $2 AND promoted_at IS NULL
              RETURNING 1",
            &[(&job.id, Type::UUID), (&job.token.as_uuid(), Type::UUID)],
        )
        .await?;
    job.secondary = None;
    job.token_fp = None;
    job.credential_done = false;
    job.promote_started = false;
    Ok(row.is_some())
}

/// Store a new secondary (sealed) and its fingerprint while the claim is ours;
/// `false` when it was taken over (then nothing may be given the secondary).
pub(super) async fn stamp_secondary(
    db: &Db,
    job: &mut Job,
    sealed: &Value,
    fp: &TokenFingerprint,
) -> Result<bool, DbError> {
    let row = db
        .query_opt(
            "UPDATE token_rotations
                SET secondary = $3, token_fp = $4, credential_done_at = NULL
              WHERE id = $1 AND claim_token = $2 AND promoted_at IS NULL
              RETURNING 1",
            &[
                (&job.id, Type::UUID),
                (&job.token.as_uuid(), Type::UUID),
                (sealed, Type::JSONB),
                (&fp.as_str(), Type::TEXT),
            ],
        )
        .await?;
    if row.is_some() {
        job.secondary = Some(sealed.clone());
        job.token_fp = Some(fp.clone());
        job.credential_done = false;
    }
    Ok(row.is_some())
}

/// The org's live Vapi numbers of the job's subaccount whose recorded token is not
/// `fp`'s (unknown counts as not).
pub(super) async fn numbers_to_patch(
    db: &Db,
    job: &Job,
    fp: &TokenFingerprint,
) -> Result<Vec<NumberToPatch>, DbError> {
    let rows = db
        .query(
            "SELECT phone_number, vapi_phone_id FROM managed_phone_numbers
              WHERE org_id = $1 AND twilio_subaccount_sid = $2 AND status <> 'released'
                AND vapi_phone_id IS NOT NULL AND vapi_released_at IS NULL
                AND twilio_token_fp IS DISTINCT FROM $3
              ORDER BY phone_number",
            &[
                (&job.org.as_uuid(), Type::UUID),
                (&job.account_sid.as_str(), Type::TEXT),
                (&fp.as_str(), Type::TEXT),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| NumberToPatch {
            phone: r.get(0),
            vapi_id: r.get(1),
        })
        .collect())
}

/// The Vapi credential holds `fp`'s token, as of the generation read at the claim.
pub(super) async fn stamp_credential(
    db: &Db,
    job: &Job,
    fp: &TokenFingerprint,
) -> Result<(), DbError> {
    db.query(
        "UPDATE token_rotations SET credential_done_at = now(), credential_generation = $4
          WHERE id = $1 AND claim_token = $2 AND token_fp = $3",
        &[
            (&job.id, Type::UUID),
            (&job.token.as_uuid(), Type::UUID),
            (&fp.as_str(), Type::TEXT),
            (&job.sync_generation, Type::INT8),
        ],
    )
    .await?;
    Ok(())
}

/// These numbers' Vapi imports hold `fp`'s token; the job lists them as updated.
pub(super) async fn stamp_numbers(
    db: &Db,
    job: &Job,
    numbers: &[&NumberToPatch],
    fp: &TokenFingerprint,
) -> Result<(), DbError> {
    let ids: Vec<&str> = numbers.iter().map(|n| n.vapi_id.as_str()).collect();
    let phones: Vec<&str> = numbers.iter().map(|n| n.phone.as_str()).collect();
    db.query(
        "WITH ours AS (
             UPDATE token_rotations
                SET numbers_updated = ARRAY(SELECT DISTINCT p FROM unnest(numbers_updated || $4::text[]) p ORDER BY p)
              WHERE id = $1 AND claim_token = $2
              RETURNING org_id)
         UPDATE managed_phone_numbers SET twilio_token_fp = $5, updated_at = now()
          WHERE org_id = (SELECT org_id FROM ours) AND vapi_phone_id = ANY($3::text[])",
        &[
            (&job.id, Type::UUID),
            (&job.token.as_uuid(), Type::UUID),
            (&ids, Type::TEXT_ARRAY),
            (&phones, Type::TEXT_ARRAY),
            (&fp.as_str(), Type::TEXT),
        ],
    )
    .await?;
    Ok(())
}

/// How the promotion's start or the slot's seal went.
pub(super) enum Gate {
    /// Started (the promotion) or done (the seal).
    Go,
    Wait(&'static str),
    /// The job must end: the slot changed, or the org is being offboarded.
    Cancel(&'static str),
}

/// Whether some live Vapi number of the job's subaccount does not hold `fp`'s
/// token (checked under the org's row lock, against imports made meanwhile).
async fn numbers_behind(
    tx: &tokio_postgres::Transaction<'_>,
    job: &Job,
    fp: &TokenFingerprint,
) -> Result<bool, tokio_postgres::Error> {
    let behind = tx
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM managed_phone_numbers
                             WHERE org_id = $1 AND twilio_subaccount_sid = $2 AND status <> 'released'
                               AND vapi_phone_id IS NOT NULL AND vapi_released_at IS NULL
                               AND twilio_token_fp IS DISTINCT FROM $3)",
            &[
                (&job.org.as_uuid(), Type::UUID),
                (&job.account_sid.as_str(), Type::TEXT),
                (&fp.as_str(), Type::TEXT),
            ],
        )
        .await?;
    Ok(behind.get(0))
}

/// What both the promotion and the slot's seal require of the org, under its row
/// lock (saves, purchases and offboarding take the same lock): not being
/// offboarded (the job ends), no save holding it, and none since the credential
/// step — a save may have sent the credential another token, so that step is done
/// again. `None`: nothing holds the job back.
async fn org_hold(
    tx: &tokio_postgres::Transaction<'_>,
    job: &Job,
) -> Result<Option<Gate>, tokio_postgres::Error> {
    let o = tx
        .query_typed_one(
            "SELECT coalesce(sync_lease_until >= now(), false), sync_generation,
                    offboard_requested_at IS NOT NULL
               FROM organizations WHERE id = $1 FOR NO KEY UPDATE",
            &[(&job.org.as_uuid(), Type::UUID)],
        )
        .await?;
    let (lease_live, generation, offboarding): (bool, i64, bool) = (o.get(0), o.get(1), o.get(2));
    if offboarding {
        return Ok(Some(Gate::Cancel("org_offboarding")));
    }
    if lease_live {
        return Ok(Some(Gate::Wait("sync_in_progress")));
    }
    if generation != job.sync_generation {
        tx.query_typed(
            "UPDATE token_rotations SET credential_done_at = NULL WHERE id = $1 AND claim_token = $2",
            &[(&job.id, Type::UUID), (&job.token.as_uuid(), Type::UUID)],
        )
        .await?;
        return Ok(Some(Gate::Wait("credential_changed")));
    }
    Ok(None)
}

/// Whether the secondary may be promoted now, and if so the promotion's start,
/// stamped: no save holds the org (and none since the credential was PATCHed), no
/// purchase of the org holds a claim (the one-row lock below keeps new ones out
/// until this commits; from then on purchases wait for the promotion), and every
/// live Vapi number holds the secondary.
pub(super) async fn start_promotion(
    db: &Db,
    job: &Job,
    fp: &TokenFingerprint,
) -> Result<Gate, RotationError> {
    let org = job.org.as_uuid();
    db.transaction(async |tx| {
        if let Some(hold) = org_hold(tx, job).await? {
            return Ok(hold);
        }
        // A purchase holding a claim may import with the primary it read; one whose
        // import was sent and never recorded (its answer lost) may have landed at
        // Vapi with it already: either would hold a dead token after the promotion.
        // Both are waited for (reconcile finishes or gives such a purchase up).
        let purchases = tx
            .query_typed(
                "SELECT coalesce(claimed_until >= now(), false)
                        OR (import_attempted_at IS NOT NULL AND vapi_phone_id IS NULL)
                   FROM managed_phone_numbers
                  WHERE org_id = $1 AND status = 'provisioning' FOR UPDATE",
                &[(&org, Type::UUID)],
            )
            .await?;
        if purchases.iter().any(|r| r.get::<_, bool>(0)) {
            return Ok(Gate::Wait("purchase_in_progress"));
        }
        if numbers_behind(tx, job, fp).await? {
            return Ok(Gate::Wait("numbers_changed"));
        }
        let started = tx
            .query_typed_opt(
                "UPDATE token_rotations SET promote_started_at = coalesce(promote_started_at, now())
                  WHERE id = $1 AND claim_token = $2 AND token_fp = $3 RETURNING 1",
                &[
                    (&job.id, Type::UUID),
                    (&job.token.as_uuid(), Type::UUID),
                    (&fp.as_str(), Type::TEXT),
                ],
            )
            .await?;
        Ok(if started.is_some() {
            Gate::Go
        } else {
            Gate::Wait("claim_lost")
        })
    })
    .await
}

pub(super) async fn stamp_promoted(db: &Db, job: &Job) -> Result<(), DbError> {
    db.query(
        "UPDATE token_rotations SET promoted_at = coalesce(promoted_at, now())
          WHERE id = $1 AND promote_started_at IS NOT NULL",
        &[(&job.id, Type::UUID)],
    )
    .await?;
    Ok(())
}

/// The slot holds the new token (sealed) and its fingerprint, and the job is done,
/// in one transaction.
pub(super) async fn seal_slot(
    db: &Db,
    job: &Job,
    sealed: &Value,
    fp: &TokenFingerprint,
) -> Result<Gate, RotationError> {
    let org = job.org.as_uuid();
    db.transaction(async |tx| {
        // The credential and every number must hold the token now, not only when
        // each was PATCHed: a save or an import since sends the next attempt back.
        if let Some(hold) = org_hold(tx, job).await? {
            return Ok(hold);
        }
        if numbers_behind(tx, job, fp).await? {
            return Ok(Gate::Wait("numbers_changed"));
        }
        let slot = tx
            .query_typed_opt(
                "UPDATE org_credentials
                    SET encrypted_config = $3,
                        metadata = metadata || jsonb_build_object('tokenFingerprint', $4::text),
                        updated_at = now()
                  WHERE org_id = $1 AND provider = 'twilio' AND source = 'managed'
                    AND metadata->>'accountSid' = $2
                  RETURNING 1",
                &[
                    (&org, Type::UUID),
                    (&job.account_sid.as_str(), Type::TEXT),
                    (sealed, Type::JSONB),
                    (&fp.as_str(), Type::TEXT),
                ],
            )
            .await?;
        if slot.is_none() {
            return Ok(Gate::Cancel("slot_changed"));
        }
        let done = tx
            .query_typed_opt(
                "UPDATE token_rotations SET done_at = now(), secondary = NULL, token_fp = $3
                  WHERE id = $1 AND claim_token = $2 RETURNING 1",
                &[
                    (&job.id, Type::UUID),
                    (&job.token.as_uuid(), Type::UUID),
                    (&fp.as_str(), Type::TEXT),
                ],
            )
            .await?;
        if done.is_none() {
            // Taken over: roll the seal back with the rest.
            return Err(RotationError::Db(DbError::Shape("claim lost".into())));
        }
        Ok(Gate::Go)
    })
    .await
    .or_else(|e| match e {
        RotationError::Db(DbError::Shape(s)) if s == "claim lost" => Ok(Gate::Wait("claim_lost")),
        other => Err(other),
    })
}

/// Step 3: the attempt's outcome, only while the claim is ours, with an audit row.
pub(super) async fn record(
    db: &Db,
    config: &StepsConfig,
    job: &Job,
    caller: &Caller,
    request_id: &str,
    ends: &Ends,
    counted: bool,
) -> Result<Rotation, RotationError> {
    let errors = json!(ends.errors);
    let errors_json = (!ends.errors.is_empty()).then_some(&errors);
    let backoff = retry_backoff(job.attempts + 1).as_secs_f64();
    let max = config.max_attempts;
    let written = db
        .transaction(async |tx| {
            let row = tx
                .query_typed_opt(
                    "UPDATE token_rotations
                        SET attempts = attempts + CASE WHEN $3 THEN 1 ELSE 0 END,
                            -- After a call whose answer was lost the claim stays
                            -- until it expires: the next attempt comes after it.
                            next_attempt_at = CASE WHEN done_at IS NULL AND $4::text IS NULL
                                THEN greatest(now() + make_interval(secs => $5),
                                              CASE WHEN $8 THEN claimed_until END) END,
                            last_error = CASE WHEN done_at IS NULL THEN $6 END,
                            -- Never given up between the start of a promotion and
                            -- its end: purchases of the org wait on it, so reconcile
                            -- keeps settling it (its alarm still counts attempts).
                            gave_up_at = CASE WHEN $3 AND done_at IS NULL AND $4::text IS NULL
                                                   AND attempts + 1 >= $7
                                                   AND NOT (promote_started_at IS NOT NULL
                                                            AND promoted_at IS NULL)
                                THEN coalesce(gave_up_at, now()) END,
                            cancelled_at = CASE WHEN $4::text IS NOT NULL AND done_at IS NULL THEN now() END,
                            cancel_reason = CASE WHEN done_at IS NULL THEN $4 END,
                            secondary = CASE WHEN $4::text IS NOT NULL THEN NULL ELSE secondary END,
                            claim_token = CASE WHEN $8 AND $4::text IS NULL THEN claim_token END,
                            claimed_until = CASE WHEN $8 AND $4::text IS NULL THEN claimed_until END
                      WHERE id = $1 AND claim_token = $2
                      RETURNING done_at IS NOT NULL",
                    &[
                        (&job.id, Type::UUID),
                        (&job.token.as_uuid(), Type::UUID),
                        (&counted, Type::BOOL),
                        (&ends.cancel, Type::TEXT),
                        (&backoff, Type::FLOAT8),
                        (&errors_json, Type::JSONB),
                        (&max, Type::INT4),
                        (&ends.keep_claim, Type::BOOL),
                    ],
                )
                .await?;
            let Some(row) = row else {
                return Ok::<_, RotationError>(false);
            };
            let done: bool = row.get(0);
            let outcome = match (done, ends.cancel) {
                (true, _) => "rotated",
                (false, Some(_)) => "cancelled",
                (false, None) => "rotation_pending",
            };
            audit::record(
                tx,
                &AuditEntry {
                    caller,
                    action: "credential.rotate",
                    target: job.account_sid.as_str(),
                    request_id,
                    outcome,
                    detail: json!({
                        "rotationId": job.id,
                        "kind": if job.kind == Kind::Adopt { "adopt" } else { "rotate" },
                        "promoted": ends.promoted,
                        "errors": ends.errors,
                        "cancelReason": ends.cancel,
                    }),
                },
            )
            .await?;
            Ok(true)
        })
        .await?;
    if !written {
        tracing::warn!("the rotation's claim was taken over; its holder writes the outcome");
    }
    current(db, job.id).await
}

/// What an answer and status show of a job (never the sealed secondary), each
/// column named so status can find them beside its own ([`rotation_from_row`]).
pub const STATE_COLS: &str = "r.id AS rotation_id, r.kind AS rotation_kind,
    r.account_sid AS rotation_account_sid, r.requested_at AS rotation_requested_at,
    r.done_at AS rotation_done_at, r.cancelled_at AS rotation_cancelled_at,
    r.cancel_reason AS rotation_cancel_reason, r.promoted_at IS NOT NULL AS rotation_promoted,
    r.credential_done_at IS NOT NULL AS rotation_credential_done,
    r.numbers_updated AS rotation_numbers_updated, r.attempts AS rotation_attempts,
    r.next_attempt_at AS rotation_next_attempt_at, r.last_error AS rotation_last_error,
    r.gave_up_at IS NOT NULL AS rotation_gave_up,
    (r.claim_token IS NOT NULL AND r.claimed_until >= now()) AS rotation_held,
    CASE WHEN r.done_at IS NULL AND r.cancelled_at IS NULL THEN
        ARRAY(SELECT n.phone_number FROM managed_phone_numbers n
               WHERE n.org_id = r.org_id AND n.twilio_subaccount_sid = r.account_sid
                 AND n.status <> 'released' AND n.vapi_phone_id IS NOT NULL
                 AND n.vapi_released_at IS NULL
                 AND n.twilio_token_fp IS DISTINCT FROM r.token_fp
               ORDER BY n.phone_number)
    ELSE '{}'::text[] END AS rotation_numbers_pending";

/// The job read from [`STATE_COLS`] at `at` (`None`: the columns are NULL, no job).
pub fn rotation_from_row(row: &Row, at: usize) -> Result<Option<Rotation>, DbError> {
    let shape = |e: tokio_postgres::Error| DbError::Shape(format!("rotation: {e}"));
    let Some(id) = row.try_get::<_, Option<Uuid>>(at).map_err(shape)? else {
        return Ok(None);
    };
    let get = |i: usize| at + i;
    let done_at: Option<DateTime<Utc>> = row.try_get(get(4)).map_err(shape)?;
    let cancelled: Option<DateTime<Utc>> = row.try_get(get(5)).map_err(shape)?;
    let gave_up: bool = row.try_get(get(13)).map_err(shape)?;
    let held: bool = row.try_get(get(14)).map_err(shape)?;
    let open = done_at.is_none() && cancelled.is_none();
    let status = match (done_at.is_some(), cancelled.is_some(), gave_up) {
        (true, _, _) => "rotated",
        (_, true, _) => "cancelled",
        (_, _, true) => "needs_attention",
        _ => "rotating",
    };
    let errors = match row.try_get::<_, Option<Value>>(get(12)).map_err(shape)? {
        Some(Value::Object(map)) if open => map,
        _ => serde_json::Map::new(),
    };
    Ok(Some(Rotation {
        id,
        kind: row.try_get(get(1)).map_err(shape)?,
        status: status.to_owned(),
        account_sid: row.try_get(get(2)).map_err(shape)?,
        requested_at: row.try_get(get(3)).map_err(shape)?,
        done_at,
        promoted: row.try_get(get(7)).map_err(shape)?,
        credential_updated: row.try_get(get(8)).map_err(shape)?,
        numbers: RotationNumbers {
            updated: row.try_get(get(9)).map_err(shape)?,
            pending: row.try_get(get(15)).map_err(shape)?,
        },
        errors,
        attempts: row.try_get(get(10)).map_err(shape)?,
        next_attempt_at: if open && !gave_up && !held {
            row.try_get(get(11)).map_err(shape)?
        } else {
            None
        },
        cancel_reason: row.try_get(get(6)).map_err(shape)?,
    }))
}

/// A job as it stands.
pub(super) async fn current(db: &Db, id: Uuid) -> Result<Rotation, RotationError> {
    let row = db
        .query_one(
            &format!("SELECT {STATE_COLS} FROM token_rotations r WHERE r.id = $1"),
            &[(&id, Type::UUID)],
        )
        .await?;
    rotation_from_row(&row, 0)?
        .ok_or_else(|| RotationError::Db(DbError::Shape("rotation: no job".into())))
}

/// Open an `adopt` job for a token rotated elsewhere (a purchase read back a token
/// the slot does not hold; the audit found a number with another token), unless the
/// org has an open job, is being offboarded, or its slot is not this managed
/// subaccount. `true` when one was opened; reconcile finishes it.
pub async fn request_adopt(
    db: &Db,
    caller: &Caller,
    request_id: &str,
    account_sid: &AccountSid,
    why: &str,
) -> Result<bool, DbError> {
    let org = caller.org_id.as_uuid();
    db.transaction(async |tx| {
        let row = tx
            .query_typed_opt(
                "INSERT INTO token_rotations (id, org_id, account_sid, kind, requested_by)
                 SELECT $1, o.id, $3, 'adopt', $4
                   FROM organizations o
                   JOIN org_credentials c ON c.org_id = o.id AND c.provider = 'twilio'
                  WHERE o.id = $2 AND o.offboard_requested_at IS NULL
                    AND c.source = 'managed' AND c.metadata->>'accountSid' = $3
                 ON CONFLICT (org_id) WHERE done_at IS NULL AND cancelled_at IS NULL DO NOTHING
                 RETURNING id",
                &[
                    (&Uuid::new_v4(), Type::UUID),
                    (&org, Type::UUID),
                    (&account_sid.as_str(), Type::TEXT),
                    (&caller.subject, Type::TEXT),
                ],
            )
            .await?;
        let Some(row) = row else { return Ok(false) };
        let id: Uuid = row.get(0);
        audit::record(
            tx,
            &AuditEntry {
                caller,
                action: "credential.rotate_requested",
                target: account_sid.as_str(),
                request_id,
                outcome: "adopting",
                detail: json!({ "rotationId": id, "kind": "adopt", "why": why }),
            },
        )
        .await?;
        Ok::<_, DbError>(true)
    })
    .await
}
