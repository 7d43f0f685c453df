//! The contract between the keyward daemon and its backends.
//!
//! A backend (local key files, a PKCS#11 token, a cloud KMS, ...) implements [`Backend`]. The
//! daemon owns everything around it: authentication, policy, audit, input validation and the
//! verification of every signature a backend returns. This crate also holds the types both sides
//! share ([`KeySpec`], [`SignatureAlgorithm`], [`HashAlgorithm`], [`SignOp`]: a sign operation
//! that is valid by construction), the error kinds
//! ([`BackendError`]), the ECDSA encoding helpers ([`encoding`]) and a verifier that checks any
//! signature against a SubjectPublicKeyInfo ([`verify`]).
//!
//! A backend crate depends on this crate alone, never on the daemon or on another backend.

pub mod awslc;
mod backend;
pub mod encoding;
mod error;
mod op;
pub mod pemfile;
pub mod plugin;
pub mod ratelimit;
pub mod retry;
pub mod secret;
pub mod softkey;
pub mod status;
mod types;
pub mod verify;

pub use backend::{Backend, Deletion, DeletionOutcome, Health, KeyDescription, Signature};
pub use error::BackendError;
pub use op::{OwnedSignOp, Prehashed, SignInput, SignOp, SignOpError};
pub use secret::{Secret, read_secret};
pub use types::{EcdsaFormat, HashAlgorithm, KeySpec, SignatureAlgorithm, is_valid_key_name};
