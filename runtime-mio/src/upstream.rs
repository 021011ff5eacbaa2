//! Connections the relay opens ([`mcp_relay_core::Output::Connect`]): resolving the name off
//! the loop, trying each address in turn, and noticing when a non-blocking connect is done.
//!
//! Resolution (`getaddrinfo`) blocks, so it runs on short-lived worker threads, at most
//! [`MAX_RESOLVERS`] at once; the others wait their turn in [`Resolver`]. An IP address needs
//! no resolution and is dialled at once. Once established, an [`Upstream`] is read and written
//! by the loop exactly like an accepted connection.

use crate::tls::{ClientTls, Failure, Link};
use crate::{Event, WriteQueue};
use crossbeam_channel::Sender;
use mcp_relay_core::UpId;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token, Waker};
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread;

/// Name lookups running at once; more wait in [`Resolver`]'s queue. A resolver that hangs
/// (an unreachable DNS server) holds one slot until the C library gives up.
pub(crate) const MAX_RESOLVERS: usize = 4;

/// The most failed addresses a connect error lists (a name may have dozens).
const ERRORS_LISTED: usize = 4;

/// One connection to a remote server, from the `Connect` to its `Close`.
pub(crate) struct Upstream {
    /// The core's name for it.
    pub(crate) id: UpId,
    /// `host:port`, for messages.
    target: String,
    /// The host is an IP address (no lookup; an error needs not name the address twice).
    literal: bool,
    state: State,
    /// Bytes the core sent; they wait here until the connection is established.
    pub(crate) queue: WriteQueue,
    pub(crate) paused: bool,
    pub(crate) eof: bool,
    /// TLS over it (an `https://` remote), and the name its certificate must be valid for.
    tls: Option<(ClientTls, String)>,
}

enum State {
    /// Waiting for a resolver thread (or for a turn to start one).
    Resolving,
    /// A non-blocking connect to `addr` is under way; `rest` are tried after it; `errors`
    /// say how the addresses before it failed.
    Connecting {
        stream: TcpStream,
        addr: SocketAddr,
        rest: VecDeque<SocketAddr>,
        errors: Vec<(SocketAddr, io::Error)>,
    },
    /// Connected, and the TLS handshake is under way.
    Handshaking(Link),
    /// Established (with TLS, the handshake is done).
    Open(Link),
    /// Failed or closed: nothing registered.
    Done,
}

/// What a connection attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Still resolving or connecting: wait for the next event.
    Pending,
    /// Established: say `Connected`, then read and write it.
    Connected,
    /// Every address failed (or none resolved): say `ConnectFailed` with this.
    Failed(String),
}

impl Upstream {
    /// A connection to `host:port`, waiting for its addresses. An IP address (IPv6 with or
    /// without brackets) needs no lookup: it is returned, to be dialled at once.
    pub(crate) fn new(id: UpId, host: &str, port: u16) -> (Upstream, Option<SocketAddr>) {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let literal = bare
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        let target = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        let up = Upstream {
            id,
            target,
            literal: literal.is_some(),
            state: State::Resolving,
            queue: WriteQueue::default(),
            paused: false,
            eof: false,
            tls: None,
        };
        (up, literal)
    }

    /// Speak TLS over it once connected, verifying the certificate for its host.
    pub(crate) fn use_tls(&mut self, tls: ClientTls, host: &str) {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        self.tls = Some((tls, bare.to_owned()));
    }

    /// The name of what it connects to, for messages.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Whether it waits for its addresses (a lookup result for anything else is stale).
    pub(crate) fn is_resolving(&self) -> bool {
        matches!(self.state, State::Resolving)
    }

    /// Whether it is established.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// The lookup failed: the message for `ConnectFailed`.
    pub(crate) fn lookup_failed(&mut self, error: &str) -> Step {
        self.state = State::Done;
        Step::Failed(format!("cannot resolve {}: {error}", self.target))
    }

