//! The world a schedule runs in, built in one place ([`World::spawn`], as
//! zero2prod's `spawn_app`): a fresh database, the Vapi and Twilio stand-ins served
//! in-process on a free port (journaling what they hold), and [`INSTANCES`]
//! instances — each route's handler state and a reconcile service built by their
//! own `from_env`, each with its own connection pool, as separate Lambda instances
//! are — called with API Gateway events, exactly as Lambda calls them.
//!
//! Timings are short so a schedule runs in seconds: each provider attempt gives up
//! after [`PROVIDER_TIMEOUT_MS`], a request's provider steps after
//! [`STEPS_DEADLINE_MS`] (rotate-credential's and reconcile's after
//! [`ROTATION_DEADLINE_MS`]: see there), and a claim expires after [`CLAIM_SECS`].
//!
//! **The clock.** Reconcile backs a row off by minutes to an hour
//! (`shared::steps::retry_backoff`) and resumes only rows whose claim expired. The
//! test does not wait for that: [`World::advance_clock`] moves time forward *for
//! the database* by shifting every `timestamptz` column of every table (claims,
//! leases, `next_attempt_at`, `updated_at`, `created_at`, step stamps, …) into the
//! past by the same amount — except the append-only `audit_log`, whose trigger
//! refuses updates and which no decision reads. The stand-ins' objects age as
//! much ([`Standins::age`]): lookup lag and `createdAt` bounds see them that much
//! older, as they would after the time had really passed.

use std::net::SocketAddr;
use std::time::Duration;

use local_api::standins::{
    FailMode, LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN, LOCAL_VAPI_KEY, Standins,
    TWILIO_ACCOUNTS_PREFIX, TWILIO_API_PREFIX, TWILIO_PRICING_PREFIX, VAPI_PREFIX, seed_numbers,
};
use serde_json::{Value, json};
use shared::carrier_audit::{AuditConfig, AuditReport, Auditor};
use shared::config::Env;
use shared::release::{ReconcileReport, ReleaseService};
use testkit::TestDb;
use testkit::event::{ApiEvent, read_response};
use uuid::Uuid;

use super::invariants::{Held, OrgState};
use super::schedule::{
    Act, BYOC_ACCOUNTS, CLAIM_SECS, Fault, FaultKind, Hand, INSTANCES, NUMBERS, ORGS,
};

pub const PROVIDER_TIMEOUT_MS: u64 = 300;
pub const STEPS_DEADLINE_MS: u64 = 1500;
/// The steps' deadline of rotate-credential and reconcile (their functions' own
/// `STEPS_DEADLINE_MS`, as a scheduled function may well have a longer one). A
/// token rotation starts neither a new secondary token nor its promotion with less
/// than a fixed 1.5 s left (`shared::rotation`'s `STEP_BUDGET`), so under the
/// requests' 1.5 s no rotation ever gets past its first step — a service bug kept
/// as the ignored scenario `seed_rotation_under_a_short_deadline_never_starts`
/// (it runs with `STEPS_DEADLINE_MS` for these too). Longer than the requests'
/// deadline, shorter than a claim: [`super::schedule::MAX_LAG_MS`] is bounded by it.
pub const ROTATION_DEADLINE_MS: u64 = 2500;

const NUMBERS_ROUTE: &str = "/api/managed-telephony/numbers";
const NUMBER_ROUTE: &str = "/api/managed-telephony/numbers/{phoneNumber}";
const SAVE_ROUTE: &str = "/api/telephony/credentials/twilio";
const STATUS_ROUTE: &str = "/api/managed-telephony/status";
const OFFBOARD_ROUTE: &str = "/api/managed-telephony/offboard";
const ROTATE_ROUTE: &str = "/api/telephony/credentials/twilio/rotate";

/// One Lambda instance of each function the schedules use.
pub struct Instance {
    buy: buy_number::State,
    update: update_number::State,
    release: release_number::State,
    save: save_credential::State,
    list: list_numbers::State,
    offboard: offboard_org::State,
    rotate: rotate_credential::State,
    disconnect: disconnect_credential::State,
    reconcile: ReleaseService,
}

