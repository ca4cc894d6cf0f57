//! The release's database side: taking the claim (intent) and writing the outcome
//! as its holder.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{ReleaseError, ReleaseOutcome};
use crate::audit::{self, AuditEntry};
use crate::db::{Db, DbError};
use crate::identity::Caller;
use crate::ids::{AccountSid, E164, OrgId, PhoneNumberSid};
use crate::steps::{ClaimToken, Step, StepError, StepsConfig, retry_backoff};

/// A number this release holds.
#[derive(Debug)]
pub struct Claim {
    pub(super) id: Uuid,
    pub(super) org: OrgId,
    pub(super) phone_number: String,
    pub(super) token: ClaimToken,
    pub(super) number_sid: Result<PhoneNumberSid, String>,
    pub(super) subaccount: Result<AccountSid, String>,
    pub(super) vapi_phone_id: Option<String>,
    pub(super) vapi_done: bool,
    pub(super) twilio_done: bool,
    /// Attempts including this one.
    pub(super) attempts: i32,
}

impl Claim {
    pub fn token(&self) -> ClaimToken {
        self.token
    }

    /// Release attempts so far, this one included.
    pub fn attempts(&self) -> i32 {
        self.attempts
    }
}

/// Sets the claim. Re-sending it with the same token (after a dropped connection
/// whose first attempt had committed) finds the row already ours and changes
/// nothing but the expiry, so it is still recognised as ours.
const CLAIM_SET: &str = "SET status = 'releasing',
           claimed_until = now() + make_interval(secs => $1),
           release_attempts = release_attempts
               + CASE WHEN claim_token IS NOT DISTINCT FROM $2 THEN 0 ELSE 1 END,
           claim_token = $2,
           release_requested_at = coalesce(release_requested_at, now()),
           updated_at = now()";
const CLAIM_RETURNING: &str =
    "RETURNING id, org_id, phone_number, twilio_phone_sid, twilio_subaccount_sid,
           vapi_phone_id, vapi_released_at IS NOT NULL, twilio_released_at IS NOT NULL,
           release_attempts";

impl Claim {
    fn from_row(row: &Row, token: ClaimToken) -> Self {
        // Never NULL outside `provisioning`, which is never claimed for release.
        let number_sid: String = row.get::<_, Option<String>>(3).unwrap_or_default();
        let subaccount: String = row.get::<_, Option<String>>(4).unwrap_or_default();
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
            attempts: row.get(8),
        }
    }
}

/// Claim `number` of `org` for a release request under `token`: any state but
/// `released` and a live claim of somebody else's (`needs_attention` too: a person
/// retrying). Public so the re-send rule can be tested on its own.
pub async fn claim_number(
    db: &Db,
    config: &StepsConfig,
    org: OrgId,
    number: &E164,
    token: ClaimToken,
) -> Result<Option<Claim>, DbError> {
    let sql = format!(
        "UPDATE managed_phone_numbers {CLAIM_SET}
          WHERE org_id = $3 AND phone_number = $4
            AND (status IN ('active', 'release_pending', 'needs_attention')
                 OR (status = 'releasing' AND (claimed_until < now() OR claim_token = $2)))
         {CLAIM_RETURNING}"
    );
    let row = db
        .query_opt(
            &sql,
            &[
                (&config.claim_ttl.as_secs_f64(), Type::FLOAT8),
                (&token.as_uuid(), Type::UUID),
                (&org.as_uuid(), Type::UUID),
                (&number.as_str(), Type::TEXT),
            ],
        )
        .await?;
    Ok(row.map(|r| Claim::from_row(&r, token)))
}

/// Claim the next due release for reconcile: a pending one whose backoff has
/// passed, or one whose holder died (claim expired); fewest attempts first, so rows
/// that keep failing cannot crowd out newer ones. Rows another release holds are
/// skipped; rows touched since `run_started` are not taken again in this run. A
/// re-sent statement (same token) finds the row it already claimed.
pub(super) async fn claim_next_due(
    db: &Db,
    config: &StepsConfig,
    run_started: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Claim>, DbError> {
    let token = ClaimToken::new();
    let sql = format!(
        "UPDATE managed_phone_numbers {CLAIM_SET}
          WHERE id = (SELECT id FROM managed_phone_numbers
                       WHERE status IN ('releasing', 'release_pending')
                         AND (claim_token = $2
                              OR (((status = 'release_pending' AND coalesce(next_attempt_at, '-infinity') <= now())
                                   OR (status = 'releasing' AND claimed_until < now()))
                                  AND updated_at < $3))
                       ORDER BY claim_token IS NOT DISTINCT FROM $2 DESC,
                                release_attempts, next_attempt_at NULLS FIRST,
                                release_requested_at, id
                       LIMIT 1 FOR UPDATE SKIP LOCKED)
             AND (status = 'release_pending' OR claimed_until < now() OR claim_token = $2)
         {CLAIM_RETURNING}"
    );
    let row = db
        .query_opt(
            &sql,
            &[
                (&config.claim_ttl.as_secs_f64(), Type::FLOAT8),
                (&token.as_uuid(), Type::UUID),
                (&run_started, Type::TIMESTAMPTZ),
            ],
        )
        .await?;
    Ok(row.map(|r| Claim::from_row(&r, token)))
}

/// The state of a number this request could not claim: `None` when it became
/// claimable in between.
pub(super) async fn current(
    db: &Db,
    org: OrgId,
    number: &E164,
) -> Result<Option<ReleaseOutcome>, ReleaseError> {
    let row = db
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
        "provisioning" => return Err(ReleaseError::Provisioning(phone_number)),
        _ => None,
    })
}

