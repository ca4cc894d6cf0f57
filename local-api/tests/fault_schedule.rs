//! The invariants (DESIGN.md "The invariants"), checked by a randomized
//! fault-schedule test, after FoundationDB's simulation tests and Jepsen's
//! checkers: a seeded generator draws schedules of caller actions over two
//! instances — buy (assistant A, B, none, or one Vapi does not know), a repeat of
//! a purchase, an assistant change, a release, a BYOC save, a token rotation,
//! reconcile runs, calls on both instances at once, an instance killed
//! mid-request (its claims left to expire) — while the stand-ins, per provider
//! call, answer, fail (500, 429, a timeout), refuse (4xx), act and answer late,
//! act and drop the answer, or lag in lookups; then drift by hand (a token
//! rotated in Twilio's console among it, also between the steps), and endings (a
//! credential disconnected, an org offboarded). Each scenario reads *given* (a
//! fresh world, `fault_schedule/world.rs`) → *faults* → *act* → *invariants*
//! (`fault_schedule/invariants.rs`: I1–I5, V1, A1, O1, D1, R1–R5), the last after
//! reconcile, the carrier audit and reconcile again ran to quiescence with healthy
//! providers.
//!
//! Token rotations, console rotations and disconnects are drawn from generators
//! of their own (`schedule.rs`: `draw_rotations`, `draw_hand`, `draw_endings`), so
//! every seed's other steps are as they were drawn before: the named seeds replay.
//!
//! Service bugs found and not fixed yet are ignored named tests below (`#[ignore =
//! "issue: …"]`; `--run-ignored all` runs them, and they fail). A drawn schedule
//! that breaks an invariant only in one of those bugs' exact ways
//! (`fault_schedule/known.rs`) is counted and printed as "ok but for known bugs",
//! so the CI run stays a signal for new ones; `FAULT_STRICT=1` fails those too, and
//! a replay of a named seed is always strict.
//!
//! - `cargo nextest run -p local-api --test fault_schedule` runs [`CI_SCHEDULES`]
//!   schedules from a fixed first seed, [`CI_PARALLEL`] at a time.
//! - `FAULT_SCHEDULES=500` runs more; `FAULT_BASE_SEED=<n>` (or `random`) starts
//!   elsewhere; `FAULT_PARALLEL=<n>` runs that many at once. Hundreds take longer
//!   than nextest lets a test run (`.config/nextest.toml`: 120 s): run them with
//!   `cargo test -p local-api --test fault_schedule fault_schedules -- --nocapture`
//!   (400 schedules, `FAULT_PARALLEL=8`: about 140 s here).
//! - `FAULT_SEED=<n>` replays one seed (the same schedule; timings, and so some
//!   outcomes, may differ between runs); `FAULT_VERBOSE=1` prints what each call
//!   answered in passing schedules too; `FAULT_LOG=1` (with `RUST_LOG`) prints the
//!   functions' JSON logs.
//!
//! The issue's own cases are hand-written scenarios (`scenario`, below) run by the
//! same machinery.
//!
//! A failing schedule's message holds its seed, the schedule (steps and faults),
//! what each call answered, the violations, the final rows and provider holdings,
//! and the kept database's name. Once its cause is fixed, a failing seed becomes a
//! named regression test below the marker at the end of this file:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn seed_1234_a_repeat_with_an_unknown_assistant_forgets_a_billed_number() {
//!     replay(1234).await;
//! }
//! ```

#[path = "fault_schedule/invariants.rs"]
mod invariants;
#[path = "fault_schedule/known.rs"]
mod known;
#[path = "fault_schedule/run.rs"]
mod run;
#[path = "fault_schedule/schedule.rs"]
mod schedule;
#[path = "fault_schedule/world.rs"]
mod world;

use std::time::{Duration, Instant};

use futures::StreamExt;
use local_api::standins::{Endpoint, FailMode, Refusal};
use run::{Failure, run};
use schedule::{Act, Assistant, Fault, Hand, Schedule, Step};

