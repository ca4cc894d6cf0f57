//! The Twilio stand-in's auth-token rotation (Accounts API v1 under
//! `TWILIO_ACCOUNTS_PREFIX`: a secondary token created, replaced, deleted,
//! promoted; a rotation by hand through `/__control`), and what it tells a
//! checker without ever showing a token: each subaccount's `hasSecondaryToken` and
//! `tokenRotations`, each Vapi credential's and number's `twilioToken`, and the
//! Vapi calls that carried a retired token (`deadTokenCalls`).
//!
//! The stand-ins run in-process on their own (no database): quick and
//! deterministic.

use std::time::Duration;

use local_api::standins::{
    Endpoint, FailMode, LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN, LOCAL_VAPI_KEY, Standins,
    TWILIO_ACCOUNTS_PREFIX, seed_numbers,
};
use serde_json::{Value, json};

const MAIN: (&str, &str) = (LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN);

struct Answer {
    status: u16,
    body: Value,
    text: String,
}

/// The stand-ins alone, served on a loopback port.
struct Stand {
    standins: Standins,
    base: String,
    http: reqwest::Client,
}

impl Stand {
    async fn start() -> Self {
        let standins = Standins::default();
        standins.offer(seed_numbers());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("its address");
        let app = standins.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            standins,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    async fn send(req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("the stand-ins answer");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, body, text }
    }

    /// Twilio's REST API; `path` after `/2010-04-01`.
    async fn twilio(
        &self,
        method: &str,
        path: &str,
        (user, pass): (&str, &str),
        form: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                format!("{}/twilio/2010-04-01{path}", self.base),
            )
            .basic_auth(user, Some(pass));
        if !form.is_empty() {
            req = req.form(form);
        }
        Self::send(req).await
    }

    /// Twilio's Accounts API as the client is configured for it
    /// (`TWILIO_ACCOUNTS_BASE_URL` = address + `TWILIO_ACCOUNTS_PREFIX`).
    fn accounts_request(
        &self,
        method: &str,
        path: &str,
        (user, pass): (&str, &str),
    ) -> reqwest::RequestBuilder {
        self.http
            .request(
                method.parse().expect("method"),
                format!("{}{TWILIO_ACCOUNTS_PREFIX}{path}", self.base),
            )
            .basic_auth(user, Some(pass))
    }

    async fn accounts(&self, method: &str, path: &str, auth: (&str, &str)) -> Answer {
        Self::send(self.accounts_request(method, path, auth)).await
    }

    async fn vapi(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                format!("{}/vapi{path}", self.base),
            )
            .bearer_auth(LOCAL_VAPI_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::send(req).await
    }

    async fn control(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut req = self.http.request(
            method.parse().expect("method"),
            format!("{}/__control{path}", self.base),
        );
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::send(req).await
    }

    /// The control state, as `GET /__control/state` answers it.
    async fn state(&self) -> Value {
        let a = self.control("GET", "/state", None).await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.body
    }

    /// A new subaccount (as the main account): its SID and token.
    async fn subaccount(&self, name: &str) -> (String, String) {
        let a = self
            .twilio("POST", "/Accounts.json", MAIN, &[("FriendlyName", name)])
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        (text(&a.body["sid"]), text(&a.body["auth_token"]))
    }

    /// `e164` bought on `sub` (as the main account) and imported into Vapi with
    /// `token`: the Vapi number's id.
    async fn vapi_number(&self, sub: &str, token: &str, e164: &str) -> String {
        let bought = self
            .twilio(
                "POST",
                &format!("/Accounts/{sub}/IncomingPhoneNumbers.json"),
                MAIN,
                &[("PhoneNumber", e164)],
            )
            .await;
        assert_eq!(bought.status, 201, "{}", bought.text);
        let imported = self
            .vapi(
                "POST",
                "/phone-number",
                Some(json!({"provider": "twilio", "number": e164,
                            "twilioAccountSid": sub, "twilioAuthToken": token})),
            )
            .await;
        assert_eq!(imported.status, 201, "{}", imported.text);
        text(&imported.body["id"])
    }

    /// A Vapi credential created with `token`: its id.
    async fn vapi_credential(&self, sub: &str, token: &str) -> String {
        let a = self
            .vapi(
                "POST",
                "/credential",
                Some(
                    json!({"provider": "twilio", "accountSid": sub, "authToken": token,
                            "name": "org-rotation"}),
                ),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        assert!(a.body.get("authToken").is_none(), "{}", a.text);
        text(&a.body["id"])
    }

    /// The status of the account read with its own credentials.
    async fn read_as(&self, sub: &str, token: &str) -> Answer {
        self.twilio("GET", &format!("/Accounts/{sub}.json"), (sub, token), &[])
            .await
    }

    /// The account's `auth_token` as the main account reads it.
    async fn primary_read_by_main(&self, sub: &str) -> String {
        let a = self
            .twilio("GET", &format!("/Accounts/{sub}.json"), MAIN, &[])
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        text(&a.body["auth_token"])
    }

    async fn fail(&self, endpoint: &str, mode: &str) {
        let a = self
            .control(
                "POST",
                "/fail",
                Some(json!({"endpoint": endpoint, "mode": mode, "times": 1})),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(
            a.body["endpoint_fail"][endpoint]["mode"], mode,
            "{}",
            a.text
        );
    }
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("a string: {v}"))
        .to_owned()
}

