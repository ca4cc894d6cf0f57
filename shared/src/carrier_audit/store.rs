//! The audit's statements: its lease and pass, the rows it compares, the findings it
//! keeps, and its repairs (each through the same columns and claims the release and
//! routing protocols use, never over a live claim).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::drift::{Candidate, DriftKind, LiveRow};
use super::price::Monthly;
use crate::audit::{self, AuditEntry};
use crate::db::{Db, DbError};
use crate::identity::Caller;
use crate::ids::OrgId;

/// Who the audit log names for the audit's repairs.
pub const ACTOR: &str = "system:carrier-audit";

/// The pass a run works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub number: i64,
    pub started_at: DateTime<Utc>,
    /// The last subaccount SID covered ("" at the start).
    pub cursor: String,
}

fn shape(what: &'static str) -> impl Fn(tokio_postgres::Error) -> DbError {
    move |e| DbError::Shape(format!("{what}: {e}"))
}

/// Take the audit's lease (free, expired, or already ours) for `ttl_secs`; `None`
/// while another audit holds it.
pub async fn take_lease(db: &Db, token: Uuid, ttl_secs: f64) -> Result<bool, DbError> {
    let row = db
        .query_opt(
            "UPDATE carrier_audit_state
                SET lease_token = $1, lease_until = now() + make_interval(secs => $2),
                    last_run_at = now()
              WHERE lease_token IS NULL OR lease_until < now() OR lease_token = $1
              RETURNING 1",
            &[(&token, Type::UUID), (&ttl_secs, Type::FLOAT8)],
        )
        .await?;
    Ok(row.is_some())
}

pub async fn release_lease(db: &Db, token: Uuid) -> Result<(), DbError> {
    db.query(
        "UPDATE carrier_audit_state SET lease_token = NULL, lease_until = NULL
          WHERE lease_token = $1",
        &[(&token, Type::UUID)],
    )
    .await?;
    Ok(())
}

/// The pass in progress, or a new one when the last began `every_secs` ago (or
/// `force`); `None` when nothing is due.
pub async fn pass_to_run(
    db: &Db,
    token: Uuid,
    every_secs: f64,
    force: bool,
) -> Result<Option<Pass>, DbError> {
    let row = db
        .query_opt(
            "UPDATE carrier_audit_state
                SET pass = CASE WHEN pass_cursor IS NULL THEN pass + 1 ELSE pass END,
                    pass_started_at = CASE WHEN pass_cursor IS NULL THEN now() ELSE pass_started_at END,
                    pass_cursor = coalesce(pass_cursor, '')
              WHERE lease_token = $1
                AND (pass_cursor IS NOT NULL OR $3 OR pass_started_at IS NULL
                     OR pass_started_at <= now() - make_interval(secs => $2))
              RETURNING pass, pass_started_at, pass_cursor",
            &[
                (&token, Type::UUID),
                (&every_secs, Type::FLOAT8),
                (&force, Type::BOOL),
            ],
        )
        .await?;
    row.map(|r| {
        let s = shape("audit pass");
        Ok(Pass {
            number: r.try_get(0).map_err(&s)?,
            started_at: r.try_get(1).map_err(&s)?,
            cursor: r.try_get(2).map_err(&s)?,
        })
    })
    .transpose()
}

/// Move the pass's cursor past `subaccount`; `false` when the lease is no longer ours.
pub async fn advance(db: &Db, token: Uuid, pass: i64, subaccount: &str) -> Result<bool, DbError> {
    let rows = db
        .query(
            "UPDATE carrier_audit_state SET pass_cursor = $3
              WHERE lease_token = $1 AND pass = $2 AND lease_until > now() RETURNING 1",
            &[
                (&token, Type::UUID),
                (&pass, Type::INT8),
                (&subaccount, Type::TEXT),
            ],
        )
        .await?;
    Ok(!rows.is_empty())
}

