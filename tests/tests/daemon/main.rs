//! The `daemon` part: the daemon's socket, peer credentials, signals, health and config errors
//! (`daemon`), the socket's mode never set through a symlink (`daemon_socket`), and SIGHUP
//! reloads (`reload`).
//!
//! Run with `scripts/test daemon` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test daemon` once they are installed.

mod daemon;
mod daemon_socket;
mod reload;
