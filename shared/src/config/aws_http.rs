//! The AWS SDK's HTTP client: reqwest over [`crate::tls::client_config`], the same
//! HTTP/1.1 and TLS stack as the provider client and the database.
//!
//! The SDK's default client (`default-https-client`) brings a second client stack (an
//! HTTP/2 implementation, hyper-rustls, `rustls-native-certs`) and loads the system
//! certificate store on first use, on every cold start. Secrets Manager and KMS
//! speak small JSON bodies over HTTP/1.1, which reqwest serves as well. No
//! well-kept crate adapts reqwest to the SDK's `HttpClient` trait, so this is
//! hand-written: a request is converted (body streamed, not copied), sent, and the
//! response handed back with its body streaming.
//!
//! Timeouts: the connect timeout is the instance's ([`CONNECT_TIMEOUT`], the one
//! [`super::aws_sdk_config`] also gives the SDK); a read timeout the SDK asks for
//! bounds the whole response (reqwest has no per-request read timeout), which is
//! stricter, never looser. Errors are classified the way the SDK's retry strategy
//! reads them: timeouts and I/O (refused, reset, closed mid-response) are transient.

use std::fmt;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// The connect timeout `aws_config::load_defaults` sets for this behaviour version.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// An SDK HTTP client on one reqwest client (its own connection pool).
#[derive(Clone)]
pub struct ReqwestSdkClient {
    http: reqwest::Client,
}

impl fmt::Debug for ReqwestSdkClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReqwestSdkClient")
    }
}

impl ReqwestSdkClient {
    /// Trusting Mozilla's roots, or only the certificates of `ca_bundle` (a PEM
    /// file: `AWS_CA_BUNDLE`, as the other AWS SDKs read it).
    pub fn new(ca_bundle: Option<&std::path::Path>) -> Result<Self, crate::tls::HttpClientError> {
        let builder = match ca_bundle {
            None => crate::tls::http_client_builder()?,
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                crate::tls::add_pem_roots(&mut roots, path)
                    .map_err(crate::tls::HttpClientError::Roots)?;
                crate::tls::http_client_builder_trusting(roots)?
            }
        };
        Ok(Self {
            http: builder.connect_timeout(CONNECT_TIMEOUT).build()?,
        })
    }

    pub fn shared(self) -> SharedHttpClient {
        SharedHttpClient::new(self)
    }
}

impl HttpClient for ReqwestSdkClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(Connector {
            http: self.http.clone(),
            read_timeout: settings.read_timeout(),
        })
    }
}

#[derive(Clone)]
struct Connector {
    http: reqwest::Client,
    read_timeout: Option<Duration>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let this = self.clone();
        HttpConnectorFuture::new(async move { this.send(request).await })
    }
}

impl Connector {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        let request = request
            .try_into_http1x()
            .map_err(|e| ConnectorError::user(e.into()))?
            .map(reqwest::Body::wrap);
        let mut request =
            reqwest::Request::try_from(request).map_err(|e| ConnectorError::user(e.into()))?;
        if let Some(timeout) = self.read_timeout {
            *request.timeout_mut() = Some(timeout);
        }
        let response = self.http.execute(request).await.map_err(classify)?;
        let response = http::Response::from(response).map(SdkBody::from_body_1_x);
        HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
    }
}

/// How the SDK's retry strategy should see a failed send.
fn classify(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_builder() {
        ConnectorError::user(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}
