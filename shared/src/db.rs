//! Postgres through RDS Proxy.
//!
//! A Lambda instance serves one request at a time, so its pool holds one connection
//! (`DB_POOL_SIZE`, default 1), reused across invocations. Nothing here creates
//! session state the proxy would pin a connection for: queries go through
//! `query_typed` (one round trip, unnamed statement), there is no statement cache, no
//! `SET`, no advisory lock. Recycling sends nothing (`RecyclingMethod::Fast`), and a
//! connection older than `DB_MAX_LIFETIME_SECS` (below the proxy's idle timeout) is
//! replaced instead of reused.
//!
//! The configuration comes from the environment and the DB secret
//! ([`DbConfig::from_env`]).
//!
//! Login is with the DB secret's password, or with an IAM auth token signed per
//! [`crate::rds_iam`] (`DB_AUTH=iam`): the pool's connector hands each new connection
//! the token [`IamLogin::refresh`] keeps young, refreshed before every checkout.
//!
//! A connection the proxy dropped while the instance was frozen fails on first use.
//! [`Db::query`] and [`Db::transaction`] retry exactly that once: a single statement
//! that is safe to repeat, and a transaction whose `BEGIN` failed has done nothing.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use deadpool_postgres::{
    ConfigConnectImpl, Connect, Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError,
    RecyclingMethod, Runtime,
};
use futures::future::BoxFuture;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::Client;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use crate::config::{ConfigError, Rotating, SameSecret, SecretLoader};
use crate::rds_iam::{IamLogin, IamTokenError, RdsIamAuth};

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
    fn pg_config(&self) -> tokio_postgres::Config {
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

/// What [`Db`]'s rotating credentials are, for the log.
const SECRET: &str = "the database secret";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database connection: {0}")]
    Pool(#[from] PoolError),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The credentials could not be fetched again after a 28P01.
    #[error("database secret: {0}")]
    Secret(String),
    #[error("database login: {0}")]
    IamToken(#[from] IamTokenError),
    /// A row that does not have the shape the code expects (a bug or a bad migration).
    #[error("unexpected row: {0}")]
    Shape(String),
}

impl DbError {
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            DbError::Query(e) => e.code(),
            DbError::Pool(PoolError::Backend(e)) => e.code(),
            _ => None,
        }
    }

    /// The connection, not the statement, failed (see [`connection_lost`]): the
    /// statement's outcome is unknown if it was sent.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, DbError::Query(e) if connection_lost(e))
    }

    /// The constraint a violation names, for mapping to a 4xx.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            DbError::Query(e) => e.as_db_error().and_then(|d| d.constraint()),
            _ => None,
        }
    }
}

/// A database handle: the pool plus the retry rules above. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    /// The pool and the configuration it was built from; replaced as a whole when
    /// the credentials are fetched again.
    pool: Arc<RwLock<(Pool, Arc<DbConfig>)>>,
    /// The configuration, and where it came from: when the server refuses the
    /// password (28P01, the secret was rotated under a warm instance), it is fetched
    /// again once and the pool rebuilt if it changed. Fixed: tests, `DATABASE_URL`.
    credentials: Arc<Rotating<DbConfig>>,
    /// Under IAM auth: the token the pool's connector logs in with.
    iam: Option<IamLogin>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("status", &self.status())
            .field("refetches_secret", &self.credentials.refetches())
            .field("iam", &self.iam)
            .finish()
    }
}

