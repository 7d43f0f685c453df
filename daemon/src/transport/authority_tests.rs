//! Unit tests of the `:authority` filter: the output is parsed back into frames and decoded
//! with a second HPACK decoder that plays the server.

use super::*;

const END_STREAM: u8 = FLAG_END_STREAM;
const END_HEADERS: u8 = FLAG_END_HEADERS;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = payload.len().to_be_bytes();
    out.extend_from_slice(&len[len.len() - 3..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// "Literal with incremental indexing, new name" (adds to the dynamic table).
fn literal_indexed(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x40];
    for s in [name, value] {
        encode_integer_into(s.len(), 7, 0, &mut out).unwrap();
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// "Indexed header field" (static 1..=61, dynamic from 62, newest first).
fn indexed(index: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_integer_into(index, 7, 0x80, &mut out).unwrap();
    out
}

/// The request headers grpc-core sends on its first call over a Unix socket.
fn first_request(authority: &str) -> Vec<u8> {
    [
        indexed(3), // :method POST
        indexed(6), // :scheme http
        literal_indexed(":path", "/keyward.v1.Signer/ListKeys"),
        literal_indexed(":authority", authority),
        literal_indexed("te", "trailers"),
        literal_indexed("content-type", "application/grpc"),
    ]
    .concat()
}

/// The same headers on a later call: everything from the dynamic table (the newest entry is
/// 62: content-type, te, :authority, :path).
fn later_request() -> Vec<u8> {
    [
        indexed(3),
        indexed(6),
        indexed(65),
        indexed(64),
        indexed(63),
        indexed(62),
    ]
    .concat()
}

fn preface() -> Vec<u8> {
    PREFACE.to_vec()
}

/// Feeds `input` in chunks of `chunk` bytes.
fn run(
    rewriter: &mut AuthorityRewriter,
    input: &[u8],
    chunk: usize,
) -> Result<Vec<u8>, RewriteError> {
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        rewriter.feed(piece, &mut out)?;
    }
    Ok(out)
}

/// A frame as the server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    assert!(bytes.starts_with(PREFACE), "the preface is forwarded first");
    bytes = &bytes[PREFACE.len()..];
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        assert!(
            len <= FRAME_PAYLOAD_LIMIT || bytes[3] != TYPE_HEADERS,
            "frame too large"
        );
        frames.push(Frame {
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]),
            payload: bytes[9..9 + len].to_vec(),
        });
        bytes = &bytes[9 + len..];
    }
    frames
}

/// Decodes every header block in `bytes` as the server does, in order.
fn server_view(bytes: &[u8]) -> Vec<Vec<(String, String)>> {
    let mut decoder = Decoder::new();
    let mut blocks = Vec::new();
    let mut fragment = Vec::new();
    for frame in frames(bytes) {
        let mut payload = &frame.payload[..];
        match frame.kind {
            TYPE_HEADERS => {
                let mut pad = 0;
                if frame.flags & FLAG_PADDED != 0 {
                    pad = usize::from(payload[0]);
                    payload = &payload[1..];
                }
                if frame.flags & FLAG_PRIORITY != 0 {
                    payload = &payload[5..];
                }
                fragment.extend_from_slice(&payload[..payload.len() - pad]);
            }
            TYPE_CONTINUATION => fragment.extend_from_slice(payload),
            _ => continue,
        }
        if frame.flags & END_HEADERS != 0 {
            let list = decoder
                .decode(&fragment)
                .expect("the server decodes every block");
            blocks.push(
                list.into_iter()
                    .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                    .collect(),
            );
            fragment.clear();
        }
    }
    blocks
}

fn authority(list: &[(String, String)]) -> &str {
    &list
        .iter()
        .find(|(n, _)| n == ":authority")
        .expect(":authority")
        .1
}

#[test]
fn h2_refuses_what_grpc_core_and_grpc_java_send() {
    assert!(!valid_authority(b"%2Ftmp%2Fkeyward-0%2Fagent.sock"));
    assert!(!valid_authority(b"/tmp/keyward-0/agent.sock"));
    assert!(valid_authority(b"localhost"));
    assert!(valid_authority(b"keyward.invalid"));
    assert!(valid_authority(REPLACEMENT_AUTHORITY.as_bytes()));
}

