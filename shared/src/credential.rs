//! The org's Twilio credential: one slot per org (`org_credentials`, unique
//! `(org_id, provider)`), BYOC and managed alike, envelope-encrypted, mirrored to
//! Vapi as a Vapi credential whose id is kept on the org.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::Type;
use zeroize::Zeroizing;

use crate::audit::{self, AuditEntry};
use crate::db::{Db, DbError};
use crate::envelope::{CryptoError, EncryptionContext, Keyring};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::ids::{AccountSid, AuthToken, CredentialSource, E164, OrgId, Provider};
use crate::providers::ProviderError;
use crate::twilio::{AccountCheck, TwilioClient};
use crate::vapi::VapiClient;

/// The body of `PUT /api/telephony/credentials/twilio`. Unknown fields are refused;
/// each field parses into its domain type or the request is a 400.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TwilioCredential {
    pub account_sid: AccountSid,
    pub auth_token: AuthToken,
    pub phone_number: E164,
}

/// What is sealed into the envelope.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SealedCredential<'a> {
    account_sid: &'a str,
    auth_token: &'a str,
    phone_number: &'a str,
}

/// Whether the Vapi mirror is current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VapiSync {
    pub synced: bool,
    /// Why not, as a stable code (`vapi_unavailable`, `vapi_timeout`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
}

/// The answer to a save: the slot's summary, never the token.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedCredential {
    pub account_sid: AccountSid,
    pub phone_number: E164,
    pub source: CredentialSource,
    pub vapi_credential_id: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub vapi: VapiSync,
}

/// What saving needs; built once per function instance.
pub struct CredentialStore<'a> {
    pub db: &'a Db,
    pub keyring: &'a Keyring,
    pub vapi: &'a VapiClient,
    /// Verifies BYOC credentials; not used for managed ones.
    pub twilio: &'a TwilioClient,
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("Twilio rejected these credentials")]
    TwilioRejected,
    #[error("the Twilio account is {0}, not active")]
    TwilioAccountNotActive(String),
    #[error("could not verify the credentials with Twilio: {0}")]
    TwilioUnavailable(ProviderError),
    #[error("encryption failed: {0}")]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for SaveError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<SaveError> for ApiError {
    fn from(e: SaveError) -> Self {
        match e {
            SaveError::TwilioRejected => ApiError::Unprocessable {
                code: "twilio_rejected_credentials",
                message: "Twilio rejected these credentials".into(),
            },
            SaveError::TwilioAccountNotActive(status) => ApiError::Unprocessable {
                code: "twilio_account_not_active",
                message: format!("the Twilio account is {status}, not active"),
            },
            SaveError::TwilioUnavailable(p) => {
                tracing::warn!(error = %p, code = p.stable_code(), "Twilio verification failed");
                ApiError::Unavailable {
                    code: "twilio_unavailable",
                    message: "Twilio could not be reached to verify the credentials; nothing was saved. Try again shortly.".into(),
                }
            }
            SaveError::Crypto(CryptoError::Kms(cause)) => {
                tracing::error!(%cause, "KMS failed");
                ApiError::Unavailable {
                    code: "encryption_unavailable",
                    message: "The credential could not be encrypted; nothing was saved. Try again shortly.".into(),
                }
            }
            SaveError::Crypto(other) => ApiError::internal(other),
            SaveError::Db(db) => db.into(),
        }
    }
}

