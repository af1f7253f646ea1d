//! What both sides know of certificates: why a certificate or key file
//! could not be used, the RFC 8705 thumbprint that binds a token to a
//! client certificate, and how a certificate names a service client.
//!
//! ## Naming service clients
//!
//! One rule, used by tokend (client logins over mTLS, certificate callers
//! of Exchange, the revocation feed) and by verifiers (the actor of a
//! delegated token), in [`CertificateNaming::names`]. A certificate names
//! the service client `ID`:
//! - when identities are recorded for `ID` (`tokend client add ID
//!   --cert-san SAN`, or [`CertificateNaming::identity`] for a verifier):
//!   only if one of its subject alternative names is exactly one of them
//!   (DNS names compared without regard to ASCII case, URIs byte for byte);
//! - otherwise: if it has a DNS SAN exactly `ID`, or a URI SAN exactly
//!   `spiffe://TD/ID` for a configured trust domain `TD`
//!   ([`CertificateNaming::trust_domain`]), or, only when it has no
//!   subject-alternative-name extension at all, a subject common name
//!   exactly `ID` (the pre-SAN convention).
//!
//! Never a suffix, a path segment or a URI's authority: `spiffe://other/
//! ns/x/sa/billing` and `https://cdn.example/img/billing` name nobody.

use std::collections::HashMap;
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

/// Most names read from one certificate: a certificate with more is not
/// one service's, and the rest are ignored.
pub const MAX_CERTIFICATE_NAMES: usize = 16;

/// Longest certificate identity (a SAN) a client may record.
pub const MAX_IDENTITY_LEN: usize = 256;

/// Who a client certificate (its leaf, DER) says its holder is, read once
/// per connection: its thumbprint and its names. A certificate that does
/// not parse names nobody (the TLS layer has verified it already; it is
/// read with x509-parser).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateIdentity {
    thumbprint: String,
    dns_names: Vec<String>,
    uris: Vec<String>,
    /// Subject common names, only for a certificate without a SAN
    /// extension.
    common_names: Vec<String>,
}

impl CertificateIdentity {
    /// Reads a leaf certificate (DER).
    pub fn parse(der: &[u8]) -> CertificateIdentity {
        use x509_parser::extensions::GeneralName;
        let mut identity = CertificateIdentity {
            thumbprint: thumbprint(der),
            dns_names: Vec::new(),
            uris: Vec::new(),
            common_names: Vec::new(),
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return identity;
        };
        let mut room = MAX_CERTIFICATE_NAMES;
        let mut add = |list: &mut Vec<String>, name: &str| {
            if room > 0 && !list.iter().any(|known| known == name) {
                room -= 1;
                list.push(name.to_owned());
            }
        };
        match cert.subject_alternative_name() {
            Ok(Some(san)) => {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::DNSName(dns) => add(&mut identity.dns_names, dns),
                        GeneralName::URI(uri) => add(&mut identity.uris, uri),
                        _ => {}
                    }
                }
            }
            Ok(None) => {
                for cn in cert.subject().iter_common_name() {
                    if let Ok(cn) = cn.as_str() {
                        add(&mut identity.common_names, cn);
                    }
                }
            }
            // A SAN extension that does not parse names nothing.
            Err(_) => {}
        }
        identity
    }

    /// The RFC 8705 thumbprint (`x5t#S256`) of the certificate.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// Its DNS subject alternative names.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// Its URI subject alternative names (SPIFFE IDs among them).
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// Its subject common names, when it has no SAN extension (else none).
    pub fn common_names(&self) -> &[String] {
        &self.common_names
    }

    /// Every subject alternative name, DNS names first: what recorded
    /// identities are matched against.
    pub fn sans(&self) -> impl Iterator<Item = &str> {
        self.dns_names
            .iter()
            .chain(self.uris.iter())
            .map(String::as_str)
    }

    /// Whether `identity` (a recorded SAN) is exactly one of its SANs.
    fn has_san(&self, identity: &str) -> bool {
        self.dns_names
            .iter()
            .any(|dns| dns.eq_ignore_ascii_case(identity))
            || self.uris.iter().any(|uri| uri == identity)
    }
}

