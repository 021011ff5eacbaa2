//! How the load generator reaches an MCP server: a [`Target`] opens sessions, each a
//! [`Transport`] that sends bytes and reads lines. The workloads only see these two, so the
//! direct-stdio lower bound and the relay over TCP run the very same code.
//!
//! Streamable HTTP is one more `Target` and `Transport` (POST a message, read replies from
//! the JSON body or the event stream of the response), and the legacy HTTP+SSE transport
//! another ([`Target::Sse`]: one long `GET /sse` stream, messages POSTed beside it). The line
//! and Streamable HTTP transports run over a plain TCP stream or over rustls on one
//! ([`Target::Tls`], [`Target::Https`]) with the same code, so the cost of TLS is the only
//! difference between the two.

use crate::machine::CpuSet;
use rustls::pki_types::ServerName;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One session with a server: newline-delimited JSON-RPC both ways.
pub trait Transport: Send {
    /// Writes `bytes` (one or more complete lines) at once.
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Reads the next line, newline included, into `line` (cleared first). End of stream is
    /// an error.
    fn recv_line(&mut self, line: &mut Vec<u8>) -> io::Result<()>;
}

/// Where sessions are opened.
#[derive(Clone, Debug)]
pub enum Target {
    /// A program of the load generator's own, over its stdin/stdout pipes: the server
    /// itself (the lower bound), or `mcp-relay --connect URL` (client mode, where the relay
    /// is the stdio server). `cpus`: where it runs (the server side's CPUs).
    Direct {
        program: PathBuf,
        args: Vec<String>,
        cpus: Option<CpuSet>,
    },
    /// The relay, raw TCP: one connection per session.
    Tcp { addr: SocketAddr },
    /// The relay, Streamable HTTP at `/mcp`: one keep-alive connection per session.
    Http { addr: SocketAddr },
    /// The relay, legacy HTTP+SSE (2024-11-05) at `/sse`: per session, one connection for the
    /// event stream and one keep-alive connection for the POSTs.
    Sse { addr: SocketAddr },
    /// The relay's `tls://` listener: one TLS connection per session, verified by `config`.
    Tls {
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    },
    /// The relay's `https://` listener: Streamable HTTP at `/mcp`, one keep-alive TLS
    /// connection per session, verified by `config`.
    Https {
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    },
}

impl Target {
    pub fn open(&self) -> io::Result<Box<dyn Transport>> {
        match self {
            Target::Direct {
                program,
                args,
                cpus,
            } => Ok(Box::new(StdioTransport::spawn(
                program,
                args,
                cpus.as_ref(),
            )?)),
            Target::Tcp { addr } => Ok(Box::new(LineTransport::new(tcp(*addr)?))),
            Target::Http { addr } => Ok(Box::new(HttpTransport::new(tcp(*addr)?, *addr))),
            Target::Sse { addr } => Ok(Box::new(SseTransport::open(
                tcp(*addr)?,
                tcp(*addr)?,
                *addr,
            )?)),
            Target::Tls { addr, config } => Ok(Box::new(LineTransport::new(tls(*addr, config)?))),
            Target::Https { addr, config } => {
                Ok(Box::new(HttpTransport::new(tls(*addr, config)?, *addr)))
            }
        }
    }
}

/// A connection to the relay, TCP_NODELAY, with time limits so that a stuck relay fails the
/// workload instead of hanging the run.
fn tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    Ok(stream)
}

/// A blocking TLS client over a connection to the relay, its certificate verified for the
/// address's IP. The handshake runs with the first write.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> io::Result<TlsStream> {
    let stream = tcp(addr)?;
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    Ok(rustls::StreamOwned::new(conn, stream))
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the stream")
}

fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    if r.read_until(b'\n', line)? == 0 || line.last() != Some(&b'\n') {
        return Err(eof());
    }
    Ok(())
}

const READ_BUFFER: usize = 256 * 1024;

/// A POST body up to this size is copied behind its head and sent with it in one write.
const SMALL_BODY: usize = 64 * 1024;