    /// The established connection, if it is one.
    pub(crate) fn stream(&mut self) -> Option<&mut Link> {
        match &mut self.state {
            State::Open(s) => Some(s),
            _ => None,
        }
    }

    /// Writes what is queued, once established (`None` before): how many bytes are wholly
    /// written, and the error that ended the stream.
    pub(crate) fn flush(&mut self) -> Option<(usize, Option<io::Error>)> {
        match &mut self.state {
            State::Open(link) => {
                let (accepted, err) = self.queue.flush(link);
                let (written, settle_err) = link.settle(accepted);
                Some((written, err.or(settle_err)))
            }
            _ => None,
        }
    }

    /// The addresses are known: connect to the first that accepts, in order.
    pub(crate) fn dial(
        &mut self,
        registry: &Registry,
        token: Token,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Step {
        let rest: VecDeque<SocketAddr> = addrs.into_iter().collect();
        if rest.is_empty() {
            return self.lookup_failed("the name has no address");
        }
        self.next_address(registry, token, rest, Vec::new())
    }

    /// Readiness (or an error) on a connection being established: is it done?
    pub(crate) fn ready(&mut self, registry: &Registry, token: Token) -> Step {
        if let State::Handshaking(_) = self.state {
            return self.handshake(registry);
        }
        let State::Connecting { stream, addr, .. } = &mut self.state else {
            return Step::Pending;
        };
        let addr = *addr;
        // mio's recipe: a pending error means it failed; a peer address means it is
        // established; `NotConnected` means it is still under way.
        let outcome = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => Ok(true),
                Err(e)
                    if e.kind() == io::ErrorKind::NotConnected
                        || e.raw_os_error() == Some(libc::EINPROGRESS) =>
                {
                    Ok(false)
                }
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(false) => Step::Pending,
            Ok(true) => {
                let State::Connecting { stream, .. } =
                    std::mem::replace(&mut self.state, State::Done)
                else {
                    return Step::Pending; // matched above
                };
                match &self.tls {
                    None => {
                        self.state = State::Open(Link::plain(stream));
                        Step::Connected
                    }
                    Some((tls, host)) => match Link::client(stream, tls, host) {
                        Ok(link) => {
                            if tls.insecure {
                                log::warn!(
                                    "{}: TLS without verifying the server's certificate \
                                     (--tls-insecure-skip-verify): anyone on the path can \
                                     read and change this connection",
                                    self.target
                                );
                            }
                            self.state = State::Handshaking(link);
                            self.handshake(registry)
                        }
                        Err(why) => {
                            self.state = State::Done;
                            Step::Failed(format!("TLS with {} failed: {why}", self.target))
                        }
                    },
                }
            }
            Err(e) => {
                let State::Connecting {
                    mut stream,
                    rest,
                    mut errors,
                    ..
                } = std::mem::replace(&mut self.state, State::Done)
                else {
                    return Step::Pending; // matched above
                };
                let _ = registry.deregister(&mut stream);
                drop(stream);
                errors.push((addr, e));
                self.next_address(registry, token, rest, errors)
            }
        }
    }

    /// Drives the TLS handshake: established once it is done.
    fn handshake(&mut self, registry: &Registry) -> Step {
        let State::Handshaking(link) = &mut self.state else {
            return Step::Pending;
        };
        let why = match link.handshake() {
            Ok(false) => return Step::Pending,
            Ok(true) => {
                if let State::Handshaking(link) = std::mem::replace(&mut self.state, State::Done) {
                    self.state = State::Open(link);
                }
                return Step::Connected;
            }
            Err(e) => match Failure::of(&e) {
                Some(Failure::NotTls) => {
                    "the server does not speak TLS (is the URL http:// rather than https://?)"
                        .to_owned()
                }
                Some(Failure::Tls(why)) => why.clone(),
                None => e.to_string(),
            },
        };
        if let State::Handshaking(mut link) = std::mem::replace(&mut self.state, State::Done) {
            let _ = registry.deregister(&mut link.tcp);
        }
        Step::Failed(format!("TLS with {} failed: {why}", self.target))
    }

