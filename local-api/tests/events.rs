//! Every file in `events/` goes through its function's real handler, against local
//! services (a fresh database with the demo data, the stand-ins, the local keyring),
//! and answers the status the README's "Sample events" table promises for it. So
//! `sam local invoke <Function> -e events/<file>.json` does what the README says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use local_api::gateway::Functions;
use testkit::TestDb;

mod common;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `events/<file>` → (template function, status) from the README's table rows
/// `` | `events/x.json` | `Function` | 200 … | ``.
fn promised() -> BTreeMap<String, (String, u16)> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    readme
        .lines()
        .filter(|l| l.starts_with("| `events/"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
            let status = cells[3]
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no status in README row: {l}"));
            (cells[1].to_owned(), (cells[2].to_owned(), status))
        })
        .collect()
}

#[tokio::test]
async fn every_sample_event_answers_what_the_readme_promises() {
    let db = TestDb::new().await;
    let running = common::start_local(&db).await;

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

    for (file, (function, status)) in &promised {
        let text = std::fs::read_to_string(repo().join(file)).expect("event file");
        let req = lambda_http::request::from_str(&text)
            .unwrap_or_else(|e| panic!("{file} is not an API Gateway HTTP API 2.0 event: {e}"));
        let route_key = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx.route_key.clone().unwrap_or_default(),
            _ => panic!("{file}: not a payload 2.0 event"),
        };
        assert_eq!(
            Functions::function_for(&route_key),
            Some(function.as_str()),
            "{file}: routeKey {route_key} is served by another function than the README says"
        );
        let resp = running.gateway.functions.dispatch(req).await;
        let (got, body) = testkit::event::read_response(&resp);
        assert_eq!(got, *status, "{file}: {body}");
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
}