/// A server process of our own, over its pipes.
pub struct StdioTransport {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl StdioTransport {
    fn spawn(program: &PathBuf, args: &[String], cpus: Option<&CpuSet>) -> io::Result<Self> {
        // Plain spawn (posix_spawn, no pre_exec): the cheapest way to start a server, so that
        // the direct time to first response is a fair lower bound. The server is then moved
        // to the server side's CPUs; it has barely started by then.
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        if let Some(cpus) = cpus {
            let _ = cpus.apply(child.id() as libc::pid_t);
        }
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(eof)?;
        Ok(StdioTransport {
            child,
            stdin,
            stdout: BufReader::with_capacity(READ_BUFFER, stdout),
        })
    }
}

impl Transport for StdioTransport {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.stdin {
            Some(w) => w.write_all(bytes),
            None => Err(eof()),
        }
    }

    fn recv_line(&mut self, line: &mut Vec<u8>) -> io::Result<()> {
        read_line(&mut self.stdout, line)
    }
}

impl Drop for StdioTransport {
    /// Closes stdin (the server exits on end of file) and reaps it; kills it if it lingers.
    fn drop(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_micros(100)),
            }
        }
    }
}

/// A connection to the relay carrying newline-delimited JSON-RPC: TCP, or TLS over it.
pub struct LineTransport<S> {
    io: BufReader<S>,
}

impl<S: Read + Write> LineTransport<S> {
    fn new(stream: S) -> Self {
        LineTransport {
            io: BufReader::with_capacity(READ_BUFFER, stream),
        }
    }
}

impl<S: Read + Write + Send> Transport for LineTransport<S> {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        // Writes go past the read buffer, straight to the stream (for TLS, one record per
        // write, up to its size limit); flush is free on TCP.
        let w = self.io.get_mut();
        w.write_all(bytes)?;
        w.flush()
    }

    fn recv_line(&mut self, line: &mut Vec<u8>) -> io::Result<()> {
        read_line(&mut self.io, line)
    }
}

/// A Streamable HTTP session with the relay (`POST /mcp`, keep-alive): each message is one
/// POST; a reply is read from the JSON body or the event stream of its response. Requests
/// go one at a time on the connection, as HTTP/1.1 clients do. The connection is TCP, or TLS
/// over it.
pub struct HttpTransport<S: Read + Write> {
    io: BufReader<S>,
    host: String,
    session: Option<String>,
    /// Messages sent but not yet POSTed (one exchange at a time).
    queue: std::collections::VecDeque<Vec<u8>>,
    /// Messages received and not yet read.
    lines: std::collections::VecDeque<Vec<u8>>,
    request: Vec<u8>,
}

impl<S: Read + Write> HttpTransport<S> {
    fn new(stream: S, addr: SocketAddr) -> Self {
        HttpTransport {
            io: BufReader::with_capacity(READ_BUFFER, stream),
            host: addr.to_string(),
            session: None,
            queue: Default::default(),
            lines: Default::default(),
            request: Vec::new(),
        }
    }

    fn head(&mut self, method: &str, body_len: usize) {
        let r = &mut self.request;
        r.clear();
        r.extend_from_slice(method.as_bytes());
        r.extend_from_slice(b" /mcp HTTP/1.1\r\nHost: ");
        r.extend_from_slice(self.host.as_bytes());
        r.extend_from_slice(
            b"\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n",
        );
        if let Some(id) = &self.session {
            r.extend_from_slice(b"Mcp-Session-Id: ");
            r.extend_from_slice(id.as_bytes());
            r.extend_from_slice(b"\r\nMCP-Protocol-Version: 2025-06-18\r\n");
        }
        r.extend_from_slice(format!("Content-Length: {body_len}\r\n\r\n").as_bytes());
    }

