//! Reconcile inside the local API (issue 24, "Local parity"): on its schedule, a
//! pending release resolves without any call by hand, and `POST
//! /__control/reconcile` runs one pass on demand.

use std::time::{Duration, Instant};

use local_api::demo::DEMO_NUMBERS;
use local_api::standins::FailMode;
use serde_json::{Value, json};
use testkit::TestDb;

mod common;

async fn status_of(http: &reqwest::Client, api: &str, token: &str, number: &str) -> Value {
    let body: Value = http
        .get(format!(
            "http://{api}/api/managed-telephony/status?include=released"
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    body["numbers"]
        .as_array()
        .expect("numbers")
        .iter()
        .find(|n| n["phoneNumber"] == number)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Time passes: the release's backoff is over (reconcile takes only due rows).
async fn backoff_passes(db: &TestDb) {
    db.client()
        .await
        .execute(
            "UPDATE managed_phone_numbers SET next_attempt_at = now() - interval '1 second',
                    updated_at = now() - interval '1 minute'
              WHERE status = 'release_pending'",
            &[],
        )
        .await
        .expect("backoff");
}

#[tokio::test]
async fn a_pending_release_resolves_on_the_schedule_without_a_call_by_hand() {
    let db = TestDb::new().await;
    let running = common::start_local_with(&db, &[("LOCAL_RECONCILE_SECS", "1")]).await;
    let http = reqwest::Client::new();
    let number = DEMO_NUMBERS[1];
    running
        .standins_state
        .fail("twilio", FailMode::ServerError, None);
    let (status, body): (u16, Value) = {
        let resp = http
            .delete(format!(
                "http://{}/api/managed-telephony/numbers/{number}",
                running.api
            ))
            .bearer_auth(&running.token)
            .send()
            .await
            .expect("release");
        (resp.status().as_u16(), resp.json().await.expect("json"))
    };
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("release_pending"))
    );
    running.standins_state.fail("twilio", FailMode::None, None);
    backoff_passes(&db).await;
    let started = Instant::now();
    loop {
        let n = status_of(&http, &running.api.to_string(), &running.token, number).await;
        if n["status"] == "released" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still {n} after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        !running.standins_state.state()["twilio_numbers"]
            .to_string()
            .contains(number),
        "released at Twilio"
    );
}

#[tokio::test]
async fn post_control_reconcile_runs_one_pass_and_answers_its_report() {
    let db = TestDb::new().await;
    let running = common::start_local(&db).await;
    let http = reqwest::Client::new();
    let number = DEMO_NUMBERS[2];
    running
        .standins_state
        .fail("vapi", FailMode::ServerError, None);
    let resp = http
        .delete(format!(
            "http://{}/api/managed-telephony/numbers/{number}",
            running.api
        ))
        .bearer_auth(&running.token)
        .send()
        .await
        .expect("release");
    assert_eq!(resp.status(), 202);
    running.standins_state.fail("vapi", FailMode::None, None);
    backoff_passes(&db).await;
    let report: Value = http
        .post(format!("http://{}/__control/reconcile", running.standins))
        .send()
        .await
        .expect("reconcile")
        .json()
        .await
        .expect("report");
    assert_eq!(report["released"], json!(1), "{report}");
    assert_eq!(report["at_risk"]["pendingReleases"], json!(0), "{report}");
    let n = status_of(&http, &running.api.to_string(), &running.token, number).await;
    assert_eq!(n["status"], "released", "{n}");
}
