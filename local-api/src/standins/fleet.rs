//! A fleet seeded in bulk for a scale benchmark (`POST /__control/fleet`, or
//! [`Standins::seed_fleet`]): `orgs` subaccounts named `org:<uuid>`, each holding
//! `numbersPerOrg` numbers bought by this service (FriendlyName `purchase
//! <operation uuid>`, `voice_url` and `sms_url` Vapi's) and imported into Vapi with
//! the subaccount's credentials — what the database of a healthy fleet would
//! match row for row.
//!
//! Everything is deterministic from `seed` and the indices, so a benchmark can
//! insert the matching rows from the answer (or recompute it):
//!
//! - org `i`: its uuid, its subaccount's SID (`AC` + 32 hex), its assistant (a
//!   UUID the stand-in knows);
//! - number `j` of org `i` (the `k = i × numbersPerOrg + j`-th): its E.164
//!   `+1 AAA EEE LLLL` with area code `AAA = 200 + seed mod 800`, exchange `EEE =
//!   200 + k div 10000` and line `LLLL = k mod 10000` (valid, unique within a
//!   seed; two seeds with the same area code clash, which is refused), its PN SID,
//!   its Vapi id, its purchase operation id, and its assistant: the org's, except
//!   every fourth number (`j mod 4 = 3`), which has none.
//!
//! Times: the `k`-th number (at Twilio and at Vapi) is created `k` ms after the
//! fleet's start, `ageSecs` (default a day) plus one ms per number before now, so
//! no two fleet numbers share a Vapi `createdAt` millisecond and a walk of Vapi's
//! list by `createdAtLe` of the oldest item seen never meets a page of ties. (A
//! number made by other means may share a millisecond with one fleet number; a
//! page boundary still moves on, since at most two items share one.) An org's
//! subaccount is created with its first number.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::drift::ControlError;
use super::twilio::NewIncoming;
use super::vapi::SeededVapiNumber;
use super::{
    Standins, VAPI_TWILIO_SMS_URL, VAPI_TWILIO_VOICE_URL, subaccount_token, twilio_time, vapi_time,
};

/// The most orgs, numbers per org and numbers in all one fleet may have.
const MAX_ORGS: usize = 100_000;
const MAX_NUMBERS_PER_ORG: usize = 1_000;
const MAX_NUMBERS: usize = 1_000_000;
/// How long ago the fleet was made, unless `ageSecs` says otherwise: older than
/// any grace period, as an established fleet is.
const DEFAULT_AGE_SECS: u64 = 24 * 3600;

fn yes() -> bool {
    true
}

/// `POST /__control/fleet`'s body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetRequest {
    /// 1 to 100,000.
    pub orgs: usize,
    /// 0 to 1,000 (and orgs × numbersPerOrg ≤ 1,000,000).
    pub numbers_per_org: usize,
    pub seed: u64,
    /// Whether the answer lists every org and number (default), or counts only.
    #[serde(default = "yes")]
    pub describe: bool,
    /// How long before now the fleet's last number was made (default 86400).
    #[serde(default)]
    pub age_secs: Option<u64>,
}

/// What a fleet seeding made.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fleet {
    pub seed: u64,
    pub orgs: usize,
    pub numbers_per_org: usize,
    /// Subaccounts, Twilio numbers and Vapi numbers made.
    pub subaccounts: usize,
    pub twilio_numbers: usize,
    pub vapi_numbers: usize,
    /// The first and last number's `createdAt` (Vapi's form); `null` without numbers.
    pub first_created_at: Option<String>,
    pub last_created_at: Option<String>,
    /// Every org and number, when described.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Vec<FleetOrg>>,
}

/// One org of a fleet.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetOrg {
    pub org_id: String,
    pub subaccount_sid: String,
    /// `org:<orgId>`.
    pub friendly_name: String,
    /// The assistant its numbers route to (all but every fourth).
    pub assistant_id: String,
    pub numbers: Vec<FleetNumber>,
}

/// One number of a fleet.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetNumber {
    pub e164: String,
    pub pn_sid: String,
    pub vapi_id: String,
    pub purchase_operation_id: String,
    pub assistant_id: Option<String>,
    /// Vapi's `createdAt` (ISO 8601, ms).
    pub created_at: String,
    /// Twilio's `date_created` (RFC 2822).
    pub date_created: String,
}

/// splitmix64's finaliser: a bijection that scatters bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 16 bytes for the id of kind `tag` at `(i, j)`: 8 bytes scattered from the seed,
/// the tag and the indices, then the indices themselves (so ids of one kind never
/// collide within a seed).
fn id_bytes(seed: u64, tag: u64, i: usize, j: usize) -> [u8; 16] {
    let at = ((i as u64) << 32) | (j as u64 & 0xffff_ffff);
    let hi = mix(seed ^ mix(tag ^ mix(at)));
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&at.to_be_bytes());
    b
}

/// A version-4-shaped UUID of those bytes (`i` < 2³⁰ keeps it unique).
fn uuid_of(mut b: [u8; 16]) -> uuid::Uuid {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b)
}

fn hex32(b: [u8; 16]) -> String {
    uuid::Uuid::from_bytes(b).simple().to_string()
}

const ORG: u64 = 1;
const SUBACCOUNT: u64 = 2;
const PN: u64 = 3;
const VAPI: u64 = 4;
const OPERATION: u64 = 5;
const ASSISTANT: u64 = 6;

