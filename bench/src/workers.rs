//! The closed-loop callers of each phase.

use testkit::demo::v1 as demo;
use tokend::proto::tokend::v1 as pb;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::load::Worker;

/// The tokend client.
pub type TokenClient = pb::token_service_client::TokenServiceClient<Channel>;
/// The example resource server's client.
pub type EchoClient = demo::echo_service_client::EchoServiceClient<Channel>;

/// `grpc.health.v1.Health/Check`: the no-op reference.
pub struct Noop(pub HealthClient<Channel>);
impl Worker for Noop {
    async fn call(&mut self) -> bool {
        self.0.check(HealthCheckRequest::default()).await.is_ok()
    }
}

/// Refreshes its own session chain: every refresh token is single-use.
pub struct Refresher {
    pub client: TokenClient,
    pub token: String,
}
impl Worker for Refresher {
    async fn call(&mut self) -> bool {
        let request = pb::RefreshRequest {
            refresh_token: self.token.clone(),
        };
        match self.client.refresh(request).await {
            Ok(reply) => match reply.into_inner().tokens {
                Some(pair) => {
                    self.token = pair.refresh_token;
                    true
                }
                None => false,
            },
            Err(_) => false,
        }
    }
}

/// Logs in again and again, cycling through its requests (a few accounts,
/// so no account piles up sessions), as one source (`x-forwarded-for`,
/// believed by the bench's tokend, which trusts the loopback proxy).
pub struct Login {
    pub client: TokenClient,
    pub requests: Vec<pb::LoginRequest>,
    pub next: usize,
    pub source: Option<String>,
}

impl Login {
    /// Logs in with `request` every time.
    pub fn one(client: TokenClient, request: pb::LoginRequest, source: Option<String>) -> Login {
        Login {
            client,
            requests: vec![request],
            next: 0,
            source,
        }
    }
}

impl Worker for Login {
    async fn call(&mut self) -> bool {
        let Some(next) = self.requests.get(self.next % self.requests.len().max(1)) else {
            return false;
        };
        self.next = self.next.wrapping_add(1);
        let mut request = tonic::Request::new(next.clone());
        if let Some(source) = self.source.as_deref().and_then(|s| s.parse().ok()) {
            request.metadata_mut().insert("x-forwarded-for", source);
        }
        self.client.login(request).await.is_ok()
    }
}

/// Calls Echo with the same verified token every time.
pub struct Echo {
    pub client: EchoClient,
    pub authorization: String,
}
impl Worker for Echo {
    async fn call(&mut self) -> bool {
        let request = testkit::echo_request("bench", Some(&self.authorization));
        self.client.echo(request).await.is_ok()
    }
}

/// Calls the public Ping.
pub struct Ping(pub EchoClient);
impl Worker for Ping {
    async fn call(&mut self) -> bool {
        self.0.ping(demo::PingRequest {}).await.is_ok()
    }
}

/// The `n`th simulated client address, for `x-forwarded-for`.
pub fn source(n: usize) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// Calls Ping carrying a token: behind tokend-gate, whose policy makes Ping
/// need one, every call is a verified one (the gate's cached path).
pub struct BearerPing {
    pub client: EchoClient,
    pub authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}
impl Worker for BearerPing {
    async fn call(&mut self) -> bool {
        let mut request = tonic::Request::new(demo::PingRequest {});
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        self.client.ping(request).await.is_ok()
    }
}

/// Introspects one access token again and again, as a service with
/// `tokend.introspect.any` would.
pub struct Introspect {
    pub client: TokenClient,
    pub request: pb::IntrospectRequest,
    pub authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}
impl Worker for Introspect {
    async fn call(&mut self) -> bool {
        let mut request = tonic::Request::new(self.request.clone());
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        matches!(self.client.introspect(request).await, Ok(r) if r.get_ref().active)
    }
}
