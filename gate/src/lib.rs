//! tokend-gate: an Envoy external-authorization server (`envoy.service.auth.v3.Authorization`,
//! for the `envoy.filters.http.ext_authz` filter) that enforces tokend
//! access tokens in front of services in any language, with the
//! interceptor's verifier, key sync, revocation feed, certificate binding
//! and delegation rules.
//!
//! A request goes: [`request`] reads what Envoy says of it, [`policy`]
//! picks the rule, [`decision`] judges the token with the interceptor,
//! [`answer`] tells Envoy (identity headers, or a refusal the client
//! understands); [`service`] is the gRPC service around them and [`serve`]
//! runs it from the [`config`] flags.

pub mod answer;
pub mod config;
pub mod decision;
pub mod peer;
pub mod policy;
pub mod request;
pub mod serve;
pub mod service;

pub use decision::{Decision, decide};
pub use policy::{Policy, PolicyError};
pub use service::Gate;
