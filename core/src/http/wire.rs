//! HTTP/1.1 on byte slices: request heads (with httparse), request bodies (Content-Length or
//! chunked), and the bytes of responses and server-sent events. No state beyond one message.

/// Most header lines a request may have.
pub(crate) const MAX_HEADERS: usize = 64;
/// Most bytes a request head may have.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// A parsed request head. Header names are lower-cased.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: Vec<(String, String)>,
    /// HTTP/1.0 without keep-alive, or `Connection: close`.
    pub(crate) close: bool,
}

impl Head {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's value (not percent-decoded beyond what ids need).
    pub(crate) fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// Whether the `Accept` header lists this media type (or a wildcard for it).
    pub(crate) fn accepts(&self, media: &str) -> bool {
        let Some(accept) = self.header("accept") else {
            return false;
        };
        let family = media.split('/').next().unwrap_or("");
        accept.split(',').any(|part| {
            let m = part.split(';').next().unwrap_or("").trim();
            m == media || m == "*/*" || m.strip_suffix("/*") == Some(family)
        })
    }
}

/// The outcome of looking for a request head in the bytes received so far.
#[derive(Debug)]
pub(crate) enum HeadParse {
    /// Not all there yet.
    Partial,
    /// The head, and how many bytes it took.
    Complete(Head, usize),
    /// Unusable: answer with this status and close.
    Error(u16, &'static str),
}

pub(crate) fn parse_head(buf: &[u8]) -> HeadParse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                HeadParse::Error(
                    431,
                    "mcp-relay: the request head is too large (16 KiB at most)",
                )
            } else {
                HeadParse::Partial
            }
        }
        Ok(httparse::Status::Complete(n)) => {
            if n > MAX_HEAD {
                return HeadParse::Error(
                    431,
                    "mcp-relay: the request head is too large (16 KiB at most)",
                );
            }
            let target = req.path.unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).trim().to_owned(),
                    )
                })
                .collect();
            let connection = headers
                .iter()
                .find(|(n, _)| n == "connection")
                .map(|(_, v)| v.to_ascii_lowercase());
            let close = match req.version {
                Some(0) => !connection
                    .as_deref()
                    .is_some_and(|c| c.contains("keep-alive")),
                _ => connection.as_deref().is_some_and(|c| c.contains("close")),
            };
            HeadParse::Complete(
                Head {
                    method: req.method.unwrap_or("").to_owned(),
                    path: path.to_owned(),
                    query: query.to_owned(),
                    headers,
                    close,
                },
                n,
            )
        }
        Err(httparse::Error::TooManyHeaders) => HeadParse::Error(
            431,
            "mcp-relay: the request has too many header lines (64 at most)",
        ),
        Err(_) => HeadParse::Error(400, "mcp-relay: the request is not valid HTTP/1.1"),
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Length(usize),
    Chunked,
}

/// Reads the framing of a body from the head; `Err` is a status and a reason.
pub(crate) fn body_kind(head: &Head) -> Result<BodyKind, (u16, &'static str)> {
    let te = head.header("transfer-encoding");
    let cl = head.header("content-length");
    match (te, cl) {
        (Some(te), _) if te.eq_ignore_ascii_case("chunked") => Ok(BodyKind::Chunked),
        (Some(_), _) => Err((
            501,
            "mcp-relay: only chunked transfer encoding is supported",
        )),
        (None, Some(cl)) => cl
            .parse::<usize>()
            .map(BodyKind::Length)
            .map_err(|_| (400, "mcp-relay: Content-Length is not a number")),
        (None, None) => Ok(BodyKind::Length(0)),
    }
}

/// Decodes a chunked body incrementally.
#[derive(Debug, Default)]
pub(crate) struct Dechunk {
    state: ChunkState,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(usize),
    DataEnd,
    Trailers,
    Done,
}

/// What one call to [`Dechunk::feed`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Dechunked {
    /// Consumed this many bytes; more are needed.
    More(usize),
    /// The body is complete after this many bytes.
    Done(usize),
    /// Malformed.
    Error,
}

impl Dechunk {
    /// Consumes what it can of `buf`, appending body bytes to `body`.
    pub(crate) fn feed(&mut self, buf: &[u8], body: &mut Vec<u8>) -> Dechunked {
        let mut at = 0;
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(nl) = memchr::memchr(b'\n', &buf[at..]) else {
                        return if buf.len() - at > 1024 {
                            Dechunked::Error
                        } else {
                            Dechunked::More(at)
                        };
                    };
                    let line = &buf[at..at + nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let hex = line.split(|b| *b == b';').next().unwrap_or(b"");
                    let Some(size) = std::str::from_utf8(hex)
                        .ok()
                        .and_then(|h| usize::from_str_radix(h.trim(), 16).ok())
                    else {
                        return Dechunked::Error;
                    };
                    at += nl + 1;
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    let take = left.min(buf.len() - at);
                    body.extend_from_slice(&buf[at..at + take]);
                    at += take;
                    if take == left {
                        self.state = ChunkState::DataEnd;
                    } else {
                        self.state = ChunkState::Data(left - take);
                        return Dechunked::More(at);
                    }
                }
                ChunkState::DataEnd => {
                    let Some(nl) = memchr::memchr(b'\n', &buf[at..]) else {
                        return Dechunked::More(at);
                    };
                    if !buf[at..at + nl].iter().all(|b| *b == b'\r') {
                        return Dechunked::Error;
                    }
                    at += nl + 1;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(nl) = memchr::memchr(b'\n', &buf[at..]) else {
                        return Dechunked::More(at);
                    };
                    let empty = buf[at..at + nl].iter().all(|b| *b == b'\r');
                    at += nl + 1;
                    if empty {
                        self.state = ChunkState::Done;
                        return Dechunked::Done(at);
                    }
                }
                ChunkState::Done => return Dechunked::Done(at),
            }
        }
    }
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete response with a body and its `Content-Length`.
#[cfg(test)]
pub(crate) fn response(
    status: u16,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut out = response_head(status, headers, content_type, body.len(), close);
    out.extend_from_slice(body);
    out
}

