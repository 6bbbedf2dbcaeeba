//! The Redis client behind a [`RedisBroker`](crate::RedisBroker), with TLS for `rediss://`.
//!
//! `rediss://` speaks TLS through rustls with ring, the provider the rest of the server uses
//! (installed here once, since redis-rs builds its TLS settings from the process default). The
//! server's certificate is verified against the machine's roots (or `SSL_CERT_FILE`, which
//! rustls-native-certs reads instead of them), or, when [`RedisBrokerConfig::ca_file`] is set,
//! against that file's certificates only: a managed Redis with a private CA needs no change to
//! what the rest of the process trusts.

use std::path::Path;

use redis::IntoConnectionInfo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::{RedisBrokerConfig, RedisBrokerError};

/// A client for `config.url`, trusting `config.ca_file` if there is one.
pub(crate) fn client(config: &RedisBrokerConfig) -> Result<redis::Client, RedisBrokerError> {
    let url = secrets::url::redacted(&config.url);
    let info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(|source| RedisBrokerError::Url {
            url: url.clone(),
            source,
        })?;
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    if tls {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let Some(ca_file) = &config.ca_file else {
        return redis::Client::open(info).map_err(|source| RedisBrokerError::Url { url, source });
    };
    if !tls {
        return Err(RedisBrokerError::CaWithoutTls { url });
    }
    let root_cert = read_ca(ca_file)?;
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    redis::Client::build_with_tls(info, certificates).map_err(|source| RedisBrokerError::Ca {
        path: ca_file.display().to_string(),
        reason: source.to_string(),
    })
}

/// The PEM text of `path`, checked to hold at least one certificate, all readable.
fn read_ca(path: &Path) -> Result<Vec<u8>, RedisBrokerError> {
    let fail = |reason: String| RedisBrokerError::Ca {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(fail(
            "no PEM certificate (`-----BEGIN CERTIFICATE-----`) in it".into(),
        ));
    }
    Ok(pem)
}
