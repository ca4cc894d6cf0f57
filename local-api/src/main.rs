//! `local-api`: the whole API on localhost. Started by `scripts/run-local.sh`, which
//! provides the database and the local keyring; see the README.

use local_api::demo::{DEMO_ASSISTANT, DEMO_NUMBERS, DEMO_ORG};
use local_api::gateway::BoxError;
use local_api::server::{Running, start};
use shared::config::{Env, aws_sdk_config};

/// What a person needs to try the API by hand.
fn banner(r: &Running) -> String {
    let (api, standins, web, token) = (r.api, r.standins, r.web, &r.token);
    // A browser sends the `+` as `%2B` (encodeURIComponent); so does this line.
    let number = DEMO_NUMBERS[1].replace('+', "%2B");
    format!(
        r#"
Telephony API on http://{api}   (demo org {DEMO_ORG}; Ctrl-C stops everything)
Telephony page on http://{web}/
Vapi/Twilio stand-ins on http://{standins}   (state: GET /__control/state)

export TOKEN='{token}'

curl -s http://{api}/api/managed-telephony/status -H "Authorization: Bearer $TOKEN"
curl -s -X PUT http://{api}/api/telephony/credentials/twilio -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{{"accountSid":"AC0123456789abcdef0123456789abcdef","authToken":"5f4dcc3b5aa765d61d8327deb882cf99","phoneNumber":"+14155550123"}}'
curl -s -X DELETE http://{api}/api/managed-telephony/numbers/{number} -H "Authorization: Bearer $TOKEN"

# search area code 415, buy one, route it to another assistant, release it:
curl -s 'http://{api}/api/managed-telephony/available-numbers?areaCode=415&limit=5' -H "Authorization: Bearer $TOKEN"
curl -s -X POST http://{api}/api/managed-telephony/numbers -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{{"phoneNumber":"+14155550150","assistantId":"{DEMO_ASSISTANT}","name":"Front desk"}}'
curl -s -X PATCH http://{api}/api/managed-telephony/numbers/%2B14155550150 -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{{"assistantId":"0d3e0000-0000-4000-8000-0000000000ab"}}'
curl -s -X DELETE http://{api}/api/managed-telephony/numbers/%2B14155550150 -H "Authorization: Bearer $TOKEN"

# make the next 3 Twilio calls fail with a 500 (modes: 500, 429, timeout, lost, late,
# refuse, lag, none), or only the next Vapi import; have the next import act but answer
# 10 s late; let another buyer take a number; run reconcile now (it also runs every
# LOCAL_RECONCILE_SECS, default 30):
curl -s -X POST http://{standins}/__control/fail -H 'Content-Type: application/json' -d '{{"provider":"twilio","mode":"500","times":3}}'
curl -s -X POST http://{standins}/__control/fail -H 'Content-Type: application/json' -d '{{"endpoint":"import","mode":"500","times":1}}'
curl -s -X POST http://{standins}/__control/fail -H 'Content-Type: application/json' -d '{{"endpoint":"import","mode":"late","delayMs":10000,"times":1}}'
curl -s -X POST http://{standins}/__control/take -H 'Content-Type: application/json' -d '{{"phoneNumber":"+14155550151"}}'
curl -s -X POST http://{standins}/__control/reconcile
"#
    )
}

/// Ctrl-C or SIGTERM (what `kill` and the run script's cleanup send).
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    shared::telemetry::init();
    let env = Env::from_process();
    let ready_file = env.get("READY_FILE").map(str::to_owned);
    let aws = aws_sdk_config(&env)?;
    let running = start(env, &aws).await?;
    println!("{}", banner(&running));
    if let Some(path) = ready_file {
        let ready = serde_json::json!({
            "api": format!("http://{}", running.api),
            "web": format!("http://{}", running.web),
            "standins": format!("http://{}", running.standins),
            "token": running.token,
        });
        std::fs::write(&path, ready.to_string())?;
    }
    tracing::info!(api = %running.api, web = %running.web, "local API ready");
    stop_signal().await;
    tracing::info!("stopping");
    Ok(())
}