/// The head of a complete response whose body of `len` bytes follows.
pub(crate) fn response_head(
    status: u16,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    len: usize,
    close: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    status_line(&mut out, status, headers, close);
    if let Some(ct) = content_type {
        header(&mut out, "Content-Type", ct);
    }
    header(&mut out, "Content-Length", &len.to_string());
    out.extend_from_slice(b"\r\n");
    out
}

/// The head of a server-sent event stream; its body follows in chunks.
pub(crate) fn sse_head(status: u16, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    status_line(&mut out, status, headers, false);
    header(&mut out, "Content-Type", "text/event-stream");
    header(&mut out, "Cache-Control", "no-cache");
    header(&mut out, "X-Accel-Buffering", "no");
    header(&mut out, "Transfer-Encoding", "chunked");
    out.extend_from_slice(b"\r\n");
    out
}

fn status_line(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)], close: bool) {
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    for (n, v) in headers {
        header(out, n, v);
    }
    if close {
        header(out, "Connection", "close");
    }
}

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One chunk of a chunked body.
pub(crate) fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body.
pub(crate) fn last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

/// One server-sent event carrying a JSON-RPC message (which never contains a newline).
pub(crate) fn sse_event(id: Option<&str>, event: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 48);
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        match parse_head(text.as_bytes()) {
            HeadParse::Complete(h, n) => {
                assert_eq!(n, text.len());
                h
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heads() {
        let h = head("POST /mcp?x=1&sessionId=abc HTTP/1.1\r\nHost: a\r\nAccept: application/json, text/event-stream\r\n\r\n");
        assert_eq!((h.method.as_str(), h.path.as_str()), ("POST", "/mcp"));
        assert_eq!(h.query_param("sessionId"), Some("abc"));
        assert_eq!(h.header("host"), Some("a"));
        assert!(h.accepts("text/event-stream") && h.accepts("application/json"));
        assert!(!h.close);
        assert!(head("GET / HTTP/1.0\r\n\r\n").close);
        assert!(head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").close);
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost"),
            HeadParse::Partial
        ));
        assert!(matches!(
            parse_head(b"\x01\x02 nonsense\r\n\r\n"),
            HeadParse::Error(400, _)
        ));
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            parse_head(text.as_bytes()),
            HeadParse::Error(431, _)
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD + 1));
        assert!(matches!(
            parse_head(big.as_bytes()),
            HeadParse::Error(431, _)
        ));
    }

    #[test]
    fn accept_wildcards() {
        assert!(head("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n").accepts("text/event-stream"));
        assert!(head("GET / HTTP/1.1\r\nAccept: text/*;q=1\r\n\r\n").accepts("text/event-stream"));
        assert!(!head("GET / HTTP/1.1\r\nAccept: application/json\r\n\r\n")
            .accepts("text/event-stream"));
    }

    #[test]
    fn chunked_bodies_in_pieces() {
        let wire = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let mut d = Dechunk::default();
            let mut body = Vec::new();
            let mut buf = wire[..split].to_vec();
            let first = d.feed(&buf, &mut body);
            let used = match first {
                Dechunked::More(n) => n,
                Dechunked::Done(n) => n,
                Dechunked::Error => panic!("error at split {split}"),
            };
            buf.drain(..used);
            if matches!(first, Dechunked::More(_)) {
                buf.extend_from_slice(&wire[split..]);
                match d.feed(&buf, &mut body) {
                    Dechunked::Done(n) => assert_eq!(&buf[n..], b"NEXT"),
                    other => panic!("{other:?} at split {split}"),
                }
            }
            assert_eq!(body, b"Wikipedia", "split {split}");
        }
        let mut body = Vec::new();
        assert_eq!(
            Dechunk::default().feed(b"zz\r\n", &mut body),
            Dechunked::Error
        );
    }

    #[test]
    fn writes() {
        let r = response(404, &[("Allow", "GET")], Some("text/plain"), b"no", true);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Allow: GET\r\n") && text.contains("Connection: close\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\nno"));
        assert_eq!(
            sse_event(Some("1-2"), Some("message"), b"{}"),
            b"event: message\nid: 1-2\ndata: {}\n\n"
        );
        let mut out = Vec::new();
        chunk(&mut out, b"hello");
        last_chunk(&mut out);
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");
    }
}
