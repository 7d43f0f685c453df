//! The `vault` part: the Vault/OpenBao transit backend on a real OpenBao (`vault`) and its
//! auth methods (`vault_auth`); `keyward keys delete` and `deletion_allowed` (`vault_delete`).
//!
//! Run with `scripts/test vault` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test vault` once they are installed.

mod vault;
mod vault_auth;
mod vault_delete;
