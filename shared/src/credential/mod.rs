//! The org's Twilio credential: one slot per org (`org_credentials`, unique
//! `(org_id, provider)`), BYOC and managed alike, envelope-encrypted, mirrored to
//! Vapi as a Vapi credential whose id is kept on the org.
//!
//! A save follows the provider-step protocol ([`crate::steps`]):
//!
//! 0. BYOC credentials are checked with Twilio, concurrently with the KMS data-key
//!    request, and sealed (no database yet).
//! 1. **Intent** ([`slot::commit`]), one short transaction: take the org's sync
//!    lease (a claim token with an expiry), upsert the slot, bump the org's sync
//!    generation, audit. A save that finds the lease held waits — polling, no
//!    connection checked out — until it is free, or answers 409
//!    `save_in_progress` when half its deadline is gone. Saves for one org are
//!    thus serialized by the lease, and the last committed slot is the last one
//!    sent to Vapi.
//! 2. **Vapi sync** ([`sync`]) with no connection held: update the org's known
//!    credential; else look it up by its name `org-<uuid>` and adopt it; else
//!    create it, and after a create with an unknown outcome look again before
//!    anything else — never two Vapi credentials for one org.
//! 3. **Outcome** ([`slot::record_sync`]), only while the lease is ours: the Vapi
//!    id, the synced generation or the failure's stable code, lease released,
//!    audit. A failed sync never loses the slot: the answer says `synced: false`
//!    with the code, status shows it, and the next save finishes it.

pub mod disconnect;
pub mod fingerprint;
mod slot;
mod sync;

pub use sync::VAPI_CREDENTIALS_UNAVAILABLE;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::db::{Db, DbError};
use crate::envelope::{CryptoError, EncryptionContext, Keyring};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::ids::{AccountSid, AuthToken, CredentialSource, E164, OrgId, Provider};
use crate::providers::ProviderError;
use crate::steps::{Deadline, StepsConfig};
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
    pub config: &'a StepsConfig,
    /// Records the token's fingerprint in the slot's metadata (managed slots: how
    /// a token rotated elsewhere is noticed). `None`: not recorded.
    pub fingerprints: Option<&'a fingerprint::FingerprintKey>,
}

/// What a save refused by Twilio says: a suspended or closed account is refused
/// like a wrong SID or token (401/20003 or 403/20403), so it names both.
const REJECTED_MESSAGE: &str = "Twilio refused these credentials: the account may be suspended or closed, or the SID or token is wrong";

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// 401 (20003), 403 (e.g. 20403) or 404 on the account check: wrong
    /// credentials, or an account Twilio suspended or closed (Twilio documents that
    /// as a cause of both 20003 and 20403), which the answer cannot tell apart.
    #[error("{REJECTED_MESSAGE}")]
    TwilioRejected,
    #[error("the Twilio account is {0}, not active")]
    TwilioAccountNotActive(String),
    /// Twilio refused the check for another reason (a 4xx other than 401/403/404).
    #[error("Twilio refused to verify the credentials: {0}")]
    TwilioRefused(ProviderError),
    #[error("could not verify the credentials with Twilio: {0}")]
    TwilioUnavailable(ProviderError),
    #[error("another save for this organisation is still running")]
    InProgress,
    /// A managed credential would replace the org's own (BYOC) one.
    #[error("the organisation uses its own Twilio account")]
    ByocInUse,
    /// The org is being offboarded (or was).
    #[error("the organisation is being offboarded")]
    OrgOffboarding,
    /// A managed save found the slot holding this same subaccount already (only a
    /// token rotation seals a new token into it).
    #[error("the slot already holds this subaccount")]
    SlotHeld,
    #[error("the credential could not be serialised for sealing")]
    Serialise,
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
                message: REJECTED_MESSAGE.into(),
            },
            SaveError::TwilioAccountNotActive(status) => ApiError::Unprocessable {
                code: "twilio_account_not_active",
                message: format!("the Twilio account is {status}, not active"),
            },
            SaveError::TwilioRefused(p) => {
                tracing::warn!(error = %p, code = p.stable_code(), "Twilio refused the verification");
                ApiError::Unprocessable {
                    code: "twilio_refused_verification",
                    message: format!(
                        "Twilio refused to verify these credentials (HTTP {}{}); nothing was saved",
                        p.status().unwrap_or_default(),
                        p.provider_code().map(|c| format!(", code {c}")).unwrap_or_default()
                    ),
                }
            }
            SaveError::TwilioUnavailable(p) => {
                tracing::warn!(error = %p, code = p.stable_code(), "Twilio verification failed");
                ApiError::Unavailable {
                    code: "twilio_unavailable",
                    message: "Twilio could not be reached to verify the credentials; nothing was saved. Try again shortly.".into(),
                }
            }
            SaveError::InProgress => ApiError::Conflict {
                code: "save_in_progress",
                message: "Another save of this organisation's credential is still running, or Vapi has not answered the last one yet; try again in a minute.".into(),
            },
            SaveError::ByocInUse => byoc_in_use(),
            SaveError::OrgOffboarding => crate::offboard::org_offboarding(),
            SaveError::SlotHeld => ApiError::Conflict {
                code: "slot_held",
                message: "the slot already holds this subaccount".into(),
            },
            SaveError::Crypto(CryptoError::Kms(cause)) => {
                tracing::error!(%cause, "KMS failed");
                ApiError::Unavailable {
                    code: "encryption_unavailable",
                    message: "The credential could not be encrypted; nothing was saved. Try again shortly.".into(),
                }
            }
            SaveError::Crypto(other) => ApiError::internal(other),
            SaveError::Serialise => ApiError::internal(SaveError::Serialise),
            SaveError::Db(db) => db.into(),
        }
    }
}

