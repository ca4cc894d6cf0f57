//! The save's provider step: make Vapi hold the org's current credential, under
//! exactly one Vapi credential per org, named `org-<uuid>`
//! ([`crate::vapi::credential_name`]).
//!
//! Update the known id; if Vapi says it is gone, or there is none, look the
//! credential up by name and adopt (update) it; only then create one. A create
//! whose outcome is unknown (timeout, 5xx) is never repeated blind: the name is
//! looked up again, and a credential found is adopted.

use super::TwilioCredential;
use crate::ids::OrgId;
use crate::providers::ProviderError;
use crate::steps::Deadline;
use crate::vapi::{CredentialId, VapiClient};

/// How the sync ended: the id Vapi holds the credential under (as far as is
/// known), and the error if Vapi does not hold the current one.
#[derive(Debug)]
pub(super) struct Synced {
    pub id: Option<CredentialId>,
    pub error: Option<ProviderError>,
}

impl Synced {
    fn done(id: CredentialId) -> Self {
        Self {
            id: Some(id),
            error: None,
        }
    }

    fn failed(id: Option<CredentialId>, e: ProviderError) -> Self {
        Self { id, error: Some(e) }
    }
}

/// The stable code a failed sync reports: `vapi_unavailable` for anything that is
/// Vapi's or the network's fault, the finer codes where they help the operator.
pub(super) fn stable_code(e: &ProviderError) -> &'static str {
    match e.stable_code() {
        code @ ("vapi_timeout" | "vapi_unauthorized" | "vapi_rejected" | "vapi_bad_response") => {
            code
        }
        _ => "vapi_unavailable",
    }
}

pub(super) async fn sync(
    vapi: &VapiClient,
    org: OrgId,
    known: Option<CredentialId>,
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
    let find = || deadline.run("vapi", vapi.find_credential(org));

    if let Some(id) = known {
        match update(id).await {
            Ok(synced) => return synced,
            Err(_) => {
                tracing::info!("Vapi no longer has the org's credential; looking it up by name")
            }
        }
    }
    match find().await {
        Ok(Some(found)) => {
            tracing::info!("adopting the org's credential found at Vapi by name");
            return update(found)
                .await
                .unwrap_or_else(|e| Synced::failed(None, e));
        }
        Ok(None) => {}
        Err(e) => return Synced::failed(None, e),
    }
    match deadline
        .run(
            "vapi",
            vapi.create_credential(org, &cred.account_sid, &cred.auth_token),
        )
        .await
    {
        Ok(id) => Synced::done(id),
        Err(e) if e.outcome_unknown() => {
            tracing::warn!(error = %e, "creating the Vapi credential ended without an answer; looking it up by name");
            match find().await {
                Ok(Some(found)) => update(found)
                    .await
                    .unwrap_or_else(|gone| Synced::failed(None, gone)),
                Ok(None) | Err(_) => Synced::failed(None, e),
            }
        }
        Err(e) => Synced::failed(None, e),
    }
}
