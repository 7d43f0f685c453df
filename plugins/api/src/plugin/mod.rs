//! Backends as separate processes: the `keyward.plugin.v1` protocol.
//!
//! - [`run`] turns a [`Backend`](crate::Backend) into a plugin executable: a Rust plugin's
//!   `main` is one call.
//! - [`RemoteBackend`] is the other side: a [`Backend`](crate::Backend) that forwards every
//!   call to a plugin process over its socket.
//! - [`check`]: the `--check-settings` mode every plugin executable has; [`openpgp`]: the
//!   `--check-openpgp-cert` mode of the pgp plugin, which checks certificates for the daemon.
//!
//! `proto/keyward/plugin/v1/plugin.proto` documents the protocol for plugins in any language.

pub mod check;
mod convert;
pub mod openpgp;
mod remote;
mod serve;

pub use convert::{backend_error_to_status, status_to_backend_error};
pub use remote::RemoteBackend;
pub use serve::{Plugin, run, serve};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The one line a plugin prints on stdout once it is listening.
pub const HANDSHAKE_LINE: &str = "keyward-plugin v1 ready";
/// Environment variable: the socket path the plugin must listen on.
pub const ENV_SOCKET: &str = "KEYWARD_PLUGIN_SOCKET";
/// Environment variable: the backend instance name.
pub const ENV_NAME: &str = "KEYWARD_PLUGIN_NAME";
/// Environment variable: the protocol version the daemon speaks.
pub const ENV_PROTOCOL: &str = "KEYWARD_PLUGIN_PROTOCOL";
pub use crate::status::RETRY_AFTER_METADATA;
