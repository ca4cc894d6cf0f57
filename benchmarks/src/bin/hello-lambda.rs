//! The cold-start benchmark's floor (`scripts/bench.sh coldstart`): a hello-world
//! `lambda_http` function, built with the same `--release` profile as the routes'
//! bootstraps, answering every request 200 with a small JSON body. No tracing, no
//! configuration, no clients: what any `lambda_http` binary pays at minimum.

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_req: Request| async {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::Text(r#"{"hello":"world"}"#.to_owned()))
            .map_err(Error::from)
    }))
    .await
}
