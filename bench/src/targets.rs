//! `keyward-bench targets FILE...`: the targets of issue #12, checked against the JSON
//! documents of one run (`--json-out` of `latency`, `pkcs11` and `startup`). A miss is a
//! finding to report, so the command prints the table and exits 0 either way.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::Value;

use crate::startup::{IDLE_RSS_TARGET_MB, STARTUP_TARGET_MS};

/// Target: agent p50 - floor p50 with one client, local Ed25519 and P-256.
const OVERHEAD_TARGET_US: f64 = 50.0;
/// Target: keyward's throughput with 16 clients over ssh-agent's.
const SSH_RATIO_TARGET: f64 = 2.0;

/// `keyward-bench targets`
#[derive(Debug, Args)]
pub struct TargetsArgs {
    /// JSON documents written by --json-out
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Prints the targets table.
pub fn run(args: TargetsArgs) -> Result<()> {
    let mut documents = Vec::new();
    for file in &args.files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        documents.push(
            serde_json::from_str::<Value>(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?,
        );
    }
    println!("{}", table(&documents));
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn results<'a>(documents: &'a [Value], benchmark: &str) -> impl Iterator<Item = &'a Value> {
    let benchmark = benchmark.to_string();
    documents
        .iter()
        .filter(move |d| d["benchmark"] == benchmark.as_str())
        .flat_map(|d| d["results"].as_array().into_iter().flatten())
}

fn find<'a>(
    documents: &'a [Value],
    benchmark: &str,
    key: &str,
    path: &str,
    label: Option<&str>,
    clients: u64,
) -> Option<&'a Value> {
    results(documents, benchmark).find(|r| {
        r["key_spec"] == key
            && r["path"] == path
            && label.is_none_or(|l| r["label"] == l)
            && r["clients"].as_u64() == Some(clients)
    })
}

fn f(value: &Value, field: &str) -> f64 {
    value[field].as_f64().unwrap_or(f64::NAN)
}

/// The Markdown table of targets.
pub fn table(documents: &[Value]) -> String {
    let mut out = String::from("| target | measured | verdict |\n|---|---|---|\n");
    for key in ["ed25519", "ec-p256"] {
        if let Some(agent) = find(documents, "latency", key, "agent", Some("keyward local"), 1) {
            let overhead = f(agent, "overhead_p50_us");
            out.push_str(&format!(
                "| local {key}, 1 client: p50 overhead over the in-process floor ≤ {OVERHEAD_TARGET_US} µs | {:.1} µs (agent p50 {:.1} µs) | {} |\n",
                overhead,
                f(agent, "p50_us"),
                verdict(overhead <= OVERHEAD_TARGET_US)
            ));
        }
    }
    for key in ["ed25519", "ec-p256", "rsa-2048"] {
        let agent = find(
            documents,
            "latency",
            key,
            "agent",
            Some("keyward local"),
            16,
        );
        let ssh = find(documents, "latency", key, "ssh-agent", None, 16);
        if let (Some(agent), Some(ssh)) = (agent, ssh) {
            let ratio = f(agent, "signs_per_sec") / f(ssh, "signs_per_sec");
            out.push_str(&format!(
                "| local {key}, 16 clients: throughput ≥ {SSH_RATIO_TARGET}× ssh-agent's | {:.0} vs {:.0} signs/s = {ratio:.2}× | {} |\n",
                f(agent, "signs_per_sec"),
                f(ssh, "signs_per_sec"),
                verdict(ratio >= SSH_RATIO_TARGET)
            ));
        }
    }
    for key in ["ec-p256", "rsa-2048"] {
        let agent = find(documents, "pkcs11", key, "agent", None, 16);
        let direct = find(documents, "pkcs11", key, "cryptoki, kept session", None, 1);
        if let (Some(agent), Some(direct)) = (agent, direct) {
            let (a, d) = (f(agent, "signs_per_sec"), f(direct, "signs_per_sec"));
            out.push_str(&format!(
                "| PKCS#11 SoftHSM {key}, 16 clients ≥ the single-session direct floor | {a:.0} vs {d:.0} signs/s = {:.2}× | {} |\n",
                a / d,
                verdict(a >= d)
            ));
        }
    }
    for startup in documents.iter().filter(|d| d["benchmark"] == "startup") {
        let p50 = f(&startup["startup_ms"], "p50");
        out.push_str(&format!(
            "| daemon start to ready on the embedded default ≤ {STARTUP_TARGET_MS} ms | p50 {p50:.1} ms (max {:.1} ms, {} starts) | {} |\n",
            f(&startup["startup_ms"], "max"),
            startup["repeat"],
            verdict(p50 <= STARTUP_TARGET_MS)
        ));
        for (when, field) in [
            ("after start-up", "idle_rss_after_start_mb"),
            ("after a load run", "idle_rss_after_load_mb"),
        ] {
            let mb = f(startup, field);
            out.push_str(&format!(
                "| idle RSS {when} ≤ {IDLE_RSS_TARGET_MB} MB | {mb:.1} MB | {} |\n",
                verdict(mb <= IDLE_RSS_TARGET_MB)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_each_target() {
        let latency = json!({"benchmark": "latency", "results": [
            {"key_spec": "ec-p256", "path": "agent", "label": "keyward local", "clients": 1,
             "overhead_p50_us": 40.0, "p50_us": 60.0, "signs_per_sec": 1.0},
            {"key_spec": "ec-p256", "path": "agent", "label": "keyward local", "clients": 16,
             "signs_per_sec": 3000.0},
            {"key_spec": "ec-p256", "path": "ssh-agent", "label": "OpenSSH ssh-agent", "clients": 16,
             "signs_per_sec": 2000.0},
        ]});
        let startup = json!({"benchmark": "startup", "repeat": 5,
            "startup_ms": {"p50": 20.0, "max": 30.0},
            "idle_rss_after_start_mb": 12.0, "idle_rss_after_load_mb": 31.0});
        let text = table(&[latency, startup]);
        assert!(text.contains("| local ec-p256, 1 client: p50 overhead over the in-process floor ≤ 50 µs | 40.0 µs (agent p50 60.0 µs) | met |"), "{text}");
        assert!(
            text.contains("3000 vs 2000 signs/s = 1.50× | **missed** |"),
            "{text}"
        );
        assert!(
            text.contains("p50 20.0 ms (max 30.0 ms, 5 starts) | met |"),
            "{text}"
        );
        assert!(
            text.contains("| idle RSS after a load run ≤ 30 MB | 31.0 MB | **missed** |"),
            "{text}"
        );
        assert!(!text.contains("ed25519"));
    }
}
