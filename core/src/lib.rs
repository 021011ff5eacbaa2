//! The sans-IO core of mcp-relay.
//!
//! This crate decides everything the relay does and performs none of it. It never touches a
//! socket, a process, a thread, a file, a clock or the OS's randomness: bytes, process events
//! and the current time come in as arguments, and what should happen next comes out as values.
//! A driver (the mio runtime in production, the simulation harness in tests, or your own
//! program) owns the real resources and moves facts in and effects out.
//!
//! # What is in scope, and what is the driver's
//!
//! In the core: framing newline-delimited JSON-RPC ([`LineFramer`]) and classifying messages
//! ([`message`]); one session per TCP connection or HTTP session, with its server process
//! started, restarted after a failure (replaying `initialize`), probed for liveness and
//! stopped; the HTTP/1.1 server for Streamable HTTP and HTTP+SSE, with its origin, host and
//! bearer-token checks; client mode (a remote server reached over Streamable HTTP, HTTP+SSE or
//! TCP through connections the core asks the driver to open, with the era bridge for
//! 2026-07-28 remotes); flow control (every queue bounded by [`Config`]); the prespawn pool;
//! every deadline, as an [`Instant`](std::time::Instant) the driver is told about.
//!
//! The driver's: sockets (listening, accepting, connecting and resolving names, reading,
//! writing), the relay's own stdin and stdout in client mode, processes (spawning the
//! command, its pipes, reaping, signals), threads and waiting for events, the clock (it passes
//! `now` into every call), randomness (it fills [`Config::seed`] from the OS, or HTTP session
//! ids are predictable), TLS (a driver may terminate it and hand the core plaintext), logging
//! output (the core logs through the `log` crate), and configuration from flags or files.
//!
//! # The contract
//!
//! In the style of quinn-proto and str0m:
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
//!
//! `examples/minimal_driver.rs` drives the core with a client, a server and a clock faked in
//! memory (`cargo run -p mcp-relay-core --example minimal_driver`); the crate
//! `mcp-relay-runtime` is the real driver, on mio.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
mod child;
mod client;
mod config;
mod conn;
mod deadlines;
mod framing;
mod http;
pub mod message;
mod msglog;
mod outbound;
mod pool;
mod relay;
mod remote;
mod remote_config;
mod report;
mod requests;
mod served;
mod server;
mod session;
pub mod stream_check;
mod supervisor;
mod timer;

pub use config::{Config, ConfigError, HttpConfig, NamedServer, Stats};

/// The log targets an operator filters on by name (`RUST_LOG=info,mcp_relay::access=off`):
/// message lines (`--log-messages`) and the HTTP access log.
pub mod log_targets {
    pub use crate::http::access::TARGET as ACCESS;
    pub use crate::msglog::TARGET as MESSAGES;
}
pub use framing::{held_back, Flow, Frame, LineFramer};
pub use http::SESSION_ERA_VERSIONS;
pub use relay::Relay;
pub use remote_config::{Balance, RemoteConfig, RemoteTransport, RemoteUrl, Scheme};
pub use supervisor::RestartPolicy;
pub use timer::Timer;

use std::fmt;

/// A client connection, named by the driver when it accepts the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// A child process, named by the core when it decides to spawn one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChildId(pub u64);

/// A configured server: `ServerId(0)` is the one server of a plain configuration, or the
/// first of [`Config::servers`]; `ServerId(i)` is `Config::servers[i]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId(pub u32);

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server#{}", self.0)
    }
}

/// A connection the relay opens to a remote server (client mode), named by the core: the
/// server side it belongs to (a [`ChildId`] names every server incarnation, process or
/// remote) and its number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UpId {
    /// The server side (one incarnation) the connection belongs to.
    pub server: ChildId,
    /// Its number among that server side's connections.
    pub n: u32,
}

