//! The workload: concurrent clients doing what real clients do, through
//! two tokend replicas, recording every call. Each logs in, refreshes in a
//! loop (a failed call whose answer may have been lost is retried with the
//! same token, on the other replica, within the grace window, as the
//! contract allows), now and then revokes its session or logs out
//! everywhere and logs in again, and calls the resource servers with its
//! access tokens, current ones and those of sessions it saw end (which
//! must be refused soon after). An administrator disables and re-enables
//! users and changes their scopes with the CLI.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;
use tonic::transport::{Channel, Endpoint};

use super::history::{Entry, History, Op, Outcome, token_id};
use crate::{
    EchoClient, TOKEND_AUDIENCE, TokenServiceClient, client_login, echo_request, password_login,
    with_bearer,
};

/// Every user's password.
pub const PASSWORD: &str = "chaos-password";

/// The service the users log in for (their tokens' audience, which the
/// resource servers check) and that exchanges their tokens for
/// [`NEXT_HOP`].
pub const SERVICE: &str = "chaos-svc";

/// The audience the service exchanges users' tokens for.
pub const NEXT_HOP: &str = "chaos-next";

/// The exchange policy letting [`SERVICE`] call [`NEXT_HOP`] for users.
pub const EXCHANGE_POLICY: &str = r#"[[exchange]]
actor = "chaos-svc"
targets = ["chaos-next"]
scopes = ["read"]
max_ttl = "5m"
"#;

/// How long a call may take before it counts as unanswered.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a refresh whose answer was lost is retried with the same
/// token: inside the shipped grace window (10 s), with room to spare.
const RETRY_FOR: Duration = Duration::from_secs(7);

/// How a failed call ended, as the history says it.
struct Failure {
    outcome: Outcome,
    code: String,
    reason: String,
    detail: String,
}

impl Failure {
    /// Writes the failure into `entry`.
    fn record_in(self, entry: &mut Entry) {
        entry.outcome = self.outcome;
        entry.code = self.code;
        entry.reason = self.reason;
        entry.detail = self.detail;
    }
}

/// A call's failure: unknown (it may have happened) for transport
/// failures, deadlines and STORE_UNAVAILABLE; a refusal otherwise.
fn failure(status: &tonic::Status) -> Failure {
    let reason = Reason::of(status);
    let mut code = format!("{:?}", status.code());
    let message = status.message().to_owned();
    // A broken connection (a replica killed mid-call) is the client's
    // transport failing, whatever code tonic gives it: not tokend's answer.
    let transport = reason.is_none()
        && [
            "transport",
            "connection",
            "h2 protocol",
            "broken pipe",
            "error trying",
        ]
        .iter()
        .any(|m| message.to_lowercase().contains(m));
    if transport {
        code = "Unavailable".into();
    }
    let unknown = transport
        || matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        );
    Failure {
        outcome: if unknown {
            Outcome::Info
        } else {
            Outcome::Fail
        },
        code,
        reason: reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        detail: if reason.is_none() {
            message
        } else {
            String::new()
        },
    }
}

/// A lazy channel to each of `addrs` (a killed process holds nobody up),
/// with the workload's timeouts.
fn lazy_channels(addrs: &[std::net::SocketAddr]) -> impl Iterator<Item = Channel> + '_ {
    addrs.iter().filter_map(|addr| {
        Endpoint::from_shared(format!("http://{addr}"))
            .ok()
            .map(|e| {
                e.connect_timeout(Duration::from_secs(1))
                    .timeout(CALL_TIMEOUT)
                    .connect_lazy()
            })
    })
}

/// A client of each replica.
pub fn clients(addrs: &[std::net::SocketAddr]) -> Vec<TokenServiceClient<Channel>> {
    lazy_channels(addrs).map(TokenServiceClient::new).collect()
}

/// A client of each resource server.
pub fn resource_servers(addrs: &[std::net::SocketAddr]) -> Vec<EchoClient> {
    lazy_channels(addrs).map(EchoClient::new).collect()
}

/// A session the client holds: its id, current refresh token and the
/// access token that came with it.
#[derive(Debug, Clone)]
pub struct Held {
    /// The session id.
    pub session: String,
    /// Its current refresh token.
    pub token: String,
    /// The newest access token issued to it.
    pub access: String,
}

/// The access tokens of sessions a client saw end (or lose), the newest
/// last: presented to the resource servers, which must refuse them soon.
#[derive(Debug, Default)]
struct Ended(Vec<(String, String)>);

