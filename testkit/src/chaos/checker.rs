//! The checker: reads a chaos run's history and proves tokend's promises
//! over all of it, or names each violation with the history lines that
//! prove it.
//!
//! - **one successor**: no refresh token yields two different successors;
//! - **nothing after the end**: no session refreshes in a call begun after
//!   its end was acknowledged (a Revoke, a reuse refusal, a disable of its
//!   user), except a retry returning the successor the same token had
//!   already returned (the grace window);
//! - **nothing lost**: every session whose last acknowledged operation left
//!   it live, and whose user is enabled at the end, refreshes once the
//!   faults healed;
//!   tokend itself exchanges no token of a session (Exchange) in a call
//!   begun after its end was acknowledged;
//! - **no account lost**: no login of a user certainly enabled at the
//!   time (never disabled, or enabled again since) is refused as unknown
//!   (`INVALID_CREDENTIALS`, the password being right), and no enable
//!   finds the user gone;
//! - **enforced**: no resource server accepts an access token of a
//!   session later than [`ENFORCE_MS`] after its end was acknowledged,
//!   plus the time its feed was cut meanwhile (its own connection, its
//!   tokend replica down or cut from Redis, or a Redis primary down),
//!   a cut lasting until as long after its healing as it was held (TCP's
//!   retransmissions back off exponentially);
//! - **documented answers**: no call ends INTERNAL or UNKNOWN, and every
//!   refusal other than a transport failure carries tokend's reason;
//! - **recovery**: after the last fault healed, every tokend replica serves
//!   within [`RECOVERY_LIMIT_MS`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use super::history::{Entry, Op, Outcome};

/// How long after the healing every replica must serve again.
pub const RECOVERY_LIMIT_MS: u64 = 15_000;

/// The shipped reuse grace window: a retry of a consumed token within it
/// gets the same successor, never REFRESH_TOKEN_INVALID.
pub const GRACE_MS: u64 = 10_000;

/// How soon after a session's end was acknowledged a watching resource
/// server refuses its access tokens (when its feed was not cut).
pub const ENFORCE_MS: u64 = 1_000;

/// The gRPC codes a caller may see (besides OK).
const DOCUMENTED_CODES: [&str; 8] = [
    "Unauthenticated",
    "PermissionDenied",
    "InvalidArgument",
    "ResourceExhausted",
    "Unavailable",
    "DeadlineExceeded",
    "NotFound",
    "Cancelled",
];

/// A broken promise, with the history lines (1-based) that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which promise.
    pub invariant: &'static str,
    /// What happened.
    pub message: String,
    /// The lines of the history that prove it.
    pub lines: Vec<usize>,
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Operations by outcome, faults applied, time without a successful
    /// refresh per fault.
    pub summary: String,
    /// Every violation.
    pub violations: Vec<Violation>,
}

/// Checks `entries` (in the order recorded; lines are their positions).
pub fn check(entries: &[Entry]) -> Report {
    let mut violations = Vec::new();
    one_successor(entries, &mut violations);
    let ends = session_ends(entries);
    nothing_after_the_end(entries, &ends, &mut violations);
    nothing_lost(entries, &ends, &mut violations);
    nothing_forgotten(entries, &ends, &mut violations);
    enforced(entries, &ends, &mut violations);
    accounts_kept(entries, &mut violations);
    documented_answers(entries, &mut violations);
    recovery(entries, &mut violations);
    Report {
        summary: summary(entries),
        violations,
    }
}

fn line(i: usize) -> usize {
    i + 1
}

fn is_refresh(entry: &Entry) -> bool {
    matches!(entry.op, Op::Refresh | Op::Final)
}

fn one_successor(entries: &[Entry], violations: &mut Vec<Violation>) {
    let mut first: HashMap<&str, (usize, &str)> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if !is_refresh(e) || e.outcome != Outcome::Ok {
            continue;
        }
        match first.get(e.token.as_str()) {
            Some((j, successor)) if *successor != e.successor => violations.push(Violation {
                invariant: "one successor",
                message: format!(
                    "token {} of session {} yielded {} and then {}",
                    e.token, e.session, successor, e.successor
                ),
                lines: vec![line(*j), line(i)],
            }),
            Some(_) => {}
            None => {
                first.insert(&e.token, (i, &e.successor));
            }
        }
    }
}

