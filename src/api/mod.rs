//! The gRPC face of tokend: `tokend.v1.TokenService` (here) and
//! `tokend.admin.v1.AdminService` ([`admin`]). Each call checks its
//! request, asks the [`Authority`], and converts the answer; errors become
//! statuses in one place ([`error`]).

pub mod admin;
pub mod error;
pub mod oversize;
pub mod rpc_metrics;
pub mod source;
pub mod validate;

pub use rpc_metrics::{RpcMetricsLayer, method_label};

use std::pin::Pin;
use std::sync::Arc;

use prost_types::Timestamp;
use tokend_interceptor::certs::CertificateIdentity;
use tokend_interceptor::server::ClaimsExt;
use tokend_interceptor::token::TOKEN_TYPE;
use tokend_interceptor::{Claims, Reason};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::authority::{
    AuthError, Authority, Caller, Certificate, ExchangeRequest, IssuedTokens, LoginRequest as Login,
};
use crate::authority::{FeedCaller, Introspection, Introspector};
use crate::proto::tokend::v1 as pb;
use crate::revocations::{FeedItem, WatchEnded};
use crate::store::{FeedCursor, FeedEntry, FeedEvent};
use pb::login_request::Credentials;
use pb::token_service_server::TokenService;
use source::TrustedProxies;

/// Largest request message tokend decodes, in bytes. A Login with every field
/// at its limit fits comfortably.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Longest user agent kept in the session list.
const MAX_CLIENT_LEN: usize = 64;

/// The full paths of the methods callers use without an access token.
pub const PUBLIC_METHODS: [&str; 4] = [
    "/tokend.v1.TokenService/Login",
    "/tokend.v1.TokenService/Refresh",
    "/tokend.v1.TokenService/Revoke",
    "/tokend.v1.TokenService/GetPublicKeys",
];

/// Every method of `tokend.v1.TokenService`, by name (the `method` label of
/// the RPC metrics).
pub const METHODS: [&str; 10] = [
    "Login",
    "Refresh",
    "Revoke",
    "GetPublicKeys",
    "WatchRevocations",
    "ListSessions",
    "RevokeSession",
    "RevokeAllSessions",
    "Exchange",
    "Introspect",
];

/// The methods that need the caller's own token: delegated tokens (from
/// Exchange) are refused with CHAIN_NOT_ALLOWED.
pub const OWN_TOKEN_METHODS: [&str; 6] = [
    "/tokend.v1.TokenService/ListSessions",
    "/tokend.v1.TokenService/RevokeSession",
    "/tokend.v1.TokenService/RevokeAllSessions",
    "/tokend.v1.TokenService/WatchRevocations",
    "/tokend.v1.TokenService/Exchange",
    INTROSPECT,
];

/// Introspect: for services with a token granted
/// [`INTROSPECT_SCOPE`](crate::authority::INTROSPECT_SCOPE).
pub const INTROSPECT: &str = "/tokend.v1.TokenService/Introspect";

/// Exchange: for a service's own token or a verified client certificate.
pub const EXCHANGE: &str = "/tokend.v1.TokenService/Exchange";

/// The revocation feed: for watchers with a verified client certificate or
/// a token granted [`WATCH_SCOPE`](crate::revocations::WATCH_SCOPE).
pub const WATCH_REVOCATIONS: &str = "/tokend.v1.TokenService/WatchRevocations";

/// The `tokend.v1.TokenService` implementation.
#[derive(Debug, Clone)]
pub struct TokenApi {
    authority: Arc<Authority>,
    stopping: watch::Receiver<bool>,
    proxies: Arc<TrustedProxies>,
}

impl TokenApi {
    /// Serves `authority` over gRPC; revocation streams end when `stopping`
    /// turns true, so a graceful shutdown does not wait for them. Callers'
    /// sources (for login throttling) are their peer addresses, or what
    /// `proxies` report in `x-forwarded-for`.
    pub fn new(
        authority: Arc<Authority>,
        stopping: watch::Receiver<bool>,
        proxies: TrustedProxies,
    ) -> TokenApi {
        TokenApi {
            authority,
            stopping,
            proxies: Arc::new(proxies),
        }
    }

    /// Where `request` comes from, for throttling.
    fn source<T>(&self, request: &Request<T>) -> String {
        source_of(&self.proxies, request)
    }

