//! The `parsec` part: the Parsec backend against a real Parsec service (parsec-service 1.5.0)
//! whose TPM provider runs on a software TPM and whose PKCS#11 provider runs on SoftHSM2:
//! keys made through keyward in both providers pass the conformance suite with the algorithms
//! their PSA policies permit (`parsec`); a stopped service is UNAVAILABLE and a started one
//! serves again (`parsec_faults`).
//!
//! Run with `scripts/test parsec` (builds Parsec once, ~5 minutes), or `cargo test -p
//! keyward-tests --test parsec` once it is built.

mod parsec;
mod parsec_faults;

use keyward_tests::parsec::Parsec;
use keyward_tests::peers::{Peer, require};

/// A running Parsec with its peers, or `None` (after `skipped: ...`) when one is missing.
pub fn parsec() -> Option<Parsec> {
    let binary = require(Peer::Parsec)?;
    require(Peer::Swtpm)?;
    require(Peer::SoftHsm)?;
    Some(Parsec::start(&binary))
}

/// The keyward backends on the two providers.
pub const ON_TPM: &str = "parsec-tpm";
/// See [`ON_TPM`].
pub const ON_PKCS11: &str = "parsec-p11";

/// A daemon with a parsec backend on each provider of `parsec`.
pub async fn daemon(parsec: &Parsec) -> keyward_tests::TestDaemon {
    keyward_tests::TestDaemon::builder()
        .extra_toml(&parsec.backend_toml(ON_TPM, "tpm"))
        .extra_toml(&parsec.backend_toml(ON_PKCS11, "pkcs11"))
        .start()
        .await
}