/// A fleet's org `i`, without its numbers.
fn org_of(seed: u64, i: usize) -> FleetOrg {
    let org_id = uuid_of(id_bytes(seed, ORG, i, 0)).to_string();
    let mut assistant = id_bytes(seed, ASSISTANT, i, 0);
    // The stand-in knows every assistant but those starting `00000000-`.
    if assistant[..4] == [0; 4] {
        assistant[0] = 0x10;
    }
    FleetOrg {
        friendly_name: format!("org:{org_id}"),
        org_id,
        subaccount_sid: format!("AC{}", hex32(id_bytes(seed, SUBACCOUNT, i, 0))),
        assistant_id: uuid_of(assistant).to_string(),
        numbers: Vec::new(),
    }
}

/// The E.164 of the fleet's `k`-th number.
fn e164_of(seed: u64, k: usize) -> String {
    let area = 200 + seed % 800;
    let exchange = 200 + k / 10_000;
    let line = k % 10_000;
    format!("+1{area:03}{exchange:03}{line:04}")
}

impl FleetRequest {
    fn check(&self) -> Result<(), ControlError> {
        let total = self.orgs.checked_mul(self.numbers_per_org);
        if !(1..=MAX_ORGS).contains(&self.orgs)
            || self.numbers_per_org > MAX_NUMBERS_PER_ORG
            || total.is_none_or(|t| t > MAX_NUMBERS)
        {
            return Err(ControlError::Invalid(format!(
                "orgs must be 1 to {MAX_ORGS}, numbersPerOrg 0 to {MAX_NUMBERS_PER_ORG}, and their product at most {MAX_NUMBERS}"
            )));
        }
        Ok(())
    }
}

impl Standins {
    /// Seeds a fleet ([`FleetRequest`]; the module's doc says what it makes). All
    /// or nothing: 409 ([`ControlError::Conflict`]) when any of its subaccounts,
    /// numbers or Vapi ids is held already (the same seed twice, or two seeds with
    /// one area code). One change of what the providers hold.
    pub fn seed_fleet(&self, req: &FleetRequest) -> Result<Fleet, ControlError> {
        req.check()?;
        let (n, m) = (req.orgs, req.numbers_per_org);
        let total = n * m;
        let age = Duration::from_secs(req.age_secs.unwrap_or(DEFAULT_AGE_SECS))
            + Duration::from_millis(total as u64);
        let now = Utc::now();
        let start = TimeDelta::from_std(age)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .ok_or_else(|| ControlError::Invalid("ageSecs is too large".into()))?;
        let start = DateTime::from_timestamp_millis(start.timestamp_millis()).unwrap_or(start);
        let at = |k: usize| start + TimeDelta::milliseconds(k as i64);

        let mut inner = self.lock();
        // All or nothing: nothing of it may be held already.
        for i in 0..n {
            let org = org_of(req.seed, i);
            if inner.twilio.status(&org.subaccount_sid).is_some() {
                return Err(ControlError::Conflict(format!(
                    "subaccount {} exists already (this seed was seeded before?)",
                    org.subaccount_sid
                )));
            }
            for j in 0..m {
                let e164 = e164_of(req.seed, i * m + j);
                if let Some((holder, _)) = inner.twilio.holder(&e164) {
                    return Err(ControlError::Conflict(format!(
                        "{e164} is held already (by {holder}): another seed with area code {} was seeded before?",
                        200 + req.seed % 800
                    )));
                }
                let vapi_id = uuid_of(id_bytes(req.seed, VAPI, i, j)).to_string();
                if inner.vapi.has_phone_number(&vapi_id) {
                    return Err(ControlError::Conflict(format!(
                        "Vapi has {vapi_id} already"
                    )));
                }
            }
        }

        let mut described = req.describe.then(|| Vec::with_capacity(n));
        for i in 0..n {
            let mut org = org_of(req.seed, i);
            let token = subaccount_token(&org.subaccount_sid);
            inner.twilio.add_subaccount_at(
                &org.subaccount_sid,
                &org.friendly_name,
                &token,
                at(i * m),
            );
            for j in 0..m {
                let k = i * m + j;
                let created = at(k);
                let e164 = e164_of(req.seed, k);
                let pn = format!("PN{}", hex32(id_bytes(req.seed, PN, i, j)));
                let vapi_id = uuid_of(id_bytes(req.seed, VAPI, i, j)).to_string();
                let operation = uuid_of(id_bytes(req.seed, OPERATION, i, j)).to_string();
                let assistant = (j % 4 != 3).then_some(org.assistant_id.as_str());
                inner.twilio.insert_incoming(NewIncoming {
                    account_sid: &org.subaccount_sid,
                    sid: &pn,
                    e164: &e164,
                    friendly_name: Some(format!("purchase {operation}")),
                    offer: None,
                    created,
                    voice_url: Cow::Borrowed(VAPI_TWILIO_VOICE_URL),
                    sms_url: Cow::Borrowed(VAPI_TWILIO_SMS_URL),
                });
                inner.vapi.add_phone_number(
                    SeededVapiNumber {
                        id: &vapi_id,
                        number: &e164,
                        twilio_account_sid: &org.subaccount_sid,
                        assistant_id: assistant,
                        name: None,
                    },
                    Some(token.clone()),
                    created,
                );
                if described.is_some() {
                    org.numbers.push(FleetNumber {
                        assistant_id: assistant.map(str::to_owned),
                        e164,
                        pn_sid: pn,
                        vapi_id,
                        purchase_operation_id: operation,
                        created_at: vapi_time(created),
                        date_created: twilio_time(created),
                    });
                }
            }
            if let Some(orgs) = &mut described {
                orgs.push(org);
            }
        }
        inner.changed();
        Ok(Fleet {
            seed: req.seed,
            orgs: n,
            numbers_per_org: m,
            subaccounts: n,
            twilio_numbers: total,
            vapi_numbers: total,
            first_created_at: (total > 0).then(|| vapi_time(at(0))),
            last_created_at: (total > 0).then(|| vapi_time(at(total - 1))),
            fleet: described,
        })
    }
}
