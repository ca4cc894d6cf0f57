//! The carrier audit at scale (issue 22): the Vapi/Twilio stand-ins seeded in-process
//! with a fleet (default 10,000 orgs × 10 numbers: 10,000 subaccounts, 100,000
//! numbers at Twilio and at Vapi) and a fresh database holding the matching rows, so
//! the three sources agree; then the audit, each run in a child process of its own
//! (this program again, `--child audit`), so its peak RSS (`VmHWM`) is the audit's
//! alone and not the stand-ins' state. The child builds its clients from an
//! environment as the function's (`AuditService::from_env`: the route login,
//! `DB_POOL_SIZE` 1, `AUDIT_CONCURRENCY`) and runs `Auditor::run(force)` within a
//! time budget, as Lambda's remaining time.
//!
//! Scenarios, each printed as a table row from the run's own report:
//!   1. every `AUDIT_BENCH_RTT_MS` (default `0,50`): a whole pass in one run with
//!      Lambda's 900 s, each stand-in answer delayed that long (a middleware around
//!      the stand-ins' router; Vapi and Twilio alike) to model real round trips;
//!   2. a short budget (`AUDIT_BENCH_SHORT_SECS`, default 40, at
//!      `AUDIT_BENCH_SHORT_RTT_MS`, default the last RTT): runs until the pass is
//!      finished, showing the cursor carrying it across runs (at most
//!      `AUDIT_BENCH_SHORT_MAX_RUNS`, default 40);
//!   3. Vapi's whole list read alone in a child (`--child vapi-list`), with a counting
//!      allocator: the heap held per Vapi number, and the page walk's time.
//!
//! Then a paper estimate for `AUDIT_BENCH_EST_ORGS` (default 100,000) orgs from these
//! figures, at the round trips `AUDIT_BENCH_EST_TWILIO_MS` (default 200) per Twilio
//! call, `AUDIT_BENCH_EST_DB_MS` (default 1.5) per database statement (RDS Proxy)
//! and `AUDIT_BENCH_EST_VAPI_PAGE_MS` (default `300,600,800,1000`) per Vapi page of 1000.
//!
//! Size: `AUDIT_BENCH_ORGS` / `--orgs` (10000), `AUDIT_BENCH_NUMBERS` / `--numbers`
//! (10). Any `AUDIT_*` or `PROVIDER_*` variable set for this program is passed to the
//! audit (`AUDIT_CONCURRENCY=32`, `AUDIT_BATCH=100`, …). Needs `TEST_DATABASE_URL`
//! (an admin URL; `scripts/bench.sh audit_scale` sets it); the database it makes is
//! dropped at the end.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use local_api::standins::{
    FleetRequest, LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN, LOCAL_VAPI_KEY, Standins,
    TWILIO_API_PREFIX, TWILIO_PRICING_PREFIX, VAPI_PREFIX,
};
use serde_json::{Value, json};
use shared::carrier_audit::AuditService;
use shared::config::{Env, aws_sdk_config};
use testkit::TestDb;
use tokio::io::{AsyncBufReadExt, BufReader};

// ------------------------------------------------------------------ heap counter

/// The system allocator, counting the bytes live and their peak: the child that
/// reads Vapi's list alone reports what holding it costs.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call goes to `System` with the caller's layout; the counters are
// bookkeeping only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// CPU seconds (user + system) this process has used so far (`/proc/self/stat`,
/// in clock ticks of 1/100 s, Linux's `USER_HZ`).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces), from `state` on:
    // utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// ------------------------------------------------------------------ settings

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn list_or(name: &str, default: &[u64]) -> Vec<u64> {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

struct Settings {
    orgs: usize,
    numbers: usize,
    seed: u64,
    rtts: Vec<u64>,
    budget: Duration,
    short_budget: Duration,
    short_rtt: u64,
    short_max_runs: usize,
    est_orgs: usize,
    est_twilio_ms: f64,
    est_db_ms: f64,
    est_vapi_page_ms: Vec<u64>,
}

impl Settings {
    fn read() -> Self {
        let mut s = Self {
            orgs: env_or("AUDIT_BENCH_ORGS", 10_000),
            numbers: env_or("AUDIT_BENCH_NUMBERS", 10),
            seed: env_or("AUDIT_BENCH_SEED", 22),
            rtts: list_or("AUDIT_BENCH_RTT_MS", &[0, 50]),
            budget: Duration::from_secs(env_or("AUDIT_BENCH_BUDGET_SECS", 900)),
            short_budget: Duration::from_secs(env_or("AUDIT_BENCH_SHORT_SECS", 40)),
            short_rtt: 0,
            short_max_runs: env_or("AUDIT_BENCH_SHORT_MAX_RUNS", 40),
            est_orgs: env_or("AUDIT_BENCH_EST_ORGS", 100_000),
            est_twilio_ms: env_or("AUDIT_BENCH_EST_TWILIO_MS", 200.0),
            est_db_ms: env_or("AUDIT_BENCH_EST_DB_MS", 1.5),
            est_vapi_page_ms: list_or("AUDIT_BENCH_EST_VAPI_PAGE_MS", &[300, 600, 800, 1000]),
        };
        s.short_rtt = env_or(
            "AUDIT_BENCH_SHORT_RTT_MS",
            s.rtts.last().copied().unwrap_or(0),
        );
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .unwrap_or_else(|| panic!("{a} needs a value"))
                    .clone()
            };
            match a.as_str() {
                "--orgs" => s.orgs = value().parse().expect("--orgs N"),
                "--numbers" => s.numbers = value().parse().expect("--numbers M"),
                "--seed" => s.seed = value().parse().expect("--seed S"),
                "--rtt-ms" => {
                    s.rtts = value()
                        .split(',')
                        .map(|v| v.trim().parse().expect("--rtt-ms 0,50"))
                        .collect()
                }
                "--short-secs" => {
                    s.short_budget = Duration::from_secs(value().parse().expect("--short-secs"))
                }
                "--short-rtt-ms" => s.short_rtt = value().parse().expect("--short-rtt-ms"),
                // `cargo bench`-style harness flags.
                "--bench" => {}
                other => panic!(
                    "unknown argument {other} (--orgs N --numbers M --seed S --rtt-ms 0,50 --short-secs S --short-rtt-ms R)"
                ),
            }
        }
        s
    }
}

