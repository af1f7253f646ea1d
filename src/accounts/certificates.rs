//! Which service client a verified client certificate speaks for.
//!
//! A client may record the certificate identities (subject alternative
//! names) that are its own (`tokend client add ID --cert-san SAN`); once it
//! has, only they name it. Otherwise the default rule of
//! [`CertificateNaming`] applies (the exact DNS SAN `ID`, `spiffe://TD/ID`
//! for a trust domain given with `--cert-trust-domain`, or the common name
//! of a certificate without SANs). Never a suffix or a path segment.
//!
//! Recorded identities are claimed in an index (identity → client) before
//! the client lists them, so one identity names one client; the index is
//! only a hint for finding candidates, and the client's record decides.

use tokend_interceptor::certs::{
    CertificateIdentity, CertificateNaming, MAX_CERTIFICATE_NAMES, is_certificate_identity,
};

use super::{AccountError, AccountStates, rules};
use crate::store::{AccountKind, AccountState, Store, StoreError};

/// The service client a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertifiedClient {
    /// Exactly one client, enabled or not.
    One {
        /// Its id.
        id: String,
        /// Its state now.
        state: std::sync::Arc<AccountState>,
    },
    /// No client.
    None,
    /// Several clients: the certificate speaks for none of them.
    Several,
}

impl AccountStates {
    /// The client `cert` names (see the module docs). Every client it
    /// could name counts, enabled or not: disabling one never makes the
    /// certificate speak for another.
    pub async fn certified_client(
        &self,
        naming: &CertificateNaming,
        cert: &CertificateIdentity,
    ) -> Result<CertifiedClient, StoreError> {
        let mut candidates: Vec<String> = naming.default_names(cert).map(str::to_owned).collect();
        for san in cert.sans() {
            if let Some(owner) = self.store().certificate_owner(san).await? {
                candidates.push(owner);
            }
        }
        candidates.sort();
        candidates.dedup();
        let mut named = CertifiedClient::None;
        for id in candidates
            .into_iter()
            .filter(|id| rules::is_account_name(id))
        {
            let Some(state) = self.get(AccountKind::Client, &id).await? else {
                continue;
            };
            if !naming.names(cert, &id, Some(&state.cert_identities)) {
                continue;
            }
            named = match named {
                CertifiedClient::None => CertifiedClient::One { id, state },
                _ => return Ok(CertifiedClient::Several),
            };
        }
        Ok(named)
    }
}

/// Checks identities for recording: each a SAN as it appears in a
/// certificate, at most [`MAX_CERTIFICATE_NAMES`]; returns them without
/// repeats, in order.
pub fn checked_identities(identities: &[String]) -> Result<Vec<String>, AccountError> {
    if identities.len() > MAX_CERTIFICATE_NAMES {
        return Err(AccountError::TooManyIdentities);
    }
    let mut unique: Vec<String> = Vec::with_capacity(identities.len());
    for identity in identities {
        if !is_certificate_identity(identity) {
            return Err(AccountError::BadIdentity(
                identity.chars().take(64).collect(),
            ));
        }
        if !unique.contains(identity) {
            unique.push(identity.clone());
        }
    }
    Ok(unique)
}

/// Claims `identities` for the client `id` in the index: an identity that
/// another client's record lists is refused; one whose index entry is left
/// from a change that failed half way is taken over. Claims made before a
/// refusal are given back.
pub async fn claim(store: &Store, id: &str, identities: &[String]) -> Result<(), AccountError> {
    let mut claimed: Vec<&String> = Vec::new();
    for identity in identities {
        match claim_one(store, id, identity).await {
            Ok(true) => claimed.push(identity),
            Ok(false) => {}
            Err(err) => {
                let given_back: Vec<String> = claimed.into_iter().cloned().collect();
                release(store, id, &given_back).await;
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Claims one identity; `Ok(true)` if it was not the client's before.
async fn claim_one(store: &Store, id: &str, identity: &str) -> Result<bool, AccountError> {
    // A few rounds: another claim may race this one.
    for _ in 0..4 {
        let owner = store.certificate_owner(identity).await?;
        match owner.as_deref() {
            Some(owner) if owner == id => return Ok(false),
            Some(owner) => {
                let lists = store
                    .client(owner)
                    .await?
                    .is_some_and(|c| c.cert_identities.iter().any(|i| i == identity));
                if lists {
                    return Err(AccountError::IdentityTaken(
                        identity.to_owned(),
                        owner.to_owned(),
                    ));
                }
            }
            None => {}
        }
        if store
            .swap_certificate_owner(identity, owner.as_deref(), Some(id))
            .await?
        {
            return Ok(true);
        }
    }
    Err(AccountError::Store(StoreError::Unavailable(
        "the certificate identity index kept changing; run the command again".into(),
    )))
}

/// Gives `identities` back from the client `id` (best effort: an entry
/// left behind names nobody, since the record decides).
pub async fn release(store: &Store, id: &str, identities: &[String]) {
    for identity in identities {
        if let Err(err) = store.swap_certificate_owner(identity, Some(id), None).await {
            tracing::warn!(client = id, error = %err, "could not release a certificate identity");
        }
    }
}
