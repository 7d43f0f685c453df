//! `keyward`: the command-line client of the keyward signing agent.
//!
//! It lists keys, prints public keys, signs and verifies, always through `keywardd`: the private
//! keys stay in the agent. Every command is one module under [`cmd`]; [`output`] holds the error
//! type, the exit codes and the helpers that write results.
//!
//! Exit codes (see `AFTER_HELP`): 0 success, 1 `keyward verify` found the signature invalid,
//! 2 no agent, 3 refused, 4 unavailable (retry), 5 any other error, 6/7 warnings/problems
//! (`status`, `doctor`); every error is one
//! `keyward: error: ...` line on stderr.

mod cmd;
mod json;
mod output;

use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use crate::output::Failure;

const AFTER_HELP: &str = "\
The agent's socket is --socket, else $KEYWARD_SOCK, else $XDG_RUNTIME_DIR/keyward/agent.sock
(or /tmp/keyward-<uid>/agent.sock when XDG_RUNTIME_DIR is unset). A remote agent is
--socket https://HOST:PORT with --tls-ca, --tls-cert and --tls-key (mutual TLS only).

A socket is used only if it is your own agent's: its directory and the process listening on it
must belong to you or root (or to the uid in KEYWARD_AGENT_UID, for a system agent running as
its own user), and the directory must not be writable by group or others.

Exit status:
  0  success
  1  `keyward verify`: the signature is invalid
  2  no agent: nothing listens on the socket, or the socket is not trusted (like ssh-add)
  3  refused by the agent: permission denied, policy, rate limit (retrying will not help)
  4  unavailable: the agent or its backend is unavailable for now (retry later)
  5  any other error: usage, a missing key, bad input, files
  6  `keyward status` / `keyward doctor`: warnings (a backend locked, a certificate expiring)
  7  `keyward status` / `keyward doctor`: problems (a backend down, a check failed)

Every command that prints data takes --json. Durations are written 30s, 15m, 8h, 7d.

Examples:
  keyward status
  keyward doctor
  keyward keys list
  keyward keys generate --backend local --type ec-p256 release
  keyward pubkey --key release > release.pub.pem
  keyward sign --key release --input app.tar.gz --output app.tar.gz.sig
  keyward verify --key release --input app.tar.gz --signature app.tar.gz.sig
  openssl dgst -sha256 -verify release.pub.pem -signature app.tar.gz.sig app.tar.gz
  keyward cert issue --key release --subject \"C=US,ST=WA,O=Example,CN=release\"
  keyward notation install
  keyward completions bash > ~/.local/share/bash-completion/completions/keyward";

/// Sign with keys held by the keyward agent (keywardd); private keys never leave it.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, after_help = AFTER_HELP, arg_required_else_help = true)]
struct Cli {
    /// The agent's Unix socket, or https://HOST:PORT for its mutual-TLS listener
    /// [default: $KEYWARD_SOCK, else the agent's default socket]
    #[arg(long, global = true, value_name = "PATH|URL")]
    socket: Option<PathBuf>,

    /// For an https:// agent: the CA certificate that issued its server certificate (PEM)
    #[arg(long, global = true, value_name = "FILE", env = "KEYWARD_TLS_CA")]
    tls_ca: Option<PathBuf>,

    /// For an https:// agent: this client's certificate (PEM)
    #[arg(long, global = true, value_name = "FILE", env = "KEYWARD_TLS_CERT")]
    tls_cert: Option<PathBuf>,

    /// For an https:// agent: this client's private key (PEM)
    #[arg(long, global = true, value_name = "FILE", env = "KEYWARD_TLS_KEY")]
    tls_key: Option<PathBuf>,

    #[command(subcommand)]
    command: cmd::Command,
}

impl Cli {
    /// `--socket`, else a non-empty `$KEYWARD_SOCK`, else the SDK's default path.
    fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .or_else(|| {
                std::env::var_os(keyward_sdk::SOCKET_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(keyward_sdk::default_socket_path)
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => output::exit_on_usage_error(error),
    };
    let agent = cmd::Agent {
        address: cli.socket_path(),
        tls_ca: cli.tls_ca.clone(),
        tls_cert: cli.tls_cert.clone(),
        tls_key: cli.tls_key.clone(),
    };
    // Multi-thread (one worker): rcgen signs certificates synchronously, and the SDK bridges
    // that to the agent with block_in_place, which a current-thread runtime cannot do.
    let code = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(cmd::run(&agent, cli.command, Cli::command)),
        Err(error) => Err(Failure::new(format!(
            "cannot start the async runtime: {error}"
        ))),
    };
    match code {
        Ok(code) => output::exit(code),
        Err(failure) => failure.exit(),
    }
}
