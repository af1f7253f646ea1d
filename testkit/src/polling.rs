//! Waiting for an outcome by polling, with a deadline, instead of sleeping.

use super::*;

/// How long a test waits for a revocation or cut-off to reach a watching
/// resource server before it fails. A guard against a revocation that
/// never arrives, not a latency claim: tests share two cores with five
/// others, so a promise of "within a second" is measured by `make bench`
/// (`revocation_latency_max_ms`), and tests print what they measured.
pub const REVOCATION_DEADLINE: Duration = Duration::from_secs(10);

/// Calls Echo with `authorization` until it is refused with `reason`;
/// returns how long that took, or `None` after `limit`.
pub async fn time_until_refused(
    echo: &mut EchoClient,
    authorization: &str,
    reason: Reason,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Err(status) = echo.echo(echo_request("x", Some(authorization))).await
            && Reason::of(&status) == Some(reason)
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// Polls `check` every 20 ms until it holds; fails the test naming `what`
/// after `timeout`. For outcomes that follow an answer (a background sweep,
/// an enforcement after a login), never a fixed sleep.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