/// The slot's envelope for these values, under `data_key`.
fn seal_with(
    data_key: crate::envelope::DataKey,
    account_sid: &AccountSid,
    auth_token: &AuthToken,
    phone_number: &str,
) -> Result<serde_json::Value, SaveError> {
    let plaintext = Zeroizing::new(
        serde_json::to_vec(&SealedCredential {
            account_sid: account_sid.as_str(),
            auth_token: auth_token.expose(),
            phone_number,
        })
        .map_err(|_| SaveError::Serialise)?,
    );
    serde_json::to_value(data_key.seal(&plaintext)?).map_err(|_| SaveError::Serialise)
}

/// A managed slot's envelope with a new token (a rotation's last step): the same
/// layout and context as a save's, with a fresh data key.
pub async fn seal_managed(
    keyring: &Keyring,
    org: OrgId,
    account_sid: &AccountSid,
    auth_token: &AuthToken,
    phone_number: &str,
    deadline: Deadline,
) -> Result<serde_json::Value, SaveError> {
    let context = EncryptionContext::new(org, Provider::Twilio);
    let data_key = tokio::time::timeout(deadline.remaining(), keyring.generate_data_key(&context))
        .await
        .unwrap_or_else(|_| Err(CryptoError::Kms("no data key within the deadline".into())))?;
    seal_with(data_key, account_sid, auth_token, phone_number)
}

/// 409 `byoc_in_use`: the org brings its own Twilio account, and the platform
/// does not switch it to a managed one as a side effect (of a purchase).
pub fn byoc_in_use() -> ApiError {
    ApiError::Conflict {
        code: "byoc_in_use",
        message: "This organisation uses its own Twilio account; managed numbers can be bought only by an organisation on the platform's account. Releasing managed numbers still works.".into(),
    }
}

