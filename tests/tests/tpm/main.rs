//! The `tpm` part: the TPM 2.0 backend on a software TPM (Debian's swtpm, fresh state per test):
//! keys created in the TPM pass the conformance suite and survive restarts (`tpm`); the PIN is
//! refused once and never retried into the dictionary-attack lockout, which is reported with
//! how long it lasts (`tpm_pin`); a TPM that dies mid-run is UNAVAILABLE and recovers when it
//! is back (`tpm_faults`); notation signs with a TPM key certified by `keyward cert issue`
//! (`tpm_notation`).
//!
//! Run with `scripts/test tpm` (installs the peers), or `cargo test -p keyward-tests --test
//! tpm` once swtpm and tpm2-tools are installed.

mod common;
mod tpm;
mod tpm_faults;
mod tpm_notation;
mod tpm_pin;
