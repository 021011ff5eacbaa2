//! What the relay is configured to do, its defaults (the one place they live) and the rules a
//! configuration must follow. A [`Config`] is plain data; [`Config::validate`] says what is
//! wrong with one, in words an operator can act on. The CLI maps each problem to its flag.

use crate::remote_config::{RemoteConfig, RemoteTransport};
use crate::supervisor::RestartPolicy;
use std::fmt;
use std::time::Duration;

/// What the relay is configured to do. Start from [`Config::default`] and change what you
/// need; [`crate::Relay::new`] refuses a configuration that [`Config::validate`] refuses.
#[derive(Clone, Debug)]
pub struct Config {
    /// Longest line (JSON-RPC message) accepted from either side, in bytes.
    pub max_message_size: usize,
    /// Bytes queued toward one slow reader before the relay stops reading from the other side.
    pub max_buffered: usize,
    /// A line between a TCP client and its child that grows this long before it ends is
    /// forwarded as it arrives (cut-through), not when its newline comes; its newline still
    /// waits until the whole line is checked. `usize::MAX`: never.
    pub cut_through_from: usize,
    /// The most bytes the driver hands in with one `Input::Data` (its read size). A loaded
    /// session keeps at most one such read unframed until it can go on.
    pub max_read: usize,
    /// Client requests waiting for an answer before the relay stops reading the client.
    pub max_in_flight: usize,
    /// Time between each step of a child's stop sequence: stdin closed, SIGTERM, SIGKILL.
    pub shutdown_grace: Duration,
    /// On shutdown (and when a client half-closes), how long requests in flight may take to
    /// finish, and HTTP sessions are still served, before the server's stdin is closed;
    /// zero: do not wait.
    pub drain_timeout: Duration,
    /// A client request the server has not answered this long is answered with an error by
    /// the relay and cancelled at the server (`None`: never). Progress restarts the clock.
    pub request_timeout: Option<Duration>,
    /// How the server is named in error messages and logs (usually its command line).
    pub server_label: String,
    /// Period of `heartbeat_response` messages to clients that asked for heartbeats; such a
    /// client silent for twice this long is considered gone.
    pub heartbeat_interval: Duration,
    /// Probe a server that has been quiet this long (`None`: never).
    pub ping_interval: Option<Duration>,
    /// How long a probe, a replayed `initialize` or a stalled stdin may take before the
    /// server is considered hung.
    pub ping_timeout: Duration,
    /// When a server that ended is started again.
    pub restart: RestartPolicy,
    /// Delay before the first restart; it doubles with each restart inside the window.
    pub restart_delay: Duration,
    /// The longest delay before a restart.
    pub max_restart_delay: Duration,
    /// Restarts allowed within `restart_window`; past that the session ends.
    pub max_restarts: u32,
    /// The window over which `max_restarts` is counted.
    pub restart_window: Duration,
    /// The HTTP transports (used by connections accepted with [`crate::Transport::Http`]).
    pub http: HttpConfig,
    /// Children kept started ahead of need, so that a new session does not wait for one.
    pub prespawn: usize,
    /// Client connections open at once (TCP and HTTP); one past it is answered with an error
    /// (a JSON-RPC error line, or `503`) and closed. The mio runtime lowers the default to
    /// what the process's descriptor limit allows (and warns about a larger value set on
    /// purpose).
    pub max_connections: usize,
    /// A TCP session with no message either way and nothing in flight for this long is
    /// closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// After a reload leaves a server out (removed, or changed: its old definition), its
    /// sessions go on this long before they are drained like a shutdown's (`None`: until
    /// they end by themselves).
    pub retire_timeout: Option<Duration>,
    /// Seeds the generator of HTTP session ids. The mio runtime replaces the all-zero default
    /// with 32 bytes of OS entropy (ids must be unguessable); the simulation uses its test
    /// seed. A program driving the core itself must do the same.
    pub seed: [u8; 32],
    /// Client mode: sessions are served by a remote server reached over connections the
    /// relay opens, instead of a child process (`None`: a child per session).
    pub remote: Option<RemoteConfig>,
    /// Several servers behind one relay, each at `/servers/NAME/mcp` (and `/sse`); empty:
    /// the one server configured above (`ServerId(0)`). When it is not empty, the fields
    /// above that describe a server (`server_label`, `remote`, the restart, probe and
    /// prespawn settings) are read from each entry's own configuration instead.
    pub servers: Vec<NamedServer>,
}

