//! HTTP/1.1 as a client speaks it, on byte slices: requests out, response heads, body framing
//! and event streams in. Chunked bodies are decoded by the server side's strict decoder
//! (`http::wire::Dechunk`).

use crate::http::wire::MAX_HEADERS;

/// Most bytes a response head may have.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// A response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    /// Lower-cased names, trimmed values.
    pub(crate) headers: Vec<(String, String)>,
    /// The connection cannot be reused after this response.
    pub(crate) close: bool,
}

impl ResponseHead {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The media type, lower-cased, without parameters.
    pub(crate) fn media_type(&self) -> String {
        self.header("content-type")
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub(crate) enum HeadParse {
    Partial,
    Error(String),
    /// The head and the bytes it took.
    Complete(ResponseHead, usize),
}

/// Parses a response head from the start of `buf`. Interim (1xx) responses are skipped by the
/// caller: they come back as complete heads with their status.
pub(crate) fn parse_head(buf: &[u8]) -> HeadParse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            HeadParse::Error(format!("a response head longer than {MAX_HEAD} bytes"))
        }
        Ok(httparse::Status::Partial) => HeadParse::Partial,
        Err(e) => HeadParse::Error(format!("a malformed response head ({e})")),
        Ok(httparse::Status::Complete(len)) => {
            let status = resp.code.unwrap_or(0);
            let version = resp.version.unwrap_or(0);
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).trim().to_owned(),
                    )
                })
                .collect();
            let close = version == 0
                || headers.iter().any(|(n, v)| {
                    n == "connection"
                        && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
                });
            HeadParse::Complete(
                ResponseHead {
                    status,
                    headers,
                    close,
                },
                len,
            )
        }
    }
}

