//! Schedules: what the callers do, on which instance, and how the providers
//! misbehave per call — all drawn from one seed, so a schedule is printed, read and
//! replayed from its seed alone (the same seed draws the same schedule; timings,
//! and so some outcomes, may still differ between runs).

use std::fmt;
use std::time::Duration;

use local_api::standins::{Endpoint, FailMode, Refusal};

/// The numbers the orgs fight over: few, so purchases, repeats, changes and
/// releases meet on the same number.
pub const NUMBERS: [&str; 3] = ["+14155550150", "+14155550151", "+14155550152"];
/// Orgs 0 and 1 buy (managed); org 2 mostly saves its own account (BYOC).
pub const ORGS: usize = 3;
/// Separate handler states, each with its own connection pools: Lambda instances.
pub const INSTANCES: usize = 2;
/// BYOC accounts a save may bring (accounts the Twilio stand-in does not know, so
/// it accepts them with their own credentials).
pub const BYOC_ACCOUNTS: [&str; 2] = [
    "AC0000000000000000000000000000b10c",
    "AC0000000000000000000000000000b10d",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assistant {
    A,
    B,
    /// One Vapi does not know (the stand-in's `00000000-…`).
    Unknown,
}

impl Assistant {
    pub fn id(self) -> &'static str {
        match self {
            Self::A => "0d3e0000-0000-4000-8000-00000000000a",
            Self::B => "0d3e0000-0000-4000-8000-00000000000b",
            Self::Unknown => "00000000-0000-4000-8000-0000000000ff",
        }
    }
}

/// One caller action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// `POST /api/managed-telephony/numbers`.
    Buy {
        org: usize,
        number: usize,
        assistant: Option<Assistant>,
        name: Option<&'static str>,
    },
    /// `PATCH /api/managed-telephony/numbers/{phoneNumber}`.
    Change {
        org: usize,
        number: usize,
        assistant: Assistant,
    },
    /// `DELETE /api/managed-telephony/numbers/{phoneNumber}`.
    Release { org: usize, number: usize },
    /// `PUT /api/telephony/credentials/twilio` with a BYOC account.
    Save { org: usize, account: usize },
    /// One reconcile run (its library entry point).
    Reconcile,
    /// `POST /api/managed-telephony/offboard`: the org ends (drawn only as a
    /// schedule's [`Ending`]).
    Offboard { org: usize },
    /// `POST /api/telephony/credentials/twilio/rotate`: the org's subaccount token
    /// rotated (drawn by [`draw_rotations`], from a generator of its own).
    Rotate { org: usize },
    /// `DELETE /api/telephony/credentials/twilio`: the org's credential
    /// disconnected (drawn only as a schedule's [`Ending`]).
    Disconnect { org: usize },
}

impl Act {
    /// The org and number it is about, if any.
    pub fn target(&self) -> Option<(usize, usize)> {
        match *self {
            Self::Buy { org, number, .. }
            | Self::Change { org, number, .. }
            | Self::Release { org, number } => Some((org, number)),
            Self::Save { .. }
            | Self::Reconcile
            | Self::Offboard { .. }
            | Self::Rotate { .. }
            | Self::Disconnect { .. } => None,
        }
    }

    /// The provider endpoints its calls go to.
    fn endpoints(&self) -> &'static [Endpoint] {
        use Endpoint::*;
        match self {
            // Repeated where its calls are more likely to meet the fault.
            Self::Buy { .. } => &[
                Buy, Buy, Buy, Import, Import, Import, Bought, Bought, List, List, Subaccount,
                Assistant, Route, Credential,
            ],
            Self::Change { .. } => &[Route, Route, Route, List],
            Self::Release { .. } => &[Delete, Delete, Release, Release, Bought],
            Self::Save { .. } => &[Account, Credential, Credential],
            Self::Reconcile => &[
                Buy, Bought, Import, List, Route, Route, Delete, Release, Subaccount, Assistant,
            ],
            Self::Offboard { .. } => &[Delete, Release, Release, Credential, Subaccount],
            // The secondary created, replaced and promoted (`auth_tokens`), the
            // primary read back (`subaccount`), a stored secondary checked
            // (`account`), the credential and each number PATCHed.
            Self::Rotate { .. } => &[
                AuthTokens, AuthTokens, AuthTokens, Subaccount, Account, Credential, Route, Route,
            ],
            Self::Disconnect { .. } => &[Credential, Credential],
        }
    }
}