/// When each session's end was first acknowledged, and the line saying so.
fn session_ends(entries: &[Entry]) -> HashMap<String, (u64, usize)> {
    let mut ends: HashMap<String, (u64, usize)> = HashMap::new();
    let mut end = |session: &str, at: u64, i: usize| {
        let slot = ends.entry(session.to_owned()).or_insert((at, i));
        if at < slot.0 {
            *slot = (at, i);
        }
    };
    // Sessions by user, with when their login was answered.
    let logins: Vec<(&str, &str, u64)> = entries
        .iter()
        .filter(|e| e.op == Op::Login && e.outcome == Outcome::Ok)
        .map(|e| (e.user.as_str(), e.session.as_str(), e.end_ms))
        .collect();
    for (i, e) in entries.iter().enumerate() {
        match (e.op, e.outcome) {
            (Op::Revoke, Outcome::Ok) => end(&e.session, e.end_ms, i),
            (Op::Refresh | Op::Final, Outcome::Fail) if e.reason == "REFRESH_TOKEN_REUSED" => {
                end(&e.session, e.end_ms, i)
            }
            (Op::Disable | Op::RevokeAll, Outcome::Ok) => {
                for (user, session, answered) in &logins {
                    if *user == e.user && *answered < e.start_ms {
                        end(session, e.end_ms, i);
                    }
                }
            }
            _ => {}
        }
    }
    ends
}

fn nothing_after_the_end(
    entries: &[Entry],
    ends: &HashMap<String, (u64, usize)>,
    violations: &mut Vec<Violation>,
) {
    for (i, e) in entries.iter().enumerate() {
        if !is_refresh(e) || e.outcome != Outcome::Ok {
            continue;
        }
        let Some((ended, end_line)) = ends.get(&e.session) else {
            continue;
        };
        if e.start_ms <= *ended {
            continue;
        }
        // A retry inside the grace window returns the successor the token
        // already returned: nothing new was made.
        let repeat = entries[..i].iter().any(|earlier| {
            is_refresh(earlier)
                && earlier.outcome == Outcome::Ok
                && earlier.token == e.token
                && earlier.successor == e.successor
        });
        if !repeat {
            violations.push(Violation {
                invariant: "nothing after the end",
                message: format!(
                    "session {} of {} refreshed (token {} -> {}) in a call begun {} ms after its end was acknowledged",
                    e.session,
                    e.user,
                    e.token,
                    e.successor,
                    e.start_ms - ended
                ),
                lines: vec![line(*end_line), line(i)],
            });
        }
    }
}

fn nothing_lost(
    entries: &[Entry],
    ends: &HashMap<String, (u64, usize)>,
    violations: &mut Vec<Violation>,
) {
    for (i, e) in entries.iter().enumerate() {
        if e.op != Op::Final || e.outcome == Outcome::Ok {
            continue;
        }
        if ends.contains_key(&e.session) || !enabled_at_the_end(entries, &e.user) {
            continue;
        }
        // Possibly ended: a revoke or a disable whose answer was lost, or
        // a refresh of the presented token whose answer was lost (it may
        // have consumed the token long ago).
        let earlier = &entries[..i];
        let uncertain = entries.iter().any(|x| {
            x.start_ms < e.end_ms
                && ((x.op == Op::Revoke && x.session == e.session && x.outcome != Outcome::Fail)
                    || (matches!(x.op, Op::Disable | Op::RevokeAll)
                        && x.user == e.user
                        && x.outcome == Outcome::Info)
                    || (x.op == Op::Refresh && x.token == e.token && x.outcome == Outcome::Info))
        });
        // Live by the last acknowledgement: the presented token is the one
        // the session's last acknowledged login or refresh returned.
        let last_ack = earlier.iter().enumerate().rev().find(|(_, x)| {
            x.session == e.session
                && x.outcome == Outcome::Ok
                && matches!(x.op, Op::Login | Op::Refresh)
        });
        let Some((ack_line, ack)) = last_ack else {
            continue;
        };
        let current = ack.successor == e.token;
        if uncertain || !current {
            continue;
        }
        violations.push(Violation {
            invariant: "nothing lost",
            message: format!(
                "session {} of {} was live by its last acknowledgement, but after the faults \
                 healed its refresh ended {:?} {} {}",
                e.session, e.user, e.outcome, e.code, e.reason
            ),
            lines: vec![line(ack_line), line(i)],
        });
    }
}

