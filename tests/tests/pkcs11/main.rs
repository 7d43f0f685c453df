//! The `pkcs11` part: the PKCS#11 backend on SoftHSM2 (`pkcs11`), and tokens that change
//! underneath it and PIN handling (`pkcs11_recovery`).
//!
//! Run with `scripts/test pkcs11` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test pkcs11` once they are installed.

mod pkcs11;
mod pkcs11_recovery;
