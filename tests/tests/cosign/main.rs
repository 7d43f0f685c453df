//! The `cosign` part: `sigstore-kms-keyward` with the real cosign (v2.6.5) and a local registry,
//! for keys in the local backend, SoftHSM and OpenBao, and a policy that refuses cosign for a
//! key notation may use (`cosign`).
//!
//! Run with `scripts/test cosign` (builds cosign once, installs and starts the peers), or
//! `cargo test -p keyward-tests --test cosign` once they are installed.

mod cosign;
