//! `keyward pubkey`: print a key's public key as PEM, DER or JWK.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::cmd::{Agent, KeyArg, connect};
use crate::output::{EXIT_OK, Failure, pem_text, write_output};

pub const AFTER_HELP: &str = "\
Formats:
  pem  SubjectPublicKeyInfo, PEM (\"-----BEGIN PUBLIC KEY-----\"), the default
  der  SubjectPublicKeyInfo, raw DER bytes
  jwk  RFC 7517 JSON Web Key (kty/crv/x/y for EC, kty/n/e for RSA, kty=OKP/crv=Ed25519/x)

--json prints {key_id, key_spec, key_version, public_key_pem, jwk} instead (jwk is null for a
key JWK cannot express).

Examples:
  keyward pubkey --key release > release.pub.pem
  keyward pubkey --key release --format der --output release.pub.der
  keyward pubkey --key release --format jwk
  keyward pubkey --key release --json | jq -r .public_key_pem";

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
    #[command(flatten)]
    key: KeyArg,
    /// The output encoding
    #[arg(long, value_enum, default_value_t = PubkeyFormat::Pem, conflicts_with = "json")]
    format: PubkeyFormat,
    /// Print JSON (the key, its PEM and its JWK) instead
    #[arg(long)]
    json: bool,
    /// Write to FILE instead of stdout
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Runs `keyward pubkey`.
pub async fn run(agent: &Agent, args: PubkeyArgs) -> Result<i32, Failure> {
    let key_id = args.key.id();
    let key = connect(agent).await?.public_key(key_id).await?;
    if args.json {
        #[derive(serde::Serialize)]
        struct PubkeyJson<'a> {
            key_id: &'a str,
            key_spec: &'static str,
            key_version: &'a str,
            public_key_pem: &'a str,
            jwk: Option<serde_json::Value>,
        }
        let jwk = keyward_sdk::jwk::public_key_jwk(&key.der)
            .ok()
            .and_then(|jwk| serde_json::from_str(&jwk).ok());
        let json = PubkeyJson {
            key_id: &key.info.key_id,
            key_spec: key.info.key_spec().name(),
            key_version: &key.key_version,
            public_key_pem: &key.pem,
            jwk,
        };
        let mut text = serde_json::to_string_pretty(&json)
            .map_err(|e| Failure::new(format!("cannot encode the output as JSON: {e}")))?;
        text.push('\n');
        write_output(args.output.as_deref(), text.as_bytes())?;
        return Ok(EXIT_OK);
    }
    let bytes = match args.format {
        PubkeyFormat::Pem => pem_text(&key.pem).into_bytes(),
        PubkeyFormat::Der => key.der,
        PubkeyFormat::Jwk => {
            let jwk = keyward_sdk::jwk::public_key_jwk(&key.der).map_err(|e| {
                Failure::new(format!(
                    "cannot express the public key of {:?} as a JWK: {e}",
                    key_id
                ))
            })?;
            format!("{jwk}\n").into_bytes()
        }
    };
    write_output(args.output.as_deref(), &bytes)?;
    Ok(EXIT_OK)
}
