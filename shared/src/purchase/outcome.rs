//! The purchase's outcome (step 3 of [`super`]), written only while the claim is
//! ours: active and routed, left pending, closed (nothing bought), or unwound
//! into a release (bought, cannot be finished).

use serde_json::{Value, json};
use tokio_postgres::types::Type;

use super::PurchaseError;
use super::record::{ActiveNumber, PurchaseClaim};
use crate::audit::{self, AuditEntry};
use crate::db::{Db, DbError};
use crate::identity::Caller;
use crate::steps::retry_backoff;

/// Step 3, success: `active`, routed to its assistant, audited.
pub(super) async fn activate(
    db: &Db,
    claim: &PurchaseClaim,
    caller: &Caller,
    request_id: &str,
) -> Result<Option<ActiveNumber>, PurchaseError> {
    db.transaction(async |tx| {
        let Some(row) = tx
            .query_typed_opt(
                "UPDATE managed_phone_numbers
                    SET status = 'active', claim_token = NULL, claimed_until = NULL,
                        next_attempt_at = NULL, last_purchase_error = NULL, updated_at = now()
                  WHERE id = $1 AND claim_token = $2 AND status = 'provisioning'
                    AND bought_at IS NOT NULL AND imported_at IS NOT NULL
                  RETURNING twilio_phone_sid, vapi_phone_id, assistant_id, display_name, sms_enabled",
                &[(&claim.id, Type::UUID), (&claim.token.as_uuid(), Type::UUID)],
            )
            .await?
        else {
            return Ok(None);
        };
        let active = ActiveNumber {
            phone_number: claim.number.to_string(),
            twilio_phone_sid: row.get(0),
            vapi_phone_id: row.get(1),
            assistant_id: row.get(2),
            name: row.get(3),
            sms_enabled: row.get(4),
            assistant_pending: false,
        };
        // One number routes to one org: a routing row of another org is refused by
        // the WHERE (no row) and surfaces as the constraint's 409.
        let routed = tx
            .query_typed_opt(
                "INSERT INTO phone_number_mapping (org_id, inbound_phone_number, vapi_phone_id, vapi_assistant_id)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (inbound_phone_number) DO UPDATE
                    SET vapi_phone_id = excluded.vapi_phone_id,
                        vapi_assistant_id = excluded.vapi_assistant_id, updated_at = now()
                  WHERE phone_number_mapping.org_id = excluded.org_id
                 RETURNING 1",
                &[
                    (&claim.org.as_uuid(), Type::UUID),
                    (&claim.number.as_str(), Type::TEXT),
                    (&active.vapi_phone_id, Type::TEXT),
                    (&active.assistant_id, Type::TEXT),
                ],
            )
            .await?;
        if routed.is_none() {
            return Err(PurchaseError::RoutedElsewhere);
        }
        audit::record(
            tx,
            &AuditEntry {
                caller,
                action: "number.purchase",
                target: claim.number.as_str(),
                request_id,
                outcome: "active",
                detail: json!({
                    "operationId": claim.operation_id,
                    "twilioPhoneSid": active.twilio_phone_sid,
                    "vapiPhoneId": active.vapi_phone_id,
                    "assistantId": active.assistant_id,
                }),
            },
        )
        .await?;
        Ok(Some(active))
    })
    .await
}

/// Step 3, unfinished: the claim is let go with the failed step's error and the
/// next attempt's time (reconcile resumes it; a repeated request may at once).
/// With `keep_claim` (a create's outcome unknown) the claim stays until it
/// expires: a repeat sees the purchase in progress, reconcile waits for it.
pub(super) async fn leave_pending(
    db: &Db,
    claim: &PurchaseClaim,
    error: &Value,
    keep_claim: bool,
) -> Result<(), DbError> {
    let backoff = retry_backoff(claim.attempts).as_secs_f64();
    db.query(
        "UPDATE managed_phone_numbers
            SET claim_token = CASE WHEN $5 THEN claim_token END,
                claimed_until = CASE WHEN $5 THEN claimed_until END,
                last_purchase_error = $3,
                next_attempt_at = now() + make_interval(secs => $4), updated_at = now()
          WHERE id = $1 AND claim_token = $2 AND status = 'provisioning'",
        &[
            (&claim.id, Type::UUID),
            (&claim.token.as_uuid(), Type::UUID),
            (error, Type::JSONB),
            (&backoff, Type::FLOAT8),
            (&keep_claim, Type::BOOL),
        ],
    )
    .await?;
    Ok(())
}

/// Step 3, refused with nothing bought: the intent is closed (the row goes; the
/// audit log keeps the attempt), so the number is free again and nothing bills.
/// A row whose purchase was ever attempted goes only when `nothing_bought` (Twilio
/// refused the purchase, or a lookup found nothing): otherwise nothing is deleted
/// and `false` comes back.
pub(super) async fn close(
    db: &Db,
    claim: &PurchaseClaim,
    caller: &Caller,
    request_id: &str,
    code: &'static str,
    nothing_bought: bool,
) -> Result<bool, PurchaseError> {
    db.transaction(async |tx| {
        let deleted = tx
            .query_typed_opt(
                "DELETE FROM managed_phone_numbers
                  WHERE id = $1 AND claim_token = $2 AND status = 'provisioning' AND bought_at IS NULL
                    AND (buy_attempted_at IS NULL OR $3)
                  RETURNING 1",
                &[
                    (&claim.id, Type::UUID),
                    (&claim.token.as_uuid(), Type::UUID),
                    (&nothing_bought, Type::BOOL),
                ],
            )
            .await?;
        if deleted.is_some() {
            audit::record(
                tx,
                &AuditEntry {
                    caller,
                    action: "number.purchase",
                    target: claim.number.as_str(),
                    request_id,
                    outcome: "refused",
                    detail: json!({ "operationId": claim.operation_id, "code": code }),
                },
            )
            .await?;
        }
        Ok(deleted.is_some())
    })
    .await
}

/// Step 3, cannot be finished after buying: hand the number to the release
/// protocol (`release_pending`, due now), so what was bought is released and never
/// bills unseen.
pub(super) async fn unwind(
    db: &Db,
    claim: &PurchaseClaim,
    caller: &Caller,
    request_id: &str,
    error: &Value,
) -> Result<bool, PurchaseError> {
    db.transaction(async |tx| {
        let moved = tx
            .query_typed_opt(
                "UPDATE managed_phone_numbers
                    SET status = 'release_pending', claim_token = NULL, claimed_until = NULL,
                        release_requested_at = now(), next_attempt_at = now(),
                        last_purchase_error = $3, updated_at = now()
                  WHERE id = $1 AND claim_token = $2 AND status = 'provisioning'
                    AND bought_at IS NOT NULL
                  RETURNING 1",
                &[
                    (&claim.id, Type::UUID),
                    (&claim.token.as_uuid(), Type::UUID),
                    (error, Type::JSONB),
                ],
            )
            .await?;
        if moved.is_none() {
            return Ok(false);
        }
        audit::record(
            tx,
            &AuditEntry {
                caller,
                action: "number.purchase",
                target: claim.number.as_str(),
                request_id,
                outcome: "unwound",
                detail: json!({ "operationId": claim.operation_id, "error": error }),
            },
        )
        .await?;
        Ok(true)
    })
    .await
}
