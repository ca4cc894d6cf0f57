//! The org's managed numbers and credential summary, as the status route shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
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
}

fn parse<T: for<'de> Deserialize<'de>>(v: serde_json::Value) -> Result<T, DbError> {
    serde_json::from_value(v).map_err(|e| DbError::Shape(format!("status row: {e}")))
}

/// Which numbers to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Every number not yet released (the default).
    Current,
    /// Released history too (`?include=released`).
    WithReleased,
}

/// The org's credential summary and numbers, newest first, in one round trip (the
/// database builds the JSON; serde parses it into the types above).
pub async fn status(db: &Db, org: OrgId, listing: Listing) -> Result<Status, DbError> {
    let with_released = listing == Listing::WithReleased;
    let row = db
        .query_one(
                r#"SELECT
                    (SELECT jsonb_build_object(
                            'accountSid', cr.metadata->>'accountSid',
                            'phoneNumber', cr.metadata->>'phoneNumber',
                            'source', cr.source,
                            'vapiCredentialId', o.vapi_credential_id,
                            'updatedAt', cr.updated_at,
                            'vapi', jsonb_build_object(
                                'synced', o.vapi_credential_id IS NOT NULL
                                          AND o.synced_generation = o.sync_generation,
                                'syncedAt', o.vapi_synced_at,
                                'code', CASE WHEN o.synced_generation < o.sync_generation THEN
                                    CASE WHEN o.sync_lease_until >= now() THEN 'sync_in_progress'
                                         ELSE coalesce(o.vapi_sync_error, 'sync_unfinished') END END))
                       FROM org_credentials cr JOIN organizations o ON o.id = cr.org_id
                      WHERE cr.org_id = $1 AND cr.provider = 'twilio' AND cr.is_active),
                    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                            'phoneNumber', n.phone_number,
                            'status', n.status,
                            'vapiPhoneId', n.vapi_phone_id,
                            'twilioPhoneSid', n.twilio_phone_sid,
                            'assistantId', n.assistant_id,
                            'name', n.display_name,
                            'assistantPending', n.assistant_pending,
                            'createdAt', n.created_at,
                            'releasedAt', n.released_at,
                            'release', CASE WHEN n.status IN ('releasing', 'release_pending', 'needs_attention') THEN
                                jsonb_build_object(
                                    'pending', to_jsonb(array_remove(ARRAY[
                                        CASE WHEN n.vapi_phone_id IS NOT NULL AND n.vapi_released_at IS NULL THEN 'vapi' END,
                                        CASE WHEN n.twilio_released_at IS NULL THEN 'twilio' END], NULL)),
                                    'attempts', n.release_attempts,
                                    'nextAttemptAt', CASE WHEN n.status = 'release_pending' THEN n.next_attempt_at END,
                                    'errors', coalesce((SELECT jsonb_object_agg(step, err->'code')
                                                          FROM jsonb_each(n.last_release_error) AS e(step, err)),
                                                       '{}'::jsonb))
                            END,
                            'purchase', CASE WHEN n.status = 'provisioning' THEN
                                jsonb_build_object(
                                    'pending', to_jsonb(array_remove(ARRAY[
                                        CASE WHEN n.twilio_subaccount_sid IS NULL THEN 'subaccount' END,
                                        CASE WHEN n.bought_at IS NULL THEN 'twilio' END,
                                        CASE WHEN n.imported_at IS NULL THEN 'vapi' END], NULL)),
                                    'attempts', n.purchase_attempts,
                                    'nextAttemptAt', CASE WHEN n.claim_token IS NULL THEN n.next_attempt_at END,
                                    'errors', coalesce((SELECT jsonb_object_agg(step, err->'code')
                                                          FROM jsonb_each(n.last_purchase_error) AS e(step, err)),
                                                       '{}'::jsonb))
                            END)
                            ORDER BY n.created_at DESC, n.id), '[]'::jsonb)
                       FROM managed_phone_numbers n
                      WHERE n.org_id = $1 AND ($2 OR n.status <> 'released'))"#,
                &[(&org.as_uuid(), Type::UUID), (&with_released, Type::BOOL)],
            )
        .await?;
    let credential: Option<serde_json::Value> = row.get(0);
    let numbers: serde_json::Value = row.get(1);
    Ok(Status {
        credential: credential.map(parse).transpose()?,
        numbers: parse(numbers)?,
    })
}