/// Schedules per CI run.
const CI_SCHEDULES: u64 = 48;
/// Schedules at once (each in its own world: database, stand-ins, instances).
/// Six since token rotations joined (4 before): a schedule mostly waits on
/// timeouts and deadlines, and six keep the CI run at about its earlier time.
const CI_PARALLEL: usize = 6;
/// The first seed of a CI run.
const CI_BASE_SEED: u64 = 0x5eed_0000;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.as_str() {
        "random" => Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        ),
        v => Some(
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number (or `random`): {v}")),
        ),
    }
}

fn logs() {
    if std::env::var("FAULT_LOG").is_ok_and(|v| v == "1") {
        shared::telemetry::init();
    }
}

/// Run `seeds`, `parallel` at a time (`strict`: known bugs fail too); the
/// failures, and the seeds that met only known bugs ([`known::Known`]).
async fn run_all(
    seeds: Vec<u64>,
    parallel: usize,
    strict: bool,
) -> (Vec<Failure>, Vec<(u64, Vec<known::Known>)>) {
    let outcomes: Vec<(u64, Result<Vec<known::Known>, Failure>)> = futures::stream::iter(seeds)
        .map(|seed| async move {
            let mut schedule = Schedule::generate(seed);
            schedule.strict = strict;
            let started = Instant::now();
            let outcome = run(&schedule).await.map(|known| {
                let mut kinds: Vec<known::Known> = known.into_iter().map(|(k, _)| k).collect();
                kinds.sort();
                kinds.dedup();
                kinds
            });
            eprintln!(
                "seed {seed}: {} in {:.1} s ({} steps)",
                match &outcome {
                    Ok(k) if k.is_empty() => "ok".to_owned(),
                    Ok(k) => format!("ok but for known bugs {k:?}"),
                    Err(_) => "FAILED".to_owned(),
                },
                started.elapsed().as_secs_f64(),
                schedule.steps.len()
            );
            (seed, outcome)
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let mut failures = Vec::new();
    let mut known = Vec::new();
    for (seed, outcome) in outcomes {
        match outcome {
            Ok(k) if k.is_empty() => {}
            Ok(k) => known.push((seed, k)),
            Err(f) => failures.push(f),
        }
    }
    known.sort();
    (failures, known)
}

fn fail_with(failures: Vec<Failure>) {
    if failures.is_empty() {
        return;
    }
    let mut seeds: Vec<u64> = failures.iter().map(|f| f.seed).collect();
    seeds.sort_unstable();
    let reports: Vec<String> = failures.into_iter().map(|f| f.report).collect();
    panic!(
        "{} schedule(s) broke an invariant; failing seeds: {seeds:?}\n\n{}",
        seeds.len(),
        reports.join("\n\n")
    );
}

/// Replay one seed (a named regression test's body), strictly (a known bug
/// fails): panics with the schedule's story if an invariant breaks.
async fn replay(seed: u64) {
    logs();
    fail_with(run_all(vec![seed], 1, true).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_schedules_keep_the_invariants() {
    logs();
    let seeds: Vec<u64> = match env_u64("FAULT_SEED") {
        Some(seed) => vec![seed],
        None => {
            let base = env_u64("FAULT_BASE_SEED").unwrap_or(CI_BASE_SEED);
            let count = env_u64("FAULT_SCHEDULES").unwrap_or(CI_SCHEDULES);
            (0..count).map(|i| base.wrapping_add(i)).collect()
        }
    };
    let parallel = env_u64("FAULT_PARALLEL").map_or(CI_PARALLEL, |n| n as usize);
    let strict = std::env::var("FAULT_STRICT").is_ok_and(|v| v == "1");
    let started = Instant::now();
    let count = seeds.len();
    let (failures, known) = run_all(seeds, parallel, strict).await;
    eprintln!(
        "{count} schedules in {:.1} s, {} failing, {} meeting only known bugs{}",
        started.elapsed().as_secs_f64(),
        failures.len(),
        known.len(),
        if known.is_empty() {
            String::new()
        } else {
            format!(" (FAULT_STRICT=1 fails them): {known:?}")
        }
    );
    fail_with(failures);
}

#[test]
fn a_seed_draws_the_same_schedule_every_time() {
    for seed in [0, 1, CI_BASE_SEED, u64::MAX] {
        let (a, b) = (Schedule::generate(seed), Schedule::generate(seed));
        assert_eq!(a.to_string(), b.to_string());
        assert!((8..=20).contains(&a.steps.len()), "{a}");
    }
    assert_ne!(
        Schedule::generate(1).to_string(),
        Schedule::generate(2).to_string()
    );
}

/// Run a hand-written scenario; panics with its story if an invariant breaks.
async fn scenario(name: &'static str, steps: Vec<Step>) {
    run_schedule(Schedule::scenario(name, steps)).await;
}

/// Beyond the client's per-attempt timeout: the provider acted, the client gave up.
fn late() -> FailMode {
    FailMode::Late(Duration::from_millis(800))
}

fn buy(org: usize, number: usize, assistant: Option<Assistant>) -> Act {
    Act::Buy {
        org,
        number,
        assistant,
        name: None,
    }
}

// The issue's three cases (issue 21), as scenarios.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_answered_late_then_repeated_with_an_unknown_assistant_forgets_nothing() {
    scenario(
        "bought late, lookups timing out, then a repeat with an unknown assistant",
        vec![
            Step::one(
                vec![
                    Fault::fail(Endpoint::Buy, late(), Some(1)),
                    Fault::fail(Endpoint::Bought, FailMode::Timeout, None),
                ],
                0,
                buy(0, 0, Some(Assistant::A)),
            ),
            Step::one(vec![], 1, buy(0, 0, Some(Assistant::Unknown))),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_answered_late_then_a_repeat_with_another_assistant_says_what_vapi_routes() {
    scenario(
        "imported late, lookups timing out, then a repeat with another assistant",
        vec![
            Step::one(
                vec![
                    Fault::fail(Endpoint::Import, late(), Some(1)),
                    Fault::fail(Endpoint::List, FailMode::Timeout, None),
                ],
                0,
                buy(0, 0, Some(Assistant::A)),
            ),
            Step::one(vec![], 1, buy(0, 0, Some(Assistant::B))),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_change_then_a_refused_one_still_shows_what_vapi_routes() {
    scenario(
        "a change that reached Vapi but every answer came late, then a refused one",
        vec![
            Step::one(vec![], 0, buy(0, 0, Some(Assistant::A))),
            Step::one(
                vec![Fault::fail(Endpoint::Route, late(), None)],
                0,
                Act::Change {
                    org: 0,
                    number: 0,
                    assistant: Assistant::B,
                },
            ),
            Step::one(
                vec![Fault::fail(
                    Endpoint::Route,
                    FailMode::Refuse(Refusal::default()),
                    Some(1),
                )],
                1,
                Act::Change {
                    org: 0,
                    number: 0,
                    assistant: Assistant::A,
                },
            ),
        ],
    )
    .await;
}

// Named regressions: failing seeds whose cause was fixed (`replay(seed)`).

/// Seed 1415 (found by the first 500-schedule run): a purchase with no assistant
/// → 201; a change to B killed while its PATCH hung, so B stayed pending; a repeat
/// of the purchase answered 200 naming B while Vapi routed to no assistant. The
/// answer now says `assistantPending`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_1415_a_repeat_of_a_finished_purchase_says_a_change_is_pending() {
    replay(1415).await;
}

/// Seed 1093: the same class as 1415 (a repeat naming an unconfirmed change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_1093_a_repeat_of_a_finished_purchase_says_a_change_is_pending() {
    replay(1093).await;
}

/// Seed 5247: the same class, with two instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_5247_a_repeat_of_a_finished_purchase_says_a_change_is_pending() {
    replay(5247).await;
}

// Token rotation (issue 23), as scenarios.

/// Run `schedule`; panics with its story if an invariant breaks.
async fn run_schedule(schedule: Schedule) {
    logs();
    if let Err(failure) = run(&schedule).await {
        fail_with(vec![failure]);
    }
}

fn two_numbers_then(more: Vec<Step>) -> Vec<Step> {
    let mut steps = vec![
        Step::one(vec![], 0, buy(0, 0, Some(Assistant::A))),
        Step::one(vec![], 1, buy(0, 1, Some(Assistant::B))),
    ];
    steps.extend(more);
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_reaches_the_credential_and_every_number_before_its_promotion() {
    let mut schedule = Schedule::scenario(
        "two numbers bought, then the org's token rotated",
        two_numbers_then(vec![Step::one(vec![], 0, Act::Rotate { org: 0 })]),
    );
    schedule.expect_rotated = vec![0];
    run_schedule(schedule).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_answered_late_and_read_back_failing_is_finished_by_reconcile() {
    let mut schedule = Schedule::scenario(
        "a rotation left pending by a refused PATCH, repeated: its promotion acts, the answer comes late and the read-back times out",
        two_numbers_then(vec![
            Step::one(
                vec![Fault::fail(
                    Endpoint::Route,
                    FailMode::Refuse(Refusal::default()),
                    Some(1),
                )],
                0,
                Act::Rotate { org: 0 },
            ),
            Step::one(
                vec![
                    Fault::fail(Endpoint::AuthTokens, late(), Some(1)),
                    Fault::fail(Endpoint::Subaccount, FailMode::Timeout, None),
                ],
                1,
                Act::Rotate { org: 0 },
            ),
        ]),
    );
    schedule.expect_rotated = vec![0];
    run_schedule(schedule).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_racing_a_rotation_is_never_imported_with_a_dead_token() {
    let mut schedule = Schedule::scenario(
        "a purchase of the org on one instance while its token is rotated on the other",
        vec![
            Step::one(vec![], 0, buy(0, 0, Some(Assistant::A))),
            Step::Together {
                faults: vec![],
                calls: vec![
                    schedule::Call {
                        instance: 0,
                        act: Act::Rotate { org: 0 },
                        kill_after: None,
                    },
                    schedule::Call {
                        instance: 1,
                        act: buy(0, 1, Some(Assistant::B)),
                        kill_after: None,
                    },
                ],
            },
        ],
    );
    schedule.expect_rotated = vec![0];
    run_schedule(schedule).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rotated_in_the_console_is_adopted_by_the_next_purchase() {
    let mut schedule = Schedule::scenario(
        "a number bought, the token rotated in Twilio's console, another number bought",
        vec![
            Step::one(vec![], 0, buy(0, 0, Some(Assistant::A))),
            Step::Hand(Hand::ConsoleRotation { org: 0 }),
            Step::one(vec![], 1, buy(0, 1, Some(Assistant::B))),
        ],
    );
    // The purchase's read-back opens an `adopt` job; reconcile finishes it.
    schedule.expect_rotated = vec![0];
    run_schedule(schedule).await;
}

/// A token rotated in the console with no purchase after it is noticed by the
/// carrier audit (`token_mismatch` on the number's import), which opens an
/// `adopt` rotation that reconcile finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rotated_in_the_console_reaches_vapi_through_the_audit() {
    let mut schedule = Schedule::scenario(
        "a number bought, then the token rotated in Twilio's console",
        vec![Step::one(vec![], 0, buy(0, 0, Some(Assistant::A)))],
    );
    schedule.hand = vec![Hand::ConsoleRotation { org: 0 }];
    schedule.expect_rotated = vec![0];
    run_schedule(schedule).await;
}

/// Service bug (found by this test's first rotations): `shared::rotation` starts
/// neither a new secondary token nor its promotion with less than a fixed
/// `STEP_BUDGET` (1.5 s) before the steps' deadline, so with `STEPS_DEADLINE_MS`
/// ≤ 1.5 s (this world's requests, and its reconcile before it was given
/// [`world::ROTATION_DEADLINE_MS`]) a rotation answers 202 `{"errors": {"token":
/// "deadline"}}` every time and stays `rotating` for ever (`deadline` is a
/// waiting code: reconcile resumes it each run and never gives it up) — the class
/// of offboarding's fixed 3 s bound (12be2bb), which now takes at most a quarter
/// of the deadline, as the rotation's own number PATCHes already do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_rotation_under_a_short_deadline_never_starts() {
    let mut schedule = Schedule::scenario(
        "two numbers bought, then the org's token rotated, every function with a 1.5 s steps' deadline",
        two_numbers_then(vec![Step::one(vec![], 0, Act::Rotate { org: 0 })]),
    );
    schedule.rotation_deadline_ms = world::STEPS_DEADLINE_MS;
    schedule.expect_rotated = vec![0];
    run_schedule(schedule).await;
}

/// A purchase whose import landed at Vapi but whose answer was lost (its claim
/// then expired), and a rotation: the number's import carries the old primary.
fn a_stranded_import_then(more: Vec<Step>) -> Vec<Step> {
    let mut steps = vec![
        Step::one(vec![], 0, buy(0, 0, Some(Assistant::A))),
        Step::one(
            vec![
                Fault::fail(Endpoint::Import, late(), Some(1)),
                Fault::fail(Endpoint::List, FailMode::Timeout, None),
            ],
            1,
            buy(0, 1, Some(Assistant::B)),
        ),
        Step::Advance(Duration::from_secs(schedule::CLAIM_SECS + 1)),
    ];
    steps.extend(more);
    steps
}

/// Service bug: a rotation promotes while a purchase of the org whose import
/// landed at Vapi (answer lost, claim expired: the row is `provisioning` with no
/// `vapi_phone_id`) still carries the old primary, and answers 200 `rotated`
/// (R3) — the number's calls fail from the promotion (R4) until reconcile adopts
/// the import (since 6c8d8ea an adopted import is given the current token; before,
/// it stayed dead for good: the next test). `shared/src/rotation/store.rs`
/// `start_promotion` waits only for provisioning rows with a live claim, and
/// `numbers_to_patch` takes only rows with a Vapi id: an import whose outcome is
/// unknown is neither (it could look the number up at Vapi, or wait for such a
/// row to be resolved). Seed 5063 (drawn) found it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_never_promotes_over_an_import_whose_outcome_is_unknown() {
    let mut schedule = Schedule::scenario(
        "an import answered late with lookups timing out, its claim expired, then the org's token rotated",
        a_stranded_import_then(vec![Step::one(vec![], 0, Act::Rotate { org: 0 })]),
    );
    schedule.expect_rotated = vec![0];
    run_schedule(schedule).await;
}

/// Found by seed 5190, fixed in 6c8d8ea/34eea20: a purchase that adopted an
/// import found at Vapi (after an unknown outcome) brought it to the database's
/// assistant and name but not to the subaccount's current token, and stamped the
/// row with the current token's fingerprint; when the token changed in between (a
/// console rotation here; a promotion in the test above) the import kept a dead
/// token that no `adopt` rotation patched (it trusted the row), found again by
/// every audit pass (R1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_import_is_brought_to_the_current_token() {
    let schedule = Schedule::scenario(
        "an import answered late with lookups timing out, its claim expired, then the token rotated in Twilio's console",
        a_stranded_import_then(vec![Step::Hand(Hand::ConsoleRotation { org: 0 })]),
    );
    run_schedule(schedule).await;
}

// Named regressions of token rotation, disconnect and the audit (seeds found by
// the 300+ seed runs of issue 23's fault-schedule work).

/// Seed 1077: A1 flagged the audit's open finding for a change to an assistant
/// Vapi does not know that reconcile gave up (shown pending, alarmed): the
/// service's own needs-attention state, not drift. A1 now leaves those aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_1077_a_given_up_change_is_not_drift() {
    replay(1077).await;
}

/// Seed 1144: a console rotation between the steps is drift made by hand (A1
/// counted only the drift after the steps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_1144_a_console_rotation_between_steps_is_hand_drift() {
    replay(1144).await;
}

/// Seed 1493: a disconnect under a Vapi refusal answers 503 `vapi_rejected`
/// with nothing changed, as the route documents (I4 knew only outages' codes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_1493_a_disconnect_vapi_refused_is_503_with_nothing_changed() {
    replay(1493).await;
}

/// Seed 5063: the promotion over an import whose outcome is unknown, drawn (see
/// `a_rotation_never_promotes_over_an_import_whose_outcome_is_unknown`; until
/// 6c8d8ea the number then stayed on the dead token for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_5063_a_rotation_promotes_over_a_stranded_import() {
    replay(5063).await;
}

/// Seed 5190: an adopted import kept a dead token (fixed in 6c8d8ea; see
/// `an_adopted_import_is_brought_to_the_current_token`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_5190_an_adopted_import_keeps_a_dead_token() {
    replay(5190).await;
}

/// Service bug: the carrier audit's `token_mismatch` compares only active
/// numbers' Vapi imports (`shared/src/carrier_audit/drift.rs` `token_drift`, per
/// live row), never the org's slot (`metadata.tokenFingerprint`) against the
/// subaccount's current token: an org whose token was rotated in Twilio's console
/// while it had no active number (all released; or before any) keeps a Vapi
/// credential with a dead token, and no `adopt` rotation is ever opened (R1).
/// Seed 1174: org0 bought one number, its token was rotated in the console, it
/// released the number. Also seeds 1151, 1313, 1417, 1419, 1471, 1574, 5062,
/// 5071, 5099.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_1174_a_console_rotation_without_numbers_reaches_the_credential() {
    replay(1174).await;
}

