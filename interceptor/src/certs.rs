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

/// The RFC 8705 certificate thumbprint (`x5t#S256`): SHA-256 of the
/// certificate's DER, base64url without padding.
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_follow_rfc_8705() {
        // base64url(SHA-256("")): no padding, URL alphabet.
        assert_eq!(
            thumbprint(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }
}
