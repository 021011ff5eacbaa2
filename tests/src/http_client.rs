//! The client side of Streamable HTTP, as the simulation's MCP clients speak it: requests
//! written as bytes (a POST with a JSON body, sometimes chunked; a GET that resumes an event
//! stream with `Last-Event-ID`), and a reader of the responses ([`Rx`]) that parses heads,
//! `Content-Length` and chunked bodies, and server-sent events (`id:`/`data:` lines, comments,
//! events split across any number of reads).
//!
//! Not spoken yet: the legacy HTTP+SSE transport (`GET /sse` + `POST /messages`) and the
//! stateless mode; the end-to-end tests cover those.

use crate::rng::Rng;
use std::collections::BTreeMap;

/// The address the simulated HTTP listener has.
pub const LOCAL: &str = "127.0.0.1:8080";

/// The extra headers of a session's request: its id, and its protocol version once it is
/// initialized.
pub fn session_headers(sid: Option<&str>, version: Option<&str>) -> String {
    let mut h = String::new();
    if let Some(sid) = sid {
        h.push_str(&format!("Mcp-Session-Id: {sid}\r\n"));
        if let Some(v) = version {
            h.push_str(&format!("MCP-Protocol-Version: {v}\r\n"));
        }
    }
    h
}

/// A POST to `/mcp` with `body`; the host header and chunking of the body are drawn from `rng`.
pub fn post(rng: &mut Rng, headers: &str, body: &[u8], close: bool) -> Vec<u8> {
    let host = if rng.chance(500) {
        LOCAL
    } else {
        "localhost:8080"
    };
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{headers}"
    );
    if close {
        req.push_str("Connection: close\r\n");
    }
    let mut out;
    if rng.chance(300) {
        req.push_str("Transfer-Encoding: chunked\r\n\r\n");
        out = req.into_bytes();
        let mut rest = body;
        while !rest.is_empty() {
            let n = rng.range_usize(1, rest.len());
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        out = req.into_bytes();
        out.extend_from_slice(body);
    }
    out
}

/// The length of a request's body (`Content-Length`, or the sum of its chunks).
pub fn body_len(req: &[u8]) -> usize {
    let Some(end) = find(req, b"\r\n\r\n") else {
        return 0;
    };
    let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
    if let Some(n) = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length:"))
    {
        return n.trim().parse().unwrap_or(0);
    }
    let mut rest = &req[end + 4..];
    let mut total = 0;
    while let Some(nl) = find(rest, b"\r\n") {
        let n = std::str::from_utf8(&rest[..nl])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        total += n;
        rest = rest.get(nl + 2 + n + 2..).unwrap_or_default();
    }
    total
}

/// A `GET /mcp` that resumes event stream `last.0` after its event `last.1`.
pub fn get_resume(headers: &str, last: (u64, u64)) -> Vec<u8> {
    format!(
        "GET /mcp HTTP/1.1\r\nHost: {LOCAL}\r\nAccept: text/event-stream\r\n{headers}Last-Event-ID: {}-{}\r\n\r\n",
        last.0, last.1
    )
    .into_bytes()
}

/// A `DELETE /mcp` of a session.
pub fn delete(headers: &str) -> Vec<u8> {
    format!("DELETE /mcp HTTP/1.1\r\nHost: {LOCAL}\r\n{headers}\r\n").into_bytes()
}

/// What the reader found next in the bytes a client received.
#[derive(Debug)]
pub enum RxEv {
    Head {
        status: u16,
        sid: Option<String>,
        sse: bool,
    },
    /// A `Content-Length` body: the response is complete.
    Body(Vec<u8>),
    /// One server-sent event.
    Event {
        id: Option<String>,
        data: Option<String>,
    },
    /// The end of a chunked body.
    End,
}

#[derive(Default, Clone, Copy, Debug)]
enum RxState {
    #[default]
    Head,
    Length(usize),
    Size,
    Data(usize),
    DataEnd,
    LastCrlf,
}

