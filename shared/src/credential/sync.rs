//! The save's provider step: make Vapi hold the org's current credential, under
//! exactly one Vapi credential per org, named `org-<uuid>`
//! ([`crate::vapi::credential_name`]).
//!
//! Update the known id. Otherwise (none, or Vapi says it is gone) a credential the
//! database does not know can exist only if an earlier create's outcome was lost —
//! and every create stamps its attempt on the org first — so only then is it
//! looked up by name (among those created since the attempt) and adopted. Then
//! create it. A create whose outcome is unknown (timeout, 5xx) is never repeated
//! blind: the name is looked up again, with time kept back for that lookup.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::TwilioCredential;
use super::slot::{self, Lease};
use crate::db::Db;
use crate::ids::OrgId;
use crate::providers::ProviderError;
use crate::steps::Deadline;
use crate::vapi::{CredentialId, VapiClient, Walk};

/// Vapi's clock and ours may differ: a lookup starts this long before the attempt.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The sync's code when Vapi answers its unknown-route 404 on a credential call.
pub const VAPI_CREDENTIALS_UNAVAILABLE: &str = "vapi_credentials_unavailable";

/// How the sync ended: the id Vapi holds the credential under (as far as is
/// known), and why Vapi may not hold the current one.
#[derive(Debug)]
pub(super) struct Synced {
    pub id: Option<CredentialId>,
    pub failure: Option<SyncFailure>,
    /// How far a lookup by name got (kept on the org for the next save).
    pub lookup: Lookup,
}

/// A lookup by name's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Lookup {
    /// None ran: the org's cursor stays as it is.
    #[default]
    NotRun,
    /// It reached its lower bound (found or not): the cursor is cleared.
    Concluded,
    /// It stopped at its page bound: the next save resumes below this.
    Unfinished(DateTime<Utc>),
}

impl Lookup {
    pub(super) fn ran(self) -> bool {
        self != Self::NotRun
    }

    pub(super) fn resume_before(self) -> Option<DateTime<Utc>> {
        match self {
            Self::Unfinished(at) => Some(at),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(super) enum SyncFailure {
    Vapi(ProviderError),
    /// The create attempt could not be stamped, so nothing was created.
    NotStamped,
    /// Another save took the lease over while this one was syncing: it mirrors
    /// the newer slot, and this one's outcome is not recorded.
    Superseded,
    /// The lookup by name walked its page bound without reaching the create
    /// attempt's time (an org carried over from the earlier system searches back to
    /// 2000): it resumes where it stopped at the next save. Nothing is created
    /// meanwhile, which could duplicate the credential.
    LookupUnfinished,
    /// The lookup by name failed (a read: nothing was sent that could land late).
    Lookup(ProviderError),
}

impl SyncFailure {
    /// Vapi may still act on what was sent (a timeout, a 5xx): the lease is kept
    /// until it expires.
    pub(super) fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Vapi(e) if e.outcome_unknown())
    }

    /// The stable code the answer, the org and status show.
    pub(super) fn code(&self) -> &'static str {
        match self {
            // Vapi's router no longer knows `/credential` (those paths left its
            // published spec after 2024-12): no repeat can help; an alarm counts it.
            Self::Vapi(ProviderError::UnknownRoute { .. })
            | Self::Lookup(ProviderError::UnknownRoute { .. }) => VAPI_CREDENTIALS_UNAVAILABLE,
            Self::Vapi(e) | Self::Lookup(e) => match e.stable_code() {
                code @ ("vapi_timeout" | "vapi_unauthorized" | "vapi_rejected"
                | "vapi_bad_response") => code,
                _ => "vapi_unavailable",
            },
            Self::NotStamped => "sync_unrecorded",
            Self::LookupUnfinished => "vapi_lookup_unfinished",
            Self::Superseded => "superseded",
        }
    }
}

impl Synced {
    fn done(id: CredentialId) -> Self {
        Self {
            id: Some(id),
            failure: None,
            lookup: Lookup::NotRun,
        }
    }

