//! Cold starts under a Lambda Runtime API emulator (`scripts/bench.sh coldstart`,
//! which builds the bootstraps, starts the local services and writes the plan).
//!
//!   coldstart PLAN.json
//!
//! The plan: `{"runs": N, "warm": M, "timeout_secs": T, "log_dir": DIR, "targets":
//! [{"name", "program", "args": [...], "cwd"?, "env_file", "event_file", "peer"?:
//! "hello"|"node"|"floor"}]}`. Each target is started fresh `runs` times, one process at a
//! time, with exactly the environment of its `env_file` (a JSON object) plus
//! `AWS_LAMBDA_RUNTIME_API` pointing at an emulator of its own on a free loopback
//! port, which serves the Runtime API (2018-06-01) as Lambda does for one
//! instance:
//!
//! - `GET /runtime/invocation/next`: the event file's bytes, with
//!   `Lambda-Runtime-Aws-Request-Id`, `-Deadline-Ms` (now + the function's
//!   `AWS_LAMBDA_FUNCTION_TIMEOUT`), `-Invoked-Function-Arn`, `-Trace-Id`; the same
//!   event `1 + warm` times, then the call is held (the instance is idle, as a
//!   frozen Lambda's would be);
//! - `POST /runtime/invocation/{id}/response` and `/{id}/error`: 202;
//! - `POST /runtime/init/error`: 202, and the target fails.
//!
//! Measured per start: **init** = spawn → first `next`; **first response** = spawn
//! → the first invocation's response received (the cold start: init + first
//! request); **first request** = the first `next` answered → its response; **warm**
//! = the same for each later invocation; **cold CPU** = the on-CPU time of all the
//! process's threads (`/proc/<pid>/task/*/schedstat`) when it asks for the second
//! invocation: what of the cold start was computing, the rest was waiting (on the
//! database, the stand-ins, the scheduler); **peak RSS** = `VmHWM` of
//! `/proc/<pid>/status`, read when the process asks for the invocation after the
//! last one (so after all its work), then it is killed (SIGKILL, with its process
//! group: anything it started, such as the program a profiler wraps). The table shows
//! the median over the starts (warm: p50/p99 over every start's warm invocations)
//! and the cold start (first response) as a multiple of the hello-world peer's and
//! of the Node peer's. The function's stdout/stderr go to `log_dir/<name>.<i>.log`;
//! `log_dir/results.json` has every sample, with the emulator's wall-clock times of
//! each start's spawn, first `next` and first response (to lay beside the
//! function's own JSON log timestamps).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use benchmarks::Summary;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

type Error = Box<dyn std::error::Error + Send + Sync>;

const API: &str = "/2018-06-01/runtime";

/// One program to start cold, as the plan gives it.
struct Target {
    name: String,
    program: String,
    args: Vec<String>,
    cwd: Option<PathBuf>,
    env: HashMap<String, String>,
    event: Bytes,
    peer: Option<String>,
}

