//! An example resource service protected by tokend-interceptor.
//!
//! `demo.v1.EchoService`: `Ping` is public, `Echo` needs any valid access
//! token and answers with its subject and actor chain, `AdminEcho` needs
//! scope `admin`, and `RelayEcho` calls `Echo` on another instance
//! (`--downstream`) on the caller's behalf, with a token obtained from
//! tokend's `Exchange` for that instance's audience.
//!
//! ```sh
//! cargo run -p tokend-interceptor --example resource_server -- --tokend http://127.0.0.1:50051
//! ```
//!
//! It serves the way a production service should: TLS and mTLS when given
//! certificates (reloaded on change or SIGHUP), the listener limits of
//! `tokend_interceptor::listener`, and certificate-bound tokens checked
//! against the caller's certificate. It reaches tokend over TLS for
//! `https://` URLs and follows the revocation feed as an authenticated
//! service client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use tokend_interceptor::Verifier;
use tokend_interceptor::certs::CertificateNaming;
use tokend_interceptor::client::{
    ClientGrant, ExchangeService, ExchangingTokenSource, OnBehalfOf, TokenSource, TokendEndpoint,
};
use tokend_interceptor::keys::{KeySet, KeySync, KeySyncConfig};
use tokend_interceptor::revocation::DEFAULT_REVOCATION_CAPACITY;
use tokend_interceptor::revocation::{RevocationList, RevocationWatch, StalePolicy};
use tokend_interceptor::server::{AuthLayer, ClaimsExt, Policy};
use tokend_interceptor::server::{Limits, Listener, raise_open_files_limit, serve_metrics};
use tokend_interceptor::server::{ServerTls, TlsFiles, TraceLayer};
use tonic::{Request, Response, Status};

/// The generated demo.v1 service and its descriptor set (for reflection),
/// checked in under `generated/` from `proto/` by `make proto-gen`.
#[allow(unreachable_pub, missing_docs, clippy::all)]
mod demo {
    include!("generated/demo.v1.rs");
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/demo.v1.bin");
}

/// Its client, for RelayEcho's calls to another instance.
#[allow(unreachable_pub, missing_docs, clippy::all)]
mod demo_client {
    include!("generated/demo.v1.client.rs");
}

use demo::echo_service_server::{EchoService, EchoServiceServer};
use demo_client::echo_service_client::EchoServiceClient;

/// The downstream instance, reached with exchanged tokens.
type Downstream = EchoServiceClient<ExchangeService<tonic::transport::Channel>>;