/// A session's newest acknowledged token refused as unknown while nothing
/// ended the session: an acknowledged rotation was lost. (A retry of a
/// token whose earlier attempt may have consumed it gets the same
/// successor inside the grace window, never REFRESH_TOKEN_INVALID.)
fn nothing_forgotten(
    entries: &[Entry],
    ends: &HashMap<String, (u64, usize)>,
    violations: &mut Vec<Violation>,
) {
    for (i, e) in entries.iter().enumerate() {
        // The final refreshes are judged by `nothing_lost`.
        if e.op != Op::Refresh || e.outcome != Outcome::Fail || e.reason != "REFRESH_TOKEN_INVALID"
        {
            continue;
        }
        if ends.get(&e.session).is_some_and(|(at, _)| *at < e.end_ms) {
            continue;
        }
        let earlier = &entries[..i];
        // The user may have been disabled (an unknown outcome counts), or
        // the session revoked without an answer, by a call begun before
        // this one ended (it may be recorded after it, ending later).
        let maybe_ended = entries.iter().any(|x| {
            x.start_ms < e.end_ms
                && x.outcome != Outcome::Fail
                && ((matches!(x.op, Op::Disable | Op::RevokeAll) && x.user == e.user)
                    || (x.op == Op::Revoke && x.session == e.session))
        });
        if maybe_ended {
            continue;
        }
        let Some((ack_line, ack)) = earlier.iter().enumerate().rev().find(|(_, x)| {
            x.session == e.session
                && x.outcome == Outcome::Ok
                && matches!(x.op, Op::Login | Op::Refresh)
        }) else {
            continue;
        };
        // Presented after the grace window of an unanswered attempt, the
        // token may have been consumed: reuse, not loss.
        let first_attempt = earlier
            .iter()
            .filter(|x| is_refresh(x) && x.token == e.token)
            .map(|x| x.start_ms)
            .min()
            .unwrap_or(e.start_ms);
        if ack.successor != e.token || e.start_ms.saturating_sub(first_attempt) > GRACE_MS {
            continue;
        }
        violations.push(Violation {
            invariant: "nothing lost",
            message: format!(
                "session {} of {}: its newest acknowledged token {} was refused as unknown \
                 ({} ms after it was issued) though nothing ended the session",
                e.session,
                e.user,
                e.token,
                e.end_ms.saturating_sub(ack.end_ms)
            ),
            lines: vec![line(ack_line), line(i)],
        });
    }
}

/// Whether fault `detail` cuts resource server `rs` (`rs-K`) off its
/// feed: its own connection, its tokend replica (`tokend-K`) killed or
/// cut from Redis, or a Redis primary (which may hold the feed's stream)
/// down, stopped or partitioned.
fn cuts_feed_of(detail: &str, rs: &str) -> bool {
    let replica = rs.replacen("rs-", "tokend-", 1);
    let names = |name: &str| detail.contains(&format!("{name} ")) || detail.ends_with(name);
    if detail.contains("faketime") {
        return false;
    }
    names(rs) || names(&replica) || (detail.contains("(master)") && !detail.contains("tokend-"))
}

/// When a resource server must refuse the tokens of a session whose end
/// was acknowledged at `ended`: [`ENFORCE_MS`] later, plus every cut of
/// its feed (`cuts`, as start and end) that began before that moment and
/// ended after the acknowledgement, counted from where it overlaps.
fn enforced_by(ended: u64, cuts: &[(u64, u64)]) -> u64 {
    let mut deadline = ended + ENFORCE_MS;
    let mut counted = vec![false; cuts.len()];
    loop {
        let mut grew = false;
        for (i, (from, to)) in cuts.iter().enumerate() {
            if !counted[i] && *from < deadline && *to > ended {
                counted[i] = true;
                deadline += to - (*from).max(ended);
                grew = true;
            }
        }
        if !grew {
            return deadline;
        }
    }
}

