//! Buying a managed number: the acquisition half of the lifecycle, on the
//! provider-step protocol ([`crate::steps`]). A number bought and forgotten bills
//! every month, so every step is recorded before the next one starts.
//!
//! 1. **Intent** ([`record::claim`]): a `provisioning` row with an operation id,
//!    claimed by this request (the one-owner index keeps two orgs from buying one
//!    number), audited. A BYOC org is refused (409 `byoc_in_use`). A repeat of the
//!    request (or a resume after a dead holder) claims the same row.
//! 2. **Provider steps**, no connection held, within the request's deadline:
//!    - the org's Twilio **subaccount** (`org:<uuid>`): known on the org, else looked
//!      up by name, else created (never blind-retried: after an unknown outcome,
//!      looked up again); its token is read back from Twilio as the main account,
//!      so no stored credential is ever decrypted;
//!    - **buy** exactly the number on the subaccount (`FriendlyName` carries the
//!      operation id); after a timeout or 5xx it is looked up and adopted, and a
//!      resumed purchase looks before buying;
//!    - **import** it into Vapi with the subaccount's credentials and the assistant,
//!      likewise looked up after an unknown outcome or on resume;
//!    - the subaccount fills the org's **slot** as `managed` when the slot is empty
//!      or managed with another account (the save's own protocol: lease, Vapi
//!      credential), never over a BYOC one; best effort, the next purchase retries.
//!
//!    Each finished step is stamped on the row while the claim is ours.
//! 3. **Outcome**: `active` with a routing row and an audit row (201); unfinished
//!    → the claim is let go with the error and a backoff (202, resumed by a repeat
//!    or by reconcile); refused before anything was bought (21422 taken, 21421
//!    invalid, address required) → the intent is closed, nothing bills (409/422);
//!    refused after buying (Vapi refuses the import) or given up after
//!    `RECONCILE_MAX_ATTEMPTS` → **what was bought is released** through the
//!    release protocol (422 `vapi_refused_import`).

mod record;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

pub use record::{ActiveNumber, PurchaseClaim};

use crate::credential::{CredentialStore, SaveError, TwilioCredential, byoc_in_use};
use crate::db::{Db, DbError};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::ids::{AssistantId, CredentialSource, E164, NumberName, OrgId, PhoneNumberSid};
use crate::providers::ProviderError;
use crate::release::{ReleaseOutcome, Releaser};
use crate::steps::{ClaimToken, Deadline, StepError, StepsConfig};
use crate::twilio::{Subaccount, TwilioClient};
use crate::vapi::{NumberImport, VapiClient};
use record::{Existing, Stamp};

/// The body of `POST /api/managed-telephony/numbers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PurchaseRequest {
    pub phone_number: E164,
    #[serde(default)]
    pub assistant_id: Option<AssistantId>,
    #[serde(default)]
    pub name: Option<NumberName>,
}

