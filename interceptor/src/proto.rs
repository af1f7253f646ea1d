//! The generated tokend.v1 API: messages and client (what key sync, the
//! revocation watch and the token source call), and with the
//! `token-service` feature the server that tokend itself implements.

#![allow(missing_docs, clippy::all)]

/// Package `tokend.v1`.
pub mod tokend {
    /// Version 1 of the tokend API.
    pub mod v1 {
        tonic::include_proto!("tokend.v1");

        /// The generated server (messages from above; a codec that answers
        /// an undecodable request INVALID_ARGUMENT).
        #[cfg(feature = "token-service")]
        mod server {
            include!(concat!(env!("OUT_DIR"), "/server/tokend.v1.rs"));
        }
        #[cfg(feature = "token-service")]
        pub use server::token_service_server;
    }
}

/// Encoded `FileDescriptorSet` of the tokend.v1 API, for server reflection.
#[cfg(feature = "token-service")]
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tokend_descriptor.bin"));