/// A client's reader of HTTP/1.1 responses: heads, `Content-Length` and chunked bodies, and
/// the server-sent events inside an event-stream body.
#[derive(Default)]
pub struct Rx {
    pub buf: Vec<u8>,
    state: RxState,
    /// Decoded event-stream bytes not yet split into events.
    pub sse: Vec<u8>,
}

impl Rx {
    /// The next complete piece of a response in the bytes received so far, if any.
    pub fn next_event(&mut self) -> Result<Option<RxEv>, String> {
        loop {
            if let Some(i) = find(&self.sse, b"\n\n") {
                let block: Vec<u8> = self.sse.drain(..i + 2).collect();
                let text = std::str::from_utf8(&block[..i]).map_err(|e| e.to_string())?;
                let (mut id, mut data) = (None, None::<String>);
                for line in text.split('\n') {
                    if line.is_empty() || line.starts_with(':') {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => id = Some(value.to_owned()),
                        "data" => {
                            data = Some(match data {
                                Some(d) => format!("{d}\n{value}"),
                                None => value.to_owned(),
                            })
                        }
                        "retry" | "event" => {}
                        _ => return Err(format!("unknown event field {field:?}")),
                    }
                }
                if id.is_none() && data.is_none() {
                    continue;
                }
                return Ok(Some(RxEv::Event { id, data }));
            }
            match self.state {
                RxState::Head => {
                    let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                        return Ok(None);
                    };
                    let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                    let text = std::str::from_utf8(&head).map_err(|e| e.to_string())?;
                    let mut lines = text.split("\r\n");
                    let status_line = lines.next().unwrap_or("");
                    let status: u16 = status_line
                        .strip_prefix("HTTP/1.1 ")
                        .and_then(|r| r.get(..3))
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
                    let mut headers = BTreeMap::new();
                    for l in lines.filter(|l| !l.is_empty()) {
                        let (n, v) = l
                            .split_once(':')
                            .ok_or_else(|| format!("bad header {l:?}"))?;
                        headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                    let chunked = headers
                        .get("transfer-encoding")
                        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
                    let sse = headers
                        .get("content-type")
                        .is_some_and(|v| v.starts_with("text/event-stream"));
                    if chunked != sse {
                        return Err(format!("chunked {chunked} but event stream {sse}"));
                    }
                    self.state = if chunked {
                        RxState::Size
                    } else {
                        let len = headers
                            .get("content-length")
                            .ok_or("no Content-Length")?
                            .parse()
                            .map_err(|_| "bad Content-Length")?;
                        RxState::Length(len)
                    };
                    return Ok(Some(RxEv::Head {
                        status,
                        sid: headers.get("mcp-session-id").cloned(),
                        sse,
                    }));
                }
                RxState::Length(n) => {
                    if self.buf.len() < n {
                        return Ok(None);
                    }
                    let body: Vec<u8> = self.buf.drain(..n).collect();
                    self.state = RxState::Head;
                    return Ok(Some(RxEv::Body(body)));
                }
                RxState::Size => {
                    let Some(nl) = find(&self.buf, b"\r\n") else {
                        return Ok(None);
                    };
                    let line: Vec<u8> = self.buf.drain(..nl + 2).collect();
                    let hex = std::str::from_utf8(&line[..nl]).map_err(|e| e.to_string())?;
                    let n = usize::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad chunk size {hex:?}"))?;
                    self.state = if n == 0 {
                        RxState::LastCrlf
                    } else {
                        RxState::Data(n)
                    };
                }
                RxState::Data(n) => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let take = n.min(self.buf.len());
                    self.sse.extend(self.buf.drain(..take));
                    self.state = if take == n {
                        RxState::DataEnd
                    } else {
                        RxState::Data(n - take)
                    };
                }
                RxState::DataEnd | RxState::LastCrlf => {
                    if self.buf.len() < 2 {
                        return Ok(None);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err("a chunk not followed by CRLF".into());
                    }
                    self.buf.drain(..2);
                    if let RxState::LastCrlf = self.state {
                        self.state = RxState::Head;
                        if !self.sse.is_empty() {
                            return Err("the event stream ended inside an event".into());
                        }
                        return Ok(Some(RxEv::End));
                    }
                    self.state = RxState::Size;
                }
            }
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}
