//! Running the gate: keys (synced or fixed), the revocation watch, the
//! policy kept from its file, health, metrics and the listener, from the
//! [`Args`]; [`run`] serves until `shutdown` completes.

use std::future::Future;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use tokend_interceptor::certs::{CertificateNaming, TlsError};
use tokend_interceptor::client::{ClientGrant, ConnectError, TokenSource, TokendEndpoint};
use tokend_interceptor::keys::{KeyError, KeySet, KeySync, KeySyncConfig};
use tokend_interceptor::revocation::{
    DEFAULT_REVOCATION_CAPACITY, RevocationList, RevocationWatch, StalePolicy,
};
use tokend_interceptor::server::{Listener, Reloadable, ServerTls, TlsFiles, serve_metrics};
use tonic_health::ServingStatus;

use crate::config::Args;
use crate::policy::{Policy, PolicyError};
use crate::service::{Enforcement, Enforcer, Gate, VerifierSettings};

/// How often the policy file is looked at for changes.
const POLICY_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The printed line that says the gate holds keys (and the feed's history
/// when watching) and reports SERVING.
pub const READY_LINE: &str = "tokend-gate ready";

/// Why the gate could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A flag's value cannot be used.
    #[error("{0}")]
    Config(String),
    /// A --public-key is not a PASERK k4.public key.
    #[error("--public-key: {0}")]
    Keys(#[from] KeyError),
    /// The policy file cannot be used.
    #[error("--policy: {0}")]
    Policy(#[from] PolicyError),
    /// A certificate or key file cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// tokend cannot be reached as configured.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// A socket could not be bound, or the runtime not started.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] tonic::transport::Error),
}

/// Starts a runtime and serves until SIGINT or SIGTERM.
pub fn main(args: Args) -> Result<(), StartError> {
    telemetry();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args, shutdown_signal()))
}

/// Log lines to stderr, filtered by RUST_LOG (default info); colours only
/// on a terminal.
fn telemetry() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Serves Envoy's Check calls as `args` say until `shutdown` completes.
pub async fn run(args: Args, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
    args.validate().map_err(StartError::Config)?;
    if let Some(addr) = args.metrics_listen {
        start_metrics(&args, addr).await?;
    }
    let tokend = tokend_endpoint(&args)?;
    let channel = tokend.as_ref().map(TokendEndpoint::channel).transpose()?;
    // Background tasks run as long as their handles live: to the end of run.
    let mut background: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let keys = match &channel {
        Some(channel) => {
            let config = KeySyncConfig::default().refresh_interval(args.key_refresh);
            let sync = KeySync::spawn(channel.clone(), config);
            let keys = sync.keys();
            background.push(Box::new(sync));
            keys
        }
        None => KeySet::from_paserk(args.public_key.iter().map(String::as_str))?,
    };
    let mut revocations = None;
    if args.watch_revocations
        && let Some(channel) = &channel
    {
        let stale = match args.fail_closed_after {
            Some(limit) => StalePolicy::FailClosedAfter(limit),
            None => StalePolicy::ServeLastKnown,
        };
        let list = RevocationList::new(DEFAULT_REVOCATION_CAPACITY, stale);
        let mut watch = RevocationWatch::new(channel.clone());
        if let Some(client_id) = &args.client_id {
            let secret = std::env::var("TOKEND_CLIENT_SECRET").map_err(|_| {
                StartError::Config(
                    "--client-id needs the client's secret in TOKEND_CLIENT_SECRET".into(),
                )
            })?;
            // The feed is tokend's own: a token for its audience.
            let grant = ClientGrant {
                client_id: client_id.clone(),
                client_secret: secret,
                audience: args.issuer.clone(),
                scopes: vec!["tokend.revocations".into()],
            };
            watch = watch.token_source(TokenSource::for_client(channel.clone(), grant));
        }
        background.push(Box::new(watch.spawn(list.clone())));
        revocations = Some(list);
    }
    let settings = VerifierSettings {
        keys,
        issuer: args.issuer.clone(),
        audience: args.audience.clone(),
        leeway: args.leeway,
        naming: naming(&args),
        revocations,
    };
    let enforcement = enforcement(&args, settings)?;
    let gate = Gate::new(enforcement.clone());
    let readiness = enforcement.current().verifier.clone();

    // NOT_SERVING until the verifier holds keys (and the feed's history):
    // Envoy's health checks keep traffic away from a gate that would
    // refuse everything for want of them.
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health.set_not_serving::<AuthorizationServer<Gate>>().await;

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let mut files = TlsFiles::new(cert, key);
            if let Some(ca) = &args.tls_client_ca {
                files = files.client_ca(ca);
            }
            Some(ServerTls::load(
                files.require_client_cert(args.tls_require_client_cert),
            )?)
        }
        _ => None,
    };
    let limits = args.limits();
    let _ = tokend_interceptor::server::raise_open_files_limit();
    let listener = Listener::new(tokio::net::TcpListener::bind(args.listen).await?, limits);
    println!("tokend-gate listening on {}", listener.local_addr()?);
    // Ready is said after listening: whoever waits for the first line
    // learns the address before it learns the gate is ready.
    tokio::spawn(async move {
        while !readiness.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        health.set_service_status("", ServingStatus::Serving).await;
        health.set_serving::<AuthorizationServer<Gate>>().await;
        println!("{READY_LINE}");
    });
    let router = limits
        .server()
        .add_service(health_service)
        .add_service(AuthorizationServer::new(gate));
    match tls {
        Some(tls) => {
            let _watch = tls.watch_files(Duration::from_secs(2));
            tls_reload_on_hangup(tls.clone());
            router
                .serve_with_incoming_shutdown(listener.tls(tls), shutdown)
                .await?;
        }
        None => {
            router
                .serve_with_incoming_shutdown(listener.plaintext(), shutdown)
                .await?;
        }
    }
    drop(background);
    Ok(())
}

