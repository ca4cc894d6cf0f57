//! Starting the whole local API: the stand-ins, the functions (built as their Lambda
//! `main`s build them), the migrations and demo data, the API behind the local
//! authorizer, and the telephony page on its own origin. `main` and the tests both
//! start it through [`start`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use shared::config::{Env, IdentityConfig};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;

use crate::audit::{self, AuditSlot, LocalAudit};
use crate::authorizer::{self, AuthorizerSlot};
use crate::database;
use crate::demo::{self, DEMO_ORG};
use crate::gateway::{BoxError, Functions, Gateway, LocalAuthorizer, serve};
use crate::reconcile::{self, LocalReconcile, ReconcileSlot};
use crate::standins::{
    LOCAL_TWILIO_MAIN_SID, LOCAL_TWILIO_MAIN_TOKEN, LOCAL_VAPI_KEY, Standins,
    TWILIO_ACCOUNTS_PREFIX, TWILIO_API_PREFIX, TWILIO_PRICING_PREFIX, VAPI_PREFIX, seed_numbers,
};

/// Where everything listens once started.
pub struct Running {
    pub api: SocketAddr,
    pub standins: SocketAddr,
    pub web: SocketAddr,
    /// A demo-org token with the read and write scopes, valid 12 hours.
    pub token: String,
    /// The stand-ins' state, for tests that look inside or inject failures.
    pub standins_state: Standins,
    pub gateway: Arc<Gateway>,
}

async fn bind(env: &Env, var: &'static str, default: u16) -> Result<TcpListener, BoxError> {
    let port: u16 = env.parse_or(var, default)?;
    TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port} ({var}): {e}").into())
}

/// CORS as the template configures it: the configured origins (by default the
/// page's own origin), the routes' methods, `authorization` and
/// `content-type`, `x-request-id` exposed.
pub fn cors(origins: &str) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .split(',')
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            HeaderName::from_static("authorization"),
            HeaderName::from_static("content-type"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("apigw-requestid"),
            // A purchase over the org's daily limit says when the next is allowed.
            HeaderName::from_static("retry-after"),
        ])
        .max_age(Duration::from_secs(600))
}

/// The page's origin: the built page (`WEB_DIR`, default `web/dist`) and
/// `/config.json` telling it where the API is and which token to use (local only:
/// a deployed dashboard gets its token from its own sign-in).
fn web_app(dir: PathBuf, api_base: String, token: String) -> Router {
    let config = json!({ "apiBase": api_base, "token": token });
    Router::new()
        .route("/config.json", get(move || async move { Json(config) }))
        .fallback_service(ServeDir::new(dir))
}

/// Connections per function's pool in the local API unless `DB_POOL_SIZE` is set
/// (one pool per function with a database: five, so at most five times this many
/// connections).
pub const LOCAL_DB_POOL_SIZE: usize = 8;

/// The local fingerprint key of Twilio tokens unless `TOKEN_FINGERPRINT_KEY` is set
/// (local runs and tests only; a deployed stack generates its own secret).
pub const LOCAL_TOKEN_FINGERPRINT_KEY: &str = "local-dev-only-token-fingerprint-key-0123456789";

/// `STANDINS_DELAY_MS`: every answer of the providers' stand-ins (not the control
/// endpoints) comes this much later, as a remote provider's round trip would: a flow's
/// time then shows its serial provider round trips (`curl -w %{time_total}`).
async fn provider_delay(
    delay: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !delay.is_zero() && !req.uri().path().starts_with("/__control") {
        tokio::time::sleep(delay).await;
    }
    next.run(req).await
}

