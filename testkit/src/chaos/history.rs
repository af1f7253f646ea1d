//! The history of a chaos run: every call the workload made, with when it
//! started and ended, what it named (users, sessions, token identities,
//! never a secret) and how it ended; and every fault the nemesis applied.
//! Written as JSON lines, one entry per line, so a failed run can be read,
//! and read back by the checker.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A password login: a new session.
    Login,
    /// A Refresh of `token`, answered with `successor`.
    Refresh,
    /// A Revoke of the session of `token`.
    Revoke,
    /// RevokeAllSessions by `user` (log out everywhere).
    RevokeAll,
    /// A call to resource server `detail` with the access token issued to
    /// `session`: `ok` is accepted.
    Access,
    /// An Exchange of the access token issued to `session` by the service
    /// the users log in for: `ok` is a derived token issued.
    Exchange,
    /// `tokend user disable USER` (the CLI).
    Disable,
    /// `tokend user enable USER` (the CLI).
    Enable,
    /// `tokend user set-scopes USER` (the CLI; ends nothing).
    SetScopes,
    /// After the faults healed: one Refresh of a session the workload holds
    /// live, which must work.
    Final,
    /// A fault the nemesis applied (`detail`), from start to its healing.
    Fault,
    /// Every fault healed (at `end_ms`).
    Heal,
    /// A tokend replica (`detail`) served again after the healing.
    Ready,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened.
    Ok,
    /// It was refused: nothing happened (or what the refusal says).
    Fail,
    /// Unknown: it may or may not have happened (unavailable, deadline).
    Info,
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What.
    pub op: Op,
    /// Which workload process (or the nemesis, `usize::MAX`).
    pub process: usize,
    /// When it started, ms since the run began.
    pub start_ms: u64,
    /// When it ended.
    pub end_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The user it is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The session it is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// The identity of the refresh token presented ([`token_id`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// The identity of the refresh token returned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub successor: String,
    /// The gRPC code of a failure (`Unavailable`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
    /// tokend's reason of a failure.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What a fault or a ready replica was.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The tokend replica that answered (`tokend-J`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replica: String,
}

impl Entry {
    /// An entry of `op` by `process` with everything else empty.
    pub fn new(op: Op, process: usize, outcome: Outcome) -> Entry {
        Entry {
            op,
            process,
            start_ms: 0,
            end_ms: 0,
            outcome,
            user: String::new(),
            session: String::new(),
            token: String::new(),
            successor: String::new(),
            code: String::new(),
            reason: String::new(),
            detail: String::new(),
            replica: String::new(),
        }
    }
}

/// The identity of a refresh token in the history: the first 16 hex
/// digits of its SHA-256, so the history never holds a usable token.
pub fn token_id(refresh_token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(refresh_token.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The history being recorded. Shared by the workload's tasks and the
/// nemesis thread.
#[derive(Debug)]
pub struct History {
    started: Instant,
    entries: Mutex<Vec<Entry>>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> History {
        History {
            started: Instant::now(),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Adds `entry`.
    pub fn record(&self, entry: Entry) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(entry);
    }

    /// Everything recorded, in the order recorded.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Writes `entries` to `path` as JSON lines.
pub fn write(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    let mut text = String::new();
    for entry in entries {
        text.push_str(&serde_json::to_string(entry).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    std::fs::write(path, text)
}

/// Reads a history written by [`write`].
pub fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
    std::fs::read_to_string(path)?
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).map_err(std::io::Error::other))
        .collect()
}
