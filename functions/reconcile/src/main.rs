//! `reconcile` — runs on a schedule (EventBridge) and resumes every pending number
//! release: oldest first, at most `RECONCILE_BATCH` (default 25) per run, skipping
//! numbers another release holds, and stopping while there is still time to write
//! the outcome before the Lambda's own timeout. Answers a report
//! `{claimed, released, still_pending, lost}`.

use std::time::{Duration, SystemTime};

use lambda_runtime::{Context, LambdaEvent, service_fn};
use serde_json::Value;
use shared::config::{Env, aws_sdk_config};
use shared::release::{ReconcileReport, ReleaseService};

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn run(
    service: &ReleaseService,
    batch: usize,
    ctx: &Context,
) -> Result<ReconcileReport, Error> {
    let deadline = ctx.deadline();
    let report = service
        .releaser()
        .reconcile(batch, &ctx.request_id, || {
            deadline
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
        .await?;
    tracing::info!(?report, "reconcile run done");
    Ok(report)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let aws = aws_sdk_config().await;
    let service = ReleaseService::from_env(&env, &aws).await?;
    let batch: usize = env.parse_or("RECONCILE_BATCH", 25)?;
    let service = &service;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        run(service, batch, &event.context).await
    }))
    .await
}
