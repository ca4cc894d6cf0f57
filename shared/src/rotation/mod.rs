//! Rotating a managed org's Twilio subaccount token so that every number keeps
//! calling (`POST /api/telephony/credentials/twilio/rotate`), and bringing a token
//! rotated elsewhere (Twilio's console, support) to Vapi and the slot. A resumable
//! job per org (`token_rotations`), on the provider-step protocol ([`crate::steps`]):
//!
//! 1. **Intent** — one transaction records the job (one open per org) and takes its
//!    claim, with an audit row. Only a managed slot is rotated (a BYOC org rotates
//!    its own token and saves the new one); an org being offboarded is not.
//! 2. **Steps**, no connection held, within the request's deadline:
//!    - **token**: `rotate` asks Twilio for a secondary token (as the subaccount,
//!      with the primary the main account reads back) and stores it sealed under
//!      `{org_id, provider: twilio-secondary}` *before* any Vapi entity is given it:
//!      a resumed attempt opens it again (the only blobs these functions may
//!      decrypt) instead of asking for another, which would replace the one Vapi
//!      holds. `adopt` reads the current primary back;
//!    - **vapi**: the org's Vapi credential and every Vapi number of the
//!      subaccount whose recorded token fingerprint is not the new token's are
//!      PATCHed (at most 4 at once); each success is stamped;
//!    - **promote** (`rotate`), only when the credential and every number hold the
//!      secondary and no purchase of the org holds a claim (purchases wait from
//!      here until the promotion: an import carrying the old primary would carry a
//!      dead token). Both tokens work until this call, so every failure before it
//!      leaves calls working. After an unknown outcome the main account reads the
//!      token back and compares fingerprints;
//!    - **slot**: the new token is sealed into the slot with its fingerprint.
//! 3. **Outcome**, only while the claim is ours: what finished, the pending steps'
//!    codes, a backoff, `needs_attention` after `RECONCILE_MAX_ATTEMPTS` of
//!    reconcile's attempts.
//! 4. **Reconcile** resumes open jobs ([`Rotator::resume_one`]); a purchase that
//!    reads back a token the slot does not hold, and the carrier audit's
//!    `token_mismatch`, open an `adopt` job ([`request_adopt`]).
//!
//! A job whose slot changed (a BYOC save, a disconnect) or whose org is being
//! offboarded ends `cancelled`.

mod store;

pub use store::{STATE_COLS, request_adopt, rotation_from_row};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::credential::fingerprint::{FingerprintKey, TokenFingerprint};
use crate::db::{Db, DbError};
use crate::envelope::{CryptoError, EncryptionContext, Envelope, Keyring};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::ids::{AccountSid, AuthToken, OrgId, Provider};
use crate::steps::{ClaimToken, Deadline, StepsConfig};
use crate::twilio::TwilioClient;
use crate::vapi::{VapiClient, Walk};

use store::{Job, Kind, NumberToPatch};

/// The body of `POST …/rotate`: nothing, or an empty object. (A derived
/// `Deserialize` of an empty struct would also take `[]`: a JSON object with no
/// member is what is read, anything else is refused.)
#[derive(Debug, Default)]
pub struct RotateRequest {}

impl<'de> Deserialize<'de> for RotateRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let members = serde_json::Map::<String, Value>::deserialize(d)?;
        match members.keys().next() {
            None => Ok(Self {}),
            Some(key) => Err(serde::de::Error::custom(format!(
                "unknown field `{key}`: the body takes no fields (send none, or {{}})"
            ))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("the organisation has no Twilio credential")]
    NoCredential,
    #[error("the organisation uses its own Twilio account")]
    Byoc,
    #[error("the organisation is being offboarded")]
    OrgOffboarding,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for RotationError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<RotationError> for ApiError {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::NoCredential => ApiError::NotFound {
                code: "no_credential",
                message: "this organisation has no Twilio credential to rotate".into(),
            },
            RotationError::Byoc => ApiError::Conflict {
                code: "byoc_credential",
                message: "this organisation uses its own Twilio account: rotate its token in Twilio and save the new one (PUT /api/telephony/credentials/twilio)".into(),
            },
            RotationError::OrgOffboarding => crate::offboard::org_offboarding(),
            RotationError::Db(db) => db.into(),
        }
    }
}

