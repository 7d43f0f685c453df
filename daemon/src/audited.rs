//! [`Audited`]: the one place that writes an RPC's audit records, in the order SECURITY.md
//! promises: a refusal is one `denied` (permission, policy, rate) or `error` (bad input, unknown
//! key) record; work that reaches a backend is an `attempt` record, written before the work
//! starts (with `fail_closed`, a request whose attempt cannot be written never reaches the
//! backend), then an `ok` or `error` record whose flush makes both durable before the reply
//! (with `fail_closed`, a result whose `ok` cannot be written is withheld). Sign and every `KeyAdmin` RPC go through it, and so will the ssh-agent
//! front-end. It also counts each outcome for the metrics endpoint ([`crate::metrics`]), the
//! one place requests are counted.

use std::future::Future;
use std::time::Instant;

use crate::audit::{Auditor, CallerRecord, Outstanding, Record, Stage};
use crate::auth::Caller;
use crate::error::{AgentError, to_status};
use crate::metrics;

/// One request's audit trail.
#[derive(Debug)]
pub struct Audited<'a> {
    auditor: &'a Auditor,
    /// The record the request builds up (key, backend, algorithm, digest, purpose, ...).
    pub record: Record,
    /// Released just before the outcome is recorded.
    outstanding: Outstanding,
}

/// The result word of a refusal: `denied` for permission and rate refusals, `error` for the
/// rest.
pub fn refusal_result(error: &AgentError) -> &'static str {
    match error {
        AgentError::PermissionDenied(_) | AgentError::RateLimited { .. } => "denied",
        _ => "error",
    }
}

impl<'a> Audited<'a> {
    /// The trail of an `event` (`sign`, `generate_key`, ...) by `caller`.
    pub fn new(auditor: &'a Auditor, event: &'static str, caller: &Caller) -> Self {
        let mut record = Record {
            event,
            ..Record::default()
        };
        if auditor.enabled() {
            // Reads /proc/<pid>/exe: only when a record will be written.
            record.caller = CallerRecord::inspect(caller);
        }
        Audited {
            auditor,
            record,
            outstanding: auditor.begin(),
        }
    }

    /// Whether records are written at all (to skip work that only feeds them).
    pub fn enabled(&self) -> bool {
        self.auditor.enabled()
    }

    /// Records a request refused before any work, and returns the refusal. A refusal stays a
    /// refusal even when its record cannot be written.
    pub async fn refuse(&self, error: AgentError) -> AgentError {
        let result = refusal_result(&error);
        self.count_failure(result, &error);
        let record = self.record.outcome(result, Some(error.to_string()));
        self.outstanding.release();
        let _ = self.auditor.record(record, Stage::Before).await;
        error
    }

    /// The key and backend labels of a sign request: the canonical id once it has resolved
    /// (the signing core sets `backend` only then), else empty, so that ids nobody has do not
    /// make metric series.
    fn key_labels(&self) -> (&str, &str) {
        if self.record.backend.is_empty() {
            ("", "")
        } else {
            (&self.record.key, &self.record.backend)
        }
    }

    fn count_failure(&self, result: &'static str, error: &AgentError) {
        let code = to_status(error).code();
        metrics::request(self.record.event, result, code);
        if self.record.event == "sign" {
            let (key, backend) = self.key_labels();
            let rate_limited = matches!(error, AgentError::RateLimited { .. });
            metrics::sign_error(key, backend, code, rate_limited);
        }
    }

    /// Records the attempt, runs `work`, records its outcome; `on_ok` adds what the result
    /// tells to the `ok` record (the key version that signed).
    pub async fn run<T>(
        &mut self,
        work: impl Future<Output = Result<T, AgentError>>,
        on_ok: impl FnOnce(&T, &mut Record),
    ) -> Result<T, AgentError> {
        let started = Instant::now();
        if let Err(e) = self
            .auditor
            .record_attempt(self.record.outcome("attempt", None))
            .await
        {
            self.outstanding.release();
            self.count_failure("error", &e);
            return Err(e);
        }
        let result = work.await;
        // The outcome is about to be queued: the log's writer stops waiting for it.
        self.outstanding.release();
        match result {
            Ok(done) => {
                on_ok(&done, &mut self.record);
                if let Err(e) = self
                    .auditor
                    .record(self.record.outcome("ok", None), Stage::After)
                    .await
                {
                    self.count_failure("error", &e);
                    return Err(e);
                }
                metrics::request(self.record.event, "ok", tonic::Code::Ok);
                if self.record.event == "sign" {
                    let (key, backend) = self.key_labels();
                    metrics::signature(key, backend, &self.record.algorithm, started.elapsed());
                }
                Ok(done)
            }
            Err(e) => {
                self.count_failure("error", &e);
                let failed = self.record.outcome("error", Some(e.to_string()));
                let _ = self.auditor.record(failed, Stage::After).await;
                Err(e)
            }
        }
    }
}
