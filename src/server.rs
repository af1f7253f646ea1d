//! Runs tokend: opens the store, loads keys, wires the gRPC services (token
//! service, health, reflection v1 and v1alpha), serves until SIGTERM or
//! SIGINT, then lets in-flight calls finish.

use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokend_interceptor::Verifier;
use tokend_interceptor::certs::TlsError;
use tokend_interceptor::keys::KeySet;
use tokend_interceptor::server::ServerTls;
use tokend_interceptor::server::{AuthLayer, Policy};
use tokend_interceptor::server::{Listener, raise_open_files_limit};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::accounts::AccountStates;
use crate::admin::DemoAccounts;
use crate::api::source::TrustedProxies;
use crate::api::{EXCHANGE, OWN_TOKEN_METHODS, PUBLIC_METHODS, TokenApi, WATCH_REVOCATIONS};
use crate::authority::{Authority, Parts};
use crate::config::{Config, ConfigError, StoreConfig};
use crate::credentials::{HashError, PasswordHasher};
use crate::exchange::{ExchangePolicy, PolicySource};
use crate::proto::tokend::v1::token_service_server::TokenServiceServer;
use crate::revocations::{RevocationFeed, WATCH_SCOPE};
use crate::store::{MemoryStore, RedisStore, Store, StoreError};
use crate::throttle::LoginThrottle;
use crate::tokens::keys::{KeyError, KeyFilePolicy};
use crate::tokens::{AccessTokenIssuer, PublishedKey, SigningKey};

/// How often the health service re-checks the store.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Why tokend could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store could not be reached at start.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The hashing pool could not start.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The demo accounts could not be created.
    #[error(transparent)]
    Account(#[from] crate::accounts::AccountError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("server error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be set up.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A published key could not be used for verification.
    #[error("verification key: {0}")]
    VerificationKey(#[from] tokend_interceptor::keys::KeyError),
    /// The TLS files could not be used.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The metrics listener could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The exchange policy file cannot be used.
    #[error("exchange policy: {0}")]
    ExchangePolicy(#[from] crate::exchange::PolicyError),
}

/// Binds `config.listen`, says `tokend listening on ADDR` on stdout once it
/// is ready (what scripts and tests wait for), and serves until SIGTERM or
/// SIGINT.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let shutdown = shutdown_signal();
    config.validate()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let server = start(config, listener).await?;
    if let Some(demo) = server.demo_accounts() {
        println!("{demo}");
    }
    if let Some(addr) = server.metrics_addr() {
        println!("metrics on http://{addr}/metrics");
    }
    println!("tokend listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();
    server.run(shutdown).await
}

/// Serves on `listener` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    start(config, listener).await?.run(shutdown).await
}

/// A tokend that is set up (store open, keys loaded, services wired) and
/// accepts connections on its listener once [`Server::run`] drives it.
pub struct Server {
    addr: SocketAddr,
    serving: Serving,
    stop: oneshot::Sender<()>,
    demo: Option<DemoAccounts>,
    metrics: Option<SocketAddr>,
}

/// The gRPC server running until its shutdown signal, then draining.
type Serving = Pin<Box<dyn Future<Output = Result<(), ServeError>> + Send>>;

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The address it listens on (the port picked, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where Prometheus metrics are served, with `--metrics-listen`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The demo accounts' credentials, with `--dev`.
    pub fn demo_accounts(&self) -> Option<DemoAccounts> {
        self.demo
    }

    /// Serves until `shutdown` completes, then lets in-flight calls finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Server {
            mut serving, stop, ..
        } = self;
        let result = tokio::select! {
            result = &mut serving => result,
            () = shutdown => {
                let _ = stop.send(());
                serving.await
            }
        };
        info!("tokend stopped");
        result
    }
}

