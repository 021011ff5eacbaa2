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
    /// From the request target: `/…` for origin-form and absolute-form, `*` for asterisk-form
    /// (`OPTIONS` only).
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: Vec<(String, String)>,
    /// HTTP/1.0 without keep-alive, or `Connection: close`.
    pub(crate) close: bool,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) version: u8,
}

impl Head {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in the order received.
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
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

const TOO_LARGE: &str = "mcp-relay: the request head is too large (16 KiB at most)";
const NOT_HTTP: &str = "mcp-relay: the request is not valid HTTP/1.1";

/// Optional whitespace (RFC 9110 §5.6.3).
fn ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parses a request head.
///
/// httparse already refuses, in a request: obsolete line folding, whitespace between a header
/// name and its colon, a header name with characters outside `token`, control characters (NUL,
/// a bare CR) in a header value, and a request line that is not `method SP target SP version`.
/// On top of that this refuses lines ended by a bare LF (RFC 9112 §2.2 allows either choice;
/// refusing is the one a proxy in front cannot disagree with), more than one `Host`, and request
/// targets other than origin-form, absolute-form (`http://host/path`) and `*` for `OPTIONS`.
pub(crate) fn parse_head(buf: &[u8]) -> HeadParse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                HeadParse::Error(431, TOO_LARGE)
            } else {
                HeadParse::Partial
            }
        }
        Ok(httparse::Status::Complete(n)) => {
            if n > MAX_HEAD {
                return HeadParse::Error(431, TOO_LARGE);
            }
            if buf[..n]
                .iter()
                .enumerate()
                .any(|(i, b)| *b == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
            {
                return HeadParse::Error(
                    400,
                    "mcp-relay: request lines must end with CRLF, not a bare LF",
                );
            }
            let method = req.method.unwrap_or("");
            let target = match Target::parse(method, req.path.unwrap_or("")) {
                Ok(t) => t,
                Err(why) => return HeadParse::Error(400, why),
            };
            let mut headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value)
                            .trim_matches(ows)
                            .to_owned(),
                    )
                })
                .collect();
            if headers.iter().filter(|(n, _)| n == "host").count() > 1 {
                return HeadParse::Error(400, "mcp-relay: more than one Host header");
            }
            if let Some(authority) = target.authority {
                // RFC 9112 §3.2.2: the host of an absolute-form target replaces `Host`.
                headers.retain(|(n, _)| n != "host");
                headers.push(("host".to_owned(), authority.to_owned()));
            }
            let connection = headers
                .iter()
                .find(|(n, _)| n == "connection")
                .map(|(_, v)| v.to_ascii_lowercase());
            let version = req.version.unwrap_or(1);
            let close = match version {
                0 => !connection
                    .as_deref()
                    .is_some_and(|c| c.contains("keep-alive")),
                _ => connection.as_deref().is_some_and(|c| c.contains("close")),
            };
            HeadParse::Complete(
                Head {
                    method: method.to_owned(),
                    path: target.path.to_owned(),
                    query: target.query.to_owned(),
                    headers,
                    close,
                    version,
                },
                n,
            )
        }
        Err(httparse::Error::TooManyHeaders) => HeadParse::Error(
            431,
            "mcp-relay: the request has too many header lines (64 at most)",
        ),
        Err(_) => HeadParse::Error(400, NOT_HTTP),
    }
}

