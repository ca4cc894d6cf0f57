//! The carrier audit: what Twilio bills and Vapi routes, held against the database.
//! Reconcile only resumes rows it has; this finds what no row shows — a number
//! bought but forgotten, an import left behind, a route changed by hand — prices
//! it, repairs what this service made, and flags the rest (DESIGN "The carrier
//! audit").
//!
//! A **pass** covers every subaccount once, in SID order: the org's recorded
//! subaccounts and every Twilio subaccount named `org:<uuid>`. A run (the `audit`
//! function, on a schedule) continues the pass in progress from its cursor, or
//! starts a new one when the last began `AUDIT_EVERY_HOURS` ago, and stops while
//! there is time to write what it found; the next run resumes. Each run:
//!
//! 1. takes the audit's lease (one row; two audits at once are one);
//! 2. reads Vapi's whole phone-number list and Twilio's account list (both paged);
//! 3. for each batch of subaccounts: reads the database's live rows first, then
//!    each subaccount's Twilio numbers (at most `AUDIT_CONCURRENCY` at once; 429s
//!    wait out `Retry-After`), compares ([`drift::compare`]), confirms what needs a
//!    direct read (`vapi_missing`, `carrier_missing`), repairs, keeps the findings,
//!    closes those not seen again, and moves the cursor;
//! 4. emits the open findings as metrics and logs its report as one JSON line.
//!
//! Never racing the protocol: rows with a live claim are skipped, and anything
//! bought, imported or changed within `AUDIT_GRACE_SECS` (longer than a claim) is
//! not drift yet. Repairs go through the protocol's own columns: a `release_pending`
//! row that reconcile releases (only for a number whose `FriendlyName` carries a
//! purchase operation id of this service: never release what it did not buy), a
//! pending assistant change that reconcile sends, a Vapi DELETE after the database
//! says again that no row holds the import.

pub mod drift;
pub mod price;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use uuid::Uuid;

use crate::config::{ConfigError, Env};
use crate::credential::fingerprint::FingerprintKey;
use crate::db::{Db, DbError};
use crate::ids::{AccountSid, E164, PhoneNumberSid};
use crate::metrics::{MetricSet, MetricsConfig, Unit};
use crate::providers::ProviderError;
use crate::release::ReleaseService;
use crate::steps::StepsConfig;
use crate::twilio::{HeldNumber, ListedAccount, NumberRead, TwilioClient};
use crate::vapi::{VapiClient, VapiNumber};

use drift::{Action, Candidate, Clock, DriftKind, Scope, TokenFingerprints};
use price::PriceBook;
use store::{RecordedRelease, Repair};

/// What Vapi sets an imported Twilio number's voice URL to (unconfirmed in Vapi's
/// public docs; `VAPI_VOICE_URL` overrides it).
pub const VAPI_VOICE_URL: &str = "https://api.vapi.ai/twilio/inbound_call";

/// The audit's settings, from the environment.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// A new pass starts when the last began this long ago (`AUDIT_EVERY_HOURS`,
    /// default 24).
    pub every: Duration,
    /// Younger than this is not drift yet (`AUDIT_GRACE_SECS`, default 3600; must
    /// be longer than a claim).
    pub grace: Duration,
    /// Twilio number lists read at once (`AUDIT_CONCURRENCY`, default 8).
    pub concurrency: usize,
    /// Subaccounts per database read (`AUDIT_BATCH`, default 50).
    pub batch: usize,
    /// `VAPI_VOICE_URL`.
    pub voice_url: String,
    /// Kept back from the run's time to write what it found (`AUDIT_RESERVE_MS`,
    /// default 10 000).
    pub reserve: Duration,
}

