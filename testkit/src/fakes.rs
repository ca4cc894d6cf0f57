//! Local servers that speak Vapi's and Twilio's documented APIs, built on wiremock:
//! each test mounts the exact calls it expects (method, path, auth, body) and the
//! responses, in the providers' real error JSON, and asserts what was sent.

use serde_json::{Value, json};
use wiremock::matchers::{basic_auth, bearer_token};
use wiremock::{MockBuilder, MockServer, ResponseTemplate};

pub const VAPI_KEY: &str = "vapi-test-private-key-0000";
pub const TWILIO_MAIN_SID: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const TWILIO_MAIN_TOKEN: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// Vapi at `uri()`; calls must carry `Authorization: Bearer VAPI_KEY`.
pub struct FakeVapi {
    pub server: MockServer,
}

impl FakeVapi {
    pub async fn start() -> Self {
        Self {
            server: MockServer::start().await,
        }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// A mock for `method path` that only matches with the right bearer key.
    pub fn authed(&self, mock: MockBuilder) -> MockBuilder {
        mock.and(bearer_token(VAPI_KEY))
    }

    /// Vapi's error body: `{"message","error","statusCode"}`.
    pub fn error(status: u16, message: &str) -> ResponseTemplate {
        let error = match status {
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            429 => "Too Many Requests",
            _ => "Internal Server Error",
        };
        ResponseTemplate::new(status)
            .set_body_json(json!({"message": message, "error": error, "statusCode": status}))
    }
}

/// Twilio at `uri()` (standing for `https://api.twilio.com/2010-04-01`).
pub struct FakeTwilio {
    pub server: MockServer,
}

impl FakeTwilio {
    pub async fn start() -> Self {
        Self {
            server: MockServer::start().await,
        }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Only matches HTTP Basic with the platform's main account.
    pub fn as_main_account(&self, mock: MockBuilder) -> MockBuilder {
        mock.and(basic_auth(TWILIO_MAIN_SID, TWILIO_MAIN_TOKEN))
    }

    /// Twilio's error body: `{"code","message","more_info","status"}`.
    pub fn error(status: u16, code: u32, message: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        }))
    }

    /// `GET /Accounts/{sid}.json` for a good account.
    pub fn account(sid: &str, status: &str) -> Value {
        json!({
            "sid": sid,
            "friendly_name": "Test account",
            "status": status,
            "type": "Full",
            "uri": format!("/2010-04-01/Accounts/{sid}.json"),
        })
    }
}
