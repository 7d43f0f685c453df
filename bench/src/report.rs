//! The benchmark's output: a Markdown table, or a JSON document (both, with `--json-out`).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use keyward_sdk::{KeySpec, SignatureAlgorithm};
use serde_json::json;

use crate::resources::Usage;
use crate::stats::Summary;

/// Where the signature was computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Through `keywardd`, over its socket.
    Agent,
    /// In this process with OpenSSL (the floor).
    InProcess,
    /// Through OpenSSH's ssh-agent (the baseline), one connection per client.
    SshAgent,
    /// Through keywardd's own ssh-agent socket (`[ssh_agent]`), one connection per client.
    KeywardSsh,
    /// Through GnuPG's gpg-agent over its Assuan socket, one connection per client.
    GpgAgent,
    /// cryptoki directly on one kept, logged-in session (the PKCS#11 floor).
    Pkcs11Direct,
    /// cryptoki opening a session and logging in for every signature.
    Pkcs11SessionPerSign,
    /// A cloud emulator called directly with the SDK / HTTP client keyward's backend uses.
    CloudDirect,
    /// tss-esapi directly: the key loaded once, TPM2_Sign per signature (the TPM floor).
    TpmDirect,
    /// parsec-client directly: psa_sign_hash per signature (the Parsec floor).
    ParsecDirect,
}

impl Path {
    /// The name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Path::Agent => "agent",
            Path::InProcess => "in-process",
            Path::SshAgent => "ssh-agent",
            Path::KeywardSsh => "keyward ssh-agent socket",
            Path::GpgAgent => "gpg-agent",
            Path::Pkcs11Direct => "cryptoki, kept session",
            Path::Pkcs11SessionPerSign => "cryptoki, session per signature",
            Path::CloudDirect => "direct",
            Path::TpmDirect => "tss-esapi, key loaded",
            Path::ParsecDirect => "parsec-client",
        }
    }
}

/// One measured series.
#[derive(Clone, Debug)]
pub struct Row {
    /// The key type.
    pub spec: KeySpec,
    /// The agent's key (the in-process row uses a fresh key of the same type).
    pub key_id: String,
    /// The algorithm signed with.
    pub algorithm: SignatureAlgorithm,
    /// The kind of path.
    pub path: Path,
    /// What the path column of the table says (backend, isolation, peer).
    pub label: String,
    /// Concurrent clients.
    pub clients: usize,
    /// The figures.
    pub summary: Summary,
    /// p50 - the floor's p50, where a floor was measured.
    pub overhead_p50_us: Option<f64>,
    /// CPU and memory of the serving process (keywardd and its plugins, or the baseline
    /// agent) during the series.
    pub resources: Option<Usage>,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Which subcommand.
    pub benchmark: &'static str,
    /// The agent's socket.
    pub socket: PathBuf,
    /// Whether the agent was started by the benchmark.
    pub spawned: bool,
    /// Signatures per series (0 for a timed run).
    pub count: usize,
    /// Seconds per series for a timed run.
    pub duration_s: Option<f64>,
    /// Unmeasured signatures before each series.
    pub warmup: usize,
    /// A sentence printed under the table.
    pub note: String,
    /// The series.
    pub rows: Vec<Row>,
}

fn dash() -> String {
    "—".to_string()
}

/// The report as a Markdown table.
pub fn markdown(report: &Report) -> String {
    let mut text = String::from(
        "| key | path | clients | count | errors | p50 µs | p99 µs | max µs | signs/s | overhead p50 µs | server CPU µs/sign | server peak RSS MiB |\n\
         |-----|------|--------:|------:|-------:|-------:|-------:|-------:|--------:|----------------:|-------------------:|--------------------:|\n",
    );
    for row in &report.rows {
        let s = &row.summary;
        text.push_str(&format!(
            "| {} ({}) | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {} | {} | {} |\n",
            row.spec.name(),
            row.algorithm.name(),
            row.label,
            row.clients,
            s.count,
            s.errors,
            s.p50_us,
            s.p99_us,
            s.max_us,
            s.per_second,
            row.overhead_p50_us.map_or_else(dash, |o| format!("{o:.1}")),
            row.resources
                .map_or_else(dash, |u| format!("{:.1}", u.cpu_us_per_op)),
            row.resources.map_or_else(dash, |u| if u.processes > 1 {
                format!("{:.1} ({} processes)", u.peak_rss_mib, u.processes)
            } else {
                format!("{:.1}", u.peak_rss_mib)
            }),
        ));
    }
    text.push_str(&format!(
        "\n{} warm-up signatures per series; {}; {}. {}",
        report.warmup,
        match report.duration_s {
            Some(s) => format!("{s} s per series"),
            None => format!("{} signatures per series", report.count),
        },
        if report.spawned {
            "a private keywardd started by the benchmark".to_string()
        } else {
            format!("the running agent at {}", report.socket.display())
        },
        report.note,
    ));
    text
}

