//! The Twilio and Vapi stand-ins' provisioning endpoints on their own, over HTTP:
//! auth, body checks and the providers' error JSON, state, and failure injection per
//! endpoint.

use local_api::demo::{DEMO_SUBACCOUNT, DEMO_SUBACCOUNT_TOKEN};
use local_api::server::Running;
use local_api::standins::{LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN, LOCAL_VAPI_KEY};
use serde_json::{Value, json};
use testkit::TestDb;

mod common;

const MAIN: (&str, &str) = (LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN);

struct Standins {
    _db: TestDb,
    running: Running,
    http: reqwest::Client,
}

impl Standins {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let running = common::start_local(&db).await;
        Self {
            _db: db,
            running,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.standins)
    }

    /// A Twilio call with Basic auth; `form` as the body of a POST.
    async fn twilio(
        &self,
        method: &str,
        path: &str,
        auth: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.http.request(
            method.parse().expect("method"),
            self.url(&format!("/twilio/2010-04-01{path}")),
        );
        if let Some((user, pass)) = auth {
            req = req.basic_auth(user, Some(pass));
        }
        if !form.is_empty() {
            req = req.form(form);
        }
        let resp = req.send().await.expect("twilio");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn vapi(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                self.url(&format!("/vapi{path}")),
            )
            .bearer_auth(LOCAL_VAPI_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("vapi");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn fail(&self, body: Value) -> u16 {
        self.http
            .post(self.url("/__control/fail"))
            .json(&body)
            .send()
            .await
            .expect("control")
            .status()
            .as_u16()
    }
}

/// Twilio's error JSON with this status and code.
fn twilio_refusal(got: &(u16, Value), status: u16, code: u32) {
    let (s, body) = got;
    assert_eq!(*s, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["message"].is_string() && body["more_info"].is_string(),
        "{body}"
    );
}

fn search_path(query: &str) -> String {
    format!("/Accounts/{LOCAL_TWILIO_MAIN_SID}/AvailablePhoneNumbers/US/Local.json?{query}")
}

fn found(body: &Value) -> Vec<String> {
    body["available_phone_numbers"]
        .as_array()
        .expect("available_phone_numbers")
        .iter()
        .filter_map(|n| n["phone_number"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn twilio_search_filters_the_inventory_as_twilio_does() {
    let s = Standins::start().await;
    let (status, all) = s
        .twilio("GET", &search_path("AreaCode=415"), Some(MAIN), &[])
        .await;
    assert_eq!(status, 200, "{all}");
    let numbers = found(&all);
    assert_eq!(numbers.len(), 13, "{all}");
    let first = &all["available_phone_numbers"][0];
    assert_eq!(first["phone_number"], "+14155550150");
    assert_eq!(first["friendly_name"], "(415) 555-0150");
    assert_eq!(first["locality"], "San Francisco");
    assert_eq!(first["region"], "CA");
    assert_eq!(first["iso_country"], "US");
    assert_eq!(first["postal_code"], "94103");
    assert_eq!(first["address_requirements"], "none");
    assert_eq!(
        first["capabilities"],
        json!({"voice": true, "SMS": true, "MMS": true, "fax": false})
    );

    let (_, filtered) = s
        .twilio(
            "GET",
            &search_path(
                "AreaCode=415&VoiceEnabled=true&ExcludeAllAddressRequired=true&PageSize=50",
            ),
            Some(MAIN),
            &[],
        )
        .await;
    let expected: Vec<String> = (150..=159).map(|n| format!("+1415555{n:04}")).collect();
    assert_eq!(found(&filtered), expected);
    let (_, page) = s
        .twilio(
            "GET",
            &search_path("AreaCode=415&PageSize=2"),
            Some(MAIN),
            &[],
        )
        .await;
    assert_eq!(found(&page).len(), 2);
    let (_, pattern) = s
        .twilio("GET", &search_path("Contains=5550*52"), Some(MAIN), &[])
        .await;
    assert_eq!(found(&pattern), ["+14155550152"]);
    let (_, other_area) = s
        .twilio("GET", &search_path("AreaCode=212"), Some(MAIN), &[])
        .await;
    assert!(found(&other_area).is_empty());
    let (_, toll_free) = s
        .twilio(
            "GET",
            &format!("/Accounts/{LOCAL_TWILIO_MAIN_SID}/AvailablePhoneNumbers/US/TollFree.json"),
            Some(MAIN),
            &[],
        )
        .await;
    assert_eq!(found(&toll_free).len(), 5);

    twilio_refusal(
        &s.twilio("GET", &search_path("AreaCode=41"), Some(MAIN), &[])
            .await,
        400,
        21451,
    );
    twilio_refusal(
        &s.twilio("GET", &search_path("AreaCode=415"), None, &[])
            .await,
        401,
        20003,
    );
    twilio_refusal(
        &s.twilio(
            "GET",
            &search_path("AreaCode=415"),
            Some((LOCAL_TWILIO_MAIN_SID, DEMO_SUBACCOUNT_TOKEN)),
            &[],
        )
        .await,
        401,
        20003,
    );
    // A subaccount may not search as the main account.
    twilio_refusal(
        &s.twilio(
            "GET",
            &search_path("AreaCode=415"),
            Some((DEMO_SUBACCOUNT, DEMO_SUBACCOUNT_TOKEN)),
            &[],
        )
        .await,
        404,
        20404,
    );
    twilio_refusal(
        &s.twilio(
            "GET",
            &format!("/Accounts/{LOCAL_TWILIO_MAIN_SID}/AvailablePhoneNumbers/US/Pager.json"),
            Some(MAIN),
            &[],
        )
        .await,
        404,
        20404,
    );
    // A country Twilio does not know is its 404; one it knows with nothing to offer
    // here is an empty list.
    twilio_refusal(
        &s.twilio(
            "GET",
            &format!("/Accounts/{LOCAL_TWILIO_MAIN_SID}/AvailablePhoneNumbers/XX/Local.json"),
            Some(MAIN),
            &[],
        )
        .await,
        404,
        20404,
    );
    let (status, body) = s
        .twilio(
            "GET",
            &format!("/Accounts/{LOCAL_TWILIO_MAIN_SID}/AvailablePhoneNumbers/GB/Local.json"),
            Some(MAIN),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["available_phone_numbers"], json!([]));
}

#[tokio::test]
async fn twilio_subaccounts_purchases_and_prices() {
    let s = Standins::start().await;
    // Create, find by name, read back its token as the main account.
    let (status, created) = s
        .twilio(
            "POST",
            "/Accounts.json",
            Some(MAIN),
            &[("FriendlyName", "org:test")],
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let sid = created["sid"].as_str().expect("sid").to_owned();
    let token = created["auth_token"]
        .as_str()
        .expect("auth_token")
        .to_owned();
    assert!(sid.starts_with("AC") && sid.len() == 34, "{sid}");
    assert_eq!(token.len(), 32);
    assert_eq!(created["status"], "active");
    let (status, page) = s
        .twilio(
            "GET",
            "/Accounts.json?FriendlyName=org%3Atest&Status=active",
            Some(MAIN),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["accounts"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["accounts"][0]["sid"], sid.as_str());
    let (status, read) = s
        .twilio("GET", &format!("/Accounts/{sid}.json"), Some(MAIN), &[])
        .await;
    assert_eq!(
        (status, read["auth_token"].as_str()),
        (200, Some(token.as_str()))
    );
    // With its own credentials: itself; with a wrong token: 401.
    let (status, _) = s
        .twilio(
            "GET",
            &format!("/Accounts/{sid}.json"),
            Some((&sid, &token)),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    twilio_refusal(
        &s.twilio(
            "GET",
            &format!("/Accounts/{sid}.json"),
            Some((&sid, DEMO_SUBACCOUNT_TOKEN)),
            &[],
        )
        .await,
        401,
        20003,
    );
    // Only the main account creates subaccounts; names are at most 64 characters.
    twilio_refusal(
        &s.twilio(
            "POST",
            "/Accounts.json",
            Some((&sid, &token)),
            &[("FriendlyName", "x")],
        )
        .await,
        401,
        20003,
    );
    let long = "x".repeat(65);
    let (status, _) = s
        .twilio(
            "POST",
            "/Accounts.json",
            Some(MAIN),
            &[("FriendlyName", &long)],
        )
        .await;
    assert_eq!(status, 400);

    // Buy on the subaccount as the main account.
    let buy_path = format!("/Accounts/{sid}/IncomingPhoneNumbers.json");
    let (standins, path) = (&s, &buy_path);
    let buy = |number: &'static str| async move {
        standins
            .twilio(
                "POST",
                path,
                Some(MAIN),
                &[("PhoneNumber", number), ("FriendlyName", "purchase test")],
            )
            .await
    };
    let (status, bought) = buy("+14155550150").await;
    assert_eq!(status, 201, "{bought}");
    let pn = bought["sid"].as_str().expect("sid").to_owned();
    assert!(pn.starts_with("PN") && pn.len() == 34, "{pn}");
    assert_eq!(bought["account_sid"], sid.as_str());
    assert_eq!(bought["status"], "in-use");
    assert_eq!(bought["friendly_name"], "purchase test");
    twilio_refusal(&buy("+14155550150").await, 400, 21422);
    twilio_refusal(&buy("+14155550199").await, 400, 21422);
    twilio_refusal(&buy("4155550151").await, 400, 21421);
    twilio_refusal(&buy("+14155550160").await, 400, 21631);
    // Another account's subaccount is not the demo org's to buy on.
    twilio_refusal(
        &s.twilio(
            "POST",
            &buy_path,
            Some((DEMO_SUBACCOUNT, DEMO_SUBACCOUNT_TOKEN)),
            &[("PhoneNumber", "+14155550151")],
        )
        .await,
        404,
        20404,
    );
    let (_, search) = s
        .twilio("GET", &search_path("AreaCode=415"), Some(MAIN), &[])
        .await;
    assert!(!found(&search).contains(&"+14155550150".to_owned()));

    // Found by number; released; then 404 (20404).
    let (status, list) = s
        .twilio(
            "GET",
            &format!("{buy_path}?PhoneNumber=%2B14155550150"),
            Some(MAIN),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        list["incoming_phone_numbers"][0]["sid"],
        pn.as_str(),
        "{list}"
    );
    let (_, none) = s
        .twilio(
            "GET",
            &format!("{buy_path}?PhoneNumber=%2B14155550151"),
            Some(MAIN),
            &[],
        )
        .await;
    assert_eq!(none["incoming_phone_numbers"], json!([]));
    let one = format!("/Accounts/{sid}/IncomingPhoneNumbers/{pn}.json");
    assert_eq!(s.twilio("DELETE", &one, Some(MAIN), &[]).await.0, 204);
    twilio_refusal(&s.twilio("DELETE", &one, Some(MAIN), &[]).await, 404, 20404);

    // Prices, as the main account.
    let prices = |auth| {
        let req = s
            .http
            .get(s.url("/twilio-pricing/v1/PhoneNumbers/Countries/US"));
        let req = match auth {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        };
        req.send()
    };
    let resp = prices(Some(MAIN)).await.expect("pricing");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["iso_country"], "US");
    assert_eq!(body["price_unit"], "USD");
    assert_eq!(
        body["phone_number_prices"],
        json!([
            {"number_type": "local", "base_price": "1.15", "current_price": "1.15"},
            {"number_type": "toll free", "base_price": "2.15", "current_price": "2.15"}
        ])
    );
    let resp = prices(None).await.expect("pricing");
    assert_eq!(resp.status(), 401);
    let resp = s
        .http
        .get(s.url("/twilio-pricing/v1/PhoneNumbers/Countries/ZZ"))
        .basic_auth(MAIN.0, Some(MAIN.1))
        .send()
        .await
        .expect("pricing");
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.expect("json")["code"], 20404);

    // The state shows subaccounts and numbers, never a token.
    let state = s.running.standins_state.state().to_string();
    assert!(state.contains(&sid), "{state}");
    for secret in [
        token.as_str(),
        DEMO_SUBACCOUNT_TOKEN,
        LOCAL_TWILIO_MAIN_TOKEN,
    ] {
        assert!(!state.contains(secret), "a token in the state: {state}");
    }
}

#[tokio::test]
async fn vapi_imports_lists_routes_and_deletes_phone_numbers() {
    let s = Standins::start().await;
    // A number the demo subaccount holds at Twilio.
    let (status, _) = s
        .twilio(
            "POST",
            &format!("/Accounts/{DEMO_SUBACCOUNT}/IncomingPhoneNumbers.json"),
            Some(MAIN),
            &[("PhoneNumber", "+14155550152")],
        )
        .await;
    assert_eq!(status, 201);
    let import = json!({
        "provider": "twilio", "number": "+14155550152",
        "twilioAccountSid": DEMO_SUBACCOUNT, "twilioAuthToken": DEMO_SUBACCOUNT_TOKEN,
        "name": "Front desk", "assistantId": "0d3e0000-0000-4000-8000-0000000000aa",
    });

    // Refusals, in Vapi's shape.
    let with = |changes: Value| {
        let mut b = import.clone();
        for (k, v) in changes.as_object().expect("object") {
            if v.is_null() {
                b.as_object_mut().expect("object").remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let refusals = [
        (
            json!({"serverUrl": "https://x.example"}),
            "property serverUrl should not exist",
        ),
        (
            json!({"credentialId": "c"}),
            "property credentialId should not exist",
        ),
        (json!({"twilioAuthToken": null}), "twilioAuthToken"),
        (json!({"number": null}), "number"),
        (json!({"name": "n".repeat(41)}), "name must be shorter"),
        (
            json!({"assistantId": "asst_1"}),
            "assistantId must be a UUID",
        ),
        (json!({"provider": "vonage"}), "provider"),
    ];
    for (change, message) in refusals {
        let (status, body) = s
            .vapi("POST", "/phone-number", Some(with(change.clone())))
            .await;
        assert_eq!(status, 400, "{change}: {body}");
        assert_eq!(body["statusCode"], 400);
        assert_eq!(body["error"], "Bad Request");
        assert!(body["message"].is_array(), "{body}");
        assert!(
            body["message"].to_string().contains(message),
            "{change}: {body}"
        );
    }
    // Credentials Twilio refuses, a number the account does not hold: 400.
    for change in [
        json!({"twilioAuthToken": "0123456789abcdef0123456789abcdef"}),
        json!({"twilioAccountSid": "AC0123456789abcdef0123456789abcdef"}),
        json!({"number": "+14155550153"}),
    ] {
        let (status, body) = s
            .vapi("POST", "/phone-number", Some(with(change.clone())))
            .await;
        assert_eq!(status, 400, "{change}: {body}");
        assert!(body["message"].is_string(), "{body}");
    }
    let held = s.running.standins_state.state()["vapi_phone_numbers"].to_string();
    assert!(!held.contains("+14155550152"), "nothing imported: {held}");

    let (status, created) = s.vapi("POST", "/phone-number", Some(import.clone())).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["status"], "active");
    assert_eq!(created["provider"], "twilio");
    assert_eq!(created["number"], "+14155550152");
    assert_eq!(created["twilioAccountSid"], DEMO_SUBACCOUNT);
    assert_eq!(created["assistantId"], import["assistantId"]);
    assert_eq!(created["name"], "Front desk");
    assert!(created["createdAt"].is_string() && created["updatedAt"].is_string());
    // Vapi's `TwilioPhoneNumber` answers may carry the token: the stand-in's do.
    assert_eq!(
        created["twilioAuthToken"], DEMO_SUBACCOUNT_TOKEN,
        "{created}"
    );
    assert_eq!(created["smsEnabled"], true, "Vapi's default: {created}");

    // Listed newest first, with Vapi's filters.
    let (status, list) = s.vapi("GET", "/phone-number?limit=1", None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["id"], id.as_str());
    let since = created["createdAt"].as_str().expect("createdAt");
    let (_, newer) = s
        .vapi("GET", &format!("/phone-number?createdAtGt={since}"), None)
        .await;
    assert_eq!(newer, json!([]));
    let (_, demo) = s.vapi("GET", "/phone-number?limit=1000", None).await;
    assert_eq!(
        demo.as_array().map(Vec::len),
        Some(5),
        "four seeded and one imported: {demo}"
    );
    assert_eq!(s.vapi("GET", "/phone-number?number=1", None).await.0, 400);

    // Routed to another assistant; unknown properties refused; a missing one 404.
    let path = format!("/phone-number/{id}");
    let other = "0d3e0000-0000-4000-8000-0000000000ab";
    let (status, patched) = s
        .vapi(
            "PATCH",
            &path,
            Some(json!({"assistantId": other, "name": "Sales"})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (patched["assistantId"].as_str(), patched["name"].as_str()),
        (Some(other), Some("Sales"))
    );
    let (status, body) = s
        .vapi("PATCH", &path, Some(json!({"serverUrl": "x"})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].is_array());
    assert_eq!(
        s.vapi(
            "PATCH",
            "/phone-number/nope",
            Some(json!({"assistantId": other}))
        )
        .await
        .0,
        404
    );
    let (_, fetched) = s.vapi("GET", &path, None).await;
    assert_eq!(fetched["assistantId"], other);

    // Deleted: 200 with the number, then Vapi's 404.
    let (status, deleted) = s.vapi("DELETE", &path, None).await;
    assert_eq!((status, deleted["id"].as_str()), (200, Some(id.as_str())));
    let (status, gone) = s.vapi("DELETE", &path, None).await;
    assert_eq!(status, 404);
    assert_eq!(gone["statusCode"], 404);
    assert_eq!(gone["error"], "Not Found");
}

#[tokio::test]
async fn failures_can_be_injected_per_endpoint() {
    let s = Standins::start().await;
    let standins = &s;
    let search = || async move {
        standins
            .twilio("GET", &search_path("AreaCode=415"), Some(MAIN), &[])
            .await
    };
    let account = || async move {
        standins
            .twilio(
                "GET",
                &format!("/Accounts/{DEMO_SUBACCOUNT}.json"),
                Some(MAIN),
                &[],
            )
            .await
    };

    // One endpoint, twice: the others keep answering.
    assert_eq!(
        s.fail(json!({"endpoint": "search", "mode": "500", "times": 2}))
            .await,
        200
    );
    assert_eq!(account().await.0, 200);
    twilio_refusal(&search().await, 500, 20500);
    twilio_refusal(&search().await, 500, 20500);
    assert_eq!(search().await.0, 200);

    // With its provider named, and 429; cleared by mode none.
    assert_eq!(
        s.fail(json!({"provider": "twilio", "endpoint": "subaccount", "mode": "429"}))
            .await,
        200
    );
    twilio_refusal(&account().await, 429, 20429);
    twilio_refusal(&account().await, 429, 20429);
    assert_eq!(search().await.0, 200);
    assert_eq!(
        s.fail(json!({"endpoint": "subaccount", "mode": "none"}))
            .await,
        200
    );
    assert_eq!(account().await.0, 200);

    // Vapi's import only.
    assert_eq!(
        s.fail(json!({"endpoint": "import", "mode": "500", "times": 1}))
            .await,
        200
    );
    let (status, body) = s
        .vapi("POST", "/phone-number", Some(json!({"provider": "twilio"})))
        .await;
    assert_eq!((status, body["statusCode"].as_u64()), (500, Some(500)));
    assert_eq!(s.vapi("GET", "/phone-number", None).await.0, 200);

    // The provider-wide plan still works, and `none` for a provider clears its
    // endpoints' plans too.
    assert_eq!(
        s.fail(json!({"provider": "twilio", "mode": "500"})).await,
        200
    );
    assert_eq!(s.fail(json!({"endpoint": "buy", "mode": "429"})).await, 200);
    twilio_refusal(&search().await, 500, 20500);
    assert_eq!(
        s.fail(json!({"provider": "twilio", "mode": "none"})).await,
        200
    );
    assert_eq!(search().await.0, 200);
    assert_eq!(s.running.standins_state.state()["endpoint_fail"], json!({}));

    // A lost answer: the purchase is made, its answer never comes.
    assert_eq!(
        s.fail(json!({"endpoint": "buy", "mode": "lost", "times": 1}))
            .await,
        200
    );
    let gave_up = s
        .http
        .post(s.url(&format!(
            "/twilio/2010-04-01/Accounts/{DEMO_SUBACCOUNT}/IncomingPhoneNumbers.json"
        )))
        .basic_auth(MAIN.0, Some(MAIN.1))
        .form(&[("PhoneNumber", "+14155550157")])
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err(), "no answer");
    let (_, list) = s
        .twilio(
            "GET",
            &format!(
                "/Accounts/{DEMO_SUBACCOUNT}/IncomingPhoneNumbers.json?PhoneNumber=%2B14155550157"
            ),
            Some(MAIN),
            &[],
        )
        .await;
    assert_eq!(
        list["incoming_phone_numbers"].as_array().map(Vec::len),
        Some(1),
        "bought all the same: {list}"
    );

    // Nonsense is refused.
    for bad in [
        json!({"endpoint": "nothing", "mode": "500"}),
        json!({"provider": "vapi", "endpoint": "buy", "mode": "500"}),
        json!({"mode": "500"}),
        json!({"provider": "stripe", "mode": "500"}),
    ] {
        assert_eq!(s.fail(bad.clone()).await, 400, "{bad}");
    }
}

#[tokio::test]
async fn vapi_knows_every_assistant_but_the_reserved_unknown_ones() {
    let s = Standins::start().await;
    let (status, body) = s
        .vapi(
            "GET",
            "/assistant/0d3e0000-0000-4000-8000-0000000000aa",
            None,
        )
        .await;
    assert_eq!(
        (status, body["id"].as_str()),
        (200, Some("0d3e0000-0000-4000-8000-0000000000aa"))
    );
    for unknown in ["00000000-0000-4000-8000-0000000000aa", "not-a-uuid"] {
        let (status, body) = s.vapi("GET", &format!("/assistant/{unknown}"), None).await;
        assert_eq!(
            (status, body["statusCode"].as_i64()),
            (404, Some(404)),
            "{unknown}: {body}"
        );
    }
}

/// Vapi's 400 for unknown properties, exactly.
fn unknown_property(body: &(u16, Value), property: &str) {
    assert_eq!(
        *body,
        (
            400,
            json!({"message": [format!("property {property} should not exist")],
                   "error": "Bad Request", "statusCode": 400})
        )
    );
}

#[tokio::test]
async fn vapi_phone_numbers_take_what_vapis_spec_allows_and_answer_the_token() {
    let s = Standins::start().await;
    for number in ["+14155550150", "+14155550151"] {
        let (status, _) = s
            .twilio(
                "POST",
                &format!("/Accounts/{DEMO_SUBACCOUNT}/IncomingPhoneNumbers.json"),
                Some(MAIN),
                &[("PhoneNumber", number)],
            )
            .await;
        assert_eq!(status, 201);
    }
    let squad = "0d3e0000-0000-4000-8000-0000000000c1";
    let workflow = "0d3e0000-0000-4000-8000-0000000000c2";
    let server = json!({"url": "https://hooks.example/vapi", "timeoutSeconds": 20,
                        "headers": {"x-secret": "server-header-secret"}});
    let fallback = json!({"type": "number", "number": "+14155550199"});
    let hooks = json!([{"on": "call.ringing", "do": []}]);
    // Every property of CreateTwilioPhoneNumberDTO is accepted (the key pair with a
    // token: the token is what Twilio checks).
    let import = json!({
        "provider": "twilio", "number": "+14155550150",
        "twilioAccountSid": DEMO_SUBACCOUNT, "twilioAuthToken": DEMO_SUBACCOUNT_TOKEN,
        "twilioApiKey": "SK0123456789abcdef0123456789abcdef", "twilioApiSecret": "api-secret-1",
        "name": "Front desk", "squadId": squad, "workflowId": workflow,
        "server": server, "fallbackDestination": fallback, "hooks": hooks,
        "smsEnabled": false,
    });
    let (status, created) = s.vapi("POST", "/phone-number", Some(import)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["smsEnabled"], false);
    assert_eq!(created["squadId"], squad);
    assert_eq!(created["workflowId"], workflow);
    assert_eq!(created["server"], server);
    assert_eq!(created["fallbackDestination"], fallback);
    assert_eq!(created["hooks"], hooks);
    assert_eq!(created["twilioAuthToken"], DEMO_SUBACCOUNT_TOKEN);
    // Without `smsEnabled`: Vapi's default, true.
    let (status, plain) = s
        .vapi(
            "POST",
            "/phone-number",
            Some(json!({"provider": "twilio", "number": "+14155550151",
                        "twilioAccountSid": DEMO_SUBACCOUNT, "twilioAuthToken": DEMO_SUBACCOUNT_TOKEN})),
        )
        .await;
    assert_eq!(status, 201, "{plain}");
    let plain_id = plain["id"].as_str().expect("id").to_owned();

    // The control state shows `smsEnabled`, never a token, API secret or header.
    let state = s.running.standins_state.state();
    assert_eq!(
        state["vapi_phone_numbers"][&id]["smsEnabled"], false,
        "{state}"
    );
    assert_eq!(state["vapi_phone_numbers"][&plain_id]["smsEnabled"], true);
    let text = state.to_string();
    for secret in [
        DEMO_SUBACCOUNT_TOKEN,
        "api-secret-1",
        "server-header-secret",
        LOCAL_TWILIO_MAIN_TOKEN,
    ] {
        assert!(!text.contains(secret), "{secret} in the state: {text}");
    }

    // Still refused: what the DTO does not have, wrong types, a key pair alone (the
    // stand-in's Twilio knows no API keys).
    unknown_property(
        &s.vapi(
            "POST",
            "/phone-number",
            Some(json!({"provider": "twilio", "number": "+14155550151",
                        "twilioAccountSid": DEMO_SUBACCOUNT, "twilioAuthToken": DEMO_SUBACCOUNT_TOKEN,
                        "credentialId": "c"})),
        )
        .await,
        "credentialId",
    );
    let base = json!({"provider": "twilio", "number": "+14155550151", "twilioAccountSid": DEMO_SUBACCOUNT,
                      "twilioAuthToken": DEMO_SUBACCOUNT_TOKEN});
    for (change, message) in [
        (
            json!({"smsEnabled": "no"}),
            "smsEnabled must be a boolean value",
        ),
        (json!({"hooks": {}}), "hooks must be an array"),
        (
            json!({"server": "https://x.example"}),
            "server must be an object",
        ),
    ] {
        let mut body = base.clone();
        for (k, v) in change.as_object().expect("object") {
            body[k] = v.clone();
        }
        let (status, answer) = s.vapi("POST", "/phone-number", Some(body)).await;
        assert_eq!(status, 400, "{change}: {answer}");
        assert!(answer["message"].to_string().contains(message), "{answer}");
    }
    let (status, answer) = s
        .vapi(
            "POST",
            "/phone-number",
            Some(json!({"provider": "twilio", "number": "+14155550151", "twilioAccountSid": DEMO_SUBACCOUNT,
                        "twilioApiKey": "SK0123456789abcdef0123456789abcdef", "twilioApiSecret": "s"})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("Authenticate")),
        "{answer}"
    );

    // PATCH: every property of UpdateTwilioPhoneNumberDTO, none required.
    let path = format!("/phone-number/{plain_id}");
    let (status, patched) = s.vapi("PATCH", &path, Some(json!({}))).await;
    assert_eq!(status, 200, "{patched}");
    let (status, patched) = s
        .vapi(
            "PATCH",
            &path,
            Some(json!({
                "provider": "twilio", "smsEnabled": false, "squadId": squad, "workflowId": workflow,
                "server": {"url": "https://hooks.example/other"}, "hooks": [],
                "fallbackDestination": fallback, "name": "Sales",
                "twilioAccountSid": DEMO_SUBACCOUNT, "twilioAuthToken": DEMO_SUBACCOUNT_TOKEN,
                "twilioApiKey": "SK0123456789abcdef0123456789abcdef", "twilioApiSecret": "api-secret-2",
                "number": "+14155550151",
            })),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["smsEnabled"], false);
    assert_eq!(patched["squadId"], squad);
    assert_eq!(patched["name"], "Sales");
    assert_eq!(
        patched["twilioAuthToken"], DEMO_SUBACCOUNT_TOKEN,
        "{patched}"
    );
    assert_eq!(
        s.running.standins_state.state()["vapi_phone_numbers"][&plain_id]["smsEnabled"],
        false
    );
    unknown_property(
        &s.vapi(
            "PATCH",
            &path,
            Some(json!({"serverUrl": "https://x.example"})),
        )
        .await,
        "serverUrl",
    );
    let (status, answer) = s
        .vapi("PATCH", &path, Some(json!({"provider": "vonage"})))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].is_array(), "{answer}");
    // A new token Twilio refuses, a number the account does not hold: Vapi's 400.
    for change in [
        json!({"twilioAuthToken": "0123456789abcdef0123456789abcdef"}),
        json!({"number": "+14155550152"}),
    ] {
        let (status, answer) = s.vapi("PATCH", &path, Some(change.clone())).await;
        assert_eq!(status, 400, "{change}: {answer}");
    }

    // The token in every answer about the number: GET, list, PATCH (above), DELETE.
    let (_, fetched) = s.vapi("GET", &path, None).await;
    assert_eq!(fetched["twilioAuthToken"], DEMO_SUBACCOUNT_TOKEN);
    let (_, listed) = s.vapi("GET", "/phone-number", None).await;
    let listed = listed.as_array().expect("list");
    assert!(
        listed
            .iter()
            .all(|n| n["twilioAuthToken"].as_str().is_some_and(|t| t.len() == 32)),
        "seeded numbers too: {listed:?}"
    );
    let (status, deleted) = s.vapi("DELETE", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(deleted["twilioAuthToken"], DEMO_SUBACCOUNT_TOKEN);
}

#[tokio::test]
async fn vapi_credentials_take_what_vapis_spec_allows() {
    let s = Standins::start().await;
    let sid = "AC0123456789abcdef0123456789abcdef";
    let (status, created) = s
        .vapi(
            "POST",
            "/credential",
            Some(json!({"provider": "twilio", "accountSid": sid,
                        "authToken": "0123456789abcdef0123456789abcdef", "name": "org-x"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let path = format!("/credential/{id}");
    // PATCH requires nothing and takes `provider`.
    for body in [
        json!({}),
        json!({"provider": "twilio"}),
        json!({"name": "renamed"}),
        json!({"provider": "twilio", "accountSid": sid, "authToken": "fedcba9876543210fedcba9876543210"}),
        json!({"apiKey": "SK0123456789abcdef0123456789abcdef", "apiSecret": "api-secret"}),
    ] {
        let (status, answer) = s.vapi("PATCH", &path, Some(body.clone())).await;
        assert_eq!(status, 200, "{body}: {answer}");
        assert_eq!(answer["accountSid"], sid, "{answer}");
        for secret in ["authToken", "apiSecret", "apiKey"] {
            assert!(answer.get(secret).is_none(), "{answer}");
        }
    }
    let (_, answer) = s.vapi("PATCH", &path, Some(json!({}))).await;
    assert_eq!(answer["name"], "renamed", "kept: {answer}");
    unknown_property(
        &s.vapi("PATCH", &path, Some(json!({"credentialId": "x"})))
            .await,
        "credentialId",
    );
    for body in [
        json!({"provider": "vonage"}),
        json!({"accountSid": ""}),
        json!({"name": "n".repeat(41)}),
        json!({"authToken": 5}),
    ] {
        let (status, answer) = s.vapi("PATCH", &path, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["message"].is_array(), "{answer}");
    }
    // Create still needs the provider, the account and a secret.
    for body in [
        json!({"accountSid": sid, "authToken": "0123456789abcdef0123456789abcdef"}),
        json!({"provider": "twilio", "authToken": "0123456789abcdef0123456789abcdef"}),
        json!({"provider": "twilio", "accountSid": sid}),
    ] {
        let (status, answer) = s.vapi("POST", "/credential", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
}

#[tokio::test]
async fn a_suspended_twilio_account_is_refused_as_twilio_does_and_the_save_says_so() {
    let s = Standins::start().await;
    // A SID ending in `dead`: a suspended account. Twilio refuses it (403, 20403)
    // instead of answering 200 with its status.
    let dead = "AC0123456789abcdef0123456789abdead";
    let token = "0123456789abcdef0123456789abcdef";
    twilio_refusal(
        &s.twilio(
            "GET",
            &format!("/Accounts/{dead}.json"),
            Some((dead, token)),
            &[],
        )
        .await,
        403,
        20403,
    );
    let live = "AC0123456789abcdef0123456789abcdef";
    let (status, account) = s
        .twilio(
            "GET",
            &format!("/Accounts/{live}.json"),
            Some((live, token)),
            &[],
        )
        .await;
    assert_eq!((status, account["status"].as_str()), (200, Some("active")));

    // A BYOC save with it: refused, saying the account may be suspended or closed.
    let org = "0d3e0000-0000-4000-8000-0000000000d1";
    let bearer = s
        .running
        .gateway
        .authorizer
        .mint(
            org,
            "tester",
            &["telephony:write"],
            std::time::Duration::from_secs(600),
        )
        .expect("token");
    let resp = s
        .http
        .put(format!(
            "http://{}/api/telephony/credentials/twilio",
            s.running.api
        ))
        .bearer_auth(bearer)
        .json(&json!({"accountSid": dead, "authToken": token, "phoneNumber": "+14155550100"}))
        .send()
        .await
        .expect("save");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("json");
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["code"], "twilio_rejected_credentials",
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("suspended or closed")),
        "{body}"
    );
}

#[tokio::test]
async fn toll_free_answers_lower_case_capabilities_and_search_reads_them() {
    let s = Standins::start().await;
    let (status, toll_free) = s
        .twilio(
            "GET",
            &format!("/Accounts/{LOCAL_TWILIO_MAIN_SID}/AvailablePhoneNumbers/US/TollFree.json"),
            Some(MAIN),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{toll_free}");
    assert_eq!(
        toll_free["available_phone_numbers"][0]["capabilities"],
        json!({"voice": true, "sms": true, "mms": false, "fax": false})
    );
    // Through the search route: SMS read from the lower-case key (and MMS from the
    // capitals of a local answer).
    let search = |query: &'static str| {
        s.http
            .get(format!(
                "http://{}/api/managed-telephony/available-numbers?{query}",
                s.running.api
            ))
            .bearer_auth(&s.running.token)
            .send()
    };
    let found: Value = search("type=toll_free")
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(
        found["numbers"][0]["capabilities"],
        json!({"voice": true, "sms": true, "mms": false}),
        "{found}"
    );
    let local: Value = search("areaCode=415")
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(
        local["numbers"][0]["capabilities"],
        json!({"voice": true, "sms": true, "mms": true}),
        "{local}"
    );
}

/// Buy `number` on the demo subaccount as the main account.
fn buy_path() -> String {
    format!("/Accounts/{DEMO_SUBACCOUNT}/IncomingPhoneNumbers.json")
}

fn bought_path(number: &str) -> String {
    format!(
        "/Accounts/{DEMO_SUBACCOUNT}/IncomingPhoneNumbers.json?PhoneNumber={}",
        number.replace('+', "%2B")
    )
}

/// A Vapi import of `number` (bought on the demo subaccount) routed to `assistant`.
fn import_body(number: &str, assistant: &str) -> Value {
    json!({
        "provider": "twilio", "number": number,
        "twilioAccountSid": DEMO_SUBACCOUNT, "twilioAuthToken": DEMO_SUBACCOUNT_TOKEN,
        "assistantId": assistant,
    })
}

const KNOWN_ASSISTANT: &str = "0d3e0000-0000-4000-8000-0000000000aa";
const UNKNOWN_ASSISTANT: &str = "00000000-0000-4000-8000-0000000000aa";

impl Standins {
    async fn holds_at_twilio(&self, number: &str) -> usize {
        let (status, list) = self
            .twilio("GET", &bought_path(number), Some(MAIN), &[])
            .await;
        assert_eq!(status, 200, "{list}");
        list["incoming_phone_numbers"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Vapi's numbers with this E.164, as its list shows them.
    async fn listed_at_vapi(&self, number: &str) -> Vec<Value> {
        let (status, list) = self.vapi("GET", "/phone-number", None).await;
        assert_eq!(status, 200, "{list}");
        list.as_array()
            .expect("a list")
            .iter()
            .filter(|n| n["number"] == number)
            .cloned()
            .collect()
    }
}

#[tokio::test]
async fn a_late_answer_comes_after_the_call_acted() {
    let s = Standins::start().await;
    // Beyond the client's timeout: the client gives up, the number is bought.
    assert_eq!(
        s.fail(json!({"endpoint": "buy", "mode": "late", "delayMs": 800, "times": 1}))
            .await,
        200
    );
    assert_eq!(
        s.running.standins_state.state()["endpoint_fail"]["buy"],
        json!({"mode": "late", "delayMs": 800, "remaining": 1})
    );
    let started = std::time::Instant::now();
    let gave_up = s
        .http
        .post(s.url(&format!("/twilio/2010-04-01{}", buy_path())))
        .basic_auth(MAIN.0, Some(MAIN.1))
        .form(&[("PhoneNumber", "+14155550150")])
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err(), "no answer within the client's timeout");
    assert!(started.elapsed() < std::time::Duration::from_millis(700));
    assert_eq!(
        s.holds_at_twilio("+14155550150").await,
        1,
        "bought all the same"
    );
    assert_eq!(s.running.standins_state.state()["endpoint_fail"], json!({}));

    // Below it: a slow answer, the import made.
    let (status, _) = s
        .twilio(
            "POST",
            &buy_path(),
            Some(MAIN),
            &[("PhoneNumber", "+14155550151")],
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        s.fail(json!({"provider": "vapi", "endpoint": "import", "mode": "late", "delayMs": 150}))
            .await,
        200
    );
    let started = std::time::Instant::now();
    let (status, imported) = s
        .vapi(
            "POST",
            "/phone-number",
            Some(import_body("+14155550151", KNOWN_ASSISTANT)),
        )
        .await;
    assert_eq!(status, 201, "{imported}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    assert_eq!(s.listed_at_vapi("+14155550151").await.len(), 1);
    // A refused call is not delayed: nothing was done, the plan is not used up.
    let started = std::time::Instant::now();
    let (status, _) = s
        .vapi("POST", "/phone-number", Some(json!({"provider": "twilio"})))
        .await;
    assert_eq!(status, 400);
    assert!(started.elapsed() < std::time::Duration::from_millis(150));
    assert_eq!(
        s.fail(json!({"endpoint": "import", "mode": "none"})).await,
        200
    );

    // On an endpoint that changes nothing, the answer is late.
    assert_eq!(
        s.fail(json!({"endpoint": "search", "mode": "late", "delayMs": 200, "times": 1}))
            .await,
        200
    );
    let started = std::time::Instant::now();
    let (status, _) = s
        .twilio("GET", &search_path("AreaCode=415"), Some(MAIN), &[])
        .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    // On one with both kinds, it waits for a call that acts: a list answers at once.
    assert_eq!(
        s.fail(json!({"endpoint": "credential", "mode": "late", "delayMs": 5000, "times": 1}))
            .await,
        200
    );
    let started = std::time::Instant::now();
    assert_eq!(s.vapi("GET", "/credential", None).await.0, 200);
    assert!(started.elapsed() < std::time::Duration::from_millis(1000));
    assert_eq!(
        s.running.standins_state.state()["endpoint_fail"]["credential"]["remaining"],
        1
    );

    // `late` needs its delay, and takes nothing else.
    for bad in [
        json!({"endpoint": "buy", "mode": "late"}),
        json!({"endpoint": "buy", "mode": "late", "delayMs": 10, "lagMs": 10}),
        json!({"endpoint": "buy", "mode": "500", "delayMs": 10}),
    ] {
        assert_eq!(s.fail(bad.clone()).await, 400, "{bad}");
    }
}

#[tokio::test]
async fn a_refusal_is_the_providers_own_4xx_and_does_nothing() {
    let s = Standins::start().await;
    // Twilio's purchase: 21422 unless told otherwise; nothing bought.
    assert_eq!(
        s.fail(json!({"endpoint": "buy", "mode": "refuse", "times": 1}))
            .await,
        200
    );
    twilio_refusal(
        &s.twilio(
            "POST",
            &buy_path(),
            Some(MAIN),
            &[("PhoneNumber", "+14155550152")],
        )
        .await,
        400,
        21422,
    );
    assert_eq!(s.holds_at_twilio("+14155550152").await, 0);
    assert_eq!(
        s.fail(
            json!({"provider": "twilio", "mode": "refuse", "code": 21631,
                      "message": "Phone Number Requires an Address", "times": 1})
        )
        .await,
        200
    );
    let refused = s
        .twilio(
            "POST",
            &buy_path(),
            Some(MAIN),
            &[("PhoneNumber", "+14155550152")],
        )
        .await;
    twilio_refusal(&refused, 400, 21631);
    assert_eq!(refused.1["message"], "Phone Number Requires an Address");
    assert_eq!(s.holds_at_twilio("+14155550152").await, 0);
    let (status, _) = s
        .twilio(
            "POST",
            &buy_path(),
            Some(MAIN),
            &[("PhoneNumber", "+14155550152")],
        )
        .await;
    assert_eq!(status, 201, "used up: bought now");
    // Elsewhere 20001; a release refused keeps the number.
    assert_eq!(
        s.fail(json!({"endpoint": "release", "mode": "refuse", "status": 409, "times": 1}))
            .await,
        200
    );
    let (_, list) = s
        .twilio("GET", &bought_path("+14155550152"), Some(MAIN), &[])
        .await;
    let pn = list["incoming_phone_numbers"][0]["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let release = format!("/Accounts/{DEMO_SUBACCOUNT}/IncomingPhoneNumbers/{pn}.json");
    twilio_refusal(
        &s.twilio("DELETE", &release, Some(MAIN), &[]).await,
        409,
        20001,
    );
    assert_eq!(s.holds_at_twilio("+14155550152").await, 1);

    // Vapi: its validation error shape (a list of messages), nothing imported.
    assert_eq!(
        s.fail(json!({"endpoint": "import", "mode": "refuse", "times": 1}))
            .await,
        200
    );
    let (status, body) = s
        .vapi(
            "POST",
            "/phone-number",
            Some(import_body("+14155550152", KNOWN_ASSISTANT)),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "Bad Request");
    assert_eq!(body["statusCode"], 400);
    assert!(
        body["message"]
            .as_array()
            .is_some_and(|m| m.len() == 1 && m[0].is_string()),
        "{body}"
    );
    assert!(s.listed_at_vapi("+14155550152").await.is_empty());
    let (status, imported) = s
        .vapi(
            "POST",
            "/phone-number",
            Some(import_body("+14155550152", KNOWN_ASSISTANT)),
        )
        .await;
    assert_eq!(status, 201, "{imported}");
    let id = imported["id"].as_str().expect("id").to_owned();
    // Another 4xx: one message; the route not changed.
    assert_eq!(
        s.fail(
            json!({"provider": "vapi", "endpoint": "route", "mode": "refuse",
                      "status": 422, "message": "no", "times": 1})
        )
        .await,
        200
    );
    let other = "0d3e0000-0000-4000-8000-0000000000bb";
    let (status, body) = s
        .vapi(
            "PATCH",
            &format!("/phone-number/{id}"),
            Some(json!({"assistantId": other})),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            422,
            json!({"message": "no", "error": "Unprocessable Entity", "statusCode": 422})
        )
    );
    assert_eq!(
        s.listed_at_vapi("+14155550152").await[0]["assistantId"],
        KNOWN_ASSISTANT
    );

    for bad in [
        json!({"endpoint": "import", "mode": "refuse", "code": 21422}),
        json!({"endpoint": "buy", "mode": "refuse", "status": 500}),
        json!({"endpoint": "buy", "mode": "refuse", "status": 302}),
        json!({"endpoint": "buy", "mode": "429", "code": 20429}),
    ] {
        assert_eq!(s.fail(bad.clone()).await, 400, "{bad}");
    }
}

#[tokio::test]
async fn lookup_lag_hides_what_is_new_from_lists_only() {
    let s = Standins::start().await;
    let (status, _) = s
        .twilio(
            "POST",
            &buy_path(),
            Some(MAIN),
            &[("PhoneNumber", "+14155550153")],
        )
        .await;
    assert_eq!(status, 201);
    let (status, imported) = s
        .vapi(
            "POST",
            "/phone-number",
            Some(import_body("+14155550153", KNOWN_ASSISTANT)),
        )
        .await;
    assert_eq!(status, 201, "{imported}");
    let id = imported["id"].as_str().expect("id").to_owned();

    // Vapi's list leaves it out for as long as the lag; fetching it by id does not.
    assert_eq!(
        s.fail(json!({"provider": "vapi", "endpoint": "list", "mode": "lag", "lagMs": 60000}))
            .await,
        200
    );
    assert_eq!(
        s.running.standins_state.state()["lag"],
        json!({"list": {"lagMs": 60000, "remaining": null}})
    );
    assert!(s.listed_at_vapi("+14155550153").await.is_empty());
    assert!(
        s.listed_at_vapi("+14155550153").await.is_empty(),
        "every list"
    );
    let (status, fetched) = s.vapi("GET", &format!("/phone-number/{id}"), None).await;
    assert_eq!((status, fetched["id"].as_str()), (200, Some(id.as_str())));
    // Failure plans and lag are apart: the endpoint can lag and fail at once.
    assert_eq!(
        s.fail(json!({"endpoint": "list", "mode": "500", "times": 1}))
            .await,
        200
    );
    assert_eq!(s.vapi("GET", "/phone-number", None).await.0, 500);
    assert!(s.listed_at_vapi("+14155550153").await.is_empty());
    // Once as old as the lag (a test moving its clock ages the stand-ins' objects
    // with it), it shows.
    s.running
        .standins_state
        .age(std::time::Duration::from_secs(61));
    assert_eq!(s.listed_at_vapi("+14155550153").await.len(), 1);
    // `none` clears it.
    assert_eq!(
        s.fail(json!({"endpoint": "list", "mode": "none"})).await,
        200
    );
    assert_eq!(s.listed_at_vapi("+14155550153").await.len(), 1);
    assert_eq!(s.running.standins_state.state()["lag"], json!({}));

    // A short lag passes: the number shows once it is older than the lag.
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    assert_eq!(
        s.fail(json!({"endpoint": "list", "mode": "lag", "lagMs": 400}))
            .await,
        200
    );
    let (status, _) = s
        .twilio(
            "POST",
            &buy_path(),
            Some(MAIN),
            &[("PhoneNumber", "+14155550154")],
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = s
        .vapi(
            "POST",
            "/phone-number",
            Some(import_body("+14155550154", KNOWN_ASSISTANT)),
        )
        .await;
    assert_eq!(status, 201);
    assert!(s.listed_at_vapi("+14155550154").await.is_empty());
    assert_eq!(s.listed_at_vapi("+14155550153").await.len(), 1, "older");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(s.listed_at_vapi("+14155550154").await.len(), 1);

    // With `times`, only that many lists lag.
    assert_eq!(
        s.fail(json!({"endpoint": "credential", "mode": "lag", "lagMs": 60000, "times": 1}))
            .await,
        200
    );
    let (status, _) = s
        .vapi(
            "POST",
            "/credential",
            Some(json!({"provider": "twilio", "accountSid": DEMO_SUBACCOUNT,
                        "authToken": DEMO_SUBACCOUNT_TOKEN, "name": "org-lag"})),
        )
        .await;
    assert_eq!(status, 201);
    let named = |list: &Value| {
        list.as_array()
            .expect("a list")
            .iter()
            .filter(|c| c["name"] == "org-lag")
            .count()
    };
    let (_, first) = s.vapi("GET", "/credential", None).await;
    assert_eq!(named(&first), 0, "{first}");
    let (_, second) = s.vapi("GET", "/credential", None).await;
    assert_eq!(named(&second), 1, "{second}");

    // Twilio, for the whole provider: its bought numbers and its subaccounts.
    assert_eq!(
        s.fail(json!({"provider": "twilio", "mode": "lag", "lagMs": 60000}))
            .await,
        200
    );
    assert_eq!(
        s.running.standins_state.state()["lag"],
        json!({"bought": {"lagMs": 60000, "remaining": null},
               "list": {"lagMs": 400, "remaining": null},
               "subaccount": {"lagMs": 60000, "remaining": null}})
    );
    let (status, _) = s
        .twilio(
            "POST",
            &buy_path(),
            Some(MAIN),
            &[("PhoneNumber", "+14155550155")],
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(s.holds_at_twilio("+14155550155").await, 0);
    assert_eq!(s.holds_at_twilio("+14155550150").await, 0, "never bought");
    let (status, created) = s
        .twilio(
            "POST",
            "/Accounts.json",
            Some(MAIN),
            &[("FriendlyName", "org:lag")],
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (_, page) = s
        .twilio(
            "GET",
            "/Accounts.json?FriendlyName=org%3Alag",
            Some(MAIN),
            &[],
        )
        .await;
    assert_eq!(page["accounts"].as_array().map(Vec::len), Some(0), "{page}");
    let sid = created["sid"].as_str().expect("sid");
    let (status, _) = s
        .twilio("GET", &format!("/Accounts/{sid}.json"), Some(MAIN), &[])
        .await;
    assert_eq!(status, 200, "read by its SID all the same");
    assert_eq!(
        s.fail(json!({"provider": "twilio", "mode": "none"})).await,
        200
    );
    assert_eq!(s.holds_at_twilio("+14155550155").await, 1);
    assert_eq!(
        s.running.standins_state.state()["lag"],
        json!({"list": {"lagMs": 400, "remaining": null}}),
        "Vapi's lag stays"
    );

    for bad in [
        json!({"endpoint": "import", "mode": "lag", "lagMs": 10}),
        json!({"endpoint": "list", "mode": "lag"}),
        json!({"endpoint": "list", "mode": "lag", "lagMs": 10, "delayMs": 10}),
    ] {
        assert_eq!(s.fail(bad.clone()).await, 400, "{bad}");
    }
}

#[tokio::test]
async fn vapi_refuses_to_route_a_number_to_an_assistant_it_does_not_know() {
    let s = Standins::start().await;
    let (status, _) = s
        .twilio(
            "POST",
            &buy_path(),
            Some(MAIN),
            &[("PhoneNumber", "+14155550156")],
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = s
        .vapi(
            "POST",
            "/phone-number",
            Some(import_body("+14155550156", UNKNOWN_ASSISTANT)),
        )
        .await;
    assert_eq!(
        (status, body["statusCode"].as_u64()),
        (400, Some(400)),
        "{body}"
    );
    assert_eq!(body["error"], "Bad Request");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains(UNKNOWN_ASSISTANT)),
        "{body}"
    );
    assert!(s.listed_at_vapi("+14155550156").await.is_empty());
    let (status, imported) = s
        .vapi(
            "POST",
            "/phone-number",
            Some(import_body("+14155550156", KNOWN_ASSISTANT)),
        )
        .await;
    assert_eq!(status, 201, "{imported}");
    let path = format!("/phone-number/{}", imported["id"].as_str().expect("id"));
    let (status, body) = s
        .vapi(
            "PATCH",
            &path,
            Some(json!({"assistantId": UNKNOWN_ASSISTANT})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        s.listed_at_vapi("+14155550156").await[0]["assistantId"],
        KNOWN_ASSISTANT,
        "unchanged"
    );
    // A number Vapi does not have is its 404 first.
    let (status, _) = s
        .vapi(
            "PATCH",
            "/phone-number/3c0ffee0-0000-4000-8000-000000000000",
            Some(json!({"assistantId": UNKNOWN_ASSISTANT})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_journal_keeps_what_the_providers_held_after_each_change() {
    let s = Standins::start().await;
    let standins = &s.running.standins_state;
    let (before, held) = standins.holdings();
    assert!(standins.journal_since(before).is_empty(), "off by default");
    standins.keep_journal();
    let (status, _) = s
        .twilio(
            "POST",
            &buy_path(),
            Some(MAIN),
            &[("PhoneNumber", "+14155550157")],
        )
        .await;
    assert_eq!(status, 201);
    let (status, imported) = s
        .vapi(
            "POST",
            "/phone-number",
            Some(import_body("+14155550157", KNOWN_ASSISTANT)),
        )
        .await;
    assert_eq!(status, 201);
    // A refused call changes nothing and journals nothing.
    let (status, _) = s
        .vapi("POST", "/phone-number", Some(json!({"provider": "twilio"})))
        .await;
    assert_eq!(status, 400);
    let journal = standins.journal_since(before);
    assert_eq!(
        journal.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        [before + 1, before + 2]
    );
    let bought_only = &journal[0].1;
    assert_eq!(
        bought_only["twilio_numbers"].as_object().map(|m| m.len()),
        held["twilio_numbers"].as_object().map(|m| m.len() + 1)
    );
    assert!(
        bought_only["vapi_phone_numbers"]
            .get(imported["id"].as_str().expect("id"))
            .is_none()
    );
    assert_eq!(journal[1].1, standins.holdings().1);
    assert_eq!(standins.version(), before + 2);
    assert!(
        !journal[1].1.to_string().contains(DEMO_SUBACCOUNT_TOKEN),
        "never a token"
    );
}
