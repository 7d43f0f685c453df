//! Signing with an unlocked key through OpenSSL.

use keyward_plugin_api::verify::message_digest;
use keyward_plugin_api::{BackendError, EcdsaFormat, SignInput, Signature, SignatureAlgorithm};
use openssl::ecdsa::EcdsaSig;
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Signer};

use crate::keyfile::LoadedKey;

/// Signs `input` (a digest for ECDSA and RSA, the message for Ed25519) with `key`. ECDSA comes
/// out as DER; the daemon converts it if the client asked for `r || s`.
pub(crate) fn sign(
    key: &LoadedKey,
    algorithm: SignatureAlgorithm,
    input: SignInput<'_>,
) -> Result<Signature, BackendError> {
    if !key.spec.supports(algorithm) {
        return Err(BackendError::InvalidInput(format!(
            "a {} key cannot sign with {algorithm}",
            key.spec
        )));
    }
    let failed = |e: openssl::error::ErrorStack| {
        BackendError::Internal(format!("{algorithm} signing failed: {e}"))
    };
    let bytes = match (algorithm.hash(), input) {
        (None, SignInput::Message(message)) => Signer::new_without_digest(&key.private)
            .and_then(|mut signer| signer.sign_oneshot_to_vec(message))
            .map_err(failed)?,
        (Some(_), SignInput::Digest(digest)) if algorithm.is_ecdsa() && key.ec.is_some() => {
            let ec = key.ec.as_ref().expect("checked by the guard");
            EcdsaSig::sign(digest, ec)
                .and_then(|sig| sig.to_der())
                .map_err(failed)?
        }
        (Some(hash), SignInput::Digest(digest)) => {
            let mut ctx = PkeyCtx::new(&key.private).map_err(failed)?;
            ctx.sign_init().map_err(failed)?;
            if !algorithm.is_ecdsa() {
                let md = message_digest(hash);
                ctx.set_signature_md(md).map_err(failed)?;
                if algorithm.is_rsa_pss() {
                    ctx.set_rsa_padding(Padding::PKCS1_PSS).map_err(failed)?;
                    ctx.set_rsa_mgf1_md(md).map_err(failed)?;
                    ctx.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                        .map_err(failed)?;
                } else {
                    ctx.set_rsa_padding(Padding::PKCS1).map_err(failed)?;
                }
            }
            let mut signature = Vec::new();
            ctx.sign_to_vec(digest, &mut signature).map_err(failed)?;
            signature
        }
        (Some(_), SignInput::Message(_)) | (None, SignInput::Digest(_)) => {
            return Err(BackendError::InvalidInput(format!(
                "{algorithm} got the wrong kind of input"
            )));
        }
    };
    Ok(Signature {
        bytes,
        ecdsa_format: EcdsaFormat::Der,
        key_version: None,
    })
}
