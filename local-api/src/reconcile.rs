//! Reconcile inside the local API, as the deployed stack runs it on a schedule: the
//! same library entry point the `reconcile` Lambda calls
//! ([`shared::release::ReleaseService::reconcile`]), every `LOCAL_RECONCILE_SECS`
//! (default 30; `0` turns the schedule off), with its report logged and its metrics
//! written to stdout as Embedded Metric Format lines, as in Lambda. Without it a
//! pending release, purchase or assistant change would stay pending forever locally,
//! while the page tells the user "we retry automatically". `POST
//! /__control/reconcile` on the stand-ins' port runs one pass on demand and answers
//! its report.
//!
//! One pass at a time (the Lambda has reserved concurrency 1): a pass asked for
//! while another runs waits for it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use shared::config::{Env, SecretLoader};
use shared::metrics::{MetricsConfig, emit};
use shared::release::{ReconcileReport, ReleaseService};
use shared::rotation::TokenKit;

use crate::gateway::BoxError;

/// How long one pass may take (the deployed function's timeout is 150 s).
const PASS_BUDGET: Duration = Duration::from_secs(120);

/// Reconcile as the local API runs it.
pub struct LocalReconcile {
    service: ReleaseService,
    batch: usize,
    metrics: MetricsConfig,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl LocalReconcile {
    /// Built as the `reconcile` function builds its state, from the routes' login.
    pub async fn from_env(env: &Env, aws: &aws_config::SdkConfig) -> Result<Self, BoxError> {
        Ok(Self {
            service: ReleaseService::from_env(env, aws)
                .await?
                .with_tokens(TokenKit::from_env(env, aws, &SecretLoader::new(env, aws)).await?),
            batch: env.parse_or("RECONCILE_BATCH", 25)?,
            metrics: MetricsConfig::from_env(env),
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }

    /// One pass: the report, logged, and its metrics on stdout.
    pub async fn run_once(&self, request_id: &str) -> Result<ReconcileReport, BoxError> {
        let _turn = self.one_at_a_time.lock().await;
        let started = Instant::now();
        let report = self
            .service
            .reconcile(self.batch, request_id, || {
                PASS_BUDGET.saturating_sub(started.elapsed())
            })
            .await?;
        tracing::info!(?report, "local reconcile pass done");
        emit(
            &self.metrics,
            &report.metrics(&self.metrics),
            &mut std::io::stdout().lock(),
        );
        Ok(report)
    }

    /// Run a pass every `every`, for as long as the process lives.
    pub fn spawn_schedule(self: Arc<Self>, every: Duration) {
        every_tick(every, "local-reconcile", move |id| {
            let this = self.clone();
            async move { this.run_once(&id).await.map(drop) }
        });
    }
}

/// Run `run` with a fresh request id every `every` (the first tick skipped: the API
/// comes up first), logging a failed run, for as long as the process lives: the
/// local stand-in for an EventBridge schedule.
pub fn every_tick<F, Fut>(every: Duration, what: &'static str, run: F)
where
    F: Fn(String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let id = format!("{what}-{}", uuid::Uuid::new_v4());
            if let Err(e) = run(id).await {
                tracing::error!(error = %e, what, "local scheduled run failed");
            }
        }
    });
}

/// Where `POST /__control/reconcile` finds reconcile once the functions are built
/// (the stand-ins serve before that).
pub type ReconcileSlot = Arc<OnceLock<Arc<LocalReconcile>>>;

/// `POST /__control/reconcile`: one pass now; its report.
pub fn control_routes(slot: ReconcileSlot) -> Router {
    Router::new()
        .route("/__control/reconcile", post(run_now))
        .with_state(slot)
}

async fn run_now(State(slot): State<ReconcileSlot>) -> Response {
    let Some(reconcile) = slot.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "reconcile is not ready yet (the functions are starting)"})),
        )
            .into_response();
    };
    let id = format!("local-reconcile-{}", uuid::Uuid::new_v4());
    match reconcile.run_once(&id).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "local reconcile pass failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "the reconcile pass failed; see the log"})),
            )
                .into_response()
        }
    }
}
