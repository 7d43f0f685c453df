//! `keyward-bench startup`: how long `keywardd` takes from spawn to its first answer, and how
//! much memory it holds when idle — after start-up and after a load run.
//!
//! The daemon runs on its embedded default (no config file: one `local` backend, keys and
//! socket under the XDG directories, pointed at a temporary directory). The first start
//! creates the directories; one ec-p256 key is generated; then the daemon is stopped (SIGTERM)
//! and started again `--repeat` times: each start is timed from `spawn()` to a successful
//! `ListKeys` on the socket (polled every 0.5–1 ms).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use keyward_sdk::{KeySpec, SignOptions};
use serde_json::json;

use crate::drive::{Budget, drive, warm_up};
use crate::latency::{AgentSign, Input};
use crate::resources::{Watch, sample};
use crate::spawn::{Extra, PrivateDaemon};
use crate::stats::Summary;

/// `keyward-bench startup`
#[derive(Debug, Args)]
pub struct StartupArgs {
    /// Timed starts (after the first, untimed one that creates the directories)
    #[arg(long, default_value_t = 20)]
    pub repeat: usize,
    /// Signatures of the load run between the two idle readings
    #[arg(long, default_value_t = 20_000)]
    pub load_count: usize,
    /// Concurrent clients of the load run
    #[arg(long, default_value_t = 16)]
    pub load_clients: usize,
    /// How long the daemon sits idle before each memory reading, ms
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// Print JSON instead of Markdown
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON document to this file
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// Target: start to ready, ms.
pub const STARTUP_TARGET_MS: f64 = 100.0;
/// Target: idle resident memory, MB (10^6 bytes).
pub const IDLE_RSS_TARGET_MB: f64 = 30.0;

/// Runs the start-up and idle-memory measurement and prints the report.
pub async fn run(args: StartupArgs) -> Result<()> {
    if args.repeat == 0 || args.load_clients == 0 {
        bail!("--repeat and --load-clients must be at least 1");
    }
    eprintln!("starting keywardd on its embedded default...");
    let (mut daemon, client) = PrivateDaemon::start_with(Extra::Embedded, &[]).await?;
    let first = daemon.startup();
    let spec = KeySpec::EcP256;
    let key = client
        .generate_key("local", "bench-startup", spec)
        .await
        .context("cannot generate the benchmark key on the embedded default's `local` backend")?;
    let algorithm = key
        .info
        .algorithms()
        .next()
        .context("the key lists no algorithm")?;
    drop(client);

    eprintln!("{} timed starts...", args.repeat);
    let mut starts = Vec::with_capacity(args.repeat);
    let mut client = None;
    for _ in 0..args.repeat {
        client = Some(daemon.restart().await?);
        starts.push(daemon.startup());
    }
    let client = client.context("no start")?;
    let startup = Summary::new(starts.clone(), starts.iter().sum());
    let pid = daemon.pid().context("keywardd is not running")?;

    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let idle_start = sample(pid).context("keywardd is gone")?;

    eprintln!(
        "load: {} ec-p256 signatures, {} clients...",
        args.load_count, args.load_clients
    );
    let input = Arc::new(Input::for_algorithm(algorithm)?);
    let options = Arc::new(SignOptions {
        algorithm: Some(algorithm),
        ..SignOptions::default()
    });
    let mut ops: Vec<AgentSign> = (0..args.load_clients)
        .map(|_| AgentSign {
            client: client.clone(),
            key_id: Arc::from("bench-startup"),
            input: Arc::clone(&input),
            options: Arc::clone(&options),
        })
        .collect();
    if let Some(first) = ops.first_mut() {
        warm_up(first, 100).await?;
    }
    let watch = Watch::start(pid);
    let load = drive(ops, Budget::Count(args.load_count)).await?;
    let usage = watch.and_then(|w| w.finish(load.count));
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let idle_after = sample(pid).context("keywardd is gone")?;
    drop(client);
    daemon.stop();

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let document = json!({
        "benchmark": "startup",
        "config": "embedded default (one local backend, 1 key)",
        "repeat": args.repeat,
        "first_start_ms": ms(first),
        "startup_ms": {
            "p50": startup.p50_us / 1e3,
            "p99": startup.p99_us / 1e3,
            "max": startup.max_us / 1e3,
            "mean": startup.mean_us / 1e3,
            "min": starts.iter().min().map_or(0.0, |d| ms(*d)),
        },
        "idle_rss_after_start_mib": mib(idle_start.rss_kib),
        "idle_rss_after_start_mb": mb(idle_start.rss_kib),
        "load": {
            "count": load.count,
            "errors": load.errors,
            "clients": args.load_clients,
            "signs_per_sec": load.per_second,
            "p50_us": load.p50_us,
            "p99_us": load.p99_us,
            "server_cpu_us_per_sign": usage.map(|u| u.cpu_us_per_op),
            "server_peak_rss_mib": usage.map(|u| u.peak_rss_mib),
        },
        "idle_rss_after_load_mib": mib(idle_after.rss_kib),
        "idle_rss_after_load_mb": mb(idle_after.rss_kib),
        "targets": {"startup_ms": STARTUP_TARGET_MS, "idle_rss_mb": IDLE_RSS_TARGET_MB},
    });
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let markdown = format!(
        "| measure | value | target |\n|---|---:|---|\n\
         | start to ready (spawn → ListKeys answered), p50 of {} | {:.1} ms | ≤ {STARTUP_TARGET_MS} ms: {} |\n\
         | start to ready, p99 / max / min | {:.1} / {:.1} / {:.1} ms | |\n\
         | first start (creates the directories) | {:.1} ms | |\n\
         | idle RSS after start-up | {:.1} MiB ({:.1} MB) | ≤ {IDLE_RSS_TARGET_MB} MB: {} |\n\
         | load: {} ec-p256 signatures, {} clients | {:.0} signs/s, p50 {:.0} µs, {} errors | |\n\
         | peak RSS during the load | {} | |\n\
         | daemon CPU per signature during the load | {} | |\n\
         | idle RSS {} s after the load | {:.1} MiB ({:.1} MB) | ≤ {IDLE_RSS_TARGET_MB} MB: {} |\n\n\
         keywardd on its embedded default (no config file), one key in its `local` backend.",
        args.repeat,
        startup.p50_us / 1e3,
        verdict(startup.p50_us / 1e3 <= STARTUP_TARGET_MS),
        startup.p99_us / 1e3,
        startup.max_us / 1e3,
        starts.iter().min().map_or(0.0, |d| ms(*d)),
        ms(first),
        mib(idle_start.rss_kib),
        mb(idle_start.rss_kib),
        verdict(mb(idle_start.rss_kib) <= IDLE_RSS_TARGET_MB),
        load.count,
        args.load_clients,
        load.per_second,
        load.p50_us,
        load.errors,
        usage.map_or_else(|| "—".into(), |u| format!("{:.1} MiB", u.peak_rss_mib)),
        usage.map_or_else(|| "—".into(), |u| format!("{:.1} µs", u.cpu_us_per_op)),
        args.settle_ms as f64 / 1e3,
        mib(idle_after.rss_kib),
        mb(idle_after.rss_kib),
        verdict(mb(idle_after.rss_kib) <= IDLE_RSS_TARGET_MB),
    );
    let text = serde_json::to_string_pretty(&document).unwrap_or_default();
    crate::report::emit(&markdown, &text, args.json, args.json_out.as_ref())
}