/// Example resource server: demo.v1.EchoService behind tokend-interceptor.
#[derive(Debug, Parser)]
#[command(group(ArgGroup::new("keys").required(true).args(["tokend", "public_key"])))]
struct Args {
    /// Address to listen on (port 0 picks a free one and prints it).
    #[arg(long, env = "RESOURCE_LISTEN", default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// tokend to fetch verification keys from, e.g. http://127.0.0.1:50051
    /// or https://tokend:50051 (always TLS). Repeat for several replicas:
    /// calls are balanced over them.
    #[arg(long, env = "RESOURCE_TOKEND", value_delimiter = ',')]
    tokend: Vec<String>,
    /// A fixed PASERK k4.public verification key instead (repeatable). For
    /// services that cannot reach tokend over TLS.
    #[arg(long, env = "RESOURCE_PUBLIC_KEY", value_delimiter = ',')]
    public_key: Vec<String>,
    /// The issuer tokens must carry.
    #[arg(long, env = "RESOURCE_ISSUER", default_value = "tokend")]
    issuer: String,
    /// The audience tokens must carry.
    #[arg(long, env = "RESOURCE_AUDIENCE", default_value = "internal")]
    audience: String,
    /// Clock tolerance for exp and nbf.
    #[arg(long, env = "RESOURCE_LEEWAY", default_value = "5s", value_parser = up_to_an_hour)]
    leeway: Duration,
    /// How often keys are refetched from tokend.
    #[arg(long, env = "RESOURCE_KEY_REFRESH", default_value = "5m", value_parser = up_to_a_day)]
    key_refresh: Duration,
    /// Subscribe to tokend's revocation feed (needs --tokend, and
    /// --client-id or a client certificate): tokens of revoked sessions are
    /// refused with SESSION_REVOKED within a second.
    #[arg(long, env = "RESOURCE_WATCH_REVOCATIONS", requires = "tokend")]
    watch_revocations: bool,
    /// The service client the feed is watched as (granted the scope
    /// tokend.revocations); its secret comes from TOKEND_CLIENT_SECRET.
    #[arg(long, env = "RESOURCE_CLIENT_ID")]
    client_id: Option<String>,
    /// With --watch-revocations: refuse every token (UNAVAILABLE,
    /// REVOCATIONS_UNAVAILABLE) once the feed has been silent this long.
    /// Default: keep serving from the last known state.
    #[arg(long, env = "RESOURCE_FAIL_CLOSED_AFTER", value_parser = up_to_a_day)]
    fail_closed_after: Option<Duration>,
    /// CA (PEM) to verify https:// tokend URLs with, instead of the system's.
    #[arg(long, env = "RESOURCE_TOKEND_CA")]
    tokend_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present to tokend (mTLS).
    #[arg(
        long,
        env = "RESOURCE_TOKEND_CLIENT_CERT",
        requires = "tokend_client_key"
    )]
    tokend_client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(
        long,
        env = "RESOURCE_TOKEND_CLIENT_KEY",
        requires = "tokend_client_cert"
    )]
    tokend_client_key: Option<PathBuf>,
    /// Certificate chain (PEM) to serve TLS with; reloaded when it changes or
    /// on SIGHUP.
    #[arg(long, env = "RESOURCE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "RESOURCE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to (mTLS).
    #[arg(long, env = "RESOURCE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Refuse clients without a verified certificate.
    #[arg(
        long,
        env = "RESOURCE_TLS_REQUIRE_CLIENT_CERT",
        requires = "tls_client_ca"
    )]
    tls_require_client_cert: bool,
    /// Serve the interceptor's Prometheus metrics (`GET /metrics`) on this
    /// address, e.g. 127.0.0.1:9091. Off by default.
    #[arg(long, env = "RESOURCE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Another resource server that RelayEcho calls on the caller's behalf,
    /// e.g. http://127.0.0.1:50062. Needs --tokend and --client-id: this
    /// service exchanges the caller's token as that client.
    #[arg(long, env = "RESOURCE_DOWNSTREAM", requires_all = ["tokend", "client_id", "downstream_audience"])]
    downstream: Option<String>,
    /// The downstream's audience (its --audience), asked for at Exchange.
    #[arg(long, env = "RESOURCE_DOWNSTREAM_AUDIENCE")]
    downstream_audience: Option<String>,
    /// Scopes the exchanged token should carry (repeat); default: every
    /// scope the caller's token and the exchange policy allow.
    #[arg(long, env = "RESOURCE_DOWNSTREAM_SCOPE", value_delimiter = ',')]
    downstream_scope: Vec<String>,
    /// CA (PEM) to verify an https:// downstream with (default: --tokend-ca,
    /// else the system's). --tokend-client-cert is presented to it too.
    #[arg(long, env = "RESOURCE_DOWNSTREAM_CA")]
    downstream_ca: Option<PathBuf>,
    /// A method (e.g. AdminEcho) that refuses delegated tokens (repeat).
    #[arg(long, env = "RESOURCE_FORBID_DELEGATED", value_delimiter = ',')]
    forbid_delegated: Vec<String>,
    /// METHOD=ACTOR: the method takes only tokens delegated to ACTOR
    /// (repeat for more actors or methods).
    #[arg(long, env = "RESOURCE_REQUIRE_ACTOR", value_delimiter = ',', value_parser = method_and_value)]
    require_actor: Vec<(String, String)>,
    /// A SPIFFE trust domain (e.g. prod.example) whose IDs spiffe://TD/ID
    /// name the service client ID, for the actor check of delegated tokens
    /// over mTLS; repeatable. By default only an exact DNS SAN (or the
    /// common name of a certificate without SANs) names a client.
    #[arg(
        long = "cert-trust-domain",
        env = "RESOURCE_CERT_TRUST_DOMAIN",
        value_delimiter = ','
    )]
    cert_trust_domains: Vec<String>,
    /// ID=SAN: the certificates of the service client ID carry the subject
    /// alternative name SAN (repeat); once given, only these name ID.
    #[arg(long = "actor-cert-san", env = "RESOURCE_ACTOR_CERT_SAN", value_delimiter = ',', value_parser = method_and_value)]
    actor_cert_sans: Vec<(String, String)>,
    /// METHOD=N: the method takes delegation chains of at most N actors.
    #[arg(long, env = "RESOURCE_MAX_CHAIN_DEPTH", value_delimiter = ',', value_parser = method_and_value)]
    max_chain_depth: Vec<(String, String)>,
    /// Most connections at once.
    #[arg(long, env = "RESOURCE_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Time for a connection's TLS handshake and first bytes.
    #[arg(long, env = "RESOURCE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = up_to_an_hour)]
    handshake_timeout: Duration,
    /// Most concurrent calls per connection.
    #[arg(long, env = "RESOURCE_MAX_CONCURRENT_STREAMS", default_value_t = 128)]
    max_concurrent_streams: u32,
    /// Server-side deadline of every call.
    #[arg(long, env = "RESOURCE_REQUEST_TIMEOUT", default_value = "30s", value_parser = up_to_a_day)]
    request_timeout: Duration,
    /// A connection is told to reconnect after this long (so a rotated
    /// client CA reaches it).
    #[arg(long, env = "RESOURCE_MAX_CONNECTION_AGE", default_value = "1h", value_parser = up_to_a_day)]
    max_connection_age: Duration,
}