/// Sets tokend up on `listener`: opens the store, loads the keys, starts
/// the revocation feed and wires the gRPC services. Nothing is served until
/// [`Server::run`].
pub async fn start(config: Config, listener: TcpListener) -> Result<Server, ServeError> {
    config.validate()?;
    let store = open_store(&config).await?;
    let key_policy = if config.allow_insecure_key_file {
        KeyFilePolicy::AllowInsecure
    } else {
        KeyFilePolicy::Strict
    };
    let key = match &config.signing_key_file {
        Some(path) => SigningKey::load(path, key_policy)?,
        None => {
            warn!(
                "no --signing-key-file: signing with an ephemeral key; every restart invalidates \
                 all access tokens. Create one with `tokend keys generate --out FILE`"
            );
            SigningKey::generate()?
        }
    };
    let verification_keys = config
        .verification_key_files
        .iter()
        .map(|path| PublishedKey::load(path, key_policy))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(addr) = config.metrics_listen {
        let bound = TcpListener::bind(addr)
            .await
            .map_err(|err| crate::metrics::MetricsError {
                addr,
                reason: format!("cannot listen: {err}"),
            })?;
        crate::metrics::serve(Listener::new(bound, config.limits))?;
        info!(%addr, "Prometheus metrics served");
    }

    let hasher = PasswordHasher::new(config.password_hash_threads, config.password_hash_max_wait)?;
    let demo = if config.dev {
        Some(crate::admin::seed_demo(&store, &hasher).await?)
    } else {
        None
    };
    let feed = RevocationFeed::new(store.clone(), config.lifetimes.access, config.watch);
    let accounts = AccountStates::new(store.clone(), config.account_cache);
    feed.start(accounts.clone()).await?;
    let issuer = AccessTokenIssuer::new(key, config.issuer.clone(), config.lifetimes.access);
    let exchange_policy = match &config.exchange_policy {
        Some(path) => {
            let source = PolicySource::load(path)?;
            info!(rows = source.current().len(), "exchange policy loaded");
            source.watch();
            source
        }
        None => PolicySource::fixed(ExchangePolicy::default()),
    };
    crate::telemetry::record(&crate::facts::Fact::ExchangePolicyRows(
        exchange_policy.current().len(),
    ));
    // Subject tokens of Exchange are meant for the callers, not tokend:
    // any audience, checked by the exchange itself.
    let subject_keys = KeySet::from_paserk(
        std::iter::once(issuer.active_key())
            .chain(verification_keys.iter())
            .map(|k| k.public_key.as_str()),
    )?;
    let subject_verifier = Verifier::builder(subject_keys, &config.issuer, &config.issuer)
        .any_audience()
        .clock(config.clock.clone())
        .build();
    let authority = Arc::new(Authority::new(Parts {
        throttle: LoginThrottle::new(store.clone(), config.throttle),
        store,
        feed,
        accounts,
        issuer,
        hasher,
        default_audience: config.default_audience.clone(),
        lifetimes: config.lifetimes,
        verification_keys,
        max_sessions_per_user: config.max_sessions_per_user,
        revoke_all_interval: config.revoke_all_interval,
        subject_verifier,
        exchange_policy,
        cert_naming: config.cert_naming(),
    }));

    if let Some(active) = authority.public_keys().first() {
        crate::telemetry::record(&crate::facts::Fact::Keys(crate::facts::Keys {
            signing_key_id: &active.key_id,
            published: authority.public_keys().len(),
        }));
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(watch_store_health(Arc::clone(&authority), health_reporter));

    // grpcurl 1.8 and several GUI clients speak only v1alpha; newer ones v1.
    // The google.rpc descriptors let them decode our ErrorInfo details.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) = if config.reflection {
        (
            Some(reflection().build_v1()?),
            Some(reflection().build_v1alpha()?),
        )
    } else {
        (None, None)
    };

    // Session management needs the caller's access token: tokend checks its
    // own tokens with the interceptor it ships.
    let keys = KeySet::from_paserk(
        authority
            .public_keys()
            .iter()
            .map(|k| k.public_key.as_str()),
    )?;
    let verifier = Verifier::builder(keys, &config.issuer, &config.default_audience)
        .also_accept_audience(&config.issuer)
        .clock(config.clock.clone())
        .build();
    let policy = PUBLIC_METHODS
        .iter()
        .fold(Policy::new().public_health_and_reflection(), |p, m| {
            p.public(*m)
        })
        // The feed names revoked sessions and cut-off accounts: only for
        // services with a verified client certificate or a token granted
        // the feed's scope.
        .client_cert_or_scopes(WATCH_REVOCATIONS, [WATCH_SCOPE])
        // A service may exchange as itself with its own token, or with a
        // verified certificate naming its client id.
        .client_cert_or_scopes(EXCHANGE, Vec::<String>::new());
    // Managing sessions, watching the feed and exchanging take the
    // caller's own token, never one obtained on someone's behalf.
    let policy = OWN_TOKEN_METHODS
        .iter()
        .fold(policy, |p, m| p.forbid_delegated(*m));

    // Revocation streams end when shutdown starts, so draining does not wait
    // for watchers that never hang up.
    let (stopping_tx, stopping) = watch::channel(false);
    let (stop, stop_requested) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stop_requested.await;
        let _ = stopping_tx.send(true);
    };

    let tls = match &config.tls {
        Some(files) => Some(ServerTls::load(files.clone())?),
        None => None,
    };
    match raise_open_files_limit() {
        Ok(limit) => info!(open_files = limit, "open-files limit"),
        Err(err) => warn!(error = %err, "cannot read or raise the open-files limit"),
    }
    let listener = Listener::new(listener, config.limits);
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    if tls.is_none() && !addr.ip().is_loopback() {
        warn!(
            %addr,
            "serving without TLS on a non-loopback address: passwords, client secrets and \
             tokens cross the network in clear. Use --tls-cert and --tls-key"
        );
    }
    let api = TokenApi::new(
        authority,
        stopping,
        TrustedProxies::new(config.trusted_proxies.clone()),
    );
    let router = config
        .limits
        .server()
        .layer(trace_layer())
        .layer(crate::api::RpcMetricsLayer)
        .layer(crate::api::oversize::OversizeLayer)
        .layer(AuthLayer::new(verifier, policy))
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(api.into_service());
    info!(
        %addr,
        store = store_name(&config.store),
        replica_acks = replica_acks(&config.store),
        tls = tls.is_some(),
        mtls = tls.as_ref().is_some_and(ServerTls::verifies_clients),
        max_connections = listener.max_connections(),
        "tokend listening"
    );
    let serving: Serving = match tls {
        Some(tls) => {
            reload_tls_on_change(&tls);
            let incoming = listener.tls(tls);
            Box::pin(async move {
                Ok(router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?)
            })
        }
        None => {
            let incoming = listener.plaintext();
            Box::pin(async move {
                Ok(router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?)
            })
        }
    };
    Ok(Server {
        addr,
        serving,
        stop,
        demo,
        metrics: config.metrics_listen,
    })
}

