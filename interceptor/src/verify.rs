//! Access-token verification.
//!
//! In order: size and shape; the footer's `kid` (size-limited, parsed by us);
//! the key it names; the Ed25519 signature (pasetors); then our own checks of
//! `iss`, `aud`, `exp`, `nbf` and `iat` (not in the future) against an
//! injectable clock with a leeway.
//! A token whose signature does not verify is `ACCESS_TOKEN_INVALID`, never
//! `ACCESS_TOKEN_EXPIRED`: expiry is only reported for tokens tokend signed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pasetors::Public;
use pasetors::keys::AsymmetricPublicKey;
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};

use crate::cache::{self, Entry, VerifiedCache};
use crate::certs::{CertificateIdentity, CertificateNaming};
use crate::error::{AuthError, Invalid};
use crate::keys::KeySet;
use crate::revocation::RevocationList;
use crate::token::{Claims, Footer, MAX_CHAIN_DEPTH, MAX_FOOTER_LEN, MAX_TOKEN_LEN, TOKEN_HEADER};

/// The certificates a client presented over mTLS, as tonic's TLS connection
/// info holds them (leaf first). One `Arc` per connection.
pub type PeerCertificates = Arc<Vec<rustls_pki_types::CertificateDer<'static>>>;

/// Connections whose thumbprint is remembered.
const THUMBPRINT_CACHE: usize = 4096;

/// Default leeway for `exp` and `nbf`: absorbs small clock differences
/// between tokend and the resource service.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// Default number of verified tokens remembered.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// How long a verifier waits for an early key fetch on an unknown `kid`.
const REFETCH_WAIT: Duration = Duration::from_secs(2);

/// Where "now" comes from; tests inject a fixed clock.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Configures a [`Verifier`]. Issuer and audience are always checked, and
/// always stated by the caller ([`Verifier::builder`]): a forgotten
/// audience must not quietly accept every token of some default one.
pub struct VerifierBuilder {
    keys: KeySet,
    issuer: String,
    audiences: Vec<String>,
    any_audience: bool,
    actor_certificates: bool,
    naming: CertificateNaming,
    leeway: Duration,
    clock: Arc<dyn Clock>,
    cache_capacity: usize,
    revocations: Option<RevocationList>,
}

impl VerifierBuilder {
    /// Accepts one more audience besides the one given to
    /// [`Verifier::builder`].
    pub fn also_accept_audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Accepts tokens for every audience. Only for a token service that
    /// checks the audience itself (tokend's `Exchange` verifies subject
    /// tokens meant for its callers): a resource service must never.
    pub fn any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// Delegated tokens (with an `act` claim) must arrive over mTLS from
    /// their outermost actor: one presented without a client certificate
    /// gets `ACTOR_MISMATCH` too. For servers that verify client
    /// certificates (mTLS), where a caller without one is not a service of
    /// the mesh. Off by default: without mTLS there is no peer to check.
    pub fn require_actor_certificates(mut self) -> Self {
        self.actor_certificates = true;
        self
    }

    /// How a caller's certificate names the actor of a delegated token
    /// (see [`CertificateNaming`]; default: its exact DNS SAN, or the
    /// common name of a certificate without SANs).
    pub fn certificate_naming(mut self, naming: CertificateNaming) -> Self {
        self.naming = naming;
        self
    }

