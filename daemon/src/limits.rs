//! `[limits]`: how much a caller may send and hold, each a setting with a safe default, and
//! the fixed bounds of the fields of a request.
//!
//! ```toml
//! [limits]
//! max_message_bytes = 65536        # an Ed25519 message to sign; a [[key]] may raise it for itself
//! max_certificate_bytes = 1048576  # a certificate chain (PEM) or OpenPGP certificate to attach
//! max_executable_bytes = 268435456 # the largest caller executable a `sha256` policy rule hashes
//! unknown_key_seconds = 5          # how long an id that names no key is remembered as unknown
//! key_lookups = { per_second = 20, burst = 50 }  # backend look-ups of uncached ids, per backend
//! max_connections = 1024           # open connections on the agent socket, in all
//! max_connections_per_uid = 256    # ... and per caller uid
//! max_concurrent_streams = 32      # requests in flight on one connection
//! idle_timeout = 300               # seconds a connection may stay without a byte either way
//! header_timeout = 10              # seconds to send the preface and each request's headers
//! max_header_list_bytes = 16384    # the headers of one request
//! stream_window_bytes = 262144     # unread request bytes the daemon buffers per request ...
//! connection_window_bytes = 1048576 # ... and per connection
//! ```
//!
//! Every request field has a bound that is checked before anything else looks at the request
//! (the registry, policies, the audit log, the daemon's log): [`MAX_KEY_ID_BYTES`] and the other
//! constants here, and the message cap of [`Limits::message_cap`]. The gRPC decoder refuses a
//! request larger than the largest cap before it is decoded ([`Limits::signer_decoding_limit`]).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use crate::ratelimit::Rate;
use crate::shown::quoted;
use crate::transport::authority::MAX_HEADER_LIST;

/// Longest key id a request may name. No key id is longer than 257 bytes (a backend name and a
/// key name of 128 bytes each, and the `/`); anything longer is refused unread.
pub const MAX_KEY_ID_BYTES: usize = 512;
/// Longest `purpose`.
pub const MAX_PURPOSE_BYTES: usize = 256;
/// Longest backend name (names are 1-128 letters, digits, `.`, `_`, `-`).
pub const MAX_BACKEND_NAME_BYTES: usize = 128;
/// Longest digest (SHA-512).
pub const MAX_DIGEST_BYTES: usize = 64;
/// Longest PIN `UnlockBackend` takes.
pub const MAX_PIN_BYTES: usize = 256;
/// Most options a `GenerateKey` may carry, and the longest name and value of one.
pub const MAX_OPTIONS: usize = 16;
/// See [`MAX_OPTIONS`].
pub const MAX_OPTION_NAME_BYTES: usize = 64;
/// See [`MAX_OPTIONS`].
pub const MAX_OPTION_VALUE_BYTES: usize = 1024;
/// The largest `max_message_bytes` (global or per key) the config may set.
pub const MAX_MESSAGE_CAP: usize = 64 << 20;
/// What a request carries besides its message or certificate (ids, purpose, framing).
const REQUEST_OVERHEAD: usize = 4096;
/// What a `GenerateKey` request may carry at most (its options).
const GENERATE_BYTES: usize =
    MAX_OPTIONS * (MAX_OPTION_NAME_BYTES + MAX_OPTION_VALUE_BYTES + 8) + REQUEST_OVERHEAD;

/// `[limits]`, validated, with the per-key message caps of the `[[key]]` tables.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Longest message (Ed25519) a key signs unless its `[[key]]` says otherwise.
    pub max_message_bytes: usize,
    /// `[[key]] max_message_bytes`: key id -> its own cap.
    pub key_message_bytes: HashMap<String, usize>,
    /// Longest certificate chain PEM or OpenPGP certificate to attach.
    pub max_certificate_bytes: usize,
    /// Largest caller executable hashed for a `sha256` policy rule.
    pub max_executable_bytes: u64,
    /// How long an id that names no key is remembered as unknown.
    pub unknown_key_ttl: Duration,
    /// Backend look-ups of ids that are not cached, per backend.
    pub key_lookups: Rate,
    /// Open connections on the agent socket, in all.
    pub max_connections: usize,
    /// Open connections on the agent socket per caller uid.
    pub max_connections_per_uid: usize,
    /// Requests in flight on one connection (HTTP/2 streams).
    pub max_concurrent_streams: u32,
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// The time a client has to send the connection preface, and each request's headers once
    /// it has started them.
    pub header_timeout: Duration,
    /// Largest header list of a request.
    pub max_header_list_bytes: u32,
    /// Request bytes buffered per request before the daemon reads them (HTTP/2 stream window).
    pub stream_window_bytes: u32,
    /// ... and per connection (HTTP/2 connection window).
    pub connection_window_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 << 10,
            key_message_bytes: HashMap::new(),
            max_certificate_bytes: 1 << 20,
            max_executable_bytes: 256 << 20,
            unknown_key_ttl: Duration::from_secs(5),
            key_lookups: Rate {
                per_second: 20.0,
                burst: 50,
            },
            max_connections: 1024,
            max_connections_per_uid: 256,
            max_concurrent_streams: 32,
            idle_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            max_header_list_bytes: 16 << 10,
            stream_window_bytes: 256 << 10,
            connection_window_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: Option<u64>,
    max_certificate_bytes: Option<u64>,
    max_executable_bytes: Option<u64>,
    unknown_key_seconds: Option<f64>,
    key_lookups: Option<RawRate>,
    max_connections: Option<u64>,
    max_connections_per_uid: Option<u64>,
    max_concurrent_streams: Option<u64>,
    idle_timeout: Option<f64>,
    header_timeout: Option<f64>,
    max_header_list_bytes: Option<u64>,
    stream_window_bytes: Option<u64>,
    connection_window_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: f64,
    burst: u32,
}

