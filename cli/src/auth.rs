//! Logging in to a remote server (`--connect https://…` behind OAuth): the driver of the
//! core's sans-IO [`OAuth`] machine, before the relay starts.
//!
//! Before the runtime starts, the relay asks the remote whether it needs a token (a JSON-RPC
//! `ping` POSTed with the stored token, if any). A `401` starts the machine: a refresh when
//! a refresh token is stored, else a login in the browser. Its requests are made here,
//! blocking, one at a time (`Connection: close`, TLS through the relay's own client
//! configuration); the redirect comes back to a loopback listener on 127.0.0.1 whose port
//! is derived from the server's URL (so a registered redirect URI keeps working), with
//! fallbacks when it is taken. The token then goes on every request as
//! `Authorization: Bearer`.
//!
//! Tokens live in `$XDG_CONFIG_HOME/mcp-relay/auth/` (else `~/.config/...`), one file per
//! server, mode 0600; a lock file next to it (flock) makes several relays starting together
//! log in or refresh once: the others wait, then find the fresh token in the file.

use mcp_relay_core::auth::{AuthConfig, AuthOutput, AuthRequest, OAuth, Saved, Tokens, Url};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The flags that shape a login.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_metadata_url: Option<String>,
    pub no_browser: bool,
    pub url_command: Option<String>,
    pub callback_port: Option<u16>,
    pub login_timeout: Option<Duration>,
}

/// How long each HTTP exchange of the login may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The default time the user has to finish in the browser.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);
/// The range stable callback ports are taken from.
const PORT_BASE: u16 = 33_400;
const PORT_SPAN: u16 = 1_000;
/// The largest response the login reads.
const MAX_BODY: usize = 1 << 20;

/// What is stored per server.
#[derive(Serialize, Deserialize)]
struct Stored {
    server_url: String,
    #[serde(flatten)]
    saved: Saved,
    /// When the access token expires, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_unix: Option<u64>,
}

/// The directory tokens are stored in.
pub fn store_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("mcp-relay").join("auth"))
}

/// FNV-1a: a stable hash for file names and callback ports (not a secret).
fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The token file of a server.
pub fn store_path(dir: &Path, server_url: &str) -> PathBuf {
    let host: String = Url::parse(server_url)
        .map(|u| u.authority)
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{host}-{:016x}.json", fnv(server_url)))
}

fn load(path: &Path, server_url: &str) -> Option<Saved> {
    let text = fs::read_to_string(path).ok()?;
    let stored: Stored = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("ignoring the unreadable token file {}: {e}", path.display());
            return None;
        }
    };
    if stored.server_url != server_url {
        return None;
    }
    let mut saved = stored.saved;
    if let (Some(t), Some(at)) = (saved.tokens.as_mut(), stored.expires_at_unix) {
        let now = unix_now();
        let left = Duration::from_secs(at.saturating_sub(now));
        t.expires_at = Some(Instant::now() + left);
    }
    Some(saved)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn save(path: &Path, server_url: &str, saved: &Saved) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let expires_at_unix = saved
        .tokens
        .as_ref()
        .and_then(|t| t.expires_at)
        .map(|at| unix_now() + at.saturating_duration_since(Instant::now()).as_secs());
    let stored = Stored {
        server_url: server_url.to_owned(),
        saved: saved.clone(),
        expires_at_unix,
    };
    let text = serde_json::to_string_pretty(&stored).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// An exclusive lock on `<token file>.lock`, held until dropped.
struct Lock(#[allow(dead_code)] File);

fn lock(path: &Path) -> Result<Lock, String> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let lock_path = path.with_extension("lock");
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // SAFETY: flock on a descriptor this function owns; it blocks until the lock is free.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(format!(
            "{}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(Lock(f))
}

