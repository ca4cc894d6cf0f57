//! search-numbers end to end: API Gateway events through the real handler, and
//! Twilio's search and Pricing API as wiremock servers asserting what was asked.
//! No database: the route needs only the Twilio main account.

use search_numbers::{State, handle};
use serde_json::{Value, json};
use shared::config::Env;
use testkit::event::{ApiEvent, read_response};
use testkit::fakes::{FakeTwilio, TWILIO_MAIN_SID, TWILIO_MAIN_TOKEN};
use wiremock::matchers::{basic_auth, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

const ROUTE: &str = "/api/managed-telephony/available-numbers";
const ORG: &str = "0d3e0000-0000-4000-8000-000000000001";

fn available(number: &str, address: &str) -> Value {
    json!({
        "friendly_name": "(415) 555-0150", "phone_number": number, "lata": "722",
        "locality": "San Francisco", "rate_center": "SNFC CNTL", "latitude": "37.77",
        "longitude": "-122.41", "region": "CA", "postal_code": "94110", "iso_country": "US",
        "address_requirements": address, "beta": false,
        "capabilities": {"voice": true, "SMS": true, "MMS": false, "fax": false}
    })
}

fn prices() -> Value {
    json!({
        "country": "United States", "iso_country": "US", "price_unit": "USD",
        "phone_number_prices": [
            {"number_type": "local", "base_price": "1.15", "current_price": "1.15"},
            {"number_type": "toll free", "base_price": "2.15", "current_price": "2.15"}
        ],
        "url": "https://pricing.twilio.com/v1/PhoneNumbers/Countries/US"
    })
}

async fn state(twilio: &FakeTwilio) -> State {
    let aws = testkit::aws_config().await;
    let (base, pricing) = (twilio.uri(), format!("{}/pricing", twilio.uri()));
    State::from_env(
        &Env::from_pairs([
            ("TWILIO_BASE_URL", base.as_str()),
            ("TWILIO_PRICING_BASE_URL", pricing.as_str()),
            ("TWILIO_MAIN_ACCOUNT_SID", TWILIO_MAIN_SID),
            ("TWILIO_MAIN_AUTH_TOKEN", TWILIO_MAIN_TOKEN),
            ("PROVIDER_TIMEOUT_MS", "1000"),
            ("PROVIDER_MIN_BACKOFF_MS", "10"),
            ("PROVIDER_MAX_BACKOFF_MS", "40"),
        ]),
        &aws,
    )
    .await
    .expect("state")
}

/// A search as a caller with the read scope.
async fn search(state: &State, query: Option<&str>) -> (u16, Value) {
    let mut ev = ApiEvent::new("GET", ROUTE, ROUTE)
        .caller(ORG, "user-1")
        .scopes(&["telephony:read"]);
    if let Some(q) = query {
        ev = ev.query(q);
    }
    read_response(&handle(state, ev.request()).await)
}

fn local_search() -> wiremock::MockBuilder {
    Mock::given(method("GET"))
        .and(path(format!(
            "/Accounts/{TWILIO_MAIN_SID}/AvailablePhoneNumbers/US/Local.json"
        )))
        .and(basic_auth(TWILIO_MAIN_SID, TWILIO_MAIN_TOKEN))
}

fn pricing() -> wiremock::MockBuilder {
    Mock::given(method("GET"))
        .and(path("/pricing/PhoneNumbers/Countries/US"))
        .and(basic_auth(TWILIO_MAIN_SID, TWILIO_MAIN_TOKEN))
}

#[tokio::test]
async fn numbers_that_need_no_address_with_their_monthly_price() {
    let twilio = FakeTwilio::start().await;
    local_search()
        .and(query_param("AreaCode", "415"))
        .and(query_param("Contains", "555"))
        .and(query_param("VoiceEnabled", "true"))
        .and(query_param("ExcludeAllAddressRequired", "true"))
        .and(query_param("PageSize", "5"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "available_phone_numbers": [
                available("+14155550150", "none"),
                available("+14155550151", "any"),
                available("+14155550152", "none"),
                available("not-a-number", "none"),
            ],
            "uri": "/2010-04-01/Accounts/AC/AvailablePhoneNumbers/US/Local.json"
        })))
        .expect(2)
        .mount(&twilio.server)
        .await;
    pricing()
        .respond_with(ResponseTemplate::new(200).set_body_json(prices()))
        .expect(1)
        .mount(&twilio.server)
        .await;
    let state = state(&twilio).await;
    let (status, body) = search(&state, Some("areaCode=415&contains=555&limit=5")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["country"], "US");
    assert_eq!(body["type"], "local");
    assert_eq!(body["pricesAvailable"], true);
    let numbers = body["numbers"].as_array().unwrap();
    let listed: Vec<&str> = numbers
        .iter()
        .map(|n| n["phoneNumber"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["+14155550150", "+14155550152"],
        "no address-needing or malformed numbers"
    );
    assert_eq!(
        numbers[0],
        json!({
            "phoneNumber": "+14155550150", "friendlyName": "(415) 555-0150",
            "locality": "San Francisco", "region": "CA", "isoCountry": "US",
            "capabilities": {"voice": true, "sms": true, "mms": false},
            "addressRequirements": "none",
            "monthlyPrice": {"amount": "1.15", "currency": "USD"}
        })
    );
    // The prices are cached per instance: a second search asks Twilio's search only.
    let (status, _) = search(&state, Some("areaCode=415&contains=555&limit=5")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn without_prices_the_numbers_are_still_listed() {
    let twilio = FakeTwilio::start().await;
    local_search()
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "available_phone_numbers": [available("+14155550150", "none")]
        })))
        .mount(&twilio.server)
        .await;
    pricing()
        .respond_with(FakeTwilio::error(503, 20503, "Service Unavailable"))
        .mount(&twilio.server)
        .await;
    let (status, body) = search(&state(&twilio).await, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pricesAvailable"], false);
    assert!(body["numbers"][0]["monthlyPrice"].is_null());
}

