//! TLS for servers: a rustls configuration read from PEM files, reloaded
//! when the files change (or when asked, e.g. on SIGHUP) without touching
//! connections already established, and optionally verifying client
//! certificates (mTLS) against a CA.
//!
//! Also the RFC 8705 thumbprint of a certificate, what certificate-bound
//! access tokens carry in their `cnf` claim.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use crate::certs::TlsError;

/// Where a server's certificate, key and (for mTLS) client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    require_client_cert: bool,
}

impl TlsFiles {
    /// The server's certificate chain and private key, PEM.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsFiles {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            require_client_cert: false,
        }
    }

    /// Verifies client certificates against the CA certificates in `path`
    /// (PEM). Clients without a certificate are still served unless
    /// [`require_client_cert`](Self::require_client_cert) is set.
    pub fn client_ca(mut self, path: impl Into<PathBuf>) -> TlsFiles {
        self.client_ca = Some(path.into());
        self
    }

    /// Refuses the handshake of clients without a verified certificate.
    pub fn require_client_cert(mut self, required: bool) -> TlsFiles {
        self.require_client_cert = required;
        self
    }

    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    /// When each file last changed (missing files count as never).
    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Reads the files into a rustls server configuration (ALPN `h2`).
    pub fn load(&self) -> Result<ServerConfig, TlsError> {
        let chain = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| pem_error(&self.key, "private key", e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::Rustls(format!("{}: {e}", path.display())))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if self.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsError::Rustls(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Rustls(format!("{}: {e}", self.key.display())))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, "certificate", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "certificate", e))?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn pem_error(path: &Path, what: &'static str, error: rustls_pki_types::pem::Error) -> TlsError {
    match error {
        rustls_pki_types::pem::Error::Io(source) => TlsError::Io {
            path: path.to_owned(),
            source,
        },
        _ => TlsError::Missing {
            path: path.to_owned(),
            what,
        },
    }
}

/// A server's TLS configuration, swappable while it serves: each new
/// handshake uses the latest; established connections keep theirs. Cheap
/// to clone; clones share the configuration.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    current: RwLock<(Arc<ServerConfig>, Vec<Option<SystemTime>>)>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `files`; fails if they cannot be used.
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let stamps = files.stamps();
        let config = Arc::new(files.load()?);
        Ok(ServerTls {
            inner: Arc::new(Inner {
                files,
                current: RwLock::new((config, stamps)),
            }),
        })
    }

    /// Whether client certificates are verified.
    pub fn verifies_clients(&self) -> bool {
        self.inner.files.client_ca.is_some()
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        match self.inner.current.read() {
            Ok(current) => Arc::clone(&current.0),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().0),
        }
    }

    /// Reads the files again and uses them for new handshakes. On error
    /// the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = self.inner.files.stamps();
        let config = Arc::new(self.inner.files.load()?);
        match self.inner.current.write() {
            Ok(mut current) => *current = (config, stamps),
            Err(poisoned) => *poisoned.into_inner() = (config, stamps),
        }
        Ok(())
    }

    /// Reloads if any file changed since the last load; returns whether it
    /// did.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamps = self.inner.files.stamps();
        let changed = match self.inner.current.read() {
            Ok(current) => current.1 != stamps,
            Err(_) => true,
        };
        if changed {
            self.reload()?;
        }
        Ok(changed)
    }

    /// Checks the files every `interval` and reloads when they change,
    /// for as long as the runtime runs. A broken update is logged and the
    /// previous configuration kept.
    pub fn watch_files(&self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match tls.reload_if_changed() {
                    Ok(true) => tracing::info!("TLS certificate files changed: reloaded"),
                    Ok(false) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "TLS files changed but cannot be used; keeping the previous ones");
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("tokend-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let missing = dir.join("missing.pem");
        assert!(matches!(
            TlsFiles::new(&missing, &missing).load(),
            Err(TlsError::Io { .. })
        ));
        let err = TlsFiles::new(&empty, &empty).load().unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
