//! The gRPC face of administration: `tokend.admin.v1.AdminService`. Each
//! call verifies its caller's credential (as the auth layer does for
//! tokend.v1, but here every refusal is counted by the throttle and
//! audited), checks its request, asks the [`Authority`], and converts the
//! answer. Every call, allowed or refused, is one [`AdminCall`] fact.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokend_interceptor::Verifier;
use tokend_interceptor::server::bearer_in;
use tonic::{Request, Response, Status};

use super::source::TrustedProxies;
use super::{peer_identity, timestamp_ms, validate};
use crate::accounts::rules::is_account_name;
use crate::admin::NewClient;
use crate::authority::{Access, AdminCaller, AuthError, Authority, ClientView, UserView};
use crate::facts::{AdminCall, Fact};
use crate::proto::tokend::admin::v1 as pb;
use crate::store::{AccountChange, AccountKind, SessionInfo};
use crate::tokens::keys::{KeyEntry, KeyRole};
use pb::admin_service_server::AdminService;

/// The service's full name.
pub const SERVICE: &str = "tokend.admin.v1.AdminService";

/// Page size when a listing asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page a listing returns.
pub const MAX_PAGE_SIZE: usize = 1000;
/// How many feed entries GetFeedStatus counts at most.
const FEED_COUNT_CAP: u64 = 100_000;

/// Serves `tokend.admin.v1.AdminService`.
#[derive(Clone)]
pub struct AdminApi {
    inner: Arc<Inner>,
}

struct Inner {
    authority: Arc<Authority>,
    verifier: Verifier,
    proxies: TrustedProxies,
    keys: Vec<KeyEntry>,
    replica: String,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("replica", &self.inner.replica)
            .finish_non_exhaustive()
    }
}

/// What [`AdminApi`] serves with.
pub struct AdminParts {
    /// The decisions.
    pub authority: Arc<Authority>,
    /// Verifies callers' access tokens (tokend's keys and issuer, with the
    /// issuer among the audiences; the authority insists on it).
    pub verifier: Verifier,
    /// Whose `x-forwarded-for` is believed, for the caller's source.
    pub proxies: TrustedProxies,
    /// The keys this replica signs and verifies with.
    pub keys: Vec<KeyEntry>,
}

impl AdminApi {
    /// The administration API over `parts`.
    pub fn new(parts: AdminParts) -> AdminApi {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        AdminApi {
            inner: Arc::new(Inner {
                authority: parts.authority,
                verifier: parts.verifier,
                proxies: parts.proxies,
                keys: parts.keys,
                replica: format!("{host}:{}", std::process::id()),
            }),
        }
    }

    /// The tonic service, with the codec that answers an undecodable
    /// request with INVALID_ARGUMENT, and tokend's request size limit.
    pub fn into_service(self) -> pb::admin_service_server::AdminServiceServer<AdminApi> {
        pb::admin_service_server::AdminServiceServer::new(self)
            .max_decoding_message_size(super::MAX_REQUEST_BYTES)
    }

