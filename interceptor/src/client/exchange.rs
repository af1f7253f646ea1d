//! On-behalf-of calls, client side: an [`ExchangingTokenSource`] trades the
//! user's inbound token for one good at a downstream service (tokend's
//! `Exchange`), and an [`ExchangeLayer`] attaches it to outbound calls that
//! carry [`OnBehalfOf`].
//!
//! - **Single flight**: one exchange per (subject token, audience, scopes),
//!   however many callers ask at once; a failure is shared by those queued
//!   behind it.
//! - **Cached** until renewal is due (a quarter of the lifetime left), and
//!   never renewed beyond the subject token's own `exp`: a derived token
//!   that already ends with its subject is used to its end.
//! - **No fallback**: an outbound call without a subject token fails; it
//!   is never sent with the service's own identity instead.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use tonic::Status;
use tonic::transport::Channel;
use tower::{Layer, Service};

use super::TokenSource;
use crate::proto::tokend::v1 as pb;
use crate::proto::tokend::v1::token_service_client::TokenServiceClient;
use crate::reason::Reason;
use crate::token::{MAX_TOKEN_LEN, TOKEN_HEADER, TOKEN_TYPE};

/// Renewal is due when less than this share of a derived token's life is left.
const RENEW_SHARE: f64 = 0.25;

/// Default bound on cached derived tokens.
pub const DEFAULT_EXCHANGE_CACHE: usize = 10_000;

/// The user's token an outbound call is made for, as a request extension
/// (`tonic::Request::extensions_mut().insert(..)`) that [`ExchangeLayer`]
/// reads. Cheap to clone; never printed.
#[derive(Clone)]
pub struct OnBehalfOf(Arc<str>);

impl std::fmt::Debug for OnBehalfOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnBehalfOf(..)")
    }
}

impl OnBehalfOf {
    /// The subject token itself.
    pub fn new(token: impl Into<Arc<str>>) -> OnBehalfOf {
        OnBehalfOf(token.into())
    }

    /// The bearer token of an inbound call (the one the auth layer
    /// verified), to call onwards for its caller. `ACCESS_TOKEN_MISSING`
    /// if it has none.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Result<OnBehalfOf, Status> {
        let token = crate::token::bearer_from_metadata(request.metadata())?;
        Ok(OnBehalfOf::new(token))
    }

    /// Attaches this subject to an outbound request.
    pub fn attach<T>(self, request: &mut tonic::Request<T>) {
        request.extensions_mut().insert(self);
    }

    /// The subject token.
    pub fn token(&self) -> &str {
        &self.0
    }
}

/// A derived token in use and when to renew it.
#[derive(Clone)]
struct Derived {
    header: HeaderValue,
    renew_at: Instant,
    expires_at: Instant,
}

/// One (subject, audience, scopes): its token and its single flight.
#[derive(Default)]
struct Slot {
    current: RwLock<Option<Derived>>,
    /// Held while exchanging: later callers wait, then use the result.
    flight: tokio::sync::Mutex<Option<(Instant, Status)>>,
}

impl Slot {
    fn fresh(&self, now: Instant) -> Option<Derived> {
        let current = self.current.read().ok()?;
        current.as_ref().filter(|d| now < d.renew_at).cloned()
    }

    fn unexpired(&self, now: Instant) -> Option<Derived> {
        let current = self.current.read().ok()?;
        current.as_ref().filter(|d| now < d.expires_at).cloned()
    }
}

/// The cache key: the subject token, the audience and the scopes.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    subject: Arc<str>,
    audience: Arc<str>,
    scopes: Arc<[String]>,
}

/// Trades users' tokens for derived ones through tokend's `Exchange`,
/// authenticating as this service with `own` (a service-client
/// [`TokenSource`] whose audience is tokend's issuer name). Cheap to clone.
#[derive(Clone)]
pub struct ExchangingTokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    client: TokenServiceClient<Channel>,
    own: TokenSource,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    capacity: usize,
    exchanges: AtomicU64,
}

impl std::fmt::Debug for ExchangingTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangingTokenSource")
            .field("exchanges", &self.exchanges())
            .finish_non_exhaustive()
    }
}

impl ExchangingTokenSource {
    /// Exchanges over `channel` (to tokend), as the service `own` logs in as.
    pub fn new(channel: Channel, own: TokenSource) -> ExchangingTokenSource {
        ExchangingTokenSource {
            inner: Arc::new(Inner {
                client: TokenServiceClient::new(channel),
                own,
                slots: Mutex::new(HashMap::new()),
                capacity: DEFAULT_EXCHANGE_CACHE,
                exchanges: AtomicU64::new(0),
            }),
        }
    }

    /// How many Exchange calls this source has made.
    pub fn exchanges(&self) -> u64 {
        self.inner.exchanges.load(Ordering::Relaxed)
    }

