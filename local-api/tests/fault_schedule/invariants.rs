//! What must hold: per answer (I4, I5, R3) and over the final state once
//! reconcile ran to quiescence (I1–I3, V1, O1, D1, R1), as DESIGN.md's "The
//! invariants" and "Ending things" state them.
//!
//! - **I1** every number Twilio holds under an org's subaccount has that org's
//!   database row in `provisioning`, `active`, `release_pending` or
//!   `needs_attention` — never none, never `released` (and never the row of another
//!   purchase: its `twilio_phone_sid`, once known, is that number's).
//! - **I2** every Vapi number has exactly one row with its `vapi_phone_id`, a row
//!   that is not `released`; no E.164 has two Vapi numbers.
//! - **I3** for every `active` number the confirmed assistant — the routing row's
//!   `vapi_assistant_id`, and `assistant_id` unless `assistant_pending` — is the one
//!   Vapi routes the number to, and status (list-numbers) shows it; otherwise status
//!   shows the change pending (`assistantPending`).
//! - **I4** no caller action is answered 5xx (nor does a reconcile run fail), but
//!   503 with a provider's stable code when a provider the request needed was down
//!   (DESIGN: no 5xx for caller *input*; a provider outage is "try again").
//! - **I5** every answer was true when given, held against the stand-ins at the
//!   answer (a call on its own) or at some moment while it ran (calls at once: the
//!   stand-ins' journal): `201`/`200 active` with assistant X — Twilio holds the
//!   number under the org's subaccount and Vapi routes it to X, the X asked for;
//!   "nothing was bought" — Twilio holds no such number under the org's
//!   subaccounts; a `200` change to X — Vapi routes to X; a refused change
//!   ("routes as before") — Vapi routes to the confirmed one (or to an earlier
//!   change shown pending); `200 released` — neither provider
//!   holds it; a synced save — Vapi holds that credential for that account; and,
//!   for a call on its own, what the answer says of the row (provisioning, pending,
//!   no longer routing).
//! - **V1** (DESIGN "Vapi sync") an org never has two Vapi credentials.
//! - **A1** (`run.rs`) on a state reconcile left quiet, the carrier audit finds
//!   only drift made by hand (and the service's own given-up changes).
//! - **O1** an offboarded org: Twilio holds none of its numbers, its subaccounts
//!   are closed, Vapi holds none of its numbers nor its credential, and none of
//!   its token rotations is left open (offboarding cancels them).
//! - **D1** a disconnect answered 200: the org has no slot and Vapi no credential
//!   named after it (right after, and at the end); refused (409) or failed at
//!   Vapi (503): the slot as it was (and, refused, Vapi's credentials too).
//! - **R1** (DESIGN "Ending things", issue 23) an org with a managed slot and no
//!   open or given-up token rotation — a done one, or none — has its Vapi
//!   credential and every Vapi number of its subaccount holding the subaccount's
//!   primary token (a token rotated in the console included: a purchase's
//!   read-back or the audit's `token_mismatch` opens an `adopt` job); status shows
//!   the latest job as the table has it.
//! - **R2** (`run.rs`) no flow called Vapi with a token already retired
//!   (`deadTokenCalls`), but after a console rotation of that account.
//! - **R3** a rotation's `200 rotated` was true when given: promoted (a `rotate`),
//!   the credential updated, no number pending, and the org's credential and
//!   every Vapi number of the account held the primary at the answer (or at some
//!   moment while it ran, beside another call). Console rotations happen only
//!   between calls, so none strikes while a request runs.
//! - **R4** (`run.rs`, DESIGN: "a token rotation reaches the Vapi credential and
//!   every Vapi number before the new token is promoted (both work until then)")
//!   at no moment of the stand-ins' journal did a Vapi credential or a number of
//!   the service's hold a token Twilio had retired, but after a console rotation.
//! - **R5** (`run.rs`) with healthy providers reconcile finishes every rotation
//!   (or has given it up for a person, or it ended cancelled).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;
use uuid::Uuid;

use super::schedule::{Act, BYOC_ACCOUNTS, NUMBERS};
use super::world::{Answer, NumberRow};

