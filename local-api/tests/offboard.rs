//! Offboarding (issue 23) through the local API: the demo org, with its three
//! numbers, its Vapi credential and its subaccount, is ended so that nothing bills
//! after it; a provider failing on the way leaves the job pending and reconcile
//! finishes it; purchases and saves are refused from the first request on; a
//! wrong confirmation or a token without the offboard scope changes nothing.

use std::time::Duration;

use local_api::demo::{DEMO_NUMBERS, DEMO_ORG, DEMO_SUBACCOUNT, OTHER_NUMBER, OTHER_ORG};
use local_api::standins::FailMode;
use serde_json::{Value, json};

mod common;

use common::Local as Org;

impl Org {
    /// As the demo org (the local API's token).
    async fn as_demo(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        self.send(req, &self.running.token).await
    }

    async fn offboard(&self, confirm: &str) -> (u16, Value) {
        self.as_demo(
            self.http
                .post(self.api("/api/managed-telephony/offboard"))
                .json(&json!({ "confirm": confirm })),
        )
        .await
    }

    async fn status(&self) -> Value {
        self.status_with(&self.running.token, "?include=released")
            .await
    }

    async fn reconcile(&self) -> Value {
        self.post_control("reconcile", json!({})).await
    }

    /// Backoff passes for every unfinished job and release.
    async fn backoff_passes(&self) {
        self.db
            .client()
            .await
            .batch_execute(
                "UPDATE organizations SET offboard_next_attempt_at = now() - interval '1 second'
                  WHERE offboard_next_attempt_at IS NOT NULL;
                 UPDATE managed_phone_numbers SET next_attempt_at = now() - interval '1 second',
                        updated_at = now() - interval '1 minute'
                  WHERE status = 'release_pending'",
            )
            .await
            .expect("backoff");
    }

    fn state(&self) -> Value {
        self.running.standins_state.state()
    }
}

/// What the stand-ins hold for the demo org after it was offboarded: nothing.
fn assert_nothing_held_for_the_demo_org(state: &Value) {
    let text = state.to_string();
    for n in DEMO_NUMBERS {
        assert!(!text.contains(n), "{n} is still held somewhere: {state}");
    }
    assert_eq!(
        state["twilio_subaccounts"][DEMO_SUBACCOUNT]["status"], "closed",
        "{state}"
    );
    let credentials = state["credentials"].to_string();
    assert!(
        !credentials.contains(&format!("org-{DEMO_ORG}")),
        "the org's Vapi credential is still there: {credentials}"
    );
}

#[tokio::test]
async fn an_org_with_three_numbers_is_offboarded_and_nothing_bills_after() {
    let o = Org::start().await;
    let (status, body) = o.offboard(DEMO_ORG).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "offboarded", "{body}");
    assert_eq!(
        body["done"],
        json!(["numbers", "credential", "subaccount", "slot"])
    );
    assert_nothing_held_for_the_demo_org(&o.state());
    // The other org keeps its number.
    assert!(o.state().to_string().contains(OTHER_NUMBER));

    let status = o.status().await;
    assert_eq!(status["offboarding"]["status"], "offboarded", "{status}");
    assert_eq!(status["credential"], Value::Null, "the slot is cleared");
    for n in status["numbers"].as_array().expect("numbers") {
        assert_eq!(n["status"], "released", "{n}");
    }
    let routes: i64 =
        o.db.client()
            .await
            .query_one(
                "SELECT count(*) FROM phone_number_mapping WHERE org_id = $1::text::uuid",
                &[&DEMO_ORG],
            )
            .await
            .expect("routes")
            .get(0);
    assert_eq!(routes, 0, "routing rows left");

    // Nothing new: a purchase and a save are refused; a repeat answers 200.
    let (status, body) = o
        .as_demo(
            o.http
                .post(o.api("/api/managed-telephony/numbers"))
                .json(&json!({"phoneNumber": "+14155550150"})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("org_offboarding")),
        "{body}"
    );
    let (status, body) = o
        .as_demo(
            o.http
                .put(o.api("/api/telephony/credentials/twilio"))
                .json(&json!({
                    "accountSid": "AC0000000000000000000000000000b10c",
                    "authToken": "0123456789abcdef0123456789abcdef",
                    "phoneNumber": "+14155550199",
                })),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("org_offboarding")),
        "{body}"
    );
    let (status, again) = o.offboard(DEMO_ORG).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["attempts"], body_attempts(&o).await);
}

async fn body_attempts(o: &Org) -> Value {
    o.status().await["offboarding"]["attempts"].clone()
}

