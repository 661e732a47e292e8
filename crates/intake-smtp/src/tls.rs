//! TLS for SMTP: certificates from PEM files, reloadable without a restart (SIGHUP), and the
//! handshake for STARTTLS (RFC 3207) and implicit-TLS listeners (RFC 8314). rustls with the
//! ring provider, TLS 1.2 and 1.3 only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use intake_core::TlsInfo;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    message: String,
    /// The private key's file is the problem (not the certificate's, nor the pair).
    key: bool,
}

impl TlsError {
    fn pair(message: String) -> TlsError {
        TlsError {
            message,
            key: false,
        }
    }

    /// Whether the private key's file is what is wrong (`tls.key`), rather than the
    /// certificate's (`tls.certificate`) or the two together.
    pub fn is_about_the_key(&self) -> bool {
        self.key
    }
}

/// The server's certificate and key, swappable at run time.
pub struct TlsCerts {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

fn build(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::pair(format!("reading certificates from {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::pair(format!("parsing certificates in {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError::pair(format!(
            "no certificate in {} (expected PEM: -----BEGIN CERTIFICATE-----)",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError {
        message: match e {
            rustls_pki_types::pem::Error::NoItemsFound => format!(
                "no private key in {} (expected PEM: -----BEGIN PRIVATE KEY-----, or an RSA or EC key)",
                key.display()
            ),
            e => format!("reading the private key from {}: {e}", key.display()),
        },
        key: true,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::pair(format!("certificate and key do not fit: {e}")))?;
    Ok(Arc::new(config))
}

impl TlsCerts {
    /// Loads a PEM certificate chain and its private key.
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<TlsCerts, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let config = build(&cert, &key)?;
        Ok(TlsCerts {
            cert,
            key,
            current: RwLock::new(config),
        })
    }

    /// Reads the files again. On failure the old certificate stays in use. Sessions already
    /// running keep theirs; new handshakes get the new one.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.cert, &self.key)?;
        *self.current.write().expect("tls config lock") = config;
        Ok(())
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().expect("tls config lock").clone())
    }
}

/// The negotiated version and cipher, as stored with each message.
pub fn tls_info(conn: &rustls::ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "unknown".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_else(|| "unknown".into());
    TlsInfo { version, cipher }
}
