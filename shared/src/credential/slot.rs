//! The save's database side: the slot and the org's sync lease (intent), and the
//! sync outcome written by the lease's holder.

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_postgres::types::Type;

use super::sync::{SyncFailure, Synced};
use super::{SaveError, TwilioCredential};
use crate::audit::{self, AuditEntry};
use crate::db::{Db, DbError};
use crate::identity::Caller;
use crate::ids::{CredentialSource, OrgId};
use crate::steps::{ClaimToken, StepsConfig};

/// What one save writes into the slot.
pub(super) struct SlotWrite<'a> {
    pub caller: &'a Caller,
    pub request_id: &'a str,
    pub cred: &'a TwilioCredential,
    pub source: CredentialSource,
    pub envelope: &'a serde_json::Value,
    /// The token's keyed fingerprint, kept in the metadata when known.
    pub token_fp: Option<super::fingerprint::TokenFingerprint>,
}

/// The org's sync lease, held by this save.
#[derive(Debug)]
pub(super) struct Lease {
    pub token: ClaimToken,
    /// The slot's generation this save wrote.
    pub generation: i64,
    /// The Vapi credential the org had when the lease was taken.
    pub vapi_credential_id: Option<String>,
    /// When an earlier create, whose outcome was never recorded, was attempted.
    pub create_attempted_at: Option<DateTime<Utc>>,
    /// Where an unfinished lookup by name resumes (below this `createdAt`).
    pub lookup_before: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// Take the lease (if free or expired), upsert the slot and bump the generation,
/// with an audit row, in one transaction. `None`: another save holds the lease.
///
/// If the connection drops around `COMMIT`, the outcome is unknown: the lease is
/// then looked up by our token, so a commit that did happen is recognised as ours.
pub(super) async fn commit(
    db: &Db,
    config: &StepsConfig,
    slot: &SlotWrite<'_>,
) -> Result<Option<Lease>, SaveError> {
    let token = ClaimToken::new();
    match commit_once(db, config, slot, token).await {
        Err(SaveError::Db(e)) if e.is_connection_lost() => {
            tracing::warn!(
                "connection lost while committing the slot; checking whether it committed"
            );
            match lease_if_ours(db, slot.caller.org_id, token).await? {
                Some(lease) => Ok(Some(lease)),
                None => Err(SaveError::Db(e)),
            }
        }
        other => other,
    }
}

async fn commit_once(
    db: &Db,
    config: &StepsConfig,
    slot: &SlotWrite<'_>,
    token: ClaimToken,
) -> Result<Option<Lease>, SaveError> {
    let org = slot.caller.org_id;
    let mut metadata = json!({
        "accountSid": slot.cred.account_sid.as_str(),
        "phoneNumber": slot.cred.phone_number.as_str(),
    });
    if let Some(fp) = &slot.token_fp {
        metadata["tokenFingerprint"] = json!(fp.as_str());
    }
    db.transaction(async |tx| {
        // Creates the org on its first save. A concurrent save blocks on the row
        // only for this short transaction, then sees the lease taken.
        let Some(org_row) = tx
            .query_typed_opt(
                "INSERT INTO organizations (id, sync_generation, sync_lease_token, sync_lease_until)
                 VALUES ($1, 1, $2, now() + make_interval(secs => $3))
                 ON CONFLICT (id) DO UPDATE
                    SET sync_generation = organizations.sync_generation + 1,
                        sync_lease_token = excluded.sync_lease_token,
                        sync_lease_until = excluded.sync_lease_until,
                        updated_at = now()
                  WHERE organizations.sync_lease_token IS NULL
                     OR organizations.sync_lease_until < now()
                 RETURNING sync_generation, vapi_credential_id, vapi_create_attempted_at,
                           vapi_lookup_before, offboard_requested_at IS NOT NULL",
                &[
                    (&org.as_uuid(), Type::UUID),
                    (&token.as_uuid(), Type::UUID),
                    (&config.claim_ttl.as_secs_f64(), Type::FLOAT8),
                ],
            )
            .await?
        else {
            return Ok(None);
        };
        // An org being offboarded gets no new credential (the error rolls back).
        if org_row.get::<_, bool>(4) {
            return Err(SaveError::OrgOffboarding);
        }
        // A managed credential never replaces a BYOC one: switching an org from its
        // own account to the platform's is a deliberate act, not a side effect of a
        // purchase. Nor does it replace the slot of the same subaccount: the token
        // it carries was read before (by a purchase racing the slot's first fill)
        // and a token rotation may have retired it since; only the rotation seals a
        // new token into that slot. (The error rolls the lease back with the rest.)
        let Some(slot_row) = tx
            .query_typed_opt(
                "INSERT INTO org_credentials (org_id, provider, source, is_active, encrypted_config, metadata)
                 VALUES ($1, 'twilio', $2, true, $3, $4)
                 ON CONFLICT (org_id, provider) DO UPDATE
                    SET source = excluded.source, is_active = true,
                        encrypted_config = excluded.encrypted_config,
                        metadata = excluded.metadata, updated_at = now()
                  WHERE excluded.source = 'byoc'
                     OR (org_credentials.source = 'managed'
                         AND org_credentials.metadata->>'accountSid'
                             IS DISTINCT FROM excluded.metadata->>'accountSid')
                 RETURNING updated_at",
                &[
                    (&org.as_uuid(), Type::UUID),
                    (&slot.source.as_str(), Type::TEXT),
                    (slot.envelope, Type::JSONB),
                    (&metadata, Type::JSONB),
                ],
            )
            .await?
        else {
            let held = tx
                .query_typed_one(
                    "SELECT source = 'managed' FROM org_credentials
                      WHERE org_id = $1 AND provider = 'twilio'",
                    &[(&org.as_uuid(), Type::UUID)],
                )
                .await?;
            return Err(if held.get::<_, bool>(0) {
                SaveError::SlotHeld
            } else {
                SaveError::ByocInUse
            });
        };
        let updated_at: DateTime<Utc> = slot_row.get(0);
        let generation: i64 = org_row.get(0);
        audit::record(
            tx,
            &AuditEntry {
                caller: slot.caller,
                action: "credential.save",
                target: slot.cred.account_sid.as_str(),
                request_id: slot.request_id,
                outcome: "saved",
                detail: json!({
                    "source": slot.source.as_str(),
                    "phoneNumber": slot.cred.phone_number.as_str(),
                    "generation": generation,
                }),
            },
        )
        .await?;
        Ok(Some(Lease {
            token,
            generation,
            vapi_credential_id: org_row.get(1),
            create_attempted_at: org_row.get(2),
            lookup_before: org_row.get(3),
            updated_at,
        }))
    })
    .await
}

/// The lease as committed, if `token` holds it.
async fn lease_if_ours(db: &Db, org: OrgId, token: ClaimToken) -> Result<Option<Lease>, DbError> {
    let row = db
        .query_opt(
            "SELECT o.sync_generation, o.vapi_credential_id, c.updated_at, o.vapi_create_attempted_at,
                    o.vapi_lookup_before
               FROM organizations o JOIN org_credentials c ON c.org_id = o.id AND c.provider = 'twilio'
              WHERE o.id = $1 AND o.sync_lease_token = $2",
            &[(&org.as_uuid(), Type::UUID), (&token.as_uuid(), Type::UUID)],
        )
        .await?;
    Ok(row.map(|r| Lease {
        token,
        generation: r.get(0),
        vapi_credential_id: r.get(1),
        create_attempted_at: r.get(3),
        lookup_before: r.get(4),
        updated_at: r.get(2),
    }))
}

/// Write the sync's outcome and release the lease, if it is still ours; with an
/// audit row. `false`: the lease expired and another save took it over (that save
/// mirrors the newer slot; nothing is written here). When Vapi's answer left the
/// outcome unknown (a timeout, a 5xx: a PATCH may still land, up to three copies
/// with its retries), the lease is kept until it expires, so no later save's sync
/// can be overtaken by a late copy of this one.
pub(super) async fn record_sync(
    db: &Db,
    slot: &SlotWrite<'_>,
    lease: &Lease,
    synced: &Synced,
) -> Result<bool, SaveError> {
    let org = slot.caller.org_id;
    let code = synced.failure.as_ref().map(SyncFailure::code);
    let keep_lease = synced
        .failure
        .as_ref()
        .is_some_and(SyncFailure::outcome_unknown);
    db.transaction(async |tx| {
        let row = tx
            .query_typed_opt(
                "UPDATE organizations
                    SET vapi_credential_id = $3,
                        vapi_synced_at = CASE WHEN $4::text IS NULL THEN now() ELSE vapi_synced_at END,
                        vapi_sync_error = $4,
                        synced_generation = CASE WHEN $4::text IS NULL THEN $5 ELSE synced_generation END,
                        vapi_create_attempted_at = CASE WHEN $3::text IS NOT NULL THEN NULL
                                                        ELSE vapi_create_attempted_at END,
                        sync_lease_token = CASE WHEN $6 THEN sync_lease_token END,
                        sync_lease_until = CASE WHEN $6 THEN sync_lease_until END,
                        vapi_lookup_before = CASE WHEN $4::text IS NULL OR $7 THEN $8
                                                  ELSE vapi_lookup_before END,
                        updated_at = now()
                  WHERE id = $1 AND sync_lease_token = $2
                  RETURNING 1",
                &[
                    (&org.as_uuid(), Type::UUID),
                    (&lease.token.as_uuid(), Type::UUID),
                    (&synced.id, Type::TEXT),
                    (&code, Type::TEXT),
                    (&lease.generation, Type::INT8),
                    (&keep_lease, Type::BOOL),
                    (&synced.lookup.ran(), Type::BOOL),
                    (&synced.lookup.resume_before(), Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        if row.is_none() {
            tracing::warn!("the org's sync lease was taken over; leaving the outcome to its new holder");
            return Ok(false);
        }
        audit::record(
            tx,
            &AuditEntry {
                caller: slot.caller,
                action: "credential.vapi_sync",
                target: slot.cred.account_sid.as_str(),
                request_id: slot.request_id,
                outcome: if code.is_none() { "synced" } else { "sync_failed" },
                detail: json!({ "generation": lease.generation, "vapiCode": code }),
            },
        )
        .await?;
        Ok::<_, SaveError>(true)
    })
    .await
}

/// Stamp a create attempt on the org (kept from the first unrecorded one) while
/// the lease is ours, before `POST /credential`: afterwards a credential the
/// database does not know can be looked up. `None`: the lease was taken over.
pub(super) async fn stamp_create_attempt(
    db: &Db,
    org: OrgId,
    token: ClaimToken,
) -> Result<Option<DateTime<Utc>>, DbError> {
    Ok(db
        .query_opt(
            "UPDATE organizations
                SET vapi_create_attempted_at = coalesce(vapi_create_attempted_at, now()),
                    -- A later walk starts from now again: below an old cursor it
                    -- would miss what this create makes.
                    vapi_lookup_before = NULL
              WHERE id = $1 AND sync_lease_token = $2
              RETURNING vapi_create_attempted_at",
            &[(&org.as_uuid(), Type::UUID), (&token.as_uuid(), Type::UUID)],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Release the lease without an outcome (best effort), so the next save need not
/// wait for it to expire.
pub(super) async fn give_up_lease(db: &Db, org: OrgId, token: ClaimToken) {
    let released = db
        .query(
            "UPDATE organizations SET sync_lease_token = NULL, sync_lease_until = NULL
              WHERE id = $1 AND sync_lease_token = $2",
            &[(&org.as_uuid(), Type::UUID), (&token.as_uuid(), Type::UUID)],
        )
        .await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "could not release the org's sync lease; it expires on its own");
    }
}