fn enforced(
    entries: &[Entry],
    ends: &HashMap<String, (u64, usize)>,
    violations: &mut Vec<Violation>,
) {
    let faults: Vec<&Entry> = entries.iter().filter(|e| e.op == Op::Fault).collect();
    for (i, e) in entries.iter().enumerate() {
        if !matches!(e.op, Op::Access | Op::Exchange) || e.outcome != Outcome::Ok {
            continue;
        }
        let Some((ended, end_line)) = ends.get(&e.session) else {
            continue;
        };
        if e.op == Op::Exchange {
            // tokend itself reads the session: refused from the moment
            // its end was acknowledged.
            if e.start_ms > *ended {
                violations.push(Violation {
                    invariant: "enforced",
                    message: format!(
                        "tokend exchanged an access token of session {} of {} in a call begun {} ms \
                         after the session's end was acknowledged",
                        e.session,
                        e.user,
                        e.start_ms - ended
                    ),
                    lines: vec![line(*end_line), line(i)],
                });
            }
            continue;
        }
        // A connection cut for d ms resumes up to d ms after the cut is
        // lifted: TCP's retransmissions (and the resource server's
        // reconnections) back off exponentially, so the last try before
        // the healing may be followed by the next only that much later.
        let cuts: Vec<(u64, u64)> = faults
            .iter()
            .filter(|f| cuts_feed_of(&f.detail, &e.detail))
            .map(|f| (f.start_ms, f.end_ms + (f.end_ms - f.start_ms)))
            .collect();
        let deadline = enforced_by(*ended, &cuts);
        if e.start_ms > deadline {
            violations.push(Violation {
                invariant: "enforced",
                message: format!(
                    "{} accepted an access token of session {} of {} in a call begun {} ms after \
                     the session's end was acknowledged (at most {} ms with its feed's cuts)",
                    e.detail,
                    e.session,
                    e.user,
                    e.start_ms - ended,
                    deadline - ended
                ),
                lines: vec![line(*end_line), line(i)],
            });
        }
    }
}

/// Whether `user` was certainly enabled from `from` to `to`: every
/// disable begun before `to` was followed by an acknowledged enable begun
/// after it ended and answered before `from`.
fn enabled_throughout(entries: &[Entry], user: &str, from: u64, to: u64) -> bool {
    entries
        .iter()
        .filter(|d| d.op == Op::Disable && d.user == user && d.start_ms < to)
        .all(|d| {
            entries.iter().any(|e| {
                e.op == Op::Enable
                    && e.user == user
                    && e.outcome == Outcome::Ok
                    && e.start_ms > d.end_ms
                    && e.end_ms < from
            })
        })
}

fn accounts_kept(entries: &[Entry], violations: &mut Vec<Violation>) {
    for (i, e) in entries.iter().enumerate() {
        let gone = match e.op {
            Op::Login => {
                e.outcome == Outcome::Fail
                    && e.reason == "INVALID_CREDENTIALS"
                    && enabled_throughout(entries, &e.user, e.start_ms, e.end_ms)
            }
            Op::Enable => e.detail.contains("no user called"),
            _ => false,
        };
        if gone {
            violations.push(Violation {
                invariant: "no account lost",
                message: format!(
                    "{:?} of {} found no such account ({} {}{})",
                    e.op, e.user, e.code, e.reason, e.detail
                ),
                lines: vec![line(i)],
            });
        }
    }
}

/// Whether `user` is certainly enabled at the end: its last disable or
/// enable was an acknowledged enable, begun after every disable ended.
fn enabled_at_the_end(entries: &[Entry], user: &str) -> bool {
    let changes: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.user == user && matches!(e.op, Op::Disable | Op::Enable))
        .collect();
    if changes.is_empty() {
        return true;
    }
    let last_disable_end = changes
        .iter()
        .filter(|e| e.op == Op::Disable)
        .map(|e| e.end_ms)
        .max();
    changes.iter().any(|e| {
        e.op == Op::Enable
            && e.outcome == Outcome::Ok
            && last_disable_end.is_none_or(|end| e.start_ms > end)
    })
}

fn documented_answers(entries: &[Entry], violations: &mut Vec<Violation>) {
    for (i, e) in entries.iter().enumerate() {
        if e.code.is_empty() {
            continue;
        }
        let transport = matches!(
            e.code.as_str(),
            "Unavailable" | "DeadlineExceeded" | "Cancelled"
        );
        if !DOCUMENTED_CODES.contains(&e.code.as_str()) {
            violations.push(Violation {
                invariant: "documented answers",
                message: format!("{:?} ended {} ({})", e.op, e.code, e.detail),
                lines: vec![line(i)],
            });
        } else if !transport && e.reason.is_empty() {
            violations.push(Violation {
                invariant: "documented answers",
                message: format!("{:?} ended {} without tokend's reason", e.op, e.code),
                lines: vec![line(i)],
            });
        }
    }
}

