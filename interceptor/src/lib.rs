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
//! of expiry and retries once on `ACCESS_TOKEN_EXPIRED`. An
//! [`ExchangingTokenSource`] calls onwards on a user's behalf: it trades the
//! inbound token for one meant for the next service ([`ExchangeLayer`],
//! [`OnBehalfOf`]).
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

#[cfg(feature = "client")]
mod background;
mod cache;
mod certs;
#[cfg(feature = "client")]
mod client;
mod codec;
#[cfg(feature = "client")]
mod connect;
mod error;
#[cfg(feature = "client")]
mod key_sync;
mod keys;
#[cfg(feature = "server")]
mod listener;
#[cfg(feature = "server")]
mod metrics_endpoint;
mod observe;
pub mod proto;
#[cfg(any(feature = "server", feature = "client"))]
mod ready;
mod reason;
#[cfg(feature = "server")]
mod reloadable;
mod revocation;
#[cfg(feature = "server")]
mod server;
#[cfg(test)]
mod test_support;
#[cfg(feature = "server")]
mod tls;
mod token;
#[cfg(feature = "server")]
mod trace;
#[cfg(test)]
mod vectors;
mod verify;

pub use certs::{
    CertificateIdentity, CertificateNaming, MAX_CERTIFICATE_NAMES, MAX_IDENTITY_LEN, TlsError,
    is_certificate_identity, thumbprint,
};
pub use codec::{RequestCodec, RequestDecoder};
pub use error::{AuthError, Invalid};
pub use keys::{KeyError, KeyRing, KeySet, key_id};
pub use reason::{ERROR_DOMAIN, Reason};
pub use revocation::{DEFAULT_REVOCATION_CAPACITY, RevocationList, StalePolicy};
pub use token::{
    Actor, ActorChain, Claims, Confirmation, Footer, MAX_CHAIN_DEPTH, MAX_FOOTER_LEN,
    MAX_TOKEN_LEN, TOKEN_HEADER, TOKEN_TYPE,
};
pub use verify::{
    Clock, DEFAULT_CACHE_CAPACITY, DEFAULT_LEEWAY, PeerCertificates, SystemClock, Verifier,
    VerifierBuilder,
};

#[cfg(feature = "client")]
pub use background::Background;
#[cfg(feature = "client")]
pub use client::{
    BearerInterceptor, BearerLayer, BearerService, ClientGrant, CurrentToken,
    DEFAULT_EXCHANGE_CACHE, ExchangeLayer, ExchangeService, ExchangingTokenSource, OnBehalfOf,
    TokenSource,
};
#[cfg(feature = "client")]
pub use connect::{ConnectError, TokendEndpoint};
#[cfg(feature = "client")]
pub use key_sync::{KeySync, KeySyncConfig};
#[cfg(feature = "client")]
pub use revocation::RevocationWatch;

#[cfg(feature = "server")]
pub use listener::{
    Connection, DEFAULT_MAX_CONNECTION_AGE, Incoming, Limits, Listener, raise_open_files_limit,
};
#[cfg(feature = "server")]
pub use metrics_endpoint::serve_metrics;
#[cfg(feature = "server")]
pub use reloadable::{MAX_RELOADABLE_BYTES, ReadError, Reloadable, read_bounded};
#[cfg(feature = "server")]
pub use server::{
    AuthInterceptor, AuthLayer, AuthService, ClaimsExt, Delegation, Policy, Rule, VerifiedClaims,
    bearer_token, peer_certificates,
};
#[cfg(feature = "server")]
pub use tls::{ServerTls, TlsFiles};
#[cfg(feature = "server")]
pub use trace::{SpanHook, TraceLayer, TraceParent, TraceService};
