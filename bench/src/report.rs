//! The benchmark's output: a Markdown table, or a JSON document.

use std::path::PathBuf;

use keyward_sdk::{KeySpec, SignatureAlgorithm};
use serde_json::json;

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
    /// cryptoki directly on one kept, logged-in session (the PKCS#11 floor).
    Pkcs11Direct,
    /// cryptoki opening a session and logging in for every signature.
    Pkcs11SessionPerSign,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Agent => "agent",
            Path::InProcess => "in-process",
            Path::SshAgent => "ssh-agent",
            Path::Pkcs11Direct => "cryptoki, kept session",
            Path::Pkcs11SessionPerSign => "cryptoki, session per signature",
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
    /// Agent or in-process.
    pub path: Path,
    /// Concurrent clients.
    pub clients: usize,
    /// The figures.
    pub summary: Summary,
    /// Agent p50 - floor p50 (agent rows only).
    pub overhead_p50_us: Option<f64>,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The agent's socket.
    pub socket: PathBuf,
    /// Whether the agent was started by the benchmark.
    pub spawned: bool,
    /// Signatures per series.
    pub count: usize,
    /// Concurrent clients on the agent path.
    pub clients: usize,
    /// Unmeasured signatures before each series.
    pub warmup: usize,
    /// The series.
    pub rows: Vec<Row>,
}

/// The report as a Markdown table.
pub fn markdown(report: &Report) -> String {
    let mut text = String::from(
        "| key | path | clients | count | p50 µs | p99 µs | max µs | signs/s | overhead p50 µs |\n\
         |-----|------|--------:|------:|-------:|-------:|-------:|--------:|----------------:|\n",
    );
    for row in &report.rows {
        let s = &row.summary;
        text.push_str(&format!(
            "| {} ({}) | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {} |\n",
            row.spec.name(),
            row.algorithm.name(),
            row.path.name(),
            row.clients,
            s.count,
            s.p50_us,
            s.p99_us,
            s.max_us,
            s.per_second,
            row.overhead_p50_us
                .map_or_else(|| "—".to_string(), |o| format!("{o:.1}")),
        ));
    }
    text.push_str(&format!(
        "\n{} warm-up signatures per series; agent {} ({}); floor: OpenSSL in-process, one thread.",
        report.warmup,
        report.socket.display(),
        if report.spawned { "spawned" } else { "running" },
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
                "clients": row.clients,
                "count": s.count,
                "p50_us": s.p50_us,
                "p99_us": s.p99_us,
                "max_us": s.max_us,
                "mean_us": s.mean_us,
                "signs_per_sec": s.per_second,
                "overhead_p50_us": row.overhead_p50_us,
            })
        })
        .collect();
    let document = json!({
        "benchmark": "latency",
        "socket": report.socket.display().to_string(),
        "spawned": report.spawned,
        "count": report.count,
        "clients": report.clients,
        "warmup": report.warmup,
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "version": env!("CARGO_PKG_VERSION"),
        "results": rows,
    });
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report() -> Report {
        let summary = Summary::new(vec![Duration::from_micros(100)], Duration::from_millis(1));
        let row = |path, overhead| Row {
            spec: KeySpec::EcP256,
            key_id: "bench-ec-p256".into(),
            algorithm: SignatureAlgorithm::EcdsaSha256,
            path,
            clients: 1,
            summary,
            overhead_p50_us: overhead,
        };
        Report {
            socket: "/tmp/s.sock".into(),
            spawned: true,
            count: 1,
            clients: 1,
            warmup: 0,
            rows: vec![row(Path::Agent, Some(60.0)), row(Path::InProcess, None)],
        }
    }

    #[test]
    fn markdown_rows() {
        let text = markdown(&report());
        assert!(text.contains(
            "| ec-p256 (ecdsa-sha256) | agent | 1 | 1 | 100.0 | 100.0 | 100.0 | 1000 | 60.0 |"
        ));
        assert!(text.contains("| in-process | 1 | 1 | 100.0 | 100.0 | 100.0 | 1000 | — |"));
    }

    #[test]
    fn json_document() {
        let value: serde_json::Value = serde_json::from_str(&json(&report())).unwrap();
        assert_eq!(value["results"][0]["path"], "agent");
        assert_eq!(value["results"][0]["overhead_p50_us"], 60.0);
        assert!(value["results"][1]["overhead_p50_us"].is_null());
    }
}