fn is_token(t: &str) -> bool {
    t.len() == 32
        && t.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[track_caller]
fn assert_twilio_error(a: &Answer, status: u16, code: u64) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(a.body["code"], code, "{}", a.text);
    assert_eq!(a.body["status"], status, "{}", a.text);
    assert!(a.body["message"].is_string(), "{}", a.text);
    assert!(a.body["more_info"].is_string(), "{}", a.text);
}

/// None of `tokens` appears in `what`.
#[track_caller]
fn assert_no_token(what: &str, tokens: &[&str]) {
    for t in tokens {
        assert!(!what.contains(t), "a token leaked: {what}");
    }
}

#[tokio::test]
async fn a_secondary_token_works_beside_the_primary_and_a_second_one_replaces_it() {
    let s = Stand::start().await;
    let (sub, primary) = s.subaccount("org:secondary").await;
    let (other, other_token) = s.subaccount("org:other").await;
    let state = s.state().await;
    assert_eq!(
        state["twilio_subaccounts"][&sub]["hasSecondaryToken"], false,
        "{state}"
    );
    assert_eq!(state["twilio_subaccounts"][&sub]["tokenRotations"], 0);

    let created = s
        .accounts("POST", "/AuthTokens/Secondary", (&sub, &primary))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["account_sid"], sub.as_str());
    assert_eq!(
        created.body["url"],
        "https://accounts.twilio.com/v1/AuthTokens/Secondary"
    );
    for key in ["date_created", "date_updated"] {
        let t = text(&created.body[key]);
        assert!(
            chrono::DateTime::parse_from_rfc3339(&t).is_ok(),
            "{key}: {t}"
        );
    }
    let first = text(&created.body["secondary_auth_token"]);
    assert!(is_token(&first), "32 lowercase hex: {first}");
    assert_ne!(first, primary);

    // Both authenticate, on the 2010 API as the subaccount (its account, its
    // numbers, the accounts list) and on the Accounts API.
    for token in [&primary, &first] {
        let read = s.read_as(&sub, token).await;
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(read.body["status"], "active");
        let numbers = s
            .twilio(
                "GET",
                &format!("/Accounts/{sub}/IncomingPhoneNumbers.json"),
                (&sub, token),
                &[],
            )
            .await;
        assert_eq!(numbers.status, 200, "{}", numbers.text);
        let list = s.twilio("GET", "/Accounts.json", (&sub, token), &[]).await;
        assert_eq!(list.status, 200, "{}", list.text);
    }
    // Not for another account.
    assert_twilio_error(&s.read_as(&other, &first).await, 401, 20003);
    assert_eq!(s.read_as(&other, &other_token).await.status, 200);
    let state = s.state().await;
    assert_eq!(state["twilio_subaccounts"][&sub]["hasSecondaryToken"], true);
    assert_eq!(state["twilio_subaccounts"][&sub]["tokenRotations"], 0);
    assert_eq!(
        state["twilio_subaccounts"][&other]["hasSecondaryToken"],
        false
    );
    // The main account still reads the primary.
    assert_eq!(s.primary_read_by_main(&sub).await, primary);

    // A Vapi credential made with the first secondary: "secondary" for now.
    let credential = s.vapi_credential(&sub, &first).await;
    let state = s.state().await;
    assert_eq!(
        state["credentials"][&credential]["twilioToken"], "secondary",
        "{state}"
    );

    // A second one (asked with the first secondary) replaces it: the first fails
    // at once and is retired.
    let replaced = s
        .accounts("POST", "/AuthTokens/Secondary", (&sub, &first))
        .await;
    assert_eq!(replaced.status, 201, "{}", replaced.text);
    let second = text(&replaced.body["secondary_auth_token"]);
    assert!(is_token(&second));
    assert_ne!(second, first);
    assert_twilio_error(&s.read_as(&sub, &first).await, 401, 20003);
    assert_twilio_error(
        &s.accounts("POST", "/AuthTokens/Secondary", (&sub, &first))
            .await,
        401,
        20003,
    );
    assert_eq!(s.read_as(&sub, &primary).await.status, 200);
    assert_eq!(s.read_as(&sub, &second).await.status, 200);
    let state = s.state().await;
    assert_eq!(
        state["credentials"][&credential]["twilioToken"], "retired",
        "{state}"
    );
    assert_eq!(
        state["credentials"][&credential]["accountSid"],
        sub.as_str()
    );
    assert_eq!(state["credentials"][&credential]["name"], "org-rotation");
    assert_eq!(state["twilio_subaccounts"][&sub]["tokenRotations"], 0);

    // Deleted: 204, then 404 (20404); the deleted one fails.
    let deleted = s
        .accounts("DELETE", "/AuthTokens/Secondary", (&sub, &primary))
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert_twilio_error(
        &s.accounts("DELETE", "/AuthTokens/Secondary", (&sub, &primary))
            .await,
        404,
        20404,
    );
    assert_twilio_error(&s.read_as(&sub, &second).await, 401, 20003);
    let state = s.state().await;
    assert_eq!(
        state["twilio_subaccounts"][&sub]["hasSecondaryToken"],
        false
    );
    assert_eq!(state["deadTokenCalls"], json!([]), "{state}");
    assert_no_token(&state.to_string(), &[&primary, &first, &second]);
}

