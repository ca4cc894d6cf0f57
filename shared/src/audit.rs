//! The append-only audit log: one row per state change, written in the same
//! transaction as the change, so a change without its record cannot commit.

use crate::identity::Caller;

/// One audit row. `target` is a phone number or an account SID, never a token.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub caller: &'a Caller,
    pub action: &'static str,
    pub target: &'a str,
    pub request_id: &'a str,
    pub outcome: &'static str,
    pub detail: serde_json::Value,
}

pub async fn record(
    tx: &tokio_postgres::Transaction<'_>,
    entry: &AuditEntry<'_>,
) -> Result<(), tokio_postgres::Error> {
    use tokio_postgres::types::Type;
    tx.query_typed(
        "INSERT INTO audit_log (org_id, actor, action, target, request_id, outcome, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            (&entry.caller.org_id.as_uuid(), Type::UUID),
            (&entry.caller.subject, Type::TEXT),
            (&entry.action, Type::TEXT),
            (&entry.target, Type::TEXT),
            (&entry.request_id, Type::TEXT),
            (&entry.outcome, Type::TEXT),
            (&entry.detail, Type::JSONB),
        ],
    )
    .await?;
    Ok(())
}
