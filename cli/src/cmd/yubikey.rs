//! `keyward yubikey unlock` (and the generic `keyward unlock`): give a backend that takes a PIN
//! over the socket (`yubikey`, `tpm`) its PIN for a while.

use std::io::{IsTerminal, Read};
use std::time::Duration;

use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use crate::cmd::notary::parse_duration;
use crate::cmd::{Agent, connect};
use crate::output::{EXIT_OK, Failure, write_stdout};

pub const AFTER_HELP: &str = "\
The PIN is read from the terminal without echo, or from stdin when stdin is not a terminal
(one line). The YubiKey checks it first: a wrong PIN is refused with the retries left, and
keyward never sends a rejected PIN again. keywardd keeps it in memory only (never on disk, in
a log or in the audit log) until --ttl ends, then PIN-protected keys fail again with
\"no PIN: ... run `keyward yubikey unlock`\". It takes precedence over pin_env/pin_file.
Only the agent's admins (its own uid and admin_uids) may unlock.

Examples:
  keyward yubikey unlock --backend yubikey
  keyward yubikey unlock --backend yubikey --ttl 8h
  pass show yubikey-pin | keyward yubikey unlock --backend yubikey --ttl 15m";

/// `keyward yubikey ...`
#[derive(Debug, Subcommand)]
pub enum YubikeyCommand {
    /// Give a yubikey backend its PIV PIN, kept in the agent's memory for --ttl
    #[command(after_help = AFTER_HELP)]
    Unlock(UnlockArgs),
}

/// `keyward yubikey unlock`
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// The backend (a `[[backend]]` name: of type yubikey, tpm, ...)
    #[arg(long, value_name = "NAME")]
    backend: String,
    /// How long the agent keeps the PIN (e.g. 90s, 15m, 8h); 0: until the backend restarts
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_ttl)]
    ttl: Duration,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text).map(Duration::from_secs)
}

/// `--help` text of `keyward unlock`.
pub const UNLOCK_AFTER_HELP: &str = "\
For backends that take a PIN over the socket: yubikey (the PIV PIN) and tpm (the keys'
authorization value). The PIN is read from the terminal without echo, or from stdin when stdin
is not a terminal (one line). The backend checks it first: a wrong PIN is refused once, and
keyward never sends a rejected PIN again (a YubiKey blocks after a few, a TPM locks out every
DA-protected key of the machine). keywardd keeps it in memory only (never on disk, in a log or
in the audit log) until --ttl ends. It takes precedence over pin_env/pin_file. Only the
agent's admins (its own uid and admin_uids) may unlock.

Examples:
  keyward unlock --backend tpm
  keyward unlock --backend tpm --ttl 8h
  pass show tpm-pin | keyward unlock --backend tpm --ttl 15m";

/// Runs `keyward yubikey ...`.
pub async fn run(agent: &Agent, command: YubikeyCommand) -> Result<i32, Failure> {
    match command {
        YubikeyCommand::Unlock(args) => unlock(agent, args).await,
    }
}

/// The PIN: from the terminal without echo, else the first line of stdin.
fn read_pin(backend: &str) -> Result<Zeroizing<String>, Failure> {
    let pin = if std::io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password(format!("PIN for backend {backend:?}: "))
                .map_err(|e| Failure::new(format!("cannot read the PIN from the terminal: {e}")))?,
        )
    } else {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin()
            .take(1024)
            .read_to_string(&mut text)
            .map_err(|e| Failure::new(format!("cannot read the PIN from stdin: {e}")))?;
        let line = text.lines().next().unwrap_or_default();
        Zeroizing::new(line.to_string())
    };
    if pin.is_empty() {
        return Err(Failure::new(
            "no PIN given: type it at the prompt, or pipe it on stdin (one line)",
        ));
    }
    Ok(pin)
}

/// Runs `keyward unlock` / `keyward yubikey unlock`.
pub async fn unlock(agent: &Agent, args: UnlockArgs) -> Result<i32, Failure> {
    let pin = read_pin(&args.backend)?;
    let client = connect(agent).await?;
    let ttl = Some(args.ttl).filter(|t| !t.is_zero());
    client
        .unlock_backend(&args.backend, pin.as_bytes(), ttl)
        .await?;
    let until = match ttl {
        Some(ttl) => format!("for {}s", ttl.as_secs()),
        None => "until the backend restarts".to_string(),
    };
    write_stdout(format!("backend {:?} unlocked {until}\n", args.backend).as_bytes())?;
    Ok(EXIT_OK)
}
