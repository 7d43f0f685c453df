//! The `azurekv` part: the Azure Key Vault backend on a real lowkey-vault (`azurekv`) and its
//! credentials and TLS (`azurekv_auth`); `keyward keys delete` soft-deleting a key
//! (`azurekv_delete`).
//!
//! Run with `scripts/test azurekv` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test azurekv` once they are installed.

mod azurekv;
mod azurekv_auth;
mod azurekv_delete;