    /// Starts a connect to the next address that does not fail at once.
    fn next_address(
        &mut self,
        registry: &Registry,
        token: Token,
        mut rest: VecDeque<SocketAddr>,
        mut errors: Vec<(SocketAddr, io::Error)>,
    ) -> Step {
        while let Some(addr) = rest.pop_front() {
            let started = TcpStream::connect(addr).and_then(|mut stream| {
                registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
                Ok(stream)
            });
            match started {
                Ok(stream) => {
                    self.state = State::Connecting {
                        stream,
                        addr,
                        rest,
                        errors,
                    };
                    return Step::Pending;
                }
                Err(e) => errors.push((addr, e)),
            }
        }
        self.state = State::Done;
        let why = match errors.as_slice() {
            [(_, e)] if self.literal => e.to_string(),
            _ => {
                let mut why = errors
                    .iter()
                    .take(ERRORS_LISTED)
                    .map(|(addr, e)| format!("{addr}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                let more = errors.len().saturating_sub(ERRORS_LISTED);
                if more > 0 {
                    why.push_str(&format!("; and {more} more addresses"));
                }
                why
            }
        };
        Step::Failed(format!("cannot connect to {}: {why}", self.target))
    }

    /// Stops watching it and closes its socket, whatever state it is in.
    pub(crate) fn close(&mut self, registry: &Registry) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Connecting { mut stream, .. } => {
                let _ = registry.deregister(&mut stream);
            }
            State::Handshaking(mut link) => {
                let _ = registry.deregister(&mut link.tcp);
            }
            State::Open(mut link) => {
                link.close_notify();
                let _ = registry.deregister(&mut link.tcp);
            }
            State::Resolving | State::Done => {}
        }
    }
}

/// Name lookups waiting for a worker thread, and how many threads run.
#[derive(Default)]
pub(crate) struct Resolver {
    waiting: VecDeque<(u64, String, u16)>,
    running: usize,
}

impl Resolver {
    /// Asks for `host:port`'s addresses, for the upstream in `slot`: [`Event::Resolved`]
    /// comes back. Fails only if no thread could be started for it.
    pub(crate) fn resolve(
        &mut self,
        slot: u64,
        host: String,
        port: u16,
        events: &Sender<Event>,
        waker: &Arc<Waker>,
    ) -> io::Result<()> {
        if self.running >= MAX_RESOLVERS {
            self.waiting.push_back((slot, host, port));
            return Ok(());
        }
        self.start(slot, host, port, events, waker)
    }

    /// A lookup finished ([`Event::Resolved`] arrived): start the next one waiting, if its
    /// upstream still wants it (`wanted`). Returns the slots whose lookup could not start.
    pub(crate) fn finished(
        &mut self,
        events: &Sender<Event>,
        waker: &Arc<Waker>,
        wanted: impl Fn(u64) -> bool,
    ) -> Vec<(u64, String)> {
        self.running = self.running.saturating_sub(1);
        let mut failed = Vec::new();
        while self.running < MAX_RESOLVERS {
            let Some((slot, host, port)) = self.waiting.pop_front() else {
                break;
            };
            if !wanted(slot) {
                continue;
            }
            if let Err(e) = self.start(slot, host, port, events, waker) {
                failed.push((slot, format!("cannot start a name lookup: {e}")));
            }
        }
        failed
    }

