//! [`FixAuthority`]: an accepted connection whose client-to-server bytes go through the
//! [`AuthorityRewriter`] before the HTTP/2 server reads them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use super::authority::AuthorityRewriter;

/// Output held for the reader above this many bytes of capacity is released once drained, so
/// an idle connection keeps no large buffer.
const KEEP_CAPACITY: usize = 32 << 10;

/// A connection whose `:authority` headers are fixed on the way in (see
/// [`super::authority`]). Writes pass straight through.
#[derive(Debug)]
pub struct FixAuthority<S> {
    inner: S,
    rewriter: AuthorityRewriter,
    /// Filtered bytes not yet handed to the reader, from `pending_at` on.
    pending: Vec<u8>,
    pending_at: usize,
    eof: bool,
    logged_rewrite: bool,
    /// Bytes read from the client so far, held back or not.
    bytes_read: u64,
}

impl<S> FixAuthority<S> {
    /// Wraps a freshly accepted connection (nothing read from it yet).
    pub fn new(inner: S) -> Self {
        FixAuthority {
            inner,
            rewriter: AuthorityRewriter::new(),
            pending: Vec::new(),
            pending_at: 0,
            eof: false,
            logged_rewrite: false,
            bytes_read: 0,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes read from the client so far, including a header block still held back.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Whether the client is in the middle of its preface or of a header block.
    pub fn awaiting_headers(&self) -> bool {
        self.rewriter.awaiting_headers()
    }

    /// Hands out held bytes; `true` when there were any.
    fn drain_into(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.pending_at == self.pending.len() {
            return false;
        }
        let n = buf.remaining().min(self.pending.len() - self.pending_at);
        buf.put_slice(&self.pending[self.pending_at..self.pending_at + n]);
        self.pending_at += n;
        if self.pending_at == self.pending.len() {
            self.pending_at = 0;
            if self.pending.capacity() > KEEP_CAPACITY {
                self.pending = Vec::new();
            } else {
                self.pending.clear();
            }
        }
        true
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.drain_into(buf) || this.eof {
                return Poll::Ready(Ok(()));
            }
            // Read into the caller's buffer, filter into `pending`, then hand that back: no
            // buffer of our own per connection.
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let read = &buf.filled()[start..];
            this.bytes_read += read.len() as u64;
            if read.is_empty() {
                this.rewriter.finish(&mut this.pending);
                this.eof = true;
            } else if let Err(error) = this.rewriter.feed(read, &mut this.pending) {
                tracing::warn!("closed a connection on the agent socket: {error}");
                buf.set_filled(start);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
            }
            buf.set_filled(start);
            if !this.logged_rewrite && this.rewriter.rewritten_blocks() > 0 {
                this.logged_rewrite = true;
                tracing::debug!(
                    "a client sent an :authority that is not a URI authority (grpc-core and grpc-java send the socket path); it is read as localhost on this connection"
                );
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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
impl<S: Connected> Connected for FixAuthority<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn reads_pass_through_in_small_reads_and_writes_are_untouched() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = FixAuthority::new(server);
        let mut client = client;
        let mut sent = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // A SETTINGS frame with one setting.
        sent.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            let mut back = [0u8; 5];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"hello");
            sent
        });
        let mut received = vec![0u8; 39];
        let mut at = 0;
        while at < received.len() {
            // Reads of at most 4 bytes at a time.
            let end = (at + 4).min(received.len());
            let n = server.read(&mut received[at..end]).await.unwrap();
            assert!(n > 0);
            at += n;
        }
        server.write_all(b"hello").await.unwrap();
        assert_eq!(received, writer.await.unwrap());
    }

    #[tokio::test]
    async fn an_abusive_block_is_an_error() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut server = FixAuthority::new(server);
        let mut sent = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        sent.extend_from_slice(&[0x7f, 0xff, 0xff, 1, 0, 0, 0, 0, 1]);
        client.write_all(&sent).await.unwrap();
        let mut received = Vec::new();
        let error = server.read_to_end(&mut received).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("header block"), "{error}");
    }
}