    /// One POST and its whole response; the messages in it go to `lines`.
    fn exchange(&mut self, body: &[u8]) -> io::Result<()> {
        self.head("POST", body.len());
        // Writes go past the read buffer, straight to the stream.
        let w = self.io.get_mut();
        if body.len() <= SMALL_BODY {
            // One write, one segment (the socket has TCP_NODELAY; over TLS, one record): head
            // and body written apart would wake the server twice per call, as no real client
            // does.
            self.request.extend_from_slice(body);
            w.write_all(&self.request)?;
        } else {
            w.write_all(&self.request)?;
            w.write_all(body)?;
        }
        w.flush()?;
        let head = read_head(&mut self.io)?;
        match head.status {
            200 | 202 => {}
            s => return Err(io::Error::other(format!("HTTP {s} from the relay"))),
        }
        if let Some(id) = &head.session {
            self.session = Some(id.clone());
        }
        let body = read_body(&mut self.io, &head)?;
        if head.sse {
            for event in body.split(|b| *b == b'\n') {
                if let Some(data) = event.strip_prefix(b"data: ") {
                    if !data.is_empty() {
                        let mut line = data.to_vec();
                        line.push(b'\n');
                        self.lines.push_back(line);
                    }
                }
            }
        } else if !body.is_empty() {
            let mut line = body;
            line.push(b'\n');
            self.lines.push_back(line);
        }
        Ok(())
    }
}

/// A legacy HTTP+SSE session with the relay, as SDK clients of the 2024-11-05 transport hold
/// one: `GET /sse` opens the session's event stream, whose first event (`endpoint`) names the
/// URL to POST messages to; each message is one POST there (202 Accepted, on a keep-alive
/// connection of its own) and every server message arrives as an `event: message` on the
/// stream. Closing the stream ends the session.
pub struct SseTransport<S: Read + Write> {
    /// The event stream: the chunked body of the `GET /sse` response.
    stream: Chunked<BufReader<S>>,
    post: BufReader<S>,
    host: String,
    /// Where messages are POSTed (`/messages?sessionId=…`).
    endpoint: String,
    request: Vec<u8>,
    /// Field names and ignored lines of the event stream.
    scratch: Vec<u8>,
}

impl<S: Read + Write> SseTransport<S> {
    /// Opens the event stream on `stream` and reads the endpoint from it; `post` carries
    /// the POSTs.
    fn open(stream: S, post: S, addr: SocketAddr) -> io::Result<Self> {
        let host = addr.to_string();
        let mut io = BufReader::with_capacity(READ_BUFFER, stream);
        let get = format!("GET /sse HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
        let w = io.get_mut();
        w.write_all(get.as_bytes())?;
        w.flush()?;
        let head = read_head(&mut io)?;
        if head.status != 200 || !head.sse || !head.chunked {
            return Err(io::Error::other(format!(
                "GET /sse: HTTP {} (want 200 and a chunked event stream)",
                head.status
            )));
        }
        let mut t = SseTransport {
            stream: Chunked::new(io),
            post: BufReader::with_capacity(64 * 1024, post),
            host,
            endpoint: String::new(),
            request: Vec::new(),
            scratch: Vec::new(),
        };
        let mut data = Vec::new();
        if t.next_event(&mut data)? != "endpoint" {
            return Err(io::Error::other(
                "the event stream did not start with `event: endpoint`",
            ));
        }
        t.endpoint =
            String::from_utf8(data).map_err(|_| io::Error::other("the endpoint is not UTF-8"))?;
        Ok(t)
    }

    /// Reads the stream up to the end of the next event with data; returns its type
    /// (`message` when it names none), its data (lines joined by `\n`) in `data`. The data goes straight
    /// from the connection's buffer into `data`, so a 10 MiB message is copied once.
    fn next_event(&mut self, data: &mut Vec<u8>) -> io::Result<String> {
        data.clear();
        let mut kind = None;
        let mut has_data = false;
        loop {
            let first = *self.stream.fill_buf()?.first().ok_or_else(eof)?;
            if first == b'\n' || first == b'\r' {
                read_line(&mut self.stream, &mut self.scratch)?;
                if has_data {
                    return Ok(kind.unwrap_or_else(|| "message".to_owned()));
                }
                // An event without data is not dispatched (a keep-alive comment, say).
                kind = None;
                continue;
            }
            self.scratch.clear();
            self.stream.read_until(b':', &mut self.scratch)?;
            if self.scratch.last() != Some(&b':') || self.scratch.contains(&b'\n') {
                return Err(io::Error::other("a line of the event stream has no `:`"));
            }
            if self.stream.fill_buf()?.first() == Some(&b' ') {
                self.stream.consume(1);
            }
            match self.scratch.as_slice() {
                b"data:" => {
                    if has_data {
                        data.push(b'\n');
                    }
                    has_data = true;
                    if self.stream.read_until(b'\n', data)? == 0 || data.last() != Some(&b'\n') {
                        return Err(eof());
                    }
                    data.pop();
                    if data.last() == Some(&b'\r') {
                        data.pop();
                    }
                }
                b"event:" => {
                    read_line(&mut self.stream, &mut self.scratch)?;
                    kind = Some(String::from_utf8_lossy(self.scratch.trim_ascii()).into_owned());
                }
                // `id:`, `retry:`, and comments (`: keep-alive`).
                _ => read_line(&mut self.stream, &mut self.scratch)?,
            }
        }
    }

    /// POSTs one message to the endpoint and reads the 202.
    fn post(&mut self, body: &[u8]) -> io::Result<()> {
        let r = &mut self.request;
        r.clear();
        r.extend_from_slice(b"POST ");
        r.extend_from_slice(self.endpoint.as_bytes());
        r.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        r.extend_from_slice(self.host.as_bytes());
        r.extend_from_slice(b"\r\nContent-Type: application/json\r\n");
        r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        let w = self.post.get_mut();
        if body.len() <= SMALL_BODY {
            // One write, one segment, as for Streamable HTTP.
            r.extend_from_slice(body);
            w.write_all(r)?;
        } else {
            w.write_all(r)?;
            w.write_all(body)?;
        }
        w.flush()?;
        let head = read_head(&mut self.post)?;
        read_body(&mut self.post, &head)?;
        match head.status {
            200 | 202 => Ok(()),
            s => Err(io::Error::other(format!("HTTP {s} from the relay"))),
        }
    }
}

impl<S: Read + Write + Send> Transport for SseTransport<S> {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            self.post(line)?;
        }
        Ok(())
    }

    fn recv_line(&mut self, line: &mut Vec<u8>) -> io::Result<()> {
        loop {
            if self.next_event(line)? == "message" {
                line.push(b'\n');
                return Ok(());
            }
        }
    }
}

