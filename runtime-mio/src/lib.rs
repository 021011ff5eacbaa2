//! The mio driver of mcp-relay's core: sockets, pipes, child processes and the clock.
//!
//! Mechanism only: one event loop owns the core ([`mcp_relay_core::Relay`]), every listener,
//! socket and pipe; it turns readiness into [`Input`]s and performs the core's [`Output`]s.
//! It makes no protocol decision: anything that needs one is a question for the core.
//! Blocking work (spawning, waiting for exits where there are no pidfds) runs on worker
//! threads that report back over a channel and a [`mio::Waker`].
//!
//! In scope: binding listeners ([`Runtime::bind`]), accepting (with back-off when
//! descriptors run out), reading until `WouldBlock` and writing what the core hands out,
//! spawning the server command ([`CommandSpec`]) in its own process group, reaping and
//! signalling it, and the operator's stop requests ([`ShutdownHandle`]). Process-wide
//! choices are offered for the binary to make ([`set_non_dumpable`], [`os_seed`]).
//!
//! Out of scope: flags and configuration files, logging setup, signal handlers (the binary
//! installs them and calls [`ShutdownHandle::shutdown`]), TLS, and every decision about
//! sessions, framing, limits, restarts and HTTP, which belong to the core.
//!
//! Client mode adds two kinds of connection: ones the runtime opens when the core asks
//! ([`Output::Connect`]: the name is resolved on a worker thread, each address tried in turn),
//! and, with [`RuntimeConfig::stdio`], the process's own stdin and stdout as one client
//! connection, served by a reader and a writer thread (descriptors 0 and 1 stay blocking).
//!
//! ```no_run
//! use mcp_relay_core::{Config, Transport};
//! use mcp_relay_runtime::{CommandSpec, Listen, Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::bind(RuntimeConfig {
//!     listen: vec![Listen::plain("127.0.0.1:9000".parse()?, Transport::Tcp)],
//!     command: CommandSpec { program: "./server".into(), ..CommandSpec::default() },
//!     core: Config::default(),
//!     stdio: false,
//!     commands: Vec::new(),
//!     tls_client: None,
//! })?;
//! let stop = runtime.shutdown_handle(); // call stop.shutdown() from a signal handler
//! runtime.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod activation;
mod process;
mod spawn;
mod stdio;
pub mod tls;
mod upstream;

pub use process::{reap_orphans, CommandSpec};
pub use tls::{ClientTls, ServerTls};

use crossbeam_channel::{Receiver, Sender};
use mcp_relay_core::{
    ChildId, ConnId, Endpoint, ExitStatus, Input, Output, Relay, ServerId, Signal, Transport, UpId,
};
use mio::net::{TcpListener, TcpStream};
use mio::unix::pipe;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything the runtime needs to start.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Addresses to listen on, what each serves, and whether over TLS.
    pub listen: Vec<Listen>,
    /// The server command started for each session (and for `prespawn`).
    pub command: CommandSpec,
    /// With several servers (`core.servers`): each one's command, in the same order (a
    /// remote one's is never started). Empty: `command` serves the one server.
    pub commands: Vec<CommandSpec>,
    /// The core's configuration. An all-zero `seed` (the default) is replaced with OS
    /// randomness by [`Runtime::bind`].
    pub core: mcp_relay_core::Config,
    /// Serve the process's own stdin and stdout as one client connection
    /// ([`Input::Attached`]), for a local client that started the relay as its server. The
    /// core shuts down when that session ends, and [`Runtime::run`] returns (stdout closed).
    /// Nothing else in the process may write to stdout meanwhile; logs belong on stderr.
    /// Descriptors 0 and 1 stay blocking: a thread reads stdin and one writes stdout. The
    /// reader may still be blocked in a read when `run` returns: the process is expected to
    /// exit then.
    pub stdio: bool,
    /// TLS for `https://` remotes (client mode); `None` refuses them (`Input::ConnectFailed`).
    pub tls_client: Option<ClientTls>,
}

/// One address to listen on.
#[derive(Clone, Debug)]
pub struct Listen {
    /// Where (port 0: any free port).
    pub addr: SocketAddr,
    /// What it serves.
    pub transport: Transport,
    /// TLS (`https://`, `tls://`), or plain.
    pub tls: Option<ServerTls>,
    /// A TCP listener's server, with several (`None`: the default one).
    pub server: Option<ServerId>,
    /// A socket already bound to `addr` and listening, used instead of binding one: from
    /// the service manager ([`activation`]). Shared so that the configuration stays
    /// cloneable; [`Runtime::bind`] takes it over.
    pub inherited: Option<Arc<std::net::TcpListener>>,
}

impl Listen {
    /// A plain listener.
    pub fn plain(addr: SocketAddr, transport: Transport) -> Listen {
        Listen {
            addr,
            transport,
            tls: None,
            server: None,
            inherited: None,
        }
    }
}

/// Facts from worker threads (and the signal handler) for the loop.
pub(crate) enum Event {
    Spawned(ChildId, process::Started),
    SpawnFailed(ChildId, String),
    Exited(ChildId, ExitStatus),
    Shutdown,
    /// A name lookup for the upstream in this slot finished.
    Resolved(u64, Result<Vec<SocketAddr>, String>),
    /// The stdout writer wrote this many more bytes.
    StdoutWritten(usize),
    /// Writing stdout failed; the writer has stopped.
    StdoutBroken(String),
    /// The servers changed ([`ReconfigureHandle`]).
    Reconfigure(Box<Reconfiguration>),
    /// A login for the remote ended ([`TokenReply`]).
    Token(Result<String, String>),
}

/// Logs in to a remote server that asked for a token (`Output::RemoteLogin`): called on the
/// loop's thread, it must not block; the login runs elsewhere and answers through the
/// [`TokenReply`].
pub type LoginHook = Box<dyn FnMut(LoginRequest, TokenReply) + Send>;

/// What `Output::RemoteLogin` said.
#[derive(Clone, Debug)]
pub struct LoginRequest {
    /// 401, or 403 (`insufficient_scope`).
    pub status: u16,
    /// The remote's `WWW-Authenticate`.
    pub challenge: Option<String>,
    /// Which token was refused: how many had been given ([`TokenReply::send`] with `Ok`)
    /// before it was sent.
    pub generation: u32,
}

/// Where a login's outcome goes: the core gets it as `Input::RemoteToken`.
#[derive(Clone)]
pub struct TokenReply {
    events: Sender<Event>,
    waker: Arc<Waker>,
}