impl fmt::Display for UpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "up#{}.{}", self.server.0, self.n)
    }
}

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
    /// A client connection.
    Conn(ConnId),
    /// A child process: its stdin to write, its stdout to read.
    Child(ChildId),
    /// A connection the relay opened to a remote server ([`Output::Connect`]).
    Upstream(UpId),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Conn(c) => c.fmt(f),
            Endpoint::Child(c) => c.fmt(f),
            Endpoint::Upstream(u) => u.fmt(f),
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
    /// It exited with status 0.
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
        /// The driver's name for it, never used before.
        conn: ConnId,
        /// The address it was accepted on (HTTP checks `Host` against it).
        local: core::net::SocketAddr,
        /// The client's address, for logs.
        peer: core::net::SocketAddr,
        /// What the listener serves.
        transport: Transport,
        /// The configured server a TCP listener serves (`None`: the default one). HTTP
        /// listeners route by path and ignore it.
        server: Option<ServerId>,
    },
    /// Bytes read from a connection or from a child's stdout.
    Data {
        /// Where they were read.
        from: Endpoint,
        /// The bytes, at most [`Config::max_read`] of them.
        data: &'a [u8],
    },
    /// The connection or the child's stdout reached end of file.
    Eof {
        /// What reached its end.
        from: Endpoint,
    },
    /// `n` more bytes of what [`Output::Send`] handed out reached the endpoint.
    Written {
        /// Where they were written.
        to: Endpoint,
        /// How many bytes, counted from the oldest not yet reported.
        n: usize,
    },
    /// The endpoint failed for good (reset connection, broken pipe): nothing more can be written
    /// to it, and for a connection nothing more will be read either.
    Broken {
        /// What failed.
        endpoint: Endpoint,
        /// The error, for logs.
        reason: &'a str,
    },
    /// Bytes read from a child's stderr.
    Stderr {
        /// Whose stderr.
        child: ChildId,
        /// The bytes; the core logs them line by line.
        data: &'a [u8],
    },
    /// The child's stderr reached end of file.
    StderrEof {
        /// Whose stderr.
        child: ChildId,
    },
    /// The child asked for by [`Output::Spawn`] is running.
    Spawned {
        /// The child named in the `Spawn`.
        child: ChildId,
        /// Its process id, for logs.
        pid: u32,
    },
    /// The child asked for by [`Output::Spawn`] could not be started.
    SpawnFailed {
        /// The child named in the `Spawn`.
        child: ChildId,
        /// Why, for logs and for the clients told that no server is available.
        error: &'a str,
    },
    /// The child exited and has been reaped.
    Exited {
        /// Which child.
        child: ChildId,
        /// How it ended.
        status: ExitStatus,
    },
    /// The relay's own stdin and stdout, as one client connection named `conn` (client mode:
    /// a local client started the relay as its server). It speaks newline-delimited
    /// JSON-RPC like a TCP client; when its session ends, the relay shuts down.
    Attached {
        /// The driver's name for it, never used before.
        conn: ConnId,
    },
    /// The connection asked for by [`Output::Connect`] is established.
    Connected {
        /// The connection named in the `Connect`.
        conn: UpId,
    },
    /// The connection asked for by [`Output::Connect`] could not be established (the name
    /// did not resolve, it was refused, ...). The core expects nothing more about it.
    ConnectFailed {
        /// The connection named in the `Connect`.
        conn: UpId,
        /// Why, for logs and for the clients told that the remote cannot be reached.
        error: &'a str,
    },
    /// The operator asked the relay to stop (Ctrl-C, SIGTERM). The first request drains
    /// gracefully; a second one stops at once.
    Shutdown,
    /// The answer to [`Output::RemoteLogin`]: the bearer token every remote server sends
    /// from now on (the requests held for it are sent again with it), or why there is none
    /// (they are answered with that error). Never logged.
    RemoteToken {
        /// The token, or the reason the login failed.
        token: Result<&'a str, &'a str>,
    },
    /// How many listeners cannot accept connections now (the process is out of descriptors):
    /// the driver says so when the number changes, 0 once all accept again. `/healthz`
    /// reports the relay degraded meanwhile.
    AcceptTrouble {
        /// Listeners that cannot accept.
        listeners: usize,
    },
    /// The configured servers are now these (`--config` was read again). A server whose id
    /// is kept is unchanged: its sessions go on. A new id is a new server (or a new
    /// definition of one, under the same name): new sessions on its routes get it. An id left
    /// out is retired: it takes no new session, its prespawned children stop, and its
    /// sessions go on until they end. Ids are never reused; a command's is
    /// `RuntimeConfig`'s business (the driver learns it with the same list).
    Reconfigure {
        /// Every server from now on, with its id.
        servers: &'a [(ServerId, NamedServer)],
    },
}