/// Write the outcome if the claim is still ours: stamp finished steps, stop
/// routing, and set `released`, `release_pending` (with the next attempt's time)
/// or `needs_attention`; one audit row.
pub(super) async fn record(
    db: &Db,
    config: &StepsConfig,
    claim: &Claim,
    vapi: &Step,
    twilio: &Step,
    caller: &Caller,
    request_id: &str,
) -> Result<ReleaseOutcome, ReleaseError> {
    let mut errors = Map::new();
    let mut codes = BTreeMap::new();
    let mut pending = Vec::new();
    for (name, step) in [("vapi", vapi), ("twilio", twilio)] {
        if let Some(e) = step.error() {
            tracing::warn!(step = name, error = %e, code = e.stable_code(), "release step failed; the number stays pending");
            pending.push(name);
            codes.insert(name, e.stable_code());
            errors.insert(name.into(), json!(StepError::from(e)));
        }
    }
    let (vapi_done, twilio_done) = (vapi.is_done(), twilio.is_done());
    let last_error = (!errors.is_empty()).then_some(Value::Object(errors));
    let backoff = retry_backoff(claim.attempts).as_secs_f64();
    let phone_number = claim.phone_number.clone();
    db.transaction(async |tx| {
        let row = tx
            .query_typed_opt(
                "UPDATE managed_phone_numbers
                    SET vapi_released_at = CASE WHEN $3 THEN coalesce(vapi_released_at, now()) ELSE vapi_released_at END,
                        twilio_released_at = CASE WHEN $4 THEN coalesce(twilio_released_at, now()) ELSE twilio_released_at END,
                        status = CASE WHEN $3 AND $4 THEN 'released'
                                      WHEN release_attempts >= $6 THEN 'needs_attention'
                                      ELSE 'release_pending' END,
                        released_at = CASE WHEN $3 AND $4 THEN now() END,
                        next_attempt_at = CASE WHEN $3 AND $4 THEN NULL
                                               ELSE now() + make_interval(secs => $7) END,
                        last_release_error = $5,
                        claimed_until = NULL, claim_token = NULL, updated_at = now()
                  WHERE id = $1 AND claim_token = $2 AND status = 'releasing'
                  RETURNING status, released_at, release_attempts",
                &[
                    (&claim.id, Type::UUID),
                    (&claim.token.as_uuid(), Type::UUID),
                    (&vapi_done, Type::BOOL),
                    (&twilio_done, Type::BOOL),
                    (&last_error, Type::JSONB),
                    (&config.max_attempts, Type::INT4),
                    (&backoff, Type::FLOAT8),
                ],
            )
            .await?;
        let Some(row) = row else {
            // Our claim expired and another release took the number over; it
            // will write the outcome (the steps we finished are idempotent).
            tracing::warn!("release claim was taken over; leaving the outcome to its new holder");
            return Ok(ReleaseOutcome::Releasing { phone_number: phone_number.clone() });
        };
        let status: String = row.get(0);
        let attempts: i32 = row.get(2);
        // The number stops routing either way.
        tx.query_typed(
            "DELETE FROM phone_number_mapping WHERE org_id = $1 AND inbound_phone_number = $2",
            &[(&claim.org.as_uuid(), Type::UUID), (&claim.phone_number, Type::TEXT)],
        )
        .await?;
        let outcome = match (status.as_str(), row.get(1)) {
            ("released", Some(released_at)) => ReleaseOutcome::Released {
                phone_number: phone_number.clone(),
                released_at,
            },
            ("needs_attention", _) => ReleaseOutcome::NeedsAttention {
                phone_number: phone_number.clone(),
                pending: pending.clone(),
                errors: codes.clone(),
            },
            _ => ReleaseOutcome::ReleasePending {
                phone_number: phone_number.clone(),
                pending: pending.clone(),
                errors: codes.clone(),
            },
        };
        let outcome_code = match &outcome {
            ReleaseOutcome::Released { .. } => "released",
            ReleaseOutcome::NeedsAttention { .. } => "needs_attention",
            _ => "release_pending",
        };
        audit::record(
            tx,
            &AuditEntry {
                caller,
                action: "number.release",
                target: &phone_number,
                request_id,
                outcome: outcome_code,
                detail: json!({ "attempt": attempts, "pending": pending, "errors": codes }),
            },
        )
        .await?;
        Ok::<_, ReleaseError>(outcome)
    })
    .await
}
