//! `reconcile` — runs on a schedule (EventBridge) and resumes what provider steps
//! left unfinished: due pending releases (backoff passed, or their holder died),
//! fewest attempts first; purchases whose holder died (finished, or undone by
//! releasing what was bought); assistant changes Vapi has not confirmed — each at
//! most `RECONCILE_BATCH` (default 25) per run, stopping while there is still time
//! to write an outcome before the Lambda's own timeout.
//! Then it measures what may bill unseen and emits it as CloudWatch metrics
//! (Embedded Metric Format on stdout; see `shared::release::reconcile`). Answers the
//! run's report.

use std::time::{Duration, SystemTime};

use lambda_runtime::{Context, LambdaEvent, service_fn};
use serde_json::Value;
use shared::config::{Env, aws_sdk_config};
use shared::metrics::{MetricsConfig, emit};
use shared::release::{ReconcileReport, ReleaseService};
use shared::rotation::TokenKit;

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn run(
    service: &ReleaseService,
    batch: usize,
    metrics: &MetricsConfig,
    ctx: &Context,
) -> Result<ReconcileReport, Error> {
    let deadline = ctx.deadline();
    let report = service
        .reconcile(batch, &ctx.request_id, || {
            deadline
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
        .await?;
    tracing::info!(?report, "reconcile run done");
    emit(
        metrics,
        &report.metrics(metrics),
        &mut std::io::stdout().lock(),
    );
    if report.db_errors > 0 {
        return Err("the database failed during the run; see the log".into());
    }
    Ok(report)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let aws = aws_sdk_config(&env)?;
    let secrets = shared::config::SecretLoader::new(&env, &aws);
    // Token rotations are resumed here too: a data key per seal, the rotation's
    // own secondary tokens opened, the fingerprint key.
    let (service, tokens) = tokio::try_join!(ReleaseService::from_env(&env, &aws), async {
        Ok(TokenKit::from_env(&env, &aws, &secrets).await?)
    })?;
    let service = service.with_tokens(tokens);
    let batch: usize = env.parse_or("RECONCILE_BATCH", 25)?;
    let metrics = MetricsConfig::from_env(&env);
    let (service, metrics) = (&service, &metrics);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        run(service, batch, metrics, &event.context).await
    }))
    .await
}