impl AuditConfig {
    pub fn from_env(env: &Env, steps: &StepsConfig) -> Result<Self, ConfigError> {
        let cfg = Self {
            every: Duration::from_secs(env.parse_or("AUDIT_EVERY_HOURS", 24u64)? * 3600),
            grace: Duration::from_secs(env.parse_or("AUDIT_GRACE_SECS", 3600u64)?),
            concurrency: env.parse_or("AUDIT_CONCURRENCY", 8usize)?,
            batch: env.parse_or("AUDIT_BATCH", 50usize)?,
            voice_url: env
                .get("VAPI_VOICE_URL")
                .unwrap_or(VAPI_VOICE_URL)
                .to_owned(),
            reserve: Duration::from_millis(env.parse_or("AUDIT_RESERVE_MS", 10_000u64)?),
        };
        if cfg.grace <= steps.claim_ttl {
            return Err(ConfigError::Invalid {
                name: "AUDIT_GRACE_SECS",
                why: "must be longer than a claim (CLAIM_SECS): a purchase holding its claim is not drift".into(),
            });
        }
        if cfg.concurrency == 0 || cfg.batch == 0 {
            return Err(ConfigError::Invalid {
                name: "AUDIT_CONCURRENCY",
                why: "AUDIT_CONCURRENCY and AUDIT_BATCH must be at least 1".into(),
            });
        }
        Ok(cfg)
    }
}

/// What a run did: its log line and the source of its metrics.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    /// `ran`, `nothing_due`, `lease_held` (another audit is running).
    pub outcome: &'static str,
    pub pass: Option<i64>,
    /// This run ended the pass (every subaccount covered).
    pub pass_finished: bool,
    pub subaccounts_covered: usize,
    /// Subaccounts whose numbers could not be read (left for the next pass).
    pub subaccounts_failed: usize,
    pub subaccounts_left: usize,
    pub twilio_numbers: usize,
    pub vapi_numbers: usize,
    pub vapi_complete: bool,
    /// Findings seen this run, by kind.
    pub found: BTreeMap<&'static str, usize>,
    pub new_findings: usize,
    pub repaired: BTreeMap<&'static str, usize>,
    pub repair_failures: BTreeMap<&'static str, usize>,
    pub closed: u64,
    /// After the run: open findings by kind, and those seen in two passes or more.
    pub open: BTreeMap<&'static str, i64>,
    pub persisting: BTreeMap<&'static str, i64>,
    /// Monthly price of the open findings that bill, by currency.
    pub monthly_cost_at_risk: BTreeMap<String, f64>,
    pub calls: BTreeMap<&'static str, usize>,
    pub pages: BTreeMap<&'static str, usize>,
    pub duration_ms: u64,
    /// Errors that ended the run early (the function then reports an error).
    pub errors: Vec<String>,
}

impl AuditReport {
    fn count(map: &mut BTreeMap<&'static str, usize>, key: &'static str, n: usize) {
        *map.entry(key).or_default() += n;
    }

    /// EMF: `DriftFindings` and `DriftFindingsPersisting` by `Kind` (every kind,
    /// zeros included, so alarms see data), `MonthlyCostAtRisk` (USD),
    /// `AuditDurationSeconds`, `AuditPassFinished`, `AuditSubaccountsFailed`.
    pub fn metrics(&self, cfg: &MetricsConfig) -> Vec<MetricSet> {
        let mut sets: Vec<MetricSet> = DriftKind::ALL
            .into_iter()
            .map(|k| {
                MetricSet::for_stack(cfg)
                    .dimension("Kind", k.code())
                    .value(
                        "DriftFindings",
                        Unit::Count,
                        self.open.get(k.code()).copied().unwrap_or(0) as f64,
                    )
                    .value(
                        "DriftFindingsPersisting",
                        Unit::Count,
                        self.persisting.get(k.code()).copied().unwrap_or(0) as f64,
                    )
            })
            .collect();
        sets.push(
            MetricSet::for_stack(cfg)
                .value(
                    "MonthlyCostAtRisk",
                    Unit::None,
                    self.monthly_cost_at_risk.get("USD").copied().unwrap_or(0.0),
                )
                .value(
                    "AuditDurationSeconds",
                    Unit::Seconds,
                    self.duration_ms as f64 / 1000.0,
                )
                .value(
                    "AuditPassFinished",
                    Unit::Count,
                    if self.pass_finished && self.subaccounts_failed == 0 {
                        1.0
                    } else {
                        0.0
                    },
                )
                .value(
                    "AuditSubaccountsFailed",
                    Unit::Count,
                    self.subaccounts_failed as f64,
                ),
        );
        sets
    }
}

