//! The subcommands, one module each, and the value parsers they share.

pub mod cert;
pub mod envelope;
pub mod keys;
pub mod notary;
pub mod notation;
pub mod pubkey;
pub mod sign;
pub mod verify;

use std::path::Path;

use clap::Subcommand;
use keyward_sdk::{Client, KeySpec, SignatureAlgorithm, SignatureFormat};

use crate::output::Failure;

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List or create keys
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Print a key's public key (PEM, DER or JWK)
    #[command(after_help = pubkey::AFTER_HELP)]
    Pubkey(pubkey::PubkeyArgs),
    /// Sign a file, stdin or a precomputed digest
    #[command(after_help = sign::AFTER_HELP)]
    Sign(sign::SignArgs),
    /// Check a signature locally against the key's public key
    #[command(after_help = verify::AFTER_HELP)]
    Verify(verify::VerifyArgs),
    /// Issue, request, attach and show X.509 certificates for keys
    #[command(subcommand, after_help = cert::AFTER_HELP)]
    Cert(cert::CertCommand),
    /// Notary Project signatures made offline (no registry, no notation)
    #[command(subcommand)]
    Notary(notary::NotaryCommand),
    /// Set up notation to sign with agent keys (the notation-keyward plugin)
    #[command(subcommand)]
    Notation(notation::NotationCommand),
}

/// Runs `command` against the agent at `socket`; returns the exit code.
///
/// Commands check their arguments and read their input files before they connect, so a usage
/// mistake is reported as such even when the agent is not running.
pub async fn run(socket: &Path, command: Command) -> Result<i32, Failure> {
    match command {
        Command::Keys(command) => keys::run(socket, command).await,
        Command::Pubkey(args) => pubkey::run(socket, args).await,
        Command::Sign(args) => sign::run(socket, args).await,
        Command::Verify(args) => verify::run(socket, args).await,
        Command::Cert(command) => cert::run(socket, command).await,
        Command::Notary(command) => notary::run(socket, command).await,
        Command::Notation(command) => notation::run(command),
    }
}

/// Connects to the agent at `socket`.
pub async fn connect(socket: &Path) -> Result<Client, Failure> {
    Ok(Client::connect(socket).await?)
}

/// Parses a key type name (`ec-p256`); the error lists the valid names.
pub fn parse_key_spec(name: &str) -> Result<KeySpec, String> {
    KeySpec::from_name(name).ok_or_else(|| {
        format!(
            "unknown key type {name:?}; valid types: {}",
            KeySpec::all_names().collect::<Vec<_>>().join(", ")
        )
    })
}

/// Parses a signature algorithm name (`ecdsa-sha256`); the error lists the valid names.
pub fn parse_algorithm(name: &str) -> Result<SignatureAlgorithm, String> {
    SignatureAlgorithm::from_name(name).ok_or_else(|| {
        format!(
            "unknown signature algorithm {name:?}; valid algorithms: {}",
            SignatureAlgorithm::all_names()
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Parses an ECDSA signature format (`der` or `raw`).
pub fn parse_format(name: &str) -> Result<SignatureFormat, String> {
    SignatureFormat::from_name(name)
        .ok_or_else(|| format!("unknown signature format {name:?}; valid formats: der, raw"))
}

/// The comma-separated names of `algorithms`.
pub fn algorithm_names(algorithms: impl Iterator<Item = SignatureAlgorithm>) -> String {
    algorithms
        .map(SignatureAlgorithm::name)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_accept_names_and_list_them_on_error() {
        assert_eq!(parse_key_spec("ec-p256"), Ok(KeySpec::EcP256));
        assert_eq!(
            parse_algorithm("rsa-pss-sha384"),
            Ok(SignatureAlgorithm::RsaPssSha384)
        );
        assert_eq!(parse_format("RAW"), Ok(SignatureFormat::Raw));
        let error = parse_key_spec("ec-p999").unwrap_err();
        assert!(
            error.contains("ed25519") && error.contains("rsa-4096"),
            "{error}"
        );
        let error = parse_algorithm("sha1").unwrap_err();
        assert!(error.contains("ecdsa-sha256"), "{error}");
    }
}
