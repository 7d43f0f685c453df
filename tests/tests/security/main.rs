//! The `security` part: per-key policy (`policy`), the tamper-evident audit log (`audit`),
//! the mutual-TLS listener (`mtls`), process hardening (`hardening`), and clients that talk
//! only to their own agent (`trust`).
//!
//! Run with `scripts/test security` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test security` once they are installed.

mod audit;
mod hardening;
mod mtls;
mod policy;
mod trust;
