//! Service bugs this test found that are not fixed yet, each kept as an ignored
//! named regression in `fault_schedule.rs`. A drawn schedule (not a scenario nor
//! a replay, and not with `FAULT_STRICT=1`) that breaks an invariant only in a
//! known bug's exact way is reported as known — counted and printed with the
//! seed, never silently passed — so the CI run stays a signal for new bugs. Each
//! classifier is narrow: a violation that does not match one fully is a failure.
//! When a bug is fixed, delete its variant: its classifier goes with it.

use std::fmt;

use uuid::Uuid;

use super::invariants::{NotPrimary, OrgState};
use super::world::NumberRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Known {
    /// B1: a rotation promotes while a purchase of the org whose import landed at
    /// Vapi with an unknown outcome (claim expired, no `vapi_phone_id`) holds the
    /// old primary (`shared/src/rotation/store.rs` `start_promotion`,
    /// `numbers_to_patch`).
    PromotionOverStrandedImport,
    /// B3: the carrier audit never compares the slot's token with the
    /// subaccount's (`shared/src/carrier_audit/drift.rs` `token_drift` is per
    /// active row): an org with no active number keeps a dead Vapi credential
    /// after a console rotation.
    SlotTokenNotAudited,
}

impl Known {
    /// The ignored regression that shows it.
    pub fn regression(self) -> &'static str {
        match self {
            Self::PromotionOverStrandedImport => {
                "a_rotation_never_promotes_over_an_import_whose_outcome_is_unknown"
            }
            Self::SlotTokenNotAudited => {
                "seed_1174_a_console_rotation_without_numbers_reaches_the_credential"
            }
        }
    }
}

impl fmt::Display for Known {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} (see {})", self.regression())
    }
}

/// The live row of `number` of `org`.
fn live<'a>(rows: &'a [NumberRow], org: Uuid, number: &str) -> Option<&'a NumberRow> {
    rows.iter()
        .find(|r| r.org == org && r.number == number && r.status != "released")
}

/// An answer `200 rotated` whose claim failed only for Vapi numbers whose rows
/// are purchases with no Vapi id yet (B1).
pub fn rotated_over_stranded(offenders: &[NotPrimary], org: Uuid, rows: &[NumberRow]) -> bool {
    !offenders.is_empty()
        && offenders.iter().all(|o| {
            o.number.as_deref().is_some_and(|n| {
                live(rows, org, n)
                    .is_some_and(|r| r.status == "provisioning" && r.vapi_id.is_none())
            })
        })
}

/// A number of `org` whose import was stamped only after one of the org's
/// rotations promoted: its import, sent before, carried the old primary (B1, seen
/// in the stand-ins' journal by R4).
pub fn imported_after_a_promotion(
    rows: &[NumberRow],
    org: Uuid,
    state: &OrgState,
    number: &str,
) -> bool {
    live(rows, org, number)
        .and_then(|r| r.imported_at)
        .is_some_and(|at| state.promoted.iter().any(|p| *p < at))
}

/// R1's credential held a retired token in an org whose token was rotated in the
/// console and which has no active number (B3).
pub fn credential_unaudited(
    rows: &[NumberRow],
    org: Uuid,
    state: &OrgState,
    console_rotated: &[String],
) -> bool {
    state
        .slot
        .as_ref()
        .is_some_and(|(_, account)| console_rotated.contains(account))
        && !rows.iter().any(|r| r.org == org && r.status == "active")
}
