//! The gRPC transport of the agent socket: what sits between an accepted Unix-socket
//! connection and the services, kept in one module so that a change of gRPC library touches
//! only this module and `server.rs`'s assembly.
//!
//! - [`unix_incoming`]: accepted connections, admitted within the connection limits and
//!   wrapped in [`Guarded`] (idle and header deadlines, see [`guard`]) around [`FixAuthority`],
//!   so that every stock gRPC client works with its default options (grpc-core and grpc-java
//!   send the socket path as `:authority`, which h2 refuses; see [`authority`]).
//! - [`server`]: the HTTP/2 server with the `[limits]` on streams per connection, header list
//!   size and flow-control windows.
//! - [`reflection`]: server reflection that lists exactly what the socket serves.
//! - [`set_socket_mode`]: the socket file's mode, set without following a symlink.

pub mod authority;
pub mod guard;
mod stream;

use std::os::fd::AsRawFd;
use std::path::Path;

use std::sync::Arc;

use rustix::fs::{FileType, Mode, OFlags};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

pub use guard::{Admission, ConnectionLimits, Guarded};
pub use stream::FixAuthority;

use crate::limits::Limits;

/// The connections accepted on the agent socket, ready for tonic's
/// `serve_with_incoming_shutdown`. A connection over `max_connections` or
/// `max_connections_per_uid` is closed right away (the HTTP/2 server never sees it).
pub fn unix_incoming(
    listener: UnixListener,
    admission: Arc<Admission>,
) -> impl tokio_stream::Stream<Item = std::io::Result<Guarded<UnixStream>>> {
    UnixListenerStream::new(listener).filter_map(move |accepted| match accepted {
        Err(e) => Some(Err(e)),
        Ok(stream) => {
            let uid = stream.peer_cred().ok().map(|cred| cred.uid());
            admission
                .admit(uid)
                .map(|permit| Ok(Guarded::new(stream, permit)))
        }
    })
}

/// The HTTP/2 server of both listeners, with the `[limits]` that HTTP/2 itself enforces: at
/// most `max_concurrent_streams` requests in flight per connection (more are refused with
/// `REFUSED_STREAM`), header lists of at most `max_header_list_bytes`, and at most
/// `stream_window_bytes` per request and `connection_window_bytes` per connection sent ahead
/// of what the daemon has read (fixed windows: no adaptive growth a client could drive).
pub fn server(limits: &Limits) -> Server {
    Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_bytes)
        .initial_stream_window_size(limits.stream_window_bytes)
        .initial_connection_window_size(limits.connection_window_bytes)
        .http2_adaptive_window(Some(false))
}

/// Server reflection for the agent socket: the client API (`keyward.v1`: `Signer`,
/// `KeyAdmin`, `Agent`), gRPC health and reflection itself. The plugin protocol is not served there,
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

/// Sets the mode of the socket file at `path` (after `bind`, and again on reload) without
/// following a symlink: the path is opened with `O_PATH | O_NOFOLLOW`, must be a socket owned
/// by this process's uid, and the mode is changed through that handle. A symlink or any other
/// file put in the socket's place (in a directory others can write) is refused, never changed.
pub fn set_socket_mode(path: &Path, mode: u32) -> Result<(), String> {
    let shown = path.display();
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open the socket {shown} to set its mode: {e}"))?;
    let stat =
        rustix::fs::fstat(&fd).map_err(|e| format!("cannot stat the socket {shown}: {e}"))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::Socket {
        return Err(format!(
            "{shown} is no longer the socket keywardd made ({}): something replaced it; check who can write to {}",
            match kind {
                FileType::Symlink => "a symbolic link",
                FileType::RegularFile => "a regular file",
                FileType::Directory => "a directory",
                _ => "not a socket",
            },
            path.parent().unwrap_or(Path::new(".")).display()
        ));
    }
    let uid = rustix::process::geteuid().as_raw();
    if stat.st_uid != uid {
        return Err(format!(
            "{shown} belongs to uid {}, not to keywardd (uid {uid}): something replaced the socket; check who can write to {}",
            stat.st_uid,
            path.parent().unwrap_or(Path::new(".")).display()
        ));
    }
    // fchmod does not take an O_PATH descriptor; its /proc/self/fd link names exactly the
    // inode that was checked (what glibc's fchmodat(AT_SYMLINK_NOFOLLOW) does too).
    rustix::fs::chmod(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| format!("cannot set the mode of {shown}: {e} (is /proc mounted?)"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn the_socket_gets_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        set_socket_mode(&socket, 0o600).unwrap();
        assert_eq!(mode(&socket), 0o600);
        set_socket_mode(&socket, 0o666).unwrap();
        assert_eq!(mode(&socket), 0o666);
    }

    #[test]
    fn a_symlink_or_a_file_in_its_place_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, b"x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let socket = dir.path().join("agent.sock");
        std::os::unix::fs::symlink(&target, &socket).unwrap();
        let error = set_socket_mode(&socket, 0o666).unwrap_err();
        assert!(
            error.contains("a symbolic link") && error.contains("something replaced it"),
            "{error}"
        );
        assert_eq!(mode(&target), 0o600, "the symlink was followed");

        let error = set_socket_mode(&target, 0o666).unwrap_err();
        assert!(error.contains("a regular file"), "{error}");
        assert_eq!(mode(&target), 0o600);
    }
}
