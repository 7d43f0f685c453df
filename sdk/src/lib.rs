//! Rust client for the keyward signing agent.
//!
//! `keywardd` holds the private keys; this crate asks it for what clients may have: the list of
//! keys, a public key with its certificate chain, and signatures. Nothing here ever sees private
//! key material.
//!
//! On a Unix socket the client first checks that it talks to its own agent: the socket's
//! directory and the process behind it must belong to the caller, to root, or to the uid in
//! `KEYWARD_AGENT_UID` ([`ConnectOptions::agent_uid`]); see [`Client::connect_with`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyward_sdk::Error> {
//! use keyward_sdk::{Client, SignOptions};
//!
//! let client = Client::connect_default().await?; // $KEYWARD_SOCK or the default socket
//! for key in client.list_keys().await? {
//!     println!("{} ({})", key.key_id, key.key_spec().name());
//! }
//! let signature = client
//!     .sign_message("release", b"hello", &SignOptions::default())
//!     .await?;
//! let public_key = client.public_key("release").await?;
//! keyward_sdk::verify_message(
//!     &public_key.der,
//!     signature.algorithm,
//!     b"hello",
//!     &signature.bytes,
//!     signature.format,
//! )?;
//! # Ok(()) }
//! ```

pub mod algorithm;
pub mod audit;
mod client;
pub mod encoding;
mod error;
pub mod jwk;
#[cfg(feature = "pgp")]
pub mod pgp;
mod socket;
mod trust;
pub mod verify;
pub mod x509;

pub use algorithm::{HashAlgorithm, RsaPadding, algorithm_for};
pub use client::{Client, PublicKey, SignOptions, Signature};
pub use error::Error;
pub use keyward_proto::v1::{KeyInfo, KeySpec, SignatureAlgorithm, SignatureFormat};
pub use socket::{SOCKET_ENV, default_socket_path};
/// The gRPC status code of an agent error ([`Error::code`]).
pub use tonic::Code;
pub use trust::{AGENT_UID_ENV, ConnectOptions};
pub use verify::{digest, verify_digest, verify_message};
