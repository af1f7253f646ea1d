//! The listener's certificate, reloaded while serving.

use std::time::Duration;

use tokend_interceptor::server::ServerTls;
use tracing::{info, warn};

/// How often the TLS files are checked for changes.
const TLS_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Reloads the certificate and key when their files change, and on SIGHUP;
/// new handshakes use them, established connections keep theirs.
pub(super) fn reload_tls_on_change(tls: &ServerTls) {
    tls.watch_files(TLS_WATCH_INTERVAL);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return warn!(
                "cannot listen for SIGHUP; TLS files are still reloaded when they change"
            );
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => info!("SIGHUP: TLS certificate files reloaded"),
                    Err(err) => {
                        warn!(error = %err, "SIGHUP: TLS files cannot be used; keeping the previous ones");
                    }
                }
            }
        });
    }
}
