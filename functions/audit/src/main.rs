//! `audit` — runs on a schedule (EventBridge) and holds what Twilio bills and Vapi
//! routes against the database (`shared::carrier_audit`): it continues the pass in
//! progress, or starts one when the last began `AUDIT_EVERY_HOURS` ago, and stops
//! while there is time to write what it found. Its report is one JSON log line; the
//! open findings go out as CloudWatch metrics (EMF). An event `{"force": true}`
//! starts a pass although none is due (a run by hand).

use std::time::{Duration, SystemTime};

use lambda_runtime::{Context, LambdaEvent, service_fn};
use serde::Deserialize;
use serde_json::Value;
use shared::carrier_audit::{AuditReport, AuditService};
use shared::config::{Env, aws_sdk_config};
use shared::metrics::{MetricsConfig, emit};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the event may say; anything else in it (EventBridge's scheduled-event
/// fields) is ignored.
#[derive(Debug, Default, Deserialize)]
struct AuditEvent {
    #[serde(default)]
    force: bool,
}

async fn run(
    service: &AuditService,
    metrics: &MetricsConfig,
    event: Value,
    ctx: &Context,
) -> Result<AuditReport, Error> {
    let force = serde_json::from_value::<AuditEvent>(event)
        .map(|e| e.force)
        .unwrap_or(false);
    let left = ctx
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let report = service.auditor().run(&ctx.request_id, force, left).await?;
    // One JSON line, the report as an object (Logs Insights reads its fields).
    println!(
        "{}",
        serde_json::json!({
            "message": "carrier audit run",
            "requestId": ctx.request_id,
            "report": report,
        })
    );
    emit(
        metrics,
        &report.metrics(metrics),
        &mut std::io::stdout().lock(),
    );
    if !report.errors.is_empty() {
        return Err(format!("the audit ended early: {}", report.errors.join("; ")).into());
    }
    Ok(report)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let aws = aws_sdk_config(&env)?;
    let service = AuditService::from_env(&env, &aws).await?;
    let metrics = MetricsConfig::from_env(&env);
    let (service, metrics) = (&service, &metrics);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        run(service, metrics, event.payload, &event.context).await
    }))
    .await
}
