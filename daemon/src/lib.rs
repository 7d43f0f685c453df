//! `keywardd`, the keyward signing agent, as a library: the binary is a thin `main` around
//! [`server::run`], and tests can run the same code.
//!
//! A request goes: Unix socket -> the caller layer ([`grpc::layer`], [`auth`]) -> the gRPC
//! adapter ([`grpc::signer`]) -> the signing core ([`signing`]: key lookup in [`keys`], input
//! checks, policies, audit through [`audited`]) -> backend -> verification of the signature ->
//! reply. Errors become gRPC statuses in one place ([`error::to_status`]). The ssh-agent socket
//! ([`ssh_agent`]) is a second front-end over the same signing core.

pub mod activation;
pub mod audit;
pub mod audited;
pub mod auth;
pub mod backends;
pub mod certs;
pub mod config;
pub mod deadline;
pub mod error;
pub mod grpc;
pub mod hardening;
pub mod keys;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod openpgp;
pub mod paths;
pub mod plugin_check;
pub mod plugin_dir;
pub mod plugin_exec;
pub mod plugin_host;
pub mod policy;
pub mod protection;
pub mod ratelimit;
pub mod reload;
pub mod server;
pub mod shown;
pub mod signing;
pub mod ssh_agent;
pub mod state;
pub mod status;
pub mod tls;
pub mod transport;
