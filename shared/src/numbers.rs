//! The org's managed numbers and credential summary, as the status route shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use tokio_postgres::types::Type;

use crate::db::{Db, DbError};
use crate::ids::OrgId;

/// A managed number's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberStatus {
    /// Being bought: the purchase has not finished (see `purchase`).
    Provisioning,
    Active,
    /// A release holds the number right now.
    Releasing,
    /// A provider step failed; the number may still bill and will be retried.
    ReleasePending,
    /// The release failed `RECONCILE_MAX_ATTEMPTS` times: it may still bill,
    /// reconcile stopped retrying, a person should look (a DELETE retries it).
    NeedsAttention,
    Released,
}

impl NumberStatus {
    /// The `managed_phone_numbers.status` text (its CHECK lists the same values).
    fn from_column(s: &str) -> Result<Self, DbError> {
        Ok(match s {
            "provisioning" => Self::Provisioning,
            "active" => Self::Active,
            "releasing" => Self::Releasing,
            "release_pending" => Self::ReleasePending,
            "needs_attention" => Self::NeedsAttention,
            "released" => Self::Released,
            other => return Err(DbError::Shape(format!("number status {other:?}"))),
        })
    }
}

/// Why a release is unfinished (never the provider's raw body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseProgress {
    /// Steps still to do: `vapi`, `twilio`.
    pub pending: Vec<String>,
    pub attempts: i32,
    /// When reconcile retries it next (`null` while a release holds it, or for
    /// `needs_attention`, which reconcile no longer retries).
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Stable code of each failed step's last error, e.g. `{"twilio": "twilio_unavailable"}`.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub errors: serde_json::Map<String, serde_json::Value>,
}

/// Why a purchase is unfinished (never the provider's raw body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseProgress {
    /// Steps still to do: `subaccount`, `twilio`, `vapi`.
    pub pending: Vec<String>,
    pub attempts: i32,
    /// When reconcile resumes it (`null` while a request holds it).
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Stable code of the last failed step, e.g. `{"vapi": "vapi_unavailable"}`.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub errors: serde_json::Map<String, serde_json::Value>,
}

