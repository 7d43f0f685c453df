//! Connection limits of the agent socket, enforced before a connection costs anything:
//!
//! - [`Admission`]: at most `max_connections` open connections in all and
//!   `max_connections_per_uid` per caller uid (`SO_PEERCRED`). A connection over either limit is
//!   closed as soon as it is accepted, before the HTTP/2 server sees a byte of it.
//! - [`Guarded`]: an admitted connection that is closed when no byte went either way for
//!   `idle_timeout`, or when the client takes longer than `header_timeout` to send its
//!   connection preface or any one header block (a slowloris client holds nothing for long).
//!
//! The HTTP/2 limits (streams per connection, header list size, flow-control windows) are the
//! server's settings ([`super::server`]). Together they bound what one local user can hold:
//! `max_connections_per_uid × max_concurrent_streams` requests, each with at most
//! `stream_window_bytes` unread and a connection at most `connection_window_bytes`.
//!
//! Refusals and time-outs are logged at most once a second (with how many were not logged), so
//! a flood of connections cannot flood the daemon's log.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

use super::FixAuthority;
use crate::limits::Limits;

/// The connection-level settings of `[limits]`.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections per caller uid.
    pub max_connections_per_uid: usize,
    /// No byte either way for this long closes a connection.
    pub idle_timeout: Duration,
    /// The longest a client may take over its preface or one header block.
    pub header_timeout: Duration,
}

impl From<&Limits> for ConnectionLimits {
    fn from(limits: &Limits) -> Self {
        ConnectionLimits {
            max_connections: limits.max_connections,
            max_connections_per_uid: limits.max_connections_per_uid,
            idle_timeout: limits.idle_timeout,
            header_timeout: limits.header_timeout,
        }
    }
}

/// At most one log line a second; counts what it held back.
#[derive(Debug, Default)]
struct Throttle {
    /// Milliseconds since `epoch` of the last line logged (0: none yet).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// `Some(n)` when a line may be logged now (`n` lines were held back since the last one).
    fn allow(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms < last + 1000
            || self
                .last_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Open connections per uid (`None`: the peer's credentials could not be read).
    per_uid: HashMap<Option<u32>, usize>,
}

/// Counts the open connections of the agent socket and admits new ones within the limits.
#[derive(Debug)]
pub struct Admission {
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
    epoch: Instant,
    refused: Throttle,
    closed: Throttle,
}

/// An admitted connection's place; dropping it (when the connection ends) frees the place.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    uid: Option<u32>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                counts.per_uid.remove(&self.uid);
            }
        }
    }
}

fn shown_uid(uid: Option<u32>) -> String {
    uid.map_or_else(|| "unknown".to_string(), |uid| uid.to_string())
}

impl Admission {
    /// No connection open yet.
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            counts: Mutex::default(),
            epoch: Instant::now(),
            refused: Throttle::default(),
            closed: Throttle::default(),
        })
    }

    /// The limits this admits within.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A place for a new connection of `uid`, or `None` (logged, throttled) when it would go
    /// over `max_connections` or `max_connections_per_uid`.
    pub fn admit(self: &Arc<Self>, uid: Option<u32>) -> Option<Permit> {
        let refusal = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let mine = counts.per_uid.get(&uid).copied().unwrap_or(0);
            if counts.total >= self.limits.max_connections {
                Some(format!(
                    "{} connections are open (max_connections in [limits])",
                    counts.total
                ))
            } else if mine >= self.limits.max_connections_per_uid {
                Some(format!(
                    "uid {} has {mine} connections open (max_connections_per_uid in [limits])",
                    shown_uid(uid)
                ))
            } else {
                counts.total += 1;
                *counts.per_uid.entry(uid).or_insert(0) += 1;
                None
            }
        };
        match refusal {
            None => Some(Permit {
                admission: self.clone(),
                uid,
            }),
            Some(why) => {
                if let Some(held_back) = self.refused.allow(self.now_ms()) {
                    tracing::warn!(
                        uid = %shown_uid(uid),
                        not_logged = held_back,
                        "refused a connection on the agent socket: {why}"
                    );
                }
                None
            }
        }
    }

    /// Open connections in all.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// An admitted connection of the agent socket with its idle and header deadlines (see the
/// module documentation). Reads go through the `:authority` filter.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: FixAuthority<S>,
    permit: Permit,
    /// Last time a byte went either way.
    active_at: Instant,
    /// `inner.bytes_read()` when `active_at` was last updated from reads.
    seen_read: u64,
    idle: Pin<Box<Sleep>>,
    /// Armed while the client is in its preface or a header block.
    header: Pin<Box<Sleep>>,
    header_armed: bool,
}

impl<S> Guarded<S> {
    /// Wraps an admitted connection; its clocks start now. Needs a tokio runtime (timers).
    pub fn new(inner: S, permit: Permit) -> Self {
        let limits = permit.admission.limits;
        let now = Instant::now();
        Guarded {
            inner: FixAuthority::new(inner),
            permit,
            active_at: now,
            seen_read: 0,
            idle: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            header: Box::pin(tokio::time::sleep_until(now + limits.header_timeout)),
            // A new connection owes its preface.
            header_armed: true,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// Notes progress after a read attempt and arms or disarms the header deadline.
    fn after_read(&mut self) {
        let read = self.inner.bytes_read();
        if read != self.seen_read {
            self.seen_read = read;
            self.active_at = Instant::now();
        }
        let awaiting = self.inner.awaiting_headers();
        if awaiting && !self.header_armed {
            let deadline = Instant::now() + self.permit.admission.limits.header_timeout;
            self.header.as_mut().reset(deadline);
        }
        self.header_armed = awaiting;
    }

    /// Why the connection must close now, if it must; registers the timers' wake-ups.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<String> {
        let limits = self.permit.admission.limits;
        if self.header_armed && self.header.as_mut().poll(cx).is_ready() {
            return Some(format!(
                "the client took over {:?} to send its preface or a request's headers (header_timeout in [limits])",
                limits.header_timeout
            ));
        }
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return None;
            }
            let deadline = self.active_at + limits.idle_timeout;
            if deadline <= Instant::now() {
                return Some(format!(
                    "no byte went either way for {:?} (idle_timeout in [limits])",
                    limits.idle_timeout
                ));
            }
            // There was activity since the timer was set: wait for the rest.
            self.idle.as_mut().reset(deadline);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.after_read();
        if polled.is_ready() {
            return polled;
        }
        match this.expired(cx) {
            None => Poll::Pending,
            Some(why) => {
                let admission = &this.permit.admission;
                if let Some(held_back) = admission.closed.allow(admission.now_ms()) {
                    tracing::warn!(
                        uid = %shown_uid(this.permit.uid),
                        not_logged = held_back,
                        "closed a connection on the agent socket: {why}"
                    );
                }
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.active_at = Instant::now();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.active_at = Instant::now();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The caller's identity (peer credentials of the Unix socket) comes from the wrapped stream.
impl<S: Connected> Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