#[tokio::test]
async fn toll_free_uses_its_own_resource_and_price() {
    let twilio = FakeTwilio::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/Accounts/{TWILIO_MAIN_SID}/AvailablePhoneNumbers/US/TollFree.json"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "available_phone_numbers": [available("+18335550100", "none")]
        })))
        .expect(1)
        .mount(&twilio.server)
        .await;
    pricing()
        .respond_with(ResponseTemplate::new(200).set_body_json(prices()))
        .mount(&twilio.server)
        .await;
    let (status, body) = search(&state(&twilio).await, Some("type=toll_free")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["numbers"][0]["monthlyPrice"],
        json!({"amount": "2.15", "currency": "USD"})
    );
}

/// `available` with its capabilities as `capabilities`.
fn with_capabilities(number: &str, capabilities: Value) -> Value {
    let mut n = available(number, "none");
    n["capabilities"] = capabilities;
    n
}

#[tokio::test]
async fn capability_keys_are_read_in_either_casing() {
    // Twilio's casing varies: its spec and toll-free answers write `sms`/`mms`, US
    // local answers have written `SMS`/`MMS`; an answer with both is no error.
    let twilio = FakeTwilio::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/Accounts/{TWILIO_MAIN_SID}/AvailablePhoneNumbers/US/TollFree.json"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "available_phone_numbers": [
                with_capabilities("+18335550100", json!({"voice": true, "sms": true, "mms": true, "fax": false})),
                with_capabilities("+18335550101", json!({"voice": true, "SMS": true, "MMS": true})),
                with_capabilities("+18335550102", json!({"voice": true, "sms": true, "SMS": true, "mms": false, "MMS": true})),
                with_capabilities("+18335550103", json!({"voice": true, "sms": false, "mms": false})),
            ]
        })))
        .expect(1)
        .mount(&twilio.server)
        .await;
    pricing()
        .respond_with(ResponseTemplate::new(200).set_body_json(prices()))
        .mount(&twilio.server)
        .await;
    let (status, body) = search(&state(&twilio).await, Some("type=toll_free")).await;
    assert_eq!(status, 200, "{body}");
    let caps: Vec<(&str, &Value)> = body["numbers"]
        .as_array()
        .expect("numbers")
        .iter()
        .map(|n| {
            (
                n["phoneNumber"].as_str().unwrap_or_default(),
                &n["capabilities"],
            )
        })
        .collect();
    let all = json!({"voice": true, "sms": true, "mms": true});
    assert_eq!(
        caps,
        [
            ("+18335550100", &all),
            ("+18335550101", &all),
            ("+18335550102", &all),
            (
                "+18335550103",
                &json!({"voice": true, "sms": false, "mms": false})
            ),
        ],
        "{body}"
    );
}