/// How certificates name service clients (see the module docs): the
/// trust domains whose `spiffe://TD/ID` names client `ID`, and, for
/// verifiers, the identities recorded per client. The default names by
/// the exact DNS SAN (or common name of a certificate without SANs) only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateNaming {
    trust_domains: Vec<String>,
    identities: HashMap<String, Vec<String>>,
}

impl CertificateNaming {
    /// The default rule: exact DNS SANs, and common names of certificates
    /// without SANs.
    pub fn new() -> CertificateNaming {
        CertificateNaming::default()
    }

    /// A URI SAN exactly `spiffe://{trust_domain}/ID` names client `ID`
    /// (the path is the one segment `ID`; never a longer path).
    pub fn trust_domain(mut self, trust_domain: impl Into<String>) -> CertificateNaming {
        let trust_domain = trust_domain.into();
        if !self.trust_domains.contains(&trust_domain) {
            self.trust_domains.push(trust_domain);
        }
        self
    }

    /// For verifiers: `client_id`'s own certificates carry the SAN
    /// `identity` (repeat for several); once a client has identities,
    /// only they name it.
    pub fn identity(
        mut self,
        client_id: impl Into<String>,
        identity: impl Into<String>,
    ) -> CertificateNaming {
        let list = self.identities.entry(client_id.into()).or_default();
        let identity = identity.into();
        if !list.contains(&identity) {
            list.push(identity);
        }
        self
    }

    /// The trust domains configured.
    pub fn trust_domains(&self) -> &[String] {
        &self.trust_domains
    }

    /// Whether `cert` names the service client `client_id`. `recorded`
    /// are the client's recorded identities as tokend's store holds them;
    /// `None` uses those configured here ([`identity`](Self::identity)).
    pub fn names(
        &self,
        cert: &CertificateIdentity,
        client_id: &str,
        recorded: Option<&[String]>,
    ) -> bool {
        let recorded = recorded.unwrap_or_else(|| {
            self.identities
                .get(client_id)
                .map(Vec::as_slice)
                .unwrap_or_default()
        });
        if !recorded.is_empty() {
            return recorded.iter().any(|identity| cert.has_san(identity));
        }
        !client_id.is_empty() && self.default_names(cert).any(|named| named == client_id)
    }

    /// The client ids `cert` names by the default rule (no recorded
    /// identities): its exact DNS SANs, `spiffe://TD/ID` of configured
    /// trust domains, common names of a certificate without SANs. Where a
    /// certificate caller's client is looked for, with its SANs (for
    /// recorded identities).
    pub fn default_names<'a>(
        &'a self,
        cert: &'a CertificateIdentity,
    ) -> impl Iterator<Item = &'a str> + 'a {
        let spiffe = cert
            .uris
            .iter()
            .filter_map(move |uri| self.spiffe_client(uri));
        cert.dns_names
            .iter()
            .map(String::as_str)
            .chain(spiffe)
            .chain(cert.common_names.iter().map(String::as_str))
    }

    /// `ID` of `spiffe://TD/ID` for a configured trust domain `TD`.
    fn spiffe_client<'a>(&self, uri: &'a str) -> Option<&'a str> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (domain, id) = rest.split_once('/')?;
        let trusted = self.trust_domains.iter().any(|td| td == domain);
        (trusted && !id.is_empty() && !id.contains(['/', '?', '#'])).then_some(id)
    }
}

