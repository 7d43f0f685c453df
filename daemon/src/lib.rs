//! `keywardd`, the keyward signing agent, as a library: the binary is a thin `main` around
//! [`server::run`], and tests can run the same code.
//!
//! A request goes: Unix socket -> peer credentials ([`auth`]) -> key lookup ([`registry`]) ->
//! input checks -> backend -> verification of the signature -> reply ([`signer`]). Errors
//! become gRPC statuses in one place ([`error::to_status`]).

pub mod admin;
pub mod audit;
pub mod auth;
pub mod backends;
pub mod certs;
pub mod config;
pub mod error;
pub mod hardening;
pub mod openpgp;
pub mod paths;
pub mod plugin_host;
pub mod policy;
pub mod ratelimit;
pub mod registry;
pub mod reload;
pub mod server;
pub mod signer;
pub mod state;
pub mod tls;
pub mod transport;
