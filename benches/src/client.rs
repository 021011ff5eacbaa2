//! The MCP client side of the load generator: pre-serialised requests and replies matched by
//! id, over any [`Transport`].

use crate::transport::{Target, Transport};
use std::io;

pub const INITIALIZE: &[u8] = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcp-relay-benches","version":"0"}}}
"#;
pub const INITIALIZED: &[u8] = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n";

/// A `tools/call` of the demo server's `echo` tool with a fixed message, serialised once:
/// the id goes last, so a new id rewrites only the tail and never copies the payload.
pub struct Echo {
    buf: Vec<u8>,
    prefix: usize,
    payload: usize,
}

impl Echo {
    /// An echo request whose message is `payload` bytes of ASCII letters.
    pub fn new(payload: usize) -> Self {
        let head = br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","arguments":{"message":""#;
        let tail = br#""}},"id":"#;
        let mut buf = Vec::with_capacity(head.len() + payload + tail.len() + 24);
        buf.extend_from_slice(head);
        buf.extend((0..payload).map(|i| b'a' + (i % 26) as u8));
        buf.extend_from_slice(tail);
        let prefix = buf.len();
        Echo {
            buf,
            prefix,
            payload,
        }
    }

    pub fn payload(&self) -> usize {
        self.payload
    }

    /// The request line (newline included) with this id.
    pub fn with_id(&mut self, id: u64) -> &[u8] {
        self.buf.truncate(self.prefix);
        let mut digits = [0u8; 20];
        let mut n = id;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.buf.extend_from_slice(&digits[i..]);
        self.buf.extend_from_slice(b"}\n");
        &self.buf
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What a line from the server is.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// A response with a numeric id; `ok` unless it carries an error.
    Response { id: u64, ok: bool },
    /// Anything without an id (notifications, which the workloads ignore).
    Other,
}

/// Classifies a line by looking at its head only (the demo server writes `id` first, then
/// `jsonrpc`, then `result` or `error`), so a 10 MiB reply costs nothing to match.
pub fn parse_reply(line: &[u8]) -> Reply {
    let head = &line[..line.len().min(160)];
    let at = find(head, b"\"id\":").or_else(|| find(line, b"\"id\":"));
    let Some(at) = at else {
        return Reply::Other;
    };
    let digits = line[at + 5..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit());
    let mut id = 0u64;
    let mut any = false;
    for d in digits {
        any = true;
        id = id.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
    }
    if !any {
        return Reply::Other;
    }
    let ok = match (find(head, b"\"result\":"), find(head, b"\"error\":")) {
        (Some(_), _) => true,
        (None, Some(_)) => false,
        (None, None) => find(line, b"\"error\":{").is_none(),
    };
    Reply::Response { id, ok }
}

/// An open, initialized MCP session.
pub struct Session {
    t: Box<dyn Transport>,
    line: Vec<u8>,
}

impl Session {
    /// Opens a session and runs the MCP handshake (`initialize`, then `initialized`).
    pub fn open(target: &Target) -> io::Result<Session> {
        let mut s = Session::raw(target)?;
        s.initialize()?;
        Ok(s)
    }

    /// Opens a session without the handshake.
    pub fn raw(target: &Target) -> io::Result<Session> {
        Ok(Session {
            t: target.open()?,
            line: Vec::with_capacity(64 * 1024),
        })
    }

    pub fn initialize(&mut self) -> io::Result<()> {
        self.t.send(INITIALIZE)?;
        self.expect(0)?;
        self.t.send(INITIALIZED)
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.t.send(bytes)
    }

    /// Reads lines until a response; returns its id and the line's length. An error
    /// response fails.
    pub fn recv_response(&mut self) -> io::Result<(u64, usize)> {
        loop {
            self.t.recv_line(&mut self.line)?;
            match parse_reply(&self.line) {
                Reply::Other => continue,
                Reply::Response { id, ok: true } => return Ok((id, self.line.len())),
                Reply::Response { id, ok: false } => {
                    let shown = &self.line[..self.line.len().min(300)];
                    return Err(io::Error::other(format!(
                        "request {id} failed: {}",
                        String::from_utf8_lossy(shown).trim_end()
                    )));
                }
            }
        }
    }

    /// Reads the response to `id` (one request in flight); returns its length.
    pub fn expect(&mut self, id: u64) -> io::Result<usize> {
        let (got, len) = self.recv_response()?;
        if got != id {
            return Err(io::Error::other(format!(
                "expected the response to {id}, got {got}"
            )));
        }
        Ok(len)
    }

    /// One echo round trip; checks the reply carries the whole payload.
    pub fn call(&mut self, echo: &mut Echo, id: u64) -> io::Result<()> {
        self.t.send(echo.with_id(id))?;
        let len = self.expect(id)?;
        if len < echo.payload() {
            return Err(io::Error::other(format!(
                "the reply to {id} has {len} bytes, less than the {}-byte payload",
                echo.payload()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_ids_and_replies() {
        let mut e = Echo::new(3);
        assert_eq!(
            e.with_id(0),
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","arguments":{"message":"abc"}},"id":0}
"#
        );
        assert!(e.with_id(12345).ends_with(b",\"id\":12345}\n"));
        assert_eq!(
            parse_reply(br#"{"id":17,"jsonrpc":"2.0","result":{}}"#),
            Reply::Response { id: 17, ok: true }
        );
        assert_eq!(
            parse_reply(br#"{"jsonrpc":"2.0","id":3,"error":{"code":-1}}"#),
            Reply::Response { id: 3, ok: false }
        );
        assert_eq!(
            parse_reply(br#"{"jsonrpc":"2.0","method":"notifications/message"}"#),
            Reply::Other
        );
    }
}