/// The audit, built once per instance: the release service's clients (the
/// database, Vapi, Twilio as the main account) and its settings.
pub struct AuditService {
    pub release: ReleaseService,
    pub config: AuditConfig,
    /// Fingerprints the tokens Twilio and Vapi report (`token_mismatch`).
    pub fingerprints: FingerprintKey,
}

impl AuditService {
    pub async fn from_env(
        env: &Env,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, crate::error::BoxError> {
        let secrets = crate::config::SecretLoader::new(env, aws);
        let (release, fingerprints) =
            tokio::try_join!(ReleaseService::from_env(env, aws), async {
                Ok(secrets.fingerprint_key().await?)
            })?;
        let config = AuditConfig::from_env(env, &release.config)?;
        Ok(Self {
            release,
            config,
            fingerprints,
        })
    }

    pub fn auditor(&self) -> Auditor<'_> {
        Auditor {
            db: &self.release.db,
            vapi: &self.release.vapi,
            twilio: &self.release.twilio,
            config: &self.config,
            fingerprints: &self.fingerprints,
        }
    }
}

pub struct Auditor<'a> {
    pub db: &'a Db,
    pub vapi: &'a VapiClient,
    pub twilio: &'a TwilioClient,
    pub config: &'a AuditConfig,
    pub fingerprints: &'a FingerprintKey,
}

/// A subaccount to cover, and who it belongs to.
#[derive(Debug, Clone)]
struct Target {
    sid: String,
    org: Option<Uuid>,
    account: Option<ListedAccount>,
}

