//! Which Vapi assistant a managed number routes to (update-number), on the
//! provider-step protocol ([`crate::steps`]):
//!
//! 1. **Intent**: one conditional UPDATE claims the active number (a claim token
//!    with an expiry, as a release does) and records the new assistant (and name)
//!    with `assistant_pending`; a re-sent statement with the same token is ours.
//! 2. **Vapi** `PATCH /phone-number/{id}` `{assistantId, name?}` (idempotent, retried
//!    with backoff), no connection held, within the request's deadline.
//! 3. **Outcome**, only while the claim is ours: confirmed → the routing row follows
//!    and `assistant_pending` clears (200); not confirmed → stays pending (202) and
//!    reconcile sends it again, with per-row backoff and, after
//!    `RECONCILE_MAX_ATTEMPTS`, a terminal state (`route_gave_up_at`: status shows
//!    it, an alarm counts it, the org's next change starts over). When the PATCH's
//!    outcome is unknown (timeout, 5xx) the claim is kept until it expires: a late
//!    copy may still land, and a later change must not be overtaken by it. Vapi
//!    refused it (an assistant it does not know) → the number is put back exactly
//!    as before this request, an earlier change still pending included (it may be
//!    what Vapi routes to now), and 422; a change reconcile resends that Vapi
//!    refuses is given up (it stays pending, shown and alarmed).

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::types::Type;
use tracing::Instrument;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::db::{Db, DbError};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::ids::{AssistantId, E164, NumberName, OrgId};
use crate::providers::ProviderError;
use crate::steps::{ClaimToken, Deadline, StepError, StepsConfig, retry_backoff};
use crate::vapi::VapiClient;

/// The body of `PATCH /api/managed-telephony/numbers/{phoneNumber}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteChange {
    pub assistant_id: AssistantId,
    #[serde(default)]
    pub name: Option<NumberName>,
}

/// The answer: the number's routing now.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    pub phone_number: String,
    pub assistant_id: String,
    pub name: Option<String>,
    /// `false`: recorded, but Vapi has not confirmed it yet (`code` says why);
    /// reconcile sends it again.
    pub routed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no managed number {0} in this organisation")]
    NotFound(String),
    #[error("{0} is not active")]
    NotActive(String, String),
    #[error("another change of {0} is in progress")]
    InProgress(String),
    #[error("{0} is not imported into Vapi")]
    NotImported(String),
    #[error("Vapi refused the assistant: {0}")]
    Refused(ProviderError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for RouteError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        let conflict = |code, message: String| ApiError::Conflict { code, message };
        match e {
            RouteError::NotFound(n) => ApiError::not_found(
                "number_not_found",
                format!("no managed number {n} in your organisation"),
            ),
            RouteError::NotActive(n, status) => conflict(
                "number_not_active",
                format!("{n} is {status}; only an active number can be routed"),
            ),
            RouteError::InProgress(n) => conflict(
                "update_in_progress",
                format!("another change of {n} is in progress; try again in a few seconds"),
            ),
            RouteError::NotImported(n) => conflict(
                "number_not_imported",
                format!("{n} is not known to Vapi, so it cannot route to an assistant"),
            ),
            RouteError::Refused(p) => ApiError::Unprocessable {
                code: "vapi_refused_assistant",
                message: format!(
                    "Vapi refused this assistant for the number ({}); nothing changed: the number routes as before this request (an earlier change still pending stays pending)",
                    p.stable_code()
                ),
            },
            RouteError::Db(db) => db.into(),
        }
    }
}

/// A number this change holds, and how it was before (to put back after a
/// refusal).
struct Claim {
    id: Uuid,
    org: OrgId,
    number: String,
    token: ClaimToken,
    vapi_phone_id: Option<String>,
    assistant: String,
    name: Option<String>,
    /// Attempts at sending this change, this one included.
    attempts: i32,
    before: Before,
    /// The claim statement was re-sent after a dropped connection and found the
    /// row already ours: `before` then holds the claim's own values, not what was
    /// there before it.
    resent: bool,
}

