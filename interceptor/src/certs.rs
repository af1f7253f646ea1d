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
/// connection: its thumbprint (for `cnf`) and the service-client ids it
/// names (for delegated tokens' actors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerIdentity {
    /// [`thumbprint`] of the leaf.
    pub(crate) thumbprint: String,
    /// [`client_ids`] of the leaf.
    ids: Vec<String>,
}

impl PeerIdentity {
    /// The identity of a leaf certificate (DER).
    pub(crate) fn of(leaf: &[u8]) -> PeerIdentity {
        PeerIdentity {
            thumbprint: thumbprint(leaf),
            ids: client_ids(leaf),
        }
    }

    /// Whether the certificate names the service client `id`.
    pub(crate) fn names(&self, id: &str) -> bool {
        self.ids.iter().any(|named| named == id)
    }
}

/// The service-client ids a certificate (DER) names: each DNS subject
/// alternative name as it is, and the last path segment of each URI one
/// (SPIFFE style: `spiffe://example.org/svc/orders` names `orders`); only
/// a certificate without a subject-alternative-name extension is taken to
/// name its subject's common names (the pre-SAN convention, still common
/// for client certificates). At most [`MAX_CLIENT_IDS`], in certificate
/// order. None for a certificate (or a SAN extension) that does not parse
/// (x509-parser reads it; the TLS layer has verified it already).
pub fn client_ids(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = Vec::new();
    let mut add = |id: &str| {
        if ids.len() < MAX_CLIENT_IDS && !ids.iter().any(|known| known == id) {
            ids.push(id.to_owned());
        }
    };
    match cert.subject_alternative_name() {
        Ok(Some(san)) => {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => add(dns),
                    GeneralName::URI(uri) => uri_path_id(uri).into_iter().for_each(&mut add),
                    _ => {}
                }
            }
        }
        Ok(None) => cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .for_each(add),
        Err(_) => {}
    }
    ids
}

/// Most client ids read from one certificate: a certificate with more
/// names than that is not one service's.
pub const MAX_CLIENT_IDS: usize = 16;

/// The last segment of a URI's path (`scheme://authority/a/b/ID`): never
/// the authority, so `spiffe://orders` names nobody.
fn uri_path_id(uri: &str) -> Option<&str> {
    let (_, rest) = uri.split_once("://")?;
    let (_, path) = rest.split_once('/')?;
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.rsplit('/').next().filter(|last| !last.is_empty())
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
    fn a_certificate_names_its_dns_names_and_the_last_segment_of_its_uris() {
        let mut params = rcgen::CertificateParams::new(vec!["pay.example".to_owned()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/svc/orders".try_into().unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let identity = PeerIdentity::of(cert.der());
        assert!(identity.names("orders"));
        assert!(identity.names("pay.example"));
        assert!(!identity.names("svc"));
        assert!(!identity.names("pay"));
        assert!(!identity.names("example.org"));
        assert_eq!(client_ids(cert.der()), ["pay.example", "orders"]);
    }

    #[test]
    fn only_a_certificate_without_san_names_its_common_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut bare = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        bare.distinguished_name
            .push(rcgen::DnType::CommonName, "orders");
        let bare = bare.self_signed(&key).unwrap();
        assert_eq!(client_ids(bare.der()), ["orders"]);
        let mut named = rcgen::CertificateParams::new(vec!["billing".to_owned()]).unwrap();
        named
            .distinguished_name
            .push(rcgen::DnType::CommonName, "orders");
        let named = named.self_signed(&key).unwrap();
        assert_eq!(client_ids(named.der()), ["billing"], "the SAN decides");
    }

    #[test]
    fn a_uri_names_its_last_path_segment_never_its_authority() {
        assert_eq!(
            uri_path_id("spiffe://example.org/ns/a/sa/orders"),
            Some("orders")
        );
        assert_eq!(uri_path_id("spiffe://orders"), None);
        assert_eq!(uri_path_id("spiffe://orders/"), None);
        assert_eq!(uri_path_id("https://x/orders?q=1"), Some("orders"));
        assert_eq!(uri_path_id("orders"), None);
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
