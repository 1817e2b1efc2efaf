//! The TLS server configuration of the MQTT listeners, from PEM files (rustls, ring).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{BrokerError, TlsFiles};

/// Loads the certificate chain and key into a rustls server configuration.
pub(crate) fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, BrokerError> {
    let err = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        BrokerError::Tls(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    };
    for (what, path) in [("certificate file", &files.cert), ("key file", &files.key)] {
        if !path.is_file() {
            return Err(BrokerError::Tls(format!(
                "the TLS {what} {} does not exist",
                path.display()
            )));
        }
    }
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err("certificate", &files.cert, &e))?;
    if certs.is_empty() {
        return Err(err("certificate", &files.cert, &"no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| err("key", &files.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| BrokerError::Tls(format!("TLS certificate and key do not fit: {e}")))?;
    Ok(Arc::new(config))
}