impl TokenReply {
    /// The token (or why there is none), from any thread.
    pub fn send(self, token: Result<String, String>) {
        if self.events.send(Event::Token(token)).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// Servers, and the commands of those that run one.
pub(crate) struct Reconfiguration {
    servers: Vec<(ServerId, mcp_relay_core::NamedServer)>,
    commands: Vec<(ServerId, CommandSpec)>,
}

/// Gives a running [`Runtime`] a new set of servers (a reloaded `--config`), from any thread.
#[derive(Clone)]
pub struct ReconfigureHandle {
    events: Sender<Event>,
    waker: Arc<Waker>,
}

impl ReconfigureHandle {
    /// From now on the servers are `servers` (see `Input::Reconfigure`); `commands` are the
    /// commands of those among them that are new. Kept ids keep their command.
    pub fn reconfigure(
        &self,
        servers: Vec<(ServerId, mcp_relay_core::NamedServer)>,
        commands: Vec<(ServerId, CommandSpec)>,
    ) {
        let change = Reconfiguration { servers, commands };
        if self
            .events
            .send(Event::Reconfigure(Box::new(change)))
            .is_ok()
        {
            let _ = self.waker.wake();
        }
    }
}

/// How [`Runtime::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every session was drained and every child reaped.
    Drained,
    /// A second shutdown request stopped it at once: children were killed, sessions cut off.
    Forced,
}

/// Asks a running [`Runtime`] to shut down; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    events: Sender<Event>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// The first call drains gracefully; a second one stops at once (children are killed).
    pub fn shutdown(&self) {
        if self.events.send(Event::Shutdown).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

const WAKER: usize = 0;
const LISTENER: usize = 1;
const CONN: usize = 2;
const STDIN: usize = 3;
const STDOUT: usize = 4;
const STDERR: usize = 5;
const PIDFD: usize = 6;
/// A connection the relay opened; its id is the runtime's slot number, not the core's `UpId`.
const UPSTREAM: usize = 7;
const KIND_BITS: u32 = 3;

fn token(kind: usize, id: u64) -> Token {
    Token(((id as usize) << KIND_BITS) | kind)
}

/// Bytes the core handed out for one endpoint, written in order.
#[derive(Default)]
struct WriteQueue {
    chunks: VecDeque<Vec<u8>>,
    /// How much of the front chunk is already written.
    offset: usize,
}

impl WriteQueue {
    fn push(&mut self, data: Vec<u8>) {
        if !data.is_empty() {
            self.chunks.push_back(data);
        }
    }

    /// Writes until done or `WouldBlock`; returns the bytes written, or the error that ended
    /// the stream (with what was written before it).
    fn flush(&mut self, w: &mut impl Write) -> (usize, Option<io::Error>) {
        let mut total = 0;
        while !self.chunks.is_empty() {
            // One writev for everything queued: a chunk per client read would otherwise be a
            // write(2) each.
            let mut slices = [io::IoSlice::new(&[]); 64];
            let mut count = 0;
            for (i, chunk) in self.chunks.iter().take(slices.len()).enumerate() {
                let start = if i == 0 { self.offset } else { 0 };
                slices[i] = io::IoSlice::new(&chunk[start..]);
                count = i + 1;
            }
            match w.write_vectored(&slices[..count]) {
                Ok(0) => return (total, Some(io::ErrorKind::WriteZero.into())),
                Ok(mut n) => {
                    total += n;
                    while n > 0 {
                        let Some(front) = self.chunks.front() else {
                            break;
                        };
                        let left = front.len() - self.offset;
                        if n >= left {
                            n -= left;
                            self.chunks.pop_front();
                            self.offset = 0;
                        } else {
                            self.offset += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (total, Some(e)),
            }
        }
        (total, None)
    }
}

struct Conn {
    link: tls::Link,
    /// A TLS connection whose handshake is under way: the core hears of it (`Accepted`)
    /// only once it is done, so that a client that never completes one (or that mutual TLS
    /// refuses) starts no session and no server.
    handshake: Option<Handshake>,
    /// Who it is, and the listener it came to (for what the TLS layer logs).
    peer: SocketAddr,
    listener: usize,
    queue: WriteQueue,
    paused: bool,
    eof: bool,
}

struct Child {
    pid: u32,
    /// The process and its pidfd, when the loop itself reaps it.
    reap: Option<(std::os::fd::OwnedFd, process::ChildHandle)>,
    stdin: Option<(pipe::Sender, WriteQueue)>,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    stdout_paused: bool,
}

impl Child {
    /// Stops watching, and closes, whatever pipes of the child are still open.
    fn drop_pipes(&mut self, registry: &mio::Registry) {
        if let Some((mut s, _)) = self.stdin.take() {
            let _ = registry.deregister(&mut s);
        }
        if let Some(mut r) = self.stdout.take() {
            let _ = registry.deregister(&mut r);
        }
        if let Some(mut r) = self.stderr.take() {
            let _ = registry.deregister(&mut r);
        }
    }
}

/// What `Input::Accepted` will say of a connection once its TLS handshake is done.
struct Handshake {
    local: SocketAddr,
    transport: Transport,
    server: Option<ServerId>,
}

/// A listening socket, and where it stands with `accept()`.
struct Listener {
    /// `None` once closed (`Output::StopAccepting`); listeners keep their index (their token).
    socket: Option<TcpListener>,
    transport: Transport,
    tls: Option<ServerTls>,
    server: Option<ServerId>,
    /// Set while `accept()` fails for want of resources (descriptors, memory): the
    /// connections wait in the kernel's backlog until the next attempt.
    backoff: Option<AcceptBackoff>,
}

/// One episode of failing `accept()`s on a listener: warned about once when it begins, and
/// once more when it ends.
struct AcceptBackoff {
    /// When the listener is tried again, whatever else happens.
    retry_at: Instant,
    /// The wait before the next retry after another failure; doubles up to
    /// [`ACCEPT_RETRY_MAX`].
    delay: Duration,
    since: Instant,
    failures: u64,
}

/// The first wait after `accept()` failed for want of resources.
const ACCEPT_RETRY_MIN: Duration = Duration::from_millis(50);
/// The longest wait between two attempts while the shortage lasts (a descriptor freed by the
/// loop itself triggers an attempt at once; this bounds how long one freed elsewhere waits).
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);

/// How an `accept()` error is handled.
#[derive(Debug, PartialEq, Eq)]
enum AcceptError {
    /// Only this connection failed (it was aborted before it was accepted, or a signal came):
    /// accept the next one.
    Transient,
    /// The process or system is out of something (descriptors, buffers, memory), or the
    /// error is not understood: back off and retry; never give up on the listener.
    Shortage,
}

fn classify_accept_error(e: &io::Error) -> AcceptError {
    if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::ConnectionAborted {
        return AcceptError::Transient;
    }
    match e.raw_os_error() {
        // accept(2) on Linux: these are errors of the pending connection, or network errors
        // it already had, and should be treated like EAGAIN by retrying.
        Some(
            libc::ECONNABORTED
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
            | libc::ETIMEDOUT,
        ) => AcceptError::Transient,
        #[cfg(target_os = "linux")]
        Some(libc::ENONET) => AcceptError::Transient,
        _ => AcceptError::Shortage,
    }
}

/// What to do next in [`Runtime::pump`].
enum Work {
    Flush(Endpoint),
    /// Read; `until_blocked` says the last read must be the one that says `WouldBlock`
    /// (otherwise a short read counts as drained).
    Read(Endpoint, bool),
}

/// The event loop. Build it with [`Runtime::bind`], then [`Runtime::run`] it.
pub struct Runtime {
    poll: Poll,
    core: Relay,
    listeners: Vec<Listener>,
    /// A descriptor was closed since the last accept attempt: a listener backing off may
    /// accept again.
    freed: bool,
    conns: BTreeMap<ConnId, Conn>,
    children: BTreeMap<ChildId, Child>,
    next_conn: u64,
    events_rx: Receiver<Event>,
    handle: ShutdownHandle,
    spawn_tx: Option<Sender<(ChildId, ServerId)>>,
    spawner: Option<std::thread::JoinHandle<()>>,
    /// Set when the runtime goes away: the spawner starts nothing more.
    spawns_cancelled: Arc<AtomicBool>,
    /// Children the core cancelled before they were started.
    unwanted: process::Unwanted,
    /// How many times the operator asked to stop (the second time means at once).
    shutdowns: u32,
    work: VecDeque<Work>,
    read_buf: Vec<u8>,
    /// Connections the relay opened, by slot (their token's id); slots are never reused.
    upstreams: BTreeMap<u64, upstream::Upstream>,
    /// The slot of each upstream, by the core's name for it.
    up_slots: BTreeMap<UpId, u64>,
    next_up: u64,
    resolver: upstream::Resolver,
    /// Attach stdin and stdout when the loop starts ([`RuntimeConfig::stdio`]).
    attach_stdio: bool,
    /// The stdio connection, once attached.
    stdio: Option<(ConnId, stdio::Stdio)>,
    /// TLS for `https://` remotes.
    tls_client: Option<ClientTls>,
    /// Logs in to remotes that ask for a token ([`Runtime::set_login_hook`]).
    login: Option<LoginHook>,
    /// Each server's command (shared with the spawner).
    commands: process::Commands,
    /// TLS failures on listeners, logged a few at a time.
    complaints: tls::Complaints,
    /// TLS connections whose handshake is under way, by deadline (`--header-timeout` after
    /// the accept; so in order).
    handshakes: VecDeque<(Instant, ConnId)>,
}

impl Runtime {
    /// Binds every listener and starts the spawner thread. Fails if an address cannot be
    /// bound.
    ///
    /// A core configuration whose `seed` is all zeros (its default) gets 32 bytes of OS
    /// randomness instead: session ids must be unguessable, and a library user who built
    /// the configuration with `Config::default()` should not have to know that.
    pub fn bind(mut config: RuntimeConfig) -> io::Result<Runtime> {
        config
            .core
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if let Some(fit) = connections_that_fit() {
            let asked = config.core.max_connections;
            if asked > fit && asked == mcp_relay_core::Config::default().max_connections {
                // The default is a guess; the descriptor limit is a fact.
                log::info!(
                    "at most {fit} connections at once: the descriptor limit allows no more \
                     (raise `ulimit -n`, or set --max-connections)"
                );
                config.core.max_connections = fit;
            } else if asked > fit {
                log::warn!(
                    "--max-connections {asked} is more than the descriptor limit leaves room for \
                     (about {fit}); connections past that wait in the listen backlog"
                );
            }
        }
        if config.core.seed == [0; 32] {
            config.core.seed = os_seed().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot read OS randomness for session ids: {e}"),
                )
            })?;
        }
        let poll = Poll::new()?;
        // The core bounds what it keeps by the size of one read.
        let read_size = config.core.max_read.max(1);
        let waker = Arc::new(Waker::new(poll.registry(), Token(WAKER))?);
        let mut listeners = Vec::new();
        for (
            i,
            Listen {
                addr,
                transport,
                tls,
                server,
                inherited,
            },
        ) in std::mem::take(&mut config.listen).into_iter().enumerate()
        {
            let mut l = match inherited {
                Some(socket) => activation::adopt(socket).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on inherited {addr}: {e}"))
                })?,
                None => TcpListener::bind(addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
                })?,
            };
            poll.registry()
                .register(&mut l, token(LISTENER, i as u64), Interest::READABLE)?;
            listeners.push(Listener {
                socket: Some(l),
                transport,
                tls,
                server,
                backoff: None,
            });
        }
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (spawn_tx, spawn_rx) = crossbeam_channel::unbounded();
        let spawns_cancelled = Arc::new(AtomicBool::new(false));
        let unwanted = process::Unwanted::default();
        let specs = if config.commands.is_empty() {
            vec![config.command]
        } else {
            config.commands
        };
        let commands: process::Commands = Arc::new(std::sync::RwLock::new(
            specs
                .into_iter()
                .enumerate()
                .map(|(i, spec)| (ServerId(i as u32), spec))
                .collect(),
        ));
        let spawner = process::spawner(
            Arc::clone(&commands),
            spawn_rx,
            events_tx.clone(),
            Arc::clone(&waker),
            Arc::clone(&spawns_cancelled),
            unwanted.clone(),
        )?;
        Ok(Runtime {
            poll,
            core: Relay::new(config.core, Instant::now())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            listeners,
            freed: false,
            conns: BTreeMap::new(),
            children: BTreeMap::new(),
            next_conn: 1,
            events_rx,
            handle: ShutdownHandle {
                events: events_tx,
                waker,
            },
            spawn_tx: Some(spawn_tx),
            spawner: Some(spawner),
            spawns_cancelled,
            unwanted,
            shutdowns: 0,
            work: VecDeque::new(),
            read_buf: vec![0; read_size],
            upstreams: BTreeMap::new(),
            up_slots: BTreeMap::new(),
            next_up: 1,
            resolver: upstream::Resolver::default(),
            attach_stdio: config.stdio,
            stdio: None,
            tls_client: config.tls_client,
            login: None,
            commands,
            complaints: tls::Complaints::default(),
            handshakes: VecDeque::new(),
        })
    }

    /// How to log in when a remote asks for a token (client mode with
    /// `RemoteConfig::login`); without one, such requests get an error.
    pub fn set_login_hook(&mut self, hook: LoginHook) {
        self.login = Some(hook);
    }

    /// Sends tokens obtained unasked (a refresh before expiry) to the remotes.
    pub fn token_reply(&self) -> TokenReply {
        TokenReply {
            events: self.handle.events.clone(),
            waker: Arc::clone(&self.handle.waker),
        }
    }

    /// The addresses actually bound (useful with port 0), with what each serves.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, Transport)> {
        self.listeners
            .iter()
            .filter_map(|l| Some((l.socket.as_ref()?.local_addr().ok()?, l.transport)))
            .collect()
    }

    /// [`Runtime::local_addrs`], with whether each listener speaks TLS and the server a TCP
    /// listener names.
    pub fn listening(&self) -> Vec<(SocketAddr, Transport, bool, Option<ServerId>)> {
        self.listeners
            .iter()
            .filter_map(|l| {
                let addr = l.socket.as_ref()?.local_addr().ok()?;
                Some((addr, l.transport, l.tls.is_some(), l.server))
            })
            .collect()
    }

    /// A handle that changes the servers of this runtime, from any thread.
    pub fn reconfigure_handle(&self) -> ReconfigureHandle {
        ReconfigureHandle {
            events: self.handle.events.clone(),
            waker: Arc::clone(&self.handle.waker),
        }
    }

    /// A handle that asks this runtime to stop, from any thread (a Ctrl-C handler).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Runs until a shutdown has finished, and says which kind it was. After a graceful
    /// shutdown every child has been reaped; after an immediate one every child started has
    /// been sent SIGKILL (to its process group), and no queued spawn is started.
    pub fn run(mut self) -> io::Result<Stopped> {
        let mut events = Events::with_capacity(256);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.core.set_wall_clock(Instant::now(), unix);
        self.core.start(Instant::now());
        self.pump();
        if self.attach_stdio {
            self.attach_stdio()?;
        }
        while !self.core.is_finished() {
            // The core's next deadline, or a listener's retry, whichever comes first.
            let deadline = self
                .listeners
                .iter()
                .filter_map(|l| l.backoff.as_ref().map(|b| b.retry_at))
                .chain(self.core.poll_timeout())
                .chain(self.handshakes.front().map(|(d, _)| *d))
                .min();
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                let t = event.token().0;
                let kind = t & ((1 << KIND_BITS) - 1);
                let id = (t >> KIND_BITS) as u64;
                match kind {
                    WAKER => {
                        self.drain_events();
                        if let Some((conn, _)) = self.stdio {
                            self.work.push_back(Work::Read(Endpoint::Conn(conn), true));
                        }
                    }
                    LISTENER => self.accept(id as usize),
                    CONN => {
                        let ep = Endpoint::Conn(ConnId(id));
                        if event.is_writable() {
                            self.work.push_back(Work::Flush(ep));
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            let closed = event.is_read_closed() || event.is_error();
                            self.work.push_back(Work::Read(ep, closed));
                        }
                    }
                    STDIN => self
                        .work
                        .push_back(Work::Flush(Endpoint::Child(ChildId(id)))),
                    STDOUT => {
                        let closed = event.is_read_closed() || event.is_error();
                        self.work
                            .push_back(Work::Read(Endpoint::Child(ChildId(id)), closed));
                    }
                    STDERR => self.read_stderr(ChildId(id)),
                    PIDFD => self.reap(ChildId(id)),
                    UPSTREAM => self.upstream_event(id, event),
                    _ => {}
                }
            }
            self.pump();
            self.core.handle_timeout(Instant::now());
            self.expire_handshakes(Instant::now());
            self.pump();
            self.retry_accepts();
        }
        // `Input::Shutdown`: the first drains, a second one stops at once.
        Ok(if self.shutdowns >= 2 {
            Stopped::Forced
        } else {
            Stopped::Drained
        })
    }

    // ---- feeding the core ----

    fn feed(&mut self, input: Input<'_>) {
        self.core.handle_input(Instant::now(), input);
        self.perform();
    }

    /// Performs every output the core has; writes and reads it asks for are queued as work.
    fn perform(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Spawn { child, server } => {
                    let sent = self.spawn_tx.as_ref().map(|tx| tx.send((child, server)));
                    if !matches!(sent, Some(Ok(()))) {
                        self.core.handle_input(
                            Instant::now(),
                            Input::SpawnFailed {
                                child,
                                error: "the spawner thread is gone",
                            },
                        );
                    }
                }
                Output::Connect {
                    conn,
                    host,
                    port,
                    tls,
                } => self.connect(conn, host, port, tls),
                Output::Send { to, data } => {
                    match to {
                        Endpoint::Upstream(u) => {
                            if let Some(up) = self.upstream_mut(u) {
                                up.queue.push(data);
                            }
                        }
                        Endpoint::Conn(c) => match &mut self.stdio {
                            Some((s, stdio)) if *s == c => {
                                stdio.send(data);
                                continue;
                            }
                            _ => {
                                if let Some(conn) = self.conns.get_mut(&c) {
                                    conn.queue.push(data);
                                }
                            }
                        },
                        Endpoint::Child(c) => {
                            if let Some((_, q)) =
                                self.children.get_mut(&c).and_then(|c| c.stdin.as_mut())
                            {
                                q.push(data);
                            }
                        }
                    }
                    self.work.push_back(Work::Flush(to));
                }
                Output::Close { endpoint } => self.close(endpoint),
                Output::Pause { endpoint } => self.set_paused(endpoint, true),
                Output::Resume { endpoint } => {
                    self.set_paused(endpoint, false);
                    self.work.push_back(Work::Read(endpoint, true));
                }
                Output::Signal { child, signal } => {
                    if let Some(c) = self.children.get(&child) {
                        process::signal_group(c.pid, signal);
                    }
                }
                Output::RemoteLogin {
                    status,
                    challenge,
                    generation,
                } => {
                    let reply = TokenReply {
                        events: self.handle.events.clone(),
                        waker: Arc::clone(&self.handle.waker),
                    };
                    let request = LoginRequest {
                        status,
                        challenge,
                        generation,
                    };
                    match self.login.as_mut() {
                        Some(login) => login(request, reply),
                        None => reply.send(Err("the relay has no way to log in here".into())),
                    }
                }
                Output::StopAccepting => {
                    let registry = self.poll.registry();
                    for l in &mut self.listeners {
                        if l.transport == Transport::Http {
                            continue;
                        }
                        // Dropped: the port refuses connections from now on.
                        if let Some(mut socket) = l.socket.take() {
                            let _ = registry.deregister(&mut socket);
                        }
                    }
                }
                Output::Cancel { child } => match self.children.get(&child) {
                    // Started after all (the start raced with the cancel): it goes at once.
                    Some(c) => process::signal_group(c.pid, Signal::Kill),
                    None => self.unwanted.add(child),
                },
                Output::Release { child } => {
                    let registry = self.poll.registry();
                    let reaped = match self.children.get_mut(&child) {
                        Some(c) => {
                            c.drop_pipes(registry);
                            c.reap.is_none()
                        }
                        None => false,
                    };
                    self.freed = true;
                    // A child not reaped yet (the core gave up waiting for its output) stays,
                    // watched for its exit, so that no zombie is left.
                    if reaped {
                        self.children.remove(&child);
                    }
                }
            }
        }
    }

    /// Does the queued reads and writes until none is left; each may produce more.
    fn pump(&mut self) {
        self.perform();
        while let Some(work) = self.work.pop_front() {
            match work {
                Work::Flush(ep) => self.flush(ep),
                Work::Read(ep, until_blocked) => self.read(ep, until_blocked),
            }
        }
    }

    fn drain_events(&mut self) {
        while let Ok(event) = self.events_rx.try_recv() {
            match event {
                Event::Spawned(child, started) => self.spawned(child, started),
                Event::SpawnFailed(child, error) => {
                    self.feed(Input::SpawnFailed {
                        child,
                        error: &error,
                    });
                }
                Event::Exited(child, status) => self.feed(Input::Exited { child, status }),
                Event::Shutdown => {
                    self.shutdowns += 1;
                    self.feed(Input::Shutdown);
                }
                Event::Resolved(slot, addrs) => self.resolved(slot, addrs),
                Event::Token(token) => self.feed(Input::RemoteToken {
                    token: token.as_deref().map_err(String::as_str),
                }),
                Event::Reconfigure(change) => {
                    {
                        let mut table = match self.commands.write() {
                            Ok(table) => table,
                            Err(poisoned) => poisoned.into_inner(),
                        };
                        table.extend(change.commands);
                    }
                    self.feed(Input::Reconfigure {
                        servers: &change.servers,
                    });
                }
                Event::StdoutWritten(n) => {
                    if let Some((conn, stdio)) = &mut self.stdio {
                        let conn = *conn;
                        stdio.written(n);
                        if !stdio.is_closed() {
                            self.feed(Input::Written {
                                to: Endpoint::Conn(conn),
                                n,
                            });
                        }
                    }
                }
                Event::StdoutBroken(reason) => {
                    if let Some((conn, stdio)) = &mut self.stdio {
                        let conn = *conn;
                        if !stdio.is_closed() {
                            stdio.close();
                            self.feed(Input::Broken {
                                endpoint: Endpoint::Conn(conn),
                                reason: &reason,
                            });
                        }
                    }
                }
            }
        }
    }

    fn spawned(&mut self, id: ChildId, started: process::Started) {
        if self.unwanted.take(id) {
            // Cancelled while it was being started: the core wants nothing of it.
            process::signal_group(started.pid, Signal::Kill);
            if let process::Reaper::Pidfd(_, mut child) = started.reaper {
                let _ = child.wait();
            }
            return;
        }
        let process::Started {
            pid,
            mut stdin,
            mut stdout,
            mut stderr,
            reaper,
        } = started;
        let registry = self.poll.registry();
        let reap = match reaper {
            process::Reaper::Pidfd(fd, child) => {
                use std::os::fd::AsRawFd;
                let raw = fd.as_raw_fd();
                match registry.register(
                    &mut mio::unix::SourceFd(&raw),
                    token(PIDFD, id.0),
                    Interest::READABLE,
                ) {
                    Ok(()) => Some((fd, child)),
                    Err(e) => {
                        // Nobody could reap it: better no server than a zombie.
                        log::error!("cannot watch pid {pid} for its exit: {e}");
                        let mut child = child;
                        let _ = child.kill();
                        let _ = child.wait();
                        None
                    }
                }
            }
            process::Reaper::Thread => None,
        };
        let registered = registry
            .register(&mut stdin, token(STDIN, id.0), Interest::WRITABLE)
            .and_then(|_| registry.register(&mut stdout, token(STDOUT, id.0), Interest::READABLE))
            .and_then(|_| registry.register(&mut stderr, token(STDERR, id.0), Interest::READABLE));
        self.children.insert(
            id,
            Child {
                pid,
                reap,
                stdin: Some((stdin, WriteQueue::default())),
                stdout: Some(stdout),
                stderr: Some(stderr),
                stdout_paused: false,
            },
        );
        self.feed(Input::Spawned { child: id, pid });
        if let Err(e) = registered {
            // The child runs but cannot be talked to: report its pipes as failed.
            let reason = format!("cannot watch the server's pipes: {e}");
            self.feed(Input::Broken {
                endpoint: Endpoint::Child(id),
                reason: &reason,
            });
            self.feed(Input::Eof {
                from: Endpoint::Child(id),
            });
            self.feed(Input::StderrEof { child: id });
        }
        // Output may already be waiting in the pipes.
        self.work.push_back(Work::Read(Endpoint::Child(id), true));
        self.read_stderr(id);
    }

    // ---- sockets ----

    /// Accepts every pending connection; on a shortage (out of descriptors, say) the
    /// listener backs off: see [`Runtime::accept_failed`].
    fn accept(&mut self, index: usize) {
        let mut accepted = false;
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            let transport = listener.transport;
            let listener_tls = listener.tls.clone();
            let server = listener.server;
            let Some(socket) = &listener.socket else {
                return;
            };
            match socket.accept() {
                Ok((mut stream, peer)) => {
                    accepted = true;
                    let local = stream.local_addr().unwrap_or(peer);
                    if let Err(e) = stream.set_nodelay(true) {
                        log::debug!("TCP_NODELAY failed for {peer}: {e}");
                    }
                    if let Err(e) = set_keepalive(&stream) {
                        log::debug!("SO_KEEPALIVE failed for {peer}: {e}");
                    }
                    let id = ConnId(self.next_conn);
                    self.next_conn += 1;
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        token(CONN, id.0),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("cannot watch the connection from {peer}: {e}");
                        continue;
                    }
                    let link = match &listener_tls {
                        None => tls::Link::plain(stream),
                        Some(config) => {
                            let reply = match transport {
                                Transport::Http => tls::PlainReply::Http,
                                Transport::Tcp => tls::PlainReply::JsonRpc,
                            };
                            match tls::Link::server(stream, config, reply) {
                                Ok(link) => link,
                                Err(e) => {
                                    log::error!("cannot start TLS for {peer}: {e}");
                                    continue;
                                }
                            }
                        }
                    };
                    let handshake = link.is_tls().then_some(Handshake {
                        local,
                        transport,
                        server,
                    });
                    if handshake.is_some() {
                        // Bounded like a request head, and in number like connections.
                        let config = self.core.config();
                        if self.handshakes.len() >= config.max_connections {
                            log::warn!(
                                "{peer}: closed at once: {} TLS handshakes are under way \
                                 (--max-connections)",
                                self.handshakes.len()
                            );
                            let mut link = link;
                            let _ = self.poll.registry().deregister(&mut link.tcp);
                            continue;
                        }
                        let deadline = Instant::now() + config.http.header_timeout;
                        self.handshakes.push_back((deadline, id));
                    }
                    let pending = handshake.is_some();
                    self.conns.insert(
                        id,
                        Conn {
                            link,
                            handshake,
                            peer,
                            listener: index,
                            queue: WriteQueue::default(),
                            paused: false,
                            eof: false,
                        },
                    );
                    if !pending {
                        self.feed(Input::Accepted {
                            conn: id,
                            local,
                            peer,
                            transport,
                            server,
                        });
                    }
                    self.work.push_back(Work::Read(Endpoint::Conn(id), true));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The backlog is drained: whatever shortage there was is over.
                    self.accept_recovered(index);
                    return;
                }
                Err(e) => match classify_accept_error(&e) {
                    AcceptError::Transient => {
                        log::debug!("accept: a pending connection failed: {e}");
                    }
                    AcceptError::Shortage => {
                        self.accept_failed(index, &e, accepted);
                        return;
                    }
                },
            }
        }
    }

    /// `accept()` failed for want of resources. The listener is edge-triggered, so no new
    /// readiness may ever come (the backlog stays full): it is retried after a delay that
    /// doubles up to [`ACCEPT_RETRY_MAX`], and at once whenever the loop closes a descriptor.
    /// Pending connections wait in the kernel's backlog meanwhile, rather than being
    /// accepted and closed: most shortages are brief, and a client that waits is served.
    /// One warning per episode: it ends when the backlog is drained. `progressed`: this
    /// attempt accepted something before failing, so the shortage is easing (the delay
    /// starts over).
    fn accept_failed(&mut self, index: usize, e: &io::Error, progressed: bool) {
        let now = Instant::now();
        let Some(l) = self.listeners.get_mut(index) else {
            return;
        };
        match &mut l.backoff {
            Some(b) => {
                b.failures += 1;
                if progressed {
                    b.delay = ACCEPT_RETRY_MIN;
                }
                b.retry_at = now + b.delay;
                b.delay = (b.delay * 2).min(ACCEPT_RETRY_MAX);
            }
            None => {
                let addr = listener_name(l);
                log::warn!(
                    "cannot accept connections on {addr}: {e}; they wait in the backlog, retrying (at once when a descriptor is freed, else within {ACCEPT_RETRY_MAX:?})"
                );
                l.backoff = Some(AcceptBackoff {
                    retry_at: now + ACCEPT_RETRY_MIN,
                    delay: ACCEPT_RETRY_MIN * 2,
                    since: now,
                    failures: 1,
                });
                self.report_accept_trouble();
            }
        }
    }

    /// Tells the core how many listeners cannot accept now (it reports itself degraded).
    fn report_accept_trouble(&mut self) {
        let listeners = self
            .listeners
            .iter()
            .filter(|l| l.backoff.is_some())
            .count();
        self.feed(Input::AcceptTrouble { listeners });
    }

    /// `accept()` found the backlog empty: an episode of failures, if any, is over.
    fn accept_recovered(&mut self, index: usize) {
        let Some(l) = self.listeners.get_mut(index) else {
            return;
        };
        if let Some(b) = l.backoff.take() {
            log::info!(
                "accepting connections on {} again ({} failed attempts over {:?})",
                listener_name(l),
                b.failures,
                b.since.elapsed()
            );
            self.report_accept_trouble();
        }
    }

    /// Tries the listeners that are backing off whose time has come, or all of them when a
    /// descriptor was freed since the last try.
    fn retry_accepts(&mut self) {
        let freed = std::mem::take(&mut self.freed);
        let now = Instant::now();
        for index in 0..self.listeners.len() {
            // `get`: the core may have closed every listener while a retry was pumped.
            let due = self
                .listeners
                .get(index)
                .and_then(|l| l.backoff.as_ref())
                .is_some_and(|b| freed || b.retry_at <= now);
            if due {
                self.accept(index);
                self.pump();
            }
        }
    }

    // ---- connections the relay opens ----

    fn upstream_mut(&mut self, id: UpId) -> Option<&mut upstream::Upstream> {
        let slot = self.up_slots.get(&id)?;
        self.upstreams.get_mut(slot)
    }

    /// `Output::Connect`: an IP address is dialled at once, a name is looked up first.
    fn connect(&mut self, id: UpId, host: String, port: u16, tls: bool) {
        if self.up_slots.contains_key(&id) {
            log::warn!("{id}: asked to connect twice; ignored");
            return;
        }
        let slot = self.next_up;
        self.next_up += 1;
        let (mut up, literal) = upstream::Upstream::new(id, &host, port);
        if tls {
            let Some(config) = &self.tls_client else {
                let error = format!(
                    "cannot speak TLS to {}: no TLS client configuration was given",
                    up.target()
                );
                self.feed(Input::ConnectFailed {
                    conn: id,
                    error: &error,
                });
                return;
            };
            up.use_tls(config.clone(), &host);
        }
        self.upstreams.insert(slot, up);
        self.up_slots.insert(id, slot);
        match literal {
            Some(addr) => self.dial(slot, vec![addr]),
            None => {
                log::debug!("{id}: resolving {host}");
                let started = self.resolver.resolve(
                    slot,
                    host,
                    port,
                    &self.handle.events,
                    &self.handle.waker,
                );
                if let Err(e) = started {
                    let step = self
                        .upstreams
                        .get_mut(&slot)
                        .map(|up| up.lookup_failed(&format!("cannot start a name lookup: {e}")));
                    if let Some(step) = step {
                        self.connect_step(slot, step);
                    }
                }
            }
        }
    }

    /// A name lookup finished; the next one waiting may start.
    fn resolved(&mut self, slot: u64, addrs: Result<Vec<SocketAddr>, String>) {
        let upstreams = &self.upstreams;
        let failed = self
            .resolver
            .finished(&self.handle.events, &self.handle.waker, |s| {
                upstreams.contains_key(&s)
            });
        for (slot, error) in failed {
            let step = self
                .upstreams
                .get_mut(&slot)
                .map(|up| up.lookup_failed(&error));
            if let Some(step) = step {
                self.connect_step(slot, step);
            }
        }
        // Closed meanwhile (the core gave up on it): nobody wants the answer.
        if !self
            .upstreams
            .get(&slot)
            .is_some_and(|up| up.is_resolving())
        {
            return;
        }
        match addrs {
            Ok(addrs) => self.dial(slot, addrs),
            Err(e) => {
                let step = self.upstreams.get_mut(&slot).map(|up| up.lookup_failed(&e));
                if let Some(step) = step {
                    self.connect_step(slot, step);
                }
            }
        }
    }

    fn dial(&mut self, slot: u64, addrs: Vec<SocketAddr>) {
        let registry = self.poll.registry();
        let Some(up) = self.upstreams.get_mut(&slot) else {
            return;
        };
        let step = up.dial(registry, token(UPSTREAM, slot), addrs);
        self.connect_step(slot, step);
    }

    /// Readiness on an upstream's socket.
    fn upstream_event(&mut self, slot: u64, event: &mio::event::Event) {
        let Some(up) = self.upstreams.get_mut(&slot) else {
            return;
        };
        if !up.is_open() {
            let step = up.ready(self.poll.registry(), token(UPSTREAM, slot));
            self.connect_step(slot, step);
            return;
        }
        let ep = Endpoint::Upstream(up.id);
        if event.is_writable() {
            self.work.push_back(Work::Flush(ep));
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            let closed = event.is_read_closed() || event.is_error();
            self.work.push_back(Work::Read(ep, closed));
        }
    }

    /// Tells the core how a connection attempt ended, if it has.
    fn connect_step(&mut self, slot: u64, step: upstream::Step) {
        let Some(up) = self.upstreams.get_mut(&slot) else {
            return;
        };
        let id = up.id;
        match step {
            upstream::Step::Pending => {}
            upstream::Step::Connected => {
                if let Some(stream) = up.stream().map(|l| &l.tcp) {
                    if let Err(e) = stream.set_nodelay(true) {
                        log::debug!("{id}: TCP_NODELAY failed: {e}");
                    }
                    if let Err(e) = set_keepalive(stream) {
                        log::debug!("{id}: SO_KEEPALIVE failed: {e}");
                    }
                }
                self.feed(Input::Connected { conn: id });
                // What the core sent meanwhile goes now; the server may have spoken first.
                self.work.push_back(Work::Flush(Endpoint::Upstream(id)));
                self.work
                    .push_back(Work::Read(Endpoint::Upstream(id), true));
            }
            upstream::Step::Failed(error) => {
                self.upstreams.remove(&slot);
                self.up_slots.remove(&id);
                self.freed = true;
                self.feed(Input::ConnectFailed {
                    conn: id,
                    error: &error,
                });
            }
        }
    }

    /// Closes an upstream in whatever state it is (a lookup under way finds it gone).
    fn drop_upstream(&mut self, id: UpId) {
        if let Some(slot) = self.up_slots.remove(&id) {
            if let Some(mut up) = self.upstreams.remove(&slot) {
                up.close(self.poll.registry());
            }
        }
    }

    // ---- the relay's own stdin and stdout ----

    /// Starts serving stdin and stdout as a connection of their own.
    fn attach_stdio(&mut self) -> io::Result<()> {
        let stdio = stdio::Stdio::attach(
            self.read_buf.len(),
            self.handle.events.clone(),
            Arc::clone(&self.handle.waker),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("cannot attach stdin and stdout: {e}")))?;
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.stdio = Some((conn, stdio));
        self.feed(Input::Attached { conn });
        self.pump();
        Ok(())
    }

    /// Takes what the stdin reader has read, until none is left or the core pauses it.
    fn read_stdio(&mut self, conn: ConnId) {
        loop {
            let taken = match &mut self.stdio {
                Some((c, stdio)) if *c == conn => stdio.take(),
                _ => return,
            };
            match taken {
                stdio::Taken::Nothing => return,
                stdio::Taken::Data(data) => self.feed(Input::Data {
                    from: Endpoint::Conn(conn),
                    data: &data,
                }),
                stdio::Taken::End(error) => {
                    if let Some(e) = error {
                        log::warn!("reading stdin failed: {e}; taking it as its end");
                    }
                    self.feed(Input::Eof {
                        from: Endpoint::Conn(conn),
                    });
                    return;
                }
            }
        }
    }

    fn set_paused(&mut self, ep: Endpoint, paused: bool) {
        match ep {
            Endpoint::Upstream(u) => {
                if let Some(up) = self.upstream_mut(u) {
                    up.paused = paused;
                }
            }
            Endpoint::Conn(c) => match &mut self.stdio {
                Some((s, stdio)) if *s == c => stdio.paused = paused,
                _ => {
                    if let Some(conn) = self.conns.get_mut(&c) {
                        conn.paused = paused;
                    }
                }
            },
            Endpoint::Child(c) => {
                if let Some(child) = self.children.get_mut(&c) {
                    child.stdout_paused = paused;
                }
            }
        }
    }

    fn close(&mut self, ep: Endpoint) {
        self.freed = true;
        match ep {
            Endpoint::Upstream(u) => self.drop_upstream(u),
            Endpoint::Conn(c) => match &mut self.stdio {
                Some((s, stdio)) if *s == c => stdio.close(),
                _ => {
                    if let Some(mut conn) = self.conns.remove(&c) {
                        conn.link.close_notify();
                        let _ = self.poll.registry().deregister(&mut conn.link.tcp);
                    }
                }
            },
            Endpoint::Child(c) => {
                if let Some((mut s, _)) = self.children.get_mut(&c).and_then(|c| c.stdin.take()) {
                    let _ = self.poll.registry().deregister(&mut s);
                }
            }
        }
    }

    /// Reads until `WouldBlock`, end of file, or the core pauses the endpoint.
    fn read(&mut self, ep: Endpoint, until_blocked: bool) {
        if let Endpoint::Conn(c) = ep {
            if self.conns.get(&c).is_some_and(|c| c.handshake.is_some()) && !self.handshake(c) {
                return;
            }
        }
        let tls = match ep {
            Endpoint::Conn(c) => self.conns.get(&c).is_some_and(|c| c.link.is_tls()),
            Endpoint::Upstream(u) => self
                .upstream_mut(u)
                .and_then(|up| up.stream())
                .is_some_and(|l| l.is_tls()),
            Endpoint::Child(_) => false,
        };
        // A short read of plaintext says nothing of what the socket still holds: read TLS
        // until `WouldBlock`.
        self.read_until(ep, until_blocked || tls);
        if tls {
            // Reading may have advanced a handshake (the records it answers with, the
            // plaintext it held back) or acknowledged what was written.
            self.work.push_back(Work::Flush(ep));
        }
    }

    /// Drives an accepted connection's TLS handshake; once it is done, tells the core of the
    /// connection (true: read it now). A failed handshake closes it, and the core never
    /// hears of it.
    fn handshake(&mut self, c: ConnId) -> bool {
        let Some(conn) = self.conns.get_mut(&c) else {
            return false;
        };
        match conn.link.handshake() {
            Ok(false) => {
                self.work.push_back(Work::Flush(Endpoint::Conn(c)));
                false
            }
            Ok(true) => {
                let Some(h) = conn.handshake.take() else {
                    return true;
                };
                let peer = conn.peer;
                self.handshakes.retain(|(_, id)| *id != c);
                self.feed(Input::Accepted {
                    conn: c,
                    local: h.local,
                    peer,
                    transport: h.transport,
                    server: h.server,
                });
                self.work.push_back(Work::Flush(Endpoint::Conn(c)));
                true
            }
            Err(e) => {
                self.drop_handshake(c, &e);
                false
            }
        }
    }

    /// A connection whose handshake failed or took too long: closed, logged a few at a time.
    fn drop_handshake(&mut self, c: ConnId, e: &io::Error) {
        let Some(mut conn) = self.conns.remove(&c) else {
            return;
        };
        self.handshakes.retain(|(_, id)| *id != c);
        self.freed = true;
        let _ = self.poll.registry().deregister(&mut conn.link.tcp);
        let failure = match tls::Failure::of(e) {
            Some(tls::Failure::NotTls) => tls::Failure::NotTls,
            Some(tls::Failure::Tls(why)) => tls::Failure::Tls(why.clone()),
            None => tls::Failure::Tls(e.to_string()),
        };
        let name = self.listeners.get(conn.listener).map(listener_name);
        self.complaints.tls(&failure, conn.peer, name.as_deref());
    }

    /// Closes the connections whose handshake is past its deadline.
    fn expire_handshakes(&mut self, now: Instant) {
        while let Some(&(deadline, c)) = self.handshakes.front() {
            if deadline > now {
                return;
            }
            self.handshakes.pop_front();
            if self.conns.get(&c).is_some_and(|c| c.handshake.is_some()) {
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the TLS handshake did not finish within --header-timeout",
                );
                self.drop_handshake(c, &e);
            }
        }
    }

    fn read_until(&mut self, ep: Endpoint, until_blocked: bool) {
        loop {
            let result = match ep {
                Endpoint::Upstream(u) => {
                    let slot = self.up_slots.get(&u).copied();
                    match slot.and_then(|s| self.upstreams.get_mut(&s)) {
                        Some(up) if !up.paused && !up.eof => match up.stream() {
                            Some(stream) => stream.read(&mut self.read_buf),
                            None => return,
                        },
                        _ => return,
                    }
                }
                Endpoint::Conn(c) if self.stdio.as_ref().is_some_and(|(s, _)| *s == c) => {
                    self.read_stdio(c);
                    return;
                }
                Endpoint::Conn(c) => match self.conns.get_mut(&c) {
                    Some(conn) if !conn.paused && !conn.eof => conn.link.read(&mut self.read_buf),
                    _ => return,
                },
                Endpoint::Child(c) => match self.children.get_mut(&c) {
                    Some(Child {
                        stdout: Some(r),
                        stdout_paused: false,
                        ..
                    }) => r.read(&mut self.read_buf),
                    _ => return,
                },
            };
            match result {
                Ok(0) => {
                    match ep {
                        Endpoint::Upstream(u) => {
                            if let Some(up) = self.upstream_mut(u) {
                                up.eof = true;
                            }
                        }
                        Endpoint::Conn(c) => {
                            if let Some(conn) = self.conns.get_mut(&c) {
                                conn.eof = true;
                            }
                        }
                        Endpoint::Child(c) => {
                            if let Some(mut r) =
                                self.children.get_mut(&c).and_then(|c| c.stdout.take())
                            {
                                let _ = self.poll.registry().deregister(&mut r);
                                self.freed = true;
                            }
                        }
                    }
                    self.feed(Input::Eof { from: ep });
                    return;
                }
                Ok(n) => {
                    self.core.handle_input(
                        Instant::now(),
                        Input::Data {
                            from: ep,
                            data: &self.read_buf[..n],
                        },
                    );
                    self.perform();
                    if n < self.read_buf.len() && !until_blocked {
                        // A short read drained the socket or pipe; with edge-triggered
                        // readiness the next data brings a new event, so skip the read that
                        // would only say EAGAIN. Not when the event also said the peer
                        // closed: that end of file is only seen by reading on.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.broken(ep, &e);
                    return;
                }
            }
        }
    }

    /// The pidfd says the child exited: reap it (never blocks) and tell the core.
    fn reap(&mut self, id: ChildId) {
        let Some(c) = self.children.get_mut(&id) else {
            return;
        };
        let Some((fd, child)) = c.reap.as_mut() else {
            return;
        };
        let status = match child.try_wait() {
            Ok(Some(status)) => {
                process::forget_own(c.pid);
                process::exit_status(status)
            }
            Ok(None) => return,
            Err(e) => {
                log::error!("reaping pid {} failed: {e}", c.pid);
                ExitStatus::Code(-1)
            }
        };
        use std::os::fd::AsRawFd;
        let raw = fd.as_raw_fd();
        let _ = self
            .poll
            .registry()
            .deregister(&mut mio::unix::SourceFd(&raw));
        c.reap = None;
        self.freed = true;
        self.feed(Input::Exited { child: id, status });
        // A child the core already released is forgotten once reaped.
        if self
            .children
            .get(&id)
            .is_some_and(|c| c.stdin.is_none() && c.stdout.is_none() && c.stderr.is_none())
        {
            self.children.remove(&id);
        }
    }

    fn read_stderr(&mut self, id: ChildId) {
        loop {
            let Some(r) = self.children.get_mut(&id).and_then(|c| c.stderr.as_mut()) else {
                return;
            };
            match r.read(&mut self.read_buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => {
                    let r = self.children.get_mut(&id).and_then(|c| c.stderr.take());
                    if let Some(mut r) = r {
                        let _ = self.poll.registry().deregister(&mut r);
                        self.freed = true;
                    }
                    self.feed(Input::StderrEof { child: id });
                    return;
                }
                Ok(n) => {
                    self.core.handle_input(
                        Instant::now(),
                        Input::Stderr {
                            child: id,
                            data: &self.read_buf[..n],
                        },
                    );
                    self.perform();
                }
            }
        }
    }

    fn flush(&mut self, ep: Endpoint) {
        let (n, err) = match ep {
            Endpoint::Upstream(u) => {
                let slot = self.up_slots.get(&u).copied();
                // Not established yet: the bytes wait.
                match slot.and_then(|s| self.upstreams.get_mut(&s)?.flush()) {
                    Some(done) => done,
                    None => return,
                }
            }
            Endpoint::Conn(c) => match self.conns.get_mut(&c) {
                Some(conn) => {
                    let (accepted, err) = conn.queue.flush(&mut conn.link);
                    let (written, settle_err) = conn.link.settle(accepted);
                    (written, err.or(settle_err))
                }
                None => return,
            },
            Endpoint::Child(c) => match self.children.get_mut(&c).and_then(|c| c.stdin.as_mut()) {
                Some((sender, queue)) => queue.flush(sender),
                None => return,
            },
        };
        if n > 0 {
            self.feed(Input::Written { to: ep, n });
        }
        if let Some(e) = err {
            self.broken(ep, &e);
        }
    }

    /// The endpoint failed: drop it and tell the core.
    fn broken(&mut self, ep: Endpoint, e: &io::Error) {
        self.freed = true;
        match ep {
            Endpoint::Upstream(u) => self.drop_upstream(u),
            Endpoint::Conn(c) => {
                if self.conns.get(&c).is_some_and(|c| c.handshake.is_some()) {
                    // The core never heard of it.
                    return self.drop_handshake(c, e);
                }
                if let Some(mut conn) = self.conns.remove(&c) {
                    let _ = self.poll.registry().deregister(&mut conn.link.tcp);
                    if let Some(failure) = tls::Failure::of(e) {
                        let name = self.listeners.get(conn.listener).map(listener_name);
                        self.complaints.tls(failure, conn.peer, name.as_deref());
                    }
                }
            }
            Endpoint::Child(c) => {
                if let Some((mut s, _)) = self.children.get_mut(&c).and_then(|c| c.stdin.take()) {
                    let _ = self.poll.registry().deregister(&mut s);
                }
            }
        }
        let reason = e.to_string();
        self.feed(Input::Broken {
            endpoint: ep,
            reason: &reason,
        });
    }
}

