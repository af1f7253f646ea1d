//! The gRPC face of tokend: `tokend.v1.TokenService`. Each call checks its
//! request, asks the [`Authority`], and converts the answer; errors become
//! statuses in one place ([`error`]).

pub mod error;
pub mod validate;

use std::sync::Arc;

use prost_types::Timestamp;
use tokend_interceptor::token::TOKEN_TYPE;
use tonic::{Request, Response, Status};

use crate::authority::{AuthError, Authority, IssuedTokens, LoginRequest as Login};
use crate::proto::tokend::v1 as pb;
use pb::login_request::Credentials;
use pb::token_service_server::TokenService;

/// Largest request message tokend decodes, in bytes. A Login with every field
/// at its limit fits comfortably.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The `tokend.v1.TokenService` implementation.
#[derive(Debug, Clone)]
pub struct TokenApi {
    authority: Arc<Authority>,
}

impl TokenApi {
    /// Serves `authority` over gRPC.
    pub fn new(authority: Arc<Authority>) -> TokenApi {
        TokenApi { authority }
    }

    /// The tonic service, with the request size limit applied.
    pub fn into_service(self) -> pb::token_service_server::TokenServiceServer<TokenApi> {
        pb::token_service_server::TokenServiceServer::new(self)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let request = request.into_inner();
        let audience = validate::audience(&request.audience)?;
        let scopes = validate::scopes(&request.scopes)?;
        let issued = match &request.credentials {
            Some(Credentials::Password(p)) => {
                let login = Login {
                    name: validate::account_name("username", &p.username)?,
                    secret: validate::secret("password", &p.password)?,
                    audience,
                    scopes,
                };
                self.authority.login_password(login).await?
            }
            Some(Credentials::Client(c)) => {
                let login = Login {
                    name: validate::account_name("client_id", &c.client_id)?,
                    secret: validate::secret("client_secret", &c.client_secret)?,
                    audience,
                    scopes,
                };
                self.authority.login_client(login).await?
            }
            None => {
                return Err(AuthError::InvalidRequest(
                    "credentials are required: password or client".into(),
                )
                .into());
            }
        };
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(token_pair(issued)),
        }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let request = request.into_inner();
        let token = validate::refresh_token(&request.refresh_token)?;
        let issued = self.authority.refresh(token).await?;
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(token_pair(issued)),
        }))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let request = request.into_inner();
        let token = validate::refresh_token(&request.refresh_token)?;
        self.authority.revoke(token).await?;
        Ok(Response::new(pb::RevokeResponse {}))
    }

    async fn get_public_keys(
        &self,
        _request: Request<pb::GetPublicKeysRequest>,
    ) -> Result<Response<pb::GetPublicKeysResponse>, Status> {
        let keys = self
            .authority
            .public_keys()
            .iter()
            .map(|k| pb::PublicKey {
                key_id: k.key_id.clone(),
                public_key: k.public_key.clone(),
            })
            .collect();
        Ok(Response::new(pb::GetPublicKeysResponse { keys }))
    }
}

fn token_pair(issued: IssuedTokens) -> pb::TokenPair {
    let mut pair = pb::TokenPair {
        access_token: issued.access.token,
        access_token_expires_at: Some(Timestamp {
            seconds: issued.access.expires_at,
            nanos: 0,
        }),
        token_type: TOKEN_TYPE.to_owned(),
        ..Default::default()
    };
    if let Some(session) = issued.session {
        pair.refresh_token = session.refresh_token.encode();
        pair.refresh_token_expires_at = Some(timestamp_ms(session.expires_at_ms));
        pair.session_id = session.session_id;
    }
    pair
}

fn timestamp_ms(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}