impl Target {
    fn from_plan(v: &Value) -> Result<Self, Error> {
        let s = |k: &str| -> Result<String, Error> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("plan target without {k:?}: {v}").into())
        };
        let env_file = s("env_file")?;
        let env: HashMap<String, String> = serde_json::from_slice::<Value>(
            &std::fs::read(&env_file).map_err(|e| format!("{env_file}: {e}"))?,
        )?
        .as_object()
        .ok_or_else(|| format!("{env_file}: not a JSON object"))?
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        })
        .collect();
        let event_file = s("event_file")?;
        let event = std::fs::read(&event_file).map_err(|e| format!("{event_file}: {e}"))?;
        Ok(Self {
            name: s("name")?,
            program: s("program")?,
            args: v
                .get("args")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            cwd: v.get("cwd").and_then(Value::as_str).map(PathBuf::from),
            env,
            event: Bytes::from(event),
            peer: v.get("peer").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// What the emulator saw of one process.
struct Session {
    event: Bytes,
    invocations: usize,
    timeout_ms: u64,
    function_arn: String,
    spawned: Instant,
    first_next: Option<Instant>,
    /// Per invocation: its request id, when its `next` was answered, and its outcome.
    ids: Vec<String>,
    served_at: Vec<Instant>,
    answered: Vec<Option<(Instant, String)>>,
    /// The first invocation's answer (the API Gateway response's body), for the record.
    first_body: Option<String>,
    events: mpsc::UnboundedSender<Ev>,
    idle_signalled: bool,
    /// The process's pid, once spawned: its CPU time is read from `/proc`.
    pid: Option<u32>,
    /// CPU time of all its threads when it asked for the invocation after the first
    /// (init and the first request done, nothing else begun).
    cold_cpu: Option<Duration>,
}

enum Ev {
    /// The process asked for the invocation after the last one: all its work is done.
    Idle,
    InitError(String),
}

#[derive(Clone)]
struct Shared {
    session: Arc<Mutex<Session>>,
    over: watch::Receiver<bool>,
}

fn epoch_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn epoch_us(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros()
}

async fn next(State(s): State<Shared>) -> Response {
    let now = Instant::now();
    let served = {
        let mut sess = s.session.lock().expect("session lock");
        sess.first_next.get_or_insert(now);
        if sess.ids.len() == 1 && sess.cold_cpu.is_none() {
            sess.cold_cpu = sess.pid.and_then(cpu_time);
        }
        if sess.ids.len() < sess.invocations {
            let id = uuid::Uuid::new_v4().to_string();
            sess.ids.push(id.clone());
            let deadline = epoch_ms(SystemTime::now()) + u128::from(sess.timeout_ms);
            let trace = format!(
                "Root=1-{:08x}-{};Parent={};Sampled=0",
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs(),
                &uuid::Uuid::new_v4().simple().to_string()[..24],
                &uuid::Uuid::new_v4().simple().to_string()[..16],
            );
            let resp = (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                    (
                        header::HeaderName::from_static("lambda-runtime-aws-request-id"),
                        HeaderValue::from_str(&id).expect("uuid header"),
                    ),
                    (
                        header::HeaderName::from_static("lambda-runtime-deadline-ms"),
                        HeaderValue::from_str(&deadline.to_string()).expect("digits"),
                    ),
                    (
                        header::HeaderName::from_static("lambda-runtime-invoked-function-arn"),
                        HeaderValue::from_str(&sess.function_arn)
                            .unwrap_or(HeaderValue::from_static("arn")),
                    ),
                    (
                        header::HeaderName::from_static("lambda-runtime-trace-id"),
                        HeaderValue::from_str(&trace).expect("ascii"),
                    ),
                ],
                sess.event.clone(),
            )
                .into_response();
            sess.served_at.push(Instant::now());
            sess.answered.push(None);
            Some(resp)
        } else {
            if !sess.idle_signalled {
                sess.idle_signalled = true;
                let _ = sess.events.send(Ev::Idle);
            }
            None
        }
    };
    match served {
        Some(resp) => resp,
        None => {
            // Held until the process is gone, as Lambda holds a frozen instance's call.
            let mut over = s.over.clone();
            let _ = over.wait_for(|o| *o).await;
            StatusCode::GONE.into_response()
        }
    }
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

fn record(s: &Shared, id: &str, outcome: String, body: String) -> Response {
    let now = Instant::now();
    let mut sess = s.session.lock().expect("session lock");
    match sess.ids.iter().position(|i| i == id) {
        Some(k) if sess.answered[k].is_none() => {
            sess.answered[k] = Some((now, outcome));
            if k == 0 {
                sess.first_body = Some(body);
            }
            accepted()
        }
        Some(_) => (StatusCode::BAD_REQUEST, "response already sent").into_response(),
        None => (StatusCode::BAD_REQUEST, "unknown request id").into_response(),
    }
}

async fn response(State(s): State<Shared>, UrlPath(id): UrlPath<String>, body: Bytes) -> Response {
    // The API Gateway (payload 2.0) response's status code and body.
    let v = serde_json::from_slice::<Value>(&body).ok();
    let status = v
        .as_ref()
        .and_then(|v| v.get("statusCode").and_then(Value::as_u64))
        .map_or_else(|| "?".to_owned(), |c| c.to_string());
    let text = v
        .as_ref()
        .and_then(|v| v.get("body").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    record(&s, &id, status, text)
}

async fn invocation_error(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let kind = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("errorType")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into());
    record(
        &s,
        &id,
        format!("error:{kind}"),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn init_error(State(s): State<Shared>, body: Bytes) -> Response {
    let sess = s.session.lock().expect("session lock");
    let _ = sess
        .events
        .send(Ev::InitError(String::from_utf8_lossy(&body).into_owned()));
    accepted()
}

/// One cold start's figures.
struct Start {
    init: Duration,
    first_response: Duration,
    first_request: Duration,
    warm: Vec<Duration>,
    rss_kb: u64,
    cold_cpu: Option<Duration>,
    first_status: String,
    warm_status: Vec<String>,
    first_body: String,
    wall: [u128; 3],
}

/// On-CPU time of every thread of `pid` (`/proc/<pid>/task/*/schedstat`, first
/// field, ns): what the process computed, where the wall-clock figures also hold
/// its waits on the database, the stand-ins and the scheduler. Threads that already
/// exited are not counted.
fn cpu_time(pid: u32) -> Option<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

fn vm_hwm_kb(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmHWM in /proc/{pid}/status").into())
}

/// SIGKILL to the process group `pgid` (the target and anything it started), by
/// `kill(1)`: the benchmarks crate links no libc bindings for one call.
fn kill_group(pgid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

async fn start_once(
    t: &Target,
    warm: usize,
    timeout: Duration,
    log: &Path,
) -> Result<Start, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let (over_tx, over_rx) = watch::channel(false);
    let region = t.env.get("AWS_REGION").map_or("us-east-1", String::as_str);
    let function = t.env.get("AWS_LAMBDA_FUNCTION_NAME").unwrap_or(&t.name);
    let timeout_ms = t
        .env
        .get("AWS_LAMBDA_FUNCTION_TIMEOUT")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(30)
        * 1000;
    let session = Arc::new(Mutex::new(Session {
        event: t.event.clone(),
        invocations: 1 + warm,
        timeout_ms,
        function_arn: format!("arn:aws:lambda:{region}:000000000000:function:{function}"),
        spawned: Instant::now(),
        first_next: None,
        ids: Vec::new(),
        served_at: Vec::new(),
        answered: Vec::new(),
        first_body: None,
        events: ev_tx,
        idle_signalled: false,
        pid: None,
        cold_cpu: None,
    }));
    let shared = Shared {
        session: session.clone(),
        over: over_rx,
    };
    let app = Router::new()
        .route(&format!("{API}/invocation/next"), get(next))
        .route(&format!("{API}/invocation/{{id}}/response"), post(response))
        .route(
            &format!("{API}/invocation/{{id}}/error"),
            post(invocation_error),
        )
        .route(&format!("{API}/init/error"), post(init_error))
        .with_state(shared);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let out = std::fs::File::create(log)?;
    let mut cmd = tokio::process::Command::new(&t.program);
    cmd.args(&t.args)
        .env_clear()
        .envs(&t.env)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        // Its own process group, killed as a whole: a target started under a
        // profiler (`COLDSTART_WRAP`) must not outlive it holding its connections.
        .process_group(0);
    if let Some(cwd) = &t.cwd {
        cmd.current_dir(cwd);
    }
    let spawned_wall = SystemTime::now();
    let spawned = Instant::now();
    session.lock().expect("session lock").spawned = spawned;
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: cannot start {}: {e}", t.name, t.program))?;
    let pid = child.id().ok_or("the child has no pid")?;
    session.lock().expect("session lock").pid = Some(pid);

    enum End {
        Idle,
        InitError(String),
        Exited(String),
        TimedOut,
    }
    let end = tokio::select! {
        ev = ev_rx.recv() => match ev {
            Some(Ev::Idle) => End::Idle,
            Some(Ev::InitError(body)) => End::InitError(body),
            None => End::Exited("the emulator stopped".into()),
        },
        st = child.wait() => End::Exited(match st {
            Ok(st) => st.to_string(),
            Err(e) => e.to_string(),
        }),
        () = tokio::time::sleep(timeout) => End::TimedOut,
    };
    // Read just before the kill: the peak of the process's whole life.
    let rss = match end {
        End::Idle => Some(vm_hwm_kb(pid)),
        _ => None,
    };
    kill_group(pid);
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = over_tx.send(true);
    server.abort();

    let fail = |why: String| -> Result<Start, Error> {
        Err(format!("{}: {why}; its log: {}", t.name, log.display()).into())
    };
    match end {
        End::Idle => {}
        End::InitError(body) => return fail(format!("init error {body}")),
        End::Exited(st) => return fail(format!("exited ({st}) before the last invocation")),
        End::TimedOut => return fail(format!("no progress within {timeout:?}")),
    }
    let rss_kb = rss.expect("read when idle")?;
    let sess = session.lock().expect("session lock");
    let first_next = sess.first_next.ok_or("no next")?;
    let mut latencies = Vec::with_capacity(sess.ids.len());
    let mut statuses = Vec::with_capacity(sess.ids.len());
    for (k, a) in sess.answered.iter().enumerate() {
        let (at, status) = a.as_ref().ok_or("an invocation without an answer")?;
        latencies.push(*at - sess.served_at[k]);
        statuses.push(status.clone());
    }
    let (first_at, _) = sess.answered[0].as_ref().expect("checked");
    let to_wall = |i: Instant| epoch_us(spawned_wall + (i - spawned));
    Ok(Start {
        init: first_next - spawned,
        first_response: *first_at - spawned,
        first_request: latencies[0],
        warm: latencies[1..].to_vec(),
        rss_kb,
        cold_cpu: sess.cold_cpu,
        first_status: statuses[0].clone(),
        warm_status: statuses[1..].to_vec(),
        first_body: sess.first_body.clone().unwrap_or_default(),
        wall: [
            epoch_us(spawned_wall),
            to_wall(first_next),
            to_wall(*first_at),
        ],
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// "200" or "200 ×1, 404 ×8": the statuses seen, in order of first appearance.
fn tally<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in it {
        if !counts.contains_key(s.as_str()) {
            order.push(s);
        }
        *counts.entry(s).or_default() += 1;
    }
    if order.len() == 1 {
        return order[0].to_owned();
    }
    order
        .iter()
        .map(|s| format!("{s}×{}", counts[s]))
        .collect::<Vec<_>>()
        .join(" ")
}

struct Row {
    name: String,
    peer: Option<String>,
    init: f64,
    cold: f64,
    first_req: f64,
    warm_p50: f64,
    warm_p99: f64,
    rss_mb: f64,
    cold_cpu: f64,
    statuses: String,
    spread: String,
}

fn row(t: &Target, starts: &[Start]) -> Row {
    let warm = Summary {
        label: t.name.clone(),
        samples: starts.iter().flat_map(|s| s.warm.iter().copied()).collect(),
    };
    let (p50, p99) = if warm.samples.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (ms(warm.percentile(50.0)), ms(warm.percentile(99.0)))
    };
    let cold: Vec<f64> = starts.iter().map(|s| ms(s.first_response)).collect();
    let (lo, hi) = cold
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &c| (lo.min(c), hi.max(c)));
    let first = tally(starts.iter().map(|s| &s.first_status));
    let later = tally(starts.iter().flat_map(|s| s.warm_status.iter()));
    Row {
        name: t.name.clone(),
        peer: t.peer.clone(),
        init: median(starts.iter().map(|s| ms(s.init)).collect()),
        cold: median(cold),
        first_req: median(starts.iter().map(|s| ms(s.first_request)).collect()),
        warm_p50: p50,
        warm_p99: p99,
        rss_mb: median(starts.iter().map(|s| s.rss_kb as f64 / 1024.0).collect()),
        cold_cpu: median(starts.iter().filter_map(|s| s.cold_cpu.map(ms)).collect()),
        statuses: if later.is_empty() || later == first {
            first
        } else {
            format!("{first} / warm {later}")
        },
        spread: format!("{lo:.1}–{hi:.1}"),
    }
}

fn print_table(rows: &[Row], failed: &[(String, String)], runs: usize, warm: usize) {
    let base = |peer: &str| {
        rows.iter()
            .find(|r| r.peer.as_deref() == Some(peer))
            .map(|r| r.cold)
    };
    let (hello, node, floor) = (base("hello"), base("node"), base("floor"));
    println!();
    println!(
        "cold starts: median of {runs} fresh processes each; warm: p50/p99 of {warm} more invocations × {runs} processes"
    );
    println!(
        "{:<18} {:>8} {:>10} {:>8} {:>10} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>15}  {:<13} status",
        "route",
        "init",
        "first",
        "cold",
        "first",
        "warm",
        "warm",
        "1st req.",
        "peak",
        "cold",
        "cold",
        "cold",
        "cold"
    );
    println!(
        "{:<18} {:>8} {:>10} {:>8} {:>10} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>15}  {:<13}",
        "",
        "ms",
        "resp. ms",
        "CPU ms",
        "req. ms",
        "p50 ms",
        "p99 ms",
        "−p50 ms",
        "RSS MB",
        "×hello",
        "÷Node",
        "floor+over ms",
        "min–max ms"
    );
    for r in rows {
        let vs_hello = hello.map_or("-".into(), |h| format!("{:.1}×", r.cold / h));
        let vs_node = node.map_or("-".into(), |n| format!("1/{:.1}", n / r.cold));
        // The database routes against the floor: what their own code adds.
        let vs_floor = match (floor, r.peer.as_deref()) {
            (Some(f), None) => format!("{f:.1}{:+.1}", r.cold - f),
            _ => "-".into(),
        };
        println!(
            "{:<18} {:>8.2} {:>10.2} {:>8.2} {:>10.2} {:>9.3} {:>9.3} {:>9.2} {:>8.1} {:>8} {:>8} {:>15}  {:<13} {}",
            r.name,
            r.init,
            r.cold,
            r.cold_cpu,
            r.first_req,
            r.warm_p50,
            r.warm_p99,
            r.first_req - r.warm_p50,
            r.rss_mb,
            vs_hello,
            vs_node,
            vs_floor,
            r.spread,
            r.statuses
        );
    }
    for (name, why) in failed {
        println!("{name:<18} FAILED: {why}");
    }
    println!(
        "init: spawn → first `next`; first resp.: spawn → first response (the cold start = init + first request); \
         cold CPU: on-CPU time of all the process's threads by the end of the first request (the rest of the cold start is waiting); \
         first req.: first `next` answered → its response; warm: the same for later invocations; \
         1st req. −p50: what the first request costs more than a warm one; peak RSS: VmHWM before the kill; ×hello / ÷Node: cold start against the peers' (÷Node 1/15 = 15× faster); \
         floor+over: the floor peer's cold start (runtime loop, one connection with list-numbers' settings, its status statement) plus what the route adds (search-numbers opens no connection: below the floor)"
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let plan_path = std::env::args()
        .nth(1)
        .ok_or("usage: coldstart PLAN.json (see scripts/bench.sh coldstart)")?;
    let plan: Value = serde_json::from_slice(&std::fs::read(&plan_path)?)?;
    let runs = plan.get("runs").and_then(Value::as_u64).unwrap_or(9) as usize;
    let warm = plan.get("warm").and_then(Value::as_u64).unwrap_or(50) as usize;
    let timeout = Duration::from_secs(
        plan.get("timeout_secs")
            .and_then(Value::as_u64)
            .unwrap_or(60),
    );
    let log_dir = PathBuf::from(plan.get("log_dir").and_then(Value::as_str).unwrap_or("."));
    std::fs::create_dir_all(&log_dir)?;
    let targets = plan
        .get("targets")
        .and_then(Value::as_array)
        .ok_or("plan without targets")?
        .iter()
        .map(Target::from_plan)
        .collect::<Result<Vec<_>, _>>()?;

    let mut rows = Vec::new();
    let mut failed = Vec::new();
    let mut results = Vec::new();
    for t in &targets {
        let mut starts = Vec::with_capacity(runs);
        let mut error = None;
        for i in 0..runs {
            let log = log_dir.join(format!("{}.{i}.log", t.name));
            match start_once(t, warm, timeout, &log).await {
                Ok(s) => starts.push(s),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
            // Let the killed process's connections close before the next start.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let r = starts.last().map(|_| row(t, &starts));
        if let Some(r) = &r {
            eprintln!(
                "coldstart: {:<18} init {:>7.2} ms, cold {:>7.2} ms, first request {:>7.2} ms, warm p50 {:>6.3} ms, RSS {:>5.1} MB ({})",
                r.name, r.init, r.cold, r.first_req, r.warm_p50, r.rss_mb, r.statuses
            );
        }
        results.push(json!({
            "name": t.name,
            "program": t.program,
            "error": error,
            "starts": starts.iter().map(|s| json!({
                "init_ms": ms(s.init),
                "first_response_ms": ms(s.first_response),
                "first_request_ms": ms(s.first_request),
                "warm_ms": s.warm.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
                "peak_rss_kb": s.rss_kb,
                "cold_cpu_ms": s.cold_cpu.map(ms),
                "first_status": s.first_status,
                "warm_status": tally(s.warm_status.iter()),
                "first_body": s.first_body.chars().take(600).collect::<String>(),
                "wall_epoch_us": {"spawn": s.wall[0], "first_next": s.wall[1], "first_response": s.wall[2]},
            })).collect::<Vec<_>>(),
        }));
        if let Some(e) = error {
            eprintln!("coldstart: {e}");
            failed.push((t.name.clone(), e));
        }
        if let Some(r) = r {
            rows.push(r);
        }
    }
    std::fs::write(
        log_dir.join("results.json"),
        serde_json::to_vec_pretty(&json!({"runs": runs, "warm": warm, "targets": results}))?,
    )?;
    print_table(&rows, &failed, runs, warm);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} target(s) failed", failed.len()).into())
    }
}
