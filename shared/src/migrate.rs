//! The schema comes only from `migrations/`, embedded at build time and applied in
//! order by refinery (history in `refinery_schema_history`), by the schema's owner.
//!
//! Two runs never overlap: [`run`] holds a session advisory lock for the whole run
//! (the `migrate` function has reserved concurrency 1 as well; the lock also covers
//! a local run against the same database). Only migrations take it — no route ever
//! does, since an advisory lock pins an RDS Proxy connection.
//!
//! After the schema, the owner sets up the logins the functions use ([`Login`],
//! [`set_up_login`]): each is made a member of the group role migration V4 defines
//! (`telephony_route` or `telephony_read`), with its password stored as a SCRAM
//! verifier computed here (the clear password never reaches the server's logs), or
//! for IAM database auth granted `rds_iam` and no password.

use std::fmt;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

use crate::config::{ConfigError, SecretLoader};
use crate::db::{Db, DbError};

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// The advisory lock key of a migration run ("telemigr").
const LOCK_KEY: i64 = 0x7465_6c65_6d69_6772;
/// How long a run waits for another run's lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    #[error("another migration run held the lock for {0:?}; try again when it is done")]
    Locked(Duration),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("login {user:?}: {why}")]
    Login { user: String, why: String },
    /// The schema's privileges are not what the migrations set (see the message).
    #[error("{0}")]
    Privileges(String),
}

/// Apply every pending migration, under the migration lock; returns the names of
/// those applied now.
pub async fn run(db: &Db) -> Result<Vec<String>, MigrateError> {
    run_and_set_up(db, &[]).await
}

/// [`run`], then [`set_up_login`] for each of `logins` and take `CONNECT`/`TEMPORARY`
/// on this database away from `PUBLIC` (so a login of another database on the same
/// cluster cannot come in), all under the one lock: two runs never race on a login.
/// The connection is taken out of the pool and closed afterwards, so the session lock
/// cannot outlive the run.
pub async fn run_and_set_up(db: &Db, logins: &[Login]) -> Result<Vec<String>, MigrateError> {
    let mut client = deadpool_postgres::Object::take(db.dedicated_connection().await?);
    let started = Instant::now();
    loop {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(DbError::from)?;
        if row.get::<_, bool>(0) {
            break;
        }
        if started.elapsed() > LOCK_WAIT {
            return Err(MigrateError::Locked(started.elapsed()));
        }
        tracing::info!("another migration run holds the lock; waiting");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = locked_run(&mut client, logins).await;
    // Unlock even when a step failed; closing the connection would too.
    let _ = client
        .query_one("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    out
}

async fn locked_run(
    client: &mut tokio_postgres::Client,
    logins: &[Login],
) -> Result<Vec<String>, MigrateError> {
    let report = embedded::migrations::runner().run_async(client).await?;
    let applied = report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect();
    refuse_create_on_public(client).await?;
    if !logins.is_empty() {
        let database: String = client
            .query_one("SELECT current_database()", &[])
            .await
            .map_err(DbError::from)?
            .get(0);
        client
            .batch_execute(&format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE \"{}\" FROM PUBLIC",
                database.replace('"', "\"\"")
            ))
            .await
            .map_err(DbError::from)?;
    }
    for login in logins {
        set_up_login_on(client, login).await?;
    }
    Ok(applied)
}

/// The function roles must not be able to create objects in schema `public`.
/// Migration V4 revokes `CREATE` from `PUBLIC`, but a REVOKE by a role without the
/// grant option only warns (PostgreSQL ≤ 14, where the owner login does not own
/// `public`), so it is checked here, after every run, and the run fails saying
/// what to run.
async fn refuse_create_on_public(client: &tokio_postgres::Client) -> Result<(), MigrateError> {
    let rows = client
        .query(
            "SELECT r FROM unnest($1::text[]) AS r
              WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)
                AND has_schema_privilege(r, 'public', 'CREATE')",
            &[&[Grant::Route.role(), Grant::Read.role()].as_slice()],
        )
        .await
        .map_err(DbError::from)?;
    if rows.is_empty() {
        return Ok(());
    }
    let roles: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Err(MigrateError::Privileges(format!(
        "{} may still CREATE in schema public (migration V4's REVOKE had no effect: the \
         migrating owner does not own schema public, as on PostgreSQL 14 and older). As the \
         master user run `ALTER SCHEMA public OWNER TO <the owner login>` (or `REVOKE CREATE \
         ON SCHEMA public FROM PUBLIC`, and from {}), then migrate again",
        roles.join(" and "),
        roles.join(", ")
    )))
}

