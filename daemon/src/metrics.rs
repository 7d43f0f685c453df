//! The Prometheus endpoint (`[metrics]`, off by default) and the few places that record.
//!
//! ```toml
//! [metrics]
//! listen = "127.0.0.1:9464"          # or a Unix socket path: "/run/keyward/metrics.sock"
//! ```
//!
//! The `metrics` facade records; `metrics-exporter-prometheus` renders the classic Prometheus
//! text format on its own listener (never the agent's socket, never the mTLS port). Without
//! `[metrics]` no recorder is installed and every call here is a no-op.
//!
//! What is recorded, and where (one place each, never in a handler):
//!
//! | metric | labels | recorded by |
//! | --- | --- | --- |
//! | `keyward_requests_total` | `method`, `result` (`ok`, `error`, `denied`), `code` | [`crate::audited::Audited`] (Sign and every KeyAdmin RPC) and the caller layer (callers refused before a handler) |
//! | `keyward_signatures_total` | `key`, `backend`, `algorithm` | `Audited` (a verified signature returned) |
//! | `keyward_sign_errors_total` | `key`, `backend`, `code` | `Audited` (a sign refused or failed) |
//! | `keyward_rate_limited_total` | `key` | `Audited` (a `rate_limit` / `caller_rate_limit` refusal) |
//! | `keyward_sign_duration_seconds` | `backend` | `Audited` (histogram: backend call, verification and audit records) |
//! | `keyward_audit_write_duration_seconds` | — | [`crate::audit`] (histogram: append + fdatasync of one record) |
//! | `keyward_plugin_restarts_total` | `backend` | [`crate::plugin_host`] |
//! | `keyward_build_info` | `version` | [`install`] (gauge, always 1) |
//! | `keyward_start_time_seconds` | — | [`install`] (gauge) |
//!
//! Label cardinality is bounded by the config: `key` is a key id only once it has resolved to
//! a key of a backend (configured, created or discovered), never what a caller typed; a
//! request for an unknown id is counted with `key=""`. `backend` is a `[[backend]]` name,
//! `code` a gRPC code name, `method` an RPC name.

use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tonic::Code;

