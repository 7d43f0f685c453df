//! `libkeyward_pkcs11.so`: a PKCS#11 (Cryptoki 2.40) module that presents the keys of the
//! keyward agent as one token, so that tools which speak only PKCS#11 — OpenSSL's pkcs11
//! engine, `pkcs11-tool`, `osslsigncode`, Java's SunPKCS11 (`jarsigner`, `keytool`) — sign
//! with any key keywardd holds, under its policies and in its audit log.
//!
//! The module is a client of the agent like any other: it connects through `keyward-sdk`
//! (`$KEYWARD_SOCK`, else the default socket) and asks for the key list, public keys and
//! signatures. It never sees private key material and needs no PIN.
//!
//! - [`ffi`]: the C boundary — the only module that uses `unsafe`.
//! - [`module`]: the global state, `C_Initialize`/`C_Finalize`, fork handling, slot and token.
//! - [`session`]: sessions, login state, object search and attributes.
//! - [`objects`]: the objects of each agent key, `CKA_ID`/`CKA_LABEL`, object handles.
//! - [`mechanism`], [`sign`], [`signing`]: mechanisms, signing operations, the length
//!   convention.
//! - [`agent`]: the tokio runtime, the SDK client, agent errors as `CKR_` codes.
//!
//! `docs/pkcs11-module.md` has what each consumer needs to be configured with.

mod agent;
mod ffi;
#[cfg(test)]
mod fixtures;
mod mechanism;
mod module;
mod objects;
mod session;
mod sign;
mod signing;