/// The group role a login is made a member of (migration V4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// `telephony_route`: the route functions and reconcile.
    Route,
    /// `telephony_read`: list-numbers.
    Read,
}

impl Grant {
    pub fn role(self) -> &'static str {
        match self {
            Grant::Route => "telephony_route",
            Grant::Read => "telephony_read",
        }
    }
}

/// How a login proves itself.
pub enum LoginAuth {
    /// A password (the login's DB secret); stored as a SCRAM-SHA-256 verifier.
    Password(SecretString),
    /// An RDS IAM auth token: the login is granted `rds_iam` and has no password.
    Iam,
}

/// A login role a function logs in as.
pub struct Login {
    pub user: String,
    pub grant: Grant,
    pub auth: LoginAuth,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match self.auth {
            LoginAuth::Password(_) => "password [REDACTED]",
            LoginAuth::Iam => "iam",
        };
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("grant", &self.grant)
            .field("auth", &auth)
            .finish()
    }
}

impl Login {
    /// The logins the `migrate` function sets up, from its environment:
    /// `DB_ROUTE_SECRET_ARN` / `DB_READER_SECRET_ARN` (the RDS secret layout, for
    /// password login), else `DB_ROUTE_USER` / `DB_READER_USER` with
    /// `DB_ROUTE_PASSWORD` / `DB_READER_PASSWORD` (local runs) or, under
    /// `DB_AUTH=iam`, without a password. A login none of these names is left alone.
    pub async fn from_env(secrets: &SecretLoader) -> Result<Vec<Login>, ConfigError> {
        let env = secrets.env();
        let iam = env.get("DB_AUTH") == Some("iam");
        let mut logins = Vec::new();
        for (grant, arn, user, password) in [
            (
                Grant::Route,
                "DB_ROUTE_SECRET_ARN",
                "DB_ROUTE_USER",
                "DB_ROUTE_PASSWORD",
            ),
            (
                Grant::Read,
                "DB_READER_SECRET_ARN",
                "DB_READER_USER",
                "DB_READER_PASSWORD",
            ),
        ] {
            if let Some(secret) = secrets.db_secret_named(arn).await? {
                logins.push(Login {
                    user: secret.username,
                    grant,
                    auth: LoginAuth::Password(secret.password),
                });
            } else if let Some(name) = env.get(user) {
                let auth = match (env.get(password), iam) {
                    (Some(p), _) => LoginAuth::Password(SecretString::from(p.to_owned())),
                    (None, true) => LoginAuth::Iam,
                    (None, false) => return Err(ConfigError::Missing(password)),
                };
                logins.push(Login {
                    user: name.to_owned(),
                    grant,
                    auth,
                });
            }
        }
        if let [a, b] = logins.as_slice()
            && a.user == b.user
        {
            return Err(ConfigError::invalid(
                "DB_READER_USER",
                "the route and read-only logins must be different users",
            ));
        }
        Ok(logins)
    }
}

/// A role name this code may put in SQL: plain lowercase identifier characters
/// (it is quoted as well).
fn valid_role_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 63
}

/// Create `login` if missing, let it log in (with its password's SCRAM verifier, or
/// `rds_iam`), and make it a member of its group role, in one transaction. Refuses a
/// login that is a superuser, the owner running this, has any role-level right
/// (CREATEROLE, CREATEDB, BYPASSRLS, REPLICATION) or another membership: a route must
/// never log in with more than its group's rights. Needs CREATEROLE; on PostgreSQL 16
/// also ADMIN OPTION on the group role (its creator has it) and on `rds_iam`.
pub async fn set_up_login(db: &Db, login: &Login) -> Result<(), MigrateError> {
    let mut client = db.dedicated_connection().await?;
    set_up_login_on(&mut client, login).await
}

