//! The purchase's provider steps (step 2 of [`super`]): the subaccount, the
//! purchase at Twilio, the import into Vapi, the org's slot. Each looks before it
//! creates when an earlier attempt may have created the thing already.

use super::record::{self, PurchaseClaim, Stamp};
use super::{Progress, PurchaseError, Purchaser, subaccount_name};
use crate::credential::{SaveError, TwilioCredential};
use crate::db::DbError;
use crate::identity::Caller;
use crate::ids::{AssistantId, CredentialSource, NumberName, PhoneNumberSid};
use crate::providers::ProviderError;
use crate::steps::Deadline;
use crate::twilio::Subaccount;
use crate::vapi::NumberImport;

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
        // before anything is bought, whether Vapi knows the assistant.
        let (sub, assistant) = tokio::join!(self.subaccount(claim, deadline), async {
            match claim.number_sid {
                None => self.check_assistant(claim, deadline).await,
                Some(_) => None,
            }
        });
        let sub = match sub {
            Ok(sub) => sub,
            Err(e) => return Ok((Progress::Pending("subaccount", e), None)),
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

        if claim.number_sid.is_none() {
            if let Some(refused) = assistant {
                return Ok((refused, Some(sub)));
            }
            let pn = match self.buy_on(claim, &sub, deadline).await? {
                Ok(pn) => pn,
                Err(progress) => return Ok((progress, Some(sub))),
            };
            if !record::stamp(self.db, claim, Stamp::Bought(&pn)).await? {
                return Ok((Progress::Lost, Some(sub)));
            }
            claim.number_sid = Some(pn);
        }

        if claim.vapi_phone_id.is_none() {
            let id = match self.import(claim, &sub, deadline).await? {
                Ok(id) => id,
                Err(progress) => return Ok((progress, Some(sub))),
            };
            if !record::stamp(self.db, claim, Stamp::Imported(&id)).await? {
                return Ok((Progress::Lost, Some(sub)));
            }
            claim.vapi_phone_id = Some(id);
        }
        Ok((Progress::Done, Some(sub)))
    }

    /// An assistant Vapi does not know would make it refuse the import after the
    /// number was bought: checked before buying.
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
    pub(super) async fn fill_slot(
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

    /// Buy exactly the number on the subaccount. Once a purchase was attempted
    /// (stamped before the POST), its outcome is looked up first and adopted; a
    /// later "not available" (21422) may be our own purchase landing late, so it
    /// never closes such an intent: it stays pending and is looked up again.
    async fn buy_on(
        &self,
        claim: &PurchaseClaim,
        sub: &Subaccount,
        deadline: Deadline,
    ) -> Result<Result<PhoneNumberSid, Progress>, DbError> {
        let find = || deadline.run("twilio", self.twilio.find_bought(&sub.sid, &claim.number));
        if claim.buy_attempted {
            match find().await {
                Ok(Some(pn)) => return Ok(Ok(pn)),
                Ok(None) => {}
                Err(e) => return Ok(Err(Progress::Pending("twilio", e))),
            }
        } else if !record::stamp(self.db, claim, Stamp::BuyAttempt).await? {
            return Ok(Err(Progress::Lost));
        }
        let friendly = format!("purchase {}", claim.operation_id);
        Ok(
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
                Err(e) if claim.buy_attempted && e.provider_code() == Some(21422) => {
                    tracing::warn!(
                        "not available after an earlier attempt: it may be ours; looking again later"
                    );
                    Err(Progress::Pending("twilio", e))
                }
                Err(e) => Err(classify_twilio_refusal(e)),
            },
        )
    }

    /// Import into Vapi with the subaccount's credentials. Once an import was
    /// attempted (stamped before the POST), it is looked up first and adopted.
    async fn import(
        &self,
        claim: &PurchaseClaim,
        sub: &Subaccount,
        deadline: Deadline,
    ) -> Result<Result<String, Progress>, DbError> {
        let since = claim.started_at - chrono::Duration::minutes(5);
        let find = || deadline.run("vapi", self.vapi.find_phone_number(&claim.number, since));
        if claim.import_attempted {
            match find().await {
                Ok(Some(id)) => return Ok(Ok(id)),
                Ok(None) => {}
                Err(e) => return Ok(Err(Progress::Pending("vapi", e))),
            }
        } else if !record::stamp(self.db, claim, Stamp::ImportAttempt).await? {
            return Ok(Err(Progress::Lost));
        }
        let import = NumberImport {
            number: &claim.number,
            subaccount: &sub.sid,
            auth_token: &sub.auth_token,
            name: claim.name.as_ref().map(NumberName::as_str),
            assistant_id: claim.assistant.as_ref().map(AssistantId::as_str),
        };
        Ok(
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
            },
        )
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
