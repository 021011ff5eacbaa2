//! The HTTP request parser: head, body framing (RFC 9112 §6.3) and chunked decoding.
//!
//! Input: byte 0 seeds how a chunked body is cut into reads; the rest is what a client sent.
//! Checked: never a panic; a head is within its size limit and its lines end in CRLF; the
//! target is a path (or `*` for OPTIONS); at most one Host; a framing is never both a length
//! and chunked and agrees with the headers it came from; a chunked body decodes the same
//! whether it arrives at once or in pieces, is never larger than its input, and decodes back
//! from its own re-encoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_relay_core::fuzzing::{parse_head, Dechunk, Fed, Framing, Head, MAX_HEAD};

/// Decodes `wire` fed in pieces (cut by `seed`), keeping unconsumed bytes as the relay does.
fn dechunk_in_pieces(wire: &[u8], mut seed: u32) -> (Fed, Vec<u8>) {
    let mut d = Dechunk::default();
    let mut body = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut consumed = 0;
    loop {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (seed as usize % 64 + 1).min(wire.len() - fed);
        buf.extend_from_slice(&wire[fed..fed + n]);
        fed += n;
        match d.feed(&buf, &mut body) {
            Fed::More(used) => {
                assert!(used <= buf.len());
                buf.drain(..used);
                consumed += used;
                assert!(
                    body.len() <= consumed,
                    "body {} from {consumed} bytes",
                    body.len()
                );
                if fed == wire.len() {
                    return (Fed::More(consumed), body);
                }
            }
            Fed::Done(used) => {
                assert!(used <= buf.len());
                return (Fed::Done(consumed + used), body);
            }
            Fed::Error => return (Fed::Error, body),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [seed, wire @ ..] = data else {
        return;
    };
    let Head::Complete {
        len,
        method,
        path,
        query: _,
        headers,
        framing,
    } = parse_head(wire)
    else {
        return;
    };
    assert!(len <= wire.len() && len <= MAX_HEAD);
    let head = &wire[..len];
    for (i, b) in head.iter().enumerate() {
        assert!(
            *b != b'\n' || (i > 0 && head[i - 1] == b'\r'),
            "bare LF in an accepted head"
        );
        assert!(*b != 0, "NUL in an accepted head");
    }
    assert!(
        path.starts_with('/') || (path == "*" && method == "OPTIONS"),
        "target {path:?}"
    );
    let count = |name: &str| headers.iter().filter(|(n, _)| n == name).count();
    assert!(count("host") <= 1, "two Host headers accepted");
    let te: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v.as_str())
        .collect();
    let cl: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    match framing {
        Err(status) => assert!(status == 400 || status == 501, "status {status}"),
        Ok(Framing::Length(n)) => {
            assert!(te.is_empty(), "a length with Transfer-Encoding {te:?}");
            for value in cl.iter().flat_map(|v| v.split(',')) {
                let digits = value.trim_matches([' ', '\t']);
                assert!(
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
                    "Content-Length {value:?}"
                );
                assert_eq!(
                    digits.parse::<usize>().ok(),
                    Some(n),
                    "Content-Length {cl:?}"
                );
            }
            if cl.is_empty() {
                assert_eq!(n, 0);
            }
        }
        Ok(Framing::Chunked) => {
            assert!(cl.is_empty(), "chunked with Content-Length {cl:?}");
            assert_eq!(te.len(), 1, "chunked from {te:?}");
            let codings: Vec<&str> = te[0]
                .split(',')
                .map(|c| c.trim_matches([' ', '\t']))
                .filter(|c| !c.is_empty())
                .collect();
            assert!(
                codings.len() == 1 && codings[0].eq_ignore_ascii_case("chunked"),
                "chunked from {te:?}"
            );
            let body = &wire[len..];
            let mut whole = Vec::new();
            let at_once = Dechunk::default().feed(body, &mut whole);
            let (in_pieces, pieces_body) =
                dechunk_in_pieces(body, u32::from(*seed).wrapping_mul(2_654_435_761) | 1);
            match (&at_once, &in_pieces) {
                (Fed::Done(a), Fed::Done(b)) => {
                    assert_eq!(a, b);
                    assert_eq!(whole, pieces_body);
                    assert!(whole.len() <= *a, "body {} from {a} bytes", whole.len());
                    // Its own re-encoding decodes back to it, to the byte.
                    let mut again = Vec::new();
                    for piece in whole.chunks(7) {
                        again.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        again.extend_from_slice(piece);
                        again.extend_from_slice(b"\r\n");
                    }
                    again.extend_from_slice(b"0\r\n\r\n");
                    let mut back = Vec::new();
                    assert_eq!(
                        Dechunk::default().feed(&again, &mut back),
                        Fed::Done(again.len())
                    );
                    assert_eq!(back, whole);
                }
                (Fed::More(_), Fed::More(_)) | (Fed::Error, Fed::Error) => {}
                _ => panic!("at once {at_once:?}, in pieces {in_pieces:?}"),
            }
            assert!(whole.len() <= body.len());
        }
    }
});
