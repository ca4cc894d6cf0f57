//! The connection pool behind [`Db`](super::Db): one pool per configuration, its
//! connector (TLS verified with rustls, or plain TCP on loopback; under IAM auth the
//! current token as the password) and its recycling rules.

use std::time::Duration;

use deadpool_postgres::{
    ConfigConnectImpl, Connect, Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod,
    Runtime,
};
use futures::future::BoxFuture;
use secrecy::ExposeSecret;
use tokio_postgres::Client;

use super::{DbAuth, DbConfig, DbError, TlsMode};
use crate::rds_iam::IamLogin;

fn tls_connector(cfg: &DbConfig) -> Result<tokio_postgres_rustls::MakeRustlsConnect, DbError> {
    let mut roots = crate::tls::mozilla_roots();
    if let Some(path) = &cfg.ca_file {
        crate::tls::add_pem_roots(&mut roots, path).map_err(DbError::Tls)?;
    }
    let config =
        crate::tls::database_client_config(roots).map_err(|e| DbError::Tls(e.to_string()))?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
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

/// One connection for `cfg`, outside any pool, with the pool's TLS and login (a
/// fresh IAM token under IAM auth): what the cold-start benchmark's floor peer opens,
/// so its figure is what any route pays for its first connection and nothing more.
pub async fn connect_unpooled(
    cfg: &DbConfig,
) -> Result<(Client, tokio::task::JoinHandle<()>), DbError> {
    let mut pg = cfg.pg_config();
    if let DbAuth::Iam(auth) = &cfg.auth {
        let login = IamLogin::new(auth.clone(), &cfg.host, cfg.port, &cfg.user);
        login.refresh().await?;
        if let Some(token) = login.token() {
            pg.password(token.expose_secret());
        }
    }
    let connected = match cfg.tls {
        TlsMode::Disable => {
            ConfigConnectImpl {
                tls: tokio_postgres::NoTls,
            }
            .connect(&pg)
            .await
        }
        TlsMode::VerifyFull => {
            ConfigConnectImpl {
                tls: tls_connector(cfg)?,
            }
            .connect(&pg)
            .await
        }
    };
    Ok(connected?)
}

/// The pool for `cfg`: at most `pool_size` connections, `Fast` recycling (sends
/// nothing), a connection older than `max_lifetime` replaced instead of reused. Under
/// IAM auth also the login whose token the pool's connections use.
pub(super) fn build_pool(cfg: &DbConfig) -> Result<(Pool, Option<IamLogin>), DbError> {
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
