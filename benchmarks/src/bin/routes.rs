//! Route latency against local services: each route's real handler driven by API
//! Gateway events, real Postgres, KMS on the emulator, wiremock Vapi and Twilio.
//! `BENCH_PROVIDER_DELAY_MS` (default 0) adds latency to every provider stand-in
//! answer, to see the path's sequential provider round trips. `BENCH_N` calls per route.
//! Every provider answer first samples the routes' pools (`testkit::probe`): the
//! connections checked out while a provider call is in flight, printed at the end.

use std::time::Duration;

use benchmarks::measure;
use serde_json::json;
use shared::config::Env;
use testkit::TestDb;
use testkit::event::ApiEvent;
use testkit::fakes::{FakeTwilio, FakeVapi, TWILIO_MAIN_SID, TWILIO_MAIN_TOKEN, VAPI_KEY};
use testkit::probe::PoolProbe;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let delay = Duration::from_millis(
        std::env::var("BENCH_PROVIDER_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let t = TestDb::new().await;
    let aws = testkit::aws_config().await;
    let kms_key = testkit::kms_key(&aws).await;
    let (vapi, twilio) = (FakeVapi::start().await, FakeTwilio::start().await);
    let (url, v, tw) = (t.url(), vapi.uri(), twilio.uri());
    let pricing = format!("{tw}/pricing");
    let env = Env::from_pairs([
        ("DATABASE_URL", url.as_str()),
        ("KEYRING", "kms"),
        ("KMS_KEY_ID", kms_key.as_str()),
        ("VAPI_BASE_URL", v.as_str()),
        ("TWILIO_BASE_URL", tw.as_str()),
        ("VAPI_PRIVATE_KEY", VAPI_KEY),
        ("TWILIO_MAIN_ACCOUNT_SID", TWILIO_MAIN_SID),
        ("TWILIO_MAIN_AUTH_TOKEN", TWILIO_MAIN_TOKEN),
        ("TWILIO_PRICING_BASE_URL", pricing.as_str()),
        // The benchmark buys hundreds of numbers for one org: above the per-org daily
        // limit (default 10) that a real org meets.
        ("PURCHASES_PER_ORG_PER_DAY", "1000000"),
        // buy-number fingerprints the subaccount's token.
        (
            "TOKEN_FINGERPRINT_KEY",
            "benchmark-token-fingerprint-key-0123456789",
        ),
    ]);
    let save = save_credential::State::from_env(&env, &aws)
        .await
        .expect("save state");
    let list = list_numbers::State::from_env(&env, &aws)
        .await
        .expect("list state");
    let release = release_number::State::from_env(&env, &aws)
        .await
        .expect("release state");
    let search = search_numbers::State::from_env(&env, &aws)
        .await
        .expect("search state");
    let buy = buy_number::State::from_env(&env, &aws)
        .await
        .expect("buy state");
    let update = update_number::State::from_env(&env, &aws)
        .await
        .expect("update state");
    let probe = PoolProbe::new([
        save.db.clone(),
        release.release.db.clone(),
        buy.db.clone(),
        update.db.clone(),
    ]);
    let ok = |status: u16, body: serde_json::Value| {
        probe.answering(
            ResponseTemplate::new(status)
                .set_body_json(body)
                .set_delay(delay),
        )
    };
    Mock::given(method("GET"))
        .and(path_regex(r"^/Accounts/AC[0-9a-f]{32}\.json$"))
        .respond_with(ok(200, json!({"status": "active"})))
        .mount(&twilio.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path_regex(
            r"^/Accounts/AC[0-9a-f]{32}/IncomingPhoneNumbers/PN[0-9a-f]{32}\.json$",
        ))
        .respond_with(probe.answering(ResponseTemplate::new(204).set_delay(delay)))
        .mount(&twilio.server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/credential$"))
        .respond_with(ok(200, json!([])))
        .mount(&vapi.server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/credential$"))
        .respond_with(ok(201, json!({"id": "vapi-cred-1"})))
        .mount(&vapi.server)
        .await;
    Mock::given(method("PATCH"))
        .and(path_regex("^/credential/"))
        .respond_with(ok(200, json!({"id": "vapi-cred-1"})))
        .mount(&vapi.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path_regex("^/phone-number/"))
        .respond_with(ok(200, json!({})))
        .mount(&vapi.server)
        .await;
    // The purchase's calls: the org's subaccount (looked up, created, its token
    // read back), the purchase, the import, the assistant change, the search.
    let sub = "AC5ab5ab5ab5ab5ab5ab5ab5ab5ab5ab5a";
    let sub_account = json!({"sid": sub, "auth_token": "5ab70ce05ab70ce05ab70ce05ab70ce0", "status": "active", "friendly_name": "org"});
    Mock::given(method("GET"))
        .and(path_regex(r"^/Accounts\.json$"))
        .respond_with(ok(200, json!({"accounts": []})))
        .mount(&twilio.server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/Accounts\.json$"))
        .respond_with(ok(201, sub_account.clone()))
        .mount(&twilio.server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(format!(r"^/Accounts/{sub}\.json$")))
        .respond_with(ok(200, sub_account))
        // Before the account check above, which matches any account.
        .with_priority(1)
        .mount(&twilio.server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/Accounts/AC[0-9a-f]{32}/IncomingPhoneNumbers\.json$",
        ))
        .respond_with(ok(
            201,
            json!({"sid": "PN0123456789abcdef0123456789abcdef", "phone_number": "+1"}),
        ))
        .mount(&twilio.server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/Accounts/AC[0-9a-f]{32}/AvailablePhoneNumbers/US/Local\.json$",
        ))
        .respond_with(ok(
            200,
            json!({"available_phone_numbers": (0..20).map(|i| json!({
            "phone_number": format!("+1415555{i:04}"), "locality": "San Francisco", "region": "CA",
            "iso_country": "US", "address_requirements": "none",
            "capabilities": {"voice": true, "SMS": true, "MMS": false}})).collect::<Vec<_>>()}),
        ))
        .mount(&twilio.server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/pricing/PhoneNumbers/Countries/US$"))
        .respond_with(ok(
            200,
            json!({"price_unit": "USD", "phone_number_prices": [
            {"number_type": "local", "base_price": "1.15", "current_price": "1.15"}]}),
        ))
        .mount(&twilio.server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/assistant/"))
        .respond_with(ok(
            200,
            json!({"id": "0d3e0000-0000-4000-8000-0000000000aa"}),
        ))
        .mount(&vapi.server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/phone-number$"))
        .respond_with(ok(201, json!({"id": "vapi-phone-bench"})))
        .mount(&vapi.server)
        .await;
    Mock::given(method("PATCH"))
        .and(path_regex("^/phone-number/"))
        .respond_with(ok(200, json!({"id": "vapi-phone-bench"})))
        .mount(&vapi.server)
        .await;

    let org = t.org().await;
    let org_s = org.to_string();
    let label = |route: &str| format!("{route} (+{} ms per provider call)", delay.as_millis());

    let body = json!({"accountSid": "AC0123456789abcdef0123456789abcdef", "authToken": "5f4dcc3b5aa765d61d8327deb882cf99", "phoneNumber": "+14155550100"});
    let put = ApiEvent::new(
        "PUT",
        "/api/telephony/credentials/twilio",
        "/api/telephony/credentials/twilio",
    )
    .caller(&org_s, "bench")
    .scopes(&["telephony:write"])
    .json(&body);
    let summary = measure(&label("save-credential PUT"), 10, n, |_| async {
        let resp = save_credential::handle(&save, put.request()).await;
        assert_eq!(resp.status(), 200);
    })
    .await;
    summary.print();

    let warm = 10;
    for i in 0..(n + warm) {
        t.managed_number(org, &format!("+1415{i:07}"), Some(&format!("vapi-{i}")))
            .await;
    }
    let get = ApiEvent::new(
        "GET",
        "/api/managed-telephony/status",
        "/api/managed-telephony/status",
    )
    .caller(&org_s, "bench")
    .scopes(&["telephony:read"]);
    measure(
        &format!("list-numbers GET ({} numbers)", n + warm),
        10,
        n,
        |_| async {
            let resp = list_numbers::handle(&list, get.request()).await;
            assert_eq!(resp.status(), 200);
        },
    )
    .await
    .print();

    measure(&label("release-number DELETE"), warm, n, |i| {
        let number = format!("+1415{i:07}");
        let ev = ApiEvent::new(
            "DELETE",
            "/api/managed-telephony/numbers/{phoneNumber}",
            "/x",
        )
        .caller(&org_s, "bench")
        .scopes(&["telephony:write"])
        .path_parameter("phoneNumber", &number);
        let release = &release;
        async move {
            let resp = release_number::handle(release, ev.request()).await;
            assert_eq!(resp.status(), 200);
        }
    })
    .await
    .print();

    let find = ApiEvent::new(
        "GET",
        "/api/managed-telephony/available-numbers",
        "/api/managed-telephony/available-numbers",
    )
    .caller(&org_s, "bench")
    .scopes(&["telephony:read"])
    .query("areaCode=415");
    measure(
        &label("search-numbers GET (prices cached)"),
        warm,
        n,
        |_| async {
            let resp = search_numbers::handle(&search, find.request()).await;
            assert_eq!(resp.status(), 200);
        },
    )
    .await
    .print();

    // Purchases by a second org: its first (subaccount + slot) in the warm-up, then
    // one purchase per call.
    let buyer = t.org().await.to_string();
    let assistant = "0d3e0000-0000-4000-8000-0000000000aa";
    let buy_event = |number: &str| {
        ApiEvent::new(
            "POST",
            "/api/managed-telephony/numbers",
            "/api/managed-telephony/numbers",
        )
        .caller(&buyer, "bench")
        .scopes(&["telephony:write"])
        .json(&json!({"phoneNumber": number, "assistantId": assistant}))
    };
    // The org's first purchase also creates its subaccount and fills its slot.
    let first = std::time::Instant::now();
    let resp = buy_number::handle(&buy, buy_event("+12120000000").request()).await;
    assert_eq!(resp.status(), 201);
    println!(
        "{:<48} n=1      {:>8.3} ms (subaccount lookup + create, slot: KMS + Vapi credential)",
        label("buy-number POST, the org's first"),
        first.elapsed().as_secs_f64() * 1000.0
    );
    let bought: Vec<String> = (1..=n + warm).map(|i| format!("+1212{i:07}")).collect();
    measure(&label("buy-number POST"), warm, n, |i| {
        let resp = buy_number::handle(&buy, buy_event(&bought[i]).request());
        async move {
            let (status, body) = testkit::event::read_response(&resp.await);
            assert_eq!(status, 201, "{body}");
        }
    })
    .await
    .print();

    measure(&label("update-number PATCH"), warm, n, |i| {
        let number = bought[i % bought.len()].clone();
        let ev = ApiEvent::new(
            "PATCH",
            "/api/managed-telephony/numbers/{phoneNumber}",
            "/x",
        )
        .caller(&buyer, "bench")
        .scopes(&["telephony:write"])
        .path_parameter("phoneNumber", &number)
        .json(&json!({"assistantId": assistant}));
        let update = &update;
        async move {
            let resp = update_number::handle(update, ev.request()).await;
            assert_eq!(resp.status(), 200);
        }
    })
    .await
    .print();

    let samples = probe.samples();
    println!(
        "pooled connections checked out while a provider call was in flight: max {} over {} provider calls (sampled at each call's arrival)",
        samples.iter().max().copied().unwrap_or_default(),
        samples.len()
    );
}