/// What a call got.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a handful per schedule: not worth a box
pub enum Answer {
    Http {
        status: u16,
        body: Value,
    },
    Reconciled(Result<ReconcileReport, String>),
    /// The instance was killed before it answered.
    Killed,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http { status, body } => {
                let mut body = body.to_string();
                if body.len() > 400 {
                    let mut cut = 400;
                    while !body.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    body.truncate(cut);
                    body.push('…');
                }
                write!(f, "{status} {body}")
            }
            Self::Reconciled(Ok(r)) => write!(
                f,
                "reconciled: {} releases claimed ({} released), purchases {:?}, {} assistant changes confirmed, {} offboardings resumed ({} finished), {} rotations resumed ({} finished), {} db errors",
                r.claimed,
                r.released,
                r.purchases,
                r.assistants_confirmed,
                r.offboardings_resumed,
                r.offboardings_finished,
                r.rotations_resumed,
                r.rotations_finished,
                r.db_errors
            ),
            Self::Reconciled(Err(e)) => write!(f, "reconcile failed: {e}"),
            Self::Killed => f.write_str("killed"),
        }
    }
}

pub struct World {
    pub db: TestDb,
    pub standins: Standins,
    /// The orgs of the schedule (`org0`, `org1`, `org2`).
    pub orgs: Vec<Uuid>,
    admin: tokio_postgres::Client,
    env: Env,
    reader_env: Env,
    /// rotate-credential's and reconcile's ([`ROTATION_DEADLINE_MS`]).
    rotation_env: Env,
    aws: aws_config::SdkConfig,
    instances: Vec<Instance>,
    server: tokio::task::JoinHandle<()>,
    /// `(table, timestamptz columns)` of every table the clock moves.
    clocked: Vec<(String, Vec<String>)>,
    /// The carrier audit's settings (the deployed defaults).
    audit: AuditConfig,
}

