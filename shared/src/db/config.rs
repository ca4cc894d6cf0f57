//! Where the database is and how to log in to it: [`DbConfig`], assembled from the
//! environment and the DB secret ([`DbConfig::from_env`]) or from a `DATABASE_URL`.
//!
//! Plain TCP is refused for anything but a loopback host, so a misconfigured
//! function cannot send its login in the clear.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::config::{ConfigError, SameSecret, SecretLoader};
use crate::rds_iam::RdsIamAuth;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// rustls, certificate and host name verified against Mozilla's roots (which
    /// include Amazon's, under which RDS Proxy presents its ACM certificate) plus
    /// `DB_CA_FILE` if set.
    VerifyFull,
    /// Plain TCP. Only accepted for loopback hosts.
    Disable,
}

impl std::str::FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "verify-full" => Ok(TlsMode::VerifyFull),
            "disable" => Ok(TlsMode::Disable),
            other => Err(format!("{other:?} is not verify-full or disable")),
        }
    }
}

/// How a connection logs in.
#[derive(Clone)]
pub enum DbAuth {
    /// The password of the DB secret (or of `DATABASE_URL`).
    Password(SecretString),
    /// An RDS IAM auth token, signed with the function's role (`DB_AUTH=iam`).
    Iam(RdsIamAuth),
}

impl fmt::Debug for DbAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbAuth::Password(_) => f.write_str("Password([REDACTED])"),
            DbAuth::Iam(auth) => f.debug_tuple("Iam").field(auth).finish(),
        }
    }
}

#[derive(Clone)]
pub struct DbConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: DbAuth,
    pub dbname: String,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub pool_size: usize,
    pub max_lifetime: Duration,
    pub connect_timeout: Duration,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 5432,
            user: "postgres".into(),
            auth: DbAuth::Password(SecretString::from(String::new())),
            dbname: "postgres".into(),
            tls: TlsMode::VerifyFull,
            ca_file: None,
            pool_size: 1,
            // RDS Proxy's default idle client timeout is 30 minutes.
            max_lifetime: Duration::from_secs(20 * 60),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("auth", &self.auth)
            .field("dbname", &self.dbname)
            .field("tls", &self.tls)
            .field("pool_size", &self.pool_size)
            .field("max_lifetime", &self.max_lifetime)
            .finish()
    }
}

impl SameSecret for DbConfig {
    /// Same place, same login. (Under IAM auth there is nothing to compare: each
    /// login signs its own token.)
    fn same_secret(&self, other: &Self) -> bool {
        let same_auth = match (&self.auth, &other.auth) {
            (DbAuth::Password(a), DbAuth::Password(b)) => a.expose_secret() == b.expose_secret(),
            (DbAuth::Iam(_), DbAuth::Iam(_)) => true,
            _ => false,
        };
        same_auth
            && self.host == other.host
            && self.port == other.port
            && self.user == other.user
            && self.dbname == other.dbname
    }
}