/// Removes the stored token of `server_url`; whether there was one.
pub fn logout(server_url: &str) -> Result<bool, String> {
    let dir = store_dir().ok_or("no HOME or XDG_CONFIG_HOME to find the token store in")?;
    let path = store_path(&dir, server_url);
    let _lock = lock(&path)?;
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// A line about the stored token of `server_url` (never the token itself).
pub fn status(server_url: &str) -> Result<String, String> {
    let dir = store_dir().ok_or("no HOME or XDG_CONFIG_HOME to find the token store in")?;
    let path = store_path(&dir, server_url);
    let Some(saved) = load(&path, server_url) else {
        return Ok(format!("{server_url}: not logged in ({})", path.display()));
    };
    let Some(t) = saved.tokens else {
        return Ok(format!(
            "{server_url}: registered, no token ({})",
            path.display()
        ));
    };
    let expiry = match t.expires_at {
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now()).as_secs();
            if left == 0 {
                "expired".to_owned()
            } else {
                format!("expires in {left}s")
            }
        }
        None => "no expiry given".to_owned(),
    };
    Ok(format!(
        "{server_url}: logged in (scope {}; {expiry}; {}refresh token) ({})",
        t.scope.as_deref().unwrap_or("none"),
        if t.refresh_token.is_some() { "" } else { "no " },
        path.display()
    ))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Logs in to one remote server, as often as it takes: at startup, when the remote refuses
/// a token mid-session (401: refresh, else log in; 403 `insufficient_scope`: step up), and
/// before the token expires. Every refresh or login happens under the token file's lock, so
/// that relays sharing the file do it once and the others take the result.
pub struct Login {
    server_url: String,
    path: PathBuf,
    opts: Options,
    http: Http,
    /// Authorizations (browser logins) left for this process: a server that keeps refusing
    /// cannot loop the relay through the browser.
    budget: u32,
    /// When the token in use should be refreshed.
    refresh_at: Option<Instant>,
    /// The token in use.
    current: Option<String>,
    /// Tokens given to the relay's core so far ([`Login::given`]): the core's
    /// `RemoteConfig::login_generation`.
    given: u32,
}

/// Browser logins one relay process runs at most.
const MAX_AUTHORIZATIONS: u32 = 3;