#[test]
fn a_valid_authority_passes_byte_for_byte_whatever_the_read_sizes() {
    let input = [
        preface(),
        frame(0x4, 0, 0, &[]), // SETTINGS
        frame(TYPE_HEADERS, END_HEADERS, 1, &first_request("localhost")),
        frame(0x0, END_STREAM, 1, b"\0\0\0\0\x02hi"), // DATA
        frame(TYPE_HEADERS, END_HEADERS | END_STREAM, 3, &later_request()),
    ]
    .concat();
    for chunk in [1, 2, 7, 9, 10, 64, input.len()] {
        let mut rewriter = AuthorityRewriter::new();
        let out = run(&mut rewriter, &input, chunk).unwrap();
        assert_eq!(out, input, "chunk size {chunk}");
        assert_eq!(rewriter.rewritten_blocks(), 0);
    }
}

#[test]
fn a_socket_path_authority_becomes_localhost_and_later_table_references_stay_consistent() {
    let input = [
        preface(),
        frame(
            TYPE_HEADERS,
            END_HEADERS,
            1,
            &first_request("%2Ftmp%2Fx.sock"),
        ),
        frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"),
        frame(TYPE_HEADERS, END_HEADERS, 3, &later_request()),
        frame(TYPE_HEADERS, END_HEADERS, 5, &later_request()),
    ]
    .concat();
    for chunk in [1, 5, 9, 4096] {
        let mut rewriter = AuthorityRewriter::new();
        let out = run(&mut rewriter, &input, chunk).unwrap();
        let blocks = server_view(&out);
        assert_eq!(blocks.len(), 3);
        for list in &blocks {
            assert_eq!(authority(list), "localhost");
            assert_eq!(list.len(), 6, "{list:?}");
            assert!(list.contains(&(":path".into(), "/keyward.v1.Signer/ListKeys".into())));
            assert!(list.contains(&("te".into(), "trailers".into())));
        }
        assert_eq!(rewriter.rewritten_blocks(), 3);
        // The DATA frame between the blocks is untouched.
        let data = frames(&out).into_iter().find(|f| f.kind == 0).unwrap();
        assert_eq!(
            (data.flags, data.payload.as_slice()),
            (END_STREAM, &b"\0\0\0\0\0"[..])
        );
    }
}

#[test]
fn the_raw_path_grpc_java_sends_is_rewritten_too() {
    let input = [
        preface(),
        frame(
            TYPE_HEADERS,
            END_HEADERS,
            1,
            &first_request("/run/user/1000/keyward/agent.sock"),
        ),
    ]
    .concat();
    let out = run(&mut AuthorityRewriter::new(), &input, 3).unwrap();
    assert_eq!(authority(&server_view(&out)[0]), "localhost");
}

#[test]
fn continuation_frames_are_joined_and_a_valid_block_keeps_its_frames() {
    let block = first_request("%2Fs.sock");
    let (a, rest) = block.split_at(10);
    let (b, c) = rest.split_at(7);
    let input = [
        preface(),
        frame(TYPE_HEADERS, END_STREAM, 1, a),
        frame(TYPE_CONTINUATION, 0, 1, b),
        frame(TYPE_CONTINUATION, END_HEADERS, 1, c),
    ]
    .concat();
    let out = run(&mut AuthorityRewriter::new(), &input, 4).unwrap();
    let sent = frames(&out);
    assert_eq!(sent.len(), 1, "re-encoded into one HEADERS frame");
    assert_eq!(
        sent[0].flags,
        END_STREAM | END_HEADERS,
        "END_STREAM is kept"
    );
    assert_eq!(authority(&server_view(&out)[0]), "localhost");

    let valid = first_request("localhost");
    let (a, b) = valid.split_at(12);
    let input = [
        preface(),
        frame(TYPE_HEADERS, 0, 1, a),
        frame(TYPE_CONTINUATION, END_HEADERS, 1, b),
    ]
    .concat();
    assert_eq!(
        run(&mut AuthorityRewriter::new(), &input, 1).unwrap(),
        input
    );
}

#[test]
fn padding_is_dropped_and_priority_kept() {
    let block = first_request("%2Fs.sock");
    let mut payload = vec![4]; // pad length
    payload.extend_from_slice(&[0x80, 0, 0, 0, 15]); // exclusive dependency on 0, weight 16
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0; 4]);
    let input = [
        preface(),
        frame(
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | END_HEADERS,
            1,
            &payload,
        ),
    ]
    .concat();
    let out = run(&mut AuthorityRewriter::new(), &input, 2).unwrap();
    let sent = frames(&out);
    assert_eq!(sent[0].flags, FLAG_PRIORITY | END_HEADERS);
    assert_eq!(&sent[0].payload[..5], &[0x80, 0, 0, 0, 15]);
    assert_eq!(authority(&server_view(&out)[0]), "localhost");
}