    fn failed(id: Option<CredentialId>, e: ProviderError) -> Self {
        Self {
            id,
            failure: Some(SyncFailure::Vapi(e)),
            lookup: Lookup::NotRun,
        }
    }

    fn lookup_failed(e: ProviderError) -> Self {
        Self {
            id: None,
            failure: Some(SyncFailure::Lookup(e)),
            lookup: Lookup::NotRun,
        }
    }

    fn after(mut self, lookup: Lookup) -> Self {
        self.lookup = lookup;
        self
    }
}

pub(super) async fn sync(
    vapi: &VapiClient,
    db: &Db,
    org: OrgId,
    lease: &Lease,
    cred: &TwilioCredential,
    deadline: Deadline,
) -> Synced {
    let update = |id: CredentialId| async move {
        match deadline
            .run(
                "vapi",
                vapi.update_credential(&id, org, &cred.account_sid, &cred.auth_token),
            )
            .await
        {
            Ok(()) => Ok(Synced::done(id)),
            Err(e) if e.is_gone() => Err(e),
            Err(e) => Ok(Synced::failed(Some(id), e)),
        }
    };
    // The walk stops itself a page short of the deadline and says where, so the
    // next save resumes there rather than starting over.
    let find = |since: DateTime<Utc>, before: Option<DateTime<Utc>>| {
        deadline.run(
            "vapi",
            vapi.find_credential(
                org,
                since - chrono::Duration::from_std(CLOCK_SKEW).unwrap_or_default(),
                before,
                Some(deadline.instant()),
            ),
        )
    };
    let adopt = |found: CredentialId| async move {
        tracing::info!("adopting the org's credential found at Vapi by name");
        update(found)
            .await
            .unwrap_or_else(|gone| Synced::failed(None, gone))
    };

    if let Some(id) = lease.vapi_credential_id.clone() {
        match update(id).await {
            Ok(synced) => return synced,
            Err(_) => tracing::info!("Vapi no longer has the org's credential"),
        }
    }
    let mut looked = Lookup::NotRun;
    if let Some(since) = lease.create_attempted_at {
        match find(since, lease.lookup_before).await {
            Ok(Walk::Found(found)) => return adopt(found).await.after(Lookup::Concluded),
            Ok(Walk::NotFound) => looked = Lookup::Concluded,
            Ok(Walk::Unfinished { before }) => {
                tracing::warn!(%before, "the lookup by name did not reach the create attempt; the next save resumes it");
                return Synced {
                    id: None,
                    failure: Some(SyncFailure::LookupUnfinished),
                    lookup: Lookup::Unfinished(before),
                };
            }
            // A lookup (GET) changed nothing at Vapi: no lease to keep for it.
            Err(e) => return Synced::lookup_failed(e),
        }
    }
    let since = match slot::stamp_create_attempt(db, org, lease.token).await {
        Ok(Some(at)) => at,
        Ok(None) => {
            return Synced {
                id: None,
                failure: Some(SyncFailure::Superseded),
                lookup: looked,
            };
        }
        Err(e) => {
            tracing::error!(error = %e, "could not stamp the create attempt; not creating");
            return Synced {
                id: None,
                failure: Some(SyncFailure::NotStamped),
                lookup: looked,
            };
        }
    };
    // Keep time back to look the credential up if the create goes unanswered.
    let reserve = (deadline.remaining() / 4).min(Duration::from_secs(3));
    match deadline
        .keeping(reserve)
        .run(
            "vapi",
            vapi.create_credential(org, &cred.account_sid, &cred.auth_token),
        )
        .await
    {
        Ok(id) => Synced::done(id),
        Err(e) if e.outcome_unknown() => {
            tracing::warn!(error = %e, "creating the Vapi credential ended without an answer; looking it up by name");
            match find(since, None).await {
                Ok(Walk::Found(found)) => adopt(found).await,
                Ok(_) | Err(_) => Synced::failed(None, e).after(looked),
            }
        }
        Err(e) => Synced::failed(None, e).after(looked),
    }
}
