//! `keyward-bench pkcs11`: signatures on SoftHSM2 through keyward (1 and N clients) against
//! cryptoki called directly on one kept session (the floor) and against opening a session and
//! logging in for every signature (what a naive client does).
//!
//! The direct measurements run in a child process of this binary (`pkcs11-floor`), because
//! SoftHSM reads `SOFTHSM2_CONF` from the environment and this program sets no variables in
//! its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyward_sdk::{KeySpec, SignOptions};

use crate::drive::{Budget, drive, warm_up};
use crate::latency::{AgentSign, Input};
use crate::report::{Path as RowPath, Report, Row};
use crate::resources::Watch;
use crate::spawn::{Extra, PrivateDaemon};
use crate::stats::Summary;

const TOKEN: &str = "keyward-bench";
const PIN: &str = "1234";

/// `keyward-bench pkcs11`
#[derive(Debug, Args)]
pub struct Pkcs11Args {
    /// The PKCS#11 module
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    pub module: PathBuf,
    /// Key types: ec-p256, ec-p384, rsa-2048, ...
    #[arg(long, value_delimiter = ',', default_value = "ec-p256,rsa-2048", value_parser = crate::parse_key_spec)]
    pub keys: Vec<KeySpec>,
    /// Signatures per series
    #[arg(long, default_value_t = 5000)]
    pub count: usize,
    /// Signatures per series when a session is opened for each one (slow)
    #[arg(long, default_value_t = 300)]
    pub session_count: usize,
    /// Concurrent clients of the agent series
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub clients: Vec<usize>,
    /// Sessions in keyward's pool
    #[arg(long, default_value_t = 4)]
    pub sessions: usize,
    /// The backend in a plugin process ("process") or in keywardd ("none", which needs a
    /// keywardd built with the cargo feature `pkcs11-in-process`: see --keywardd)
    #[arg(long, value_parser = ["none", "process"], default_value = "process")]
    pub isolation: String,
    /// The keywardd to start [default: the one next to this executable]
    #[arg(long, value_name = "PATH")]
    pub keywardd: Option<PathBuf>,
    /// Print JSON instead of Markdown
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON document to this file
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// `keyward-bench pkcs11-floor` (internal): the direct cryptoki series, as JSON on stdout.
#[derive(Debug, Args)]
pub struct FloorArgs {
    #[arg(long)]
    module: PathBuf,
    #[arg(long)]
    label: String,
    #[arg(long)]
    rsa: bool,
    #[arg(long)]
    count: usize,
    #[arg(long)]
    session_count: usize,
}

/// Runs the PKCS#11 matrix and prints the report.
pub async fn run(args: Pkcs11Args) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("keyward-bench-hsm-")
        .tempdir()?;
    let conf = dir.path().join("softhsm2.conf");
    std::fs::create_dir(dir.path().join("tokens"))?;
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.path().join("tokens").display()
        ),
    )?;
    let conf_str = conf.display().to_string();
    let status = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--so-pin",
            "12345678",
            "--pin",
            PIN,
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .context("cannot run softhsm2-util (install softhsm2)")?;
    if !status.status.success() {
        bail!(
            "softhsm2-util failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    let backend = format!(
        "[[backend]]\nname = \"hsm\"\ntype = \"pkcs11\"\nmodule = {module:?}\ntoken_label = {TOKEN:?}\npin_env = \"KEYWARD_BENCH_PIN\"\nenv = [\"SOFTHSM2_CONF\"]\nsessions = {}\nisolation = {:?}\n",
        args.sessions,
        args.isolation,
        module = args.module.display().to_string(),
    );
    let (mut daemon, client) = PrivateDaemon::start_with_exe(
        args.keywardd.as_deref(),
        Extra::Backends(&backend),
        &[("SOFTHSM2_CONF", &conf_str), ("KEYWARD_BENCH_PIN", PIN)],
    )
    .await?;

    let mut rows = Vec::new();
    for &spec in &args.keys {
        let label = format!("bench-{}", spec.name());
        let key = client.generate_key("hsm", &label, spec).await?;
        let algorithm = key
            .info
            .algorithms()
            .next()
            .context("the key lists no algorithm")?;
        let digest = Arc::new(keyward_sdk::digest(algorithm, b"keyward-bench pkcs11")?);
        let options = Arc::new(SignOptions {
            algorithm: Some(algorithm),
            ..SignOptions::default()
        });
        let check = client.sign_digest(&label, &digest, &options).await?;
        keyward_sdk::verify_digest(&key.der, algorithm, &digest, &check.bytes, check.format)
            .context("the agent's signature does not verify")?;

        eprintln!(
            "{}: direct cryptoki floor and session-per-signature...",
            spec.name()
        );
        let floors = floor_in_child(
            &args,
            &conf,
            &label,
            matches!(spec, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096),
        )?;
        for (path, summary) in floors {
            rows.push(Row {
                spec,
                key_id: label.clone(),
                algorithm,
                path,
                label: path.name().to_string(),
                clients: 1,
                summary,
                overhead_p50_us: None,
                resources: None,
            });
        }
        let floor_p50 = rows
            .iter()
            .rev()
            .find(|r| r.path == RowPath::Pkcs11Direct)
            .map(|r| r.summary.p50_us);
        for &clients in &args.clients {
            eprintln!(
                "{}: {} signatures through keyward, {clients} client(s)...",
                spec.name(),
                args.count
            );
            let (summary, resources) = agent_series(
                &client,
                daemon.pid(),
                &label,
                &digest,
                &options,
                args.count,
                clients,
            )
            .await?;
            rows.push(Row {
                spec,
                key_id: label.clone(),
                algorithm,
                path: RowPath::Agent,
                label: label_of(&args.isolation).to_string(),
                clients,
                summary,
                overhead_p50_us: floor_p50.map(|f| summary.p50_us - f),
                resources,
            });
        }
    }
    daemon.stop();
    let report = Report {
        benchmark: "pkcs11",
        socket: daemon.socket().to_path_buf(),
        spawned: true,
        count: args.count,
        duration_s: None,
        warmup: 100,
        note: format!(
            "SoftHSM2 token; keyward's pkcs11 backend {} with {} sessions. \
             Server CPU and RSS: keywardd{}. The session-per-signature \
             series has {} signatures.",
            if args.isolation == "none" {
                "in keywardd (built with pkcs11-in-process)"
            } else {
                "in its plugin process"
            },
            args.sessions,
            if args.isolation == "none" {
                ""
            } else {
                " and the plugin process"
            },
            args.session_count
        ),
        rows,
    };
    crate::report::print(&report, args.json, args.json_out.as_ref())
}