/// Seed 20540: a rotate request that found the org's `adopt` job open (a token
/// rotated in the console, noticed by a purchase) finished it and answered 200
/// `rotated` with `kind: adopt`, `promoted: false` — R3 wanted `promoted` of every
/// 200 (an adopt job promotes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_20540_a_request_finishing_an_adopt_job_is_not_promoted() {
    replay(20540).await;
}

/// Service bug (no rotation involved): a release whose Twilio DELETE acted (its
/// instance killed), the number offered again and bought back by hand on the same
/// subaccount under another SID ("a lost purchase" named after a purchase this
/// database knows), then the org offboarded: the old row's release meets 20404 and
/// `confirm_gone` (`shared/src/twilio/mod.rs`) refuses to believe it because the
/// subaccount still lists the E.164 under another SID — although the list read
/// proves the base URL and the account, and the row's own SID is gone. The row
/// ends `needs_attention`, the offboarding gives up (`twilio_bad_response`,
/// `waiting_for_numbers`), the subaccount is never closed and the number bought
/// by hand keeps billing (I1, O1); the audit repairs nothing of an org being
/// offboarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "issue: a release never completes while the subaccount holds the same E.164 under another SID; offboarding gives up and the number keeps billing"]
async fn seed_20374_a_release_is_done_though_the_number_was_bought_again() {
    replay(20374).await;
}