pub async fn finish_pass(db: &Db, token: Uuid, pass: i64) -> Result<bool, DbError> {
    let rows = db
        .query(
            "UPDATE carrier_audit_state
                SET pass_cursor = NULL, last_finished_pass = pass, last_finished_at = now()
              WHERE lease_token = $1 AND pass = $2 RETURNING 1",
            &[(&token, Type::UUID), (&pass, Type::INT8)],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// An org as the audit sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgView {
    pub id: Uuid,
    /// The subaccount it records.
    pub subaccount: Option<String>,
    /// Offboarding was asked for and is not done: the job holds the org.
    pub offboarding: bool,
    /// Offboarded: its subaccount is closed on purpose, and nothing of it should
    /// remain at Vapi.
    pub offboarded: bool,
    /// It has an open token rotation.
    pub rotating: bool,
    /// The fingerprint of the token its slot holds, when the slot is managed and is
    /// the subaccount it records.
    pub slot_token_fp: Option<String>,
}

/// Every org, with the subaccount it records.
pub async fn orgs(db: &Db) -> Result<Vec<OrgView>, DbError> {
    let rows = db
        .query(
            "SELECT id, twilio_subaccount_sid,
                    offboard_requested_at IS NOT NULL AND offboarded_at IS NULL,
                    offboarded_at IS NOT NULL,
                    EXISTS (SELECT 1 FROM token_rotations r WHERE r.org_id = organizations.id
                              AND r.done_at IS NULL AND r.cancelled_at IS NULL),
                    (SELECT c.metadata->>'tokenFingerprint' FROM org_credentials c
                      WHERE c.org_id = organizations.id AND c.provider = 'twilio'
                        AND c.source = 'managed'
                        AND c.metadata->>'accountSid' = organizations.twilio_subaccount_sid)
               FROM organizations",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let s = shape("orgs");
            Ok(OrgView {
                id: r.try_get(0).map_err(&s)?,
                subaccount: r.try_get(1).map_err(&s)?,
                offboarding: r.try_get(2).map_err(&s)?,
                offboarded: r.try_get(3).map_err(&s)?,
                rotating: r.try_get(4).map_err(&s)?,
                slot_token_fp: r.try_get(5).map_err(&s)?,
            })
        })
        .collect()
}

