//! Offboarding an org (`POST /api/managed-telephony/offboard`): the end of a
//! customer's life, so that nothing bills after it. A resumable job recorded on the
//! org, on the provider-step protocol ([`crate::steps`]):
//!
//! 1. **Intent** — one transaction records `offboard_requested_at` (the org row is
//!    created if it has none) and takes the job's claim (token + expiry), with an
//!    audit row. From this moment purchases and saves of the org are refused (409
//!    `org_offboarding`: they read the org row under the same lock).
//! 2. **Steps**, no connection held, within the request's deadline:
//!    - **numbers**: every number not released goes through the release protocol
//!      ([`crate::release::Releaser`]: Vapi DELETE, then Twilio as the main account;
//!      "gone" only when proven). A number still being bought waits for its
//!      purchase to finish or be given up (reconcile does both);
//!    - **credential**: the org's Vapi credential is deleted (looked up by its
//!      deterministic name when a create's outcome was unknown; Vapi's JSON 404
//!      counts as gone), once no save holds the org's sync lease;
//!    - **subaccount**, once every number is released: the org's Twilio subaccount
//!      (recorded, or found by its name `org:<uuid>`) is **closed** (`Status=closed`,
//!      after which Twilio releases whatever it still holds; never suspended: a
//!      suspended subaccount's numbers keep billing);
//!    - **slot**, once the credential is gone: the org's slot is cleared.
//! 3. **Outcome**, only while the claim is ours: each finished step stamped,
//!    `offboarded_at` when all four are; otherwise the failed steps' codes, a backoff
//!    and, after `RECONCILE_MAX_ATTEMPTS`, `offboard_gave_up_at` (status shows
//!    `needs_attention`, an alarm counts it; a repeat of the request still resumes).
//! 4. **Reconcile** resumes unfinished offboardings ([`Offboarder::resume_one`]).
//!
//! The answer is 202 with the progress, 200 once offboarded; a repeat after that
//! answers 200 and does nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::db::{Db, DbError};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::ids::{AccountSid, E164, OrgId};
use crate::purchase::subaccount_name;
use crate::release::{ReleaseError, ReleaseOutcome, Releaser};
use crate::steps::{ClaimToken, Deadline, StepsConfig, retry_backoff};
use crate::twilio::TwilioClient;
use crate::vapi::{VapiClient, Walk};

/// The body of `POST /api/managed-telephony/offboard`: the org's own id, typed out,
/// so no request offboards an org by accident.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffboardRequest {
    pub confirm: String,
}