async fn set_up_login_on(
    client: &mut tokio_postgres::Client,
    login: &Login,
) -> Result<(), MigrateError> {
    let user = &login.user;
    let refuse = |why: &str| MigrateError::Login {
        user: user.clone(),
        why: why.to_owned(),
    };
    if [Grant::Route, Grant::Read].iter().any(|g| g.role() == user)
        || user.starts_with("pg_")
        || user.starts_with("rds")
    {
        return Err(refuse(
            "it is a group or system role's name; a login must have a name of its own",
        ));
    }
    if !valid_role_name(user) {
        return Err(refuse(
            "a login name must be 1 to 63 of a-z, 0-9 and _, not starting with a digit",
        ));
    }
    let tx = client.transaction().await.map_err(DbError::from)?;
    // Memberships other than the groups and `rds_iam` are refused, except one: the
    // alternating-users pair of AWS's multi-user rotation, whose clone is made a
    // member of the original login (`GRANT <user> TO <user>_clone`). That pair login
    // is accepted only if it is itself a plain login of this same group, a member of
    // nothing else, so the membership grants nothing the group does not.
    let existing = tx
        .query_opt(
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication
                    OR rolname = current_user
                    OR EXISTS (
                        SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                         WHERE m.member = r.oid
                           AND g.rolname NOT IN ('telephony_route', 'telephony_read', 'rds_iam')
                           AND NOT (g.rolcanlogin AND NOT (g.rolsuper OR g.rolcreaterole OR g.rolcreatedb
                                                            OR g.rolbypassrls OR g.rolreplication)
                                    AND g.rolname <> current_user
                                    AND EXISTS (SELECT 1 FROM pg_auth_members gm JOIN pg_roles gg ON gg.oid = gm.roleid
                                                 WHERE gm.member = g.oid AND gg.rolname = $2)
                                    AND NOT EXISTS (SELECT 1 FROM pg_auth_members gm JOIN pg_roles gg ON gg.oid = gm.roleid
                                                     WHERE gm.member = g.oid
                                                       AND gg.rolname NOT IN ($2, 'rds_iam'))))
                    OR (SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                         WHERE m.member = r.oid
                           AND g.rolname NOT IN ('telephony_route', 'telephony_read', 'rds_iam')) > 1
               FROM pg_roles r WHERE rolname = $1",
            &[user, &login.grant.role()],
        )
        .await
        .map_err(DbError::from)?;
    if existing.as_ref().is_some_and(|r| r.get::<_, bool>(0)) {
        return Err(refuse(
            "it is a superuser, the schema's owner, has CREATEROLE/CREATEDB/BYPASSRLS/REPLICATION \
             or is a member of another role (other than its own group, rds_iam, or its \
             rotation pair: a plain login of the same group); give the functions a login of \
             their own",
        ));
    }
    let other = match login.grant {
        Grant::Route => Grant::Read,
        Grant::Read => Grant::Route,
    };
    let in_other = tx
        .query_opt(
            "SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                                        JOIN pg_roles r ON r.oid = m.member
              WHERE r.rolname = $1 AND g.rolname = $2",
            &[user, &other.role()],
        )
        .await
        .map_err(DbError::from)?;
    if in_other.is_some() {
        return Err(refuse(&format!(
            "it is already a member of {}; the route and read-only logins must differ",
            other.role()
        )));
    }
    may_grant(&tx, login).await?;
    let quoted = format!("\"{user}\"");
    if existing.is_none() {
        tx.batch_execute(&format!("CREATE ROLE {quoted} LOGIN"))
            .await
            .map_err(DbError::from)?;
    }
    let password = match &login.auth {
        LoginAuth::Password(p) => {
            let verifier = postgres_protocol::password::scram_sha_256(p.expose_secret().as_bytes());
            // The verifier is base64 and `$`/`:` only; never a quote.
            debug_assert!(!verifier.contains('\''));
            format!("'{verifier}'")
        }
        LoginAuth::Iam => "NULL".to_owned(),
    };
    tx.batch_execute(&format!(
        // Only LOGIN and PASSWORD: naming NOSUPERUSER/NOCREATEDB needs a superuser (RDS's
        // master user is not one); the attributes are checked above instead.
        "ALTER ROLE {quoted} LOGIN PASSWORD {password}; \
         GRANT {} TO {quoted}",
        login.grant.role()
    ))
    .await
    .map_err(DbError::from)?;
    let database: String = tx
        .query_one("SELECT current_database()", &[])
        .await
        .map_err(DbError::from)?
        .get(0);
    tx.batch_execute(&format!(
        "GRANT CONNECT ON DATABASE \"{}\" TO {quoted}",
        database.replace('"', "\"\"")
    ))
    .await
    .map_err(DbError::from)?;
    if matches!(login.auth, LoginAuth::Iam) {
        let rds_iam = tx
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam'", &[])
            .await
            .map_err(DbError::from)?;
        if rds_iam.is_none() {
            return Err(refuse(
                "DB_AUTH=iam, but this server has no rds_iam role (not RDS?)",
            ));
        }
        tx.batch_execute(&format!("GRANT rds_iam TO {quoted}"))
            .await
            .map_err(DbError::from)?;
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

/// Whether the migrating owner may add the login to its group (and to `rds_iam`
/// for IAM auth), as PostgreSQL decides it: ADMIN OPTION on the role, or, before
/// PostgreSQL 16, CREATEROLE. Since 16 CREATEROLE alone no longer adds members
/// ("such changes, including adding members, now require the role requesting the
/// change to have ADMIN OPTION"), so an owner set up as for 15 fails at the GRANT
/// with a bare permission error: checked first, with what to run instead.
async fn may_grant(
    tx: &tokio_postgres::Transaction<'_>,
    login: &Login,
) -> Result<(), MigrateError> {
    let mut roles = vec![login.grant.role()];
    if matches!(login.auth, LoginAuth::Iam) {
        roles.push("rds_iam");
    }
    let rows = tx
        .query(
            "SELECT r, current_user::text, current_setting('server_version_num')::int
               FROM unnest($1::text[]) AS r
              WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)
                AND NOT (pg_has_role(current_user, r, 'MEMBER WITH ADMIN OPTION')
                         OR (current_setting('server_version_num')::int < 160000
                             AND (SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user)))",
            &[&roles],
        )
        .await
        .map_err(DbError::from)?;
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let owner: String = first.get(1);
    let version: i32 = first.get(2);
    let missing: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let grants: Vec<String> = missing
        .iter()
        .map(|r| format!("GRANT {r} TO \"{owner}\" WITH ADMIN OPTION;"))
        .collect();
    Err(MigrateError::Privileges(format!(
        "the owner login {owner} may not add {} to {} (server version {version}): since \
         PostgreSQL 16 adding members needs ADMIN OPTION on the role, CREATEROLE is not \
         enough. As the role's creator or the master user run `{}`, then migrate again \
         (docs/deploy.md, \"Database roles\")",
        login.user,
        missing.join(" and "),
        grants.join(" ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_that_may_reach_sql() {
        for ok in ["telephony_app", "_x", "app2"] {
            assert!(valid_role_name(ok), "{ok}");
        }
        for bad in ["", "2app", "App", "a-b", "a\"b", "a b", &"a".repeat(64)] {
            assert!(!valid_role_name(bad), "{bad}");
        }
    }

    #[test]
    fn debug_of_a_login_is_redacted() {
        let l = Login {
            user: "app".into(),
            grant: Grant::Route,
            auth: LoginAuth::Password(SecretString::from("s3cr3t-never".to_owned())),
        };
        assert!(!format!("{l:?}").contains("s3cr3t"));
    }
}