/// Service bug: offboarding ends an org's open token rotation only when the job
/// is next claimed (`shared/src/rotation/store.rs`: `Job::cancel_reason`, checked
/// in `finish`), and reconcile never claims a job it gave up (`claim_next_due`:
/// `gave_up_at IS NULL`); `shared/src/offboard.rs` does not touch
/// `token_rotations`. So a rotation reconcile gave up stays `needs_attention`
/// (with its sealed secondary) after the org is offboarded and its subaccount
/// closed: status shows it for ever and `TokenRotationsNeedAttention` counts it
/// for ever (O1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_ends_a_rotation_reconcile_gave_up() {
    let failing = || {
        vec![Fault::fail(
            Endpoint::AuthTokens,
            FailMode::ServerError,
            None,
        )]
    };
    let mut steps = vec![
        Step::one(vec![], 0, buy(0, 0, Some(Assistant::A))),
        Step::one(failing(), 0, Act::Rotate { org: 0 }),
    ];
    for _ in 0..3 {
        steps.push(Step::Advance(Duration::from_secs(7200)));
        steps.push(Step::one(failing(), 1, Act::Reconcile));
    }
    let mut schedule = Schedule::scenario(
        "a rotation reconcile gave up (Twilio's token API failing), then the org offboarded",
        steps,
    );
    schedule.endings = vec![schedule::Ending {
        act: Act::Offboard { org: 0 },
        faults: Vec::new(),
    }];
    run_schedule(schedule).await;
}