/// What the providers hold, read from the stand-ins' holdings.
#[derive(Debug, Default, Clone)]
pub struct Held {
    /// Subaccount SID → friendly name.
    pub subaccounts: BTreeMap<String, String>,
    pub twilio: Vec<TwilioNumber>,
    pub vapi: Vec<VapiNumber>,
    pub credentials: Vec<VapiCredential>,
    /// Subaccounts Twilio closed.
    pub closed: Vec<String>,
    /// Every Vapi call so far that carried a Twilio token already retired for its
    /// account (`deadTokenCalls`).
    pub dead_calls: Vec<DeadCall>,
}

/// A Vapi credential (`number` none) or number not holding its account's primary
/// token.
#[derive(Debug, Clone)]
pub struct NotPrimary {
    /// For known-bug classifiers (`known.rs`), none open now.
    #[allow(dead_code)]
    pub number: Option<String>,
    pub text: String,
}

/// A Vapi call that carried a dead Twilio token (the stand-ins' record).
#[derive(Debug, Clone)]
pub struct DeadCall {
    pub endpoint: String,
    pub method: String,
    pub account: String,
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

impl fmt::Display for DeadCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} for {} at {}",
            self.method,
            self.endpoint,
            self.account,
            self.at.map_or("?".to_owned(), |t| t.to_rfc3339())
        )
    }
}

#[derive(Debug, Clone)]
pub struct TwilioNumber {
    pub sid: String,
    pub account: String,
    pub number: String,
}

#[derive(Debug, Clone)]
pub struct VapiNumber {
    pub id: String,
    pub number: String,
    pub account: String,
    pub assistant: Option<String>,
    /// What the Twilio token Vapi holds for it is at Twilio (`primary`,
    /// `secondary`, `retired`, `unknown`; `None`: no token).
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct VapiCredential {
    pub id: String,
    pub name: String,
    pub account: String,
    /// As [`VapiNumber::token`].
    pub token: Option<String>,
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

impl Held {
    pub fn parse(v: &Value) -> Self {
        let values = |key: &str| -> Vec<(String, Value)> {
            v[key]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        Self {
            subaccounts: values("twilio_subaccounts")
                .into_iter()
                .map(|(sid, a)| (sid, text(&a, "friendly_name")))
                .collect(),
            twilio: values("twilio_numbers")
                .into_iter()
                .map(|(_, n)| TwilioNumber {
                    sid: text(&n, "sid"),
                    account: text(&n, "account_sid"),
                    number: text(&n, "phone_number"),
                })
                .collect(),
            vapi: values("vapi_phone_numbers")
                .into_iter()
                .map(|(id, n)| VapiNumber {
                    id,
                    number: text(&n, "number"),
                    account: text(&n, "twilioAccountSid"),
                    assistant: n["assistantId"].as_str().map(str::to_owned),
                    token: n["twilioToken"].as_str().map(str::to_owned),
                })
                .collect(),
            closed: values("twilio_subaccounts")
                .into_iter()
                .filter(|(_, a)| a["status"] == "closed")
                .map(|(sid, _)| sid)
                .collect(),
            credentials: values("credentials")
                .into_iter()
                .map(|(id, c)| VapiCredential {
                    id,
                    name: text(&c, "name"),
                    account: text(&c, "accountSid"),
                    token: c["twilioToken"].as_str().map(str::to_owned),
                })
                .collect(),
            dead_calls: v["deadTokenCalls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| DeadCall {
                    endpoint: text(c, "endpoint"),
                    method: text(c, "method"),
                    account: text(c, "accountSid"),
                    at: c["at"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&chrono::Utc)),
                })
                .collect(),
        }
    }

    /// The Vapi credential named after the org and every Vapi number of
    /// `account` whose Twilio token is not the account's primary.
    pub fn not_primary(&self, org: Uuid, account: &str) -> Vec<NotPrimary> {
        let name = format!("org-{org}");
        let token = |t: &Option<String>| t.clone().unwrap_or_else(|| "none".to_owned());
        let credentials = self
            .credentials
            .iter()
            .filter(|c| c.name == name && c.account == account)
            .filter(|c| c.token.as_deref() != Some("primary"))
            .map(|c| NotPrimary {
                number: None,
                text: format!("credential {} holds {}", c.id, token(&c.token)),
            });
        let numbers = self
            .vapi
            .iter()
            .filter(|n| n.account == account && n.token.as_deref() != Some("primary"))
            .map(|n| NotPrimary {
                number: Some(n.number.clone()),
                text: format!("number {} ({}) holds {}", n.number, n.id, token(&n.token)),
            });
        credentials.chain(numbers).collect()
    }

    /// The Vapi credentials and numbers of `account` holding a token Twilio
    /// retired.
    pub fn holding_retired(&self, account: &str) -> Vec<NotPrimary> {
        let credentials = self
            .credentials
            .iter()
            .filter(|c| c.account == account && c.token.as_deref() == Some("retired"))
            .map(|c| NotPrimary {
                number: None,
                text: format!("credential {} ({})", c.id, c.name),
            });
        let numbers = self
            .vapi
            .iter()
            .filter(|n| n.account == account && n.token.as_deref() == Some("retired"))
            .map(|n| NotPrimary {
                number: Some(n.number.clone()),
                text: format!("number {} ({})", n.number, n.id),
            });
        credentials.chain(numbers).collect()
    }

    /// The org whose subaccount `account` is (its friendly name `org:<uuid>`).
    pub fn org_of(&self, account: &str) -> Option<Uuid> {
        self.subaccounts
            .get(account)?
            .strip_prefix("org:")?
            .parse()
            .ok()
    }

    fn twilio_of(&self, org: Uuid, number: &str) -> Vec<&TwilioNumber> {
        self.twilio
            .iter()
            .filter(|n| n.number == number && self.org_of(&n.account) == Some(org))
            .collect()
    }

    fn vapi_of(&self, org: Uuid, number: &str) -> Vec<&VapiNumber> {
        self.vapi
            .iter()
            .filter(|n| n.number == number && self.org_of(&n.account) == Some(org))
            .collect()
    }
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for n in &self.twilio {
            writeln!(
                f,
                "    twilio {} {} under {} ({})",
                n.number,
                n.sid,
                n.account,
                self.subaccounts.get(&n.account).map_or("?", String::as_str)
            )?;
        }
        for n in &self.vapi {
            writeln!(
                f,
                "    vapi {} {} account {} assistant {} token {}",
                n.number,
                n.id,
                n.account,
                n.assistant.as_deref().unwrap_or("-"),
                n.token.as_deref().unwrap_or("-")
            )?;
        }
        for c in &self.credentials {
            writeln!(
                f,
                "    vapi credential {} {} account {} token {}",
                c.id,
                c.name,
                c.account,
                c.token.as_deref().unwrap_or("-")
            )?;
        }
        for sub in &self.closed {
            writeln!(f, "    twilio subaccount {sub} closed")?;
        }
        for c in &self.dead_calls {
            writeln!(f, "    dead-token call: {c}")?;
        }
        Ok(())
    }
}