// ------------------------------------------------------------------ the child

/// The variables of the audit's environment the child sees, besides the endpoints.
fn child_env(base: &str, db_url: &str) -> Vec<(String, String)> {
    let mut vars: BTreeMap<String, String> = [
        ("DATABASE_URL", db_url.to_owned()),
        // One connection, as a Lambda instance has (template Globals).
        ("DB_POOL_SIZE", "1".into()),
        ("VAPI_BASE_URL", format!("{base}{VAPI_PREFIX}")),
        ("VAPI_PRIVATE_KEY", LOCAL_VAPI_KEY.into()),
        ("TWILIO_BASE_URL", format!("{base}{TWILIO_API_PREFIX}")),
        (
            "TWILIO_PRICING_BASE_URL",
            format!("{base}{TWILIO_PRICING_PREFIX}"),
        ),
        ("TWILIO_MAIN_ACCOUNT_SID", LOCAL_TWILIO_MAIN_SID.into()),
        ("TWILIO_MAIN_AUTH_TOKEN", LOCAL_TWILIO_MAIN_TOKEN.into()),
        // The token fingerprints' key (token_mismatch), as the local API's.
        (
            "TOKEN_FINGERPRINT_KEY",
            local_api::server::LOCAL_TOKEN_FINGERPRINT_KEY.into(),
        ),
        // The template's AuditFunction environment.
        ("STEPS_DEADLINE_MS", "20000".into()),
        ("CLAIM_SECS", "60".into()),
        ("PROVIDER_MAX_RETRY_AFTER_MS", "30000".into()),
        ("PROVIDER_RETRIES", "4".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in std::env::vars() {
        let audit_setting = k.starts_with("AUDIT_") && !k.starts_with("AUDIT_BENCH_");
        if audit_setting || k.starts_with("PROVIDER_") || k == "RUST_LOG" {
            vars.insert(k, v);
        }
    }
    vars.into_iter().collect()
}

/// The line a child's answer is on (its other output is the audit's own log).
const MARK: &str = "AUDIT_SCALE_RESULT ";

fn child_main(what: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(async {
        shared::telemetry::init();
        let env = Env::from_process();
        let aws = aws_sdk_config(&env).expect("AWS configuration");
        let service = AuditService::from_env(&env, &aws)
            .await
            .expect("the audit's clients");
        match what {
            "audit" => child_audit(&env, &service).await,
            "vapi-list" => child_vapi_list(&service).await,
            other => panic!("no child {other}"),
        }
    });
    println!("{MARK}{out}");
}

async fn child_audit(env: &Env, service: &AuditService) -> Value {
    let budget = Duration::from_millis(
        env.get("AUDIT_BENCH_BUDGET_MS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(900_000),
    );
    let (rss_start, _) = rss_kib();
    let cpu_start = cpu_secs();
    let started = Instant::now();
    let report = service
        .auditor()
        .run("audit-scale-bench", true, budget)
        .await
        .expect("the audit's database");
    let wall_ms = started.elapsed().as_millis() as u64;
    let (rss_end, hwm) = rss_kib();
    json!({
        "report": report,
        "wallMs": wall_ms,
        "cpuSecs": cpu_secs() - cpu_start,
        "rssStartKiB": rss_start,
        "rssEndKiB": rss_end,
        "hwmKiB": hwm,
    })
}

async fn child_vapi_list(service: &AuditService) -> Value {
    let (rss_start, _) = rss_kib();
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let started = Instant::now();
    let list = service
        .release
        .vapi
        .all_phone_numbers(None)
        .await
        .expect("Vapi's list");
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let held = LIVE.load(Relaxed);
    let walk_peak = PEAK.load(Relaxed);
    // The two indexes the audit builds over it (carrier_audit/mod.rs run_leased).
    let by_id: std::collections::HashMap<&str, &shared::vapi::VapiNumber> =
        list.numbers.iter().map(|v| (v.id.as_str(), v)).collect();
    let mut by_sub: std::collections::HashMap<&str, Vec<&shared::vapi::VapiNumber>> =
        std::collections::HashMap::new();
    for v in &list.numbers {
        if let Some(sub) = v.twilio_account_sid.as_deref() {
            by_sub.entry(sub).or_default().push(v);
        }
    }
    let with_indexes = LIVE.load(Relaxed);
    let (rss_end, hwm) = rss_kib();
    let out = json!({
        "numbers": list.numbers.len(),
        "pages": list.pages,
        "complete": list.complete,
        "ms": ms,
        "heapBefore": before,
        "heapHeld": held - before,
        "heapWithIndexes": with_indexes - before,
        "heapWalkPeak": walk_peak - before,
        "indexes": by_id.len() + by_sub.len(),
        "rssStartKiB": rss_start,
        "rssEndKiB": rss_end,
        "hwmKiB": hwm,
    });
    drop((by_id, by_sub));
    out
}

/// Run this program as a child and read its answer.
async fn spawn_child(what: &str, vars: &[(String, String)]) -> Value {
    let exe = std::env::current_exe().expect("this program");
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--child")
        .arg(what)
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    let mut child = cmd.spawn().expect("spawn the child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut answer = None;
    while let Ok(Some(line)) = lines.next_line().await {
        match line.strip_prefix(MARK) {
            Some(a) => answer = Some(serde_json::from_str(a).expect("the child's answer")),
            // The audit's own log lines (warnings only).
            None => eprintln!("  [audit log] {line}"),
        }
    }
    let status = child.wait().await.expect("the child");
    assert!(status.success(), "the {what} child failed: {status}");
    answer.expect("the child answered")
}

// ------------------------------------------------------------------ round trips

/// Milliseconds each stand-in answer waits before it is served.
#[derive(Clone, Default)]
struct Rtt {
    vapi: Arc<AtomicU64>,
    twilio: Arc<AtomicU64>,
}

impl Rtt {
    fn set(&self, ms: u64) {
        self.vapi.store(ms, Relaxed);
        self.twilio.store(ms, Relaxed);
    }
}

async fn delayed(State(rtt): State<Rtt>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let ms = if path.starts_with("/__control") {
        0
    } else if path.starts_with(VAPI_PREFIX) {
        rtt.vapi.load(Relaxed)
    } else {
        // Twilio's API, its page URIs at the root (`/2010-04-01/…`), its Pricing API.
        rtt.twilio.load(Relaxed)
    };
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    next.run(req).await
}

// ------------------------------------------------------------------ the fleet's rows

/// The database rows of a fleet: each org with its subaccount, each number `active`,
/// bought and imported when the providers say (a day ago: past any grace).
async fn insert_rows(c: &tokio_postgres::Client, fleet: &local_api::standins::Fleet) {
    let orgs = fleet.fleet.as_ref().expect("a described fleet");
    let (ids, subs): (Vec<&str>, Vec<&str>) = orgs
        .iter()
        .map(|o| (o.org_id.as_str(), o.subaccount_sid.as_str()))
        .unzip();
    for (ids, subs) in ids.chunks(20_000).zip(subs.chunks(20_000)) {
        c.execute(
            "INSERT INTO organizations (id, name, twilio_subaccount_sid, created_at, updated_at)
             SELECT id::uuid, 'fleet org', sub, now() - interval '2 days', now() - interval '2 days'
               FROM unnest($1::text[], $2::text[]) AS t(id, sub)",
            &[&ids, &subs],
        )
        .await
        .expect("insert orgs");
    }
    #[derive(Default)]
    struct Columns<'a> {
        org: Vec<&'a str>,
        e164: Vec<&'a str>,
        pn: Vec<&'a str>,
        sub: Vec<&'a str>,
        vapi: Vec<&'a str>,
        op: Vec<&'a str>,
        assistant: Vec<Option<&'a str>>,
        at: Vec<&'a str>,
    }
    let all: Vec<(
        &local_api::standins::FleetOrg,
        &local_api::standins::FleetNumber,
    )> = orgs
        .iter()
        .flat_map(|o| o.numbers.iter().map(move |n| (o, n)))
        .collect();
    for chunk in all.chunks(20_000) {
        let mut cols = Columns::default();
        for (o, n) in chunk {
            cols.org.push(&o.org_id);
            cols.e164.push(&n.e164);
            cols.pn.push(&n.pn_sid);
            cols.sub.push(&o.subaccount_sid);
            cols.vapi.push(&n.vapi_id);
            cols.op.push(&n.purchase_operation_id);
            cols.assistant.push(n.assistant_id.as_deref());
            cols.at.push(&n.created_at);
        }
        c.execute(
            "INSERT INTO managed_phone_numbers
                    (org_id, phone_number, twilio_phone_sid, twilio_subaccount_sid,
                     vapi_phone_id, status, operation_id, assistant_id,
                     bought_at, imported_at, created_at, updated_at)
             SELECT org::uuid, e164, pn, sub, vapi, 'active', op::uuid, assistant,
                    at::timestamptz, at::timestamptz, at::timestamptz, at::timestamptz
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::text[], $8::text[])
                    AS t(org, e164, pn, sub, vapi, op, assistant, at)",
            &[
                &cols.org,
                &cols.e164,
                &cols.pn,
                &cols.sub,
                &cols.vapi,
                &cols.op,
                &cols.assistant,
                &cols.at,
            ],
        )
        .await
        .expect("insert numbers");
    }
    // As autovacuum would have by the time a real fleet is this size.
    c.batch_execute("ANALYZE organizations; ANALYZE managed_phone_numbers")
        .await
        .expect("analyze");
}

/// One batch's live-rows statement as the audit sends it (copied from
/// `shared/src/carrier_audit/store.rs` `live_rows`), explained: how it reads a table
/// of this size.
async fn explain_live_rows(
    c: &tokio_postgres::Client,
    fleet: &local_api::standins::Fleet,
    batch: usize,
) -> (String, f64) {
    let orgs = fleet.fleet.as_ref().expect("a described fleet");
    let mid = orgs.len() / 2;
    let chunk = &orgs[mid..(mid + batch).min(orgs.len())];
    let subs: Vec<&str> = chunk.iter().map(|o| o.subaccount_sid.as_str()).collect();
    let ids: Vec<uuid::Uuid> = chunk
        .iter()
        .map(|o| o.org_id.parse().expect("a uuid"))
        .collect();
    let vapi: Vec<&str> = chunk
        .iter()
        .flat_map(|o| o.numbers.iter().map(|n| n.vapi_id.as_str()))
        .collect();
    let numbers: Vec<&str> = chunk
        .iter()
        .flat_map(|o| o.numbers.iter().map(|n| n.e164.as_str()))
        .collect();
    let sql = "EXPLAIN (ANALYZE, FORMAT JSON)
        SELECT id, org_id, phone_number, status, twilio_phone_sid, twilio_subaccount_sid,
               vapi_phone_id, assistant_id, assistant_pending,
               claim_token IS NOT NULL AND claimed_until >= now(), created_at, updated_at
          FROM managed_phone_numbers
         WHERE status <> 'released'
           AND (twilio_subaccount_sid = ANY($1::text[]) OR org_id = ANY($2::uuid[])
                OR vapi_phone_id = ANY($3::text[]) OR phone_number = ANY($4::text[]))";
    // Twice: the first reads the table into the cache.
    let mut plan = Value::Null;
    for _ in 0..2 {
        plan = c
            .query_one(sql, &[&subs, &ids, &vapi, &numbers])
            .await
            .expect("explain")
            .get(0);
    }
    let top = &plan[0];
    let mut nodes = Vec::new();
    fn walk(n: &Value, depth: usize, out: &mut Vec<String>) {
        out.push(format!(
            "{}{}{}",
            "  ".repeat(depth),
            n["Node Type"].as_str().unwrap_or("?"),
            n["Index Name"]
                .as_str()
                .map(|i| format!(" on {i}"))
                .unwrap_or_default()
        ));
        for c in n["Plans"].as_array().into_iter().flatten() {
            walk(c, depth + 1, out);
        }
    }
    walk(&top["Plan"], 0, &mut nodes);
    (
        nodes.join(" / "),
        top["Execution Time"].as_f64().unwrap_or(f64::NAN),
    )
}

// ------------------------------------------------------------------ the table

struct Row {
    scenario: String,
    rtt: u64,
    budget_s: u64,
    answer: Value,
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn print_table(rows: &[Row], fleet_orgs: usize, fleet_numbers: usize) {
    println!(
        "\n{:<16} {:>6} {:>7} {:>6} {:>8} {:>8} {:>6} {:>9} {:>9} {:>6} {:>7} {:>8} {:>8} {:>8} {:>9} {:>6} {:>8} {:>7} {:>7}",
        "scenario",
        "orgs",
        "numbers",
        "RTT ms",
        "budget s",
        "run s",
        "CPU s",
        "covered",
        "left",
        "vapi✓",
        "calls V",
        "calls Tw",
        "pages V",
        "pages TA",
        "pages TN",
        "price",
        "findings",
        "RSS MB",
        "+RSS MB"
    );
    for r in rows {
        let rep = &r.answer["report"];
        let findings: u64 = rep["found"]
            .as_object()
            .map(|m| m.values().map(n).sum())
            .unwrap_or(0);
        let mb = |k: u64| k as f64 / 1024.0;
        println!(
            "{:<16} {:>6} {:>7} {:>6} {:>8} {:>8.1} {:>6.1} {:>9} {:>9} {:>6} {:>7} {:>8} {:>8} {:>8} {:>9} {:>6} {:>8} {:>7.1} {:>7.1}",
            r.scenario,
            fleet_orgs,
            fleet_numbers,
            r.rtt,
            r.budget_s,
            n(&rep["durationMs"]) as f64 / 1000.0,
            r.answer["cpuSecs"].as_f64().unwrap_or(0.0),
            n(&rep["subaccountsCovered"]),
            n(&rep["subaccountsLeft"]),
            if rep["vapiComplete"].as_bool() == Some(true) {
                "yes"
            } else {
                "NO"
            },
            n(&rep["calls"]["vapi"]),
            n(&rep["calls"]["twilio"]),
            n(&rep["pages"]["vapi"]),
            n(&rep["pages"]["twilio_accounts"]),
            n(&rep["pages"]["twilio_numbers"]),
            n(&rep["calls"]["twilio_pricing"]),
            findings,
            mb(n(&r.answer["hwmKiB"])),
            mb(n(&r.answer["hwmKiB"]).saturating_sub(n(&r.answer["rssStartKiB"]))),
        );
        let errors = rep["errors"].as_array().map_or(0, Vec::len);
        if errors > 0 || findings > 0 || rep["subaccountsFailed"].as_u64() != Some(0) {
            println!(
                "  ! pass {} finished={} failed={} found={} errors={}",
                rep["pass"],
                rep["passFinished"],
                rep["subaccountsFailed"],
                rep["found"],
                rep["errors"]
            );
        }
    }
}

// ------------------------------------------------------------------ the estimate

/// Figures measured here that the estimate scales.
struct Measured {
    /// Seconds of local work per subaccount (RTT 0 run, Vapi list excluded).
    local_per_sub: f64,
    /// Seconds per subaccount per second of round trip, at the configured
    /// concurrency (from the RTT runs).
    rtt_factor: f64,
    /// Heap bytes per Vapi number: held with the audit's indexes, and at the walk's
    /// peak (the list being built beside the walk's set of ids seen).
    bytes_per_vapi: f64,
    walk_bytes_per_vapi: f64,
    /// The audit process's RSS before its run (MB), and the rest of its growth
    /// (beyond the Vapi list's share) per org: Twilio's account list, the orgs,
    /// the pass's targets, the allocator's slack.
    baseline_mb: f64,
    bytes_per_org: f64,
    /// One batch's live-rows statement (ms): as planned here, and through its
    /// indexes (what the planner picks on a table of a million rows).
    live_rows_ms: f64,
    live_rows_indexed_ms: f64,
}

/// Reads per subaccount's worth of round trips at `concurrency`: a batch's reads go
/// in waves of `concurrency`, and the batch waits for all of them.
fn waves(batch: usize, concurrency: usize) -> f64 {
    batch.div_ceil(concurrency) as f64 / batch as f64
}

fn estimate(s: &Settings, m: &Measured, concurrency: usize, batch: usize) {
    let orgs = s.est_orgs as f64;
    let numbers = orgs * s.numbers as f64;
    let vapi_pages = (numbers / 1000.0).floor() + 1.0;
    let account_pages = ((orgs + 1.0) / 1000.0).ceil();
    let tw = s.est_twilio_ms / 1000.0;
    let db = s.est_db_ms / 1000.0;
    let batch_f = batch as f64;
    // The local work measured here, less what this table's sequential scan of the
    // live rows added (with a million rows the planner reads them through the
    // indexes, at about the indexed figure).
    let local =
        (m.local_per_sub - (m.live_rows_ms - m.live_rows_indexed_ms) / 1000.0 / batch_f).max(0.0);
    let per_sub = |conc: usize| {
        let rtt = m.rtt_factor * waves(batch, conc) / waves(batch, concurrency);
        // Per subaccount: its findings closed (one statement); per batch: the live
        // rows and the cursor (two).
        local + rtt * tw + db * (1.0 + 2.0 / batch_f)
    };
    let held_mb = m.bytes_per_vapi * numbers / 1_048_576.0;
    let walk_mb = m.walk_bytes_per_vapi * numbers / 1_048_576.0;
    println!(
        "\nPaper estimate: {} orgs × {} numbers = {} numbers (AUDIT_BATCH {batch}); \
         a Twilio call {:.0} ms, a database statement {:.1} ms, runs of 900 s every 30 min",
        s.est_orgs, s.numbers, numbers as u64, s.est_twilio_ms, s.est_db_ms
    );
    println!(
        "  every run reads: Vapi's list, {vapi_pages} pages of 1000 (sequential: each page is bounded by the last one's oldest createdAt; \
         at most half the run), Twilio's accounts, {account_pages} pages of 1000 (sequential: next_page_uri), every org ({} rows)",
        s.est_orgs
    );
    println!(
        "  a pass: {} number-list calls at Twilio, 1 page each (≤ 1000 numbers a subaccount), + {account_pages} account pages and \
         up to {vapi_pages} Vapi pages every run",
        s.est_orgs
    );
    for conc in [concurrency, 32] {
        println!(
            "  per subaccount at AUDIT_CONCURRENCY {conc}: {:.4} s = {:.4} local (measured) + {:.3} × RTT ({}) + {:.2} statements \
             → {:.0} s of subaccount work a pass",
            per_sub(conc),
            local,
            m.rtt_factor * waves(batch, conc) / waves(batch, concurrency),
            if conc == concurrency {
                "measured"
            } else {
                "scaled by the waves"
            },
            1.0 + 2.0 / batch_f,
            per_sub(conc) * orgs
        );
    }
    let orgs_mb = m.bytes_per_org * orgs / 1_048_576.0;
    println!(
        "  memory (whole list): {:.0} MB at start + Vapi's list {:.0} B a number held with its indexes ({held_mb:.0} MB; {:.0} B, {walk_mb:.0} MB, \
         at the walk's peak) + {:.0} B an org ({orgs_mb:.0} MB) ≈ {:.0} MB peak RSS (AuditFunction MemorySize 512)",
        m.baseline_mb,
        m.bytes_per_vapi,
        m.walk_bytes_per_vapi,
        m.bytes_per_org,
        m.baseline_mb + held_mb.max(walk_mb) + orgs_mb
    );
    println!(
        "\n  {:>8} {:>7} {:>7} {:>9} {:>8} {:>9} {:>10} {:>5} {:>7} {:>10} {:>5} {:>7}",
        "Vapi ms",
        "Vapi s",
        "read %",
        "accts s",
        "work s",
        "RSS MB",
        format!("subs/run@{concurrency}"),
        "runs",
        "pass",
        "subs/run@32",
        "runs",
        "pass"
    );
    let usable = 900.0 - 10.0; // AUDIT_RESERVE_MS
    for &page_ms in &s.est_vapi_page_ms {
        let whole = vapi_pages * page_ms as f64 / 1000.0;
        // The walk stops at half the run, less one attempt's timeout (5 s).
        let vapi_s = whole.min(usable / 2.0);
        let read = if whole <= usable / 2.0 {
            1.0
        } else {
            ((usable / 2.0 - 5.0) / whole).min(1.0)
        };
        let accounts_s = account_pages * (tw + 0.05);
        let work = usable - vapi_s - accounts_s - 1.0;
        let rss = m.baseline_mb + held_mb.max(walk_mb) * read + orgs_mb;
        let plan = |conc: usize| {
            if work <= 0.0 {
                return ("0".to_owned(), "never".to_owned(), "never".to_owned());
            }
            let per_run = (work / per_sub(conc)).floor();
            let runs = (orgs / per_run).ceil();
            // A run every 30 minutes (AuditTickMinutes), each up to 900 s.
            let hours = (runs - 1.0) * 0.5 + 900.0 / 3600.0;
            (
                format!("{per_run:.0}"),
                format!("{runs:.0}"),
                format!("{hours:.1} h"),
            )
        };
        let (a, b) = (plan(concurrency), plan(32));
        println!(
            "  {:>8} {:>7.0} {:>7.0} {:>9.0} {:>8.0} {:>9.0} {:>10} {:>5} {:>7} {:>10} {:>5} {:>7}",
            page_ms,
            vapi_s,
            read * 100.0,
            accounts_s,
            work,
            rss,
            a.0,
            a.1,
            a.2,
            b.0,
            b.1,
            b.2
        );
    }
}

// ------------------------------------------------------------------ main

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child_main(args.get(2).map_or("audit", String::as_str));
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(parent());
}

async fn parent() {
    let s = Settings::read();
    let concurrency: usize = env_or("AUDIT_CONCURRENCY", 8);
    let batch: usize = env_or("AUDIT_BATCH", 50);
    let total = s.orgs * s.numbers;
    println!(
        "audit_scale: {} orgs × {} numbers = {total} numbers; AUDIT_CONCURRENCY {concurrency}, AUDIT_BATCH {batch}; RTTs {:?} ms",
        s.orgs, s.numbers, s.rtts
    );

    // The stand-ins, seeded with the fleet, served with a delay per answer.
    let standins = Standins::default();
    let t = Instant::now();
    let fleet = {
        let (standins, req) = (
            standins.clone(),
            FleetRequest {
                orgs: s.orgs,
                numbers_per_org: s.numbers,
                seed: s.seed,
                describe: true,
                age_secs: None,
            },
        );
        tokio::task::spawn_blocking(move || standins.seed_fleet(&req))
            .await
            .expect("seeding")
            .unwrap_or_else(|e| panic!("seeding the fleet: {e:?}"))
    };
    let seeded_s = t.elapsed().as_secs_f64();
    let rtt = Rtt::default();
    let app = standins
        .router()
        .layer(axum::middleware::from_fn_with_state(rtt.clone(), delayed));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // The database, agreeing with them.
    let db = TestDb::new().await;
    let admin = db.client().await;
    let t = Instant::now();
    insert_rows(&admin, &fleet).await;
    let rows_s = t.elapsed().as_secs_f64();
    let (plan, plan_ms) = explain_live_rows(&admin, &fleet, batch).await;
    // The same with sequential scans off: what reading it through the indexes on
    // each arm of its OR costs (the planner's choice above may differ).
    admin
        .batch_execute("SET enable_seqscan = off")
        .await
        .expect("set");
    let (indexed_plan, indexed_ms) = explain_live_rows(&admin, &fleet, batch).await;
    admin
        .batch_execute("RESET enable_seqscan")
        .await
        .expect("reset");
    println!(
        "seeded the stand-ins in {seeded_s:.1} s ({} subaccounts, {} Twilio and {} Vapi numbers); \
         inserted {} orgs and {total} active rows in {rows_s:.1} s",
        fleet.subaccounts, fleet.twilio_numbers, fleet.vapi_numbers, s.orgs
    );
    println!(
        "one batch's live-rows statement ({batch} subaccounts, {total} rows in the table): {plan_ms:.1} ms as planned ({plan}); \
         {indexed_ms:.1} ms with enable_seqscan off ({indexed_plan})"
    );
    let vars = child_env(&base, &db.url());

    let mut rows = Vec::new();
    let run = |rtt_ms: u64, budget: Duration, label: String| {
        let mut vars = vars.clone();
        vars.push((
            "AUDIT_BENCH_BUDGET_MS".into(),
            budget.as_millis().to_string(),
        ));
        rtt.set(rtt_ms);
        async move {
            let answer = spawn_child("audit", &vars).await;
            eprintln!(
                "[{label}] {} ms, {} covered, {} left",
                answer["report"]["durationMs"],
                answer["report"]["subaccountsCovered"],
                answer["report"]["subaccountsLeft"]
            );
            Row {
                scenario: label,
                rtt: rtt_ms,
                budget_s: budget.as_secs(),
                answer,
            }
        }
    };

    // 1. A whole pass in one run, at each round trip.
    for &r in &s.rtts {
        rows.push(run(r, s.budget, format!("one run, {r} ms")).await);
    }
    // 2. A short budget: the cursor carries the pass across runs.
    let mut short_runs = 0;
    let mut short_covered = 0;
    let mut short_s = 0.0;
    for i in 1..=s.short_max_runs {
        let row = run(s.short_rtt, s.short_budget, format!("short #{i}")).await;
        let rep = &row.answer["report"];
        short_runs += 1;
        short_covered += n(&rep["subaccountsCovered"]);
        short_s += n(&rep["durationMs"]) as f64 / 1000.0;
        let done = rep["passFinished"].as_bool() == Some(true);
        let stuck = n(&rep["subaccountsCovered"]) == 0;
        rows.push(row);
        if done || stuck {
            break;
        }
    }
    // 3. Vapi's list alone, on the heap.
    rtt.set(0);
    let vapi_list = spawn_child("vapi-list", &vars).await;
    server.abort();

    print_table(&rows, s.orgs, total);
    if short_runs > 0 {
        println!(
            "\nshort budget: {short_runs} runs of {} s at {} ms covered {short_covered} subaccounts in {short_s:.1} s of audit time (the pass {})",
            s.short_budget.as_secs(),
            s.short_rtt,
            if rows
                .last()
                .is_some_and(|r| r.answer["report"]["passFinished"].as_bool() == Some(true))
            {
                "finished"
            } else {
                "did NOT finish"
            }
        );
    }
    let v = &vapi_list;
    let numbers = n(&v["numbers"]).max(1) as f64;
    let bytes_per_vapi = n(&v["heapWithIndexes"]) as f64 / numbers;
    println!(
        "Vapi list alone (RTT 0): {} numbers in {} pages, {:.0} ms ({:.1} ms a page); heap held {:.1} MB ({:.0} B a number), \
         with the audit's two indexes {:.1} MB ({:.0} B a number), walk peak {:.1} MB; process RSS {:.1} → {:.1} MB, peak {:.1} MB",
        n(&v["numbers"]),
        n(&v["pages"]),
        v["ms"].as_f64().unwrap_or(0.0),
        v["ms"].as_f64().unwrap_or(0.0) / n(&v["pages"]).max(1) as f64,
        n(&v["heapHeld"]) as f64 / 1_048_576.0,
        n(&v["heapHeld"]) as f64 / numbers,
        n(&v["heapWithIndexes"]) as f64 / 1_048_576.0,
        bytes_per_vapi,
        n(&v["heapWalkPeak"]) as f64 / 1_048_576.0,
        n(&v["rssStartKiB"]) as f64 / 1024.0,
        n(&v["rssEndKiB"]) as f64 / 1024.0,
        n(&v["hwmKiB"]) as f64 / 1024.0,
    );

    // The estimate's inputs, from the whole-pass runs.
    let full: Vec<&Row> = rows
        .iter()
        .filter(|r| r.scenario.starts_with("one run"))
        .collect();
    let subs = |r: &Row| n(&r.answer["report"]["subaccountsCovered"]).max(1) as f64;
    let dur = |r: &Row| n(&r.answer["report"]["durationMs"]) as f64 / 1000.0;
    let vapi_local_s = v["ms"].as_f64().unwrap_or(0.0) / 1000.0;
    let zero = full.iter().find(|r| r.rtt == 0);
    let local_per_sub = zero.map_or(0.0, |r| ((dur(r) - vapi_local_s) / subs(r)).max(0.0));
    let rtt_factor = match (
        zero,
        full.iter().filter(|r| r.rtt > 0).max_by_key(|r| r.rtt),
    ) {
        (Some(z), Some(r)) => {
            let rtt_s = r.rtt as f64 / 1000.0;
            let rep = &r.answer["report"];
            // The lists' sequential pages pay the round trip too.
            let list_pages =
                (n(&rep["pages"]["vapi"]) + n(&rep["pages"]["twilio_accounts"])) as f64;
            ((dur(r) - dur(z) - list_pages * rtt_s) / (subs(r) * rtt_s)).max(0.0)
        }
        _ => waves(batch, concurrency),
    };
    let peak = full
        .iter()
        .max_by_key(|r| n(&r.answer["hwmKiB"]))
        .map(|r| &r.answer);
    let kib = |k: &str| peak.map_or(0.0, |a| n(&a[k]) as f64 * 1024.0);
    let vapi_bytes = bytes_per_vapi * total as f64;
    let rest = (kib("hwmKiB") - kib("rssStartKiB") - vapi_bytes).max(0.0);
    let bytes_per_org = rest / s.orgs.max(1) as f64;
    println!(
        "audit peak RSS {:.1} MB = {:.1} MB at start + {:.1} MB: the Vapi list and its indexes ≈ {:.1} MB, the rest {:.1} MB ({bytes_per_org:.0} B an org)",
        kib("hwmKiB") / 1_048_576.0,
        kib("rssStartKiB") / 1_048_576.0,
        (kib("hwmKiB") - kib("rssStartKiB")) / 1_048_576.0,
        vapi_bytes / 1_048_576.0,
        rest / 1_048_576.0
    );
    estimate(
        &s,
        &Measured {
            local_per_sub,
            rtt_factor,
            bytes_per_vapi,
            walk_bytes_per_vapi: n(&v["heapWalkPeak"]) as f64 / numbers,
            baseline_mb: kib("rssStartKiB") / 1_048_576.0,
            bytes_per_org,
            live_rows_ms: plan_ms,
            live_rows_indexed_ms: indexed_ms,
        },
        concurrency,
        batch,
    );

    drop(admin);
    drop_database(&db).await;
}

/// The database this made, and its logins (the cluster is shared with the session).
async fn drop_database(db: &TestDb) {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        return;
    };
    let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
        return;
    };
    tokio::spawn(conn);
    let name = &db.name;
    // One statement at a time: DROP DATABASE refuses a transaction block.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("DROP ROLE IF EXISTS {name}_route"),
        format!("DROP ROLE IF EXISTS {name}_read"),
    ] {
        if let Err(e) = c.batch_execute(&sql).await {
            eprintln!("could not {sql}: {e:?}");
        }
    }
}
