//! How the load generator reaches an MCP server: a [`Target`] opens sessions, each a
//! [`Transport`] that sends bytes and reads lines. The workloads only see these two, so the
//! direct-stdio lower bound and the relay over TCP run the very same code.
//!
//! Streamable HTTP and legacy SSE are planned: each will be one more `Target` variant and one
//! more `Transport` (POST a message, read replies from the response body or the event stream
//! as lines), and every workload then measures it unchanged.

use crate::machine::CpuSet;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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
    /// The lower bound: the load generator spawns the server itself and talks over its
    /// stdin/stdout pipes. `cpus`: where the server runs (the server side's CPUs).
    Direct {
        program: PathBuf,
        args: Vec<String>,
        cpus: Option<CpuSet>,
    },
    /// The relay, raw TCP: one connection per session.
    Tcp { addr: SocketAddr },
    // Planned: `StreamableHttp { url }` and `LegacySse { url }`, with their transports.
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
            Target::Tcp { addr } => Ok(Box::new(TcpTransport::connect(*addr)?)),
        }
    }
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

/// A TCP connection to the relay.
pub struct TcpTransport {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl TcpTransport {
    fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        // A stuck relay fails the workload instead of hanging the run.
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let reader = BufReader::with_capacity(READ_BUFFER, stream.try_clone()?);
        Ok(TcpTransport {
            writer: stream,
            reader,
        })
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    fn recv_line(&mut self, line: &mut Vec<u8>) -> io::Result<()> {
        read_line(&mut self.reader, line)
    }
}
