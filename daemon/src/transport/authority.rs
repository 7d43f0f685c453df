//! The `:authority` fix for gRPC clients on the Unix socket, as a pure (sans-I/O) filter over
//! the bytes a client sends.
//!
//! Over a Unix socket, grpc-core (Python, C++, Ruby, PHP) sends the %-encoded socket path as
//! `:authority` (`%2Frun%2Fuser%2F1000%2Fkeyward%2Fagent.sock`), grpc-java sends the raw path,
//! and h2 (under hyper and tonic) refuses every such request with a stream-level
//! `PROTOCOL_ERROR` ("malformed authority"), with no setting to relax it. This filter sits
//! between the accepted stream and the HTTP/2 server and rewrites an `:authority` that is not a
//! valid URI authority to `localhost`, which is what grpc-go sends.
//!
//! How, and why this way:
//! - Frames are parsed from the client's byte stream (the 24-byte preface, then 9-byte frame
//!   headers). Frames other than HEADERS and CONTINUATION are forwarded as they come.
//! - A header block (HEADERS plus its CONTINUATION frames) is held back until END_HEADERS and
//!   decoded with an HPACK decoder that mirrors the client's encoder (`loona-hpack`), so the
//!   dynamic table is tracked across every block of the connection.
//! - A block whose `:authority` is valid is forwarded byte for byte. The first block that
//!   carries a valid `:authority` settles the connection: from then on blocks are forwarded
//!   without being decoded (their frames are still followed, bounded and timed). A gRPC
//!   channel sends one authority for its whole life (grpc-go, grpc-js, tonic and grpcurl a
//!   valid one; grpc-core and grpc-java the socket path from their first request), so clients
//!   that need no fix pay for one HPACK decode per connection, not per request: decoding every
//!   block was a fifth of keywardd's CPU per signature (loona-hpack builds a Huffman table
//!   per literal; docs/bench/flame-before.svg). A client that sends a valid authority first
//!   and an invalid one later on the same connection gets h2's refusal for that request.
//! - The first block that needs a rewrite is re-encoded, and so is every block after it on that
//!   connection: the client's later blocks refer to dynamic-table entries (the bad authority
//!   among them) that the server never saw. Re-encoded blocks use only "literal without
//!   indexing" fields, so the server's own table is never changed or referred to again, and
//!   stays consistent whatever the client's encoder does next.
//! - Padding is dropped, the priority fields and END_STREAM are kept; a re-encoded block is
//!   split into frames of at most 16 384 bytes, the size every HTTP/2 server accepts.
//! - Everything held is bounded: a header block of more than [`MAX_HEADER_BLOCK`] bytes (its
//!   frames, as received, so a flood of empty CONTINUATION frames counts too), or a re-encoded
//!   header list of more than [`MAX_HEADER_LIST`] bytes, is an error that closes the
//!   connection. Anything else that is not valid HTTP/2 (a bad preface, a CONTINUATION on the
//!   wrong stream, bad padding, an HPACK error) is forwarded unchanged from then on, so that
//!   the HTTP/2 server reports it exactly as it would without this filter.
//!
//! Only the client-to-server direction is filtered; the server's responses pass untouched.

use std::borrow::Cow;