    /// Tolerance for `exp` and `nbf` (default 5 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The clock to check times against (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How many verified tokens to remember; 0 turns the cache off.
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Rejects tokens of sessions on this list with `SESSION_REVOKED`.
    pub fn revocations(mut self, revocations: RevocationList) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// The verifier.
    pub fn build(self) -> Verifier {
        Verifier {
            inner: Arc::new(Inner {
                keys: self.keys,
                issuer: self.issuer,
                audiences: self.audiences,
                any_audience: self.any_audience,
                actor_certificates: self.actor_certificates,
                naming: self.naming,
                leeway_ms: i64::try_from(self.leeway.as_millis()).unwrap_or(i64::MAX),
                clock: self.clock,
                cache: (self.cache_capacity > 0).then(|| VerifiedCache::new(self.cache_capacity)),
                revocations: self.revocations,
                thumbprints: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// Verifies tokend access tokens. Cheap to clone; clones share keys and cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    keys: KeySet,
    issuer: String,
    audiences: Vec<String>,
    any_audience: bool,
    actor_certificates: bool,
    naming: CertificateNaming,
    leeway_ms: i64,
    clock: Arc<dyn Clock>,
    cache: Option<VerifiedCache>,
    revocations: Option<RevocationList>,
    /// Thumbprints of connections' client certificates, by the address of
    /// the connection's certificate list (kept alive here, so the address
    /// is not reused while cached): hashing a certificate on every call
    /// would cost more than the rest of a cached verification.
    thumbprints: Mutex<HashMap<usize, (PeerCertificates, Arc<CertificateIdentity>)>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.issuer)
            .field("audiences", &self.inner.audiences)
            .field("leeway_ms", &self.inner.leeway_ms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Starts configuring a verifier that uses `keys` and accepts tokens
    /// from `issuer` (tokend's `--issuer`, `tokend` by default) meant for
    /// `audience` (this service's name, as callers ask for it at Login;
    /// tokend's default audience is `internal`). Both are required: there
    /// is no default to forget.
    ///
    /// ```compile_fail
    /// # use tokend_interceptor::{KeySet, Verifier};
    /// // No issuer or audience: does not compile.
    /// let verifier = Verifier::builder(KeySet::fixed(Default::default())).build();
    /// ```
    pub fn builder(
        keys: KeySet,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> VerifierBuilder {
        VerifierBuilder {
            keys,
            issuer: issuer.into(),
            audiences: vec![audience.into()],
            any_audience: false,
            actor_certificates: false,
            naming: CertificateNaming::default(),
            leeway: DEFAULT_LEEWAY,
            clock: Arc::new(SystemClock),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            revocations: None,
        }
    }

    /// The keys it verifies with.
    pub fn keys(&self) -> &KeySet {
        &self.inner.keys
    }

    /// The revocation list it consults, if any.
    pub fn revocations(&self) -> Option<&RevocationList> {
        self.inner.revocations.as_ref()
    }

    /// Whether it can judge tokens as tokend would: it holds keys, and its
    /// revocation list (if any) has the feed's history. What a service's
    /// health should say before it reports SERVING.
    pub fn is_ready(&self) -> bool {
        self.inner.keys.is_loaded()
            && self
                .inner
                .revocations
                .as_ref()
                .is_none_or(RevocationList::caught_up)
    }

    /// Verifies `token` now, for a caller that presented no client
    /// certificate: a certificate-bound token is refused
    /// ([`AuthError::BindingMismatch`]), since whoever holds a copy of it
    /// could present it otherwise. A service that serves mTLS verifies with
    /// [`verify_peer`](Self::verify_peer) instead; one that only reads the
    /// claims of a token nobody is presenting uses
    /// [`verify_claims`](Self::verify_claims). On an unknown `kid` it asks
    /// the key sync (if any) for an early fetch but does not wait for it;
    /// see [`verify_async`](Self::verify_async).
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        self.verify_peer(token, None)
    }

    /// Like [`verify`](Self::verify), for a caller whose connection presented
    /// `peer`: see [`verify_from`](Self::verify_from).
    pub fn verify_peer(
        &self,
        token: &str,
        peer: Option<&PeerCertificates>,
    ) -> Result<Arc<Claims>, AuthError> {
        let result = self.verify_from(token, self.now_ms(), peer);
        if matches!(result, Err(AuthError::Invalid(Invalid::UnknownKey))) {
            self.inner.keys.request_refetch();
        }
        result
    }

    /// Like [`verify`](Self::verify) (a bound token without its certificate
    /// is refused), but on an unknown `kid` (or no keys yet) waits briefly
    /// for an early key fetch and tries once more. Fetches are single-flight
    /// and rate-limited, so forged kids cannot hammer tokend.
    pub async fn verify_async(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        self.verify_from_async(token, None).await
    }

    /// Checks only the token itself (signature, issuer, audience, time,
    /// revocation) and **not** who presents it: a certificate-bound token
    /// passes without its certificate, and a delegated one without its
    /// actor's. Only for tokens that are read rather than presented (e.g.
    /// tokend's Exchange reading the subject token a service hands it), or
    /// for a caller that checks [`check_binding`](Self::check_binding)
    /// itself. A service authenticating its callers wants
    /// [`verify_peer`](Self::verify_peer).
    pub fn verify_claims(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let result = self.verify_with(token, self.now_ms(), None);
        if matches!(result, Err(AuthError::Invalid(Invalid::UnknownKey))) {
            self.inner.keys.request_refetch();
        }
        result
    }

    fn now_ms(&self) -> i64 {
        let since_epoch = self
            .inner
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
    }

    /// Verifies `token` as of `now_ms` (ms since the epoch), using the cache.
    /// Certificate binding is not checked: see [`verify_from`](Self::verify_from).
    /// Only with the `bench-internals` feature (the benchmarks): not part
    /// of the promised API.
    #[cfg(any(test, feature = "bench-internals"))]
    #[doc(hidden)]
    pub fn verify_at(&self, token: &str, now_ms: i64) -> Result<Arc<Claims>, AuthError> {
        self.verify_with(token, now_ms, None)
    }

    /// Verifies `token` as of `now_ms` for a caller whose connection
    /// presented `peer` (its client certificates over mTLS, if any): a
    /// certificate-bound token is refused unless `peer` holds its
    /// certificate (see [`check_binding`](Self::check_binding)). Once
    /// confirmed for a connection, the binding is not hashed again.
    pub fn verify_from(
        &self,
        token: &str,
        now_ms: i64,
        peer: Option<&PeerCertificates>,
    ) -> Result<Arc<Claims>, AuthError> {
        self.verify_with(token, now_ms, Some(peer))
    }

    /// Like [`verify_from`](Self::verify_from) now, waiting for an early key
    /// fetch on an unknown `kid` like [`verify_async`](Self::verify_async).
    pub async fn verify_from_async(
        &self,
        token: &str,
        peer: Option<&PeerCertificates>,
    ) -> Result<Arc<Claims>, AuthError> {
        let first = self.verify_from(token, self.now_ms(), peer);
        match first {
            Err(AuthError::Invalid(Invalid::UnknownKey) | AuthError::KeysUnavailable) => {
                if self.inner.keys.refetch_and_wait(REFETCH_WAIT).await {
                    self.verify_from(token, self.now_ms(), peer)
                } else {
                    first
                }
            }
            other => other,
        }
    }

    /// `binding`: `None` to skip the binding check, else the caller's
    /// connection certificates (perhaps none). Counted for the metrics.
    fn verify_with(
        &self,
        token: &str,
        now_ms: i64,
        binding: Option<Option<&PeerCertificates>>,
    ) -> Result<Arc<Claims>, AuthError> {
        let result = self.verify_checked(token, now_ms, binding);
        crate::observe::verification(&result);
        result
    }

    /// What [`verify_with`](Self::verify_with) decides.
    fn verify_checked(
        &self,
        token: &str,
        now_ms: i64,
        binding: Option<Option<&PeerCertificates>>,
    ) -> Result<Arc<Claims>, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Invalid::Malformed.into());
        }
        let inner = &self.inner;
        let Some(cache) = &inner.cache else {
            let claims = Arc::new(self.check_token(token, now_ms)?);
            self.check_revoked(&claims)?;
            if let Some(peer) = binding {
                self.check_binding(&claims, peer)?;
            }
            return Ok(claims);
        };
        let generation = inner.keys.generation();
        let key = cache::key(token);
        let found = cache.get(key, token, generation, binding.flatten());
        crate::observe::cache_lookup(found.is_some());
        if let Some(hit) = found {
            if now_ms >= hit.exp_ms.saturating_add(inner.leeway_ms) {
                cache.remove(key);
                return Err(AuthError::Expired);
            }
            self.check_revoked(&hit.claims)?;
            if let Some(peer) = binding
                && needs_peer_check(&hit.claims)
                && !hit.peer_confirmed
            {
                self.check_binding(&hit.claims, peer)?;
                if let Some(peer) = peer {
                    cache.confirm_peer(key, token, peer);
                }
            }
            return Ok(hit.claims);
        }
        let claims = Arc::new(self.check_token(token, now_ms)?);
        // Cached once the signature holds, whatever the binding: a token is
        // valid or not by itself; the binding is per connection.
        let confirmed = match binding {
            Some(peer) if needs_peer_check(&claims) => {
                self.check_binding(&claims, peer).ok().and(peer.cloned())
            }
            _ => None,
        };
        cache.insert(
            key,
            Entry {
                token: token.into(),
                claims: Arc::clone(&claims),
                exp_ms: claims.exp.saturating_mul(1000),
                generation,
                peer: confirmed,
            },
            now_ms.saturating_sub(inner.leeway_ms),
        );
        self.check_revoked(&claims)?;
        if let Some(peer) = binding {
            self.check_binding(&claims, peer)?;
        }
        Ok(claims)
    }

    /// Full verification without the cache: what a token presented for the
    /// first time costs. Only with the `bench-internals` feature (the
    /// benchmarks): not part of the promised API.
    #[cfg(any(test, feature = "bench-internals"))]
    #[doc(hidden)]
    pub fn verify_uncached(&self, token: &str, now_ms: i64) -> Result<Claims, AuthError> {
        self.check_token(token, now_ms)
    }

    /// The token itself: format, footer, key, signature, claims, time.
    fn check_token(&self, token: &str, now_ms: i64) -> Result<Claims, AuthError> {
        let inner = &self.inner;
        let claims = self.check_signature(token)?;
        if claims.iss != inner.issuer {
            return Err(Invalid::WrongIssuer.into());
        }
        if !inner.any_audience && !inner.audiences.contains(&claims.aud) {
            return Err(Invalid::WrongAudience.into());
        }
        if now_ms
            >= claims
                .exp
                .saturating_mul(1000)
                .saturating_add(inner.leeway_ms)
        {
            return Err(AuthError::Expired);
        }
        if now_ms.saturating_add(inner.leeway_ms) < claims.nbf.saturating_mul(1000) {
            return Err(Invalid::NotYetValid.into());
        }
        if now_ms.saturating_add(inner.leeway_ms) < claims.iat.saturating_mul(1000) {
            return Err(Invalid::IssuedInTheFuture.into());
        }
        if claims.chain_depth() > MAX_CHAIN_DEPTH {
            return Err(Invalid::BadClaims.into());
        }
        Ok(claims)
    }

    /// Shape, key and signature; returns the signed claims.
    fn check_signature(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Invalid::Malformed.into());
        }
        let body = token.strip_prefix(TOKEN_HEADER).ok_or(Invalid::Malformed)?;
        let (payload, footer) = body.split_once('.').ok_or(Invalid::Malformed)?;
        if payload.is_empty() || footer.is_empty() || footer.len() > MAX_FOOTER_LEN {
            return Err(Invalid::Malformed.into());
        }
        let footer = URL_SAFE_NO_PAD
            .decode(footer)
            .map_err(|_| Invalid::Malformed)?;
        let footer: Footer = serde_json::from_slice(&footer).map_err(|_| Invalid::Malformed)?;