impl Ended {
    /// The most kept.
    const KEPT: usize = 4;

    fn push(&mut self, held: &Held) {
        if self.0.len() == Self::KEPT {
            self.0.remove(0);
        }
        self.0.push((held.session.clone(), held.access.clone()));
    }
}

/// What a client process talks to.
pub struct Peers {
    /// A client of each tokend replica ([`clients`]).
    pub replicas: Vec<TokenServiceClient<Channel>>,
    /// A client of each watching resource server ([`resource_servers`]).
    pub watching: Vec<EchoClient>,
    /// The secret of [`SERVICE`], which exchanges the users' tokens.
    pub service_secret: Arc<String>,
}

/// One client process: user `user`, starting at replica `process % 2`;
/// returns the session it holds at the end, if any.
pub async fn client(
    process: usize,
    user: String,
    peers: Peers,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Option<Held> {
    let Peers {
        mut replicas,
        mut watching,
        service_secret,
    } = peers;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut at = process % replicas.len();
    let mut held: Option<Held> = None;
    let mut ended = Ended::default();
    let mut service_token: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.u64(5..40))).await;
        let roll = rng.u8(0..100);
        // The current token (if any) or one of a session that ended, at a
        // resource server (30 %) or in an exchange (10 %).
        let probe = match (&held, rng.bool()) {
            (Some(h), true) => Some((h.session.clone(), h.access.clone())),
            _ => ended.0.get(rng.usize(..ended.0.len().max(1))).cloned(),
        };
        if let Some((session, access)) = probe.filter(|_| roll < 40) {
            if roll < 30 && !watching.is_empty() {
                let k = rng.usize(..watching.len());
                call_resource_server(
                    process,
                    &user,
                    &session,
                    &access,
                    k,
                    &mut watching[k],
                    &history,
                )
                .await;
            } else if roll >= 30 {
                if service_token.is_none() {
                    service_token = service_login(&mut replicas[at], &service_secret).await;
                }
                if let Some(token) = &service_token {
                    exchange(
                        process,
                        &user,
                        (&session, &access),
                        token,
                        &mut replicas,
                        at,
                        &history,
                    )
                    .await;
                }
            }
        }
        let Some(current) = held.take() else {
            held = login(process, &user, &mut replicas, at, &history).await;
            if held.is_none() {
                at = (at + 1) % replicas.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        match rng.u8(0..100) {
            0..=3 => {
                revoke(process, &user, &current, &mut replicas, &mut at, &history).await;
                ended.push(&current);
                continue;
            }
            4 if revoke_all(process, &user, &mut replicas, at, &history).await => {
                ended.push(&current);
                continue;
            }
            _ => {}
        }
        let last = current.clone();
        held = refresh(
            process,
            &user,
            current,
            &mut replicas,
            &mut at,
            &history,
            Op::Refresh,
        )
        .await;
        if held.is_none() {
            ended.push(&last);
        }
    }
    held
}

/// Calls resource server `k` with `access` (issued to `session`) and
/// records whether it was accepted.
async fn call_resource_server(
    process: usize,
    user: &str,
    session: &str,
    access: &str,
    k: usize,
    server: &mut EchoClient,
    history: &History,
) {
    let start_ms = history.now_ms();
    let bearer = format!("Bearer {access}");
    let answer = server.echo(echo_request("chaos", Some(&bearer))).await;
    let mut entry = Entry {
        user: user.to_owned(),
        session: session.to_owned(),
        start_ms,
        end_ms: history.now_ms(),
        ..Entry::new(Op::Access, process, Outcome::Ok)
    };
    if let Err(status) = answer {
        failure(&status).record_in(&mut entry);
    }
    entry.detail = format!("rs-{k}");
    history.record(entry);
}

/// How the history names replica `at`.
fn replica_name(at: usize) -> String {
    format!("tokend-{at}")
}

/// The service's access token for tokend (to call Exchange with).
async fn service_login(client: &mut TokenServiceClient<Channel>, secret: &str) -> Option<String> {
    let mut request = client_login(SERVICE, secret);
    request.audience = TOKEND_AUDIENCE.into();
    let pair = client.login(request).await.ok()?.into_inner().tokens?;
    Some(pair.access_token)
}

