//! The QUIC endpoints: TLS 1.3 (rustls, ring provider), ALPN `omniroute/1`, and the
//! server's identity — a certificate given by the operator, or a self-signed one
//! generated on the first start and kept in the data directory, with its SHA-256
//! fingerprint for clients to pin.

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The application protocol a connection must negotiate.
pub const ALPN: &[u8] = b"omniroute/1";

/// The name a self-signed certificate is issued for (clients connect with it as the
/// server name).
pub const SELF_SIGNED_NAME: &str = "localhost";

/// The server's certificate chain and key.
pub struct ServerIdentity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate (DER), as colon-separated hex.
    pub fingerprint: String,
    /// Where the certificate is.
    pub cert_path: PathBuf,
    /// Whether it was generated now (first start).
    pub generated: bool,
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// SHA-256 of a certificate, as `AB:CD:…`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads a PEM certificate chain (what a client trusts: the server's certificate).
pub fn load_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read certificate {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            bad(format!(
                "certificate {} is not valid PEM: {e}",
                path.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(bad(format!("{} holds no certificate", path.display())));
    }
    Ok(chain)
}

impl ServerIdentity {
    /// Loads a PEM certificate chain and private key (`--cert`, `--key`).
    pub fn load(cert: &Path, key: &Path) -> io::Result<ServerIdentity> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| bad(format!("cannot read certificate {}: {e}", cert.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| {
                bad(format!(
                    "certificate {} is not valid PEM: {e}",
                    cert.display()
                ))
            })?;
        let Some(leaf) = chain.first() else {
            return Err(bad(format!("{} holds no certificate", cert.display())));
        };
        let fingerprint = fingerprint(leaf);
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| bad(format!("cannot read private key {}: {e}", key.display())))?;
        Ok(ServerIdentity {
            chain,
            key,
            fingerprint,
            cert_path: cert.to_path_buf(),
            generated: false,
        })
    }

    /// The self-signed identity kept in `<data_dir>/tls/` (`cert.pem`, `key.pem`),
    /// generated on the first start.
    pub fn self_signed(data_dir: &Path) -> io::Result<ServerIdentity> {
        let dir = data_dir.join("tls");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if cert.exists() && key.exists() {
            return Self::load(&cert, &key);
        }
        std::fs::create_dir_all(&dir)?;
        let made = rcgen::generate_simple_self_signed(vec![SELF_SIGNED_NAME.to_string()])
            .map_err(|e| io::Error::other(format!("cannot generate a certificate: {e}")))?;
        let key_tmp = dir.join("key.pem.tmp");
        write_private(&key_tmp, made.signing_key.serialize_pem().as_bytes())?;
        std::fs::rename(&key_tmp, &key)?;
        let cert_tmp = dir.join("cert.pem.tmp");
        std::fs::write(&cert_tmp, made.cert.pem())?;
        std::fs::rename(&cert_tmp, &cert)?;
        let mut identity = Self::load(&cert, &key)?;
        identity.generated = true;
        Ok(identity)
    }

    /// A QUIC server endpoint on `addr` with this identity.
    pub fn server(&self, addr: SocketAddr) -> io::Result<quinn::Endpoint> {
        let mut crypto = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(self.chain.clone(), self.key.clone_key())
        .map_err(|e| bad(format!("certificate and key do not go together: {e}")))?;
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(crypto).map_err(io::Error::other)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(transport());
        quinn::Endpoint::server(config, addr)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    std::fs::write(path, bytes)
}

/// A QUIC client endpoint on an ephemeral local port that trusts exactly these
/// certificates (a self-signed server's own certificate, or a private CA).
pub fn client(bind: SocketAddr, trust: &[CertificateDer<'static>]) -> io::Result<quinn::Endpoint> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trust {
        roots
            .add(cert.clone())
            .map_err(|e| bad(format!("cannot trust this certificate: {e}")))?;
    }
    let mut crypto = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(crypto).map_err(io::Error::other)?;
    let mut endpoint = quinn::Endpoint::client(bind)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport());
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// How long a connection may stay silent before it is considered dead.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often an otherwise idle connection sends a keep-alive (both sides), so a quiet
/// agent desktop keeps its connection.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(5);

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("30 s is a valid idle timeout"),
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    Arc::new(t)
}
