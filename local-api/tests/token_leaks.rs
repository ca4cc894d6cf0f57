//! The Twilio tokens the service handles reach no log line, no API response, no
//! error and no database column — even though Vapi's phone-number answers carry
//! the number's `twilioAuthToken` (its `TwilioPhoneNumber` schema has no "not
//! returned" note), as the stand-in's do. The whole life of managed numbers runs
//! through the local API with its logs captured: a purchase whose Vapi import
//! failed and is finished by repeating it (Vapi's list answered), a route with a
//! failed first try, status, releases, and an org's first purchase (a new
//! subaccount, whose token Twilio answers, saved as the org's managed credential).

use std::time::Duration;

use local_api::demo::{DEMO_ASSISTANT, DEMO_ORG, DEMO_SUBACCOUNT_TOKEN};
use local_api::server::Running;
use local_api::standins::{
    Endpoint, FailMode, LOCAL_TWILIO_MAIN_TOKEN, LOCAL_VAPI_KEY, subaccount_token,
};
use serde_json::{Value, json};
use testkit::TestDb;

mod common;

const NUMBERS: &str = "/api/managed-telephony/numbers";
const STATUS: &str = "/api/managed-telephony/status";
const OTHER_ASSISTANT: &str = "0d3e0000-0000-4000-8000-0000000000ab";
const NEW_ORG: &str = "0d3e0000-0000-4000-8000-0000000000f7";

struct Local {
    db: TestDb,
    running: Running,
    http: reqwest::Client,
    /// Every answer of the API, as text.
    answers: std::sync::Mutex<Vec<String>>,
}

impl Local {
    /// `(status, body)` of an API call as `org` with both scopes; the body is kept.
    async fn call(&self, org: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = self
            .running
            .gateway
            .authorizer
            .mint(
                org,
                "tester",
                &["telephony:read", "telephony:write"],
                Duration::from_secs(600),
            )
            .expect("token");
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                format!("http://{}{path}", self.running.api),
            )
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = format!("{:?}", resp.headers());
        let text = resp.text().await.expect("body");
        self.answers
            .lock()
            .expect("answers")
            .push(format!("{status} {headers} {text}"));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A Vapi answer straight from the stand-in (not the API's): the bait.
    async fn at_vapi(&self, path: &str) -> String {
        self.http
            .get(format!("http://{}/vapi{path}", self.running.standins))
            .bearer_auth(LOCAL_VAPI_KEY)
            .send()
            .await
            .expect("vapi")
            .text()
            .await
            .expect("body")
    }

    /// Every row of every table in the public schema, as JSON text.
    async fn every_row(&self) -> Vec<(String, String)> {
        let c = self.db.client().await;
        let tables: Vec<String> = c
            .query(
                "SELECT table_name::text FROM information_schema.tables
                  WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
                &[],
            )
            .await
            .expect("tables")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            tables.iter().any(|t| t == "managed_phone_numbers"),
            "{tables:?}"
        );
        let mut rows = Vec::new();
        for table in tables {
            let sql = format!(
                "SELECT row_to_json(t)::text FROM \"{}\" t",
                table.replace('"', "\"\"")
            );
            for row in c.query(&sql, &[]).await.expect("rows") {
                rows.push((table.clone(), row.get(0)));
            }
        }
        rows
    }
}

fn vapi_id(bought: &Value) -> String {
    bought["vapiPhoneId"]
        .as_str()
        .expect("vapiPhoneId")
        .to_owned()
}