#[tokio::test]
async fn promotion_retires_the_old_primary_and_the_main_account_reads_the_new_one() {
    let s = Stand::start().await;
    let (sub, old) = s.subaccount("org:promote").await;

    // Nothing to promote yet: 400 (20001), nothing changes.
    let refused = s
        .accounts("POST", "/AuthTokens/Promote", (&sub, &old))
        .await;
    assert_twilio_error(&refused, 400, 20001);
    assert_eq!(
        refused.body["message"],
        "no secondary auth token to promote"
    );
    assert_eq!(s.read_as(&sub, &old).await.status, 200);

    let created = s
        .accounts("POST", "/AuthTokens/Secondary", (&sub, &old))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let new = text(&created.body["secondary_auth_token"]);

    // Promoted (asked with the secondary itself, which authenticates too).
    let promoted = s
        .accounts("POST", "/AuthTokens/Promote", (&sub, &new))
        .await;
    assert_eq!(promoted.status, 200, "{}", promoted.text);
    assert_eq!(promoted.body["account_sid"], sub.as_str());
    assert_eq!(promoted.body["auth_token"], new.as_str());
    assert_eq!(
        promoted.body["url"],
        "https://accounts.twilio.com/v1/AuthTokens"
    );
    assert!(promoted.body["date_created"].is_string() && promoted.body["date_updated"].is_string());

    assert_twilio_error(&s.read_as(&sub, &old).await, 401, 20003);
    assert_twilio_error(
        &s.accounts("POST", "/AuthTokens/Secondary", (&sub, &old))
            .await,
        401,
        20003,
    );
    let read = s.read_as(&sub, &new).await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.body["auth_token"], new.as_str());
    assert_eq!(s.primary_read_by_main(&sub).await, new);

    let state = s.state().await;
    assert_eq!(
        state["twilio_subaccounts"][&sub]["hasSecondaryToken"],
        false
    );
    assert_eq!(state["twilio_subaccounts"][&sub]["tokenRotations"], 1);
    // No secondary any more: nothing to promote again.
    assert_twilio_error(
        &s.accounts("POST", "/AuthTokens/Promote", (&sub, &new))
            .await,
        400,
        20001,
    );
    assert_no_token(&state.to_string(), &[&old, &new]);
}

