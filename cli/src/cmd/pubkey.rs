//! `keyward pubkey`: print a key's public key as PEM, DER or JWK.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::cmd::{Agent, connect};
use crate::output::{EXIT_OK, Failure, pem_text, write_output};

pub const AFTER_HELP: &str = "\
Formats:
  pem  SubjectPublicKeyInfo, PEM (\"-----BEGIN PUBLIC KEY-----\"), the default
  der  SubjectPublicKeyInfo, raw DER bytes
  jwk  RFC 7517 JSON Web Key (kty/crv/x/y for EC, kty/n/e for RSA, kty=OKP/crv=Ed25519/x)

Examples:
  keyward pubkey release > release.pub.pem
  keyward pubkey release --format der --output release.pub.der
  keyward pubkey release --format jwk";

/// The encodings `keyward pubkey` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PubkeyFormat {
    /// SubjectPublicKeyInfo, PEM
    Pem,
    /// SubjectPublicKeyInfo, DER
    Der,
    /// JSON Web Key
    Jwk,
}

/// `keyward pubkey`
#[derive(Debug, Args)]
pub struct PubkeyArgs {
    /// The key's id
    #[arg(value_name = "KEY_ID")]
    key_id: String,
    /// The output encoding
    #[arg(long, value_enum, default_value_t = PubkeyFormat::Pem)]
    format: PubkeyFormat,
    /// Write to FILE instead of stdout
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Runs `keyward pubkey`.
pub async fn run(agent: &Agent, args: PubkeyArgs) -> Result<i32, Failure> {
    let key = connect(agent).await?.public_key(&args.key_id).await?;
    let bytes = match args.format {
        PubkeyFormat::Pem => pem_text(&key.pem).into_bytes(),
        PubkeyFormat::Der => key.der,
        PubkeyFormat::Jwk => {
            let jwk = keyward_sdk::jwk::public_key_jwk(&key.der).map_err(|e| {
                Failure::new(format!(
                    "cannot express the public key of {:?} as a JWK: {e}",
                    args.key_id
                ))
            })?;
            format!("{jwk}\n").into_bytes()
        }
    };
    write_output(args.output.as_deref(), &bytes)?;
    Ok(EXIT_OK)
}
