//! Reconcile: resumes what provider steps left unfinished — releases, purchases
//! ([`crate::purchase`]) and assistant changes ([`crate::routing`]) — and says how
//! much money may be at risk (CloudWatch metrics, [`crate::metrics`]).
//!
//! A run shares its time fairly: releases, purchases and assistant changes take
//! turns, one item each per round, so a provider hang that makes every release
//! use its whole deadline cannot starve purchases (bought, billing) or assistant
//! changes. Each kind takes at most `batch` items ([`super::claim::claim_next_due`]
//! and its peers: backoff passed or holder dead, fewest attempts first), each
//! finished as a request would finish it, and the run stops while there is still
//! time to write an outcome before the Lambda's own deadline. A release that fails
//! `RECONCILE_MAX_ATTEMPTS` times becomes `needs_attention`: reconcile leaves it
//! alone, status shows it, and the `NeedsAttention` metric alarms; an assistant
//! change likewise is given up (`AssistantChangesGivenUp`).
//!
//! Unfinished Vapi syncs are counted, not finished: finishing one needs the
//! credential's plaintext, and reconcile is not granted decrypt (least privilege,
//! DESIGN "Vapi sync"); the org's next save finishes it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::Instrument;

use super::{ReleaseError, ReleaseOutcome, ReleaseService, Releaser, claim};
use crate::db::{Db, DbError};
use crate::identity::Caller;
use crate::metrics::{MetricSet, MetricsConfig, Unit};
use crate::offboard::{OffboardError, Offboarder};
use crate::purchase::{PurchaseReport, Purchaser};
use crate::rotation::{RotationError, Rotator};
use crate::routing::{RouteResumed, Router};

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
    /// Database failures that ended the run early (the function then reports an
    /// error, after its metrics).
    pub db_errors: usize,
    /// Failed provider steps of this run, by stable code.
    pub failures: BTreeMap<&'static str, usize>,
    /// Purchases resumed (their holder gone).
    pub purchases: PurchaseReport,
    /// Assistant changes Vapi confirmed on a retry.
    pub assistants_confirmed: usize,
    /// Assistant changes resent and still pending.
    pub assistants_still_pending: usize,
    /// Assistant changes given up in this run.
    pub assistants_given_up: usize,
    /// Offboardings resumed, and those that finished in this run.
    pub offboardings_resumed: usize,
    pub offboardings_finished: usize,
    /// Token rotations resumed, and those that finished in this run.
    pub rotations_resumed: usize,
    pub rotations_finished: usize,
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
    /// Purchases no request is working on (`provisioning`, claim gone): a number
    /// that may be bought and billing without routing.
    pub stuck_purchases: i64,
    /// Assistant changes reconcile gave up (`route_gave_up_at`): the number may
    /// route elsewhere than the org asked.
    pub assistant_changes_given_up: i64,
    /// Offboardings not finished (an org that left may still be billed).
    pub offboardings_pending: i64,
    /// Offboardings reconcile gave up on (`offboard_gave_up_at`).
    pub offboardings_need_attention: i64,
    /// Token rotations not finished (before promotion both tokens work; a number
    /// left with a token that stopped working cannot call).
    pub rotations_pending: i64,
    /// Token rotations reconcile gave up on.
    pub rotations_need_attention: i64,
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
                    (SELECT count(*) FROM organizations o
                      WHERE o.sync_generation > o.synced_generation
                        AND (o.sync_lease_until IS NULL OR o.sync_lease_until < now())
                        AND EXISTS (SELECT 1 FROM org_credentials c WHERE c.org_id = o.id)),
                    count(*) FILTER (WHERE status = 'provisioning'
                                       AND (claim_token IS NULL OR claimed_until < now())),
                    count(*) FILTER (WHERE status = 'active' AND route_gave_up_at IS NOT NULL),
                    (SELECT count(*) FROM organizations
                      WHERE offboard_requested_at IS NOT NULL AND offboarded_at IS NULL),
                    (SELECT count(*) FROM organizations
                      WHERE offboarded_at IS NULL AND offboard_gave_up_at IS NOT NULL),
                    (SELECT count(*) FROM token_rotations
                      WHERE done_at IS NULL AND cancelled_at IS NULL),
                    (SELECT count(*) FROM token_rotations
                      WHERE done_at IS NULL AND cancelled_at IS NULL AND gave_up_at IS NOT NULL)
                   FROM managed_phone_numbers",
                &[],
            )
            .await?;
        Ok(Self {
            pending_releases: row.get(0),
            needs_attention: row.get(1),
            oldest_pending_release_secs: row.get(2),
            unfinished_syncs: row.get(3),
            stuck_purchases: row.get(4),
            assistant_changes_given_up: row.get(5),
            offboardings_pending: row.get(6),
            offboardings_need_attention: row.get(7),
            rotations_pending: row.get(8),
            rotations_need_attention: row.get(9),
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
                .value("StuckPurchases", Unit::Count, r.stuck_purchases as f64)
                .value(
                    "AssistantChangesGivenUp",
                    Unit::Count,
                    r.assistant_changes_given_up as f64,
                )
                .value(
                    "OffboardingsPending",
                    Unit::Count,
                    r.offboardings_pending as f64,
                )
                .value(
                    "OffboardingsNeedAttention",
                    Unit::Count,
                    r.offboardings_need_attention as f64,
                )
                .value(
                    "TokenRotationsPending",
                    Unit::Count,
                    r.rotations_pending as f64,
                )
                .value(
                    "TokenRotationsNeedAttention",
                    Unit::Count,
                    r.rotations_need_attention as f64,
                )
                .value("ReleasesCompleted", Unit::Count, self.released as f64)
                .value(
                    "PurchasesCompleted",
                    Unit::Count,
                    self.purchases.activated as f64,
                ),
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

impl ReleaseService {
    /// One reconcile run: due releases, purchases whose holder is gone and
    /// assistant changes Vapi has not confirmed, taking turns (one of each per
    /// round, each kind at most `batch`) while `time_left()` (the Lambda's) leaves
    /// room for one more deadline and its outcome; then measure what is at risk.
    /// A database failure ends the work early (counted in `db_errors`) but not
    /// the measuring.
    pub async fn reconcile(
        &self,
        batch: usize,
        request_id: &str,
        time_left: impl Fn() -> Duration,
    ) -> Result<ReconcileReport, DbError> {
        let mut report = ReconcileReport::default();
        // The database's clock, which the rows' `updated_at` come from: a row this
        // run touched is not taken twice in it.
        let run_started: DateTime<Utc> = self.db.query_one("SELECT now()", &[]).await?.get(0);
        let purchaser = Purchaser {
            db: &self.db,
            vapi: &self.vapi,
            twilio: &self.twilio,
            config: &self.config,
            credentials: None,
            fingerprints: self.tokens.as_ref().map(|t| &t.fingerprints),
        };
        let router = Router {
            db: &self.db,
            vapi: &self.vapi,
            config: &self.config,
        };
        let releaser = self.releaser();
        let offboarder = Offboarder {
            db: &self.db,
            vapi: &self.vapi,
            twilio: &self.twilio,
            config: &self.config,
        };
        let rotator = self.tokens.as_ref().map(|t| Rotator {
            db: &self.db,
            vapi: &self.vapi,
            twilio: &self.twilio,
            keyring: &t.keyring,
            fingerprints: &t.fingerprints,
            config: &self.config,
        });
        // Token rotations only where the keyring and fingerprint key were given.
        let mut open = [true, true, true, true, rotator.is_some()];
        let mut taken = [0usize; 5];
        'run: while open.iter().any(|o| *o) {
            for kind in 0..5 {
                if !open[kind] {
                    continue;
                }
                let budget = time_left().saturating_sub(self.config.outcome_margin);
                if budget < self.config.deadline.min(Duration::from_secs(5)) {
                    break 'run;
                }
                let step = match kind {
                    0 => {
                        releaser
                            .resume_one(run_started, request_id, budget, &mut report)
                            .await
                    }
                    1 => purchaser
                        .resume_one(run_started, request_id, budget, &mut report.purchases)
                        .await
                        .map_err(|e| {
                            tracing::error!(error = %e, "reconcile could not resume purchases");
                            e
                        }),
                    3 => {
                        let deadline =
                            crate::steps::Deadline::after(budget.min(self.config.deadline));
                        match offboarder.resume_one(request_id, deadline).await {
                            Ok(Some(state)) => {
                                report.offboardings_resumed += 1;
                                report.offboardings_finished += usize::from(state.is_done());
                                Ok(true)
                            }
                            Ok(None) => Ok(false),
                            Err(OffboardError::Db(e)) => {
                                tracing::error!(error = %e, "reconcile could not resume offboardings");
                                Err(e)
                            }
                            Err(OffboardError::ConfirmationMismatch) => Ok(false),
                        }
                    }
                    4 => {
                        let deadline =
                            crate::steps::Deadline::after(budget.min(self.config.deadline));
                        let Some(rotator) = &rotator else {
                            continue;
                        };
                        match rotator.resume_one(request_id, deadline).await {
                            Ok(Some(state)) => {
                                report.rotations_resumed += 1;
                                report.rotations_finished += usize::from(state.is_done());
                                Ok(true)
                            }
                            Ok(None) => Ok(false),
                            Err(RotationError::Db(e)) => {
                                tracing::error!(error = %e, "reconcile could not resume token rotations");
                                Err(e)
                            }
                            Err(_) => Ok(false),
                        }
                    }
                    _ => match router.resume_one(request_id, budget).await {
                        Ok(Some(resumed)) => {
                            match resumed {
                                RouteResumed::Confirmed => report.assistants_confirmed += 1,
                                RouteResumed::StillPending => report.assistants_still_pending += 1,
                                RouteResumed::GaveUp => report.assistants_given_up += 1,
                            }
                            Ok(true)
                        }
                        Ok(None) => Ok(false),
                        Err(e) => {
                            tracing::error!(error = %e, "reconcile could not resume assistant changes");
                            Err(e)
                        }
                    },
                };
                match step {
                    Ok(true) => {
                        taken[kind] += 1;
                        open[kind] = taken[kind] < batch;
                    }
                    Ok(false) => open[kind] = false,
                    Err(_) => {
                        report.db_errors += 1;
                        break 'run;
                    }
                }
            }
        }
        report.at_risk = AtRisk::measure(&self.db).await?;
        Ok(report)
    }
}

impl Releaser<'_> {
    /// Resume one due release within `budget`, into `report`: `false` when none
    /// is due.
    async fn resume_one(
        &self,
        run_started: DateTime<Utc>,
        request_id: &str,
        budget: Duration,
        report: &mut ReconcileReport,
    ) -> Result<bool, DbError> {
        let claim = match claim::claim_next_due(self.db, self.config, run_started).await {
            Ok(Some(claim)) => claim,
            Ok(None) => return Ok(false),
            Err(e) => {
                tracing::error!(error = %e, "reconcile could not claim; ending the run");
                return Err(e);
            }
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
                count_failures(report, &errors);
            }
            Ok(ReleaseOutcome::NeedsAttention { errors, .. }) => {
                report.needs_attention += 1;
                count_failures(report, &errors);
            }
            Ok(ReleaseOutcome::Releasing { .. }) => report.lost += 1,
            // The item's claim expires and a later run resumes it; measure and
            // report what is at risk all the same.
            Err(ReleaseError::Db(e)) => {
                tracing::error!(error = %e, "reconcile could not record an outcome; ending the run");
                return Err(e);
            }
            Err(ReleaseError::NotFound(_) | ReleaseError::Provisioning(_)) => report.lost += 1,
        }
        Ok(true)
    }
}

fn count_failures(report: &mut ReconcileReport, errors: &BTreeMap<&'static str, &'static str>) {
    for code in errors.values() {
        *report.failures.entry(code).or_default() += 1;
    }
}