/// `METHOD=VALUE` for the per-method delegation flags.
fn method_and_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((method, value)) if !method.is_empty() && !value.is_empty() => {
            Ok((method.to_owned(), value.to_owned()))
        }
        _ => Err("expected METHOD=VALUE, e.g. Echo=orders".into()),
    }
}

/// The listener limits the flags ask for.
fn limits(args: &Args) -> Limits {
    Limits::default()
        .max_connections(args.max_connections)
        .handshake_timeout(args.handshake_timeout)
        .max_concurrent_streams(args.max_concurrent_streams)
        .request_timeout(args.request_timeout)
        .max_connection_age(args.max_connection_age)
}

/// The full path of a demo.v1.EchoService method.
fn method_path(method: &str) -> String {
    format!("/demo.v1.EchoService/{method}")
}

/// A duration flag of at most an hour (leeway, handshake time): larger values
/// are refused at start rather than overflowing a deadline later.
fn up_to_an_hour(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::from_secs(3_600), "1h")
}

/// A duration flag of at most a day (key refresh, fail-closed, deadlines).
fn up_to_a_day(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::from_secs(86_400), "1d")
}

/// `text` as a duration no longer than `limit` (written `limit_text`).
fn bounded(text: &str, limit: Duration, limit_text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration > limit {
        return Err(format!("longer than the maximum of {limit_text}"));
    }
    Ok(duration)
}

#[derive(Debug, Default)]
struct Echo {
    /// RelayEcho's downstream, if configured.
    downstream: Option<Downstream>,
}

#[tonic::async_trait]
impl EchoService for Echo {
    async fn ping(
        &self,
        _request: Request<demo::PingRequest>,
    ) -> Result<Response<demo::PingResponse>, Status> {
        Ok(Response::new(demo::PingResponse {}))
    }

    async fn echo(
        &self,
        request: Request<demo::EchoRequest>,
    ) -> Result<Response<demo::EchoResponse>, Status> {
        let subject = subject(&request)?;
        let actor_chain = request
            .claims()
            .map(|claims| claims.actors().map(|a| a.sub().to_owned()).collect())
            .unwrap_or_default();
        Ok(Response::new(demo::EchoResponse {
            message: request.into_inner().message,
            subject,
            actor_chain,
        }))
    }