/// A request target split into what routing needs (RFC 9112 §3.2).
struct Target<'a> {
    path: &'a str,
    query: &'a str,
    /// The host (and port) of an absolute-form target.
    authority: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn parse(method: &str, target: &'a str) -> Result<Self, &'static str> {
        let split = |t: &'a str| t.split_once('?').unwrap_or((t, ""));
        if target.contains('#') {
            // No form of request-target has a fragment (RFC 9112 §3.2).
            return Err("mcp-relay: the request target has a fragment");
        }
        if target.starts_with('/') {
            let (path, query) = split(target);
            return Ok(Target {
                path,
                query,
                authority: None,
            });
        }
        if target == "*" {
            return if method == "OPTIONS" {
                Ok(Target {
                    path: "*",
                    query: "",
                    authority: None,
                })
            } else {
                Err("mcp-relay: the request target * is only for OPTIONS")
            };
        }
        let rest = ["http://", "https://"].iter().find_map(|scheme| {
            let head = target.get(..scheme.len())?;
            head.eq_ignore_ascii_case(scheme)
                .then(|| &target[scheme.len()..])
        });
        let Some(rest) = rest else {
            return Err("mcp-relay: the request target must be a path or an http URI");
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.is_empty() || authority.contains('@') {
            // RFC 9110 §4.2.4: userinfo in an http URI is an error.
            return Err("mcp-relay: the request target's host is empty or has user info");
        }
        let (path, query) = split(&rest[end..]);
        Ok(Target {
            path: if path.is_empty() { "/" } else { path },
            query,
            authority: Some(authority),
        })
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Length(usize),
    Chunked,
}

/// Reads the framing of a body from the head (RFC 9112 §6.3); `Err` is a status and a reason,
/// after which the connection must be closed: what follows cannot be delimited.
///
/// Identical `Content-Length` values (`Content-Length: 5, 5`, or the header twice with 5) are
/// taken as one, as RFC 9110 §8.6 allows: whoever reads any one of them finds the same body
/// end, so there is nothing for a request smuggler to play with. Different values are refused.
pub(crate) fn body_kind(head: &Head) -> Result<BodyKind, (u16, &'static str)> {
    let mut te = head.all("transfer-encoding");
    let mut cl = head.all("content-length").peekable();
    match (te.next(), te.next()) {
        (None, _) => {}
        (Some(_), _) if cl.peek().is_some() => {
            return Err((
                400,
                "mcp-relay: a request must not have both Transfer-Encoding and Content-Length",
            ))
        }
        (Some(_), Some(_)) => {
            return Err((400, "mcp-relay: more than one Transfer-Encoding header"))
        }
        (Some(_), None) if head.version == 0 => {
            return Err((400, "mcp-relay: Transfer-Encoding is not HTTP/1.0"))
        }
        (Some(te), None) => {
            let codings: Vec<&str> = te
                .split(',')
                .map(|c| c.trim_matches(ows))
                .filter(|c| !c.is_empty())
                .collect();
            let chunked = |c: &&str| c.eq_ignore_ascii_case("chunked");
            return match codings.split_last() {
                Some((last, [])) if chunked(last) => Ok(BodyKind::Chunked),
                Some((last, before)) if chunked(last) && !before.iter().any(chunked) => Err((
                    501,
                    "mcp-relay: only chunked transfer encoding is supported",
                )),
                _ => Err((
                    400,
                    "mcp-relay: Transfer-Encoding must end with chunked, once",
                )),
            };
        }
    }
    let mut length = None;
    for value in cl.flat_map(|v| v.split(',')) {
        let Some(n) = parse_length(value.trim_matches(ows)) else {
            return Err((400, "mcp-relay: Content-Length is not a number"));
        };
        if length.is_some_and(|l| l != n) {
            return Err((400, "mcp-relay: Content-Length values differ"));
        }
        length = Some(n);
    }
    Ok(BodyKind::Length(length.unwrap_or(0)))
}

/// `1*DIGIT`, without overflow.
fn parse_length(digits: &str) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.bytes().try_fold(0usize, |n, b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(usize::from(b - b'0'))
    })
}

/// Longest chunk-size line (with its extensions).
const MAX_CHUNK_LINE: usize = 1024;

/// Decodes a chunked body incrementally (RFC 9112 §7.1), strictly: every line ends with CRLF,
/// a chunk size is `1*HEXDIG`, extensions are ignored but may hold no control character, and
/// trailer fields are checked for shape, limited to [`MAX_HEAD`] bytes in all, and dropped.
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
    /// Reading trailer lines; this many bytes of them so far.
    Trailers(usize),
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

/// The line at the start of `buf` without its CRLF, and its length with it; `Ok(None)` if it
/// is not all there yet and may still fit in `max` bytes.
fn crlf_line(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, ()> {
    match memchr::memchr(b'\n', buf) {
        None if buf.len() > max => Err(()),
        None => Ok(None),
        Some(nl) if nl > max => Err(()),
        Some(nl) => match buf[..nl].strip_suffix(b"\r") {
            Some(line) => Ok(Some((line, nl + 1))),
            None => Err(()),
        },
    }
}

/// A byte allowed in a field value or a chunk extension: visible, whitespace or obs-text.
fn field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80
}

