//! What counts as drift between Twilio, Vapi and the database, for one subaccount:
//! a pure comparison (no I/O), so every rule is tested on its own. What to do about
//! each finding is in the [`Action`] it carries; the audit ([`super`]) confirms,
//! repairs and records.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::twilio::{HeldNumber, ListedAccount};
use crate::vapi::VapiNumber;

/// A kind of drift, with its stable code (the `carrier_findings.kind` CHECK lists
/// the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DriftKind {
    /// Twilio holds (and bills) a number under an org's subaccount that no live
    /// row has.
    BilledUnknown,
    /// A Vapi number imported with one of our subaccounts that no live row has.
    VapiOrphan,
    /// An active number whose confirmed assistant is not the one Vapi routes to.
    AssistantMismatch,
    /// An active number whose Vapi phone number is gone: calls go nowhere.
    VapiMissing,
    /// A number not released here that Twilio no longer holds.
    CarrierMissing,
    /// Twilio sends an active number's calls somewhere other than Vapi.
    VoiceUrlMismatch,
    /// A subaccount named after no org (or not the org's own), or an org's
    /// subaccount Twilio says is closed or does not have.
    SubaccountOrphan,
    /// An active number's Vapi import holds a Twilio token that is not its
    /// subaccount's current one (rotated elsewhere): its calls fail.
    TokenMismatch,
}

impl DriftKind {
    pub const ALL: [DriftKind; 8] = [
        Self::BilledUnknown,
        Self::VapiOrphan,
        Self::AssistantMismatch,
        Self::VapiMissing,
        Self::CarrierMissing,
        Self::VoiceUrlMismatch,
        Self::SubaccountOrphan,
        Self::TokenMismatch,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::BilledUnknown => "billed_unknown",
            Self::VapiOrphan => "vapi_orphan",
            Self::AssistantMismatch => "assistant_mismatch",
            Self::VapiMissing => "vapi_missing",
            Self::CarrierMissing => "carrier_missing",
            Self::VoiceUrlMismatch => "voice_url_mismatch",
            Self::SubaccountOrphan => "subaccount_orphan",
            Self::TokenMismatch => "token_mismatch",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Findings of this kind are about a number Twilio bills while it does not
    /// route as the database says: their price counts as money at risk. (A
    /// subaccount orphan's numbers are priced by their own `billed_unknown`.)
    pub fn bills(self) -> bool {
        matches!(
            self,
            Self::BilledUnknown | Self::VapiMissing | Self::VoiceUrlMismatch
        )
    }
}

/// A live (not released) managed-number row, as the audit reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub phone_number: String,
    pub status: String,
    pub twilio_phone_sid: Option<String>,
    pub subaccount_sid: Option<String>,
    pub vapi_phone_id: Option<String>,
    pub assistant_id: Option<String>,
    pub assistant_pending: bool,
    /// Reconcile gave the pending change up (`route_gave_up_at`).
    pub route_gave_up: bool,
    /// The fingerprint of the token this service last gave its Vapi import.
    pub twilio_token_fp: Option<String>,
    /// A request, reconcile or another flow holds it right now.
    pub claimed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One subaccount and everything the three sources say about it.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub subaccount: &'a str,
    /// The org its name (`org:<uuid>`) or the database ties it to.
    pub org: Option<Uuid>,
    /// Whether that org exists, and the subaccount the database records for it.
    pub org_exists: bool,
    pub org_recorded_subaccount: Option<&'a str>,
    /// The org is being offboarded (the job holds it: nothing is repaired).
    pub org_offboarding: bool,
    /// The org was offboarded: its subaccount is closed on purpose.
    pub org_offboarded: bool,
    /// `None`: Twilio's list does not have it.
    pub account: Option<&'a ListedAccount>,
    /// Its numbers, when they were read (active or suspended accounts).
    pub held: Option<&'a [HeldNumber]>,
    /// Vapi numbers imported with this subaccount.
    pub vapi: &'a [&'a VapiNumber],
    /// Every Vapi number, by id.
    pub vapi_by_id: &'a HashMap<&'a str, &'a VapiNumber>,
    /// Whether Vapi's list was read to its end (else nothing is "missing" there).
    pub vapi_complete: bool,
    /// Live rows of the org, of this subaccount, and of these numbers and ids.
    pub rows: &'a [LiveRow],
    /// The org has an open token rotation (its numbers may rightly hold a
    /// secondary, or be on their way to the new token).
    pub org_rotating: bool,
    /// The fingerprint of the token the org's slot holds, when the slot is this
    /// subaccount's (managed) and recorded one (the Vapi credential mirrors it).
    pub slot_token_fp: Option<&'a str>,
    /// Fingerprints of the subaccount's current token and of the tokens Vapi's
    /// numbers report; `None` when not known (no key, or not reported).
    pub tokens: &'a TokenFingerprints,
}