    /// The tonic service, with the request size limit applied.
    pub fn into_service(self) -> pb::token_service_server::TokenServiceServer<TokenApi> {
        pb::token_service_server::TokenServiceServer::new(self)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = user_agent(&request);
        let source = self.source(&request);
        let certificate = peer_identity(&request);
        let request = request.into_inner();
        let audience = validate::audience(&request.audience)?;
        let scopes = validate::scopes(&request.scopes)?;
        let issued = match &request.credentials {
            Some(Credentials::Password(p)) => {
                let login = Login {
                    name: validate::account_name("username", &p.username)?,
                    secret: validate::secret("password", &p.password)?,
                    audience,
                    scopes,
                    client: &client,
                    source: &source,
                    certificate: certificate.as_ref(),
                };
                self.authority.login_password(login).await?
            }
            Some(Credentials::Client(c)) => {
                let login = Login {
                    name: validate::account_name("client_id", &c.client_id)?,
                    secret: validate::secret("client_secret", &c.client_secret)?,
                    audience,
                    scopes,
                    client: &client,
                    source: &source,
                    certificate: certificate.as_ref(),
                };
                self.authority.login_client(login).await?
            }
            None => {
                return Err(AuthError::InvalidRequest(
                    "credentials are required: password or client".into(),
                )
                .into());
            }
        };
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(token_pair(issued)),
        }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let request = request.into_inner();
        let token = validate::refresh_token(&request.refresh_token)?;
        let issued = self.authority.refresh(token).await?;
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(token_pair(issued)),
        }))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let request = request.into_inner();
        let token = validate::refresh_token(&request.refresh_token)?;
        self.authority.revoke(token).await?;
        Ok(Response::new(pb::RevokeResponse {}))
    }

    async fn get_public_keys(
        &self,
        _request: Request<pb::GetPublicKeysRequest>,
    ) -> Result<Response<pb::GetPublicKeysResponse>, Status> {
        let keys = self
            .authority
            .public_keys()
            .iter()
            .map(|k| pb::PublicKey {
                key_id: k.key_id.clone(),
                public_key: k.public_key.clone(),
            })
            .collect();
        Ok(Response::new(pb::GetPublicKeysResponse { keys }))
    }

    type WatchRevocationsStream = Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::WatchRevocationsResponse, Status>> + Send>,
    >;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let identity = peer_identity(&request);
        let caller = match (request.claims(), &identity) {
            (Some(claims), _) => FeedCaller::Token(claims),
            (None, Some(cert)) => FeedCaller::Certificate(cert),
            (None, None) => FeedCaller::Nobody,
        };
        let cursor = &request.get_ref().cursor;
        let cursor = if cursor.is_empty() {
            None
        } else {
            Some(
                FeedCursor::parse(cursor)
                    .ok_or_else(|| AuthError::InvalidRequest("cursor is malformed".into()))?,
            )
        };
        let subscription = self
            .authority
            .watch_revocations(caller, cursor, self.stopping.clone())
            .await?;
        // The response stream pulls from the subscription itself: no task
        // and no buffer per watcher. It ends after an error.
        let stream = futures_util::stream::unfold(Some(subscription), |state| async move {
            let mut subscription = state?;
            match subscription.next().await? {
                Ok(item) => Some((Ok(feed_message(item)), Some(subscription))),
                Err(WatchEnded::Store(err)) => {
                    warn!(error = %err, "revocation feed unavailable for a watcher");
                    Some((Err(Status::from(AuthError::Store(err))), None))
                }
                Err(WatchEnded::CutOff) => {
                    Some((Err(Status::from(AuthError::SessionRevoked)), None))
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = caller(&request)?;
        let sessions = self.authority.list_sessions(caller).await?;
        let sessions = sessions
            .into_iter()
            .map(|s| pb::Session {
                current: caller.sid() == Some(s.session_id.as_str()),
                session_id: s.session_id,
                created_at: Some(timestamp_ms(s.grant.created_ms)),
                last_refreshed_at: Some(timestamp_ms(s.refreshed_ms)),
                idle_expires_at: Some(timestamp_ms(s.idle_expiry_ms)),
                absolute_expires_at: Some(timestamp_ms(s.grant.absolute_expiry_ms)),
                client: s.client,
                audience: s.grant.audience,
                scope: s.grant.scope,
            })
            .collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let caller = caller(&request)?;
        let session_id = &request.get_ref().session_id;
        if session_id.is_empty() {
            return Err(AuthError::InvalidRequest("session_id is required".into()).into());
        }
        self.authority.revoke_session(caller, session_id).await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn revoke_all_sessions(
        &self,
        request: Request<pb::RevokeAllSessionsRequest>,
    ) -> Result<Response<pb::RevokeAllSessionsResponse>, Status> {
        let caller = caller(&request)?;
        let revoked = self.authority.revoke_all_sessions(caller).await?;
        Ok(Response::new(pb::RevokeAllSessionsResponse {
            revoked: i32::try_from(revoked).unwrap_or(i32::MAX),
        }))
    }

    async fn exchange(
        &self,
        request: Request<pb::ExchangeRequest>,
    ) -> Result<Response<pb::ExchangeResponse>, Status> {
        // The certificate (verified over mTLS) is read once: its
        // thumbprint and its names.
        let identity = peer_identity(&request);
        let certificate = identity.as_ref().map(|identity| Certificate { identity });
        // The auth layer let the call through with a verified certificate
        // and no token, or verified the token sent.
        let caller = match request.claims() {
            Some(claims) => Caller::Token(claims),
            None if certificate.is_some() => Caller::Certificate,
            None => {
                return Err(Reason::AccessTokenMissing.status("an access token is required"));
            }
        };
        let body = request.get_ref();
        let audience = validate::audience(&body.audience)?
            .ok_or_else(|| AuthError::InvalidRequest("audience is required".into()))?;
        let exchanged = self
            .authority
            .exchange(ExchangeRequest {
                caller,
                certificate,
                subject_token: &body.subject_token,
                audience,
                scopes: validate::scopes(&body.scopes)?,
                ttl: validate::ttl(body.ttl.as_ref())?,
            })
            .await?;
        Ok(Response::new(pb::ExchangeResponse {
            access_token: exchanged.access.token,
            expires_at: Some(Timestamp {
                seconds: exchanged.access.expires_at,
                nanos: 0,
            }),
            audience: exchanged.audience,
            scopes: exchanged.scopes,
            actor_chain: exchanged.actor_chain,
            token_type: TOKEN_TYPE.to_owned(),
        }))
    }

    async fn introspect(
        &self,
        request: Request<pb::IntrospectRequest>,
    ) -> Result<Response<pb::IntrospectResponse>, Status> {
        // A service's own token, or (without one) its certificate over mTLS.
        let identity = peer_identity(&request);
        let caller = match (request.claims(), &identity) {
            (Some(claims), _) => Introspector::Token(claims),
            (None, Some(identity)) => Introspector::Certificate(identity),
            (None, None) => {
                return Err(Reason::AccessTokenMissing.status("an access token is required"));
            }
        };
        let found = self
            .authority
            .introspect(caller, &request.get_ref().token)
            .await?;
        Ok(Response::new(introspection(found)))
    }
}

/// Introspect's answer for what the authority found.
fn introspection(found: Introspection) -> pb::IntrospectResponse {
    match found {
        Introspection::Active { claims, key_id } => pb::IntrospectResponse {
            active: true,
            reason: String::new(),
            token_type: "access_token".into(),
            subject: claims.sub().to_owned(),
            scopes: claims.scopes().map(str::to_owned).collect(),
            audience: claims.aud().to_owned(),
            issuer: claims.iss().to_owned(),
            issued_at: Some(Timestamp {
                seconds: claims.iat(),
                nanos: 0,
            }),
            expires_at: Some(Timestamp {
                seconds: claims.exp(),
                nanos: 0,
            }),
            session_id: claims.sid().unwrap_or_default().to_owned(),
            actor_chain: claims.actors().map(|a| a.sub().to_owned()).collect(),
            x5t_s256: claims
                .cnf()
                .map(|c| c.x5t_s256().to_owned())
                .unwrap_or_default(),
            key_id,
            token_id: claims.jti().to_owned(),
        },
        Introspection::Refresh(session) => pb::IntrospectResponse {
            active: true,
            token_type: "refresh_token".into(),
            scopes: session
                .grant
                .scope
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect(),
            subject: session.grant.subject,
            audience: session.grant.audience,
            issued_at: Some(timestamp_ms(session.refreshed_ms)),
            // The session ends at its idle expiry unless refreshed, and at
            // its absolute expiry whatever happens.
            expires_at: Some(timestamp_ms(
                session.idle_expiry_ms.min(session.grant.absolute_expiry_ms),
            )),
            session_id: session.session_id,
            ..pb::IntrospectResponse::default()
        },
        Introspection::Inactive(reason) => pb::IntrospectResponse {
            reason: reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
            ..pb::IntrospectResponse::default()
        },
    }
}

/// The identity of the client certificate the call's connection presented
/// (verified over mTLS), if any.
fn peer_identity<T>(request: &Request<T>) -> Option<CertificateIdentity> {
    let certs = request.peer_certs()?;
    certs.first().map(|leaf| CertificateIdentity::parse(leaf))
}

/// Where `request` comes from, for throttling: the peer's address, or what
/// a trusted proxy reports in `x-forwarded-for`.
fn source_of<T>(proxies: &TrustedProxies, request: &Request<T>) -> String {
    let forwarded: Vec<&str> = request
        .metadata()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    proxies.source(request.remote_addr().map(|a| a.ip()), &forwarded)
}

/// The verified claims the auth layer attached; refuses if there are none.
fn caller<T>(request: &Request<T>) -> Result<&Claims, Status> {
    request
        .claims()
        .ok_or_else(|| Reason::AccessTokenMissing.status("an access token is required"))
}

/// The caller's `user-agent`, truncated, for the session list.
fn user_agent<T>(request: &Request<T>) -> String {
    let agent = request
        .metadata()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut end = agent.len().min(MAX_CLIENT_LEN);
    while !agent.is_char_boundary(end) {
        end -= 1;
    }
    agent[..end].to_owned()
}

/// A feed item as a watcher receives it (also what tokend's own
/// introspection list applies).
pub fn feed_message(item: FeedItem) -> pb::WatchRevocationsResponse {
    use pb::watch_revocations_response::Event;
    let (cursor, event) = match item {
        FeedItem::Heartbeat(cursor) => (cursor, Event::Heartbeat(pb::Heartbeat {})),
        // Sent ahead of the history: no cursor to resume after.
        FeedItem::CutOff(entry) => (None, feed_event(entry)),
        FeedItem::Gap { until_ms } => (
            None,
            Event::Gap(pb::HistoryGap {
                relevant_until: Some(timestamp_ms(until_ms)),
            }),
        ),
        FeedItem::Entry(entry) => (Some(entry.cursor), feed_event(entry)),
    };
    pb::WatchRevocationsResponse {
        cursor: cursor.map(|c| c.to_string()).unwrap_or_default(),
        event: Some(event),
    }
}

/// What a feed entry says, on the wire.
fn feed_event(entry: FeedEntry) -> pb::watch_revocations_response::Event {
    use pb::watch_revocations_response::Event;
    let FeedEntry {
        event,
        at_ms,
        until_ms,
        ..
    } = entry;
    match event {
        FeedEvent::Session { session_id } => Event::Session(pb::RevokedSession {
            session_id,
            revoked_at: Some(timestamp_ms(at_ms)),
            relevant_until: Some(timestamp_ms(until_ms)),
        }),
        FeedEvent::Subject { subject, version } => Event::Subject(pb::RevokedSubject {
            subject,
            not_before: Some(timestamp_ms(at_ms)),
            relevant_until: Some(timestamp_ms(until_ms)),
            account_version: version,
        }),
        FeedEvent::Actor { actor, version } => Event::Actor(pb::RevokedActor {
            actor,
            not_before: Some(timestamp_ms(at_ms)),
            relevant_until: Some(timestamp_ms(until_ms)),
            account_version: version,
        }),
        // Internal notices never reach watchers (the subscription drops
        // them); a heartbeat if one ever slipped through.
        FeedEvent::Account { .. } => Event::Heartbeat(pb::Heartbeat {}),
    }
}

fn token_pair(issued: IssuedTokens) -> pb::TokenPair {
    let mut pair = pb::TokenPair {
        access_token: issued.access.token,
        access_token_expires_at: Some(Timestamp {
            seconds: issued.access.expires_at,
            nanos: 0,
        }),
        token_type: TOKEN_TYPE.to_owned(),
        ..Default::default()
    };
    if let Some(session) = issued.session {
        pair.refresh_token = session.refresh_token.encode();
        pair.refresh_token_expires_at = Some(timestamp_ms(session.expires_at_ms));
        pair.session_id = session.session_id;
    }
    pair
}

fn timestamp_ms(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}
