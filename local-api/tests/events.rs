//! Every file in `events/` goes through its function's real handler (the local API's
//! dispatch by route key knows every route's function), against local services of
//! its own (a fresh database with the demo data, the stand-ins, the local keyring),
//! and answers the status the README's "Sample events" table promises for it. So
//! `sam local invoke <Function> -e events/<file>.json` does what the README says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use testkit::TestDb;

mod common;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// What the README promises for one event. (That its function column names the
/// function serving the event's route is checked against template.yaml by
/// scripts/sam-check.sh.)
#[derive(Clone)]
struct Promise {
    status: u16,
    /// For a refusal: the error code (the first `code` in the row's last cell).
    code: Option<String>,
    /// A scheduled event (`report \`outcome\``): the run's report says `outcome`.
    report: Option<String>,
}

/// `events/<file>` → its promise, from the README's table rows
/// `` | `events/x.json` | `Function` | 404 `code`, … | ``.
fn promised() -> BTreeMap<String, Promise> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    readme
        .lines()
        .filter(|l| l.starts_with("| `events/"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
            if cells[3].starts_with("report") {
                let outcome = cells[3].split('`').nth(1).map(str::to_owned);
                let promise = Promise {
                    status: 0,
                    code: None,
                    report: outcome,
                };
                return (cells[1].to_owned(), promise);
            }
            let status = cells[3]
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no status in README row: {l}"));
            let code = cells[3].split('`').nth(1).map(str::to_owned);
            let promise = Promise {
                status,
                code: code.filter(|_| status >= 400),
                report: None,
            };
            (cells[1].to_owned(), promise)
        })
        .collect()
}

/// How many events run at once, each against its own database and local API.
const CONCURRENT: usize = 4;

/// Each event runs against a fresh database with the demo data and fresh stand-ins,
/// as `sam local invoke` of that one file against a fresh `scripts/run-local.sh`
/// would: the table's promises hold for each file on its own, in any order (a
/// release of `+14155550101` does not decide what a later update of it answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sample_event_answers_what_the_readme_promises() {
    let promised = promised();
    let mut files: Vec<String> = std::fs::read_dir(repo().join("events"))
        .expect("events/")
        .map(|e| format!("events/{}", e.expect("entry").file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    let listed: Vec<String> = promised.keys().cloned().collect();
    assert_eq!(
        files, listed,
        "every file in events/ has a row in the README's Sample events table, and every row a file"
    );

    let failures: Vec<String> = futures::stream::iter(promised.iter())
        .map(|(file, promise)| async move {
            tokio::spawn(check_event(file.clone(), promise.clone()))
                .await
                .err()
                .map(|e| format!("{file}: {e}"))
        })
        .buffer_unordered(CONCURRENT)
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One event through its function's handler, against fresh local services.
async fn check_event(file: String, promise: Promise) {
    let Promise {
        status,
        code,
        report,
    } = promise;
    let text = std::fs::read_to_string(repo().join(&file)).expect("event file");
    if let Some(outcome) = report {
        return check_scheduled(&file, &text, &outcome).await;
    }
    let req = lambda_http::request::from_str(&text)
        .unwrap_or_else(|e| panic!("{file} is not an API Gateway HTTP API 2.0 event: {e}"));
    assert!(
        matches!(
            req.request_context_ref(),
            Some(RequestContext::ApiGatewayV2(_))
        ),
        "{file}: not a payload 2.0 event"
    );
    let db = TestDb::new().await;
    let running = common::start_local(&db).await;
    let (db_before, providers_before) = (db.dump().await, running.standins_state.state());
    let resp = running.gateway.functions.dispatch(req).await;
    let (got, body) = testkit::event::read_response(&resp);
    assert_eq!(got, status, "{file}: {body}");
    if let Some(code) = code {
        assert_eq!(body["error"]["code"], code.as_str(), "{file}: {body}");
        assert_eq!(
            db.dump().await,
            db_before,
            "{file}: a refusal changed the database"
        );
        assert_eq!(
            running.standins_state.state(),
            providers_before,
            "{file}: a refusal reached a provider"
        );
    }
    assert!(
        resp.headers().contains_key("x-request-id"),
        "{file}: no x-request-id"
    );
    if got >= 400 {
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{file}: error shape {body}"
        );
    }
}

/// A scheduled event (EventBridge's shape), run as the local API runs its function:
/// `POST /__control/audit` with the event as the body answers the run's report.
async fn check_scheduled(file: &str, text: &str, outcome: &str) {
    let event: serde_json::Value = serde_json::from_str(text).expect("event JSON");
    assert_eq!(
        event["source"], "aws.events",
        "{file}: not a scheduled event"
    );
    assert!(
        file.ends_with("audit.json"),
        "{file}: only the audit has a scheduled sample event"
    );
    let db = TestDb::new().await;
    let running = common::start_local(&db).await;
    let report: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/__control/audit", running.standins))
        .json(&event)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("report");
    assert_eq!(report["outcome"], outcome, "{file}: {report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{file}: {report}");
}
