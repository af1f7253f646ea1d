//! # tokend-interceptor
//!
//! Verify tokend access tokens in tonic services, and attach them to
//! outgoing calls.
//!
//! **Server side**: a [`Verifier`] checks PASETO `v4.public` tokens against
//! keys that are either fixed ([`KeySet::from_paserk`](keys::KeySet::from_paserk)) or kept in sync with
//! a running tokend ([`KeySync`](keys::KeySync)). Wire it as an [`AuthInterceptor`](server::AuthInterceptor) for one
//! service or an [`AuthLayer`](server::AuthLayer) with a per-method [`Policy`](server::Policy) for a whole
//! server; handlers read the caller's claims with [`ClaimsExt::claims`](server::ClaimsExt::claims).
//!
//! **Client side**: a [`TokenSource`](client::TokenSource) logs in with service-client
//! credentials (or rotates a user's refresh token), attaches
//! `authorization: Bearer ...` as a tower layer or interceptor, renews ahead
//! of expiry and retries once on `ACCESS_TOKEN_EXPIRED`. An
//! [`ExchangingTokenSource`](client::ExchangingTokenSource) calls onwards on a user's behalf: it trades the
//! inbound token for one meant for the next service ([`ExchangeLayer`](client::ExchangeLayer),
//! [`OnBehalfOf`](client::OnBehalfOf)).
//!
//! ## Modules
//!
//! Each item lives in one module, by concern: [`verify`] (the verifier),
//! [`token`] (claims and the token format), [`keys`] (fixed and synced
//! verification keys), [`revocation`] (the revoked-session list and its
//! feed), [`certs`] (certificate identities and binding), [`error`] (why a
//! call is refused), [`server`] (the `server` feature: the auth layer,
//! policies, and the serving plumbing a resource service may reuse),
//! [`client`] (the `client` feature: token sources and tokend endpoints),
//! [`proto`] (the tokend.v1 messages and client). [`Verifier`], [`Claims`],
//! [`AuthError`] and [`Reason`] are also at the root.
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
//! | `TOKEN_BINDING_MISMATCH` | UNAUTHENTICATED | a certificate-bound token without its certificate | present it over mTLS |
//! | `CHAIN_NOT_ALLOWED` | PERMISSION_DENIED | a delegated token where the method's `forbid_delegated`, `require_actor` or `max_chain_depth` rule refuses its chain | call with a token the rule takes |
//! | `ACTOR_MISMATCH` | UNAUTHENTICATED | a delegated token over mTLS from a service that is not its outermost actor | exchange for your own token |
//!
//! tokend itself also answers `INVALID_CREDENTIALS`, `REFRESH_TOKEN_INVALID`
//! and `REFRESH_TOKEN_REUSED` (log in again), `INVALID_REQUEST` (fix the
//! request), `STORE_UNAVAILABLE` (retry), `LOGIN_THROTTLED` and `OVERLOADED`
//! (RESOURCE_EXHAUSTED: wait the `google.rpc.RetryInfo` delay, see
//! [`Reason::retry_delay`]) and `WRONG_AUDIENCE` (PERMISSION_DENIED: log in
//! for the audience the method needs); its `Exchange` also answers
//! `SUBJECT_NOT_FOR_CALLER`, `EXCHANGE_NOT_ALLOWED`, `CHAIN_NOT_ALLOWED` and
//! `SCOPE_NOT_ALLOWED` (PERMISSION_DENIED: the exchange policy or the
//! subject token does not allow it).
#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The public modules, by concern (each item is in exactly one of them;
// the few every user needs are also at the root):
pub mod certs;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
pub mod error;
pub mod keys;
pub mod proto;
pub mod revocation;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
pub mod token;
pub mod verify;

// Their parts, private: re-exported from the modules above.
#[cfg(feature = "client")]
mod background;
mod cache;
#[cfg(feature = "server")]
mod codec;
#[cfg(feature = "client")]
mod connect;
#[cfg(feature = "client")]
mod key_sync;
#[cfg(feature = "server")]
mod listener;
#[cfg(feature = "server")]
mod metrics_endpoint;
mod observe;
#[cfg(any(feature = "server", feature = "client"))]
mod ready;
mod reason;
#[cfg(feature = "server")]
mod reloadable;
#[cfg(test)]
mod test_support;
#[cfg(feature = "server")]
mod tls;
#[cfg(feature = "server")]
mod trace;
#[cfg(test)]
mod vectors;

pub use error::{AuthError, Reason};
pub use token::Claims;
pub use verify::Verifier;