impl World {
    /// A fresh world: database, stand-ins (offering the 415 inventory), and
    /// [`INSTANCES`] instances, rotate-credential and reconcile with
    /// `rotation_deadline_ms` as their steps' deadline.
    pub async fn spawn(rotation_deadline_ms: u64) -> Self {
        let db = TestDb::new().await;
        let standins = Standins::default();
        standins.offer(seed_numbers());
        standins.keep_journal();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr: SocketAddr = listener.local_addr().expect("address");
        let app = standins.router();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let base = format!("http://{addr}");
        let (vapi, twilio, pricing, accounts) = (
            format!("{base}{VAPI_PREFIX}"),
            format!("{base}{TWILIO_API_PREFIX}"),
            format!("{base}{TWILIO_PRICING_PREFIX}"),
            format!("{base}{TWILIO_ACCOUNTS_PREFIX}"),
        );
        let (timeout, deadline, claim) = (
            PROVIDER_TIMEOUT_MS.to_string(),
            STEPS_DEADLINE_MS.to_string(),
            CLAIM_SECS.to_string(),
        );
        let url = db.url();
        let env = Env::from_pairs([
            ("DATABASE_URL", url.as_str()),
            // One connection per function, as a Lambda instance has.
            ("DB_POOL_SIZE", "1"),
            ("KEYRING", "local"),
            (
                "LOCAL_KEYRING_KEY",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
            ("VAPI_BASE_URL", vapi.as_str()),
            ("VAPI_PRIVATE_KEY", LOCAL_VAPI_KEY),
            ("TWILIO_BASE_URL", twilio.as_str()),
            ("TWILIO_PRICING_BASE_URL", pricing.as_str()),
            // Token rotation: Twilio's Accounts API, and the key of the tokens'
            // fingerprints (a test value, ≥ 32 bytes).
            ("TWILIO_ACCOUNTS_BASE_URL", accounts.as_str()),
            (
                "TOKEN_FINGERPRINT_KEY",
                "fault-schedule-token-fingerprint-key-0123456789",
            ),
            ("TWILIO_MAIN_ACCOUNT_SID", LOCAL_TWILIO_MAIN_SID),
            ("TWILIO_MAIN_AUTH_TOKEN", LOCAL_TWILIO_MAIN_TOKEN),
            ("PROVIDER_TIMEOUT_MS", timeout.as_str()),
            ("PROVIDER_MIN_BACKOFF_MS", "1"),
            ("PROVIDER_MAX_BACKOFF_MS", "5"),
            ("STEPS_DEADLINE_MS", deadline.as_str()),
            ("CLAIM_SECS", claim.as_str()),
            ("OUTCOME_MARGIN_MS", "300"),
            ("RECONCILE_MAX_ATTEMPTS", "3"),
            // The daily limit is not what these schedules are about.
            ("PURCHASES_PER_ORG_PER_DAY", "1000"),
        ]);
        let mut reader_env = env.clone();
        reader_env.set("DATABASE_URL", db.reader_url());
        let mut rotation_env = env.clone();
        rotation_env.set("STEPS_DEADLINE_MS", rotation_deadline_ms.to_string());
        let aws = testkit::aws_config().await;
        let admin = db.client().await;
        let clocked = clocked_columns(&admin).await;
        let mut world = Self {
            db,
            standins,
            orgs: (0..ORGS).map(|_| Uuid::new_v4()).collect(),
            admin,
            env,
            reader_env,
            rotation_env,
            aws,
            instances: Vec::new(),
            server,
            clocked,
            audit: AuditConfig::from_env(
                &Env::from_pairs([("CLAIM_SECS", claim.as_str())]),
                &shared::steps::StepsConfig {
                    claim_ttl: Duration::from_secs(CLAIM_SECS),
                    ..Default::default()
                },
            )
            .expect("audit settings"),
        };
        for _ in 0..INSTANCES {
            let instance = world.instance().await;
            world.instances.push(instance);
        }
        world
    }

    /// An instance as its functions' `main`s build them (a cold start).
    async fn instance(&self) -> Instance {
        let (env, aws) = (&self.env, &self.aws);
        Instance {
            buy: buy_number::State::from_env(env, aws)
                .await
                .expect("buy-number"),
            update: update_number::State::from_env(env, aws)
                .await
                .expect("update-number"),
            release: release_number::State::from_env(env, aws)
                .await
                .expect("release-number"),
            save: save_credential::State::from_env(env, aws)
                .await
                .expect("save-credential"),
            list: list_numbers::State::from_env(&self.reader_env, aws)
                .await
                .expect("list-numbers"),
            offboard: offboard_org::State::from_env(env, aws)
                .await
                .expect("offboard-org"),
            rotate: rotate_credential::State::from_env(&self.rotation_env, aws)
                .await
                .expect("rotate-credential"),
            disconnect: disconnect_credential::State::from_env(env, aws)
                .await
                .expect("disconnect-credential"),
            // As the reconcile function builds it: with the keyring and the
            // fingerprint key, so that it resumes token rotations too.
            reconcile: ReleaseService::from_env(&self.rotation_env, aws)
                .await
                .expect("reconcile")
                .with_tokens(
                    shared::rotation::TokenKit::from_env(
                        &self.rotation_env,
                        aws,
                        &shared::config::SecretLoader::new(&self.rotation_env, aws),
                    )
                    .await
                    .expect("reconcile's token kit"),
                ),
        }
    }

    /// A killed instance is replaced by a cold one.
    pub async fn restart(&mut self, i: usize) {
        let fresh = self.instance().await;
        self.instances[i] = fresh;
    }

    fn org(&self, i: usize) -> String {
        self.orgs[i].to_string()
    }

    /// Run `act` on instance `i`, as Lambda would call its handler (or the
    /// reconcile function its library); `kill_after`: the instance dies that long
    /// into the call.
    pub async fn call(&self, i: usize, act: &Act, kill_after: Option<Duration>) -> Answer {
        let call = self.call_inner(i, act);
        match kill_after {
            None => call.await,
            Some(after) => tokio::time::timeout(after, call)
                .await
                .unwrap_or(Answer::Killed),
        }
    }

    async fn call_inner(&self, i: usize, act: &Act) -> Answer {
        let instance = &self.instances[i];
        let write = |method: &str, route: &str, path: &str, org: usize| {
            ApiEvent::new(method, route, path)
                .caller(&self.org(org), "fault-schedule")
                .scopes(&["telephony:write"])
        };
        let number_path =
            |number: usize| format!("{NUMBERS_ROUTE}/{}", NUMBERS[number].replace('+', "%2B"));
        let resp = match *act {
            Act::Buy {
                org,
                number,
                assistant,
                name,
            } => {
                let mut body = json!({ "phoneNumber": NUMBERS[number] });
                if let Some(a) = assistant {
                    body["assistantId"] = json!(a.id());
                }
                if let Some(n) = name {
                    body["name"] = json!(n);
                }
                let ev = write("POST", NUMBERS_ROUTE, NUMBERS_ROUTE, org).json(&body);
                buy_number::handle(&instance.buy, ev.request()).await
            }
            Act::Change {
                org,
                number,
                assistant,
            } => {
                let ev = write("PATCH", NUMBER_ROUTE, &number_path(number), org)
                    .path_parameter("phoneNumber", NUMBERS[number])
                    .json(&json!({ "assistantId": assistant.id() }));
                update_number::handle(&instance.update, ev.request()).await
            }
            Act::Release { org, number } => {
                let ev = write("DELETE", NUMBER_ROUTE, &number_path(number), org)
                    .path_parameter("phoneNumber", NUMBERS[number]);
                release_number::handle(&instance.release, ev.request()).await
            }
            Act::Save { org, account } => {
                let body = json!({
                    "accountSid": BYOC_ACCOUNTS[account],
                    "authToken": "0123456789abcdef0123456789abcdef",
                    "phoneNumber": "+14155550199",
                });
                let ev = write("PUT", SAVE_ROUTE, SAVE_ROUTE, org).json(&body);
                save_credential::handle(&instance.save, ev.request()).await
            }
            Act::Offboard { org } => {
                let ev = ApiEvent::new("POST", OFFBOARD_ROUTE, OFFBOARD_ROUTE)
                    .caller(&self.org(org), "fault-schedule")
                    .scopes(&["telephony:offboard"])
                    .json(&json!({ "confirm": self.org(org) }));
                offboard_org::handle(&instance.offboard, ev.request()).await
            }
            Act::Rotate { org } => {
                let ev = write("POST", ROTATE_ROUTE, ROTATE_ROUTE, org);
                rotate_credential::handle(&instance.rotate, ev.request()).await
            }
            Act::Disconnect { org } => {
                let ev = write("DELETE", SAVE_ROUTE, SAVE_ROUTE, org);
                disconnect_credential::handle(&instance.disconnect, ev.request()).await
            }
            Act::Reconcile => {
                let request_id = format!("reconcile-{}", Uuid::new_v4());
                let report = instance
                    .reconcile
                    .reconcile(25, &request_id, || Duration::from_secs(60))
                    .await
                    .map_err(|e| e.to_string());
                return Answer::Reconciled(report);
            }
        };
        let (status, body) = read_response(&resp);
        Answer::Http { status, body }
    }

    /// One carrier-audit run that starts a pass (as a run by hand does), with
    /// instance `i`'s clients, as the audit function builds them.
    pub async fn audit(&self, i: usize) -> Result<AuditReport, String> {
        let r = &self.instances[i].reconcile;
        let auditor = Auditor {
            db: &r.db,
            vapi: &r.vapi,
            twilio: &r.twilio,
            config: &self.audit,
            fingerprints: &r
                .tokens
                .as_ref()
                .expect("reconcile is built with its tokens")
                .fingerprints,
        };
        let request_id = format!("audit-{}", Uuid::new_v4());
        match auditor
            .run(&request_id, true, Duration::from_secs(120))
            .await
        {
            Ok(report) if report.errors.is_empty() => Ok(report),
            Ok(report) => Err(format!("the run ended early: {:?}", report.errors)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Make `hand` drift at the stand-ins, as a person in the Twilio console or
    /// the Vapi dashboard would; what was done (or why nothing was).
    pub async fn hand(&self, hand: Hand) -> String {
        // Vapi's PATCH takes an assistant: a number routed to none has nothing the
        // audit could send back (it only flags that), so no hand routes it.
        let unrouted: Vec<String> = self
            .rows()
            .await
            .into_iter()
            .filter(|r| r.status != "released" && r.assistant.is_none())
            .map(|r| r.number)
            .collect();
        let operation: Option<String> = match hand {
            Hand::LostPurchase { org, .. } => self
                .admin
                .query_opt(
                    "SELECT detail->>'operationId' FROM audit_log
                      WHERE org_id = $1 AND action = 'number.purchase' LIMIT 1",
                    &[&self.orgs[org]],
                )
                .await
                .expect("an operation id")
                .map(|r| r.get(0)),
            _ => None,
        };
        let (_, now) = self.standins.holdings();
        let held = Held::parse(&now);
        let subaccount = |org: usize| self.subaccount(org);
        let outcome = match hand {
            Hand::LostPurchase { org, number } => match (subaccount(org), &operation) {
                (None, _) => Err("the org has no subaccount".to_owned()),
                (_, None) => {
                    Err("the org never asked to buy (no operation id to reuse)".to_owned())
                }
                (Some(sid), Some(op)) => {
                    // A purchase of the org's whose rows were lost: its name carries
                    // an operation id this database knows.
                    let name = format!("purchase {op}");
                    self.standins
                        .buy_by_hand(local_api::standins::HandNumber {
                            account_sid: &sid,
                            phone_number: NUMBERS[number],
                            friendly_name: Some(&name),
                            age: Duration::ZERO,
                        })
                        .map(drop)
                        .map_err(|e| e.message().to_owned())
                }
            },
            Hand::DashboardImport { org, number } => match subaccount(org) {
                None => Err("the org has no subaccount".to_owned()),
                Some(sid) => self
                    .standins
                    .import_by_hand(NUMBERS[number], &sid, None, None, Duration::ZERO)
                    .map(drop)
                    .map_err(|e| e.message().to_owned()),
            },
            Hand::DashboardAssistant { number, .. }
                if unrouted.iter().any(|n| n == NUMBERS[number]) =>
            {
                Err("its row routes to no assistant (the audit only flags that)".to_owned())
            }
            Hand::ConsoleRotation { org } => match subaccount(org) {
                None => Err("the org has no subaccount".to_owned()),
                Some(sid) => self
                    .standins
                    .rotate_token_by_hand(&sid)
                    .map(drop)
                    .map_err(|e| e.message().to_owned()),
            },
            Hand::DashboardAssistant { number, assistant } => {
                let ids: Vec<&str> = held
                    .vapi
                    .iter()
                    .filter(|v| v.number == NUMBERS[number])
                    .map(|v| v.id.as_str())
                    .collect();
                if ids.is_empty() {
                    Err("Vapi has no such number".to_owned())
                } else {
                    ids.iter()
                        .try_for_each(|id| {
                            self.standins
                                .set_vapi_assistant(id, Some(assistant.id()))
                                .map(drop)
                        })
                        .map_err(|e| e.message().to_owned())
                }
            }
        };
        match outcome {
            Ok(()) => "done".to_owned(),
            Err(why) => format!("nothing done: {why}"),
        }
    }

    /// The org's subaccount at Twilio (named `org:<uuid>`), if it has one.
    pub fn subaccount(&self, org: usize) -> Option<String> {
        let (_, now) = self.standins.holdings();
        let held = Held::parse(&now);
        let name = format!("org:{}", self.orgs[org]);
        held.subaccounts
            .iter()
            .find(|(sid, n)| **n == name && !held.closed.contains(sid))
            .map(|(sid, _)| sid.clone())
    }

    /// What the database says of the org's slot and token rotations.
    pub async fn org_state(&self, org: usize) -> OrgState {
        let id = self.orgs[org];
        let slot = self
            .admin
            .query_opt(
                "SELECT source, metadata->>'accountSid'
                   FROM org_credentials WHERE org_id = $1 AND provider = 'twilio'",
                &[&id],
            )
            .await
            .expect("the slot");
        let slot = slot.map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, Option<String>>(1).unwrap_or_default(),
            )
        });
        let slot_json: String = self
            .admin
            .query_one(
                "SELECT coalesce((SELECT (to_jsonb(c) - 'updated_at')::text FROM org_credentials c
                                   WHERE c.org_id = $1 AND c.provider = 'twilio'), 'no slot')
                        || ' vapi credential '
                        || coalesce((SELECT vapi_credential_id FROM organizations WHERE id = $1), '-')",
                &[&id],
            )
            .await
            .expect("the slot's row")
            .get(0);
        let rotations = self
            .admin
            .query(
                "SELECT kind, CASE WHEN done_at IS NOT NULL THEN 'done'
                                   WHEN cancelled_at IS NOT NULL THEN 'cancelled'
                                   WHEN gave_up_at IS NOT NULL THEN 'gave_up'
                                   ELSE 'open' END,
                        cancel_reason, promoted_at
                   FROM token_rotations WHERE org_id = $1 ORDER BY requested_at, id DESC",
                &[&id],
            )
            .await
            .expect("the token rotations");
        let promoted = rotations.iter().filter_map(|r| r.get(3)).collect();
        let rotations = rotations
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        OrgState {
            promoted,
            slot,
            slot_json,
            rotations,
        }
    }

    /// The carrier audit's findings: `(kind, subject)`, but assistant mismatches
    /// of a number whose pending change reconcile gave up (Vapi refused it): the
    /// audit keeps those open on purpose (status shows them, an alarm counts them),
    /// a state of the service's own, not drift.
    pub async fn findings_not_given_up(&self) -> Vec<(String, String)> {
        self.admin
            .query(
                "SELECT f.kind, f.subject FROM carrier_findings f
                  WHERE NOT (f.kind = 'assistant_mismatch' AND EXISTS (
                        SELECT 1 FROM managed_phone_numbers n
                         WHERE n.org_id = f.org_id AND n.phone_number = f.phone_number
                           AND n.status = 'active' AND n.assistant_pending
                           AND n.route_gave_up_at IS NOT NULL))
                  ORDER BY f.id",
                &[],
            )
            .await
            .expect("the audit's findings")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// The org's status, as list-numbers answers it (on instance 0).
    pub async fn status(&self, org: usize) -> Value {
        let ev = ApiEvent::new("GET", STATUS_ROUTE, STATUS_ROUTE)
            .caller(&self.org(org), "fault-schedule")
            .scopes(&["telephony:read"]);
        let resp = list_numbers::handle(&self.instances[0].list, ev.request()).await;
        let (status, body) = read_response(&resp);
        assert_eq!(status, 200, "status of org{org}: {body}");
        body
    }

    /// Plan the step's faults at the stand-ins.
    pub fn plan(&self, faults: &[Fault]) {
        for fault in faults {
            match &fault.kind {
                FaultKind::Fail(mode) => {
                    self.standins
                        .fail_endpoint(fault.endpoint, mode.clone(), fault.times)
                }
                FaultKind::Lag(lag) => self.standins.lag(fault.endpoint, *lag, fault.times),
            }
        }
    }

    /// Twilio offers again those of the schedule's numbers nobody holds.
    pub fn restock(&self) {
        let (_, held) = self.standins.holdings();
        let holds = |number: &str| {
            held["twilio_numbers"]
                .as_object()
                .is_some_and(|m| m.values().any(|n| n["phone_number"] == number))
        };
        self.standins.offer(
            seed_numbers()
                .into_iter()
                .filter(|o| NUMBERS.contains(&o.phone_number.as_str()) && !holds(&o.phone_number)),
        );
    }

    /// Healthy providers again: every plan and lag cleared.
    pub fn heal(&self) {
        self.standins.fail("vapi", FailMode::None, None);
        self.standins.fail("twilio", FailMode::None, None);
    }

    /// Time passes: every clocked column moves `by` into the past (see the
    /// module's doc), and the stand-ins' objects age as much.
    pub async fn advance_clock(&self, by: Duration) {
        self.standins.age(by);
        let secs = by.as_secs_f64();
        for (table, columns) in &self.clocked {
            let set: Vec<String> = columns
                .iter()
                .map(|c| format!("{c} = {c} - make_interval(secs => {secs})"))
                .collect();
            self.admin
                .batch_execute(&format!("UPDATE {table} SET {}", set.join(", ")))
                .await
                .unwrap_or_else(|e| panic!("advancing the clock of {table}: {e}"));
        }
    }

    /// Every row of every clocked table without its timestamps: what a reconcile
    /// pass that changed nothing leaves as it was.
    pub async fn fingerprint(&self) -> String {
        let mut out = String::new();
        for (table, columns) in &self.clocked {
            let drop = format!("ARRAY[{}]::text[]", quoted(columns));
            let row = self
                .admin
                .query_one(
                    &format!(
                        "SELECT coalesce(string_agg(j, E'\\n' ORDER BY j), '')
                           FROM (SELECT (to_jsonb(t) - {drop})::text AS j FROM {table} t) s"
                    ),
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("fingerprint of {table}: {e}"));
            out.push_str(table);
            out.push('\n');
            out.push_str(row.get::<_, &str>(0));
            out.push('\n');
        }
        out
    }

    /// The numbers' rows with their routing rows, for the checks.
    pub async fn rows(&self) -> Vec<NumberRow> {
        self.admin
            .query(
                "SELECT n.org_id, n.phone_number, n.status, n.twilio_phone_sid,
                        n.twilio_subaccount_sid, n.vapi_phone_id, n.assistant_id,
                        n.assistant_pending, m.id IS NOT NULL, m.vapi_assistant_id,
                        n.claim_token IS NOT NULL, n.twilio_token_fp, n.imported_at
                   FROM managed_phone_numbers n
                   LEFT JOIN phone_number_mapping m
                     ON m.inbound_phone_number = n.phone_number AND m.org_id = n.org_id
                  ORDER BY n.phone_number, n.created_at",
                &[],
            )
            .await
            .expect("rows")
            .iter()
            .map(|r| NumberRow {
                org: r.get(0),
                number: r.get(1),
                status: r.get(2),
                twilio_sid: r.get(3),
                subaccount: r.get(4),
                vapi_id: r.get(5),
                assistant: r.get(6),
                assistant_pending: r.get(7),
                routed: r.get(8),
                routed_to: r.get(9),
                claimed: r.get(10),
                token_fp: r.get(11),
                imported_at: r.get(12),
            })
            .collect()
    }

    /// Routing rows without a number row of their org (left behind).
    pub async fn stray_routes(&self) -> Vec<String> {
        self.admin
            .query(
                "SELECT m.org_id::text || ' ' || m.inbound_phone_number
                   FROM phone_number_mapping m
                  WHERE NOT EXISTS (SELECT 1 FROM managed_phone_numbers n
                                     WHERE n.phone_number = m.inbound_phone_number
                                       AND n.org_id = m.org_id AND n.status <> 'released')",
                &[],
            )
            .await
            .expect("routing rows")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// The database's name, kept after a failing schedule for a look inside.
    pub fn database(&self) -> &str {
        &self.db.name
    }

    /// After a passing schedule: the stand-ins stopped, the pools closed and the
    /// database dropped (hundreds of schedules would otherwise fill the disk).
    pub async fn tear_down(self) {
        self.server.abort();
        let name = self.db.name.clone();
        drop(self.instances);
        drop(self.admin);
        drop(self.db);
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            return;
        };
        if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// A managed number's row, with its routing row.
#[derive(Debug, Clone)]
pub struct NumberRow {
    pub org: Uuid,
    pub number: String,
    pub status: String,
    pub twilio_sid: Option<String>,
    pub subaccount: Option<String>,
    pub vapi_id: Option<String>,
    pub assistant: Option<String>,
    pub assistant_pending: bool,
    /// A routing row exists.
    pub routed: bool,
    /// Its assistant: the confirmed one.
    pub routed_to: Option<String>,
    pub claimed: bool,
    /// The fingerprint of the token the service last gave its Vapi import.
    pub token_fp: Option<String>,
    /// When its import was stamped (the database's clock).
    #[allow(dead_code)] // for known-bug classifiers (known.rs), none open now
    pub imported_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl std::fmt::Display for NumberRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} org {} {} pn={} sub={} vapi={} assistant={}{} routing={}{} token={}",
            self.number,
            self.org,
            self.status,
            self.twilio_sid.as_deref().unwrap_or("-"),
            self.subaccount.as_deref().unwrap_or("-"),
            self.vapi_id.as_deref().unwrap_or("-"),
            self.assistant.as_deref().unwrap_or("-"),
            if self.assistant_pending {
                " (pending)"
            } else {
                ""
            },
            if self.routed {
                self.routed_to.as_deref().unwrap_or("(none)")
            } else {
                "no row"
            },
            if self.claimed { " claimed" } else { "" },
            self.token_fp
                .as_deref()
                .map_or("-", |fp| &fp[..fp.len().min(8)]),
        )
    }
}

fn quoted(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| format!("'{c}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every table of the schema with its `timestamptz` columns, but the append-only
/// audit log and the migrations' history.
async fn clocked_columns(admin: &tokio_postgres::Client) -> Vec<(String, Vec<String>)> {
    let rows = admin
        .query(
            "SELECT c.table_name::text, array_agg(c.column_name::text ORDER BY c.column_name)
               FROM information_schema.columns c
               JOIN information_schema.tables t
                 ON t.table_schema = c.table_schema AND t.table_name = c.table_name
              WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
                AND c.data_type = 'timestamp with time zone'
                AND c.table_name NOT IN ('audit_log', 'refinery_schema_history')
              GROUP BY c.table_name ORDER BY c.table_name",
            &[],
        )
        .await
        .expect("the schema's timestamp columns");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}
