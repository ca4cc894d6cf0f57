//! The one TLS client configuration of a function instance: rustls on AWS-LC,
//! certificates verified against Mozilla's roots compiled into the binary
//! (`webpki-roots`, which include Amazon's: RDS Proxy's ACM certificate, the AWS
//! endpoints, Vapi and Twilio all chain to them).
//!
//! Postgres, the provider client and the AWS SDK's client all start from
//! [`client_config`], so there is one trust decision and one crypto provider.
//! Compiled-in roots instead of the system store is a cold-start choice: loading the
//! system store (`rustls-native-certs`, `rustls-platform-verifier`) reads and parses
//! every certificate file on each new process — measured at ≈ 5 ms of every route's
//! init here (issue 14) — where these roots are already parsed constants. Extra roots
//! (a private CA) are added per use, as `DB_CA_FILE` does for the database.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

/// Mozilla's roots, as parsed constants.
pub fn mozilla_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// A client configuration trusting `roots`: AWS-LC, TLS 1.2 and 1.3, no client
/// certificate. Fails only if AWS-LC offers none of rustls's safe defaults.
pub fn client_config(roots: RootCertStore) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusts_the_compiled_in_roots() {
        let roots = mozilla_roots();
        assert!(roots.len() > 100, "{} roots", roots.len());
        let config = client_config(roots).expect("a config");
        // No ALPN: every client of this crate speaks HTTP/1.1 (or Postgres).
        assert!(config.alpn_protocols.is_empty());
    }
}