/// Start everything on the ports `PORT` (default 8080), `STANDINS_PORT` (8090) and
/// `WEB_PORT` (8081); 0 picks a free port. Providers whose `VAPI_BASE_URL` /
/// `TWILIO_BASE_URL` is unset are served by the stand-ins. The functions' pools get
/// [`LOCAL_DB_POOL_SIZE`] connections unless `DB_POOL_SIZE` is set.
pub async fn start(mut env: Env, aws: &aws_config::SdkConfig) -> Result<Running, BoxError> {
    let api_listener = bind(&env, "PORT", 8080).await?;
    let standins_listener = bind(&env, "STANDINS_PORT", 8090).await?;
    let web_listener = bind(&env, "WEB_PORT", 8081).await?;
    let (api, standins, web) = (
        api_listener.local_addr()?,
        standins_listener.local_addr()?,
        web_listener.local_addr()?,
    );

    let standins_state = Standins::default();
    let standins_url = format!("http://{standins}");
    let fake_vapi = env.get("VAPI_BASE_URL").is_none();
    let fake_twilio = env.get("TWILIO_BASE_URL").is_none();
    if fake_vapi {
        env.set("VAPI_BASE_URL", format!("{standins_url}{VAPI_PREFIX}"));
        env.set("VAPI_PRIVATE_KEY", LOCAL_VAPI_KEY);
    }
    if fake_twilio {
        env.set(
            "TWILIO_BASE_URL",
            format!("{standins_url}{TWILIO_API_PREFIX}"),
        );
        env.set(
            "TWILIO_PRICING_BASE_URL",
            format!("{standins_url}{TWILIO_PRICING_PREFIX}"),
        );
        env.set(
            "TWILIO_ACCOUNTS_BASE_URL",
            format!("{standins_url}{TWILIO_ACCOUNTS_PREFIX}"),
        );
        env.set("TWILIO_MAIN_ACCOUNT_SID", LOCAL_TWILIO_MAIN_SID);
        env.set("TWILIO_MAIN_AUTH_TOKEN", LOCAL_TWILIO_MAIN_TOKEN);
        // What a search finds: area code 415 and toll-free numbers (see
        // `standins::seed_numbers`); the demo data takes out what it holds.
        standins_state.offer(seed_numbers());
    }
    // The key of the tokens' fingerprints: a documented local default (local
    // runs and tests only; deployed, a generated secret).
    if env.get("TOKEN_FINGERPRINT_KEY").is_none()
        && env.get("TOKEN_FINGERPRINT_SECRET_ARN").is_none()
    {
        env.set("TOKEN_FINGERPRINT_KEY", LOCAL_TOKEN_FINGERPRINT_KEY);
    }
    let reconcile_slot = ReconcileSlot::default();
    let audit_slot = AuditSlot::default();
    let delay = Duration::from_millis(env.parse_or("STANDINS_DELAY_MS", 0u64)?);
    let authorizer_slot = AuthorizerSlot::default();
    let app = reconcile::control_routes(reconcile_slot.clone())
        .merge(audit::control_routes(audit_slot.clone()))
        .merge(authorizer::control_routes(authorizer_slot.clone()))
        .merge(standins_state.router())
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                provider_delay(delay, req, next)
            },
        ));
    tokio::spawn(async move { axum::serve(standins_listener, app).await });

    // A Lambda instance serves one request at a time, so the functions keep one
    // pooled connection (`DB_POOL_SIZE` default 1). This one process serves every
    // route's requests concurrently, through each function's own pool: with a single
    // connection, one slow request (a save waiting on Vapi) would queue the rest until
    // they time out as `database_unavailable`.
    if env.get("DB_POOL_SIZE").is_none() {
        env.set("DB_POOL_SIZE", LOCAL_DB_POOL_SIZE.to_string());
    }
    let database = database::prepare(&env, aws).await?;
    let functions = Functions::from_env(&database.route_env, &database.reader_env, aws).await?;
    // Reconcile as deployed (the routes' login), on a schedule and on demand.
    let reconciler = Arc::new(LocalReconcile::from_env(&database.route_env, aws).await?);
    let _ = reconcile_slot.set(reconciler.clone());
    let every: u64 = env.parse_or("LOCAL_RECONCILE_SECS", 30)?;
    if every > 0 {
        reconciler.spawn_schedule(Duration::from_secs(every));
    }
    // The carrier audit as deployed, on demand (and on a schedule if asked).
    let auditor = Arc::new(LocalAudit::from_env(&database.route_env, aws).await?);
    let _ = audit_slot.set(auditor.clone());
    let audit_every: u64 = env.parse_or("LOCAL_AUDIT_SECS", 0)?;
    if audit_every > 0 {
        auditor.spawn_schedule(Duration::from_secs(audit_every));
    }
    // Demo data only against the stand-ins: never a demo credential at a real Vapi.
    if fake_vapi && fake_twilio {
        demo::seed(&functions, &database.owner, &standins_state).await?;
    } else {
        tracing::warn!("real providers configured: no demo data seeded");
    }

    let authorizer = LocalAuthorizer::from_env(&env, &format!("http://{api}"))?;
    let IdentityConfig {
        write_scope,
        read_scope,
        offboard_scope,
        ..
    } = IdentityConfig::from_env(&env);
    // The page reads, changes and (behind a typed confirmation) offboards: its
    // token carries all three scopes (none implies another).
    let token = authorizer.mint(
        DEMO_ORG,
        "demo-user",
        &[&read_scope, &write_scope, &offboard_scope],
        Duration::from_secs(12 * 3600),
    )?;
    let default_origins = format!("http://127.0.0.1:{0},http://localhost:{0}", web.port());
    let origins = env
        .get("CORS_ALLOW_ORIGINS")
        .unwrap_or(&default_origins)
        .to_owned();
    let gateway = Arc::new(Gateway {
        functions,
        authorizer,
        write_scope,
        read_scope,
        offboard_scope,
    });
    let _ = authorizer_slot.set(gateway.clone());
    // The issuer's JWKS, where API Gateway's authorizer would fetch it from.
    let jwks = gateway.authorizer.jwks();
    let app = Router::new()
        .route(
            "/.well-known/jwks.json",
            get(move || async move { Json(jwks) }),
        )
        .fallback(serve)
        .with_state(gateway.clone())
        .layer(cors(&origins));
    tokio::spawn(async move { axum::serve(api_listener, app).await });

    let web_dir = PathBuf::from(env.get("WEB_DIR").unwrap_or("web/dist"));
    if !web_dir.join("index.html").exists() {
        tracing::warn!(dir = %web_dir.display(), "no built telephony page (scripts/build-web.sh builds it)");
    }
    let app = web_app(web_dir, format!("http://{api}"), token.clone());
    tokio::spawn(async move { axum::serve(web_listener, app).await });

    Ok(Running {
        api,
        standins,
        web,
        token,
        standins_state,
        gateway,
    })
}
