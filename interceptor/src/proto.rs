//! The generated tokend.v1 client: what key sync and the token source call.

#![allow(missing_docs, clippy::all)]

/// Package `tokend.v1`.
pub mod tokend {
    /// Version 1 of the tokend API.
    pub mod v1 {
        tonic::include_proto!("tokend.v1");
    }
}