impl CredentialStore<'_> {
    /// Save `cred` into the org's single Twilio slot and mirror it to Vapi, with the
    /// provider steps finished before `deadline` (see the module doc).
    pub async fn save(
        &self,
        caller: &Caller,
        request_id: &str,
        cred: &TwilioCredential,
        source: CredentialSource,
        deadline: Deadline,
    ) -> Result<SavedCredential, SaveError> {
        let org = caller.org_id;
        let envelope = self.seal(org, cred, source, deadline).await?;
        let slot = slot::SlotWrite {
            caller,
            request_id,
            cred,
            source,
            envelope: &envelope,
            token_fp: self.fingerprints.map(|k| k.of(&cred.auth_token)),
        };
        let lease = self.commit_when_free(&slot, deadline).await?;

        let synced = sync::sync(self.vapi, self.db, org, &lease, cred, deadline).await;
        if let Some(failure) = &synced.failure {
            tracing::warn!(
                ?failure,
                code = failure.code(),
                "Vapi sync unfinished; credential saved"
            );
        }
        let vapi = match slot::record_sync(self.db, &slot, &lease, &synced).await {
            Ok(true) => VapiSync {
                synced: synced.failure.is_none(),
                code: synced.failure.as_ref().map(sync::SyncFailure::code),
            },
            // A later save holds the org now and mirrors its newer slot.
            Ok(false) => VapiSync {
                synced: false,
                code: Some("superseded"),
            },
            Err(e) => {
                // The slot is saved; what Vapi holds could not be recorded. Let the
                // next save proceed at once instead of waiting for the lease to expire.
                tracing::error!(error = %e, "could not record the Vapi sync outcome");
                // Unless a copy of the sync may still land at Vapi.
                if !synced
                    .failure
                    .as_ref()
                    .is_some_and(sync::SyncFailure::outcome_unknown)
                {
                    slot::give_up_lease(self.db, org, lease.token).await;
                }
                VapiSync {
                    synced: false,
                    code: Some("sync_unrecorded"),
                }
            }
        };
        Ok(SavedCredential {
            account_sid: cred.account_sid.clone(),
            phone_number: cred.phone_number.clone(),
            source,
            vapi_credential_id: synced.id,
            updated_at: lease.updated_at,
            vapi,
        })
    }

    /// Verify (BYOC) and seal the credential: the envelope the slot stores. Both
    /// calls are bounded by the request's deadline too.
    async fn seal(
        &self,
        org: OrgId,
        cred: &TwilioCredential,
        source: CredentialSource,
        deadline: Deadline,
    ) -> Result<serde_json::Value, SaveError> {
        let context = EncryptionContext::new(org, Provider::Twilio);
        let data_key = async {
            tokio::time::timeout(
                deadline.remaining(),
                self.keyring.generate_data_key(&context),
            )
            .await
            .unwrap_or_else(|_| Err(CryptoError::Kms("no data key within the deadline".into())))
        };
        let data_key = match source {
            CredentialSource::Byoc => {
                let (check, key) = tokio::join!(
                    deadline.run(
                        "twilio",
                        self.twilio
                            .check_account(&cred.account_sid, &cred.auth_token)
                    ),
                    data_key,
                );
                match check {
                    Ok(AccountCheck::Active) => {}
                    Ok(AccountCheck::Rejected) => return Err(SaveError::TwilioRejected),
                    Ok(AccountCheck::NotActive(status)) => {
                        return Err(SaveError::TwilioAccountNotActive(status));
                    }
                    Err(e) if e.is_retryable() || e.status().is_none() => {
                        return Err(SaveError::TwilioUnavailable(e));
                    }
                    Err(e @ ProviderError::UnexpectedBody { .. }) => {
                        return Err(SaveError::TwilioUnavailable(e));
                    }
                    Err(e) => return Err(SaveError::TwilioRefused(e)),
                }
                key?
            }
            // The platform created this subaccount: nothing to verify.
            CredentialSource::Managed => data_key.await?,
        };
        seal_with(
            data_key,
            &cred.account_sid,
            &cred.auth_token,
            cred.phone_number.as_str(),
        )
    }

    /// Step 1, waiting for the org's lease while another save holds it: polls with
    /// backoff (no connection checked out between polls) until half of the
    /// deadline's time is gone, leaving the other half for this save's own sync.
    async fn commit_when_free(
        &self,
        slot: &slot::SlotWrite<'_>,
        deadline: Deadline,
    ) -> Result<slot::Lease, SaveError> {
        let give_up_below = deadline.remaining() / 2;
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            if let Some(lease) = slot::commit(self.db, self.config, slot).await? {
                return Ok(lease);
            }
            let spare = deadline.remaining().saturating_sub(give_up_below);
            if spare.is_zero() {
                return Err(SaveError::InProgress);
            }
            let wait = pause.min(spare);
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                "another save holds the org's lease; waiting"
            );
            tokio::time::sleep(wait).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(500));
        }
    }
}