/// The routing columns as they were before the claim.
struct Before {
    assistant: Option<String>,
    name: Option<String>,
    pending: bool,
    attempts: i32,
    next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    last_error: Option<serde_json::Value>,
    gave_up_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A request's claim (`$3`, `$4`: its org and number; a new change starts its
/// attempts over) or reconcile's (`$3` NULL: a pending change not given up, its
/// backoff passed, left for a claim's length; fewest attempts first). A re-sent
/// claim (`claim_token = $1`) counts nothing twice.
const CLAIM: &str = "UPDATE managed_phone_numbers m
        SET claim_token = $1, claimed_until = now() + make_interval(secs => $2),
            assistant_id = coalesce($5, m.assistant_id),
            display_name = coalesce($6, m.display_name),
            assistant_pending = true,
            route_attempts = CASE WHEN m.claim_token IS NOT DISTINCT FROM $1 THEN m.route_attempts
                                  WHEN $3::uuid IS NOT NULL THEN 1
                                  ELSE m.route_attempts + 1 END,
            next_route_attempt_at = NULL, route_gave_up_at = NULL, updated_at = now()
       FROM (SELECT id, assistant_id, display_name, assistant_pending, route_attempts,
                    next_route_attempt_at, last_route_error, route_gave_up_at, claim_token
               FROM managed_phone_numbers
              WHERE status = 'active'
                AND (claim_token = $1
                     OR ((claim_token IS NULL OR claimed_until < now())
                         AND CASE WHEN $3::uuid IS NOT NULL THEN org_id = $3 AND phone_number = $4
                                  ELSE assistant_pending AND route_gave_up_at IS NULL
                                       AND coalesce(next_route_attempt_at, '-infinity') <= now()
                                       AND updated_at < now() - make_interval(secs => $2) END))
              ORDER BY route_attempts, updated_at
              LIMIT 1 FOR UPDATE SKIP LOCKED) old
      WHERE m.id = old.id
      RETURNING m.id, m.org_id, m.phone_number, m.vapi_phone_id, m.assistant_id, m.display_name,
                m.route_attempts, old.assistant_id, old.display_name, old.assistant_pending,
                old.route_attempts, old.next_route_attempt_at, old.last_route_error,
                old.route_gave_up_at, old.claim_token IS NOT DISTINCT FROM $1";

fn claim_from_row(row: &tokio_postgres::Row, token: ClaimToken) -> Result<Claim, DbError> {
    let shape = |e: tokio_postgres::Error| DbError::Shape(format!("routing claim: {e}"));
    Ok(Claim {
        id: row.try_get(0).map_err(shape)?,
        org: OrgId::new(row.try_get(1).map_err(shape)?),
        number: row.try_get(2).map_err(shape)?,
        token,
        vapi_phone_id: row.try_get(3).map_err(shape)?,
        assistant: row
            .try_get::<_, Option<String>>(4)
            .map_err(shape)?
            .unwrap_or_default(),
        name: row.try_get(5).map_err(shape)?,
        attempts: row.try_get(6).map_err(shape)?,
        before: Before {
            assistant: row.try_get(7).map_err(shape)?,
            name: row.try_get(8).map_err(shape)?,
            pending: row.try_get(9).map_err(shape)?,
            attempts: row.try_get(10).map_err(shape)?,
            next_attempt_at: row.try_get(11).map_err(shape)?,
            last_error: row.try_get(12).map_err(shape)?,
            gave_up_at: row.try_get(13).map_err(shape)?,
        },
        resent: row.try_get(14).map_err(shape)?,
    })
}

/// update-number's warm-up at init ([`Db::warm_up_at_cold_start`]): an update
/// request's first statement, the claim, for a number no row has
/// ([`crate::ids::nobodys_number`]): it matches nothing, so nothing changes and
/// nothing is locked.
pub async fn warm_up(db: &Db, config: &StepsConfig) -> Result<(), DbError> {
    let (org, number) = crate::ids::nobodys_number();
    claim_number(db, config, &ClaimToken::new(), org, &number, None, None)
        .await
        .map(drop)
}

/// Claims `number` of `org` for an update (reconcile claims by age instead): the
/// row, with `assistant` and `name` set where given, or `None` when it is not
/// claimable. One statement for the request and its warm-up, so they cannot drift.
async fn claim_number(
    db: &Db,
    config: &StepsConfig,
    token: &ClaimToken,
    org: OrgId,
    number: &E164,
    assistant: Option<&str>,
    name: Option<&str>,
) -> Result<Option<tokio_postgres::Row>, DbError> {
    db.query_opt(
        CLAIM,
        &[
            (&token.as_uuid(), Type::UUID),
            (&config.claim_ttl.as_secs_f64(), Type::FLOAT8),
            (&Some(org.as_uuid()), Type::UUID),
            (&Some(number.as_str()), Type::TEXT),
            (&assistant, Type::TEXT),
            (&name, Type::TEXT),
        ],
    )
    .await
}

/// Routes managed numbers to assistants; one per function instance.
pub struct Router<'a> {
    pub db: &'a Db,
    pub vapi: &'a VapiClient,
    pub config: &'a StepsConfig,
}