/// 409 `token_rotation_in_progress`: what a purchase gets while the org's token is
/// being promoted (seconds at most, unless Twilio's answer was lost).
pub fn token_rotation_in_progress() -> ApiError {
    ApiError::Conflict {
        code: "token_rotation_in_progress",
        message:
            "this organisation's Twilio token is being rotated; try the purchase again in a minute"
                .into(),
    }
}

/// Which numbers hold the new token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationNumbers {
    /// Updated at Vapi by this job.
    pub updated: Vec<String>,
    /// Still holding another token (PATCHed by the next attempt).
    pub pending: Vec<String>,
}

/// Where a rotation is: the answer, and what status shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    pub id: Uuid,
    /// `rotate` (asked for) or `adopt` (a token rotated elsewhere).
    pub kind: String,
    /// `rotating`, `rotated`, `needs_attention` (reconcile stopped retrying; a
    /// repeat of the request resumes it) or `cancelled`.
    pub status: String,
    pub account_sid: String,
    pub requested_at: DateTime<Utc>,
    #[serde(default)]
    pub done_at: Option<DateTime<Utc>>,
    /// The new token is the subaccount's primary (the old one no longer works).
    pub promoted: bool,
    /// The org's Vapi credential holds the new token.
    pub credential_updated: bool,
    pub numbers: RotationNumbers,
    /// Stable code of each pending step's last failure.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub errors: serde_json::Map<String, Value>,
    pub attempts: i32,
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
}

impl Rotation {
    pub fn is_done(&self) -> bool {
        self.done_at.is_some()
    }
}

/// Who made an attempt: only reconcile's count toward giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Request,
    Reconcile,
}

/// How an attempt's steps ended, for the outcome.
#[derive(Debug, Default)]
struct Ends {
    /// `{step: code}` of the unfinished steps.
    errors: std::collections::BTreeMap<&'static str, &'static str>,
    promoted: bool,
    done: bool,
    /// The job ends without finishing, and why.
    cancel: Option<&'static str>,
    /// A call that creates or promotes ended without an answer (it may still land):
    /// the claim is kept until it expires, so no attempt acts again meanwhile.
    keep_claim: bool,
}

impl Ends {
    fn pending(&mut self, step: &'static str, code: &'static str) {
        tracing::warn!(step, code, "token rotation step pending");
        self.errors.insert(step, code);
    }

    /// Only waiting (a save, a purchase): no provider failed.
    fn only_waiting(&self) -> bool {
        self.errors.values().all(|c| WAITING.contains(c))
    }
}

/// Codes of steps that wait (on a save, a purchase, the deadline, another holder)
/// rather than fail at a provider: they never count toward giving up.
const WAITING: [&str; 6] = [
    "sync_in_progress",
    "purchase_in_progress",
    "numbers_changed",
    "credential_changed",
    "claim_lost",
    "deadline",
];

/// Below this much time left (or a quarter of the steps' deadline, if less), no
/// further PATCH, create or promotion is started: a fixed budget would never start
/// one under a short deadline (the fault-schedule test's 1.5 s found it).
const STEP_BUDGET: std::time::Duration = std::time::Duration::from_millis(1500);

/// What rotating needs beyond the database and the providers, built once at cold
/// start: the keyring (a data key per seal; the secondary's opening) and the
/// fingerprint key.
pub struct TokenKit {
    pub keyring: Keyring,
    pub fingerprints: FingerprintKey,
}

impl TokenKit {
    /// From `KEYRING` (…) and the fingerprint secret, fetched with `secrets`.
    pub async fn from_env(
        env: &crate::config::Env,
        aws: &aws_config::SdkConfig,
        secrets: &crate::config::SecretLoader,
    ) -> Result<Self, crate::config::ConfigError> {
        let keyring = crate::envelope::KeyringConfig::from_env(env)?.build(aws)?;
        Ok(Self {
            keyring,
            fingerprints: secrets.fingerprint_key().await?,
        })
    }
}

