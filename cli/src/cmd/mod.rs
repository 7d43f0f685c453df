//! The subcommands, one module each, and the value parsers they share.

pub mod audit;
pub mod cert;
pub mod doctor;
mod doctor_files;
pub mod envelope;
pub mod envelope_edit;
pub mod keys;
pub mod keys_delete;
pub mod manuals;
pub mod notary;
pub mod notary_timestamp;
pub mod notation;
#[cfg(feature = "pgp")]
pub mod pgp;
pub mod pubkey;
pub mod sign;
pub mod ssh;
pub mod status;
pub mod tsp;
pub mod tsp_check;
pub mod verify;
pub mod yubikey;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use keyward_sdk::{Client, KeySpec, SignatureAlgorithm, SignatureFormat};

use crate::output::{Failure, read_input};

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Is the agent running, and how are its backends (up, down, locked, starting)
    #[command(after_help = status::AFTER_HELP)]
    Status(status::StatusArgs),
    /// Check the agent, its files, backends, certificates and audit log; say what to fix
    #[command(after_help = doctor::AFTER_HELP)]
    Doctor(doctor::DoctorArgs),
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
    /// Verify the agent's audit log (offline)
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// OpenPGP: detached signatures, certificates for agent keys (gpg/sq verify them)
    #[cfg(feature = "pgp")]
    #[command(subcommand, after_help = pgp::AFTER_HELP)]
    Pgp(pgp::PgpCommand),
    /// YubiKey backends: give one its PIV PIN for a while (unlock)
    #[command(subcommand)]
    Yubikey(yubikey::YubikeyCommand),
    /// Give a backend (tpm, yubikey) its PIN for a while, kept in the agent's memory
    #[command(after_help = yubikey::UNLOCK_AFTER_HELP)]
    Unlock(yubikey::UnlockArgs),
    /// OpenSSH: a key as an authorized_keys or allowed_signers line (docs/ssh.md)
    #[command(subcommand, after_help = ssh::AFTER_HELP)]
    Ssh(ssh::SshCommand),
    /// Print the shell completion script (bash, zsh, fish, ...)
    #[command(after_help = manuals::COMPLETIONS_AFTER_HELP)]
    Completions(manuals::CompletionsArgs),
    /// Write the man pages (keyward.1 and one per subcommand) into a directory
    #[command(after_help = manuals::MAN_AFTER_HELP)]
    Man(manuals::ManArgs),
}

/// Where the agent is and how to reach it.
#[derive(Clone, Debug)]
pub struct Agent {
    /// A Unix socket, or `https://host:port` for keywardd's mutual-TLS listener.
    pub address: PathBuf,
    /// The CA certificate that issues the listener's certificate (PEM).
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM).
    pub tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    pub tls_key: Option<PathBuf>,
}

/// Runs `command` against `agent`; returns the exit code.
///
/// Commands check their arguments and read their input files before they connect, so a usage
/// mistake is reported as such even when the agent is not running.
pub async fn run(
    agent: &Agent,
    command: Command,
    cli: fn() -> clap::Command,
) -> Result<i32, Failure> {
    match command {
        Command::Status(args) => status::run(agent, args).await,
        Command::Doctor(args) => doctor::run(agent, args).await,
        Command::Keys(command) => keys::run(agent, command).await,
        Command::Pubkey(args) => pubkey::run(agent, args).await,
        Command::Sign(args) => sign::run(agent, args).await,
        Command::Verify(args) => verify::run(agent, args).await,
        Command::Cert(command) => cert::run(agent, command).await,
        Command::Notary(command) => notary::run(agent, command).await,
        Command::Notation(command) => notation::run(command),
        Command::Audit(command) => audit::run(command),
        #[cfg(feature = "pgp")]
        Command::Pgp(command) => pgp::run(agent, command).await,
        Command::Yubikey(command) => yubikey::run(agent, command).await,
        Command::Unlock(args) => yubikey::unlock(agent, args).await,
        Command::Ssh(command) => ssh::run(agent, command).await,
        Command::Completions(args) => manuals::completions(cli(), args),
        Command::Man(args) => manuals::man(cli(), args),
    }
}

/// Connects to the agent: its Unix socket, or its mutual-TLS listener for an `https://`
/// address (with `--tls-ca`, `--tls-cert` and `--tls-key`).
pub async fn connect(agent: &Agent) -> Result<Client, Failure> {
    let address = agent.address.to_string_lossy();
    if address.starts_with("https://") {
        let file = |path: &Option<PathBuf>, flag: &str, env: &str, what: &str| match path {
            Some(path) => read_input(path, what),
            None => Err(Failure::new(format!(
                "{address} is a remote agent: give {flag} (or {env}) too; a remote agent needs --tls-ca, --tls-cert and --tls-key"
            ))),
        };
        let ca = file(
            &agent.tls_ca,
            "--tls-ca",
            "KEYWARD_TLS_CA",
            "CA certificate",
        )?;
        let cert = file(
            &agent.tls_cert,
            "--tls-cert",
            "KEYWARD_TLS_CERT",
            "client certificate",
        )?;
        let key = zeroize::Zeroizing::new(file(
            &agent.tls_key,
            "--tls-key",
            "KEYWARD_TLS_KEY",
            "client key",
        )?);
        return Ok(Client::connect_tls(&address, &ca, &cert, &key).await?);
    }
    if address.contains("://") {
        return Err(Failure::new(format!(
            "{address} is not a Unix socket or an https:// URL; keywardd accepts TCP connections only with mutual TLS: use https://HOST:PORT with --tls-ca, --tls-cert and --tls-key"
        )));
    }
    Ok(Client::connect(&agent.address).await?)
}

/// The one way to name a key: `--key KEY`. Commands that took the key id as a positional
/// argument still accept it there (hidden from `--help`), so scripts keep working.
#[derive(Debug, Args)]
pub struct KeyArg {
    /// The key's id (`keyward keys list` shows them)
    #[arg(
        long = "key",
        value_name = "KEY",
        required_unless_present = "key_positional"
    )]
    key: Option<String>,
    /// The key's id, as earlier versions took it; use --key
    #[arg(value_name = "KEY_ID", hide = true, conflicts_with = "key")]
    key_positional: Option<String>,
}

impl KeyArg {
    /// The key id given.
    pub fn id(&self) -> &str {
        self.key
            .as_deref()
            .or(self.key_positional.as_deref())
            .unwrap_or_default()
    }
}

/// Parses a duration flag: `30s`, `15m`, `8h`, `7d`, `1h 30m` (humantime), or a number of
/// seconds; the one duration syntax of every flag and config setting.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(std::time::Duration::from_secs)
            .map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration ({e}); use e.g. 90s, 15m, 8h, 7d or 1h30m")
    })
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

/// Rows as an aligned text table under `header`, each line starting with `indent`.
pub fn table<const N: usize>(header: &[String; N], rows: &[[String; N]], indent: &str) -> String {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::from(indent);
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
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