use loona_hpack::Decoder;
use loona_hpack::encoder::encode_integer_into;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The largest frame payload every HTTP/2 peer must accept (the floor of
/// SETTINGS_MAX_FRAME_SIZE): re-encoded blocks are split at this size.
const FRAME_PAYLOAD_LIMIT: usize = 16_384;
/// The HPACK dynamic table size: the protocol default, which keywardd never changes.
const HEADER_TABLE_SIZE: usize = 4096;

/// The most bytes of one header block (its HEADERS and CONTINUATION frames, headers
/// included, as received) held back while it is decoded. The server accepts header lists of
/// 16 KiB (hyper's default): a block four times that size is abuse.
pub const MAX_HEADER_BLOCK: usize = 64 << 10;
/// The largest header list re-encoded (RFC 7541 sizes: name + value + 32 per field).
pub const MAX_HEADER_LIST: usize = 64 << 10;
/// What an invalid `:authority` becomes.
pub const REPLACEMENT_AUTHORITY: &str = "localhost";

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// A header block larger than [`MAX_HEADER_BLOCK`].
    #[error("the client sent an HTTP/2 header block of more than {MAX_HEADER_BLOCK} bytes")]
    BlockTooLarge,
    /// A header list to re-encode larger than [`MAX_HEADER_LIST`].
    #[error("the client sent an HTTP/2 header list of more than {MAX_HEADER_LIST} bytes")]
    ListTooLarge,
}

#[derive(Debug)]
enum State {
    /// Matching the connection preface (`matched` bytes so far).
    Preface { matched: usize },
    /// Reading a 9-byte frame header.
    FrameHeader {
        header: [u8; FRAME_HEADER_LEN],
        have: usize,
    },
    /// Inside a frame payload: `keep` collects it into the header block, else it is forwarded.
    Payload { remaining: usize, keep: bool },
    /// Not (or no longer) HTTP/2 that this filter follows: everything is forwarded unchanged.
    Opaque,
}

/// The header block being collected.
#[derive(Debug, Default)]
struct Block {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    /// Its frames as received, to forward unchanged.
    raw: Vec<u8>,
    /// The HPACK fragments, concatenated.
    fragment: Vec<u8>,
    /// The type, flags and payload offset in `raw` of the frame being read.
    frame: (u8, u8, usize),
}

/// The client-to-server filter of one connection. Feed it what the client sent; it appends
/// what the server should read.
pub struct AuthorityRewriter {
    state: State,
    block: Option<Block>,
    /// Spare buffers of the last block, reused for the next one.
    spare: Block,
    decoder: Decoder<'static>,
    /// Every block is re-encoded from the first rewrite on.
    rewriting: bool,
    /// A block carried a valid `:authority` before any rewrite: blocks are forwarded
    /// undecoded from then on.
    settled: bool,
    /// The re-encoded block.
    encoded: Vec<u8>,
    rewritten_blocks: u64,
}

impl std::fmt::Debug for AuthorityRewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityRewriter")
            .field("state", &self.state)
            .field("rewriting", &self.rewriting)
            .field("settled", &self.settled)
            .field("rewritten_blocks", &self.rewritten_blocks)
            .finish_non_exhaustive()
    }
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        AuthorityRewriter::new()
    }
}

impl AuthorityRewriter {
    /// A filter for a new connection (expects the client preface first).
    pub fn new() -> Self {
        let mut decoder = Decoder::new();
        // The server's limit: a client that grows its table past it is refused by the server
        // too (the block is then forwarded unchanged for it to refuse).
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        AuthorityRewriter {
            state: State::Preface { matched: 0 },
            block: None,
            spare: Block::default(),
            decoder,
            rewriting: false,
            settled: false,
            encoded: Vec::new(),
            rewritten_blocks: 0,
        }
    }

    /// How many header blocks have been re-encoded so far.
    pub fn rewritten_blocks(&self) -> u64 {
        self.rewritten_blocks
    }

    /// Whether the client is in the middle of its connection preface or of a header block:
    /// the times that `header_timeout` bounds (a slow client holds nothing else back).
    pub fn awaiting_headers(&self) -> bool {
        matches!(self.state, State::Preface { .. }) || self.block.is_some()
    }

    /// Whether the connection has stopped following HTTP/2 (everything passes unchanged).
    pub fn is_opaque(&self) -> bool {
        matches!(self.state, State::Opaque)
    }