/// How a response body is delimited (RFC 9112 §6.3, for a client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// The body's framing, or why the response cannot be read.
pub(crate) fn framing(head: &ResponseHead, request_was_head: bool) -> Result<Framing, String> {
    if request_was_head || head.status == 204 || head.status == 304 || head.status < 200 {
        return Ok(Framing::Length(0));
    }
    let te: Vec<&str> = head
        .headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(last) = te.last() {
        return if last.eq_ignore_ascii_case("chunked") {
            Ok(Framing::Chunked)
        } else {
            Ok(Framing::UntilClose)
        };
    }
    let mut length = None;
    for (_, v) in head.headers.iter().filter(|(n, _)| n == "content-length") {
        for part in v.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("a bad Content-Length ({v:?})"));
            }
            let n: usize = part
                .parse()
                .map_err(|_| format!("a Content-Length too large ({v:?})"))?;
            if length.is_some_and(|l| l != n) {
                return Err("disagreeing Content-Length values".to_owned());
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// A request: its head (with `Host`, `User-Agent` and `Content-Length` when there is a body)
/// and its body.
pub(crate) fn request(
    method: &str,
    path: &str,
    authority: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has("user-agent") {
        out.extend_from_slice(
            concat!("User-Agent: mcp-relay/", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes(),
        );
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "POST" {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// One event of an event stream, as [`SseParser`] hands it out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SseEvent<'a> {
    /// `event:`, or `message` when there was none.
    pub(crate) event: &'a str,
    /// The data (its lines joined by a space, which in JSON is the same as a newline); empty
    /// when it was longer than the limit.
    pub(crate) data: &'a [u8],
    /// Its length, which is more than the limit when `data` was dropped.
    pub(crate) len: usize,
}

/// Which field the current line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// Still reading the name.
    Name,
    Data,
    Event,
    Id,
    Retry,
    /// A comment, or a field this parser ignores.
    Ignored,
}

/// Longest field name and non-data value kept.
const MAX_FIELD: usize = 1024;

/// An incremental `text/event-stream` parser (WHATWG HTML §9.2.6), holding at most one event's
/// data (up to a limit) and one short field at a time.
#[derive(Debug)]
pub(crate) struct SseParser {
    max: usize,
    field: Field,
    name: Vec<u8>,
    /// The value's first byte is next (a single leading space is dropped).
    value_start: bool,
    value: Vec<u8>,
    data: Vec<u8>,
    data_len: usize,
    data_lines: usize,
    event: String,
    /// A CR ended the last line: a LF right after it belongs to it.
    after_cr: bool,
    /// The last `id:` read; it becomes `last_id` when its event is dispatched.
    id: Option<String>,
    /// The id of the last event dispatched (it persists across events): where to resume.
    pub(crate) last_id: Option<String>,
    /// The reconnection time the server asked for, in milliseconds.
    pub(crate) retry: Option<u64>,
}

impl SseParser {
    /// A parser that drops the data of events longer than `max` bytes (it reports their
    /// length).
    pub(crate) fn new(max: usize) -> Self {
        SseParser {
            max,
            field: Field::Name,
            name: Vec::new(),
            value_start: false,
            value: Vec::new(),
            data: Vec::new(),
            data_len: 0,
            data_lines: 0,
            event: String::new(),
            after_cr: false,
            id: None,
            last_id: None,
            retry: None,
        }
    }

    /// Bytes held: the event being read.
    pub(crate) fn buffered(&self) -> usize {
        self.data.len() + self.value.len() + self.name.len()
    }

    /// Feeds bytes; `f` gets every event they complete.
    pub(crate) fn push(&mut self, mut buf: &[u8], mut f: impl FnMut(SseEvent<'_>)) {
        while !buf.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if buf[0] == b'\n' {
                    buf = &buf[1..];
                    continue;
                }
            }
            match memchr::memchr2(b'\n', b'\r', buf) {
                Some(i) => {
                    self.line_part(&buf[..i]);
                    self.after_cr = buf[i] == b'\r';
                    self.end_line(&mut f);
                    buf = &buf[i + 1..];
                }
                None => {
                    self.line_part(buf);
                    return;
                }
            }
        }
    }

    fn line_part(&mut self, mut part: &[u8]) {
        if self.field == Field::Name {
            let (name, rest) = match memchr::memchr(b':', part) {
                Some(i) => (&part[..i], Some(&part[i + 1..])),
                None => (part, None),
            };
            if self.name.len() + name.len() <= MAX_FIELD {
                self.name.extend_from_slice(name);
            }
            let Some(rest) = rest else { return };
            self.field = self.field_of_name();
            self.value_start = true;
            part = rest;
        }
        if self.value_start && !part.is_empty() {
            self.value_start = false;
            if part[0] == b' ' {
                part = &part[1..];
            }
        }
        match self.field {
            Field::Data => self.data_bytes(part),
            Field::Event | Field::Id | Field::Retry => {
                if self.value.len() + part.len() <= MAX_FIELD {
                    self.value.extend_from_slice(part);
                }
            }
            Field::Name | Field::Ignored => {}
        }
    }

    fn field_of_name(&mut self) -> Field {
        let field = match self.name.as_slice() {
            b"data" => Field::Data,
            b"event" => Field::Event,
            b"id" => Field::Id,
            b"retry" => Field::Retry,
            _ => Field::Ignored,
        };
        if field == Field::Data {
            // A data line: lines after the first are joined by a space.
            if self.data_lines > 0 {
                self.data_bytes(b" ");
            }
            self.data_lines += 1;
        }
        field
    }

    fn data_bytes(&mut self, part: &[u8]) {
        self.data_len += part.len();
        if self.data_len <= self.max {
            self.data.extend_from_slice(part);
        } else if !self.data.is_empty() {
            self.data = Vec::new();
        }
    }

    fn end_line(&mut self, f: &mut impl FnMut(SseEvent<'_>)) {
        if self.field == Field::Name {
            if self.name.is_empty() {
                return self.dispatch(f);
            }
            // A field with no colon: its whole line is the name, the value is empty.
            self.field = self.field_of_name();
        }
        let value = std::mem::take(&mut self.value);
        match self.field {
            Field::Event => self.event = String::from_utf8_lossy(&value).into_owned(),
            Field::Id if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(&value).into_owned())
            }
            Field::Retry if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse().ok())
            }
            _ => {}
        }
        self.field = Field::Name;
        self.name.clear();
        self.value_start = false;
    }

    fn dispatch(&mut self, f: &mut impl FnMut(SseEvent<'_>)) {
        // An event's id counts once the event is whole (WHATWG: set at dispatch): a stream cut
        // inside an event resumes before it.
        if self.id.is_some() {
            self.last_id.clone_from(&self.id);
        }
        if self.data_lines > 0 {
            let event = if self.event.is_empty() {
                "message"
            } else {
                &self.event
            };
            f(SseEvent {
                event,
                data: &self.data,
                len: self.data_len,
            });
        }
        self.data.clear();
        self.data_len = 0;
        self.data_lines = 0;
        self.event.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &[&[u8]], max: usize) -> (Vec<(String, String, usize)>, SseParser) {
        let mut p = SseParser::new(max);
        let mut got = Vec::new();
        for part in input {
            p.push(part, |e| {
                got.push((
                    e.event.to_owned(),
                    String::from_utf8_lossy(e.data).into_owned(),
                    e.len,
                ))
            });
        }
        (got, p)
    }

    fn check(input: &[&[u8]], expect: &[(&str, &str)]) {
        let (got, _) = events(input, 1 << 20);
        let got: Vec<(&str, &str)> = got.iter().map(|(e, d, _)| (&e[..], &d[..])).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn event_streams() {
        check(&[b"data: {}\n\n"], &[("message", "{}")]);
        check(
            &[b"da", b"ta: {\"a\"", b":1}\r", b"\n\r\n"],
            &[("message", "{\"a\":1}")],
        );
        check(
            &[b"event: endpoint\ndata: /m?s=1\n\n"],
            &[("endpoint", "/m?s=1")],
        );
        check(&[b": keepalive\n\ndata:x\n\n"], &[("message", "x")]);
        check(&[b"data: [1,\ndata: 2]\n\n"], &[("message", "[1, 2]")]);
        check(&[b"id: 7\nretry: 1500\n\n"], &[]);
        check(&[b"data\n\n"], &[("message", "")]);
        check(
            &[b"data: a\r\rdata: b\n\n"],
            &[("message", "a"), ("message", "b")],
        );
        check(&[b"data: unfinished"], &[]);
        let (_, p) = events(&[b"id: 7\nretry: 1500\ndata: x\n\nid: 8\n"], 100);
        assert_eq!((p.last_id.as_deref(), p.retry), (Some("7"), Some(1500)));
        let (_, p) = events(&[b"id: 7\ndata: x\n\nid: 8\ndata: y\n\n"], 100);
        assert_eq!(p.last_id.as_deref(), Some("8"));
        let (got, p) = events(&[b"data: 0123456789\n\ndata: ok\n\n"], 5);
        assert_eq!(got[0], ("message".into(), String::new(), 10));
        assert_eq!(got[1], ("message".into(), "ok".into(), 2));
        assert_eq!(p.buffered(), 0);
    }

    fn head(raw: &str) -> ResponseHead {
        match parse_head(raw.as_bytes()) {
            HeadParse::Complete(h, n) => {
                assert_eq!(n, raw.len());
                h
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn response_framing() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(framing(&h, false), Ok(Framing::Length(5)));
        assert!(!h.close);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n");
        assert_eq!(framing(&h, false), Ok(Framing::Chunked));
        assert_eq!(h.media_type(), "text/event-stream");
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert_eq!(framing(&h, false), Ok(Framing::UntilClose));
        assert!(h.close);
        let h = head("HTTP/1.0 202 Accepted\r\n\r\n");
        assert!(h.close);
        let h = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(framing(&h, false), Ok(Framing::Length(0)));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n");
        assert!(framing(&h, false).is_err());
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\n"),
            HeadParse::Partial
        ));
        assert!(matches!(
            parse_head(b"HTTX 200\r\n\r\n"),
            HeadParse::Error(_)
        ));
    }

    #[test]
    fn requests() {
        let r = request("POST", "/mcp", "h:1", &[("Accept", "x")], b"{}");
        assert_eq!(
            String::from_utf8(r).unwrap(),
            format!(
                "POST /mcp HTTP/1.1\r\nHost: h:1\r\nUser-Agent: mcp-relay/{}\r\nAccept: x\r\nContent-Length: 2\r\n\r\n{{}}",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
