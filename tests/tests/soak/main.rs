//! The `soak` part: load and fault runs (`soak`), slow and idle clients (`idle_clients`).
//!
//! Run with `scripts/test soak` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test soak` once they are installed.

mod idle_clients;
mod soak;
