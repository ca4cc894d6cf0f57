//! The local stand-in for API Gateway's JWT authorizer, signing and verifying as
//! deployed: RS256 only (API Gateway: "Currently, only RSA-based algorithms are
//! supported"), its public key served as a JWKS at `/.well-known/jwks.json` on the
//! API's own address (the default issuer), so a token that works locally is one a
//! real issuer could have made. HS256, `none` and every other algorithm are refused,
//! as are a wrong `kid`, issuer or audience, an expired token and one not yet valid.
//!
//! The key: `LOCAL_JWT_KEY_FILE` (PKCS#8 PEM), made there once if missing (as the
//! local keyring's dev key is: `scripts/run-local.sh` keeps it in `.local/`), so
//! tokens outlive a restart; without it, a key made once per process (tests).

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};
use shared::config::Env;

use crate::gateway::BoxError;

pub struct LocalAuthorizer {
    signing: EncodingKey,
    verifying: DecodingKey,
    /// The public key as a JWK (`kty`, `n`, `e`, `kid`, `alg`, `use`).
    jwk: Value,
    kid: String,
    pub issuer: String,
    pub audience: String,
}

/// A process's key when no file is named: made once (an RSA-2048 key takes tens
/// of milliseconds; tests start many local APIs).
static PROCESS_KEY: OnceLock<String> = OnceLock::new();

impl LocalAuthorizer {
    /// `api` is the local API's address: the default issuer (`LOCAL_JWT_ISSUER`
    /// overrides it), whose `/.well-known/jwks.json` the API serves.
    pub fn from_env(env: &Env, api: &str) -> Result<Self, BoxError> {
        let pem = match env.get("LOCAL_JWT_KEY_FILE") {
            Some(path) => key_file(Path::new(path))?,
            None => match PROCESS_KEY.get() {
                Some(pem) => pem.clone(),
                None => PROCESS_KEY
                    .get_or_init(|| new_key().unwrap_or_default())
                    .clone(),
            },
        };
        let der = pem_body(&pem).ok_or("LOCAL_JWT_KEY_FILE: not a PKCS#8 PEM private key")?;
        let pair = KeyPair::from_pkcs8(&der).map_err(|e| format!("the local JWT key: {e}"))?;
        let public = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let (n, e) = (
            URL_SAFE_NO_PAD.encode(&public.n),
            URL_SAFE_NO_PAD.encode(&public.e),
        );
        // The key's id: a digest of its modulus, stable across restarts with one file.
        let kid = URL_SAFE_NO_PAD.encode(
            &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &public.n).as_ref()[..12],
        );
        Ok(Self {
            signing: EncodingKey::from_rsa_pem(pem.as_bytes())?,
            verifying: DecodingKey::from_rsa_components(&n, &e)?,
            jwk: json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e}),
            kid,
            issuer: env.get("LOCAL_JWT_ISSUER").unwrap_or(api).to_owned(),
            audience: env
                .get("LOCAL_JWT_AUDIENCE")
                .unwrap_or("telephony-local")
                .to_owned(),
        })
    }

    /// The JWKS document (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// A token for `org` acting as `sub` with `scopes`, valid for `ttl`.
    pub fn mint(
        &self,
        org: &str,
        sub: &str,
        scopes: &[&str],
        ttl: Duration,
    ) -> Result<String, BoxError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        self.sign(&json!({
            "iss": self.issuer, "aud": self.audience, "sub": sub, "org_id": org,
            "scope": scopes.join(" "), "iat": now, "nbf": now, "exp": now + ttl.as_secs(),
        }))
    }

    /// Any claims, signed with this authorizer's key (RS256, its `kid`): for tests
    /// and `POST /__control/token`, which need tokens with odd claims.
    pub fn sign(&self, claims: &Value) -> Result<String, BoxError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.signing)?)
    }

    /// The verified claims as API Gateway hands them to Lambda (every value a
    /// string; arrays as `[a b]`), and the token's scopes.
    pub fn verify(&self, headers: &HeaderMap) -> Option<(Map<String, Value>, Vec<String>)> {
        let token = headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        // The header first: RS256 with this key's id, nothing else (jsonwebtoken
        // refuses another algorithm than the validation's too).
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::RS256 || header.kid.as_deref() != Some(self.kid.as_str()) {
            return None;
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &self.verifying, &validation).ok()?;
        let mut claims = Map::new();
        for (k, v) in data.claims {
            let s = match v {
                Value::String(s) => s,
                Value::Array(items) => format!(
                    "[{}]",
                    items
                        .iter()
                        .map(|i| i
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| i.to_string()))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                other => other.to_string(),
            };
            claims.insert(k, Value::String(s));
        }
        let scopes = claims
            .get("scope")
            .and_then(Value::as_str)
            .map(|s| {
                s.split(' ')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Some((claims, scopes))
    }
}

/// The key file's PEM, made (readable by its owner only) when it does not exist.
fn key_file(path: &Path) -> Result<String, BoxError> {
    match std::fs::read_to_string(path) {
        Ok(pem) => Ok(pem),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pem = new_key()?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            write_private(path, &pem)?;
            tracing::info!(path = %path.display(), "made the local JWT signing key (RS256)");
            Ok(pem)
        }
        Err(e) => Err(format!("LOCAL_JWT_KEY_FILE {}: {e}", path.display()).into()),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// A new RSA-2048 key as PKCS#8 PEM.
fn new_key() -> Result<String, BoxError> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| "could not make an RSA key")?;
    let der = pair.as_der().map_err(|_| "could not encode the RSA key")?;
    let b64 = STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

/// The DER inside a `PRIVATE KEY` PEM.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PRIVATE KEY-----")?
        .strip_suffix("-----END PRIVATE KEY-----")?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).ok()
}