/// A fact about the providers an answer asserts.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Twilio holds the number under one of the org's subaccounts (with this SID).
    TwilioHolds {
        org: Uuid,
        number: String,
        sid: Option<String>,
    },
    /// Twilio holds no such number under any of the org's subaccounts.
    TwilioHoldsNone { org: Uuid, number: String },
    /// Vapi holds the number for the org (with this id), and every such number
    /// routes to `assistant`.
    VapiRoutes {
        org: Uuid,
        number: String,
        id: Option<String>,
        assistant: Option<String>,
    },
    /// Vapi holds no such number with the org's subaccount.
    VapiHoldsNone { org: Uuid, number: String },
    /// Vapi holds this credential, for this account.
    VapiCredential { id: String, account: String },
    /// The org's Vapi credential (if any) and every Vapi number of `account` hold
    /// the account's primary token (R3).
    TokensPrimary { org: Uuid, account: String },
}

impl Claim {
    pub fn holds(&self, h: &Held) -> bool {
        match self {
            Self::TwilioHolds { org, number, sid } => h
                .twilio_of(*org, number)
                .iter()
                .any(|n| sid.as_ref().is_none_or(|s| *s == n.sid)),
            Self::TwilioHoldsNone { org, number } => h.twilio_of(*org, number).is_empty(),
            Self::VapiRoutes {
                org,
                number,
                id,
                assistant,
            } => {
                let found = h.vapi_of(*org, number);
                !found.is_empty()
                    && id
                        .as_ref()
                        .is_none_or(|id| found.iter().any(|n| n.id == *id))
                    && found.iter().all(|n| n.assistant == *assistant)
            }
            Self::VapiHoldsNone { org, number } => h.vapi_of(*org, number).is_empty(),
            Self::VapiCredential { id, account } => h
                .credentials
                .iter()
                .any(|c| c.id == *id && c.account == *account),
            Self::TokensPrimary { org, account } => h.not_primary(*org, account).is_empty(),
        }
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TwilioHolds { number, sid, .. } => write!(
                f,
                "Twilio holds {number} ({}) under the org's subaccount",
                sid.as_deref().unwrap_or("any SID")
            ),
            Self::TwilioHoldsNone { number, .. } => {
                write!(f, "Twilio holds no {number} under the org's subaccounts")
            }
            Self::VapiRoutes {
                number,
                id,
                assistant,
                ..
            } => write!(
                f,
                "Vapi holds {number} ({}) for the org and routes it to {}",
                id.as_deref().unwrap_or("any id"),
                assistant.as_deref().unwrap_or("no assistant")
            ),
            Self::VapiHoldsNone { number, .. } => {
                write!(f, "Vapi holds no {number} with the org's subaccount")
            }
            Self::VapiCredential { id, account } => {
                write!(f, "Vapi holds credential {id} for {account}")
            }
            Self::TokensPrimary { account, .. } => write!(
                f,
                "R3: the org's Vapi credential and every Vapi number of {account} hold its primary token"
            ),
        }
    }
}