    /// Authorizes `request` for `access`, runs `call` with the authority
    /// and the request, and states the [`AdminCall`] fact either way.
    async fn run<Req, Res, Fut>(
        &self,
        request: Request<Req>,
        method: &'static str,
        access: Access,
        target: impl FnOnce(&Req) -> Option<String>,
        call: impl FnOnce(Arc<Authority>, Req) -> Fut,
    ) -> Result<Response<Res>, Status>
    where
        Fut: Future<Output = Result<Res, AuthError>>,
    {
        let inner = &self.inner;
        let source = super::source_of(&inner.proxies, &request);
        let identity = peer_identity(&request);
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or("\u{1}"));
        let verified = match header {
            None => None,
            Some(value) => Some(match bearer_in(Some(value)) {
                Ok(token) => {
                    inner
                        .verifier
                        .verify_from_async(token, request.peer_certs().as_ref())
                        .await
                }
                Err(err) => Err(err),
            }),
        };
        let (caller, named, via) = match (&verified, &identity) {
            (Some(Ok(claims)), _) => (Ok(AdminCaller::Token(claims)), Some(claims.sub()), "token"),
            (Some(Err(err)), _) => (Err(AuthError::CallerToken(err.clone())), None, "token"),
            (None, Some(identity)) => (Ok(AdminCaller::Certificate(identity)), None, "certificate"),
            (None, None) => (
                Err(AuthError::CallerToken(
                    tokend_interceptor::AuthError::Missing,
                )),
                None,
                "none",
            ),
        };
        let request = request.into_inner();
        let target = target(&request);
        let authorized = inner
            .authority
            .authorize_admin(&source, caller, access)
            .await;
        let (admin, result) = match authorized {
            Ok(admin) => {
                let result = call(Arc::clone(&inner.authority), request).await;
                (Some(admin), result)
            }
            Err(err) => (None, Err(err)),
        };
        crate::telemetry::record(&Fact::AdminCall(AdminCall {
            method,
            caller: admin.as_ref().map(|a| a.name.as_str()).or(named),
            via: admin.as_ref().map_or(via, |a| a.via),
            target: target.as_deref(),
            outcome: result.as_ref().map(|_| ()).map_err(AuthError::refused),
            peer: &source,
        }));
        Ok(Response::new(result?))
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.run(
            request,
            "ListUsers",
            Access::Read,
            |r| prefix_target(&r.prefix),
            |authority, r| async move {
                let prefix = prefix(&r.prefix)?;
                let limit = page_size(r.page_size)?;
                let after = page_after(&r.page_token, is_account_name)?;
                let page = authority
                    .list_users(prefix, after.as_deref(), limit)
                    .await?;
                Ok(pb::ListUsersResponse {
                    users: page.items.into_iter().map(user).collect(),
                    next_page_token: page
                        .next_after
                        .as_deref()
                        .map(page_token)
                        .unwrap_or_default(),
                })
            },
        )
        .await
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        self.run(
            request,
            "GetUser",
            Access::Read,
            |r| Some(r.name.clone()),
            |authority, r| async move {
                let name = validate::account_name("name", &r.name)?;
                Ok(pb::GetUserResponse {
                    user: Some(user(authority.get_user(name).await?)),
                })
            },
        )
        .await
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        self.run(
            request,
            "CreateUser",
            Access::Write,
            |r| Some(r.name.clone()),
            |authority, r| async move {
                let name = validate::account_name("name", &r.name)?;
                validate::secret("password", &r.password)?;
                let scopes = validate::scopes(&r.scopes)?;
                let created = authority
                    .create_user(name, r.password.clone(), scopes)
                    .await?;
                Ok(pb::CreateUserResponse {
                    user: Some(user(created)),
                })
            },
        )
        .await
    }

    async fn set_user_scopes(
        &self,
        request: Request<pb::SetUserScopesRequest>,
    ) -> Result<Response<pb::SetUserScopesResponse>, Status> {
        self.run(
            request,
            "SetUserScopes",
            Access::Write,
            |r| Some(r.name.clone()),
            |authority, r| async move {
                let name = validate::account_name("name", &r.name)?;
                let scopes = validate::scopes(&r.scopes)?;
                Ok(pb::SetUserScopesResponse {
                    user: Some(user(authority.set_user_scopes(name, scopes).await?)),
                })
            },
        )
        .await
    }

    async fn set_user_password(
        &self,
        request: Request<pb::SetUserPasswordRequest>,
    ) -> Result<Response<pb::SetUserPasswordResponse>, Status> {
        self.run(
            request,
            "SetUserPassword",
            Access::Write,
            |r| Some(r.name.clone()),
            |authority, r| async move {
                let name = validate::account_name("name", &r.name)?;
                validate::secret("password", &r.password)?;
                let ended = authority
                    .set_user_password(name, r.password.clone())
                    .await?;
                Ok(pb::SetUserPasswordResponse {
                    sessions_ended: count(ended),
                })
            },
        )
        .await
    }

    async fn disable_user(
        &self,
        request: Request<pb::DisableUserRequest>,
    ) -> Result<Response<pb::DisableUserResponse>, Status> {
        self.run(
            request,
            "DisableUser",
            Access::Write,
            |r| Some(r.name.clone()),
            |authority, r| async move {
                let name = validate::account_name("name", &r.name)?;
                let ended = authority
                    .end_user(name, AccountChange::Disable, "user_disabled")
                    .await?;
                Ok(pb::DisableUserResponse {
                    sessions_ended: count(ended),
                })
            },
        )
        .await
    }

    async fn enable_user(
        &self,
        request: Request<pb::EnableUserRequest>,
    ) -> Result<Response<pb::EnableUserResponse>, Status> {
        self.run(
            request,
            "EnableUser",
            Access::Write,
            |r| Some(r.name.clone()),
            |authority, r| async move {
                let name = validate::account_name("name", &r.name)?;
                authority.enable_account(AccountKind::User, name).await?;
                Ok(pb::EnableUserResponse {})
            },
        )
        .await
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        self.run(
            request,
            "DeleteUser",
            Access::Write,
            |r| Some(r.name.clone()),
            |authority, r| async move {
                let name = validate::account_name("name", &r.name)?;
                let ended = authority
                    .end_user(name, AccountChange::Delete, "user_deleted")
                    .await?;
                Ok(pb::DeleteUserResponse {
                    sessions_ended: count(ended),
                })
            },
        )
        .await
    }

    async fn list_user_sessions(
        &self,
        request: Request<pb::ListUserSessionsRequest>,
    ) -> Result<Response<pb::ListUserSessionsResponse>, Status> {
        self.run(
            request,
            "ListUserSessions",
            Access::Read,
            |r| Some(r.name.clone()),
            |authority, r| async move {
                let name = validate::account_name("name", &r.name)?;
                let limit = page_size(r.page_size)?;
                let after = page_after(&r.page_token, crate::tokens::refresh::is_session_id)?;
                let page = authority
                    .user_sessions(name, after.as_deref(), limit)
                    .await?;
                let next_page_token = match page.sessions.last() {
                    Some(last) if page.more => page_token(&last.session_id),
                    _ => String::new(),
                };
                Ok(pb::ListUserSessionsResponse {
                    sessions: page.sessions.into_iter().map(session).collect(),
                    next_page_token,
                })
            },
        )
        .await
    }

    async fn revoke_user_session(
        &self,
        request: Request<pb::RevokeUserSessionRequest>,
    ) -> Result<Response<pb::RevokeUserSessionResponse>, Status> {
        self.run(
            request,
            "RevokeUserSession",
            Access::Write,
            |r| Some(format!("{}/{}", r.name, r.session_id)),
            |authority, r| async move {
                let name = validate::account_name("name", &r.name)?;
                if r.session_id.is_empty() {
                    return Err(AuthError::InvalidRequest("session_id is required".into()));
                }
                authority.revoke_user_session(name, &r.session_id).await?;
                Ok(pb::RevokeUserSessionResponse {})
            },
        )
        .await
    }

    async fn revoke_all_user_sessions(
        &self,
        request: Request<pb::RevokeAllUserSessionsRequest>,
    ) -> Result<Response<pb::RevokeAllUserSessionsResponse>, Status> {
        self.run(
            request,
            "RevokeAllUserSessions",
            Access::Write,
            |r| Some(r.name.clone()),
            |authority, r| async move {
                let name = validate::account_name("name", &r.name)?;
                let ended = authority
                    .end_user(name, AccountChange::CutOff, "user_sessions_revoked")
                    .await?;
                Ok(pb::RevokeAllUserSessionsResponse {
                    sessions_ended: count(ended),
                })
            },
        )
        .await
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        self.run(
            request,
            "ListClients",
            Access::Read,
            |r| prefix_target(&r.prefix),
            |authority, r| async move {
                let prefix = prefix(&r.prefix)?;
                let limit = page_size(r.page_size)?;
                let after = page_after(&r.page_token, is_account_name)?;
                let page = authority
                    .list_clients(prefix, after.as_deref(), limit)
                    .await?;
                Ok(pb::ListClientsResponse {
                    clients: page.items.into_iter().map(client).collect(),
                    next_page_token: page
                        .next_after
                        .as_deref()
                        .map(page_token)
                        .unwrap_or_default(),
                })
            },
        )
        .await
    }

    async fn get_client(
        &self,
        request: Request<pb::GetClientRequest>,
    ) -> Result<Response<pb::GetClientResponse>, Status> {
        self.run(
            request,
            "GetClient",
            Access::Read,
            |r| Some(r.client_id.clone()),
            |authority, r| async move {
                let id = validate::account_name("client_id", &r.client_id)?;
                Ok(pb::GetClientResponse {
                    client: Some(client(authority.get_client(id).await?)),
                })
            },
        )
        .await
    }

    async fn create_client(
        &self,
        request: Request<pb::CreateClientRequest>,
    ) -> Result<Response<pb::CreateClientResponse>, Status> {
        self.run(
            request,
            "CreateClient",
            Access::Write,
            |r| Some(r.client_id.clone()),
            |authority, r| async move {
                let id = validate::account_name("client_id", &r.client_id)?;
                let scopes = validate::scopes(&r.scopes)?;
                let new = NewClient {
                    scopes,
                    require_cert: r.require_cert,
                    cert_identities: &r.cert_identities,
                };
                let secret = authority.create_client(id, new).await?;
                Ok(pb::CreateClientResponse {
                    client_id: id.to_owned(),
                    client_secret: secret,
                })
            },
        )
        .await
    }

    async fn rotate_client_secret(
        &self,
        request: Request<pb::RotateClientSecretRequest>,
    ) -> Result<Response<pb::RotateClientSecretResponse>, Status> {
        self.run(
            request,
            "RotateClientSecret",
            Access::Write,
            |r| Some(r.client_id.clone()),
            |authority, r| async move {
                let id = validate::account_name("client_id", &r.client_id)?;
                let secret = authority.rotate_client_secret(id).await?;
                Ok(pb::RotateClientSecretResponse {
                    client_id: id.to_owned(),
                    client_secret: secret,
                })
            },
        )
        .await
    }

    async fn set_client_scopes(
        &self,
        request: Request<pb::SetClientScopesRequest>,
    ) -> Result<Response<pb::SetClientScopesResponse>, Status> {
        self.run(
            request,
            "SetClientScopes",
            Access::Write,
            |r| Some(r.client_id.clone()),
            |authority, r| async move {
                let id = validate::account_name("client_id", &r.client_id)?;
                let scopes = validate::scopes(&r.scopes)?;
                Ok(pb::SetClientScopesResponse {
                    client: Some(client(authority.set_client_scopes(id, scopes).await?)),
                })
            },
        )
        .await
    }

    async fn disable_client(
        &self,
        request: Request<pb::DisableClientRequest>,
    ) -> Result<Response<pb::DisableClientResponse>, Status> {
        self.run(
            request,
            "DisableClient",
            Access::Write,
            |r| Some(r.client_id.clone()),
            |authority, r| async move {
                let id = validate::account_name("client_id", &r.client_id)?;
                authority
                    .end_client(id, AccountChange::Disable, "client_disabled")
                    .await?;
                Ok(pb::DisableClientResponse {})
            },
        )
        .await
    }

    async fn enable_client(
        &self,
        request: Request<pb::EnableClientRequest>,
    ) -> Result<Response<pb::EnableClientResponse>, Status> {
        self.run(
            request,
            "EnableClient",
            Access::Write,
            |r| Some(r.client_id.clone()),
            |authority, r| async move {
                let id = validate::account_name("client_id", &r.client_id)?;
                authority.enable_account(AccountKind::Client, id).await?;
                Ok(pb::EnableClientResponse {})
            },
        )
        .await
    }

    async fn delete_client(
        &self,
        request: Request<pb::DeleteClientRequest>,
    ) -> Result<Response<pb::DeleteClientResponse>, Status> {
        self.run(
            request,
            "DeleteClient",
            Access::Write,
            |r| Some(r.client_id.clone()),
            |authority, r| async move {
                let id = validate::account_name("client_id", &r.client_id)?;
                authority
                    .end_client(id, AccountChange::Delete, "client_deleted")
                    .await?;
                Ok(pb::DeleteClientResponse {})
            },
        )
        .await
    }

    async fn get_keys(
        &self,
        request: Request<pb::GetKeysRequest>,
    ) -> Result<Response<pb::GetKeysResponse>, Status> {
        let keys = &self.inner.keys;
        self.run(
            request,
            "GetKeys",
            Access::Read,
            |_| None,
            |authority, _| async move {
                let now = authority.now_ms();
                Ok(pb::GetKeysResponse {
                    keys: keys.iter().map(|k| key(k, now)).collect(),
                })
            },
        )
        .await
    }

    async fn get_feed_status(
        &self,
        request: Request<pb::GetFeedStatusRequest>,
    ) -> Result<Response<pb::GetFeedStatusResponse>, Status> {
        let inner = &self.inner;
        self.run(
            request,
            "GetFeedStatus",
            Access::Read,
            |_| None,
            |authority, _| async move {
                let status = authority.feed_status().await?;
                Ok(pb::GetFeedStatusResponse {
                    oldest_entry_at: status.oldest_ms.map(timestamp_ms),
                    newest_entry_at: status.newest_ms.map(timestamp_ms),
                    origin_at: status.origin_ms.map(timestamp_ms),
                    entries: i64::try_from(status.entries.min(FEED_COUNT_CAP)).unwrap_or(i64::MAX),
                    watchers: count(authority.feed_watchers()),
                    replica: inner.replica.clone(),
                })
            },
        )
        .await
    }
}

