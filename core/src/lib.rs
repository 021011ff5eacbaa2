//! The sans-IO core of mcp-relay.
//!
//! This crate decides everything the relay does and performs none of it. It never touches a
//! socket, a process, a thread, a file, a clock or the OS's randomness: bytes, process events
//! and the current time come in as arguments, and what should happen next comes out as values.
//! A driver (the mio runtime in production, the simulation harness in tests) owns the real
//! resources and moves facts in and effects out.
//!
//! The contract, in the style of quinn-proto and str0m:
//!
//! * [`Relay::handle_input`] tells the core a fact from the outside (bytes read, bytes written,
//!   a child spawned or exited, a shutdown request). [`Relay::handle_timeout`] tells it that
//!   time has passed; calling it early or twice is harmless.
//! * After every `handle_*` call the driver drains [`Relay::poll_output`] until it returns
//!   `None`, and performs each [`Output`] in order.
//! * [`Relay::poll_timeout`] says when the core next wants `handle_timeout`; it never returns a
//!   deadline that has already been handled.
//!
//! Ids are opaque and never reused: the driver names connections (it accepts them), the core
//! names children (it decides to spawn them).

#![forbid(unsafe_code)]

mod child;
mod client;
mod framing;
mod http;
pub mod message;
mod outbound;
mod pool;
mod relay;
mod session;
mod supervisor;

pub use framing::{Flow, Frame, LineFramer};
pub use http::{HttpConfig, SESSION_ERA_VERSIONS};
pub use relay::{Config, Relay, Stats};
pub use supervisor::RestartPolicy;

use std::fmt;

/// A client connection, named by the driver when it accepts the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// A child process, named by the core when it decides to spawn one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChildId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "child#{}", self.0)
    }
}

/// One end of a byte stream the driver owns.
///
/// For a connection, reads and writes both go to the socket. For a child, writes go to its
/// stdin and reads come from its stdout (stderr has inputs of its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    Conn(ConnId),
    Child(ChildId),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Conn(c) => c.fmt(f),
            Endpoint::Child(c) => c.fmt(f),
        }
    }
}

/// How a child process ended, as the driver observed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this status code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exited with status {c}"),
            ExitStatus::Signal(s) => write!(f, "was killed by signal {s}"),
        }
    }
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Newline-delimited JSON-RPC; one session per connection.
    Tcp,
    /// HTTP/1.1: Streamable HTTP at `/mcp`, HTTP+SSE at `/sse`.
    Http,
}

/// A signal the core asks the driver to send to a child's whole process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: please stop.
    Term,
    /// SIGKILL: stop now.
    Kill,
}

/// A fact from the outside world.
///
/// Inputs borrow their bytes: the core copies what it keeps.
#[derive(Debug)]
pub enum Input<'a> {
    /// A listener accepted a connection, which the driver named `conn`.
    Accepted {
        conn: ConnId,
        local: core::net::SocketAddr,
        peer: core::net::SocketAddr,
        /// What the listener serves.
        transport: Transport,
    },
    /// Bytes read from a connection or from a child's stdout.
    Data { from: Endpoint, data: &'a [u8] },
    /// The connection or the child's stdout reached end of file.
    Eof { from: Endpoint },
    /// `n` more bytes of what [`Output::Send`] handed out reached the endpoint.
    Written { to: Endpoint, n: usize },
    /// The endpoint failed for good (reset connection, broken pipe): nothing more can be written
    /// to it, and for a connection nothing more will be read either.
    Broken { endpoint: Endpoint, reason: &'a str },
    /// Bytes read from a child's stderr.
    Stderr { child: ChildId, data: &'a [u8] },
    /// The child's stderr reached end of file.
    StderrEof { child: ChildId },
    /// The child asked for by [`Output::Spawn`] is running.
    Spawned { child: ChildId, pid: u32 },
    /// The child asked for by [`Output::Spawn`] could not be started.
    SpawnFailed { child: ChildId, error: &'a str },
    /// The child exited and has been reaped.
    Exited { child: ChildId, status: ExitStatus },
    /// The operator asked the relay to stop (Ctrl-C, SIGTERM). The first request drains
    /// gracefully; a second one stops at once.
    Shutdown,
}

/// An effect the driver must perform, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Start the configured server command as child `child`, in a process group of its own.
    Spawn { child: ChildId },
    /// Append these bytes to what is being written to the endpoint (a socket, or a child's
    /// stdin). The driver reports progress with [`Input::Written`].
    Send { to: Endpoint, data: Vec<u8> },
    /// Everything sent has been written: close the endpoint. A connection is closed entirely
    /// (reading stops too); for a child only its stdin is closed, and its stdout is still read
    /// until end of file.
    Close { endpoint: Endpoint },
    /// Stop reading from the endpoint until [`Output::Resume`] (backpressure).
    Pause { endpoint: Endpoint },
    /// Read from the endpoint again; bytes may already be waiting.
    Resume { endpoint: Endpoint },
    /// Send the signal to the child's process group.
    Signal { child: ChildId, signal: Signal },
    /// Close every listener: no new connections.
    StopAccepting,
    /// The core is done with this child (reaped, or given up on): drop whatever of it the
    /// driver still holds, such as a stdout pipe a grandchild keeps open.
    Release { child: ChildId },
}

/// Thin wrappers that let the fuzz targets in `tests/fuzz` reach the HTTP request parser,
/// which is otherwise private. **Not API**: hidden from the docs, unstable, and for nothing but
/// the fuzz targets.
#[doc(hidden)]
pub mod fuzzing {
    use crate::http::wire;

    /// Most bytes a request head may have.
    pub const MAX_HEAD: usize = wire::MAX_HEAD;

    /// A parsed request head, flattened.
    #[derive(Debug)]
    pub enum Head {
        Partial,
        /// Refused with this status.
        Error(u16),
        Complete {
            /// Bytes the head took.
            len: usize,
            method: String,
            path: String,
            query: String,
            /// Lower-cased names, trimmed values.
            headers: Vec<(String, String)>,
            /// The body's framing, or the status it is refused with.
            framing: Result<Framing, u16>,
        },
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Framing {
        Length(usize),
        Chunked,
    }

    pub fn parse_head(buf: &[u8]) -> Head {
        match wire::parse_head(buf) {
            wire::HeadParse::Partial => Head::Partial,
            wire::HeadParse::Error(status, _) => Head::Error(status),
            wire::HeadParse::Complete(head, len) => Head::Complete {
                len,
                framing: match wire::body_kind(&head) {
                    Ok(wire::BodyKind::Length(n)) => Ok(Framing::Length(n)),
                    Ok(wire::BodyKind::Chunked) => Ok(Framing::Chunked),
                    Err((status, _)) => Err(status),
                },
                method: head.method,
                path: head.path,
                query: head.query,
                headers: head.headers,
            },
        }
    }

    /// The incremental chunked-body decoder.
    #[derive(Debug, Default)]
    pub struct Dechunk(wire::Dechunk);

    #[derive(Debug, PartialEq, Eq)]
    pub enum Fed {
        /// Consumed this many bytes; more are needed.
        More(usize),
        /// The body ended after this many bytes.
        Done(usize),
        Error,
    }

    impl Dechunk {
        pub fn feed(&mut self, buf: &[u8], body: &mut Vec<u8>) -> Fed {
            match self.0.feed(buf, body) {
                wire::Dechunked::More(n) => Fed::More(n),
                wire::Dechunked::Done(n) => Fed::Done(n),
                wire::Dechunked::Error => Fed::Error,
            }
        }
    }
}