        let keys = &self.inner.keys;
        if !keys.is_loaded() {
            return Err(AuthError::KeysUnavailable);
        }
        let ring = keys.ring();
        let key = ring.get(&footer.kid).ok_or(Invalid::UnknownKey)?;

        let payload = verify_signature(key, token, &[])?;
        serde_json::from_str(&payload).map_err(|_| Invalid::BadClaims.into())
    }

    /// Refuses a certificate-bound token (RFC 8705 `cnf`) unless the caller
    /// presented that certificate over mTLS (`peer`, leaf first). Unbound
    /// tokens pass whatever the connection, except delegated ones over
    /// mTLS: the certificate must name the token's outermost actor (see
    /// [`CertificateNaming`]),
    /// else [`AuthError::ActorMismatch`] (also without a certificate, with
    /// [`VerifierBuilder::require_actor_certificates`]). A delegated token that fails its
    /// binding is also an actor mismatch: another service presented it.
    pub fn check_binding(
        &self,
        claims: &Claims,
        peer: Option<&PeerCertificates>,
    ) -> Result<(), AuthError> {
        let peer = peer.filter(|certs| !certs.is_empty());
        let mismatch = match claims.act {
            Some(_) => AuthError::ActorMismatch,
            None => AuthError::BindingMismatch,
        };
        match (&claims.cnf, peer) {
            (None, None) if claims.act.is_some() && self.inner.actor_certificates => Err(mismatch),
            (None, None) => Ok(()),
            (Some(_), None) => Err(mismatch),
            (Some(cnf), Some(peer)) => {
                if self.identity(peer).thumbprint() == cnf.x5t_s256 {
                    Ok(())
                } else {
                    Err(mismatch)
                }
            }
            (None, Some(peer)) => match claims.outermost_actor() {
                None => Ok(()),
                Some(actor) if self.inner.naming.names(&self.identity(peer), actor, None) => Ok(()),
                Some(_) => Err(mismatch),
            },
        }
    }

    /// The identity of the connection's leaf certificate, worked out once
    /// per connection.
    fn identity(&self, peer: &PeerCertificates) -> Arc<CertificateIdentity> {
        let key = Arc::as_ptr(peer) as usize;
        if let Ok(cache) = self.inner.thumbprints.lock()
            && let Some((_, identity)) = cache.get(&key)
        {
            return Arc::clone(identity);
        }
        let leaf = peer.first().map(|c| c.as_ref()).unwrap_or_default();
        let identity = Arc::new(CertificateIdentity::parse(leaf));
        if let Ok(mut cache) = self.inner.thumbprints.lock() {
            if cache.len() >= THUMBPRINT_CACHE {
                cache.clear();
            }
            cache.insert(key, (Arc::clone(peer), Arc::clone(&identity)));
        }
        identity
    }

    fn check_revoked(&self, claims: &Claims) -> Result<(), AuthError> {
        match &self.inner.revocations {
            Some(list) => list.check(claims, self.now_ms()),
            None => Ok(()),
        }
    }
}

/// Whether a token's acceptance depends on the caller's connection: bound
/// tokens and delegated ones.
fn needs_peer_check(claims: &Claims) -> bool {
    claims.cnf.is_some() || claims.act.is_some()
}

/// Checks a `v4.public` token's Ed25519 signature (over its payload,
/// footer and `implicit` assertion) against `key`, and returns the signed
/// payload. No claim is looked at: that is the caller's business.
pub(crate) fn verify_signature(
    key: &AsymmetricPublicKey<V4>,
    token: &str,
    implicit: &[u8],
) -> Result<String, Invalid> {
    let untrusted =
        UntrustedToken::<Public, V4>::try_from(token).map_err(|_| Invalid::Malformed)?;
    let implicit = (!implicit.is_empty()).then_some(implicit);
    let trusted =
        PublicToken::verify(key, &untrusted, None, implicit).map_err(|_| Invalid::BadSignature)?;
    Ok(trusted.payload().to_owned())
}

#[cfg(test)]
mod tests;
