//! `migrate`: applies `migrations/` to the database.
//!
//! Deployed as a Lambda in the VPC (invoke it once after each `sam deploy`, see the
//! README); run locally as a command (`cargo run -p migrate`) against `DATABASE_URL`.
//! Either way it reads the database settings the route functions read.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};
use shared::config::{Env, SecretLoader, aws_sdk_config};
use shared::db::{Db, DbConfig};

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn connect() -> Result<Db, Error> {
    let env = Env::from_process();
    let aws = aws_sdk_config().await;
    let secrets = SecretLoader::new(&env, &aws);
    let cfg = DbConfig::from_env(&secrets).await?;
    Ok(Db::new(&cfg)?.refetching_secret_from(secrets))
}

async fn apply(db: &Db) -> Result<Value, Error> {
    let applied = shared::migrate::run(db).await?;
    tracing::info!(?applied, "migrations applied");
    Ok(json!({ "applied": applied }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let db = connect().await?;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        let db = &db;
        lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| apply(db))).await
    } else {
        let out = apply(&db).await?;
        println!("{out}");
        Ok(())
    }
}
