//! The floor: the same signature computed in this process with OpenSSL, one thread, no IPC.
//!
//! Each signature builds its own OpenSSL context (`PkeyCtx` for ECDSA and RSA over a digest,
//! `Signer` for Ed25519), as a one-shot signer does; the key is generated once, here.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use keyward_sdk::{KeySpec, SignatureAlgorithm};
use openssl::ec::{EcGroup, EcKey};
use openssl::md::Md;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer};

use crate::latency::Input;
use crate::stats::Summary;

/// A private key and how to sign with it.
struct FloorSigner {
    key: PKey<Private>,
    algorithm: SignatureAlgorithm,
}

impl FloorSigner {
    fn new(spec: KeySpec, algorithm: SignatureAlgorithm) -> Result<FloorSigner> {
        let ec = |nid: Nid| -> Result<PKey<Private>> {
            let group = EcGroup::from_curve_name(nid)?;
            Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
        };
        let rsa =
            |bits: u32| -> Result<PKey<Private>> { Ok(PKey::from_rsa(Rsa::generate(bits)?)?) };
        let key = match spec {
            KeySpec::EcP256 => ec(Nid::X9_62_PRIME256V1)?,
            KeySpec::EcP384 => ec(Nid::SECP384R1)?,
            KeySpec::EcP521 => ec(Nid::SECP521R1)?,
            KeySpec::Rsa2048 => rsa(2048)?,
            KeySpec::Rsa3072 => rsa(3072)?,
            KeySpec::Rsa4096 => rsa(4096)?,
            KeySpec::Ed25519 => PKey::generate_ed25519()?,
            KeySpec::Unspecified => bail!("no key type given"),
        };
        Ok(FloorSigner { key, algorithm })
    }

    fn sign(&self, input: &Input) -> Result<Vec<u8>> {
        use SignatureAlgorithm::*;
        let mut signature = Vec::new();
        match (self.algorithm, input) {
            (Ed25519, Input::Message(message)) => {
                signature = Signer::new_without_digest(&self.key)?.sign_oneshot_to_vec(message)?;
            }
            (EcdsaSha256 | EcdsaSha384 | EcdsaSha512, Input::Digest(digest)) => {
                let mut ctx = PkeyCtx::new(&self.key)?;
                ctx.sign_init()?;
                ctx.sign_to_vec(digest, &mut signature)?;
            }
            (algorithm, Input::Digest(digest)) => {
                let (md, pss) = match algorithm {
                    RsaPssSha256 => (Md::sha256(), true),
                    RsaPssSha384 => (Md::sha384(), true),
                    RsaPssSha512 => (Md::sha512(), true),
                    RsaPkcs1Sha256 => (Md::sha256(), false),
                    RsaPkcs1Sha384 => (Md::sha384(), false),
                    RsaPkcs1Sha512 => (Md::sha512(), false),
                    other => bail!("no in-process floor for {} over a digest", other.name()),
                };
                let mut ctx = PkeyCtx::new(&self.key)?;
                ctx.sign_init()?;
                if pss {
                    ctx.set_rsa_padding(Padding::PKCS1_PSS)?;
                    ctx.set_signature_md(md)?;
                    ctx.set_rsa_mgf1_md(md)?;
                    ctx.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
                } else {
                    ctx.set_rsa_padding(Padding::PKCS1)?;
                    ctx.set_signature_md(md)?;
                }
                ctx.sign_to_vec(digest, &mut signature)?;
            }
            (algorithm, Input::Message(_)) => {
                bail!("{} signs a digest, not a message", algorithm.name())
            }
        }
        Ok(signature)
    }
}

/// Times `count` in-process signatures of `input` (after `warmup` unmeasured ones) with a fresh
/// key of `spec`.
pub fn measure(
    spec: KeySpec,
    algorithm: SignatureAlgorithm,
    input: &Input,
    count: usize,
    warmup: usize,
) -> Result<Summary> {
    let signer = FloorSigner::new(spec, algorithm)
        .with_context(|| format!("cannot make an in-process {} key", spec.name()))?;
    for _ in 0..warmup {
        signer.sign(input)?;
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(count);
    let start = Instant::now();
    for _ in 0..count {
        let t0 = Instant::now();
        let signature = signer.sign(input)?;
        latencies.push(t0.elapsed());
        std::hint::black_box(signature);
    }
    Ok(Summary::new(latencies, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_signatures_verify() {
        let digest = vec![7u8; 32];
        let signer = FloorSigner::new(KeySpec::EcP256, SignatureAlgorithm::EcdsaSha256).unwrap();
        let signature = signer.sign(&Input::Digest(digest.clone())).unwrap();
        let mut ctx = PkeyCtx::new(&signer.key).unwrap();
        ctx.verify_init().unwrap();
        assert!(ctx.verify(&digest, &signature).unwrap());

        let message = vec![9u8; 64];
        let signer = FloorSigner::new(KeySpec::Ed25519, SignatureAlgorithm::Ed25519).unwrap();
        let signature = signer.sign(&Input::Message(message.clone())).unwrap();
        let mut verifier = openssl::sign::Verifier::new_without_digest(&signer.key).unwrap();
        assert!(verifier.verify_oneshot(&signature, &message).unwrap());
    }

    #[test]
    fn rsa_pss_floor_signs() {
        let signer = FloorSigner::new(KeySpec::Rsa2048, SignatureAlgorithm::RsaPssSha256).unwrap();
        let signature = signer.sign(&Input::Digest(vec![1u8; 32])).unwrap();
        assert_eq!(signature.len(), 256);
    }
}
