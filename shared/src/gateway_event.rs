//! API Gateway HTTP API (payload 2.0) events, as API Gateway sends them to Lambda.
//! [`ApiEvent::request`] turns one into a `lambda_http::Request` with
//! `lambda_http::request::from_str`: the same parsing the runtime does.
//!
//! Behind the `gateway-event` feature because only the local API (`local-api`, which
//! does API Gateway's part in front of the handlers) and the tests (through
//! `testkit::event`) build API Gateway events; the Lambda binaries receive them from
//! API Gateway and never build one, so they are compiled without this module.

use serde_json::{Value, json};

/// Builder for one event. Claims are strings, as API Gateway hands them over.
#[derive(Debug, Clone)]
pub struct ApiEvent {
    method: String,
    route_key: String,
    raw_path: String,
    path_parameters: Option<Value>,
    query: Option<String>,
    headers: serde_json::Map<String, Value>,
    claims: Option<serde_json::Map<String, Value>>,
    scopes: Option<Vec<String>>,
    body: Option<String>,
    request_id: String,
}

impl ApiEvent {
    pub fn new(method: &str, route_key_path: &str, raw_path: &str) -> Self {
        Self {
            method: method.into(),
            route_key: format!("{method} {route_key_path}"),
            raw_path: raw_path.into(),
            path_parameters: None,
            query: None,
            headers: serde_json::Map::new(),
            claims: None,
            scopes: None,
            body: None,
            request_id: format!("apigw-{}", uuid::Uuid::new_v4()),
        }
    }

    /// API Gateway's request id (`requestContext.requestId`).
    pub fn request_id(mut self, id: &str) -> Self {
        self.request_id = id.into();
        self
    }

    /// Claims of a verified caller of `org` with subject `sub`.
    pub fn caller(mut self, org: &str, sub: &str) -> Self {
        let mut m = serde_json::Map::new();
        m.insert("org_id".into(), json!(org));
        m.insert("sub".into(), json!(sub));
        m.insert("iss".into(), json!("https://issuer.example.test/"));
        self.claims = Some(m);
        self
    }

    pub fn claim(mut self, name: &str, value: &str) -> Self {
        self.claims
            .get_or_insert_with(Default::default)
            .insert(name.into(), json!(value));
        self
    }

    pub fn without_claim(mut self, name: &str) -> Self {
        if let Some(c) = self.claims.as_mut() {
            c.remove(name);
        }
        self
    }

    pub fn scopes(mut self, scopes: &[&str]) -> Self {
        self.scopes = Some(scopes.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn path_parameter(mut self, name: &str, value: &str) -> Self {
        self.path_parameters = Some(json!({ name: value }));
        self
    }

    pub fn query(mut self, raw: &str) -> Self {
        self.query = Some(raw.into());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name.to_ascii_lowercase(), json!(value));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub fn json(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }

    pub fn to_json(&self) -> Value {
        let mut query_params = serde_json::Map::new();
        if let Some(q) = &self.query {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                query_params.insert(k.into(), json!(v));
            }
        }
        let authorizer = self.claims.as_ref().map(|c| {
            let mut jwt = json!({ "claims": c });
            if let Some(s) = &self.scopes {
                jwt["scopes"] = json!(s);
            }
            json!({ "jwt": jwt })
        });
        let mut ev = json!({
            "version": "2.0",
            "routeKey": self.route_key,
            "rawPath": self.raw_path,
            "rawQueryString": self.query.clone().unwrap_or_default(),
            "headers": self.headers,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "api-id",
                "domainName": "id.execute-api.us-east-1.amazonaws.com",
                "domainPrefix": "id",
                "http": {
                    "method": self.method,
                    "path": self.raw_path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "192.0.2.1",
                    "userAgent": "testkit"
                },
                "requestId": self.request_id,
                "routeKey": self.route_key,
                "stage": "$default",
                "time": "24/Nov/2026:12:00:00 +0000",
                "timeEpoch": 1_795_000_000_000i64
            },
            "isBase64Encoded": false
        });
        if let Some(a) = authorizer {
            ev["requestContext"]["authorizer"] = a;
        }
        if !query_params.is_empty() {
            ev["queryStringParameters"] = Value::Object(query_params);
        }
        if let Some(p) = &self.path_parameters {
            ev["pathParameters"] = p.clone();
        }
        if let Some(b) = &self.body {
            ev["body"] = json!(b);
        }
        ev
    }

    /// The request Lambda's runtime would hand the handler. Panics if the event does
    /// not parse (a builder this module controls always does): for tests; the local
    /// API parses [`Self::to_json`] itself and answers 400 instead.
    pub fn request(&self) -> lambda_http::Request {
        lambda_http::request::from_str(&self.to_json().to_string())
            .expect("a valid API Gateway v2 event")
    }
}
