//! `keyward-bench`: how much a signature through the agent costs, against the same signature
//! computed in-process with OpenSSL (the floor no agent can beat) and against other agents
//! and direct clients of the same key stores.
//!
//! ```text
//! keyward-bench latency --spawn --keys ec-p256,ed25519 --count 20000 --clients 1,16 --ssh-agent --gpg-agent
//! keyward-bench latency --spawn --keys ed25519 --clients 16 --ssh-agent --keyward-ssh   # both ssh-agents
//! keyward-bench pkcs11                 # SoftHSM2: keyward vs cryptoki directly
//! keyward-bench cloud                  # local-kms and OpenBao: keyward vs their own clients
//! keyward-bench tpm                    # a private swtpm: keyward vs tss-esapi directly
//! keyward-bench parsec --socket S      # a running Parsec: keyward vs parsec-client directly
//! keyward-bench startup                # spawn to ready, idle RSS
//! keyward-bench targets a.json b.json  # the targets of the speed issue, met or missed
//! keyward-bench chart --input DIR --output docs/bench   # PNG charts from the JSON documents
//! ```
//!
//! [`drive`] runs N concurrent clients for a count or a time, [`resources`] reads the serving
//! process's CPU time and memory from /proc, [`floor`] computes the in-process signatures,
//! [`spawn`] starts a private `keywardd`, [`sshagent`] and [`gpgagent`] are the baselines
//! ([`sshagent`] also drives keywardd's own ssh-agent socket),
//! [`stats`] turns latencies into percentiles, [`report`] prints them and [`chart`] draws the
//! JSON documents as PNG charts.

mod chart;
mod cloud;
mod drive;
mod floor;
mod gpgagent;
mod latency;
mod parsec;
mod pkcs11;
mod report;
mod resources;
mod spawn;
mod sshagent;
mod startup;
mod stats;
mod targets;
mod tpm;

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
    /// Cloud backends on their emulators (local-kms, OpenBao): keyward vs their own clients
    Cloud(cloud::CloudArgs),
    /// TPM 2.0 (a private swtpm, or --tcti): keyward vs tss-esapi directly
    Tpm(tpm::TpmArgs),
    /// A running Parsec service: keyward vs parsec-client directly, per provider
    Parsec(parsec::ParsecArgs),
    /// keywardd start-up time (spawn to ready) and idle memory, on the embedded default
    Startup(startup::StartupArgs),
    /// The targets of the speed issue, checked against JSON documents from --json-out
    Targets(targets::TargetsArgs),
    /// PNG charts (signs/s vs clients) from JSON documents from --json-out, without running
    Chart(chart::ChartArgs),
    /// (internal) the direct cryptoki series, run in a child with SOFTHSM2_CONF set
    #[command(hide = true)]
    Pkcs11Floor(pkcs11::FloorArgs),
}

const LATENCY_AFTER_HELP: &str = "\
For each key type, one key is generated in the agent; after a warm-up, COUNT signatures (or
--duration seconds of them) are made through it by CLIENTS concurrent tasks sharing one
connection, for each value of --clients (ECDSA and RSA sign a digest of the right size, Ed25519
a 64-byte message). The same signature is computed COUNT times in this process with OpenSSL, on
one thread: the floor. The overhead is agent p50 - floor p50. With --spawn, the daemon's CPU
time and peak RSS (and its plugin process's) are read from /proc around each series.

Examples:
  cargo build --release -p keyward-bench -p keyward-daemon
  target/release/keyward-bench latency --spawn
  target/release/keyward-bench latency --spawn --keys ec-p256 --clients 1,4,16 --json
  target/release/keyward-bench latency --spawn --keys rsa-2048 --ssh-agent --gpg-agent --duration 5
  target/release/keyward-bench latency --spawn --keys ed25519 --clients 16 --ssh-agent --keyward-ssh
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
    /// Run each agent series for this many seconds instead of --count signatures (the
    /// in-process floor still makes --count)
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Concurrent tasks signing through the agent (sharing one connection); a
    /// comma-separated list runs one series per value
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub clients: Vec<usize>,
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
    /// With --spawn: the daemon writes an audit log (`[audit]`, its defaults: every request
    /// recorded and fsynced before the backend sees it, group-committed)
    #[arg(long, requires = "spawn")]
    pub audit: bool,
    /// Also measure OpenSSH's ssh-agent with the same key type and concurrency (one
    /// connection per client, as ssh clients use)
    #[arg(long)]
    pub ssh_agent: bool,
    /// With --spawn: also measure keywardd's own ssh-agent socket (`[ssh_agent]` offering the
    /// benchmark keys), with the same requests as --ssh-agent
    #[arg(long, requires = "spawn")]
    pub keyward_ssh: bool,
    /// Also measure GnuPG's gpg-agent (Assuan SIGKEY/SETHASH/PKSIGN, an unprotected key in a
    /// temporary GNUPGHOME) with the same key type and concurrency
    #[arg(long)]
    pub gpg_agent: bool,
    /// Give each agent client its own connection instead of sharing one HTTP/2 connection
    #[arg(long)]
    pub connection_per_client: bool,
    /// Print a JSON document instead of a Markdown table
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON document to this file
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
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
            Command::Cloud(args) => runtime.block_on(cloud::run(args)),
            Command::Tpm(args) => runtime.block_on(tpm::run(args)),
            Command::Parsec(args) => runtime.block_on(parsec::run(args)),
            Command::Startup(args) => runtime.block_on(startup::run(args)),
            Command::Targets(args) => targets::run(args),
            Command::Chart(args) => chart::run(args),
            Command::Pkcs11Floor(args) => pkcs11::floor(args),
        });
    if let Err(error) = result {
        // Printed by hand: returning the error from main would add a backtrace under
        // RUST_BACKTRACE=1.
        eprintln!("keyward-bench: error: {error:#}");
        std::process::exit(2);
    }
}
