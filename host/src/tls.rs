//! TLS with rustls (aws-lc-rs, no OpenSSL): the server's certificate and key (`[tls]`), and the
//! extra roots the s3 and remote tiers trust beside the system's (`ca_file`).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, TlsFiles};

/// The acceptor of a server configured with `files`.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ConfigError> {
    Ok(TlsAcceptor::from(server_config(files)?))
}

/// A rustls server configuration for `files`: TLS 1.2 and 1.3 with aws-lc-rs, offering only
/// HTTP/1.1 by ALPN (the server speaks nothing else). Errors name `tls.cert` or `tls.key`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let fail = |field: &str, message: String| ConfigError { field: field.into(), message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| fail("tls.cert", format!("{}: {e}", files.cert.display())))?;
    if chain.is_empty() {
        return Err(fail(
            "tls.cert",
            format!("{}: no certificate in the file", files.cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| fail("tls.key", format!("{}: {e}", files.key.display())))?;
    // The provider is named rather than taken from the process default, which would be
    // ambiguous if another crate ever enabled a second one.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| fail("tls.key", format!("does not go with the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM bundle, to trust beside the system's roots; an error says why in
/// one line.
pub fn extra_roots(ca_file: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem =
        std::fs::read(ca_file).map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not a PEM bundle ({e})", ca_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", ca_file.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost` and its key, as PEM files in `dir`.
    fn self_signed(dir: &Path, name: &str) -> TlsFiles {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, signing_key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn a_certificate_and_its_key_make_a_server_configuration_for_http_1_1() {
        let dir = tempfile::tempdir().unwrap();
        let files = self_signed(dir.path(), "server");
        let config = server_config(&files).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(extra_roots(&files.cert).unwrap().len(), 1, "a certificate is also a root");
    }

    #[test]
    fn bad_files_are_reported_under_the_key_that_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let (one, other) = (self_signed(dir.path(), "one"), self_signed(dir.path(), "other"));
        let mismatched = TlsFiles { cert: one.cert.clone(), key: other.key.clone() };
        assert_eq!(server_config(&mismatched).unwrap_err().field, "tls.key");
        let no_cert = TlsFiles { cert: one.key.clone(), key: one.key.clone() };
        assert_eq!(server_config(&no_cert).unwrap_err().field, "tls.cert");
        let missing = TlsFiles { cert: dir.path().join("absent.pem"), key: one.key.clone() };
        assert_eq!(server_config(&missing).unwrap_err().field, "tls.cert");
        let no_key = TlsFiles { cert: one.cert.clone(), key: one.cert.clone() };
        assert_eq!(server_config(&no_key).unwrap_err().field, "tls.key");
        assert!(extra_roots(&one.key).is_err(), "a key is no certificate");
    }
}