/// Token fingerprints the audit compares (never the tokens).
#[derive(Debug, Clone, Default)]
pub struct TokenFingerprints {
    /// The subaccount's current token, from Twilio's account list.
    pub account: Option<String>,
    /// What Vapi's numbers report they hold, by Vapi id (when Vapi returns it).
    pub vapi: HashMap<String, String>,
}

/// When the sources were read, and what is too fresh to be drift.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: DateTime<Utc>,
    /// Longer than any claim: a purchase or import younger than this may still be
    /// finishing.
    pub grace: Duration,
    /// When Vapi's list was read: a row changed since may differ from it rightly.
    pub vapi_read_at: DateTime<Utc>,
}

impl Clock {
    fn fresh(&self, at: Option<DateTime<Utc>>) -> bool {
        at.is_some_and(|t| t > self.now - self.grace)
    }
}

/// What the audit does about a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Record it; nothing is safe to repair.
    Flag,
    /// A number this service bought: record it `release_pending` so the release
    /// protocol releases it (and deletes its Vapi import, if any).
    RecordRelease {
        org: Uuid,
        number_sid: String,
        operation_id: Uuid,
        vapi_phone_id: Option<String>,
    },
    /// Delete it at Vapi (the release protocol's Vapi step).
    DeleteAtVapi { id: String },
    /// Record the database's assistant as a pending change, which reconcile sends.
    ResendAssistant { row: Uuid, assistant: String },
    /// Flag only once Vapi's own 404 confirms it.
    ConfirmVapiMissing { id: String },
    /// Flag only once Twilio's 20404 on a direct read, confirmed, says so.
    ConfirmCarrierMissing { number_sid: String },
    /// Open an `adopt` token rotation for the org (reconcile brings the current
    /// token to its Vapi credential and numbers), this number's recorded token
    /// forgotten first so the job PATCHes it whatever the row said.
    AdoptToken {
        org: Uuid,
        vapi_phone_id: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub kind: DriftKind,
    pub org: Option<Uuid>,
    pub subject: String,
    pub phone_number: Option<String>,
    pub detail: Value,
    pub action: Action,
}

/// What one subaccount's comparison found, and what it left alone this time
/// (claimed or fresh: an open finding about it stays open).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub candidates: Vec<Candidate>,
    pub skipped: Vec<String>,
}

/// `purchase <uuid>`: the `FriendlyName` every purchase of this service writes.
pub fn purchase_operation(friendly_name: Option<&str>) -> Option<Uuid> {
    friendly_name?
        .strip_prefix("purchase ")
        .and_then(|id| Uuid::parse_str(id).ok())
}

fn same_assistant(a: Option<&str>, b: Option<&str>) -> bool {
    a.map(str::to_ascii_lowercase) == b.map(str::to_ascii_lowercase)
}

/// The batch's rows, indexed for one subaccount's comparison.
struct Rows<'a> {
    by_number: HashMap<&'a str, Vec<&'a LiveRow>>,
    vapi_ids: HashSet<&'a str>,
}

impl<'a> Rows<'a> {
    fn new(rows: &'a [LiveRow]) -> Self {
        let mut by_number: HashMap<&str, Vec<&LiveRow>> = HashMap::new();
        let mut vapi_ids = HashSet::new();
        for r in rows {
            by_number
                .entry(r.phone_number.as_str())
                .or_default()
                .push(r);
            if let Some(id) = &r.vapi_phone_id {
                vapi_ids.insert(id.as_str());
            }
        }
        Self {
            by_number,
            vapi_ids,
        }
    }

    fn of(&self, number: &str) -> &[&'a LiveRow] {
        self.by_number.get(number).map_or(&[], Vec::as_slice)
    }

    fn claimed(&self, number: &str) -> bool {
        self.of(number).iter().any(|r| r.claimed)
    }
}

/// Only what was bought or made for the org, under the subaccount it records, and
/// never while it is being offboarded (that job holds the org): elsewhere the
/// audit flags and never repairs.
fn repairable(scope: &Scope<'_>) -> bool {
    scope.org_exists && !scope.org_offboarding
}

