//! Signing with an unlocked key: aws-lc-rs for ECDSA and Ed25519, OpenSSL for the rest.

use keyward_plugin_api::softkey;
use keyward_plugin_api::{BackendError, SignOp, Signature};

use crate::keyfile::LoadedKey;

/// Signs `op` (a digest for ECDSA and RSA, the message for Ed25519) with `key`
/// ([`keyward_plugin_api::softkey::sign`]).
pub(crate) fn sign(key: &LoadedKey, op: SignOp<'_>) -> Result<Signature, BackendError> {
    softkey::sign(
        key.spec,
        &key.private,
        key.ec.as_ref(),
        key.fast.as_ref(),
        op,
    )
}