#[tokio::test]
async fn the_main_account_and_other_callers_are_refused_as_twilio_would() {
    let s = Stand::start().await;
    let (sub, token) = s.subaccount("org:refusals").await;
    let calls = [
        ("POST", "/AuthTokens/Secondary"),
        ("DELETE", "/AuthTokens/Secondary"),
        ("POST", "/AuthTokens/Promote"),
    ];
    for (method, path) in calls {
        // The main account: never (real Twilio would rotate the MAIN token).
        let main = s.accounts(method, path, MAIN).await;
        assert_twilio_error(&main, 403, 20403);
        assert!(
            text(&main.body["message"]).contains("never rotate the platform's main token"),
            "{}",
            main.text
        );
        // Wrong credentials, the main SID with a wrong token, none at all.
        assert_twilio_error(
            &s.accounts(method, path, (&sub, "0123456789abcdef0123456789abcdef"))
                .await,
            401,
            20003,
        );
        assert_twilio_error(
            &s.accounts(method, path, (LOCAL_TWILIO_MAIN_SID, &token))
                .await,
            401,
            20003,
        );
        let anonymous = Stand::send(s.http.request(
            method.parse().expect("method"),
            format!("{}{TWILIO_ACCOUNTS_PREFIX}{path}", s.base),
        ))
        .await;
        assert_twilio_error(&anonymous, 401, 20003);
    }
    let state = s.state().await;
    assert_eq!(
        state["twilio_subaccounts"][&sub]["hasSecondaryToken"],
        false
    );
    assert_eq!(state["twilio_subaccounts"][&sub]["tokenRotations"], 0);

    // Other paths and methods under the prefix: Twilio's 404 and 405.
    assert_twilio_error(
        &s.accounts("GET", "/AuthTokens", (&sub, &token)).await,
        404,
        20404,
    );
    assert_twilio_error(
        &s.accounts("POST", "/Nothing", (&sub, &token)).await,
        404,
        20404,
    );
    assert_twilio_error(
        &s.accounts("GET", "/AuthTokens/Secondary", (&sub, &token))
            .await,
        405,
        20004,
    );
    assert_twilio_error(
        &s.accounts("DELETE", "/AuthTokens/Promote", (&sub, &token))
            .await,
        405,
        20004,
    );

    // A suspended subaccount, then a closed one: 401 (20003), with either token.
    let created = s
        .accounts("POST", "/AuthTokens/Secondary", (&sub, &token))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secondary = text(&created.body["secondary_auth_token"]);
    for status in ["suspended", "closed"] {
        let set = s
            .control(
                "POST",
                &format!("/twilio/accounts/{sub}/status"),
                Some(json!({ "status": status })),
            )
            .await;
        assert_eq!(set.status, 200, "{}", set.text);
        for t in [&token, &secondary] {
            for (method, path) in calls {
                assert_twilio_error(&s.accounts(method, path, (&sub, t)).await, 401, 20003);
            }
            assert_twilio_error(&s.read_as(&sub, t).await, 401, 20003);
        }
    }
    let state = s.state().await;
    assert_eq!(state["twilio_subaccounts"][&sub]["hasSecondaryToken"], true);
    assert_eq!(state["twilio_subaccounts"][&sub]["tokenRotations"], 0);
}

