//! The purchase's intent: a `provisioning` row claimed by this request (or by
//! reconcile), and the stamp of each finished step. The outcome is in
//! [`super::outcome`].

use serde_json::{Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{PurchaseError, PurchaseLimit, PurchaseRequest};
use crate::audit::{self, AuditEntry};
use crate::credential::fingerprint::TokenFingerprint;
use crate::db::{Db, DbError};
use crate::identity::Caller;
use crate::ids::{AccountSid, AssistantId, E164, NumberName, OrgId, PhoneNumberSid};
use crate::steps::{ClaimToken, StepsConfig};

/// A provisioning row this request holds.
#[derive(Debug, Clone)]
pub struct PurchaseClaim {
    pub(super) id: Uuid,
    pub(super) org: OrgId,
    pub(super) number: E164,
    pub(super) token: ClaimToken,
    pub(super) operation_id: Uuid,
    /// Stamped on the row, or known on the org.
    pub(super) subaccount: Option<AccountSid>,
    pub(super) number_sid: Option<PhoneNumberSid>,
    pub(super) vapi_phone_id: Option<String>,
    pub(super) attempts: i32,
    pub(super) assistant: Option<AssistantId>,
    pub(super) name: Option<NumberName>,
    /// The org's slot: `None` (empty), or its source and account SID.
    pub(super) slot: Option<(String, Option<String>)>,
    /// The keyed fingerprint of the token the slot holds (`None`: not recorded,
    /// e.g. sealed before fingerprints were kept).
    pub(super) slot_token_fp: Option<String>,
    /// When the intent was first committed: nothing of this purchase can exist at
    /// a provider from before.
    pub(super) started_at: chrono::DateTime<chrono::Utc>,
    /// A purchase / an import was sent before (its attempt is stamped first): its
    /// outcome is looked up, never assumed.
    pub(super) buy_attempted: bool,
    pub(super) import_attempted: bool,
    /// Whether Vapi takes the number's messaging too (its `smsEnabled`).
    pub(super) sms_enabled: bool,
}

/// What a number already is when this request could not claim it.
#[derive(Debug)]
pub(super) enum Existing {
    /// Another request of this org is buying it right now: the steps it has left.
    InProgress(Vec<&'static str>),
    /// Already ours and active (a repeated request).
    Active(ActiveNumber),
    /// Ours, being released.
    Releasing,
    /// Another org's.
    Taken,
}

/// An active number, as the purchase answers it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveNumber {
    pub phone_number: String,
    pub twilio_phone_sid: Option<String>,
    pub vapi_phone_id: Option<String>,
    pub assistant_id: Option<String>,
    pub name: Option<String>,
    /// Whether Vapi took the number's messaging too.
    pub sms_enabled: bool,
    /// A later assistant change Vapi has not confirmed yet (`assistantId` is the
    /// new one; Vapi may still route to the one before): a repeat of a finished
    /// purchase says so rather than name an assistant Vapi may not route to.
    pub assistant_pending: bool,
}

const CLAIM_COLS: &str = "id, org_id, phone_number, operation_id,
    coalesce(twilio_subaccount_sid, (SELECT twilio_subaccount_sid FROM organizations o WHERE o.id = org_id)),
    twilio_phone_sid, CASE WHEN imported_at IS NOT NULL THEN vapi_phone_id END,
    purchase_attempts, assistant_id, display_name,
    (SELECT jsonb_build_array(c.source, c.metadata->>'accountSid', c.metadata->>'tokenFingerprint') FROM org_credentials c
      WHERE c.org_id = managed_phone_numbers.org_id AND c.provider = 'twilio'),
    created_at, buy_attempted_at IS NOT NULL, import_attempted_at IS NOT NULL, sms_enabled";

fn claim_from_row(row: &Row, token: ClaimToken) -> Result<PurchaseClaim, DbError> {
    let shape = |what: &str| DbError::Shape(format!("provisioning row: {what}"));
    let opt_parse = |i: usize| -> Option<String> { row.get(i) };
    let slot: Option<Value> = row.get(10);
    Ok(PurchaseClaim {
        id: row.get(0),
        org: OrgId::new(row.get(1)),
        number: row
            .get::<_, String>(2)
            .parse()
            .map_err(|_| shape("number"))?,
        token,
        operation_id: row.get(3),
        subaccount: opt_parse(4)
            .map(|s| s.parse())
            .transpose()
            .map_err(|_| shape("subaccount"))?,
        number_sid: opt_parse(5)
            .map(|s| s.parse())
            .transpose()
            .map_err(|_| shape("number sid"))?,
        vapi_phone_id: row.get(6),
        attempts: row.get(7),
        assistant: opt_parse(8)
            .map(|s| s.parse())
            .transpose()
            .map_err(|_| shape("assistant"))?,
        name: opt_parse(9)
            .map(|s| s.parse())
            .transpose()
            .map_err(|_| shape("name"))?,
        slot_token_fp: slot
            .as_ref()
            .and_then(|v| v.get(2)?.as_str().map(str::to_owned)),
        slot: slot.and_then(|v| {
            let source = v.get(0)?.as_str()?.to_owned();
            Some((source, v.get(1).and_then(Value::as_str).map(str::to_owned)))
        }),
        started_at: row.get(11),
        buy_attempted: row.get(12),
        import_attempted: row.get(13),
        sms_enabled: row.get(14),
    })
}

/// Step 1: the intent, in one transaction. Creates the org on its first purchase,
/// refuses a BYOC org, and either inserts a `provisioning` row claimed by `token`
/// (the one-owner index keeps two orgs from holding one number) or claims this
/// org's own unfinished purchase of the number (a repeat, or a dead holder's). A
/// new row over the org's daily `limit` is refused and rolled back (see
/// [`PurchaseLimit`] for why the org's row is locked first).
pub(super) async fn claim(
    db: &Db,
    config: &StepsConfig,
    caller: &Caller,
    request_id: &str,
    req: &PurchaseRequest,
    limit: PurchaseLimit,
    token: ClaimToken,
) -> Result<Result<PurchaseClaim, Existing>, PurchaseError> {
    let org = caller.org_id;
    let ttl = config.claim_ttl.as_secs_f64();
    let assistant = req.assistant_id.as_ref().map(AssistantId::as_str);
    let name = req.name.as_ref().map(NumberName::as_str);
    let outcome = db
        .transaction(async |tx| {
            // The org is created on its first purchase. Its own statement: a
            // concurrent first purchase's INSERT waits here for this one's COMMIT,
            // and the lock below, a later statement, then sees the row.
            tx.query_typed(
                "INSERT INTO organizations (id) VALUES ($1) ON CONFLICT (id) DO NOTHING",
                &[(&org.as_uuid(), Type::UUID)],
            )
            .await?;
            // Purchases of one org take turns here until COMMIT, and so do they with
            // a save's slot commit (which updates the org's row for its lease): the
            // slot read and the count below, later statements with fresh snapshots
            // (READ COMMITTED), see every purchase and save of the org that passed
            // first — a BYOC save committed just before is never missed. NO KEY
            // UPDATE, not UPDATE: the foreign-key checks of the org's other writes
            // (KEY SHARE) never wait.
            let offboarding = tx
                .query_typed_one(
                    "SELECT offboard_requested_at IS NOT NULL FROM organizations
                      WHERE id = $1 FOR NO KEY UPDATE",
                    &[(&org.as_uuid(), Type::UUID)],
                )
                .await?;
            // Offboarding takes the same row lock for its intent: from its commit on,
            // nothing new is bought for the org.
            if offboarding.get::<_, bool>(0) {
                return Err(PurchaseError::OrgOffboarding);
            }
            // A token being promoted: an import carrying the primary read now could
            // carry a dead token a moment later (the promotion's gate takes this
            // row lock too, and waits for purchases that hold a claim).
            if org_token_promoting(tx, org).await? {
                return Err(PurchaseError::TokenRotating);
            }
            let slot = tx
                .query_typed_opt(
                    "SELECT source FROM org_credentials WHERE org_id = $1 AND provider = 'twilio'",
                    &[(&org.as_uuid(), Type::UUID)],
                )
                .await?;
            if slot.is_some_and(|r| r.get::<_, &str>(0) == "byoc") {
                // A repeat of a purchase that finished before the switch is still
                // answered as such; anything else is refused.
                return match existing(tx, org, req).await {
                    Ok(found @ Existing::Active(_)) => Ok(Err(found)),
                    Err(e @ PurchaseError::Differs { .. }) => Err(e),
                    _ => Err(PurchaseError::ByocInUse),
                };
            }
            let inserted = tx
                .query_typed_opt(
                    &format!(
                        "INSERT INTO managed_phone_numbers
                            (org_id, phone_number, status, operation_id, claim_token, claimed_until,
                             purchase_attempts, assistant_id, display_name, sms_enabled)
                         VALUES ($1, $2, 'provisioning', $3, $4, now() + make_interval(secs => $5), 1, $6, $7,
                                 coalesce($8, true))
                         ON CONFLICT (phone_number) WHERE status <> 'released' DO NOTHING
                         RETURNING {CLAIM_COLS}"
                    ),
                    &[
                        (&org.as_uuid(), Type::UUID),
                        (&req.phone_number.as_str(), Type::TEXT),
                        (&Uuid::new_v4(), Type::UUID),
                        (&token.as_uuid(), Type::UUID),
                        (&ttl, Type::FLOAT8),
                        (&assistant, Type::TEXT),
                        (&name, Type::TEXT),
                        (&req.sms_enabled, Type::BOOL),
                    ],
                )
                .await?;
            let row = match inserted {
                Some(row) => {
                    // A new purchase. A routing row of another org (left behind)
                    // would refuse the number only after buying it: refuse it now
                    // (the insert rolls back). Then the limit: when the org has
                    // `per_day` other rows created in the last 24 hours, the
                    // `per_day`-th newest of them leaving the window is when the
                    // next purchase is allowed. The database's clock, as of this
                    // statement (after the lock wait): `now()` is when the
                    // transaction began, and a purchase that waited ahead of this
                    // one may carry a later `created_at` than that.
                    let new_id: Uuid = row.get(0);
                    let per_day = i64::from(limit.per_day.get());
                    let checks = tx
                        .query_typed_one(
                            "SELECT EXISTS (SELECT 1 FROM phone_number_mapping
                                             WHERE inbound_phone_number = $2 AND org_id <> $1),
                                    w.next_at,
                                    ceil(extract(epoch FROM w.next_at - statement_timestamp()))::int8
                               FROM (SELECT (SELECT created_at + interval '24 hours'
                                               FROM managed_phone_numbers
                                              WHERE org_id = $1 AND id <> $3
                                                AND created_at > statement_timestamp() - interval '24 hours'
                                              ORDER BY created_at DESC
                                              OFFSET $4 - 1 LIMIT 1) AS next_at) w",
                            &[
                                (&org.as_uuid(), Type::UUID),
                                (&req.phone_number.as_str(), Type::TEXT),
                                (&new_id, Type::UUID),
                                (&per_day, Type::INT8),
                            ],
                        )
                        .await?;
                    if checks.get::<_, bool>(0) {
                        return Err(PurchaseError::RoutedElsewhere);
                    }
                    let next_at: Option<chrono::DateTime<chrono::Utc>> = checks.get(1);
                    if let Some(next_at) = next_at {
                        let retry_after_secs = checks.get::<_, i64>(2).clamp(1, 24 * 3600) as u64;
                        tracing::warn!(
                            per_day,
                            %next_at,
                            "purchase refused: the org's daily purchase limit is reached"
                        );
                        return Err(PurchaseError::LimitReached {
                            per_day: limit.per_day.get(),
                            next_at,
                            retry_after_secs,
                        });
                    }
                    Some(row)
                }
                // This org's unfinished purchase of the number: ours if its claim
                // expired (a dead holder) or is ours already (a re-sent intent).
                None => tx
                    .query_typed_opt(
                        &format!(
                            "UPDATE managed_phone_numbers
                                -- purchase_attempts counts the first request and reconcile's
                                -- attempts only: it is what reconcile gives up by, and a
                                -- user's repeats never use it up.
                                SET claim_token = $3, claimed_until = now() + make_interval(secs => $4),
                                    -- Fixed once buying started (money may have moved): a
                                    -- repeat asking for others is refused below.
                                    assistant_id = CASE WHEN buy_attempted_at IS NULL THEN coalesce($5, assistant_id)
                                                        ELSE assistant_id END,
                                    display_name = CASE WHEN buy_attempted_at IS NULL THEN coalesce($6, display_name)
                                                        ELSE display_name END,
                                    sms_enabled = CASE WHEN buy_attempted_at IS NULL THEN coalesce($7, sms_enabled)
                                                       ELSE sms_enabled END,
                                    updated_at = now()
                              WHERE org_id = $1 AND phone_number = $2 AND status = 'provisioning'
                                AND (claim_token IS NULL OR claimed_until < now() OR claim_token = $3)
                              RETURNING {CLAIM_COLS}"
                        ),
                        &[
                            (&org.as_uuid(), Type::UUID),
                            (&req.phone_number.as_str(), Type::TEXT),
                            (&token.as_uuid(), Type::UUID),
                            (&ttl, Type::FLOAT8),
                            (&assistant, Type::TEXT),
                            (&name, Type::TEXT),
                            (&req.sms_enabled, Type::BOOL),
                        ],
                    )
                    .await?,
            };
            let Some(row) = row else {
                return Ok(Err(existing(tx, org, req).await?));
            };
            let claim = claim_from_row(&row, token)?;
            if claim.buy_attempted {
                // Rolls the claim back: a refused repeat changes nothing.
                refuse_other_values(
                    req,
                    claim.assistant.as_ref().map(AssistantId::as_str),
                    claim.name.as_ref().map(NumberName::as_str),
                    claim.sms_enabled,
                )?;
            }
            audit::record(
                tx,
                &AuditEntry {
                    caller,
                    action: "number.purchase",
                    target: req.phone_number.as_str(),
                    request_id,
                    outcome: "requested",
                    detail: json!({
                        "operationId": claim.operation_id,
                        "attempt": claim.attempts,
                        "assistantId": assistant,
                    }),
                },
            )
            .await?;
            Ok(Ok(claim))
        })
        .await;
    match outcome {
        // The connection dropped around COMMIT: if the row carries our token, the
        // intent committed and is ours.
        Err(PurchaseError::Db(e)) if e.is_connection_lost() => {
            match claimed_by(db, &req.phone_number, token).await? {
                Some(claim) => Ok(Ok(claim)),
                None => Err(PurchaseError::Db(e)),
            }
        }
        other => other,
    }
}

