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
}

impl Act {
    /// The org and number it is about, if any.
    pub fn target(&self) -> Option<(usize, usize)> {
        match *self {
            Self::Buy { org, number, .. }
            | Self::Change { org, number, .. }
            | Self::Release { org, number } => Some((org, number)),
            Self::Save { .. } | Self::Reconcile | Self::Offboard { .. } => None,
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
    /// An org offboarded after that, perhaps under a fault.
    pub ending: Option<Ending>,
}

/// The end of an org: offboarded after the schedule's steps (and hand drift), with
/// `faults` on its one call; reconcile finishes what it leaves.
#[derive(Debug, Clone)]
pub struct Ending {
    pub org: usize,
    pub faults: Vec<Fault>,
}

/// The ending of `seed`, from a generator of its own (as [`draw_hand`]).
fn draw_ending(seed: u64) -> Option<Ending> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x0ff0_b0a2_d000_0001);
    if rng.u32(0..100) >= 30 {
        return None;
    }
    let org = rng.usize(0..2);
    let act = Act::Offboard { org };
    let faults = if rng.bool() {
        draw_faults(&mut rng, &[&act])
    } else {
        Vec::new()
    };
    Some(Ending { org, faults })
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
        }
    }
}

/// The hand drift of `seed`: drawn from a generator of its own, so adding it left
/// every seed's steps as they were (the named seeds still replay).
fn draw_hand(seed: u64) -> Vec<Hand> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x0a0d_17d0_0000_0001);
    if rng.u32(0..100) >= 40 {
        return Vec::new();
    }
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
        if let Some(end) = &self.ending {
            let faults: Vec<String> = end.faults.iter().map(|x| format!("{x}")).collect();
            writeln!(
                f,
                "   +  offboard org{} under [{}]",
                end.org,
                faults.join(", ")
            )?;
        }
        Ok(())
    }
}

/// How long a claim lives in the test's configuration (`CLAIM_SECS`).
pub const CLAIM_SECS: u64 = 3;

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
        Self {
            seed,
            scenario: None,
            steps,
            hand: draw_hand(seed),
            ending: draw_ending(seed),
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
            ending: None,
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
        Act::Save { org, .. } => *org = to_org,
        Act::Reconcile | Act::Offboard { .. } => {}
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
        Subaccount | Buy | Release | Credential | Import | Route | Delete
    )
}

/// A creating call and the lookup that finds what it made after an unknown
/// outcome.
const CREATE_AND_LOOKUP: [(Endpoint, Endpoint); 3] = [
    (Endpoint::Buy, Endpoint::Bought),
    (Endpoint::Import, Endpoint::List),
    (Endpoint::Route, Endpoint::List),
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
/// `STEPS_DEADLINE_MS` old when its claim expires, so a lookup after the expiry
/// sees it as long as the lag is shorter — the protocol's own assumption (a
/// provider lagging longer than a claim lives would defeat any claim).
const MAX_LAG_MS: u64 = CLAIM_SECS * 1000 - super::world::STEPS_DEADLINE_MS - 100;

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