impl Auditor<'_> {
    /// One run, within `time_left` (the Lambda's remaining time). `force` starts a
    /// pass although none is due (a run by hand).
    pub async fn run(
        &self,
        request_id: &str,
        force: bool,
        time_left: Duration,
    ) -> Result<AuditReport, DbError> {
        let started = std::time::Instant::now();
        let stop_by = tokio::time::Instant::now() + time_left.saturating_sub(self.config.reserve);
        let token = Uuid::new_v4();
        let mut report = AuditReport {
            outcome: "ran",
            ..AuditReport::default()
        };
        let ttl = time_left.as_secs_f64() + 60.0;
        if !store::take_lease(self.db, token, ttl).await? {
            report.outcome = "lease_held";
            return Ok(report);
        }
        let result = self
            .run_leased(request_id, force, token, stop_by, &mut report)
            .await;
        let released = store::release_lease(self.db, token).await;
        if let Err(e) = result.and(released) {
            report.errors.push(e.to_string());
        }
        match store::open_findings(self.db).await {
            Ok(open) => {
                for (kind, n, persisting) in open.by_kind {
                    report.open.insert(kind.code(), n);
                    report.persisting.insert(kind.code(), persisting);
                }
                report.monthly_cost_at_risk = open.at_risk.into_iter().collect();
            }
            Err(e) => report.errors.push(e.to_string()),
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    async fn run_leased(
        &self,
        request_id: &str,
        force: bool,
        token: Uuid,
        stop_by: tokio::time::Instant,
        report: &mut AuditReport,
    ) -> Result<(), DbError> {
        let every = self.config.every.as_secs_f64();
        let Some(pass) = store::pass_to_run(self.db, token, every, force).await? else {
            report.outcome = "nothing_due";
            return Ok(());
        };
        report.pass = Some(pass.number);
        // Vapi first: rows changed after this instant are not compared with it.
        let vapi_read_at = Utc::now();
        // At most half the run: the rest is for the subaccounts (an unfinished list
        // still finds orphans, never "missing").
        let now = tokio::time::Instant::now();
        let vapi_stop = now + stop_by.saturating_duration_since(now) / 2;
        let vapi = match self.vapi.all_phone_numbers(Some(vapi_stop)).await {
            Ok(inventory) => inventory,
            Err(e) => return self.source_failed(report, "vapi", &e),
        };
        AuditReport::count(&mut report.pages, "vapi", vapi.pages);
        AuditReport::count(&mut report.calls, "vapi", vapi.pages);
        report.vapi_complete = vapi.complete;
        report.vapi_numbers = vapi.numbers.len();
        let accounts = match self.all_accounts(report).await {
            Ok(a) => a,
            Err(e) => return self.source_failed(report, "twilio", &e),
        };
        let orgs = store::orgs(self.db).await?;
        let all_targets = targets(&orgs, accounts);
        let target_sids: Vec<String> = all_targets.iter().map(|t| t.sid.clone()).collect();
        let targets: Vec<Target> = all_targets
            .into_iter()
            .filter(|t| t.sid.as_str() > pass.cursor.as_str())
            .collect();
        report.subaccounts_left = targets.len();
        let org_index: HashMap<Uuid, &store::OrgView> = orgs.iter().map(|o| (o.id, o)).collect();
        let vapi_by_id: HashMap<&str, &VapiNumber> =
            vapi.numbers.iter().map(|v| (v.id.as_str(), v)).collect();
        let mut vapi_by_sub: HashMap<&str, Vec<&VapiNumber>> = HashMap::new();
        for v in &vapi.numbers {
            if let Some(sub) = v.twilio_account_sid.as_deref() {
                vapi_by_sub.entry(sub).or_default().push(v);
            }
        }
        let mut prices = PriceBook::default();
        let batches = Batches {
            org_index: &org_index,
            vapi_by_id: &vapi_by_id,
            vapi_by_sub: &vapi_by_sub,
            vapi_complete: vapi.complete,
            vapi_read_at,
        };
        for chunk in targets.chunks(self.config.batch) {
            if tokio::time::Instant::now() >= stop_by {
                break;
            }
            let ctx = BatchRun {
                pass: &pass,
                request_id,
                stop_by,
                vapi_read_at,
            };
            let covered = self
                .cover_batch(&batches, chunk, &ctx, &mut prices, report)
                .await?;
            report.subaccounts_left -= covered;
            report.subaccounts_covered += covered;
            let Some(last) = chunk.get(covered.saturating_sub(1)).filter(|_| covered > 0) else {
                break;
            };
            if !store::advance(self.db, token, pass.number, &last.sid).await? {
                report
                    .errors
                    .push("the audit's lease was taken over".into());
                return Ok(());
            }
            if covered < chunk.len() {
                break;
            }
        }
        AuditReport::count(&mut report.calls, "twilio_pricing", prices.calls);
        if report.subaccounts_left == 0 {
            report.closed += store::close_outside(self.db, pass.number, &target_sids).await?;
            report.pass_finished = store::finish_pass(self.db, token, pass.number).await?;
        }
        Ok(())
    }

    fn source_failed(
        &self,
        report: &mut AuditReport,
        source: &'static str,
        e: &ProviderError,
    ) -> Result<(), DbError> {
        tracing::error!(
            source,
            error = e.stable_code(),
            "the audit could not read a source; nothing compared"
        );
        report.errors.push(format!("{source}: {}", e.stable_code()));
        Ok(())
    }

    /// Every account of the main account's list.
    async fn all_accounts(
        &self,
        report: &mut AuditReport,
    ) -> Result<Vec<ListedAccount>, ProviderError> {
        let mut all = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .twilio
                .accounts_page(crate::twilio::MAX_PAGE_SIZE, next.as_deref())
                .await?;
            AuditReport::count(&mut report.pages, "twilio_accounts", 1);
            AuditReport::count(&mut report.calls, "twilio", 1);
            all.extend(page.items);
            match page.next {
                // The same page again would never end: not Twilio's list.
                Some(n) if Some(&n) == next.as_ref() => return Err(bad_list()),
                Some(n) => next = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// A target's numbers, when its account is readable (active or suspended) and
    /// there is time.
    async fn read_target(
        &self,
        t: &Target,
        stop_by: tokio::time::Instant,
    ) -> Option<(Result<Vec<HeldNumber>, ProviderError>, usize)> {
        if !readable(t) || tokio::time::Instant::now() >= stop_by {
            return None;
        }
        // Retries and Retry-After waits never run past the run's end.
        tokio::time::timeout_at(stop_by, self.held_numbers(&t.sid))
            .await
            .ok()
    }

    /// Every number one subaccount holds, with the pages it took.
    async fn held_numbers(&self, sid: &str) -> (Result<Vec<HeldNumber>, ProviderError>, usize) {
        let Ok(account) = sid.parse::<AccountSid>() else {
            return (
                Err(ProviderError::UnexpectedBody {
                    provider: "twilio",
                    status: 200,
                }),
                0,
            );
        };
        let mut all = Vec::new();
        let mut next: Option<String> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            match self
                .twilio
                .numbers_page(&account, crate::twilio::MAX_PAGE_SIZE, next.as_deref())
                .await
            {
                Ok(page) => {
                    all.extend(page.items);
                    match page.next {
                        Some(n) if Some(&n) == next.as_ref() => return (Err(bad_list()), pages),
                        Some(n) => next = Some(n),
                        None => return (Ok(all), pages),
                    }
                }
                Err(e) => return (Err(e), pages),
            }
        }
    }

    /// Cover `chunk` (in order), answering how many of its subaccounts were covered
    /// before time ran out.
    async fn cover_batch(
        &self,
        b: &Batches<'_>,
        chunk: &[Target],
        ctx: &BatchRun<'_>,
        prices: &mut PriceBook,
        report: &mut AuditReport,
    ) -> Result<usize, DbError> {
        let subs: Vec<String> = chunk.iter().map(|t| t.sid.clone()).collect();
        let org_ids: Vec<Uuid> = chunk.iter().filter_map(|t| t.org).collect();
        let (mut vapi_ids, mut vapi_numbers) = (Vec::new(), Vec::new());
        for t in chunk {
            for v in b.vapi_by_sub.get(t.sid.as_str()).into_iter().flatten() {
                vapi_ids.push(v.id.clone());
                vapi_numbers.push(v.number.clone());
            }
        }
        // The database before Twilio: a number released meanwhile is then still a
        // live row, never "billed and unknown".
        let rows = store::live_rows(self.db, &subs, &org_ids, &vapi_ids, &vapi_numbers).await?;
        let reads: Vec<_> = chunk
            .iter()
            .map(|t| self.read_target(t, ctx.stop_by))
            .collect();
        let reads = futures::stream::iter(reads)
            .buffered(self.config.concurrency)
            .collect::<Vec<_>>()
            .await;
        let clock = Clock {
            now: Utc::now(),
            grace: chrono::Duration::from_std(self.config.grace).unwrap_or(chrono::Duration::MAX),
            vapi_read_at: b.vapi_read_at,
        };
        let mut covered = 0;
        for (t, read) in chunk.iter().zip(reads) {
            if tokio::time::Instant::now() >= ctx.stop_by {
                break;
            }
            let held = match read {
                Some((Ok(held), pages)) => {
                    AuditReport::count(&mut report.pages, "twilio_numbers", pages);
                    AuditReport::count(&mut report.calls, "twilio", pages);
                    report.twilio_numbers += held.len();
                    Some(held)
                }
                Some((Err(e), pages)) => {
                    AuditReport::count(&mut report.calls, "twilio", pages);
                    tracing::warn!(subaccount = %t.sid, error = e.stable_code(), "could not read the subaccount's numbers; left for the next pass");
                    report.subaccounts_failed += 1;
                    covered += 1;
                    continue;
                }
                None if t
                    .account
                    .as_ref()
                    .is_some_and(|a| a.status == "active" || a.status == "suspended") =>
                {
                    // Out of time before its read.
                    break;
                }
                None => None,
            };
            let org = t.org;
            let view = org.and_then(|o| b.org_index.get(&o).copied());
            let tokens = self.token_fingerprints(t, b);
            let scope = Scope {
                subaccount: &t.sid,
                org,
                org_exists: view.is_some(),
                org_recorded_subaccount: view.and_then(|v| v.subaccount.as_deref()),
                org_offboarding: view.is_some_and(|v| v.offboarding),
                org_offboarded: view.is_some_and(|v| v.offboarded),
                account: t.account.as_ref(),
                held: held.as_deref(),
                vapi: b.vapi_by_sub.get(t.sid.as_str()).map_or(&[], Vec::as_slice),
                vapi_by_id: b.vapi_by_id,
                vapi_complete: b.vapi_complete,
                rows: &rows,
                org_rotating: view.is_some_and(|v| v.rotating),
                slot_token_fp: view
                    .filter(|v| v.subaccount.as_deref() == Some(t.sid.as_str()))
                    .and_then(|v| v.slot_token_fp.as_deref()),
                tokens: &tokens,
            };
            let mut comparison = drift::compare(&scope, &clock, &self.config.voice_url);
            let mut failed = false;
            for c in &comparison.candidates {
                match self.settle(c, &t.sid, ctx, prices, report).await {
                    Ok(Settled::Kept) => {}
                    // Not decided this time: an open finding about it stays open.
                    Ok(Settled::Undecided) => comparison.skipped.push(c.subject.clone()),
                    Ok(Settled::NotDrift) => {}
                    // One finding that cannot be written never stops the pass: the
                    // subaccount counts as failed (its findings stay as they are).
                    Err(e) => {
                        tracing::error!(subaccount = %t.sid, finding = %store::describe(c), error = %e, "could not keep a finding");
                        report
                            .errors
                            .push(format!("finding {}: {e}", c.kind.code()));
                        failed = true;
                    }
                }
            }
            covered += 1;
            if failed {
                report.subaccounts_failed += 1;
                continue;
            }
            // An unfinished Vapi list proves nothing gone: its findings stay open.
            let kept: &[&str] = if b.vapi_complete {
                &[]
            } else {
                &[
                    "vapi_orphan",
                    "vapi_missing",
                    "assistant_mismatch",
                    "token_mismatch",
                ]
            };
            report.closed +=
                store::close_unseen(self.db, &t.sid, ctx.pass.number, &comparison.skipped, kept)
                    .await?;
        }
        Ok(covered)
    }

    /// The fingerprints of the subaccount's current token and of the tokens its
    /// Vapi numbers report (the tokens are dropped here).
    fn token_fingerprints(&self, t: &Target, b: &Batches<'_>) -> TokenFingerprints {
        let key = self.fingerprints;
        TokenFingerprints {
            account: t
                .account
                .as_ref()
                .and_then(|a| a.token.as_ref())
                .and_then(|tok| key.of_reported(tok))
                .map(|fp| fp.as_str().to_owned()),
            vapi: b
                .vapi_by_sub
                .get(t.sid.as_str())
                .into_iter()
                .flatten()
                .filter_map(|v| {
                    let fp = key.of_reported(v.twilio_token.as_ref()?)?;
                    Some((v.id.clone(), fp.as_str().to_owned()))
                })
                .collect(),
        }
    }

    /// Confirm, repair and keep one finding.
    async fn settle(
        &self,
        c: &Candidate,
        subaccount: &str,
        ctx: &BatchRun<'_>,
        prices: &mut PriceBook,
        report: &mut AuditReport,
    ) -> Result<Settled, DbError> {
        let repair = match &c.action {
            Action::Flag => Repair::None,
            Action::ConfirmVapiMissing { id } => {
                AuditReport::count(&mut report.calls, "vapi", 1);
                match within(ctx.stop_by, "vapi", self.vapi.phone_number_exists(id)).await {
                    Ok(false) => Repair::None,
                    Ok(true) => return Ok(Settled::NotDrift),
                    Err(_) => return Ok(Settled::Undecided),
                }
            }
            Action::ConfirmCarrierMissing { number_sid } => {
                AuditReport::count(&mut report.calls, "twilio", 1);
                let (Ok(sub), Ok(pn), Some(Ok(number))) = (
                    subaccount.parse::<AccountSid>(),
                    number_sid.parse::<PhoneNumberSid>(),
                    c.phone_number.as_deref().map(str::parse::<E164>),
                ) else {
                    return Ok(Settled::Undecided);
                };
                match tokio::time::timeout_at(
                    ctx.stop_by,
                    self.twilio.read_number(&sub, &pn, &number),
                )
                .await
                {
                    Ok(Ok(NumberRead::Gone)) => {
                        // Released (or claimed) since the rows were read: not drift.
                        if !store::row_still_live(self.db, &number).await? {
                            return Ok(Settled::NotDrift);
                        }
                        Repair::None
                    }
                    Ok(Ok(NumberRead::Held(_))) => return Ok(Settled::NotDrift),
                    Ok(Err(_)) | Err(_) => return Ok(Settled::Undecided),
                }
            }
            Action::RecordRelease {
                org,
                number_sid,
                operation_id,
                vapi_phone_id,
            } => {
                let number = c.phone_number.as_deref().unwrap_or(&c.subject);
                match store::record_release(
                    self.db,
                    *org,
                    number,
                    number_sid,
                    subaccount,
                    *operation_id,
                    vapi_phone_id.as_deref(),
                    ctx.request_id,
                    self.config.grace.as_secs_f64(),
                )
                .await?
                {
                    RecordedRelease::Recorded => Repair::Done,
                    // A name like ours, an operation this database does not know:
                    // never release what this service did not buy.
                    RecordedRelease::NotOurs => Repair::None,
                    RecordedRelease::NotDrift => return Ok(Settled::NotDrift),
                }
            }
            Action::ResendAssistant { row, assistant } => {
                match store::resend_assistant(
                    self.db,
                    *row,
                    assistant,
                    ctx.vapi_read_at,
                    ctx.request_id,
                )
                .await?
                {
                    true => Repair::Done,
                    false => return Ok(Settled::NotDrift),
                }
            }
            Action::AdoptToken { org, vapi_phone_id } => {
                let Ok(sid) = subaccount.parse::<AccountSid>() else {
                    return Ok(Settled::Undecided);
                };
                // What the row recorded is not what Vapi holds (Vapi said so, or the
                // row's own token was retired): forgotten, the job PATCHes it.
                if let Some(id) = vapi_phone_id {
                    store::forget_token(self.db, *org, id).await?;
                }
                let caller = crate::identity::Caller::system(
                    crate::ids::OrgId::new(*org),
                    "system:carrier-audit",
                );
                match crate::rotation::request_adopt(
                    self.db,
                    &caller,
                    ctx.request_id,
                    &sid,
                    "audit_token_mismatch",
                )
                .await?
                {
                    true => Repair::Done,
                    // One is open already (another number of the org), or the slot
                    // is not this subaccount's: recorded, flagged.
                    false => Repair::None,
                }
            }
            Action::DeleteAtVapi { id } => {
                let number = c.phone_number.as_deref().unwrap_or_default();
                if store::vapi_number_is_held(self.db, id, number).await? {
                    return Ok(Settled::NotDrift);
                }
                AuditReport::count(&mut report.calls, "vapi", 1);
                match within(ctx.stop_by, "vapi", self.vapi.delete_phone_number(id)).await {
                    Ok(()) => Repair::Done,
                    // Gone already (a release deleted it meanwhile): not drift.
                    Err(e) if e.is_gone() => return Ok(Settled::NotDrift),
                    Err(e) => Repair::Failed(e.stable_code()),
                }
            }
        };
        let price = if c.kind.bills() {
            match &c.phone_number {
                Some(n) => prices.monthly(self.twilio, n).await,
                None => None,
            }
        } else {
            None
        };
        let new = store::record_finding(
            self.db,
            c,
            subaccount,
            ctx.pass.number,
            price.as_ref(),
            &repair,
        )
        .await?;
        AuditReport::count(&mut report.found, c.kind.code(), 1);
        report.new_findings += usize::from(new);
        match repair {
            Repair::Done => AuditReport::count(&mut report.repaired, c.kind.code(), 1),
            Repair::Failed(code) => AuditReport::count(&mut report.repair_failures, code, 1),
            Repair::None => {}
        }
        tracing::info!(finding = %store::describe(c), new, repaired = matches!(repair, Repair::Done), "drift");
        Ok(Settled::Kept)
    }
}

/// Twilio lists the numbers of active and suspended accounts (a suspended
/// account's numbers still bill); a closed one's were released.
fn readable(t: &Target) -> bool {
    t.account
        .as_ref()
        .is_some_and(|a| a.status == "active" || a.status == "suspended")
}

/// How one finding ended.
enum Settled {
    /// Recorded (and repaired, if its kind repairs).
    Kept,
    /// Not drift after all (confirmed there, released meanwhile, a live row now).
    NotDrift,
    /// Could not be decided this time (a confirming read failed): an open finding
    /// about it stays open.
    Undecided,
}

/// A provider call that never runs past the run's end.
/// (`provider` names whose timeout it is, for the finding's repair error.)
async fn within<T>(
    stop_by: tokio::time::Instant,
    provider: &'static str,
    call: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    tokio::time::timeout_at(stop_by, call)
        .await
        .unwrap_or(Err(ProviderError::Timeout { provider }))
}

fn bad_list() -> ProviderError {
    ProviderError::UnexpectedBody {
        provider: "twilio",
        status: 200,
    }
}

/// What every batch of a run shares.
struct Batches<'a> {
    org_index: &'a HashMap<Uuid, &'a store::OrgView>,
    vapi_by_id: &'a HashMap<&'a str, &'a VapiNumber>,
    vapi_by_sub: &'a HashMap<&'a str, Vec<&'a VapiNumber>>,
    vapi_complete: bool,
    vapi_read_at: chrono::DateTime<Utc>,
}

struct BatchRun<'a> {
    pass: &'a store::Pass,
    request_id: &'a str,
    stop_by: tokio::time::Instant,
    /// When Vapi's list was read: a repair applies only to a row not changed since.
    vapi_read_at: chrono::DateTime<Utc>,
}