impl Router<'_> {
    /// Route `number` of the caller's org to `change.assistant_id`.
    pub async fn update(
        &self,
        caller: &Caller,
        request_id: &str,
        number: &E164,
        change: &RouteChange,
        deadline: Deadline,
    ) -> Result<Routing, RouteError> {
        let (db, vapi, config) = (self.db, self.vapi, self.config);
        let token = ClaimToken::new();
        let row = claim_number(
            db,
            config,
            &token,
            caller.org_id,
            number,
            Some(change.assistant_id.as_str()),
            change.name.as_ref().map(NumberName::as_str),
        )
        .await?;
        let Some(row) = row else {
            return Err(why_not(db, caller.org_id, number).await?);
        };
        let claim = claim_from_row(&row, token)?;
        finish(
            db, vapi, config, &claim, caller, request_id, deadline, false,
        )
        .await
    }

    /// Reconcile: send one change Vapi has not confirmed again (holder gone,
    /// backoff passed, not given up), within `budget`. `None` when none is due.
    pub async fn resume_one(
        &self,
        request_id: &str,
        budget: std::time::Duration,
    ) -> Result<Option<RouteResumed>, DbError> {
        let (db, vapi, config) = (self.db, self.vapi, self.config);
        let token = ClaimToken::new();
        let row = db
            .query_opt(
                CLAIM,
                &[
                    (&token.as_uuid(), Type::UUID),
                    (&config.claim_ttl.as_secs_f64(), Type::FLOAT8),
                    (&None::<Uuid>, Type::UUID),
                    (&None::<String>, Type::TEXT),
                    (&None::<String>, Type::TEXT),
                    (&None::<String>, Type::TEXT),
                ],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let claim = claim_from_row(&row, token)?;
        let caller = Caller::system(claim.org, "system:reconcile");
        let deadline = Deadline::after(budget.min(config.deadline));
        let span = tracing::info_span!("reconcile_route", org_id = %claim.org);
        Ok(Some(
            match finish(
                db, vapi, config, &claim, &caller, request_id, deadline, true,
            )
            .instrument(span)
            .await
            {
                Ok(r) if r.routed => RouteResumed::Confirmed,
                Ok(r) if r.code == Some(GAVE_UP) => RouteResumed::GaveUp,
                Ok(_) => RouteResumed::StillPending,
                Err(RouteError::Db(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "a pending assistant change was refused");
                    RouteResumed::GaveUp
                }
            },
        ))
    }
}

/// How one assistant change resumed by reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteResumed {
    Confirmed,
    StillPending,
    /// Failed `RECONCILE_MAX_ATTEMPTS` times or refused: reconcile stops sending it.
    GaveUp,
}

/// The code a change given up by reconcile carries.
const GAVE_UP: &str = "route_gave_up";

async fn why_not(db: &Db, org: OrgId, number: &E164) -> Result<RouteError, DbError> {
    let row = db
        .query_opt(
            "SELECT status, claimed_until > now() FROM managed_phone_numbers
              WHERE org_id = $1 AND phone_number = $2 AND status <> 'released'",
            &[(&org.as_uuid(), Type::UUID), (&number.as_str(), Type::TEXT)],
        )
        .await?;
    Ok(match row {
        None => RouteError::NotFound(number.to_string()),
        Some(r) => match r.get::<_, &str>(0) {
            "active" => RouteError::InProgress(number.to_string()),
            status => RouteError::NotActive(number.to_string(), status.to_owned()),
        },
    })
}

