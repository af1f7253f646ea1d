//! gRPC clients and requests: logins, refreshes, bearer metadata, raw
//! bytes for malformed requests, and assertions on tokend's reasons.

use super::*;

/// A plaintext channel to `url` (`http://...`). The generated clients have
/// no `connect` of their own (see `tokend_interceptor::proto`).
pub async fn channel(url: &str) -> Result<Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A channel to `url` (https) trusting `ca`, presenting `identity` if given.
pub async fn tls_channel(
    url: &str,
    ca: &Path,
    identity: Option<&pki::CertFiles>,
) -> Result<Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("CA")));
    if let Some(id) = identity {
        config = config.identity(Identity::from_pem(
            std::fs::read(&id.cert).expect("cert"),
            std::fs::read(&id.key).expect("key"),
        ));
    }
    Endpoint::from_shared(url.to_owned())?
        .tls_config(config)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A password-login request.
pub fn password_login(username: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        credentials: Some(pb::login_request::Credentials::Password(
            pb::PasswordCredentials {
                username: username.into(),
                password: password.into(),
            },
        )),
        audience: String::new(),
        scopes: Vec::new(),
    }
}

/// A client-credentials login request.
pub fn client_login(client_id: &str, secret: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        credentials: Some(pb::login_request::Credentials::Client(
            pb::ClientCredentials {
                client_id: client_id.into(),
                client_secret: secret.into(),
            },
        )),
        audience: String::new(),
        scopes: Vec::new(),
    }
}

/// Logs in with a password and returns the token pair.
pub async fn login(
    client: &mut TokenServiceClient<Channel>,
    username: &str,
    password: &str,
) -> pb::TokenPair {
    client
        .login(password_login(username, password))
        .await
        .expect("login")
        .into_inner()
        .tokens
        .expect("tokens")
}

/// tokend's issuer name in tests: the audience its session RPCs need.
pub const TOKEND_AUDIENCE: &str = "tokend";

/// Logs in with a password, asking for a token meant for tokend itself (for
/// ListSessions, RevokeSession, RevokeAllSessions).
pub async fn login_for_tokend(
    client: &mut TokenServiceClient<Channel>,
    username: &str,
    password: &str,
) -> pb::TokenPair {
    let mut request = password_login(username, password);
    request.audience = TOKEND_AUDIENCE.into();
    client
        .login(request)
        .await
        .expect("login")
        .into_inner()
        .tokens
        .expect("tokens")
}

/// Refreshes and returns the new pair or the error status.
pub async fn refresh(
    client: &mut TokenServiceClient<Channel>,
    refresh_token: &str,
) -> Result<pb::TokenPair, tonic::Status> {
    client
        .refresh(pb::RefreshRequest {
            refresh_token: refresh_token.into(),
        })
        .await
        .map(|r| r.into_inner().tokens.expect("tokens"))
}

/// Revokes a refresh token.
pub async fn revoke(
    client: &mut TokenServiceClient<Channel>,
    refresh_token: &str,
) -> Result<(), tonic::Status> {
    client
        .revoke(pb::RevokeRequest {
            refresh_token: refresh_token.into(),
        })
        .await
        .map(|_| ())
}

/// The tokend reason of an error, for assertions.
pub fn reason(status: &tonic::Status) -> Option<Reason> {
    Reason::of(status)
}

/// Asserts that `result` failed with `reason` (and its status code).
#[track_caller]
pub fn assert_reason<T>(result: Result<T, tonic::Status>, expected: Reason) {
    match result {
        // The answer is not printed: it may hold tokens.
        Ok(_) => panic!("expected {expected}, got success"),
        Err(status) => {
            assert_eq!(reason(&status), Some(expected), "status: {status:?}");
            assert_eq!(status.code(), expected.code(), "status: {status:?}");
        }
    }
}

/// The demo.v1 client.
pub type EchoClient = crate::demo::v1::echo_service_client::EchoServiceClient<Channel>;

/// An Echo request carrying `authorization` metadata (if any).
pub fn echo_request(
    message: &str,
    authorization: Option<&str>,
) -> tonic::Request<crate::demo::v1::EchoRequest> {
    let mut request = tonic::Request::new(crate::demo::v1::EchoRequest {
        message: message.into(),
    });
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("metadata value"));
    }
    request
}

/// A loopback address of its own for the `n`th simulated source (in
/// 127.1.0.0/16): Linux routes all of 127/8 to the loopback interface.
pub fn loopback_source(n: u16) -> std::net::IpAddr {
    let third = u8::try_from(n / 250).unwrap_or(u8::MAX);
    let fourth = u8::try_from(n % 250).unwrap_or(0) + 1;
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 1, third, fourth))
}

/// `message` with `authorization: Bearer <token>` metadata.
pub fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        bearer(token).parse().expect("metadata value"),
    );
    request
}

/// Sends `body` as the raw bytes of a unary call's request message to
/// `path` (e.g. `/tokend.v1.TokenService/Login`), as a broken or hostile
/// client would, and returns how the call ended.
pub async fn raw_unary(channel: Channel, path: &str, body: Vec<u8>) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path)
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    grpc.unary(tonic::Request::new(body), path, raw::RawCodec)
        .await
        .map(|_| ())
}

/// A codec that sends bytes as they are and ignores the answer's body.
mod raw {
    use bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    pub(crate) struct RawCodec;
    pub(crate) struct RawEncoder;
    pub(crate) struct RawDecoder;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = ();
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;

        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }

        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;

        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
            buf.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = ();
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
            buf.advance(buf.remaining());
            Ok(Some(()))
        }
    }
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