/// What a purchase request achieved.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PurchaseOutcome {
    /// Bought, imported and routed. `created`: by this request (201), or it was
    /// already (a repeated request, 200).
    Active {
        #[serde(flatten)]
        number: ActiveNumber,
        #[serde(skip)]
        created: bool,
    },
    /// Not finished: the steps still to do and the last error of each failed one.
    /// A repeat of the request or reconcile resumes it.
    #[serde(rename_all = "camelCase")]
    Provisioning {
        phone_number: String,
        pending: Vec<&'static str>,
        errors: BTreeMap<&'static str, &'static str>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PurchaseError {
    #[error("the organisation uses its own Twilio account")]
    ByocInUse,
    #[error("another organisation holds this number")]
    Taken,
    #[error("Twilio no longer offers this number")]
    Unavailable,
    #[error("Twilio says this number is invalid")]
    InvalidNumber,
    #[error("this number needs a registered address")]
    AddressRequired,
    #[error("the platform's Twilio account may not buy numbers ({0})")]
    AccountRestricted(ProviderError),
    #[error("Twilio refused the purchase: {0}")]
    TwilioRefused(ProviderError),
    #[error("Vapi refused to import the number: {error}")]
    VapiRefused {
        error: ProviderError,
        released: bool,
    },
    /// Failed `RECONCILE_MAX_ATTEMPTS` times before anything was bought: closed.
    #[error("the purchase failed too often at {0}: {1}")]
    GaveUp(&'static str, ProviderError),
    #[error("the number is being released")]
    BeingReleased,
    #[error("the number routes to another organisation")]
    RoutedElsewhere,
    /// The number changed state between two statements; try the intent again.
    #[error("the number changed state; try again")]
    Retry,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl PurchaseError {
    /// The stable code an audit row of a closed intent records.
    fn refusal_code(&self) -> &'static str {
        match self {
            Self::Unavailable => "number_unavailable",
            Self::InvalidNumber => "invalid_phone_number",
            Self::AddressRequired => "address_required",
            Self::AccountRestricted(_) => "purchasing_unavailable",
            Self::TwilioRefused(_) => "twilio_refused_purchase",
            _ => "refused",
        }
    }
}

impl From<tokio_postgres::Error> for PurchaseError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<PurchaseError> for ApiError {
    fn from(e: PurchaseError) -> Self {
        let conflict = |code, message: &str| ApiError::Conflict {
            code,
            message: message.into(),
        };
        let unprocessable = |code, message: String| ApiError::Unprocessable { code, message };
        match e {
            PurchaseError::ByocInUse => byoc_in_use(),
            PurchaseError::Taken => conflict("number_taken", "This number is not available."),
            PurchaseError::Unavailable => conflict(
                "number_unavailable",
                "Twilio no longer offers this number (another buyer may have taken it); search again and pick another. Nothing was bought.",
            ),
            PurchaseError::InvalidNumber => unprocessable(
                "invalid_phone_number",
                "Twilio says this number is not a valid number to buy. Nothing was bought.".into(),
            ),
            PurchaseError::AddressRequired => unprocessable(
                "address_required",
                "This number needs a registered address, which is not supported yet; pick a number that needs none. Nothing was bought.".into(),
            ),
            PurchaseError::AccountRestricted(p) => {
                tracing::error!(error = %p, code = p.stable_code(), "the main Twilio account may not buy numbers");
                ApiError::Unavailable {
                    code: "purchasing_unavailable",
                    message: "Numbers cannot be bought right now; nothing was bought. Support has been told.".into(),
                }
            }
            PurchaseError::TwilioRefused(p) => unprocessable(
                "twilio_refused_purchase",
                format!(
                    "Twilio refused the purchase (HTTP {}{}). Nothing was bought.",
                    p.status().unwrap_or_default(),
                    p.provider_code().map(|c| format!(", code {c}")).unwrap_or_default()
                ),
            ),
            PurchaseError::VapiRefused { error, released } => unprocessable(
                "vapi_refused_import",
                format!(
                    "Vapi refused the number ({}), so the purchase was undone: the number {}.",
                    error.stable_code(),
                    if released {
                        "was released and is not billed"
                    } else {
                        "is being released (see its status)"
                    }
                ),
            ),
            PurchaseError::GaveUp(step, p) => ApiError::Unavailable {
                code: "purchase_failed",
                message: format!(
                    "The purchase could not be finished ({step}: {}); nothing was bought. Try again later.",
                    p.stable_code()
                ),
            },
            PurchaseError::BeingReleased => conflict(
                "number_being_released",
                "This number of your organisation is being released; buy it again once it is released.",
            ),
            PurchaseError::RoutedElsewhere => conflict(
                "number_already_routed",
                "This number already routes to another organisation.",
            ),
            PurchaseError::Retry => ApiError::Unavailable {
                code: "try_again",
                message: "The number changed state while buying it; try again.".into(),
            },
            PurchaseError::Db(db) => db.into(),
        }
    }
}

/// How the provider steps of one attempt ended.
enum Progress {
    Done,
    /// The claim was taken over: its new holder finishes.
    Lost,
    /// A step failed in a way a later attempt may get past.
    Pending(&'static str, ProviderError),
    /// Refused before anything was bought: close the intent.
    Refused(PurchaseError),
    /// Refused after buying: release what was bought.
    CannotFinish(&'static str, ProviderError),
}

/// Buys numbers; one per function instance (buy-number) or reconcile run.
pub struct Purchaser<'a> {
    pub db: &'a Db,
    pub vapi: &'a VapiClient,
    /// As the platform's main account.
    pub twilio: &'a TwilioClient,
    pub config: &'a StepsConfig,
    /// Fills the org's slot with its subaccount. `None` in reconcile, which may not
    /// seal credentials (no KMS): the org's next purchase fills it.
    pub credentials: Option<CredentialStore<'a>>,
}

/// The subaccount's deterministic FriendlyName (≤ 64 characters).
pub fn subaccount_name(org: OrgId) -> String {
    format!("org:{org}")
}

impl Purchaser<'_> {
    /// Buy `req.phone_number` for the caller's org (or resume its unfinished
    /// purchase), with the provider steps finished before `deadline`.
    pub async fn buy(
        &self,
        caller: &Caller,
        request_id: &str,
        req: &PurchaseRequest,
        deadline: Deadline,
    ) -> Result<PurchaseOutcome, PurchaseError> {
        let mut attempt = 0;
        let claimed = loop {
            attempt += 1;
            match record::claim(
                self.db,
                self.config,
                caller,
                request_id,
                req,
                ClaimToken::new(),
            )
            .await
            {
                Err(PurchaseError::Retry) if attempt < 3 => continue,
                other => break other?,
            }
        };
        match claimed {
            Ok(claim) => self.finish(claim, caller, request_id, deadline).await,
            Err(Existing::Active(number)) => Ok(PurchaseOutcome::Active {
                number,
                created: false,
            }),
            Err(Existing::InProgress) => Ok(PurchaseOutcome::Provisioning {
                phone_number: req.phone_number.to_string(),
                pending: Vec::new(),
                errors: BTreeMap::new(),
            }),
            Err(Existing::Releasing) => Err(PurchaseError::BeingReleased),
            Err(Existing::Taken) => Err(PurchaseError::Taken),
        }
    }

    /// Resume provisioning rows whose holder is gone (reconcile): at most `batch`,
    /// while `time_left()` allows. Returns (finished, still pending, undone).
    pub async fn resume(
        &self,
        batch: usize,
        request_id: &str,
        time_left: &impl Fn() -> std::time::Duration,
    ) -> Result<PurchaseReport, DbError> {
        let run_started = chrono::Utc::now();
        let mut report = PurchaseReport::default();
        while report.claimed < batch {
            let budget = time_left().saturating_sub(self.config.outcome_margin);
            if budget < self.config.deadline.min(std::time::Duration::from_secs(5)) {
                break;
            }
            let Some(claim) = record::claim_next_due(self.db, self.config, run_started).await?
            else {
                break;
            };
            report.claimed += 1;
            let caller = Caller::system(claim.org, "system:reconcile");
            let deadline = Deadline::after(budget.min(self.config.deadline));
            match self.finish(claim, &caller, request_id, deadline).await {
                Ok(PurchaseOutcome::Active { .. }) => report.activated += 1,
                Ok(PurchaseOutcome::Provisioning { .. }) => report.still_pending += 1,
                Err(PurchaseError::Db(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "a resumed purchase was refused or undone");
                    report.undone += 1;
                }
            }
        }
        Ok(report)
    }

    /// Steps 2 and 3 for a claimed purchase.
    async fn finish(
        &self,
        mut claim: PurchaseClaim,
        caller: &Caller,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<PurchaseOutcome, PurchaseError> {
        let progress = self
            .provider_steps(&mut claim, caller, request_id, deadline)
            .await?;
        match progress {
            Progress::Done => match record::activate(self.db, &claim, caller, request_id).await? {
                Some(number) => Ok(PurchaseOutcome::Active {
                    number,
                    created: true,
                }),
                None => Ok(self.provisioning(&claim, None)),
            },
            Progress::Lost => {
                tracing::warn!(
                    "purchase claim was taken over; leaving the outcome to its new holder"
                );
                Ok(self.provisioning(&claim, None))
            }
            Progress::Pending(step, error) if claim.attempts < self.config.max_attempts => {
                tracing::warn!(step, error = %error, code = error.stable_code(), "purchase step failed; the purchase stays provisioning");
                let recorded = json!({ step: StepError::from(&error) });
                record::leave_pending(self.db, &claim, &recorded).await?;
                Ok(self.provisioning(&claim, Some((step, &error))))
            }
            // Tried too often: give up, releasing whatever was bought.
            Progress::Pending(step, error) | Progress::CannotFinish(step, error) => {
                if claim.number_sid.is_none() {
                    tracing::error!(step, error = %error, "purchase given up; nothing was bought");
                    record::close(self.db, &claim, caller, request_id, "gave_up").await?;
                    return Err(PurchaseError::GaveUp(step, error));
                }
                tracing::error!(step, error = %error, code = error.stable_code(), "purchase cannot be finished; releasing what was bought");
                let recorded = json!({ step: StepError::from(&error) });
                if !record::unwind(self.db, &claim, caller, request_id, &recorded).await? {
                    return Ok(self.provisioning(&claim, None));
                }
                let releaser = Releaser {
                    db: self.db,
                    vapi: self.vapi,
                    twilio: self.twilio,
                    config: self.config,
                };
                let released = releaser
                    .release(caller, request_id, &claim.number, deadline)
                    .await
                    .map_err(|e| match e {
                        crate::release::ReleaseError::Db(db) => PurchaseError::Db(db),
                        // The unwound row is ours and claimable: a bug if not.
                        other => PurchaseError::Db(DbError::Shape(other.to_string())),
                    })?;
                Err(PurchaseError::VapiRefused {
                    error,
                    released: matches!(released, ReleaseOutcome::Released { .. }),
                })
            }
            Progress::Refused(e) => {
                record::close(self.db, &claim, caller, request_id, e.refusal_code()).await?;
                Err(e)
            }
        }
    }

    fn provisioning(
        &self,
        claim: &PurchaseClaim,
        failed: Option<(&'static str, &ProviderError)>,
    ) -> PurchaseOutcome {
        let mut pending = Vec::new();
        if claim.subaccount.is_none() {
            pending.push("subaccount");
        }
        if claim.number_sid.is_none() {
            pending.push("twilio");
        }
        if claim.vapi_phone_id.is_none() {
            pending.push("vapi");
        }
        PurchaseOutcome::Provisioning {
            phone_number: claim.number.to_string(),
            pending,
            errors: failed
                .map(|(step, e)| BTreeMap::from([(step, e.stable_code())]))
                .unwrap_or_default(),
        }
    }

    /// The subaccount, the slot, the purchase and the import, each skipped when an
    /// earlier attempt stamped it.
    async fn provider_steps(
        &self,
        claim: &mut PurchaseClaim,
        caller: &Caller,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<Progress, DbError> {
        let sub = match self.subaccount(claim, deadline).await {
            Ok(sub) => sub,
            Err(e) => return Ok(Progress::Pending("subaccount", e)),
        };
        if !record::stamp(self.db, claim, Stamp::Subaccount(&sub.sid)).await? {
            return Ok(Progress::Lost);
        }
        claim.subaccount = Some(sub.sid.clone());

        if claim.number_sid.is_none() {
            let pn = match self.buy_on(claim, &sub, deadline).await {
                Ok(pn) => pn,
                Err(progress) => return Ok(progress),
            };
            if !record::stamp(self.db, claim, Stamp::Bought(&pn)).await? {
                return Ok(Progress::Lost);
            }
            claim.number_sid = Some(pn);
        }

        if claim.vapi_phone_id.is_none() {
            let id = match self.import(claim, &sub, deadline).await {
                Ok(id) => id,
                Err(progress) => return Ok(progress),
            };
            if !record::stamp(self.db, claim, Stamp::Imported(&id)).await? {
                return Ok(Progress::Lost);
            }
            claim.vapi_phone_id = Some(id);
        }
        // Last, off the path that decides what bills: the slot (its own protocol;
        // run alone, so its transactions never overlap a provider call above).
        self.fill_slot(claim, &sub, caller, request_id, deadline)
            .await;
        Ok(Progress::Done)
    }

    /// The org's subaccount with its current token: known, found by name, or created.
    async fn subaccount(
        &self,
        claim: &PurchaseClaim,
        deadline: Deadline,
    ) -> Result<Subaccount, ProviderError> {
        if let Some(sid) = &claim.subaccount {
            return deadline.run("twilio", self.twilio.subaccount(sid)).await;
        }
        let name = subaccount_name(claim.org);
        if let Some(found) = deadline
            .run("twilio", self.twilio.find_subaccount(&name))
            .await?
        {
            tracing::info!("adopting the org's subaccount found by name");
            return Ok(found);
        }
        match deadline
            .run("twilio", self.twilio.create_subaccount(&name))
            .await
        {
            Ok(sub) => Ok(sub),
            Err(e) if e.outcome_unknown() => {
                tracing::warn!(error = %e, "creating the subaccount ended without an answer; looking it up by name");
                deadline
                    .run("twilio", self.twilio.find_subaccount(&name))
                    .await?
                    .ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The org's slot becomes its subaccount (`managed`) when empty or managed with
    /// another account; never over a BYOC credential. Best effort: the purchase
    /// does not depend on it, and the org's next purchase tries again.
    async fn fill_slot(
        &self,
        claim: &PurchaseClaim,
        sub: &Subaccount,
        caller: &Caller,
        request_id: &str,
        deadline: Deadline,
    ) {
        let Some(store) = &self.credentials else {
            return;
        };
        match &claim.slot {
            Some((source, Some(sid))) if source == "managed" && sid == sub.sid.as_str() => return,
            Some((source, _)) if source == "byoc" => return,
            _ => {}
        }
        let cred = TwilioCredential {
            account_sid: sub.sid.clone(),
            auth_token: sub.auth_token.clone(),
            phone_number: claim.number.clone(),
        };
        match store
            .save(
                caller,
                request_id,
                &cred,
                CredentialSource::Managed,
                deadline,
            )
            .await
        {
            Ok(saved) => tracing::info!(
                vapi_synced = saved.vapi.synced,
                "the org's slot holds its subaccount"
            ),
            Err(SaveError::ByocInUse) => {
                tracing::info!("the org switched to its own account; slot left alone")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not fill the org's slot; its next purchase tries again")
            }
        }
    }

    /// Buy exactly the number on the subaccount; look before buying on a resumed
    /// purchase, and after an unknown outcome.
    async fn buy_on(
        &self,
        claim: &PurchaseClaim,
        sub: &Subaccount,
        deadline: Deadline,
    ) -> Result<PhoneNumberSid, Progress> {
        let find = || deadline.run("twilio", self.twilio.find_bought(&sub.sid, &claim.number));
        if claim.resumed() {
            match find().await {
                Ok(Some(pn)) => return Ok(pn),
                Ok(None) => {}
                Err(e) => return Err(Progress::Pending("twilio", e)),
            }
        }
        let friendly = format!("purchase {}", claim.operation_id);
        match deadline
            .run(
                "twilio",
                self.twilio.buy_number(&sub.sid, &claim.number, &friendly),
            )
            .await
        {
            Ok(pn) => Ok(pn),
            Err(e) if e.outcome_unknown() => {
                tracing::warn!(error = %e, "buying ended without an answer; looking the number up");
                match find().await {
                    Ok(Some(pn)) => Ok(pn),
                    _ => Err(Progress::Pending("twilio", e)),
                }
            }
            Err(e) => Err(classify_twilio_refusal(e)),
        }
    }

    /// Import into Vapi with the subaccount's credentials; look first on a resumed
    /// purchase and after an unknown outcome.
    async fn import(
        &self,
        claim: &PurchaseClaim,
        sub: &Subaccount,
        deadline: Deadline,
    ) -> Result<String, Progress> {
        let since = claim.started_at - chrono::Duration::minutes(5);
        let find = || deadline.run("vapi", self.vapi.find_phone_number(&claim.number, since));
        if claim.resumed() {
            match find().await {
                Ok(Some(id)) => return Ok(id),
                Ok(None) => {}
                Err(e) => return Err(Progress::Pending("vapi", e)),
            }
        }
        let import = NumberImport {
            number: &claim.number,
            subaccount: &sub.sid,
            auth_token: &sub.auth_token,
            name: claim.name.as_ref().map(NumberName::as_str),
            assistant_id: claim.assistant.as_ref().map(AssistantId::as_str),
        };
        match deadline.run("vapi", self.vapi.import_number(&import)).await {
            Ok(id) => Ok(id),
            Err(e) if e.outcome_unknown() => {
                tracing::warn!(error = %e, "importing ended without an answer; looking the number up at Vapi");
                match find().await {
                    Ok(Some(id)) => Ok(id),
                    _ => Err(Progress::Pending("vapi", e)),
                }
            }
            Err(e) if is_refusal(&e) => Err(Progress::CannotFinish("vapi", e)),
            Err(e) => Err(Progress::Pending("vapi", e)),
        }
    }
}

/// A 4xx that repeating cannot change (not 401/403, 408 or 429).
fn is_refusal(e: &ProviderError) -> bool {
    matches!(e, ProviderError::Status { status, .. }
        if (400..500).contains(status) && ![401, 403, 408, 429].contains(status))
}

/// Twilio's answer to a purchase that bought nothing.
fn classify_twilio_refusal(e: ProviderError) -> Progress {
    match e.provider_code() {
        Some(21422) => Progress::Refused(PurchaseError::Unavailable),
        Some(21421) => Progress::Refused(PurchaseError::InvalidNumber),
        Some(21631 | 21613) => Progress::Refused(PurchaseError::AddressRequired),
        Some(10002) => Progress::Refused(PurchaseError::AccountRestricted(e)),
        _ if is_refusal(&e) => Progress::Refused(PurchaseError::TwilioRefused(e)),
        _ => Progress::Pending("twilio", e),
    }
}

/// What a reconcile pass over purchases did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PurchaseReport {
    pub claimed: usize,
    pub activated: usize,
    pub still_pending: usize,
    /// Refused, given up or unwound (what was bought released).
    pub undone: usize,
}
