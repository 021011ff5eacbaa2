//! TLS, spliced in once below the core: a [`Link`] is a TCP socket that reads and writes
//! plaintext, with rustls between it and the wire when the listener or the remote asks for
//! it. The core sees the same bytes either way; it never learns whether a connection is
//! encrypted.
//!
//! Byte accounting stays exact: `Input::Written` is reported for plaintext only once the
//! records that carry it are in the kernel's buffer, so the core's closing after its last
//! byte is written loses nothing. rustls holds at most [`BUFFER_LIMIT`] of plaintext
//! accepted but not yet encrypted (before the handshake ends), and its own records.
//!
//! Certificates are the binary's business (files, SIGHUP): it hands over a
//! [`rustls::ServerConfig`] through a [`ServerTls`], whose [`ServerTls::replace`] takes effect
//! for the next handshake while established connections keep theirs.

use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::sync::{Arc, RwLock};

pub use rustls;

/// The most plaintext rustls keeps for one connection before it is encrypted and written
/// (what the core hands out while a handshake is under way waits here; past it, the write
/// waits).
pub const BUFFER_LIMIT: usize = 64 * 1024;

/// A listener's TLS: the server configuration new handshakes use. Cheap to clone; every
/// clone sees a [`ServerTls::replace`].
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl ServerTls {
    /// TLS with this configuration (its certificate, client verification and ALPN).
    pub fn new(config: rustls::ServerConfig) -> ServerTls {
        ServerTls {
            config: Arc::new(RwLock::new(Arc::new(config))),
        }
    }

    /// Uses `config` for every handshake from now on (a renewed certificate, say);
    /// connections already established keep theirs. Callable from any thread.
    pub fn replace(&self, config: rustls::ServerConfig) {
        let config = Arc::new(config);
        match self.config.write() {
            Ok(mut slot) => *slot = config,
            // A writer panicked while holding the lock; the slot is a plain Arc and is
            // still whole.
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// The configuration a handshake starting now uses.
    pub(crate) fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.config.read() {
            Ok(slot) => Arc::clone(&slot),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// How the relay speaks TLS to `https://` remotes.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// Trust anchors, client certificate (if any) and ALPN.
    pub config: Arc<rustls::ClientConfig>,
    /// The configuration verifies nothing (`--tls-insecure-skip-verify`): every connection
    /// is logged with a warning.
    pub insecure: bool,
}

/// What a plaintext peer on a TLS port is told before it is closed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PlainReply {
    /// An `https://` listener: an HTTP 400 a browser or curl shows.
    Http,
    /// A `tls://` listener: a JSON-RPC error line.
    JsonRpc,
}

impl PlainReply {
    fn bytes(self) -> &'static [u8] {
        match self {
            PlainReply::Http => {
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
                  Content-Length: 55\r\nConnection: close\r\n\r\n\
                  mcp-relay: this port speaks HTTPS; use an https:// URL\n"
            }
            PlainReply::JsonRpc => {
                b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\
                  \"mcp-relay: this port speaks TLS; connect with TLS (tls://)\"}}\n"
            }
        }
    }
}

/// Why a TLS connection failed: the `io::Error`'s payload, so that the runtime can tell a
/// plaintext peer from a failed handshake.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The peer's first bytes are not a TLS record (it speaks plain HTTP or JSON, say).
    NotTls,
    /// rustls refused what the peer sent, or the peer sent an alert.
    Tls(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotTls => f.write_str("the peer does not speak TLS"),
            Failure::Tls(why) => write!(f, "TLS: {why}"),
        }
    }
}

impl std::error::Error for Failure {}

impl Failure {
    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// The failure an I/O error carries, if it is one.
    pub(crate) fn of(e: &io::Error) -> Option<&Failure> {
        e.get_ref()?.downcast_ref::<Failure>()
    }
}

/// The first byte of every TLS record a handshake starts with (a handshake record), and of
/// an alert (a server refusing a client at once).
const HANDSHAKE: u8 = 0x16;
const ALERT: u8 = 0x15;

struct Tls {
    conn: rustls::Connection,
    /// Plaintext accepted whose records may not all be in the kernel's buffer yet.
    unacked: usize,
    /// Nothing has been read yet: the first byte is checked to be a TLS record's.
    fresh: bool,
    /// The TCP stream ended.
    tcp_eof: bool,
    /// A listener's side: what a plaintext peer is told.
    plain_reply: Option<PlainReply>,
}

