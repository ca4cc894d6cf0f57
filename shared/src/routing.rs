//! Which Vapi assistant a managed number routes to (update-number), on the
//! provider-step protocol ([`crate::steps`]):
//!
//! 1. **Intent**: one conditional UPDATE claims the active number (a claim token
//!    with an expiry, as a release does) and records the new assistant (and name)
//!    with `assistant_pending`; a re-sent statement with the same token is ours.
//! 2. **Vapi** `PATCH /phone-number/{id}` `{assistantId, name?}` (idempotent, retried
//!    with backoff), no connection held, within the request's deadline.
//! 3. **Outcome**, only while the claim is ours: confirmed → the routing row follows
//!    and `assistant_pending` clears (200); Vapi unreachable → stays pending (202) and
//!    reconcile sends it again; Vapi refused it (an assistant it does not know) →
//!    the previous assistant is restored (422).

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
use crate::steps::{ClaimToken, Deadline, StepsConfig};
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
                    "Vapi refused this assistant for the number ({}); the previous assistant stays",
                    p.stable_code()
                ),
            },
            RouteError::Db(db) => db.into(),
        }
    }
}

/// A number this change holds.
struct Claim {
    id: Uuid,
    org: OrgId,
    number: String,
    token: ClaimToken,
    vapi_phone_id: Option<String>,
    assistant: String,
    name: Option<String>,
    previous_assistant: Option<String>,
    previous_name: Option<String>,
}

const CLAIM: &str = "UPDATE managed_phone_numbers m
        SET claim_token = $1, claimed_until = now() + make_interval(secs => $2),
            assistant_id = coalesce($5, m.assistant_id),
            display_name = coalesce($6, m.display_name),
            assistant_pending = true, updated_at = now()
       FROM (SELECT id, assistant_id, display_name FROM managed_phone_numbers
              WHERE status = 'active'
                AND (claim_token = $1
                     OR ((claim_token IS NULL OR claimed_until < now())
                         AND CASE WHEN $3::uuid IS NOT NULL THEN org_id = $3 AND phone_number = $4
                                  -- reconcile: a change Vapi has not confirmed, left for a claim's length
                                  ELSE assistant_pending AND updated_at < now() - make_interval(secs => $2) END))
              ORDER BY updated_at
              LIMIT 1 FOR UPDATE SKIP LOCKED) old
      WHERE m.id = old.id
      RETURNING m.id, m.org_id, m.phone_number, m.vapi_phone_id, m.assistant_id, m.display_name,
                old.assistant_id, old.display_name";

fn claim_from_row(row: &tokio_postgres::Row, token: ClaimToken) -> Claim {
    Claim {
        id: row.get(0),
        org: OrgId::new(row.get(1)),
        number: row.get(2),
        token,
        vapi_phone_id: row.get(3),
        assistant: row.get::<_, Option<String>>(4).unwrap_or_default(),
        name: row.get(5),
        previous_assistant: row.get(6),
        previous_name: row.get(7),
    }
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
        let claim = claim_from_row(&row, token);
        finish(db, vapi, &claim, caller, request_id, deadline).await
    }

    /// Reconcile: send changes Vapi has not confirmed again (holder gone), at
    /// most `batch`. Returns how many were confirmed.
    pub async fn resume_pending(
        &self,
        batch: usize,
        request_id: &str,
        time_left: &impl Fn() -> std::time::Duration,
    ) -> Result<usize, DbError> {
        let (db, vapi, config) = (self.db, self.vapi, self.config);
        let mut confirmed = 0;
        for _ in 0..batch {
            let budget = time_left().saturating_sub(config.outcome_margin);
            if budget < config.deadline.min(std::time::Duration::from_secs(5)) {
                break;
            }
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
            let Some(row) = row else { break };
            let claim = claim_from_row(&row, token);
            let caller = Caller::system(claim.org, "system:reconcile");
            let deadline = Deadline::after(budget.min(config.deadline));
            let span = tracing::info_span!("reconcile_route", org_id = %claim.org);
            match finish(db, vapi, &claim, &caller, request_id, deadline)
                .instrument(span)
                .await
            {
                Ok(r) if r.routed => confirmed += 1,
                Ok(_) => {}
                Err(RouteError::Db(e)) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "a pending assistant change was refused"),
            }
        }
        Ok(confirmed)
    }
}

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