/// A count for the wire (saturating).
fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The audit target of a listing: its prefix, if any.
fn prefix_target(prefix: &str) -> Option<String> {
    (!prefix.is_empty()).then(|| format!("{prefix}*"))
}

/// Checks a listing's name prefix: empty, or the start of a valid name.
fn prefix(prefix: &str) -> Result<&str, AuthError> {
    if prefix.is_empty() || is_account_name(prefix) {
        Ok(prefix)
    } else {
        Err(AuthError::InvalidRequest(
            "prefix must be at most 128 letters, digits or . _ @ + -".into(),
        ))
    }
}

/// Checks a page size: 0 means the default.
fn page_size(size: i32) -> Result<usize, AuthError> {
    match usize::try_from(size) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err(AuthError::InvalidRequest(format!(
            "page_size must be 0-{MAX_PAGE_SIZE}"
        ))),
    }
}

/// The page token that resumes a listing after `last` (opaque to callers).
fn page_token(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("after:{last}"))
}

/// Where a listing resumes: `None` for the first page; refuses a token this
/// API did not make (or one naming no valid name, by `valid`).
fn page_after(token: &str, valid: fn(&str) -> bool) -> Result<Option<String>, AuthError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || AuthError::InvalidRequest("page_token is not one this API returned".into());
    let decoded = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    match text.strip_prefix("after:") {
        Some(last) if valid(last) => Ok(Some(last.to_owned())),
        _ => Err(bad()),
    }
}

