//! Running one schedule: for each step *given* the world so far, plan its *faults*,
//! *act*, and hold each answer to what it asserts (I4, I5); then heal the
//! providers, run reconcile to quiescence, and check the *invariants* over the
//! final state (I1–I3, V1).

use std::fmt::Write as _;
use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;

use super::invariants::{Held, asserted, final_violations, offboarded_violations};
use super::schedule::{Call, Schedule, Step};
use super::world::{Answer, World};

/// Reconcile passes allowed to reach quiescence (a pass that changes nothing).
const MAX_QUIESCENCE_PASSES: usize = 12;
/// How far the clock moves before each pass: past any claim and backoff.
const PASS_ADVANCE: Duration = Duration::from_secs(2 * 3600);

/// A schedule that broke an invariant: everything needed to read what happened.
pub struct Failure {
    pub seed: u64,
    pub report: String,
}

/// Run `schedule` in a fresh world; `Err` with the whole story if an invariant
/// broke (the world's database is then kept for a look inside).
pub async fn run(schedule: &Schedule) -> Result<(), Failure> {
    let mut world = World::spawn().await;
    let mut transcript = String::new();
    let mut violations: Vec<String> = Vec::new();

    for (i, step) in schedule.steps.iter().enumerate() {
        let n = i + 1;
        match step {
            Step::Advance(by) => world.advance_clock(*by).await,
            Step::Restock => world.restock(),
            Step::One { faults, call } => {
                world.plan(faults);
                let answer = world.call(call.instance, &call.act, call.kill_after).await;
                let (_, now) = world.standins.holdings();
                let held = Held::parse(&now);
                world.heal();
                let _ = writeln!(transcript, "  {n:>2}. {call} → {answer}");
                let said = asserted(&call.act, &answer, &world.orgs);
                let rows = if said.row_claims.is_empty() {
                    Vec::new()
                } else {
                    world.rows().await
                };
                for wrong in said.wrong {
                    violations.push(format!("step {n} ({call}): {wrong}"));
                }
                for claim in said.claims.iter().filter(|c| !c.holds(&held)) {
                    violations.push(format!(
                        "step {n} ({call}): I5: answered {answer}, but not so at the answer: {claim}"
                    ));
                }
                for claim in said.row_claims.iter().filter(|c| !c.holds(&rows, &held)) {
                    violations.push(format!(
                        "step {n} ({call}): I5: answered {answer}, but not so at the answer: {claim}"
                    ));
                }
                if matches!(answer, Answer::Killed) {
                    world.restart(call.instance).await;
                }
            }
            Step::Together { faults, calls } => {
                world.plan(faults);
                let (from, before) = world.standins.holdings();
                let answers = join_all(calls.iter().map(|c| answer_with_version(&world, c))).await;
                world.heal();
                for (call, (answer, at)) in calls.iter().zip(&answers) {
                    let _ = writeln!(transcript, "  {n:>2}. together: {call} → {answer}");
                    // True at some moment while it ran: as it began, or after any
                    // change up to its answer.
                    let mut moments = vec![Held::parse(&before)];
                    moments.extend(
                        world
                            .standins
                            .journal_since(from)
                            .into_iter()
                            .filter(|(v, _)| v <= at)
                            .map(|(_, h)| Held::parse(&h)),
                    );
                    let said = asserted(&call.act, answer, &world.orgs);
                    for wrong in said.wrong {
                        violations.push(format!("step {n} ({call}): {wrong}"));
                    }
                    for claim in &said.claims {
                        if !moments.iter().any(|h| claim.holds(h)) {
                            violations.push(format!(
                                "step {n} ({call}): I5: answered {answer}, but at no moment while it ran: {claim}"
                            ));
                        }
                    }
                }
            }
        }
    }

    // Drift by hand (the Twilio console, the Vapi dashboard), of the kinds the
    // audit repairs.
    for hand in &schedule.hand {
        let done = world.hand(*hand).await;
        let _ = writeln!(transcript, "   +  {hand}: {done}");
    }

    // An org ends, perhaps under a fault.
    if let Some(end) = &schedule.ending {
        world.plan(&end.faults);
        let act = super::schedule::Act::Offboard { org: end.org };
        let answer = world.call(0, &act, None).await;
        world.heal();
        let _ = writeln!(transcript, "   +  {act} → {answer}");
        for wrong in asserted(&act, &answer, &world.orgs).wrong {
            violations.push(format!("{act}: {wrong}"));
        }
    }

    // Healthy providers; reconcile until a pass changes nothing; then the carrier
    // audit, and reconcile to quiescence again (what it repaired is finished).
    world.heal();
    quiesce(&world, &mut transcript, &mut violations).await;
    world.advance_clock(PASS_ADVANCE).await;
    match world.audit(0).await {
        Ok(report) => {
            let _ = writeln!(
                transcript,
                "  audit: found {:?}, repaired {:?}, repair failures {:?}",
                report.found, report.repaired, report.repair_failures
            );
            // A1: on a state reconcile left quiet, the audit finds only what was
            // made by hand.
            if schedule.hand.is_empty() && !report.found.is_empty() {
                violations.push(format!(
                    "A1: the audit found drift no hand made: {:?}",
                    report.found
                ));
            }
        }
        Err(e) => violations.push(format!("A1: the audit failed: {e}")),
    }
    quiesce(&world, &mut transcript, &mut violations).await;

    let (_, now) = world.standins.holdings();
    let held = Held::parse(&now);
    let rows = world.rows().await;
    let mut statuses: Vec<(uuid::Uuid, Value)> = Vec::new();
    for org in 0..world.orgs.len() {
        statuses.push((world.orgs[org], world.status(org).await));
    }
    violations.extend(final_violations(&held, &rows, &statuses));
    if let Some(end) = &schedule.ending {
        let (org, status) = &statuses[end.org];
        violations.extend(offboarded_violations(&held, *org, status));
    }

    if violations.is_empty() {
        if std::env::var("FAULT_VERBOSE").is_ok_and(|v| v == "1") {
            eprintln!("{schedule}what happened:\n{transcript}");
        }
        world.tear_down().await;
        return Ok(());
    }
    let mut report = String::new();
    let _ = writeln!(report, "{schedule}");
    let orgs: Vec<String> = world
        .orgs
        .iter()
        .enumerate()
        .map(|(i, o)| format!("org{i} = {o}"))
        .collect();
    let _ = writeln!(report, "orgs: {}", orgs.join(", "));
    let _ = writeln!(report, "what happened:\n{transcript}");
    let _ = writeln!(report, "violations:");
    for v in &violations {
        let _ = writeln!(report, "  - {v}");
    }
    let _ = writeln!(report, "final rows:");
    for r in &rows {
        let _ = writeln!(report, "    {r}");
    }
    for stray in world.stray_routes().await {
        let _ = writeln!(report, "    routing row without a live number: {stray}");
    }
    let _ = writeln!(report, "final holdings:\n{held}");
    let _ = writeln!(
        report,
        "database kept for a look inside: {}",
        world.database()
    );
    Err(Failure {
        seed: schedule.seed,
        report,
    })
}