#[tokio::test]
async fn twilio_tokens_reach_no_log_answer_error_or_column() {
    let (logs, _guard) = testkit::logs::capture();
    let db = TestDb::new().await;
    let running = common::start_local(&db).await;
    let l = Local {
        db,
        running,
        http: reqwest::Client::new(),
        answers: Default::default(),
    };
    let state = &l.running.standins_state;

    // The demo org: an import that fails, finished by repeating the purchase (Vapi's
    // list is read to find it first).
    let number = "+14155550153";
    let buy = json!({"phoneNumber": number, "assistantId": DEMO_ASSISTANT, "name": "Front desk"});
    state.fail_endpoint(Endpoint::Import, FailMode::ServerError, Some(1));
    let (status, first) = l.call(DEMO_ORG, "POST", NUMBERS, Some(buy.clone())).await;
    assert_eq!(status, 202, "{first}");
    // The 500 may have imported it: the claim holds until it expires.
    common::expire_purchase_claims(&l.db).await;
    let (status, bought) = l.call(DEMO_ORG, "POST", NUMBERS, Some(buy)).await;
    assert!(status == 200 || status == 201, "{status}: {bought}");
    let id = vapi_id(&bought);
    // The bait: Vapi's answers about the number carry the token.
    assert!(
        l.at_vapi(&format!("/phone-number/{id}"))
            .await
            .contains(DEMO_SUBACCOUNT_TOKEN),
        "the stand-in answers the token"
    );
    assert!(
        l.at_vapi("/phone-number")
            .await
            .contains(DEMO_SUBACCOUNT_TOKEN)
    );

    // Routed (its first PATCH fails and is retried), listed, released.
    let path = format!("{NUMBERS}/{}", number.replace('+', "%2B"));
    state.fail_endpoint(Endpoint::Route, FailMode::ServerError, Some(1));
    let (status, routed) = l
        .call(
            DEMO_ORG,
            "PATCH",
            &path,
            Some(json!({"assistantId": OTHER_ASSISTANT})),
        )
        .await;
    assert_eq!(status, 200, "{routed}");
    let (status, listed) = l.call(DEMO_ORG, "GET", STATUS, None).await;
    assert_eq!(status, 200, "{listed}");
    assert!(listed.to_string().contains(number), "{listed}");
    // A release whose Vapi delete fails first.
    state.fail_endpoint(Endpoint::Delete, FailMode::ServerError, Some(1));
    let (status, released) = l.call(DEMO_ORG, "DELETE", &path, None).await;
    assert_eq!(
        (status, released["status"].as_str()),
        (200, Some("released")),
        "{released}"
    );
    // A demo number, seeded at Vapi with its token, rerouted and released too.
    let demo = format!("{NUMBERS}/%2B14155550101");
    let (status, _) = l
        .call(
            DEMO_ORG,
            "PATCH",
            &demo,
            Some(json!({"assistantId": OTHER_ASSISTANT, "name": "Sales"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = l.call(DEMO_ORG, "DELETE", &demo, None).await;
    assert_eq!(status, 200);
    // Errors: a number the org does not hold, an unknown assistant.
    let (status, _) = l
        .call(
            DEMO_ORG,
            "PATCH",
            &format!("{NUMBERS}/%2B14155550199"),
            Some(json!({"assistantId": OTHER_ASSISTANT})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, refused) = l
        .call(
            DEMO_ORG,
            "POST",
            NUMBERS,
            Some(json!({"phoneNumber": "+14155550154",
                        "assistantId": "00000000-0000-4000-8000-0000000000aa"})),
        )
        .await;
    assert!((400..500).contains(&status), "{status}: {refused}");

    // A new org's first purchase: its subaccount (Twilio answers the token) and
    // managed credential (sent to Vapi) are made on the way.
    let (status, bought) = l
        .call(
            NEW_ORG,
            "POST",
            NUMBERS,
            Some(json!({"phoneNumber": "+14155550156", "assistantId": DEMO_ASSISTANT})),
        )
        .await;
    assert_eq!(status, 201, "{bought}");
    let name = format!("org:{NEW_ORG}");
    let subs = state.state()["twilio_subaccounts"].clone();
    let new_sub = subs
        .as_object()
        .expect("subaccounts")
        .iter()
        .find(|(_, a)| a["friendly_name"] == name.as_str())
        .map(|(sid, _)| sid.clone())
        .expect("the new org's subaccount");
    let new_token = subaccount_token(&new_sub);
    assert!(
        l.at_vapi(&format!("/phone-number/{}", vapi_id(&bought)))
            .await
            .contains(&new_token)
    );
    let path = format!("{NUMBERS}/%2B14155550156");
    let (status, _) = l
        .call(
            NEW_ORG,
            "PATCH",
            &path,
            Some(json!({"assistantId": OTHER_ASSISTANT})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = l.call(NEW_ORG, "GET", STATUS, None).await;
    assert_eq!(status, 200);
    let (status, _) = l.call(NEW_ORG, "DELETE", &path, None).await;
    assert_eq!(status, 200);
    let (status, _) = l
        .call(DEMO_ORG, "GET", &format!("{STATUS}?include=released"), None)
        .await;
    assert_eq!(status, 200);

    // Nowhere: not in a log line, an answer (or error), a column of any table.
    let secrets = [
        (
            "the demo subaccount's token",
            DEMO_SUBACCOUNT_TOKEN.to_owned(),
        ),
        ("the new subaccount's token", new_token),
        (
            "the main account's token",
            LOCAL_TWILIO_MAIN_TOKEN.to_owned(),
        ),
    ];
    let text = logs.text();
    let routes = [
        "buy-number",
        "update-number",
        "release-number",
        "list-numbers",
    ];
    assert!(
        routes
            .iter()
            .all(|r| text.contains(&format!("\"route\":\"{r}\""))),
        "every route's lines were captured: {text}"
    );
    let answers = l.answers.lock().expect("answers").clone();
    assert_eq!(answers.len(), 14, "every call kept");
    let rows = l.every_row().await;
    assert!(
        rows.iter()
            .any(|(t, r)| t == "managed_phone_numbers" && r.contains(number)),
        "the rows were read"
    );
    for (what, secret) in &secrets {
        for line in text.lines() {
            assert!(
                !line.contains(secret.as_str()),
                "{what} in a log line: {line}"
            );
        }
        for answer in &answers {
            assert!(
                !answer.contains(secret.as_str()),
                "{what} in an answer: {answer}"
            );
        }
        for (table, row) in &rows {
            assert!(!row.contains(secret.as_str()), "{what} in {table}: {row}");
        }
    }
    // Nor in the stand-ins' control state.
    let shown = state.state().to_string();
    for (what, secret) in &secrets {
        assert!(!shown.contains(secret.as_str()), "{what} in the state");
    }
}

/// A token rotation (a secondary token, PATCHed to Vapi, promoted, sealed) and a
/// token rotated in Twilio's console (noticed by the audit, brought to Vapi by
/// reconcile): none of these tokens reaches a log line, an answer or a column.
#[tokio::test]
async fn rotated_tokens_reach_no_log_answer_or_column() {
    let (logs, _guard) = testkit::logs::capture();
    let db = TestDb::new().await;
    let running = common::start_local(&db).await;
    let l = Local {
        db,
        running,
        http: reqwest::Client::new(),
        answers: Default::default(),
    };
    let state = &l.running.standins_state;
    const ROTATE: &str = "/api/telephony/credentials/twilio/rotate";
    // One number's PATCH refused: the job waits with the secondary at Vapi.
    state.fail_endpoint(
        Endpoint::Route,
        FailMode::Refuse(Default::default()),
        Some(1),
    );
    let (status, pending) = l.call(DEMO_ORG, "POST", ROTATE, None).await;
    assert_eq!(status, 202, "{pending}");
    let patched = pending["numbers"]["updated"][0]
        .as_str()
        .expect("a number")
        .to_owned();
    let vapi = state.state()["vapi_phone_numbers"].clone();
    let id = vapi
        .as_object()
        .expect("numbers")
        .iter()
        .find(|(_, n)| n["number"] == patched.as_str())
        .map(|(id, _)| id.clone())
        .expect("its Vapi id");
    // The bait: Vapi's answer carries the secondary token.
    let answer: Value =
        serde_json::from_str(&l.at_vapi(&format!("/phone-number/{id}")).await).expect("json");
    let secondary = answer["twilioAuthToken"]
        .as_str()
        .expect("a token")
        .to_owned();
    assert_ne!(secondary, DEMO_SUBACCOUNT_TOKEN);
    let (status, done) = l.call(DEMO_ORG, "POST", ROTATE, None).await;
    assert_eq!(
        (status, done["status"].as_str()),
        (200, Some("rotated")),
        "{done}"
    );

    // Rotated again in the console; the audit notices, reconcile brings it to Vapi.
    let console = format!(
        "http://{}/__control/twilio/accounts/{}/rotate-token",
        l.running.standins,
        local_api::demo::DEMO_SUBACCOUNT
    );
    l.http.post(console).send().await.expect("console rotation");
    let answer: Value = serde_json::from_str(
        &l.http
            .get(format!(
                "http://{}/twilio/2010-04-01/Accounts/{}.json",
                l.running.standins,
                local_api::demo::DEMO_SUBACCOUNT
            ))
            .basic_auth(
                local_api::standins::LOCAL_TWILIO_MAIN_SID,
                Some(LOCAL_TWILIO_MAIN_TOKEN),
            )
            .send()
            .await
            .expect("read back")
            .text()
            .await
            .expect("text"),
    )
    .expect("json");
    let console_token = answer["auth_token"].as_str().expect("token").to_owned();
    l.db.client()
        .await
        .batch_execute("UPDATE managed_phone_numbers SET updated_at = now() - interval '2 days'")
        .await
        .expect("age");
    for control in ["audit", "reconcile"] {
        let resp = l
            .http
            .post(format!("http://{}/__control/{control}", l.running.standins))
            .json(&json!({}))
            .send()
            .await
            .expect(control);
        assert!(resp.status().is_success(), "{control}");
    }
    let (status, listed) = l.call(DEMO_ORG, "GET", STATUS, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["tokenRotation"]["kind"], "adopt", "{listed}");
    assert_eq!(listed["tokenRotation"]["status"], "rotated", "{listed}");

    let text = logs.text();
    assert!(
        text.contains("\"route\":\"rotate-credential\""),
        "the rotation's lines were captured"
    );
    let answers = l.answers.lock().expect("answers").clone();
    let rows = l.every_row().await;
    assert!(
        rows.iter().any(|(t, _)| t == "token_rotations"),
        "the jobs were read"
    );
    for (what, secret) in [
        ("the secondary (then promoted) token", secondary),
        ("the token rotated in the console", console_token),
        (
            "the demo subaccount's first token",
            DEMO_SUBACCOUNT_TOKEN.to_owned(),
        ),
    ] {
        for line in text.lines() {
            assert!(
                !line.contains(secret.as_str()),
                "{what} in a log line: {line}"
            );
        }
        for answer in &answers {
            assert!(
                !answer.contains(secret.as_str()),
                "{what} in an answer: {answer}"
            );
        }
        for (table, row) in &rows {
            assert!(!row.contains(secret.as_str()), "{what} in {table}: {row}");
        }
        assert!(
            !state.state().to_string().contains(secret.as_str()),
            "{what} in the state"
        );
    }
}
