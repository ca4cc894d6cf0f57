//! IAM authentication to RDS Proxy (`DB_AUTH=iam`).
//!
//! Instead of a password, a login presents an auth token: a SigV4-presigned URL for
//! `Action=connect&DBUser=<user>` on service `rds-db`, signed with the function's own
//! role credentials. The proxy checks it against the role's `rds-db:connect` permission
//! on `arn:aws:rds-db:<region>:<account>:dbuser:<proxy resource id>/<user>`, so the
//! function needs no database secret at all.
//!
//! A token is checked only at login and is valid for 15 minutes; an open connection
//! outlives it. So [`IamLogin`] signs one before a connection is opened and reuses it
//! for further logins while it is younger than [`REUSE_FOR`] (signing needs the
//! credentials, which may come from a provider that makes a network call), and never
//! past a minute before the signing credentials expire.
//!
//! Hand-written on `aws-sigv4` (the SDK's own signer, already in the tree) rather than
//! taking `aws-sdk-rds`'s `AuthTokenGenerator`: that crate is the whole RDS control-plane
//! client, a large compile for these few lines. The output is checked against the SDK
//! generator's published test vector and against botocore's
//! `generate_db_auth_token` for credentials with a session token (as Lambda's are).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_async::time::SharedTimeSource;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::SecretString;

use crate::config::ConfigError;

/// How long a token is valid (the most RDS accepts).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// A cached token is used for new logins while younger than this, leaving 5 minutes
/// of margin for clock skew and a slow connect.
pub const REUSE_FOR: Duration = Duration::from_secs(10 * 60);

/// SigV4's unreserved characters: everything else in a query value is %-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Debug, thiserror::Error)]
pub enum IamTokenError {
    #[error("no AWS credentials to sign an RDS auth token: {0}")]
    Credentials(String),
    #[error("signing the RDS auth token failed: {0}")]
    Signing(String),
}

/// Who signs: the region of the proxy, the role's credentials and a clock. Built from
/// the shared AWS SDK configuration.
#[derive(Clone)]
pub struct RdsIamAuth {
    region: String,
    credentials: SharedCredentialsProvider,
    clock: SharedTimeSource,
}

impl fmt::Debug for RdsIamAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RdsIamAuth")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl RdsIamAuth {
    /// Region and credentials come from the SDK's standard chain (in Lambda: the
    /// runtime's `AWS_REGION` and the execution role); the clock is the SDK's, so tests
    /// can fix it.
    pub fn from_sdk_config(aws: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        let region = aws.region().ok_or(ConfigError::Missing("AWS_REGION"))?;
        let credentials = aws
            .credentials_provider()
            .ok_or_else(|| ConfigError::Invalid {
                name: "DB_AUTH",
                why: "iam needs AWS credentials and the SDK found no credentials provider".into(),
            })?;
        Ok(Self {
            region: region.to_string(),
            credentials,
            clock: aws.time_source().unwrap_or_default(),
        })
    }

    /// The token for logging in as `user` at `host:port` at time `at`: the presigned
    /// URL without its `https://`.
    pub fn sign(
        &self,
        credentials: Credentials,
        host: &str,
        port: u16,
        user: &str,
        at: SystemTime,
    ) -> Result<SecretString, IamTokenError> {
        let signing_error = |e: &dyn fmt::Display| IamTokenError::Signing(e.to_string());
        let identity = Identity::from(credentials);
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(TOKEN_LIFETIME);
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("rds-db")
            .time(at)
            .settings(settings)
            .build()
            .map_err(|e| signing_error(&e))?
            .into();
        let url = format!(
            "https://{host}:{port}/?Action=connect&DBUser={}",
            utf8_percent_encode(user, QUERY_VALUE)
        );
        let request = SignableRequest::new(
            "GET",
            url.as_str(),
            std::iter::empty(),
            SignableBody::empty(),
        )
        .map_err(|e| signing_error(&e))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| signing_error(&e))?
            .into_parts();
        // The signature goes last, as botocore and the other SDKs write it (the server
        // sorts the parameters before checking, so the order is cosmetic).
        let mut params: Vec<_> = instructions.params().iter().collect();
        params.sort_by_key(|(name, _)| *name == "X-Amz-Signature");
        let mut token = url["https://".len()..].to_owned();
        for (name, value) in params {
            token.push('&');
            token.push_str(name);
            token.push('=');
            token.extend(utf8_percent_encode(value, QUERY_VALUE));
        }
        Ok(SecretString::from(token))
    }
}

