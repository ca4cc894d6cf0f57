//! Disconnecting a credential (issue 23) through the local API: a BYOC org's Vapi
//! credential is deleted and its slot cleared; a managed slot that still serves
//! numbers is refused; a Vapi failure changes nothing and a repeat finishes it.

use local_api::demo::{DEMO_NUMBERS, DEMO_ORG};
use local_api::standins::{FailMode, Refusal};
use serde_json::{Value, json};

mod common;

use common::Local as Api;

impl Api {
    /// A token for `org` with the read and write scopes.
    fn token(&self, org: &str) -> String {
        self.token_for(org, &["telephony:read", "telephony:write"])
    }

    fn url(&self, path: &str) -> String {
        self.api(path)
    }

    async fn disconnect(&self, token: &str) -> (u16, Value) {
        self.send(
            self.http
                .delete(self.url("/api/telephony/credentials/twilio")),
            token,
        )
        .await
    }

    async fn save_byoc(&self, token: &str) -> (u16, Value) {
        self.send(
            self.http
                .put(self.url("/api/telephony/credentials/twilio"))
                .json(&json!({
                    "accountSid": "AC0123456789abcdef0123456789abcdef",
                    "authToken": "5f4dcc3b5aa765d61d8327deb882cf99",
                    "phoneNumber": "+14155550123",
                })),
            token,
        )
        .await
    }

    async fn status(&self, token: &str) -> Value {
        self.status_with(token, "").await
    }

    fn vapi_credentials(&self) -> String {
        self.running.standins_state.state()["credentials"].to_string()
    }
}

#[tokio::test]
async fn a_byoc_credential_is_disconnected_at_vapi_and_in_its_slot() {
    let a = Api::start().await;
    let org = uuid::Uuid::new_v4().to_string();
    let token = a.token(&org);
    let (status, saved) = a.save_byoc(&token).await;
    assert_eq!(status, 200, "{saved}");
    assert!(a.vapi_credentials().contains(&format!("org-{org}")));

    let (status, body) = a.disconnect(&token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "disconnected", "source": "byoc", "vapiCredentialDeleted": true})
    );
    assert!(
        !a.vapi_credentials().contains(&format!("org-{org}")),
        "the Vapi credential is still there"
    );
    assert_eq!(a.status(&token).await["credential"], Value::Null);
    // A repeat: nothing to do, the same answer without a source.
    let (status, again) = a.disconnect(&token).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["source"], Value::Null);
    // The org may save again afterwards.
    assert_eq!(a.save_byoc(&token).await.0, 200);
}

#[tokio::test]
async fn a_managed_slot_serving_numbers_is_refused_until_they_are_released() {
    let a = Api::start().await;
    let before = a.db.dump().await;
    let (status, body) = a.disconnect(&a.running.token).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "managed_numbers_remain", "{body}");
    assert_eq!(a.db.dump().await, before, "a refusal changed the database");
    for n in DEMO_NUMBERS {
        let (status, body) = a
            .send(
                a.http.delete(a.url(&format!(
                    "/api/managed-telephony/numbers/{}",
                    n.replace('+', "%2B")
                ))),
                &a.running.token,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = a.disconnect(&a.running.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "managed");
    assert!(!a.vapi_credentials().contains(&format!("org-{DEMO_ORG}")));
}

#[tokio::test]
async fn a_vapi_refusal_changes_nothing_and_a_repeat_finishes_it() {
    let a = Api::start().await;
    let org = uuid::Uuid::new_v4().to_string();
    let token = a.token(&org);
    assert_eq!(a.save_byoc(&token).await.0, 200);
    let before = a.db.dump().await;
    a.running.standins_state.fail(
        "vapi",
        FailMode::Refuse(Refusal {
            status: Some(403),
            code: None,
            message: None,
        }),
        None,
    );
    let (status, body) = a.disconnect(&token).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        a.db.dump().await,
        before,
        "a refused disconnect changed the database"
    );
    a.running.standins_state.fail("vapi", FailMode::None, None);
    let (status, body) = a.disconnect(&token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["vapiCredentialDeleted"], true);
}

#[tokio::test]
async fn a_delete_vapi_may_still_act_on_keeps_the_lease_until_it_expires() {
    let a = Api::start().await;
    let org = uuid::Uuid::new_v4().to_string();
    let token = a.token(&org);
    assert_eq!(a.save_byoc(&token).await.0, 200);
    a.running
        .standins_state
        .fail("vapi", FailMode::ServerError, None);
    let (status, body) = a.disconnect(&token).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "vapi_unavailable", "{body}");
    assert!(
        a.status(&token).await["credential"].is_object(),
        "the slot is kept"
    );
    a.running.standins_state.fail("vapi", FailMode::None, None);
    // A save meanwhile would sync a credential that a late DELETE may remove: the
    // lease is kept, so a repeat (or a save) waits.
    let (status, body) = a.disconnect(&token).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("save_in_progress")),
        "{body}"
    );
    // The lease expires (CLAIM_SECS later): the repeat finishes it.
    a.db.client()
        .await
        .execute(
            "UPDATE organizations SET sync_lease_until = now() - interval '1 second'
              WHERE id = $1::text::uuid",
            &[&org],
        )
        .await
        .expect("lease expires");
    let (status, body) = a.disconnect(&token).await;
    assert_eq!(status, 200, "{body}");
    assert!(!a.vapi_credentials().contains(&format!("org-{org}")));
}