#[tokio::test]
async fn twilio_down_is_503_and_its_refusal_422() {
    let twilio = FakeTwilio::start().await;
    local_search()
        .and(query_param("AreaCode", "212"))
        .respond_with(FakeTwilio::error(503, 20503, "Service Unavailable"))
        .mount(&twilio.server)
        .await;
    local_search()
        .and(query_param("AreaCode", "999"))
        .respond_with(FakeTwilio::error(400, 21451, "Invalid area code"))
        .mount(&twilio.server)
        .await;
    pricing()
        .respond_with(ResponseTemplate::new(200).set_body_json(prices()))
        .mount(&twilio.server)
        .await;
    let state = state(&twilio).await;
    let (status, body) = search(&state, Some("areaCode=212")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("twilio_unavailable")),
        "{body}"
    );
    assert!(
        !body.to_string().contains("Service Unavailable"),
        "never the provider's text"
    );
    let (status, body) = search(&state, Some("areaCode=999")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("search_refused")),
        "{body}"
    );
}

#[tokio::test]
async fn bad_filters_are_400_naming_the_parameter_and_call_nothing() {
    let twilio = FakeTwilio::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&twilio.server)
        .await;
    let state = state(&twilio).await;
    for (query, status, code, names) in [
        ("areaCode=41", 400, "invalid_query_parameter", "areaCode"),
        ("country=USA", 400, "invalid_query_parameter", "country"),
        ("type=mobile", 400, "invalid_query_parameter", "type"),
        ("limit=500", 400, "invalid_query_parameter", "limit"),
        ("contains=a%20b", 400, "invalid_query_parameter", "contains"),
        ("limit=2&limit=3", 400, "invalid_query_parameter", "limit"),
        ("page=2", 400, "unknown_query_parameter", "page"),
        (
            "addressRequired=any",
            422,
            "address_required_unsupported",
            "addressRequired",
        ),
    ] {
        let (s, body) = search(&state, Some(query)).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{query}: {body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(names),
            "{query}: {body}"
        );
    }
    let ev = ApiEvent::new("GET", ROUTE, ROUTE);
    let (s, body) = read_response(&handle(&state, ev.request()).await);
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
}

#[tokio::test]
async fn without_the_read_scope_it_is_403_and_twilio_is_never_called() {
    let twilio = FakeTwilio::start().await;
    local_search()
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"available_phone_numbers": []})),
        )
        .expect(0)
        .mount(&twilio.server)
        .await;
    pricing()
        .respond_with(ResponseTemplate::new(200).set_body_json(prices()))
        .expect(0)
        .mount(&twilio.server)
        .await;
    let state = state(&twilio).await;
    let base = || {
        ApiEvent::new("GET", ROUTE, ROUTE)
            .caller(ORG, "user-1")
            .query("areaCode=415")
    };
    // The write scope does not imply the read scope.
    for (why, ev) in [
        ("no scope", base()),
        ("write only", base().scopes(&["telephony:write"])),
        (
            "write in the claim",
            base().claim("scope", "telephony:write"),
        ),
    ] {
        let (s, body) = read_response(&handle(&state, ev.request()).await);
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{why}: {body}"
        );
    }
    assert!(
        twilio.server.received_requests().await.unwrap().is_empty(),
        "no provider called"
    );
}

