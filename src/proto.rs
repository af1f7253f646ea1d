//! Generated code for the public API, and the descriptor set that server
//! reflection serves.

#![allow(missing_docs, clippy::all)]

/// Package `tokend.v1`.
pub mod tokend {
    /// Version 1 of the tokend API: messages, server, and the client.
    pub mod v1 {
        tonic::include_proto!("tokend.v1");

        /// The generated client (tonic's codec; messages from above).
        mod client {
            include!(concat!(env!("OUT_DIR"), "/client/tokend.v1.rs"));
        }
        pub use client::token_service_client;
    }
}

/// The demo.v1 client of the example resource server, for integration tests.
#[doc(hidden)]
pub mod demo {
    /// Version 1 of the demo API.
    pub mod v1 {
        tonic::include_proto!("demo.v1");
    }
}

/// Encoded `FileDescriptorSet` of `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tokend_descriptor.bin"));