#[tokio::test]
async fn failures_injected_at_auth_tokens_do_nothing_or_act_and_lose_the_answer() {
    let s = Stand::start().await;
    let (sub, primary) = s.subaccount("org:faults").await;
    assert!(Endpoint::ALL.contains(&Endpoint::AuthTokens));
    assert_eq!(Endpoint::AuthTokens.name(), "auth_tokens");

    // 500: Twilio's error JSON, nothing done.
    s.fail("auth_tokens", "500").await;
    let failed = s
        .accounts("POST", "/AuthTokens/Secondary", (&sub, &primary))
        .await;
    assert_twilio_error(&failed, 500, 20500);
    let state = s.state().await;
    assert_eq!(
        state["twilio_subaccounts"][&sub]["hasSecondaryToken"],
        false
    );
    assert_eq!(state["endpoint_fail"].get("auth_tokens"), None, "used up");

    // A 429 (through the Rust API, as a test harness plans one): nothing done.
    s.standins
        .fail_endpoint(Endpoint::AuthTokens, FailMode::RateLimited, Some(1));
    let limited = s
        .accounts("POST", "/AuthTokens/Promote", (&sub, &primary))
        .await;
    assert_twilio_error(&limited, 429, 20429);

    let created = s
        .accounts("POST", "/AuthTokens/Secondary", (&sub, &primary))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secondary = text(&created.body["secondary_auth_token"]);

    // lost: the promotion is made, its answer never comes.
    s.fail("auth_tokens", "lost").await;
    let lost = s
        .accounts_request("POST", "/AuthTokens/Promote", (&sub, &primary))
        .timeout(Duration::from_millis(400))
        .send()
        .await;
    assert!(lost.is_err(), "no answer: {lost:?}");
    let state = s.state().await;
    assert_eq!(state["twilio_subaccounts"][&sub]["tokenRotations"], 1);
    assert_eq!(
        state["twilio_subaccounts"][&sub]["hasSecondaryToken"],
        false
    );
    assert_twilio_error(&s.read_as(&sub, &primary).await, 401, 20003);
    assert_eq!(s.primary_read_by_main(&sub).await, secondary);

    // lost on a secondary's creation: made (and usable, if the client could read
    // it from the main account… it cannot: only the primary is readable).
    s.fail("auth_tokens", "lost").await;
    let lost = s
        .accounts_request("POST", "/AuthTokens/Secondary", (&sub, &secondary))
        .timeout(Duration::from_millis(400))
        .send()
        .await;
    assert!(lost.is_err(), "no answer: {lost:?}");
    let state = s.state().await;
    assert_eq!(state["twilio_subaccounts"][&sub]["hasSecondaryToken"], true);
    // A client that lost the answer makes another: it replaces the lost one.
    let again = s
        .accounts("POST", "/AuthTokens/Secondary", (&sub, &secondary))
        .await;
    assert_eq!(again.status, 201, "{}", again.text);

    // timeout: no answer, nothing done.
    s.fail("auth_tokens", "timeout").await;
    let timed_out = s
        .accounts_request("DELETE", "/AuthTokens/Secondary", (&sub, &secondary))
        .timeout(Duration::from_millis(400))
        .send()
        .await;
    assert!(timed_out.is_err(), "no answer: {timed_out:?}");
    let state = s.state().await;
    assert_eq!(state["twilio_subaccounts"][&sub]["hasSecondaryToken"], true);
    // The plan was for one call: the next one acts.
    let deleted = s
        .accounts("DELETE", "/AuthTokens/Secondary", (&sub, &secondary))
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
}

