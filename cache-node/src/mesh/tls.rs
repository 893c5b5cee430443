//! Cluster certificates and the mutual-TLS configuration of the mesh.
//!
//! `cache-node ca init` creates a cluster CA; `cache-node ca issue` signs a
//! certificate per node with it. Every peer must present a certificate
//! signed by the cluster CA, on both sides of every connection; anything
//! else fails the handshake. Private keys are written with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Name every node certificate carries; clients verify it.
pub const SERVER_NAME: &str = "shoal-node";
/// ALPN protocol id; carries the peer protocol's major version.
pub const ALPN: &[u8] = b"shoal/1";

/// Errors creating or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: no certificate or key found")]
    Empty(String),
    #[error("tls configuration: {0}")]
    Config(String),
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    let err = |source| TlsError::File {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)
}

fn read_file(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::File {
        path: path.display().to_string(),
        source,
    })
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Shoal cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// Creates `ca.pem` and `ca.key` (0600) in `dir`.
pub fn init_ca(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::File {
        path: dir.display().to_string(),
        source,
    })?;
    if dir.join("ca.key").exists() {
        return Err(TlsError::Config(format!(
            "{} already holds a CA; refusing to overwrite it",
            dir.display()
        )));
    }
    let key = KeyPair::generate()?;
    let cert = ca_params().self_signed(&key)?;
    write_file(&dir.join("ca.key"), &key.serialize_pem(), 0o600)?;
    write_file(&dir.join("ca.pem"), &cert.pem(), 0o644)?;
    Ok(())
}

/// Signs a certificate for node `name` with the CA in `ca_dir`, writing
/// `node.pem`, `node.key` (0600) and a copy of `ca.pem` into `out`.
pub fn issue(ca_dir: &Path, name: &str, out: &Path) -> Result<(), TlsError> {
    let ca_key = KeyPair::from_pem(&read_file(&ca_dir.join("ca.key"))?)?;
    // Re-deriving the CA from its fixed parameters and key gives the same
    // issuer name and key identifier as the stored ca.pem.
    let ca = ca_params().self_signed(&ca_key)?;
    let mut p = CertificateParams::new(vec![SERVER_NAME.to_string(), name.to_string()])?;
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &ca, &ca_key)?;
    std::fs::create_dir_all(out).map_err(|source| TlsError::File {
        path: out.display().to_string(),
        source,
    })?;
    write_file(&out.join("node.key"), &key.serialize_pem(), 0o600)?;
    write_file(&out.join("node.pem"), &cert.pem(), 0o644)?;
    write_file(
        &out.join("ca.pem"),
        &read_file(&ca_dir.join("ca.pem"))?,
        0o644,
    )?;
    Ok(())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read_file(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::File {
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty(path.display().to_string()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read_file(path)?;
    rustls_pemfile::private_key(&mut text.as_bytes())
        .map_err(|source| TlsError::File {
            path: path.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::Empty(path.display().to_string()))
}

/// QUIC server and client configurations from `ca.pem`, `node.pem`, `node.key` in `dir`.
pub fn quic_configs(dir: &Path) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&dir.join("ca.pem"))? {
        roots.add(c).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    let roots = Arc::new(roots);
    let chain = certs(&dir.join("node.pem"))?;
    let cfg_err = |e: rustls::Error| TlsError::Config(e.to_string());

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cfg_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key(&dir.join("node.key"))?)
        .map_err(cfg_err)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cfg_err)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key(&dir.join("node.key"))?)
        .map_err(cfg_err)?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    let quic_err = |e: quinn::crypto::rustls::NoInitialCipherSuite| TlsError::Config(e.to_string());
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            std::time::Duration::from_secs(5)
                .try_into()
                .expect("valid idle timeout"),
        ))
        .keep_alive_interval(Some(std::time::Duration::from_secs(1)));
    let transport = Arc::new(transport);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(quic_err)?,
    ));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(quic_err)?,
    ));
    client.transport_config(transport);
    Ok((server, client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ca_and_node_certificates_load_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        assert!(init_ca(&ca).is_err(), "an existing CA is never overwritten");
        issue(&ca, "node-1", &dir.path().join("n1")).unwrap();
        for k in [ca.join("ca.key"), dir.path().join("n1/node.key")] {
            assert_eq!(
                std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        quic_configs(&dir.path().join("n1")).unwrap();
    }
}