fn tls_connector(cfg: &DbConfig) -> Result<tokio_postgres_rustls::MakeRustlsConnect, DbError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &cfg.ca_file {
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| DbError::Tls(e.to_string()))? {
            let cert = cert.map_err(|e| DbError::Tls(e.to_string()))?;
            roots.add(cert).map_err(|e| DbError::Tls(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl Db {
    /// Builds the pool; connects lazily on first use (cold start does no I/O here).
    pub fn new(cfg: &DbConfig) -> Result<Self, DbError> {
        let (pool, iam) = build_pool(cfg)?;
        Ok(Self {
            pool: Arc::new(RwLock::new((pool, Arc::new(cfg.clone())))),
            credentials: Arc::new(Rotating::fixed(SECRET, cfg.clone())),
            iam,
        })
    }

    /// Fetch the credentials again through `secrets` ([`DbConfig::from_env`]) when the
    /// server refuses the password (28P01), once per refusal, and rebuild the pool if
    /// they changed. (Under IAM auth there is no secret: a refused token is signed
    /// afresh on the next login.)
    pub fn refetching_secret_from(mut self, secrets: SecretLoader) -> Self {
        let cfg = DbConfig::clone(&self.credentials.current());
        self.credentials = Arc::new(Rotating::refetched(SECRET, cfg, Some(secrets), |s| {
            Box::pin(DbConfig::from_env(s))
        }));
        self
    }

    /// The pool in use and the configuration it was built from.
    fn current_pool(&self) -> (Pool, Arc<DbConfig>) {
        self.pool
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The pool for `cfg`, which replaces the one in use unless that one was already
    /// built from it (by a concurrent refusal).
    fn pool_for(&self, cfg: Arc<DbConfig>) -> Result<Pool, DbError> {
        let mut slot = self.pool.write().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&slot.1, &cfg) {
            let (pool, _) = build_pool(&cfg)?;
            *slot = (pool, cfg);
        }
        Ok(slot.0.clone())
    }

    async fn connection(&self) -> Result<Object, DbError> {
        if let Some(iam) = &self.iam {
            // A failed re-signing need not fail the query: an open connection needs no
            // login, and the last token may still be valid. With no token at all there
            // is nothing to try.
            if let Err(e) = iam.refresh().await {
                if iam.token().is_none() {
                    return Err(e.into());
                }
                tracing::warn!(error = %e, "could not sign a new database auth token; using the last one");
            }
        }
        let (pool, used) = self.current_pool();
        match pool.get().await {
            Err(PoolError::Backend(e)) if e.code() == Some(&SqlState::INVALID_PASSWORD) => {
                let refused = PoolError::Backend(e);
                if let Some(iam) = &self.iam {
                    iam.forget();
                    tracing::error!(
                        "the database refused the IAM auth token (28P01): the role needs \
                         rds-db:connect on the proxy's dbuser ARN, and the proxy must take \
                         IAM auth for this user"
                    );
                    return Err(refused.into());
                }
                if !self.credentials.refetches() {
                    return Err(refused.into());
                }
                tracing::warn!(
                    "the database refused the password (28P01); fetching its secret again once"
                );
                match self.credentials.refetch_if_changed(&used).await {
                    Err(e) => Err(DbError::Secret(e.to_string())),
                    // The same password: the refusal stands.
                    Ok(None) => Err(refused.into()),
                    Ok(Some(fresh)) => Ok(self.pool_for(fresh)?.get().await?),
                }
            }
            other => Ok(other?),
        }
    }

    /// Run one statement outside a transaction (`query_typed`: one round trip, an
    /// unnamed statement). If the pooled connection turns out to be dead it is retried
    /// once on a fresh one, so use this only for statements that are safe to repeat:
    /// reads, and conditional updates whose repeat cannot do the work twice.
    pub async fn query(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, DbError> {
        let client = self.connection().await?;
        match client.query_typed(sql, params).await {
            Err(e) if connection_lost(&e) => {
                tracing::warn!("pooled database connection was dead; reconnecting once");
                drop(Object::take(client));
                let client = self.connection().await?;
                Ok(client.query_typed(sql, params).await?)
            }
            other => Ok(other?),
        }
    }

    /// [`Db::query`] expecting at most one row.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Option<Row>, DbError> {
        let mut rows = self.query(sql, params).await?;
        if rows.len() > 1 {
            return Err(DbError::Shape(format!(
                "expected at most one row, got {}",
                rows.len()
            )));
        }
        Ok(rows.pop())
    }

    /// [`Db::query`] expecting exactly one row.
    pub async fn query_one(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Row, DbError> {
        self.query_opt(sql, params)
            .await?
            .ok_or_else(|| DbError::Shape("expected one row, got none".into()))
    }

    /// Run `f` in a transaction and commit if it returns `Ok`. A dead pooled
    /// connection shows at `BEGIN`, before anything was done, so only that is retried.
    pub async fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, E>,
        E: From<DbError>,
    {
        let mut client = self.connection().await?;
        match tokio_postgres::Client::transaction(&mut client).await {
            Ok(tx) => return commit_after(tx, f).await,
            Err(e) if connection_lost(&e) => {
                tracing::warn!("pooled database connection was dead at BEGIN; reconnecting once");
            }
            Err(e) => return Err(DbError::from(e).into()),
        }
        drop(Object::take(client));
        let mut client = self.connection().await?;
        let tx = tokio_postgres::Client::transaction(&mut client)
            .await
            .map_err(DbError::from)?;
        commit_after(tx, f).await
    }

    /// A pooled connection for work that needs the client itself (migrations).
    pub async fn dedicated_connection(&self) -> Result<Object, DbError> {
        self.connection().await
    }

    /// The pool's state (size, idle), for tests and diagnostics.
    pub fn status(&self) -> deadpool_postgres::Status {
        self.current_pool().0.status()
    }
}

/// Opens the pool's connections: over `tls`, and under IAM auth with the current
/// token as the password.
struct Connector {
    tls: Box<dyn Connect>,
    iam: Option<IamLogin>,
}

impl Connect for Connector {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>> {
        // Under IAM auth `Db::connection` made sure a token exists before asking the
        // pool (without one, tokio-postgres refuses: "password missing").
        let Some(token) = self.iam.as_ref().and_then(IamLogin::token) else {
            return self.tls.connect(pg_config);
        };
        let mut pg_config = pg_config.clone();
        pg_config.password(token.expose_secret());
        self.tls.connect(&pg_config)
    }
}

/// The pool for `cfg`: at most `pool_size` connections, `Fast` recycling (sends
/// nothing), a connection older than `max_lifetime` replaced instead of reused. Under
/// IAM auth also the login whose token the pool's connections use.
fn build_pool(cfg: &DbConfig) -> Result<(Pool, Option<IamLogin>), DbError> {
    let login = match &cfg.auth {
        DbAuth::Password(_) => None,
        DbAuth::Iam(auth) => Some(IamLogin::new(auth.clone(), &cfg.host, cfg.port, &cfg.user)),
    };
    let tls: Box<dyn Connect> = match cfg.tls {
        TlsMode::Disable => Box::new(ConfigConnectImpl {
            tls: tokio_postgres::NoTls,
        }),
        TlsMode::VerifyFull => Box::new(ConfigConnectImpl {
            tls: tls_connector(cfg)?,
        }),
    };
    let connector = Connector {
        tls,
        iam: login.clone(),
    };
    let manager = Manager::from_connect(
        cfg.pg_config(),
        connector,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let max_lifetime = cfg.max_lifetime;
    Pool::builder(manager)
        .max_size(cfg.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(cfg.connect_timeout))
        .pre_recycle(Hook::sync_fn(move |_, metrics| {
            if metrics.age() > max_lifetime {
                Err(HookError::message("connection reached its max lifetime"))
            } else {
                Ok(())
            }
        }))
        .build()
        .map_err(|e| DbError::Tls(e.to_string()))
        .map(|pool| (pool, login))
}

/// The connection, not the statement, failed: closed under us, reset, or the server
/// said it is terminating the session (`pg_terminate_backend`, a restart, a failover).
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    let shutdown = [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
    ];
    e.is_closed()
        || e.code().is_some_and(|c| shutdown.contains(c))
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

async fn commit_after<T, E, F>(tx: tokio_postgres::Transaction<'_>, f: F) -> Result<T, E>
where
    F: AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, E>,
    E: From<DbError>,
{
    let out = f(&tx).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(out)
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
