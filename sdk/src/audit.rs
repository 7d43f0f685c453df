//! Verifying `keywardd`'s audit log: a hash chain of JSON lines.
//!
//! Every line is a JSON object whose `prev` is the hex SHA-256 of the previous line's bytes
//! (without the newline), 64 zeros on the first line, and whose `seq` counts 1, 2, ... across
//! rotated files. Editing, removing or reordering a record breaks the chain at the line after
//! it; a truncated last line is not a complete record. Rotated files verify in order, oldest
//! first (`audit.log.1`, `audit.log.2`, ..., `audit.log`).
//!
//! What a chain cannot show on its own: that the *last* records were removed or the last one
//! edited (nothing follows them), or that someone who can write the file rewrote the whole
//! chain from some point on. Keep a copy of the head ([`ChainVerifier::head`], which the daemon
//! also logs at rotation and shutdown) elsewhere to detect those.
//!
//! ```
//! let log = "";
//! keyward_sdk::audit::verify_chain(log.lines()).unwrap();
//! ```

use sha2::{Digest, Sha256};

/// Where and why a log failed verification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct AuditError {
    /// 1-based line number (counted from the first line given to the verifier, or from the
    /// start of the file for [`ChainVerifier::push_file`]).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// The results a record may have.
const RESULTS: [&str; 4] = ["attempt", "ok", "denied", "error"];

/// Checks lines one at a time, across files.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    prev: [u8; 32],
    seq: u64,
    records: usize,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier::new()
    }
}

impl ChainVerifier {
    /// A verifier expecting the first record of a log (`prev` = 64 zeros, `seq` = 1).
    pub fn new() -> Self {
        ChainVerifier {
            prev: [0; 32],
            seq: 0,
            records: 0,
        }
    }

    /// The records verified so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// The hex SHA-256 of the last line verified (64 zeros before any): the value the next
    /// record's `prev` must have.
    pub fn head(&self) -> String {
        hex(&self.prev)
    }

    /// Verifies the next line (without its newline). `line` in the error is `number`.
    pub fn push_line(&mut self, line: &[u8], number: usize) -> Result<(), AuditError> {
        let fail = |reason: String| AuditError {
            line: number,
            reason,
        };
        if line.is_empty() {
            return Err(fail("an empty line where a record should be".into()));
        }
        let record: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
            fail(format!(
                "not a JSON record ({e}); the line was edited or cut short"
            ))
        })?;
        let Some(record) = record.as_object() else {
            return Err(fail("not a JSON object".into()));
        };
        let text = |field: &str| record.get(field).and_then(serde_json::Value::as_str);
        let prev = text("prev").ok_or_else(|| fail("the record has no prev".into()))?;
        let seq = record
            .get("seq")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| fail("the record has no seq".into()))?;
        let expected = hex(&self.prev);
        if prev != expected {
            return Err(fail(if self.records == 0 && seq > 1 {
                format!(
                    "the first record given continues an earlier log (seq {seq}, prev {prev}); verify the rotated files too, oldest first (audit.log.1 audit.log.2 ... audit.log)"
                )
            } else {
                format!(
                    "prev is {prev}, but the previous line hashes to {expected}: a record before this line was edited, removed or reordered"
                )
            }));
        }
        if seq != self.seq + 1 {
            return Err(fail(format!(
                "seq is {seq} where {} was expected: a record was removed, inserted or reordered",
                self.seq + 1
            )));
        }
        for field in ["time", "event"] {
            if text(field).is_none_or(str::is_empty) {
                return Err(fail(format!("the record has no {field}")));
            }
        }
        match text("result") {
            Some(result) if RESULTS.contains(&result) => {}
            other => {
                return Err(fail(format!(
                    "result {other:?} is not one of {}",
                    RESULTS.join(", ")
                )));
            }
        }
        self.prev = Sha256::digest(line).into();
        self.seq = seq;
        self.records += 1;
        Ok(())
    }

    /// Verifies a whole file's contents after what was pushed before; line numbers in the error
    /// count from the file's first line. Returns the file's record count.
    pub fn push_file(&mut self, contents: &[u8]) -> Result<usize, AuditError> {
        let before = self.records;
        if contents.is_empty() {
            return Ok(0);
        }
        let body = match contents.strip_suffix(b"\n") {
            Some(body) => body,
            None => {
                let line = contents.iter().filter(|b| **b == b'\n').count() + 1;
                return Err(AuditError {
                    line,
                    reason: "the last record is incomplete (no newline at the end): the file was truncated or is still being written".into(),
                });
            }
        };
        for (index, line) in body.split(|b| *b == b'\n').enumerate() {
            self.push_line(line, index + 1)?;
        }
        Ok(self.records - before)
    }
}

