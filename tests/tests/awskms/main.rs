//! The `awskms` part: the AWS KMS backend on a real local-kms (`awskms`) and when things go
//! wrong (`awskms_faults`); `keyward keys delete` scheduling a KMS deletion (`awskms_delete`).
//!
//! Run with `scripts/test awskms` (installs and starts the peers), or
//! `cargo test -p keyward-tests --test awskms` once they are installed.

mod awskms;
mod awskms_delete;
mod awskms_faults;
