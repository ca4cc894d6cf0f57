use lambda_http::{Request, service_fn};
use shared::config::{Env, aws_sdk_config};
use shared::db::Connect;
use update_number::{Error, State, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let env = Env::from_process();
    let aws = aws_sdk_config(&env)?;
    let state = State::open(&env, &aws, Connect::AT_INIT).await?;
    let state = &state;
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, std::convert::Infallible>(handle(state, req).await)
    }))
    .await
}
