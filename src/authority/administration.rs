//! Administration over gRPC: who may administer ([`Authority::authorize_admin`]),
//! and what administrators read and change. Every change is the workflow of
//! its CLI command in [`crate::admin`] (the same code path, so the API and
//! the CLI cannot drift): a disable or delete cuts off and announces first,
//! then sweeps sessions in bounded batches, resumable by calling again.
//!
//! Callers: the caller's own access token whose audience is tokend's issuer
//! name and which carries [`ADMIN_SCOPE`] (read-only calls also accept
//! [`ADMIN_READ_SCOPE`]), from a live session or client; or, without a
//! token, a verified client certificate naming one enabled service client
//! granted that scope. A refused caller counts as a failed attempt of its
//! source, throttled like failed logins.

use futures_util::{StreamExt, stream};
use tokend_interceptor::Claims;
use tokend_interceptor::certs::CertificateIdentity;

use super::{AuthError, Authority};
use crate::accounts::CertifiedClient;
use crate::accounts::rules::ReservedNames;
use crate::admin::{self, cutoff};
use crate::store::{AccountChange, AccountKind, ClientRecord, SessionsPage, UserRecord};
use crate::throttle::{AccountThrottle, Credential};

pub use crate::accounts::rules::{ADMIN_READ_SCOPE, ADMIN_SCOPE};

/// How many accounts of a listing are read at once.
const READ_AHEAD: usize = 32;

/// The account the throttle counts refused administration calls under
/// (`admin:api`, apart from every login).
const THROTTLED_AS: &str = "api";

/// Who makes an administration call.
#[derive(Debug, Clone, Copy)]
pub enum AdminCaller<'a> {
    /// An access token the caller presented, verified.
    Token(&'a Claims),
    /// No token: the client certificate of the connection (mTLS).
    Certificate(&'a CertificateIdentity),
}

/// What a call does, and so which scope it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: [`ADMIN_SCOPE`] or [`ADMIN_READ_SCOPE`].
    Read,
    /// Changes something: [`ADMIN_SCOPE`].
    Write,
}

/// An administrator allowed to make a call: whom the audit names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Administrator {
    /// The user name or client id.
    pub name: String,
    /// How it proved who it is: `token` or `certificate`.
    pub via: &'static str,
}

/// A user as administrators see it.
#[derive(Debug, Clone)]
pub struct UserView {
    /// Its name.
    pub name: String,
    /// Its record.
    pub record: UserRecord,
    /// Live sessions.
    pub sessions: usize,
    /// What the login throttle holds against it.
    pub throttle: AccountThrottle,
}

/// A service client as administrators see it.
#[derive(Debug, Clone)]
pub struct ClientView {
    /// Its id.
    pub id: String,
    /// Its record.
    pub record: ClientRecord,
    /// What the login throttle holds against it.
    pub throttle: AccountThrottle,
}

/// One page of a listing: the items, and the name to list after for the
/// next page (`None` after the last).
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, in name order.
    pub items: Vec<T>,
    /// Where the next page starts (exclusive).
    pub next_after: Option<String>,
}

/// Authorization.
impl Authority {
    /// Whether `caller` (`None`: no credential, or the reason its token was
    /// refused) may make a call of kind `access`, from `source`. Refusals
    /// count against the source like failed logins; a source over its
    /// allowance is refused with LOGIN_THROTTLED before anything is
    /// checked.
    pub async fn authorize_admin(
        &self,
        source: &str,
        caller: Result<AdminCaller<'_>, AuthError>,
        access: Access,
    ) -> Result<Administrator, AuthError> {
        let attempt = self
            .throttle
            .admit(Credential::Admin, THROTTLED_AS, source)
            .await?;
        let decided = match caller {
            Ok(caller) => self.administrator(caller, access).await,
            Err(err) => Err(err),
        };
        match decided {
            Ok(admin) => {
                attempt.succeeded().await?;
                Ok(admin)
            }
            Err(err) if err.is_refusal() => {
                let gated = attempt.gated();
                attempt.failed().await?;
                Err(gated.map_or(err, AuthError::LoginThrottled))
            }
            Err(err) => Err(err),
        }
    }

