//! The carrier audit inside the local API, as the deployed `audit` function runs it
//! (the same library entry point, [`shared::carrier_audit::Auditor::run`], with the
//! routes' login): `POST /__control/audit` on the stand-ins' port runs one run now
//! and answers its report (`{"force": false}` in the body runs only a due or
//! unfinished pass, as a scheduled wake-up does; the default starts one, as a run by
//! hand does), and `LOCAL_AUDIT_SECS` (default 0: off) wakes it on a schedule.
//!
//! Locally `AUDIT_GRACE_SECS` defaults to 90 s (deployed: 3600) so that drift seeded
//! by hand through the stand-ins' `/__control/…` is found a minute and a half later.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use shared::carrier_audit::{AuditReport, AuditService};
use shared::config::Env;
use shared::metrics::{MetricsConfig, emit};

use crate::gateway::BoxError;

/// How long one local run may take (the deployed function's timeout is 900 s).
const RUN_BUDGET: Duration = Duration::from_secs(300);

/// The local grace period unless `AUDIT_GRACE_SECS` says otherwise.
pub const LOCAL_GRACE_SECS: &str = "90";

pub struct LocalAudit {
    service: AuditService,
    metrics: MetricsConfig,
}

impl LocalAudit {
    pub async fn from_env(env: &Env, aws: &aws_config::SdkConfig) -> Result<Self, BoxError> {
        let mut env = env.clone();
        if env.get("AUDIT_GRACE_SECS").is_none() {
            env.set("AUDIT_GRACE_SECS", LOCAL_GRACE_SECS);
        }
        Ok(Self {
            service: AuditService::from_env(&env, aws).await?,
            metrics: MetricsConfig::from_env(&env),
        })
    }

    /// One run: its report line and metrics on stdout, as in Lambda.
    pub async fn run_once(&self, request_id: &str, force: bool) -> Result<AuditReport, BoxError> {
        let report = self
            .service
            .auditor()
            .run(request_id, force, RUN_BUDGET)
            .await?;
        println!(
            "{}",
            json!({"message": "carrier audit run", "requestId": request_id, "report": report})
        );
        emit(
            &self.metrics,
            &report.metrics(&self.metrics),
            &mut std::io::stdout().lock(),
        );
        Ok(report)
    }

    /// Wake up every `every`, as the deployed schedule does (a pass only when due).
    pub fn spawn_schedule(self: Arc<Self>, every: Duration) {
        crate::reconcile::every_tick(every, "local-audit", move |id| {
            let this = self.clone();
            async move { this.run_once(&id, false).await.map(drop) }
        });
    }
}

/// Where `POST /__control/audit` finds the audit once the functions are built.
pub type AuditSlot = Arc<OnceLock<Arc<LocalAudit>>>;

pub fn control_routes(slot: AuditSlot) -> Router {
    Router::new()
        .route("/__control/audit", post(run_now))
        .with_state(slot)
}

async fn run_now(State(slot): State<AuditSlot>, body: Bytes) -> Response {
    let force = match serde_json::from_slice::<Value>(&body) {
        _ if body.is_empty() => true,
        Ok(v) if v.is_object() => v.get("force").and_then(Value::as_bool).unwrap_or(true),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "the body is a JSON object: {\"force\": true|false}"})),
            )
                .into_response();
        }
    };
    let Some(audit) = slot.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "the audit is not ready yet (the functions are starting)"})),
        )
            .into_response();
    };
    let id = format!("local-audit-{}", uuid::Uuid::new_v4());
    match audit.run_once(&id, force).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "local audit run failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "the audit run failed; see the log"})),
            )
                .into_response()
        }
    }
}
