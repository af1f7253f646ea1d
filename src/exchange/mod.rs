//! On-behalf-of calls (RFC 8693 delegation): the exchange policy, which
//! says per calling service which audiences, scopes, lifetimes and actor
//! chains `Exchange` may hand out. Deny by default: a caller without a row
//! for the audience gets `EXCHANGE_NOT_ALLOWED`.
//!
//! - [`policy`]: the TOML rows, parsed and checked (`tokend exchange-policy
//!   check FILE` runs the same checks);
//! - [`reload`]: the policy in force, reloaded when its file changes or on
//!   SIGHUP (a broken update is logged and the previous policy kept).
//!
//! The decision itself is [`Authority::exchange`](crate::authority::Authority::exchange).

pub mod policy;
pub mod reload;

pub use policy::{ExchangePolicy, ExchangeRule, PolicyError};
pub use reload::PolicySource;
