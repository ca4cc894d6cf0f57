//! The provider-step protocol: how every flow that changes state at a provider
//! (save's Vapi sync, a number's release, a purchase) is written, so that a failed,
//! slow or killed request never leaves the database and the providers disagreeing
//! without a record of it.
//!
//! 1. **Intent.** One short transaction (or one conditional statement) records what
//!    is about to happen and who holds it: a [`ClaimToken`] with an expiry on the
//!    row (a number's `claim_token`/`claimed_until`, an org's sync lease), plus what
//!    the flow needs (a sync generation, the steps already done). Re-sending that
//!    statement after a dropped connection matches the same token, so it is still
//!    recognised as ours.
//! 2. **Provider calls** with no transaction open, no row lock held and no pooled
//!    connection checked out, concurrently where independent, each bounded by the
//!    request's [`Deadline`]. Calls that create something are never blind-retried:
//!    after an unknown outcome the flow looks the thing up by its deterministic
//!    name or exact value and adopts it.
//! 3. **Outcome.** Each finished step is stamped and the result written in one
//!    transaction, guarded by `claim_token = <ours>`: a holder whose claim expired
//!    and was taken over writes nothing (its finished steps are idempotent, the
//!    new holder redoes or adopts them).
//! 4. **Reconcile** resumes what was left, with per-row backoff
//!    ([`retry_backoff`]) and a terminal state after too many attempts.
//!
//! The claim outlives the deadline (`claim_ttl > deadline`), so only a killed or
//! frozen instance's claim ever expires.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use uuid::Uuid;

use crate::config::{ConfigError, Env};
use crate::providers::ProviderError;

/// Names the holder of a claim (a release's number, a save's org lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimToken(Uuid);

impl ClaimToken {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for ClaimToken {
    fn default() -> Self {
        Self::new()
    }
}

/// The protocol's timings, from the environment.
#[derive(Debug, Clone)]
pub struct StepsConfig {
    /// Longest time a request spends on provider steps (`STEPS_DEADLINE_MS`, with
    /// `RELEASE_DEADLINE_MS` still accepted; default 20 s: inside API Gateway's
    /// 30 s with room for the outcome write). A Lambda context's own deadline,
    /// minus [`StepsConfig::outcome_margin`], shortens it further.
    pub deadline: Duration,
    /// How long a claim holds (`CLAIM_SECS`, or `RELEASE_CLAIM_SECS`; default
    /// 60 s). Longer than the deadline.
    pub claim_ttl: Duration,
    /// Time kept back from the Lambda deadline to write the outcome
    /// (`OUTCOME_MARGIN_MS`, default 1500).
    pub outcome_margin: Duration,
    /// Failed attempts after which reconcile stops retrying a number and marks it
    /// `needs_attention` (`RECONCILE_MAX_ATTEMPTS`, default 8).
    pub max_attempts: i32,
}

impl Default for StepsConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(20),
            claim_ttl: Duration::from_secs(60),
            outcome_margin: Duration::from_millis(1500),
            max_attempts: 8,
        }
    }
}

impl StepsConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = Self::default();
        let deadline_ms = match env.get("STEPS_DEADLINE_MS") {
            Some(_) => env.parse_or("STEPS_DEADLINE_MS", 0u64)?,
            None => env.parse_or("RELEASE_DEADLINE_MS", d.deadline.as_millis() as u64)?,
        };
        let claim_secs = match env.get("CLAIM_SECS") {
            Some(_) => env.parse_or("CLAIM_SECS", 0u64)?,
            None => env.parse_or("RELEASE_CLAIM_SECS", d.claim_ttl.as_secs())?,
        };
        let cfg = Self {
            deadline: Duration::from_millis(deadline_ms),
            claim_ttl: Duration::from_secs(claim_secs),
            outcome_margin: Duration::from_millis(
                env.parse_or("OUTCOME_MARGIN_MS", d.outcome_margin.as_millis() as u64)?,
            ),
            max_attempts: env.parse_or("RECONCILE_MAX_ATTEMPTS", d.max_attempts)?,
        };
        if cfg.claim_ttl <= cfg.deadline {
            return Err(ConfigError::Invalid {
                name: "CLAIM_SECS",
                why: "a claim must outlive the steps' deadline, or a live request's claim could be taken over".into(),
            });
        }
        if cfg.max_attempts < 1 {
            return Err(ConfigError::Invalid {
                name: "RECONCILE_MAX_ATTEMPTS",
                why: "must be at least 1".into(),
            });
        }
        Ok(cfg)
    }

    /// The deadline of one request: the configured one, shortened so the outcome
    /// can still be written before the Lambda's own deadline (`lambda_deadline`,
    /// from the invocation context; `None` outside Lambda).
    pub fn deadline_for(&self, lambda_deadline: Option<SystemTime>) -> Deadline {
        let mut budget = self.deadline;
        if let Some(at) = lambda_deadline {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            budget = budget.min(left.saturating_sub(self.outcome_margin));
        }
        Deadline::after(budget)
    }
}