impl OffboardRequest {
    /// The confirmation must be the caller's org id.
    pub fn check(&self, org: OrgId) -> Result<(), OffboardError> {
        match Uuid::parse_str(self.confirm.trim()) {
            Ok(id) if id == org.as_uuid() => Ok(()),
            _ => Err(OffboardError::ConfirmationMismatch),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OffboardError {
    #[error("the confirmation is not this organisation's id")]
    ConfirmationMismatch,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for OffboardError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<OffboardError> for ApiError {
    fn from(e: OffboardError) -> Self {
        match e {
            // Well-formed, but not this org's id: 422, as any body the schema admits
            // and the request's meaning refuses.
            OffboardError::ConfirmationMismatch => ApiError::Unprocessable {
                code: "confirmation_mismatch",
                message: "confirm must be your organisation's id, typed out: offboarding releases every number and cannot be undone".into(),
            },
            OffboardError::Db(db) => db.into(),
        }
    }
}

/// 409 `org_offboarding`: what a purchase or a save of an org being offboarded gets.
pub fn org_offboarding() -> ApiError {
    ApiError::Conflict {
        code: "org_offboarding",
        message:
            "this organisation is being offboarded (or was): nothing new can be bought or saved"
                .into(),
    }
}

/// The four steps, in the order they finish at best.
pub const STEPS: [&str; 4] = ["numbers", "credential", "subaccount", "slot"];

/// Where an offboarding is: the answer, and what status shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offboarding {
    /// `offboarding`, `offboarded`, or `needs_attention` (reconcile stopped
    /// retrying; a repeat of the request resumes it).
    pub status: String,
    pub requested_at: DateTime<Utc>,
    #[serde(default)]
    pub offboarded_at: Option<DateTime<Utc>>,
    /// Steps finished, of [`STEPS`].
    pub done: Vec<String>,
    pub pending: Vec<String>,
    /// Stable code of each pending step's last failure (e.g. `{"numbers":
    /// "twilio_unavailable"}`, `{"subaccount": "waiting_for_numbers"}`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub errors: serde_json::Map<String, Value>,
    pub attempts: i32,
    /// When reconcile resumes it (`null` once done, while a request holds it, or
    /// after it gave up).
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl Offboarding {
    pub fn is_done(&self) -> bool {
        self.offboarded_at.is_some()
    }
}

/// The job's columns, as every statement here returns them.
const STATE_COLS: &str = "offboard_requested_at, offboard_numbers_done_at IS NOT NULL,
    offboard_credential_done_at IS NOT NULL, offboard_subaccount_done_at IS NOT NULL,
    offboard_slot_done_at IS NOT NULL, offboarded_at, offboard_attempts,
    offboard_next_attempt_at, offboard_last_error, offboard_gave_up_at IS NOT NULL,
    offboard_claim_token IS NOT NULL AND offboard_claimed_until >= now()";

/// The job's state, read from [`STATE_COLS`] at `at`.
pub fn offboarding_from_row(row: &Row, at: usize) -> Result<Option<Offboarding>, DbError> {
    let shape = |e: tokio_postgres::Error| DbError::Shape(format!("offboarding: {e}"));
    let Some(requested_at) = row.try_get::<_, Option<DateTime<Utc>>>(at).map_err(shape)? else {
        return Ok(None);
    };
    let mut done = Vec::new();
    let mut pending = Vec::new();
    for (i, step) in STEPS.iter().enumerate() {
        if row.try_get::<_, bool>(at + 1 + i).map_err(shape)? {
            done.push((*step).to_owned());
        } else {
            pending.push((*step).to_owned());
        }
    }
    let offboarded_at: Option<DateTime<Utc>> = row.try_get(at + 5).map_err(shape)?;
    let gave_up: bool = row.try_get(at + 9).map_err(shape)?;
    let held: bool = row.try_get(at + 10).map_err(shape)?;
    let errors = match row.try_get::<_, Option<Value>>(at + 8).map_err(shape)? {
        Some(Value::Object(map)) if offboarded_at.is_none() => map,
        _ => serde_json::Map::new(),
    };
    let status = match (offboarded_at.is_some(), gave_up) {
        (true, _) => "offboarded",
        (false, true) => "needs_attention",
        (false, false) => "offboarding",
    };
    Ok(Some(Offboarding {
        status: status.to_owned(),
        requested_at,
        offboarded_at,
        done,
        pending,
        errors,
        attempts: row.try_get(at + 6).map_err(shape)?,
        next_attempt_at: if offboarded_at.is_some() || gave_up || held {
            None
        } else {
            row.try_get(at + 7).map_err(shape)?
        },
    }))
}

/// A claimed job: the org, the token, and what the steps need to know.
struct Job {
    org: OrgId,
    token: ClaimToken,
    attempts: i32,
    /// Where an unfinished lookup of the credential by name stopped (the save's
    /// cursor, `vapi_lookup_before`): the next attempt resumes below it.
    lookup_before: Option<DateTime<Utc>>,
    numbers_done: bool,
    credential_done: bool,
    subaccount_done: bool,
    subaccount: Option<String>,
    vapi_credential_id: Option<String>,
    vapi_create_attempted_at: Option<DateTime<Utc>>,
    sync_lease_live: bool,
}

const JOB_COLS: &str =
    "id, offboard_numbers_done_at IS NOT NULL, offboard_credential_done_at IS NOT NULL,
    offboard_subaccount_done_at IS NOT NULL, twilio_subaccount_sid, vapi_credential_id,
    vapi_create_attempted_at, coalesce(sync_lease_until >= now(), false), offboard_attempts,
    vapi_lookup_before";

fn job_from_row(row: &Row, token: ClaimToken) -> Result<Job, DbError> {
    let shape = |e: tokio_postgres::Error| DbError::Shape(format!("offboarding job: {e}"));
    Ok(Job {
        org: OrgId::new(row.try_get(0).map_err(shape)?),
        token,
        numbers_done: row.try_get(1).map_err(shape)?,
        credential_done: row.try_get(2).map_err(shape)?,
        subaccount_done: row.try_get(3).map_err(shape)?,
        subaccount: row.try_get(4).map_err(shape)?,
        vapi_credential_id: row.try_get(5).map_err(shape)?,
        vapi_create_attempted_at: row.try_get(6).map_err(shape)?,
        sync_lease_live: row.try_get(7).map_err(shape)?,
        attempts: row.try_get(8).map_err(shape)?,
        lookup_before: row.try_get(9).map_err(shape)?,
    })
}

/// Below this much time left (or a quarter of the steps' deadline, if less), no
/// further release is started in an attempt.
const RELEASE_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

/// Who made an attempt: only reconcile's count toward giving up (a person's
/// repeats, e.g. a page showing progress, never use them up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Request,
    Reconcile,
}

/// How the three provider steps of an attempt ended.
#[derive(Debug, Clone, Copy)]
struct Ends {
    numbers: StepEnd,
    credential: StepEnd,
    subaccount: StepEnd,
}

impl Ends {
    /// Only waiting (on a purchase, a save, a release held elsewhere, an earlier
    /// step): no provider failed.
    fn only_waiting(&self) -> bool {
        [self.numbers, self.credential, self.subaccount]
            .iter()
            .all(|e| match e {
                StepEnd::Done => true,
                StepEnd::Pending(code) => WAITING.contains(code),
            })
    }
}

/// Codes of steps that wait rather than fail.
const WAITING: [&str; 5] = [
    "purchase_in_progress",
    "sync_in_progress",
    "release_in_progress",
    "waiting_for_numbers",
    "waiting_for_credential",
];

/// How one step of an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepEnd {
    Done,
    /// Not done; the stable code says why.
    Pending(&'static str),
}

/// Offboards orgs; one per function instance (and reconcile's).
pub struct Offboarder<'a> {
    pub db: &'a Db,
    pub vapi: &'a VapiClient,
    pub twilio: &'a TwilioClient,
    pub config: &'a StepsConfig,
}

impl Offboarder<'_> {
    fn releaser(&self) -> Releaser<'_> {
        Releaser {
            db: self.db,
            vapi: self.vapi,
            twilio: self.twilio,
            config: self.config,
        }
    }