/// Steps 2 and 3.
async fn finish(
    db: &Db,
    vapi: &VapiClient,
    claim: &Claim,
    caller: &Caller,
    request_id: &str,
    deadline: Deadline,
) -> Result<Routing, RouteError> {
    let Some(vapi_id) = &claim.vapi_phone_id else {
        restore(db, claim).await?;
        return Err(RouteError::NotImported(claim.number.clone()));
    };
    let sent = deadline
        .run(
            "vapi",
            vapi.route_phone_number(vapi_id, &claim.assistant, claim.name.as_deref()),
        )
        .await;
    let sent = match sent {
        // A 4xx repeating cannot change (an assistant Vapi does not know): undo.
        Err(e @ ProviderError::Status { status, .. })
            if (400..500).contains(&status) && ![401, 403, 404, 408, 429].contains(&status) =>
        {
            restore(db, claim).await?;
            return Err(RouteError::Refused(e));
        }
        // Vapi no longer has the number: nothing to route until it is imported again.
        Err(e) if e.is_gone() => {
            tracing::warn!("Vapi no longer has the number; the change is not kept");
            restore(db, claim).await?;
            return Err(RouteError::NotImported(claim.number.clone()));
        }
        other => other,
    };
    let code = sent.as_ref().err().map(ProviderError::stable_code);
    if let Err(e) = &sent {
        tracing::warn!(error = %e, code = e.stable_code(), "assistant change not confirmed by Vapi; it stays pending");
    }
    db.transaction(async |tx| {
        let held = tx
            .query_typed_opt(
                "UPDATE managed_phone_numbers
                    SET claim_token = NULL, claimed_until = NULL,
                        assistant_pending = $3, updated_at = now()
                  WHERE id = $1 AND claim_token = $2 RETURNING 1",
                &[
                    (&claim.id, Type::UUID),
                    (&claim.token.as_uuid(), Type::UUID),
                    (&code.is_some(), Type::BOOL),
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
        if code.is_none() {
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
                outcome: if code.is_none() {
                    "routed"
                } else {
                    "route_pending"
                },
                detail: json!({
                    "assistantId": claim.assistant,
                    "previousAssistantId": claim.previous_assistant,
                    "vapiCode": code,
                }),
            },
        )
        .await?;
        Ok::<_, RouteError>(Routing {
            phone_number: claim.number.clone(),
            assistant_id: claim.assistant.clone(),
            name: claim.name.clone(),
            routed: code.is_none(),
            code,
        })
    })
    .await
}

/// Vapi refused (or cannot take) the change: the number routes as last confirmed
/// (its routing row, which follows only confirmed changes), not as the change
/// before this one, which may itself have been unconfirmed.
async fn restore(db: &Db, claim: &Claim) -> Result<(), DbError> {
    db.query(
        "UPDATE managed_phone_numbers n
            SET assistant_id = coalesce((SELECT m.vapi_assistant_id FROM phone_number_mapping m
                                          WHERE m.inbound_phone_number = n.phone_number
                                            AND m.org_id = n.org_id), $3),
                display_name = $4, assistant_pending = false,
                claim_token = NULL, claimed_until = NULL, updated_at = now()
          WHERE id = $1 AND claim_token = $2",
        &[
            (&claim.id, Type::UUID),
            (&claim.token.as_uuid(), Type::UUID),
            (&claim.previous_assistant, Type::TEXT),
            (&claim.previous_name, Type::TEXT),
        ],
    )
    .await?;
    Ok(())
}
