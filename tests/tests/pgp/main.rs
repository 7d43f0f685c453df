//! The `pgp` part: OpenPGP certificates and signatures checked by gpg and sq (`pgp`).
//!
//! Run with `scripts/test pgp` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test pgp` once they are installed.

mod pgp;