/// The label of the agent rows for an isolation (the names `keyward-bench targets` looks for).
fn label_of(isolation: &str) -> &'static str {
    if isolation == "none" {
        crate::targets::PKCS11_IN_PROCESS
    } else {
        crate::targets::PKCS11_PROCESS
    }
}

/// One agent series on `key_id`: `clients` tasks, `count` signatures, after a warm-up; the
/// server's CPU and memory when `pid` is known. Shared by the tpm and parsec benchmarks.
pub(crate) async fn agent_series(
    client: &keyward_sdk::Client,
    pid: Option<u32>,
    key_id: &str,
    digest: &Arc<Vec<u8>>,
    options: &Arc<SignOptions>,
    count: usize,
    clients: usize,
) -> Result<(Summary, Option<crate::resources::Usage>)> {
    let input = Arc::new(Input::Digest(digest.to_vec()));
    let mut ops: Vec<AgentSign> = (0..clients)
        .map(|_| AgentSign {
            client: client.clone(),
            key_id: Arc::from(key_id),
            input: Arc::clone(&input),
            options: Arc::clone(options),
        })
        .collect();
    if let Some(first) = ops.first_mut() {
        warm_up(first, 100).await?;
    }
    let watch = pid.and_then(Watch::start);
    let summary = drive(ops, Budget::Count(count)).await?;
    let usage = watch.and_then(|w| w.finish(summary.count));
    Ok((summary, usage))
}