impl fmt::Display for Act {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let assistant = |a: Option<Assistant>| a.map_or("none".to_owned(), |a| format!("{a:?}"));
        match *self {
            Self::Buy {
                org,
                number,
                assistant: a,
                name,
            } => {
                write!(
                    f,
                    "buy org{org} {} assistant {}",
                    NUMBERS[number],
                    assistant(a)
                )?;
                if let Some(name) = name {
                    write!(f, " name {name:?}")?;
                }
                Ok(())
            }
            Self::Change {
                org,
                number,
                assistant: a,
            } => write!(f, "change org{org} {} to {a:?}", NUMBERS[number]),
            Self::Release { org, number } => write!(f, "release org{org} {}", NUMBERS[number]),
            Self::Save { org, account } => {
                write!(f, "save org{org} BYOC {}", BYOC_ACCOUNTS[account])
            }
            Self::Reconcile => f.write_str("reconcile"),
            Self::Offboard { org } => write!(f, "offboard org{org}"),
            Self::Rotate { org } => write!(f, "rotate org{org}'s token"),
            Self::Disconnect { org } => write!(f, "disconnect org{org}"),
        }
    }
}

/// An action on one instance; `kill_after`: the instance dies that long into it
/// (the request's future is dropped mid-flight, its claims left to expire).
#[derive(Debug, Clone)]
pub struct Call {
    pub instance: usize,
    pub act: Act,
    pub kill_after: Option<Duration>,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{} {}", self.instance, self.act)?;
        if let Some(after) = self.kill_after {
            write!(f, " (instance killed after {} ms)", after.as_millis())?;
        }
        Ok(())
    }
}

/// How one endpoint misbehaves during a step.
#[derive(Debug, Clone)]
pub enum FaultKind {
    Fail(FailMode),
    /// Lookup lag at a list endpoint.
    Lag(Duration),
}

/// A fault for the next `times` calls (every call of the step, when `None`) to an
/// endpoint.
#[derive(Debug, Clone)]
pub struct Fault {
    pub endpoint: Endpoint,
    pub kind: FaultKind,
    pub times: Option<u32>,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.endpoint.name())?;
        match &self.kind {
            FaultKind::Lag(lag) => write!(f, "lag {} ms", lag.as_millis())?,
            FaultKind::Fail(FailMode::Late(d)) => write!(f, "late {} ms", d.as_millis())?,
            FaultKind::Fail(mode) => f.write_str(mode.name())?,
        }
        match self.times {
            Some(n) => write!(f, " ×{n}"),
            None => f.write_str(" ×all"),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Step {
    /// Faults planned, then one call.
    One { faults: Vec<Fault>, call: Call },
    /// Faults planned, then calls on different instances at once.
    Together {
        faults: Vec<Fault>,
        calls: Vec<Call>,
    },
    /// Time passes for the database (its timestamps shifted into the past).
    Advance(Duration),
    /// Twilio offers again those of [`NUMBERS`] nobody holds (released numbers
    /// age and come back): a number can be bought again after its release.
    Restock,
    /// Drift made by hand between two steps (a token rotated in Twilio's
    /// console): drawn by [`draw_hand`].
    Hand(Hand),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults = |f: &mut fmt::Formatter<'_>, faults: &[Fault]| {
            if faults.is_empty() {
                return Ok(());
            }
            let list: Vec<String> = faults.iter().map(ToString::to_string).collect();
            write!(f, "[{}] ", list.join(", "))
        };
        match self {
            Self::One { faults: fs, call } => {
                faults(f, fs)?;
                write!(f, "{call}")
            }
            Self::Together { faults: fs, calls } => {
                faults(f, fs)?;
                let list: Vec<String> = calls.iter().map(ToString::to_string).collect();
                write!(f, "together: {}", list.join(" | "))
            }
            Self::Advance(d) => write!(f, "clock +{} s", d.as_secs()),
            Self::Restock => f.write_str("Twilio offers the released numbers again"),
            Self::Hand(hand) => write!(f, "{hand}"),
        }
    }
}