    /// `Bearer <derived token>` for calling `audience` on behalf of the
    /// user of `subject`, narrowed to `scopes` (empty: all allowed). From
    /// the cache when fresh; otherwise one exchange shared by every
    /// concurrent caller. An expired subject fails at once with
    /// `ACCESS_TOKEN_EXPIRED`, without calling tokend.
    pub async fn header_for(
        &self,
        subject: &OnBehalfOf,
        audience: &Arc<str>,
        scopes: &Arc<[String]>,
    ) -> Result<HeaderValue, Status> {
        let slot = self.slot(subject, audience, scopes);
        if let Some(derived) = slot.fresh(Instant::now()) {
            return Ok(derived.header);
        }
        let asked = Instant::now();
        let mut flight = slot.flight.lock().await;
        if let Some(derived) = slot.fresh(Instant::now()) {
            return Ok(derived.header);
        }
        let result = match &*flight {
            // Queued behind a renewal that failed: share its answer.
            Some((at, status)) if *at >= asked => Err(status.clone()),
            _ => match self.exchange(subject, audience, scopes).await {
                Ok(derived) => {
                    let header = derived.header.clone();
                    if let Ok(mut current) = slot.current.write() {
                        *current = Some(derived);
                    }
                    *flight = None;
                    Ok(header)
                }
                Err(status) => {
                    *flight = Some((Instant::now(), status.clone()));
                    Err(status)
                }
            },
        };
        // A failed renewal: the token in hand still works until it expires.
        result.or_else(|status| match slot.unexpired(Instant::now()) {
            Some(derived) => Ok(derived.header),
            None => Err(status),
        })
    }

    /// The derived token for `subject` (see [`header_for`](Self::header_for)).
    pub async fn token_for(
        &self,
        subject: &OnBehalfOf,
        audience: &str,
        scopes: &[String],
    ) -> Result<String, Status> {
        let header = self
            .header_for(subject, &Arc::from(audience), &Arc::from(scopes))
            .await?;
        let text = header.to_str().unwrap_or_default();
        Ok(text
            .strip_prefix(TOKEN_TYPE)
            .map(str::trim_start)
            .unwrap_or_default()
            .to_owned())
    }

    /// A tower layer for a channel to the service `audience`: each call
    /// carrying [`OnBehalfOf`] gets a derived token with `scopes`.
    pub fn layer(
        &self,
        audience: impl Into<Arc<str>>,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> ExchangeLayer {
        ExchangeLayer {
            source: self.clone(),
            audience: audience.into(),
            scopes: scopes.into_iter().map(Into::into).collect(),
        }
    }

    /// The slot of a key, made if new. A full cache first drops tokens that
    /// expired, then everything (the next calls exchange again).
    fn slot(&self, subject: &OnBehalfOf, audience: &Arc<str>, scopes: &Arc<[String]>) -> Arc<Slot> {
        let key = Key {
            subject: Arc::clone(&subject.0),
            audience: Arc::clone(audience),
            scopes: Arc::clone(scopes),
        };
        let Ok(mut slots) = self.inner.slots.lock() else {
            return Arc::new(Slot::default());
        };
        if let Some(slot) = slots.get(&key) {
            return Arc::clone(slot);
        }
        if slots.len() >= self.inner.capacity {
            // Slots in use (a caller holds them, perhaps mid-exchange) stay,
            // so single flight holds; then those with a live token.
            let now = Instant::now();
            slots.retain(|_, slot| Arc::strong_count(slot) > 1 || slot.unexpired(now).is_some());
            if slots.len() >= self.inner.capacity {
                slots.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
        }
        Arc::clone(slots.entry(key).or_default())
    }

    async fn exchange(
        &self,
        subject: &OnBehalfOf,
        audience: &str,
        scopes: &[String],
    ) -> Result<Derived, Status> {
        let subject_exp = expiry(subject.token())?;
        if subject_exp <= SystemTime::now() {
            return Err(Reason::AccessTokenExpired.status("the subject token has expired"));
        }
        let own = self.inner.own.access_token().await?;
        let mut request = tonic::Request::new(pb::ExchangeRequest {
            subject_token: subject.token().to_owned(),
            audience: audience.to_owned(),
            scopes: scopes.to_vec(),
            ttl: None,
        });
        let mut value: tonic::metadata::AsciiMetadataValue = own
            .header()
            .to_str()
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| Status::internal("unusable access token"))?;
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
        let mut client = self.inner.client.clone();
        self.inner.exchanges.fetch_add(1, Ordering::Relaxed);
        let result = client.exchange(request).await;
        crate::observe::token_exchange(result.is_ok());
        let reply = match result {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                if Reason::of(&status) == Some(Reason::AccessTokenExpired)
                    && Reason::field_of(&status).is_none()
                {
                    // Our own token expired (not the subject): renew it
                    // next time.
                    self.inner.own.invalidate(own.token());
                }
                return Err(status);
            }
        };
        let expires = reply
            .expires_at
            .as_ref()
            .map(|t| UNIX_EPOCH + Duration::from_secs(u64::try_from(t.seconds).unwrap_or(0)))
            .ok_or_else(|| Status::internal("tokend returned no expiry"))?;
        // Measured from the answer, so the call's latency is not counted
        // as life left.
        let lifetime = expires
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(86_400));
        let mut header = HeaderValue::from_str(&format!("{TOKEN_TYPE} {}", reply.access_token))
            .map_err(|_| Status::internal("tokend returned a token that is not a header value"))?;
        header.set_sensitive(true);
        let started = Instant::now();
        let expires_at = started + lifetime;
        // Ending with the subject: a renewal could not last longer.
        let renew_at = if expires >= subject_exp {
            expires_at
        } else {
            started + lifetime.mul_f64(1.0 - RENEW_SHARE)
        };
        Ok(Derived {
            header,
            renew_at,
            expires_at,
        })
    }
}