fn floor_in_child(
    args: &Pkcs11Args,
    conf: &Path,
    label: &str,
    rsa: bool,
) -> Result<Vec<(RowPath, Summary)>> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .arg("pkcs11-floor")
        .arg("--module")
        .arg(&args.module)
        .args(["--label", label, "--count", &args.count.to_string()])
        .args(["--session-count", &args.session_count.to_string()])
        .env("SOFTHSM2_CONF", conf);
    if rsa {
        command.arg("--rsa");
    }
    let output = command.output()?;
    if !output.status.success() {
        bail!(
            "the floor measurement failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let summary = |name: &str| -> Result<Summary> {
        let v = &value[name];
        let us = |field: &str| v[field].as_f64().context("bad floor JSON");
        Ok(Summary {
            count: v["count"].as_u64().unwrap_or(0) as usize,
            p50_us: us("p50_us")?,
            p99_us: us("p99_us")?,
            max_us: us("max_us")?,
            mean_us: us("mean_us")?,
            per_second: us("per_second")?,
            errors: 0,
        })
    };
    Ok(vec![
        (RowPath::Pkcs11Direct, summary("direct")?),
        (RowPath::Pkcs11SessionPerSign, summary("session_per_sign")?),
    ])
}

/// The child's work: sign `count` times on one kept, logged-in session, then `session_count`
/// times opening a session and logging in for each signature.
pub fn floor(args: FloorArgs) -> Result<()> {
    let ctx = Pkcs11::new(&args.module)?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = find_slot(&ctx)?;
    let pin = AuthPin::new(PIN.into());
    let digest = [7u8; 32];
    let mechanism = if args.rsa {
        Mechanism::RsaPkcsPss(PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32.into(),
        })
    } else {
        Mechanism::Ecdsa
    };
    let sign_once = |session: &Session| -> Result<Duration> {
        let key = *session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(args.label.clone().into_bytes()),
            ])?
            .first()
            .context("the benchmark key is not on the token")?;
        let t0 = Instant::now();
        session.sign(&mechanism, key, &digest)?;
        Ok(t0.elapsed())
    };

    let session = ctx.open_rw_session(slot)?;
    session.login(UserType::User, Some(&pin))?;
    let key = *session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(args.label.clone().into_bytes()),
        ])?
        .first()
        .context("the benchmark key is not on the token")?;
    for _ in 0..100 {
        session.sign(&mechanism, key, &digest)?;
    }
    let start = Instant::now();
    let mut direct = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let t0 = Instant::now();
        session.sign(&mechanism, key, &digest)?;
        direct.push(t0.elapsed());
    }
    let direct = Summary::new(direct, start.elapsed());
    drop(session);

    let start = Instant::now();
    let mut per_sign = Vec::with_capacity(args.session_count);
    for _ in 0..args.session_count {
        let t0 = Instant::now();
        let session = ctx.open_rw_session(slot)?;
        session.login(UserType::User, Some(&pin))?;
        sign_once(&session)?;
        drop(session);
        per_sign.push(t0.elapsed());
    }
    let per_sign = Summary::new(per_sign, start.elapsed());
    let json = |s: &Summary| {
        serde_json::json!({"count": s.count, "p50_us": s.p50_us, "p99_us": s.p99_us, "max_us": s.max_us,
            "mean_us": s.mean_us, "per_second": s.per_second})
    };
    println!(
        "{}",
        serde_json::json!({"direct": json(&direct), "session_per_sign": json(&per_sign)})
    );
    Ok(())
}

fn find_slot(ctx: &Pkcs11) -> Result<Slot> {
    for slot in ctx.get_slots_with_token()? {
        if ctx.get_token_info(slot)?.label().trim_end() == TOKEN {
            return Ok(slot);
        }
    }
    bail!("no token labelled {TOKEN}")
}