/// A TCP socket that reads and writes plaintext, through rustls on a TLS connection.
pub(crate) struct Link {
    pub(crate) tcp: TcpStream,
    tls: Option<Box<Tls>>,
}

impl Link {
    /// A plain connection.
    pub(crate) fn plain(tcp: TcpStream) -> Link {
        Link { tcp, tls: None }
    }

    /// An accepted connection on a TLS listener; the handshake is driven by reads.
    pub(crate) fn server(
        tcp: TcpStream,
        tls: &ServerTls,
        reply: PlainReply,
    ) -> Result<Link, rustls::Error> {
        let mut conn = rustls::ServerConnection::new(tls.current())?;
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(Link {
            tcp,
            tls: Some(Box::new(Tls {
                conn: conn.into(),
                unacked: 0,
                fresh: true,
                tcp_eof: false,
                plain_reply: Some(reply),
            })),
        })
    }

    /// A connection the relay opened to `host`, to be verified against `tls`'s roots; the
    /// handshake is driven by [`Link::handshake`] before anything else.
    pub(crate) fn client(tcp: TcpStream, tls: &ClientTls, host: &str) -> Result<Link, String> {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| format!("{host:?} is not a name TLS can verify"))?;
        let mut conn = rustls::ClientConnection::new(Arc::clone(&tls.config), name)
            .map_err(|e| e.to_string())?;
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(Link {
            tcp,
            tls: Some(Box::new(Tls {
                conn: conn.into(),
                unacked: 0,
                fresh: true,
                tcp_eof: false,
                plain_reply: None,
            })),
        })
    }

    /// Whether rustls is in between.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Drives the handshake as far as the socket allows: `Ok(true)` once it is done,
    /// `Ok(false)` while it waits for the peer.
    pub(crate) fn handshake(&mut self) -> io::Result<bool> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(true);
        };
        loop {
            match push_records(tls, &mut self.tcp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !tls.conn.is_handshaking() {
                return Ok(true);
            }
            match receive(tls, &mut self.tcp) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes what rustls has ready, then says how much accepted plaintext (`accepted` more
    /// since the last call) is now wholly in the kernel: the count for `Input::Written`.
    pub(crate) fn settle(&mut self, accepted: usize) -> (usize, Option<io::Error>) {
        let Some(tls) = self.tls.as_deref_mut() else {
            return (accepted, None);
        };
        tls.unacked += accepted;
        let err = match push_records(tls, &mut self.tcp) {
            Ok(()) => None,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(e),
        };
        if !tls.conn.wants_write() && !tls.conn.is_handshaking() {
            (std::mem::take(&mut tls.unacked), err)
        } else {
            (0, err)
        }
    }

    /// Says goodbye properly on a TLS connection (best effort: it is about to be closed).
    pub(crate) fn close_notify(&mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.conn.send_close_notify();
            let _ = push_records(tls, &mut self.tcp);
        }
    }
}

/// Reads records from the socket and processes them: `Ok(false)` at its end.
fn receive(tls: &mut Tls, tcp: &mut TcpStream) -> io::Result<bool> {
    if tls.fresh {
        let mut first = [0u8; 1];
        match tcp.peek(&mut first) {
            Ok(0) => {}
            Ok(_) if first[0] == HANDSHAKE || first[0] == ALERT => tls.fresh = false,
            Ok(_) => {
                if let Some(reply) = tls.plain_reply {
                    // What the peer sent first is read and dropped (a close with unread input
                    // would reset the connection, and the reply with it); then the reply and
                    // our end of the stream. Best effort and small: a full socket buffer
                    // just loses the courtesy.
                    let mut sink = [0u8; 4096];
                    for _ in 0..4 {
                        if !matches!(tcp.read(&mut sink), Ok(n) if n > 0) {
                            break;
                        }
                    }
                    let _ = tcp.write(reply.bytes());
                    let _ = tcp.shutdown(std::net::Shutdown::Write);
                }
                return Err(Failure::NotTls.into_io());
            }
            Err(e) => return Err(e),
        }
    }
    let n = tls.conn.read_tls(tcp)?;
    if n == 0 {
        tls.tcp_eof = true;
    }
    if let Err(e) = tls.conn.process_new_packets() {
        // The alert that tells the peer why.
        let _ = push_records(tls, tcp);
        return Err(Failure::Tls(describe(&e)).into_io());
    }
    Ok(n != 0)
}

/// Writes rustls' pending records until none is left or the socket is full (`WouldBlock`).
fn push_records(tls: &mut Tls, tcp: &mut TcpStream) -> io::Result<()> {
    while tls.conn.wants_write() {
        match tls.conn.write_tls(tcp) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Read for Link {
    /// Plaintext: what rustls has decrypted, reading and processing records as needed (a
    /// handshake advances here). `Ok(0)` at the end, with or without `close_notify` (HTTP
    /// and line framing notice a truncated message themselves).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.tcp.read(buf);
        };
        loop {
            match tls.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if tls.tcp_eof {
                return Ok(0);
            }
            receive(tls, &mut self.tcp)?;
            // The handshake's answers, and anything it let go.
            match push_records(tls, &mut self.tcp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Link {
    /// Plaintext into rustls (records are written at once, as far as the socket takes them).
    /// `WouldBlock` while earlier records wait for room, or while rustls holds
    /// [`BUFFER_LIMIT`] of plaintext for a handshake not done yet.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.tcp.write(data);
        };
        push_records(tls, &mut self.tcp)?;
        let n = tls.conn.writer().write(data)?;
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match push_records(tls, &mut self.tcp) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.tcp.write_vectored(bufs),
            Some(_) => {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                self.write(first)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One line for a TLS error, in the words of someone who has to fix it.
pub(crate) fn describe(e: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "the peer's certificate is signed by an unknown CA \
                                 (for a private CA, pass it with --ca-cert FILE)"
                .into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("the peer's certificate is not valid for this name ({c:?})")
            }
            C::Expired | C::ExpiredContext { .. } => {
                format!("the peer's certificate has expired ({c:?})")
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("the peer's certificate is not valid yet ({c:?})")
            }
            C::Other(why) if format!("{why:?}").contains("CaUsedAsEndEntity") => {
                "the peer's certificate is a CA certificate, not a server's \
                 (serve a certificate issued by the CA, not the CA itself)"
                    .into()
            }
            // What webpki says of a self-signed certificate it was not told to trust.
            other if format!("{other:?}").starts_with("UnsupportedSignatureAlgorithm") => {
                "the peer's certificate is not signed by a CA trusted here (self-signed? \
                 pass it, or its CA, with --ca-cert FILE)"
                    .into()
            }
            other => format!("the peer's certificate is not acceptable: {other}"),
        },
        E::NoCertificatesPresented => "the peer sent no certificate, and one is required".into(),
        E::AlertReceived(alert) => format!("the peer refused the handshake (alert: {alert:?})"),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            format!("the peer does not speak TLS as expected ({e})")
        }
        other => other.to_string(),
    }
}

/// How often at most a kind of TLS failure on the listeners is logged: a scanner or a
/// misconfigured client must not flood the log.
const COMPLAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// TLS failures of accepted connections, logged at most once a [`COMPLAIN_EVERY`] per kind,
/// with a count of the ones left out.
#[derive(Default)]
pub(crate) struct Complaints {
    plain: Quiet,
    handshake: Quiet,
}

#[derive(Default)]
struct Quiet {
    last: Option<std::time::Instant>,
    left_out: u64,
}

impl Quiet {
    /// Whether to log now, and how many were left out since the last line.
    fn due(&mut self, now: std::time::Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < COMPLAIN_EVERY)
        {
            self.left_out += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.left_out))
    }
}