/// The service exchanges `access` (issued to `session`) for a token for
/// [`NEXT_HOP`]; recorded like a resource server's check, by tokend.
async fn exchange(
    process: usize,
    user: &str,
    (session, access): (&str, &str),
    service_token: &str,
    replicas: &mut [TokenServiceClient<Channel>],
    at: usize,
    history: &History,
) {
    let start_ms = history.now_ms();
    let answer = replicas[at]
        .exchange(with_bearer(
            pb::ExchangeRequest {
                subject_token: access.to_owned(),
                audience: NEXT_HOP.into(),
                scopes: vec!["read".into()],
                ttl: None,
            },
            service_token,
        ))
        .await;
    let mut entry = Entry {
        replica: replica_name(at),
        user: user.to_owned(),
        session: session.to_owned(),
        start_ms,
        end_ms: history.now_ms(),
        ..Entry::new(Op::Exchange, process, Outcome::Ok)
    };
    if let Err(status) = answer {
        failure(&status).record_in(&mut entry);
    }
    history.record(entry);
}

/// Logs `user` out everywhere (a login for tokend's audience, then
/// RevokeAllSessions with its access token); whether it was acknowledged.
/// (The login's own session ends with the rest: it is not recorded.)
async fn revoke_all(
    process: usize,
    user: &str,
    replicas: &mut [TokenServiceClient<Channel>],
    at: usize,
    history: &History,
) -> bool {
    let client = &mut replicas[at];
    let mut request = password_login(user, PASSWORD);
    request.audience = TOKEND_AUDIENCE.into();
    let Ok(Some(pair)) = client.login(request).await.map(|r| r.into_inner().tokens) else {
        return false;
    };
    let start_ms = history.now_ms();
    let answer = client
        .revoke_all_sessions(with_bearer(
            pb::RevokeAllSessionsRequest {},
            &pair.access_token,
        ))
        .await;
    let mut entry = Entry {
        replica: replica_name(at),
        user: user.to_owned(),
        start_ms,
        end_ms: history.now_ms(),
        ..Entry::new(Op::RevokeAll, process, Outcome::Ok)
    };
    if let Err(status) = answer {
        failure(&status).record_in(&mut entry);
    }
    let acknowledged = entry.outcome == Outcome::Ok;
    history.record(entry);
    acknowledged
}

async fn login(
    process: usize,
    user: &str,
    replicas: &mut [TokenServiceClient<Channel>],
    at: usize,
    history: &History,
) -> Option<Held> {
    let start_ms = history.now_ms();
    let mut request = password_login(user, PASSWORD);
    request.audience = SERVICE.into();
    let answer = replicas[at].login(request).await;
    let mut entry = Entry {
        replica: replica_name(at),
        user: user.to_owned(),
        start_ms,
        end_ms: history.now_ms(),
        ..Entry::new(Op::Login, process, Outcome::Ok)
    };
    match answer.map(|r| r.into_inner().tokens) {
        Ok(Some(pair)) => {
            entry.session = pair.session_id.clone();
            entry.successor = token_id(&pair.refresh_token);
            history.record(entry);
            Some(Held {
                session: pair.session_id,
                token: pair.refresh_token,
                access: pair.access_token,
            })
        }
        Ok(None) => {
            entry.outcome = Outcome::Fail;
            entry.code = "NoTokens".into();
            history.record(entry);
            None
        }
        Err(status) => {
            failure(&status).record_in(&mut entry);
            history.record(entry);
            None
        }
    }
}