/// The subaccounts a pass covers after `cursor`, in SID order: every org's recorded
/// one and every account named `org:<uuid>` (the main account and accounts named
/// otherwise are not this service's).
fn targets(orgs: &[store::OrgView], accounts: Vec<ListedAccount>) -> Vec<Target> {
    let mut by_sid: BTreeMap<String, Target> = BTreeMap::new();
    let named_org = |a: &ListedAccount| {
        a.friendly_name
            .as_deref()
            .and_then(|n| n.strip_prefix("org:"))
            .and_then(|id| Uuid::parse_str(id).ok())
    };
    let recorded_by = |sid: &str| {
        orgs.iter()
            .find(|o| o.subaccount.as_deref() == Some(sid))
            .map(|o| o.id)
    };
    for a in accounts {
        // Named after an org, or recorded by one but renamed at Twilio: the org's.
        let org = named_org(&a).or_else(|| recorded_by(&a.sid));
        if org.is_some() {
            by_sid.insert(
                a.sid.clone(),
                Target {
                    sid: a.sid.clone(),
                    org,
                    account: Some(a),
                },
            );
        }
    }
    for o in orgs {
        if let Some(sub) = &o.subaccount {
            by_sid.entry(sub.clone()).or_insert_with(|| Target {
                sid: sub.clone(),
                org: Some(o.id),
                account: None,
            });
        }
    }
    by_sid.into_values().collect()
}
