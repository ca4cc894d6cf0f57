use lambda_http::{Request, service_fn};
use rotate_credential::{Error, State, handle};
use shared::config::{Env, aws_sdk_config};
use shared::db::COLD_START_CONNECT;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let aws = aws_sdk_config(&env)?;
    let state = State::from_env(&env, &aws).await?;
    // Its first statements write: connect only (see Db::connect_at_cold_start).
    state.db.connect_at_cold_start(COLD_START_CONNECT).await;
    let state = &state;
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, std::convert::Infallible>(handle(state, req).await)
    }))
    .await
}