#[tokio::test]
async fn vapi_token_statuses_follow_a_rotation_and_dead_tokens_are_recorded() {
    let s = Stand::start().await;
    s.standins.keep_journal();
    let (sub, old) = s.subaccount("org:vapi").await;
    let number = s.vapi_number(&sub, &old, "+14155550150").await;
    let credential = s.vapi_credential(&sub, &old).await;
    let state = s.state().await;
    assert_eq!(
        state["vapi_phone_numbers"][&number]["twilioToken"], "primary",
        "{state}"
    );
    assert_eq!(state["credentials"][&credential]["twilioToken"], "primary");

    // Other cases: an API key pair only (no token: null), an account the
    // stand-in does not know and a token it never gave out ("unknown").
    let keyed = s
        .vapi(
            "POST",
            "/credential",
            Some(
                json!({"provider": "twilio", "accountSid": sub, "apiKey": "SK0123",
                        "apiSecret": "api-secret"}),
            ),
        )
        .await;
    assert_eq!(keyed.status, 201, "{}", keyed.text);
    let stranger = "AC0123456789abcdef0123456789abcdef";
    let byoc = s
        .vapi_credential(stranger, "0123456789abcdef0123456789abcdef")
        .await;
    let never = s
        .vapi_credential(&sub, "fedcba9876543210fedcba9876543210")
        .await;
    let state = s.state().await;
    assert_eq!(
        state["credentials"][text(&keyed.body["id"])]["twilioToken"],
        Value::Null
    );
    assert_eq!(state["credentials"][&byoc]["twilioToken"], "unknown");
    assert_eq!(state["credentials"][&never]["twilioToken"], "unknown");

    // The rotation reaches Vapi before promotion: the number and the credential
    // carry the secondary.
    let created = s
        .accounts("POST", "/AuthTokens/Secondary", (&sub, &old))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let new = text(&created.body["secondary_auth_token"]);
    let patched = s
        .vapi(
            "PATCH",
            &format!("/phone-number/{number}"),
            Some(json!({ "twilioAuthToken": new })),
        )
        .await;
    assert_eq!(
        patched.status, 200,
        "Vapi's check with Twilio accepts the secondary: {}",
        patched.text
    );
    let updated = s
        .vapi(
            "PATCH",
            &format!("/credential/{credential}"),
            Some(json!({ "authToken": new })),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert!(updated.body.get("authToken").is_none(), "{}", updated.text);
    let state = s.state().await;
    assert_eq!(
        state["vapi_phone_numbers"][&number]["twilioToken"],
        "secondary"
    );
    assert_eq!(
        state["credentials"][&credential]["twilioToken"],
        "secondary"
    );

    // Promoted: the same tokens are now the primary.
    let promoted = s
        .accounts("POST", "/AuthTokens/Promote", (&sub, &old))
        .await;
    assert_eq!(promoted.status, 200, "{}", promoted.text);
    let state = s.state().await;
    assert_eq!(
        state["vapi_phone_numbers"][&number]["twilioToken"],
        "primary"
    );
    assert_eq!(state["credentials"][&credential]["twilioToken"], "primary");
    assert_eq!(state["deadTokenCalls"], json!([]), "none yet: {state}");

    // Calls with the retired token: a number PATCH (refused by Vapi's check with
    // Twilio), a credential update (accepted: not checked), an import (refused).
    let dead_patch = s
        .vapi(
            "PATCH",
            &format!("/phone-number/{number}"),
            Some(json!({ "twilioAuthToken": old })),
        )
        .await;
    assert_eq!(dead_patch.status, 400, "{}", dead_patch.text);
    let dead_update = s
        .vapi(
            "PATCH",
            &format!("/credential/{credential}"),
            Some(json!({ "authToken": old })),
        )
        .await;
    assert_eq!(dead_update.status, 200, "{}", dead_update.text);
    let bought = s
        .twilio(
            "POST",
            &format!("/Accounts/{sub}/IncomingPhoneNumbers.json"),
            MAIN,
            &[("PhoneNumber", "+14155550151")],
        )
        .await;
    assert_eq!(bought.status, 201, "{}", bought.text);
    let dead_import = s
        .vapi(
            "POST",
            "/phone-number",
            Some(json!({"provider": "twilio", "number": "+14155550151",
                        "twilioAccountSid": sub, "twilioAuthToken": old})),
        )
        .await;
    assert_eq!(dead_import.status, 400, "{}", dead_import.text);
    // Recorded even when a failure planned for the call answers instead.
    s.fail("credential", "500").await;
    let dead_create = s
        .vapi(
            "POST",
            "/credential",
            Some(json!({"provider": "twilio", "accountSid": sub, "authToken": old})),
        )
        .await;
    assert_eq!(dead_create.status, 500, "{}", dead_create.text);
    // Not recorded: the current token, no token, another account's unknown token.
    let fine = s
        .vapi(
            "PATCH",
            &format!("/phone-number/{number}"),
            Some(json!({ "name": "Front desk" })),
        )
        .await;
    assert_eq!(fine.status, 200, "{}", fine.text);
    let fine = s
        .vapi(
            "PATCH",
            &format!("/credential/{byoc}"),
            Some(json!({ "authToken": old })),
        )
        .await;
    assert_eq!(fine.status, 200, "{}", fine.text);

    let state = s.state().await;
    let dead = state["deadTokenCalls"].as_array().expect("a list");
    let seen: Vec<(String, String, String)> = dead
        .iter()
        .map(|d| {
            (
                text(&d["endpoint"]),
                text(&d["method"]),
                text(&d["accountSid"]),
            )
        })
        .collect();
    let want = |e: &str, m: &str| (e.to_owned(), m.to_owned(), sub.clone());
    assert_eq!(
        seen,
        [
            want("route", "PATCH"),
            want("credential", "PATCH"),
            want("import", "POST"),
            want("credential", "POST"),
        ],
        "{state}"
    );
    for d in dead {
        let at = text(&d["at"]);
        assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{at}");
        assert_eq!(d.as_object().map(|o| o.len()), Some(4), "{d}");
    }
    // The number kept its token (the PATCH was refused); the credential took the
    // dead one.
    assert_eq!(
        state["vapi_phone_numbers"][&number]["twilioToken"],
        "primary"
    );
    assert_eq!(state["credentials"][&credential]["twilioToken"], "retired");
    assert_eq!(state["credentials"][&byoc]["twilioToken"], "unknown");

    // The journal's snapshots carry the same: the last is what is held now.
    let journal = s.standins.journal_since(0);
    let (_, last) = journal.last().expect("snapshots");
    assert_eq!(last["credentials"][&credential]["twilioToken"], "retired");
    assert_eq!(
        last["vapi_phone_numbers"][&number]["twilioToken"],
        "primary"
    );
    assert_eq!(
        last["deadTokenCalls"].as_array().map(Vec::len),
        Some(4),
        "{last}"
    );
    let after_promotion = journal
        .iter()
        .find(|(_, h)| h["twilio_subaccounts"][&sub]["tokenRotations"] == 1)
        .map(|(_, h)| h)
        .expect("the promotion's snapshot");
    assert_eq!(
        after_promotion["credentials"][&credential]["twilioToken"],
        "primary"
    );
    assert_eq!(after_promotion["deadTokenCalls"], json!([]));

    // Never a token in the state, the journal or a credential's answers.
    let tokens = [old.as_str(), new.as_str()];
    assert_no_token(&state.to_string(), &tokens);
    for (_, h) in &journal {
        assert_no_token(&h.to_string(), &tokens);
    }
    let listed = s.vapi("GET", "/credential", None).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_no_token(&listed.text, &tokens);
    assert_no_token(&updated.text, &tokens);
    assert_no_token(&dead_update.text, &tokens);
}

#[tokio::test]
async fn a_rotation_by_hand_replaces_the_primary_at_once_and_drops_the_secondary() {
    let s = Stand::start().await;
    let (sub, old) = s.subaccount("org:console").await;
    let number = s.vapi_number(&sub, &old, "+14155550152").await;
    let created = s
        .accounts("POST", "/AuthTokens/Secondary", (&sub, &old))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let secondary = text(&created.body["secondary_auth_token"]);

    let rotated = s
        .control(
            "POST",
            &format!("/twilio/accounts/{sub}/rotate-token"),
            None,
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    assert_eq!(rotated.body, json!({"accountSid": sub, "rotated": true}));

    // The old primary and the secondary fail at once; the main account reads the
    // new primary, which works.
    assert_twilio_error(&s.read_as(&sub, &old).await, 401, 20003);
    assert_twilio_error(&s.read_as(&sub, &secondary).await, 401, 20003);
    let new = s.primary_read_by_main(&sub).await;
    assert!(is_token(&new), "{new}");
    assert!(new != old && new != secondary);
    assert_eq!(s.read_as(&sub, &new).await.status, 200);
    assert_no_token(&rotated.text, &[&old, &secondary, &new]);

    let state = s.state().await;
    assert_eq!(state["twilio_subaccounts"][&sub]["tokenRotations"], 1);
    assert_eq!(
        state["twilio_subaccounts"][&sub]["hasSecondaryToken"],
        false
    );
    // Vapi still holds the old primary: retired.
    assert_eq!(
        state["vapi_phone_numbers"][&number]["twilioToken"], "retired",
        "{state}"
    );
    // A route change that does not carry the token is no dead-token call (Vapi
    // does not check Twilio then).
    let routed = s
        .vapi(
            "PATCH",
            &format!("/phone-number/{number}"),
            Some(json!({ "name": "Sales" })),
        )
        .await;
    assert_eq!(routed.status, 200, "{}", routed.text);
    // The fix: the new primary patched on.
    let fixed = s
        .vapi(
            "PATCH",
            &format!("/phone-number/{number}"),
            Some(json!({ "twilioAuthToken": new })),
        )
        .await;
    assert_eq!(fixed.status, 200, "{}", fixed.text);
    let state = s.state().await;
    assert_eq!(
        state["vapi_phone_numbers"][&number]["twilioToken"],
        "primary"
    );
    assert_eq!(state["deadTokenCalls"], json!([]));
    assert_no_token(&state.to_string(), &[&old, &secondary, &new]);

    // Twice: counted again.
    let again = s
        .control(
            "POST",
            &format!("/twilio/accounts/{sub}/rotate-token"),
            None,
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(
        s.state().await["twilio_subaccounts"][&sub]["tokenRotations"],
        2
    );
    assert_twilio_error(&s.read_as(&sub, &new).await, 401, 20003);

    // Unknown SIDs and the main account: 404 with a message; a closed account 409.
    for sid in ["AC0123456789abcdef0123456789abcdef", LOCAL_TWILIO_MAIN_SID] {
        let unknown = s
            .control(
                "POST",
                &format!("/twilio/accounts/{sid}/rotate-token"),
                None,
            )
            .await;
        assert_eq!(unknown.status, 404, "{}", unknown.text);
        assert!(unknown.body["message"].is_string(), "{}", unknown.text);
    }
    let closed = s
        .control(
            "POST",
            &format!("/twilio/accounts/{sub}/status"),
            Some(json!({"status": "closed"})),
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.text);
    let refused = s
        .control(
            "POST",
            &format!("/twilio/accounts/{sub}/rotate-token"),
            None,
        )
        .await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert_eq!(
        s.state().await["twilio_subaccounts"][&sub]["tokenRotations"],
        2
    );
}