/// A seeded schedule, or a hand-written scenario.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub seed: u64,
    /// A hand-written scenario's name (its `seed` is 0).
    pub scenario: Option<&'static str>,
    pub steps: Vec<Step>,
    /// Drift made by hand after the steps (in the Twilio console, the Vapi
    /// dashboard), which the carrier audit must find and repair.
    pub hand: Vec<Hand>,
    /// Orgs ended after that, in this order, perhaps under faults: a credential
    /// disconnected, an org offboarded.
    pub endings: Vec<Ending>,
    /// rotate-credential's and reconcile's steps' deadline (the world's
    /// [`super::world::ROTATION_DEADLINE_MS`] unless a scenario says otherwise).
    pub rotation_deadline_ms: u64,
    /// A scenario's expectation: these orgs' latest token rotation job finished
    /// (`rotated`) once reconcile ran to quiescence.
    pub expect_rotated: Vec<usize>,
    /// Every violation fails, known bugs' too ([`super::known::Known`]): scenarios
    /// and replays of named seeds; a drawn run unless `FAULT_STRICT=1` reports
    /// those as known.
    pub strict: bool,
}

/// The end of something: [`Act::Disconnect`] or [`Act::Offboard`] after the
/// schedule's steps (and hand drift), with `faults` on its one call; reconcile
/// finishes what it leaves.
#[derive(Debug, Clone)]
pub struct Ending {
    pub act: Act,
    pub faults: Vec<Fault>,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<String> = self.faults.iter().map(ToString::to_string).collect();
        write!(f, "{} under [{}]", self.act, faults.join(", "))
    }
}

/// The endings of `seed`, from a generator of its own (as [`draw_hand`]): an
/// offboarding of org0 or org1 (30 %), and, drawn after it so the offboardings of
/// the named seeds stay as they were, a disconnect before it (25 %) — mostly of
/// org2 (BYOC, or managed if it bought), else of org0 or org1 (a managed org: 409
/// `managed_numbers_remain` while it has numbers, 200 once it has none).
fn draw_endings(seed: u64) -> Vec<Ending> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x0ff0_b0a2_d000_0001);
    let mut endings = Vec::new();
    if rng.u32(0..100) < 30 {
        let act = Act::Offboard {
            org: rng.usize(0..2),
        };
        let faults = if rng.bool() {
            draw_faults(&mut rng, &[&act])
        } else {
            Vec::new()
        };
        endings.push(Ending { act, faults });
    }
    if rng.u32(0..100) < 25 {
        let act = Act::Disconnect {
            org: if rng.u32(0..100) < 70 {
                2
            } else {
                rng.usize(0..2)
            },
        };
        let faults = if rng.bool() {
            draw_faults(&mut rng, &[&act])
        } else {
            Vec::new()
        };
        endings.insert(0, Ending { act, faults });
    }
    endings
}

/// Token rotations, drawn from a generator of their own so that every seed's
/// other steps stay as they were drawn (the named seeds still replay): in 45 % of
/// the schedules, one or two `rotate` requests for org0 or org1, each inserted
/// mostly after a purchase of the org (else in the later two thirds) as a call
/// on its own (on a random instance, sometimes killed), beside a purchase of the
/// same org on the other instance (purchases wait for a promotion), or twice at
/// once on both instances — under faults drawn from its endpoints, `auth_tokens`
/// among them. Reconcile runs of such schedules (which resume rotations) meet an
/// `auth_tokens` fault a third of the time too.
fn draw_rotations(seed: u64, steps: &mut Vec<Step>) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x0707_a7e0_0000_0001);
    if rng.u32(0..100) >= 45 {
        return;
    }
    for step in steps.iter_mut() {
        if let Step::One { faults, call } = step
            && call.act == Act::Reconcile
            && rng.u32(0..100) < 33
        {
            faults.push(draw_fault(&mut rng, Endpoint::AuthTokens));
        }
    }
    for _ in 0..rng.usize(1..=2) {
        // Mostly after a purchase of the org (before it, the org has no slot: 404).
        let buys: Vec<(usize, usize)> = steps
            .iter()
            .enumerate()
            .flat_map(|(i, step)| {
                let acts: Vec<&Act> = match step {
                    Step::One { call, .. } => vec![&call.act],
                    Step::Together { calls, .. } => calls.iter().map(|c| &c.act).collect(),
                    _ => Vec::new(),
                };
                acts.into_iter().filter_map(move |act| match *act {
                    Act::Buy { org, .. } if org < 2 => Some((i, org)),
                    _ => None,
                })
            })
            .collect();
        let (org, at) = if !buys.is_empty() && rng.u32(0..100) < 85 {
            let (i, org) = buys[rng.usize(0..buys.len())];
            (org, rng.usize(i + 1..=steps.len()))
        } else {
            (rng.usize(0..2), rng.usize(steps.len() / 3..=steps.len()))
        };
        let rotate = Act::Rotate { org };
        let mut new = Vec::new();
        match rng.u32(0..100) {
            0..=64 => {
                let faults = draw_faults(&mut rng, &[&rotate]);
                let kill_after =
                    (rng.u32(0..100) < 12).then(|| Duration::from_millis(rng.u64(5..300)));
                let killed = kill_after.is_some();
                new.push(Step::One {
                    faults,
                    call: Call {
                        instance: rng.usize(0..INSTANCES),
                        act: rotate,
                        kill_after,
                    },
                });
                if killed && rng.bool() {
                    new.push(Step::Advance(Duration::from_secs(CLAIM_SECS + 1)));
                }
            }
            65..=84 => {
                let buy = Act::Buy {
                    org,
                    number: rng.usize(0..NUMBERS.len()),
                    assistant: Some(if rng.bool() {
                        Assistant::A
                    } else {
                        Assistant::B
                    }),
                    name: None,
                };
                let faults = draw_faults(&mut rng, &[&rotate, &buy]);
                let first = rng.usize(0..INSTANCES);
                let mut acts = [rotate, buy];
                if first == 1 {
                    acts.reverse();
                }
                let calls = acts
                    .into_iter()
                    .enumerate()
                    .map(|(instance, act)| Call {
                        instance,
                        act,
                        kill_after: None,
                    })
                    .collect();
                new.push(Step::Together { faults, calls });
            }
            _ => {
                let faults = draw_faults(&mut rng, &[&rotate]);
                let calls = (0..INSTANCES)
                    .map(|instance| Call {
                        instance,
                        act: rotate.clone(),
                        kill_after: None,
                    })
                    .collect();
                new.push(Step::Together { faults, calls });
            }
        }
        steps.splice(at..at, new);
    }
}

