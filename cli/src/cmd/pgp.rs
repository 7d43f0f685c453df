//! `keyward pgp sign|cert|export`: OpenPGP signatures and certificates from agent keys.
//!
//! Everything goes through the SDK's `pgp` module (sequoia-openpgp): the agent signs, this
//! process never holds a secret. A key needs an OpenPGP certificate first: a `pgp` backend key
//! has the one from its keyring; any other key gets one with `keyward pgp cert create`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use keyward_sdk::pgp::openpgp::serialize::SerializeInto;
use keyward_sdk::pgp::openpgp::{Cert, parse::Parse};
use keyward_sdk::pgp::{self as pgp, CertificateOptions};

use crate::cmd::{Agent, connect};
use crate::output::{EXIT_OK, Failure, read_input, write_output};

pub const AFTER_HELP: &str = "\
Examples:
  keyward pgp cert create --key release --userid \"Release Signing <release@example.com>\"
  keyward pgp export --key release > release.asc
  keyward pgp sign --key release --armor --output app.tar.gz.asc app.tar.gz
  gpg --import release.asc && gpg --verify app.tar.gz.asc app.tar.gz
  sq verify --signer-cert release.asc --detached app.tar.gz.asc app.tar.gz";

/// `keyward pgp ...`
#[derive(Debug, Subcommand)]
pub enum PgpCommand {
    /// Make a detached OpenPGP signature over a file
    Sign(SignArgs),
    /// Create or attach OpenPGP certificates
    #[command(subcommand)]
    Cert(CertCommand),
    /// Print a key's OpenPGP certificate (armored unless --binary)
    Export(ExportArgs),
}

/// `keyward pgp cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make an OpenPGP certificate for an agent key (self-signed through the agent) and attach it
    Create(CreateArgs),
    /// Attach an existing OpenPGP certificate (binary or armored) to a key
    Attach(AttachArgs),
}

/// `keyward pgp sign`
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The key to sign with (it needs an OpenPGP certificate)
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// ASCII-armor the signature
    #[arg(long, short)]
    armor: bool,
    /// Write the signature here instead of stdout
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The file to sign (`-` for stdin)
    #[arg(value_name = "FILE")]
    input: PathBuf,
}

/// `keyward pgp cert create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The key the certificate is for
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// A user id, "Name <mail>"; repeat for more (the first is primary)
    #[arg(long = "userid", value_name = "USERID", required = true)]
    userids: Vec<String>,
    /// The key's creation time in seconds since 1970 (part of the fingerprint)
    /// [default: the one in the key's current certificate, else now]
    #[arg(long, value_name = "UNIX_SECONDS")]
    creation_time: Option<u64>,
    /// Validity, e.g. 365d, 2y, 12h, 90s [default: no expiry]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    expires_in: Option<Duration>,
    /// Do not attach the certificate to the key in the agent
    #[arg(long)]
    no_attach: bool,
    /// Also write the armored certificate to FILE
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// `keyward pgp cert attach`
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The key the certificate is for
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// The certificate file (binary or armored)
    #[arg(value_name = "FILE")]
    certificate: PathBuf,
}

/// `keyward pgp export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The key whose certificate to print
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// Binary OpenPGP instead of ASCII armor
    #[arg(long)]
    binary: bool,
    /// Write the certificate here instead of stdout
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// `365d`, `2y`, `12h`, `30m`, `90s` or plain seconds ([`super::parse_duration`]).
fn parse_duration(text: &str) -> Result<Duration, String> {
    super::parse_duration(text)
}

fn armored(cert: &Cert) -> Result<Vec<u8>, Failure> {
    cert.armored()
        .to_vec()
        .map_err(|e| Failure::new(format!("cannot armor the certificate: {e}")))
}

/// Runs a `keyward pgp` command.
pub async fn run(agent: &Agent, command: PgpCommand) -> Result<i32, Failure> {
    match command {
        PgpCommand::Sign(args) => {
            let data = if args.input.as_os_str() == "-" {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut data)
                    .map_err(|e| Failure::new(format!("cannot read stdin: {e}")))?;
                data
            } else {
                read_input(&args.input, "input file")?
            };
            let client = connect(agent).await?;
            let signature = pgp::sign_detached(&client, &args.key, &data[..], args.armor).await?;
            write_output(args.output.as_deref(), &signature)?;
            Ok(EXIT_OK)
        }
        PgpCommand::Cert(CertCommand::Create(args)) => {
            let options = CertificateOptions {
                userids: args.userids,
                creation_time: args
                    .creation_time
                    .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
                validity: args.expires_in,
            };
            let client = connect(agent).await?;
            let cert = pgp::create_certificate(&client, &args.key, &options).await?;
            let fingerprint = cert.fingerprint().to_hex();
            if !args.no_attach {
                let binary = cert
                    .to_vec()
                    .map_err(|e| Failure::new(format!("cannot encode the certificate: {e}")))?;
                client
                    .attach_openpgp_certificate(&args.key, &binary)
                    .await?;
            }
            if let Some(path) = &args.output {
                write_output(Some(path), &armored(&cert)?)?;
            }
            println!("{fingerprint}");
            Ok(EXIT_OK)
        }
        PgpCommand::Cert(CertCommand::Attach(args)) => {
            let bytes = read_input(&args.certificate, "OpenPGP certificate")?;
            let client = connect(agent).await?;
            let (_, _, fingerprint) = client.attach_openpgp_certificate(&args.key, &bytes).await?;
            println!("{fingerprint}");
            Ok(EXIT_OK)
        }
        PgpCommand::Export(args) => {
            let client = connect(agent).await?;
            let public = client.public_key(&args.key).await?;
            let Some(bytes) = public.openpgp_certificate else {
                return Err(Failure::new(format!(
                    "key {:?} has no OpenPGP certificate; make one with `keyward pgp cert create --key {} --userid \"Name <mail>\"`",
                    args.key, args.key
                )));
            };
            let out = if args.binary {
                bytes
            } else {
                let cert = Cert::from_bytes(&bytes).map_err(|e| {
                    Failure::new(format!(
                        "key {:?}: the agent's OpenPGP certificate is malformed: {e}",
                        args.key
                    ))
                })?;
                armored(&cert)?
            };
            write_output(args.output.as_deref(), &out)?;
            Ok(EXIT_OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        // humantime's year is 365.25 days.
        assert_eq!(parse_duration("1y"), Ok(Duration::from_secs(31_557_600)));
        assert_eq!(
            parse_duration("3w"),
            Ok(Duration::from_secs(3 * 7 * 86_400))
        );
        assert!(parse_duration("3x").unwrap_err().contains("not a duration"));
        assert!(parse_duration("x").is_err());
    }
}