/// A fact about the database an answer asserts: checked only for a call on its
/// own, right after its answer (a call beside it may change the row).
#[derive(Debug, Clone)]
pub enum RowClaim {
    /// The org's live row of the number is in one of these states.
    In {
        org: Uuid,
        number: String,
        statuses: &'static [&'static str],
    },
    /// An assistant change not confirmed is shown pending (if the number is active).
    ShownPending { org: Uuid, number: String },
    /// The number no longer routes (no routing row of the org).
    NoRoute { org: Uuid, number: String },
    /// Vapi routes the number as before the request: to the confirmed assistant
    /// (the routing row's), or to an earlier change the row shows pending.
    RoutesAsConfirmed { org: Uuid, number: String },
}

impl RowClaim {
    pub fn holds(&self, rows: &[NumberRow], h: &Held) -> bool {
        let live = |org: &Uuid, number: &str| {
            rows.iter()
                .find(|r| r.org == *org && r.number == number && r.status != "released")
                .cloned()
        };
        match self {
            Self::In {
                org,
                number,
                statuses,
            } => live(org, number).is_some_and(|r| statuses.contains(&r.status.as_str())),
            Self::ShownPending { org, number } => {
                live(org, number).is_none_or(|r| r.status != "active" || r.assistant_pending)
            }
            Self::NoRoute { org, number } => !rows
                .iter()
                .any(|r| r.org == *org && r.number == *number && r.routed),
            Self::RoutesAsConfirmed { org, number } => {
                let Some(row) = live(org, number) else {
                    return false;
                };
                // As before the request: the confirmed assistant, or, while an
                // earlier change is shown pending, possibly that one.
                let pending = row.assistant_pending.then_some(row.assistant);
                let found = h.vapi_of(*org, number);
                !found.is_empty()
                    && found.iter().all(|n| {
                        n.assistant == row.routed_to || Some(&n.assistant) == pending.as_ref()
                    })
            }
        }
    }
}

impl fmt::Display for RowClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::In {
                number, statuses, ..
            } => write!(f, "the org's row of {number} is {}", statuses.join("|")),
            Self::ShownPending { number, .. } => {
                write!(f, "the change of {number} is shown pending")
            }
            Self::NoRoute { number, .. } => write!(f, "{number} no longer routes (no routing row)"),
            Self::RoutesAsConfirmed { number, .. } => write!(
                f,
                "Vapi routes {number} as before the request: to the confirmed assistant (the routing row's), or to a change shown pending"
            ),
        }
    }
}

/// What an answer asserts, and what is wrong with it on its face (I4, or an
/// answer that contradicts its own request).
#[derive(Debug, Default)]
pub struct Asserted {
    pub claims: Vec<Claim>,
    pub row_claims: Vec<RowClaim>,
    pub wrong: Vec<String>,
}

/// The stable codes of a 503 that says a provider the request needed was down.
const DEPENDENCY_DOWN: &[&str] = &[
    "twilio_unavailable",
    "twilio_timeout",
    "twilio_rate_limited",
    "vapi_unavailable",
    "vapi_timeout",
    "vapi_rate_limited",
];

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase()
}