/// Drift made by hand, of the kinds the audit repairs (what it only flags would
/// break the invariants for good).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hand {
    /// A purchase whose row was lost: Twilio holds `number` under the org's
    /// subaccount, named `purchase <operation id>`.
    LostPurchase { org: usize, number: usize },
    /// `number` imported into Vapi by hand with the org's subaccount.
    DashboardImport { org: usize, number: usize },
    /// Every Vapi number of `number` routed to `assistant` in the dashboard (not
    /// when its row routes to no assistant: the audit can only flag that).
    DashboardAssistant { number: usize, assistant: Assistant },
    /// The org's subaccount token rotated in Twilio's console: a new primary at
    /// once, the old one (and any secondary) dead — under whatever Vapi holds.
    ConsoleRotation { org: usize },
}

impl Hand {
    /// The org whose subaccount it is about, if one.
    pub fn org(self) -> Option<usize> {
        match self {
            Self::LostPurchase { org, .. }
            | Self::DashboardImport { org, .. }
            | Self::ConsoleRotation { org } => Some(org),
            Self::DashboardAssistant { .. } => None,
        }
    }
}

impl fmt::Display for Hand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::LostPurchase { org, number } => write!(
                f,
                "by hand: org{org}'s subaccount holds {} with no row (a lost purchase)",
                NUMBERS[number]
            ),
            Self::DashboardImport { org, number } => write!(
                f,
                "by hand: {} imported into Vapi with org{org}'s subaccount",
                NUMBERS[number]
            ),
            Self::DashboardAssistant { number, assistant } => write!(
                f,
                "by hand: {} routed to {assistant:?} in Vapi's dashboard",
                NUMBERS[number]
            ),
            Self::ConsoleRotation { org } => write!(
                f,
                "by hand: org{org}'s subaccount token rotated in Twilio's console"
            ),
        }
    }
}

