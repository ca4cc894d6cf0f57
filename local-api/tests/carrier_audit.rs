//! The carrier audit (issue 22) against the local API: the stand-ins hold what
//! Twilio bills and Vapi routes, drift is seeded by hand through their
//! `/__control/…` endpoints (as if done in the Twilio console or the Vapi
//! dashboard), and `POST /__control/audit` runs the audit as the deployed function
//! does. Each kind is found, and repaired or flagged; a live claim and a fresh
//! purchase are left alone; a second run changes nothing.

use std::time::Duration;

use local_api::demo::{DEMO_ASSISTANT, DEMO_NUMBERS, DEMO_ORG, DEMO_SUBACCOUNT, OTHER_NUMBER};
use serde_json::{Value, json};

mod common;

const OTHER_ASSISTANT: &str = "0d3e0000-0000-4000-8000-0000000000bb";

use common::Local as Audit;

impl Audit {
    async fn post(&self, path: &str, body: Value) -> Value {
        self.post_control(path, body).await
    }

    async fn delete(&self, path: &str) {
        let resp = self
            .http
            .delete(self.control(path))
            .send()
            .await
            .expect("control call");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }

    /// Time passes beyond the grace period: for the stand-ins and the database.
    async fn time_passes(&self) {
        self.running
            .standins_state
            .age(Duration::from_secs(2 * 3600));
        self.db
            .client()
            .await
            .batch_execute(
                "UPDATE managed_phone_numbers
                    SET created_at = created_at - interval '2 hours',
                        updated_at = updated_at - interval '2 hours'",
            )
            .await
            .expect("age rows");
    }

    async fn audit(&self) -> Value {
        self.post("audit", json!({"force": true})).await
    }

    async fn reconcile(&self) -> Value {
        self.post("reconcile", json!({})).await
    }

    async fn state(&self) -> Value {
        self.http
            .get(self.control("state"))
            .send()
            .await
            .expect("state")
            .json()
            .await
            .expect("json")
    }

