//! How the load generator reaches an MCP server: a [`Target`] opens sessions, each a
//! [`Transport`] that sends bytes and reads lines. The workloads only see these two, so the
//! direct-stdio lower bound and the relay over TCP run the very same code.
//!
//! Streamable HTTP is one more `Target` and `Transport` (POST a message, read replies from
//! the JSON body or the event stream of the response); legacy SSE would be another. Both run
//! over a plain TCP stream or over rustls on one ([`Target::Tls`], [`Target::Https`]) with the
//! same code, so the cost of TLS is the only difference between the two.

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
        let head = self.read_head()?;
        match head.status {
            200 | 202 => {}
            s => return Err(io::Error::other(format!("HTTP {s} from the relay"))),
        }
        if let Some(id) = &head.session {
            self.session = Some(id.clone());
        }
        let body = self.read_body(&head)?;
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

    fn read_head(&mut self) -> io::Result<HttpHead> {
        let mut line = Vec::new();
        read_line(&mut self.io, &mut line)?;
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
            read_line(&mut self.io, &mut line)?;
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

    fn read_body(&mut self, head: &HttpHead) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        if head.chunked {
            let mut line = Vec::new();
            loop {
                read_line(&mut self.io, &mut line)?;
                let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                if size == 0 {
                    read_line(&mut self.io, &mut line)?;
                    return Ok(body);
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.io.read_exact(&mut body[start..])?;
                read_line(&mut self.io, &mut line)?;
            }
        }
        if let Some(n) = head.length {
            // Room for the newline the caller adds, so that it does not copy the body again.
            body.reserve_exact(n + 1);
            body.resize(n, 0);
            self.io.read_exact(&mut body)?;
        }
        Ok(body)
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
                if let Ok(head) = self.read_head() {
                    let _ = self.read_body(&head);
                }
            }
        }
    }
}