/// When a request's provider steps must be finished.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(tokio::time::Instant);

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Self(tokio::time::Instant::now() + budget)
    }

    pub fn remaining(&self) -> Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// When it is, for a walk that stops itself in time (a paged lookup that says
    /// where it stopped rather than being cut off).
    pub fn instant(&self) -> tokio::time::Instant {
        self.0
    }

    /// This deadline less `reserve`: for a step after which time must remain (a
    /// lookup after a create whose answer never came).
    pub fn keeping(&self, reserve: Duration) -> Deadline {
        Self(self.0.checked_sub(reserve).unwrap_or(self.0))
    }

    /// Run one provider step within the deadline; running out is the provider's
    /// timeout (the step stays unfinished and is resumed later).
    pub async fn run<T>(
        &self,
        provider: &'static str,
        step: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        tokio::time::timeout_at(self.0, step)
            .await
            .unwrap_or(Err(ProviderError::Timeout { provider }))
    }
}

/// How one provider step of a claim ended.
#[derive(Debug)]
pub enum Step {
    /// Done now, earlier (stamped), or "already gone" as the provider said so.
    Done,
    Failed(ProviderError),
}

impl Step {
    /// A removal (DELETE) step: done, or already gone *as the provider proved*
    /// ([`ProviderError::is_gone`]: Vapi's JSON 404; Twilio's removal confirms its
    /// 20404 itself and answers `Ok` when confirmed). Any other 404 (a wrong base
    /// URL, a proxy's page, an unconfirmed 20404) is a failed step.
    pub fn removal(result: Result<(), ProviderError>) -> Self {
        match result {
            Ok(()) => Step::Done,
            Err(e) if e.is_gone() => {
                tracing::info!(
                    provider = e.provider(),
                    "already gone at the provider; counted as done"
                );
                Step::Done
            }
            Err(e) => Step::Failed(e),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Step::Done)
    }

    pub fn error(&self) -> Option<&ProviderError> {
        match self {
            Step::Done => None,
            Step::Failed(e) => Some(e),
        }
    }
}

/// What the database keeps of a failed step (`last_release_error` and the like):
/// stable code, HTTP status, the provider's own code and shortened message. Never
/// a body, a header or a secret.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepError {
    pub code: &'static str,
    pub status: Option<u16>,
    pub provider_code: Option<i64>,
    pub message: Option<String>,
    pub at: chrono::DateTime<chrono::Utc>,
}

impl From<&ProviderError> for StepError {
    fn from(e: &ProviderError) -> Self {
        Self {
            code: e.stable_code(),
            status: e.status(),
            provider_code: e.provider_code(),
            message: match e {
                ProviderError::Status { message, .. } => message.clone(),
                _ => None,
            },
            at: chrono::Utc::now(),
        }
    }
}

/// How long reconcile waits before retrying a row after its `attempts`-th failed
/// attempt: 1 min, doubling, capped at 1 h, so a permanently failing row costs one
/// attempt an hour until it reaches `max_attempts`.
pub fn retry_backoff(attempts: i32) -> Duration {
    const BASE: Duration = Duration::from_secs(60);
    const CAP: Duration = Duration::from_secs(3600);
    let doublings = attempts.saturating_sub(1).clamp(0, 16) as u32;
    BASE.saturating_mul(1u32 << doublings).min(CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(retry_backoff(0), Duration::from_secs(60));
        assert_eq!(retry_backoff(1), Duration::from_secs(60));
        assert_eq!(retry_backoff(2), Duration::from_secs(120));
        assert_eq!(retry_backoff(4), Duration::from_secs(480));
        assert_eq!(retry_backoff(7), Duration::from_secs(3600));
        assert_eq!(retry_backoff(i32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn lambda_deadline_shortens_the_budget() {
        let cfg = StepsConfig::default();
        let d = cfg.deadline_for(None);
        assert!(d.remaining() > Duration::from_secs(19));
        let d = cfg.deadline_for(Some(SystemTime::now() + Duration::from_secs(5)));
        assert!(d.remaining() <= Duration::from_millis(3500));
        assert!(d.remaining() > Duration::from_secs(3));
        let d = cfg.deadline_for(Some(SystemTime::now() - Duration::from_secs(1)));
        assert_eq!(d.remaining(), Duration::ZERO);
    }

    #[test]
    fn claim_must_outlive_deadline() {
        let env = Env::from_pairs([("STEPS_DEADLINE_MS", "30000"), ("CLAIM_SECS", "20")]);
        assert!(StepsConfig::from_env(&env).is_err());
        let env = Env::from_pairs([("RELEASE_DEADLINE_MS", "1000"), ("RELEASE_CLAIM_SECS", "5")]);
        let cfg = StepsConfig::from_env(&env).unwrap();
        assert_eq!(cfg.deadline, Duration::from_secs(1));
        assert_eq!(cfg.claim_ttl, Duration::from_secs(5));
    }

    #[tokio::test]
    async fn running_out_is_a_timeout() {
        let d = Deadline::after(Duration::from_millis(20));
        let r: Result<(), _> = d
            .run("vapi", async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await;
        assert_eq!(r, Err(ProviderError::Timeout { provider: "vapi" }));
    }
}