#[tokio::test]
async fn a_well_formed_country_that_is_no_country_is_400_naming_it_and_twilio_is_never_asked() {
    let twilio = FakeTwilio::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&twilio.server)
        .await;
    let state = state(&twilio).await;
    // User-assigned (XX, ZZ, AA, QM), exceptionally reserved (UK, EU), not ISO (XK),
    // withdrawn (AN, YU), in either case.
    for country in ["XX", "xx", "ZZ", "AA", "QM", "UK", "eu", "XK", "AN", "YU"] {
        let (s, body) = search(&state, Some(&format!("country={country}"))).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (400, Some("invalid_query_parameter")),
            "{country}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("country: ") && message.contains("ISO 3166-1"),
            "{country}: {message}"
        );
    }
    // The country is checked before the area code that depends on it.
    let (s, body) = search(&state, Some("country=XX&areaCode=415")).await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("country: "),
        "{body}"
    );
}

#[tokio::test]
async fn an_assigned_country_goes_to_twilio_and_its_404_is_422_search_refused() {
    let twilio = FakeTwilio::start().await;
    // Twilio searches Great Britain (asked in lower case, sent in upper case)...
    Mock::given(method("GET"))
        .and(path(format!(
            "/Accounts/{TWILIO_MAIN_SID}/AvailablePhoneNumbers/GB/Local.json"
        )))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"available_phone_numbers": []})),
        )
        .expect(1)
        .mount(&twilio.server)
        .await;
    // ...and answers 404 (code 20404) for a country it offers no numbers in.
    Mock::given(method("GET"))
        .and(path(format!(
            "/Accounts/{TWILIO_MAIN_SID}/AvailablePhoneNumbers/AQ/Local.json"
        )))
        .respond_with(FakeTwilio::error(
            404,
            20404,
            "The requested resource was not found",
        ))
        .expect(1)
        .mount(&twilio.server)
        .await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::path_regex(
            "^/pricing/PhoneNumbers/Countries/",
        ))
        .respond_with(FakeTwilio::error(
            404,
            20404,
            "The requested resource was not found",
        ))
        .mount(&twilio.server)
        .await;
    let state = state(&twilio).await;
    let (s, body) = search(&state, Some("country=gb")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["country"], "GB");
    let (s, body) = search(&state, Some("country=AQ")).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (422, Some("search_refused")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("offers no numbers of this type in this country"),
        "{body}"
    );
}

#[tokio::test]
async fn a_subject_with_invisible_format_characters_is_401_before_twilio_is_asked() {
    let twilio = FakeTwilio::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&twilio.server)
        .await;
    let state = state(&twilio).await;
    for sub in [
        "admin\u{202E}nimda",
        "ad\u{200B}min",
        "\u{FEFF}admin",
        "ad\u{2060}min",
        "admin\u{2066}",
    ] {
        let ev = ApiEvent::new("GET", ROUTE, ROUTE)
            .caller(ORG, sub)
            .scopes(&["telephony:read"])
            .query("areaCode=415");
        let (s, body) = read_response(&handle(&state, ev.request()).await);
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (401, Some("unrecordable_subject")),
            "{sub:?}: {body}"
        );
    }
}

/// openapi.yaml's `country` pattern, built from the table the server checks.
fn documented_country_pattern() -> String {
    let mut groups: std::collections::BTreeMap<char, String> = Default::default();
    for code in shared::search::ISO_3166_ALPHA2 {
        let mut letters = code.chars();
        if let (Some(first), Some(second)) = (letters.next(), letters.next()) {
            groups.entry(first).or_default().push(second);
        }
    }
    let alternatives: Vec<String> = groups
        .iter()
        .map(|(first, seconds)| {
            format!(
                "[{first}{}][{seconds}{}]",
                first.to_ascii_lowercase(),
                seconds.to_ascii_lowercase()
            )
        })
        .collect();
    format!("^(?:{})$", alternatives.join("|"))
}

#[test]
fn openapi_lists_the_same_countries_the_server_accepts() {
    let openapi =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.yaml"))
            .expect("openapi.yaml");
    let pattern = documented_country_pattern();
    assert!(
        openapi.contains(&format!("pattern: \"{pattern}\"")),
        "openapi.yaml's country pattern differs from shared::search::ISO_3166_ALPHA2; it should be\n{pattern}"
    );
}
