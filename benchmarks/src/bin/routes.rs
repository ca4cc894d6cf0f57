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
    let env = Env::from_pairs([
        ("DATABASE_URL", url.as_str()),
        ("KEYRING", "kms"),
        ("KMS_KEY_ID", kms_key.as_str()),
        ("VAPI_BASE_URL", v.as_str()),
        ("TWILIO_BASE_URL", tw.as_str()),
        ("VAPI_PRIVATE_KEY", VAPI_KEY),
        ("TWILIO_MAIN_ACCOUNT_SID", TWILIO_MAIN_SID),
        ("TWILIO_MAIN_AUTH_TOKEN", TWILIO_MAIN_TOKEN),
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
    let probe = PoolProbe::new([save.db.clone(), release.release.db.clone()]);
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
    .caller(&org_s, "bench");
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

    let samples = probe.samples();
    println!(
        "pooled connections checked out while a provider call was in flight: max {} over {} provider calls (sampled at each call's arrival)",
        samples.iter().max().copied().unwrap_or_default(),
        samples.len()
    );
}
