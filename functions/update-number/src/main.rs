use lambda_http::{Request, service_fn};
use shared::config::{Env, aws_sdk_config};
use update_number::{Error, State, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let aws = aws_sdk_config().await;
    let state = State::from_env(&Env::from_process(), &aws).await?;
    let state = &state;
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, std::convert::Infallible>(handle(state, req).await)
    }))
    .await
}
