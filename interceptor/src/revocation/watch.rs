//! [`RevocationWatch`]: follows tokend's revocation feed into a
//! [`RevocationList`] (the `client` feature: it calls tokend).

use std::time::Duration;

use tonic::Status;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tracing::{info, warn};

use super::RevocationList;
use crate::background::Background;
use crate::client::TokenSource;
use crate::proto::tokend::v1::WatchRevocationsRequest;
use crate::proto::tokend::v1::token_service_client::TokenServiceClient;
use crate::reason::Reason;

/// Follows tokend's revocation feed into a [`RevocationList`]: first
/// everything still relevant (the list refuses tokens issued before the
/// watch began until that history is in, see
/// [`RevocationList::catching_up`]), then live; reconnects with backoff and
/// resumes after the last cursor it saw.
///
/// The feed names revoked sessions and cut-off accounts, so tokend serves it
/// only to watchers with a verified client certificate (mTLS, see
/// [`TokendEndpoint::identity_files`](crate::connect::TokendEndpoint::identity_files))
/// or a token of a service client granted the scope `tokend.revocations`
/// ([`token_source`](Self::token_source)).
#[derive(Debug, Clone)]
pub struct RevocationWatch {
    channel: Channel,
    tokens: Option<TokenSource>,
}

impl RevocationWatch {
    /// A watch over `channel` to tokend.
    pub fn new(channel: Channel) -> RevocationWatch {
        RevocationWatch {
            channel,
            tokens: None,
        }
    }

    /// Authenticates with access tokens from `tokens`: a service client
    /// granted `tokend.revocations`, logging in for tokend's own audience
    /// (its issuer name, `tokend` by default; see
    /// [`ClientGrant`](crate::client::ClientGrant)). tokend refuses a watcher whose
    /// token is for another audience (`WRONG_AUDIENCE`), whose account is
    /// disabled or cut off, and ends the stream of one cut off later.
    pub fn token_source(mut self, tokens: TokenSource) -> RevocationWatch {
        self.tokens = Some(tokens);
        self
    }

    /// Starts following into `list`, on a task of its own, until the handle
    /// is dropped. Must be called within a Tokio runtime.
    pub fn spawn(self, list: RevocationList) -> Background {
        Background::spawn(follow_feed(self, list))
    }
}

/// Attaches the watch's token, if it has a source.
#[derive(Clone)]
struct FeedAuth(Option<TokenSource>);

impl Interceptor for FeedAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        match &self.0 {
            Some(tokens) => tokens.interceptor().call(request),
            None => Ok(request),
        }
    }
}

async fn follow_feed(watch: RevocationWatch, list: RevocationList) {
    list.catching_up();
    let auth = FeedAuth(watch.tokens.clone());
    let mut client = TokenServiceClient::with_interceptor(watch.channel.clone(), auth);
    let mut cursor = String::new();
    let mut failures: u32 = 0;
    loop {
        // A fresh token for each subscription (tokend checks it when the
        // stream starts).
        let token = match &watch.tokens {
            Some(tokens) => tokens.access_token().await.map(|_| ()),
            None => Ok(()),
        };
        let request = WatchRevocationsRequest {
            cursor: cursor.clone(),
        };
        let subscribed = match token {
            Ok(()) => client.watch_revocations(request).await,
            Err(status) => Err(status),
        };
        match subscribed {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            if failures > 0 {
                                info!("revocation feed connected again");
                                failures = 0;
                            }
                            list.apply(&message);
                            if !message.cursor.is_empty() {
                                cursor = message.cursor;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            warn!(error = %status.message(), "revocation feed interrupted");
                            renew_if_refused(&watch, &status);
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                renew_if_refused(&watch, &status);
                if failures == 0 || failures.is_power_of_two() {
                    warn!(error = %status.message(), code = ?status.code(), "cannot subscribe to the revocation feed");
                }
            }
        }
        failures = failures.saturating_add(1);
        // 100 ms, 200 ms, ... up to 5 s.
        let backoff = Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)));
        tokio::time::sleep(backoff.min(Duration::from_secs(5))).await;
    }
}

/// Logs in again next time if tokend refused the watch's token (expired,
/// no longer valid, its account cut off since it was issued): the
/// service's credentials may still be good.
fn renew_if_refused(watch: &RevocationWatch, status: &Status) {
    let refused = matches!(
        Reason::of(status),
        Some(Reason::AccessTokenExpired | Reason::AccessTokenInvalid | Reason::SessionRevoked)
    );
    if refused && let Some(tokens) = &watch.tokens {
        tokens.invalidate_all();
    }
}