/// The report as a JSON document.
pub fn json(report: &Report) -> String {
    let rows: Vec<_> = report
        .rows
        .iter()
        .map(|row| {
            let s = &row.summary;
            json!({
                "key_spec": row.spec.name(),
                "key_id": row.key_id,
                "algorithm": row.algorithm.name(),
                "path": row.path.name(),
                "label": row.label,
                "clients": row.clients,
                "count": s.count,
                "errors": s.errors,
                "p50_us": s.p50_us,
                "p99_us": s.p99_us,
                "max_us": s.max_us,
                "mean_us": s.mean_us,
                "signs_per_sec": s.per_second,
                "overhead_p50_us": row.overhead_p50_us,
                "server_cpu_ms": row.resources.map(|u| u.cpu_ms),
                "server_cpu_us_per_sign": row.resources.map(|u| u.cpu_us_per_op),
                "server_peak_rss_mib": row.resources.map(|u| u.peak_rss_mib),
                "server_rss_mib": row.resources.map(|u| u.rss_mib),
                "server_processes": row.resources.map(|u| u.processes),
            })
        })
        .collect();
    let document = json!({
        "benchmark": report.benchmark,
        "socket": report.socket.display().to_string(),
        "spawned": report.spawned,
        "count": report.count,
        "duration_s": report.duration_s,
        "warmup": report.warmup,
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "version": env!("CARGO_PKG_VERSION"),
        "results": rows,
    });
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

/// Prints `markdown` (or `json` with `as_json`) on stdout, and writes the JSON document to
/// `json_out` when given.
pub fn emit(markdown: &str, json: &str, as_json: bool, json_out: Option<&PathBuf>) -> Result<()> {
    if let Some(path) = json_out {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let text = if as_json { json } else { markdown };
    // Written by hand rather than with println!, which panics when stdout is a closed pipe.
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("cannot write the report")
        }
        _ => Ok(()),
    }
}

/// Prints the report (see [`emit`]).
pub fn print(report: &Report, as_json: bool, json_out: Option<&PathBuf>) -> Result<()> {
    emit(&markdown(report), &json(report), as_json, json_out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report() -> Report {
        let summary = Summary::new(vec![Duration::from_micros(100)], Duration::from_millis(1));
        let row = |path, label: &str, overhead, resources| Row {
            spec: KeySpec::EcP256,
            key_id: "bench-ec-p256".into(),
            algorithm: SignatureAlgorithm::EcdsaSha256,
            path,
            label: label.into(),
            clients: 1,
            summary,
            overhead_p50_us: overhead,
            resources,
        };
        let usage = Usage {
            cpu_ms: 2.0,
            cpu_us_per_op: 2000.0,
            peak_rss_mib: 12.5,
            rss_mib: 12.0,
            processes: 1,
        };
        Report {
            benchmark: "latency",
            socket: "/tmp/s.sock".into(),
            spawned: true,
            count: 1,
            duration_s: None,
            warmup: 0,
            note: String::new(),
            rows: vec![
                row(Path::Agent, "keyward local", Some(60.0), Some(usage)),
                row(Path::InProcess, "in-process OpenSSL", None, None),
            ],
        }
    }

    #[test]
    fn markdown_rows() {
        let text = markdown(&report());
        assert!(text.contains(
            "| ec-p256 (ecdsa-sha256) | keyward local | 1 | 1 | 0 | 100.0 | 100.0 | 100.0 | 1000 | 60.0 | 2000.0 | 12.5 |"
        ));
        assert!(text.contains(
            "| in-process OpenSSL | 1 | 1 | 0 | 100.0 | 100.0 | 100.0 | 1000 | — | — | — |"
        ));
    }

    #[test]
    fn json_document() {
        let value: serde_json::Value = serde_json::from_str(&json(&report())).unwrap();
        assert_eq!(value["results"][0]["path"], "agent");
        assert_eq!(value["results"][0]["overhead_p50_us"], 60.0);
        assert_eq!(value["results"][0]["server_peak_rss_mib"], 12.5);
        assert!(value["results"][1]["overhead_p50_us"].is_null());
        assert!(value["results"][1]["server_cpu_ms"].is_null());
    }
}
