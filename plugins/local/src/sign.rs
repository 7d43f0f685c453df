//! Signing with an unlocked key through OpenSSL.

use keyward_plugin_api::softkey;
use keyward_plugin_api::{BackendError, SignOp, Signature};

use crate::keyfile::LoadedKey;

/// Signs `op` (a digest for ECDSA and RSA, the message for Ed25519) with `key`
/// ([`keyward_plugin_api::softkey::sign`]).
pub(crate) fn sign(key: &LoadedKey, op: SignOp<'_>) -> Result<Signature, BackendError> {
    softkey::sign(key.spec, &key.private, key.ec.as_ref(), op)
}
