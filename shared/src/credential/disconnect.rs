//! Disconnecting an org's credential (`DELETE /api/telephony/credentials/twilio`):
//! the org's Vapi credential is deleted and its slot cleared, on the provider-step
//! protocol:
//!
//! 1. **Intent**: the org's sync lease is taken (as a save takes it: saves and a
//!    disconnect of one org take turns), refused while the org is being offboarded
//!    (offboarding's job) and, for a managed slot, while the org has numbers not
//!    released (they need the subaccount: that is offboarding's job too).
//! 2. **Vapi**, no connection held: `DELETE /credential/{id}`, or, when no id is
//!    recorded but a create was attempted (its outcome unknown), the credential
//!    looked up by its name `org-<uuid>` first. Vapi's JSON 404 counts as gone.
//! 3. **Outcome**, only while the lease is ours: the slot is deleted, the org's
//!    Vapi id cleared, the lease released, an audit row. A Vapi failure leaves
//!    everything as it was (the lease released): the answer says so (503 with the
//!    provider's code) and a repeat finishes it.
//!
//! Idempotent: with no slot, the answer is `200 {"status": "disconnected"}` too.

use serde::Serialize;
use serde_json::json;
use tokio_postgres::types::Type;

use crate::audit::{self, AuditEntry};
use crate::db::{Db, DbError};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::providers::ProviderError;
use crate::steps::{ClaimToken, Deadline, StepsConfig};
use crate::vapi::{VapiClient, Walk};

