//! The `pkcs11-module` part: `libkeyward_pkcs11.so` driven by the real PKCS#11 consumers
//! against a real agent whose keys live in the local backend and in SoftHSM (through the agent's
//! own pkcs11 backend). Every signature is verified by `openssl` with the public key the agent
//! exports, or by the consumer's own verifier, which is also shown to refuse a wrong CA.
//!
//! Run with `scripts/test pkcs11-module` (installs the consumers and builds the module), or
//! `cargo build -p keyward-pkcs11 && cargo test -p keyward-tests --test pkcs11-module` once they
//! are installed.

mod in_process;
mod java;
mod openssl_engine;
mod pkcs11_tool;
mod policy;