/// Where the control endpoint finds the authorizer, made after the stand-ins'
/// port is already serving.
pub type AuthorizerSlot = std::sync::Arc<OnceLock<std::sync::Arc<crate::gateway::Gateway>>>;

/// `POST /__control/token` on the stand-ins' port: a token signed as the local
/// authorizer signs, with the demo org's claims (both scopes and the offboard
/// scope, an hour) and the body's `claims` over them (`null` removes one). For
/// clients and tests that need a token with odd claims, without the key.
pub fn control_routes(slot: AuthorizerSlot) -> axum::Router {
    axum::Router::new()
        .route("/__control/token", axum::routing::post(token))
        .with_state(slot)
}

async fn token(
    axum::extract::State(slot): axum::extract::State<AuthorizerSlot>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let bad = |why: String| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({ "message": why })),
        )
            .into_response()
    };
    let Some(gw) = slot.get() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"message": "the local API is still starting"})),
        )
            .into_response();
    };
    let extra = if body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(mut o)) => match o.remove("claims") {
                Some(Value::Object(c)) => c,
                None => Map::new(),
                Some(_) => return bad("claims must be an object".into()),
            },
            Ok(_) => return bad("the body must be {\"claims\": {…}}".into()),
            Err(e) => return bad(e.to_string()),
        }
    };
    let a = &gw.authorizer;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut claims = Map::new();
    for (k, v) in [
        ("iss", json!(a.issuer)),
        ("aud", json!(a.audience)),
        ("sub", json!("someone")),
        ("org_id", json!(crate::demo::DEMO_ORG)),
        (
            "scope",
            json!(format!(
                "{} {} {}",
                gw.read_scope, gw.write_scope, gw.offboard_scope
            )),
        ),
        ("iat", json!(now)),
        ("nbf", json!(now)),
        ("exp", json!(now + 3600)),
    ] {
        claims.insert(k.to_owned(), v);
    }
    for (k, v) in extra {
        if v.is_null() {
            claims.remove(&k);
        } else {
            claims.insert(k, v);
        }
    }
    match a.sign(&Value::Object(claims)) {
        Ok(token) => axum::Json(json!({ "token": token })).into_response(),
        Err(e) => bad(e.to_string()),
    }
}
