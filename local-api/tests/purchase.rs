//! Buying a managed number through the local API over HTTP, against the stateful
//! stand-ins: search → buy → listed → routed to another assistant → released, a
//! number taken by another buyer in between, a purchase whose Vapi import failed
//! finished by repeating the request, and an org's first purchase creating its
//! subaccount.

use std::time::Duration;

use local_api::demo::{DEMO_ASSISTANT, DEMO_ORG, DEMO_SUBACCOUNT};
use local_api::server::Running;
use serde_json::{Value, json};
use testkit::TestDb;
use tokio_postgres::types::Type;

mod common;

const SEARCH: &str = "/api/managed-telephony/available-numbers";
const NUMBERS: &str = "/api/managed-telephony/numbers";
const STATUS: &str = "/api/managed-telephony/status";
const OTHER_ASSISTANT: &str = "0d3e0000-0000-4000-8000-0000000000ab";

struct Local {
    db: TestDb,
    running: Running,
    http: reqwest::Client,
}

impl Local {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    async fn start_with(extra: &[(&str, &str)]) -> Self {
        let db = TestDb::new().await;
        let running = common::start_local_with(&db, extra).await;
        Self {
            db,
            running,
            http: reqwest::Client::new(),
        }
    }

    /// A token for `org` with the read and write scopes.
    fn token_for(&self, org: &str) -> String {
        self.running
            .gateway
            .authorizer
            .mint(
                org,
                "tester",
                &["telephony:read", "telephony:write"],
                Duration::from_secs(600),
            )
            .expect("token")
    }

    async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
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
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// As the demo org, with the printed token.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.running.token.clone(), method, path, body)
            .await
    }

    /// The stand-ins' control endpoint, over HTTP as the browser test uses it.
    async fn control(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("http://{}/__control/{path}", self.running.standins))
            .json(&body)
            .send()
            .await
            .expect("control");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn state(&self) -> Value {
        self.running.standins_state.state()
    }

    /// The org's managed number rows for `number` that are not released.
    async fn rows(&self, number: &str) -> Vec<(String, Option<String>)> {
        self.db
            .client()
            .await
            .query_typed(
                "SELECT status, twilio_subaccount_sid FROM managed_phone_numbers
                  WHERE phone_number = $1 AND status <> 'released'",
                &[(&number, Type::TEXT)],
            )
            .await
            .expect("query")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

/// Twilio's numbers (at the stand-in) with this phone number.
fn twilio_held(state: &Value, number: &str) -> Vec<Value> {
    state["twilio_numbers"]
        .as_object()
        .expect("twilio_numbers")
        .values()
        .filter(|n| n["phone_number"] == number)
        .cloned()
        .collect()
}

/// Vapi's numbers (at the stand-in) with this phone number.
fn vapi_held(state: &Value, number: &str) -> Vec<Value> {
    state["vapi_phone_numbers"]
        .as_object()
        .expect("vapi_phone_numbers")
        .values()
        .filter(|n| n["number"] == number)
        .cloned()
        .collect()
}

fn listed<'a>(status: &'a Value, number: &str) -> Option<&'a Value> {
    status["numbers"]
        .as_array()
        .expect("numbers")
        .iter()
        .find(|n| n["phoneNumber"] == number)
}