/// The hand drift of `seed`: drawn from a generator of its own, so adding it left
/// every seed's steps as they were (the named seeds still replay). In 20 % of the
/// schedules (drawn after the rest, which stays as it was) org0's or org1's token
/// is also rotated in Twilio's console: half the time between two of `steps`
/// (inserted there as a [`Step::Hand`]: a later purchase reads the new token
/// back and opens an `adopt` rotation), else after the steps (the carrier audit's
/// `token_mismatch` must find it).
fn draw_hand(seed: u64, steps: &mut Vec<Step>) -> Vec<Hand> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x0a0d_17d0_0000_0001);
    let mut hand = Vec::new();
    if rng.u32(0..100) < 40 {
        hand = draw_hand_kinds(&mut rng);
    }
    if rng.u32(0..100) < 20 {
        let console = Hand::ConsoleRotation {
            org: rng.usize(0..2),
        };
        if rng.bool() {
            // After the org's first purchase if it has one (it has a subaccount).
            let first_buy = steps.iter().position(|step| match step {
                Step::One { call, .. } => {
                    matches!(call.act, Act::Buy { org, .. } if Hand::org(console) == Some(org))
                }
                Step::Together { calls, .. } => calls.iter().any(
                    |c| matches!(c.act, Act::Buy { org, .. } if Hand::org(console) == Some(org)),
                ),
                _ => false,
            });
            let from = first_buy.map_or(steps.len() / 4, |i| i + 1);
            let at = rng.usize(from..=steps.len());
            steps.insert(at, Step::Hand(console));
        } else {
            hand.push(console);
        }
    }
    hand
}

fn draw_hand_kinds(rng: &mut fastrand::Rng) -> Vec<Hand> {
    (0..rng.usize(1..=2))
        .map(|_| match rng.u32(0..3) {
            0 => Hand::LostPurchase {
                org: rng.usize(0..2),
                number: rng.usize(0..NUMBERS.len()),
            },
            1 => Hand::DashboardImport {
                org: rng.usize(0..2),
                number: rng.usize(0..NUMBERS.len()),
            },
            _ => Hand::DashboardAssistant {
                number: rng.usize(0..NUMBERS.len()),
                assistant: if rng.bool() {
                    Assistant::A
                } else {
                    Assistant::B
                },
            },
        })
        .collect()
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scenario {
            Some(name) => writeln!(f, "scenario {name}")?,
            None => writeln!(
                f,
                "schedule of seed {0} (replay: FAULT_SEED={0} cargo nextest run -p local-api --test fault_schedule)",
                self.seed
            )?,
        }
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {:>2}. {step}", i + 1)?;
        }
        for hand in &self.hand {
            writeln!(f, "   +  {hand}")?;
        }
        for end in &self.endings {
            writeln!(f, "   +  {end}")?;
        }
        if self.rotation_deadline_ms != super::world::ROTATION_DEADLINE_MS {
            writeln!(
                f,
                "   (rotate-credential and reconcile with a {} ms steps' deadline)",
                self.rotation_deadline_ms
            )?;
        }
        Ok(())
    }
}

/// How long a claim lives in the test's configuration (`CLAIM_SECS`).
pub const CLAIM_SECS: u64 = 4;

impl Schedule {
    /// The schedule `seed` draws: 8 to 14 steps of single calls (some killed),
    /// calls on two instances at once (mostly on one number), clock advances and
    /// restocks.
    pub fn generate(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let len = rng.usize(8..=14);
        let mut memory = Memory::default();
        let mut steps = Vec::new();
        while steps.len() < len {
            let roll = rng.u32(0..100);
            if roll < 5 {
                let secs = [CLAIM_SECS + 1, 90, 7200][rng.usize(0..3)];
                steps.push(Step::Advance(Duration::from_secs(secs)));
                continue;
            }
            if roll < 11 {
                steps.push(Step::Restock);
                continue;
            }
            if roll < 27 {
                let first = draw_act(&mut rng, &mut memory);
                let mut second = draw_act(&mut rng, &mut memory);
                if let (Some((org, number)), true) = (first.target(), rng.u32(0..100) < 70) {
                    retarget(&mut second, org, number);
                }
                let faults = draw_faults(&mut rng, &[&first, &second]);
                let calls = [first, second]
                    .into_iter()
                    .enumerate()
                    .map(|(instance, act)| Call {
                        instance,
                        act,
                        kill_after: None,
                    })
                    .collect();
                steps.push(Step::Together { faults, calls });
                continue;
            }
            let act = draw_act(&mut rng, &mut memory);
            let faults = draw_faults(&mut rng, &[&act]);
            let kill_after = (rng.u32(0..100) < 12).then(|| Duration::from_millis(rng.u64(5..300)));
            let killed = kill_after.is_some();
            steps.push(Step::One {
                faults,
                call: Call {
                    instance: rng.usize(0..INSTANCES),
                    act,
                    kill_after,
                },
            });
            if killed && rng.bool() {
                // The killed instance's claim is left to expire.
                steps.push(Step::Advance(Duration::from_secs(CLAIM_SECS + 1)));
            }
        }
        draw_rotations(seed, &mut steps);
        let hand = draw_hand(seed, &mut steps);
        Self {
            seed,
            scenario: None,
            steps,
            hand,
            endings: draw_endings(seed),
            rotation_deadline_ms: super::world::ROTATION_DEADLINE_MS,
            expect_rotated: Vec::new(),
            strict: false,
        }
    }

