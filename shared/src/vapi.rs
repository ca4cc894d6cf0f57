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
use chrono::{DateTime, Utc};

use crate::ids::{AccountSid, AuthToken, E164, OrgId, ReportedToken};
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

/// An item as Vapi's lists give it: a credential (`name`; the token is never
/// returned) or a phone number (`number`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    id: String,
    name: Option<String>,
    number: Option<String>,
    created_at: Option<String>,
    /// A phone number's Twilio account (the subaccount it was imported with).
    twilio_account_sid: Option<String>,
    assistant_id: Option<String>,
    /// A phone number's Twilio token, when Vapi returns it (its schema lists it):
    /// only for the audit to fingerprint.
    #[serde(default)]
    twilio_auth_token: Option<ReportedToken>,
}

/// Where a walk of one of Vapi's lists goes: back to `since`, from `before` (or
/// now), stopping before `stop_by`.
struct WalkBounds {
    since: DateTime<Utc>,
    before: Option<DateTime<Utc>>,
    stop_by: Option<tokio::time::Instant>,
}

impl WalkBounds {
    fn since(since: DateTime<Utc>) -> Self {
        Self {
            since,
            before: None,
            stop_by: None,
        }
    }
}

/// How a walk of one of Vapi's lists ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Walk<T> {
    Found(T),
    /// The walk reached its lower bound without a match.
    NotFound,
    /// It stopped at its page bound; a later walk resumes below `before`.
    Unfinished {
        before: DateTime<Utc>,
    },
}

/// A Vapi phone number found by [`VapiClient::find_phone_number`]: its id, and
/// what it routes to and is called, so an adopted import can be brought to what
/// the database says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundNumber {
    pub id: String,
    pub assistant_id: Option<String>,
    pub name: Option<String>,
}

/// A Vapi phone number as its list shows it, for the carrier audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VapiNumber {
    pub id: String,
    pub number: String,
    /// The Twilio account it was imported with.
    pub twilio_account_sid: Option<String>,
    pub assistant_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    /// The Twilio token it holds, when Vapi's answer carries it.
    pub twilio_token: Option<ReportedToken>,
}

/// Vapi's phone-number list as the audit read it.
#[derive(Debug, Clone, Default)]
pub struct PhoneNumberList {
    pub numbers: Vec<VapiNumber>,
    pub pages: usize,
    /// Read to its end (else it stopped at its time bound).
    pub complete: bool,
}

/// What `POST /phone-number` imports: a number bought on a subaccount.
pub struct NumberImport<'a> {
    pub number: &'a E164,
    pub subaccount: &'a AccountSid,
    pub auth_token: &'a AuthToken,
    /// Vapi's `name`, at most 40 characters.
    pub name: Option<&'a str>,
    pub assistant_id: Option<&'a str>,
    /// Vapi's `smsEnabled`, always sent: `true` points the Twilio number's
    /// messaging URL at Vapi as well as its voice URL.
    pub sms_enabled: bool,
}