fn scopes(scope: &str) -> Vec<String> {
    scope.split_ascii_whitespace().map(str::to_owned).collect()
}

fn optional_time(ms: i64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| timestamp_ms(ms))
}

fn user(view: UserView) -> pb::User {
    let throttle = view.throttle;
    pb::User {
        name: view.name,
        scopes: scopes(&view.record.scope),
        disabled: !view.record.active(),
        session_count: count(view.sessions),
        created_at: optional_time(view.record.created_ms),
        failed_logins: i32::try_from(throttle.failures.count).unwrap_or(i32::MAX),
        last_failed_login_at: (throttle.failures.count > 0)
            .then(|| optional_time(throttle.failures.last_ms))
            .flatten(),
        login_delay_ms: throttle
            .delay
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        version: view.record.version,
    }
}

fn client(view: ClientView) -> pb::Client {
    pb::Client {
        client_id: view.id,
        scopes: scopes(&view.record.scope),
        disabled: view.record.disabled,
        require_cert: view.record.require_cert,
        cert_identities: view.record.cert_identities,
        created_at: optional_time(view.record.created_ms),
        failed_logins: i32::try_from(view.throttle.failures.count).unwrap_or(i32::MAX),
        version: view.record.version,
    }
}

fn session(s: SessionInfo) -> pb::Session {
    pb::Session {
        session_id: s.session_id,
        created_at: Some(timestamp_ms(s.grant.created_ms)),
        last_refreshed_at: Some(timestamp_ms(s.refreshed_ms)),
        idle_expires_at: Some(timestamp_ms(s.idle_expiry_ms)),
        absolute_expires_at: Some(timestamp_ms(s.grant.absolute_expiry_ms)),
        user_agent: s.client,
        scopes: scopes(&s.grant.scope),
        audience: s.grant.audience,
    }
}