    /// The administrator `caller` is, if it may make a call of `access`.
    async fn administrator(
        &self,
        caller: AdminCaller<'_>,
        access: Access,
    ) -> Result<Administrator, AuthError> {
        let needed = || match access {
            Access::Read => AuthError::InsufficientScope(format!(
                "{ADMIN_SCOPE} (or {ADMIN_READ_SCOPE} for read-only calls)"
            )),
            Access::Write => AuthError::InsufficientScope(ADMIN_SCOPE.to_owned()),
        };
        let allows = |granted: &dyn Fn(&str) -> bool| {
            granted(ADMIN_SCOPE) || (access == Access::Read && granted(ADMIN_READ_SCOPE))
        };
        match caller {
            AdminCaller::Token(claims) => {
                // A delegated token is refused whatever it is for: no
                // service administers on a user's behalf.
                if claims.is_delegated() {
                    return Err(AuthError::ChainNotAllowed(
                        "administer with your own token, not a delegated one".into(),
                    ));
                }
                if claims.aud() != self.issuer_name() {
                    return Err(AuthError::WrongAudience);
                }
                if !allows(&|scope| claims.has_scope(scope)) {
                    return Err(needed());
                }
                self.require_live_caller(claims).await?;
                Ok(Administrator {
                    name: claims.sub().to_owned(),
                    via: "token",
                })
            }
            AdminCaller::Certificate(identity) => {
                match self
                    .accounts
                    .certified_client(&self.cert_naming, identity)
                    .await?
                {
                    CertifiedClient::One { id, state } if state.active => {
                        let granted =
                            |scope: &str| state.scope.split_ascii_whitespace().any(|s| s == scope);
                        if !allows(&granted) {
                            return Err(needed());
                        }
                        Ok(Administrator {
                            name: id,
                            via: "certificate",
                        })
                    }
                    CertifiedClient::One { .. } => Err(AuthError::SessionRevoked),
                    CertifiedClient::None => Err(AuthError::NoCaller(
                        "the client certificate names no service client; present an \
                         administrator's access token",
                    )),
                    CertifiedClient::Several => Err(AuthError::NoCaller(
                        "the client certificate names several service clients; present an \
                         administrator's access token",
                    )),
                }
            }
        }
    }
}

