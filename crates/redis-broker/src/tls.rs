//! The Redis client behind a [`RedisBroker`](crate::RedisBroker), with TLS for `rediss://`.
//!
//! `rediss://` speaks TLS through rustls with ring, the provider the rest of the server uses
//! (installed here once, since redis-rs builds its TLS settings from the process default). The
//! server's certificate is verified against the machine's roots (or `SSL_CERT_FILE`, which
//! rustls-native-certs reads instead of them), or, when [`RedisBrokerConfig::ca_file`] is set,
//! against that file's certificates only: a managed Redis with a private CA needs no change to
//! what the rest of the process trusts. A Redis that asks its clients for a certificate
//! (`tls-auth-clients yes`) is shown [`RedisBrokerConfig::client_identity`].

use std::path::Path;

use redis::IntoConnectionInfo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{ClientIdentity, RedisBrokerConfig, RedisBrokerError};

/// A client for `url` (`config.url`, or one seed of a cluster's), trusting `config.ca_file`
/// if there is one and showing `config.client_identity` if there is one.
pub(crate) fn client(
    config: &RedisBrokerConfig,
    url: &str,
) -> Result<redis::Client, RedisBrokerError> {
    let shown = secrets::url::redacted(url);
    let info = url
        .into_connection_info()
        .map_err(|source| RedisBrokerError::Url {
            url: shown.clone(),
            source,
        })?
        .set_tcp_settings(tcp_settings());
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    match certificates(config, tls, &shown)? {
        None => {
            redis::Client::open(info).map_err(|source| RedisBrokerError::Url { url: shown, source })
        }
        Some(certificates) => redis::Client::build_with_tls(info, certificates)
            .map_err(|source| use_error(config, source)),
    }
}

/// The TCP settings of every connection to Redis: `TCP_NODELAY`, which redis-rs leaves off.
/// With Nagle's algorithm on, the last segment of a request longer than one (a publish batch)
/// waits for the acknowledgement of those before it, which Redis may delay: milliseconds
/// added to a publish's round trip, tens of them at worst.
pub(crate) fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// The CA and client certificate to use with a `tls` URL (`shown`), read and checked; `None`
/// when neither was given (the machine's roots, no client certificate).
pub(crate) fn certificates(
    config: &RedisBrokerConfig,
    tls: bool,
    shown: &str,
) -> Result<Option<redis::TlsCertificates>, RedisBrokerError> {
    if tls {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    if config.ca_file.is_none() && config.client_identity.is_none() {
        return Ok(None);
    }
    if !tls {
        let what = if config.ca_file.is_some() {
            "a Redis CA file (--broker-ca-file)"
        } else {
            "a Redis client certificate (--broker-client-cert)"
        };
        return Err(RedisBrokerError::CaWithoutTls {
            what,
            url: shown.to_owned(),
        });
    }
    let root_cert = config.ca_file.as_deref().map(read_ca).transpose()?;
    let client_tls = config
        .client_identity
        .as_ref()
        .map(read_identity)
        .transpose()?;
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// Why the client refused certificates that were read and parsed: their use together.
pub(crate) fn use_error(config: &RedisBrokerConfig, source: redis::RedisError) -> RedisBrokerError {
    match (&config.client_identity, &config.ca_file) {
        (Some(identity), _) => RedisBrokerError::Identity {
            what: "certificate",
            flag: "--broker-client-cert",
            path: identity.cert_file.display().to_string(),
            reason: source.to_string(),
        },
        (None, ca_file) => RedisBrokerError::Ca {
            path: ca_file
                .as_deref()
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
            reason: source.to_string(),
        },
    }
}

/// The PEM text of `path`, checked to hold at least one certificate, all readable.
fn read_ca(path: &Path) -> Result<Vec<u8>, RedisBrokerError> {
    let fail = |reason: String| RedisBrokerError::Ca {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    certificates_in(&pem).map_err(fail)?;
    Ok(pem)
}

/// The PEM certificates in `pem`: at least one, all readable.
fn certificates_in(pem: &[u8]) -> Result<(), String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certificates.is_empty() {
        return Err("no PEM certificate (`-----BEGIN CERTIFICATE-----`) in it".into());
    }
    Ok(())
}

/// The client certificate and key files' PEM text, checked to hold a certificate and a
/// private key.
fn read_identity(identity: &ClientIdentity) -> Result<redis::ClientTlsConfig, RedisBrokerError> {
    let cert_fail = |reason: String| RedisBrokerError::Identity {
        what: "certificate",
        flag: "--broker-client-cert",
        path: identity.cert_file.display().to_string(),
        reason,
    };
    let key_fail = |reason: String| RedisBrokerError::Identity {
        what: "key",
        flag: "--broker-client-key",
        path: identity.key_file.display().to_string(),
        reason,
    };
    let client_cert = std::fs::read(&identity.cert_file).map_err(|e| cert_fail(e.to_string()))?;
    certificates_in(&client_cert).map_err(cert_fail)?;
    let client_key = std::fs::read(&identity.key_file).map_err(|e| key_fail(e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&client_key).map_err(|e| {
        key_fail(format!(
            "no PEM private key (`-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`) in it: {e}"
        ))
    })?;
    Ok(redis::ClientTlsConfig {
        client_cert,
        client_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_turn_nagles_algorithm_off() {
        let bounds = ws_bridge::BridgeConfig::default().replay_bounds();
        for url in ["redis://127.0.0.1:6379", "rediss://redis.example:6380"] {
            let config = RedisBrokerConfig::new(url, bounds);
            let client = client(&config, url).expect("a client");
            assert!(
                client.get_connection_info().tcp_settings().nodelay(),
                "{url}: TCP_NODELAY"
            );
        }
    }
}
