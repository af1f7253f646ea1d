//! Telemetry, set up in one place: [`record`] hands each stated fact to the
//! metrics, the audit log and the service log; and logging: human-readable lines by default, JSON with
//! `--log-format json`, to stderr. The level comes from `RUST_LOG` (default
//! `info`). No secret is ever logged: only `sub`, `sid`, `jti`.
//!
//! With the `otlp` cargo feature and `--otlp-endpoint`, the spans of calls
//! (see the interceptor's `TraceLayer`) are also exported to an
//! OpenTelemetry collector, as children of the caller's `traceparent`.

#[cfg(feature = "otlp")]
pub mod otlp;
mod record;

pub use record::record;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per event.
    Json,
}

/// Telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `--otlp-endpoint` in a build without the `otlp` feature.
    #[error(
        "--otlp-endpoint needs a tokend built with the otlp feature (cargo build --features otlp)"
    )]
    OtlpNotBuilt,
    /// The OTLP exporter could not be set up.
    #[error("OTLP exporter: {0}")]
    Otlp(String),
}

/// What keeps telemetry running; flushes exported spans when dropped.
#[derive(Debug, Default)]
#[must_use = "exported spans are flushed when this is dropped"]
pub struct Telemetry {
    /// Held for its `Drop`, which flushes.
    #[cfg(feature = "otlp")]
    _otlp: Option<otlp::Exporter>,
}

/// Installs the global subscriber. Calling it twice is harmless.
pub fn init(format: LogFormat) {
    let _ = install(format, None::<Box<dyn Layer<Registry> + Send + Sync>>);
}

/// Installs the global subscriber, exporting spans to `otlp_endpoint` when
/// given (needs the `otlp` feature). Must run within a Tokio runtime.
pub fn init_with(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, TelemetryError> {
    let Some(endpoint) = otlp_endpoint else {
        init(format);
        return Ok(Telemetry::default());
    };
    #[cfg(feature = "otlp")]
    {
        let (exporter, layer) = otlp::Exporter::start(endpoint)?;
        install(format, Some(layer));
        Ok(Telemetry {
            _otlp: Some(exporter),
        })
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = endpoint;
        init(format);
        Err(TelemetryError::OtlpNotBuilt)
    }
}

/// The subscriber: the filter, the log lines, and `extra` (the OTLP layer).
fn install(format: LogFormat, extra: Option<Box<dyn Layer<Registry> + Send + Sync>>) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: not in files, pipes or journals.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Human => lines.boxed(),
        LogFormat::Json => lines.json().flatten_event(true).boxed(),
    };
    // The filter is a layer of its own: it decides for every layer, so
    // spans below its level are never built, exported or not.
    tracing_subscriber::registry()
        .with(extra)
        .with(filter)
        .with(lines)
        .try_init()
        .is_ok()
}