/// Whether the org's token is between the start of a promotion and its end.
async fn org_token_promoting(
    tx: &tokio_postgres::Transaction<'_>,
    org: OrgId,
) -> Result<bool, PurchaseError> {
    let row = tx
        .query_typed_one(
            &format!("SELECT EXISTS (SELECT 1 FROM token_rotations r WHERE r.org_id = $1 AND {PROMOTING})"),
            &[(&org.as_uuid(), Type::UUID)],
        )
        .await?;
    Ok(row.get(0))
}

/// A token rotation `r` between the start of its promotion and its end.
const PROMOTING: &str = "r.promote_started_at IS NOT NULL AND r.promoted_at IS NULL
    AND r.done_at IS NULL AND r.cancelled_at IS NULL";

async fn claimed_by(
    db: &Db,
    number: &E164,
    token: ClaimToken,
) -> Result<Option<PurchaseClaim>, DbError> {
    db.query_opt(
        &format!(
            "SELECT {CLAIM_COLS} FROM managed_phone_numbers
              WHERE phone_number = $1 AND claim_token = $2 AND status = 'provisioning'"
        ),
        &[
            (&number.as_str(), Type::TEXT),
            (&token.as_uuid(), Type::UUID),
        ],
    )
    .await?
    .map(|r| claim_from_row(&r, token))
    .transpose()
}

