//! Postgres through RDS Proxy.
//!
//! A Lambda instance serves one request at a time, so its pool holds one connection
//! (`DB_POOL_SIZE`, default 1), reused across invocations. Nothing here creates the
//! session state the proxy pins a connection for — no statement cache (named
//! prepared statements kept across requests), no `SET`, no advisory lock — and
//! queries go through `query_typed` (one round trip, an unnamed statement). That
//! reduces pinning, it does not rule it out: AWS's RDS Proxy guide lists the
//! extended query protocol itself among the causes for PostgreSQL, so
//! `DatabaseConnectionsCurrentlySessionPinned` is the metric to watch after a
//! deploy (docs/deploy.md sizes `MaxConnectionsPercent` with that in mind). Recycling sends nothing (`RecyclingMethod::Fast`), and a
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
//!
//! Here: the [`Db`] handle and its retry rules. Where to connect and how to log in
//! is in `config`, the pool and its connector in `pool`.

mod config;
mod pool;

pub use config::{DbAuth, DbConfig, TlsMode};

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use deadpool_postgres::{Object, Pool, PoolError};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use crate::config::{Rotating, SecretLoader};
use crate::rds_iam::{IamLogin, IamTokenError};

use pool::build_pool;
pub use pool::connect_unpooled;

/// How long a function's init waits for its connection ([`Db::open_alongside`] with
/// [`Connect::AtColdStart`]: the connect and any warm-up together): well inside Lambda's 10 s init limit; a database
/// slower than this is left to the first request.
pub const COLD_START_CONNECT: std::time::Duration = std::time::Duration::from_secs(3);

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

/// When a function's init opens its database connection ([`Db::open_alongside`]).
#[derive(Debug, Clone, Copy)]
pub enum Connect {
    /// On the first request (tests, the local API, tools).
    Lazily,
    /// During init, within this bound, with the route's warm-up ([`COLD_START_CONNECT`]).
    AtColdStart(std::time::Duration),
}

impl Connect {
    /// A Lambda function's `main`: during init, within [`COLD_START_CONNECT`].
    pub const AT_INIT: Connect = Connect::AtColdStart(COLD_START_CONNECT);
}

impl Db {
    /// A function's database at init: its configuration and login
    /// ([`DbConfig::from_env`]), the pool (fetching the secret again on a refused
    /// password), then with [`Connect::AtColdStart`] the instance's connection and
    /// `warm_up` ([`Db::warm_up_at_cold_start`]) — all while `alongside` runs: the
    /// function's other secrets. Under IAM auth there is no database secret to wait
    /// for, so the connection's round trips (TCP, TLS, login, warm-up) run beside the
    /// secrets' instead of after them (docs/cold-start.md); under password auth the
    /// connection waits for its own secret, fetched beside the others.
    pub async fn open_alongside<T, E: Into<crate::error::BoxError>>(
        secrets: &SecretLoader,
        connect: Connect,
        warm_up: impl AsyncFnOnce(&Db) -> Result<(), DbError>,
        alongside: impl Future<Output = Result<T, E>>,
    ) -> Result<(Db, T), crate::error::BoxError> {
        // Boxed: the SDK's secret fetch and the warm-up are large futures, and a caller
        // that builds several states in one task (the local API) would carry them
        // all on its stack.
        let db = Box::pin(async {
            let cfg = DbConfig::from_env(secrets).await?;
            let db = Db::new(&cfg)?.refetching_secret_from(secrets.clone());
            if let Connect::AtColdStart(within) = connect {
                db.warm_up_at_cold_start(within, warm_up).await;
            }
            Ok::<_, crate::error::BoxError>(db)
        });
        let alongside = Box::pin(async { alongside.await.map_err(Into::into) });
        tokio::try_join!(db, alongside)
    }

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

    /// [`Db::warm_up_at_cold_start`] with nothing to warm up: the connection only.
    ///
    /// What buy-number and save-credential do (through [`Db::open_alongside`] with a
    /// warm-up that does nothing): their first statements write, in a
    /// transaction, so no warm-up can run them without a change. A generic one that
    /// read each table the write routes use (by keys no row has) made their init
    /// ≈ 3–4 ms longer and saved only ≈ 1.5–2.3 ms of their first request
    /// (`scripts/bench.sh coldstart`, two same-run comparisons): it loaded more than
    /// one request needs. The warm-ups kept are a route's own first statements
    /// (release-number, update-number), which under IAM auth run while the provider
    /// secrets are fetched ([`Db::open_alongside`]); list-numbers' was dropped (issue
    /// 26: its cold start was 0.3–9.8 ms longer with it in every benchmark shape).
    pub async fn connect_at_cold_start(&self, within: std::time::Duration) {
        self.warm_up_at_cold_start(within, async |_: &Db| Ok(()))
            .await
    }

    /// Opens the instance's connection during the Lambda init phase, so the first
    /// request finds it in the pool instead of paying for the connect and the login
    /// (TCP, TLS, SCRAM or an IAM token: most of a route's first-request cost, issue
    /// 14), then runs `warm_up` on it: what the route's first request reads, for rows
    /// that do not exist, so a fresh backend loads those tables' catalog entries and
    /// this process runs those code paths before the first request instead of during
    /// it. Same-run comparisons (`scripts/bench.sh coldstart`, issue 14), first
    /// request against warm: release-number 3.2–3.8 → 1.3 ms (warm 0.7),
    /// update-number 7.4–8.3 → 4.6–5.0 ms (warm 2.4); the cold start (init + first
    /// request) within ±1 ms then, the warm-up's own statements being the price. A
    /// warm-up whose statement the first request plans again costs a cold start
    /// more than it saves (list-numbers', measured and dropped in issue 26). Init runs before the first request is handed over, at full
    /// CPU where an invocation gets its memory's share, and with provisioned
    /// concurrency it runs ahead of any request. Both steps together are
    /// bounded by `within`; a failure is logged and left to the first request, which
    /// connects as it always did (and a connection the proxy dropped while the
    /// instance waited is replaced by [`Db::query`]'s retry). The warm-up goes
    /// through the same `query_typed` path as every request: nothing is left on the
    /// connection that would pin it at the proxy.
    pub async fn warm_up_at_cold_start(
        &self,
        within: std::time::Duration,
        warm_up: impl AsyncFnOnce(&Db) -> Result<(), DbError>,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        let bound = |step: &'static str| {
            tracing::warn!(
                timeout_ms = within.as_millis() as u64,
                step,
                "the cold-start database work did not finish within its bound; the first request does it"
            )
        };
        match tokio::time::timeout_at(deadline, self.connection()).await {
            Ok(Ok(_returned_to_the_pool)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "no database connection at cold start; the first request connects");
                return;
            }
            Err(_) => return bound("connect"),
        }
        match tokio::time::timeout_at(deadline, warm_up(self)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the cold-start warm-up query failed"),
            Err(_) => {
                bound("warm-up");
                // Its statement is still running on the connection, which went back
                // to the pool when the warm-up was dropped: the first request would
                // queue behind it. Take it out of the pool (it closes once that
                // statement ends: tokio-postgres reads every pending answer before
                // it hangs up); the first request connects afresh.
                self.current_pool().0.retain(|_, _| false);
            }
        }
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