/// When a token expires, read from its payload without verifying it (tokend
/// verifies; this only schedules renewals). A token that is not shaped like
/// an access token is `INVALID_REQUEST`, never sent on.
fn expiry(token: &str) -> Result<SystemTime, Status> {
    let malformed = || Reason::InvalidRequest.status("the subject token is not an access token");
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed());
    }
    let body = token.strip_prefix(TOKEN_HEADER).ok_or_else(malformed)?;
    let payload = body.split('.').next().ok_or_else(malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed())?;
    // The payload is the claims followed by a 64-byte Ed25519 signature.
    let claims = bytes
        .len()
        .checked_sub(64)
        .and_then(|end| bytes.get(..end))
        .ok_or_else(malformed)?;
    #[derive(serde::Deserialize)]
    struct Exp {
        #[serde(with = "crate::token::rfc3339")]
        exp: i64,
    }
    let exp: Exp = serde_json::from_slice(claims).map_err(|_| malformed())?;
    Ok(UNIX_EPOCH + Duration::from_secs(u64::try_from(exp.exp).unwrap_or(0)))
}

/// A tower layer for a channel to one downstream service: calls carrying
/// [`OnBehalfOf`] go out with a derived token for that service; calls
/// without it fail with `ACCESS_TOKEN_MISSING` and are not sent.
#[derive(Clone, Debug)]
pub struct ExchangeLayer {
    source: ExchangingTokenSource,
    audience: Arc<str>,
    scopes: Arc<[String]>,
}

impl<S> Layer<S> for ExchangeLayer {
    type Service = ExchangeService<S>;

    fn layer(&self, inner: S) -> ExchangeService<S> {
        ExchangeService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ExchangeLayer`] wraps around a channel.
#[derive(Clone, Debug)]
pub struct ExchangeService<S> {
    inner: S,
    layer: ExchangeLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ExchangeService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let mut inner = crate::ready::take_ready(&mut self.inner);
        let layer = self.layer.clone();
        Box::pin(async move {
            let Some(subject) = request.extensions_mut().remove::<OnBehalfOf>() else {
                let status = Reason::AccessTokenMissing.status(
                    "no subject token on this call: attach OnBehalfOf (never the service's own)",
                );
                return Ok(status.into_http());
            };
            let header = match layer
                .source
                .header_for(&subject, &layer.audience, &layer.scopes)
                .await
            {
                Ok(header) => header,
                Err(status) => return Ok(status.into_http()),
            };
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, header);
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{NOW_S, Signer, claims};

    #[tokio::test]
    async fn the_cache_is_bounded_however_many_subjects_arrive() {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let own = TokenSource::client_credentials(channel.clone(), "svc", "secret");
        let source = ExchangingTokenSource::new(channel, own);
        let audience: Arc<str> = Arc::from("orders");
        let scopes: Arc<[String]> = Arc::from(Vec::new());
        for n in 0..DEFAULT_EXCHANGE_CACHE + 100 {
            let subject = OnBehalfOf::new(format!("subject-{n}"));
            source.slot(&subject, &audience, &scopes);
            let held = source.inner.slots.lock().unwrap().len();
            assert!(held <= DEFAULT_EXCHANGE_CACHE, "{held}");
        }
    }

    #[test]
    fn the_expiry_is_read_without_trusting_the_token() {
        let signer = Signer::new();
        let token = signer.sign(&claims());
        assert_eq!(
            expiry(&token).unwrap(),
            UNIX_EPOCH + Duration::from_secs(u64::try_from(NOW_S + 900).unwrap())
        );
        for bad in [
            "",
            "v4.public.",
            "v4.public.!!!",
            "v2.local.abc",
            &"v4.public.A".repeat(1000),
        ] {
            assert_eq!(
                Reason::of(&expiry(bad).unwrap_err()),
                Some(Reason::InvalidRequest),
                "{bad}"
            );
        }
    }
}