/// A repeat of a purchase that has started buying must ask for what it started
/// with; a field the repeat leaves out asks for nothing.
fn refuse_other_values(
    req: &PurchaseRequest,
    assistant: Option<&str>,
    name: Option<&str>,
    sms_enabled: bool,
) -> Result<(), PurchaseError> {
    let mut differs = Vec::new();
    if req.sms_enabled.is_some_and(|sms| sms != sms_enabled) {
        differs.push("smsEnabled");
    }
    if req
        .assistant_id
        .as_ref()
        .is_some_and(|a| Some(a.as_str()) != assistant)
    {
        differs.push("assistantId");
    }
    if req.name.as_ref().is_some_and(|n| Some(n.as_str()) != name) {
        differs.push("name");
    }
    if differs.is_empty() {
        return Ok(());
    }
    tracing::info!(
        ?differs,
        "a repeat of a started purchase asked for other values; refused"
    );
    Err(PurchaseError::Differs {
        differs,
        assistant: assistant.map(str::to_owned),
        name: name.map(str::to_owned),
        sms_enabled,
    })
}

async fn existing(
    tx: &tokio_postgres::Transaction<'_>,
    org: OrgId,
    req: &PurchaseRequest,
) -> Result<Existing, PurchaseError> {
    let number = &req.phone_number;
    let row = tx
        .query_typed_opt(
            "SELECT org_id = $1, status, twilio_phone_sid, vapi_phone_id, assistant_id, display_name,
                    twilio_subaccount_sid IS NULL, bought_at IS NULL, imported_at IS NULL,
                    buy_attempted_at IS NOT NULL, sms_enabled, assistant_pending
               FROM managed_phone_numbers WHERE phone_number = $2 AND status <> 'released'",
            &[(&org.as_uuid(), Type::UUID), (&number.as_str(), Type::TEXT)],
        )
        .await?;
    // Released between the INSERT and here: the caller tries again.
    let Some(row) = row else {
        return Err(PurchaseError::Retry);
    };
    if !row.get::<_, bool>(0) {
        return Ok(Existing::Taken);
    }
    let status = row.get::<_, &str>(1);
    if status == "active" || (status == "provisioning" && row.get::<_, bool>(9)) {
        refuse_other_values(req, row.get(4), row.get(5), row.get(10))?;
    }
    Ok(match status {
        "provisioning" => Existing::InProgress(
            [(6, "subaccount"), (7, "twilio"), (8, "vapi")]
                .into_iter()
                .filter(|(i, _)| row.get::<_, bool>(*i))
                .map(|(_, step)| step)
                .collect(),
        ),
        "active" => Existing::Active(ActiveNumber {
            phone_number: number.to_string(),
            twilio_phone_sid: row.get(2),
            vapi_phone_id: row.get(3),
            assistant_id: row.get(4),
            name: row.get(5),
            sms_enabled: row.get(10),
            assistant_pending: row.get(11),
        }),
        _ => Existing::Releasing,
    })
}

