//! Buying a managed number: the acquisition half of the lifecycle, on the
//! provider-step protocol ([`crate::steps`]). A number bought and forgotten bills
//! every month, so every step is recorded before the next one starts.
//!
//! 1. **Intent** ([`record::claim`]): a `provisioning` row with an operation id,
//!    claimed by this request (the one-owner index keeps two orgs from buying one
//!    number), audited. A BYOC org is refused (409 `byoc_in_use`), and so is a new
//!    purchase over the org's daily limit ([`PurchaseLimit`]: 429
//!    `purchase_limit_reached`, counted in the same transaction under a lock on the
//!    org's row). A repeat of the request (or a resume after a dead holder) claims
//!    the same row, and is never refused by the limit.
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
//!    or by reconcile; a create whose outcome stayed unknown keeps the claim until
//!    it expires, so no copy is sent while a late one may land); refused before
//!    anything was bought (21422 taken, 21421 invalid, address required, an
//!    assistant Vapi does not know, checked only while no purchase was ever
//!    attempted) → the intent is closed, nothing bills (409/422); refused after
//!    buying in the same attempt (Vapi refuses the import) or given up by
//!    reconcile after `RECONCILE_MAX_ATTEMPTS` → **what was bought is released**
//!    through the release protocol (422 `vapi_refused_import`), its Vapi import
//!    looked up first if its answer was lost. A user's repeat never releases
//!    what was bought, and once buying started it must ask for the same assistant
//!    and name (409 `purchase_differs`).

mod error;
mod limit;
mod outcome;
mod record;
mod steps;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

pub use error::PurchaseError;
pub use limit::PurchaseLimit;
pub use record::{ActiveNumber, PurchaseClaim};

use crate::credential::CredentialStore;
use crate::credential::fingerprint::FingerprintKey;
use crate::db::{Db, DbError};
use crate::identity::Caller;
use crate::ids::{AssistantId, E164, NumberName, OrgId};
use crate::providers::ProviderError;
use crate::release::{ReleaseOutcome, Releaser};
use crate::steps::{ClaimToken, Deadline, StepError, StepsConfig};
use crate::twilio::TwilioClient;
use crate::vapi::VapiClient;
use record::Existing;

/// The body of `POST /api/managed-telephony/numbers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PurchaseRequest {
    pub phone_number: E164,
    #[serde(default)]
    pub assistant_id: Option<AssistantId>,
    #[serde(default)]
    pub name: Option<NumberName>,
    /// Whether Vapi takes the number's SMS too: Vapi's import points the Twilio
    /// number's messaging URL at Vapi unless told `false`. Sent explicitly on every
    /// import; omitted means `true` (Vapi's own default, and what purchases did
    /// before the field existed). Fixed once buying started, like the assistant.
    #[serde(default)]
    pub sms_enabled: Option<bool>,
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