/// `value` if it is within `min..=max`, else an error naming `name` and the range.
fn within(name: &str, value: u64, min: u64, max: u64) -> Result<u64, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{name} = {value} is out of range; use {min} to {max}"
        ))
    }
}

fn seconds(name: &str, value: f64, min: f64, max: f64) -> Result<Duration, String> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!(
            "{name} = {value} is out of range; use {min} to {max} seconds"
        ))
    }
}

impl Limits {
    /// Parses `[limits]`; the error names the setting and its range.
    pub fn parse(table: toml::Table) -> Result<Limits, String> {
        let raw = RawLimits::deserialize(toml::Value::Table(table))
            .map_err(|e| e.message().trim_end().to_string())?;
        let mut limits = Limits::default();
        if let Some(v) = raw.max_message_bytes {
            limits.max_message_bytes =
                within("max_message_bytes", v, 64, MAX_MESSAGE_CAP as u64)? as usize;
        }
        if let Some(v) = raw.max_certificate_bytes {
            limits.max_certificate_bytes =
                within("max_certificate_bytes", v, 4096, 64 << 20)? as usize;
        }
        if let Some(v) = raw.max_executable_bytes {
            limits.max_executable_bytes = within("max_executable_bytes", v, 4096, 1 << 40)?;
        }
        if let Some(v) = raw.unknown_key_seconds {
            limits.unknown_key_ttl = seconds("unknown_key_seconds", v, 0.0, 3600.0)?;
        }
        if let Some(rate) = raw.key_lookups {
            if !(rate.per_second.is_finite() && rate.per_second > 0.0) || rate.burst == 0 {
                return Err(
                    "key_lookups needs per_second > 0 and burst >= 1 (e.g. { per_second = 20, burst = 50 })"
                        .into(),
                );
            }
            limits.key_lookups = Rate {
                per_second: rate.per_second,
                burst: rate.burst,
            };
        }
        if let Some(v) = raw.max_connections {
            limits.max_connections = within("max_connections", v, 1, 1 << 20)? as usize;
        }
        if let Some(v) = raw.max_connections_per_uid {
            limits.max_connections_per_uid =
                within("max_connections_per_uid", v, 1, 1 << 20)? as usize;
        }
        if let Some(v) = raw.max_concurrent_streams {
            limits.max_concurrent_streams = within("max_concurrent_streams", v, 1, 1024)? as u32;
        }
        if let Some(v) = raw.idle_timeout {
            limits.idle_timeout = seconds("idle_timeout", v, 1.0, 86_400.0)?;
        }
        if let Some(v) = raw.header_timeout {
            limits.header_timeout = seconds("header_timeout", v, 0.1, 600.0)?;
        }
        if let Some(v) = raw.max_header_list_bytes {
            limits.max_header_list_bytes =
                within("max_header_list_bytes", v, 1024, MAX_HEADER_LIST as u64)? as u32;
        }
        // HTTP/2 windows: at least the protocol's initial 65535, at most 2^31 - 1.
        if let Some(v) = raw.stream_window_bytes {
            limits.stream_window_bytes =
                within("stream_window_bytes", v, 65_535, (1 << 31) - 1)? as u32;
        }
        if let Some(v) = raw.connection_window_bytes {
            limits.connection_window_bytes =
                within("connection_window_bytes", v, 65_535, (1 << 31) - 1)? as u32;
        }
        Ok(limits)
    }