/// What `answer` to `act` (of `orgs`) asserts.
pub fn asserted(act: &Act, answer: &Answer, orgs: &[Uuid]) -> Asserted {
    let mut a = Asserted::default();
    let (status, body) = match answer {
        Answer::Killed => return a,
        Answer::Reconciled(Err(e)) => {
            a.wrong.push(format!("I4: the reconcile run failed: {e}"));
            return a;
        }
        Answer::Reconciled(Ok(r)) => {
            if r.db_errors > 0 {
                a.wrong.push(format!(
                    "I4: the reconcile run met {} database errors",
                    r.db_errors
                ));
            }
            return a;
        }
        Answer::Http { status, body } => (*status, body),
    };
    // A provider the request needed was down or slow (the schedule's faults): 503
    // with the provider's stable code is the honest answer ("try again"), not an
    // error about what the caller sent. Any other 5xx is one — but a disconnect's
    // 503 `vapi_rejected` (Vapi refused to delete the org's own credential; the
    // route documents 503 with Vapi's code, nothing changed: a DELETE with no
    // body carries no caller input Vapi could refuse; seed 1493).
    let provider_down = DEPENDENCY_DOWN.contains(&error_code(body))
        || (matches!(act, Act::Disconnect { .. }) && error_code(body) == "vapi_rejected");
    if status >= 500 && !(status == 503 && provider_down) {
        a.wrong.push(format!("I4: answered {status} {body}"));
        return a;
    }
    if status >= 500 {
        return a;
    }
    let at = |org: usize, number: usize| (orgs[org], NUMBERS[number].to_owned());
    match *act {
        Act::Buy {
            org,
            number,
            assistant,
            ..
        } => {
            let (org, number) = at(org, number);
            let asked = assistant.map(|x| x.id().to_owned());
            let answered = body["assistantId"].as_str().map(str::to_owned);
            match (status, body["status"].as_str()) {
                (200 | 201, Some("active")) => {
                    if asked.is_some() && answered != asked {
                        a.wrong.push(format!(
                            "I5: {status} active names assistant {answered:?}, but the request asked for {asked:?} (a repeat asking for other values must be a 409)"
                        ));
                    }
                    a.claims.push(Claim::TwilioHolds {
                        org,
                        number: number.clone(),
                        sid: body["twilioPhoneSid"].as_str().map(str::to_owned),
                    });
                    if body["assistantPending"] == true {
                        // A later change is unconfirmed: the answer says so.
                        a.row_claims.push(RowClaim::ShownPending { org, number });
                    } else {
                        a.claims.push(Claim::VapiRoutes {
                            org,
                            number,
                            id: body["vapiPhoneId"].as_str().map(str::to_owned),
                            assistant: answered,
                        });
                    }
                }
                (202, Some("provisioning")) => a.row_claims.push(RowClaim::In {
                    org,
                    number,
                    statuses: &["provisioning"],
                }),
                (400..=499, _) => {
                    let m = message(body);
                    if m.contains("nothing was bought") {
                        a.claims.push(Claim::TwilioHoldsNone {
                            org,
                            number: number.clone(),
                        });
                    }
                    if m.contains("was released and is not billed") {
                        a.claims.push(Claim::TwilioHoldsNone {
                            org,
                            number: number.clone(),
                        });
                        a.claims.push(Claim::VapiHoldsNone {
                            org,
                            number: number.clone(),
                        });
                    }
                    if m.contains("is being released") {
                        a.row_claims.push(RowClaim::In {
                            org,
                            number,
                            statuses: &["releasing", "release_pending", "needs_attention"],
                        });
                    }
                }
                _ => a.wrong.push(format!(
                    "an answer the route does not document: {status} {body}"
                )),
            }
        }
        Act::Change {
            org,
            number,
            assistant,
        } => {
            let (org, number) = at(org, number);
            match status {
                200 if body["routed"] == true => {
                    if body["assistantId"] != assistant.id() {
                        a.wrong.push(format!(
                            "I5: 200 names assistant {}, the request asked for {}",
                            body["assistantId"],
                            assistant.id()
                        ));
                    }
                    a.claims.push(Claim::VapiRoutes {
                        org,
                        number,
                        id: None,
                        assistant: Some(assistant.id().to_owned()),
                    });
                }
                200 | 202 => a.row_claims.push(RowClaim::ShownPending { org, number }),
                422 if error_code(body) == "vapi_refused_assistant" => a
                    .row_claims
                    .push(RowClaim::RoutesAsConfirmed { org, number }),
                409 if error_code(body) == "number_not_imported" => {
                    a.claims.push(Claim::VapiHoldsNone { org, number })
                }
                _ => {}
            }
        }
        Act::Release { org, number } => {
            let (org, number) = at(org, number);
            match (status, body["status"].as_str()) {
                (200, Some("released")) => {
                    a.claims.push(Claim::TwilioHoldsNone {
                        org,
                        number: number.clone(),
                    });
                    a.claims.push(Claim::VapiHoldsNone { org, number });
                }
                (200 | 202, Some("release_pending" | "needs_attention")) => {
                    a.row_claims.push(RowClaim::NoRoute { org, number })
                }
                _ => {}
            }
        }
        Act::Save { account, .. } => {
            if status == 200
                && body["vapi"]["synced"] == true
                && let Some(id) = body["vapiCredentialId"].as_str()
            {
                a.claims.push(Claim::VapiCredential {
                    id: id.to_owned(),
                    account: BYOC_ACCOUNTS[account].to_owned(),
                });
            }
        }
        Act::Rotate { org } => match (status, body["status"].as_str()) {
            (200, Some("rotated")) => {
                // An `adopt` job (a token rotated elsewhere, brought to Vapi) that a
                // request found open and finished promotes nothing (seed 20540).
                let promoted = body["promoted"] == true || body["kind"] == "adopt";
                if !promoted || body["credentialUpdated"] != true {
                    a.wrong.push(format!(
                        "R3: 200 rotated, but not promoted or the credential not updated: {body}"
                    ));
                }
                if body["numbers"]["pending"]
                    .as_array()
                    .is_none_or(|p| !p.is_empty())
                {
                    a.wrong.push(format!(
                        "R3: 200 rotated with numbers still pending: {body}"
                    ));
                }
                match body["accountSid"].as_str() {
                    Some(account) => a.claims.push(Claim::TokensPrimary {
                        org: orgs[org],
                        account: account.to_owned(),
                    }),
                    None => a
                        .wrong
                        .push(format!("R3: 200 rotated names no account: {body}")),
                }
            }
            (200, _) => a
                .wrong
                .push(format!("R3: 200 for a rotation that is not done: {body}")),
            (202, Some("rotated")) => a
                .wrong
                .push(format!("R3: 202 for a rotation that is done: {body}")),
            (202, Some("rotating" | "needs_attention" | "cancelled")) => {}
            (404, _) if error_code(body) == "no_credential" => {}
            (409, _) if matches!(error_code(body), "byoc_credential" | "org_offboarding") => {}
            _ => a.wrong.push(format!(
                "an answer the route does not document: {status} {body}"
            )),
        },
        // What a disconnect answered is held against the database (D1), as is
        // what an offboarding answered against the end state (O1).
        Act::Disconnect { .. } => match status {
            200 if body["status"] == "disconnected" => {}
            409 if matches!(
                error_code(body),
                "managed_numbers_remain" | "org_offboarding" | "save_in_progress"
            ) => {}
            _ => a.wrong.push(format!(
                "an answer the route does not document: {status} {body}"
            )),
        },
        Act::Reconcile | Act::Offboard { .. } => {}
    }
    a
}

