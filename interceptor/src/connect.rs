//! How a resource service reaches tokend, for key sync, the revocation feed
//! and the token source: one or more URLs, and for `https://` the CA to
//! trust and an optional client certificate (mTLS).
//!
//! An `https://` URL always means TLS, verified against the system's roots
//! or the given CA; a TLS failure is an error, never a fall back to
//! plaintext. (A service that cannot use TLS to reach tokend should pin the
//! verification keys instead: [`KeySet::from_paserk`](crate::KeySet::from_paserk).)

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::certs::TlsError;

/// Why no channel to tokend could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No URL was given.
    #[error("no tokend URL")]
    NoUrl,
    /// A URL is not `http://` or `https://`.
    #[error("{0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    /// A CA or client certificate was given for a plaintext URL: it would
    /// not be used, which is surely not what was meant.
    #[error("{0}: a CA or client certificate only makes sense with https://")]
    TlsOptionsWithoutTls(String),
    /// A TLS file could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// tonic refused the endpoint.
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
}

/// tokend's address(es) and how to trust them.
#[derive(Debug, Clone, Default)]
pub struct TokendEndpoint {
    urls: Vec<String>,
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    connect_timeout: Option<Duration>,
}

impl TokendEndpoint {
    /// tokend at `url` (`http://host:port` or `https://host:port`).
    pub fn new(url: impl Into<String>) -> TokendEndpoint {
        TokendEndpoint {
            urls: vec![url.into()],
            ..TokendEndpoint::default()
        }
    }

    /// One more replica: calls are balanced over all of them.
    pub fn also(mut self, url: impl Into<String>) -> TokendEndpoint {
        self.urls.push(url.into());
        self
    }

    /// Trusts only the CA certificates in `pem` (instead of the system's).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> TokendEndpoint {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Trusts only the CA certificates in the PEM file at `path`.
    pub fn ca_file(self, path: &Path) -> Result<TokendEndpoint, TlsError> {
        Ok(self.ca_pem(read(path)?))
    }

    /// Presents this client certificate and key (PEM) to tokend.
    pub fn identity_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> TokendEndpoint {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// Presents the client certificate and key in these PEM files.
    pub fn identity_files(self, cert: &Path, key: &Path) -> Result<TokendEndpoint, TlsError> {
        Ok(self.identity_pem(read(cert)?, read(key)?))
    }

    /// How long connecting may take (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> TokendEndpoint {
        self.connect_timeout = Some(timeout);
        self
    }

    fn endpoint(&self, url: &str) -> Result<Endpoint, ConnectError> {
        let tls = if url.starts_with("https://") {
            true
        } else if url.starts_with("http://") {
            false
        } else {
            return Err(ConnectError::BadUrl(url.to_owned()));
        };
        let endpoint = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(self.connect_timeout.unwrap_or(Duration::from_secs(3)));
        if !tls {
            if self.ca_pem.is_some() || self.identity.is_some() {
                return Err(ConnectError::TlsOptionsWithoutTls(url.to_owned()));
            }
            return Ok(endpoint);
        }
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        Ok(endpoint.tls_config(config)?)
    }

    /// A channel that connects when first used (and reconnects by itself),
    /// balanced over every URL.
    pub fn channel(&self) -> Result<Channel, ConnectError> {
        match self.urls.as_slice() {
            [] => Err(ConnectError::NoUrl),
            [one] => Ok(self.endpoint(one)?.connect_lazy()),
            many => {
                let endpoints = many
                    .iter()
                    .map(|url| self.endpoint(url))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Channel::balance_list(endpoints.into_iter()))
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_and_options_are_checked() {
        assert!(matches!(
            TokendEndpoint::default().channel(),
            Err(ConnectError::NoUrl)
        ));
        assert!(matches!(
            TokendEndpoint::new("tokend:50051").channel(),
            Err(ConnectError::BadUrl(_))
        ));
        assert!(matches!(
            TokendEndpoint::new("http://127.0.0.1:1")
                .ca_pem("x")
                .channel(),
            Err(ConnectError::TlsOptionsWithoutTls(_))
        ));
        assert!(TokendEndpoint::new("http://127.0.0.1:1").channel().is_ok());
        assert!(TokendEndpoint::new("https://127.0.0.1:1").channel().is_ok());
        assert!(
            TokendEndpoint::new("http://127.0.0.1:1")
                .also("http://127.0.0.1:2")
                .channel()
                .is_ok()
        );
    }
}
