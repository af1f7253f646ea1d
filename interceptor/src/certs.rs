//! What both sides know of certificates: why a certificate or key file
//! could not be used, and the RFC 8705 thumbprint that binds a token to a
//! client certificate.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A TLS file that could not be used. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind needed.
    #[error("{path}: no {what} in PEM form")]
    Missing {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// rustls refused the certificates or key.
    #[error("{0}")]
    Rustls(String),
}

/// Who a client certificate says its holder is, worked out once per
/// connection: its thumbprint (for `cnf`) and its names (for delegated
/// tokens' actors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerIdentity {
    /// [`thumbprint`] of the leaf.
    pub(crate) thumbprint: String,
    /// The leaf's DNS and URI subject alternative names.
    names: Vec<String>,
}

impl PeerIdentity {
    /// The identity of a leaf certificate (DER). A certificate that does
    /// not parse has a thumbprint and no names.
    pub(crate) fn of(leaf: &[u8]) -> PeerIdentity {
        let der = rustls_pki_types::CertificateDer::from(leaf);
        let names = match webpki::EndEntityCert::try_from(&der) {
            Ok(cert) => cert
                .valid_dns_names()
                .chain(cert.valid_uri_names())
                .map(str::to_owned)
                .collect(),
            Err(_) => Vec::new(),
        };
        PeerIdentity {
            thumbprint: thumbprint(leaf),
            names,
        }
    }

    /// Whether the certificate names the service client `id`: a DNS name
    /// equal to it, or a URI whose last path segment is it (SPIFFE style,
    /// `spiffe://example.org/svc/orders`).
    pub(crate) fn names(&self, id: &str) -> bool {
        self.names.iter().any(|name| {
            name == id
                || (name.contains("://") && name.rsplit('/').next().is_some_and(|last| last == id))
        })
    }
}

/// The RFC 8705 certificate thumbprint (`x5t#S256`): SHA-256 of the
/// certificate's DER, base64url without padding.
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_that_does_not_parse_names_nobody() {
        let identity = PeerIdentity::of(b"not a certificate");
        assert!(!identity.names("orders"));
        assert!(!identity.names(""));
        assert_eq!(identity.thumbprint, thumbprint(b"not a certificate"));
    }

    #[test]
    fn uri_names_match_on_their_last_segment_only() {
        let identity = PeerIdentity {
            thumbprint: String::new(),
            names: vec![
                "spiffe://example.org/svc/orders".into(),
                "pay.example".into(),
            ],
        };
        assert!(identity.names("orders"));
        assert!(identity.names("pay.example"));
        assert!(!identity.names("svc"));
        assert!(!identity.names("pay"));
        assert!(!identity.names("example.org"));
    }

    #[test]
    fn thumbprints_follow_rfc_8705() {
        // base64url(SHA-256("")): no padding, URL alphabet.
        assert_eq!(
            thumbprint(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }
}