#[tokio::test]
async fn a_twilio_outage_leaves_it_pending_and_reconcile_finishes_it() {
    let o = Org::start().await;
    o.running
        .standins_state
        .fail("twilio", FailMode::ServerError, None);
    let (status, body) = o.offboard(DEMO_ORG).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "offboarding");
    assert!(
        body["pending"]
            .as_array()
            .expect("pending")
            .contains(&json!("numbers")),
        "{body}"
    );
    assert_eq!(
        body["errors"]["subaccount"], "waiting_for_numbers",
        "{body}"
    );
    // The subaccount is not closed before its numbers went through the release.
    let state = o.state();
    assert_eq!(
        state["twilio_subaccounts"][DEMO_SUBACCOUNT]["status"], "active",
        "{state}"
    );
    // Purchases are refused already.
    let (status, refused) = o
        .as_demo(
            o.http
                .post(o.api("/api/managed-telephony/numbers"))
                .json(&json!({"phoneNumber": "+14155550150"})),
        )
        .await;
    assert_eq!(status, 409, "{refused}");

    o.running
        .standins_state
        .fail("twilio", FailMode::None, None);
    for _ in 0..4 {
        o.backoff_passes().await;
        let report = o.reconcile().await;
        if o.status().await["offboarding"]["status"] == "offboarded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = report;
    }
    let status = o.status().await;
    assert_eq!(status["offboarding"]["status"], "offboarded", "{status}");
    assert_nothing_held_for_the_demo_org(&o.state());
}

#[tokio::test]
async fn a_wrong_confirmation_or_a_token_without_the_scope_changes_nothing() {
    let o = Org::start().await;
    let before = (o.db.dump().await, o.state());
    for confirm in [OTHER_ORG, "yes", ""] {
        let (status, body) = o.offboard(confirm).await;
        assert_eq!(status, 422, "{confirm}: {body}");
        assert_eq!(body["error"]["code"], "confirmation_mismatch", "{body}");
    }
    let (status, body) = o
        .as_demo(
            o.http
                .post(o.api("/api/managed-telephony/offboard"))
                .json(&json!({"confirm": DEMO_ORG, "force": true})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_body")),
        "{body}"
    );
    // A token with read and write but not the offboard scope: the gateway's 403.
    let token = o.token_for(DEMO_ORG, &["telephony:read", "telephony:write"]);
    let resp = o
        .http
        .post(o.api("/api/managed-telephony/offboard"))
        .bearer_auth(token)
        .json(&json!({"confirm": DEMO_ORG}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
    assert_eq!((o.db.dump().await, o.state()), before, "something changed");
}

/// An org carried over by V2 (no Vapi id recorded, a create "attempted" in 2000)
/// with more than ten pages of newer credentials at Vapi: the first attempt's
/// lookup stops at its page bound and keeps where it stopped; the repeat resumes
/// below it, finds the org's credential and deletes it.
#[tokio::test]
async fn a_carried_over_orgs_credential_lookup_resumes_where_it_stopped() {
    let o = Org::start().await;
    let base = format!("http://{}/vapi/credential", o.running.standins);
    let sid = local_api::demo::DEMO_SUBACCOUNT;
    let token = local_api::demo::DEMO_SUBACCOUNT_TOKEN;
    use futures::StreamExt;
    let created: Vec<bool> = futures::stream::iter(0..10_100)
        .map(|i| {
            o.http
                .post(&base)
                .bearer_auth(local_api::standins::LOCAL_VAPI_KEY)
                .json(&json!({"provider": "twilio", "name": format!("other-{i}"),
                              "accountSid": sid, "authToken": token}))
                .send()
        })
        .buffer_unordered(16)
        .map(|resp| resp.is_ok_and(|r| r.status().is_success()))
        .collect()
        .await;
    assert!(created.iter().all(|ok| *ok), "every credential created");
    o.db.client()
        .await
        .execute(
            "UPDATE organizations SET vapi_credential_id = NULL,
                    vapi_create_attempted_at = '2000-01-01T00:00:00Z'
              WHERE id = $1::text::uuid",
            &[&DEMO_ORG],
        )
        .await
        .expect("carried over");
    let (status, first) = o.offboard(DEMO_ORG).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(
        first["errors"]["credential"], "vapi_lookup_unfinished",
        "{first}"
    );
    let (status, done) = o.offboard(DEMO_ORG).await;
    assert_eq!(status, 200, "{done}");
    assert!(
        !o.running.standins_state.state()["credentials"]
            .to_string()
            .contains(&format!("org-{DEMO_ORG}")),
        "the org's credential is still at Vapi"
    );
}