/// The logins of one pool (one host, port and user): signs a token when none is young
/// enough and hands the cached one to each new connection. Cheap to clone; clones
/// share the cached token.
#[derive(Clone)]
pub struct IamLogin {
    auth: RdsIamAuth,
    host: String,
    port: u16,
    user: String,
    cached: Arc<Mutex<Option<Signed>>>,
}

struct Signed {
    token: SecretString,
    /// Sign a new one for logins from this time on.
    reuse_until: SystemTime,
}

impl fmt::Debug for IamLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamLogin")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl IamLogin {
    pub fn new(auth: RdsIamAuth, host: &str, port: u16, user: &str) -> Self {
        Self {
            auth,
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            cached: Arc::default(),
        }
    }

    /// Make sure a token fit for reuse is cached: sign one if the cached one is older
    /// than [`REUSE_FOR`], near its credentials' expiry, or forgotten. Called before
    /// the pool may open a connection. On an error the last token (if any) stays.
    pub async fn refresh(&self) -> Result<(), IamTokenError> {
        let now = self.auth.clock.now();
        if self.lock().as_ref().is_some_and(|s| now < s.reuse_until) {
            return Ok(());
        }
        let credentials = self
            .auth
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| {
                IamTokenError::Credentials(
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
                )
            })?;
        let mut reuse_until = now + REUSE_FOR;
        if let Some(expiry) = credentials.expiry() {
            let margin = expiry.checked_sub(Duration::from_secs(60));
            reuse_until = reuse_until.min(margin.unwrap_or(SystemTime::UNIX_EPOCH));
        }
        let token = self
            .auth
            .sign(credentials, &self.host, self.port, &self.user, now)?;
        *self.lock() = Some(Signed { token, reuse_until });
        Ok(())
    }

    /// The last token signed, if any (for the pool's connector).
    pub fn token(&self) -> Option<SecretString> {
        self.lock().as_ref().map(|s| s.token.clone())
    }

    /// The proxy refused the token: sign a new one for the next login. (It stays
    /// until then, so a concurrent login never goes without one.)
    pub fn forget(&self) {
        if let Some(signed) = self.lock().as_mut() {
            signed.reuse_until = SystemTime::UNIX_EPOCH;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Signed>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_async::time::StaticTimeSource;
    use secrecy::ExposeSecret;
    use std::time::UNIX_EPOCH;

    fn auth(region: &str, at_secs: u64) -> RdsIamAuth {
        RdsIamAuth {
            region: region.into(),
            credentials: SharedCredentialsProvider::new(Credentials::new(
                "akid", "secret", None, None, "test",
            )),
            clock: SharedTimeSource::new(StaticTimeSource::from_secs(at_secs)),
        }
    }

    /// The published test vector of the AWS SDK for Rust's RDS `AuthTokenGenerator`
    /// (aws-sdk-rds, `auth_token.rs`, test `signing_works`): same inputs, same token.
    #[test]
    fn token_matches_the_sdk_generators_test_vector() {
        let token = auth("us-east-1", 0)
            .sign(
                Credentials::new("akid", "secret", None, None, "test"),
                "prod-instance.us-east-1.rds.amazonaws.com",
                3306,
                "peccy",
                UNIX_EPOCH + Duration::from_secs(1_724_709_600),
            )
            .unwrap();
        assert_eq!(
            token.expose_secret(),
            "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=peccy\
             &X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Frds-db%2Faws4_request\
             &X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=dd0cba843009474347af724090233265628ace491ea17ce3eb3da098b983ad89"
        );
    }

    #[test]
    fn session_token_is_signed_and_encoded() {
        let sign = |session: Option<&str>| {
            auth("eu-west-1", 0)
                .sign(
                    Credentials::new("akid", "secret", session.map(Into::into), None, "test"),
                    "proxy.example.internal",
                    5432,
                    "app user",
                    UNIX_EPOCH + Duration::from_secs(1_724_709_600),
                )
                .unwrap()
                .expose_secret()
                .to_owned()
        };
        let signature = |token: &str| {
            let (_, rest) = token.split_once("X-Amz-Signature=").unwrap();
            rest.split('&').next().unwrap().to_owned()
        };
        let with_session = sign(Some("tok/en+="));
        assert!(
            with_session
                .starts_with("proxy.example.internal:5432/?Action=connect&DBUser=app%20user&")
        );
        assert!(with_session.contains("%2Feu-west-1%2Frds-db%2Faws4_request&"));
        assert!(
            with_session.contains("&X-Amz-Security-Token=tok%2Fen%2B%3D&X-Amz-Signature="),
            "{with_session}"
        );
        // The session token is part of what is signed.
        assert_ne!(signature(&with_session), signature(&sign(None)));
        assert_ne!(signature(&with_session), signature(&sign(Some("other"))));
    }

    #[tokio::test]
    async fn a_token_is_reused_while_young_and_forgotten_on_demand() {
        let login = IamLogin::new(auth("us-east-1", 1_724_709_600), "h", 5432, "u");
        assert!(login.token().is_none());
        login.refresh().await.unwrap();
        let first = login.token().unwrap();
        login.refresh().await.unwrap();
        assert_eq!(
            login.token().unwrap().expose_secret(),
            first.expose_secret()
        );
        assert!(!format!("{login:?}").contains(first.expose_secret()));
    }

    /// What botocore's `generate_db_auth_token` returns for these inputs (botocore
    /// 1.44.8, its clock frozen at 2024-08-26T22:00:00Z, session token `tok/en+=`).
    #[test]
    fn token_with_a_session_token_matches_botocore() {
        let token = auth("eu-west-1", 0)
            .sign(
                Credentials::new("akid", "secret", Some("tok/en+=".into()), None, "test"),
                "proxy.example.internal",
                5432,
                "app_user",
                UNIX_EPOCH + Duration::from_secs(1_724_709_600),
            )
            .unwrap();
        assert_eq!(
            token.expose_secret(),
            "proxy.example.internal:5432/?Action=connect&DBUser=app_user\
             &X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=akid%2F20240826%2Feu-west-1%2Frds-db%2Faws4_request\
             &X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
             &X-Amz-Security-Token=tok%2Fen%2B%3D\
             &X-Amz-Signature=cff0c14d1edb908f4027a48aac4b79b442ce0b84ba9f7d07a121c774d3c24e3c"
        );
    }

    #[tokio::test]
    async fn a_forgotten_token_is_resigned_but_kept_until_then() {
        let clock = Arc::new(Mutex::new(UNIX_EPOCH + Duration::from_secs(1_724_709_600)));
        #[derive(Debug)]
        struct Clock(Arc<Mutex<SystemTime>>);
        impl aws_smithy_async::time::TimeSource for Clock {
            fn now(&self) -> SystemTime {
                *self.0.lock().unwrap()
            }
        }
        let mut a = auth("us-east-1", 0);
        a.clock = SharedTimeSource::new(Clock(clock.clone()));
        let login = IamLogin::new(a, "h", 5432, "u");
        login.refresh().await.unwrap();
        let first = login.token().unwrap().expose_secret().to_owned();
        *clock.lock().unwrap() += Duration::from_secs(1);
        login.forget();
        assert_eq!(login.token().unwrap().expose_secret(), first);
        login.refresh().await.unwrap();
        assert_ne!(login.token().unwrap().expose_secret(), first);
    }

    #[tokio::test]
    async fn reuse_ends_a_minute_before_the_credentials_expire() {
        let now = UNIX_EPOCH + Duration::from_secs(1_724_709_600);
        let expiring = Credentials::new(
            "akid",
            "secret",
            Some("session".into()),
            Some(now + Duration::from_secs(3 * 60)),
            "test",
        );
        let mut a = auth("us-east-1", 1_724_709_600);
        a.credentials = SharedCredentialsProvider::new(expiring);
        let login = IamLogin::new(a, "h", 5432, "u");
        login.refresh().await.unwrap();
        let reuse_until = login.lock().as_ref().unwrap().reuse_until;
        assert_eq!(reuse_until, now + Duration::from_secs(2 * 60));
    }
}