/// A `tchar` (RFC 9110 §5.6.2).
fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `chunk-size [ chunk-ext ]`: the size, or `None` if the line is malformed.
fn chunk_size(line: &[u8]) -> Option<usize> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let rest = &line[digits..];
    let ext = rest.iter().position(|b| *b != b' ' && *b != b'\t');
    if let Some(at) = ext {
        if rest[at] != b';' || !rest[at..].iter().all(|b| field_byte(*b)) {
            return None;
        }
    } else if !rest.is_empty() {
        // Whitespace is only allowed before an extension.
        return None;
    }
    line[..digits].iter().try_fold(0usize, |n, b| {
        let d = char::from(*b).to_digit(16)? as usize;
        n.checked_mul(16)?.checked_add(d)
    })
}

/// `field-name ":" field-value`, as a trailer line must be.
fn trailer_ok(line: &[u8]) -> bool {
    let name = line.iter().take_while(|b| token_byte(**b)).count();
    name > 0 && line.get(name) == Some(&b':') && line[name + 1..].iter().all(|b| field_byte(*b))
}

impl Dechunk {
    /// Consumes what it can of `buf`, appending body bytes to `body`.
    pub(crate) fn feed(&mut self, buf: &[u8], body: &mut Vec<u8>) -> Dechunked {
        let mut at = 0;
        loop {
            match self.state {
                ChunkState::Size => {
                    let (line, used) = match crlf_line(&buf[at..], MAX_CHUNK_LINE) {
                        Ok(Some(l)) => l,
                        Ok(None) => return Dechunked::More(at),
                        Err(()) => return Dechunked::Error,
                    };
                    let Some(size) = chunk_size(line) else {
                        return Dechunked::Error;
                    };
                    at += used;
                    self.state = if size == 0 {
                        ChunkState::Trailers(0)
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
                    let Some(end) = buf.get(at..at + 2) else {
                        return match &buf[at..] {
                            [] | [b'\r'] => Dechunked::More(at),
                            _ => Dechunked::Error,
                        };
                    };
                    if end != b"\r\n" {
                        return Dechunked::Error;
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers(seen) => {
                    let left = MAX_HEAD.saturating_sub(seen);
                    let (line, used) = match crlf_line(&buf[at..], left) {
                        Ok(Some(l)) => l,
                        Ok(None) => return Dechunked::More(at),
                        Err(()) => return Dechunked::Error,
                    };
                    at += used;
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                        return Dechunked::Done(at);
                    }
                    if !trailer_ok(line) {
                        return Dechunked::Error;
                    }
                    self.state = ChunkState::Trailers(seen + used);
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
#[cfg(test)]
pub(crate) fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(&chunk_size_line(data.len()));
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The line that opens a chunk of `len` bytes (which must not be 0: that ends the body).
pub(crate) fn chunk_size_line(len: usize) -> Vec<u8> {
    format!("{len:x}\r\n").into_bytes()
}

/// The end of a chunked body.
pub(crate) fn last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

/// What comes before the data of a server-sent event: its `event` and `id` fields and the
/// `data: ` field name.
pub(crate) fn sse_event_prefix(id: Option<&str>, event: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
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
    out
}

/// What ends a server-sent event.
pub(crate) const SSE_EVENT_END: &[u8] = b"\n\n";

/// One server-sent event carrying a JSON-RPC message (which never contains a newline).
pub(crate) fn sse_event(id: Option<&str>, event: Option<&str>, data: &[u8]) -> Vec<u8> {
    let prefix = sse_event_prefix(id, event);
    let mut out = Vec::with_capacity(prefix.len() + data.len() + SSE_EVENT_END.len());
    out.extend_from_slice(&prefix);
    out.extend_from_slice(data);
    out.extend_from_slice(SSE_EVENT_END);
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

    /// What the framing of a request comes to: `partial`, an error status, `length N` or
    /// `chunked`.
    fn framing(text: &str) -> String {
        match parse_head(text.as_bytes()) {
            HeadParse::Partial => "partial".into(),
            HeadParse::Error(status, _) => status.to_string(),
            HeadParse::Complete(h, n) => {
                assert_eq!(n, text.len(), "{text:?}");
                match body_kind(&h) {
                    Ok(BodyKind::Length(n)) => format!("length {n}"),
                    Ok(BodyKind::Chunked) => "chunked".into(),
                    Err((status, _)) => status.to_string(),
                }
            }
        }
    }

    /// Checks the framing of a POST with these header lines (each ending in CRLF).
    fn check(headers: &str, expect: &str) {
        let text = format!("POST /mcp HTTP/1.1\r\nHost: a\r\n{headers}\r\n");
        assert_eq!(framing(&text), expect, "{headers:?}");
    }

    /// Checks a whole head as given.
    fn check_raw(text: &str, expect: &str) {
        assert_eq!(framing(text), expect, "{text:?}");
    }

    #[test]
    fn transfer_encoding_and_content_length_together_are_refused() {
        check("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "400");
        check("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "400");
        check("Content-Length: 0\r\nTransfer-Encoding: gzip\r\n", "400");
        check("Transfer-Encoding: chunked\r\n", "chunked");
        check("Transfer-Encoding: CHUNKED\r\n", "chunked");
        check("Transfer-Encoding:\tchunked \r\n", "chunked");
    }

    #[test]
    fn content_length_values_must_agree() {
        check("Content-Length: 5\r\nContent-Length: 6\r\n", "400");
        check("Content-Length: 5, 6\r\n", "400");
        check("Content-Length: 6\r\nContent-Length: 5, 6\r\n", "400");
        // Identical values are one value (RFC 9110 §8.6).
        check("Content-Length: 5\r\nContent-Length: 5\r\n", "length 5");
        check("Content-Length: 5,5 , 5\r\n", "length 5");
        check("", "length 0");
    }

    #[test]
    fn content_length_is_digits_only() {
        check("Content-Length: 29\r\n", "length 29");
        check("Content-Length:   029 \r\n", "length 29");
        check("Content-Length: +29\r\n", "400");
        check("Content-Length: -1\r\n", "400");
        check("Content-Length:  29x\r\n", "400");
        check("Content-Length: 2 9\r\n", "400");
        check("Content-Length: 0x1d\r\n", "400");
        check("Content-Length: \r\n", "400");
        check("Content-Length: 5,\r\n", "400");
        check("Content-Length: 1e3\r\n", "400");
        check("Content-Length: \u{a0}29\r\n", "400");
        check("Content-Length: ２９\r\n", "400");
        check(
            &format!("Content-Length: {}\r\n", usize::MAX),
            &format!("length {}", usize::MAX),
        );
        check("Content-Length: 18446744073709551616\r\n", "400");
        check("Content-Length: 99999999999999999999999999\r\n", "400");
    }

    #[test]
    fn transfer_codings_other_than_a_single_final_chunked_are_refused() {
        check(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "400",
        );
        check(
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            "400",
        );
        check("Transfer-Encoding: chunked, chunked\r\n", "400");
        check("Transfer-Encoding: chunked, gzip\r\n", "400");
        check("Transfer-Encoding: gzip\r\n", "400");
        check("Transfer-Encoding: identity\r\n", "400");
        check("Transfer-Encoding: chunked;q=1\r\n", "400");
        check("Transfer-Encoding: xchunked\r\n", "400");
        check("Transfer-Encoding: \r\n", "400");
        check("Transfer-Encoding: gzip, chunked\r\n", "501");
        check("Transfer-Encoding: , chunked,\r\n", "chunked");
        check_raw(
            "POST /mcp HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "400",
        );
    }

    /// The path and query routing sees, or the status of the refusal.
    fn target(line: &str) -> String {
        match parse_head(format!("{line}\r\nHost: a\r\n\r\n").as_bytes()) {
            HeadParse::Complete(h, _) => {
                format!(
                    "{} {} ? {} @ {}",
                    h.method,
                    h.path,
                    h.query,
                    h.header("host").unwrap_or("-")
                )
            }
            HeadParse::Error(status, _) => status.to_string(),
            HeadParse::Partial => "partial".into(),
        }
    }

    fn check_target(line: &str, expect: &str) {
        assert_eq!(target(line), expect, "{line:?}");
    }

    #[test]
    fn request_targets() {
        check_target("POST /mcp?a=1 HTTP/1.1", "POST /mcp ? a=1 @ a");
        // Absolute-form: the path comes from the URI, and so does the host (RFC 9112 §3.2.2).
        check_target(
            "POST http://127.0.0.1:8080/mcp HTTP/1.1",
            "POST /mcp ?  @ 127.0.0.1:8080",
        );
        check_target(
            "POST HTTP://localhost/mcp?x=1 HTTP/1.1",
            "POST /mcp ? x=1 @ localhost",
        );
        check_target("GET https://[::1]:9/sse HTTP/1.1", "GET /sse ?  @ [::1]:9");
        check_target("GET http://localhost HTTP/1.1", "GET / ?  @ localhost");
        check_target("GET http://localhost?q HTTP/1.1", "GET / ? q @ localhost");
        check_target("GET http:///mcp HTTP/1.1", "400");
        check_target("GET http://user@localhost/mcp HTTP/1.1", "400");
        check_target("GET ftp://localhost/mcp HTTP/1.1", "400");
        check_target("CONNECT localhost:443 HTTP/1.1", "400");
        check_target("GET mcp HTTP/1.1", "400");
        // No fragments (found by the http_head fuzz target: `http://a#b/mcp` had path `#b/mcp`).
        check_target("GET http://localhost#a/mcp HTTP/1.1", "400");
        check_target("GET /mcp#x HTTP/1.1", "400");
        // Asterisk-form only for OPTIONS.
        check_target("OPTIONS * HTTP/1.1", "OPTIONS * ?  @ a");
        check_target("GET * HTTP/1.1", "400");
        check_target("POST * HTTP/1.1", "400");
        // An absolute-form target with no Host header gets one.
        let h = head("GET http://h:1/x HTTP/1.1\r\n\r\n");
        assert_eq!((h.path.as_str(), h.header("host")), ("/x", Some("h:1")));
    }

    /// Pins what httparse refuses, and what this module refuses on top of it: each of these is
    /// a way for two parsers (a proxy in front and the relay) to see different requests.
    #[test]
    fn ambiguous_heads_are_refused() {
        // Obsolete line folding.
        check("X-A: 1\r\n Transfer-Encoding: chunked\r\n", "400");
        check("X-A: 1\r\n\tmore\r\n", "400");
        check_raw("POST /mcp HTTP/1.1\r\n Host: a\r\n\r\n", "400");
        // Whitespace between a field name and its colon, or inside the name.
        check("Transfer-Encoding : chunked\r\n", "400");
        check("Content-Length\t: 5\r\n", "400");
        check("Content Length: 5\r\n", "400");
        check(": 5\r\n", "400");
        // NUL and other control characters.
        check("X-A: a\0b\r\n", "400");
        check("X-A\0: 1\r\n", "400");
        check("X-A: \x01\r\n", "400");
        check("X-A: a\x7fb\r\n", "400");
        check_raw("POST /mcp\0 HTTP/1.1\r\nHost: a\r\n\r\n", "400");
        // A bare CR anywhere.
        check("X-A: a\rTransfer-Encoding: chunked\r\n", "400");
        check_raw("POST /mcp HTTP/1.1\rHost: a\r\n\r\n", "400");
        // A bare LF as a line end.
        check_raw("POST /mcp HTTP/1.1\nHost: a\r\n\r\n", "400");
        check_raw(
            "POST /mcp HTTP/1.1\r\nHost: a\nContent-Length: 5\r\n\r\n",
            "400",
        );
        check_raw("POST /mcp HTTP/1.1\r\nHost: a\r\n\n", "400");
        // Two Host headers.
        check("Host: b\r\n", "400");
        // A field without a colon; a bad version; spaces in the request line.
        check("Transfer-Encoding chunked\r\n", "400");
        check_raw("POST /mcp HTTP/1.2\r\nHost: a\r\n\r\n", "400");
        check_raw("POST /mcp HTTP/2.0\r\nHost: a\r\n\r\n", "400");
        check_raw("POST  /mcp HTTP/1.1\r\nHost: a\r\n\r\n", "400");
        check_raw("POST /m cp HTTP/1.1\r\nHost: a\r\n\r\n", "400");
        // Tabs and obs-text in a value are fine.
        check("X-A: a\tbé\r\n", "length 0");
    }

    /// What decoding this chunked body in one go gives: the body and what follows it, `more`,
    /// or `error`.
    fn dechunk(wire: &[u8]) -> String {
        let mut body = Vec::new();
        match Dechunk::default().feed(wire, &mut body) {
            Dechunked::Done(n) => format!(
                "{} | {}",
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&wire[n..])
            ),
            Dechunked::More(_) => "more".into(),
            Dechunked::Error => "error".into(),
        }
    }

    fn check_chunked(wire: &str, expect: &str) {
        assert_eq!(dechunk(wire.as_bytes()), expect, "{wire:?}");
    }

    #[test]
    fn chunked_bodies_strictly() {
        check_chunked("3\r\nabc\r\n0\r\n\r\nX", "abc | X");
        check_chunked("03\r\nabc\r\n000\r\n\r\n", "abc | ");
        check_chunked("A\r\n0123456789\r\n0\r\n\r\n", "0123456789 | ");
        // Chunk sizes are 1*HEXDIG.
        check_chunked("+3\r\nabc\r\n0\r\n\r\n", "error");
        check_chunked("-3\r\nabc\r\n0\r\n\r\n", "error");
        check_chunked("0x3\r\nabc\r\n0\r\n\r\n", "error");
        check_chunked(" 3\r\nabc\r\n0\r\n\r\n", "error");
        check_chunked("3 \r\nabc\r\n0\r\n\r\n", "error");
        check_chunked("\r\nabc\r\n0\r\n\r\n", "error");
        check_chunked("g\r\n", "error");
        check_chunked("10000000000000000\r\n", "error");
        check_chunked("ffffffffffffffff\r\n", "more");
        // Extensions are ignored, with whitespace before them, but hold no control character.
        check_chunked("3;a=b;c\r\nabc\r\n0;x=\"y\"\r\n\r\n", "abc | ");
        check_chunked("3 ;a\r\nabc\r\n0\t; b\r\n\r\n", "abc | ");
        check_chunked("3;a\rb\r\nabc\r\n0\r\n\r\n", "error");
        check_chunked("3;a\0\r\nabc\r\n0\r\n\r\n", "error");
        check_chunked(
            &format!("3;{}\r\nabc\r\n0\r\n\r\n", "a".repeat(2000)),
            "error",
        );
        // Every line ends with CRLF: no bare LF, no stray CR.
        check_chunked("3\nabc\r\n0\r\n\r\n", "error");
        check_chunked("3;a\nabc\r\n0\r\n\r\n", "error");
        check_chunked("3\r\nabc\n0\r\n\r\n", "error");
        check_chunked("3\r\nabc\r\r\n0\r\n\r\n", "error");
        check_chunked("3\r\nabcd\r\n0\r\n\r\n", "error");
        check_chunked("3\r\nabc\r\n0\r\n\n", "error");
        // Trailers are checked and dropped.
        check_chunked("3\r\nabc\r\n0\r\nX-T: 1\r\nY: \r\n\r\nZ", "abc | Z");
        check_chunked("3\r\nabc\r\n0\r\nX-T 1\r\n\r\n", "error");
        check_chunked("3\r\nabc\r\n0\r\nX-T : 1\r\n\r\n", "error");
        check_chunked("3\r\nabc\r\n0\r\n folded\r\n\r\n", "error");
        check_chunked("3\r\nabc\r\n0\r\nX: a\0\r\n\r\n", "error");
        check_chunked("3\r\nabc\r\n0\r\nX: 1\n\r\n", "error");
        let many =
            "X-T: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
                .repeat(MAX_HEAD / 64);
        check_chunked(&format!("0\r\n{many}\r\n"), "error");
        // Not all there yet.
        check_chunked("3\r\nab", "more");
        check_chunked("3\r\nabc\r", "more");
        check_chunked("3\r\nabc\r\n0\r\nX: 1\r\n", "more");
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
        assert_eq!(chunk_size_line(300), b"12c\r\n");
        assert_eq!(
            sse_event_prefix(None, Some("message")),
            b"event: message\ndata: "
        );
        assert_eq!(sse_event_prefix(Some("3-1"), None), b"id: 3-1\ndata: ");
    }
}
