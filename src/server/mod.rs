//! Runs tokend: opens the store, loads keys, wires the gRPC services (token
//! service, health, reflection v1 and v1alpha), serves until SIGTERM or
//! SIGINT, then lets in-flight calls finish.
//!
//! [`start`] puts the parts together; each part is a module: the
//! [`authority`] it serves (keys, hasher, feed, policy), tokend's own
//! method [`policy`], [`health`], the listener's [`tls`] reloads and the
//! [`signals`] that stop it.

mod authority;
mod health;
mod introspection;
mod policy;
mod signals;
mod tls;

pub use signals::shutdown_signal;

use health::watch_store_health;
use tls::reload_tls_on_change;

use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokend_interceptor::certs::TlsError;
use tokend_interceptor::server::AuthLayer;
use tokend_interceptor::server::ServerTls;
use tokend_interceptor::server::{Listener, raise_open_files_limit};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::admin::DemoAccounts;
use crate::api::TokenApi;
use crate::api::admin::{AdminApi, AdminParts};
use crate::api::source::TrustedProxies;
use crate::config::{Config, ConfigError, StoreConfig};
use crate::credentials::HashError;
use crate::store::{MemoryStore, RedisStore, Store, StoreError};
use crate::tokens::keys::KeyError;

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
    if let Some(addr) = server.admin_addr() {
        println!("tokend admin listening on {addr}");
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
    admin: Option<SocketAddr>,
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

    /// Where the administration API is served apart, with `--admin-listen`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
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

    // Revocation streams end when shutdown starts, so draining does not wait
    // for watchers that never hang up.
    let (stopping_tx, stopping) = watch::channel(false);
    let built = authority::build(&config, store, stopping.clone()).await?;
    let (authority, demo) = (built.authority, built.demo);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(watch_store_health(Arc::clone(&authority), health_reporter));

    let admin_apart = config.admin_listen.is_some();
    let (reflection_v1, reflection_v1alpha) =
        reflection(config.reflection, Apis::token_service(!admin_apart))?;

    let (verifier, policy) = policy::own_calls(&authority, &config)?;
    let admin = AdminApi::new(AdminParts {
        authority: Arc::clone(&authority),
        verifier: verifier.clone(),
        proxies: TrustedProxies::new(config.trusted_proxies.clone()),
        keys: built.keys,
    });

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
    let admin_serving = match config.admin_listen {
        Some(admin_addr) => Some(
            serve_admin(
                &config,
                admin_addr,
                admin.clone(),
                health_service.clone(),
                tls.clone(),
                stopping.clone(),
            )
            .await?,
        ),
        None => None,
    };
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
        .add_service(api.into_service())
        .add_optional_service((!admin_apart).then(|| admin.into_service()));
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
    let (serving, admin_addr) = match admin_serving {
        Some((admin_addr, admin)) => {
            let both: Serving = Box::pin(async move {
                let (main, admin) = tokio::join!(serving, admin);
                main.and(admin)
            });
            (both, Some(admin_addr))
        }
        None => (serving, None),
    };
    Ok(Server {
        addr,
        serving,
        stop,
        demo,
        metrics: config.metrics_listen,
        admin: admin_addr,
    })
}

/// Binds `--admin-listen` and serves the administration API there (with
/// health and reflection, the same TLS and limits) until `stopping`.
/// Returns the bound address and the serving future.
async fn serve_admin<H>(
    config: &Config,
    addr: SocketAddr,
    admin: AdminApi,
    health: tonic_health::pb::health_server::HealthServer<H>,
    tls: Option<ServerTls>,
    mut stopping: watch::Receiver<bool>,
) -> Result<(SocketAddr, Serving), ServeError>
where
    H: tonic_health::pb::health_server::Health,
{
    let bound = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let listener = Listener::new(bound, config.limits);
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    if tls.is_none() && !local.ip().is_loopback() {
        warn!(
            addr = %local,
            "serving the administration API without TLS on a non-loopback address: \
             passwords and secrets cross the network in clear"
        );
    }
    let (reflection_v1, reflection_v1alpha) = reflection(config.reflection, Apis::Admin)?;
    let router = config
        .limits
        .server()
        .layer(trace_layer())
        .layer(crate::api::RpcMetricsLayer)
        .layer(crate::api::oversize::OversizeLayer)
        .add_service(health)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(admin.into_service());
    let shutdown = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    info!(addr = %local, "administration API listening");
    let serving: Serving = match tls {
        Some(tls) => {
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
    Ok((local, serving))
}

/// Which APIs a listener's reflection describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Apis {
    /// The token service alone.
    TokenService,
    /// The token service and the administration API beside it.
    Both,
    /// The administration API alone (`--admin-listen`).
    Admin,
}

impl Apis {
    /// The main listener's: with the administration API unless it is
    /// served apart.
    fn token_service(with_admin: bool) -> Apis {
        if with_admin {
            Apis::Both
        } else {
            Apis::TokenService
        }
    }
}

/// Server reflection, v1 and v1alpha (grpcurl 1.8 and several GUI clients
/// speak only v1alpha; newer ones v1), or neither with `--reflection=false`.
/// The google.rpc descriptors let them decode tokend's ErrorInfo details.
#[allow(clippy::type_complexity)]
fn reflection(
    on: bool,
    apis: Apis,
) -> Result<
    (
        Option<
            tonic_reflection::server::v1::ServerReflectionServer<
                impl tonic_reflection::server::v1::ServerReflection,
            >,
        >,
        Option<
            tonic_reflection::server::v1alpha::ServerReflectionServer<
                impl tonic_reflection::server::v1alpha::ServerReflection,
            >,
        >,
    ),
    ServeError,
> {
    if !on {
        return Ok((None, None));
    }
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET);
        if apis != Apis::Admin {
            builder =
                builder.register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET);
        }
        if apis != Apis::TokenService {
            builder = builder
                .register_encoded_file_descriptor_set(crate::proto::ADMIN_FILE_DESCRIPTOR_SET);
        }
        builder
    };
    Ok((
        Some(builder().build_v1()?),
        Some(builder().build_v1alpha()?),
    ))
}

/// A span per call (method, trace id); with the `otlp` feature, a child of
/// the caller's `traceparent` in the exported trace.
fn trace_layer() -> tokend_interceptor::server::TraceLayer {
    let layer = tokend_interceptor::server::TraceLayer::new();
    #[cfg(feature = "otlp")]
    let layer = layer.on_new_span(crate::telemetry::otlp::adopt_parent);
    layer
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