/// A span per call (method, trace id); with the `otlp` feature, a child of
/// the caller's `traceparent` in the exported trace.
fn trace_layer() -> tokend_interceptor::server::TraceLayer {
    let layer = tokend_interceptor::server::TraceLayer::new();
    #[cfg(feature = "otlp")]
    let layer = layer.on_new_span(crate::telemetry::otlp::adopt_parent);
    layer
}

/// How often the TLS files are checked for changes.
const TLS_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Reloads the certificate and key when their files change, and on SIGHUP;
/// new handshakes use them, established connections keep theirs.
fn reload_tls_on_change(tls: &ServerTls) {
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

async fn open_store(config: &Config) -> Result<Store, StoreError> {
    match &config.store {
        StoreConfig::Memory => {
            warn!(
                "no --redis-url: using the embedded in-memory store; sessions are lost on \
                 restart and not shared between replicas. For development only"
            );
            Ok(Store::Memory(MemoryStore::with_clock(config.clock.clone())))
        }
        StoreConfig::Redis(redis) => Ok(Store::Redis(Box::new(
            RedisStore::open_with_clock(redis, config.clock.clone()).await?,
        ))),
    }
}

/// How writes are confirmed, for the start-up line.
fn replica_acks(store: &StoreConfig) -> String {
    match store {
        StoreConfig::Memory => "none".into(),
        StoreConfig::Redis(redis) => redis.replica_acks.to_string(),
    }
}

fn store_name(store: &StoreConfig) -> &'static str {
    match store {
        StoreConfig::Memory => "memory",
        StoreConfig::Redis(redis) => redis.target.kind(),
    }
}

/// Reports NOT_SERVING while the store does not answer, so load balancers and
/// orchestrators route around a tokend that cannot reach Redis.
async fn watch_store_health(
    authority: Arc<Authority>,
    reporter: tonic_health::server::HealthReporter,
) {
    let mut last = None;
    loop {
        let status = match authority.ping().await {
            Ok(()) => ServingStatus::Serving,
            Err(err) => {
                if last != Some(ServingStatus::NotServing) {
                    warn!(error = %err, "session store unreachable: health NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        crate::telemetry::record(&crate::facts::Fact::StoreUp(
            status == ServingStatus::Serving,
        ));
        if last != Some(status) {
            if status == ServingStatus::Serving && last.is_some() {
                info!("session store reachable again: health SERVING");
            }
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status(
                    <TokenServiceServer<TokenApi> as tonic::server::NamedService>::NAME,
                    status,
                )
                .await;
            last = Some(status);
        }
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is
/// called (not when first polled), so a signal sent as soon as tokend says
/// it is listening is never lost to the default action.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (terminate, interrupt) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(terminate) => {},
                () = wait(interrupt) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        info!("shutdown signal received: finishing in-flight calls");
    }
}