/// The policy in force: from --policy, kept and reloaded; else every path
/// needs a valid token.
fn enforcement(args: &Args, settings: VerifierSettings) -> Result<Enforcement, StartError> {
    let Some(path) = &args.policy else {
        let policy = Policy::parse("default = \"allow-authenticated\"", "(no --policy)")?;
        return Ok(Reloadable::fixed(Enforcer::new(policy, &settings)));
    };
    let enforcement = Reloadable::load(path, move |path| {
        Policy::load(path).map(|policy| Enforcer::new(policy, &settings))
    })?;
    let current = enforcement.current();
    tracing::info!(
        rules = current.policy.len(),
        audience = current.policy.audience().unwrap_or(&args.audience),
        "policy loaded"
    );
    enforcement.watch(POLICY_CHECK_INTERVAL, "policy", |enforcer| {
        tracing::info!(rules = enforcer.policy.len(), "policy in force");
    });
    Ok(enforcement)
}

/// Which certificates name which service clients (for delegated tokens).
fn naming(args: &Args) -> CertificateNaming {
    let naming = args
        .cert_trust_domains
        .iter()
        .fold(CertificateNaming::new(), |n, td| n.trust_domain(td.clone()));
    args.actor_cert_sans
        .iter()
        .fold(naming, |n, (id, san)| n.identity(id.clone(), san.clone()))
}

/// How to reach tokend: its URLs, and the TLS options for https ones.
fn tokend_endpoint(args: &Args) -> Result<Option<TokendEndpoint>, StartError> {
    let Some((first, rest)) = args.tokend.split_first() else {
        return Ok(None);
    };
    let mut endpoint = rest
        .iter()
        .fold(TokendEndpoint::new(first), |e, url| e.also(url));
    if let Some(ca) = &args.tokend_ca {
        endpoint = endpoint.ca_file(ca)?;
    }
    if let (Some(cert), Some(key)) = (&args.tokend_client_cert, &args.tokend_client_key) {
        endpoint = endpoint.identity_files(cert, key)?;
    }
    Ok(Some(endpoint))
}

/// The Prometheus exporter for the gate's and the interceptor's metrics.
async fn start_metrics(args: &Args, addr: std::net::SocketAddr) -> Result<(), StartError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| StartError::Metrics(e.to_string()))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let listener = Listener::new(tokio::net::TcpListener::bind(addr).await?, args.limits());
    let bound = listener.local_addr()?;
    serve_metrics(listener, move || handle.render());
    println!("metrics on http://{bound}/metrics");
    Ok(())
}

/// Reloads the TLS files on SIGHUP.
fn tls_reload_on_hangup(tls: ServerTls) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            if let Err(err) = tls.reload() {
                tracing::warn!(error = %err, "SIGHUP: keeping the previous TLS files");
            }
        }
    });
}
