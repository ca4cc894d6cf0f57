//! `migrate`: applies `migrations/` to the database.
//!
//! Deployed as a Lambda in the VPC (invoke it once after each `sam deploy`, see the
//! README); run locally as a command (`cargo run -p migrate`) against `DATABASE_URL`.
//! Either way it reads the database settings the route functions read, logging in
//! as the schema's owner (its own `DB_SECRET_ARN` / `DB_USER`), and after the schema
//! sets up the logins the functions use (`DB_ROUTE_*`, `DB_READER_*`: see
//! `shared::migrate::Login::from_env`). A failed run is a failed invocation
//! (`FunctionError` set), which `scripts/migrate-deployed.sh` turns into a failed
//! deploy step.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};
use shared::config::{Env, SecretLoader, aws_sdk_config};
use shared::db::{Db, DbConfig};
use shared::migrate::{self, Login};

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn connect() -> Result<(Db, SecretLoader), Error> {
    let env = Env::from_process();
    let aws = aws_sdk_config(&env)?;
    let secrets = SecretLoader::new(&env, &aws);
    let cfg = DbConfig::from_env(&secrets).await?;
    Ok((
        Db::new(&cfg)?.refetching_secret_from(secrets.clone()),
        secrets,
    ))
}

async fn apply(db: &Db, secrets: &SecretLoader) -> Result<Value, Error> {
    // Read at each run, so a rotated login secret is picked up by the next deploy;
    // set up under the same migration lock as the schema.
    let to_set_up = Login::from_env(secrets).await?;
    let applied = migrate::run_and_set_up(db, &to_set_up).await?;
    tracing::info!(?applied, "migrations applied");
    let logins: Vec<_> = to_set_up
        .iter()
        .map(|l| {
            tracing::info!(user = %l.user, role = l.grant.role(), "login set up");
            json!({ "user": l.user, "role": l.grant.role() })
        })
        .collect();
    Ok(json!({ "applied": applied, "logins": logins }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let (db, secrets) = connect().await?;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        let (db, secrets) = (&db, &secrets);
        lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| apply(db, secrets))).await
    } else {
        let out = apply(&db, &secrets).await?;
        println!("{out}");
        Ok(())
    }
}
