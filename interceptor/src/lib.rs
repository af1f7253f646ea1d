//! # tokend-interceptor
//!
//! Verify tokend access tokens in tonic services, and attach them to
//! outgoing calls.
//!
//! **Server side**: a [`Verifier`] checks PASETO `v4.public` tokens against
//! keys that are either fixed ([`KeySet::from_paserk`]) or kept in sync with
//! a running tokend ([`KeySync`]). Wire it as an [`AuthInterceptor`] for one
//! service or an [`AuthLayer`] with a per-method [`Policy`] for a whole
//! server; handlers read the caller's claims with [`ClaimsExt::claims`].
//!
//! **Client side**: a [`TokenSource`] logs in with service-client
//! credentials (or rotates a user's refresh token), attaches
//! `authorization: Bearer ...` as a tower layer or interceptor, renews ahead
//! of expiry and retries once on `ACCESS_TOKEN_EXPIRED`.
//!
//! ## Error reasons
//!
//! Every refusal is a gRPC status with a `google.rpc.ErrorInfo` detail
//! (domain `tokend`); [`Reason::of`] reads it back. What each means and what
//! the caller should do:
//!
//! | reason | status | meaning | caller should |
//! |---|---|---|---|
//! | `ACCESS_TOKEN_MISSING` | UNAUTHENTICATED | no `authorization: Bearer` metadata | attach a token |
//! | `ACCESS_TOKEN_INVALID` | UNAUTHENTICATED | malformed, bad signature, unknown key, wrong issuer or audience, not yet valid | get a new token; check the audience it asks for |
//! | `ACCESS_TOKEN_EXPIRED` | UNAUTHENTICATED | signature valid, past `exp` + leeway | refresh, retry once |
//! | `SESSION_REVOKED` | UNAUTHENTICATED | the token's session was revoked | log in again |
//! | `INSUFFICIENT_SCOPE` | PERMISSION_DENIED | valid token without a scope the method needs | ask for the scope at login (if granted) |
//! | `KEYS_UNAVAILABLE` | UNAVAILABLE | no verification keys yet: tokend unreachable since start | retry with backoff |
//! | `REVOCATIONS_UNAVAILABLE` | UNAVAILABLE | fail-closed revocation feed down too long, or tokend reported lost revocations | retry with backoff |
//!
//! tokend itself also answers `INVALID_CREDENTIALS`, `REFRESH_TOKEN_INVALID`
//! and `REFRESH_TOKEN_REUSED` (log in again), `INVALID_REQUEST` (fix the
//! request), `STORE_UNAVAILABLE` (retry), `LOGIN_THROTTLED` and `OVERLOADED`
//! (RESOURCE_EXHAUSTED: wait the `google.rpc.RetryInfo` delay, see
//! [`Reason::retry_delay`]) and `WRONG_AUDIENCE` (PERMISSION_DENIED: log in
//! for the audience the method needs).
#![doc = include_str!("../README.md")]

mod background;
mod cache;
pub mod client;
pub mod codec;
pub mod connect;
pub mod error;
pub mod key_sync;
pub mod keys;
pub mod listener;
pub mod proto;
pub mod reason;
pub mod revocation;
pub mod server;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod token;
#[cfg(test)]
mod vectors;
pub mod verify;

pub use background::Background;
pub use client::{BearerLayer, ClientGrant, TokenSource};
pub use connect::TokendEndpoint;
pub use error::{AuthError, Invalid};
pub use key_sync::{KeySync, KeySyncConfig};
pub use keys::{KeyRing, KeySet};
pub use reason::{ERROR_DOMAIN, Reason};
pub use revocation::{RevocationList, RevocationWatch, StalePolicy};
pub use server::{AuthInterceptor, AuthLayer, ClaimsExt, Policy, VerifiedClaims};
pub use token::{Claims, Footer};
pub use verify::{Clock, SystemClock, Verifier};
