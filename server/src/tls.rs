//! gRPC over TLS: the `[tls]` section's PEM files, read and checked at
//! start so that a wrong path or a file of the wrong kind stops start-up
//! with its name rather than failing every handshake later.

use crate::config::TlsConfig;
use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The listener's TLS settings from `[tls]`.
pub fn server_tls(tls: &TlsConfig) -> anyhow::Result<ServerTlsConfig> {
    let cert = certificates("tls.cert_file", &tls.cert_file)?;
    let key = read("tls.key_file", &tls.key_file)?;
    PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
        anyhow::anyhow!(
            "tls.key_file {} holds no PEM private key: {e}",
            tls.key_file.display()
        )
    })?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(path) = &tls.client_ca_file {
        let ca = certificates("tls.client_ca_file", path)?;
        config = config.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(config)
}

fn read(key: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {key} {}", path.display()))
}

/// The file's bytes, if it holds PEM certificates and nothing unreadable.
/// rustls, reading it later, would skip what is not PEM and report only
/// that there is no certificate, without saying which file.
fn certificates(key: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = read(key, path)?;
    let count = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{key} {}: {e}", path.display()))?
        .len();
    if count == 0 {
        anyhow::bail!(
            "{key} {} holds no PEM certificate ('-----BEGIN CERTIFICATE-----')",
            path.display()
        );
    }
    Ok(bytes)
}