/// Reconcile until a pass changes nothing (at most [`MAX_QUIESCENCE_PASSES`]).
async fn quiesce(world: &World, transcript: &mut String, violations: &mut Vec<String>) {
    let mut last = String::new();
    for pass in 0..MAX_QUIESCENCE_PASSES {
        world.advance_clock(PASS_ADVANCE).await;
        let before = (world.fingerprint().await, world.standins.version());
        let answer = world
            .call(
                pass % super::schedule::INSTANCES,
                &super::schedule::Act::Reconcile,
                None,
            )
            .await;
        if let Answer::Reconciled(Err(_)) = &answer {
            violations.push(format!("quiescence pass {}: I4: {answer}", pass + 1));
        }
        last = answer.to_string();
        let after = (world.fingerprint().await, world.standins.version());
        if before == after {
            let _ = writeln!(transcript, "  reconcile quiet after {} passes", pass + 1);
            return;
        }
        let _ = writeln!(transcript, "  quiescence pass {}: {last}", pass + 1);
    }
    violations.push(format!(
        "reconcile did not reach quiescence in {MAX_QUIESCENCE_PASSES} passes with healthy providers (last: {last})"
    ));
}

/// A call's answer and the stand-ins' version at that moment.
async fn answer_with_version(world: &World, call: &Call) -> (Answer, u64) {
    let answer = world.call(call.instance, &call.act, call.kill_after).await;
    (answer, world.standins.version())
}
