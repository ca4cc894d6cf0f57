//! The purchase's provider steps (step 2 of [`super`]): the subaccount, the
//! purchase at Twilio, the import into Vapi, the org's slot. Each looks before it
//! creates when an earlier attempt may have created the thing already.

use super::record::{self, PurchaseClaim, Stamp};
use super::{Progress, PurchaseError, Purchaser, subaccount_name};
use crate::credential::{SaveError, TwilioCredential};
use crate::db::DbError;
use crate::identity::Caller;
use crate::ids::{AccountSid, AssistantId, CredentialSource, E164, NumberName, PhoneNumberSid};
use crate::providers::ProviderError;
use crate::steps::Deadline;
use crate::twilio::Subaccount;
use crate::vapi::{FoundNumber, NumberImport};

impl Purchaser<'_> {
    /// The subaccount, the purchase and the import, each skipped when an earlier
    /// attempt stamped it. Returns the subaccount for the slot, filled after the
    /// outcome ([`Purchaser::fill_slot`]).
    pub(super) async fn provider_steps(
        &self,
        claim: &mut PurchaseClaim,
        deadline: Deadline,
    ) -> Result<(Progress, Option<Subaccount>), DbError> {
        // Two independent reads, concurrently: the subaccount (and its token) and,
        // while nothing can have been bought yet (no purchase ever attempted),
        // whether Vapi knows the assistant. Once a purchase was attempted, only
        // Twilio can say whether anything was bought: the assistant is checked
        // before the import instead, never as a reason to close the intent.
        let check_first = !claim.buy_attempted;
        let (sub, assistant) = tokio::join!(self.subaccount(claim, deadline), async {
            match check_first {
                true => self.check_assistant(claim, deadline).await,
                false => None,
            }
        });
        let sub = match sub {
            Ok(sub) => sub,
            Err(progress) => return Ok((progress, None)),
        };
        let Some(orgs) = record::stamp_subaccount(self.db, claim, &sub.sid).await? else {
            return Ok((Progress::Lost, None));
        };
        // Another first purchase of the org recorded its subaccount first: use it.
        let sub = if orgs == sub.sid {
            sub
        } else {
            tracing::warn!("the org already has a subaccount; using it (the new one stays empty)");
            match deadline.run("twilio", self.twilio.subaccount(&orgs)).await {
                Ok(theirs) => theirs,
                Err(e) => return Ok((Progress::Pending("subaccount", e), None)),
            }
        };
        claim.subaccount = Some(sub.sid.clone());

        let mut bought_now = false;
        if claim.number_sid.is_none() {
            if let Some(refused) = assistant {
                return Ok((refused, Some(sub)));
            }
            let (pn, by_this_attempt) = match self.buy_on(claim, &sub, deadline).await? {
                Ok(bought) => bought,
                Err(progress) => return Ok((progress, Some(sub))),
            };
            if !record::stamp(self.db, claim, Stamp::Bought(&pn)).await? {
                return Ok((Progress::Lost, Some(sub)));
            }
            claim.number_sid = Some(pn);
            bought_now = by_this_attempt;
        }

        if claim.vapi_phone_id.is_none() {
            // Checked in this attempt already, before buying; else now.
            if !check_first && let Some(refused) = self.check_assistant(claim, deadline).await {
                return Ok((refused.after_buying(bought_now), Some(sub)));
            }
            let id = match self.import(claim, &sub, deadline).await? {
                Ok(id) => id,
                Err(progress) => return Ok((progress.after_buying(bought_now), Some(sub))),
            };
            let fp = self.fingerprints.map(|k| k.of(&sub.auth_token));
            if !record::stamp(self.db, claim, Stamp::Imported(&id, fp.as_ref())).await? {
                return Ok((Progress::Lost, Some(sub)));
            }
            claim.vapi_phone_id = Some(id);
        }
        Ok((Progress::Done, Some(sub)))
    }

    /// An assistant Vapi does not know would make it refuse the import: checked
    /// before buying, and before an import of a purchase resumed after buying.
    async fn check_assistant(&self, claim: &PurchaseClaim, deadline: Deadline) -> Option<Progress> {
        let assistant = claim.assistant.as_ref()?;
        match deadline
            .run("vapi", self.vapi.assistant_exists(assistant.as_str()))
            .await
        {
            Ok(true) => None,
            Ok(false) => Some(Progress::Refused(PurchaseError::UnknownAssistant)),
            Err(e) => Some(Progress::Pending("vapi", e)),
        }
    }

    /// The org's subaccount with its current token: known, found by name, or created.
    /// A create whose answer never came and that the lookup did not find is
    /// [`Progress::InFlight`] (the claim is kept until it expires).
    async fn subaccount(
        &self,
        claim: &PurchaseClaim,
        deadline: Deadline,
    ) -> Result<Subaccount, Progress> {
        let pending = |e| Progress::Pending("subaccount", e);
        if let Some(sid) = &claim.subaccount {
            return deadline
                .run("twilio", self.twilio.subaccount(sid))
                .await
                .map_err(pending);
        }
        let name = subaccount_name(claim.org);
        let find = || deadline.run("twilio", self.twilio.find_subaccount(&name));
        if let Some(found) = find().await.map_err(pending)? {
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
                match find().await {
                    Ok(Some(found)) => Ok(found),
                    _ => Err(Progress::InFlight("subaccount", e)),
                }
            }
            Err(e) => Err(pending(e)),
        }
    }

    /// The org's slot becomes its subaccount (`managed`) when empty or managed with
    /// another account; never over a BYOC credential. Best effort: the purchase
    /// does not depend on it, and the org's next purchase tries again.
    pub(super) async fn fill_slot(
        &self,
        claim: &PurchaseClaim,
        sub: &Subaccount,
        caller: &Caller,
        request_id: &str,
        deadline: Deadline,
    ) {
        match &claim.slot {
            Some((source, Some(sid))) if source == "managed" && sid == sub.sid.as_str() => {
                // The slot is this subaccount's: does it hold the token Twilio has
                // now? A token rotated elsewhere (console, support) is brought to
                // Vapi and the slot by an `adopt` rotation, which reconcile runs.
                let Some(key) = self.fingerprints else { return };
                let now = key.of(&sub.auth_token);
                if claim.slot_token_fp.as_deref() == Some(now.as_str()) {
                    return;
                }
                match crate::rotation::request_adopt(
                    self.db,
                    caller,
                    request_id,
                    &sub.sid,
                    "purchase_read_back",
                )
                .await
                {
                    Ok(true) => tracing::warn!(
                        "the subaccount's token is not the one the slot holds; an adopt rotation was opened"
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not open an adopt rotation; the carrier audit finds it again")
                    }
                }
                return;
            }
            Some((source, _)) if source == "byoc" => return,
            _ => {}
        }
        let Some(store) = &self.credentials else {
            return;
        };
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
            Err(SaveError::SlotHeld) => {
                tracing::info!("another purchase filled the org's slot first; left alone")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not fill the org's slot; its next purchase tries again")
            }
        }
    }

    /// Buy exactly the number on the subaccount, and whether this attempt bought
    /// it (not an earlier one's purchase, found). Once a purchase was attempted
    /// (stamped before the POST), its outcome is looked up first and adopted; a
    /// later "not available" (21422) may be our own purchase landing late, so it
    /// never closes such an intent: it stays pending and is looked up again. A
    /// POST whose outcome stays unknown is [`Progress::InFlight`]: the claim is
    /// kept until it expires, so no repeat sends another while it may still land.
    async fn buy_on(
        &self,
        claim: &mut PurchaseClaim,
        sub: &Subaccount,
        deadline: Deadline,
    ) -> Result<Result<(PhoneNumberSid, bool), Progress>, DbError> {
        let number = claim.number.clone();
        let find = || deadline.run("twilio", self.twilio.find_bought(&sub.sid, &number));
        let earlier = claim.buy_attempted;
        if earlier {
            match find().await {
                // Bought by an earlier attempt, whose caller was answered 202.
                Ok(Some(pn)) => return Ok(Ok((pn, false))),
                Ok(None) => {}
                Err(e) => return Ok(Err(Progress::Pending("twilio", e))),
            }
        } else if !record::stamp(self.db, claim, Stamp::BuyAttempt).await? {
            // The org's offboarding began: nothing is bought, the intent closes.
            if record::org_offboarding(self.db, claim).await? {
                return Ok(Err(Progress::Refused(PurchaseError::OrgOffboarding)));
            }
            return Ok(Err(Progress::Lost));
        }
        // From here on the row says a purchase was attempted: giving up looks first.
        claim.buy_attempted = true;
        let friendly = format!("purchase {}", claim.operation_id);
        // Keep time back to look the number up if the POST goes unanswered.
        let reserve = (deadline.remaining() / 4).min(std::time::Duration::from_secs(3));
        Ok(
            match deadline
                .keeping(reserve)
                .run(
                    "twilio",
                    self.twilio.buy_number(&sub.sid, &claim.number, &friendly),
                )
                .await
            {
                Ok(pn) => Ok((pn, true)),
                Err(e) if e.outcome_unknown() => {
                    tracing::warn!(error = %e, "buying ended without an answer; looking the number up");
                    match find().await {
                        Ok(Some(pn)) => Ok((pn, true)),
                        _ => Err(Progress::InFlight("twilio", e)),
                    }
                }
                // After an earlier attempt, a refusal of this one says nothing of
                // that one, which may still land ("not available", 21422, may be
                // it): never closed on it; looked up again, and given up only by
                // reconcile, whose undo looks once more.
                Err(e) if earlier => {
                    tracing::warn!(
                        code = e.stable_code(),
                        "refused after an earlier attempt: it may be ours; looking again later"
                    );
                    Err(Progress::Pending("twilio", e))
                }
                Err(e) => Err(classify_twilio_refusal(e)),
            },
        )
    }

    /// Import into Vapi with the subaccount's credentials. Once an import was
    /// attempted (stamped before the POST), it is looked up first (by number *and*
    /// subaccount) and adopted — after being brought to the assistant and name the
    /// database holds, since a late copy may carry what an earlier attempt sent. A
    /// POST whose outcome stays unknown keeps the claim ([`Progress::InFlight`]).
    async fn import(
        &self,
        claim: &mut PurchaseClaim,
        sub: &Subaccount,
        deadline: Deadline,
    ) -> Result<Result<String, Progress>, DbError> {
        let (number, started_at) = (claim.number.clone(), claim.started_at);
        let find = || self.find_import(&number, &sub.sid, started_at, deadline);
        if claim.import_attempted {
            match find().await {
                Ok(Some(found)) => return Ok(self.adopt(claim, found, sub, deadline).await),
                Ok(None) => {}
                Err(e) => return Ok(Err(Progress::Pending("vapi", e))),
            }
        } else if !record::stamp(self.db, claim, Stamp::ImportAttempt).await? {
            return Ok(Err(Progress::Lost));
        }
        // From here on the row says an import was attempted: giving up looks first.
        claim.import_attempted = true;
        let claim = &*claim;
        let import = NumberImport {
            number: &claim.number,
            subaccount: &sub.sid,
            auth_token: &sub.auth_token,
            name: claim.name.as_ref().map(NumberName::as_str),
            assistant_id: claim.assistant.as_ref().map(AssistantId::as_str),
            sms_enabled: claim.sms_enabled,
        };
        let reserve = (deadline.remaining() / 4).min(std::time::Duration::from_secs(3));
        Ok(
            match deadline
                .keeping(reserve)
                .run("vapi", self.vapi.import_number(&import))
                .await
            {
                Ok(id) => Ok(id),
                Err(e) if e.outcome_unknown() => {
                    tracing::warn!(error = %e, "importing ended without an answer; looking the number up at Vapi");
                    match find().await {
                        Ok(Some(found)) => self.adopt(claim, found, sub, deadline).await,
                        _ => Err(Progress::InFlight("vapi", e)),
                    }
                }
                Err(e) if is_refusal(&e) => Err(Progress::CannotFinish("vapi", e, true)),
                Err(e) => Err(Progress::Pending("vapi", e)),
            },
        )
    }

    /// An import found at Vapi, brought to the assistant and name the database
    /// holds before it is stamped (a PATCH only where they differ), and to the
    /// subaccount's token as read now: the import was sent by an earlier attempt,
    /// with the token of then, which a rotation may have retired since (the row then
    /// records the token it holds for certain).
    async fn adopt(
        &self,
        claim: &PurchaseClaim,
        found: FoundNumber,
        sub: &Subaccount,
        deadline: Deadline,
    ) -> Result<String, Progress> {
        let assistant = claim.assistant.as_ref().map(AssistantId::as_str);
        let name = claim.name.as_ref().map(NumberName::as_str);
        let differs = assistant.is_some_and(|a| found.assistant_id.as_deref() != Some(a))
            || name.is_some_and(|n| found.name.as_deref() != Some(n));
        if differs {
            tracing::warn!(
                "adopting an import that routes elsewhere; bringing it to the database's assistant"
            );
        }
        // One PATCH: the token always, the assistant and name where they differ.
        let (assistant, name) = if differs && assistant.is_some() {
            (assistant, name)
        } else {
            (None, None)
        };
        if let Err(e) = deadline
            .run(
                "vapi",
                self.vapi
                    .patch_number_token(&found.id, &sub.sid, &sub.auth_token, assistant, name),
            )
            .await
        {
            return Err(Progress::Pending("vapi", e));
        }
        tracing::info!("adopting the import found at Vapi");
        Ok(found.id)
    }

    /// Before a purchase that was imported (or whose import may have landed) is
    /// handed to the release protocol: its Vapi number, if Vapi has one, so the
    /// release deletes it too. `Err` when Vapi cannot tell.
    pub(super) async fn find_late_import(
        &self,
        claim: &PurchaseClaim,
        deadline: Deadline,
    ) -> Result<Option<String>, ProviderError> {
        let Some(sub) = &claim.subaccount else {
            return Ok(None);
        };
        Ok(self
            .find_import(&claim.number, sub, claim.started_at, deadline)
            .await?
            .map(|f| f.id))
    }

    /// The purchase's import at Vapi, if Vapi has one: by number and subaccount,
    /// among those created since the purchase began (less five minutes of clock
    /// skew: nothing of this purchase can exist from before).
    async fn find_import(
        &self,
        number: &E164,
        sub: &AccountSid,
        started_at: chrono::DateTime<chrono::Utc>,
        deadline: Deadline,
    ) -> Result<Option<FoundNumber>, ProviderError> {
        let since = started_at - chrono::Duration::minutes(5);
        deadline
            .run("vapi", self.vapi.find_phone_number(number, sub, since))
            .await
    }

    /// At giving up, the last word on a purchase that was attempted but never
    /// seen: looked up once more, long after the attempt.
    pub(super) async fn find_late_purchase(
        &self,
        claim: &PurchaseClaim,
        deadline: Deadline,
    ) -> Result<Option<PhoneNumberSid>, ProviderError> {
        let Some(sub) = &claim.subaccount else {
            return Ok(None);
        };
        deadline
            .run("twilio", self.twilio.find_bought(sub, &claim.number))
            .await
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