/// Stamp a step (an attempt before a creating call, or a finished step) while the
/// claim is ours. `false`: the claim was taken over (its new holder looks the
/// step's result up before acting).
pub(super) async fn stamp(
    db: &Db,
    claim: &PurchaseClaim,
    step: Stamp<'_>,
) -> Result<bool, DbError> {
    let (sql, value): (&str, Option<String>) = match step {
        // Nothing is bought for an org being offboarded: the org's row, locked
        // FOR SHARE, takes turns with the offboarding's intent (which updates it).
        Stamp::BuyAttempt => (
            "UPDATE managed_phone_numbers SET buy_attempted_at = coalesce(buy_attempted_at, now()),
                    updated_at = now()
              WHERE id = $1 AND claim_token = $2 AND $3::text IS NULL
                AND EXISTS (SELECT 1 FROM organizations o
                             WHERE o.id = managed_phone_numbers.org_id
                               AND o.offboard_requested_at IS NULL FOR SHARE)
              RETURNING 1",
            None,
        ),
        Stamp::Bought(sid) => (
            "UPDATE managed_phone_numbers SET twilio_phone_sid = $3, bought_at = coalesce(bought_at, now()),
                    updated_at = now()
              WHERE id = $1 AND claim_token = $2 RETURNING 1",
            Some(sid.to_string()),
        ),
        // Not while the org's token is being promoted (see `org_token_promoting`):
        // the purchase stays pending and is resumed after it.
        Stamp::ImportAttempt => (
            "UPDATE managed_phone_numbers SET import_attempted_at = coalesce(import_attempted_at, now()),
                    updated_at = now()
              WHERE id = $1 AND claim_token = $2 AND $3::text IS NULL
                AND NOT EXISTS (SELECT 1 FROM token_rotations r
                                 WHERE r.org_id = managed_phone_numbers.org_id
                                   AND r.promote_started_at IS NOT NULL AND r.promoted_at IS NULL
                                   AND r.done_at IS NULL AND r.cancelled_at IS NULL)
              RETURNING 1",
            None,
        ),
        // With the fingerprint of the token the import carries.
        Stamp::Imported(id, _) => (
            "UPDATE managed_phone_numbers SET vapi_phone_id = $3, imported_at = coalesce(imported_at, now()),
                    twilio_token_fp = coalesce($4, twilio_token_fp), updated_at = now()
              WHERE id = $1 AND claim_token = $2 RETURNING 1",
            Some(id.to_owned()),
        ),
    };
    let fp = match &step {
        Stamp::Imported(_, fp) => fp.map(TokenFingerprint::as_str),
        _ => None,
    };
    let row = db
        .query_opt(
            sql,
            &[
                (&claim.id, Type::UUID),
                (&claim.token.as_uuid(), Type::UUID),
                (&value, Type::TEXT),
                (&fp, Type::TEXT),
            ],
        )
        .await?;
    Ok(row.is_some())
}