impl CredentialStore<'_> {
    /// Save `cred` into the org's single Twilio slot and mirror it to Vapi.
    ///
    /// BYOC credentials are first checked with Twilio, concurrently with the KMS
    /// data-key request. The slot upsert, the Vapi create/update, the org's Vapi
    /// state and the audit row happen under a row lock on the org, so two saves for
    /// one org are serialized and the database and Vapi end up holding the same
    /// credential. A Vapi failure does not lose the save: it is reported in `vapi`
    /// and recorded on the org; the next save repairs it.
    pub async fn save(
        &self,
        caller: &Caller,
        request_id: &str,
        cred: &TwilioCredential,
        source: CredentialSource,
    ) -> Result<SavedCredential, SaveError> {
        let org = caller.org_id;
        let context = EncryptionContext::new(org, Provider::Twilio);
        let data_key = match source {
            CredentialSource::Byoc => {
                let (check, key) = tokio::join!(
                    self.twilio
                        .check_account(&cred.account_sid, &cred.auth_token),
                    self.keyring.generate_data_key(&context),
                );
                match check.map_err(SaveError::TwilioUnavailable)? {
                    AccountCheck::Active => {}
                    AccountCheck::Rejected => return Err(SaveError::TwilioRejected),
                    AccountCheck::NotActive(status) => {
                        return Err(SaveError::TwilioAccountNotActive(status));
                    }
                }
                key?
            }
            // The platform created this subaccount: nothing to verify.
            CredentialSource::Managed => self.keyring.generate_data_key(&context).await?,
        };
        let plaintext = Zeroizing::new(
            serde_json::to_vec(&SealedCredential {
                account_sid: cred.account_sid.as_str(),
                auth_token: cred.auth_token.expose(),
                phone_number: cred.phone_number.as_str(),
            })
            .map_err(|_| SaveError::Crypto(CryptoError::Undecryptable))?,
        );
        let envelope = serde_json::to_value(data_key.seal(&plaintext)?)
            .map_err(|_| SaveError::Crypto(CryptoError::Undecryptable))?;
        let metadata = serde_json::json!({
            "accountSid": cred.account_sid.as_str(),
            "phoneNumber": cred.phone_number.as_str(),
        });

        self.db
            .transaction(async |tx| {
                let existing_id = lock_org(tx, org).await?;
                let updated_at: DateTime<Utc> = tx
                    .query_typed_one(
                        "INSERT INTO org_credentials (org_id, provider, source, is_active, encrypted_config, metadata)
                         VALUES ($1, 'twilio', $2, true, $3, $4)
                         ON CONFLICT (org_id, provider) DO UPDATE
                            SET source = excluded.source, is_active = true,
                                encrypted_config = excluded.encrypted_config,
                                metadata = excluded.metadata, updated_at = now()
                         RETURNING updated_at",
                        &[
                            (&org.as_uuid(), Type::UUID),
                            (&source.as_str(), Type::TEXT),
                            (&envelope, Type::JSONB),
                            (&metadata, Type::JSONB),
                        ],
                    )
                    .await?
                    .get(0);

                let synced = self.sync_vapi(org, existing_id.as_deref(), cred).await;
                let (vapi_id, sync) = match synced {
                    Ok(id) => (Some(id), VapiSync { synced: true, code: None }),
                    Err(e) => {
                        tracing::warn!(error = %e, code = e.stable_code(), "Vapi sync failed; credential saved");
                        (existing_id, VapiSync { synced: false, code: Some(vapi_code(&e)) })
                    }
                };
                tx.query_typed(
                    "UPDATE organizations
                        SET vapi_credential_id = $2,
                            vapi_synced_at = CASE WHEN $3::text IS NULL THEN now() ELSE vapi_synced_at END,
                            vapi_sync_error = $3, updated_at = now()
                      WHERE id = $1",
                    &[
                        (&org.as_uuid(), Type::UUID),
                        (&vapi_id, Type::TEXT),
                        (&sync.code, Type::TEXT),
                    ],
                )
                .await?;
                audit::record(
                    tx,
                    &AuditEntry {
                        caller,
                        action: "credential.save",
                        target: cred.account_sid.as_str(),
                        request_id,
                        outcome: if sync.synced { "saved" } else { "saved_vapi_unsynced" },
                        detail: serde_json::json!({
                            "source": source.as_str(),
                            "phoneNumber": cred.phone_number.as_str(),
                            "vapiSynced": sync.synced,
                            "vapiCode": sync.code,
                        }),
                    },
                )
                .await?;
                Ok::<_, SaveError>(SavedCredential {
                    account_sid: cred.account_sid.clone(),
                    phone_number: cred.phone_number.clone(),
                    source,
                    vapi_credential_id: vapi_id,
                    updated_at,
                    vapi: sync,
                })
            })
            .await
    }

    /// Update the org's Vapi credential, or create one when it has none or Vapi no
    /// longer knows it (404). Returns the id Vapi now holds the credential under.
    async fn sync_vapi(
        &self,
        org: OrgId,
        existing: Option<&str>,
        cred: &TwilioCredential,
    ) -> Result<String, ProviderError> {
        if let Some(id) = existing {
            match self
                .vapi
                .update_credential(id, org, &cred.account_sid, &cred.auth_token)
                .await
            {
                Ok(()) => return Ok(id.to_owned()),
                Err(ProviderError::Status { status: 404, .. }) => {
                    tracing::info!("Vapi no longer has the org's credential; creating a new one");
                }
                Err(e) => return Err(e),
            }
        }
        self.vapi
            .create_credential(org, &cred.account_sid, &cred.auth_token)
            .await
    }
}

/// The stable code a failed sync reports: `vapi_unavailable` for anything that is
/// Vapi's or the network's fault, the finer codes where they help the operator.
fn vapi_code(e: &ProviderError) -> &'static str {
    match e.stable_code() {
        code @ ("vapi_timeout" | "vapi_unauthorized" | "vapi_rejected") => code,
        _ => "vapi_unavailable",
    }
}

/// Make sure the org has a row and lock it for the rest of the transaction; returns
/// its current Vapi credential id. Orgs are created on their first save.
async fn lock_org(
    tx: &tokio_postgres::Transaction<'_>,
    org: OrgId,
) -> Result<Option<String>, SaveError> {
    // An upsert that always updates takes the row lock in one round trip, whether
    // the row existed or not; a concurrent save waits here.
    let row = tx
        .query_typed_one(
            "INSERT INTO organizations (id) VALUES ($1)
             ON CONFLICT (id) DO UPDATE SET updated_at = organizations.updated_at
             RETURNING vapi_credential_id",
            &[(&org.as_uuid(), Type::UUID)],
        )
        .await?;
    Ok(row.get(0))
}
