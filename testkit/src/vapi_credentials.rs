//! A stateful Vapi `/credential` API on a wiremock server, for tests of the save's
//! sync: `GET /credential` (a JSON array, newest first, `limit`, `createdAtLt`,
//! `createdAtLe`, `createdAtGe`),
//! `POST /credential` (201), `PATCH /credential/{id}` (200, or Vapi's JSON 404),
//! bearer auth checked. Tests can delay answers *after* the change was made (a
//! create whose answer the caller never sees), fail calls, and read what Vapi holds.
//!
//! Every request also samples the given pools ([`PoolProbe`]): how many database
//! connections the code under test had checked out while its provider call was in
//! flight.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{bearer_token, method, path, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::fakes::{FakeVapi, VAPI_KEY};
use crate::probe::PoolProbe;

/// One credential as Vapi holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCredential {
    pub id: String,
    pub name: Option<String>,
    pub account_sid: String,
    pub auth_token: String,
    pub created_at: String,
}

#[derive(Default)]
struct Held {
    creds: Vec<HeldCredential>,
    next: u32,
    /// Answer delays by method, applied after the change is made.
    delays: Vec<(&'static str, Duration)>,
    /// The next `n` calls of a method answer 500 without changing anything.
    failures: Vec<(&'static str, u32)>,
}

/// The credential API's state; clone freely (shared).
#[derive(Clone, Default)]
pub struct VapiCredentials {
    held: Arc<Mutex<Held>>,
    probe: Option<PoolProbe>,
}

impl VapiCredentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sample `probe`'s pools at every request.
    pub fn probed(mut self, probe: PoolProbe) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Mount the three endpoints on `vapi`.
    pub async fn mount(&self, vapi: &FakeVapi) {
        for (m, p) in [
            ("GET", "^/credential$"),
            ("POST", "^/credential$"),
            ("PATCH", "^/credential/[^/]+$"),
        ] {
            Mock::given(method(m))
                .and(path_regex(p))
                .and(bearer_token(VAPI_KEY))
                .respond_with(self.clone())
                .mount(&vapi.server)
                .await;
        }
        // Anything else under /credential is Vapi's JSON 404.
        Mock::given(path("/credential/none"))
            .respond_with(FakeVapi::error(404, "Not Found"))
            .mount(&vapi.server)
            .await;
    }

    /// Delay `method`'s answers by `d`, after the change was made.
    pub fn delay(&self, method: &'static str, d: Duration) {
        self.lock().delays.push((method, d));
    }

    /// Make the next `n` calls of `method` answer 500 (nothing changes).
    pub fn fail(&self, method: &'static str, n: u32) {
        self.lock().failures.push((method, n));
    }

    /// Everything Vapi holds, oldest first.
    pub fn held(&self) -> Vec<HeldCredential> {
        self.lock().creds.clone()
    }

    /// A credential created outside the code under test (an orphan of an old bug).
    pub fn insert(&self, name: &str, account_sid: &str, auth_token: &str) -> String {
        let mut held = self.lock();
        new_credential(&mut held, Some(name.into()), account_sid, auth_token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn new_credential(held: &mut Held, name: Option<String>, sid: &str, token: &str) -> String {
    held.next += 1;
    let id = format!("vapi-cred-{}", held.next);
    held.creds.push(HeldCredential {
        id: id.clone(),
        name,
        account_sid: sid.into(),
        auth_token: token.into(),
        created_at: next_created_at(held),
    });
    id
}

/// Now, in Vapi's ISO-8601 form with milliseconds, strictly after the last one.
fn next_created_at(held: &Held) -> String {
    let mut at = chrono::Utc::now();
    if let Some(last) = held
        .creds
        .last()
        .and_then(|c| c.created_at.parse::<chrono::DateTime<chrono::Utc>>().ok())
        && at <= last
    {
        at = last + chrono::Duration::milliseconds(1);
    }
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn listed(c: &HeldCredential) -> Value {
    json!({
        "id": c.id, "provider": "twilio", "orgId": "vapi-org", "name": c.name,
        "accountSid": c.account_sid, "createdAt": c.created_at, "updatedAt": c.created_at,
    })
}

impl Respond for VapiCredentials {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        if let Some(probe) = &self.probe {
            probe.sample();
        }
        let m = req.method.as_str();
        let mut held = self.lock();
        if let Some(f) = held.failures.iter_mut().find(|(fm, n)| *fm == m && *n > 0) {
            f.1 -= 1;
            return FakeVapi::error(500, "Internal server error");
        }
        // The latest delay set for the method.
        let delay = held
            .delays
            .iter()
            .rev()
            .find(|(dm, _)| *dm == m)
            .map(|(_, d)| *d)
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let answer = match m {
            "GET" => {
                let q: std::collections::HashMap<_, _> =
                    req.url.query_pairs().into_owned().collect();
                let limit = q
                    .get("limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(100usize);
                let mut page: Vec<&HeldCredential> = held
                    .creds
                    .iter()
                    .rev()
                    .filter(|c| q.get("createdAtLt").is_none_or(|b| c.created_at < *b))
                    .filter(|c| q.get("createdAtLe").is_none_or(|b| c.created_at <= *b))
                    .filter(|c| q.get("createdAtGe").is_none_or(|b| c.created_at >= *b))
                    .collect();
                page.truncate(limit);
                ResponseTemplate::new(200)
                    .set_body_json(page.into_iter().map(listed).collect::<Vec<_>>())
            }
            "POST" => {
                let (Some(sid), Some(token)) =
                    (body["accountSid"].as_str(), body["authToken"].as_str())
                else {
                    return FakeVapi::error(400, "accountSid must be a string");
                };
                let name = body["name"].as_str().map(str::to_owned);
                let id = new_credential(&mut held, name, sid, token);
                let created = held.creds.last().map(listed).unwrap_or_default();
                debug_assert_eq!(created["id"], json!(id));
                ResponseTemplate::new(201).set_body_json(created)
            }
            _ => {
                let id = req.url.path().trim_start_matches("/credential/").to_owned();
                let Some(c) = held.creds.iter_mut().find(|c| c.id == id) else {
                    return FakeVapi::error(404, "Not Found");
                };
                if let Some(sid) = body["accountSid"].as_str() {
                    c.account_sid = sid.into();
                }
                if let Some(token) = body["authToken"].as_str() {
                    c.auth_token = token.into();
                }
                if let Some(name) = body["name"].as_str() {
                    c.name = Some(name.into());
                }
                ResponseTemplate::new(200).set_body_json(listed(c))
            }
        };
        answer.set_delay(delay)
    }
}