    /// Processes `input` (the next bytes from the client) and appends to `out` what the
    /// server should read. A header block is held back until it is complete.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Opaque => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Preface { matched } => {
                    let n = (PREFACE.len() - *matched).min(input.len());
                    if input[..n] != PREFACE[*matched..*matched + n] {
                        self.state = State::Opaque;
                        continue;
                    }
                    out.extend_from_slice(&input[..n]);
                    *matched += n;
                    input = &input[n..];
                    if *matched == PREFACE.len() {
                        self.state = State::FrameHeader {
                            header: [0; FRAME_HEADER_LEN],
                            have: 0,
                        };
                    }
                }
                State::FrameHeader { header, have } => {
                    let n = (FRAME_HEADER_LEN - *have).min(input.len());
                    header[*have..*have + n].copy_from_slice(&input[..n]);
                    *have += n;
                    input = &input[n..];
                    if *have == FRAME_HEADER_LEN {
                        let header = *header;
                        self.start_frame(header, out)?;
                    }
                }
                State::Payload { remaining, keep } => {
                    let n = (*remaining).min(input.len());
                    let (keep, done) = (*keep, *remaining == n);
                    *remaining -= n;
                    match (&mut self.block, keep) {
                        (Some(block), true) => block.raw.extend_from_slice(&input[..n]),
                        _ => out.extend_from_slice(&input[..n]),
                    }
                    input = &input[n..];
                    if done {
                        self.next_frame();
                        if keep {
                            self.end_frame(out)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// At the end of the client's stream: forwards whatever is held back, unchanged (the
    /// server then sees the same truncated stream the client sent).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(block) = self.block.take() {
            out.extend_from_slice(&block.raw);
        }
        self.state = State::Opaque;
    }

    fn next_frame(&mut self) {
        self.state = State::FrameHeader {
            header: [0; FRAME_HEADER_LEN],
            have: 0,
        };
    }

    fn start_frame(
        &mut self,
        header: [u8; FRAME_HEADER_LEN],
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let stream_id =
            u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let keep = match &mut self.block {
            Some(block) if kind == TYPE_CONTINUATION && stream_id == block.stream_id => {
                if block.raw.len() + FRAME_HEADER_LEN + len > MAX_HEADER_BLOCK {
                    return Err(RewriteError::BlockTooLarge);
                }
                true
            }
            Some(_) => {
                // A header block interrupted: a connection error for the server to report.
                self.finish(out);
                out.extend_from_slice(&header);
                return Ok(());
            }
            None if kind == TYPE_HEADERS => {
                if FRAME_HEADER_LEN + len > MAX_HEADER_BLOCK {
                    return Err(RewriteError::BlockTooLarge);
                }
                let mut block = std::mem::take(&mut self.spare);
                block.raw.clear();
                block.fragment.clear();
                block.stream_id = stream_id;
                block.end_stream = flags & FLAG_END_STREAM != 0;
                block.priority = None;
                self.block = Some(block);
                true
            }
            None => false,
        };
        match (&mut self.block, keep) {
            (Some(block), true) => {
                block.raw.extend_from_slice(&header);
                block.frame = (kind, flags, block.raw.len());
            }
            _ => out.extend_from_slice(&header),
        }
        if len == 0 {
            self.next_frame();
            if keep {
                self.end_frame(out)?;
            }
        } else {
            self.state = State::Payload {
                remaining: len,
                keep,
            };
        }
        Ok(())
    }

    /// A HEADERS or CONTINUATION frame of the block is complete.
    fn end_frame(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let Some(block) = &mut self.block else {
            return Ok(());
        };
        let (kind, flags, start) = block.frame;
        let mut payload = &block.raw[start..];
        if kind == TYPE_HEADERS {
            let mut pad = 0;
            let mut valid = true;
            if flags & FLAG_PADDED != 0 {
                match payload.split_first() {
                    Some((&n, rest)) => (pad, payload) = (usize::from(n), rest),
                    None => valid = false,
                }
            }
            if valid && flags & FLAG_PRIORITY != 0 {
                match payload.split_first_chunk::<5>() {
                    Some((priority, rest)) => (block.priority, payload) = (Some(*priority), rest),
                    None => valid = false,
                }
            }
            if !valid || pad > payload.len() {
                // A PROTOCOL_ERROR for the server to report.
                self.finish(out);
                return Ok(());
            }
            payload = &payload[..payload.len() - pad];
        }
        if !self.settled {
            block.fragment.extend_from_slice(payload);
        }
        if flags & FLAG_END_HEADERS != 0 {
            self.end_block(out)?;
        }
        Ok(())
    }

    /// A whole header block is here: decode it, forward it or its re-encoding.
    fn end_block(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        if self.settled {
            out.extend_from_slice(&block.raw);
            self.spare = block;
            return Ok(());
        }
        let encoded = &mut self.encoded;
        encoded.clear();
        let (mut bad_authority, mut good_authority, mut list_size) = (false, false, 0usize);
        let decoded = self.decoder.decode_with_cb(&block.fragment, |name, value| {
            let value = if name.as_ref() == b":authority" {
                if valid_authority(&value) {
                    good_authority = true;
                    value
                } else {
                    bad_authority = true;
                    Cow::Borrowed(REPLACEMENT_AUTHORITY.as_bytes())
                }
            } else {
                value
            };
            list_size = list_size.saturating_add(name.len() + value.len() + 32);
            if list_size <= MAX_HEADER_LIST {
                encode_literal(encoded, &name, &value);
            }
        });
        if decoded.is_err() {
            // A COMPRESSION_ERROR for the server to report: it decodes the same bytes.
            out.extend_from_slice(&block.raw);
            self.state = State::Opaque;
            return Ok(());
        }
        if bad_authority || self.rewriting {
            if list_size > MAX_HEADER_LIST {
                return Err(RewriteError::ListTooLarge);
            }
            self.rewriting = true;
            self.rewritten_blocks += 1;
            write_frames(out, &block, &self.encoded);
        } else {
            self.settled = good_authority;
            out.extend_from_slice(&block.raw);
        }
        self.spare = block;
        Ok(())
    }
}