/// One of several servers behind the relay.
#[derive(Clone, Debug)]
pub struct NamedServer {
    /// Its name: the `NAME` of `/servers/NAME/mcp`; 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Also served at `/mcp` and `/sse` (at most one server is).
    pub default: bool,
    /// Its settings: usually the relay's, with this server's overrides. Only what concerns
    /// one server's sessions is read from it (its label, command or remote, restart,
    /// probes, prespawn, message and buffer limits, timeouts); what concerns the relay as a
    /// whole (connections, origins, hosts, header timeout, `/healthz`, `/metrics`, the seed)
    /// is read from the top level. Its `http.auth_tokens` are its own, accepted besides the
    /// relay's; its own `servers` must be empty.
    pub config: Config,
}

impl NamedServer {
    /// Whether `name` can name a server (it becomes a path segment).
    pub fn valid_name(name: &str) -> bool {
        (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && name != "."
            && name != ".."
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: 16 * 1024 * 1024,
            max_buffered: 4 * 1024 * 1024,
            cut_through_from: crate::framing::EARLY,
            max_read: 64 * 1024,
            max_in_flight: 1024,
            shutdown_grace: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            request_timeout: None,
            server_label: "server".into(),
            heartbeat_interval: Duration::from_secs(30),
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(10),
            restart: RestartPolicy::OnFailure,
            restart_delay: Duration::from_secs(1),
            max_restart_delay: Duration::from_secs(30),
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            http: HttpConfig::default(),
            prespawn: 0,
            max_connections: 4096,
            idle_timeout: None,
            retire_timeout: Some(Duration::from_secs(600)),
            seed: [0; 32],
            remote: None,
            servers: Vec::new(),
        }
    }
}

/// What the HTTP layer is configured to do.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `Origin` values allowed besides the loopback ones (exact, like `https://app.example`).
    pub allowed_origins: Vec<String>,
    /// `Host` values allowed (host or host:port). Empty: the bound address, plus `localhost`
    /// when bound to loopback; anything when bound to a wildcard or public address.
    pub allowed_hosts: Vec<String>,
    /// Bearer tokens; empty: no authentication.
    pub auth_tokens: Vec<String>,
    /// Sessions with no request and no open stream for this long are ended.
    pub session_timeout: Duration,
    /// Sessions open at once, TCP and HTTP together; a TCP connection past it gets a
    /// JSON-RPC error line and is closed, an HTTP `initialize` past it gets 503.
    pub max_sessions: usize,
    /// Period of `:` comments on open event streams.
    pub sse_keepalive: Duration,
    /// Time allowed to send a complete request head.
    pub header_timeout: Duration,
    /// Bytes of events kept per stream for `Last-Event-ID` resumption.
    pub replay_buffer: usize,
    /// Serve `/healthz`.
    pub healthz: bool,
    /// Serve `/metrics`.
    pub metrics: bool,
    /// Most children serving stateless (2026-07-28) requests, one request each at a time.
    pub stateless_pool: usize,
    /// Names this relay among several behind one load balancer: every session id (and
    /// `requestState`) it issues starts with `ID.`, so that the balancer can send a session's
    /// requests to the relay that made it. Empty: no prefix. 1 to 32 of `A-Z a-z 0-9 _ -`.
    pub instance_id: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            auth_tokens: Vec::new(),
            session_timeout: Duration::from_secs(300),
            max_sessions: 1000,
            sse_keepalive: Duration::from_secs(15),
            header_timeout: Duration::from_secs(10),
            replay_buffer: 1024 * 1024,
            healthz: true,
            metrics: true,
            stateless_pool: 4,
            instance_id: String::new(),
        }
    }
}

