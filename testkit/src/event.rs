//! API Gateway HTTP API (payload 2.0) events for tests. The builder lives in
//! `shared::gateway_event` (the `gateway-event` feature, which this crate enables) so
//! the local API can build events without linking the test harness; it is re-exported
//! here, where the tests have always found it.

use serde_json::Value;

pub use shared::gateway_event::ApiEvent;

/// Status and JSON body of a handler's response.
pub fn read_response(resp: &lambda_http::Response<lambda_http::Body>) -> (u16, Value) {
    let body: &[u8] = resp.body().as_ref();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).expect("JSON response body")
    };
    (resp.status().as_u16(), json)
}
