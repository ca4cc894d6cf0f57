//! The local database split as a deployment splits it: `DATABASE_URL` is the
//! schema's owner, which applies the migrations and seeds the demo; the functions log
//! in as their own roles, set up the way `migrate` sets them up deployed — the routes
//! as `<database>_route_login` (group `telephony_route`), list-numbers as
//! `<database>_read_login` (group `telephony_read`). The `_login` keeps a database
//! named `telephony` (run-local's) from naming a login after a group role.
//!
//! Locally both logins share the owner's password: whoever has the owner's URL has
//! everything anyway, and so two local APIs (or a restart) on one database agree on
//! them. Deployed, each login has its own secret (docs/deploy.md).

use secrecy::ExposeSecret;
use shared::config::{Env, SecretLoader};
use shared::db::{Db, DbConfig, TlsMode};
use shared::migrate::{self, Grant, Login, LoginAuth};

use crate::gateway::BoxError;

/// The owner's pool and the environments the functions start from.
pub struct LocalDatabase {
    pub owner: Db,
    /// `DATABASE_URL` as the route login.
    pub route_env: Env,
    /// `DATABASE_URL` as list-numbers' read-only login.
    pub reader_env: Env,
}

/// The login name for `dbname` and `suffix` (`<dbname>_<suffix>_login`): lowercase
/// identifier characters, at most 63 bytes.
pub fn login_name(dbname: &str, suffix: &str) -> String {
    let suffix = format!("{suffix}_login");
    let base: String = dbname
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .take(63 - suffix.len() - 2)
        .collect();
    let base = if base.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{base}")
    } else {
        base
    };
    format!("{base}_{suffix}")
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Migrate as the owner, set up both logins, and give each its `DATABASE_URL`.
pub async fn prepare(env: &Env, aws: &aws_config::SdkConfig) -> Result<LocalDatabase, BoxError> {
    let cfg = DbConfig::from_env(&SecretLoader::new(env, aws)).await?;
    let password = cfg
        .password()
        .ok_or("the local API logs in with DATABASE_URL's password")?
        .expose_secret()
        .to_owned();
    let owner = Db::new(&cfg)?;
    let applied = migrate::run(&owner).await?;
    tracing::info!(?applied, "migrations applied");
    let sslmode = match cfg.tls {
        TlsMode::Disable => "disable",
        _ => "require",
    };
    let mut envs = Vec::new();
    for (grant, suffix) in [(Grant::Route, "route"), (Grant::Read, "read")] {
        let user = login_name(&cfg.dbname, suffix);
        migrate::set_up_login(
            &owner,
            &Login {
                user: user.clone(),
                grant,
                auth: LoginAuth::Password(password.clone().into()),
            },
        )
        .await?;
        let mut e = env.clone();
        e.set(
            "DATABASE_URL",
            format!(
                "postgres://{}:{}@{}:{}/{}?sslmode={sslmode}",
                encode(&user),
                encode(&password),
                cfg.host,
                cfg.port,
                encode(&cfg.dbname)
            ),
        );
        envs.push(e);
    }
    let reader_env = envs.pop().ok_or("two logins")?;
    let route_env = envs.pop().ok_or("two logins")?;
    Ok(LocalDatabase {
        owner,
        route_env,
        reader_env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_are_identifiers() {
        assert_eq!(login_name("telephony", "route"), "telephony_route_login");
        assert_eq!(login_name("Ev-1", "read"), "ev_1_read_login");
        assert_eq!(login_name("9db", "read"), "_9db_read_login");
        assert!(login_name(&"x".repeat(80), "route").len() <= 63);
    }
}
