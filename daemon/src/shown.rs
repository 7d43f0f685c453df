//! Caller-controlled text, made safe where it lands: the one helper for every key id, purpose,
//! backend name, option or identity that a request carries into a log line, an audit record or
//! an error message (and so into `grpc-message`).
//!
//! Two things can go wrong with such text, and this module handles both:
//!
//! - **Size.** A value longer than its place allows is cut, on a character boundary, and ends
//!   with a marker that still identifies the whole value: `aaaa…(20000000 bytes, sha256 1f2e…)`
//!   (the full SHA-256 in hex, so an operator can match it against what a client sent).
//! - **Forgery.** Control characters, line and paragraph separators and bidirectional overrides
//!   are escaped (`\n`, `\u{1b}`, `\u{202e}`), so no caller can end a log line early and write a
//!   line of its own (a fake `audit log head at shutdown`, say), or make a line read backwards.
//!
//! Use [`quoted`] inside messages (it reads like `{:?}`: `key "a\nb"`), [`shown`] for a tracing
//! field or anywhere the value stands alone, and [`bounded`] for the audit log, whose JSON
//! encoder escapes by itself. The daemon's log formatter ([`EscapingFields`]) escapes every
//! field and message again, so a value that slips past a call site still cannot forge a line.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use sha2::{Digest, Sha256};

/// How much of a long value [`shown`] and [`quoted`] keep before the marker, in bytes.
pub const SHOWN_BYTES: usize = 256;
/// How much of a long value [`bounded`] keeps in an audit record, in bytes.
pub const RECORDED_BYTES: usize = 512;
/// How much of a long error message [`message`] keeps (`grpc-message` and its log line).
pub const MESSAGE_BYTES: usize = 4096;

/// Caller text as it may appear in a log line or a message; see the module documentation.
#[derive(Clone, Copy)]
pub struct Shown<'a> {
    text: &'a str,
    quoted: bool,
    keep: usize,
    /// Whether backslashes are doubled (not in whole messages, whose quoted parts were escaped
    /// once already).
    backslashes: bool,
}

/// `text` escaped and bounded, without quotes (for tracing fields: `key = %shown(id)`).
pub fn shown(text: &str) -> Shown<'_> {
    Shown {
        text,
        quoted: false,
        keep: SHOWN_BYTES,
        backslashes: true,
    }
}

/// `text` escaped, bounded and in double quotes, like `{:?}` (for messages: `key {}`).
pub fn quoted(text: &str) -> Shown<'_> {
    Shown {
        text,
        quoted: true,
        keep: SHOWN_BYTES,
        backslashes: true,
    }
}

/// A whole error message (built by the daemon, or a backend's), bounded to [`MESSAGE_BYTES`]
/// and with unsafe characters escaped, for `grpc-message`: the last guard before a client.
pub fn message(text: &str) -> Shown<'_> {
    Shown {
        text,
        quoted: false,
        keep: MESSAGE_BYTES,
        backslashes: false,
    }
}

/// `text` cut to [`RECORDED_BYTES`] with the marker, not escaped: for the audit log, whose JSON
/// encoding escapes control characters itself and whose readers want the exact text.
pub fn bounded(text: &str) -> Cow<'_, str> {
    bounded_to(text, RECORDED_BYTES)
}

/// [`bounded`] with another bound (an error message in an audit record: [`MESSAGE_BYTES`]).
pub fn bounded_to(text: &str, keep: usize) -> Cow<'_, str> {
    if text.len() <= keep {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(keep + 100);
    out.push_str(&text[..floor_char_boundary(text, keep)]);
    let _ = write_marker(&mut out, text);
    Cow::Owned(out)
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.quoted {
            f.write_char('"')?;
        }
        let cut = if self.text.len() > self.keep {
            floor_char_boundary(self.text, self.keep)
        } else {
            self.text.len()
        };
        escape_into(f, &self.text[..cut], self.quoted, self.backslashes)?;
        if self.quoted {
            f.write_char('"')?;
        }
        if cut < self.text.len() {
            write_marker(f, self.text)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&quoted(self.text), f)
    }
}

/// `…(N bytes, sha256 HEX)` for the whole of `text`.
fn write_marker(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    let digest = Sha256::digest(text.as_bytes());
    write!(
        out,
        "…({} bytes, sha256 {})",
        text.len(),
        hex::encode(digest)
    )
}

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Whether `c` must not reach a log line as it is: it could end the line, move the cursor or
/// reorder what is shown (C0 and C1 controls, DEL, line and paragraph separators, bidi
/// embeddings, overrides and isolates, and the BOM / zero-width no-break space).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        )
}