impl DbConfig {
    /// From the environment and the DB secret:
    ///
    /// - `DB_AUTH=password` (the default): the secret `DB_SECRET_ARN` names (see
    ///   [`SecretLoader::db_secret`]), or without it `DATABASE_URL`. `DB_HOST`/`DB_PORT`/
    ///   `DB_NAME` override (the RDS Proxy endpoint is not the instance host the
    ///   secret names).
    /// - `DB_AUTH=iam`: there is no database secret; `DB_HOST`, `DB_USER` (and
    ///   `DB_PORT`, `DB_NAME`) say where and as whom, and each login signs an IAM auth
    ///   token ([`crate::rds_iam`]).
    ///
    /// Then `DB_TLS` (`verify-full`|`disable`), `DB_CA_FILE`, `DB_POOL_SIZE`,
    /// `DB_MAX_LIFETIME_SECS`.
    pub async fn from_env(secrets: &SecretLoader) -> Result<Self, ConfigError> {
        let env = secrets.env();
        let iam = match env.get("DB_AUTH").unwrap_or("password") {
            "password" => false,
            "iam" => true,
            other => {
                return Err(ConfigError::invalid(
                    "DB_AUTH",
                    format!("{other:?} is not password or iam"),
                ));
            }
        };
        let mut cfg = if iam {
            if env.get("DB_SECRET_ARN").is_some() {
                return Err(ConfigError::invalid(
                    "DB_SECRET_ARN",
                    "is not read with DB_AUTH=iam (the login is an IAM token): unset it",
                ));
            }
            DbConfig {
                host: env.require("DB_HOST")?.to_owned(),
                user: env.require("DB_USER")?.to_owned(),
                auth: DbAuth::Iam(RdsIamAuth::from_sdk_config(secrets.aws())?),
                ..DbConfig::default()
            }
        } else {
            match secrets.db_secret().await? {
                Some(s) => DbConfig {
                    host: s.host.unwrap_or_default(),
                    port: s.port.unwrap_or(5432),
                    user: s.username,
                    auth: DbAuth::Password(s.password),
                    dbname: s.dbname.unwrap_or_else(|| "postgres".into()),
                    ..DbConfig::default()
                },
                None => DbConfig::from_url(env.require("DATABASE_URL")?)?,
            }
        };
        if let Some(h) = env.get("DB_HOST") {
            cfg.host = h.to_owned();
        }
        cfg.port = env.parse_or("DB_PORT", cfg.port)?;
        if let Some(n) = env.get("DB_NAME") {
            cfg.dbname = n.to_owned();
        }
        cfg.tls = match env.get("DB_TLS") {
            Some(v) => v
                .parse()
                .map_err(|e: String| ConfigError::invalid("DB_TLS", e))?,
            None => cfg.tls,
        };
        cfg.ca_file = env.get("DB_CA_FILE").map(Into::into);
        cfg.pool_size = env.parse_or("DB_POOL_SIZE", cfg.pool_size)?;
        cfg.max_lifetime =
            Duration::from_secs(env.parse_or("DB_MAX_LIFETIME_SECS", cfg.max_lifetime.as_secs())?);
        if cfg.host.is_empty() {
            return Err(ConfigError::Missing("DB_HOST"));
        }
        cfg.check_tls()?;
        Ok(cfg)
    }

    /// From a `postgres://user:pass@host:port/db?sslmode=disable` URL. `sslmode=disable`
    /// selects plain TCP; anything else means verified TLS.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::invalid("DATABASE_URL", why);
        // tokio-postgres' own parser; its errors do not echo the URL (and its password).
        let pg: tokio_postgres::Config = url.parse().map_err(|_| bad("not a postgres URL"))?;
        let host = match pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => return Err(bad("needs a TCP host")),
        };
        let password = pg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        Ok(Self {
            host,
            port: pg.get_ports().first().copied().unwrap_or(5432),
            user: pg.get_user().unwrap_or("postgres").to_owned(),
            auth: DbAuth::Password(SecretString::from(password)),
            dbname: pg.get_dbname().unwrap_or("postgres").to_owned(),
            tls: if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
                TlsMode::Disable
            } else {
                TlsMode::VerifyFull
            },
            ..Self::default()
        })
    }

    /// Plain TCP leaves the machine only over loopback.
    fn check_tls(&self) -> Result<(), ConfigError> {
        let loopback = self.host == "localhost"
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if self.tls == TlsMode::Disable && !loopback {
            return Err(ConfigError::invalid(
                "DB_TLS",
                format!(
                    "TLS may only be disabled for a loopback host, not {}",
                    self.host
                ),
            ));
        }
        Ok(())
    }

    /// The password, when logging in with one.
    pub fn password(&self) -> Option<&SecretString> {
        match &self.auth {
            DbAuth::Password(p) => Some(p),
            DbAuth::Iam(_) => None,
        }
    }

    /// Without a password under IAM auth: the connector adds the current token.
    pub(super) fn pg_config(&self) -> tokio_postgres::Config {
        let mut pg = tokio_postgres::Config::new();
        if let Some(password) = self.password() {
            pg.password(password.expose_secret());
        }
        pg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("telephony")
            .connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        pg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tcp_only_on_loopback() {
        let mut cfg =
            DbConfig::from_url("postgres://u:p@127.0.0.1:5432/db?sslmode=disable").unwrap();
        assert_eq!(cfg.tls, TlsMode::Disable);
        assert!(cfg.check_tls().is_ok());
        cfg.host = "proxy.example.internal".into();
        assert!(cfg.check_tls().is_err());
        let cfg = DbConfig::from_url("postgres://u:p@proxy.example.internal/db").unwrap();
        assert_eq!(cfg.tls, TlsMode::VerifyFull);
    }

    #[test]
    fn debug_hides_password() {
        let cfg = DbConfig::from_url("postgres://u:hunter2pass@127.0.0.1/db").unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2pass"));
        let err = DbConfig::from_url("postgres://u:hunter2pass@[bad")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("hunter2pass"));
    }
}