/// Verifies `lines` (each without its newline) as one log from its first record.
pub fn verify_chain<I, L>(lines: I) -> Result<(), AuditError>
where
    I: IntoIterator<Item = L>,
    L: AsRef<[u8]>,
{
    let mut verifier = ChainVerifier::new();
    for (index, line) in lines.into_iter().enumerate() {
        verifier.push_line(line.as_ref(), index + 1)?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid log of `n` records, as the daemon writes them.
    fn log(n: usize) -> Vec<String> {
        let mut prev = [0u8; 32];
        (1..=n)
            .map(|seq| {
                let line = format!(
                    r#"{{"seq":{seq},"time":"2025-01-01T00:00:0{seq}.000Z","event":"sign","result":"ok","caller":{{"uid":0}},"key":"k","prev":"{}"}}"#,
                    hex(&prev)
                );
                prev = Sha256::digest(line.as_bytes()).into();
                line
            })
            .collect()
    }

    #[test]
    fn a_valid_chain_verifies() {
        verify_chain(log(5)).unwrap();
        verify_chain(Vec::<String>::new()).unwrap();
    }

    #[test]
    fn tampering_names_the_first_bad_line() {
        let mut edited = log(5);
        edited[1] = edited[1].replace("\"k\"", "\"x\"");
        assert_eq!(verify_chain(&edited).unwrap_err().line, 3);

        let mut removed = log(5);
        removed.remove(2);
        let error = verify_chain(&removed).unwrap_err();
        assert_eq!(error.line, 3, "{error}");

        let mut reordered = log(5);
        reordered.swap(1, 2);
        assert_eq!(verify_chain(&reordered).unwrap_err().line, 2);

        let headless: Vec<String> = log(5).into_iter().skip(1).collect();
        let error = verify_chain(&headless).unwrap_err();
        assert_eq!(error.line, 1);
        assert!(error.reason.contains("continues an earlier log"), "{error}");

        let mut cut = log(3).join("\n");
        cut.truncate(cut.len() - 5);
        let mut verifier = ChainVerifier::new();
        let error = verifier.push_file(cut.as_bytes()).unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.reason.contains("incomplete"), "{error}");
        let error = verify_chain(cut.lines()).unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.reason.contains("not a JSON record"), "{error}");
    }

    #[test]
    fn files_verify_in_order() {
        let lines = log(6);
        let first = format!("{}\n", lines[..4].join("\n"));
        let second = format!("{}\n", lines[4..].join("\n"));
        let mut verifier = ChainVerifier::new();
        assert_eq!(verifier.push_file(first.as_bytes()).unwrap(), 4);
        assert_eq!(verifier.push_file(second.as_bytes()).unwrap(), 2);
        assert_eq!(verifier.records(), 6);
        assert_eq!(verifier.head(), hex(&Sha256::digest(lines[5].as_bytes())));
        let mut wrong_order = ChainVerifier::new();
        assert_eq!(
            wrong_order.push_file(second.as_bytes()).unwrap_err().line,
            1
        );
    }
}