#[test]
fn bad_padding_is_forwarded_for_the_server_to_refuse() {
    let input = [
        preface(),
        frame(TYPE_HEADERS, FLAG_PADDED | END_HEADERS, 1, &[200, 0x82]),
        frame(0x0, 0, 1, b"x"),
    ]
    .concat();
    let mut rewriter = AuthorityRewriter::new();
    assert_eq!(run(&mut rewriter, &input, 3).unwrap(), input);
    assert!(rewriter.is_opaque());
}

#[test]
fn a_large_re_encoded_block_is_split_into_continuation_frames() {
    let big = "v".repeat(3000);
    let mut block = first_request("%2Fs.sock");
    for i in 0..8 {
        block.extend(literal_indexed(&format!("x-h{i}"), &big));
    }
    let (a, b) = block.split_at(16_000);
    let input = [
        preface(),
        frame(TYPE_HEADERS, 0, 1, a),
        frame(TYPE_CONTINUATION, END_HEADERS, 1, b),
    ]
    .concat();
    let out = run(&mut AuthorityRewriter::new(), &input, 1000).unwrap();
    let sent = frames(&out);
    assert_eq!(sent[0].kind, TYPE_HEADERS);
    assert!(sent.len() >= 2 && sent[1..].iter().all(|f| f.kind == TYPE_CONTINUATION));
    assert!(sent.iter().all(|f| f.payload.len() <= FRAME_PAYLOAD_LIMIT));
    assert_eq!(
        sent.iter().filter(|f| f.flags & END_HEADERS != 0).count(),
        1
    );
    assert!(sent.last().unwrap().flags & END_HEADERS != 0);
    let list = &server_view(&out)[0];
    assert_eq!(list.len(), 14);
    assert_eq!(authority(list), "localhost");
}

#[test]
fn an_oversized_block_closes_the_connection_before_it_is_held() {
    let mut header = frame(TYPE_HEADERS, END_HEADERS, 1, &[]);
    header[..3].copy_from_slice(&[0x01, 0x00, 0x00]); // claims 64 KiB of payload
    let input = [preface(), header].concat();
    assert_eq!(
        run(&mut AuthorityRewriter::new(), &input, 100),
        Err(RewriteError::BlockTooLarge)
    );
}

#[test]
fn a_continuation_flood_is_bounded() {
    let mut rewriter = AuthorityRewriter::new();
    let mut out = Vec::new();
    rewriter.feed(&preface(), &mut out).unwrap();
    rewriter
        .feed(&frame(TYPE_HEADERS, 0, 1, &indexed(2)), &mut out)
        .unwrap();
    let empty = frame(TYPE_CONTINUATION, 0, 1, &[]);
    let mut result = Ok(());
    for _ in 0..=MAX_HEADER_BLOCK / FRAME_HEADER_LEN {
        result = rewriter.feed(&empty, &mut out);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(RewriteError::BlockTooLarge));
    assert_eq!(out, preface(), "nothing of the block was forwarded");
}

#[test]
fn a_re_encoded_list_that_expands_past_the_limit_is_refused() {
    // 3 KiB in the table once, then referred to 30 times: a small block, a 90 KiB list.
    let mut block = first_request("%2Fs.sock");
    block.extend(literal_indexed("x-big", &"v".repeat(3000)));
    for _ in 0..30 {
        block.extend(indexed(62));
    }
    let input = [preface(), frame(TYPE_HEADERS, END_HEADERS, 1, &block)].concat();
    assert_eq!(
        run(&mut AuthorityRewriter::new(), &input, 4096),
        Err(RewriteError::ListTooLarge)
    );
    // The same list with a valid authority is forwarded as it is: the server applies its own
    // header list limit.
    let block = [
        first_request("localhost"),
        block[first_request("%2Fs.sock").len()..].to_vec(),
    ]
    .concat();
    let input = [preface(), frame(TYPE_HEADERS, END_HEADERS, 1, &block)].concat();
    assert_eq!(
        run(&mut AuthorityRewriter::new(), &input, 4096).unwrap(),
        input
    );
}

#[test]
fn a_block_interrupted_by_another_frame_is_forwarded_for_the_server_to_refuse() {
    let input = [
        preface(),
        frame(TYPE_HEADERS, 0, 1, &first_request("%2Fs.sock")),
        frame(0x0, 0, 1, b"data"),
        frame(TYPE_HEADERS, END_HEADERS, 3, &first_request("%2Fs.sock")),
    ]
    .concat();
    let mut rewriter = AuthorityRewriter::new();
    assert_eq!(run(&mut rewriter, &input, 11).unwrap(), input);
    assert!(rewriter.is_opaque());
}