/// What the database says of an org's credential and token rotations, for R1,
/// O1 and D1.
#[derive(Debug, Clone, Default)]
pub struct OrgState {
    /// The slot's `source` and account SID, if it has one.
    pub slot: Option<(String, String)>,
    /// The slot row and the org's Vapi credential id, as JSON (for "changes
    /// nothing").
    pub slot_json: String,
    /// Each token rotation job: `(kind, state, cancel_reason)`, `state` one of
    /// `open`, `gave_up`, `done`, `cancelled`; oldest first.
    pub rotations: Vec<(String, String, Option<String>)>,
    /// When each of its rotations promoted (the database's clock); for known-bug
    /// classifiers (`known.rs`), none open now.
    #[allow(dead_code)]
    pub promoted: Vec<chrono::DateTime<chrono::Utc>>,
}

impl OrgState {
    fn open_rotation(&self) -> Option<&(String, String, Option<String>)> {
        self.rotations
            .iter()
            .find(|(_, state, _)| state == "open" || state == "gave_up")
    }
}

/// R1 (DESIGN "Ending things", issue 23) for one org once reconcile, the audit and
/// reconcile again ran to quiescence: an org with a managed slot and no open or
/// given-up token rotation (so in particular one whose latest rotation is done)
/// has its Vapi credential (if any) and every Vapi number of its subaccount
/// holding the subaccount's primary token; and status shows the latest job as the
/// table has it.
pub fn rotation_violations(
    held: &Held,
    org: Uuid,
    state: &OrgState,
    status: &Value,
) -> Vec<(Option<NotPrimary>, String)> {
    let mut out = Vec::new();
    // Status says what the table says.
    let latest = state.rotations.last();
    let shown = status["tokenRotation"]["status"].as_str();
    let expected = latest.map(|(_, s, _)| match s.as_str() {
        "open" => "rotating",
        "gave_up" => "needs_attention",
        "done" => "rotated",
        other => other,
    });
    if shown != expected {
        out.push((
            None,
            format!(
                "R1: org {org}'s status shows tokenRotation {:?}, its latest job is {latest:?}",
                status["tokenRotation"]
            ),
        ));
    }
    let Some((source, account)) = &state.slot else {
        return out;
    };
    if source != "managed" || state.open_rotation().is_some() {
        return out;
    }
    for wrong in held.not_primary(org, account) {
        let message = format!(
            "R1: org {org} has a managed slot ({account}) and no open rotation (latest: {latest:?}), but its {}",
            wrong.text
        );
        out.push((Some(wrong), message));
    }
    out
}