/// A configuration the relay cannot run with: which setting, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, as named in [`Config`] (`http.` for [`HttpConfig`]'s).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Every rule the relay relies on; the first one broken.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, problem| Err(ConfigError { field, problem });
        let h = &self.http;
        if self.max_message_size == 0 {
            return err("max_message_size", "must be at least 1 byte");
        }
        if self.max_buffered == 0 {
            return err("max_buffered", "must be at least 1 byte");
        }
        if self.max_read == 0 {
            return err("max_read", "must be at least 1 byte");
        }
        if self.max_connections == 0 {
            return err("max_connections", "must be at least 1");
        }
        if self.request_timeout.is_some_and(|d| d.is_zero()) {
            return err("request_timeout", "must be more than 0 (None turns it off)");
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return err("idle_timeout", "must be more than 0 (None turns it off)");
        }
        if self.retire_timeout.is_some_and(|d| d.is_zero()) {
            return err("retire_timeout", "must be more than 0 (None turns it off)");
        }
        if self.max_in_flight == 0 {
            return err("max_in_flight", "must be at least 1");
        }
        if self.heartbeat_interval.is_zero() {
            return err("heartbeat_interval", "must be more than 0");
        }
        if self.ping_interval.is_some_and(|d| d.is_zero()) {
            return err(
                "ping_interval",
                "must be more than 0 (None turns probes off)",
            );
        }
        if self.ping_timeout.is_zero() {
            return err("ping_timeout", "must be more than 0");
        }
        if self.restart_window.is_zero() {
            return err("restart_window", "must be more than 0");
        }
        if self.max_restart_delay < self.restart_delay {
            return err("max_restart_delay", "must not be less than restart_delay");
        }
        if h.max_sessions == 0 {
            return err("http.max_sessions", "must be at least 1");
        }
        if !valid_instance_id(&h.instance_id) {
            return err(
                "http.instance_id",
                "must be 1 to 32 of A-Z a-z 0-9 _ - (it starts every session id)",
            );
        }
        if h.stateless_pool == 0 {
            return err("http.stateless_pool", "must be at least 1");
        }
        if h.session_timeout.is_zero() {
            return err("http.session_timeout", "must be more than 0");
        }
        if h.sse_keepalive.is_zero() {
            return err("http.sse_keepalive", "must be more than 0");
        }
        if h.header_timeout.is_zero() {
            return err("http.header_timeout", "must be more than 0");
        }
        if let Some(r) = &self.remote {
            if r.urls.is_empty() {
                return err("remote.urls", "must name at least one remote server");
            }
            let tcp = r.urls.iter().filter(|u| u.scheme.is_stream()).count();
            if tcp != 0 && tcp != r.urls.len() {
                return err(
                    "remote.urls",
                    "must all be tcp:// or tls://, or all be http:// or https://",
                );
            }
            if (tcp != 0) != (r.transport == RemoteTransport::Tcp)
                && r.transport != RemoteTransport::Auto
            {
                return err(
                    "remote.transport",
                    "tcp goes with tcp:// and tls:// URLs, and only with them",
                );
            }
            if r.connect_timeout.is_zero() {
                return err("remote.connect_timeout", "must be more than 0");
            }
            if r.max_connections == 0 {
                return err("remote.max_connections", "must be at least 1");
            }
            if self.prespawn != 0 {
                return err("prespawn", "has no meaning with a remote server");
            }
            if r.headers.iter().any(|(n, v)| {
                n.is_empty()
                    || !n
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                    || v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
            }) {
                return err("remote.headers", "must be Name: value, with no line breaks");
            }
        }
        if h.auth_tokens
            .iter()
            .any(|t| t.is_empty() || t.bytes().any(|b| b.is_ascii_whitespace()))
        {
            return err("http.auth_tokens", "must be non-empty and have no spaces");
        }
        for (i, s) in self.servers.iter().enumerate() {
            if !NamedServer::valid_name(&s.name) {
                return err(
                    "servers",
                    "names must be 1 to 64 of A-Z a-z 0-9 . _ - (and not . or ..)",
                );
            }
            if self.servers[..i].iter().any(|o| o.name == s.name) {
                return err("servers", "names must be unique");
            }
            if !s.config.servers.is_empty() {
                return err("servers", "cannot nest: a server has no servers of its own");
            }
            s.config.validate()?;
        }
        if self.servers.iter().filter(|s| s.default).count() > 1 {
            return err("servers", "at most one can be the default");
        }
        Ok(())
    }

    /// The servers the relay runs: each named entry, or the one server this configuration
    /// describes (named `""`, the default).
    pub fn served(&self) -> Vec<NamedServer> {
        if self.servers.is_empty() {
            let mut config = self.clone();
            config.servers = Vec::new();
            return vec![NamedServer {
                name: String::new(),
                default: true,
                config,
            }];
        }
        let only = self.servers.len() == 1;
        self.servers
            .iter()
            .map(|s| NamedServer {
                default: s.default || only,
                ..s.clone()
            })
            .collect()
    }
}