/// Compare one subaccount. `voice_url` is what Vapi sets an imported number's
/// voice URL to (a prefix match).
pub fn compare(scope: &Scope<'_>, clock: &Clock, voice_url: &str) -> Comparison {
    let mut out = Comparison::default();
    subaccount_drift(scope, clock, &mut out);
    slot_token_drift(scope, &mut out);
    let rows = Rows::new(scope.rows);
    let mut imports: HashMap<&str, Vec<&VapiNumber>> = HashMap::new();
    for v in scope.vapi {
        imports.entry(v.number.as_str()).or_default().push(v);
    }
    // Imports a recorded release takes with it, and numbers flagged only (their
    // imports are not ours to delete either).
    let mut attached: HashSet<&str> = HashSet::new();
    let mut flagged: HashSet<&str> = HashSet::new();

    // Twilio's numbers against the rows.
    for t in scope.held.unwrap_or_default() {
        if rows.claimed(&t.phone_number) {
            out.skipped.push(t.phone_number.clone());
            continue;
        }
        match rows.of(&t.phone_number).first() {
            None if clock.fresh(t.date_created) => out.skipped.push(t.phone_number.clone()),
            None => {
                let import = imports
                    .get(t.phone_number.as_str())
                    .and_then(|vs| vs.iter().find(|v| !rows.vapi_ids.contains(v.id.as_str())));
                let operation = purchase_operation(t.friendly_name.as_deref());
                // What a release row must hold; anything else is flagged only.
                let well_formed = t.phone_number.parse::<crate::ids::E164>().is_ok()
                    && t.sid.parse::<crate::ids::PhoneNumberSid>().is_ok();
                let action = match (operation, scope.org) {
                    (Some(operation_id), Some(org)) if repairable(scope) && well_formed => {
                        if let Some(v) = import {
                            attached.insert(&v.id);
                        }
                        Action::RecordRelease {
                            org,
                            number_sid: t.sid.clone(),
                            operation_id,
                            vapi_phone_id: import.map(|v| v.id.clone()),
                        }
                    }
                    // Bought by hand (or under no org): never release what we did not buy.
                    _ => {
                        flagged.insert(&t.phone_number);
                        Action::Flag
                    }
                };
                out.candidates.push(Candidate {
                    kind: DriftKind::BilledUnknown,
                    org: scope.org,
                    subject: t.phone_number.clone(),
                    phone_number: well_formed.then(|| t.phone_number.clone()),
                    detail: json!({
                        "numberSid": t.sid,
                        "friendlyName": t.friendly_name,
                        "purchaseName": operation.is_some(),
                        "dateCreated": t.date_created,
                    }),
                    action,
                });
            }
            Some(r) if r.status == "active" && r.vapi_phone_id.is_some() => {
                let url = t.voice_url.as_deref().unwrap_or_default();
                if url.starts_with(voice_url) {
                } else if clock.fresh(Some(r.updated_at)) {
                    out.skipped.push(t.phone_number.clone());
                } else {
                    out.candidates.push(Candidate {
                        kind: DriftKind::VoiceUrlMismatch,
                        org: Some(r.org_id),
                        subject: t.phone_number.clone(),
                        phone_number: Some(t.phone_number.clone()),
                        detail: json!({
                            "numberSid": t.sid,
                            "voiceUrl": redact_url(url),
                            "expected": voice_url,
                        }),
                        action: Action::Flag,
                    });
                }
            }
            Some(_) => {}
        }
    }

    let held_sids: HashSet<&str> = scope
        .held
        .unwrap_or_default()
        .iter()
        .flat_map(|t| [t.sid.as_str(), t.phone_number.as_str()])
        .collect();
    for r in scope.rows {
        if r.subaccount_sid.as_deref() != Some(scope.subaccount) {
            continue;
        }
        if r.claimed {
            out.skipped.push(r.phone_number.clone());
            continue;
        }
        carrier_drift(scope, clock, r, &held_sids, &mut out);
        vapi_drift(scope, clock, r, &mut out);
        token_drift(scope, clock, r, &mut out);
    }

    // Vapi's numbers of this subaccount that no row has.
    for v in scope.vapi {
        let held_by_row = rows.vapi_ids.contains(v.id.as_str())
            // A purchase of this org under this subaccount that has not recorded its
            // import may adopt this one (another org's row of the same E.164 never
            // does: it looks for its own subaccount's import).
            || rows.of(&v.number).iter().any(|r| {
                r.vapi_phone_id.is_none()
                    && Some(r.org_id) == scope.org
                    && r.subaccount_sid.as_deref().is_none_or(|s| s == scope.subaccount)
            });
        if held_by_row || attached.contains(v.id.as_str()) {
            continue;
        }
        if rows.claimed(&v.number) || clock.fresh(v.created_at) || v.created_at.is_none() {
            out.skipped.push(v.id.clone());
            continue;
        }
        // Deleted only when made with the subaccount the org records, and not the
        // import of a number flagged only (bought by hand, or by another stack).
        let ours = repairable(scope)
            && scope.org_recorded_subaccount == Some(scope.subaccount)
            && !flagged.contains(v.number.as_str());
        out.candidates.push(Candidate {
            kind: DriftKind::VapiOrphan,
            org: scope.org,
            subject: v.id.clone(),
            phone_number: v
                .number
                .parse::<crate::ids::E164>()
                .ok()
                .map(|n| n.as_str().to_owned()),
            detail: json!({ "number": v.number, "assistantId": v.assistant_id }),
            action: if ours {
                Action::DeleteAtVapi { id: v.id.clone() }
            } else {
                Action::Flag
            },
        });
    }
    out
}