/// An assistant change Vapi has not confirmed yet (`assistantPending`): how far
/// reconcile got with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssistantChange {
    /// Attempts at sending it, the org's request included.
    pub attempts: i32,
    /// When reconcile sends it again (`null` once given up).
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Stable code of the last failed attempt, e.g. `vapi_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Reconcile gave up after `RECONCILE_MAX_ATTEMPTS` (or Vapi refused it): the
    /// number may route elsewhere than shown until the org changes it again.
    pub needs_attention: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedNumber {
    pub phone_number: String,
    pub status: NumberStatus,
    pub vapi_phone_id: Option<String>,
    /// `null` until a purchase has bought it.
    pub twilio_phone_sid: Option<String>,
    /// The Vapi assistant it routes to.
    pub assistant_id: Option<String>,
    /// Its name at Vapi.
    pub name: Option<String>,
    /// An assistant change Vapi has not confirmed yet (reconcile sends it again).
    #[serde(default)]
    pub assistant_pending: bool,
    pub created_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase: Option<PurchaseProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant_change: Option<AssistantChange>,
    /// What the carrier audit found open about this number (e.g. `vapi_missing`:
    /// calls go nowhere), oldest kind first by code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<NumberFinding>,
}

/// An open finding of the carrier audit about a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NumberFinding {
    /// Its stable code: `billed_unknown`, `vapi_missing`, `assistant_mismatch`,
    /// `carrier_missing`, `voice_url_mismatch`.
    pub kind: String,
    pub first_seen_at: DateTime<Utc>,
    /// The audit repaired what it could (a release or an assistant change recorded);
    /// the finding closes when a later pass no longer sees it.
    pub repaired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VapiSyncState {
    pub synced: bool,
    pub synced_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The org's credential slot, summarised: never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialSummary {
    pub account_sid: Option<String>,
    pub phone_number: Option<String>,
    pub source: String,
    pub vapi_credential_id: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub vapi: VapiSyncState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub credential: Option<CredentialSummary>,
    pub numbers: Vec<ManagedNumber>,
    /// The org's offboarding, once asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offboarding: Option<crate::offboard::Offboarding>,
    /// The org's latest token rotation (asked for, or a token rotated elsewhere
    /// being brought to Vapi), once there was one.
    #[serde(rename = "tokenRotation", skip_serializing_if = "Option::is_none")]
    pub token_rotation: Option<crate::rotation::Rotation>,
}

/// Which numbers to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Every number not yet released (the default).
    Current,
    /// Released history too (`?include=released`).
    WithReleased,
}

/// The status query: the org's slot (joined with its Vapi sync state) beside each of
/// its numbers, one flat row per number (a single row of NULL numbers when it has
/// none); the JSON is built in [`status`].
///
/// Plain columns rather than `jsonb_build_object`/`jsonb_agg`: every function and
/// operator a statement names is a catalog lookup on a fresh backend, and a JSON
/// the server builds is parsed again here. Measured on the demo org (psql, fresh
/// connection per run): the first statement of a new backend ≈ 3.1 ms against
/// ≈ 4.1 ms for the server-built JSON, and ≈ 0.65 against ≈ 1.1 ms warm. Only what
/// needs the server's clock (the sync lease) is computed there. Warm, with 210
/// numbers (`scripts/bench.sh routes`): list-numbers p50 ≈ 5.7 ms before, ≈ 2.6 ms
/// after.
const STATUS_SQL: &str = "SELECT
        cr.org_id IS NOT NULL AS has_credential,
        cr.metadata->>'accountSid' AS account_sid, cr.metadata->>'phoneNumber' AS slot_number,
        cr.source, o.vapi_credential_id, cr.updated_at AS credential_updated_at,
        o.vapi_credential_id IS NOT NULL AND o.synced_generation = o.sync_generation AS synced,
        o.vapi_synced_at,
        CASE WHEN o.synced_generation < o.sync_generation THEN
            CASE WHEN o.sync_lease_until >= now() THEN 'sync_in_progress'
                 ELSE coalesce(o.vapi_sync_error, 'sync_unfinished') END END AS sync_code,
        n.phone_number, n.status, n.vapi_phone_id, n.twilio_phone_sid, n.assistant_id,
        n.display_name, n.assistant_pending, n.created_at, n.released_at,
        n.vapi_released_at IS NULL AS vapi_release_pending,
        n.twilio_released_at IS NULL AS twilio_release_pending,
        n.release_attempts, n.next_attempt_at, n.last_release_error,
        n.twilio_subaccount_sid IS NULL AS subaccount_pending,
        n.bought_at IS NULL AS purchase_pending, n.imported_at IS NULL AS import_pending,
        n.purchase_attempts, n.claim_token IS NULL AS unclaimed, n.last_purchase_error,
        n.route_attempts, n.next_route_attempt_at, n.last_route_error->>'code' AS route_code,
        n.route_gave_up_at IS NOT NULL AS route_gave_up,
        fx.kinds AS finding_kinds, fx.seen AS finding_seen, fx.repaired AS finding_repaired,
        og.offboard_requested_at, og.offboard_numbers_done_at IS NOT NULL AS offboard_numbers_done,
        og.offboard_credential_done_at IS NOT NULL AS offboard_credential_done,
        og.offboard_subaccount_done_at IS NOT NULL AS offboard_subaccount_done,
        og.offboard_slot_done_at IS NOT NULL AS offboard_slot_done, og.offboarded_at,
        og.offboard_attempts, og.offboard_next_attempt_at, og.offboard_last_error,
        og.offboard_gave_up_at IS NOT NULL AS offboard_gave_up,
        og.offboard_claim_token IS NOT NULL AND og.offboard_claimed_until >= now() AS offboard_held,
        rot.*
    FROM (VALUES ($1::uuid)) AS q (org_id)
    LEFT JOIN LATERAL (SELECT ROTATION_COLS FROM token_rotations r WHERE r.org_id = q.org_id
                        ORDER BY r.requested_at DESC, r.id LIMIT 1) rot ON true
    LEFT JOIN organizations og ON og.id = q.org_id
    LEFT JOIN (org_credentials cr JOIN organizations o ON o.id = cr.org_id)
           ON cr.org_id = q.org_id AND cr.provider = 'twilio' AND cr.is_active
    LEFT JOIN managed_phone_numbers n
           ON n.org_id = q.org_id AND ($2 OR n.status <> 'released')
    LEFT JOIN LATERAL (
        SELECT array_agg(f.kind ORDER BY f.kind) AS kinds,
               array_agg(f.first_seen_at ORDER BY f.kind) AS seen,
               array_agg(f.repaired_at IS NOT NULL ORDER BY f.kind) AS repaired
          FROM carrier_findings f
         WHERE n.status <> 'released' AND f.closed_at IS NULL
           AND f.org_id = n.org_id AND f.phone_number = n.phone_number) fx ON true
    ORDER BY n.created_at DESC, n.id";

/// [`STATUS_SQL`] with the rotation's columns, built once: list-numbers' one
/// statement (`$1` the org, `$2` whether released numbers are listed too). Public for
/// the cold-start benchmark's floor peer, which runs exactly this and nothing else.
pub fn status_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| STATUS_SQL.replace("ROTATION_COLS", crate::rotation::STATE_COLS))
}

/// The org's credential summary and numbers, newest first, in one round trip.
pub async fn status(db: &Db, org: OrgId, listing: Listing) -> Result<Status, DbError> {
    let with_released = listing == Listing::WithReleased;
    let rows = db
        .query(
            status_sql(),
            &[(&org.as_uuid(), Type::UUID), (&with_released, Type::BOOL)],
        )
        .await?;
    let credential = match rows.first() {
        Some(row) => credential_from_row(row)?,
        None => None,
    };
    let mut numbers = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(number) = number_from_row(row)? {
            numbers.push(number);
        }
    }
    let offboarding = match rows.first() {
        Some(row) => {
            let at = row
                .columns()
                .iter()
                .position(|c| c.name() == "offboard_requested_at")
                .ok_or_else(|| DbError::Shape("status row without offboarding".into()))?;
            crate::offboard::offboarding_from_row(row, at)?
        }
        None => None,
    };
    let token_rotation = match rows.first() {
        Some(row) => {
            let at = row
                .columns()
                .iter()
                .position(|c| c.name() == "rotation_id")
                .ok_or_else(|| DbError::Shape("status row without rotation".into()))?;
            crate::rotation::rotation_from_row(row, at)?
        }
        None => None,
    };
    Ok(Status {
        credential,
        numbers,
        offboarding,
        token_rotation,
    })
}

/// Column `name` of a status row, or a [`DbError::Shape`] naming it (never a panic).
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, name: &str) -> Result<T, DbError> {
    row.try_get(name)
        .map_err(|e| DbError::Shape(format!("status row, column {name}: {e}")))
}

fn credential_from_row(row: &Row) -> Result<Option<CredentialSummary>, DbError> {
    if !col::<bool>(row, "has_credential")? {
        return Ok(None);
    }
    Ok(Some(CredentialSummary {
        account_sid: col(row, "account_sid")?,
        phone_number: col(row, "slot_number")?,
        source: col(row, "source")?,
        vapi_credential_id: col(row, "vapi_credential_id")?,
        updated_at: col(row, "credential_updated_at")?,
        vapi: VapiSyncState {
            synced: col::<Option<bool>>(row, "synced")?.unwrap_or(false),
            synced_at: col(row, "vapi_synced_at")?,
            code: col(row, "sync_code")?,
        },
    }))
}

/// The open audit findings in a status row (three parallel arrays, NULL for none).
fn findings_from_row(row: &Row) -> Result<Vec<NumberFinding>, DbError> {
    let kinds: Option<Vec<String>> = col(row, "finding_kinds")?;
    let seen: Option<Vec<DateTime<Utc>>> = col(row, "finding_seen")?;
    let repaired: Option<Vec<bool>> = col(row, "finding_repaired")?;
    Ok(kinds
        .unwrap_or_default()
        .into_iter()
        .zip(seen.unwrap_or_default())
        .zip(repaired.unwrap_or_default())
        .map(|((kind, first_seen_at), repaired)| NumberFinding {
            kind,
            first_seen_at,
            repaired,
        })
        .collect())
}

/// The number in a status row; `None` in the one row of an org without numbers.
fn number_from_row(row: &Row) -> Result<Option<ManagedNumber>, DbError> {
    let Some(phone_number) = col::<Option<String>>(row, "phone_number")? else {
        return Ok(None);
    };
    let status = NumberStatus::from_column(&col::<String>(row, "status")?)?;
    let vapi_phone_id: Option<String> = col(row, "vapi_phone_id")?;
    let release = match status {
        NumberStatus::Releasing | NumberStatus::ReleasePending | NumberStatus::NeedsAttention => {
            let mut pending = Vec::new();
            if vapi_phone_id.is_some() && col::<bool>(row, "vapi_release_pending")? {
                pending.push("vapi".to_owned());
            }
            if col::<bool>(row, "twilio_release_pending")? {
                pending.push("twilio".to_owned());
            }
            Some(ReleaseProgress {
                pending,
                attempts: col(row, "release_attempts")?,
                next_attempt_at: match status {
                    NumberStatus::ReleasePending => col(row, "next_attempt_at")?,
                    _ => None,
                },
                errors: error_codes(col(row, "last_release_error")?),
            })
        }
        _ => None,
    };
    let purchase = match status {
        NumberStatus::Provisioning => {
            let steps = [
                ("subaccount_pending", "subaccount"),
                ("purchase_pending", "twilio"),
                ("import_pending", "vapi"),
            ];
            let mut pending = Vec::new();
            for (column, step) in steps {
                if col::<bool>(row, column)? {
                    pending.push(step.to_owned());
                }
            }
            Some(PurchaseProgress {
                pending,
                attempts: col(row, "purchase_attempts")?,
                // A request holding the purchase finishes it now; reconcile's time
                // is shown only while nobody does.
                next_attempt_at: if col::<bool>(row, "unclaimed")? {
                    col(row, "next_attempt_at")?
                } else {
                    None
                },
                errors: error_codes(col(row, "last_purchase_error")?),
            })
        }
        _ => None,
    };
    let assistant_pending: bool = col(row, "assistant_pending")?;
    let assistant_change = match (status, assistant_pending) {
        (NumberStatus::Active, true) => {
            let gave_up: bool = col(row, "route_gave_up")?;
            Some(AssistantChange {
                attempts: col(row, "route_attempts")?,
                next_attempt_at: if gave_up {
                    None
                } else {
                    col(row, "next_route_attempt_at")?
                },
                code: col(row, "route_code")?,
                needs_attention: gave_up,
            })
        }
        _ => None,
    };
    Ok(Some(ManagedNumber {
        phone_number,
        status,
        vapi_phone_id,
        twilio_phone_sid: col(row, "twilio_phone_sid")?,
        assistant_id: col(row, "assistant_id")?,
        name: col(row, "display_name")?,
        assistant_pending,
        findings: findings_from_row(row)?,
        created_at: col(row, "created_at")?,
        released_at: col(row, "released_at")?,
        release,
        purchase,
        assistant_change,
    }))
}

/// `{step: {code, ...}}` of a last-error column → `{step: code}`: only the stable
/// code leaves the database (never a provider's message). A step without a code
/// shows `null`; a column that is not an object (none is written) shows nothing.
fn error_codes(
    last_error: Option<serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    match last_error {
        Some(serde_json::Value::Object(steps)) => steps
            .into_iter()
            .map(|(step, err)| {
                let code = err.get("code").cloned().unwrap_or(serde_json::Value::Null);
                (step, code)
            })
            .collect(),
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::error_codes;
    use serde_json::json;

    #[test]
    fn only_each_steps_code_leaves_a_last_error() {
        let codes = error_codes(Some(json!({
            "twilio": {"code": "twilio_unavailable", "message": "provider text"},
            "vapi": {"message": "no code"},
            "subaccount": "not an object",
        })));
        assert_eq!(
            serde_json::Value::Object(codes),
            json!({"twilio": "twilio_unavailable", "vapi": null, "subaccount": null})
        );
    }

    #[test]
    fn a_last_error_that_is_not_an_object_shows_no_codes() {
        // The server-built query failed on these (jsonb_each of a non-object): a 500
        // for the whole status. None is written; if one were, the rest still shows.
        for v in [None, Some(json!(null)), Some(json!("x")), Some(json!([1]))] {
            assert!(error_codes(v).is_empty());
        }
    }
}