/// Whether the claim's org is being (or was) offboarded.
pub(super) async fn org_offboarding(db: &Db, claim: &PurchaseClaim) -> Result<bool, DbError> {
    let row = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM managed_phone_numbers n JOIN organizations o ON o.id = n.org_id
                             WHERE n.id = $1 AND o.offboard_requested_at IS NOT NULL)",
            &[(&claim.id, Type::UUID)],
        )
        .await?;
    row.try_get(0)
        .map_err(|e| DbError::Shape(format!("offboarding: {e}")))
}

pub(super) enum Stamp<'a> {
    BuyAttempt,
    Bought(&'a PhoneNumberSid),
    ImportAttempt,
    /// The Vapi id, and the fingerprint of the token the import carries.
    Imported(&'a str, Option<&'a TokenFingerprint>),
}

/// Record the org's subaccount while the claim is ours. The org keeps the first
/// one recorded: when two first purchases of one org each created one, both use
/// the org's (the other is left empty, billing nothing). Returns the org's
/// subaccount, or `None` if the claim was taken over.
pub(super) async fn stamp_subaccount(
    db: &Db,
    claim: &PurchaseClaim,
    sid: &AccountSid,
) -> Result<Option<AccountSid>, DbError> {
    let row = db
        .query_opt(
            "WITH ours AS (
                 SELECT org_id FROM managed_phone_numbers WHERE id = $1 AND claim_token = $2),
             org AS (
                 UPDATE organizations SET twilio_subaccount_sid = coalesce(twilio_subaccount_sid, $3)
                  WHERE id = (SELECT org_id FROM ours)
                  RETURNING twilio_subaccount_sid)
             UPDATE managed_phone_numbers SET twilio_subaccount_sid = (SELECT twilio_subaccount_sid FROM org),
                    updated_at = now()
              WHERE id = $1 AND claim_token = $2
              RETURNING twilio_subaccount_sid",
            &[
                (&claim.id, Type::UUID),
                (&claim.token.as_uuid(), Type::UUID),
                (&sid.as_str(), Type::TEXT),
            ],
        )
        .await?;
    row.map(|r| {
        r.get::<_, String>(0)
            .parse()
            .map_err(|_| DbError::Shape("organizations.twilio_subaccount_sid".into()))
    })
    .transpose()
}

