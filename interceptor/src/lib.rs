//! tokend-interceptor: verify tokend access tokens in tonic services, and
//! attach them to outgoing calls.

pub mod proto;
pub mod reason;
pub mod token;

pub use reason::{ERROR_DOMAIN, Reason};
pub use token::{Claims, Footer};
