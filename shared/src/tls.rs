//! The one TLS client configuration of a function instance: rustls on AWS-LC,
//! certificates verified against Mozilla's roots compiled into the binary
//! (`webpki-roots`, which include Amazon's: RDS Proxy's ACM certificate, the AWS
//! endpoints, Vapi and Twilio all chain to them).
//!
//! The provider client and the AWS SDK's client start from [`client_config`], Postgres
//! from [`database_client_config`] (the same, its first key share P-256), so there is
//! one trust decision and one crypto provider.
//! Compiled-in roots instead of the system store is a cold-start choice: loading the
//! system store (`rustls-native-certs`, `rustls-platform-verifier`) reads and parses
//! every certificate file on each new process — measured at ≈ 5 ms of the init of
//! every route with a provider client (issue 14) — where these roots are already
//! parsed constants. Extra roots (a private CA) are added per use, as `DB_CA_FILE`
//! does for the database.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// Mozilla's roots, as parsed constants.
pub fn mozilla_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Adds every certificate of the PEM file at `path` to `roots` (`DB_CA_FILE`,
/// `AWS_CA_BUNDLE`). The error names the file and what is wrong, never content.
pub fn add_pem_roots(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut added = 0;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{shown}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{shown}: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err(format!("{shown}: no certificate"));
    }
    Ok(())
}

/// A client configuration trusting `roots`: AWS-LC, TLS 1.2 and 1.3, no client
/// certificate. Fails only if AWS-LC offers none of rustls's safe defaults.
pub fn client_config(roots: RootCertStore) -> Result<ClientConfig, rustls::Error> {
    config_with(rustls::crypto::aws_lc_rs::default_provider(), roots)
}

fn config_with(
    provider: rustls::crypto::CryptoProvider,
    roots: RootCertStore,
) -> Result<ClientConfig, rustls::Error> {
    Ok(ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// [`client_config`] for Postgres: the same, but its first key share is P-256
/// (secp256r1), then the provider's defaults. A TLS 1.3 client sends one key share,
/// and a server that does not accept its group answers with a HelloRetryRequest: one
/// more round trip. PostgreSQL up to 17 accepts only its `ssl_ecdh_curve`, by default
/// `prime256v1`, so rustls's X25519 first cost every login a round trip (seen in a
/// trace of the deployed-shape cold start, docs/cold-start.md). P-256 is the group
/// every TLS 1.3 server must implement (RFC 8446, 9.1), so leading with it costs no
/// server a retry; RDS Proxy's preference is not documented.
pub fn database_client_config(roots: RootCertStore) -> Result<ClientConfig, rustls::Error> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // A stable sort: the provider's own list (FIPS-filtered when built for FIPS) in
    // its order, P-256 moved to the front.
    provider
        .kx_groups
        .sort_by_key(|g| g.name() != rustls::NamedGroup::secp256r1);
    config_with(provider, roots)
}

/// A reqwest client builder on [`client_config`] with Mozilla's roots: HTTP/1.1, a
/// 50 s idle-connection timeout (below the providers' and AWS endpoints' own). Both
/// of an instance's HTTP clients (the providers', the AWS SDK's) start here, so
/// neither loads the system certificate store.
pub fn http_client_builder() -> Result<reqwest::ClientBuilder, rustls::Error> {
    http_client_builder_trusting(mozilla_roots())
}

/// [`http_client_builder`] trusting `roots` instead of Mozilla's (the AWS SDK's
/// client under `AWS_CA_BUNDLE`).
pub fn http_client_builder_trusting(
    roots: RootCertStore,
) -> Result<reqwest::ClientBuilder, rustls::Error> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(roots)?)
        .pool_idle_timeout(std::time::Duration::from_secs(50)))
}

/// Why an HTTP client could not be built (at cold start only).
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("trusted certificates: {0}")]
    Roots(String),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_config_leads_with_p256_and_keeps_the_others() {
        use rustls::NamedGroup;
        let config = database_client_config(mozilla_roots()).expect("a config");
        let groups: Vec<NamedGroup> = config
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(groups.first(), Some(&NamedGroup::secp256r1));
        assert!(groups.contains(&NamedGroup::X25519), "{groups:?}");
        assert_eq!(
            groups.len(),
            rustls::crypto::aws_lc_rs::DEFAULT_KX_GROUPS.len(),
            "{groups:?}"
        );
    }

    #[test]
    fn trusts_the_compiled_in_roots() {
        let roots = mozilla_roots();
        assert!(roots.len() > 100, "{} roots", roots.len());
        let config = client_config(roots).expect("a config");
        // No ALPN: every client of this crate speaks HTTP/1.1 (or Postgres).
        assert!(config.alpn_protocols.is_empty());
    }
}
