//! Client side: a [`TokenSource`] that obtains access tokens from tokend and
//! attaches them to outgoing calls.
//!
//! It logs in with service-client credentials (or rotates a user's refresh
//! token), renews ahead of expiry with jitter, renews once for any number of
//! concurrent callers, and drops a token a server called expired.
//!
//! See the crate README for the wiring.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use tonic::Status;
use tonic::transport::Channel;
use tracing::warn;

mod bearer;
mod exchange;

pub use crate::background::Background;
pub use crate::connect::{ConnectError, TokendEndpoint};
pub use bearer::{BearerInterceptor, BearerLayer, BearerService};
pub use exchange::{
    DEFAULT_EXCHANGE_CACHE, ExchangeLayer, ExchangeService, ExchangingTokenSource, OnBehalfOf,
};

use crate::proto::tokend::v1 as pb;
use crate::proto::tokend::v1::token_service_client::TokenServiceClient;
use crate::reason::Reason;
use crate::token::TOKEN_TYPE;

/// Renewal starts when less than this share of a token's life is left...
const RENEW_SHARE: f64 = 0.25;
/// ...plus up to this much more, at random, so replicas do not renew in step.
const RENEW_JITTER: f64 = 0.10;

/// Service-client credentials and what to ask for.
#[derive(Clone, Default)]
pub struct ClientGrant {
    /// The client id.
    pub client_id: String,
    /// The secret `tokend client add` printed.
    pub client_secret: String,
    /// The audience to ask for; empty for tokend's default.
    pub audience: String,
    /// Scopes to narrow to; empty for all the client has.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for ClientGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientGrant")
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

enum Grant {
    Client(ClientGrant),
    Refresh(String),
    /// The user session ended (refresh token invalid or reused): every
    /// renewal fails with this, without calling tokend.
    Ended(Status),
}

/// An access token in use and when to renew it.
#[derive(Clone)]
pub struct CurrentToken {
    token: Arc<str>,
    header: HeaderValue,
    obtained: Instant,
    renew_at: Instant,
    expires_at: Instant,
}

impl std::fmt::Debug for CurrentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentToken")
            .field("renew_at", &self.renew_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl CurrentToken {
    /// The PASETO string.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `Bearer <token>`, marked sensitive.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }
}

/// Obtains, caches and renews access tokens. Cheap to clone.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    client: TokenServiceClient<Channel>,
    grant: tokio::sync::Mutex<Grant>,
    current: RwLock<Option<CurrentToken>>,
    /// The last failed renewal, so callers queued behind it fail with it
    /// instead of each trying again.
    last_failure: RwLock<Option<(Instant, Status)>>,
    background: AtomicBool,
    renewals: AtomicU64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("renewals", &self.renewals())
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// Logs in as a service client over `channel` (to tokend).
    pub fn client_credentials(
        channel: Channel,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> TokenSource {
        TokenSource::for_client(
            channel,
            ClientGrant {
                client_id: client_id.into(),
                client_secret: client_secret.into(),
                ..ClientGrant::default()
            },
        )
    }

    /// Logs in as a service client with a chosen audience and scopes.
    pub fn for_client(channel: Channel, grant: ClientGrant) -> TokenSource {
        TokenSource::new(channel, Grant::Client(grant))
    }

    /// Keeps a user session going by rotating `refresh_token`.
    pub fn from_refresh_token(channel: Channel, refresh_token: impl Into<String>) -> TokenSource {
        TokenSource::new(channel, Grant::Refresh(refresh_token.into()))
    }

    fn new(channel: Channel, grant: Grant) -> TokenSource {
        TokenSource {
            inner: Arc::new(Inner {
                client: TokenServiceClient::new(channel),
                grant: tokio::sync::Mutex::new(grant),
                current: RwLock::new(None),
                last_failure: RwLock::new(None),
                background: AtomicBool::new(false),
                renewals: AtomicU64::new(0),
            }),
        }
    }

    /// How many logins or refreshes this source has made.
    pub fn renewals(&self) -> u64 {
        self.inner.renewals.load(Ordering::Relaxed)
    }

    /// The latest refresh token of a user session (store it to resume later).
    pub async fn refresh_token(&self) -> Option<String> {
        match &*self.inner.grant.lock().await {
            Grant::Refresh(token) => Some(token.clone()),
            Grant::Client(_) | Grant::Ended(_) => None,
        }
    }

    fn cached(&self) -> Option<CurrentToken> {
        match self.inner.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn store(&self, token: Option<CurrentToken>) {
        match self.inner.current.write() {
            Ok(mut current) => *current = token,
            Err(poisoned) => *poisoned.into_inner() = token,
        }
    }

    /// A token fit to send now: the cached one unless it is due for renewal,
    /// else a renewed one. Concurrent callers share one renewal. If renewal
    /// fails while the cached token is still unexpired, that one is returned.
    ///
    /// The renewal runs on a task of its own: a caller that is cancelled
    /// (a timeout, a dropped future) cannot abandon a refresh-token rotation
    /// half way, which would leave the consumed token to be replayed later
    /// and the session revoked for reuse. Call within a Tokio runtime.
    pub async fn access_token(&self) -> Result<CurrentToken, Status> {
        if let Some(current) = self.cached().filter(|c| Instant::now() < c.renew_at) {
            return Ok(current);
        }
        let asked = Instant::now();
        let source = self.clone();
        tokio::spawn(async move { source.renew_once(asked).await })
            .await
            .unwrap_or_else(|_| Err(Status::internal("token renewal task failed")))
    }

    /// Renews unless someone else did (or failed to) since `asked`.
    async fn renew_once(&self, asked: Instant) -> Result<CurrentToken, Status> {
        let mut grant = self.inner.grant.lock().await;
        // Someone may have renewed while we waited for the lock...
        if let Some(current) = self.cached().filter(|c| Instant::now() < c.renew_at) {
            return Ok(current);
        }
        // ...or failed to: share that answer rather than try again at once.
        let failed = match self.inner.last_failure.read() {
            Ok(last) => last.clone().filter(|(at, _)| *at >= asked),
            Err(_) => None,
        };
        let result = match failed {
            Some((_, status)) => Err(status),
            None => {
                let renewed = self.renew(&mut grant).await;
                crate::observe::token_renewal(renewed.is_ok());
                renewed
            }
        };
        match result {
            Ok(current) => Ok(current),
            Err(status) => {
                if let Ok(mut last) = self.inner.last_failure.write() {
                    *last = Some((Instant::now(), status.clone()));
                }
                match self.cached().filter(|c| Instant::now() < c.expires_at) {
                    Some(current) => {
                        warn!(error = %status.message(), "token renewal failed; using the current token until it expires");
                        Ok(current)
                    }
                    None => Err(status),
                }
            }
        }
    }

    async fn renew(&self, grant: &mut Grant) -> Result<CurrentToken, Status> {
        let mut client = self.inner.client.clone();
        let pair = match grant {
            Grant::Client(g) => {
                let request = pb::LoginRequest {
                    credentials: Some(pb::login_request::Credentials::Client(
                        pb::ClientCredentials {
                            client_id: g.client_id.clone(),
                            client_secret: g.client_secret.clone(),
                        },
                    )),
                    audience: g.audience.clone(),
                    scopes: g.scopes.clone(),
                };
                client.login(request).await?.into_inner().tokens
            }
            Grant::Refresh(refresh_token) => {
                let request = pb::RefreshRequest {
                    refresh_token: refresh_token.clone(),
                };
                match client.refresh(request).await {
                    Ok(reply) => {
                        let pair = reply.into_inner().tokens;
                        if let Some(pair) = &pair {
                            refresh_token.clone_from(&pair.refresh_token);
                        }
                        pair
                    }
                    Err(status) => {
                        let ended = matches!(
                            Reason::of(&status),
                            Some(Reason::RefreshTokenInvalid | Reason::RefreshTokenReused)
                        );
                        if ended {
                            *grant = Grant::Ended(status.clone());
                        }
                        return Err(status);
                    }
                }
            }
            Grant::Ended(status) => return Err(status.clone()),
        };
        self.inner.renewals.fetch_add(1, Ordering::Relaxed);
        let pair = pair.ok_or_else(|| Status::internal("tokend returned no tokens"))?;
        let current = current_token(&pair)?;
        self.store(Some(current.clone()));
        Ok(current)
    }

    /// Forgets the cached token, whatever it is, so the next call renews.
    pub fn invalidate_all(&self) {
        self.store(None);
    }

    /// Forgets `token` if it is the cached one, so the next call renews.
    pub fn invalidate(&self, token: &str) {
        if self.cached().is_some_and(|c| &*c.token == token) {
            self.store(None);
        }
    }

    /// Forgets the cached token if it was obtained before `instant`.
    fn invalidate_older_than(&self, instant: Instant) {
        if self.cached().is_some_and(|c| c.obtained < instant) {
            self.store(None);
        }
    }

    /// Runs a call; if it fails with `ACCESS_TOKEN_EXPIRED` (clock skew, a
    /// suspended process), renews and runs it once more.
    pub async fn retry_on_expired<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        match call().await {
            Err(status) if Reason::of(&status) == Some(Reason::AccessTokenExpired) => {
                self.invalidate_older_than(started);
                call().await
            }
            other => other,
        }
    }

    /// A tonic client `Interceptor` attaching the cached token. It cannot
    /// wait, so renewals run in the background; call
    /// [`access_token`](Self::access_token) once before the first call.
    pub fn interceptor(&self) -> BearerInterceptor {
        BearerInterceptor::new(self.clone())
    }

    /// A tower layer for a `Channel` attaching a fresh token to every call.
    pub fn layer(&self) -> BearerLayer {
        BearerLayer::new(self.clone())
    }

    fn renew_in_background(&self) {
        if self.inner.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.background.store(false, Ordering::Release);
            return;
        };
        let source = self.clone();
        runtime.spawn(async move {
            if let Err(status) = source.access_token().await {
                warn!(error = %status.message(), "background token renewal failed");
            }
            source.inner.background.store(false, Ordering::Release);
        });
    }
}

fn current_token(pair: &pb::TokenPair) -> Result<CurrentToken, Status> {
    let expires = pair
        .access_token_expires_at
        .as_ref()
        .ok_or_else(|| Status::internal("tokend returned no expiry"))?;
    let expires_at = UNIX_EPOCH + Duration::from_secs(u64::try_from(expires.seconds).unwrap_or(0));
    let lifetime = expires_at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    // A token claiming to live longer than a day is treated as living a day
    // (and keeps the Instant arithmetic far from overflow).
    let lifetime = lifetime.min(Duration::from_secs(86_400));
    let now = Instant::now();
    let share = RENEW_SHARE + RENEW_JITTER * jitter();
    let mut header = HeaderValue::from_str(&format!("{TOKEN_TYPE} {}", pair.access_token))
        .map_err(|_| Status::internal("tokend returned a token that is not a header value"))?;
    header.set_sensitive(true);
    Ok(CurrentToken {
        token: Arc::from(pair.access_token.as_str()),
        header,
        obtained: now,
        renew_at: now + lifetime.mul_f64(1.0 - share),
        expires_at: now + lifetime,
    })
}

/// A number in [0, 1), different per call and per process.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}