impl Login {
    pub fn new(
        server_url: &str,
        opts: &Options,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Login, String> {
        let dir = store_dir().ok_or("no HOME or XDG_CONFIG_HOME for the token store")?;
        Ok(Login::in_dir(&dir, server_url, opts, tls))
    }

    /// With the token store in `dir`.
    fn in_dir(
        dir: &Path,
        server_url: &str,
        opts: &Options,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Login {
        Login {
            server_url: server_url.to_owned(),
            path: store_path(dir, server_url),
            opts: opts.clone(),
            http: Http { tls },
            budget: MAX_AUTHORIZATIONS,
            refresh_at: None,
            current: None,
            given: 0,
        }
    }

    /// The stored token, if it has not expired: what the relay starts with (a remote that
    /// refuses it, or wants one when there is none, gets a refresh or a login then).
    pub fn stored(&mut self) -> Option<String> {
        let saved = load(&self.path, &self.server_url)?;
        let t = saved
            .tokens
            .filter(|t| t.expires_at.is_none_or(|at| at > Instant::now()))?;
        log::info!("using the stored token for {}", self.server_url);
        self.note(&t);
        Some(t.access_token)
    }

    /// Logs in afresh (`mcp-relay auth login`): asks the remote for its challenge first (a
    /// `ping` POSTed without a token), so that its `resource_metadata` and `scope` count.
    pub fn login(&mut self) -> Result<String, String> {
        let (status, www) = probe(&mut self.http, &self.server_url, None)?;
        if status != 401 {
            log::info!(
                "{} answered HTTP {status} without a token; logging in anyway",
                self.server_url
            );
        }
        self.obtain(401, www.as_deref(), true)
    }

    /// The remote refused the token in use (401), or its scope (403): a new one.
    /// `generation` is the refused token's: one older than the last given means another
    /// session's refusal already brought a new token, which is the answer (no login).
    pub fn challenged(
        &mut self,
        status: u16,
        www: Option<&str>,
        generation: u32,
    ) -> Result<String, String> {
        if let (Some(token), true) = (&self.current, generation < self.given) {
            return Ok(token.clone());
        }
        self.obtain(status, www, false)
    }

    /// A token was given to the core (its generation goes up by one).
    pub fn given(&mut self) {
        self.given += 1;
    }

    /// When the token should be refreshed, if it can be.
    pub fn refresh_at(&self) -> Option<Instant> {
        self.refresh_at
    }

    /// Refreshes the token (it is about to expire).
    pub fn refresh(&mut self) -> Result<String, String> {
        self.refresh_at = None;
        self.obtain(0, None, false)
    }

    fn note(&mut self, t: &Tokens) {
        self.current = Some(t.access_token.clone());
        self.refresh_at = t.refresh_token.as_ref().and(t.expires_at).map(|at| {
            at.checked_sub(mcp_relay_core::auth::REFRESH_EARLY)
                .unwrap_or(at)
        });
    }

    /// A token after a refusal with `status` (0: a refresh before expiry), under the lock.
    fn obtain(&mut self, status: u16, www: Option<&str>, force: bool) -> Result<String, String> {
        let _lock = lock(&self.path)?;
        let stored = if force {
            None
        } else {
            load(&self.path, &self.server_url)
        };
        // Another relay may have refreshed or logged in while this one waited for the lock:
        // a stored token other than the one in use, still valid for a while, is taken (not
        // for a step-up, which needs more scope than any token so far).
        if status != 403 {
            let fresh = stored
                .as_ref()
                .and_then(|s| s.tokens.as_ref())
                .filter(|t| Some(&t.access_token) != self.current.as_ref())
                .filter(|t| {
                    t.expires_at
                        .is_none_or(|at| at > Instant::now() + mcp_relay_core::auth::REFRESH_EARLY)
                })
                .cloned();
            if let Some(t) = fresh {
                log::info!(
                    "took the token another relay stored for {}",
                    self.server_url
                );
                self.note(&t);
                return Ok(t.access_token);
            }
        }
        let (listener, redirect_uri) =
            callback_listener(&self.server_url, self.opts.callback_port)?;
        let mut seed = [0u8; 32];
        getrandom(&mut seed)?;
        let config = AuthConfig {
            server_url: self.server_url.clone(),
            redirect_uri,
            client_id: self.opts.client_id.clone(),
            client_secret: self.opts.client_secret.clone(),
            client_metadata_url: self.opts.client_metadata_url.clone(),
            client_name: "mcp-relay".into(),
            max_authorizations: self.budget,
            login_timeout: self.opts.login_timeout.unwrap_or(LOGIN_TIMEOUT),
            sha256,
            seed,
        };
        let mut machine = OAuth::new(config, stored);
        let now = Instant::now();
        if status == 0 {
            if !machine.refresh(now) {
                return Err("no refresh token to refresh with".into());
            }
        } else {
            machine.handle_challenge(now, status, www);
        }
        let got = drive(&mut machine, &mut self.http, &listener, &self.opts);
        self.budget = self.budget.saturating_sub(machine.authorizations());
        let tokens = got?;
        save(&self.path, &self.server_url, &machine.saved())?;
        log::info!(
            "got a token for {}; stored in {}",
            self.server_url,
            self.path.display()
        );
        self.note(&tokens);
        Ok(tokens.access_token)
    }
}

/// Runs the machine until it has tokens or fails.
fn drive(
    machine: &mut OAuth,
    http: &mut Http,
    listener: &TcpListener,
    opts: &Options,
) -> Result<Tokens, String> {
    let mut opener = None;
    loop {
        let Some(out) = machine.poll_output() else {
            if !machine.busy() {
                return Err(
                    "nothing to log in for (the remote's refusal is not about a token)".into(),
                );
            }
            // Waiting for the browser's redirect.
            let deadline = machine
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + LOGIN_TIMEOUT);
            match wait_redirect(listener, deadline, &mut opener)? {
                Some(query) => machine.handle_redirect(Instant::now(), &query),
                None => machine.handle_timeout(Instant::now()),
            }
            continue;
        };
        match out {
            AuthOutput::Fetch(req) => match http.fetch(&req) {
                Ok((status, body)) => {
                    log::debug!("login: {} {} -> {status}", req.method, req.url);
                    machine.handle_response(Instant::now(), req.id, status, &body)
                }
                Err(e) => {
                    log::debug!("login: {} {} failed: {e}", req.method, req.url);
                    machine.handle_fetch_failed(Instant::now(), req.id, &e)
                }
            },
            AuthOutput::Authorize(url) => {
                opener = open_url(&url, opts);
            }
            AuthOutput::Tokens(t) => {
                reap(&mut opener);
                return Ok(t);
            }
            AuthOutput::Failed(e) => {
                reap(&mut opener);
                return Err(format!("login failed: {e}"));
            }
        }
    }
}

fn reap(opener: &mut Option<std::process::Child>) {
    if let Some(mut c) = opener.take() {
        // The opener (a browser launcher or --auth-url-command) has done its part.
        if c.try_wait().ok().flatten().is_none() {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

/// Shows the URL on stderr (never stdout: that is the MCP stream) and opens it.
fn open_url(url: &str, opts: &Options) -> Option<std::process::Child> {
    eprintln!("mcp-relay: to log in, open this URL in a browser:\n{url}");
    let mut cmd = if let Some(command) = &opts.url_command {
        let mut parts = command.split_whitespace();
        let program = parts.next()?;
        let mut c = std::process::Command::new(program);
        c.args(parts);
        c
    } else if opts.no_browser {
        return None;
    } else if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else {
        std::process::Command::new("xdg-open")
    };
    cmd.arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    match cmd.spawn() {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn!("could not open the authorization URL ({e}); open it by hand");
            None
        }
    }
}

/// The loopback listener for the redirect: the port of `--auth-callback-port`, else one
/// derived from the URL, else the next few, else any.
fn callback_listener(
    server_url: &str,
    pinned: Option<u16>,
) -> Result<(TcpListener, String), String> {
    let bind = |port: u16| TcpListener::bind(("127.0.0.1", port));
    let listener = match pinned {
        Some(p) => bind(p).map_err(|e| format!("--auth-callback-port {p}: {e}"))?,
        None => {
            // Truncation is the point: a port in [PORT_BASE, PORT_BASE + PORT_SPAN).
            let first = PORT_BASE + (fnv(server_url) % u64::from(PORT_SPAN)) as u16;
            (0..8)
                .map(|i| first + i)
                .find_map(|p| bind(p).ok())
                .map_or_else(|| bind(0), Ok)
                .map_err(|e| format!("no loopback port for the login callback: {e}"))?
        }
    };
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok((listener, format!("http://127.0.0.1:{port}/callback")))
}

/// The query of the next `GET /callback?…`, or `None` at the deadline.
fn wait_redirect(
    listener: &TcpListener,
    deadline: Instant,
    opener: &mut Option<std::process::Child>,
) -> Result<Option<String>, String> {
    loop {
        if Instant::now() >= deadline {
            return Ok(None);
        }
        if let Some(c) = opener.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                if !status.success() {
                    log::warn!("the authorization URL opener exited with {status}");
                }
                *opener = None;
            }
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if let Some(q) = serve_callback(stream) {
                    return Ok(Some(q));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("the login callback listener failed: {e}")),
        }
    }
}

/// Reads one request; answers it; the query if it was the callback.
fn serve_callback(mut stream: TcpStream) -> Option<String> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let target = line
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("GET "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let ours = path == "/callback" && !query.is_empty();
    let (status, text) = if ours {
        (
            "200 OK",
            "mcp-relay: the login is done; you can close this tab.",
        )
    } else {
        ("404 Not Found", "not found")
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    ours.then(|| query.to_owned())
}

fn getrandom(buf: &mut [u8]) -> Result<(), String> {
    let mut f = File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?;
    f.read_exact(buf).map_err(|e| format!("/dev/urandom: {e}"))
}

/// Asks the remote whether it wants a token: the status and `WWW-Authenticate` of a `ping`.
fn probe(http: &mut Http, url: &str, token: Option<&str>) -> Result<(u16, Option<String>), String> {
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        (
            "Accept".to_owned(),
            "application/json, text/event-stream".to_owned(),
        ),
    ];
    if let Some(t) = token {
        headers.push(("Authorization".into(), format!("Bearer {t}")));
    }
    let req = AuthRequest {
        id: 0,
        method: "POST",
        url: url.to_owned(),
        headers,
        body: br#"{"jsonrpc":"2.0","id":"mcp-relay-auth-probe","method":"ping"}"#.to_vec(),
    };
    let (status, head, _) = http.exchange(&req, true)?;
    Ok((status, head))
}

/// One-shot HTTP/1.1 exchanges.
struct Http {
    tls: Option<Arc<rustls::ClientConfig>>,
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl Http {
    fn fetch(&mut self, req: &AuthRequest) -> Result<(u16, Vec<u8>), String> {
        let (status, _, body) = self.exchange(req, false)?;
        Ok((status, body))
    }

    /// Sends `req`; the status, the `WWW-Authenticate` header(s) and the body (not read when
    /// `head_only`: an event stream may never end).
    fn exchange(
        &mut self,
        req: &AuthRequest,
        head_only: bool,
    ) -> Result<(u16, Option<String>, Vec<u8>), String> {
        let url =
            Url::parse(&req.url).ok_or_else(|| format!("{} is not an http(s) URL", req.url))?;
        let https = url.scheme == "https";
        let (host, port) = split_authority(&url.authority, if https { 443 } else { 80 });
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()
            .map_err(|e| format!("{host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}: no address"))?;
        let tcp = TcpStream::connect_timeout(&addr, FETCH_TIMEOUT)
            .map_err(|e| format!("{}: {e}", url.authority))?;
        let _ = tcp.set_read_timeout(Some(FETCH_TIMEOUT));
        let _ = tcp.set_write_timeout(Some(FETCH_TIMEOUT));
        let mut stream: Box<dyn Stream> = if https {
            let config = match &self.tls {
                Some(c) => Arc::clone(c),
                None => {
                    let loaded = crate::tls::client_config(None, false)?;
                    let c = Arc::new(loaded.config);
                    self.tls = Some(Arc::clone(&c));
                    c
                }
            };
            let name = rustls::pki_types::ServerName::try_from(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            )
            .map_err(|e| format!("{host}: {e}"))?;
            let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        } else {
            Box::new(tcp)
        };
        let path = match &url.query {
            Some(q) => format!("{}?{q}", url.path),
            None => url.path.clone(),
        };
        let mut head = format!(
            "{} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mcp-relay/{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            req.method,
            url.authority,
            env!("CARGO_PKG_VERSION"),
            req.body.len()
        );
        for (k, v) in &req.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(&req.body))
            .and_then(|()| stream.flush())
            .map_err(|e| format!("{}: {e}", url.authority))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let (status, www, body_at, chunked, length) = loop {
            let n = stream
                .read(&mut chunk)
                .map_err(|e| format!("{}: {e}", url.authority))?;
            if n == 0 {
                return Err(format!(
                    "{}: the connection closed before a response",
                    url.authority
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(at)) => {
                    let status = resp.code.unwrap_or(0);
                    let get_all = |name: &str| {
                        let v: Vec<String> = resp
                            .headers
                            .iter()
                            .filter(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).into_owned())
                            .collect();
                        (!v.is_empty()).then(|| v.join(", "))
                    };
                    let chunked = get_all("transfer-encoding")
                        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                    let length =
                        get_all("content-length").and_then(|v| v.trim().parse::<usize>().ok());
                    break (status, get_all("www-authenticate"), at, chunked, length);
                }
                Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => continue,
                Ok(httparse::Status::Partial) => return Err("response head too large".into()),
                Err(e) => return Err(format!("{}: bad response: {e}", url.authority)),
            }
        };
        if head_only {
            return Ok((status, www, Vec::new()));
        }
        let mut body = buf.split_off(body_at);
        loop {
            if length.is_some_and(|l| body.len() >= l) || body.len() > MAX_BODY {
                break;
            }
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
                // A TLS peer that closes without close_notify: what arrived is the body.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(format!("{}: {e}", url.authority)),
            }
        }
        if let Some(l) = length {
            body.truncate(l);
        }
        if chunked {
            body = dechunk(&body);
        }
        Ok((status, www, body))
    }
}

