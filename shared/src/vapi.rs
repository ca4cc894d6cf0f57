//! Vapi, the voice-AI platform that answers the calls: the Twilio credential mirror
//! (`/credential`) and phone numbers (`/phone-number`).
//!
//! `Authorization: Bearer <private key>`. The key comes from Secrets Manager at cold
//! start; when Vapi answers 401 the key is fetched again once (it may have been
//! rotated under a warm instance, see [`Rotating`]) and the call repeated if the key
//! changed.

use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use crate::config::{Rotating, SecretLoader, VapiKey};
use crate::ids::{AccountSid, AuthToken, OrgId};
use crate::providers::{Answer, CallPolicy, ProviderError, call_idempotent, call_once};

const PROVIDER: &str = "vapi";

/// A Vapi credential id (a UUID at Vapi; kept opaque here).
pub type CredentialId = String;

pub struct VapiClient {
    http: reqwest::Client,
    base: String,
    /// Fetched again after a 401, unless the client was built without a loader
    /// (tests that pin a key).
    key: Rotating<VapiKey>,
    policy: CallPolicy,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

/// A credential as `GET /credential` lists it (the token is never returned).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    id: String,
    name: Option<String>,
    created_at: Option<String>,
}

/// `GET /credential` page size: Vapi's list takes `limit` and pages by `createdAtLt`
/// (no filter by name), so a lookup by name walks pages of this size, newest first.
const LIST_PAGE: usize = 1000;
/// Upper bound on pages walked by one lookup (10 000 credentials).
const LIST_PAGES: usize = 10;

/// The deterministic name of an org's credential at Vapi (`org-<uuid>`, 40 chars,
/// Vapi's limit): a credential whose `POST` outcome was unknown can be found by it.
pub fn credential_name(org: OrgId) -> String {
    format!("org-{org}")
}

impl VapiClient {
    pub fn new(
        http: reqwest::Client,
        base: impl Into<String>,
        key: VapiKey,
        secrets: Option<SecretLoader>,
        policy: CallPolicy,
    ) -> Self {
        Self {
            http,
            base: base.into(),
            key: Rotating::refetched("the Vapi key", key, secrets, |s| Box::pin(s.vapi())),
            policy,
        }
    }

    fn bearer(&self) -> String {
        self.key.current().0.expose_secret().to_owned()
    }

    /// Run `attempt`, and once more if Vapi said 401 and the key, fetched again,
    /// had changed.
    async fn with_fresh_key<F, Fut>(&self, attempt: F) -> Result<Answer, ProviderError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Answer, ProviderError>>,
    {
        // The key `attempt` sends (it reads the current one when building requests).
        let used = self.key.current();
        match attempt().await {
            Err(refused @ ProviderError::Status { status: 401, .. }) => {
                match self.key.refetch_if_changed(&used).await {
                    Ok(Some(_)) => attempt().await,
                    Ok(None) | Err(_) => Err(refused),
                }
            }
            other => other,
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(self.bearer())
    }

    /// `POST /credential`. Never retried: a request that timed out may have created
    /// the credential, and a blind retry would create a second one.
    pub async fn create_credential(
        &self,
        org: OrgId,
        account_sid: &AccountSid,
        auth_token: &AuthToken,
    ) -> Result<CredentialId, ProviderError> {
        let body = json!({
            "provider": "twilio",
            "name": credential_name(org),
            "accountSid": account_sid.as_str(),
            "authToken": auth_token.expose(),
        });
        let answer = self
            .with_fresh_key(|| {
                call_once(
                    PROVIDER,
                    Method::POST,
                    "/credential",
                    self.request(Method::POST, "/credential").json(&body),
                    &self.policy,
                )
            })
            .await?;
        Ok(answer.json::<Created>(PROVIDER)?.id)
    }

    /// `PATCH /credential/{id}`: idempotent, retried with backoff. A 404 in Vapi's
    /// JSON ([`ProviderError::is_gone`]) means the credential is gone at Vapi.
    pub async fn update_credential(
        &self,
        id: &str,
        org: OrgId,
        account_sid: &AccountSid,
        auth_token: &AuthToken,
    ) -> Result<(), ProviderError> {
        let body = json!({
            "name": credential_name(org),
            "accountSid": account_sid.as_str(),
            "authToken": auth_token.expose(),
        });
        let path = format!("/credential/{}", urlencode(id));
        self.with_fresh_key(|| {
            call_idempotent(
                PROVIDER,
                Method::PATCH,
                "/credential/{id}",
                || self.request(Method::PATCH, &path).json(&body),
                &self.policy,
            )
        })
        .await
        .map(drop)
    }

    /// The id of the org's credential, found by its deterministic name
    /// ([`credential_name`]), if Vapi has one. Used before any `POST /credential`
    /// and after a create whose outcome is unknown, so an org never has two.
    /// Vapi's list has no name filter: pages of [`LIST_PAGE`] are walked newest
    /// first with `createdAtLt`, at most [`LIST_PAGES`] of them.
    pub async fn find_credential(&self, org: OrgId) -> Result<Option<CredentialId>, ProviderError> {
        let name = credential_name(org);
        let mut before: Option<String> = None;
        for _ in 0..LIST_PAGES {
            let mut query = vec![("limit", LIST_PAGE.to_string())];
            if let Some(at) = &before {
                query.push(("createdAtLt", at.clone()));
            }
            let answer = self
                .with_fresh_key(|| {
                    call_idempotent(
                        PROVIDER,
                        Method::GET,
                        "/credential",
                        || self.request(Method::GET, "/credential").query(&query),
                        &self.policy,
                    )
                })
                .await?;
            let page: Vec<Listed> = answer.json(PROVIDER)?;
            if let Some(found) = page
                .iter()
                .find(|c| c.name.as_deref() == Some(name.as_str()))
            {
                return Ok(Some(found.id.clone()));
            }
            // The oldest of this page bounds the next one (a page without dates
            // cannot be continued).
            let oldest = page.iter().filter_map(|c| c.created_at.clone()).min();
            match oldest {
                Some(at) if page.len() >= LIST_PAGE => before = Some(at),
                _ => return Ok(None),
            }
        }
        tracing::warn!("credential lookup stopped after {LIST_PAGES} pages");
        Ok(None)
    }

    /// `DELETE /phone-number/{id}`: idempotent, retried with backoff. A 404 is
    /// returned as an error; the release counts it as done only when it is Vapi's
    /// own ([`ProviderError::is_gone`]).
    pub async fn delete_phone_number(&self, id: &str) -> Result<(), ProviderError> {
        let path = format!("/phone-number/{}", urlencode(id));
        self.with_fresh_key(|| {
            call_idempotent(
                PROVIDER,
                Method::DELETE,
                "/phone-number/{id}",
                || self.request(Method::DELETE, &path),
                &self.policy,
            )
        })
        .await
        .map(drop)
    }
}

/// RFC 3986 unreserved characters stay; everything else in an id is encoded.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Ids go into a path segment: encode everything but unreserved characters.
pub(crate) fn urlencode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, PATH_SEGMENT).to_string()
}
