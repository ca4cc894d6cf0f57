//! The AWS SDK's HTTP client (`shared::config::ReqwestSdkClient`, installed by
//! `aws_sdk_config`): what it sends, and how the SDK's retries see its failures.
//! Secrets Manager is played by wiremock speaking its JSON protocol; the emulator
//! tests (config_secrets, envelope_kms) cover the happy path against moto.

use std::time::{Duration, Instant};

use serde_json::json;
use shared::config::{Env, aws_sdk_config};
use wiremock::matchers::{header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:vapi-AbCdEf";

fn client_for(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let env = Env::from_pairs([("AWS_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", endpoint)]);
    aws_sdk_secretsmanager::Client::new(&aws_sdk_config(&env).expect("sdk config"))
}

/// Secrets Manager's answer: `status` with a JSON 1.1 body.
fn answer(status: u16, body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/x-amz-json-1.1")
        .set_body_json(body)
}

async fn get(client: &aws_sdk_secretsmanager::Client) -> Result<String, String> {
    client
        .get_secret_value()
        .secret_id(ARN)
        .send()
        .await
        .map(|o| o.secret_string().unwrap_or_default().to_owned())
        .map_err(|e| format!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)))
}

#[tokio::test]
async fn a_signed_json_request_and_its_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/"))
        .and(header("x-amz-target", "secretsmanager.GetSecretValue"))
        .and(header("content-type", "application/x-amz-json-1.1"))
        .and(header_exists("authorization"))
        .and(header_exists("x-amz-date"))
        .respond_with(answer(
            200,
            json!({"ARN": ARN, "Name": "vapi", "SecretString": "{\"privateKey\":\"k\"}"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        get(&client_for(&server.uri())).await.unwrap(),
        r#"{"privateKey":"k"}"#
    );
    let sent = &server.received_requests().await.unwrap()[0];
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body, json!({"SecretId": ARN}));
    let auth = sent.headers.get("authorization").unwrap().to_str().unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=")
            && auth.contains("/us-east-1/secretsmanager/aws4_request"),
        "{auth}"
    );
}

#[tokio::test]
async fn a_service_error_is_the_service_s_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            answer(400, json!({"__type": "ResourceNotFoundException", "message": "Secrets Manager can't find the specified secret."})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = get(&client_for(&server.uri())).await.unwrap_err();
    assert!(err.contains("ResourceNotFoundException"), "{err}");
}

#[tokio::test]
async fn a_server_error_is_retried_by_the_sdk() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(answer(
            500,
            json!({"__type": "InternalServiceError", "message": "boom"}),
        ))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(answer(
            200,
            json!({"ARN": ARN, "Name": "vapi", "SecretString": "s"}),
        ))
        .mount(&server)
        .await;
    assert_eq!(get(&client_for(&server.uri())).await.unwrap(), "s");
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        3,
        "two 500s, then the answer"
    );
}

/// The SDK's error for an endpoint on `port` that fails at the connection: an I/O
/// dispatch failure, which its retry strategy counts as transient.
async fn assert_io_failure(port: u16) {
    let err = client_for(&format!("http://127.0.0.1:{port}"))
        .get_secret_value()
        .secret_id(ARN)
        .send()
        .await
        .unwrap_err();
    // Typed, not by the message: "connection" alone contains "io".
    match &err {
        aws_sdk_secretsmanager::error::SdkError::DispatchFailure(f) => {
            assert!(f.is_io(), "not an I/O failure: {err:?}")
        }
        other => panic!("not a dispatch failure: {other:?}"),
    }
}

#[tokio::test]
async fn a_dropped_connection_is_transient_and_retried() {
    // An endpoint that accepts and closes at once: an I/O failure the SDK's standard
    // retry strategy retries, three attempts in all.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let closer = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    assert_io_failure(port).await;
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    closer.abort();
}

#[tokio::test]
async fn a_refused_connection_is_an_io_failure() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    assert_io_failure(port).await;
}

#[tokio::test]
async fn a_silent_endpoint_times_out_by_the_sdk_s_read_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let env = Env::from_pairs([
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", server.uri().as_str()),
    ]);
    let aws = aws_sdk_config(&env).unwrap();
    let conf = aws_sdk_secretsmanager::config::Builder::from(&aws)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .read_timeout(Duration::from_millis(200))
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let client = aws_sdk_secretsmanager::Client::from_conf(conf);
    let started = Instant::now();
    let err = get(&client).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("timeout") || err.contains("timed out"),
        "{err}"
    );
}