/// D1 (DESIGN "Ending things") after a disconnect of `org` answered 200: the org
/// has no slot and Vapi holds no credential named after it.
pub fn disconnected_violations(held: &Held, org: Uuid, state: &OrgState) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((source, account)) = &state.slot {
        out.push(format!(
            "D1: disconnected org {org} still has a slot ({source}, {account})"
        ));
    }
    let name = format!("org-{org}");
    for c in held.credentials.iter().filter(|c| c.name == name) {
        out.push(format!(
            "D1: Vapi still holds credential {} ({}) of disconnected org {org}",
            c.id, c.account
        ));
    }
    out
}

/// O1 (DESIGN "Ending things"), for an org whose offboarding was asked for: it
/// reached `offboarded` once reconcile ran to quiescence, and then Twilio holds no
/// number under the org's subaccounts, each of them is closed, and Vapi holds no
/// number of those subaccounts and no credential of the org.
pub fn offboarded_violations(
    held: &Held,
    org: Uuid,
    status: &Value,
    state: &OrgState,
) -> Vec<String> {
    let mut out = Vec::new();
    // Offboarding ends the org's token rotations: none left open, and one it
    // ended says why.
    for (kind, job, reason) in &state.rotations {
        let ended_by_offboarding = job == "cancelled"
            && matches!(reason.as_deref(), Some("org_offboarding" | "slot_changed"));
        if job != "done" && !ended_by_offboarding {
            out.push(format!(
                "O1: org {org} was offboarded, but its {kind} token rotation is {job} ({reason:?})"
            ));
        }
    }
    if status["offboarding"]["status"] != "offboarded" {
        out.push(format!(
            "O1: org {org}'s offboarding did not finish: {}",
            status["offboarding"]
        ));
        return out;
    }
    let name = format!("org:{org}");
    let subs: Vec<&String> = held
        .subaccounts
        .iter()
        .filter(|(_, n)| **n == name)
        .map(|(sid, _)| sid)
        .collect();
    for sub in &subs {
        if !held.closed.contains(sub) {
            out.push(format!("O1: org {org}'s subaccount {sub} is not closed"));
        }
        for n in held.twilio.iter().filter(|n| &&n.account == sub) {
            out.push(format!(
                "O1: Twilio still holds {} under offboarded org {org}",
                n.number
            ));
        }
        for v in held.vapi.iter().filter(|v| &&v.account == sub) {
            out.push(format!(
                "O1: Vapi still holds {} ({}) of offboarded org {org}",
                v.number, v.id
            ));
        }
    }
    let credential = format!("org-{org}");
    for c in held.credentials.iter().filter(|c| c.name == credential) {
        out.push(format!(
            "O1: Vapi still holds credential {} of offboarded org {org}",
            c.id
        ));
    }
    out
}

