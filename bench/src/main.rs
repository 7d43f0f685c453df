//! `keyward-bench`: how much a signature through the agent costs, against the same signature
//! computed in-process with OpenSSL (the floor no agent can beat).
//!
//! ```text
//! keyward-bench latency --spawn --keys ec-p256,ed25519 --count 20000 --clients 1
//! ```
//!
//! [`latency`] drives the measurement, [`floor`] computes the in-process signatures, [`spawn`]
//! starts a private `keywardd`, [`stats`] turns latencies into percentiles and [`report`]
//! prints them.

mod floor;
mod latency;
mod pkcs11;
mod report;
mod spawn;
mod sshagent;
mod stats;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use keyward_sdk::KeySpec;

/// Latency and throughput of the keyward agent, against in-process OpenSSL floors.
#[derive(Debug, Parser)]
#[command(name = "keyward-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign latency through the agent vs the same signature in-process
    #[command(after_help = LATENCY_AFTER_HELP)]
    Latency(LatencyArgs),
    /// PKCS#11 on SoftHSM2: keyward (1 and N clients) vs cryptoki directly
    Pkcs11(pkcs11::Pkcs11Args),
    /// (internal) the direct cryptoki series, run in a child with SOFTHSM2_CONF set
    #[command(hide = true)]
    Pkcs11Floor(pkcs11::FloorArgs),
}

const LATENCY_AFTER_HELP: &str = "\
For each key type, one key is generated in the agent; after a warm-up, COUNT signatures are
made through it by CLIENTS concurrent tasks sharing one connection (ECDSA and RSA sign a digest
of the right size, Ed25519 a 64-byte message). The same signature is then computed COUNT times
in this process with OpenSSL, on one thread: the floor. The overhead is agent p50 - floor p50.

Examples:
  cargo build --release -p keyward-bench -p keyward-daemon
  target/release/keyward-bench latency --spawn
  target/release/keyward-bench latency --spawn --keys ec-p256 --clients 4 --json
  keyward-bench latency --socket $XDG_RUNTIME_DIR/keyward/agent.sock --backend local";

/// `keyward-bench latency`
#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// The agent's socket (without --spawn) [default: $KEYWARD_SOCK, else the default socket]
    #[arg(long, value_name = "PATH", conflicts_with = "spawn")]
    pub socket: Option<PathBuf>,
    /// Start a private keywardd (found next to this executable) in a temporary directory
    #[arg(long)]
    pub spawn: bool,
    /// The key types to measure, comma-separated
    #[arg(long, value_name = "TYPES", value_delimiter = ',', default_value = "ec-p256,ed25519",
          value_parser = parse_key_spec)]
    pub keys: Vec<KeySpec>,
    /// Signatures measured per key and path
    #[arg(long, default_value_t = 20_000)]
    pub count: usize,
    /// Concurrent tasks signing through the agent (sharing one connection)
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Signatures made per key before measuring
    #[arg(long, default_value_t = 500)]
    pub warmup: usize,
    /// The backend to create the benchmark keys in (without --spawn)
    #[arg(long, value_name = "NAME", default_value = "local")]
    pub backend: String,
    /// With --spawn: run the local backend in the daemon ("none") or as a plugin process
    /// ("process"), to measure the cost of isolation
    #[arg(long, value_parser = ["none", "process"], default_value = "none", requires = "spawn")]
    pub isolation: String,
    /// Also measure OpenSSH's ssh-agent with the same key type and concurrency (one
    /// connection per client, as ssh clients use)
    #[arg(long)]
    pub ssh_agent: bool,
    /// Give each agent client its own connection instead of sharing one HTTP/2 connection
    #[arg(long)]
    pub connection_per_client: bool,
    /// Print a JSON document instead of a Markdown table
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn parse_key_spec(name: &str) -> Result<KeySpec, String> {
    KeySpec::from_name(name).ok_or_else(|| {
        format!(
            "unknown key type {name:?}; valid types: {}",
            KeySpec::all_names().collect::<Vec<_>>().join(", ")
        )
    })
}

fn main() {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| match cli.command {
            Command::Latency(args) => runtime.block_on(latency::run(args)),
            Command::Pkcs11(args) => runtime.block_on(pkcs11::run(args)),
            Command::Pkcs11Floor(args) => pkcs11::floor(args),
        });
    if let Err(error) = result {
        // Printed by hand: returning the error from main would add a backtrace under
        // RUST_BACKTRACE=1.
        eprintln!("keyward-bench: error: {error:#}");
        std::process::exit(2);
    }
}