/// The answer of a disconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Disconnected {
    /// Always `disconnected`.
    pub status: &'static str,
    /// The slot's source before (`byoc`, `managed`), or `null` when there was none.
    pub source: Option<String>,
    /// Whether a Vapi credential was deleted by this request.
    pub vapi_credential_deleted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DisconnectError {
    #[error("the org's managed credential still serves numbers that are not released")]
    ManagedNumbersRemain(i64),
    #[error("the organisation is being offboarded")]
    OrgOffboarding,
    #[error("another save or disconnect of this organisation is running")]
    InProgress,
    #[error("Vapi: {0}")]
    Vapi(ProviderError),
    /// Vapi's answer never came: the credential may be deleted or not.
    #[error("Vapi did not answer: {0}")]
    VapiUnknown(ProviderError),
    /// A managed number was bought while the slot was being disconnected.
    #[error("a managed number appeared")]
    ManagedNumberAppeared,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for DisconnectError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<DisconnectError> for ApiError {
    fn from(e: DisconnectError) -> Self {
        match e {
            DisconnectError::ManagedNumbersRemain(n) => ApiError::Conflict {
                code: "managed_numbers_remain",
                message: format!(
                    "the organisation's managed credential serves {n} number(s) that are not released: release them first, or offboard the organisation"
                ),
            },
            DisconnectError::OrgOffboarding => crate::offboard::org_offboarding(),
            DisconnectError::InProgress => ApiError::Conflict {
                code: "save_in_progress",
                message: "a save or disconnect of this organisation's credential is running; try again in a minute".into(),
            },
            DisconnectError::Vapi(p) => {
                tracing::warn!(error = %p, code = p.stable_code(), "Vapi could not delete the credential");
                ApiError::Unavailable {
                    code: p.stable_code(),
                    message: "Vapi could not delete the credential; nothing was changed. Try again shortly.".into(),
                }
            }
            DisconnectError::VapiUnknown(p) => {
                tracing::warn!(error = %p, code = p.stable_code(), "Vapi did not answer the credential's deletion");
                ApiError::Unavailable {
                    code: p.stable_code(),
                    message: "Vapi did not answer; the credential may or may not be deleted yet. The slot is kept; try again in a minute.".into(),
                }
            }
            DisconnectError::ManagedNumberAppeared => ApiError::Conflict {
                code: "managed_numbers_remain",
                message: "a managed number was bought meanwhile: the managed credential stays; release it first, or offboard the organisation".into(),
            },
            DisconnectError::Db(db) => db.into(),
        }
    }
}

/// What the intent found.
struct Intent {
    source: Option<String>,
    vapi_credential_id: Option<String>,
    create_attempted_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Disconnects credentials; one per function instance.
pub struct Disconnector<'a> {
    pub db: &'a Db,
    pub vapi: &'a VapiClient,
    pub config: &'a StepsConfig,
}

impl Disconnector<'_> {
    pub async fn disconnect(
        &self,
        caller: &Caller,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<Disconnected, DisconnectError> {
        let token = ClaimToken::new();
        let Some(intent) = self.intent(caller, token).await? else {
            return Ok(Disconnected {
                status: "disconnected",
                source: None,
                vapi_credential_deleted: false,
            });
        };
        let deleted = match self.delete_at_vapi(caller, &intent, deadline).await {
            Ok(deleted) => deleted,
            // A DELETE that may still land keeps the lease until it expires (DESIGN
            // "Provider steps"): a save meanwhile would sync a credential about to
            // vanish. The repeat after it finishes the disconnect.
            Err(e) if e.outcome_unknown() => return Err(DisconnectError::VapiUnknown(e)),
            Err(e) => {
                self.release(caller, token).await?;
                return Err(DisconnectError::Vapi(e));
            }
        };
        self.record(caller, request_id, token, &intent, deleted)
            .await
    }

    /// Take the org's sync lease; `None` when the org has no slot (nothing to do).
    async fn intent(
        &self,
        caller: &Caller,
        token: ClaimToken,
    ) -> Result<Option<Intent>, DisconnectError> {
        let org = caller.org_id.as_uuid();
        let row = self
            .db
            .query_opt(
                "SELECT o.offboard_requested_at IS NOT NULL, c.source,
                        (SELECT count(*) FROM managed_phone_numbers n
                          WHERE n.org_id = o.id AND n.status <> 'released')
                   FROM organizations o
                   LEFT JOIN org_credentials c ON c.org_id = o.id AND c.provider = 'twilio'
                  WHERE o.id = $1",
                &[(&org, Type::UUID)],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        if row.try_get::<_, bool>(0)? {
            return Err(DisconnectError::OrgOffboarding);
        }
        let Some(source) = row.try_get::<_, Option<String>>(1)? else {
            return Ok(None);
        };
        let live: i64 = row.try_get(2)?;
        if source == "managed" && live > 0 {
            return Err(DisconnectError::ManagedNumbersRemain(live));
        }
        let leased = self
            .db
            .query_opt(
                "UPDATE organizations
                    SET sync_lease_token = $2, sync_lease_until = now() + make_interval(secs => $3)
                  WHERE id = $1 AND offboard_requested_at IS NULL
                    AND (sync_lease_token IS NULL OR sync_lease_until < now())
                  RETURNING vapi_credential_id, vapi_create_attempted_at",
                &[
                    (&org, Type::UUID),
                    (&token.as_uuid(), Type::UUID),
                    (&self.config.claim_ttl.as_secs_f64(), Type::FLOAT8),
                ],
            )
            .await?;
        let Some(leased) = leased else {
            return Err(DisconnectError::InProgress);
        };
        Ok(Some(Intent {
            source: Some(source),
            vapi_credential_id: leased.try_get(0)?,
            create_attempted_at: leased.try_get(1)?,
        }))
    }

    /// The org's Vapi credential deleted (or never there): whether one was deleted.
    async fn delete_at_vapi(
        &self,
        caller: &Caller,
        intent: &Intent,
        deadline: Deadline,
    ) -> Result<bool, ProviderError> {
        let id = match (&intent.vapi_credential_id, intent.create_attempted_at) {
            (Some(id), _) => id.clone(),
            (None, Some(attempted)) => {
                let since = attempted - chrono::Duration::minutes(5);
                match deadline
                    .run(
                        "vapi",
                        self.vapi.find_credential(
                            caller.org_id,
                            since,
                            None,
                            Some(deadline.instant()),
                        ),
                    )
                    .await?
                {
                    Walk::Found(id) => id,
                    Walk::NotFound => return Ok(false),
                    Walk::Unfinished { .. } => {
                        return Err(ProviderError::Timeout { provider: "vapi" });
                    }
                }
            }
            (None, None) => return Ok(false),
        };
        deadline
            .run("vapi", self.vapi.delete_credential(&id))
            .await
            .map(|()| true)
    }

    async fn release(&self, caller: &Caller, token: ClaimToken) -> Result<(), DbError> {
        self.db
            .query(
                "UPDATE organizations SET sync_lease_token = NULL, sync_lease_until = NULL
                  WHERE id = $1 AND sync_lease_token = $2",
                &[
                    (&caller.org_id.as_uuid(), Type::UUID),
                    (&token.as_uuid(), Type::UUID),
                ],
            )
            .await
            .map(drop)
    }

    async fn record(
        &self,
        caller: &Caller,
        request_id: &str,
        token: ClaimToken,
        intent: &Intent,
        deleted: bool,
    ) -> Result<Disconnected, DisconnectError> {
        let org = caller.org_id.as_uuid();
        self.db
            .transaction(async |tx| {
                let ours = tx
                    .query_typed(
                        "UPDATE organizations
                            SET vapi_credential_id = NULL, vapi_sync_error = NULL,
                                synced_generation = sync_generation, vapi_lookup_before = NULL,
                                sync_lease_token = NULL, sync_lease_until = NULL, updated_at = now()
                          WHERE id = $1 AND sync_lease_token = $2
                          RETURNING 1",
                        &[(&org, Type::UUID), (&token.as_uuid(), Type::UUID)],
                    )
                    .await?;
                if ours.is_empty() {
                    // The lease expired and a save took it: it wins.
                    return Err(DisconnectError::InProgress);
                }
                // A managed slot only while no live number needs it (a purchase may have
                // finished meanwhile: the org row's lock above orders them).
                let cleared = tx
                    .query_typed(
                        "DELETE FROM org_credentials c
                          WHERE c.org_id = $1 AND c.provider = 'twilio'
                            AND (c.source <> 'managed'
                                 OR NOT EXISTS (SELECT 1 FROM managed_phone_numbers n
                                                 WHERE n.org_id = c.org_id AND n.status <> 'released'))
                          RETURNING 1",
                        &[(&org, Type::UUID)],
                    )
                    .await?;
                // The Vapi credential is gone either way; the slot stays for the number.
                let kept = cleared.is_empty() && intent.source.as_deref() == Some("managed");
                audit::record(
                    tx,
                    &AuditEntry {
                        caller,
                        action: "credential.disconnect",
                        target: &caller.org_id.to_string(),
                        request_id,
                        outcome: if kept { "slot_kept" } else { "disconnected" },
                        detail: json!({ "source": intent.source, "vapiCredentialDeleted": deleted }),
                    },
                )
                .await?;
                if kept {
                    return Ok(Err(DisconnectError::ManagedNumberAppeared));
                }
                Ok(Ok(Disconnected {
                    status: "disconnected",
                    source: intent.source.clone(),
                    vapi_credential_deleted: deleted,
                }))
            })
            .await?
    }
}
