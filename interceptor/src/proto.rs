//! The generated tokend.v1 API: its messages and its client (what key sync,
//! the revocation watch and the token source call, and what a service that
//! calls tokend directly uses). Checked in under `src/generated/` from
//! tokend's `proto/` by `make proto-gen`, so this crate has no build step;
//! tokend generates its server from the same file, reusing these types.
//!
//! The client has no `connect`: build a channel with
//! [`TokendEndpoint`](crate::client::TokendEndpoint) (TLS, timeouts) or tonic's
//! `Channel`, then `TokenServiceClient::new(channel)`.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Package `tokend`.
pub mod tokend {
    /// Version 1 of the tokend API (`tokend.v1`).
    pub mod v1 {
        include!("generated/tokend.v1.rs");
    }
}