#[test]
fn an_hpack_error_is_forwarded_unchanged() {
    let input = [
        preface(),
        frame(TYPE_HEADERS, END_HEADERS, 1, &indexed(99)), // no such entry
        frame(TYPE_HEADERS, END_HEADERS, 3, &first_request("%2Fs.sock")),
    ]
    .concat();
    let mut rewriter = AuthorityRewriter::new();
    assert_eq!(run(&mut rewriter, &input, 6).unwrap(), input);
    assert!(rewriter.is_opaque());
}

#[test]
fn something_that_is_not_http2_passes_untouched() {
    let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let mut rewriter = AuthorityRewriter::new();
    assert_eq!(run(&mut rewriter, &input, 5).unwrap(), input);
    assert!(rewriter.is_opaque());
}

#[test]
fn a_dynamic_table_size_update_is_followed() {
    // While rewriting, the client shrinks its table to 0 (evicting everything, the bad
    // authority among it), back to 4096, and sends literals again, now with a valid authority.
    let mut second = vec![0x20]; // size update to 0
    encode_integer_into(HEADER_TABLE_SIZE, 5, 0x20, &mut second).unwrap();
    second.extend(first_request("keyward.invalid"));
    let input = [
        preface(),
        frame(TYPE_HEADERS, END_HEADERS, 1, &first_request("%2Fs.sock")),
        frame(TYPE_HEADERS, END_HEADERS, 3, &second),
        frame(TYPE_HEADERS, END_HEADERS, 5, &later_request()),
    ]
    .concat();
    let mut rewriter = AuthorityRewriter::new();
    let out = run(&mut rewriter, &input, 8).unwrap();
    let blocks = server_view(&out);
    assert_eq!(authority(&blocks[0]), "localhost");
    // Indexes 62.. now refer to the entries after the update: a stale table would give
    // "localhost" or fail to decode.
    assert_eq!(authority(&blocks[1]), "keyward.invalid");
    assert_eq!(authority(&blocks[2]), "keyward.invalid");
    assert_eq!(rewriter.rewritten_blocks(), 3);
}

#[test]
fn a_connection_whose_first_authority_is_valid_is_not_decoded_again() {
    // After a valid authority, later blocks pass byte for byte without an HPACK decode: even
    // one that refers to a dynamic-table entry that does not exist (the server refuses it).
    let input = [
        preface(),
        frame(TYPE_HEADERS, END_HEADERS, 1, &first_request("localhost")),
        frame(TYPE_HEADERS, END_HEADERS, 3, &indexed(99)),
        frame(TYPE_HEADERS, END_HEADERS, 5, &first_request("%2Fs.sock")),
    ]
    .concat();
    let mut rewriter = AuthorityRewriter::new();
    assert_eq!(run(&mut rewriter, &input, 7).unwrap(), input);
    assert!(!rewriter.is_opaque(), "frames are still followed");
    assert_eq!(rewriter.rewritten_blocks(), 0);
    // A block without `:authority` settles nothing: the next one is still checked.
    let no_authority = [indexed(3), indexed(6)].concat();
    let input = [
        preface(),
        frame(TYPE_HEADERS, END_HEADERS, 1, &no_authority),
        frame(TYPE_HEADERS, END_HEADERS, 3, &first_request("%2Fs.sock")),
    ]
    .concat();
    let out = run(&mut AuthorityRewriter::new(), &input, 5).unwrap();
    assert_eq!(authority(&server_view(&out)[1]), "localhost");
}

#[test]
fn a_settled_connection_still_bounds_and_times_its_header_blocks() {
    let mut rewriter = AuthorityRewriter::new();
    let mut out = Vec::new();
    let first = [
        preface(),
        frame(TYPE_HEADERS, END_HEADERS, 1, &first_request("localhost")),
    ]
    .concat();
    rewriter.feed(&first, &mut out).unwrap();
    assert!(!rewriter.awaiting_headers());
    // A block in progress is what `header_timeout` bounds.
    rewriter
        .feed(&frame(TYPE_HEADERS, 0, 3, &later_request()), &mut out)
        .unwrap();
    assert!(rewriter.awaiting_headers());
    let flood = frame(TYPE_CONTINUATION, 0, 3, &[0; 16_000]);
    let result = (0..5).try_for_each(|_| rewriter.feed(&flood, &mut out));
    assert_eq!(result, Err(RewriteError::BlockTooLarge));
}

#[test]
fn end_of_stream_forwards_a_partial_block() {
    let input = [
        preface(),
        frame(TYPE_HEADERS, 0, 1, &first_request("%2Fs.sock")),
    ]
    .concat();
    let mut rewriter = AuthorityRewriter::new();
    let mut out = run(&mut rewriter, &input, 100).unwrap();
    assert_eq!(out, preface());
    rewriter.finish(&mut out);
    assert_eq!(out, input);
}