    /// Sets the connection settings (those the transport reads at start: connections, streams,
    /// timeouts, header list, windows) to `running`'s; `true` when that changed anything.
    pub fn keep_connection_settings(&mut self, running: &Limits) -> bool {
        let before = self.clone();
        self.max_connections = running.max_connections;
        self.max_connections_per_uid = running.max_connections_per_uid;
        self.max_concurrent_streams = running.max_concurrent_streams;
        self.idle_timeout = running.idle_timeout;
        self.header_timeout = running.header_timeout;
        self.max_header_list_bytes = running.max_header_list_bytes;
        self.stream_window_bytes = running.stream_window_bytes;
        self.connection_window_bytes = running.connection_window_bytes;
        *self != before
    }

    /// The longest message the key named `key_id` (as the request spells it) may sign: its
    /// `[[key]] max_message_bytes`, else `[limits] max_message_bytes`.
    pub fn message_cap(&self, key_id: &str) -> usize {
        self.key_message_bytes
            .get(key_id)
            .copied()
            .unwrap_or(self.max_message_bytes)
    }

    /// The largest message any key may sign.
    pub fn largest_message(&self) -> usize {
        self.key_message_bytes
            .values()
            .copied()
            .chain([self.max_message_bytes])
            .max()
            .unwrap_or(self.max_message_bytes)
    }

    /// The gRPC decoding limit of `Signer`: the largest message any key may sign and the rest
    /// of a request. A larger request is refused by the decoder, before it is decoded.
    pub fn signer_decoding_limit(&self) -> usize {
        self.largest_message() + REQUEST_OVERHEAD
    }

    /// The gRPC decoding limit of `KeyAdmin`: the largest certificate, or generate options.
    pub fn admin_decoding_limit(&self) -> usize {
        (self.max_certificate_bytes + REQUEST_OVERHEAD).max(GENERATE_BYTES)
    }
}

/// Checks that the caller text `value`, the request's `field`, is at most `max` bytes; the
/// error names the field, the size and the bound, and shows the value cut and escaped.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() <= max {
        return Ok(());
    }
    Err(format!(
        "the {field} {} is {} bytes long; it may be at most {max} bytes",
        quoted(value),
        value.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Limits, String> {
        Limits::parse(text.parse::<toml::Table>().expect("TOML"))
    }

    #[test]
    fn defaults_and_settings() {
        assert_eq!(parse("").unwrap(), Limits::default());
        let limits = parse(
            "max_message_bytes = 1024\nidle_timeout = 2.5\nkey_lookups = { per_second = 1, burst = 2 }",
        )
        .unwrap();
        assert_eq!(limits.max_message_bytes, 1024);
        assert_eq!(limits.idle_timeout, Duration::from_millis(2500));
        assert_eq!(limits.key_lookups.burst, 2);
        assert!(
            parse("max_message_bytes = 1")
                .unwrap_err()
                .contains("max_message_bytes = 1 is out of range; use 64 to 67108864")
        );
        assert!(
            parse("max_mesage_bytes = 1")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            parse("header_timeout = 0")
                .unwrap_err()
                .contains("header_timeout")
        );
        assert!(
            parse("key_lookups = { per_second = 0, burst = 2 }")
                .unwrap_err()
                .contains("per_second > 0")
        );
    }

    #[test]
    fn message_caps_follow_the_key_and_set_the_decoding_limit() {
        let mut limits = Limits::default();
        assert_eq!(limits.message_cap("any"), 65536);
        assert_eq!(limits.signer_decoding_limit(), 65536 + REQUEST_OVERHEAD);
        limits.key_message_bytes.insert("big".into(), 1 << 20);
        assert_eq!(limits.message_cap("big"), 1 << 20);
        assert_eq!(limits.message_cap("other"), 65536);
        assert_eq!(limits.signer_decoding_limit(), (1 << 20) + REQUEST_OVERHEAD);
        assert!(limits.admin_decoding_limit() > limits.max_certificate_bytes);
    }

    #[test]
    fn lengths_are_refused_with_the_value_cut() {
        assert!(check_len("key id", "release", MAX_KEY_ID_BYTES).is_ok());
        let long = "k\n".repeat(10_000_000);
        let error = check_len("key id", &long, MAX_KEY_ID_BYTES).unwrap_err();
        assert!(error.len() < 1024, "{error}");
        assert!(error.contains("is 20000000 bytes long; it may be at most 512 bytes"));
        assert!(error.contains("…(20000000 bytes, sha256 "));
        assert!(!error.contains('\n'));
    }
}