    /// Offboard the caller's org (or resume it), finishing what it can before
    /// `deadline`.
    pub async fn offboard(
        &self,
        caller: &Caller,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<Offboarding, OffboardError> {
        let token = ClaimToken::new();
        match self.intent(caller, request_id, token).await? {
            Some(job) => {
                self.finish(job, caller, request_id, deadline, Attempt::Request)
                    .await
            }
            // Done already, or another request holds it: say where it is.
            None => self.current(caller.org_id).await,
        }
    }

    /// Reconcile: resume one unfinished offboarding whose backoff passed and whose
    /// holder is gone; `None` when none is due.
    pub async fn resume_one(
        &self,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<Option<Offboarding>, OffboardError> {
        let token = ClaimToken::new();
        let row = self
            .db
            .query_opt(
                &format!(
                    "UPDATE organizations
                        SET offboard_claim_token = $1,
                            offboard_claimed_until = now() + make_interval(secs => $2)
                      WHERE id = (SELECT id FROM organizations
                                   WHERE offboard_requested_at IS NOT NULL AND offboarded_at IS NULL
                                     -- A statement re-sent after a dropped connection
                                     -- finds the org it claimed.
                                     AND (offboard_claim_token = $1
                                          OR (offboard_gave_up_at IS NULL
                                              AND (offboard_claim_token IS NULL
                                                   OR offboard_claimed_until < now())
                                              AND coalesce(offboard_next_attempt_at, '-infinity') <= now()))
                                   ORDER BY offboard_claim_token IS NOT DISTINCT FROM $1 DESC,
                                            offboard_attempts, offboard_next_attempt_at NULLS FIRST, id
                                   LIMIT 1 FOR UPDATE SKIP LOCKED)
                      RETURNING {JOB_COLS}"
                ),
                &[
                    (&token.as_uuid(), Type::UUID),
                    (&self.config.claim_ttl.as_secs_f64(), Type::FLOAT8),
                ],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let job = job_from_row(&row, token)?;
        let caller = Caller::system(job.org, "system:reconcile");
        self.finish(job, &caller, request_id, deadline, Attempt::Reconcile)
            .await
            .map(Some)
    }

    /// The org's offboarding as it stands (an org never offboarded: not found).
    async fn current(&self, org: OrgId) -> Result<Offboarding, OffboardError> {
        let row = self
            .db
            .query_one(
                &format!("SELECT {STATE_COLS} FROM organizations WHERE id = $1"),
                &[(&org.as_uuid(), Type::UUID)],
            )
            .await?;
        offboarding_from_row(&row, 0)?
            .ok_or_else(|| DbError::Shape("offboarding: no intent recorded".into()).into())
    }

    /// Step 1: record the intent (once) and take the job's claim; `None` when it
    /// is done or another holder's claim is live.
    async fn intent(
        &self,
        caller: &Caller,
        request_id: &str,
        token: ClaimToken,
    ) -> Result<Option<Job>, OffboardError> {
        let org = caller.org_id.as_uuid();
        let ttl = self.config.claim_ttl.as_secs_f64();
        self.db
            .transaction(async |tx| {
                let first = tx
                    .query_typed_one(
                        "INSERT INTO organizations (id, offboard_requested_at, offboard_requested_by)
                         VALUES ($1, now(), $2)
                         ON CONFLICT (id) DO UPDATE
                            SET offboard_requested_at = coalesce(organizations.offboard_requested_at, now()),
                                offboard_requested_by = coalesce(organizations.offboard_requested_by, $2),
                                -- A person asking again resumes what reconcile gave
                                -- up, with its attempts counted afresh.
                                offboard_attempts = CASE WHEN organizations.offboard_gave_up_at IS NULL
                                    THEN organizations.offboard_attempts ELSE 0 END,
                                offboard_gave_up_at = NULL
                         RETURNING offboard_requested_at = now()",
                        &[(&org, Type::UUID), (&caller.subject, Type::TEXT)],
                    )
                    .await?;
                if first.get::<_, bool>(0) {
                    audit::record(
                        tx,
                        &AuditEntry {
                            caller,
                            action: "org.offboard_requested",
                            target: &caller.org_id.to_string(),
                            request_id,
                            outcome: "offboarding",
                            detail: json!({}),
                        },
                    )
                    .await?;
                }
                // The org's token rotations end (a rotation reconcile gave up would
                // otherwise stay open for ever, its sealed secondary kept). One an
                // attempt holds right now ends at its next gate or claim.
                tx.query_typed(
                    "UPDATE token_rotations
                        SET cancelled_at = now(), cancel_reason = 'org_offboarding',
                            secondary = NULL, next_attempt_at = NULL
                      WHERE org_id = $1 AND done_at IS NULL AND cancelled_at IS NULL
                        AND (claim_token IS NULL OR claimed_until < now())",
                    &[(&org, Type::UUID)],
                )
                .await?;
                let claimed = tx
                    .query_typed_opt(
                        &format!(
                            "UPDATE organizations
                                SET offboard_claim_token = $2,
                                    offboard_claimed_until = now() + make_interval(secs => $3)
                              WHERE id = $1 AND offboarded_at IS NULL
                                AND (offboard_claim_token IS NULL OR offboard_claimed_until < now()
                                     OR offboard_claim_token = $2)
                              RETURNING {JOB_COLS}"
                        ),
                        &[
                            (&org, Type::UUID),
                            (&token.as_uuid(), Type::UUID),
                            (&ttl, Type::FLOAT8),
                        ],
                    )
                    .await?;
                claimed
                    .map(|row| job_from_row(&row, token))
                    .transpose()
                    .map_err(OffboardError::from)
            })
            .await
    }

    /// Steps 2 and 3 for a claimed job.
    async fn finish(
        &self,
        job: Job,
        caller: &Caller,
        request_id: &str,
        deadline: Deadline,
        attempt: Attempt,
    ) -> Result<Offboarding, OffboardError> {
        let (numbers, credential) = tokio::join!(
            self.numbers_step(&job, caller, request_id, deadline),
            self.credential_step(&job, deadline)
        );
        let numbers = numbers?;
        // Closing the subaccount releases its numbers at Twilio without deleting
        // their Vapi imports: only once every number went through the release, and
        // (DESIGN "Ending things") after the Vapi credential was deleted.
        let subaccount = match (numbers, credential) {
            (StepEnd::Done, StepEnd::Done) => self.subaccount_step(&job, deadline).await,
            (StepEnd::Pending(_), _) => StepEnd::Pending("waiting_for_numbers"),
            (_, StepEnd::Pending(_)) => StepEnd::Pending("waiting_for_credential"),
        };
        let ends = Ends {
            numbers,
            credential,
            subaccount,
        };
        self.record(&job, caller, request_id, ends, attempt).await
    }

    async fn numbers_step(
        &self,
        job: &Job,
        caller: &Caller,
        request_id: &str,
        deadline: Deadline,
    ) -> Result<StepEnd, OffboardError> {
        if job.numbers_done {
            return Ok(StepEnd::Done);
        }
        let rows = self
            .db
            .query(
                "SELECT phone_number, status FROM managed_phone_numbers
                  WHERE org_id = $1 AND status <> 'released' ORDER BY phone_number",
                &[(&job.org.as_uuid(), Type::UUID)],
            )
            .await?;
        let mut waiting = false;
        let mut numbers = Vec::new();
        for r in &rows {
            let (number, status): (String, String) = (r.get(0), r.get(1));
            if status == "provisioning" {
                waiting = true;
            } else if let Ok(n) = number.parse::<E164>() {
                numbers.push(n);
            }
        }
        let releaser = self.releaser();
        // Futures collected first: a stream over a closure borrowing `numbers`
        // would not be `Send` for every lifetime (a known rustc limitation).
        // A release started without the time to finish would count a failed attempt
        // on a number nobody tried: those wait for the next attempt.
        let releases: Vec<_> = numbers
            .iter()
            .map(|n| async {
                if deadline.remaining() < RELEASE_BUDGET.min(self.config.deadline / 4) {
                    return Ok(ReleaseOutcome::Releasing {
                        phone_number: n.to_string(),
                    });
                }
                releaser.release(caller, request_id, n, deadline).await
            })
            .collect();
        let outcomes: Vec<Result<ReleaseOutcome, ReleaseError>> = futures::stream::iter(releases)
            .buffer_unordered(4)
            .collect()
            .await;
        let mut code: Option<&'static str> = waiting.then_some("purchase_in_progress");
        for outcome in outcomes {
            match outcome {
                Ok(ReleaseOutcome::Released { .. }) => {}
                Ok(
                    ReleaseOutcome::ReleasePending { errors, .. }
                    | ReleaseOutcome::NeedsAttention { errors, .. },
                ) => {
                    code = code
                        .or(errors.values().next().copied())
                        .or(Some("release_pending"));
                }
                Ok(ReleaseOutcome::Releasing { .. }) => code = code.or(Some("release_in_progress")),
                Err(ReleaseError::Provisioning(_)) => code = code.or(Some("purchase_in_progress")),
                // Released meanwhile by someone else.
                Err(ReleaseError::NotFound(_)) => {}
                Err(ReleaseError::Db(e)) => return Err(e.into()),
            }
        }
        Ok(code.map_or(StepEnd::Done, StepEnd::Pending))
    }

    async fn credential_step(&self, job: &Job, deadline: Deadline) -> StepEnd {
        if job.credential_done {
            return StepEnd::Done;
        }
        // A save that took the lease before the intent may still create or update
        // the credential: wait for it to end (saves are refused from now on).
        if job.sync_lease_live {
            return StepEnd::Pending("sync_in_progress");
        }
        let id = match (&job.vapi_credential_id, job.vapi_create_attempted_at) {
            (Some(id), _) => id.clone(),
            // A create whose outcome was unknown may have made one: look it up.
            (None, Some(attempted)) => {
                let since = attempted - chrono::Duration::minutes(5);
                let lookup = self.vapi.find_credential(
                    job.org,
                    since,
                    job.lookup_before,
                    Some(deadline.instant()),
                );
                match deadline.run("vapi", lookup).await {
                    Ok(Walk::Found(id)) => id,
                    Ok(Walk::NotFound) => return StepEnd::Done,
                    Ok(Walk::Unfinished { before }) => {
                        // The next attempt resumes below where this one stopped.
                        let _ = self
                            .db
                            .query(
                                "UPDATE organizations SET vapi_lookup_before = $2
                                  WHERE id = $1 AND offboard_claim_token = $3",
                                &[
                                    (&job.org.as_uuid(), Type::UUID),
                                    (&before, Type::TIMESTAMPTZ),
                                    (&job.token.as_uuid(), Type::UUID),
                                ],
                            )
                            .await;
                        return StepEnd::Pending("vapi_lookup_unfinished");
                    }
                    Err(e) => return StepEnd::Pending(e.stable_code()),
                }
            }
            (None, None) => return StepEnd::Done,
        };
        match deadline.run("vapi", self.vapi.delete_credential(&id)).await {
            Ok(()) => StepEnd::Done,
            Err(e) => StepEnd::Pending(e.stable_code()),
        }
    }

    async fn subaccount_step(&self, job: &Job, deadline: Deadline) -> StepEnd {
        if job.subaccount_done {
            return StepEnd::Done;
        }
        // The recorded one, those the org's numbers were bought on, and one a
        // purchase may have created without recording it.
        let mut sids: Vec<AccountSid> = job
            .subaccount
            .as_deref()
            .and_then(|s| s.parse().ok())
            .into_iter()
            .collect();
        match self
            .db
            .query(
                "SELECT DISTINCT twilio_subaccount_sid FROM managed_phone_numbers
                  WHERE org_id = $1 AND twilio_subaccount_sid IS NOT NULL",
                &[(&job.org.as_uuid(), Type::UUID)],
            )
            .await
        {
            Ok(rows) => {
                for r in &rows {
                    if let Ok(sid) = r.get::<_, String>(0).parse::<AccountSid>()
                        && !sids.contains(&sid)
                    {
                        sids.push(sid);
                    }
                }
            }
            Err(_) => return StepEnd::Pending("database_unavailable"),
        }
        match deadline
            .run(
                "twilio",
                self.twilio.find_subaccount(&subaccount_name(job.org)),
            )
            .await
        {
            Ok(Some(found)) if !sids.contains(&found.sid) => sids.push(found.sid),
            Ok(_) => {}
            Err(e) => return StepEnd::Pending(e.stable_code()),
        }
        for sid in &sids {
            // Closing is irreversible: never the platform's own account.
            if self.twilio.is_main_account(sid) {
                tracing::error!(
                    "an org records the platform's main account as its subaccount; not closing it"
                );
                return StepEnd::Pending("main_account_recorded");
            }
            if let Err(e) = deadline
                .run("twilio", self.twilio.close_subaccount(sid))
                .await
            {
                return StepEnd::Pending(e.stable_code());
            }
        }
        StepEnd::Done
    }

    /// Step 3: stamp what finished, only while the claim is ours; clear the slot
    /// once the credential is gone; the audit row.
    async fn record(
        &self,
        job: &Job,
        caller: &Caller,
        request_id: &str,
        ends: Ends,
        attempt: Attempt,
    ) -> Result<Offboarding, OffboardError> {
        let Ends {
            numbers,
            credential,
            subaccount,
        } = ends;
        // Counted toward giving up: reconcile's attempts on which a provider failed.
        let counted = attempt == Attempt::Reconcile && !ends.only_waiting();
        let mut errors = BTreeMap::new();
        for (step, end) in [
            ("numbers", numbers),
            ("credential", credential),
            ("subaccount", subaccount),
        ] {
            if let StepEnd::Pending(code) = end {
                tracing::warn!(step, code, "offboarding step pending");
                errors.insert(step, code);
            }
        }
        let errors_json = (!errors.is_empty()).then(|| json!(errors));
        let max = self.config.max_attempts;
        let outcome = self
            .db
            .transaction(async |tx| {
                let row = tx
                    .query_typed_opt(
                        &format!(
                            "UPDATE organizations o
                                SET offboard_numbers_done_at = CASE WHEN $3 THEN coalesce(o.offboard_numbers_done_at, now())
                                        ELSE o.offboard_numbers_done_at END,
                                    offboard_credential_done_at = CASE WHEN $4 THEN coalesce(o.offboard_credential_done_at, now())
                                        ELSE o.offboard_credential_done_at END,
                                    offboard_subaccount_done_at = CASE WHEN $5 THEN coalesce(o.offboard_subaccount_done_at, now())
                                        ELSE o.offboard_subaccount_done_at END,
                                    offboard_slot_done_at = CASE WHEN $4 THEN coalesce(o.offboard_slot_done_at, now())
                                        ELSE o.offboard_slot_done_at END,
                                    vapi_credential_id = CASE WHEN $4 THEN NULL ELSE o.vapi_credential_id END,
                                    vapi_lookup_before = CASE WHEN $4 THEN NULL ELSE o.vapi_lookup_before END,
                                    offboarded_at = CASE WHEN $3 AND $4 AND $5 THEN now() END,
                                    offboard_attempts = o.offboard_attempts + CASE WHEN $9 THEN 1 ELSE 0 END,
                                    offboard_next_attempt_at = CASE WHEN $3 AND $4 AND $5 THEN NULL
                                        ELSE now() + make_interval(secs => $6) END,
                                    offboard_last_error = $7,
                                    offboard_gave_up_at = CASE WHEN $9 AND NOT ($3 AND $4 AND $5)
                                                                    AND o.offboard_attempts + 1 >= $8
                                        THEN coalesce(o.offboard_gave_up_at, now()) END,
                                    offboard_claim_token = NULL, offboard_claimed_until = NULL
                              WHERE o.id = $1 AND o.offboard_claim_token = $2
                              RETURNING {STATE_COLS}"
                        ),
                        &[
                            (&job.org.as_uuid(), Type::UUID),
                            (&job.token.as_uuid(), Type::UUID),
                            (&(numbers == StepEnd::Done), Type::BOOL),
                            (&(credential == StepEnd::Done), Type::BOOL),
                            (&(subaccount == StepEnd::Done), Type::BOOL),
                            (&retry_backoff(job.attempts + 1).as_secs_f64(), Type::FLOAT8),
                            (&errors_json, Type::JSONB),
                            (&max, Type::INT4),
                            (&counted, Type::BOOL),
                        ],
                    )
                    .await?;
                let Some(row) = row else {
                    // Our claim expired and another holder took it: its outcome counts.
                    return Ok(None);
                };
                if credential == StepEnd::Done {
                    tx.query_typed(
                        "DELETE FROM org_credentials WHERE org_id = $1 AND provider = 'twilio'",
                        &[(&job.org.as_uuid(), Type::UUID)],
                    )
                    .await?;
                }
                let state = offboarding_from_row(&row, 0)?
                    .ok_or_else(|| DbError::Shape("offboarding: no intent".into()))?;
                audit::record(
                    tx,
                    &AuditEntry {
                        caller,
                        action: "org.offboard",
                        target: &job.org.to_string(),
                        request_id,
                        outcome: if state.is_done() { "offboarded" } else { "offboard_pending" },
                        detail: json!({ "done": state.done, "errors": errors }),
                    },
                )
                .await?;
                Ok::<_, OffboardError>(Some(state))
            })
            .await?;
        match outcome {
            Some(state) => Ok(state),
            None => self.current(job.org).await,
        }
    }
}