/// Reads a response's status line and headers.
fn read_head(r: &mut impl BufRead) -> io::Result<HttpHead> {
    let mut line = Vec::new();
    read_line(r, &mut line)?;
    let status = std::str::from_utf8(&line)
        .ok()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("not an HTTP response"))?;
    let mut head = HttpHead {
        status,
        ..HttpHead::default()
    };
    loop {
        read_line(r, &mut line)?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if text.is_empty() {
            return Ok(head);
        }
        let Some((name, value)) = text.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => head.length = value.parse().ok(),
            "transfer-encoding" => head.chunked = value.eq_ignore_ascii_case("chunked"),
            "content-type" => head.sse = value.starts_with("text/event-stream"),
            "mcp-session-id" => head.session = Some(value.to_owned()),
            _ => {}
        }
    }
}

/// Reads a whole response body (chunked or of a known length; none otherwise).
fn read_body(r: &mut impl BufRead, head: &HttpHead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.chunked {
        Chunked::new(r).read_to_end(&mut body)?;
    } else if let Some(n) = head.length {
        // Room for the newline the caller adds, so that it does not copy the body again.
        body.reserve_exact(n + 1);
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    }
    Ok(body)
}

/// A chunked body read in place from the connection's buffer: `fill_buf` hands out the
/// rest of the current chunk, so lines and bodies are read without a second buffer. Ends
/// (reads 0) at the last chunk.
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: usize,
    /// A chunk was read to its end: its CRLF comes before the next size line.
    after_chunk: bool,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Self {
        Chunked {
            inner,
            left: 0,
            after_chunk: false,
            done: false,
        }
    }
}

impl<R: BufRead> BufRead for Chunked<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.left == 0 && !self.done {
            let mut line = Vec::new();
            if self.after_chunk {
                read_line(&mut self.inner, &mut line)?;
            }
            read_line(&mut self.inner, &mut line)?;
            let text = String::from_utf8_lossy(&line);
            let size = text.trim().split(';').next().unwrap_or("");
            self.left =
                usize::from_str_radix(size, 16).map_err(|_| io::Error::other("bad chunk size"))?;
            self.after_chunk = true;
            if self.left == 0 {
                // The trailer section: lines up to an empty one.
                loop {
                    read_line(&mut self.inner, &mut line)?;
                    if line.trim_ascii().is_empty() {
                        break;
                    }
                }
                self.done = true;
            }
        }
        if self.done {
            return Ok(&[]);
        }
        let left = self.left;
        let buf = self.inner.fill_buf()?;
        if buf.is_empty() {
            return Err(eof());
        }
        Ok(&buf[..buf.len().min(left)])
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.left -= n.min(self.left);
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[derive(Default)]
struct HttpHead {
    status: u16,
    length: Option<usize>,
    chunked: bool,
    sse: bool,
    session: Option<String>,
}

