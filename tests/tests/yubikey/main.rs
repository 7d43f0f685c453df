//! The `yubikey` part: the YubiKey backend on a shimmed virtual PIV card (`yubikey`), and on a
//! physical YubiKey when `KEYWARD_TEST_YUBIKEY_SERIAL` names one (`yubikey_hardware`).
//!
//! Run with `scripts/test yubikey` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test yubikey` once they are installed.

mod yubikey;
mod yubikey_hardware;