/// How a listener is named in the log.
fn listener_name(l: &Listener) -> String {
    let scheme = match (l.transport, l.tls.is_some()) {
        (Transport::Tcp, false) => "tcp",
        (Transport::Http, false) => "http",
        (Transport::Tcp, true) => "tls",
        (Transport::Http, true) => "https",
    };
    match l.socket.as_ref().map(TcpListener::local_addr) {
        Some(Ok(addr)) => format!("{scheme}://{addr}"),
        _ => format!("a {scheme} listener"),
    }
}

/// TCP keepalive, so that a peer that vanished without a FIN is noticed by the kernel: first
/// probe after 60 s idle, then every 10 s, 6 probes.
fn set_keepalive(stream: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| -> io::Result<()> {
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid pointer to a local
        // c_int; the fd is owned by `stream`, which outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    #[cfg(target_os = "linux")]
    {
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60)?;
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10)?;
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6)?;
    }
    Ok(())
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // What was sent to stdout is written, and stdout closed, before the process exits.
        if let Some((_, stdio)) = self.stdio.take() {
            stdio.finish();
        }
        // Spawns still queued are not started: nobody would serve them, and starting
        // thousands of them would keep an operator's second Ctrl-C waiting.
        self.spawns_cancelled.store(true, Ordering::SeqCst);
        self.spawn_tx = None;
        // After an immediate shutdown children may still be running: their groups get
        // SIGKILL. So do those the spawner started but the loop never heard of.
        for child in self.children.values() {
            process::signal_group(child.pid, Signal::Kill);
        }
        while let Ok(event) = self.events_rx.try_recv() {
            if let Event::Spawned(_, started) = event {
                process::signal_group(started.pid, Signal::Kill);
            }
        }
        // The spawner stops before its next start; it waits for nothing but the one start it
        // may be in (fork and exec), and kills what that one started. On Linux every child
        // also dies with the spawner thread (PR_SET_PDEATHSIG).
        if let Some(spawner) = self.spawner.take() {
            let _ = spawner.join();
        }
        while let Ok(event) = self.events_rx.try_recv() {
            if let Event::Spawned(_, started) = event {
                process::signal_group(started.pid, Signal::Kill);
            }
        }
    }
}