/// Live rows of these subaccounts or orgs, or with these Vapi ids or numbers.
pub async fn live_rows(
    db: &Db,
    subaccounts: &[String],
    orgs: &[Uuid],
    vapi_ids: &[String],
    numbers: &[String],
) -> Result<Vec<LiveRow>, DbError> {
    let rows = db
        .query(
            "SELECT id, org_id, phone_number, status, twilio_phone_sid, twilio_subaccount_sid,
                    vapi_phone_id, assistant_id, assistant_pending,
                    claim_token IS NOT NULL AND claimed_until >= now(), created_at, updated_at,
                    route_gave_up_at IS NOT NULL, twilio_token_fp
               FROM managed_phone_numbers
              WHERE status <> 'released'
                AND (twilio_subaccount_sid = ANY($1) OR org_id = ANY($2)
                     OR vapi_phone_id = ANY($3) OR phone_number = ANY($4))",
            &[
                (&subaccounts, Type::TEXT_ARRAY),
                (&orgs, Type::UUID_ARRAY),
                (&vapi_ids, Type::TEXT_ARRAY),
                (&numbers, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let s = shape("live rows");
            Ok(LiveRow {
                id: r.try_get(0).map_err(&s)?,
                org_id: r.try_get(1).map_err(&s)?,
                phone_number: r.try_get(2).map_err(&s)?,
                status: r.try_get(3).map_err(&s)?,
                twilio_phone_sid: r.try_get(4).map_err(&s)?,
                subaccount_sid: r.try_get(5).map_err(&s)?,
                vapi_phone_id: r.try_get(6).map_err(&s)?,
                assistant_id: r.try_get(7).map_err(&s)?,
                assistant_pending: r.try_get(8).map_err(&s)?,
                claimed: r.try_get(9).map_err(&s)?,
                created_at: r.try_get(10).map_err(&s)?,
                updated_at: r.try_get(11).map_err(&s)?,
                route_gave_up: r.try_get(12).map_err(&s)?,
                twilio_token_fp: r.try_get(13).map_err(&s)?,
            })
        })
        .collect()
}

/// A number whose Vapi import holds another token than its row says: the row
/// forgets it (an adopt rotation then PATCHes the number with the current token).
pub async fn forget_token(db: &Db, org: Uuid, vapi_phone_id: &str) -> Result<(), DbError> {
    db.query(
        "UPDATE managed_phone_numbers SET twilio_token_fp = NULL
          WHERE org_id = $1 AND vapi_phone_id = $2 AND status <> 'released'",
        &[(&org, Type::UUID), (&vapi_phone_id, Type::TEXT)],
    )
    .await?;
    Ok(())
}

/// What happened to a finding's repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Its kind is flagged only (or there was nothing safe to do).
    None,
    Done,
    Failed(&'static str),
}

/// Keep a finding: a new one, or the open one of its kind and subject seen again
/// (a new pass counts once).
pub async fn record_finding(
    db: &Db,
    c: &Candidate,
    subaccount: &str,
    pass: i64,
    price: Option<&Monthly>,
    repair: &Repair,
) -> Result<bool, DbError> {
    let repaired = *repair == Repair::Done;
    let error = match repair {
        Repair::Failed(code) => Some(*code),
        _ => None,
    };
    let amount = price.map(|p| format!("{:.4}", p.amount));
    let row = db
        .query_one(
            "INSERT INTO carrier_findings AS f
                    (kind, org_id, subaccount_sid, subject, phone_number, detail,
                     monthly_price, price_unit, last_pass, repaired_at, repair_error)
             VALUES ($1, $2, $3, $4, $5, $6, $7::text::numeric, $8, $9,
                     CASE WHEN $10 THEN now() END, $11)
             ON CONFLICT (kind, subject) WHERE closed_at IS NULL DO UPDATE
                SET last_seen_at = now(), detail = EXCLUDED.detail,
                    org_id = coalesce(EXCLUDED.org_id, f.org_id),
                    subaccount_sid = EXCLUDED.subaccount_sid,
                    phone_number = coalesce(EXCLUDED.phone_number, f.phone_number),
                    monthly_price = coalesce(EXCLUDED.monthly_price, f.monthly_price),
                    price_unit = coalesce(EXCLUDED.price_unit, f.price_unit),
                    seen_passes = f.seen_passes + CASE WHEN f.last_pass < EXCLUDED.last_pass THEN 1 ELSE 0 END,
                    last_pass = greatest(f.last_pass, EXCLUDED.last_pass),
                    repaired_at = coalesce(EXCLUDED.repaired_at, f.repaired_at),
                    repair_error = EXCLUDED.repair_error
             RETURNING (xmax = 0)",
            &[
                (&c.kind.code(), Type::TEXT),
                (&c.org, Type::UUID),
                (&subaccount, Type::TEXT),
                (&c.subject, Type::TEXT),
                (&c.phone_number, Type::TEXT),
                (&c.detail, Type::JSONB),
                (&amount, Type::TEXT),
                (&price.map(|p| p.unit.clone()), Type::TEXT),
                (&pass, Type::INT8),
                (&repaired, Type::BOOL),
                (&error, Type::TEXT),
            ],
        )
        .await?;
    row.try_get(0).map_err(shape("finding"))
}

/// Close the open findings of a subaccount this pass covered and did not see again
/// (except those about `skipped` subjects: claimed or fresh this time).
pub async fn close_unseen(
    db: &Db,
    subaccount: &str,
    pass: i64,
    skipped: &[String],
    kept_kinds: &[&str],
) -> Result<u64, DbError> {
    let rows = db
        .query(
            "UPDATE carrier_findings SET closed_at = now()
              WHERE subaccount_sid = $1 AND closed_at IS NULL AND last_pass < $2
                AND NOT (subject = ANY($3)) AND NOT (kind = ANY($4))
              RETURNING 1",
            &[
                (&subaccount, Type::TEXT),
                (&pass, Type::INT8),
                (&skipped, Type::TEXT_ARRAY),
                (&kept_kinds, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    Ok(rows.len() as u64)
}

/// At the end of a pass: close the open findings of subaccounts the pass no longer
/// had to cover (an org's subaccount re-recorded, an account Twilio purged), so no
/// finding stays open for good. `targets`: every subaccount the pass covered or
/// tried to (a failed read keeps its findings open).
pub async fn close_outside(db: &Db, pass: i64, targets: &[String]) -> Result<u64, DbError> {
    let rows = db
        .query(
            "UPDATE carrier_findings SET closed_at = now()
              WHERE closed_at IS NULL AND last_pass < $1 AND NOT (subaccount_sid = ANY($2))
              RETURNING 1",
            &[(&pass, Type::INT8), (&targets, Type::TEXT_ARRAY)],
        )
        .await?;
    Ok(rows.len() as u64)
}

/// `billed_unknown` of ours: a `release_pending` row (due now) for the release
/// protocol, and its audit row. `false` when a live row has the number by now.
#[allow(clippy::too_many_arguments)]
pub async fn record_release(
    db: &Db,
    org: Uuid,
    number: &str,
    number_sid: &str,
    subaccount: &str,
    operation_id: Uuid,
    vapi_phone_id: Option<&str>,
    request_id: &str,
    grace_secs: f64,
) -> Result<RecordedRelease, DbError> {
    db.transaction(async |tx| {
        // Ours only if this database knows the operation; and a number released
        // within the grace period may still be on a lagging list.
        let check = tx
            .query_typed(
                "SELECT purchase_operation_known($1, $2),
                        EXISTS (SELECT 1 FROM managed_phone_numbers
                                 WHERE phone_number = $3 AND status = 'released'
                                   AND released_at > now() - make_interval(secs => $4))",
                &[
                    (&org, Type::UUID),
                    (&operation_id, Type::UUID),
                    (&number, Type::TEXT),
                    (&grace_secs, Type::FLOAT8),
                ],
            )
            .await?;
        let (known, just_released) = match check.first() {
            Some(r) => (r.try_get::<_, bool>(0)?, r.try_get::<_, bool>(1)?),
            None => (false, false),
        };
        if !known {
            return Ok(RecordedRelease::NotOurs);
        }
        if just_released {
            return Ok(RecordedRelease::NotDrift);
        }
        let inserted = tx
            .query_typed(
                "INSERT INTO managed_phone_numbers
                        (org_id, phone_number, twilio_phone_sid, twilio_subaccount_sid,
                         vapi_phone_id, status, operation_id, next_attempt_at,
                         release_requested_at, last_release_error)
                 VALUES ($1, $2, $3, $4, $5, 'release_pending', $6, now(), now(), $7)
                 ON CONFLICT (phone_number) WHERE status <> 'released' DO NOTHING
                 RETURNING id",
                &[
                    (&org, Type::UUID),
                    (&number, Type::TEXT),
                    (&number_sid, Type::TEXT),
                    (&subaccount, Type::TEXT),
                    (&vapi_phone_id, Type::TEXT),
                    (&operation_id, Type::UUID),
                    (
                        &json!({"step": "audit", "code": "billed_unknown"}),
                        Type::JSONB,
                    ),
                ],
            )
            .await?;
        if inserted.is_empty() {
            return Ok(RecordedRelease::NotDrift);
        }
        let caller = Caller::system(OrgId::new(org), ACTOR);
        audit::record(
            tx,
            &AuditEntry {
                caller: &caller,
                action: "number.release_recorded",
                target: number,
                request_id,
                outcome: "release_pending",
                detail: json!({ "finding": "billed_unknown", "operationId": operation_id }),
            },
        )
        .await?;
        Ok::<_, DbError>(RecordedRelease::Recorded)
    })
    .await
}

/// What [`record_release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedRelease {
    Recorded,
    /// The operation id is not one this database knows: flag only.
    NotOurs,
    /// A live row has the number by now, or it was released just now: not drift.
    NotDrift,
}

/// Whether a live row holds this Vapi number, or its E.164 without an import yet
/// (a purchase that may adopt it): read again right before deleting an orphan.
pub async fn vapi_number_is_held(db: &Db, id: &str, number: &str) -> Result<bool, DbError> {
    let row = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM managed_phone_numbers
                             WHERE status <> 'released'
                               AND (vapi_phone_id = $1
                                    OR (phone_number = $2 AND vapi_phone_id IS NULL)))",
            &[(&id, Type::TEXT), (&number, Type::TEXT)],
        )
        .await?;
    row.try_get(0).map_err(shape("vapi number held"))
}

/// Whether `number` still has a live, unclaimed row that Twilio should hold (read
/// again before a `carrier_missing` is recorded: a release may have ended since).
pub async fn row_still_live(db: &Db, number: &crate::ids::E164) -> Result<bool, DbError> {
    let row = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM managed_phone_numbers
                             WHERE phone_number = $1 AND status IN ('active', 'needs_attention')
                               AND (claim_token IS NULL OR claimed_until < now()))",
            &[(&number.as_str(), Type::TEXT)],
        )
        .await?;
    row.try_get(0).map_err(shape("row still live"))
}