/// Steps 2 and 3. `by_reconcile`: a resent change, which may be given up.
#[allow(clippy::too_many_arguments)]
async fn finish(
    db: &Db,
    vapi: &VapiClient,
    config: &StepsConfig,
    claim: &Claim,
    caller: &Caller,
    request_id: &str,
    deadline: Deadline,
    by_reconcile: bool,
) -> Result<Routing, RouteError> {
    // Vapi has no such number (never imported, or gone): nothing can route until it
    // is imported again. A request's change is put back; reconcile's is given up
    // (shown, alarmed), never resent every run.
    let not_imported = || ProviderError::Status {
        provider: "vapi",
        status: 404,
        code: None,
        message: Some("the number is not imported into Vapi".into()),
    };
    let Some(vapi_id) = &claim.vapi_phone_id else {
        if by_reconcile {
            return record(db, claim, caller, request_id, Err(not_imported()), true).await;
        }
        restore(db, claim).await?;
        return Err(RouteError::NotImported(claim.number.clone()));
    };
    let sent = deadline
        .run(
            "vapi",
            vapi.route_phone_number(vapi_id, &claim.assistant, claim.name.as_deref()),
        )
        .await;
    let refused = |e: &ProviderError| {
        matches!(e, ProviderError::Status { status, .. }
            if (400..500).contains(status) && ![401, 403, 404, 408, 429].contains(status))
    };
    let sent = match sent {
        // A 4xx repeating cannot change (an assistant Vapi does not know). A
        // request's change: put the number back as it was. Reconcile's: Vapi will
        // not take what the database says, so it is given up (shown, alarmed).
        Err(e) if refused(&e) && by_reconcile => {
            tracing::warn!(error = %e, "Vapi refused a pending assistant change; giving it up");
            return record(db, claim, caller, request_id, Err(e), true).await;
        }
        Err(e) if refused(&e) => {
            restore(db, claim).await?;
            return Err(RouteError::Refused(e));
        }
        // Vapi no longer has the number: nothing to route until it is imported again.
        Err(e) if e.is_gone() && by_reconcile => {
            tracing::warn!("Vapi no longer has the number; giving the pending change up");
            return record(db, claim, caller, request_id, Err(e), true).await;
        }
        Err(e) if e.is_gone() => {
            tracing::warn!("Vapi no longer has the number; the change is not kept");
            restore(db, claim).await?;
            return Err(RouteError::NotImported(claim.number.clone()));
        }
        other => other,
    };
    let give_up = by_reconcile && sent.is_err() && claim.attempts >= config.max_attempts;
    record(db, claim, caller, request_id, sent, give_up).await
}