/// An effect the driver must perform, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Start the command of configured server `server` as child `child`, in a process group
    /// of its own.
    Spawn {
        /// The name the core gives it; every later fact about it carries this name.
        child: ChildId,
        /// Whose command: `ServerId(0)` in a configuration with one server.
        server: ServerId,
    },
    /// Append these bytes to what is being written to the endpoint (a socket, or a child's
    /// stdin). The driver reports progress with [`Input::Written`].
    Send {
        /// Where to write.
        to: Endpoint,
        /// The bytes, to be written after everything sent there before.
        data: Vec<u8>,
    },
    /// Everything sent has been written: close the endpoint. A connection is closed entirely
    /// (reading stops too); for a child only its stdin is closed, and its stdout is still read
    /// until end of file.
    Close {
        /// What to close.
        endpoint: Endpoint,
    },
    /// Stop reading from the endpoint until [`Output::Resume`] (backpressure).
    Pause {
        /// What to stop reading.
        endpoint: Endpoint,
    },
    /// Read from the endpoint again; bytes may already be waiting.
    Resume {
        /// What to read again.
        endpoint: Endpoint,
    },
    /// Open a TCP connection to `host:port` (a name is resolved by the driver, off its
    /// loop), and say how it went with [`Input::Connected`] or [`Input::ConnectFailed`].
    /// Bytes sent to it meanwhile wait until it is established. [`Output::Close`] on a
    /// connection still being established abandons it.
    Connect {
        /// The core's name for the connection.
        conn: UpId,
        /// A host name or an IP address (IPv6 without brackets).
        host: String,
        /// The port.
        port: u16,
        /// Speak TLS over it (an `https://` remote), verifying the certificate for `host`;
        /// `Input::Connected` means the handshake is done too, and a failed handshake is an
        /// `Input::ConnectFailed` (nothing the core sent has reached the remote).
        tls: bool,
    },
    /// Send the signal to the child's process group.
    Signal {
        /// Whose process group.
        child: ChildId,
        /// Which signal.
        signal: Signal,
    },
    /// The relay drains: close every raw TCP listener (a connection there would be a new
    /// session). HTTP listeners stay open until the driver stops, so that the sessions being
    /// drained still get their clients' requests (a balancer keeps sending them here) and a
    /// health check sees `/healthz` answer 503; the core refuses new HTTP sessions itself.
    StopAccepting,
    /// A remote server (client mode, [`RemoteConfig::login`]) refused a request for want of a
    /// token, or of a token with enough scope: log in or refresh, and answer with
    /// [`Input::RemoteToken`]. Requests wait meanwhile; asked once until answered.
    RemoteLogin {
        /// The remote's status: 401, or 403 (`insufficient_scope`).
        status: u16,
        /// Its `WWW-Authenticate` header, if any.
        challenge: Option<String>,
        /// Which token was refused: how many `Input::RemoteToken`s had come before it was
        /// sent (0: the configured one). A driver that has given a newer token since can
        /// answer with that one, without a login.
        generation: u32,
    },
    /// The child asked for with [`Output::Spawn`] is no longer wanted (its session ended
    /// before it started). If it has not been started, the driver does not start it; if it
    /// has (the start raced with this), the driver kills its process group and reaps it.
    /// Either way the core expects no input about it any more: a [`Output::Release`] follows.
    Cancel {
        /// The child whose start is cancelled.
        child: ChildId,
    },
    /// The core is done with this child (reaped, or given up on): drop whatever of it the
    /// driver still holds, such as a stdout pipe a grandchild keeps open.
    Release {
        /// The child to forget.
        child: ChildId,
    },
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