/// Page size of a lookup in Vapi's lists.
const LIST_PAGE: usize = 1000;
/// Upper bound on pages walked by one lookup.
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
    /// ([`credential_name`]), among those created at or after `since`. Used only
    /// when an earlier create may have left one behind (its attempt is stamped on
    /// the org before every `POST /credential`), so an org never has two.
    ///
    /// `before`: where an earlier lookup that hit its page bound stopped (it
    /// resumes below it). `stop_by`: no page is asked for that could not be
    /// answered by then (the walk says where it stopped instead of being cut off).
    /// The answer says whether the walk reached `since`.
    pub async fn find_credential(
        &self,
        org: OrgId,
        since: DateTime<Utc>,
        before: Option<DateTime<Utc>>,
        stop_by: Option<tokio::time::Instant>,
    ) -> Result<Walk<CredentialId>, ProviderError> {
        let name = credential_name(org);
        let bounds = WalkBounds {
            since,
            before,
            stop_by,
        };
        let walk = self
            .find_listed("/credential", &bounds, |item: &Listed| {
                item.name.as_deref() == Some(name.as_str())
            })
            .await?;
        Ok(match walk {
            Walk::Found(c) => Walk::Found(c.id),
            Walk::NotFound => Walk::NotFound,
            Walk::Unfinished { before } => Walk::Unfinished { before },
        })
    }

    /// `POST /phone-number`: imports a Twilio number bought on `subaccount`, with the
    /// subaccount's own credentials (a number carries them inline), routed to
    /// `assistant` if given. Never retried: after an unknown outcome, look for it
    /// with [`VapiClient::find_phone_number`] and adopt it.
    pub async fn import_number(&self, import: &NumberImport<'_>) -> Result<String, ProviderError> {
        let mut body = json!({
            "provider": "twilio",
            "number": import.number.as_str(),
            "twilioAccountSid": import.subaccount.as_str(),
            "twilioAuthToken": import.auth_token.expose(),
            "smsEnabled": import.sms_enabled,
        });
        if let Some(name) = import.name {
            body["name"] = json!(name);
        }
        if let Some(assistant) = import.assistant_id {
            body["assistantId"] = json!(assistant);
        }
        let answer = self
            .with_fresh_key(|| {
                call_once(
                    PROVIDER,
                    Method::POST,
                    "/phone-number",
                    self.request(Method::POST, "/phone-number").json(&body),
                    &self.policy,
                )
            })
            .await?;
        Ok(answer.json::<Created>(PROVIDER)?.id)
    }

    /// The Vapi phone number for `number` imported with `subaccount`'s
    /// credentials, if Vapi has one among those created at or after `since` (the
    /// purchase's start, less some skew). Both must match: a number of the same
    /// E.164 carrying another account's credentials is not ours to adopt.
    pub async fn find_phone_number(
        &self,
        number: &E164,
        subaccount: &AccountSid,
        since: DateTime<Utc>,
    ) -> Result<Option<FoundNumber>, ProviderError> {
        let walk = self
            .find_listed(
                "/phone-number",
                &WalkBounds::since(since),
                |item: &Listed| {
                    item.number.as_deref() == Some(number.as_str())
                        && item.twilio_account_sid.as_deref() == Some(subaccount.as_str())
                },
            )
            .await?;
        match walk {
            Walk::Found(n) => Ok(Some(FoundNumber {
                id: n.id,
                assistant_id: n.assistant_id,
                name: n.name,
            })),
            Walk::NotFound => Ok(None),
            // A purchase's window is minutes: an unfinished walk is an error, never
            // "not found" (which would import a duplicate).
            Walk::Unfinished { .. } => Err(ProviderError::UnexpectedBody {
                provider: PROVIDER,
                status: 200,
            }),
        }
    }

    /// Walk `GET {path}` (Vapi's lists take `limit` and `createdAt*` bounds, no
    /// other filter) newest first, from now (or from `before`) back to `since`, for
    /// the first item `wanted` accepts. A walk that needs more than [`LIST_PAGES`]
    /// pages stops and says where ([`Walk::Unfinished`]), never "not found": a wrong
    /// "not found" would create a duplicate.
    async fn find_listed(
        &self,
        path: &'static str,
        bounds: &WalkBounds,
        wanted: impl Fn(&Listed) -> bool,
    ) -> Result<Walk<Listed>, ProviderError> {
        let mut found = None;
        let (walk, _) = self
            .walk_list(path, bounds, LIST_PAGES, |item| {
                if wanted(&item) {
                    found = Some(item);
                    return false;
                }
                true
            })
            .await?;
        Ok(match (found, walk) {
            (Some(item), _) => Walk::Found(item),
            (None, Walk::Unfinished { before }) => Walk::Unfinished { before },
            (None, _) => Walk::NotFound,
        })
    }

    /// Every phone number Vapi has, newest first, for the carrier audit: the walk of
    /// [`VapiClient::find_listed`] without a page bound, stopping only at `stop_by`
    /// (then `complete` is false: an incomplete list proves nothing missing).
    pub async fn all_phone_numbers(
        &self,
        stop_by: Option<tokio::time::Instant>,
    ) -> Result<PhoneNumberList, ProviderError> {
        let bounds = WalkBounds {
            since: DateTime::UNIX_EPOCH,
            before: None,
            stop_by,
        };
        let mut numbers = Vec::new();
        let (walk, pages) = self
            .walk_list("/phone-number", &bounds, usize::MAX, |item| {
                if let Some(number) = item.number {
                    numbers.push(VapiNumber {
                        id: item.id,
                        number,
                        twilio_account_sid: item.twilio_account_sid,
                        assistant_id: item.assistant_id,
                        twilio_token: item.twilio_auth_token,
                        created_at: item
                            .created_at
                            .as_deref()
                            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                            .map(|t| t.to_utc()),
                    });
                }
                true
            })
            .await?;
        Ok(PhoneNumberList {
            numbers,
            pages,
            complete: !matches!(walk, Walk::Unfinished { .. }),
        })
    }

    /// `GET /phone-number/{id}`: whether Vapi still has it (`false` only on Vapi's
    /// own JSON 404).
    pub async fn phone_number_exists(&self, id: &str) -> Result<bool, ProviderError> {
        let path = format!("/phone-number/{}", urlencode(id));
        let answer = self
            .with_fresh_key(|| {
                call_idempotent(
                    PROVIDER,
                    Method::GET,
                    "/phone-number/{id}",
                    || self.request(Method::GET, &path),
                    &self.policy,
                )
            })
            .await;
        match answer {
            Ok(_) => Ok(true),
            Err(e) if e.is_gone() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The walk itself: pages of `GET {path}` bounded by `createdAtLe` of the oldest
    /// item seen (items on the boundary are seen twice and skipped by id), each new
    /// item given to `visit` until it answers `false` ([`Walk::Found`] with nothing:
    /// the caller kept what it wanted). [`Walk::NotFound`]: it reached `since`.
    async fn walk_list(
        &self,
        path: &'static str,
        bounds: &WalkBounds,
        max_pages: usize,
        mut visit: impl FnMut(Listed) -> bool,
    ) -> Result<(Walk<()>, usize), ProviderError> {
        let since = bounds
            .since
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let before = bounds.before;
        let mut seen = std::collections::HashSet::new();
        let mut until: Option<String> =
            before.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let mut page_no = 0;
        while page_no < max_pages {
            // Not enough time left for a page (one attempt): stop where it is.
            let out_of_time = bounds
                .stop_by
                .is_some_and(|at| tokio::time::Instant::now() + self.policy.attempt_timeout > at);
            if page_no > 0 && out_of_time {
                break;
            }
            page_no += 1;
            let mut query = vec![
                ("limit", LIST_PAGE.to_string()),
                ("createdAtGe", since.clone()),
            ];
            if let Some(at) = &until {
                query.push(("createdAtLe", at.clone()));
            }
            let answer = self
                .with_fresh_key(|| {
                    call_idempotent(
                        PROVIDER,
                        Method::GET,
                        path,
                        || self.request(Method::GET, path).query(&query),
                        &self.policy,
                    )
                })
                .await?;
            let page: Vec<Listed> = answer.json(PROVIDER)?;
            let full = page.len() >= LIST_PAGE;
            let oldest = page.iter().filter_map(|i| i.created_at.clone()).min();
            let mut fresh = 0;
            for item in page {
                if seen.insert(item.id.clone()) {
                    fresh += 1;
                    if !visit(item) {
                        return Ok((Walk::Found(()), page_no));
                    }
                }
            }
            match oldest {
                Some(at) if full && fresh > 0 => until = Some(at),
                _ if !full => return Ok((Walk::NotFound, page_no)),
                // A full page of items already seen (or without dates): cannot go on.
                _ => break,
            }
        }
        tracing::warn!(
            path,
            pages = page_no,
            "walk did not finish within its pages or its time"
        );
        // Where it stopped: the next walk resumes there (items on the boundary are
        // seen again, which is harmless).
        match until.as_deref().map(DateTime::parse_from_rfc3339) {
            Some(Ok(at)) if before.is_none_or(|b| at.to_utc() < b) => Ok((
                Walk::Unfinished {
                    before: at.to_utc(),
                },
                page_no,
            )),
            _ => Err(ProviderError::UnexpectedBody {
                provider: PROVIDER,
                status: 200,
            }),
        }
    }

    /// Whether Vapi knows the assistant: `GET /assistant/{id}` (200, or 404 in
    /// Vapi's JSON for none).
    pub async fn assistant_exists(&self, id: &str) -> Result<bool, ProviderError> {
        let path = format!("/assistant/{}", urlencode(id));
        let answer = self
            .with_fresh_key(|| {
                call_idempotent(
                    PROVIDER,
                    Method::GET,
                    "/assistant/{id}",
                    || self.request(Method::GET, &path),
                    &self.policy,
                )
            })
            .await;
        match answer {
            Ok(_) => Ok(true),
            Err(e) if e.is_gone() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `PATCH /phone-number/{id}` with the assistant (and name): idempotent, retried
    /// with backoff.
    pub async fn route_phone_number(
        &self,
        id: &str,
        assistant_id: &str,
        name: Option<&str>,
    ) -> Result<(), ProviderError> {
        let mut body = json!({ "assistantId": assistant_id });
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        let path = format!("/phone-number/{}", urlencode(id));
        self.with_fresh_key(|| {
            call_idempotent(
                PROVIDER,
                Method::PATCH,
                "/phone-number/{id}",
                || self.request(Method::PATCH, &path).json(&body),
                &self.policy,
            )
        })
        .await
        .map(drop)
    }

    /// `PATCH /phone-number/{id}` with the Twilio account and token the number calls
    /// Twilio with (a Twilio number carries them inline, so a rotated token must
    /// reach each number): idempotent, retried with backoff. Vapi's JSON 404
    /// ([`ProviderError::is_gone`]): the number is gone at Vapi.
    pub async fn set_number_token(
        &self,
        id: &str,
        account_sid: &AccountSid,
        auth_token: &AuthToken,
    ) -> Result<(), ProviderError> {
        self.patch_number_token(id, account_sid, auth_token, None, None)
            .await
    }

    /// [`VapiClient::set_number_token`] and, in the same PATCH, the assistant (and
    /// name) when given: what adopting an import found after an unknown outcome
    /// sends, one round trip.
    pub async fn patch_number_token(
        &self,
        id: &str,
        account_sid: &AccountSid,
        auth_token: &AuthToken,
        assistant_id: Option<&str>,
        name: Option<&str>,
    ) -> Result<(), ProviderError> {
        let mut body = json!({
            "twilioAccountSid": account_sid.as_str(),
            "twilioAuthToken": auth_token.expose(),
        });
        if let Some(assistant) = assistant_id {
            body["assistantId"] = json!(assistant);
        }
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        let path = format!("/phone-number/{}", urlencode(id));
        self.with_fresh_key(|| {
            call_idempotent(
                PROVIDER,
                Method::PATCH,
                "/phone-number/{id}",
                || self.request(Method::PATCH, &path).json(&body),
                &self.policy,
            )
        })
        .await
        .map(drop)
    }

    /// `DELETE /credential/{id}`: idempotent, retried with backoff. `Ok` also when
    /// Vapi answers its own JSON 404 (already gone); its unknown-route 404 is an
    /// error ([`ProviderError::UnknownRoute`]).
    pub async fn delete_credential(&self, id: &str) -> Result<(), ProviderError> {
        let path = format!("/credential/{}", urlencode(id));
        match self.delete("/credential/{id}", &path).await {
            Err(e) if e.is_gone() => Ok(()),
            other => other,
        }
    }

    /// `DELETE /phone-number/{id}`: idempotent, retried with backoff. A 404 is
    /// returned as an error; the release counts it as done only when it is Vapi's
    /// own ([`ProviderError::is_gone`]).
    pub async fn delete_phone_number(&self, id: &str) -> Result<(), ProviderError> {
        let path = format!("/phone-number/{}", urlencode(id));
        self.delete("/phone-number/{id}", &path).await
    }

    /// `DELETE {path}`: idempotent, retried with backoff, the key fetched again
    /// after a 401.
    async fn delete(&self, template: &'static str, path: &str) -> Result<(), ProviderError> {
        self.with_fresh_key(|| {
            call_idempotent(
                PROVIDER,
                Method::DELETE,
                template,
                || self.request(Method::DELETE, path),
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
