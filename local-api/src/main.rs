//! `local-api`: the whole API on localhost. Started by `scripts/run-local.sh`, which
//! provides the database and the local keyring; see the README.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method};
use local_api::demo::{self, DEMO_NUMBERS, DEMO_ORG};
use local_api::gateway::{BoxError, Functions, Gateway, LocalAuthorizer, serve};
use local_api::standins::{
    LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN, LOCAL_VAPI_KEY, Standins,
};
use shared::config::{Env, IdentityConfig, aws_sdk_config};
use tower_http::cors::{AllowOrigin, CorsLayer};

fn cors(env: &Env) -> CorsLayer {
    let origins: Vec<HeaderValue> = env
        .get("CORS_ALLOW_ORIGINS")
        .unwrap_or("http://localhost:8081,http://127.0.0.1:8081")
        .split(',')
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            HeaderName::from_static("authorization"),
            HeaderName::from_static("content-type"),
        ])
        .expose_headers([HeaderName::from_static("x-request-id")])
        .max_age(Duration::from_secs(600))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    shared::telemetry::init();
    let mut env = Env::from_process();
    let port: u16 = env.parse_or("PORT", 8080)?;
    let standins_port: u16 = env.parse_or("STANDINS_PORT", 8090)?;

    // Stand-ins replace each provider whose base URL is not set.
    let standins = Standins::default();
    let standins_url = format!("http://127.0.0.1:{standins_port}");
    let (fake_vapi, fake_twilio) = (
        env.get("VAPI_BASE_URL").is_none(),
        env.get("TWILIO_BASE_URL").is_none(),
    );
    if fake_vapi {
        env.set("VAPI_BASE_URL", format!("{standins_url}/vapi"));
        env.set("VAPI_PRIVATE_KEY", LOCAL_VAPI_KEY);
    }
    if fake_twilio {
        env.set(
            "TWILIO_BASE_URL",
            format!("{standins_url}/twilio/2010-04-01"),
        );
        env.set("TWILIO_MAIN_ACCOUNT_SID", LOCAL_TWILIO_MAIN_SID);
        env.set("TWILIO_MAIN_AUTH_TOKEN", LOCAL_TWILIO_MAIN_TOKEN);
    }
    let standins_listener = tokio::net::TcpListener::bind(("127.0.0.1", standins_port)).await?;
    let standins_app = standins.router();
    tokio::spawn(async move { axum::serve(standins_listener, standins_app).await });

    let aws = aws_sdk_config().await;
    let functions = Functions::from_env(&env, &aws).await?;
    let applied = shared::migrate::run(&functions.list.db).await?;
    tracing::info!(?applied, "migrations applied");
    demo::seed(&functions, Some(&standins)).await?;

    let authorizer = LocalAuthorizer::from_env(&env);
    let write_scope = IdentityConfig::from_env(&env).write_scope;
    let token = authorizer.mint(
        DEMO_ORG,
        "demo-user",
        &[&write_scope],
        Duration::from_secs(12 * 3600),
    )?;
    let gateway = Arc::new(Gateway {
        functions,
        authorizer,
        write_scope,
    });
    let app = Router::new()
        .fallback(serve)
        .with_state(gateway)
        .layer(cors(&env));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;

    let base = format!("http://{addr}");
    let number = DEMO_NUMBERS[1].replace('+', "%2B");
    println!(
        r#"
Telephony API on {base}   (demo org {DEMO_ORG}; Ctrl-C stops everything)
Vapi/Twilio stand-ins on {standins_url}   (control: POST {standins_url}/__control/fail)

export TOKEN='{token}'

curl -s {base}/api/managed-telephony/status -H "Authorization: Bearer $TOKEN"
curl -s -X PUT {base}/api/telephony/credentials/twilio -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{{"accountSid":"AC0123456789abcdef0123456789abcdef","authToken":"5f4dcc3b5aa765d61d8327deb882cf99","phoneNumber":"+14155550123"}}'
curl -s -X DELETE {base}/api/managed-telephony/numbers/{number} -H "Authorization: Bearer $TOKEN"
curl -s -X POST {standins_url}/__control/fail -H 'Content-Type: application/json' -d '{{"provider":"twilio","mode":"500","times":3}}'
"#
    );
    tracing::info!(%base, "local API ready");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