    async fn relay_echo(
        &self,
        request: Request<demo::RelayEchoRequest>,
    ) -> Result<Response<demo::RelayEchoResponse>, Status> {
        let Some(downstream) = &self.downstream else {
            return Err(Status::failed_precondition(
                "no --downstream configured for RelayEcho",
            ));
        };
        // The caller's own token, which the auth layer verified: the
        // exchange trades it, never this service's identity.
        let subject = OnBehalfOf::from_request(&request)?;
        let mut call = Request::new(demo::EchoRequest {
            message: request.into_inner().message,
        });
        subject.attach(&mut call);
        let answer = downstream.clone().echo(call).await?;
        Ok(Response::new(demo::RelayEchoResponse {
            downstream: Some(answer.into_inner()),
        }))
    }

    async fn admin_echo(
        &self,
        request: Request<demo::AdminEchoRequest>,
    ) -> Result<Response<demo::AdminEchoResponse>, Status> {
        let subject = subject(&request)?;
        Ok(Response::new(demo::AdminEchoResponse {
            message: request.into_inner().message,
            subject,
        }))
    }
}

/// The caller's subject; the auth layer guarantees the claims are there.
fn subject<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .claims()
        .map(|claims| claims.sub().to_owned())
        .ok_or_else(|| Status::internal("no verified claims"))
}