/// A URL as a finding keeps it: scheme, host and path, never user info or a
/// query (a voice URL set by hand may carry credentials).
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.path()
        ),
        Err(_) if url.is_empty() => String::new(),
        Err(_) => "(not a URL)".into(),
    }
}

fn subaccount_drift(scope: &Scope<'_>, clock: &Clock, out: &mut Comparison) {
    // A purchase creates the subaccount before it records it on the org.
    if scope.account.is_some_and(|a| clock.fresh(a.date_created)) {
        out.skipped.push(scope.subaccount.to_owned());
        return;
    }
    let status = scope.account.map(|a| a.status.as_str());
    let reason = match (scope.org_exists, status) {
        (false, Some(s)) if s != "closed" => Some("no org has this subaccount's id"),
        (true, Some(s))
            if s != "closed" && scope.org_recorded_subaccount != Some(scope.subaccount) =>
        {
            Some("named after an org that records another subaccount")
        }
        (true, None) if scope.org_recorded_subaccount == Some(scope.subaccount) => {
            Some("the org's subaccount is missing at Twilio")
        }
        (true, Some("closed"))
            if scope.org_recorded_subaccount == Some(scope.subaccount)
                && !scope.org_offboarding
                && !scope.org_offboarded =>
        {
            Some("the org's subaccount is closed at Twilio")
        }
        _ => None,
    };
    if let Some(reason) = reason {
        out.candidates.push(Candidate {
            kind: DriftKind::SubaccountOrphan,
            org: scope.org.filter(|_| scope.org_exists),
            subject: scope.subaccount.to_owned(),
            phone_number: None,
            detail: json!({
                "reason": reason,
                "status": status,
                "friendlyName": scope.account.and_then(|a| a.friendly_name.clone()),
                "numbers": scope.held.map(<[HeldNumber]>::len),
            }),
            action: Action::Flag,
        });
    }
}

/// An active row whose Vapi import holds another token than the subaccount's
/// current one. What Vapi holds is what its answer reports when it carries the
/// token, else what this service last sent (the row's fingerprint); a row with
/// neither is not compared (imported before fingerprints were kept, and Vapi not
/// saying). While the org's token is being rotated nothing is compared.
fn token_drift(scope: &Scope<'_>, clock: &Clock, r: &LiveRow, out: &mut Comparison) {
    let Some(current) = scope.tokens.account.as_deref() else {
        return;
    };
    let Some(id) = r.vapi_phone_id.as_deref() else {
        return;
    };
    if r.status != "active" || !scope.vapi_by_id.contains_key(id) {
        return;
    }
    if scope.org_rotating || clock.fresh(Some(r.updated_at)) {
        out.skipped.push(r.phone_number.clone());
        return;
    }
    let (held, compared) = match scope.tokens.vapi.get(id) {
        Some(fp) => (Some(fp.as_str()), "vapi"),
        None => (r.twilio_token_fp.as_deref(), "recorded"),
    };
    if held.is_none_or(|h| h == current) {
        return;
    }
    // Only the subaccount the org records, whose slot the adopt job re-seals.
    let ours = repairable(scope) && scope.org_recorded_subaccount == Some(scope.subaccount);
    out.candidates.push(Candidate {
        kind: DriftKind::TokenMismatch,
        org: Some(r.org_id),
        subject: r.phone_number.clone(),
        phone_number: Some(r.phone_number.clone()),
        detail: json!({ "vapiPhoneId": id, "compared": compared }),
        action: if ours {
            Action::AdoptToken {
                org: r.org_id,
                vapi_phone_id: Some(id.to_owned()),
            }
        } else {
            Action::Flag
        },
    });
}

