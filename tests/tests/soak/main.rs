//! The `soak` part: load and fault runs (`soak`).
//!
//! Run with `scripts/test soak` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test soak` once they are installed.

mod soak;