impl<S: Read + Write + Send> Transport for HttpTransport<S> {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        for line in lines {
            if self.queue.is_empty() && self.lines.is_empty() {
                // Nothing waits: this exchange can happen now, without a copy of the message.
                self.exchange(line)?;
            } else {
                self.queue.push_back(line.to_vec());
            }
        }
        Ok(())
    }

    fn recv_line(&mut self, line: &mut Vec<u8>) -> io::Result<()> {
        loop {
            if let Some(l) = self.lines.pop_front() {
                *line = l;
                return Ok(());
            }
            let Some(body) = self.queue.pop_front() else {
                return Err(eof());
            };
            self.exchange(&body)?;
        }
    }
}

impl<S: Read + Write> Drop for HttpTransport<S> {
    /// Ends the session (DELETE), so that its server goes away with it.
    fn drop(&mut self) {
        if self.session.is_some() {
            self.head("DELETE", 0);
            let w = self.io.get_mut();
            if w.write_all(&self.request).and_then(|()| w.flush()).is_ok() {
                if let Ok(head) = read_head(&mut self.io) {
                    let _ = read_body(&mut self.io, &head);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A connection whose peer's bytes are fixed in advance; what is written is kept.
    struct Scripted {
        input: Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Scripted {
        fn new(input: &[u8]) -> Self {
            Scripted {
                input: Cursor::new(input.to_vec()),
                written: Vec::new(),
            }
        }
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // A few bytes at a time, so that lines and chunks arrive in pieces.
            let n = buf.len().min(7);
            self.input.read(&mut buf[..n])
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn chunked(pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn chunked_body_across_chunks() {
        let mut wire = chunked(&[b"hello ", b"wor", b"ld\n"]);
        wire.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\nnext");
        let mut r = BufReader::new(Scripted::new(&wire));
        let head = HttpHead {
            status: 200,
            chunked: true,
            ..HttpHead::default()
        };
        assert_eq!(read_body(&mut r, &head).unwrap(), b"hello world\n");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"next");
    }

    #[test]
    fn legacy_sse_session() {
        let mut stream = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
            Transfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        stream.extend(chunked(&[
            b"event: endpoint\ndata: /messages?sessionId=abc\n\n",
            b": keep-alive\n\nevent: message\nda",
            b"ta: {\"id\":1,\"result\":{}}\n\n",
            b"event: message\r\ndata: {\"id\":2,\r\ndata: \"result\":{}}\r\n\r\n",
        ]));
        let accepted = b"HTTP/1.1 202 Accepted\r\nContent-Length: 8\r\n\r\nAccepted";
        let post = Scripted::new(&[&accepted[..], &accepted[..]].concat());
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let mut t = SseTransport::open(Scripted::new(&stream), post, addr).unwrap();
        assert_eq!(t.endpoint, "/messages?sessionId=abc");
        assert!(t
            .stream
            .inner
            .get_ref()
            .written
            .starts_with(b"GET /sse HTTP/1.1\r\n"));

        t.send(b"{\"id\":1}\n{\"id\":2}\n").unwrap();
        let posted = String::from_utf8(t.post.get_ref().written.clone()).unwrap();
        assert_eq!(
            posted
                .matches("POST /messages?sessionId=abc HTTP/1.1\r\n")
                .count(),
            2
        );
        assert!(posted.ends_with("Content-Length: 8\r\n\r\n{\"id\":2}"));

        let mut line = Vec::new();
        t.recv_line(&mut line).unwrap();
        assert_eq!(line, b"{\"id\":1,\"result\":{}}\n");
        t.recv_line(&mut line).unwrap();
        assert_eq!(line, b"{\"id\":2,\n\"result\":{}}\n");
        assert_eq!(
            t.recv_line(&mut line).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
