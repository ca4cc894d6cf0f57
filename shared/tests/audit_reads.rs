//! The carrier audit's provider reads against local servers speaking Twilio's and
//! Vapi's documented APIs (wiremock): Twilio's lists followed by `next_page_uri`,
//! a 429's `Retry-After` waited out (and a wait too long refused), and Vapi's whole
//! phone-number list walked page by page.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::json;
use shared::config::{TwilioMainAccount, VapiKey};
use shared::providers::CallPolicy;
use shared::twilio::TwilioClient;
use shared::vapi::VapiClient;
use testkit::fakes::{FakeTwilio, FakeVapi, TWILIO_MAIN_SID, TWILIO_MAIN_TOKEN, VAPI_KEY};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

const SUB: &str = "AC0000000000000000000000000000aa01";

fn policy() -> CallPolicy {
    CallPolicy {
        attempt_timeout: Duration::from_secs(2),
        retries: 2,
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(2),
    }
}

fn twilio(fake: &FakeTwilio) -> TwilioClient {
    TwilioClient::new(
        reqwest::Client::new(),
        format!("{}/2010-04-01", fake.uri()),
        policy(),
    )
    .with_main_account(
        TwilioMainAccount {
            account_sid: TWILIO_MAIN_SID.parse().expect("sid"),
            auth_token: SecretString::from(TWILIO_MAIN_TOKEN),
        },
        None,
    )
}

fn numbers_page(items: &[(&str, &str)], next: Option<&str>) -> serde_json::Value {
    json!({
        "incoming_phone_numbers": items.iter().map(|(sid, number)| json!({
            "sid": sid, "phone_number": number, "friendly_name": "purchase x",
            "voice_url": "https://api.vapi.ai/twilio/inbound_call",
            "date_created": "Fri, 04 Dec 2026 10:00:00 +0000",
        })).collect::<Vec<_>>(),
        "next_page_uri": next, "page_size": 2,
    })
}

#[tokio::test]
async fn twilio_number_pages_are_followed_to_the_end() {
    let fake = FakeTwilio::start().await;
    let list = format!("/2010-04-01/Accounts/{SUB}/IncomingPhoneNumbers.json");
    let next = format!("{list}?PageSize=2&Page=1&PageToken=PAxyz");
    fake.as_main_account(Mock::given(method("GET")).and(path(list.clone())))
        .and(query_param("PageToken", "PAxyz"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(numbers_page(&[("PN03", "+14155550103")], None)),
        )
        .expect(1)
        .mount(&fake.server)
        .await;
    fake.as_main_account(Mock::given(method("GET")).and(path(list.clone())))
        .and(query_param("PageSize", "1000"))
        .respond_with(ResponseTemplate::new(200).set_body_json(numbers_page(
            &[("PN01", "+14155550101"), ("PN02", "+14155550102")],
            Some(&next),
        )))
        .expect(1)
        .mount(&fake.server)
        .await;
    let client = twilio(&fake);
    let sub = SUB.parse().expect("sid");
    let first = client.numbers_page(&sub, 1000, None).await.expect("page 1");
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.next.as_deref(), Some(next.as_str()));
    let second = client
        .numbers_page(&sub, 1000, first.next.as_deref())
        .await
        .expect("page 2");
    assert_eq!(second.items[0].phone_number, "+14155550103");
    assert!(second.next.is_none());
    assert!(second.items[0].date_created.is_some());
}

#[tokio::test]
async fn a_429_waits_out_its_retry_after_and_a_longer_wait_ends_the_retries() {
    let fake = FakeTwilio::start().await;
    let list = "/2010-04-01/Accounts.json";
    fake.as_main_account(Mock::given(method("GET")).and(path(list)))
        .respond_with(
            FakeTwilio::error(429, 20429, "Too Many Requests").insert_header("Retry-After", "1"),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&fake.server)
        .await;
    fake.as_main_account(Mock::given(method("GET")).and(path(list)))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "accounts": [{"sid": SUB, "friendly_name": "org:x", "status": "active",
                          "auth_token": "0123456789abcdef0123456789abcdef"}],
            "next_page_uri": null,
        })))
        .expect(1)
        .mount(&fake.server)
        .await;
    let started = Instant::now();
    let page = twilio(&fake)
        .accounts_page(1000, None)
        .await
        .expect("after the wait");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "retried after {:?}, before Retry-After",
        started.elapsed()
    );
    assert_eq!(page.items[0].sid, SUB);
    assert!(!format!("{page:?}").contains("0123456789abcdef"));

    // Asked to wait longer than max_retry_after (2 s): one attempt, the 429 answered.
    let slow = FakeTwilio::start().await;
    slow.as_main_account(Mock::given(method("GET")).and(path(list)))
        .respond_with(
            FakeTwilio::error(429, 20429, "Too Many Requests").insert_header("Retry-After", "60"),
        )
        .expect(1)
        .mount(&slow.server)
        .await;
    let started = Instant::now();
    let err = twilio(&slow)
        .accounts_page(1000, None)
        .await
        .expect_err("429");
    assert_eq!(err.status(), Some(429));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_next_page_on_another_host_is_never_followed() {
    let fake = FakeTwilio::start().await;
    let err = twilio(&fake)
        .accounts_page(
            1000,
            Some("https://elsewhere.example/2010-04-01/Accounts.json"),
        )
        .await
        .expect_err("refused");
    assert_eq!(err.stable_code(), "twilio_bad_response");
    assert!(
        fake.server
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn vapis_whole_list_is_walked_newest_first_by_created_at() {
    let fake = FakeVapi::start().await;
    // 1000 on the first page (the walk's page size), 1 on the second.
    let first: Vec<_> = (0..1000)
        .map(|i| {
            json!({"id": format!("v{i}"), "number": format!("+1415555{i:04}"),
                   "twilioAccountSid": SUB, "assistantId": null,
                   "createdAt": format!("2026-12-01T00:{:02}:{:02}.000Z", 59 - i / 60 % 60, 59 - i % 60)})
        })
        .collect();
    let oldest = first
        .iter()
        .filter_map(|v| v["createdAt"].as_str())
        .min()
        .expect("oldest")
        .to_owned();
    fake.authed(Mock::given(method("GET")).and(path("/phone-number")))
        .and(query_param("createdAtLe", oldest.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"id": "v-last", "number": "+14155559999", "twilioAccountSid": SUB,
             "createdAt": "2026-11-30T00:00:00.000Z"}
        ])))
        .expect(1)
        .mount(&fake.server)
        .await;
    fake.authed(Mock::given(method("GET")).and(path("/phone-number")))
        .and(query_param("limit", "1000"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(first)))
        .expect(1)
        .mount(&fake.server)
        .await;
    let client = VapiClient::new(
        reqwest::Client::new(),
        fake.uri(),
        VapiKey(SecretString::from(VAPI_KEY)),
        None,
        policy(),
    );
    let list = client.all_phone_numbers(None).await.expect("list");
    assert!(list.complete);
    assert_eq!(list.pages, 2);
    assert_eq!(list.numbers.len(), 1001);
    assert!(list.numbers.iter().any(|n| n.id == "v-last"));
}