impl Complaints {
    /// A connection from `peer` to `listener` failed with `failure`.
    pub(crate) fn tls(
        &mut self,
        failure: &Failure,
        peer: std::net::SocketAddr,
        listener: Option<&str>,
    ) {
        let now = std::time::Instant::now();
        let on = listener.unwrap_or("a TLS listener");
        let more = |n: u64| {
            if n == 0 {
                String::new()
            } else {
                format!(" ({n} more like it since the last such line)")
            }
        };
        match failure {
            Failure::NotTls => {
                if let Some(n) = self.plain.due(now) {
                    log::warn!(
                        "plain HTTP (or other plaintext) from {peer} on {on}, which speaks TLS: \
                         answered and closed{}",
                        more(n)
                    );
                }
            }
            Failure::Tls(why) => {
                if let Some(n) = self.handshake.due(now) {
                    log::warn!("TLS with {peer} on {on} failed: {why}{}", more(n));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteQueue;
    use mio::net::TcpListener;
    use mio::{Events, Interest, Poll, Token};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::time::{Duration, Instant};

    /// A self-signed certificate for localhost (not a CA, so it can be its own trust anchor),
    /// made with the openssl CLI.
    fn certificate() -> (Vec<u8>, Vec<u8>) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("mcp-relay-tls-unit-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj"])
            .args(["/CN=localhost", "-addext", "subjectAltName=DNS:localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl CLI is needed to make test certificates");
        assert!(status.success());
        let pems = (
            std::fs::read(&cert).expect("cert"),
            std::fs::read(&key).expect("key"),
        );
        let _ = std::fs::remove_dir_all(&dir);
        pems
    }

    fn configs() -> (ServerTls, ClientTls) {
        let (cert, key) = certificate();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<_, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(&key).expect("key");
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(chain[0].clone()).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (
            ServerTls::new(server),
            ClientTls {
                config: Arc::new(client),
                insecure: false,
            },
        )
    }

    /// A connected pair of sockets, registered with `poll` (server token 1, client 2).
    fn pair(poll: &Poll) -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).expect("connect");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut server = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no connection");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        let both = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut server, Token(1), both)
            .expect("register");
        poll.registry()
            .register(&mut client, Token(2), both)
            .expect("register");
        (server, client)
    }

    /// The server queues `size` bytes before the handshake is done (the core may send at
    /// once); the client reads them all. `Written` counts come to exactly `size`, and only
    /// once the client could have received everything.
    #[test]
    fn everything_written_is_acknowledged_exactly_once() {
        let (server_tls, client_tls) = configs();
        let mut poll = Poll::new().expect("poll");
        let (s, c) = pair(&poll);
        let mut server = Link::server(s, &server_tls, PlainReply::Http).expect("server");
        let mut client = Link::client(c, &client_tls, "localhost").expect("client");
        let size = 3 * 1024 * 1024 + 17;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut queue = WriteQueue::default();
        for chunk in data.chunks(100_000) {
            queue.push(chunk.to_vec());
        }
        let (mut written, mut received) = (0usize, Vec::new());
        let mut handshaken = false;
        let mut buf = vec![0u8; 16 * 1024];
        let mut events = Events::with_capacity(16);
        let deadline = Instant::now() + Duration::from_secs(20);
        while received.len() < size || written < size {
            assert!(
                Instant::now() < deadline,
                "stalled at {written} written, {} received",
                received.len()
            );
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .expect("poll");
            if !handshaken {
                handshaken = client.handshake().expect("client handshake");
            }
            // The server reads (that drives its handshake), then flushes what it can.
            match server.read(&mut buf) {
                Ok(0) => panic!("server saw the end"),
                Ok(_) => panic!("the client sent no plaintext"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("server read: {e}"),
            }
            let (accepted, err) = queue.flush(&mut server);
            assert!(err.is_none(), "{err:?}");
            let (acked, err) = server.settle(accepted);
            assert!(err.is_none(), "{err:?}");
            written += acked;
            assert!(written <= size, "acknowledged more than was sent");
            if handshaken {
                loop {
                    match client.read(&mut buf) {
                        Ok(0) => panic!("client saw the end"),
                        Ok(n) => received.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("client read: {e}"),
                    }
                }
            }
        }
        assert_eq!(written, size);
        assert!(received == data, "the bytes arrived changed");
    }

    #[test]
    fn a_plaintext_request_gets_a_readable_answer() {
        let (server_tls, _) = configs();
        let poll = Poll::new().expect("poll");
        let (s, mut c) = pair(&poll);
        let mut server = Link::server(s, &server_tls, PlainReply::Http).expect("server");
        c.write_all(b"GET /mcp HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 64];
        let err = loop {
            match server.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "nothing arrived");
                    std::thread::sleep(Duration::from_millis(1));
                }
                other => break other.expect_err("plaintext is refused"),
            }
        };
        assert!(matches!(Failure::of(&err), Some(Failure::NotTls)), "{err}");
        let mut answer = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no answer");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        let answer = String::from_utf8(answer).expect("text");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        assert!(body.contains("this port speaks HTTPS"), "{body}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head} / {} bytes",
            body.len()
        );
    }

    #[test]
    fn errors_are_put_in_words() {
        use rustls::CertificateError as C;
        let check = |e: rustls::Error, expect: &str| {
            let got = describe(&e);
            assert!(got.contains(expect), "{e:?}: {got}");
        };
        check(C::UnknownIssuer.into(), "unknown CA");
        check(C::UnknownIssuer.into(), "--ca-cert");
        check(C::NotValidForName.into(), "not valid for");
        check(C::Expired.into(), "expired");
        check(rustls::Error::NoCertificatesPresented, "no certificate");
    }
}
