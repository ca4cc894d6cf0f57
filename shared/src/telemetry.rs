//! JSON log lines for CloudWatch Logs Insights: every line carries the fields of the
//! request span (request id, route, org id). Library logs are capped at `info` so a
//! `RUST_LOG=debug` never prints SDK or HTTP internals (headers, signed requests).

use tracing_subscriber::Registry;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

const LIBRARY_CAPS: &[&str] = &[
    "aws_smithy_runtime=info",
    "aws_smithy_runtime_api=info",
    "aws_smithy_http=info",
    "aws_smithy_types=info",
    "aws_config=info",
    // At trace it prints the canonical request, which for an RDS auth token holds the
    // session token.
    "aws_sigv4=info",
    "aws_credential_types=info",
    "aws_sdk_kms=info",
    "aws_sdk_secretsmanager=info",
    "hyper=info",
    "hyper_util=info",
    "reqwest=info",
    "h2=info",
    "rustls=info",
    "tokio_postgres=info",
    "deadpool=info",
    "deadpool_postgres=info",
    "lambda_runtime=info",
    "lambda_http=info",
];

/// `RUST_LOG`-style directives (`info`, `debug,shared=trace`; targets and levels
/// only) as a static filter, with [`LIBRARY_CAPS`] applied last so they win. A
/// directive that does not parse is skipped: a typo must not silence the logs.
fn filter(directives: &str) -> Targets {
    let mut f = Targets::new().with_default(LevelFilter::INFO);
    for d in directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        f = match d.split_once('=') {
            None => match d.parse::<LevelFilter>() {
                Ok(level) => f.with_default(level),
                Err(_) => f,
            },
            Some((target, level)) => match level.parse::<LevelFilter>() {
                Ok(level) => f.with_target(target, level),
                Err(_) => f,
            },
        };
    }
    for cap in LIBRARY_CAPS {
        if let Some((target, level)) = cap.split_once('=')
            && let Ok(level) = level.parse::<LevelFilter>()
        {
            f = f.with_target(target, level);
        }
    }
    f
}

/// The subscriber, writing JSON lines to `writer`. Used by [`init`] and by tests
/// that capture logs.
pub fn subscriber<W>(directives: &str, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    Registry::default().with(filter(directives)).with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .flatten_event(true),
    )
}

/// Install the global subscriber (stdout; `RUST_LOG`, default `info`). Once per
/// process, at cold start.
pub fn init() {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing::subscriber::set_global_default(subscriber(&directives, std::io::stdout));
}