/// Rotates tokens; one per function instance (rotate-credential, reconcile).
pub struct Rotator<'a> {
    pub db: &'a Db,
    pub vapi: &'a VapiClient,
    /// As the platform's main account (reads the subaccount's token back).
    pub twilio: &'a TwilioClient,
    pub keyring: &'a Keyring,
    pub fingerprints: &'a FingerprintKey,
    pub config: &'a StepsConfig,
}

impl Rotator<'_> {
    /// See [`STEP_BUDGET`].
    fn step_budget(&self) -> std::time::Duration {
        STEP_BUDGET.min(self.config.deadline / 4)
    }

    /// Rotate the caller's org's token (or resume its open job), finishing what it
    /// can before `deadline`.
    pub async fn rotate(
        &self,
        caller: &Caller,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<Rotation, RotationError> {
        // An open job whose slot changed since (say, another subaccount) ends
        // cancelled, and an open adopt job (a token rotated elsewhere) made no new
        // token: the person asked for a new token for the slot now, so once more,
        // with a new job (an org being offboarded is refused by the intent then).
        let mut last = None;
        for _ in 0..3 {
            let token = ClaimToken::new();
            let state = match store::intent(self.db, self.config, caller, request_id, token).await?
            {
                store::Intent::Claimed(job) => {
                    self.finish(*job, caller, request_id, deadline, Attempt::Request)
                        .await?
                }
                store::Intent::Held(id) => return store::current(self.db, id).await,
            };
            let adopted = state.kind == "adopt" && state.is_done();
            if state.status != "cancelled" && !adopted {
                return Ok(state);
            }
            last = Some(state);
        }
        last.ok_or_else(|| RotationError::Db(DbError::Shape("rotation: no attempt".into())))
    }

    /// Reconcile: resume one open job whose backoff passed and whose holder is
    /// gone; `None` when none is due.
    pub async fn resume_one(
        &self,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<Option<Rotation>, RotationError> {
        let token = ClaimToken::new();
        let Some(job) = store::claim_next_due(self.db, self.config, token).await? else {
            return Ok(None);
        };
        let caller = Caller::system(job.org, "system:reconcile");
        self.finish(job, &caller, request_id, deadline, Attempt::Reconcile)
            .await
            .map(Some)
    }

    /// Steps 2 and 3 for a claimed job.
    async fn finish(
        &self,
        mut job: Job,
        caller: &Caller,
        request_id: &str,
        deadline: Deadline,
        attempt: Attempt,
    ) -> Result<Rotation, RotationError> {
        let mut ends = Ends::default();
        if let Some(reason) = job.cancel_reason() {
            ends.cancel = Some(reason);
        } else {
            self.steps(&mut job, deadline, &mut ends).await?;
        }
        let counted = attempt == Attempt::Reconcile && !ends.only_waiting();
        store::record(
            self.db,
            self.config,
            &job,
            caller,
            request_id,
            &ends,
            counted,
        )
        .await
    }

    async fn steps(
        &self,
        job: &mut Job,
        deadline: Deadline,
        ends: &mut Ends,
    ) -> Result<(), RotationError> {
        let token = match self.token(job, deadline, ends).await? {
            Some(t) => t,
            None => return Ok(()),
        };
        if job.promoted {
            ends.promoted = true;
        }
        let fp = self.fingerprints.of(&token);
        let vapi_done = self.vapi_step(job, &token, &fp, deadline, ends).await?;
        if !vapi_done {
            return Ok(());
        }
        if job.kind == Kind::Rotate && !job.promoted {
            if !self.promote(job, &token, &fp, deadline, ends).await? {
                return Ok(());
            }
            ends.promoted = true;
        }
        self.seal_slot(job, &token, &fp, deadline, ends).await
    }

    /// The token this attempt brings to Vapi; `None` when the step is pending.
    async fn token(
        &self,
        job: &mut Job,
        deadline: Deadline,
        ends: &mut Ends,
    ) -> Result<Option<AuthToken>, RotationError> {
        let sid = job.account_sid.clone();
        // The primary, as the main account reads it now.
        let read_primary = async || {
            deadline
                .run("twilio", self.twilio.subaccount(&sid))
                .await
                .map(|s| s.auth_token)
        };
        if job.kind == Kind::Adopt || job.promoted {
            let primary = match read_primary().await {
                Ok(t) => t,
                Err(e) => {
                    ends.pending("token", e.stable_code());
                    return Ok(None);
                }
            };
            let fp = self.fingerprints.of(&primary);
            // Rotated (again) elsewhere: this is the token to bring now.
            if job.token_fp.as_ref() != Some(&fp) && !store::retarget(self.db, job, &fp).await? {
                ends.pending("token", "claim_lost");
                return Ok(None);
            }
            return Ok(Some(primary));
        }
        // A promotion whose answer was lost: did it happen?
        if job.promote_started
            && let Some(fp) = job.token_fp.clone()
        {
            match read_primary().await {
                Ok(primary) if self.fingerprints.of(&primary) == fp => {
                    store::stamp_promoted(self.db, job).await?;
                    job.promoted = true;
                    return Ok(Some(primary));
                }
                Ok(_) => {}
                Err(e) => {
                    ends.pending("token", e.stable_code());
                    return Ok(None);
                }
            }
        }
        if let Some(sealed) = job.secondary.clone() {
            match self.open_secondary(job.org, &sealed, deadline).await {
                Ok(secondary) => {
                    // Still the subaccount's secondary? (One created or deleted in
                    // the console since would leave Vapi with a dead token.) Only
                    // Twilio's 20003 says it is not; anything else proves nothing.
                    match deadline
                        .run("twilio", self.twilio.token_works(&sid, &secondary))
                        .await
                    {
                        Ok(true) => return Ok(Some(secondary)),
                        Ok(false) => {
                            tracing::warn!(
                                "the stored secondary token no longer works; asking for a new one"
                            );
                            if !store::forget_secondary(self.db, job).await? {
                                ends.pending("token", "claim_lost");
                                return Ok(None);
                            }
                        }
                        Err(e) => {
                            ends.pending("token", e.stable_code());
                            return Ok(None);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not open the stored secondary token");
                    ends.pending("token", crypto_code(&e));
                    return Ok(None);
                }
            }
        }
        if deadline.remaining() < self.step_budget() {
            ends.pending("token", "deadline");
            return Ok(None);
        }
        let primary = match read_primary().await {
            Ok(t) => t,
            Err(e) => {
                ends.pending("token", e.stable_code());
                return Ok(None);
            }
        };
        let secondary = match deadline
            .run("twilio", self.twilio.create_secondary_token(&sid, &primary))
            .await
        {
            Ok(t) => t,
            Err(e) => {
                // Unknown outcome: a secondary may exist that nothing holds, and the
                // call may still land. The claim is kept until it expires, so no
                // attempt creates another (and gives it to Vapi) before this one
                // could replace it; then the next create replaces whatever it made.
                ends.keep_claim |= e.outcome_unknown();
                ends.pending("token", e.stable_code());
                return Ok(None);
            }
        };
        let sealed = match self.seal_secondary(job.org, &secondary, deadline).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "could not seal the secondary token");
                ends.pending("token", crypto_code(&e));
                return Ok(None);
            }
        };
        let fp = self.fingerprints.of(&secondary);
        // Stored before Vapi is given it; if this write fails, nothing holds it.
        if !store::stamp_secondary(self.db, job, &sealed, &fp).await? {
            ends.pending("token", "claim_lost");
            return Ok(None);
        }
        Ok(Some(secondary))
    }

    async fn open_secondary(
        &self,
        org: OrgId,
        sealed: &Value,
        deadline: Deadline,
    ) -> Result<AuthToken, CryptoError> {
        let envelope: Envelope =
            serde_json::from_value(sealed.clone()).map_err(|_| CryptoError::Undecryptable)?;
        let context = EncryptionContext::new(org, Provider::TwilioSecondary);
        let plain = tokio::time::timeout(
            deadline.remaining(),
            self.keyring.open_rotation_secondary(&context, &envelope),
        )
        .await
        .unwrap_or_else(|_| Err(CryptoError::Kms("no decryption within the deadline".into())))?;
        let text = Zeroizing::new(
            String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Undecryptable)?,
        );
        text.parse().map_err(|_| CryptoError::Undecryptable)
    }

    async fn seal_secondary(
        &self,
        org: OrgId,
        token: &AuthToken,
        deadline: Deadline,
    ) -> Result<Value, CryptoError> {
        let context = EncryptionContext::new(org, Provider::TwilioSecondary);
        let key = tokio::time::timeout(
            deadline.remaining(),
            self.keyring.generate_data_key(&context),
        )
        .await
        .unwrap_or_else(|_| Err(CryptoError::Kms("no data key within the deadline".into())))?;
        let envelope = key.seal(token.expose().as_bytes())?;
        serde_json::to_value(envelope)
            .map_err(|_| CryptoError::Kms("the envelope could not be serialised".into()))
    }

    /// The credential and every number: `true` when all hold the token.
    async fn vapi_step(
        &self,
        job: &mut Job,
        token: &AuthToken,
        fp: &TokenFingerprint,
        deadline: Deadline,
        ends: &mut Ends,
    ) -> Result<bool, RotationError> {
        let numbers = store::numbers_to_patch(self.db, job, fp).await?;
        let (credential, outcomes) = tokio::join!(
            self.credential(job, token, deadline),
            self.patch_numbers(&numbers, &job.account_sid, token, deadline)
        );
        let mut all = true;
        match credential {
            Ok(true) => {
                if !job.credential_done {
                    store::stamp_credential(self.db, job, fp).await?;
                    job.credential_done = true;
                }
            }
            Ok(false) => all = false,
            Err(code) => {
                ends.pending("credential", code);
                all = false;
            }
        }
        let mut updated = Vec::new();
        let mut failed: Option<&'static str> = None;
        for (n, outcome) in numbers.iter().zip(outcomes) {
            match outcome {
                Ok(()) => updated.push(n),
                Err(code) => failed = failed.or(Some(code)),
            }
        }
        if !updated.is_empty() {
            store::stamp_numbers(self.db, job, &updated, fp).await?;
        }
        if let Some(code) = failed {
            ends.pending("numbers", code);
            all = false;
        }
        Ok(all)
    }

    /// The org's Vapi credential: `Ok(true)` when it holds the token (or there is
    /// none), `Ok(false)` when waiting on a save.
    async fn credential(
        &self,
        job: &Job,
        token: &AuthToken,
        deadline: Deadline,
    ) -> Result<bool, &'static str> {
        if job.credential_done {
            return Ok(true);
        }
        // A save holding the lease may PATCH the credential with another token.
        if job.sync_lease_live {
            return Err("sync_in_progress");
        }
        let id = match (&job.vapi_credential_id, job.vapi_create_attempted_at) {
            (Some(id), _) => id.clone(),
            // A create whose outcome was never recorded may have made one.
            (None, Some(attempted)) => {
                let since = attempted - chrono::Duration::minutes(5);
                let lookup = self.vapi.find_credential(
                    job.org,
                    since,
                    None,
                    Some(deadline.keeping(self.step_budget()).instant()),
                );
                match deadline.run("vapi", lookup).await {
                    Ok(Walk::Found(id)) => id,
                    Ok(Walk::NotFound) => return Ok(true),
                    Ok(Walk::Unfinished { .. }) => return Err("vapi_lookup_unfinished"),
                    Err(e) => return Err(e.stable_code()),
                }
            }
            (None, None) => return Ok(true),
        };
        let update = self
            .vapi
            .update_credential(&id, job.org, &job.account_sid, token);
        match deadline.run("vapi", update).await {
            Ok(()) => Ok(true),
            // Gone at Vapi: it holds no token (the next save creates one).
            Err(e) if e.is_gone() => Ok(true),
            Err(e) => Err(e.stable_code()),
        }
    }

    async fn patch_numbers(
        &self,
        numbers: &[NumberToPatch],
        sid: &AccountSid,
        token: &AuthToken,
        deadline: Deadline,
    ) -> Vec<Result<(), &'static str>> {
        // Futures collected first (see offboard.rs: a stream over a borrowing
        // closure is not `Send` for every lifetime).
        let calls: Vec<_> = numbers
            .iter()
            .map(|n| async move {
                if deadline.remaining() < self.step_budget() {
                    return Err("deadline");
                }
                let patch = self.vapi.set_number_token(&n.vapi_id, sid, token);
                match deadline.run("vapi", patch).await {
                    Ok(()) => Ok(()),
                    // Gone at Vapi (released, or removed by hand): holds no token.
                    Err(e) if e.is_gone() => Ok(()),
                    Err(e) => Err(e.stable_code()),
                }
            })
            .collect();
        futures::stream::iter(calls)
            .buffered(4)
            .collect::<Vec<_>>()
            .await
    }

    /// Promote the secondary: `true` once it is the primary.
    async fn promote(
        &self,
        job: &mut Job,
        secondary: &AuthToken,
        fp: &TokenFingerprint,
        deadline: Deadline,
        ends: &mut Ends,
    ) -> Result<bool, RotationError> {
        if deadline.remaining() < self.step_budget() {
            ends.pending("promote", "deadline");
            return Ok(false);
        }
        match store::start_promotion(self.db, job, fp).await? {
            store::Gate::Go => {}
            store::Gate::Wait(code) => {
                ends.pending("promote", code);
                return Ok(false);
            }
            store::Gate::Cancel(reason) => {
                ends.cancel = Some(reason);
                return Ok(false);
            }
        }
        job.promote_started = true;
        let sid = job.account_sid.clone();
        let answer = deadline
            .run(
                "twilio",
                self.twilio.promote_secondary_token(&sid, secondary),
            )
            .await;
        let promoted = match answer {
            Ok(()) => true,
            Err(e) => {
                // Lost, or refused (promoted already?): the main account tells.
                tracing::warn!(error = %e, "promotion unanswered or refused; reading the token back");
                match deadline.run("twilio", self.twilio.subaccount(&sid)).await {
                    Ok(sub) if self.fingerprints.of(&sub.auth_token) == *fp => true,
                    Ok(_) => {
                        // Not promoted (yet): a lost promotion may still land, so
                        // the claim is kept until it expires.
                        ends.keep_claim |= e.outcome_unknown();
                        ends.pending("promote", e.stable_code());
                        return Ok(false);
                    }
                    Err(read) => {
                        ends.keep_claim |= e.outcome_unknown();
                        ends.pending("promote", read.stable_code());
                        return Ok(false);
                    }
                }
            }
        };
        if promoted {
            store::stamp_promoted(self.db, job).await?;
            job.promoted = true;
        }
        Ok(promoted)
    }

    /// The slot holds the new token: sealed, with its fingerprint.
    async fn seal_slot(
        &self,
        job: &mut Job,
        token: &AuthToken,
        fp: &TokenFingerprint,
        deadline: Deadline,
        ends: &mut Ends,
    ) -> Result<(), RotationError> {
        let Some(phone) = job.slot_phone.clone() else {
            ends.cancel = Some("slot_changed");
            return Ok(());
        };
        let sealed = match crate::credential::seal_managed(
            self.keyring,
            job.org,
            &job.account_sid,
            token,
            &phone,
            deadline,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "could not seal the new token into the slot");
                let code = match e {
                    crate::credential::SaveError::Crypto(c) => crypto_code(&c),
                    _ => "encryption_failed",
                };
                ends.pending("slot", code);
                return Ok(());
            }
        };
        match store::seal_slot(self.db, job, &sealed, fp).await? {
            store::Gate::Go => ends.done = true,
            store::Gate::Wait(code) => ends.pending("slot", code),
            store::Gate::Cancel(reason) => ends.cancel = Some(reason),
        }
        Ok(())
    }
}

fn crypto_code(e: &CryptoError) -> &'static str {
    match e {
        CryptoError::Kms(_) => "encryption_unavailable",
        _ => "encryption_failed",
    }
}
