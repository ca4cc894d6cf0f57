//! The cold-start benchmark's floor for the database routes (`scripts/bench.sh
//! coldstart`): only what list-numbers cannot avoid, built with the same `--release`
//! profile as the routes' bootstraps — the Lambda runtime loop (`lambda_http`), one
//! `tokio-postgres` connection opened at init with list-numbers' own settings (its
//! environment, `DbConfig::from_env`; the same TLS and login, `connect_unpooled`),
//! and list-numbers' status statement for the event's org, answered as a row count.
//! No pool, no tracing, no identity checks, no JSON of the numbers: a route's cold
//! start minus this one is what the route's own code costs ("floor + overhead").

use lambda_http::http::{StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Error, Request, RequestExt, Response, service_fn};
use shared::config::{Env, SecretLoader, aws_sdk_config};
use shared::db::{DbConfig, connect_unpooled};
use tokio_postgres::types::Type;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    let aws = aws_sdk_config(&env)?;
    let cfg = DbConfig::from_env(&SecretLoader::new(&env, &aws)).await?;
    let (client, _connection) = connect_unpooled(&cfg).await?;
    let client = &client;
    lambda_http::run(service_fn(move |req: Request| async move {
        let org = org_claim(&req).unwrap_or_default();
        let rows = client
            .query_typed(
                shared::numbers::status_sql(),
                &[(&org, Type::UUID), (&false, Type::BOOL)],
            )
            .await?;
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::Text(format!(r#"{{"rows":{}}}"#, rows.len())))
            .map_err(Error::from)
    }))
    .await
}

/// The `org_id` claim API Gateway passes on, as a UUID.
fn org_claim(req: &Request) -> Option<uuid::Uuid> {
    let Some(RequestContext::ApiGatewayV2(ctx)) = req.request_context_ref() else {
        return None;
    };
    let claims = &ctx.authorizer.as_ref()?.jwt.as_ref()?.claims;
    claims.get("org_id")?.parse().ok()
}