/// How to reach tokend: its URLs, and the TLS options for https ones.
fn tokend_endpoint(args: &Args) -> Result<Option<TokendEndpoint>, Box<dyn std::error::Error>> {
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal, not in files or log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    // The library records through the `metrics` facade; this service picks
    // the Prometheus exporter.
    if let Some(addr) = args.metrics_listen {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
        let upkeep = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                upkeep.run_upkeep();
            }
        });
        let listener = Listener::new(tokio::net::TcpListener::bind(addr).await?, limits(&args));
        serve_metrics(listener, move || handle.render());
        println!("metrics on http://{addr}/metrics");
    }

    let tokend = tokend_endpoint(&args)?;
    let channel = tokend.as_ref().map(TokendEndpoint::channel).transpose()?;
    // Background tasks run as long as their handles live: to the end of main.
    let mut background = Vec::new();
    let keys = match &channel {
        Some(channel) => {
            let config = KeySyncConfig::default().refresh_interval(args.key_refresh);
            let sync = KeySync::spawn(channel.clone(), config);
            let keys = sync.keys();
            background.push(Box::new(sync) as Box<dyn std::any::Any>);
            keys
        }
        None => KeySet::from_paserk(args.public_key.iter().map(String::as_str))?,
    };
    let naming = args
        .cert_trust_domains
        .iter()
        .fold(CertificateNaming::new(), |n, td| n.trust_domain(td.clone()));
    let naming = args
        .actor_cert_sans
        .iter()
        .fold(naming, |n, (id, san)| n.identity(id.clone(), san.clone()));
    let mut verifier = Verifier::builder(keys, &args.issuer, &args.audience)
        .leeway(args.leeway)
        .certificate_naming(naming);
    // With mTLS, delegated tokens must come from their actor's certificate.
    if args.tls_client_ca.is_some() {
        verifier = verifier.require_actor_certificates();
    }
    if args.watch_revocations
        && let Some(channel) = &channel
    {
        let stale = match args.fail_closed_after {
            Some(limit) => StalePolicy::FailClosedAfter(limit),
            None => StalePolicy::ServeLastKnown,
        };
        let revocations = RevocationList::new(DEFAULT_REVOCATION_CAPACITY, stale);
        let mut watch = RevocationWatch::new(channel.clone());
        if let Some(client_id) = &args.client_id {
            let secret = std::env::var("TOKEND_CLIENT_SECRET")
                .map_err(|_| "--client-id needs the client's secret in TOKEND_CLIENT_SECRET")?;
            // The feed is tokend's own: a token for its audience.
            let grant = ClientGrant {
                client_id: client_id.clone(),
                client_secret: secret,
                audience: args.issuer.clone(),
                scopes: vec!["tokend.revocations".into()],
            };
            watch = watch.token_source(TokenSource::for_client(channel.clone(), grant));
        }
        background.push(Box::new(watch.spawn(revocations.clone())));
        verifier = verifier.revocations(revocations);
    }
    let verifier = verifier.build();

    let mut policy = Policy::new()
        .public("/demo.v1.EchoService/Ping")
        .require_scopes("/demo.v1.EchoService/AdminEcho", ["admin"])
        .public_health_and_reflection();
    for method in &args.forbid_delegated {
        policy = policy.forbid_delegated(method_path(method));
    }
    let mut required: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (method, actor) in &args.require_actor {
        required.entry(method).or_default().push(actor);
    }
    for (method, actors) in required {
        policy = policy.require_actor(method_path(method), actors);
    }
    for (method, depth) in &args.max_chain_depth {
        let depth: usize = depth
            .parse()
            .map_err(|_| format!("--max-chain-depth {method}={depth}: not a number"))?;
        policy = policy.max_chain_depth(method_path(method), depth);
    }
    let downstream = match (&args.downstream, &channel) {
        (Some(url), Some(channel)) => Some(downstream(&args, url, channel.clone())?),
        _ => None,
    };

    // NOT_SERVING until the verifier holds keys and, when watching, the
    // feed's history: a balancer sends nothing that would be refused for
    // want of them.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_not_serving::<EchoServiceServer<Echo>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(demo::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };

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
    let limits = limits(&args);
    let _ = raise_open_files_limit();
    let listener = Listener::new(tokio::net::TcpListener::bind(args.listen).await?, limits);
    let addr = listener.local_addr()?;
    println!("resource server listening on {addr}");
    // Ready is said after listening, so that whoever reads the first line
    // learns the address before it learns the server is ready.
    {
        let verifier = verifier.clone();
        tokio::spawn(async move {
            while !verifier.is_ready() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            health.set_serving::<EchoServiceServer<Echo>>().await;
            println!("resource server ready");
        });
    }
    let router = limits
        .server()
        .layer(TraceLayer::new())
        .layer(AuthLayer::new(verifier, policy))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(EchoServiceServer::new(Echo { downstream }));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match tls {
        Some(tls) => {
            let _watch = tls.watch_files(Duration::from_secs(2));
            reload_on_hangup(tls.clone());
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

/// RelayEcho's client for the downstream at `url`: each call carries the
/// caller's token as [`OnBehalfOf`], which the exchange layer trades for
/// one meant for the downstream's audience, as this service's client.
fn downstream(
    args: &Args,
    url: &str,
    tokend: tonic::transport::Channel,
) -> Result<Downstream, Box<dyn std::error::Error>> {
    let client_id = args.client_id.clone().unwrap_or_default();
    let secret = std::env::var("TOKEND_CLIENT_SECRET")
        .map_err(|_| "--downstream needs the client's secret in TOKEND_CLIENT_SECRET")?;
    // Exchange takes this service's own token for tokend itself.
    let own = TokenSource::for_client(
        tokend.clone(),
        ClientGrant {
            client_id,
            client_secret: secret,
            audience: args.issuer.clone(),
            scopes: Vec::new(),
        },
    );
    let exchanger = ExchangingTokenSource::new(tokend, own);
    let mut endpoint = TokendEndpoint::new(url);
    if let Some(ca) = args.downstream_ca.as_ref().or(args.tokend_ca.as_ref()) {
        endpoint = endpoint.ca_file(ca)?;
    }
    if let (Some(cert), Some(key)) = (&args.tokend_client_cert, &args.tokend_client_key) {
        endpoint = endpoint.identity_files(cert, key)?;
    }
    let audience = args.downstream_audience.clone().unwrap_or_default();
    let layer = exchanger.layer(audience, args.downstream_scope.clone());
    let channel = tower::ServiceBuilder::new()
        .layer(layer)
        .service(endpoint.channel()?);
    Ok(EchoServiceClient::new(channel))
}

/// Reloads the TLS files on SIGHUP.
fn reload_on_hangup(tls: ServerTls) {
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