    /// A hand-written scenario: *given* its first steps, *faults* and *act* in
    /// each, the *invariants* checked as for a drawn one.
    pub fn scenario(name: &'static str, steps: Vec<Step>) -> Self {
        Self {
            seed: 0,
            scenario: Some(name),
            steps,
            hand: Vec::new(),
            endings: Vec::new(),
            rotation_deadline_ms: super::world::ROTATION_DEADLINE_MS,
            expect_rotated: Vec::new(),
            strict: true,
        }
    }
}

impl Step {
    /// `act` on `instance` under `faults`.
    pub fn one(faults: Vec<Fault>, instance: usize, act: Act) -> Self {
        Self::One {
            faults,
            call: Call {
                instance,
                act,
                kill_after: None,
            },
        }
    }
}

impl Fault {
    /// The next `times` calls to `endpoint` go wrong as `mode` says.
    pub fn fail(endpoint: Endpoint, mode: FailMode, times: Option<u32>) -> Self {
        Self {
            endpoint,
            kind: FaultKind::Fail(mode),
            times,
        }
    }
}

/// Point an act at `org`'s `number` (a second call racing the first on it).
fn retarget(act: &mut Act, to_org: usize, to_number: usize) {
    match act {
        Act::Buy { org, number, .. }
        | Act::Change { org, number, .. }
        | Act::Release { org, number } => {
            *org = to_org;
            *number = to_number;
        }
        Act::Save { org, .. } | Act::Rotate { org } => *org = to_org,
        Act::Reconcile | Act::Offboard { .. } | Act::Disconnect { .. } => {}
    }
}

fn buying_org(rng: &mut fastrand::Rng) -> usize {
    if rng.u32(0..100) < 10 {
        2
    } else {
        rng.usize(0..2)
    }
}

/// What earlier steps asked for: later ones mostly act on it, so changes, repeats
/// and releases meet purchases instead of 404s.
#[derive(Default)]
struct Memory {
    buys: Vec<Act>,
}

impl Memory {
    /// An org and number: one bought earlier (`bias` percent of the time, if any),
    /// else any.
    fn target(&self, rng: &mut fastrand::Rng, bias: u32) -> (usize, usize) {
        if !self.buys.is_empty() && rng.u32(0..100) < bias {
            let earlier = &self.buys[rng.usize(0..self.buys.len())];
            if let Some(target) = earlier.target() {
                return target;
            }
        }
        (buying_org(rng), rng.usize(0..NUMBERS.len()))
    }
}

fn draw_act(rng: &mut fastrand::Rng, memory: &mut Memory) -> Act {
    let roll = rng.u32(0..100);
    if roll < 10 && !memory.buys.is_empty() {
        // A repeat of an earlier purchase request, as sent.
        return memory.buys[rng.usize(0..memory.buys.len())].clone();
    }
    match roll {
        0..=39 => {
            let assistant = match rng.u32(0..100) {
                0..=34 => Some(Assistant::A),
                35..=59 => Some(Assistant::B),
                60..=74 => None,
                _ => Some(Assistant::Unknown),
            };
            let (org, number) = memory.target(rng, 35);
            let act = Act::Buy {
                org,
                number,
                assistant,
                name: (rng.u32(0..100) < 20).then_some("Front desk"),
            };
            memory.buys.push(act.clone());
            act
        }
        40..=61 => {
            let (org, number) = memory.target(rng, 80);
            Act::Change {
                org,
                number,
                assistant: match rng.u32(0..100) {
                    0..=39 => Assistant::A,
                    40..=79 => Assistant::B,
                    _ => Assistant::Unknown,
                },
            }
        }
        62..=77 => {
            let (org, number) = memory.target(rng, 80);
            Act::Release { org, number }
        }
        78..=91 => Act::Reconcile,
        _ => Act::Save {
            org: if rng.u32(0..100) < 60 {
                2
            } else {
                rng.usize(0..2)
            },
            account: rng.usize(0..BYOC_ACCOUNTS.len()),
        },
    }
}