/// Whether h2 accepts `value` as `:authority` (the same parser it uses).
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// One "literal header field without indexing, new name" (RFC 7541 §6.2.2), no Huffman.
fn encode_literal(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.push(0);
    for string in [name, value] {
        // Writing to a Vec cannot fail.
        let _ = encode_integer_into(string.len(), 7, 0, dst);
        dst.extend_from_slice(string);
    }
}

/// A HEADERS frame (and CONTINUATION frames) carrying `encoded` for `block`'s stream.
fn write_frames(out: &mut Vec<u8>, block: &Block, encoded: &[u8]) {
    let priority_len = if block.priority.is_some() { 5 } else { 0 };
    let first = encoded.len().min(FRAME_PAYLOAD_LIMIT - priority_len);
    let mut flags = 0;
    if block.end_stream {
        flags |= FLAG_END_STREAM;
    }
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if first == encoded.len() {
        flags |= FLAG_END_HEADERS;
    }
    frame_header(
        out,
        priority_len + first,
        TYPE_HEADERS,
        flags,
        block.stream_id,
    );
    if let Some(priority) = &block.priority {
        out.extend_from_slice(priority);
    }
    out.extend_from_slice(&encoded[..first]);
    let mut rest = &encoded[first..];
    while !rest.is_empty() {
        let n = rest.len().min(FRAME_PAYLOAD_LIMIT);
        let flags = if n == rest.len() { FLAG_END_HEADERS } else { 0 };
        frame_header(out, n, TYPE_CONTINUATION, flags, block.stream_id);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream_id: u32) {
    // `len` is at most FRAME_PAYLOAD_LIMIT: it fits in 24 bits.
    let len = len.to_be_bytes();
    out.extend_from_slice(&len[len.len() - 3..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
