//! The gRPC transport of the agent socket: what sits between an accepted Unix-socket
//! connection and the services, kept in one module so that a change of gRPC library touches
//! only this module and `server.rs`'s assembly.
//!
//! - [`unix_incoming`]: accepted connections, each wrapped in [`FixAuthority`], so that every
//!   stock gRPC client works with its default options (grpc-core and grpc-java send the socket
//!   path as `:authority`, which h2 refuses; see [`authority`]).
//! - [`reflection`]: server reflection that lists exactly what the socket serves.

pub mod authority;
mod stream;

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

pub use stream::FixAuthority;

/// The connections accepted on the agent socket, ready for tonic's
/// `serve_with_incoming_shutdown`.
pub fn unix_incoming(
    listener: UnixListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<FixAuthority<UnixStream>>> {
    UnixListenerStream::new(listener).map(|accepted| accepted.map(FixAuthority::new))
}

/// Server reflection for the agent socket: the client API (`keyward.v1`: `Signer`,
/// `KeyAdmin`), gRPC health and reflection itself. The plugin protocol is not served there,
/// so it is not described.
pub fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    String,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(keyward_proto::CLIENT_API_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("cannot build the reflection service: {e}"))
}