/// `assistant_mismatch`: the row's confirmed assistant becomes a pending change
/// (reconcile sends it, as it resends any unconfirmed change) — only while nobody
/// holds the row, no change is pending, and it has not changed since Vapi's list
/// was read. `false` when that no longer holds.
pub async fn resend_assistant(
    db: &Db,
    row: Uuid,
    assistant: &str,
    read_at: DateTime<Utc>,
    request_id: &str,
) -> Result<bool, DbError> {
    db.transaction(async |tx| {
        let updated = tx
            .query_typed(
                "UPDATE managed_phone_numbers
                    SET assistant_pending = true, route_attempts = 0,
                        next_route_attempt_at = now(), route_gave_up_at = NULL,
                        last_route_error = $4, updated_at = now()
                  WHERE id = $1 AND status = 'active' AND NOT assistant_pending
                    AND assistant_id = $2 AND updated_at < $3
                    AND (claim_token IS NULL OR claimed_until < now())
                  RETURNING org_id, phone_number",
                &[
                    (&row, Type::UUID),
                    (&assistant, Type::TEXT),
                    (&read_at, Type::TIMESTAMPTZ),
                    (
                        &json!({"code": "assistant_mismatch", "at": Utc::now()}),
                        Type::JSONB,
                    ),
                ],
            )
            .await?;
        let Some(r) = updated.first() else {
            return Ok(false);
        };
        let org: Uuid = r.try_get(0)?;
        let number: String = r.try_get(1)?;
        let caller = Caller::system(OrgId::new(org), ACTOR);
        audit::record(
            tx,
            &AuditEntry {
                caller: &caller,
                action: "number.assistant_resend",
                target: &number,
                request_id,
                outcome: "assistant_pending",
                detail: json!({ "finding": "assistant_mismatch", "assistantId": assistant }),
            },
        )
        .await?;
        Ok::<_, DbError>(true)
    })
    .await
}