/// Reconcile: claim the next provisioning row whose holder is gone and whose
/// backoff has passed, fewest attempts first.
pub(super) async fn claim_next_due(
    db: &Db,
    config: &StepsConfig,
    run_started: chrono::DateTime<chrono::Utc>,
) -> Result<Option<PurchaseClaim>, DbError> {
    let token = ClaimToken::new();
    let row = db
        .query_opt(
            &format!(
                "UPDATE managed_phone_numbers
                    SET purchase_attempts = purchase_attempts
                            + CASE WHEN claim_token IS NOT DISTINCT FROM $2 THEN 0 ELSE 1 END,
                        claim_token = $2, claimed_until = now() + make_interval(secs => $1),
                        updated_at = now()
                  WHERE id = (SELECT id FROM managed_phone_numbers
                               WHERE status = 'provisioning'
                                 AND NOT EXISTS (SELECT 1 FROM token_rotations r
                                                  WHERE r.org_id = managed_phone_numbers.org_id
                                                    AND {PROMOTING})
                                 AND (claim_token = $2
                                      OR ((claim_token IS NULL OR claimed_until < now())
                                          AND coalesce(next_attempt_at, '-infinity') <= now()
                                          AND updated_at < $3))
                               ORDER BY claim_token IS NOT DISTINCT FROM $2 DESC,
                                        purchase_attempts, created_at, id
                               LIMIT 1 FOR UPDATE SKIP LOCKED)
                    AND status = 'provisioning'
                    AND (claim_token IS NULL OR claimed_until < now() OR claim_token = $2)
                  RETURNING {CLAIM_COLS}"
            ),
            &[
                (&config.claim_ttl.as_secs_f64(), Type::FLOAT8),
                (&token.as_uuid(), Type::UUID),
                (&run_started, Type::TIMESTAMPTZ),
            ],
        )
        .await?;
    row.map(|r| claim_from_row(&r, token)).transpose()
}