    /// Open findings: (kind, subject, repaired).
    async fn open_findings(&self) -> Vec<(String, String, bool)> {
        let rows = self
            .db
            .client()
            .await
            .query(
                "SELECT kind, subject, repaired_at IS NOT NULL FROM carrier_findings
                  WHERE closed_at IS NULL ORDER BY kind, subject",
                &[],
            )
            .await
            .expect("findings");
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    async fn status(&self) -> Value {
        self.status_with(&self.running.token, "").await
    }

    /// `POST /api/managed-telephony/numbers` as the demo org.
    async fn buy(&self, number: &str) -> (u16, Value) {
        let req = self
            .http
            .post(self.api("/api/managed-telephony/numbers"))
            .json(&json!({"phoneNumber": number, "assistantId": DEMO_ASSISTANT}));
        self.send(req, &self.running.token).await
    }

    async fn vapi_id_of(&self, number: &str) -> String {
        let row = self
            .db
            .client()
            .await
            .query_one(
                "SELECT vapi_phone_id FROM managed_phone_numbers
                  WHERE phone_number = $1 AND status <> 'released'",
                &[&number],
            )
            .await
            .expect("row");
        row.get(0)
    }
}

fn found(report: &Value, kind: &str) -> u64 {
    report["found"][kind].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn the_demo_as_seeded_has_no_drift() {
    let a = Audit::start().await;
    a.time_passes().await;
    let report = a.audit().await;
    assert_eq!(report["outcome"], "ran", "{report}");
    assert_eq!(report["passFinished"], true, "{report}");
    assert_eq!(report["found"], json!({}), "{report}");
    // The demo's two orgs' subaccounts and their four numbers.
    assert_eq!(report["subaccountsCovered"], 2, "{report}");
    assert_eq!(report["subaccountsLeft"], 0, "{report}");
    assert_eq!(report["twilioNumbers"], 4, "{report}");
    assert_eq!(a.open_findings().await, []);
}

#[tokio::test]
async fn every_kind_seeded_by_hand_is_found_and_repaired_or_flagged() {
    let a = Audit::start().await;
    let op = "7f000000-0000-4000-8000-000000000001";
    // billed_unknown, ours: bought by a purchase whose rows were lost afterwards
    // (a restore, a hand in the database): Twilio bills it, Vapi routes it.
    let (status, bought) = a.buy("+14155550151").await;
    assert_eq!(status, 201, "{bought}");
    a.db.client()
        .await
        .batch_execute(
            "DELETE FROM phone_number_mapping WHERE inbound_phone_number = '+14155550151';
             DELETE FROM managed_phone_numbers WHERE phone_number = '+14155550151';",
        )
        .await
        .expect("lose the rows");
    // A number named like a purchase of ours whose operation this database never
    // saw (another stack sharing the account, a name typed by hand): flagged only.
    a.post(
        "twilio/numbers",
        json!({"accountSid": DEMO_SUBACCOUNT, "phoneNumber": "+14155550163",
               "friendlyName": format!("purchase {op}")}),
    )
    .await;
    // billed_unknown, bought by hand in the console: flagged only.
    a.post(
        "twilio/numbers",
        json!({"accountSid": DEMO_SUBACCOUNT, "phoneNumber": "+14155550161",
               "friendlyName": "bought in the console"}),
    )
    .await;
    // vapi_orphan: imported by hand with our subaccount, no row.
    let orphan = a
        .post(
            "vapi/numbers",
            json!({"number": "+14155550162", "twilioAccountSid": DEMO_SUBACCOUNT}),
        )
        .await;
    let orphan_id = orphan["id"].as_str().expect("id").to_owned();
    // vapi_missing: a demo number deleted in the dashboard.
    let gone_id = a.vapi_id_of(DEMO_NUMBERS[0]).await;
    a.delete(&format!("vapi/numbers/{gone_id}")).await;
    // assistant_mismatch: another demo number routed elsewhere in the dashboard.
    let moved_id = a.vapi_id_of(DEMO_NUMBERS[1]).await;
    a.post(
        &format!("vapi/numbers/{moved_id}/assistant"),
        json!({"assistantId": OTHER_ASSISTANT}),
    )
    .await;
    // voice_url_mismatch: the third's voice URL changed in the console.
    a.post(
        "twilio/voice-url",
        json!({"phoneNumber": DEMO_NUMBERS[2], "voiceUrl": "https://example.com/voice"}),
    )
    .await;
    // subaccount_orphan: a subaccount named after an org that does not exist.
    a.post(
        "twilio/accounts",
        json!({"friendlyName": "org:0d3e0000-0000-4000-8000-00000000dead"}),
    )
    .await;
    // carrier_missing: the other org's number released at Twilio behind our back.
    let other_sid = {
        let row = a
            .db
            .client()
            .await
            .query_one(
                "SELECT twilio_subaccount_sid FROM managed_phone_numbers WHERE phone_number = $1",
                &[&OTHER_NUMBER],
            )
            .await
            .expect("row");
        row.get::<_, String>(0)
    };
    a.post(
        &format!("twilio/accounts/{other_sid}/status"),
        json!({"status": "closed"}),
    )
    .await;
    a.time_passes().await;

    let report = a.audit().await;
    assert_eq!(report["outcome"], "ran", "{report}");
    for kind in [
        "billed_unknown",
        "vapi_orphan",
        "vapi_missing",
        "assistant_mismatch",
        "voice_url_mismatch",
        "subaccount_orphan",
        "carrier_missing",
    ] {
        assert!(found(&report, kind) >= 1, "{kind} not found: {report}");
    }
    assert_eq!(found(&report, "billed_unknown"), 3, "{report}");
    // Repaired: our lost purchase (recorded for release), the orphan import
    // (deleted at Vapi), the assistant (a pending change).
    assert_eq!(report["repaired"]["billed_unknown"], 1, "{report}");
    assert_eq!(report["repaired"]["vapi_orphan"], 1, "{report}");
    assert_eq!(report["repaired"]["assistant_mismatch"], 1, "{report}");
    assert!(
        report["monthlyCostAtRisk"]["USD"].as_f64().unwrap_or(0.0) > 0.0,
        "{report}"
    );
    let state = a.state().await;
    assert!(
        !state.to_string().contains(&orphan_id),
        "the orphan import is still at Vapi: {state}"
    );
    let findings = a.open_findings().await;
    for flagged in ["+14155550161", "+14155550163"] {
        assert!(
            findings.contains(&("billed_unknown".into(), flagged.into(), false)),
            "{flagged}: {findings:?}"
        );
    }
    // What the org sees: the findings on its numbers, the assistant change pending.
    let status = a.status().await;
    let numbers = status["numbers"].as_array().expect("numbers");
    let by = |n: &str| {
        numbers
            .iter()
            .find(|x| x["phoneNumber"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        by(DEMO_NUMBERS[0])["findings"][0]["kind"],
        "vapi_missing",
        "{status}"
    );
    assert_eq!(by(DEMO_NUMBERS[1])["assistantPending"], true, "{status}");
    assert_eq!(
        by(DEMO_NUMBERS[2])["findings"][0]["kind"],
        "voice_url_mismatch",
        "{status}"
    );
    assert_eq!(by("+14155550151")["status"], "release_pending", "{status}");

    // Reconcile finishes the repairs: the lost purchase is released at Twilio, the
    // assistant goes back to the database's.
    a.db.client()
        .await
        .batch_execute("UPDATE managed_phone_numbers SET updated_at = now() - interval '2 hours'")
        .await
        .expect("time passes");
    let r = a.reconcile().await;
    assert!(r["released"].as_u64().unwrap_or(0) >= 1, "{r}");
    let state = a.state().await.to_string();
    assert!(!state.contains("+14155550151"), "still at Twilio: {state}");
    assert!(
        state.contains(DEMO_ASSISTANT),
        "the demo assistant is not routed again: {state}"
    );

    // A second audit: what was repaired is closed, what is flagged stays open
    // (seen in two passes), nothing new.
    a.time_passes().await;
    let again = a.audit().await;
    assert_eq!(again["newFindings"], 0, "{again}");
    assert_eq!(again["repaired"], json!({}), "{again}");
    let open = a.open_findings().await;
    for (kind, subject, _) in &open {
        assert!(
            [
                "billed_unknown",
                "vapi_missing",
                "voice_url_mismatch",
                "subaccount_orphan",
                "carrier_missing"
            ]
            .contains(&kind.as_str()),
            "{kind} {subject} still open: {open:?}"
        );
        assert_ne!(subject, "+14155550151", "{open:?}");
    }
    assert!(
        again["persisting"]["billed_unknown"].as_i64().unwrap_or(0) >= 1,
        "{again}"
    );
}

#[tokio::test]
async fn a_live_claim_and_a_fresh_purchase_are_left_alone() {
    let a = Audit::start().await;
    // A number bought just now by a purchase whose row is still being written.
    a.post(
        "twilio/numbers",
        json!({"accountSid": DEMO_SUBACCOUNT,
               "phoneNumber": "+14155550170",
               "friendlyName": "purchase 7f000000-0000-4000-8000-000000000002"}),
    )
    .await;
    a.time_passes().await;
    // …and the demo number routed elsewhere, while a request holds it.
    let held_id = a.vapi_id_of(DEMO_NUMBERS[1]).await;
    a.post(
        &format!("vapi/numbers/{held_id}/assistant"),
        json!({"assistantId": OTHER_ASSISTANT}),
    )
    .await;
    a.db.client()
        .await
        .execute(
            "UPDATE managed_phone_numbers
                SET claim_token = gen_random_uuid(), claimed_until = now() + interval '1 minute'
              WHERE phone_number = $1",
            &[&DEMO_NUMBERS[1]],
        )
        .await
        .expect("claim");
    // The fresh purchase: bought within the grace period.
    a.post(
        "twilio/numbers",
        json!({"accountSid": DEMO_SUBACCOUNT,
               "phoneNumber": "+14155550171",
               "friendlyName": "purchase 7f000000-0000-4000-8000-000000000003"}),
    )
    .await;
    let report = a.audit().await;
    assert_eq!(found(&report, "assistant_mismatch"), 0, "{report}");
    assert_eq!(
        found(&report, "billed_unknown"),
        1,
        "only the old one: {report}"
    );
    let rows = a
        .db
        .client()
        .await
        .query(
            "SELECT phone_number FROM managed_phone_numbers WHERE phone_number IN ('+14155550170', '+14155550171')",
            &[],
        )
        .await
        .expect("rows");
    let numbers: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    // The old one is flagged (its operation is not this database's), the fresh
    // one not even found: neither got a row.
    assert!(numbers.is_empty(), "{numbers:?}");
    let claimed = a
        .db
        .client()
        .await
        .query_one(
            "SELECT assistant_pending, assistant_id FROM managed_phone_numbers WHERE phone_number = $1",
            &[&DEMO_NUMBERS[1]],
        )
        .await
        .expect("row");
    assert!(!claimed.get::<_, bool>(0), "a claimed row was changed");
}

#[tokio::test]
async fn two_audits_at_once_are_one() {
    let a = Audit::start().await;
    a.time_passes().await;
    let (one, two) = tokio::join!(a.audit(), a.audit());
    let outcomes = [one["outcome"].clone(), two["outcome"].clone()];
    assert!(outcomes.contains(&json!("ran")), "{one} {two}");
    // The local API serializes nothing itself: the database lease decides.
    assert!(
        outcomes.contains(&json!("lease_held")) || one["pass"] != two["pass"],
        "{one} {two}"
    );
    // Not due: a scheduled wake-up right after a pass does nothing.
    let idle = a.post("audit", json!({"force": false})).await;
    assert_eq!(idle["outcome"], "nothing_due", "{idle}");
    let _ = DEMO_ORG;
}