/// Counters for logs, health checks and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sessions open now.
    pub sessions_open: usize,
    /// Sessions created since the start.
    pub sessions_total: u64,
    /// Server processes started (prespawned ones included).
    pub children_spawned: u64,
    /// Server processes that could not be started.
    pub spawn_failures: u64,
    /// Servers restarted after they ended.
    pub restarts: u64,
    /// Messages from clients handed to servers.
    pub messages_to_server: u64,
    /// Messages from servers handed to clients.
    pub messages_to_client: u64,
    /// Lines from servers' stdout that were not JSON-RPC and were dropped.
    pub dropped_server_lines: u64,
    /// Messages over `max_message_size`, either way.
    pub oversize_messages: u64,
    /// Clients dropped for missing heartbeats.
    pub heartbeat_failures: u64,
    /// Servers found hung (a probe unanswered, stdin not read) and stopped.
    pub servers_hung: u64,
    /// Sessions ended because their server kept failing (`--max-restarts`).
    pub sessions_given_up: u64,
    /// The prespawn pool stopped prespawning because its servers kept failing.
    pub prespawn_given_up: u64,
    /// Exited servers whose output was given up on: still open `shutdown_grace` after the
    /// exit (a grandchild holds the pipe).
    pub outputs_abandoned: u64,
    /// Connections refused past `--max-connections` or `--max-sessions`.
    pub connections_refused: u64,
    /// Server starts cancelled because their session ended first.
    pub starts_cancelled: u64,
    /// TCP clients closed after `--idle-timeout`.
    pub idle_closed: u64,
    /// Bytes from clients handed to servers.
    pub bytes_to_server: u64,
    /// Bytes from servers handed to clients.
    pub bytes_to_client: u64,
}

/// An instance id: empty (none), or 1 to 32 of `A-Z a-z 0-9 _ -` (no `.`, which ends it in a
/// session id).
pub(crate) fn valid_instance_id(id: &str) -> bool {
    id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(change: impl FnOnce(&mut Config), expect: Option<&str>) {
        let mut c = Config::default();
        change(&mut c);
        assert_eq!(c.validate().err().map(|e| e.field), expect);
    }

    #[test]
    fn rules() {
        check(|_| {}, None);
        check(|c| c.max_message_size = 0, Some("max_message_size"));
        check(|c| c.max_buffered = 0, Some("max_buffered"));
        check(
            |c| c.ping_interval = Some(Duration::ZERO),
            Some("ping_interval"),
        );
        check(|c| c.ping_interval = None, None);
        check(
            |c| c.max_restart_delay = Duration::from_millis(1),
            Some("max_restart_delay"),
        );
        check(|c| c.http.max_sessions = 0, Some("http.max_sessions"));
        check(
            |c| c.http.auth_tokens = vec!["a b".into()],
            Some("http.auth_tokens"),
        );
    }
}