/// Where `[metrics]` listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsListen {
    /// `host:port` (use 127.0.0.1 unless the scraper is remote: the endpoint has no
    /// authentication).
    Tcp(SocketAddr),
    /// A Unix socket path (created with the daemon's umask, 0600 in effect).
    Unix(PathBuf),
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsListen::Tcp(addr) => write!(f, "{addr}"),
            MetricsListen::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `[metrics]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The listener.
    pub listen: MetricsListen,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: String,
}

impl MetricsConfig {
    /// Parses `[metrics]`: `listen` is `host:port` or an absolute Unix socket path; a relative
    /// path is relative to `dir` (the config file's directory).
    pub fn parse(
        table: toml::Table,
        dir: Option<&std::path::Path>,
    ) -> Result<MetricsConfig, String> {
        let raw = RawMetrics::deserialize(toml::Value::Table(table))
            .map_err(|e| e.message().trim_end().to_string())?;
        let listen = raw.listen.trim();
        if let Ok(addr) = listen.parse::<SocketAddr>() {
            return Ok(MetricsConfig {
                listen: MetricsListen::Tcp(addr),
            });
        }
        if listen.contains('/') {
            let path = PathBuf::from(listen);
            let path = match dir {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path,
            };
            return Ok(MetricsConfig {
                listen: MetricsListen::Unix(path),
            });
        }
        Err(format!(
            "listen = {listen:?} is neither host:port (e.g. \"127.0.0.1:9464\") nor a Unix socket path (e.g. \"/run/keyward/metrics.sock\")"
        ))
    }
}

use serde::Deserialize as _;

/// Latency buckets (seconds): from a local ECDSA signature (tens of µs) to a slow cloud call.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Installs the recorder and starts the listener (inside the daemon's tokio runtime). An error
/// names the listener and what to do.
pub fn install(config: &MetricsConfig) -> Result<(), String> {
    let builder = PrometheusBuilder::new();
    let builder = match &config.listen {
        MetricsListen::Tcp(addr) => builder.with_http_listener(*addr),
        MetricsListen::Unix(path) => {
            // The exporter removes whatever is at the path before it binds: only ever a socket.
            match std::fs::symlink_metadata(path) {
                Ok(meta) if !meta.file_type().is_socket() => {
                    return Err(format!(
                        "[metrics] listen: {} exists and is not a socket; choose another path",
                        path.display()
                    ));
                }
                _ => {}
            }
            builder.with_http_uds_listener(path.clone())
        }
    };
    let (recorder, exporter) = builder
        .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| format!("[metrics]: {e}"))?
        .build()
        .map_err(|e| format!("[metrics] cannot listen on {}: {e}", config.listen))?;
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("[metrics]: cannot install the recorder: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = exporter.await {
            tracing::error!("the metrics listener stopped: {e:?}");
        }
    });
    describe();
    metrics::gauge!("keyward_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!("keyward_start_time_seconds").set(started.as_secs_f64());
    tracing::info!(listen = %config.listen, "serving Prometheus metrics");
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "keyward_requests_total",
        "Sign and KeyAdmin requests by method, result and gRPC code"
    );
    describe_counter!(
        "keyward_signatures_total",
        "Signatures returned, by key, backend and algorithm"
    );
    describe_counter!(
        "keyward_sign_errors_total",
        "Sign requests refused or failed, by key, backend and gRPC code"
    );
    describe_counter!(
        "keyward_rate_limited_total",
        "Sign requests refused by a rate_limit or caller_rate_limit, by key"
    );
    describe_histogram!(
        "keyward_sign_duration_seconds",
        metrics::Unit::Seconds,
        "Time from the attempt record to the verified signature, by backend"
    );
    describe_histogram!(
        "keyward_audit_write_duration_seconds",
        metrics::Unit::Seconds,
        "Time to append and fdatasync one audit record"
    );
    describe_counter!(
        "keyward_plugin_restarts_total",
        "Plugin processes restarted after they died, hung or failed to start, by backend"
    );
    describe_gauge!("keyward_build_info", "keywardd's version (always 1)");
    describe_gauge!(
        "keyward_start_time_seconds",
        "When keywardd started, seconds since the Unix epoch"
    );
}

/// A gRPC code as a label value: `ok`, `permission_denied`, ...
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// One request's outcome (Sign or a KeyAdmin RPC).
pub fn request(method: &'static str, result: &'static str, code: Code) {
    metrics::counter!(
        "keyward_requests_total",
        "method" => method,
        "result" => result,
        "code" => code_label(code)
    )
    .increment(1);
}

/// A signature returned by `key` (a resolved key id) of `backend`.
pub fn signature(key: &str, backend: &str, algorithm: &str, took: Duration) {
    metrics::counter!(
        "keyward_signatures_total",
        "key" => key.to_string(),
        "backend" => backend.to_string(),
        "algorithm" => algorithm.to_string()
    )
    .increment(1);
    metrics::histogram!("keyward_sign_duration_seconds", "backend" => backend.to_string())
        .record(took.as_secs_f64());
}

/// A sign request refused or failed; `key` and `backend` are empty when the id did not resolve.
pub fn sign_error(key: &str, backend: &str, code: Code, rate_limited: bool) {
    metrics::counter!(
        "keyward_sign_errors_total",
        "key" => key.to_string(),
        "backend" => backend.to_string(),
        "code" => code_label(code)
    )
    .increment(1);
    if rate_limited {
        metrics::counter!("keyward_rate_limited_total", "key" => key.to_string()).increment(1);
    }
}

/// One audit record appended and flushed.
pub fn audit_write(took: Duration) {
    metrics::histogram!("keyward_audit_write_duration_seconds").record(took.as_secs_f64());
}

/// A plugin process of `backend` restarted.
pub fn plugin_restart(backend: &str) {
    metrics::counter!("keyward_plugin_restarts_total", "backend" => backend.to_string())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MetricsConfig, String> {
        MetricsConfig::parse(toml::from_str(text).unwrap(), Some("/etc/keyward".as_ref()))
    }

    #[test]
    fn listen_is_an_address_or_a_socket_path() {
        assert_eq!(
            parse("listen = \"127.0.0.1:9464\"").unwrap().listen,
            MetricsListen::Tcp("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            parse("listen = \"/run/k/m.sock\"").unwrap().listen,
            MetricsListen::Unix("/run/k/m.sock".into())
        );
        assert_eq!(
            parse("listen = \"./m.sock\"").unwrap().listen,
            MetricsListen::Unix("/etc/keyward/./m.sock".into())
        );
        assert!(
            parse("listen = \"localhost\"")
                .unwrap_err()
                .contains("neither")
        );
        assert!(parse("port = 1").is_err());
    }

    #[test]
    fn codes_are_snake_case() {
        assert_eq!(code_label(Code::PermissionDenied), "permission_denied");
        assert_eq!(code_label(Code::ResourceExhausted), "resource_exhausted");
    }
}