/// The org's slot (and the Vapi credential mirroring it) holds another token than
/// the subaccount's current one: rotated elsewhere, with or without numbers. Not
/// while the org rotates (its slot is sealed again at the job's end).
fn slot_token_drift(scope: &Scope<'_>, out: &mut Comparison) {
    let (Some(current), Some(slot), Some(org)) = (
        scope.tokens.account.as_deref(),
        scope.slot_token_fp,
        scope.org,
    ) else {
        return;
    };
    if slot == current || !repairable(scope) {
        return;
    }
    if scope.org_rotating {
        out.skipped.push(scope.subaccount.to_owned());
        return;
    }
    out.candidates.push(Candidate {
        kind: DriftKind::TokenMismatch,
        org: Some(org),
        subject: scope.subaccount.to_owned(),
        phone_number: None,
        detail: json!({ "compared": "slot" }),
        action: Action::AdoptToken {
            org,
            vapi_phone_id: None,
        },
    });
}

/// A row Twilio no longer lists (or whose subaccount it closed or lost).
fn carrier_drift(
    scope: &Scope<'_>,
    clock: &Clock,
    r: &LiveRow,
    held: &HashSet<&str>,
    out: &mut Comparison,
) {
    if !matches!(r.status.as_str(), "active" | "needs_attention") {
        return;
    }
    let Some(number_sid) = &r.twilio_phone_sid else {
        return;
    };
    let listed = match scope.held {
        Some(_) => held.contains(number_sid.as_str()) || held.contains(r.phone_number.as_str()),
        // Closed or missing: Twilio's list was not read; a direct read decides.
        None => scope.account.is_some_and(|a| a.status == "suspended"),
    };
    if listed {
        return;
    }
    if clock.fresh(Some(r.created_at)) {
        out.skipped.push(r.phone_number.clone());
        return;
    }
    out.candidates.push(Candidate {
        kind: DriftKind::CarrierMissing,
        org: Some(r.org_id),
        subject: r.phone_number.clone(),
        phone_number: Some(r.phone_number.clone()),
        detail: json!({ "numberSid": number_sid, "status": r.status }),
        action: Action::ConfirmCarrierMissing {
            number_sid: number_sid.clone(),
        },
    });
}

/// An active row's Vapi number: gone, or routing to another assistant.
fn vapi_drift(scope: &Scope<'_>, clock: &Clock, r: &LiveRow, out: &mut Comparison) {
    let Some(id) = &r.vapi_phone_id else { return };
    if r.status != "active" {
        return;
    }
    // Changed since Vapi's list was read (or too recently): the list may be behind.
    if r.updated_at >= clock.vapi_read_at || clock.fresh(Some(r.updated_at)) {
        out.skipped.push(r.phone_number.clone());
        return;
    }
    match scope.vapi_by_id.get(id.as_str()) {
        Some(v) if !same_assistant(v.assistant_id.as_deref(), r.assistant_id.as_deref()) => {
            let action = match (&r.assistant_id, r.assistant_pending, r.route_gave_up) {
                // A change reconcile is still sending: not drift yet, but an open
                // finding about it stays open.
                (_, true, false) => {
                    out.skipped.push(r.phone_number.clone());
                    return;
                }
                // Reconcile gave up and Vapi still routes elsewhere: keep it open.
                (_, true, true) => Action::Flag,
                (Some(a), false, _) if repairable(scope) => Action::ResendAssistant {
                    row: r.id,
                    assistant: a.clone(),
                },
                // Nothing to send (Vapi's PATCH takes an assistant), or the org is
                // being offboarded.
                _ => Action::Flag,
            };
            out.candidates.push(Candidate {
                kind: DriftKind::AssistantMismatch,
                org: Some(r.org_id),
                subject: r.phone_number.clone(),
                phone_number: Some(r.phone_number.clone()),
                detail: json!({
                    "vapiPhoneId": id,
                    "assistantId": r.assistant_id,
                    "vapiAssistantId": v.assistant_id,
                }),
                action,
            });
        }
        Some(_) => {}
        None if scope.vapi_complete => out.candidates.push(Candidate {
            kind: DriftKind::VapiMissing,
            org: Some(r.org_id),
            subject: r.phone_number.clone(),
            phone_number: Some(r.phone_number.clone()),
            detail: json!({ "vapiPhoneId": id }),
            action: Action::ConfirmVapiMissing { id: id.clone() },
        }),
        None => out.skipped.push(r.phone_number.clone()),
    }
}

#[cfg(test)]
mod tests;