/// How the provider steps of one attempt ended.
enum Progress {
    Done,
    /// The claim was taken over: its new holder finishes.
    Lost,
    /// A step failed in a way a later attempt may get past.
    Pending(&'static str, ProviderError),
    /// A creating call (buy, import) ended without an answer and the lookup did not
    /// find what it may have made: the claim is kept until it expires, so no repeat
    /// or reconcile sends another while a late copy may still land.
    InFlight(&'static str, ProviderError),
    /// Refused before anything was bought: close the intent.
    Refused(PurchaseError),
    /// Refused after buying. `true`: bought by this very attempt, whose caller is
    /// told of the purchase and its undoing in one answer, so what was bought is
    /// released. A purchase resumed after buying (a user's repeat) never releases
    /// what was bought: it stays pending until reconcile gives it up.
    CannotFinish(&'static str, ProviderError, bool),
}

impl Progress {
    /// A refusal met on the way to the import, after the number was bought.
    fn after_buying(self, bought_now: bool) -> Self {
        match self {
            Self::CannotFinish(step, e, _) => Self::CannotFinish(step, e, bought_now),
            Self::Refused(PurchaseError::UnknownAssistant) => Self::CannotFinish(
                "vapi",
                ProviderError::Status {
                    provider: "vapi",
                    status: 404,
                    code: None,
                    message: Some("Vapi has no such assistant".into()),
                },
                bought_now,
            ),
            other => other,
        }
    }
}

/// Who is finishing a purchase.
struct Attempt<'x> {
    caller: &'x Caller,
    request_id: &'x str,
    deadline: Deadline,
    /// Reconcile, after its backoff: may give a purchase up (releasing what was
    /// bought). A user's repeated request never does.
    may_give_up: bool,
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
    /// Fingerprints the subaccount's token: recorded on each import, and compared
    /// with the slot's to find a token rotated elsewhere. `None`: neither is done.
    pub fingerprints: Option<&'a FingerprintKey>,
}

/// The subaccount's deterministic FriendlyName (≤ 64 characters).
pub fn subaccount_name(org: OrgId) -> String {
    format!("org:{org}")
}

impl Purchaser<'_> {
    /// Buy `req.phone_number` for the caller's org (or resume its unfinished
    /// purchase), with the provider steps finished before `deadline`. A new
    /// purchase over the org's `limit` is refused before anything is recorded or
    /// sent ([`PurchaseError::LimitReached`]); a repeat of one is not new.
    pub async fn buy(
        &self,
        caller: &Caller,
        request_id: &str,
        req: &PurchaseRequest,
        limit: PurchaseLimit,
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
                limit,
                ClaimToken::new(),
            )
            .await
            {
                Err(PurchaseError::Retry) if attempt < 3 => continue,
                other => break other?,
            }
        };
        match claimed {
            Ok(claim) => {
                let at = Attempt {
                    caller,
                    request_id,
                    deadline,
                    may_give_up: false,
                };
                self.finish(claim, &at).await
            }
            Err(Existing::Active(number)) => Ok(PurchaseOutcome::Active {
                number,
                created: false,
            }),
            Err(Existing::InProgress(pending)) => Ok(PurchaseOutcome::Provisioning {
                phone_number: req.phone_number.to_string(),
                pending,
                errors: BTreeMap::new(),
            }),
            Err(Existing::Releasing) => Err(PurchaseError::BeingReleased),
            Err(Existing::Taken) => Err(PurchaseError::Taken),
        }
    }

    /// Resume one provisioning row whose holder is gone and whose backoff passed
    /// (reconcile), within `budget`, into `report`: `false` when none is due.
    /// `run_started` (the database's clock): a row this run touched is not taken
    /// again in it.
    pub async fn resume_one(
        &self,
        run_started: chrono::DateTime<chrono::Utc>,
        request_id: &str,
        budget: std::time::Duration,
        report: &mut PurchaseReport,
    ) -> Result<bool, DbError> {
        let Some(claim) = record::claim_next_due(self.db, self.config, run_started).await? else {
            return Ok(false);
        };
        report.claimed += 1;
        let caller = Caller::system(claim.org, "system:reconcile");
        let deadline = Deadline::after(budget.min(self.config.deadline));
        let span = tracing::info_span!("reconcile_purchase", org_id = %claim.org);
        let at = Attempt {
            caller: &caller,
            request_id,
            deadline,
            may_give_up: true,
        };
        match self.finish(claim, &at).instrument(span).await {
            Ok(PurchaseOutcome::Active { .. }) => report.activated += 1,
            Ok(PurchaseOutcome::Provisioning { .. }) => report.still_pending += 1,
            Err(PurchaseError::Db(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "a resumed purchase was refused or undone");
                report.undone += 1;
            }
        }
        Ok(true)
    }

    /// Steps 2 and 3 for a claimed purchase.
    async fn finish(
        &self,
        mut claim: PurchaseClaim,
        at: &Attempt<'_>,
    ) -> Result<PurchaseOutcome, PurchaseError> {
        if at.may_give_up && claim.attempts > self.config.max_attempts {
            // Only reconcile's attempts count, and one that fails at the limit gives
            // up at once, so past it the last attempt's create went unanswered (or
            // its instance died) and kept its claim until it expired: nothing new
            // is sent now; undoing looks up what it may have made (the purchase,
            // the import) and releases it.
            let step = if claim.number_sid.is_none() {
                "twilio"
            } else {
                "vapi"
            };
            tracing::warn!(
                step,
                "giving up a purchase whose last attempt went unanswered"
            );
            return self
                .undo(
                    claim,
                    at,
                    step,
                    ProviderError::Timeout { provider: step },
                    true,
                )
                .await;
        }
        let (progress, sub) = self.provider_steps(&mut claim, at.deadline).await?;
        match progress {
            Progress::Done => {
                match outcome::activate(self.db, &claim, at.caller, at.request_id).await {
                    Ok(Some(number)) => {
                        // After the outcome, off the path that decides what bills, and
                        // alone, so its transactions never overlap a provider call.
                        if let Some(sub) = &sub {
                            self.fill_slot(&claim, sub, at.caller, at.request_id, at.deadline)
                                .await;
                        }
                        Ok(PurchaseOutcome::Active {
                            number,
                            created: true,
                        })
                    }
                    Ok(None) => Ok(self.provisioning(&claim, None)),
                    // Bought and imported, but it cannot route here: retrying cannot
                    // change that, so what was bought is released.
                    Err(PurchaseError::RoutedElsewhere) => {
                        let recorded = json!({ "routing": { "code": "number_already_routed" } });
                        self.release_bought(&claim, at, &recorded).await?;
                        Err(PurchaseError::RoutedElsewhere)
                    }
                    Err(e) => Err(e),
                }
            }
            Progress::Lost => {
                tracing::warn!(
                    "purchase claim was taken over; leaving the outcome to its new holder"
                );
                Ok(self.provisioning(&claim, None))
            }
            // Only reconcile gives up, after its backoff: a user repeating the
            // request during an outage never loses the number they bought.
            Progress::Pending(step, error)
                if !at.may_give_up || claim.attempts < self.config.max_attempts =>
            {
                self.pending(&claim, step, error, false).await
            }
            Progress::Pending(step, error) => self.undo(claim, at, step, error, true).await,
            // Never given up while a late copy of a create may land.
            Progress::InFlight(step, error) => self.pending(&claim, step, error, true).await,
            Progress::CannotFinish(step, error, bought_now) if bought_now || at.may_give_up => {
                self.undo(claim, at, step, error, false).await
            }
            Progress::CannotFinish(step, error, _) => {
                tracing::warn!(step, error = %error, "refused after buying; a repeat never releases what was bought");
                self.pending(&claim, step, error, false).await
            }
            Progress::Refused(e) => {
                // Twilio refused the purchase itself (nothing bought by it, and any
                // earlier attempt was looked up first); an unknown assistant is met
                // only before any purchase was attempted.
                let nothing_bought = !matches!(e, PurchaseError::UnknownAssistant);
                let closed = outcome::close(
                    self.db,
                    &claim,
                    at.caller,
                    at.request_id,
                    e.refusal_code(),
                    nothing_bought,
                )
                .await?;
                if !closed {
                    tracing::error!(
                        code = e.refusal_code(),
                        "a refusal met a purchase that may have bought; kept pending"
                    );
                    let recorded = json!({ "purchase": { "code": e.refusal_code() } });
                    outcome::leave_pending(self.db, &claim, &recorded, false).await?;
                    return Ok(self.provisioning(&claim, None));
                }
                Err(e)
            }
        }
    }

    /// Left pending with the step's error; `keep_claim` while a create's outcome
    /// is unknown (the claim then expires on its own, see [`Progress::InFlight`]).
    async fn pending(
        &self,
        claim: &PurchaseClaim,
        step: &'static str,
        error: ProviderError,
        keep_claim: bool,
    ) -> Result<PurchaseOutcome, PurchaseError> {
        tracing::warn!(step, error = %error, code = error.stable_code(), keep_claim, "purchase step failed; the purchase stays provisioning");
        let recorded = json!({ step: StepError::from(&error) });
        outcome::leave_pending(self.db, claim, &recorded, keep_claim).await?;
        Ok(self.provisioning(claim, Some((step, &error))))
    }

    /// A purchase that cannot be finished: closed if nothing was bought (after a
    /// last lookup when a purchase was attempted); otherwise handed to the release
    /// protocol and released now if the deadline allows.
    async fn undo(
        &self,
        mut claim: PurchaseClaim,
        at: &Attempt<'_>,
        step: &'static str,
        error: ProviderError,
        gave_up: bool,
    ) -> Result<PurchaseOutcome, PurchaseError> {
        if claim.number_sid.is_none() && claim.buy_attempted {
            match self.find_late_purchase(&claim, at.deadline).await {
                Ok(Some(pn)) => {
                    tracing::warn!("a purchase given up for lost was made after all; releasing it");
                    if !record::stamp(self.db, &claim, record::Stamp::Bought(&pn)).await? {
                        return Ok(self.provisioning(&claim, None));
                    }
                    claim.number_sid = Some(pn);
                }
                Ok(None) => {}
                // Cannot tell whether it was bought: never close on a guess.
                Err(e) => return self.pending(&claim, "twilio", e, false).await,
            }
        }
        // An import whose answer was lost may have landed: found now, the release
        // deletes it at Vapi too (else a Vapi number would keep the subaccount's
        // token and the number's E.164).
        if claim.number_sid.is_some() && claim.vapi_phone_id.is_none() && claim.import_attempted {
            match self.find_late_import(&claim, at.deadline).await {
                Ok(Some(id)) => {
                    tracing::warn!(
                        "an import given up for lost was made after all; releasing it too"
                    );
                    if !record::stamp(self.db, &claim, record::Stamp::Imported(&id, None)).await? {
                        return Ok(self.provisioning(&claim, None));
                    }
                    claim.vapi_phone_id = Some(id);
                }
                Ok(None) => {}
                Err(e) => return self.pending(&claim, "vapi", e, false).await,
            }
        }
        if claim.number_sid.is_none() {
            tracing::error!(step, error = %error, "purchase given up; nothing was bought");
            // A purchase ever attempted was looked up just above and found nothing.
            if !outcome::close(self.db, &claim, at.caller, at.request_id, "gave_up", true).await? {
                return Ok(self.provisioning(&claim, None));
            }
            return Err(PurchaseError::GaveUp(step, error));
        }
        tracing::error!(step, error = %error, code = error.stable_code(), "purchase cannot be finished; releasing what was bought");
        let recorded = json!({ step: StepError::from(&error) });
        let Some(released) = self.release_bought(&claim, at, &recorded).await? else {
            return Ok(self.provisioning(&claim, None));
        };
        Err(PurchaseError::Undone {
            step,
            error,
            gave_up,
            released,
        })
    }

    /// Hand a bought number to the release protocol and release it now if the
    /// deadline allows: `Some(released)`, or `None` if the claim was lost (its new
    /// holder decides).
    async fn release_bought(
        &self,
        claim: &PurchaseClaim,
        at: &Attempt<'_>,
        recorded: &serde_json::Value,
    ) -> Result<Option<bool>, PurchaseError> {
        let (caller, request_id, deadline) = (at.caller, at.request_id, at.deadline);
        if !outcome::unwind(self.db, claim, caller, request_id, recorded).await? {
            return Ok(None);
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
        Ok(Some(matches!(released, ReleaseOutcome::Released { .. })))
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