    fn start(
        &mut self,
        slot: u64,
        host: String,
        port: u16,
        events: &Sender<Event>,
        waker: &Arc<Waker>,
    ) -> io::Result<()> {
        let events = events.clone();
        let waker = Arc::clone(waker);
        thread::Builder::new()
            .name("mcp-relay-resolve".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let addrs = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect)
                    .map_err(|e| e.to_string());
                // The runtime may be gone: then nobody wants the answer.
                if events.send(Event::Resolved(slot, addrs)).is_ok() {
                    let _ = waker.wake();
                }
            })?;
        self.running += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_relay_core::ChildId;
    use mio::{Events, Poll};
    use std::net::TcpListener;
    use std::time::Duration;

    const ID: UpId = UpId {
        server: ChildId(1),
        n: 0,
    };

    /// Dials `addrs` and polls until the attempt is decided (at most 10 s).
    fn dial(addrs: Vec<SocketAddr>) -> (Step, Upstream) {
        let mut poll = Poll::new().expect("poll");
        let (mut up, _) = Upstream::new(ID, "test", 0);
        let token = Token(7);
        let mut step = up.dial(poll.registry(), token, addrs);
        let mut events = Events::with_capacity(8);
        let mut rounds = 0;
        while step == Step::Pending {
            rounds += 1;
            assert!(rounds < 100, "no decision");
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .expect("poll");
            if events.iter().any(|e| e.token() == token) {
                step = up.ready(poll.registry(), token);
            }
        }
        (step, up)
    }

    /// A port nobody listens on (bound, then closed).
    fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }

    #[test]
    fn connects_to_a_listener() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (step, mut up) = dial(vec![l.local_addr().expect("addr")]);
        assert_eq!(step, Step::Connected);
        assert!(up.stream().is_some());
    }

    #[test]
    fn refused_everywhere_says_where() {
        let (a, b) = (closed_port(), closed_port());
        let (step, mut up) = dial(vec![a, b]);
        let Step::Failed(why) = step else {
            panic!("{step:?}")
        };
        assert!(
            why.contains(&a.to_string()) && why.contains(&b.to_string()),
            "{why}"
        );
        assert!(why.contains("refused"), "{why}");
        assert!(up.stream().is_none());
    }

    #[test]
    fn tries_the_next_address_after_a_refusal() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (step, _) = dial(vec![closed_port(), l.local_addr().expect("addr")]);
        assert_eq!(step, Step::Connected);
    }

    #[test]
    fn no_address_fails() {
        let (step, _) = dial(vec![]);
        assert!(matches!(step, Step::Failed(_)), "{step:?}");
    }

    #[test]
    fn ip_addresses_need_no_lookup() {
        let check = |host: &str, expect: Option<&str>| {
            let (_, addr) = Upstream::new(ID, host, 9);
            assert_eq!(addr.map(|a| a.to_string()).as_deref(), expect, "{host}");
        };
        check("127.0.0.1", Some("127.0.0.1:9"));
        check("::1", Some("[::1]:9"));
        check("[::1]", Some("[::1]:9"));
        check("localhost", None);
        check("example.com", None);
    }

    #[test]
    fn lookups_beyond_the_limit_wait_their_turn() {
        let poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut r = Resolver::default();
        let n = MAX_RESOLVERS as u64 + 2;
        for slot in 0..n {
            r.resolve(slot, "localhost".into(), 80, &tx, &waker)
                .expect("resolve");
        }
        assert_eq!((r.running, r.waiting.len()), (MAX_RESOLVERS, 2));
        let mut answered = Vec::new();
        while answered.len() < n as usize - 1 {
            let Ok(Event::Resolved(slot, addrs)) = rx.recv_timeout(Duration::from_secs(10)) else {
                panic!("no lookup result");
            };
            let addrs = addrs.expect("localhost resolves");
            assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
            answered.push(slot);
            // The last one waiting is no longer wanted.
            assert!(r.finished(&tx, &waker, |s| s != n - 1).is_empty());
        }
        answered.sort();
        assert_eq!(answered, (0..n).filter(|s| *s != n - 1).collect::<Vec<_>>());
        assert_eq!((r.running, r.waiting.len()), (0, 0));
    }
}