/// Refreshes `held`, retrying an unanswered call with the same token on
/// the other replica for [`RETRY_FOR`]; returns the session still held
/// (with its new token), or `None` if it ended or its state is unknown.
/// The last attempt is recorded as `last_op` (Refresh, or Final).
pub async fn refresh(
    process: usize,
    user: &str,
    held: Held,
    replicas: &mut [TokenServiceClient<Channel>],
    at: &mut usize,
    history: &History,
    last_op: Op,
) -> Option<Held> {
    let first = Instant::now();
    loop {
        let start_ms = history.now_ms();
        let answer = replicas[*at]
            .refresh(pb::RefreshRequest {
                refresh_token: held.token.clone(),
            })
            .await;
        let mut entry = Entry {
            replica: replica_name(*at),
            user: user.to_owned(),
            session: held.session.clone(),
            token: token_id(&held.token),
            start_ms,
            end_ms: history.now_ms(),
            ..Entry::new(Op::Refresh, process, Outcome::Ok)
        };
        match answer.map(|r| r.into_inner().tokens) {
            Ok(Some(pair)) => {
                entry.op = last_op;
                entry.successor = token_id(&pair.refresh_token);
                history.record(entry);
                return Some(Held {
                    session: held.session,
                    token: pair.refresh_token,
                    access: pair.access_token,
                });
            }
            Ok(None) => {
                entry.op = last_op;
                entry.outcome = Outcome::Fail;
                entry.code = "NoTokens".into();
                history.record(entry);
                return None;
            }
            Err(status) => {
                let f = failure(&status);
                let retry = f.outcome == Outcome::Info && first.elapsed() < RETRY_FOR;
                f.record_in(&mut entry);
                if !retry {
                    entry.op = last_op;
                }
                history.record(entry);
                if !retry {
                    return None;
                }
                *at = (*at + 1) % replicas.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn revoke(
    process: usize,
    user: &str,
    held: &Held,
    replicas: &mut [TokenServiceClient<Channel>],
    at: &mut usize,
    history: &History,
) {
    let first = Instant::now();
    loop {
        let start_ms = history.now_ms();
        let answer = replicas[*at]
            .revoke(pb::RevokeRequest {
                refresh_token: held.token.clone(),
            })
            .await;
        let mut entry = Entry {
            replica: replica_name(*at),
            user: user.to_owned(),
            session: held.session.clone(),
            token: token_id(&held.token),
            start_ms,
            end_ms: history.now_ms(),
            ..Entry::new(Op::Revoke, process, Outcome::Ok)
        };
        match answer {
            Ok(_) => {
                history.record(entry);
                return;
            }
            Err(status) => {
                let f = failure(&status);
                let retry = f.outcome == Outcome::Info && first.elapsed() < RETRY_FOR;
                f.record_in(&mut entry);
                history.record(entry);
                if !retry {
                    return;
                }
                *at = (*at + 1) % replicas.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The administrator: every few seconds disables a user with the CLI,
/// then enables it again (retrying the enable until it is acknowledged).
pub async fn administrator(
    redis_args: Vec<String>,
    users: Vec<String>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.u64(2_000..5_000))).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let user = users[rng.usize(..users.len())].clone();
        if rng.u8(0..4) == 0 {
            // New scopes end nothing: the sessions get them at their next
            // Refresh.
            let scopes: &[&str] = if rng.bool() {
                &["read"]
            } else {
                &["read", "write"]
            };
            let _ = cli(&redis_args, Op::SetScopes, &user, scopes, &history).await;
            continue;
        }
        let _ = cli(&redis_args, Op::Disable, &user, &[], &history).await;
        tokio::time::sleep(Duration::from_millis(rng.u64(300..1_000))).await;
        enable(&redis_args, &user, &history).await;
    }
}

/// Enables `user` with the CLI until the command succeeds (bounded; not
/// when the account is gone, which the checker reports).
pub async fn enable(redis_args: &[String], user: &str, history: &History) {
    for _ in 0..60 {
        match cli(redis_args, Op::Enable, user, &[], history).await {
            Ok(()) => return,
            Err(why) if why.contains("no user called") => return,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs `tokend user ACTION USER` (disable, enable or set-scopes with
/// `scopes`) and records it; returns whether it succeeded, or the last
/// line of its error.
async fn cli(
    redis_args: &[String],
    op: Op,
    user: &str,
    scopes: &[&str],
    history: &History,
) -> Result<(), String> {
    let action = match op {
        Op::Disable => "disable",
        Op::SetScopes => "set-scopes",
        _ => "enable",
    };
    let mut args = vec![
        "user".to_owned(),
        action.to_owned(),
        user.to_owned(),
        "--redis-timeout".to_owned(),
        "2s".to_owned(),
    ];
    for scope in scopes {
        args.extend(["--scope".to_owned(), (*scope).to_owned()]);
    }
    args.extend(redis_args.iter().cloned());
    let start_ms = history.now_ms();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::tokend_bin())
            .args(&args)
            .env_remove("TOKEND_REDIS_URL")
            .output()
    })
    .await;
    let result = match &out {
        Ok(Ok(o)) if o.status.success() => Ok(()),
        Ok(Ok(o)) => Err(String::from_utf8_lossy(&o.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    history.record(Entry {
        user: user.to_owned(),
        start_ms,
        end_ms: history.now_ms(),
        // A failed command may have made part of its change (the cut-off
        // without the sweep): unknown, not refused.
        detail: result.clone().err().unwrap_or_default(),
        ..Entry::new(
            op,
            usize::MAX - 1,
            if result.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Info
            },
        )
    });
    result
}