/// The open findings, by kind: how many, how many seen in two passes or more, and
/// their monthly price by unit.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OpenFindings {
    pub by_kind: Vec<(DriftKind, i64, i64)>,
    /// Money at risk per month (billing kinds only), by currency.
    pub at_risk: Vec<(String, f64)>,
}

pub async fn open_findings(db: &Db) -> Result<OpenFindings, DbError> {
    let rows = db
        .query(
            "SELECT kind, count(*), count(*) FILTER (WHERE seen_passes >= 2)
               FROM carrier_findings WHERE closed_at IS NULL GROUP BY kind ORDER BY kind",
            &[],
        )
        .await?;
    let mut out = OpenFindings::default();
    for r in &rows {
        let s = shape("open findings");
        let kind: String = r.try_get(0).map_err(&s)?;
        if let Some(kind) = DriftKind::from_code(&kind) {
            out.by_kind
                .push((kind, r.try_get(1).map_err(&s)?, r.try_get(2).map_err(&s)?));
        }
    }
    let billing: Vec<&str> = DriftKind::ALL
        .into_iter()
        .filter(|k| k.bills())
        .map(DriftKind::code)
        .collect();
    let rows = db
        .query(
            "SELECT price_unit, sum(monthly_price)::float8
               FROM (SELECT DISTINCT ON (coalesce(phone_number, subject)) price_unit, monthly_price
                       FROM carrier_findings
                      WHERE closed_at IS NULL AND kind = ANY($1) AND monthly_price IS NOT NULL
                      ORDER BY coalesce(phone_number, subject), kind) one_per_number
              GROUP BY price_unit ORDER BY price_unit",
            &[(&billing, Type::TEXT_ARRAY)],
        )
        .await?;
    for r in &rows {
        let s = shape("money at risk");
        out.at_risk
            .push((r.try_get(0).map_err(&s)?, r.try_get(1).map_err(&s)?));
    }
    Ok(out)
}

/// A finding's detail for the log: its kind and subject only.
pub fn describe(c: &Candidate) -> Value {
    json!({ "kind": c.kind.code(), "subject": c.subject })
}
