//! How many numbers one org may buy: at most `PURCHASES_PER_ORG_PER_DAY` (default
//! 10) new purchases in any rolling 24 hours. A purchase costs money every month,
//! so a leaked token or a runaway client must not be able to buy the inventory.
//!
//! The check runs inside the intent's transaction ([`super::record::claim`]), so
//! the database does the excluding, not an instance: the org's `organizations` row
//! is locked (`FOR NO KEY UPDATE`, for that short transaction only, never across a
//! provider call), so two purchases of one org from two instances count one after
//! the other; then the org's `managed_phone_numbers` rows created in the last 24
//! hours are counted, whatever their status. Released numbers count (each was
//! bought); a closed intent (refused before anything was bought) leaves no row, so
//! it does not. A repeat of a purchase already made or in progress (same org, same
//! number) is not a new purchase and is never refused. The clock is the database's
//! (`statement_timestamp()` of the count, after the lock wait), the window exactly
//! 24 hours (not `1 day`, which a time zone's DST change would stretch or shrink).
//! The org's existing index `managed_phone_numbers_by_org (org_id, created_at
//! DESC)` serves the count: no migration.

use std::num::NonZeroU32;

use crate::config::{ConfigError, Env};

/// The per-org purchase limit, read at cold start by the function that buys
/// (buy-number). Reconcile only finishes purchases already recorded: it needs none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurchaseLimit {
    /// New purchases allowed per org in any rolling 24 hours.
    pub per_day: NonZeroU32,
}

impl PurchaseLimit {
    /// The default: 10 new numbers per org per day.
    pub const DEFAULT: Self = Self {
        per_day: NonZeroU32::new(10).unwrap(),
    };

    /// `PURCHASES_PER_ORG_PER_DAY`: a whole number ≥ 1, default 10. Anything else
    /// is a configuration error (the function fails at cold start, never serves with
    /// a limit nobody meant).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        const NAME: &str = "PURCHASES_PER_ORG_PER_DAY";
        let Some(raw) = env.get(NAME) else {
            return Ok(Self::DEFAULT);
        };
        raw.trim()
            .parse::<NonZeroU32>()
            .map(|per_day| Self { per_day })
            .map_err(|_| {
                ConfigError::invalid(
                    NAME,
                    format!("{raw:?} is not a whole number of purchases of at least 1"),
                )
            })
    }
}

impl Default for PurchaseLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(value: &str) -> Result<PurchaseLimit, ConfigError> {
        PurchaseLimit::from_env(&Env::from_pairs([("PURCHASES_PER_ORG_PER_DAY", value)]))
    }

    #[test]
    fn default_and_configured() {
        assert_eq!(
            PurchaseLimit::from_env(&Env::default())
                .unwrap()
                .per_day
                .get(),
            10
        );
        // Set but empty is unset, as for every variable.
        assert_eq!(limit("").unwrap(), PurchaseLimit::DEFAULT);
        assert_eq!(limit("1").unwrap().per_day.get(), 1);
        assert_eq!(limit("250").unwrap().per_day.get(), 250);
    }

    #[test]
    fn a_bad_value_is_a_config_error_naming_the_variable() {
        for bad in ["0", "-1", "ten", "1.5", "10/day", "99999999999"] {
            let e = limit(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    ConfigError::Invalid {
                        name: "PURCHASES_PER_ORG_PER_DAY",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
    }
}