/// Users.
impl Authority {
    /// Up to `limit` users whose names start with `prefix`, after `after`.
    pub async fn list_users(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<UserView>, AuthError> {
        let mut names = self
            .store
            .account_names(AccountKind::User, prefix, after, limit.saturating_add(1))
            .await?;
        // One more than asked says whether a next page exists.
        let next_after = (names.len() > limit)
            .then(|| {
                names.truncate(limit);
                names.last().cloned()
            })
            .flatten();
        // A directory entry whose account is gone (or not made yet) is
        // skipped.
        let items = read_each(names, |name| async move { self.user_view(&name).await }).await?;
        Ok(Page { items, next_after })
    }

    /// The user `name`.
    pub async fn get_user(&self, name: &str) -> Result<UserView, AuthError> {
        self.user_view(name)
            .await?
            .ok_or_else(|| no_such(AccountKind::User, name))
    }

    async fn user_view(&self, name: &str) -> Result<Option<UserView>, AuthError> {
        let Some(record) = self.store.user(name).await? else {
            return Ok(None);
        };
        let (sessions, throttle) = tokio::try_join!(
            self.store.count_sessions(name),
            self.throttle.account_state(Credential::Password, name),
        )?;
        Ok(Some(UserView {
            name: name.to_owned(),
            record,
            sessions,
            throttle,
        }))
    }

    /// Creates a user, as `tokend user add` does.
    pub async fn create_user(
        &self,
        name: &str,
        password: String,
        scopes: &[String],
    ) -> Result<UserView, AuthError> {
        admin::add_user(
            &self.store,
            &self.hasher,
            &self.reserved_names(),
            name,
            scopes,
            password,
        )
        .await?;
        admin::changed("user_added", name, None);
        self.get_user(name).await
    }

    /// Replaces a user's scopes, as `tokend user set-scopes` does.
    pub async fn set_user_scopes(
        &self,
        name: &str,
        scopes: &[String],
    ) -> Result<UserView, AuthError> {
        admin::set_scopes(&self.store, &self.feed, AccountKind::User, name, scopes).await?;
        admin::changed("user_scopes_set", name, None);
        self.get_user(name).await
    }

    /// Sets a user's password and ends everything of it, as `tokend user
    /// set-password` does; returns the sessions ended.
    pub async fn set_user_password(
        &self,
        name: &str,
        password: String,
    ) -> Result<usize, AuthError> {
        let (store, feed, hasher) = (self.store.clone(), self.feed.clone(), self.hasher.clone());
        let owned = name.to_owned();
        let ended = finish(async move {
            admin::set_password(&store, &feed, &hasher, &owned, password, &mut |_| {}).await
        })
        .await?;
        admin::changed("user_password_set", name, Some(ended.sweep.ended));
        Ok(ended.sweep.ended)
    }

    /// Ends a user's account with `change` (disable, delete, or a cut-off
    /// of every session), as the CLI does; returns the sessions ended.
    pub async fn end_user(
        &self,
        name: &str,
        change: AccountChange<'static>,
        event: &'static str,
    ) -> Result<usize, AuthError> {
        let (store, feed) = (self.store.clone(), self.feed.clone());
        let owned = name.to_owned();
        let ended =
            finish(
                async move { cutoff::end_user(&store, &feed, &owned, change, &mut |_| {}).await },
            )
            .await?;
        admin::changed(event, name, Some(ended.sweep.ended));
        Ok(ended.sweep.ended)
    }

    /// Lets a disabled account log in again, as `tokend user|client
    /// enable` does.
    pub async fn enable_account(&self, kind: AccountKind, name: &str) -> Result<(), AuthError> {
        admin::enable(&self.store, &self.feed, kind, name).await?;
        let event = match kind {
            AccountKind::User => "user_enabled",
            AccountKind::Client => "client_enabled",
        };
        admin::changed(event, name, None);
        Ok(())
    }

    /// Up to `limit` live sessions of the user `name` after the session id
    /// `after`.
    pub async fn user_sessions(
        &self,
        name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<SessionsPage, AuthError> {
        if self.store.user(name).await?.is_none() {
            return Err(no_such(AccountKind::User, name));
        }
        Ok(self.store.sessions_page(name, after, limit).await?)
    }

    /// Ends one session of the user `name`; SESSION_NOT_FOUND if it is not
    /// one of theirs.
    pub async fn revoke_user_session(&self, name: &str, session_id: &str) -> Result<(), AuthError> {
        if self.store.user(name).await?.is_none() {
            return Err(no_such(AccountKind::User, name));
        }
        self.end_one_session(name, session_id, crate::facts::EndCause::Admin)
            .await
    }
}

/// Service clients.
impl Authority {
    /// Up to `limit` clients whose ids start with `prefix`, after `after`.
    pub async fn list_clients(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<ClientView>, AuthError> {
        let mut ids = self
            .store
            .account_names(AccountKind::Client, prefix, after, limit.saturating_add(1))
            .await?;
        // One more than asked says whether a next page exists.
        let next_after = (ids.len() > limit)
            .then(|| {
                ids.truncate(limit);
                ids.last().cloned()
            })
            .flatten();
        let items = read_each(ids, |id| async move { self.client_view(&id).await }).await?;
        Ok(Page { items, next_after })
    }

    /// The client `id`.
    pub async fn get_client(&self, id: &str) -> Result<ClientView, AuthError> {
        self.client_view(id)
            .await?
            .ok_or_else(|| no_such(AccountKind::Client, id))
    }

    async fn client_view(&self, id: &str) -> Result<Option<ClientView>, AuthError> {
        let Some(record) = self.store.client(id).await? else {
            return Ok(None);
        };
        let throttle = self
            .throttle
            .account_state(Credential::ClientSecret, id)
            .await?;
        Ok(Some(ClientView {
            id: id.to_owned(),
            record,
            throttle,
        }))
    }

    /// Creates a client, as `tokend client add` does; returns its secret.
    pub async fn create_client(
        &self,
        id: &str,
        client: admin::NewClient<'_>,
    ) -> Result<String, AuthError> {
        let secret = admin::add_client(&self.store, &self.reserved_names(), id, client).await?;
        admin::changed("client_added", id, None);
        Ok(secret)
    }

    /// Gives a client a new secret, as `tokend client rotate-secret` does.
    pub async fn rotate_client_secret(&self, id: &str) -> Result<String, AuthError> {
        let (store, feed) = (self.store.clone(), self.feed.clone());
        let owned = id.to_owned();
        let secret =
            finish(async move { admin::rotate_secret(&store, &feed, &owned).await }).await?;
        admin::changed("client_secret_rotated", id, None);
        Ok(secret)
    }

    /// Replaces a client's scopes, as `tokend client set-scopes` does.
    pub async fn set_client_scopes(
        &self,
        id: &str,
        scopes: &[String],
    ) -> Result<ClientView, AuthError> {
        admin::set_scopes(&self.store, &self.feed, AccountKind::Client, id, scopes).await?;
        admin::changed("client_scopes_set", id, None);
        self.get_client(id).await
    }

    /// Ends a client with `change` (disable or delete), as the CLI does.
    pub async fn end_client(
        &self,
        id: &str,
        change: AccountChange<'static>,
        event: &'static str,
    ) -> Result<(), AuthError> {
        let (store, feed) = (self.store.clone(), self.feed.clone());
        let owned = id.to_owned();
        finish(async move { cutoff::end_client(&store, &feed, &owned, change).await }).await?;
        admin::changed(event, id, None);
        Ok(())
    }
}

/// The revocation feed's extent, for administrators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeedStatus {
    /// The oldest entry kept, ms since the epoch.
    pub oldest_ms: Option<i64>,
    /// The newest entry, ms since the epoch.
    pub newest_ms: Option<i64>,
    /// Since when the feed holds everything published to it.
    pub origin_ms: Option<i64>,
    /// Entries kept.
    pub entries: u64,
}

/// Keys and the feed.
impl Authority {
    /// The revocation feed's oldest and newest entries, its origin and size.
    pub async fn feed_status(&self) -> Result<FeedStatus, AuthError> {
        let (oldest, (entries, newest), origin_ms) = tokio::try_join!(
            self.store.revocations_after(None, 1),
            self.store.feed_tail(),
            self.store.feed_origin(),
        )?;
        Ok(FeedStatus {
            oldest_ms: oldest.first().map(|e| e.at_ms),
            newest_ms: newest.map(|e| e.at_ms),
            origin_ms,
            entries,
        })
    }

    /// Watchers of the revocation feed connected to this replica.
    pub fn feed_watchers(&self) -> usize {
        self.feed.watchers()
    }

    /// Now, by the deployment's clock (ms since the epoch).
    pub fn now_ms(&self) -> i64 {
        self.store.clock().now_ms()
    }
}

impl Authority {
    /// The names no account may take: tokend's issuer and default audience.
    fn reserved_names(&self) -> ReservedNames {
        ReservedNames {
            issuer: self.issuer_name().to_owned(),
            default_audience: self.default_audience.clone(),
        }
    }
}

/// Runs a change to its end even if the caller hangs up: a cancelled call
/// must not leave a cut-off announced but its sweep half done for no
/// reason (running the call again would finish it, but nobody may).
async fn finish<T: Send + 'static>(
    change: impl Future<Output = Result<T, crate::accounts::AccountError>> + Send + 'static,
) -> Result<T, AuthError> {
    match tokio::spawn(change).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(AuthError::Store(crate::store::StoreError::Unavailable(
            "the change stopped unexpectedly; make the call again".into(),
        ))),
    }
}

/// Reads each of `names` with `read`, a few at a time (the reads pipeline
/// on the store's shared connection), in order; drops the `None`s.
async fn read_each<T, Fut>(
    names: Vec<String>,
    read: impl FnMut(String) -> Fut,
) -> Result<Vec<T>, AuthError>
where
    Fut: Future<Output = Result<Option<T>, AuthError>>,
{
    let read: Vec<Result<Option<T>, AuthError>> = stream::iter(names)
        .map(read)
        .buffered(READ_AHEAD)
        .collect()
        .await;
    read.into_iter().filter_map(Result::transpose).collect()
}

fn no_such(kind: AccountKind, name: &str) -> AuthError {
    AuthError::Account(crate::accounts::AccountError::NoSuchAccount(
        kind,
        name.to_owned(),
    ))
}