fn key(entry: &KeyEntry, now_ms: i64) -> pb::Key {
    let state = match entry.role {
        KeyRole::Active => pb::KeyState::Active,
        KeyRole::Next => pb::KeyState::Next,
        KeyRole::Retired => pb::KeyState::Retired,
    };
    pb::Key {
        key_id: entry.key.key_id.clone(),
        public_key: entry.key.public_key.clone(),
        state: state.into(),
        created_at: optional_time(entry.written_ms),
        age_seconds: if entry.written_ms > 0 {
            now_ms.saturating_sub(entry.written_ms) / 1000
        } else {
            0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_forged_ones_are_refused() {
        let token = page_token("alice");
        assert_eq!(
            page_after(&token, is_account_name)
                .ok()
                .flatten()
                .as_deref(),
            Some("alice")
        );
        assert_eq!(page_after("", is_account_name).ok(), Some(None));
        for forged in [
            "!!!".to_owned(),
            URL_SAFE_NO_PAD.encode("alice"),
            URL_SAFE_NO_PAD.encode("after:{bad}"),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            assert!(page_after(&forged, is_account_name).is_err(), "{forged}");
        }
    }

    #[test]
    fn page_sizes_default_and_are_bounded() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7).ok(), Some(7));
        assert_eq!(page_size(1000).ok(), Some(1000));
        assert!(page_size(1001).is_err());
        assert!(page_size(-1).is_err());
    }
}
