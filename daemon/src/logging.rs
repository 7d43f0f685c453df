//! keywardd's log: tracing events on stderr, as text or JSON lines.
//!
//! - `text` (the default): one line per event, never colours unless stderr is a terminal.
//!   Under systemd, when stderr is the journal (`JOURNAL_STREAM` names stderr's device and
//!   inode), lines carry no timestamp: journald stamps every line itself, and `journalctl -o
//!   json` already gives structured fields. We do not link `tracing-journald`: writing to
//!   stderr works the same under systemd, in containers and in a terminal, with no socket to
//!   find.
//! - `json`: one JSON object per line (`timestamp`, `level`, `fields.message`, the event's
//!   fields, `target`), for log shippers; `log_format = "json"` in the config or
//!   `--log-format json`.
//!
//! `KEYWARD_LOG` sets the filter (`debug`, `keyward_daemon=trace`); the default is `info`.

use std::os::fd::AsFd;

use crate::config::LogFormat;

/// Installs the subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let _ = CURRENT.set(format);
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        // Every field and message escaped: no caller string or plugin line can forge a line.
        LogFormat::Text if stderr_is_journal() => builder
            .fmt_fields(crate::shown::EscapingFields)
            .without_time()
            .init(),
        LogFormat::Text => builder.fmt_fields(crate::shown::EscapingFields).init(),
    }
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM=<dev>:<inode>` of
/// the stream it connected, which must be stderr's (a child whose stderr was redirected keeps
/// the variable but not the stream).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match rustix::fs::fstat(std::io::stderr().as_fd()) {
        Ok(stat) => stat.st_dev == dev && stat.st_ino == ino,
        Err(_) => false,
    }
}

static CURRENT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The format [`init`] installed (`text` before it ran).
pub fn current() -> LogFormat {
    CURRENT.get().copied().unwrap_or(LogFormat::Text)
}
