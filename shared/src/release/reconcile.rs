//! Reconcile: resumes what provider steps left unfinished, and says how much money
//! may be at risk (CloudWatch metrics, [`crate::metrics`]).
//!
//! Per run it takes at most `batch` due releases ([`super::claim::claim_next_due`]:
//! backoff passed or holder dead, fewest attempts first), finishes each as a
//! release request would, and stops while there is still time to write an outcome
//! before the Lambda's own deadline. A release that fails `RECONCILE_MAX_ATTEMPTS`
//! times becomes `needs_attention`: reconcile leaves it alone, status shows it, and
//! the `NeedsAttention` metric alarms.
//!
//! Unfinished Vapi syncs are counted, not finished: finishing one needs the
//! credential's plaintext, and reconcile is not granted decrypt (least privilege,
//! DESIGN "Vapi sync"); the org's next save finishes it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::Instrument;

use super::{ReleaseError, ReleaseOutcome, Releaser, claim};
use crate::db::{Db, DbError};
use crate::identity::Caller;
use crate::metrics::{MetricSet, MetricsConfig, Unit};

/// What a reconcile run did, and what is still at risk after it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub claimed: usize,
    pub released: usize,
    pub still_pending: usize,
    /// Releases that reached `RECONCILE_MAX_ATTEMPTS` in this run.
    pub needs_attention: usize,
    /// Claims another run took over (this one was too slow); its outcome was dropped.
    pub lost: usize,
    /// Failed provider steps of this run, by stable code.
    pub failures: BTreeMap<&'static str, usize>,
    /// After the run.
    pub at_risk: AtRisk,
}

/// Numbers that may bill without routing, and mirrors that are not current.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AtRisk {
    /// `releasing`, `release_pending` and `needs_attention` numbers.
    pub pending_releases: i64,
    pub needs_attention: i64,
    /// Age of the oldest unfinished release, 0 when none.
    pub oldest_pending_release_secs: i64,
    /// Orgs whose Vapi credential is behind their slot, with no save working on it.
    pub unfinished_syncs: i64,
}

impl AtRisk {
    /// One round trip.
    pub async fn measure(db: &Db) -> Result<Self, DbError> {
        let row = db
            .query_one(
                "SELECT
                    count(*) FILTER (WHERE status IN ('releasing', 'release_pending', 'needs_attention')),
                    count(*) FILTER (WHERE status = 'needs_attention'),
                    coalesce(extract(epoch FROM now() - min(release_requested_at)
                        FILTER (WHERE status IN ('releasing', 'release_pending', 'needs_attention'))), 0)::bigint,
                    (SELECT count(*) FROM organizations
                      WHERE sync_generation > synced_generation
                        AND (sync_lease_until IS NULL OR sync_lease_until < now()))
                   FROM managed_phone_numbers",
                &[],
            )
            .await?;
        Ok(Self {
            pending_releases: row.get(0),
            needs_attention: row.get(1),
            oldest_pending_release_secs: row.get(2),
            unfinished_syncs: row.get(3),
        })
    }
}

impl ReconcileReport {
    /// The run as EMF metric sets: the gauges, this run's completions, and one set
    /// per failure code.
    pub fn metrics(&self, cfg: &MetricsConfig) -> Vec<MetricSet> {
        let r = &self.at_risk;
        let mut sets = vec![
            MetricSet::for_stack(cfg)
                .value("PendingReleases", Unit::Count, r.pending_releases as f64)
                .value("NeedsAttention", Unit::Count, r.needs_attention as f64)
                .value(
                    "OldestPendingReleaseAgeSeconds",
                    Unit::Seconds,
                    r.oldest_pending_release_secs as f64,
                )
                .value("UnfinishedSyncs", Unit::Count, r.unfinished_syncs as f64)
                .value("ReleasesCompleted", Unit::Count, self.released as f64),
        ];
        sets.extend(self.failures.iter().map(|(code, n)| {
            MetricSet::for_stack(cfg).dimension("Code", *code).value(
                "ReleaseFailures",
                Unit::Count,
                *n as f64,
            )
        }));
        sets
    }
}

impl Releaser<'_> {
    /// Resume up to `batch` due releases while `time_left()` (the Lambda's) leaves
    /// room for one more deadline and its outcome; then measure what is at risk.
    pub async fn reconcile(
        &self,
        batch: usize,
        request_id: &str,
        time_left: impl Fn() -> Duration,
    ) -> Result<ReconcileReport, DbError> {
        let run_started: DateTime<Utc> = Utc::now();
        let mut report = ReconcileReport::default();
        while report.claimed < batch {
            let budget = time_left().saturating_sub(self.config.outcome_margin);
            if budget < self.config.deadline.min(Duration::from_secs(5)) {
                break;
            }
            let Some(claim) = claim::claim_next_due(self.db, self.config, run_started).await?
            else {
                break;
            };
            report.claimed += 1;
            let caller = Caller::system(claim.org, "system:reconcile");
            let span = tracing::info_span!("reconcile_item", org_id = %claim.org);
            let deadline = crate::steps::Deadline::after(budget.min(self.config.deadline));
            match self
                .finish(claim, &caller, request_id, deadline)
                .instrument(span)
                .await
            {
                Ok(ReleaseOutcome::Released { .. }) => report.released += 1,
                Ok(ReleaseOutcome::ReleasePending { errors, .. }) => {
                    report.still_pending += 1;
                    count_failures(&mut report, &errors);
                }
                Ok(ReleaseOutcome::NeedsAttention { errors, .. }) => {
                    report.needs_attention += 1;
                    count_failures(&mut report, &errors);
                }
                Ok(ReleaseOutcome::Releasing { .. }) => report.lost += 1,
                Err(ReleaseError::Db(e)) => return Err(e),
                Err(ReleaseError::NotFound(_)) => report.lost += 1,
            }
        }
        report.at_risk = AtRisk::measure(self.db).await?;
        Ok(report)
    }
}

fn count_failures(report: &mut ReconcileReport, errors: &BTreeMap<&'static str, &'static str>) {
    for code in errors.values() {
        *report.failures.entry(code).or_default() += 1;
    }
}