/// Endpoints whose calls change something (a `lost` or `late` answer comes after
/// the change; a refusal is of a change).
fn acts(e: Endpoint) -> bool {
    use Endpoint::*;
    matches!(
        e,
        Subaccount | Buy | Release | Credential | Import | Route | Delete | AuthTokens
    )
}

/// A creating call and the lookup that finds what it made after an unknown
/// outcome (a promotion whose answer was lost: the main account reads the token
/// back).
const CREATE_AND_LOOKUP: [(Endpoint, Endpoint); 4] = [
    (Endpoint::Buy, Endpoint::Bought),
    (Endpoint::Import, Endpoint::List),
    (Endpoint::Route, Endpoint::List),
    (Endpoint::AuthTokens, Endpoint::Subaccount),
];

fn draw_faults(rng: &mut fastrand::Rng, acts_of_step: &[&Act]) -> Vec<Fault> {
    let endpoints: Vec<Endpoint> = acts_of_step
        .iter()
        .flat_map(|a| a.endpoints().iter().copied())
        .collect();
    // A quarter of the time, the classic pair: the provider acted but the answer
    // came late or never, and the lookup after it fails or lags too.
    let pairs: Vec<(Endpoint, Endpoint)> = CREATE_AND_LOOKUP
        .into_iter()
        .filter(|(create, _)| endpoints.contains(create))
        .collect();
    if !pairs.is_empty() && rng.u32(0..100) < 25 {
        let (create, lookup) = pairs[rng.usize(0..pairs.len())];
        let answer = if rng.bool() {
            FailMode::Lost
        } else {
            FailMode::Late(Duration::from_millis(rng.u64(400..900)))
        };
        let lookup = match rng.u32(0..100) {
            0..=39 => Fault::fail(lookup, FailMode::Timeout, None),
            40..=69 => Fault::fail(lookup, FailMode::ServerError, None),
            _ => Fault {
                endpoint: lookup,
                kind: lag(rng, 700),
                times: None,
            },
        };
        let times = if rng.u32(0..100) < 70 { Some(1) } else { None };
        return vec![Fault::fail(create, answer, times), lookup];
    }
    let count = match rng.u32(0..100) {
        0..=19 => 0,
        20..=64 => 1,
        _ => 2,
    };
    (0..count)
        .map(|_| {
            let endpoint = endpoints[rng.usize(0..endpoints.len())];
            draw_fault(rng, endpoint)
        })
        .collect()
}

/// The longest lookup lag drawn: what a holder made is at least `CLAIM_SECS` −
/// its steps' deadline old when its claim expires (the longest deadline:
/// reconcile's), so a lookup after the expiry sees it as long as the lag is
/// shorter — the protocol's own assumption (a provider lagging longer than a claim
/// lives would defeat any claim).
pub const MAX_LAG_MS: u64 = CLAIM_SECS * 1000 - super::world::ROTATION_DEADLINE_MS - 100;

fn lag(rng: &mut fastrand::Rng, min_ms: u64) -> FaultKind {
    FaultKind::Lag(Duration::from_millis(rng.u64(min_ms..MAX_LAG_MS)))
}

fn draw_fault(rng: &mut fastrand::Rng, endpoint: Endpoint) -> Fault {
    if endpoint.lists() && rng.u32(0..100) < 30 {
        return Fault {
            endpoint,
            kind: lag(rng, 200),
            times: None,
        };
    }
    let acting = acts(endpoint);
    let mode = loop {
        let mode = match rng.u32(0..100) {
            0..=14 => FailMode::ServerError,
            15..=24 => FailMode::RateLimited,
            25..=34 => FailMode::Timeout,
            35..=49 if acting => FailMode::Lost,
            // Beyond the client's timeout (PROVIDER_TIMEOUT_MS): acted, the client
            // gave up; on a read, a read that times out.
            50..=64 => FailMode::Late(Duration::from_millis(rng.u64(400..900))),
            65..=79 => FailMode::Late(Duration::from_millis(rng.u64(20..150))),
            80..=99 if acting => FailMode::Refuse(Refusal::default()),
            _ => continue,
        };
        break mode;
    };
    let times = match rng.u32(0..100) {
        0..=54 => Some(1),
        55..=79 => Some(2),
        80..=89 => Some(3),
        _ => None,
    };
    Fault {
        endpoint,
        kind: FaultKind::Fail(mode),
        times,
    }
}