/// The outcome, only while the claim is ours: confirmed (the routing row
/// follows), or pending with its error and backoff — the claim kept until it
/// expires when the PATCH's outcome is unknown — or given up.
async fn record(
    db: &Db,
    claim: &Claim,
    caller: &Caller,
    request_id: &str,
    sent: Result<(), ProviderError>,
    give_up: bool,
) -> Result<Routing, RouteError> {
    let failed = sent.as_ref().err();
    let code = match (failed, give_up) {
        (None, _) => None,
        (Some(_), true) => Some(GAVE_UP),
        (Some(e), false) => Some(e.stable_code()),
    };
    // Given up or not: a late copy of a PATCH whose answer never came must not
    // overtake the org's next change.
    let keep_claim = failed.is_some_and(ProviderError::outcome_unknown);
    if let Some(e) = failed {
        tracing::warn!(error = %e, code = e.stable_code(), keep_claim, give_up, "assistant change not confirmed by Vapi; it stays pending");
    }
    let error = failed.map(|e| serde_json::to_value(StepError::from(e)).unwrap_or_default());
    let backoff = retry_backoff(claim.attempts).as_secs_f64();
    db.transaction(async |tx| {
        let held = tx
            .query_typed_opt(
                "UPDATE managed_phone_numbers
                    SET claim_token = CASE WHEN $4 THEN claim_token END,
                        claimed_until = CASE WHEN $4 THEN claimed_until END,
                        assistant_pending = $3,
                        route_attempts = CASE WHEN $3 THEN route_attempts ELSE 0 END,
                        last_route_error = $5,
                        next_route_attempt_at = CASE WHEN $3 THEN now() + make_interval(secs => $6) END,
                        route_gave_up_at = CASE WHEN $3 AND $7 THEN now() END,
                        updated_at = now()
                  WHERE id = $1 AND claim_token = $2 RETURNING 1",
                &[
                    (&claim.id, Type::UUID),
                    (&claim.token.as_uuid(), Type::UUID),
                    (&failed.is_some(), Type::BOOL),
                    (&keep_claim, Type::BOOL),
                    (&error, Type::JSONB),
                    (&backoff, Type::FLOAT8),
                    (&give_up, Type::BOOL),
                ],
            )
            .await?;
        if held.is_none() {
            tracing::warn!(
                "the number was taken over (a release?); its change is not recorded as routed"
            );
            return Ok(Routing {
                phone_number: claim.number.clone(),
                assistant_id: claim.assistant.clone(),
                name: claim.name.clone(),
                routed: false,
                code: Some("superseded"),
            });
        }
        if failed.is_none() {
            tx.query_typed(
                "UPDATE phone_number_mapping SET vapi_assistant_id = $3, updated_at = now()
                  WHERE org_id = $1 AND inbound_phone_number = $2",
                &[
                    (&claim.org.as_uuid(), Type::UUID),
                    (&claim.number, Type::TEXT),
                    (&claim.assistant, Type::TEXT),
                ],
            )
            .await?;
        }
        audit::record(
            tx,
            &AuditEntry {
                caller,
                action: "number.route",
                target: &claim.number,
                request_id,
                outcome: match (failed.is_none(), give_up) {
                    (true, _) => "routed",
                    (false, true) => "route_gave_up",
                    (false, false) => "route_pending",
                },
                detail: json!({
                    "assistantId": claim.assistant,
                    "previousAssistantId": claim.before.assistant,
                    "attempt": claim.attempts,
                    "vapiCode": failed.map(ProviderError::stable_code),
                }),
            },
        )
        .await?;
        Ok::<_, RouteError>(Routing {
            phone_number: claim.number.clone(),
            assistant_id: claim.assistant.clone(),
            name: claim.name.clone(),
            routed: failed.is_none(),
            code,
        })
    })
    .await
}

/// A request's change Vapi refused (or cannot take): the number is put back
/// exactly as it was before this request — an earlier change still pending
/// stays pending (its PATCH may have reached Vapi, so reconcile sends it again
/// until Vapi confirms it), with its attempts, backoff and error. A re-sent claim
/// lost what was there before it: then the number goes back to its last
/// confirmed assistant (its routing row), still pending, so reconcile makes Vapi
/// hold that one whatever an earlier unconfirmed change may have left there.
async fn restore(db: &Db, claim: &Claim) -> Result<(), DbError> {
    if claim.resent {
        tracing::warn!(
            "a refused change whose claim was re-sent: back to the confirmed assistant, pending"
        );
        db.query(
            "UPDATE managed_phone_numbers n
                SET assistant_id = coalesce((SELECT m.vapi_assistant_id FROM phone_number_mapping m
                                              WHERE m.inbound_phone_number = n.phone_number
                                                AND m.org_id = n.org_id), n.assistant_id),
                    assistant_pending = true, route_attempts = 1,
                    next_route_attempt_at = now(), route_gave_up_at = NULL,
                    claim_token = NULL, claimed_until = NULL, updated_at = now()
              WHERE id = $1 AND claim_token = $2",
            &[
                (&claim.id, Type::UUID),
                (&claim.token.as_uuid(), Type::UUID),
            ],
        )
        .await?;
        return Ok(());
    }
    let b = &claim.before;
    db.query(
        "UPDATE managed_phone_numbers
            SET assistant_id = $3, display_name = $4, assistant_pending = $5,
                route_attempts = $6, next_route_attempt_at = $7, last_route_error = $8,
                route_gave_up_at = $9,
                claim_token = NULL, claimed_until = NULL, updated_at = now()
          WHERE id = $1 AND claim_token = $2",
        &[
            (&claim.id, Type::UUID),
            (&claim.token.as_uuid(), Type::UUID),
            (&b.assistant, Type::TEXT),
            (&b.name, Type::TEXT),
            (&b.pending, Type::BOOL),
            (&b.attempts, Type::INT4),
            (&b.next_attempt_at, Type::TIMESTAMPTZ),
            (&b.last_error, Type::JSONB),
            (&b.gave_up_at, Type::TIMESTAMPTZ),
        ],
    )
    .await?;
    Ok(())
}