// Disconnect as an ending (D1).

fn disconnect_after(name: &'static str, steps: Vec<Step>, faults: Vec<Fault>) -> Schedule {
    let mut schedule = Schedule::scenario(name, steps);
    schedule.endings = vec![schedule::Ending {
        act: Act::Disconnect { org: 0 },
        faults,
    }];
    schedule
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_org_with_a_number_cannot_disconnect_and_nothing_changes() {
    run_schedule(disconnect_after(
        "a managed org with a live number disconnects (409 managed_numbers_remain)",
        vec![Step::one(vec![], 0, buy(0, 0, Some(Assistant::A)))],
        Vec::new(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_org_with_no_number_left_disconnects_under_a_lost_delete() {
    run_schedule(disconnect_after(
        "a managed org releases its only number, then disconnects while Vapi's DELETE answers are lost",
        vec![
            Step::one(vec![], 0, buy(0, 0, Some(Assistant::A))),
            Step::one(vec![], 1, Act::Release { org: 0, number: 0 }),
        ],
        vec![Fault::fail(Endpoint::Credential, FailMode::Lost, Some(1))],
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byoc_org_disconnects() {
    let mut schedule = disconnect_after(
        "a BYOC org saves its account, then disconnects",
        vec![Step::one(vec![], 0, Act::Save { org: 2, account: 0 })],
        Vec::new(),
    );
    schedule.endings[0].act = Act::Disconnect { org: 2 };
    run_schedule(schedule).await;
}

/// Service bug (no rotation involved; found by the final 400-seed run): two first
/// purchases of one org at once, Twilio's account list lagging, each create a
/// subaccount named `org:<uuid>`; the second to record it uses the first's and
/// leaves its own empty ("the new one stays empty",
/// `shared/src/purchase/steps.rs`) — open for ever: nothing closes it, and the
/// carrier audit flags it as `subaccount_orphan` ("named after an org that
/// records another subaccount") on every pass (A1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "issue: a subaccount created by a concurrent first purchase under lookup lag is never closed (flagged subaccount_orphan for ever)"]
async fn seed_40294_a_duplicate_subaccount_of_a_first_purchase_is_closed() {
    replay(40294).await;
}

/// Service bug (no rotation involved; found by the final 400-seed run; fails
/// about half the time: it depends on the order the audit takes the
/// subaccounts in): a number imported into Vapi by hand with org1's subaccount,
/// and the same E.164 bought by hand on org0's subaccount ("a lost purchase").
/// The audit adopts org0's purchase as a row with no Vapi id (to release it) and,
/// if it reaches org1's subaccount after that, skips org1's orphan import because
/// *a* live row of the E.164 has no Vapi id ("a purchase that has not recorded
/// its import may adopt this one", `shared/src/carrier_audit/drift.rs`) — a row
/// of another org and subaccount, which can never adopt it. Vapi keeps a number
/// no row has (I2) until a later pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "issue: the audit skips a Vapi orphan of one subaccount while another org's row of the same E.164 has no Vapi id"]
async fn seed_40178_a_vapi_orphan_is_not_kept_by_another_orgs_row() {
    replay(40178).await;
}