/// I1–I3 and V1 over the final state; `statuses`: each org's status answer.
pub fn final_violations(
    held: &Held,
    rows: &[NumberRow],
    statuses: &[(Uuid, Value)],
) -> Vec<String> {
    let mut out = Vec::new();
    const LIVE: &[&str] = &[
        "provisioning",
        "active",
        "release_pending",
        "needs_attention",
    ];

    // I1
    for n in &held.twilio {
        let Some(org) = held.org_of(&n.account) else {
            continue;
        };
        let ours = rows.iter().find(|r| {
            r.org == org
                && r.number == n.number
                && LIVE.contains(&r.status.as_str())
                && r.twilio_sid.as_ref().is_none_or(|s| *s == n.sid)
        });
        if ours.is_none() {
            let seen: Vec<String> = rows
                .iter()
                .filter(|r| r.number == n.number)
                .map(ToString::to_string)
                .collect();
            out.push(format!(
                "I1: Twilio holds {} ({}) under org {org}'s subaccount {}, and the database has no live row of it (rows of the number: {})",
                n.number,
                n.sid,
                n.account,
                if seen.is_empty() { "none".to_owned() } else { seen.join("; ") }
            ));
        }
    }

    // I2
    for v in &held.vapi {
        let with_id: Vec<&NumberRow> = rows
            .iter()
            .filter(|r| r.vapi_id.as_deref() == Some(v.id.as_str()))
            .collect();
        match with_id.as_slice() {
            [row] if row.status != "released" => {}
            [row] => out.push(format!(
                "I2: Vapi number {} ({}) is still at Vapi, but its row is released: {row}",
                v.id, v.number
            )),
            [] => out.push(format!(
                "I2: Vapi number {} ({}, account {}, assistant {}) has no row with its id",
                v.id,
                v.number,
                v.account,
                v.assistant.as_deref().unwrap_or("-")
            )),
            more => out.push(format!(
                "I2: Vapi number {} ({}) has {} rows with its id",
                v.id,
                v.number,
                more.len()
            )),
        }
    }
    let mut by_number: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for v in &held.vapi {
        by_number.entry(&v.number).or_default().push(&v.id);
    }
    for (number, ids) in by_number {
        if ids.len() > 1 {
            out.push(format!(
                "I2: {number} has {} Vapi numbers: {ids:?}",
                ids.len()
            ));
        }
    }

    // I3
    for r in rows.iter().filter(|r| r.status == "active") {
        let shown = statuses
            .iter()
            .find(|(org, _)| *org == r.org)
            .and_then(|(_, s)| {
                s["numbers"]
                    .as_array()?
                    .iter()
                    .find(|n| n["phoneNumber"] == r.number.as_str())
                    .cloned()
            });
        let shown_pending = shown.as_ref().is_some_and(|s| {
            s["assistantPending"] == true || s.get("assistantChange").is_some_and(|c| !c.is_null())
        });
        if shown_pending {
            continue;
        }
        let vapi = r
            .vapi_id
            .as_ref()
            .and_then(|id| held.vapi.iter().find(|v| v.id == *id));
        let Some(vapi) = vapi else {
            out.push(format!(
                "I3: active number with no Vapi number behind its id, shown as routed: {r}"
            ));
            continue;
        };
        let shown_assistant = shown
            .as_ref()
            .and_then(|s| s["assistantId"].as_str().map(str::to_owned));
        let mut wrong = Vec::new();
        if r.routed_to != vapi.assistant {
            wrong.push("the routing row's");
        }
        if !r.assistant_pending && r.assistant != vapi.assistant {
            wrong.push("the row's (not pending)");
        }
        if shown_assistant != vapi.assistant {
            wrong.push("status's");
        }
        if !wrong.is_empty() {
            out.push(format!(
                "I3: Vapi routes {} to {}, but {} confirmed assistant differs and status does not show it pending: {r}",
                r.number,
                vapi.assistant.as_deref().unwrap_or("no assistant"),
                wrong.join(", ")
            ));
        }
    }

    // V1
    let mut per_org: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &held.credentials {
        *per_org.entry(&c.name).or_default() += 1;
    }
    for (name, n) in per_org {
        if n > 1 && name.starts_with("org-") {
            out.push(format!("V1: Vapi holds {n} credentials named {name}"));
        }
    }
    out
}
