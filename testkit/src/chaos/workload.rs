//! The workload: concurrent clients doing what real clients do, through
//! two tokend replicas, recording every call. Each logs in, refreshes in a
//! loop (a failed call whose answer may have been lost is retried with the
//! same token, on the other replica, within the grace window, as the
//! contract allows), now and then revokes its session and logs in again.
//! An administrator disables and re-enables users with the CLI.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokend::proto::tokend::v1 as pb;
use tokend_interceptor::Reason;
use tonic::transport::{Channel, Endpoint};

use super::history::{Entry, History, Op, Outcome, token_id};
use crate::{TokenServiceClient, password_login};

/// Every user's password.
pub const PASSWORD: &str = "chaos-password";

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

/// A client of each replica, connecting lazily (a killed replica does not
/// hold anyone up).
pub fn clients(addrs: &[std::net::SocketAddr]) -> Vec<TokenServiceClient<Channel>> {
    addrs
        .iter()
        .filter_map(|addr| {
            Endpoint::from_shared(format!("http://{addr}"))
                .ok()
                .map(|e| {
                    e.connect_timeout(Duration::from_secs(1))
                        .timeout(CALL_TIMEOUT)
                })
                .map(|e| TokenServiceClient::new(e.connect_lazy()))
        })
        .collect()
}

/// A session the client holds: its id and current refresh token.
#[derive(Debug, Clone)]
pub struct Held {
    /// The session id.
    pub session: String,
    /// Its current refresh token.
    pub token: String,
}

/// One client process: user `user`, replica `first` preferred.
pub async fn client(
    process: usize,
    user: String,
    mut replicas: Vec<TokenServiceClient<Channel>>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Option<(String, String, String)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut at = process % replicas.len();
    let mut held: Option<Held> = None;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.u64(5..40))).await;
        let Some(current) = held.take() else {
            held = login(process, &user, &mut replicas[at], &history).await;
            if held.is_none() {
                at = (at + 1) % replicas.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        if rng.u8(0..100) < 4 {
            revoke(process, &user, &current, &mut replicas, &mut at, &history).await;
            continue;
        }
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
    }
    held.map(|h| (user, h.session, h.token))
}

async fn login(
    process: usize,
    user: &str,
    client: &mut TokenServiceClient<Channel>,
    history: &History,
) -> Option<Held> {
    let start_ms = history.now_ms();
    let answer = client.login(password_login(user, PASSWORD)).await;
    let mut entry = Entry {
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
        cli(&redis_args, "disable", &user, &history).await;
        tokio::time::sleep(Duration::from_millis(rng.u64(300..1_000))).await;
        enable(&redis_args, &user, &history).await;
    }
}

/// Enables `user` with the CLI until the command succeeds (bounded).
pub async fn enable(redis_args: &[String], user: &str, history: &History) {
    for _ in 0..60 {
        if cli(redis_args, "enable", user, history).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs `tokend user ACTION USER` and records it; returns whether it
/// succeeded.
async fn cli(redis_args: &[String], action: &str, user: &str, history: &History) -> bool {
    let mut args = vec![
        "user".to_owned(),
        action.to_owned(),
        user.to_owned(),
        "--redis-timeout".to_owned(),
        "2s".to_owned(),
    ];
    args.extend(redis_args.iter().cloned());
    let start_ms = history.now_ms();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::tokend_bin())
            .args(&args)
            .env_remove("TOKEND_REDIS_URL")
            .output()
    })
    .await;
    let ok = matches!(&out, Ok(Ok(o)) if o.status.success());
    let op = if action == "disable" {
        Op::Disable
    } else {
        Op::Enable
    };
    history.record(Entry {
        user: user.to_owned(),
        start_ms,
        end_ms: history.now_ms(),
        // A failed command may have made part of its change (the cut-off
        // without the sweep): unknown, not refused.
        detail: match &out {
            Ok(Ok(o)) if !o.status.success() => String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or_default()
                .to_owned(),
            _ => String::new(),
        },
        ..Entry::new(
            op,
            usize::MAX - 1,
            if ok { Outcome::Ok } else { Outcome::Info },
        )
    });
    ok
}
