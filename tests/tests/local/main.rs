//! The `local` part: the conformance suite on the local backend through a real daemon
//! (`local_backend`), and the SDK's verifier against the `openssl` CLI (`sdk_verify`).
//!
//! Run with `scripts/test local` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test local` once they are installed.

mod local_backend;
mod sdk_verify;