fn split_authority(authority: &str, default: u16) -> (String, u16) {
    match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h.to_owned(), p.parse().unwrap_or(default)),
        _ => (authority.to_owned(), default),
    }
}

/// A chunked body's data (what there is of it).
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token endpoint that rotates refresh tokens: each may be used once. Counts requests.
    fn token_endpoint() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        std::thread::spawn(move || {
            let mut used = Vec::<String>::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !String::from_utf8_lossy(&buf).contains("grant_type") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                let text = String::from_utf8_lossy(&buf).into_owned();
                let rt = text
                    .split("refresh_token=")
                    .nth(1)
                    .map(|r| r.split('&').next().unwrap_or("").to_owned())
                    .unwrap_or_default();
                let (status, body) = if used.contains(&rt) {
                    ("400 Bad Request", r#"{"error":"invalid_grant"}"#.to_owned())
                } else {
                    used.push(rt);
                    (
                        "200 OK",
                        format!(
                            r#"{{"access_token":"AT{n}","token_type":"Bearer","expires_in":3600,"refresh_token":"RT{n}"}}"#
                        ),
                    )
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, count)
    }

    #[test]
    fn two_relays_sharing_a_store_refresh_once() {
        use std::sync::atomic::Ordering;
        let (token_url, count) = token_endpoint();
        let dir = std::env::temp_dir().join(format!("mcp-relay-auth-race-{}", std::process::id()));
        let server = "http://127.0.0.1:9/mcp";
        let saved = Saved {
            issuer: Some("http://127.0.0.1:9".into()),
            authorization_endpoint: Some("http://127.0.0.1:9/authorize".into()),
            token_endpoint: Some(token_url),
            resource: Some(server.into()),
            client_id: Some("c".into()),
            registered: true,
            tokens: Some(Tokens {
                access_token: "AT0".into(),
                refresh_token: Some("RT0".into()),
                scope: None,
                // Inside the refresh margin: due now.
                expires_at: Some(Instant::now() + Duration::from_secs(30)),
            }),
            ..Saved::default()
        };
        save(&store_path(&dir, server), server, &saved).unwrap();
        // Every relay has read the store before any refreshes: they all hold AT0.
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let relays: Vec<_> = (0..4)
            .map(|_| {
                let dir = dir.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    // Bounded: a relay that wrongly needed a login would fail in 2 s.
                    let opts = Options {
                        no_browser: true,
                        login_timeout: Some(Duration::from_secs(2)),
                        ..Options::default()
                    };
                    let mut l = Login::in_dir(&dir, server, &opts, None);
                    assert_eq!(l.stored().as_deref(), Some("AT0"));
                    assert!(l.refresh_at().is_some_and(|at| at <= Instant::now()));
                    barrier.wait();
                    l.refresh()
                })
            })
            .collect();
        let tokens: Vec<String> = relays
            .into_iter()
            .map(|t| t.join().unwrap().expect("a refreshed token"))
            .collect();
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "one refresh for four relays"
        );
        assert!(tokens.iter().all(|t| t == "AT1"), "{tokens:?}");
        let stored = load(&store_path(&dir, server), server)
            .unwrap()
            .tokens
            .unwrap();
        assert_eq!(
            stored.refresh_token.as_deref(),
            Some("RT1"),
            "the rotated token is kept"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
        assert_eq!(dechunk(b"zz\r\n"), b"");
    }

    #[test]
    fn store_paths_are_per_server_and_stable() {
        let d = Path::new("/tmp/x");
        let a = store_path(d, "https://mcp.example.com/mcp");
        assert_eq!(a, store_path(d, "https://mcp.example.com/mcp"));
        assert_ne!(a, store_path(d, "https://mcp.example.com/other"));
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("mcp.example.com-"));
        assert_eq!(split_authority("[::1]:8080", 80), ("[::1]".into(), 8080));
        assert_eq!(split_authority("[::1]", 80), ("[::1]".into(), 80));
        assert_eq!(split_authority("h", 443), ("h".into(), 443));
    }

    #[test]
    fn tokens_round_trip_through_the_file_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mcp-relay-auth-test-{}", std::process::id()));
        let path = store_path(&dir, "http://h/mcp");
        let saved = Saved {
            client_id: Some("c".into()),
            tokens: Some(Tokens {
                access_token: "AT".into(),
                refresh_token: Some("RT".into()),
                scope: None,
                expires_at: Some(Instant::now() + Duration::from_secs(100)),
            }),
            ..Saved::default()
        };
        save(&path, "http://h/mcp", &saved).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = load(&path, "http://h/mcp").unwrap();
        let t = back.tokens.unwrap();
        assert_eq!(t.access_token, "AT");
        let left = t
            .expires_at
            .unwrap()
            .saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(95) && left <= Duration::from_secs(100),
            "{left:?}"
        );
        assert!(
            load(&path, "http://other/mcp").is_none(),
            "another server's file is not used"
        );
        let _l = lock(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
