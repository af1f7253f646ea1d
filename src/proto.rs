//! The public API's generated code, from tokend-interceptor (which ships the
//! `.proto` files, so both crates package on their own): the messages, the
//! server tokend implements, the client, and the descriptor set that server
//! reflection serves.

pub use tokend_interceptor::proto::FILE_DESCRIPTOR_SET;
pub use tokend_interceptor::proto::tokend;
