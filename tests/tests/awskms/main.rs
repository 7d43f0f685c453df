//! The `awskms` part: the AWS KMS backend on a real local-kms (`awskms`) and when things go
//! wrong (`awskms_faults`).
//!
//! Run with `scripts/test awskms` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test awskms` once they are installed.

mod awskms;
mod awskms_faults;
