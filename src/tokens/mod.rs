//! Tokens: the signing keys, access tokens (PASETO v4.public over the claims
//! shared with `tokend-interceptor`) and the refresh-token format.

pub mod access;
pub mod keys;
pub mod refresh;

pub use access::{AccessToken, AccessTokenIssuer, Grant};
pub use keys::{PublishedKey, SigningKey};
pub use refresh::{RefreshToken, SealedSecret, TokenHash};
