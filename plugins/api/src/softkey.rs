//! Signing with a private key held in this process: the `local` backend's key files and the
//! `pgp` backend's unlocked OpenPGP keys use the same code. ECDSA and Ed25519 go through
//! aws-lc-rs when the caller has the key as an [`AwsLcSigner`] (faster), the rest through
//! OpenSSL.

use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Signer};

use crate::awslc::AwsLcSigner;
use crate::verify::message_digest;
use crate::{BackendError, EcdsaFormat, KeySpec, SignOp, Signature};

/// Signs `op` (a digest for ECDSA and RSA, the message for Ed25519) with `private`, a key
/// of `spec`; with `fast` (the same key in aws-lc-rs) when it can sign `op`. `ec`, the same key as an `EC_KEY`, makes ECDSA skip OpenSSL 3's per-call EVP
/// context set-up, which costs more than the signature itself. RSA-PSS uses salt = hash
/// length. ECDSA comes out as DER; the daemon converts it if the client asked for `r || s`.
///
/// The shape of `op` is checked by its type; whether its algorithm fits this key is checked
/// here, because only the key's holder knows its spec.
pub fn sign(
    spec: KeySpec,
    private: &PKey<Private>,
    ec: Option<&EcKey<Private>>,
    fast: Option<&AwsLcSigner>,
    op: SignOp<'_>,
) -> Result<Signature, BackendError> {
    let algorithm = op.algorithm();
    if !spec.supports(algorithm) {
        return Err(BackendError::InvalidInput(format!(
            "a {spec} key cannot sign with {algorithm}"
        )));
    }
    if let Some(signed) = fast.and_then(|fast| fast.sign(op)) {
        return Ok(Signature {
            bytes: signed.map_err(BackendError::Internal)?,
            ecdsa_format: EcdsaFormat::Der,
            key_version: None,
        });
    }
    let failed = |e: openssl::error::ErrorStack| {
        BackendError::Internal(format!("{algorithm} signing failed: {e}"))
    };
    let bytes = match (op, ec) {
        (SignOp::Ed25519 { message }, _) => Signer::new_without_digest(private)
            .and_then(|mut signer| signer.sign_oneshot_to_vec(message))
            .map_err(failed)?,
        (SignOp::Prehashed(prehashed), Some(ec)) if algorithm.is_ecdsa() => {
            EcdsaSig::sign(prehashed.digest(), ec)
                .and_then(|sig| sig.to_der())
                .map_err(failed)?
        }
        (SignOp::Prehashed(prehashed), _) => {
            let mut ctx = PkeyCtx::new(private).map_err(failed)?;
            ctx.sign_init().map_err(failed)?;
            if !algorithm.is_ecdsa() {
                let md = message_digest(prehashed.hash());
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
            ctx.sign_to_vec(prehashed.digest(), &mut signature)
                .map_err(failed)?;
            signature
        }
    };
    Ok(Signature {
        bytes,
        ecdsa_format: EcdsaFormat::Der,
        key_version: None,
    })
}
