//! The `security` part: per-key policy (`policy`), the tamper-evident audit log (`audit`),
//! the mutual-TLS listener (`mtls`), process hardening (`hardening`), clients that talk only
//! to their own agent (`trust`), inputs bounded before they cost anything (`bounds`), transport limits against an abusive client (`abuse`), the cost
//! of executable checks (`executables`) and of unknown key ids (`unknown_keys`).
//!
//! Run with `scripts/test security` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test security` once they are installed.

mod abuse;
mod audit;
mod bounds;
mod executables;
mod hardening;
mod mtls;
mod policy;
mod trust;
mod unknown_keys;