#[tokio::test]
async fn search_buy_route_and_release_one_number_end_to_end() {
    let l = Local::start().await;

    // Search: area code 415, only numbers that need no address, with the price.
    let (status, found) = l.call("GET", &format!("{SEARCH}?areaCode=415"), None).await;
    assert_eq!(status, 200, "{found}");
    let numbers: Vec<&str> = found["numbers"]
        .as_array()
        .expect("numbers")
        .iter()
        .filter_map(|n| n["phoneNumber"].as_str())
        .collect();
    let expected: Vec<String> = (150..=159).map(|n| format!("+1415555{n:04}")).collect();
    assert_eq!(
        numbers, expected,
        "the address-needing (…160, …161) and SMS-only (…162) numbers are not offered"
    );
    assert_eq!(found["pricesAvailable"], true, "{found}");
    for n in found["numbers"].as_array().expect("numbers") {
        assert_eq!(
            n["monthlyPrice"],
            json!({"amount": "1.15", "currency": "USD"})
        );
        assert_eq!(n["addressRequirements"], "none");
        assert_eq!(n["locality"], "San Francisco");
        assert_eq!(n["region"], "CA");
    }
    let (status, toll_free) = l
        .call("GET", &format!("{SEARCH}?type=toll_free"), None)
        .await;
    assert_eq!(status, 200, "{toll_free}");
    assert_eq!(toll_free["numbers"][0]["phoneNumber"], "+18335550100");
    assert_eq!(toll_free["numbers"][0]["monthlyPrice"]["amount"], "2.15");

    // Buy one, routed to an assistant.
    let number = "+14155550153";
    let (status, bought) = l
        .call(
            "POST",
            NUMBERS,
            Some(
                json!({"phoneNumber": number, "assistantId": DEMO_ASSISTANT, "name": "Front desk"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{bought}");
    assert_eq!(bought["status"], "active");
    assert_eq!(bought["phoneNumber"], number);
    assert_eq!(bought["assistantId"], DEMO_ASSISTANT);
    let pn = bought["twilioPhoneSid"].as_str().expect("twilioPhoneSid");
    let vapi_id = bought["vapiPhoneId"].as_str().expect("vapiPhoneId");

    // Bought on the org's subaccount, imported with that subaccount (Vapi's stand-in
    // refuses an import whose token the subaccount does not accept).
    let state = l.state();
    let at_twilio = twilio_held(&state, number);
    assert_eq!(at_twilio.len(), 1, "{state}");
    assert_eq!(at_twilio[0]["account_sid"], DEMO_SUBACCOUNT);
    assert_eq!(at_twilio[0]["sid"], pn);
    let at_vapi = &state["vapi_phone_numbers"][vapi_id];
    assert_eq!(at_vapi["number"], number, "{state}");
    assert_eq!(at_vapi["twilioAccountSid"], DEMO_SUBACCOUNT);
    assert_eq!(at_vapi["assistantId"], DEMO_ASSISTANT);
    assert_eq!(at_vapi["name"], "Front desk");
    assert_eq!(vapi_held(&state, number).len(), 1);
    assert_eq!(
        state["twilio_subaccounts"].as_object().map(|m| m.len()),
        Some(2),
        "no new subaccount: the demo org has one ({state})"
    );
    // No longer offered.
    let (_, again) = l.call("GET", &format!("{SEARCH}?areaCode=415"), None).await;
    assert!(!again.to_string().contains(number), "{again}");

    // Listed, with its assistant.
    let (_, status_body) = l.call("GET", STATUS, None).await;
    let entry = listed(&status_body, number).expect("listed");
    assert_eq!(entry["status"], "active");
    assert_eq!(entry["assistantId"], DEMO_ASSISTANT);

    // Routed to another assistant (`%2B` as a browser sends it).
    let path = format!("{NUMBERS}/{}", number.replace('+', "%2B"));
    let (status, routed) = l
        .call(
            "PATCH",
            &path,
            Some(json!({"assistantId": OTHER_ASSISTANT})),
        )
        .await;
    assert_eq!(status, 200, "{routed}");
    assert_eq!(routed["routed"], true);
    assert_eq!(
        l.state()["vapi_phone_numbers"][vapi_id]["assistantId"],
        OTHER_ASSISTANT
    );
    let (_, status_body) = l.call("GET", STATUS, None).await;
    assert_eq!(
        listed(&status_body, number).expect("listed")["assistantId"],
        OTHER_ASSISTANT
    );

    // Released: gone at both stand-ins.
    let (status, released) = l.call("DELETE", &path, None).await;
    assert_eq!(
        (status, released["status"].as_str()),
        (200, Some("released")),
        "{released}"
    );
    let state = l.state();
    assert!(twilio_held(&state, number).is_empty(), "{state}");
    assert!(vapi_held(&state, number).is_empty(), "{state}");
    assert!(l.rows(number).await.is_empty());
}

#[tokio::test]
async fn a_number_taken_in_between_is_409_and_leaves_nothing_behind() {
    let l = Local::start().await;
    let number = "+14155550154";
    let (status, found) = l.call("GET", &format!("{SEARCH}?areaCode=415"), None).await;
    assert_eq!(status, 200);
    assert!(found.to_string().contains(number));

    // Another buyer takes it after the search.
    let (status, taken) = l.control("take", json!({"phoneNumber": number})).await;
    assert_eq!(status, 200, "{taken}");
    let before = l.state();
    let (status, body) = l
        .call(
            "POST",
            NUMBERS,
            Some(json!({"phoneNumber": number, "assistantId": DEMO_ASSISTANT})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "number_unavailable");
    assert!(l.rows(number).await.is_empty(), "no row left");
    let (_, status_body) = l
        .call("GET", &format!("{STATUS}?include=released"), None)
        .await;
    assert!(listed(&status_body, number).is_none(), "{status_body}");
    let after = l.state();
    assert_eq!(after["twilio_numbers"], before["twilio_numbers"]);
    assert_eq!(after["vapi_phone_numbers"], before["vapi_phone_numbers"]);
    // A number Twilio never offered is refused the same way; one already taken
    // cannot be taken again.
    assert_eq!(
        l.control("take", json!({"phoneNumber": number})).await.0,
        404
    );
}

#[tokio::test]
async fn a_failed_import_is_pending_and_finished_by_repeating_the_purchase() {
    let l = Local::start().await;
    let number = "+14155550155";
    let (status, told) = l
        .control(
            "fail",
            json!({"endpoint": "import", "mode": "500", "times": 1}),
        )
        .await;
    assert_eq!(status, 200, "{told}");
    let request = json!({"phoneNumber": number, "assistantId": DEMO_ASSISTANT});

    let (status, first) = l.call("POST", NUMBERS, Some(request.clone())).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], "provisioning");
    assert_eq!(first["pending"], json!(["vapi"]), "{first}");
    let state = l.state();
    assert_eq!(twilio_held(&state, number).len(), 1, "bought: {state}");
    assert!(vapi_held(&state, number).is_empty(), "{state}");
    let (_, status_body) = l.call("GET", STATUS, None).await;
    assert_eq!(
        listed(&status_body, number).expect("listed")["status"],
        "provisioning"
    );

    // A 500 may have imported it (Vapi's list did not show it yet): while a late
    // copy may land, the claim holds and a repeat sends nothing.
    let (status, held) = l.call("POST", NUMBERS, Some(request.clone())).await;
    assert_eq!(
        (status, held["status"].as_str()),
        (202, Some("provisioning"))
    );
    assert!(vapi_held(&l.state(), number).is_empty());
    // Once the claim expired, the same request again finishes it: nothing bought
    // or imported twice.
    common::expire_purchase_claims(&l.db).await;
    let (status, second) = l.call("POST", NUMBERS, Some(request)).await;
    assert!(status == 201 || status == 200, "{status}: {second}");
    assert_eq!(second["status"], "active", "{second}");
    let state = l.state();
    assert_eq!(twilio_held(&state, number).len(), 1, "{state}");
    let imported = vapi_held(&state, number);
    assert_eq!(imported.len(), 1, "{state}");
    assert_eq!(imported[0]["id"], second["vapiPhoneId"]);
    assert_eq!(imported[0]["assistantId"], DEMO_ASSISTANT);
    assert_eq!(l.rows(number).await.len(), 1);
    let (_, status_body) = l.call("GET", STATUS, None).await;
    assert_eq!(
        listed(&status_body, number).expect("listed")["status"],
        "active"
    );
}

#[tokio::test]
async fn answers_lost_after_twilio_bought_and_vapi_imported_are_adopted() {
    // Each provider call gives up after 300 ms; the stand-ins' `lost` answers never come.
    let l = Local::start_with(&[("PROVIDER_TIMEOUT_MS", "300")]).await;
    for endpoint in ["buy", "import"] {
        let (status, told) = l
            .control(
                "fail",
                json!({"endpoint": endpoint, "mode": "lost", "times": 1}),
            )
            .await;
        assert_eq!(status, 200, "{told}");
    }
    let number = "+14155550158";
    let (status, body) = l
        .call(
            "POST",
            NUMBERS,
            Some(json!({"phoneNumber": number, "assistantId": DEMO_ASSISTANT})),
        )
        .await;
    // Bought and imported once each, found again by lookup and adopted.
    let finished = if status == 202 {
        let (again, body) = l
            .call(
                "POST",
                NUMBERS,
                Some(json!({"phoneNumber": number, "assistantId": DEMO_ASSISTANT})),
            )
            .await;
        assert!(again == 200 || again == 201, "{again}: {body}");
        body
    } else {
        assert_eq!(status, 201, "{body}");
        body
    };
    assert_eq!(finished["status"], "active", "{finished}");
    let state = l.state();
    let at_twilio = twilio_held(&state, number);
    assert_eq!(at_twilio.len(), 1, "{state}");
    assert_eq!(at_twilio[0]["sid"], finished["twilioPhoneSid"]);
    let at_vapi = vapi_held(&state, number);
    assert_eq!(at_vapi.len(), 1, "{state}");
    assert_eq!(at_vapi[0]["id"], finished["vapiPhoneId"]);
    assert_eq!(
        state["endpoint_fail"],
        json!({}),
        "both lost answers happened"
    );
}

#[tokio::test]
async fn an_orgs_first_purchase_creates_its_subaccount_once() {
    let l = Local::start().await;
    let org = "0d3e0000-0000-4000-8000-0000000000f1";
    let token = l.token_for(org);
    let buy = |number: &'static str| {
        l.call_as(
            &token,
            "POST",
            NUMBERS,
            Some(json!({"phoneNumber": number, "assistantId": DEMO_ASSISTANT})),
        )
    };
    let (status, body) = buy("+14155550156").await;
    assert_eq!(status, 201, "{body}");
    let state = l.state();
    let name = format!("org:{org}");
    let subs: Vec<&String> = state["twilio_subaccounts"]
        .as_object()
        .expect("subaccounts")
        .iter()
        .filter(|(_, a)| a["friendly_name"] == name.as_str())
        .map(|(sid, _)| sid)
        .collect();
    assert_eq!(subs.len(), 1, "{state}");
    let sub = subs[0].clone();
    assert_eq!(
        twilio_held(&state, "+14155550156")[0]["account_sid"],
        sub.as_str()
    );
    assert_eq!(
        vapi_held(&state, "+14155550156")[0]["twilioAccountSid"],
        sub.as_str()
    );
    // The org's slot holds its subaccount (managed), mirrored to Vapi.
    let (_, status_body) = l.call_as(&token, "GET", STATUS, None).await;
    assert_eq!(
        status_body["credential"]["accountSid"],
        sub.as_str(),
        "{status_body}"
    );
    assert_eq!(status_body["credential"]["source"], "managed");
    let credential = format!("org-{org}");
    assert!(
        state["credentials"].to_string().contains(&credential),
        "{state}"
    );

    // A second purchase uses the same subaccount.
    let (status, body) = buy("+14155550157").await;
    assert_eq!(status, 201, "{body}");
    let state = l.state();
    let count = state["twilio_subaccounts"]
        .as_object()
        .expect("subaccounts")
        .values()
        .filter(|a| a["friendly_name"] == name.as_str())
        .count();
    assert_eq!(count, 1, "{state}");
    assert_eq!(
        twilio_held(&state, "+14155550157")[0]["account_sid"],
        sub.as_str()
    );
    assert_eq!(
        l.rows("+14155550157").await,
        vec![("active".to_owned(), Some(sub))]
    );
    // The demo org cannot touch it.
    let path = format!("{NUMBERS}/%2B14155550157");
    let (status, body) = l
        .call(
            "PATCH",
            &path,
            Some(json!({"assistantId": OTHER_ASSISTANT})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let _ = DEMO_ORG;
}

#[tokio::test]
async fn demo_numbers_can_be_rerouted_and_released_end_to_end() {
    let l = Local::start().await;
    let number = local_api::demo::DEMO_NUMBERS[2];
    let path = format!("{NUMBERS}/{number}");
    let (_, status_body) = l.call("GET", STATUS, None).await;
    assert_eq!(
        listed(&status_body, number).expect("listed")["assistantId"],
        DEMO_ASSISTANT
    );
    let (status, routed) = l
        .call(
            "PATCH",
            &path,
            Some(json!({"assistantId": OTHER_ASSISTANT, "name": "Sales"})),
        )
        .await;
    assert_eq!(status, 200, "{routed}");
    let state = l.state();
    let at_vapi = vapi_held(&state, number);
    assert_eq!(at_vapi.len(), 1, "{state}");
    assert_eq!(at_vapi[0]["assistantId"], OTHER_ASSISTANT);
    assert_eq!(at_vapi[0]["name"], "Sales");
    assert_eq!(at_vapi[0]["twilioAccountSid"], DEMO_SUBACCOUNT);

    let (status, released) = l.call("DELETE", &path, None).await;
    assert_eq!(
        (status, released["status"].as_str()),
        (200, Some("released")),
        "{released}"
    );
    let state = l.state();
    assert!(twilio_held(&state, number).is_empty());
    assert!(vapi_held(&state, number).is_empty());
}

#[tokio::test]
async fn buying_and_routing_need_the_write_scope_and_cors_allows_them() {
    let l = Local::start().await;
    let read_only = l
        .running
        .gateway
        .authorizer
        .mint(
            DEMO_ORG,
            "reader",
            &["telephony:read"],
            Duration::from_secs(600),
        )
        .expect("token");
    let forbidden = (403, json!({"message": "Forbidden"}));
    let body = json!({"phoneNumber": "+14155550150", "assistantId": DEMO_ASSISTANT});
    assert_eq!(
        l.call_as(&read_only, "POST", NUMBERS, Some(body)).await,
        forbidden
    );
    let path = format!("{NUMBERS}/%2B14155550100");
    assert_eq!(
        l.call_as(
            &read_only,
            "PATCH",
            &path,
            Some(json!({"assistantId": OTHER_ASSISTANT}))
        )
        .await,
        forbidden
    );
    // Searching changes nothing: the read scope is enough.
    let (status, _) = l
        .call_as(&read_only, "GET", &format!("{SEARCH}?areaCode=415"), None)
        .await;
    assert_eq!(status, 200);
    assert!(l.rows("+14155550150").await.is_empty());

    let origin = format!("http://127.0.0.1:{}", l.running.web.port());
    for (method, path) in [("POST", NUMBERS.to_owned()), ("PATCH", path)] {
        let resp = l
            .http
            .request(
                reqwest::Method::OPTIONS,
                format!("http://{}{path}", l.running.api),
            )
            .header("origin", &origin)
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
            .await
            .expect("preflight");
        let allowed = resp
            .headers()
            .get("access-control-allow-methods")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(allowed.contains(method), "{method}: {allowed}");
        assert_eq!(
            resp.headers()
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some(origin.as_str())
        );
    }
}