fn recovery(entries: &[Entry], violations: &mut Vec<Violation>) {
    let Some((heal_line, heal)) = entries.iter().enumerate().find(|(_, e)| e.op == Op::Heal) else {
        return;
    };
    for (i, e) in entries.iter().enumerate() {
        if e.op != Op::Ready {
            continue;
        }
        let took = e.end_ms.saturating_sub(heal.end_ms);
        if e.outcome != Outcome::Ok || took > RECOVERY_LIMIT_MS {
            violations.push(Violation {
                invariant: "recovery",
                message: format!(
                    "replica {} served {} ms after the healing ({:?}; at most {RECOVERY_LIMIT_MS})",
                    e.detail, took, e.outcome
                ),
                lines: vec![line(heal_line), line(i)],
            });
        }
    }
}

fn summary(entries: &[Entry]) -> String {
    let mut counts: BTreeMap<(Op, Outcome, String), usize> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| !matches!(e.op, Op::Fault | Op::Heal))
    {
        let why = if e.reason.is_empty() {
            e.code.clone()
        } else {
            e.reason.clone()
        };
        *counts.entry((e.op, e.outcome, why)).or_default() += 1;
    }
    let mut text = String::from("operations:\n");
    for ((op, outcome, why), n) in &counts {
        let _ = writeln!(text, "  {op:?} {outcome:?} {why}: {n}");
    }
    let faults: Vec<&Entry> = entries.iter().filter(|e| e.op == Op::Fault).collect();
    let _ = writeln!(text, "faults: {}", faults.len());
    let mut refreshed: Vec<u64> = entries
        .iter()
        .filter(|e| e.op == Op::Refresh && e.outcome == Outcome::Ok)
        .map(|e| e.end_ms)
        .collect();
    refreshed.sort_unstable();
    for fault in faults {
        let window_end = fault.end_ms.saturating_add(RECOVERY_LIMIT_MS);
        let mut last = fault.start_ms;
        let mut longest = 0;
        for at in refreshed
            .iter()
            .copied()
            .filter(|t| (fault.start_ms..=window_end).contains(t))
        {
            longest = longest.max(at.saturating_sub(last));
            last = at;
        }
        let _ = writeln!(
            text,
            "  {} at {} ms for {} ms: longest without a successful refresh {} ms",
            fault.detail,
            fault.start_ms,
            fault.end_ms.saturating_sub(fault.start_ms),
            longest
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(user: &str, session: &str, token: &str, start: u64) -> Entry {
        Entry {
            user: user.into(),
            session: session.into(),
            successor: token.into(),
            start_ms: start,
            end_ms: start + 1,
            ..Entry::new(Op::Login, 0, Outcome::Ok)
        }
    }

    fn refresh(session: &str, token: &str, successor: &str, start: u64, outcome: Outcome) -> Entry {
        Entry {
            user: "u".into(),
            session: session.into(),
            token: token.into(),
            successor: successor.into(),
            start_ms: start,
            end_ms: start + 1,
            ..Entry::new(Op::Refresh, 0, outcome)
        }
    }

    fn fail(mut entry: Entry, code: &str, reason: &str) -> Entry {
        entry.outcome = Outcome::Fail;
        entry.code = code.into();
        entry.reason = reason.into();
        entry.successor.clear();
        entry
    }

    fn invariants(entries: &[Entry]) -> Vec<&'static str> {
        check(entries)
            .violations
            .iter()
            .map(|v| v.invariant)
            .collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let mut final_refresh = refresh("s1", "t2", "t3", 50, Outcome::Ok);
        final_refresh.op = Op::Final;
        let history = [
            login("u", "s1", "t1", 0),
            refresh("s1", "t1", "t2", 10, Outcome::Ok),
            // A retry inside the grace window: the same successor.
            refresh("s1", "t1", "t2", 12, Outcome::Ok),
            final_refresh,
        ];
        assert_eq!(invariants(&history), Vec::<&str>::new());
    }

    #[test]
    fn two_successors_of_one_token_are_caught() {
        let history = [
            login("u", "s1", "t1", 0),
            refresh("s1", "t1", "t2", 10, Outcome::Ok),
            refresh("s1", "t1", "t9", 20, Outcome::Ok),
        ];
        let report = check(&history);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert_eq!(report.violations[0].invariant, "one successor");
        assert_eq!(report.violations[0].lines, [2, 3]);
    }

    #[test]
    fn a_refresh_after_an_acknowledged_revoke_is_caught() {
        let revoke = Entry {
            session: "s1".into(),
            token: "t2".into(),
            start_ms: 20,
            end_ms: 21,
            ..Entry::new(Op::Revoke, 1, Outcome::Ok)
        };
        let history = [
            login("u", "s1", "t1", 0),
            refresh("s1", "t1", "t2", 10, Outcome::Ok),
            revoke,
            refresh("s1", "t2", "t3", 30, Outcome::Ok),
        ];
        assert_eq!(invariants(&history), ["nothing after the end"]);
    }

    #[test]
    fn a_refresh_after_a_disable_or_a_reuse_is_caught() {
        let disable = Entry {
            user: "u".into(),
            start_ms: 20,
            end_ms: 25,
            ..Entry::new(Op::Disable, 9, Outcome::Ok)
        };
        let history = [
            login("u", "s1", "t1", 0),
            disable,
            refresh("s1", "t1", "t2", 30, Outcome::Ok),
        ];
        assert_eq!(invariants(&history), ["nothing after the end"]);

        let history = [
            login("u", "s1", "t1", 0),
            refresh("s1", "t1", "t2", 10, Outcome::Ok),
            fail(
                refresh("s1", "t1", "", 40, Outcome::Ok),
                "Unauthenticated",
                "REFRESH_TOKEN_REUSED",
            ),
            refresh("s1", "t2", "t3", 50, Outcome::Ok),
        ];
        assert_eq!(invariants(&history), ["nothing after the end"]);
    }

    fn access(session: &str, rs: &str, start: u64) -> Entry {
        Entry {
            user: "u".into(),
            session: session.into(),
            start_ms: start,
            end_ms: start + 1,
            detail: rs.into(),
            ..Entry::new(Op::Access, 0, Outcome::Ok)
        }
    }

    fn fault(detail: &str, start: u64, end: u64) -> Entry {
        Entry {
            detail: detail.into(),
            start_ms: start,
            end_ms: end,
            ..Entry::new(Op::Fault, NEMESIS_LINE, Outcome::Ok)
        }
    }

    const NEMESIS_LINE: usize = usize::MAX;

    #[test]
    fn a_resource_server_accepting_an_ended_session_late_is_caught() {
        let revoke = Entry {
            user: "u".into(),
            session: "s1".into(),
            start_ms: 10,
            end_ms: 20,
            ..Entry::new(Op::Revoke, 0, Outcome::Ok)
        };
        // Accepted 900 ms after the acknowledgement: in time.
        let history = [
            login("u", "s1", "t1", 0),
            access("s1", "rs-0", 5),
            revoke.clone(),
            access("s1", "rs-0", 920),
        ];
        assert!(invariants(&history).is_empty());
        // 1.5 s after: too late.
        let history = [
            login("u", "s1", "t1", 0),
            revoke.clone(),
            access("s1", "rs-1", 1_520),
        ];
        assert_eq!(invariants(&history), ["enforced"]);
        // Its feed cut for 2 s meanwhile: allowed twice that much longer
        // (the cut, and TCP's backed-off retransmission after it), not
        // more; a cut of the other server's feed does not count.
        let history = [
            login("u", "s1", "t1", 0),
            revoke.clone(),
            fault("cut the feed of rs-1 from tokend-1", 100, 2_100),
            access("s1", "rs-1", 5_000),
        ];
        assert!(invariants(&history).is_empty());
        let history = [
            login("u", "s1", "t1", 0),
            revoke.clone(),
            fault("cut the feed of rs-1 from tokend-1", 100, 2_100),
            access("s1", "rs-1", 5_200),
        ];
        assert_eq!(invariants(&history), ["enforced"]);
        let history = [
            login("u", "s1", "t1", 0),
            revoke.clone(),
            fault("cut the feed of rs-0 from tokend-0", 100, 2_100),
            access("s1", "rs-1", 2_900),
        ];
        assert_eq!(invariants(&history), ["enforced"]);
        let history = [
            login("u", "s1", "t1", 0),
            revoke.clone(),
            fault("SIGKILL tokend-1", 500, 2_500),
            access("s1", "rs-1", 5_600),
        ];
        assert_eq!(invariants(&history), ["enforced"]);
        // A log-out everywhere ends every session its user had.
        let all = Entry {
            user: "u".into(),
            start_ms: 10,
            end_ms: 20,
            ..Entry::new(Op::RevokeAll, 1, Outcome::Ok)
        };
        let history = [login("u", "s1", "t1", 0), all, access("s1", "rs-0", 1_100)];
        assert_eq!(invariants(&history), ["enforced"]);
        // tokend's own Exchange: at once.
        let mut exchanged = access("s1", "", 25);
        exchanged.op = Op::Exchange;
        let history = [login("u", "s1", "t1", 0), revoke.clone(), exchanged.clone()];
        assert_eq!(invariants(&history), ["enforced"]);
        exchanged.start_ms = 15;
        let history = [login("u", "s1", "t1", 0), revoke, exchanged];
        assert!(invariants(&history).is_empty());
    }

    #[test]
    fn an_account_refused_as_unknown_while_enabled_is_lost() {
        let refused = |start: u64| {
            fail(
                Entry {
                    user: "u".into(),
                    start_ms: start,
                    end_ms: start + 5,
                    ..Entry::new(Op::Login, 0, Outcome::Ok)
                },
                "Unauthenticated",
                "INVALID_CREDENTIALS",
            )
        };
        let change = |op: Op, start: u64, end: u64| Entry {
            user: "u".into(),
            start_ms: start,
            end_ms: end,
            ..Entry::new(op, 9, Outcome::Ok)
        };
        // While disabled (or until the enable was answered): refused, fine.
        let history = [
            change(Op::Disable, 10, 20),
            refused(30),
            change(Op::Enable, 40, 50),
            refused(45),
        ];
        assert!(invariants(&history).is_empty());
        // Never disabled, or enabled again before it: lost.
        assert_eq!(invariants(&[refused(30)]), ["no account lost"]);
        let history = [
            change(Op::Disable, 10, 20),
            change(Op::Enable, 40, 50),
            refused(60),
        ];
        assert_eq!(invariants(&history), ["no account lost"]);
        let mut gone = change(Op::Enable, 40, 50);
        gone.outcome = Outcome::Info;
        gone.detail = "error: no user called \"u\"".into();
        assert_eq!(invariants(&[gone]), ["no account lost"]);
    }

    #[test]
    fn cuts_count_from_where_they_overlap_and_chain() {
        assert_eq!(enforced_by(100, &[]), 1_100);
        // Began before the end: only what follows it counts.
        assert_eq!(enforced_by(100, &[(0, 600)]), 1_600);
        // One cut starting before the extended deadline pulls in the next.
        assert_eq!(enforced_by(100, &[(200, 1_000), (1_500, 2_000)]), 2_400);
        // Over before the end: nothing.
        assert_eq!(enforced_by(100, &[(0, 50)]), 1_100);
        assert!(cuts_feed_of("SIGKILL redis 2 (master)", "rs-0"));
        assert!(!cuts_feed_of("SIGKILL redis 3 (slave)", "rs-0"));
        assert!(cuts_feed_of(
            "partition tokend-0 from redis 1 (master)",
            "rs-0"
        ));
        assert!(!cuts_feed_of(
            "partition tokend-0 from redis 1 (master)",
            "rs-1"
        ));
        assert!(!cuts_feed_of("clock of tokend-1 +2 s (faketime)", "rs-1"));
    }

    #[test]
    fn a_live_session_that_cannot_refresh_after_the_healing_is_lost() {
        let mut lost = fail(
            refresh("s1", "t2", "", 90, Outcome::Ok),
            "Unauthenticated",
            "REFRESH_TOKEN_INVALID",
        );
        lost.op = Op::Final;
        let history = [
            login("u", "s1", "t1", 0),
            refresh("s1", "t1", "t2", 10, Outcome::Ok),
            lost.clone(),
        ];
        let report = check(&history);
        assert_eq!(invariants(&history), ["nothing lost"]);
        assert_eq!(report.violations[0].lines, [2, 3]);

        // Not lost: a refresh of that token whose answer never came may
        // have consumed it.
        let history = [
            login("u", "s1", "t1", 0),
            refresh("s1", "t1", "t2", 10, Outcome::Ok),
            refresh("s1", "t2", "", 20, Outcome::Info),
            lost,
        ];
        assert_eq!(invariants(&history), Vec::<&str>::new());
    }

    #[test]
    fn an_acknowledged_rotation_forgotten_mid_run_is_caught() {
        let history = [
            login("u", "s1", "t1", 0),
            refresh("s1", "t1", "t2", 10, Outcome::Ok),
            refresh("s1", "t2", "", 20, Outcome::Info),
            fail(
                refresh("s1", "t2", "", 30, Outcome::Ok),
                "Unauthenticated",
                "REFRESH_TOKEN_INVALID",
            ),
        ];
        let report = check(&history);
        assert_eq!(invariants(&history), ["nothing lost"]);
        assert_eq!(report.violations[0].lines, [2, 4]);
        // Not after a disable of the user whose answer never came.
        let disable = Entry {
            user: "u".into(),
            start_ms: 15,
            end_ms: 16,
            ..Entry::new(Op::Disable, 9, Outcome::Info)
        };
        let mut ended = history.to_vec();
        ended.insert(2, disable.clone());
        assert_eq!(invariants(&ended), Vec::<&str>::new());
        // Nor after one that began before the refusal and ended after it
        // (so it is recorded later).
        let mut overlapping = history.to_vec();
        overlapping.push(Entry {
            start_ms: 25,
            end_ms: 40,
            outcome: Outcome::Ok,
            ..disable
        });
        assert_eq!(invariants(&overlapping), Vec::<&str>::new());
    }

    #[test]
    fn internal_and_unknown_answers_and_missing_reasons_are_caught() {
        let history = [
            login("u", "s1", "t1", 0),
            fail(refresh("s1", "t1", "", 10, Outcome::Ok), "Internal", ""),
            fail(refresh("s1", "t1", "", 20, Outcome::Ok), "Unknown", ""),
            fail(
                refresh("s1", "t1", "", 30, Outcome::Ok),
                "Unauthenticated",
                "",
            ),
            // A transport failure needs no reason.
            Entry {
                code: "Unavailable".into(),
                ..refresh("s1", "t1", "", 40, Outcome::Info)
            },
        ];
        assert_eq!(
            invariants(&history),
            [
                "documented answers",
                "documented answers",
                "documented answers"
            ]
        );
    }

    #[test]
    fn a_replica_that_does_not_serve_soon_after_the_healing_is_caught() {
        let heal = Entry {
            start_ms: 1_000,
            end_ms: 1_000,
            ..Entry::new(Op::Heal, usize::MAX, Outcome::Ok)
        };
        let ready = |at: u64, outcome| Entry {
            detail: "tokend-1".into(),
            start_ms: 1_000,
            end_ms: at,
            ..Entry::new(Op::Ready, usize::MAX, outcome)
        };
        assert_eq!(
            invariants(&[heal.clone(), ready(3_000, Outcome::Ok)]),
            Vec::<&str>::new()
        );
        assert_eq!(
            invariants(&[heal.clone(), ready(17_000, Outcome::Ok)]),
            ["recovery"]
        );
        assert_eq!(
            invariants(&[heal, ready(2_000, Outcome::Fail)]),
            ["recovery"]
        );
    }

    #[test]
    fn the_summary_counts_operations_and_faults() {
        let fault = Entry {
            detail: "SIGKILL primary 0".into(),
            start_ms: 5,
            end_ms: 15,
            ..Entry::new(Op::Fault, usize::MAX, Outcome::Ok)
        };
        let history = [
            login("u", "s1", "t1", 0),
            fault,
            refresh("s1", "t1", "t2", 20, Outcome::Ok),
        ];
        let summary = check(&history).summary;
        assert!(summary.contains("Login Ok : 1"), "{summary}");
        assert!(summary.contains("faults: 1"), "{summary}");
        assert!(summary.contains("SIGKILL primary 0"), "{summary}");
    }
}
