//! The downstream client's certificate, as Envoy reports it
//! (`include_peer_certificate: true`: URL-encoded PEM), turned into the
//! certificate list the interceptor's verifier checks bound tokens
//! against. Parsed once per certificate: the same client's requests share
//! one list, so the verifier's per-connection binding cache works for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokend_interceptor::verify::PeerCertificates;

use crate::request::MAX_CERTIFICATE_TEXT;

/// Most certificates remembered at once (cleared when full).
const CAPACITY: usize = 1024;

/// Longest certificate text remembered (longer ones are parsed each time),
/// so the cache stays within a few MiB whatever clients present.
const MAX_REMEMBERED_TEXT: usize = 8 * 1024;

/// Parsed peer certificates, by the text Envoy sent.
#[derive(Debug, Default)]
pub struct PeerCache {
    parsed: Mutex<HashMap<String, PeerCertificates>>,
}

impl PeerCache {
    /// An empty cache.
    pub fn new() -> PeerCache {
        PeerCache::default()
    }

    /// The certificates in `text` (leaf first); `None` when Envoy sent none.
    /// Text that holds no readable certificate (or is oversized) gives an
    /// empty list: the client presented something, and no bound token can
    /// match it.
    pub fn get(&self, text: &str) -> Option<PeerCertificates> {
        if text.is_empty() {
            return None;
        }
        let remembered = text.len() <= MAX_REMEMBERED_TEXT;
        if remembered
            && let Ok(parsed) = self.parsed.lock()
            && let Some(found) = parsed.get(text)
        {
            return Some(Arc::clone(found));
        }
        let certificates = Arc::new(parse(text));
        if remembered && let Ok(mut parsed) = self.parsed.lock() {
            if parsed.len() >= CAPACITY {
                parsed.clear();
            }
            parsed.insert(text.to_owned(), Arc::clone(&certificates));
        }
        Some(certificates)
    }
}

/// The certificates of URL-encoded PEM `text`; none if it is unreadable.
fn parse(text: &str) -> Vec<CertificateDer<'static>> {
    if text.len() > MAX_CERTIFICATE_TEXT {
        return Vec::new();
    }
    let pem: Vec<u8> = percent_encoding::percent_decode_str(text).collect();
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";

    fn url_encoded(pem: &str) -> String {
        percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn certificates_are_parsed_once_and_garbage_is_an_empty_list() {
        let cache = PeerCache::new();
        assert!(cache.get("").is_none());
        let text = url_encoded(PEM);
        let first = cache.get(&text).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].as_ref(), &[0, 1, 2]);
        let again = cache.get(&text).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same list for the same client"
        );
        assert!(cache.get("garbage").unwrap().is_empty());
        let huge = "A".repeat(MAX_CERTIFICATE_TEXT + 1);
        assert!(cache.get(&huge).unwrap().is_empty());
        for n in 0..CAPACITY + 10 {
            cache.get(&format!("x{n}"));
        }
        assert!(cache.parsed.lock().unwrap().len() <= CAPACITY);
    }
}