/// Makes the C allocator give big buffers their own mappings, returned to the OS when freed
/// (glibc: `mallopt(M_MMAP_THRESHOLD, 1 MiB)`). By default glibc raises that threshold after
/// the first big buffer is freed, and later multi-MiB messages then come from the main heap,
/// where small allocations above them keep the memory resident: the relay's RSS creeps up by
/// a message's size at a time over hours of large messages (benches/SOAK.md). A process-wide
/// setting, so it is the binary's choice. A no-op with other C libraries.
pub fn return_big_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's tuning; called before other threads
        // allocate concurrently in earnest, and a refusal (return 0) leaves the default.
        let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    }
}

/// How many client connections the process's descriptor limit leaves room for: each TCP
/// session takes a socket and its server's pipes and pidfd, and some descriptors are the
/// relay's own.
fn connections_that_fit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own; no other memory is touched.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !ok || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    let usable = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
    // A TCP session holds its socket and three or four of its server's descriptors; an HTTP
    // connection holds one. A third of what is left after the relay's own is a fair share.
    Some((usable.saturating_sub(32) / 3).max(1))
}

/// Makes this process non-dumpable (Linux: `prctl(PR_SET_DUMPABLE, 0)`): other processes of
/// the same user, the relay's own servers among them, can no longer read its memory or its
/// `/proc/<pid>/environ`, `mem`, `fd` and the like, nor attach a debugger, and no core dump
/// is written. `/proc/<pid>/cmdline` stays readable by everyone: secrets belong in files or
/// the environment, not in arguments. A process-wide setting, so it is the binary's choice
/// to make, not [`Runtime::bind`]'s. A no-op elsewhere.
pub fn set_non_dumpable() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_DUMPABLE) takes integers only and touches no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// 32 bytes of OS entropy, to seed the core's session-id generator.
pub fn os_seed() -> io::Result<[u8; 32]> {
    use std::io::Read as _;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(errno: i32, expect: AcceptError) {
        let e = io::Error::from_raw_os_error(errno);
        assert_eq!(classify_accept_error(&e), expect, "{e}");
    }

    #[test]
    fn accept_errors_of_one_connection_move_on_to_the_next() {
        for errno in [libc::ECONNABORTED, libc::EINTR, libc::EPROTO, libc::EPERM] {
            check(errno, AcceptError::Transient);
        }
    }

    #[test]
    fn accept_errors_of_the_process_back_off() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            check(errno, AcceptError::Shortage);
        }
        // Not understood: still never the end of the listener.
        check(libc::EINVAL, AcceptError::Shortage);
    }
}