/// Whether `identity` can be recorded as a certificate identity: a DNS
/// name or a URI as it appears in a SAN (1-256 printable ASCII characters,
/// no spaces).
pub fn is_certificate_identity(identity: &str) -> bool {
    !identity.is_empty()
        && identity.len() <= MAX_IDENTITY_LEN
        && identity.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The RFC 8705 certificate thumbprint (`x5t#S256`): SHA-256 of the
/// certificate's DER, base64url without padding.
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(dns: &[&str], uris: &[&str], cn: Option<&str>) -> CertificateIdentity {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().unwrap()));
        }
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        CertificateIdentity::parse(params.self_signed(&key).unwrap().der())
    }

    #[test]
    fn a_certificate_that_does_not_parse_names_nobody() {
        let identity = CertificateIdentity::parse(b"not a certificate");
        let naming = CertificateNaming::new();
        assert!(!naming.names(&identity, "orders", None));
        assert!(!naming.names(&identity, "", None));
        assert_eq!(identity.thumbprint(), thumbprint(b"not a certificate"));
    }

    #[test]
    fn by_default_only_an_exact_dns_name_names_a_client() {
        let naming = CertificateNaming::new();
        let cert = certificate(
            &["pay.example", "svc-a"],
            &["spiffe://example.org/svc/orders"],
            None,
        );
        assert!(naming.names(&cert, "svc-a", None));
        assert!(naming.names(&cert, "pay.example", None));
        // Never a path segment, a suffix or a part of a name.
        assert!(!naming.names(&cert, "orders", None));
        assert!(!naming.names(&cert, "svc", None));
        assert!(!naming.names(&cert, "pay", None));
        assert!(!naming.names(&cert, "example", None));
    }

    #[test]
    fn a_trust_domain_names_by_the_exact_one_segment_path() {
        let naming = CertificateNaming::new().trust_domain("prod.example");
        let exact = certificate(&[], &["spiffe://prod.example/billing"], None);
        assert!(naming.names(&exact, "billing", None));
        for uri in [
            "spiffe://prod.example/ns/pay/sa/billing",
            "spiffe://tenant.example/billing",
            "spiffe://prod.example.evil/billing",
            "https://prod.example/billing",
            "spiffe://billing",
        ] {
            let cert = certificate(&[], &[uri], None);
            assert!(!naming.names(&cert, "billing", None), "{uri}");
        }
    }

    #[test]
    fn recorded_identities_are_the_only_names_of_their_client() {
        let naming = CertificateNaming::new();
        let san = "spiffe://prod.example/ns/pay/sa/billing";
        let recorded = vec![san.to_owned()];
        let own = certificate(&[], &[san], None);
        assert!(naming.names(&own, "billing", Some(&recorded)));
        // Another namespace's workload called billing is not billing.
        let other = certificate(&[], &["spiffe://prod.example/ns/dev/sa/billing"], None);
        assert!(!naming.names(&other, "billing", Some(&recorded)));
        // Once identities are recorded the default rule no longer applies.
        let by_dns = certificate(&["billing"], &[], None);
        assert!(!naming.names(&by_dns, "billing", Some(&recorded)));
        // DNS identities compare without regard to case.
        let dns = vec!["Billing.Pay.Example".to_owned()];
        let cert = certificate(&["billing.pay.example"], &[], None);
        assert!(naming.names(&cert, "billing", Some(&dns)));
        // A verifier configures them per client.
        let verifier = CertificateNaming::new().identity("billing", san);
        assert!(verifier.names(&own, "billing", None));
        assert!(!verifier.names(&by_dns, "billing", None));
        assert!(!verifier.names(&by_dns, "other", None));
    }

    #[test]
    fn only_a_certificate_without_san_names_its_common_name() {
        let naming = CertificateNaming::new();
        let bare = certificate(&[], &[], Some("orders"));
        assert!(naming.names(&bare, "orders", None));
        assert_eq!(bare.common_names(), ["orders"]);
        let named = certificate(&["billing"], &[], Some("orders"));
        assert!(!naming.names(&named, "orders", None), "the SAN decides");
        assert!(named.common_names().is_empty());
    }

    #[test]
    fn names_are_capped_per_certificate() {
        let many: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
        let names: Vec<&str> = many.iter().map(String::as_str).collect();
        let cert = certificate(&names, &[], None);
        assert_eq!(cert.dns_names().len(), MAX_CERTIFICATE_NAMES);
    }

    #[test]
    fn identities_are_printable_and_bounded() {
        assert!(is_certificate_identity("spiffe://prod.example/ns/a/sa/b"));
        assert!(!is_certificate_identity(""));
        assert!(!is_certificate_identity("two words"));
        assert!(!is_certificate_identity(&"a".repeat(MAX_IDENTITY_LEN + 1)));
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