/// Writes `text` with every unsafe character escaped (`\n`, `\r`, `\t`, `\u{..}`); with
/// `in_quotes` also `"`, and with `backslashes` backslashes doubled, so that the output reads
/// back unambiguously. (The log formatter leaves backslashes alone: what it escapes was often
/// escaped once already by a `Debug` implementation, and a backslash cannot end a line.)
pub fn escape_into(
    out: &mut impl fmt::Write,
    text: &str,
    in_quotes: bool,
    backslashes: bool,
) -> fmt::Result {
    let mut start = 0;
    for (at, c) in text.char_indices() {
        let escaped: Option<&str> = match c {
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\\' if backslashes => Some("\\\\"),
            '"' if in_quotes => Some("\\\""),
            _ => None,
        };
        if escaped.is_none() && !is_unsafe(c) {
            continue;
        }
        out.write_str(&text[start..at])?;
        match escaped {
            Some(escaped) => out.write_str(escaped)?,
            None => write!(out, "\\u{{{:x}}}", c as u32)?,
        }
        start = at + c.len_utf8();
    }
    out.write_str(&text[start..])
}

/// A `fmt::Write` that escapes everything written through it (for the log formatter).
struct Escaping<'w, W: fmt::Write>(&'w mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s, false, false)
    }
}

/// The daemon's text log formatter for fields and messages: like tracing's default
/// (`message key=value ...`), with every value escaped ([`escape_into`]), so no field, message
/// or plugin stderr line can hold a newline or a terminal control sequence.
#[derive(Clone, Copy, Debug, Default)]
pub struct EscapingFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for EscapingFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = FieldVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldVisitor<'writer> {
    writer: tracing_subscriber::fmt::format::Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // `log` crate metadata that tracing-log adds; the default formatter skips it too.
        if name.starts_with("log.") {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = (|| {
            self.writer.write_str(separator)?;
            if name != "message" {
                write!(self.writer, "{name}=")?;
            }
            write!(Escaping(&mut self.writer), "{value:?}")
        })();
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        // A `&str` field is quoted by default; keep that, escaped once.
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            let whole = Shown {
                text: value,
                quoted: true,
                keep: usize::MAX,
                backslashes: true,
            };
            self.record_debug(field, &format_args!("{whole}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_kept_and_escaped() {
        assert_eq!(shown("release").to_string(), "release");
        assert_eq!(quoted("release").to_string(), "\"release\"");
        assert_eq!(
            shown("a\nb\r\tc\\d\u{1b}[31m\u{202e}\u{2028}").to_string(),
            "a\\nb\\r\\tc\\\\d\\u{1b}[31m\\u{202e}\\u{2028}"
        );
        assert_eq!(quoted("say \"hi\"").to_string(), "\"say \\\"hi\\\"\"");
        assert_eq!(shown("say \"hi\"").to_string(), "say \"hi\"");
        assert_eq!(shown("clé ✓").to_string(), "clé ✓", "printable text stays");
    }

    #[test]
    fn a_forged_log_line_stays_on_one_line() {
        let forged = "x\n2026-01-01T00:00:00Z  INFO keyward_daemon::server: audit log head at shutdown seq=1 head=00";
        let out = quoted(forged).to_string();
        assert!(!out.contains('\n'), "{out}");
        assert!(out.starts_with("\"x\\n2026"), "{out}");
    }

    #[test]
    fn long_values_are_cut_with_their_size_and_hash() {
        let long = "a".repeat(20_000_000);
        let out = quoted(&long).to_string();
        let hash = hex::encode(Sha256::digest(long.as_bytes()));
        assert_eq!(
            out,
            format!(
                "\"{}\"…(20000000 bytes, sha256 {hash})",
                "a".repeat(SHOWN_BYTES)
            )
        );
        let recorded = bounded(&long);
        assert_eq!(recorded.len(), RECORDED_BYTES + out.len() - SHOWN_BYTES - 2);
        assert!(recorded.ends_with(&format!("(20000000 bytes, sha256 {hash})")));
        assert!(matches!(bounded("short"), Cow::Borrowed("short")));
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        // 'é' is two bytes: 200 of them cross the limit in the middle of one.
        let text = "é".repeat(200);
        let out = shown(&text).to_string();
        assert!(out.starts_with(&"é".repeat(SHOWN_BYTES / 2)), "{out}");
        assert!(out.contains("…(400 bytes, sha256 "), "{out}");
        let text = format!("x{}", "é".repeat(300));
        let recorded = bounded(&text);
        assert!(recorded.starts_with('x') && recorded.contains("…(601 bytes"));
    }

    #[test]
    fn escaping_is_what_the_log_formatter_writes() {
        use tracing_subscriber::fmt::MakeWriter;
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Buffer {
            type Writer = Buffer;
            fn make_writer(&'a self) -> Self::Writer {
                self.clone()
            }
        }
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapingFields)
            .with_writer(buffer.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let sneaky = "k\nINFO forged";
            tracing::warn!(key = %sneaky, plain = sneaky, n = 3, "sign refused: {}\nINFO forged too", "x");
        });
        let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(
            log.contains(
                "sign refused: x\\nINFO forged too key=k\\nINFO forged plain=\"k\\nINFO forged\" n=3"
            ),
            "{log}"
        );
    }
}
