//! An example resource service protected by tokend-interceptor.
//!
//! `demo.v1.EchoService`: `Ping` is public, `Echo` needs any valid access
//! token and answers with its subject, `AdminEcho` needs scope `admin`.
//!
//! ```sh
//! cargo run -p tokend-interceptor --example resource_server -- --tokend http://127.0.0.1:50051
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use tokend_interceptor::revocation::{self, DEFAULT_REVOCATION_CAPACITY};
use tokend_interceptor::{
    AuthLayer, ClaimsExt, KeySet, KeySync, KeySyncConfig, Policy, RevocationList, StalePolicy,
    Verifier,
};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

mod demo {
    tonic::include_proto!("demo.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/demo_descriptor.bin"));
}

use demo::echo_service_server::{EchoService, EchoServiceServer};

/// Example resource server: demo.v1.EchoService behind tokend-interceptor.
#[derive(Debug, Parser)]
#[command(group(ArgGroup::new("keys").required(true).args(["tokend", "public_key"])))]
struct Args {
    /// Address to listen on (port 0 picks a free one and prints it).
    #[arg(long, env = "RESOURCE_LISTEN", default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// tokend to fetch verification keys from, e.g. http://127.0.0.1:50051.
    #[arg(long, env = "RESOURCE_TOKEND")]
    tokend: Option<String>,
    /// A fixed PASERK k4.public verification key instead (repeatable).
    #[arg(long, env = "RESOURCE_PUBLIC_KEY", value_delimiter = ',')]
    public_key: Vec<String>,
    /// The issuer tokens must carry.
    #[arg(long, env = "RESOURCE_ISSUER", default_value = "tokend")]
    issuer: String,
    /// The audience tokens must carry.
    #[arg(long, env = "RESOURCE_AUDIENCE", default_value = "internal")]
    audience: String,
    /// Clock tolerance for exp and nbf.
    #[arg(long, env = "RESOURCE_LEEWAY", default_value = "5s", value_parser = humantime::parse_duration)]
    leeway: Duration,
    /// How often keys are refetched from tokend.
    #[arg(long, env = "RESOURCE_KEY_REFRESH", default_value = "5m", value_parser = humantime::parse_duration)]
    key_refresh: Duration,
    /// Subscribe to tokend's revocation feed (needs --tokend): tokens of
    /// revoked sessions are refused with SESSION_REVOKED within a second.
    #[arg(long, env = "RESOURCE_WATCH_REVOCATIONS", requires = "tokend")]
    watch_revocations: bool,
    /// With --watch-revocations: refuse every token (UNAVAILABLE,
    /// REVOCATIONS_UNAVAILABLE) once the feed has been silent this long.
    /// Default: keep serving from the last known state.
    #[arg(long, env = "RESOURCE_FAIL_CLOSED_AFTER", value_parser = humantime::parse_duration)]
    fail_closed_after: Option<Duration>,
}

#[derive(Debug, Default)]
struct Echo;

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
        Ok(Response::new(demo::EchoResponse {
            message: request.into_inner().message,
            subject,
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
        .map(|claims| claims.sub.clone())
        .ok_or_else(|| Status::internal("no verified claims"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let keys = match &args.tokend {
        Some(url) => {
            let config = KeySyncConfig {
                refresh_interval: args.key_refresh,
                ..KeySyncConfig::default()
            };
            KeySync::spawn_url(url, config)?
        }
        None => KeySet::from_paserk(args.public_key.iter().map(String::as_str))?,
    };
    let mut verifier = Verifier::builder(keys)
        .issuer(&args.issuer)
        .audience(&args.audience)
        .leeway(args.leeway);
    if args.watch_revocations
        && let Some(url) = &args.tokend
    {
        let stale = match args.fail_closed_after {
            Some(limit) => StalePolicy::FailClosedAfter(limit),
            None => StalePolicy::ServeLastKnown,
        };
        let revocations = RevocationList::new(DEFAULT_REVOCATION_CAPACITY, stale);
        revocation::watch_url(url, revocations.clone())?;
        verifier = verifier.revocations(revocations);
    }
    let verifier = verifier.build();

    let policy = Policy::new()
        .public("/demo.v1.EchoService/Ping")
        .require_scopes("/demo.v1.EchoService/AdminEcho", ["admin"])
        .public_health_and_reflection();

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<EchoServiceServer<Echo>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(demo::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    println!("resource server listening on {addr}");
    Server::builder()
        .layer(AuthLayer::new(verifier, policy))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(EchoServiceServer::new(Echo))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    Ok(())
}
