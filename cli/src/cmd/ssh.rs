//! `keyward ssh`: a key's public key in OpenSSH's formats, for keys used through keywardd's
//! ssh-agent socket (`[ssh_agent]`, docs/ssh.md).
//!
//! The OpenSSH encoding is built here from the SubjectPublicKeyInfo the agent returns
//! (x509-parser reads it, ssh-key encodes it), independently of the daemon's own conversion
//! (OpenSSL), so the tests that compare `ssh-add -L` with this output check both.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ssh_key::public::{EcdsaPublicKey, Ed25519PublicKey, KeyData, RsaPublicKey};
use ssh_key::{Mpint, PublicKey};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as Parsed;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::cmd::{Agent, connect};
use crate::output::{EXIT_OK, Failure, write_output};

pub const AFTER_HELP: &str = "\
Both print one line. The key must be offered by the agent's ssh-agent socket ([ssh_agent] keys in
keywardd's config) for ssh, ssh-add and git to use it (docs/ssh.md).

Examples:
  keyward ssh pubkey --key login >> ~/.ssh/authorized_keys     # on the server
  keyward ssh allowed-signers --key git-signing --principal me@example.com >> ~/.config/git/allowed_signers
  git config gpg.format ssh
  git config user.signingkey \"$(keyward ssh pubkey --key git-signing)\"";

/// `keyward ssh ...`
#[derive(Debug, Subcommand)]
pub enum SshCommand {
    /// Print the key as an OpenSSH public key line (authorized_keys): TYPE BASE64 KEY_ID
    Pubkey(PubkeyArgs),
    /// Print a git/ssh-keygen allowed_signers line: PRINCIPAL namespaces="..." TYPE BASE64
    AllowedSigners(AllowedSignersArgs),
}

/// `keyward ssh pubkey`
#[derive(Debug, Args)]
pub struct PubkeyArgs {
    /// The key's id
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// Write to FILE instead of stdout
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// `keyward ssh allowed-signers`
#[derive(Debug, Args)]
pub struct AllowedSignersArgs {
    /// The key's id
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// Who signs with it (git: the committer's email); several as a comma-separated list
    #[arg(long, value_name = "EMAIL")]
    principal: String,
    /// The SSHSIG namespaces the key is trusted for, comma-separated (git signs in `git`)
    #[arg(long, value_name = "LIST", default_value = "git")]
    namespaces: String,
    /// Write to FILE instead of stdout
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Runs `keyward ssh ...`.
pub async fn run(agent: &Agent, command: SshCommand) -> Result<i32, Failure> {
    let (key, output, line) = match command {
        SshCommand::Pubkey(args) => (args.key, args.output, None),
        SshCommand::AllowedSigners(args) => {
            let principal = field("--principal", &args.principal, &['"', '#'])?;
            let namespaces = field("--namespaces", &args.namespaces, &['"'])?;
            (args.key, args.output, Some((principal, namespaces)))
        }
    };
    let public = connect(agent).await?.public_key(&key).await?;
    let data = openssh_key_data(&public.der).map_err(|e| {
        Failure::new(format!(
            "key {key:?} has no OpenSSH form: {e}; ssh can use Ed25519, ECDSA P-256/P-384/P-521 and RSA keys"
        ))
    })?;
    let text = match line {
        None => openssh_line(data, &key)?,
        Some((principal, namespaces)) => {
            format!(
                "{principal} namespaces=\"{namespaces}\" {}",
                openssh_line(data, "")?.trim_end()
            )
        }
    };
    write_output(output.as_deref(), format!("{text}\n").as_bytes())?;
    Ok(EXIT_OK)
}

/// A value for an allowed_signers field: not empty, no whitespace, control characters or
/// any of `forbidden` (which would end or change the field).
fn field(flag: &str, value: &str, forbidden: &[char]) -> Result<String, Failure> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || forbidden.contains(&c))
    {
        return Err(Failure::new(format!(
            "{flag} {value:?}: give a non-empty value without spaces, quotes or control characters"
        )));
    }
    Ok(value.to_string())
}

fn openssh_line(data: KeyData, comment: &str) -> Result<String, Failure> {
    PublicKey::new(data, comment)
        .to_openssh()
        .map_err(|e| Failure::new(format!("cannot encode the OpenSSH public key: {e}")))
}

/// The OpenSSH public key of a DER SubjectPublicKeyInfo (Ed25519, ECDSA P-256/384/521, RSA).
pub fn openssh_key_data(spki_der: &[u8]) -> Result<KeyData, String> {
    const ED25519: &str = "1.3.101.112";
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| format!("the public key is not a SubjectPublicKeyInfo: {e}"))?;
    if spki.algorithm.algorithm.to_id_string() == ED25519 {
        let key = Ed25519PublicKey::try_from(spki.subject_public_key.data.as_ref())
            .map_err(|e| format!("a malformed Ed25519 key: {e}"))?;
        return Ok(KeyData::Ed25519(key));
    }
    match spki
        .parsed()
        .map_err(|e| format!("cannot read the public key: {e}"))?
    {
        Parsed::EC(point) => EcdsaPublicKey::from_sec1_bytes(point.data())
            .map(KeyData::Ecdsa)
            .map_err(|e| format!("not a P-256, P-384 or P-521 point: {e}")),
        Parsed::RSA(rsa) => {
            let mpint = |bytes: &[u8]| {
                Mpint::from_positive_bytes(bytes).map_err(|e| format!("a malformed RSA key: {e}"))
            };
            Ok(KeyData::Rsa(RsaPublicKey {
                e: mpint(rsa.exponent)?,
                n: mpint(rsa.modulus)?,
            }))
        }
        _ => Err(format!(
            "a key of algorithm {}",
            spki.algorithm.algorithm.to_id_string()
        )),
    }
}

#[cfg(test)]
mod tests {
    use openssl::pkey::PKey;

    use super::*;

    #[test]
    fn every_key_type_has_an_openssh_line() {
        // The e2e tests compare these lines with `ssh-add -L` (the daemon's OpenSSL path) and
        // verify signatures with ssh-keygen against them.
        for (key, prefix) in [
            (PKey::generate_ed25519().unwrap(), "ssh-ed25519 "),
            (
                PKey::from_ec_key(
                    openssl::ec::EcKey::generate(
                        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1)
                            .unwrap(),
                    )
                    .unwrap(),
                )
                .unwrap(),
                "ecdsa-sha2-nistp384 ",
            ),
            (
                PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap(),
                "ssh-rsa ",
            ),
        ] {
            let der = key.public_key_to_der().unwrap();
            let line = openssh_line(openssh_key_data(&der).unwrap(), "k").unwrap();
            assert!(line.starts_with(prefix) && line.ends_with(" k"), "{line}");
            let parsed = PublicKey::from_openssh(&line).unwrap();
            assert_eq!(parsed.comment(), "k");
        }
        assert!(openssh_key_data(b"junk").is_err());
    }

    #[test]
    fn allowed_signers_fields_cannot_break_the_line() {
        assert!(field("--principal", "me@example.com", &['"', '#']).is_ok());
        assert!(field("--principal", "a@x,b@y", &['"', '#']).is_ok());
        for bad in ["", "me @x", "me\"x", "#me", "me\nx"] {
            assert!(field("--principal", bad, &['"', '#']).is_err(), "{bad:?}");
        }
    }
}
