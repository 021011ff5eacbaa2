//! `mcp-relay`: flags → validated configuration → the mio runtime. Nothing else lives here.

mod auth;
mod check;
mod config;
mod envflags;
mod instance;
mod logging;
mod preflight;
mod servers;
mod servers_file;
mod signals;
mod tls;
mod usage;

use argh::FromArgs;
use config::Listen;
use mcp_relay_core::{
    Balance, Config, ConfigError, HttpConfig, RemoteConfig, RemoteTransport, RestartPolicy,
    Transport,
};
use mcp_relay_runtime::{
    ClientTls, CommandSpec, Listen as ListenOn, Runtime, RuntimeConfig, ServerTls, Stopped,
};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Serve a stdio MCP server over the network (raw TCP, Streamable HTTP, HTTP+SSE), one
/// supervised server process per client session: `--listen ADDR -- COMMAND`. Or reach a
/// remote MCP server for a local stdio client: `--connect URL` (a client such as Claude
/// Desktop starts mcp-relay as its server).
#[derive(FromArgs, Debug)]
#[argh(
    example = "mcp-relay --listen http://127.0.0.1:8080 -- npx -y @modelcontextprotocol/server-everything\nmcp-relay --connect http://mcp.example.com/mcp --header 'Authorization: Bearer ${{TOKEN}}'",
    note = "Serve: the server command after `--` is run exactly as given, without a shell, once\nper client session (a TCP connection, an HTTP session), in a process group of its own.\nWhen the session ends, the server's stdin is closed, then SIGTERM and SIGKILL follow (each\nafter --shutdown-grace) to the whole group.\n\nConnect: without --listen, the local client speaks on stdin and stdout (logs go to\nstderr); with --listen, network clients are served by the remote instead of a command.\nURLs: http(s)://HOST[:PORT]/PATH (Streamable HTTP, or HTTP+SSE: see --transport) or\ntcp://HOST:PORT (tls:// over TLS). https:// is verified against the system's CAs (and --ca-cert). Header\nvalues are never logged.\n\nTLS: --listen https:// or tls:// with --tls-cert and --tls-key.\n\nSignals: SIGHUP re-reads --tls-cert, --tls-key, --tls-client-ca and --config without\ndropping sessions (a broken file is logged and the old one kept). SIGINT and SIGTERM drain\nand stop; a second one stops at once.\n\nSecurity: TCP has no authentication: anyone who can connect can run the server. Listen on\n127.0.0.1 (or [::1]) unless you mean to expose it. Over HTTP, --auth-token requires a bearer\ntoken; Origin and Host are checked on every request (DNS rebinding).\n\nmcp-relay demo-server [--banner] runs the built-in demo MCP server on stdio; --demo serves it.\nmcp-relay check URL | check -- COMMAND checks an MCP server end to end (see check --help).\nmcp-relay auth status|login|logout URL manages the OAuth login to a remote server.\nDurations take 5, 0.5, 500ms, 2s, 1m, 1h; sizes take 1048576, 64KiB, 16MiB, 1GiB (KiB, MiB,\nGiB and K, M, G are powers of 1024; kB, MB, GB powers of 1000).\n\nEnvironment: every flag can be set with MCP_RELAY_<FLAG>: --max-sessions is\nMCP_RELAY_MAX_SESSIONS. Switches take 1, true, yes or 0, false, no; a repeatable flag takes\none value per line (--listen, --allow-origin, --allow-host also comma-separated); empty is\nunset. A flag given here wins over its variable, which wins over the --config file's relay\nkey (MCP_RELAY_AUTH_TOKEN adds to --auth-token instead). The relay removes the variables\nfrom its environment: its servers do not see them.\n\nLogging: RUST_LOG works (e.g. RUST_LOG=debug); --log-level and --debug override it. HTTP\nrequests are logged one line each (target mcp_relay::access; RUST_LOG=info,mcp_relay::access=off\nsilences them). Under systemd (JOURNAL_STREAM) text lines carry no timestamp; sockets passed by\nsystemd (LISTEN_FDS) are used for the --listen addresses they are bound to."
)]
struct Args {
    /// address to listen on: HOST:PORT or tcp://HOST:PORT (newline-delimited JSON-RPC),
    /// http://HOST:PORT (Streamable HTTP at /mcp, HTTP+SSE at /sse), or the same over TLS:
    /// tls://HOST:PORT, https://HOST:PORT (with --tls-cert and --tls-key); IPv6 as
    /// [::1]:9000; repeat for several (required unless --connect is given; 127.0.0.1
    /// recommended)
    #[argh(option, from_str_fn(parse_listen))]
    listen: Vec<Listen>,

    /// relay to the remote MCP server at this URL instead of running a command: http://,
    /// https://, tcp:// or tls://; repeat for fallbacks, tried in order
    #[argh(option)]
    connect: Vec<String>,

    /// with --connect: auto (Streamable HTTP, falling back to HTTP+SSE, or to 2026-07-28
    /// when the remote refuses initialize that way), streamable-http, stateless (2026-07-28
    /// from the start), sse, or tcp (default: auto)
    #[argh(
        option,
        from_str_fn(parse_transport),
        default = "RemoteConfig::default().transport"
    )]
    transport: RemoteTransport,

    /// with --connect: a header for every request, 'Name: value' (repeatable); ${VAR} and
    /// ${VAR:-default} in it are taken from the environment
    #[argh(option)]
    header: Vec<String>,

    /// with --connect: send `Authorization: Bearer TOKEN` (if absent, API_ACCESS_TOKEN from
    /// the environment); an explicit --header Authorization wins over both
    #[argh(option)]
    bearer_token: Option<String>,

    /// with --connect: how long reaching the remote may take before it counts as unreachable
    /// (default: 10s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "RemoteConfig::default().connect_timeout"
    )]
    connect_timeout: Duration,

    /// with several --connect URLs: how new sessions pick one: failover (the first that is
    /// up), round-robin, or least-sessions (default: failover); an unreachable URL is skipped
    /// for 30s
    #[argh(
        option,
        from_str_fn(parse_balance),
        default = "RemoteConfig::default().balance"
    )]
    balance: Balance,

    /// with --connect http(s)://: do not log in when the remote answers 401 (OAuth is on by
    /// default; see "Logging in to a remote server" in the README)
    #[argh(switch)]
    no_login: bool,

    /// with --connect: an OAuth client id registered with the remote's authorization server
    /// (else a client metadata document or dynamic registration)
    #[argh(option)]
    client_id: Option<String>,

    /// with --client-id: its secret, for a confidential client (sent as the server's
    /// metadata says: HTTP Basic or in the form); MCP_RELAY_CLIENT_SECRET in the environment
    /// keeps it out of the process list
    #[argh(option)]
    client_secret: Option<String>,

    /// with --connect: an https:// URL serving this client's metadata document, used as the
    /// client id where the authorization server supports them
    #[argh(option)]
    client_metadata_url: Option<String>,

    /// with --connect: print the authorization URL on stderr, open no browser
    #[argh(switch)]
    no_browser: bool,

    /// with --connect: run CMD (split on spaces, no shell) with the authorization URL as
    /// its last argument instead of opening a browser
    #[argh(option)]
    auth_url_command: Option<String>,

    /// with --connect: the port of the login's loopback callback on 127.0.0.1 (without it,
    /// one derived from the URL, in 33400-34399, or the next ones if taken)
    #[argh(option)]
    auth_callback_port: Option<u16>,

    /// serve the built-in demo MCP server instead of a command after `--`
    #[argh(switch)]
    demo: bool,

    /// serve several servers, from a JSON file in Claude Desktop's `mcpServers` format
    /// (plus a "relay" key for these flags; flags and MCP_RELAY_ variables win): each at
    /// /servers/NAME/mcp and /servers/NAME/sse, the default one at /mcp and /sse too
    #[argh(option)]
    config: Option<PathBuf>,

    /// with --config: read the file again when it changes (checked every second), as on
    /// SIGHUP
    #[argh(switch)]
    watch_config: bool,

    /// extra environment variable for the server, KEY=VALUE (repeatable)
    #[argh(option, from_str_fn(parse_env))]
    env: Vec<(String, String)>,

    /// working directory of the server (default: the relay's)
    #[argh(option)]
    cwd: Option<PathBuf>,

    /// start the server with only PATH and the --env variables instead of the relay's
    /// environment
    #[argh(switch)]
    clean_env: bool,

    /// time between closing the server's stdin, SIGTERM and SIGKILL (default: 5s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Config::default().shutdown_grace"
    )]
    shutdown_grace: Duration,

    /// on Ctrl-C or SIGTERM, and when a TCP client half-closes, how long requests in flight
    /// may take to finish (and HTTP sessions are still served) before each server's stdin is
    /// closed; 0 means do not wait (default: 30s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Config::default().drain_timeout"
    )]
    drain_timeout: Duration,

    /// answer a client request the server has not answered this long with an error, and send
    /// the server notifications/cancelled for it; progress restarts the clock; 0 means never
    /// (default: 0)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Config::default().request_timeout.unwrap_or(Duration::ZERO)"
    )]
    request_timeout: Duration,

    /// longest JSON-RPC message accepted from either side; longer ones are dropped and
    /// answered with an error (default: 16MiB)
    #[argh(
        option,
        from_str_fn(parse_size),
        default = "Config::default().max_message_size"
    )]
    max_message_size: usize,

    /// bytes queued toward a slow reader before the relay stops reading from the other side
    /// (default: 4MiB)
    #[argh(
        option,
        from_str_fn(parse_size),
        default = "Config::default().max_buffered"
    )]
    max_buffered: usize,

    /// keep N servers started ahead of need, so that a new session does not wait for one to
    /// start (default: 0)
    #[argh(
        option,
        from_str_fn(parse_count),
        default = "Config::default().prespawn"
    )]
    prespawn: usize,

    /// client connections open at once, TCP and HTTP; one past it gets an error and is
    /// closed; the default is lowered to what the descriptor limit allows (default: 4096)
    #[argh(
        option,
        from_str_fn(parse_count),
        default = "Config::default().max_connections"
    )]
    max_connections: usize,

    /// TCP: close a client that sends nothing and waits for nothing this long; 0 means
    /// never (default: 0)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Config::default().idle_timeout.unwrap_or(Duration::ZERO)"
    )]
    idle_timeout: Duration,

    /// with --config: after a reload removes or changes a server, its sessions go on this
    /// long, then are drained; 0 means until they end (default: 10m)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Config::default().retire_timeout.unwrap_or(Duration::ZERO)"
    )]
    retire_timeout: Duration,

    /// client requests waiting for an answer before the relay stops reading the client
    /// (default: 1024)
    #[argh(
        option,
        from_str_fn(parse_count),
        default = "Config::default().max_in_flight"
    )]
    max_in_flight: usize,

    /// restart the server when it exits: on-failure (crash, kill, hang), always, or never
    /// (default: on-failure)
    #[argh(
        option,
        from_str_fn(parse_restart),
        default = "Config::default().restart"
    )]
    restart: RestartPolicy,

    /// delay before the first restart; it doubles with each restart, up to 30s (default: 1s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Config::default().restart_delay"
    )]
    restart_delay: Duration,

    /// restarts allowed within --restart-window before the session is closed (default: 5)
    #[argh(
        option,
        from_str_fn(parse_count_u32),
        default = "Config::default().max_restarts"
    )]
    max_restarts: u32,

    /// the window --max-restarts counts in (default: 60s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Config::default().restart_window"
    )]
    restart_window: Duration,

    /// probe a server quiet this long with an MCP ping; 0 disables (default: 30s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Config::default().ping_interval.unwrap_or(Duration::ZERO)"
    )]
    ping_interval: Duration,

    /// an unanswered probe, or stdin not read, for this long means the server is hung
    /// (default: 10s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Config::default().ping_timeout"
    )]
    ping_timeout: Duration,

    /// period of heartbeat_response messages to clients that sent {"type":"heartbeat"}; such
    /// a client silent for twice as long is disconnected (default: 30s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Config::default().heartbeat_interval"
    )]
    heartbeat_interval: Duration,

    /// HTTP: an Origin allowed besides loopback ones (repeatable; `*` allows any)
    #[argh(option)]
    allow_origin: Vec<String>,

    /// HTTP: a Host header value allowed, host or host:port (repeatable; default: the bound
    /// address, plus localhost on loopback)
    #[argh(option)]
    allow_host: Vec<String>,

    /// HTTP: require `Authorization: Bearer TOKEN` (repeatable; also MCP_RELAY_AUTH_TOKEN, one
    /// per line); refused without an http:// or https:// listener
    #[argh(option)]
    auth_token: Vec<String>,

    /// HTTP: a file of bearer tokens, one per line
    #[argh(option)]
    auth_token_file: Option<PathBuf>,

    /// https:// and tls:// listeners: the certificate chain, PEM (leaf first); re-read on
    /// SIGHUP
    #[argh(option)]
    tls_cert: Option<PathBuf>,

    /// https:// and tls:// listeners: the private key, PEM (PKCS#8, RSA or EC); re-read on
    /// SIGHUP
    #[argh(option)]
    tls_key: Option<PathBuf>,

    /// https:// and tls:// listeners: require client certificates signed by a CA in this PEM
    /// file (mutual TLS); re-read on SIGHUP
    #[argh(option)]
    tls_client_ca: Option<PathBuf>,

    /// with --connect https://: also trust the CA certificates in this PEM file (besides the
    /// system's store; SSL_CERT_FILE and SSL_CERT_DIR are honoured)
    #[argh(option)]
    ca_cert: Option<PathBuf>,

    /// with --connect https://: do not verify the remote's certificate (testing only: every
    /// connection is logged with a warning)
    #[argh(switch)]
    tls_insecure_skip_verify: bool,

    /// HTTP: end sessions with no request and no open stream for this long (default: 300s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "HttpConfig::default().session_timeout"
    )]
    session_timeout: Duration,

    /// most sessions at once, TCP and HTTP; a TCP client past it gets an error line, an HTTP
    /// initialize gets 503 (default: 1000)
    #[argh(
        option,
        from_str_fn(parse_count),
        default = "HttpConfig::default().max_sessions"
    )]
    max_sessions: usize,

    /// HTTP: period of keep-alive comments on event streams (default: 15s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "HttpConfig::default().sse_keepalive"
    )]
    sse_keepalive: Duration,

    /// HTTP: time allowed for a request head to arrive; slower clients get 408 (default: 10s)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "HttpConfig::default().header_timeout"
    )]
    header_timeout: Duration,

    /// HTTP: most servers answering stateless (MCP 2026-07-28) requests, one request each at
    /// a time (default: 4)
    #[argh(
        option,
        from_str_fn(parse_count),
        default = "HttpConfig::default().stateless_pool"
    )]
    stateless_pool: usize,

    /// HTTP: this relay's name among several behind a load balancer, put before every session
    /// id as `ID.` (default: the host name and the first HTTP port, like web1-8080)
    #[argh(option, from_str_fn(instance_id))]
    instance_id: Option<String>,

    /// HTTP: do not serve /healthz
    #[argh(switch)]
    no_healthz: bool,

    /// HTTP: do not serve /metrics
    #[argh(switch)]
    no_metrics: bool,

    /// log level: error, warn, info, debug or trace (default: info, or RUST_LOG)
    #[argh(option, from_str_fn(parse_log_level))]
    log_level: Option<log::LevelFilter>,

    /// shorthand for --log-level debug
    #[argh(switch)]
    debug: bool,

    /// log format: text (default; no timestamp when stderr is the systemd journal) or json
    /// (one object per line: timestamp, level, target, message and the line's fields)
    #[argh(
        option,
        from_str_fn(parse_log_format),
        default = "logging::Format::Text"
    )]
    log_format: logging::Format,

    /// log one line per JSON-RPC message: direction, session, method, id, size, and the
    /// latency of answers (target mcp_relay::messages; payloads too at --log-level trace)
    #[argh(switch)]
    log_messages: bool,

    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,

    /// the server command and its arguments, after `--`
    #[argh(positional, greedy)]
    command: Vec<OsString>,
}

/// The exit status after a second Ctrl-C (or SIGTERM) stopped the relay at once.
const FORCED_EXIT: u8 = 130;

/// The environment variable that may hold a bearer token.
const AUTH_TOKEN_VAR: &str = "MCP_RELAY_AUTH_TOKEN";

/// The environment variable that may hold the OAuth client secret (`--client-secret`).
const CLIENT_SECRET_VAR: &str = "MCP_RELAY_CLIENT_SECRET";

/// The environment variable that may hold the bearer token sent to a remote (`--connect`).
const REMOTE_TOKEN_VAR: &str = "API_ACCESS_TOKEN";

fn instance_id(s: &str) -> Result<String, String> {
    instance::parse(s)
}

fn parse_listen(s: &str) -> Result<Listen, String> {
    config::parse_listen(s)
}
fn parse_env(s: &str) -> Result<(String, String), String> {
    config::parse_env(s)
}
fn parse_duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}
fn parse_size(s: &str) -> Result<usize, String> {
    config::parse_size(s)
}
fn parse_log_format(s: &str) -> Result<logging::Format, String> {
    logging::parse_format(s)
}
fn parse_count(s: &str) -> Result<usize, String> {
    usage::parse_count(s)
}
fn parse_count_u32(s: &str) -> Result<u32, String> {
    usage::parse_count_u32(s)
}
fn parse_log_level(s: &str) -> Result<log::LevelFilter, String> {
    usage::parse_log_level(s)
}
fn parse_transport(s: &str) -> Result<RemoteTransport, String> {
    RemoteTransport::parse(s)
}
fn parse_balance(s: &str) -> Result<Balance, String> {
    Balance::parse(s)
}
fn parse_restart(s: &str) -> Result<RestartPolicy, String> {
    match s {
        "on-failure" => Ok(RestartPolicy::OnFailure),
        "always" => Ok(RestartPolicy::Always),
        "never" => Ok(RestartPolicy::Never),
        _ => Err(format!(
            "`{s}` is not a restart policy (on-failure, always or never)"
        )),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv.get(1).map(String::as_str) == Some("demo-server") {
        let code = mcp_relay_demo::run(&argv[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if argv.get(1).map(String::as_str) == Some("check") {
        // The relay's variables configure the relay, not its check; nor are they for the
        // processes the check starts (its client-mode relay would take them as flags).
        envflags::take();
        return check::main(std::env::args_os().skip(2).collect());
    }
    if argv.get(1).map(String::as_str) == Some("auth") {
        return auth_command(&argv[2..]);
    }
    // Before any secret is read: from here on the relay's servers (same user) cannot read
    // its memory or /proc/<pid>/environ. Reported once logging is set up.
    let dumpable = mcp_relay_runtime::set_non_dumpable();
    // Big messages come and go: keep their buffers out of the main heap, so that what they
    // used is given back when they are gone (see the function's doc and benches/SOAK.md).
    mcp_relay_runtime::return_big_buffers_to_the_os();
    // Out of the environment at once, while this is the only thread: no child (and no
    // library that spawns one) can inherit it. The initial copy that /proc/<pid>/environ
    // shows is what non-dumpable protects.
    let env_token = std::env::var(AUTH_TOKEN_VAR).ok();
    std::env::remove_var(AUTH_TOKEN_VAR);
    // The other MCP_RELAY_ variables go the same way (see envflags).
    let from_env = envflags::take();
    // Sockets from the service manager (systemd's LISTEN_FDS), taken while this is the only
    // thread: the variables leave the environment (no server sees them), and the sockets wait
    // for the flags to say what each serves.
    let inherited = mcp_relay_runtime::activation::take_from_env();
    let strs: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    // --help and --version answer whatever the environment holds.
    let asks = strs
        .iter()
        .take_while(|a| **a != "--")
        .any(|a| matches!(*a, "--help" | "-h" | "help" | "--version" | "-V"));
    let applied = if asks {
        envflags::Applied::default()
    } else {
        match from_env.apply(&strs) {
            Ok(applied) => applied,
            Err(e) => {
                eprintln!("mcp-relay: {e}");
                return ExitCode::from(2);
            }
        }
    };
    // The variables' flags first: a flag on the command line is not among them.
    let full: Vec<String> = applied
        .argv
        .iter()
        .cloned()
        .chain(strs.iter().map(|s| (*s).to_owned()))
        .collect();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let mut args = match Args::from_args(&["mcp-relay"], &full) {
        Ok(args) => args,
        Err(early) => {
            return if early.status.is_ok() {
                println!("{}", early.output);
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "mcp-relay: {}",
                    applied.blame(usage::argh_error(&early.output))
                );
                ExitCode::from(2)
            };
        }
    };
    if args.version {
        println!("mcp-relay {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    // `--config`: the file's "relay" settings are flags too; the command line's and the
    // environment's win.
    let mut file = None;
    if let Some(path) = args.config.clone() {
        let loaded = match servers_file::load(&path, &|name| std::env::var(name).ok()) {
            Ok(loaded) => loaded,
            Err(e) => {
                eprintln!("mcp-relay: {e}");
                return ExitCode::from(2);
            }
        };
        let merged = with_file_settings(&loaded.relay, &full, &applied.flags());
        let merged: Vec<&str> = merged.iter().map(String::as_str).collect();
        args = match Args::from_args(&["mcp-relay"], &merged) {
            Ok(args) => args,
            Err(early) => {
                eprintln!(
                    "mcp-relay: {} (with the settings of {})",
                    usage::argh_error(&early.output),
                    path.display()
                );
                return ExitCode::from(2);
            }
        };
        file = Some(loaded);
    }
    init_logging(&args);
    // Orphans of the servers (wrapper scripts, npx) are reaped, even when the relay is PID 1.
    // A thread: started only now that the environment is no longer changed.
    if let Err(e) = mcp_relay_runtime::reap_orphans() {
        log::warn!("cannot reap orphans of the servers (they may stay <defunct>): {e}");
    }
    for name in &from_env.unknown {
        match envflags::suggest(name) {
            Some(meant) => log::warn!(
                "{name} is not one of mcp-relay's variables (ignored): did you mean {meant}?"
            ),
            None => log::warn!(
                "{name} is not one of mcp-relay's variables (ignored): they are MCP_RELAY_ and a flag's name, such as MCP_RELAY_MAX_SESSIONS for --max-sessions"
            ),
        }
    }
    if let Err(e) = dumpable {
        log::warn!("cannot make the relay non-dumpable (its servers may read its memory): {e}");
    }
    let config_reload = match (&args.config, &file) {
        (Some(path), Some(file)) => Some(servers::Reload::new(
            path.clone(),
            full.iter().map(|s| (*s).to_owned()).collect(),
            applied.flags(),
            env_token.clone(),
            file,
        )),
        _ => None,
    };
    let login = (!args.no_login).then(|| auth_options(&args));
    let mut setup = match validate(args, env_token, &|name| std::env::var(name).ok(), file) {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("mcp-relay: {}", applied.blame(e));
            return ExitCode::from(2);
        }
    };
    if let Err(e) = inherited.and_then(|sockets| inherit(&mut setup.runtime.listen, sockets)) {
        eprintln!("mcp-relay: {e}");
        return ExitCode::from(2);
    }
    let runtime = &setup.runtime;
    preflight::warn(
        std::iter::once((None, &runtime.command)).chain(
            runtime
                .core
                .servers
                .iter()
                .map(|s| Some(s.name.as_str()))
                .zip(&runtime.commands),
        ),
    );
    let login = match login.map(|opts| log_in_first(&mut setup.runtime, &opts)) {
        Some(Err(e)) => {
            eprintln!("mcp-relay: {e}");
            return ExitCode::from(1);
        }
        Some(Ok(login)) => login,
        None => None,
    };
    run(setup, config_reload, login)
}

fn auth_options(args: &Args) -> auth::Options {
    auth::Options {
        client_id: args.client_id.clone(),
        // The command line is visible to other users (ps): the environment is the better
        // place for a secret.
        client_secret: args.client_secret.clone().or_else(|| {
            std::env::var(CLIENT_SECRET_VAR)
                .ok()
                .filter(|s| !s.is_empty())
        }),
        client_metadata_url: args.client_metadata_url.clone(),
        no_browser: args.no_browser,
        url_command: args.auth_url_command.clone(),
        callback_port: args.auth_callback_port,
        login_timeout: None,
    }
}

/// Client mode over HTTP: start with the stored token (as `Authorization: Bearer`), and log
/// in when the remote refuses a request ([`RemoteConfig::login`]). Skipped with several
/// URLs, or when an Authorization header is already given.
fn log_in_first(
    config: &mut RuntimeConfig,
    opts: &auth::Options,
) -> Result<Option<auth::Login>, String> {
    let tls = config
        .tls_client
        .as_ref()
        .map(|t| std::sync::Arc::clone(&t.config));
    let Some(remote) = config.core.remote.as_mut() else {
        return Ok(None);
    };
    let [url] = remote.urls.as_slice() else {
        return Ok(None);
    };
    if url.scheme.is_stream()
        || remote
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
    {
        return Ok(None);
    }
    let url = url.to_string();
    let mut login = auth::Login::new(&url, opts, tls)?;
    if let Some(token) = login.stored() {
        remote
            .headers
            .push(("Authorization".into(), format!("Bearer {token}")));
    }
    remote.login = true;
    Ok(Some(login))
}

/// Hands later logins to `login`: refusals the remote makes mid-session (on a thread of
/// their own, one at a time), and refreshes before the token expires.
fn serve_logins(runtime: &mut Runtime, login: auth::Login) {
    use std::sync::{Arc, Mutex};
    let login = Arc::new(Mutex::new(login));
    let shared = Arc::clone(&login);
    runtime.set_login_hook(Box::new(move |request, reply| {
        let login = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("login".into())
            .spawn(move || {
                let mut l = match login.lock() {
                    Ok(l) => l,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let token = l.challenged(
                    request.status,
                    request.challenge.as_deref(),
                    request.generation,
                );
                // Counted and sent under the lock: the core sees tokens in this order.
                if token.is_ok() {
                    l.given();
                }
                reply.send(token);
            });
        if let Err(e) = spawned {
            log::error!("cannot start the login thread: {e}");
        }
    }));
    let reply = runtime.token_reply();
    let spawned = std::thread::Builder::new()
        .name("token-refresh".into())
        .spawn(move || loop {
            let due = match login.lock() {
                Ok(l) => l.refresh_at(),
                Err(poisoned) => poisoned.into_inner().refresh_at(),
            };
            let wait = match due {
                Some(at) => at.saturating_duration_since(std::time::Instant::now()),
                None => Duration::from_secs(30),
            };
            if !wait.is_zero() {
                std::thread::sleep(wait.min(Duration::from_secs(30)));
                continue;
            }
            let mut l = match login.lock() {
                Ok(l) => l,
                Err(poisoned) => poisoned.into_inner(),
            };
            match l.refresh() {
                Ok(token) => {
                    l.given();
                    reply.clone().send(Ok(token));
                }
                // The token in use goes on until the remote refuses it (then a login).
                Err(e) => log::warn!("refreshing the token failed: {e}"),
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the token refresher: {e}");
    }
}

/// `mcp-relay auth status|login|logout URL [login flags]`.
fn auth_command(argv: &[String]) -> ExitCode {
    let usage = "usage: mcp-relay auth status|login|logout URL [--client-id ID] [--client-secret S] [--client-metadata-url URL] [--no-browser] [--auth-url-command CMD] [--auth-callback-port N] [--ca-cert PEM]";
    let (Some(verb), Some(url)) = (argv.first(), argv.get(1)) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let rest: Vec<&str> = argv[2..].iter().map(String::as_str).collect();
    let mut flags: Vec<&str> = vec!["--connect", url];
    flags.extend(&rest);
    let args = match Args::from_args(&["mcp-relay"], &flags) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mcp-relay auth: {}\n{usage}", e.output.trim_end());
            return ExitCode::from(2);
        }
    };
    init_logging(&args);
    let result = match verb.as_str() {
        "status" => auth::status(url).map(|line| println!("{line}")),
        "logout" => auth::logout(url).map(|had| {
            println!(
                "{url}: {}",
                if had {
                    "logged out (the stored token is deleted)"
                } else {
                    "was not logged in"
                }
            )
        }),
        "login" => {
            let tls = if url.starts_with("https://") {
                match tls::client_config(args.ca_cert.as_deref(), args.tls_insecure_skip_verify) {
                    Ok(l) => Some(std::sync::Arc::new(l.config)),
                    Err(e) => {
                        eprintln!("mcp-relay auth: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                None
            };
            auth::Login::new(url, &auth_options(&args), tls)
                .and_then(|mut l| l.login())
                .map(|_| println!("{url}: logged in"))
        }
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-relay auth: {e}");
            ExitCode::from(1)
        }
    }
}

/// Gives the sockets the service manager passed (socket activation) to the `--listen`s with
/// the same addresses, which then bind nothing; a socket no `--listen` names is a mistake in
/// the unit or the flags, refused before anything starts.
fn inherit(
    listen: &mut [ListenOn],
    sockets: Vec<mcp_relay_runtime::activation::Inherited>,
) -> Result<(), String> {
    let described: Vec<(std::net::SocketAddr, String)> =
        sockets.iter().map(|s| (s.addr, s.describe())).collect();
    if let Some(stray) = mcp_relay_runtime::activation::assign(listen, sockets).first() {
        let addr = stray.addr;
        let hint = match listen.iter().find(|l| l.addr.port() == addr.port()) {
            // systemd's `ListenStream=8080` is [::]:8080 (IPv4 too), not 0.0.0.0:8080.
            Some(l) => format!(
                "; --listen {} has its port: give the address as the socket is bound",
                l.addr
            ),
            None => String::new(),
        };
        return Err(format!(
            "socket activation: {} is bound to {addr}, and no --listen names that address (add --listen tcp://{addr} or http://{addr}, or change the socket unit's ListenStream=){hint}",
            stray.describe()
        ));
    }
    for (addr, what) in described {
        log::info!("{addr}: using the socket passed by the service manager ({what})");
    }
    Ok(())
}

/// The command line with a servers file's `"relay"` settings before it, leaving out those
/// of its flags that the command line gives itself or that `also_given` names (the flags the
/// environment set, `false` switches too): a later value would not replace an earlier one
/// (argh refuses a repeated single-valued flag, and a list would be merged).
fn with_file_settings(
    settings: &[(String, Vec<String>)],
    argv: &[&str],
    also_given: &[String],
) -> Vec<String> {
    let mut given = envflags::given_flags(argv);
    given.extend(also_given.iter().cloned());
    let mut merged = Vec::new();
    for (flag, values) in settings {
        if given.contains(flag) {
            continue;
        }
        if values.is_empty() {
            merged.push(flag.clone());
        }
        for v in values {
            merged.push(flag.clone());
            merged.push(v.clone());
        }
    }
    merged.extend(argv.iter().map(|a| (*a).to_owned()));
    merged
}

/// A validated command line: the runtime's configuration, and what SIGHUP re-reads.
struct Setup {
    runtime: RuntimeConfig,
    reload: Option<TlsReload>,
    /// `--watch-config`.
    watch: bool,
}

/// The TLS listeners' files, and the configurations a SIGHUP replaces.
struct TlsReload {
    files: tls::ServerFiles,
    /// For `https://` listeners (ALPN `http/1.1`).
    https: ServerTls,
    /// For `tls://` listeners (no ALPN).
    raw: ServerTls,
}

/// ALPN for HTTP over TLS.
const ALPN_HTTP: &[&[u8]] = &[b"http/1.1"];

impl TlsReload {
    /// Reads the files and checks them; warnings are logged.
    fn load(files: tls::ServerFiles) -> Result<TlsReload, String> {
        let now = std::time::SystemTime::now();
        let https = tls::server_config(&files, ALPN_HTTP, now)?;
        let raw = tls::server_config(&files, &[], now)?;
        for w in &https.warnings {
            log::warn!("{w}");
        }
        Ok(TlsReload {
            files,
            https: ServerTls::new(https.config),
            raw: ServerTls::new(raw.config),
        })
    }

    /// SIGHUP: the files again; new handshakes use them, established connections keep what
    /// they have. A mistake keeps the old ones.
    fn reload(&self) {
        let now = std::time::SystemTime::now();
        let loaded = tls::server_config(&self.files, ALPN_HTTP, now)
            .and_then(|https| Ok((https, tls::server_config(&self.files, &[], now)?)));
        match loaded {
            Ok((https, raw)) => {
                for w in &https.warnings {
                    log::warn!("{w}");
                }
                self.https.replace(https.config);
                self.raw.replace(raw.config);
                log::info!(
                    "SIGHUP: reloaded the certificate ({}); new connections use it",
                    self.files.cert.display()
                );
            }
            Err(e) => log::error!("SIGHUP: {e}; still using the certificate loaded before"),
        }
    }
}

fn init_logging(args: &Args) {
    let opts = logging::Options {
        level: args.log_level,
        debug: args.debug,
        format: args.log_format,
        messages: args.log_messages,
    };
    let rust_log = std::env::var("RUST_LOG").ok();
    let journal = std::env::var("JOURNAL_STREAM").ok();
    logging::init(&opts, rust_log.as_deref(), journal.as_deref());
}

/// `env_token`: the value `MCP_RELAY_AUTH_TOKEN` had at startup; `env` reads the
/// environment (for `--header` variables and `API_ACCESS_TOKEN`).
fn validate(
    args: Args,
    env_token: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<servers_file::ServersFile>,
) -> Result<Setup, String> {
    if args.watch_config && args.config.is_none() && file.is_none() {
        return Err("--watch-config goes with --config FILE".into());
    }
    let watch = args.watch_config;
    let (remote, remote_template) = match &file {
        Some(_) => {
            if !args.connect.is_empty() || args.demo || !args.command.is_empty() {
                return Err("--config names the servers: leave out --connect, --demo and the command after `--` (a remote server is an entry with \"url\", the demo server one with \"command\": \"mcp-relay\", \"args\": [\"demo-server\"])".into());
            }
            (None, remote_config(&args, env, true)?)
        }
        None => (remote_config(&args, env, false)?, None),
    };
    let file_listens = file.as_ref().is_some_and(|f| {
        f.servers
            .iter()
            .any(|s| s.relay.iter().any(|(flag, _)| flag == "--listen"))
    });
    let file_tls = file.as_ref().is_some_and(|f| {
        f.servers.iter().any(|s| {
            s.relay.iter().any(|(flag, values)| {
                flag == "--listen" && values.iter().any(|v| v.starts_with("tls://"))
            })
        })
    });
    if args.listen.is_empty() && remote.is_none() && !file_listens {
        return Err(
            "nothing to listen on: give --listen HOST:PORT (for example --listen 127.0.0.1:9000), or --connect URL to reach a remote server"
                .into(),
        );
    }
    let mut command = args.command;
    if remote.is_some() {
        if args.demo || !command.is_empty() {
            return Err(
                "--connect replaces the server command: leave out --demo and the command after `--`"
                    .into(),
            );
        }
        if args.prespawn != 0 {
            return Err("--prespawn starts server processes, and --connect runs none".into());
        }
        if !args.env.is_empty() || args.cwd.is_some() || args.clean_env {
            log::warn!("--env, --cwd and --clean-env have no effect with --connect");
        }
    } else if args.demo {
        if !command.is_empty() {
            return Err(
                "--demo serves the built-in server: leave out the command after `--`".into(),
            );
        }
        let exe = std::env::current_exe()
            .map_err(|e| format!("--demo: cannot find this program's own path: {e}"))?;
        command = vec![exe.into_os_string(), "demo-server".into()];
    }
    if command.is_empty() && remote.is_none() && file.is_none() {
        return Err("no server command: put it after `--` (for example `-- ./server --stdio`), use --demo, or --connect URL to reach a remote server".into());
    }
    if let Some(dir) = &args.cwd {
        if !dir.is_dir() {
            return Err(format!("--cwd {}: not a directory", dir.display()));
        }
    }
    let any_tls = args.listen.iter().any(Listen::is_tls) || file_tls;
    let reload = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) if any_tls => Some(TlsReload::load(tls::ServerFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        })?),
        (None, _) | (_, None) if any_tls => return Err(
            "an https:// or tls:// listener needs --tls-cert FULLCHAIN.pem and --tls-key KEY.pem"
                .into(),
        ),
        _ if args.tls_cert.is_some() || args.tls_key.is_some() || args.tls_client_ca.is_some() => {
            return Err(
                "--tls-cert, --tls-key and --tls-client-ca go with an https:// or tls:// --listen"
                    .into(),
            )
        }
        _ => None,
    };
    let mut listen: Vec<ListenOn> = Vec::new();
    for l in args.listen {
        let (addrs, transport, tls) = match l {
            Listen::Tcp(addrs) => (addrs, Transport::Tcp, None),
            Listen::Http(addrs) => (addrs, Transport::Http, None),
            Listen::Tls(addrs) => (addrs, Transport::Tcp, reload.as_ref().map(|r| &r.raw)),
            Listen::Https(addrs) => (addrs, Transport::Http, reload.as_ref().map(|r| &r.https)),
        };
        for addr in addrs {
            // Port 0 asks for any free port: twice is two listeners, not a mistake.
            if addr.port() != 0 && listen.iter().any(|l| l.addr == addr) {
                return Err(format!("--listen: {addr} is given twice"));
            }
            listen.push(ListenOn {
                addr,
                transport,
                tls: tls.cloned(),
                server: None,
                inherited: None,
            });
        }
    }
    let instance_id = args.instance_id.clone().unwrap_or_else(|| {
        let port = listen
            .iter()
            .find(|l| l.transport == Transport::Http)
            .map(|l| l.addr.port());
        instance::derive(&instance::host_name(), port)
    });
    // What sets the relay's bearer tokens, if anything does.
    let token_source = if !args.auth_token.is_empty() {
        Some("--auth-token")
    } else if args.auth_token_file.is_some() {
        Some("--auth-token-file")
    } else if env_token.is_some() {
        Some(AUTH_TOKEN_VAR)
    } else {
        None
    };
    let mut auth_tokens = args.auth_token;
    if let Some(tokens) = env_token {
        // One token per line, as every repeatable flag's variable. Set but empty is refused
        // (unlike other variables): a secret that did not arrive must not leave HTTP open.
        let before = auth_tokens.len();
        auth_tokens.extend(
            tokens
                .lines()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        );
        if auth_tokens.len() == before {
            return Err(format!("{AUTH_TOKEN_VAR} is set but holds no token"));
        }
    }
    if let Some(path) = &args.auth_token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--auth-token-file {}: {e}", path.display()))?;
        auth_tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    // Stricter than the core's rule (which refuses ASCII whitespace): a token from a file or
    // the environment with a control character or Unicode space is a mistake too.
    if auth_tokens
        .iter()
        .any(|t| t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err("--auth-token: a token must be non-empty and have no spaces".into());
    }
    let server_label = match &remote {
        Some(r) => r
            .urls
            .iter()
            .map(|u| config::redact_url(&u.to_string()))
            .collect::<Vec<_>>()
            .join(" or "),
        None => command
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
    };
    // Client mode with no listener: the local client is on stdin and stdout.
    let stdio = remote.is_some() && listen.is_empty();
    let https = remote
        .as_ref()
        .is_some_and(|r| r.urls.iter().any(|u| u.scheme.is_tls()))
        || file.as_ref().is_some_and(|f| {
            f.servers.iter().any(|s| {
                matches!(&s.kind, servers_file::EntryKind::Remote { url, .. }
                    if mcp_relay_core::RemoteUrl::parse(url).is_ok_and(|u| u.scheme.is_tls()))
            })
        });
    let tls_client = if https {
        let loaded = tls::client_config(args.ca_cert.as_deref(), args.tls_insecure_skip_verify)?;
        for w in &loaded.warnings {
            log::warn!("{w}");
        }
        Some(ClientTls {
            config: std::sync::Arc::new(loaded.config),
            insecure: args.tls_insecure_skip_verify,
        })
    } else if args.ca_cert.is_some() || args.tls_insecure_skip_verify {
        return Err(
            "--ca-cert and --tls-insecure-skip-verify go with an https:// or tls:// URL in --connect".into(),
        );
    } else {
        None
    };
    let mut command = command.into_iter();
    let program = command.next().unwrap_or_default();
    let defaults = Config::default();
    let mut config = RuntimeConfig {
        listen,
        command: CommandSpec {
            program,
            args: command.collect(),
            env: args
                .env
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            cwd: args.cwd,
            clean_env: args.clean_env,
            // The relay's own secret is not the server's to see (main already removed it
            // from the relay's environment; this keeps it so if that ever changes).
            env_remove: vec![AUTH_TOKEN_VAR.into()],
        },
        core: mcp_relay_core::Config {
            max_message_size: args.max_message_size,
            max_buffered: args.max_buffered,
            cut_through_from: defaults.cut_through_from,
            max_read: defaults.max_read,
            shutdown_grace: args.shutdown_grace,
            drain_timeout: args.drain_timeout,
            request_timeout: (!args.request_timeout.is_zero()).then_some(args.request_timeout),
            server_label,
            max_in_flight: args.max_in_flight,
            heartbeat_interval: args.heartbeat_interval,
            ping_interval: (!args.ping_interval.is_zero()).then_some(args.ping_interval),
            ping_timeout: args.ping_timeout,
            restart: args.restart,
            restart_delay: args.restart_delay,
            max_restart_delay: defaults.max_restart_delay.max(args.restart_delay),
            max_restarts: args.max_restarts,
            // With no restarts allowed the window counts nothing: `--max-restarts 0` needs no
            // window, and a zero one is not worth refusing.
            restart_window: if args.max_restarts == 0 && args.restart_window.is_zero() {
                defaults.restart_window
            } else {
                args.restart_window
            },
            http: HttpConfig {
                allowed_origins: args.allow_origin,
                allowed_hosts: args.allow_host,
                auth_tokens,
                session_timeout: args.session_timeout,
                max_sessions: args.max_sessions,
                sse_keepalive: args.sse_keepalive,
                header_timeout: args.header_timeout,
                replay_buffer: args.max_buffered.min(defaults.http.replay_buffer),
                healthz: !args.no_healthz,
                metrics: !args.no_metrics,
                stateless_pool: args.stateless_pool,
                instance_id,
            },
            prespawn: args.prespawn,
            max_connections: args.max_connections,
            idle_timeout: (!args.idle_timeout.is_zero()).then_some(args.idle_timeout),
            retire_timeout: (!args.retire_timeout.is_zero()).then_some(args.retire_timeout),
            remote,
            // Runtime::bind seeds the session-id generator from the OS.
            seed: [0; 32],
            servers: Vec::new(),
        },
        commands: Vec::new(),
        stdio,
        tls_client,
    };
    if let Some(file) = &file {
        let template = remote_template.unwrap_or_default();
        let built = servers::build(file, &config.core, &config.command, &template)?;
        for (addr, tls, server) in built.listen {
            if addr.port() != 0 && config.listen.iter().any(|l| l.addr == addr) {
                return Err(format!("--listen: {addr} is given twice"));
            }
            let tls = match (tls, &reload) {
                (false, _) => None,
                (true, Some(r)) => Some(r.raw.clone()),
                (true, None) => {
                    return Err("a tls:// listener needs --tls-cert and --tls-key".into())
                }
            };
            config.listen.push(ListenOn {
                addr,
                transport: Transport::Tcp,
                tls,
                server: Some(server),
                inherited: None,
            });
        }
        let has_default = built.named.iter().any(|n| n.default);
        if !has_default
            && config
                .listen
                .iter()
                .any(|l| l.transport == Transport::Tcp && l.server.is_none())
        {
            return Err(
                "a relay-wide tcp:// or tls:// listener serves the default server, and none is marked: mark one (\"default\": true), or give the listener to a server in its own \"relay\": {\"listen\": …}".into(),
            );
        }
        config.core.server_label = built
            .named
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        config.core.servers = built.named;
        config.commands = built.commands;
    }
    // Tokens guard HTTP only: with no HTTP listener they would protect nothing, silently.
    if !config.listen.iter().any(|l| l.transport == Transport::Http) {
        let source = token_source.map(str::to_owned).or_else(|| {
            config
                .core
                .servers
                .iter()
                .find(|s| !s.config.http.auth_tokens.is_empty())
                .map(|s| format!("server {:?}: auth_token", s.name))
        });
        if let Some(source) = source {
            return Err(format!(
                "{source}: bearer tokens guard HTTP listeners, and there is none (TCP, tls:// and stdio have no authentication): add --listen http://HOST:PORT, or leave the token out"
            ));
        }
    }
    config
        .core
        .validate()
        .map_err(|e| format!("{} {}", flag_of(&e), e.problem))?;
    Ok(Setup {
        runtime: config,
        reload,
        watch,
    })
}

/// Client mode's configuration from `--connect` and its companions; `None` without
/// `--connect`. Neither errors nor warnings ever show a header's value or the token.
fn remote_config(
    args: &Args,
    env: &dyn Fn(&str) -> Option<String>,
    template: bool,
) -> Result<Option<RemoteConfig>, String> {
    let defaults = RemoteConfig::default();
    if args.connect.is_empty() && !template {
        let set = [
            (!args.header.is_empty(), "--header"),
            (args.bearer_token.is_some(), "--bearer-token"),
            (args.transport != defaults.transport, "--transport"),
            (
                args.connect_timeout != defaults.connect_timeout,
                "--connect-timeout",
            ),
            (args.balance != defaults.balance, "--balance"),
            (args.client_id.is_some(), "--client-id"),
            (args.client_secret.is_some(), "--client-secret"),
            (args.client_metadata_url.is_some(), "--client-metadata-url"),
            (args.no_browser, "--no-browser"),
            (args.auth_url_command.is_some(), "--auth-url-command"),
            (args.auth_callback_port.is_some(), "--auth-callback-port"),
            (args.no_login, "--no-login"),
        ];
        if let Some((_, flag)) = set.iter().find(|(set, _)| *set) {
            return Err(format!("{flag} goes with --connect URL"));
        }
        return Ok(None);
    }
    if args.client_secret.is_some() && args.client_id.is_none() {
        return Err("--client-secret goes with --client-id".into());
    }
    if let Some(u) = &args.client_metadata_url {
        // A Client ID Metadata Document is an https:// URL with a path.
        let ok = u
            .strip_prefix("https://")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(host, path)| !host.is_empty() && !path.is_empty());
        if !ok {
            return Err(format!(
                "--client-metadata-url {u:?}: an https:// URL with a path is needed"
            ));
        }
    }
    let urls = args
        .connect
        .iter()
        .map(|u| config::parse_connect(u))
        .collect::<Result<Vec<_>, _>>()?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for (i, text) in args.header.iter().enumerate() {
        let (header, unset) = config::parse_header(text, i + 1, env)?;
        for var in unset {
            log::warn!(
                "--header {}: ${{{var}}} is not set; it stands for nothing",
                header.0
            );
        }
        headers.push(header);
    }
    let has_authorization = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("authorization"));
    let (token, source) = match &args.bearer_token {
        Some(t) => (Some(t.clone()), "--bearer-token"),
        None => (
            env(REMOTE_TOKEN_VAR).filter(|t| !t.is_empty()),
            REMOTE_TOKEN_VAR,
        ),
    };
    if let Some(token) = token {
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{source}: a token must be non-empty and have no spaces"
            ));
        }
        if has_authorization {
            log::info!("{source} is not sent: --header Authorization takes its place");
        } else {
            headers.push(("Authorization".into(), format!("Bearer {token}")));
        }
    }
    let tcp = !urls.is_empty() && urls.iter().all(|u| u.scheme.is_stream());
    if tcp && (!args.header.is_empty() || args.bearer_token.is_some()) {
        log::warn!("--header and --bearer-token have no effect on tcp:// remotes");
    }
    Ok(Some(RemoteConfig {
        urls,
        transport: args.transport,
        headers,
        connect_timeout: args.connect_timeout,
        balance: args.balance,
        ..defaults
    }))
}

/// The flag that sets the field a [`ConfigError`] names (the core names [`Config`]'s fields).
fn flag_of(e: &ConfigError) -> &'static str {
    match e.field {
        "max_message_size" => "--max-message-size",
        "max_buffered" => "--max-buffered",
        "max_in_flight" => "--max-in-flight",
        "shutdown_grace" => "--shutdown-grace",
        "drain_timeout" => "--drain-timeout",
        "request_timeout" => "--request-timeout",
        "heartbeat_interval" => "--heartbeat-interval",
        "ping_interval" => "--ping-interval",
        "ping_timeout" => "--ping-timeout",
        "restart" => "--restart",
        "restart_delay" | "max_restart_delay" => "--restart-delay",
        "max_restarts" => "--max-restarts",
        "restart_window" => "--restart-window",
        "prespawn" => "--prespawn",
        "max_connections" => "--max-connections",
        "idle_timeout" => "--idle-timeout",
        "retire_timeout" => "--retire-timeout",
        "http.allowed_origins" => "--allow-origin",
        "http.allowed_hosts" => "--allow-host",
        "http.auth_tokens" => "--auth-token",
        "http.session_timeout" => "--session-timeout",
        "http.max_sessions" => "--max-sessions",
        "http.sse_keepalive" => "--sse-keepalive",
        "http.header_timeout" => "--header-timeout",
        "http.replay_buffer" => "--max-buffered",
        "http.stateless_pool" => "--stateless-pool",
        "http.instance_id" => "--instance-id",
        "remote.urls" => "--connect",
        "remote.transport" => "--transport",
        "remote.headers" => "--header",
        "remote.connect_timeout" => "--connect-timeout",
        // Not set by a flag (`max_read`, `seed`, ...): a bug here, named as the core names it.
        other => other,
    }
}

fn run(
    setup: Setup,
    config_reload: Option<servers::Reload>,
    login: Option<auth::Login>,
) -> ExitCode {
    let Setup {
        runtime: config,
        reload,
        watch,
    } = setup;
    let config_reload = config_reload.map(std::sync::Arc::new);
    let server = config.core.server_label.clone();
    let authenticated = !config.core.http.auth_tokens.is_empty();
    // What an unauthenticated stranger could do through an exposed listener.
    let exposure = match &config.core.remote {
        Some(_) => "reach",
        None => "run",
    };
    if config.stdio {
        log::info!("relaying this process's stdin and stdout to {server}");
    }
    let names: Vec<String> = config.core.servers.iter().map(|s| s.name.clone()).collect();
    let default = config
        .core
        .served()
        .into_iter()
        .find(|s| s.default)
        .map(|s| s.name);
    let mut runtime = match Runtime::bind(config) {
        Ok(runtime) => runtime,
        Err(e) => {
            // A startup mistake like any other (a port in use, one that needs privileges).
            eprintln!("mcp-relay: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(login) = login {
        serve_logins(&mut runtime, login);
    }
    for (addr, transport, tls, listener_server) in runtime.listening() {
        // With several servers: whose a TCP listener is, and where HTTP finds each.
        let server = match (&names[..], transport, listener_server) {
            ([], _, _) => server.clone(),
            (_, Transport::Tcp, Some(id)) => names.get(id.0 as usize).cloned().unwrap_or_default(),
            (_, Transport::Tcp, None) => default.clone().unwrap_or_else(|| names[0].clone()),
            (_, Transport::Http, _) => format!(
                "{}{}",
                names.join(", "),
                match &default {
                    Some(d) => format!("; {d} also at /mcp and /sse"),
                    None => String::new(),
                }
            ),
        };
        match transport {
            Transport::Tcp => {
                let scheme = if tls { "tls" } else { "tcp" };
                log::info!("listening on {scheme}://{addr}, serving `{server}`");
                if !addr.ip().is_loopback() {
                    log::warn!(
                        "{scheme}://{addr} is reachable from other machines and has no authentication: anyone who can connect can {exposure} `{server}`"
                    );
                }
            }
            Transport::Http => {
                let scheme = if tls { "https" } else { "http" };
                let at = if names.is_empty() {
                    "Streamable HTTP at /mcp, HTTP+SSE at /sse"
                } else {
                    "Streamable HTTP at /servers/NAME/mcp, HTTP+SSE at /servers/NAME/sse"
                };
                log::info!("listening on {scheme}://{addr} ({at}), serving `{server}`");
                if !addr.ip().is_loopback() && !authenticated {
                    log::warn!(
                        "{scheme}://{addr} is reachable from other machines without --auth-token: anyone who can connect can {exposure} `{server}`"
                    );
                }
            }
        }
    }
    let handle = runtime.shutdown_handle();
    let on_int = handle.clone();
    if let Err(e) = ctrlc::set_handler(move || on_int.shutdown()) {
        log::error!("cannot install the Ctrl-C handler: {e}");
        return ExitCode::from(1);
    }
    let reconfigure = runtime.reconfigure_handle();
    if let (true, Some(config)) = (watch, &config_reload) {
        if let Err(e) = servers::watch(std::sync::Arc::clone(config), reconfigure.clone()) {
            log::error!("--watch-config: cannot start watching the file: {e}");
            return ExitCode::from(1);
        }
    }
    let on_hup = move || {
        if let Some(reload) = &reload {
            reload.reload();
        }
        if let Some(config) = &config_reload {
            config.reload(&reconfigure);
        }
        if reload.is_none() && config_reload.is_none() {
            log::info!("SIGHUP: nothing to reload (no --config, no --tls-cert); still running");
        }
    };
    if let Err(e) = signals::install(move || handle.shutdown(), on_hup) {
        log::error!("cannot install the SIGTERM and SIGHUP handlers: {e}");
        return ExitCode::from(1);
    }
    match runtime.run() {
        Ok(Stopped::Drained) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(Stopped::Forced) => {
            // Sessions were cut off: a supervisor or script must be able to tell. 130 is
            // what a shell reports for a program ended by Ctrl-C.
            log::warn!("stopped at once: sessions were cut off");
            ExitCode::from(FORCED_EXIT)
        }
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each flag of `--help` with its description, wrapped lines joined.
    fn help_flags() -> Vec<(String, String)> {
        let help = match Args::from_args(&["mcp-relay"], &["--help"]) {
            Err(early) => early.output,
            Ok(_) => panic!("--help parsed as arguments"),
        };
        let options = help
            .split("Options:\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("an Options section");
        let mut flags: Vec<(String, String)> = Vec::new();
        for line in options.lines() {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if indent == 2 && trimmed.starts_with('-') {
                let (flag, text) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
                flags.push((
                    flag.trim_end_matches(',').to_owned(),
                    text.trim().to_owned(),
                ));
            } else if let Some((_, text)) = flags.last_mut() {
                text.push(' ');
                text.push_str(trimmed);
            }
        }
        flags
    }

    /// The defaults `--help` states are the ones the flags have, which are the core's: passing
    /// each stated default explicitly changes nothing.
    #[test]
    fn help_states_the_real_defaults() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["--demo"];
            argv.extend_from_slice(extra);
            match Args::from_args(&["mcp-relay"], &argv) {
                Ok(args) => format!("{args:?}"),
                Err(early) => panic!("{argv:?}: {}", early.output),
            }
        };
        let untouched = parse(&[]);
        // Defaults that are words, not values.
        let prose = ["--cwd", "--allow-host", "--log-level", "--instance-id"];
        let mut checked = 0;
        for (flag, text) in help_flags() {
            let Some(stated) = text
                .split_once("(default: ")
                .and_then(|(_, rest)| rest.split_once(')'))
                .map(|(value, _)| value)
            else {
                continue;
            };
            if prose.contains(&flag.as_str()) {
                continue;
            }
            assert_eq!(
                parse(&[&flag, stated]),
                untouched,
                "{flag} (default: {stated})"
            );
            checked += 1;
        }
        assert!(checked >= 17, "only {checked} defaults found in --help");

        let (_, delay) = help_flags()
            .into_iter()
            .find(|(flag, _)| flag == "--restart-delay")
            .expect("--restart-delay");
        let cap = delay
            .split_once("up to ")
            .and_then(|(_, rest)| rest.split_once(' '))
            .map(|(cap, _)| cap.trim_end_matches(','))
            .expect("--restart-delay states its cap");
        assert_eq!(
            config::parse_duration(cap),
            Ok(Config::default().max_restart_delay)
        );
    }

    fn validated(extra: &[&str]) -> Result<RuntimeConfig, String> {
        let mut argv = vec!["--listen", "127.0.0.1:0", "--demo"];
        argv.extend_from_slice(extra);
        let args = Args::from_args(&["mcp-relay"], &argv).map_err(|e| e.output)?;
        validate(args, None, &|_| None, None).map(|s| s.runtime)
    }

    /// Validates these flags alone, with `env` as the environment.
    fn client(argv: &[&str], env: &[(&str, &str)]) -> Result<RuntimeConfig, String> {
        let args = Args::from_args(&["mcp-relay"], argv).map_err(|e| e.output)?;
        let env = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        validate(args, None, &env, None).map(|s| s.runtime)
    }

    fn headers(argv: &[&str], env: &[(&str, &str)]) -> Vec<(String, String)> {
        let config = client(argv, env).expect("valid");
        config.core.remote.expect("client mode").headers
    }

    #[test]
    fn connect_without_listen_is_stdio_client_mode() {
        let config = client(&["--connect", "tcp://127.0.0.1:9"], &[]).expect("valid");
        assert!(config.stdio);
        assert!(config.listen.is_empty());
        assert!(config.command.program.is_empty());
        let remote = config.core.remote.expect("remote");
        assert_eq!(remote.urls[0].to_string(), "tcp://127.0.0.1:9");
        assert_eq!(remote.transport, RemoteTransport::Auto);
        assert_eq!(
            remote.connect_timeout,
            RemoteConfig::default().connect_timeout
        );
        assert_eq!(config.core.server_label, "tcp://127.0.0.1:9");

        // Several URLs keep their order; the label hides the query.
        let config = client(
            &[
                "--connect",
                "http://a/mcp?key=k",
                "--connect",
                "http://b:8/mcp",
                "--transport",
                "sse",
                "--connect-timeout",
                "2s",
            ],
            &[],
        )
        .expect("valid");
        let remote = config.core.remote.expect("remote");
        // The query is kept (it is sent), and shown as `?…` (it may hold a key).
        let paths: Vec<&str> = remote.urls.iter().map(|u| u.path.as_str()).collect();
        assert_eq!(paths, ["/mcp?key=k", "/mcp"]);
        let urls: Vec<String> = remote.urls.iter().map(|u| u.to_string()).collect();
        assert_eq!(urls, ["http://a/mcp?…", "http://b:8/mcp"]);
        assert_eq!(remote.transport, RemoteTransport::Sse);
        assert_eq!(remote.connect_timeout, Duration::from_secs(2));
        assert_eq!(config.core.server_label, "http://a/mcp?… or http://b:8/mcp");
    }

    #[test]
    fn connect_with_listen_is_a_gateway() {
        let config = client(
            &["--connect", "http://h/mcp", "--listen", "127.0.0.1:0"],
            &[],
        )
        .expect("valid");
        assert!(!config.stdio);
        assert_eq!(config.listen.len(), 1);
        assert!(config.core.remote.is_some());
    }

    #[test]
    fn tls_mistakes_name_the_flag() {
        for (argv, expect) in [
            (
                &["--listen", "https://127.0.0.1:0", "--demo"][..],
                "needs --tls-cert",
            ),
            (
                &[
                    "--listen",
                    "tls://127.0.0.1:0",
                    "--tls-cert",
                    "c.pem",
                    "--demo",
                ],
                "needs --tls-cert FULLCHAIN.pem and --tls-key",
            ),
            (
                &[
                    "--listen",
                    "http://127.0.0.1:0",
                    "--tls-cert",
                    "c",
                    "--tls-key",
                    "k",
                    "--demo",
                ],
                "go with an https:// or tls:// --listen",
            ),
            (
                &["--listen", "127.0.0.1:0", "--tls-client-ca", "ca", "--demo"],
                "go with an https:// or tls:// --listen",
            ),
            (
                &["--connect", "http://h/", "--ca-cert", "ca.pem"],
                "go with an https:// or tls:// URL in --connect",
            ),
            (
                &["--connect", "tcp://h:1", "--tls-insecure-skip-verify"],
                "go with an https:// or tls:// URL in --connect",
            ),
            (
                &[
                    "--listen",
                    "https://127.0.0.1:0",
                    "--tls-cert",
                    "/nonexistent/c.pem",
                    "--tls-key",
                    "k",
                    "--demo",
                ],
                "--tls-cert /nonexistent/c.pem: cannot read it",
            ),
            (
                &["--listen", "ftps://127.0.0.1:0", "--demo"],
                "unsupported scheme `ftps://`",
            ),
        ] {
            let got = client(argv, &[]).err();
            assert!(
                got.as_deref().is_some_and(|e| e.contains(expect)),
                "{argv:?}: {got:?}, expected {expect:?}"
            );
        }
    }

    #[test]
    fn https_remotes_are_accepted() {
        let config = client(
            &["--connect", "https://h/mcp", "--tls-insecure-skip-verify"],
            &[],
        )
        .expect("valid");
        let tls = config.tls_client.expect("a TLS client configuration");
        assert!(tls.insecure);
        assert_eq!(tls.config.alpn_protocols, [b"http/1.1".to_vec()]);
        let remote = config.core.remote.expect("remote");
        assert_eq!(remote.urls[0].scheme, mcp_relay_core::Scheme::Https);
        assert_eq!(remote.urls[0].port, 443);
        // Plain remotes need no TLS.
        let config = client(&["--connect", "http://h/mcp"], &[]).expect("valid");
        assert!(config.tls_client.is_none());
    }

    #[test]
    fn client_mode_mistakes_name_the_flag() {
        for (argv, expect) in [
            (
                &["--connect", "http://h/", "--demo"][..],
                "--connect replaces the server command",
            ),
            (
                &["--connect", "http://h/", "--", "./server"],
                "--connect replaces the server command",
            ),
            (&["--connect", "http://h/", "--prespawn", "1"], "--prespawn"),
            (&["--connect", "h:1"], "--connect: \"h:1\" is not a URL"),
            (
                &["--connect", "http://h/", "--transport", "tcp"],
                "--transport tcp goes with tcp:// and tls:// URLs",
            ),
            (
                &["--connect", "tcp://h:1", "--connect", "http://h/"],
                "--connect must all be tcp:// or tls://, or all be http:// or https://",
            ),
            (
                &["--connect", "http://h/", "--connect-timeout", "0"],
                "--connect-timeout must be more than 0",
            ),
            (
                &["--header", "X: y", "--demo"],
                "--header goes with --connect",
            ),
            (
                &["--bearer-token", "t", "--demo"],
                "--bearer-token goes with --connect",
            ),
            (
                &["--transport", "sse", "--demo"],
                "--transport goes with --connect",
            ),
            (&[], "nothing to listen on"),
        ] {
            let got = client(argv, &[]).err();
            assert!(
                got.as_deref().is_some_and(|e| e.contains(expect)),
                "{argv:?}: {got:?}, expected {expect:?}"
            );
        }
        // Without either, both ways are offered.
        let e = client(&[], &[]).expect_err("nothing to do");
        assert!(e.contains("--listen") && e.contains("--connect"), "{e}");
        let e = client(&["--listen", "127.0.0.1:0"], &[]).expect_err("no command");
        assert!(e.contains("command") && e.contains("--connect"), "{e}");
        // An unknown transport is argh's error, naming the flag.
        let e = client(&["--connect", "http://h/", "--transport", "x"], &[]).expect_err("x");
        assert!(
            e.contains("--transport") && e.contains("unknown transport"),
            "{e}"
        );
    }

    #[test]
    fn bearer_token_and_headers() {
        let c = ["--connect", "http://h/mcp"];
        fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
            ["--connect", "http://h/mcp"]
                .into_iter()
                .chain(extra.iter().copied())
                .collect()
        }
        let auth = |v: &str| ("Authorization".to_owned(), v.to_owned());
        assert_eq!(headers(&c, &[]), []);
        assert_eq!(
            headers(&with(&["--bearer-token", "t1"]), &[]),
            [auth("Bearer t1")]
        );
        // The environment's token when the flag is absent; the flag wins over it.
        assert_eq!(
            headers(&c, &[("API_ACCESS_TOKEN", "t2")]),
            [auth("Bearer t2")]
        );
        assert_eq!(
            headers(
                &with(&["--bearer-token", "t1"]),
                &[("API_ACCESS_TOKEN", "t2")]
            ),
            [auth("Bearer t1")]
        );
        assert_eq!(headers(&c, &[("API_ACCESS_TOKEN", "")]), []);
        // An explicit Authorization header wins over both.
        assert_eq!(
            headers(
                &with(&[
                    "--header",
                    "authorization:Basic ${CREDS}",
                    "--bearer-token",
                    "t1"
                ]),
                &[("API_ACCESS_TOKEN", "t2"), ("CREDS", "dTpw")]
            ),
            [("authorization".to_owned(), "Basic dTpw".to_owned())]
        );
        assert_eq!(
            headers(
                &with(&["--header", "X-A: 1", "--header", "X-B:${B:-2}"]),
                &[]
            ),
            [
                ("X-A".to_owned(), "1".to_owned()),
                ("X-B".to_owned(), "2".to_owned())
            ]
        );
        // Mistakes name the flag and never show the secret.
        for (extra, env, expect) in [
            (
                &["--bearer-token", "sec ret"][..],
                &[][..],
                "--bearer-token: a token",
            ),
            (
                &[],
                &[("API_ACCESS_TOKEN", "sec ret")],
                "API_ACCESS_TOKEN: a token",
            ),
            (
                &["--header", "Authorization secret"],
                &[],
                "--header #1: expected",
            ),
            (
                &["--header", "X: ${V}"],
                &[("V", "a\nsecret")],
                "--header X: the value",
            ),
        ] {
            let e = client(&with(extra), env).expect_err("refused");
            assert!(
                e.contains(expect) && !e.contains("secret"),
                "{extra:?}: {e}"
            );
        }
    }

    /// Bearer tokens guard HTTP; with no HTTP listener they would guard nothing.
    #[test]
    fn tokens_without_http_are_refused() {
        let tcp = ["--listen", "127.0.0.1:0", "--demo"];
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            tcp.iter().chain(extra).copied().collect()
        };
        let e = client(&with(&["--auth-token", "t"]), &[]).expect_err("refused");
        assert!(
            e.starts_with("--auth-token: bearer tokens guard HTTP listeners, and there is none"),
            "{e}"
        );
        let e = client(&["--connect", "http://h/", "--auth-token", "t"], &[]).expect_err("stdio");
        assert!(e.starts_with("--auth-token: "), "{e}");
        let e = client(&with(&["--auth-token-file", "/dev/null"]), &[]).expect_err("file");
        assert!(e.starts_with("--auth-token-file: "), "{e}");
        let args = Args::from_args(&["mcp-relay"], &tcp).expect("parses");
        let e = validate(args, Some("t".into()), &|_| None, None)
            .err()
            .expect("refused");
        assert!(e.starts_with("MCP_RELAY_AUTH_TOKEN: "), "{e}");
        // With an HTTP listener beside the TCP one: accepted.
        let config = client(
            &with(&["--listen", "http://127.0.0.1:0", "--auth-token", "t"]),
            &[],
        )
        .expect("valid");
        assert_eq!(config.core.http.auth_tokens, ["t"]);
    }

    /// `MCP_RELAY_AUTH_TOKEN`: one token per line, added to the flags'; set but empty is a
    /// mistake.
    #[test]
    fn tokens_from_the_environment() {
        let http = || {
            Args::from_args(
                &["mcp-relay"],
                &[
                    "--listen",
                    "http://127.0.0.1:0",
                    "--demo",
                    "--auth-token",
                    "a",
                ],
            )
            .expect("parses")
        };
        let tokens = |env: &str| {
            validate(http(), Some(env.into()), &|_| None, None)
                .map(|s| s.runtime.core.http.auth_tokens)
        };
        assert_eq!(tokens("b"), Ok(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(
            tokens("b\r\n\nc\n"),
            Ok(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
        );
        assert_eq!(
            tokens(" \n").err().as_deref(),
            Some("MCP_RELAY_AUTH_TOKEN is set but holds no token")
        );
    }

    /// Every flag but --help and --version has its variable, and README lists each one.
    #[test]
    fn every_flag_has_a_variable_in_readme() {
        let flags: Vec<String> = help_flags()
            .into_iter()
            .map(|(flag, _)| flag)
            .filter(|f| f.starts_with("--") && f != "--help" && f != "--version")
            .collect();
        let vars = envflags::all_vars(&flags);
        assert_eq!(vars.len(), flags.len(), "{flags:?} → {vars:?}");
        let readme = include_str!("../../README.md");
        for var in vars {
            assert!(readme.contains(&format!("`{var}`")), "README lacks `{var}`");
        }
    }

    /// Variables become flags; the command line wins over them, and they over the file.
    #[test]
    fn file_settings_give_way_to_the_environment_and_the_command_line() {
        let relay = vec![
            ("--max-sessions".to_owned(), vec!["5".to_owned()]),
            ("--debug".to_owned(), vec![]),
            ("--listen".to_owned(), vec!["127.0.0.1:1".to_owned()]),
        ];
        let merged = with_file_settings(
            &relay,
            &["--max-sessions", "7", "--listen", "127.0.0.1:2"],
            &["--debug".to_owned()],
        );
        assert_eq!(merged, ["--max-sessions", "7", "--listen", "127.0.0.1:2"]);
        let merged = with_file_settings(&relay, &["--", "--debug"], &[]);
        assert_eq!(
            merged,
            [
                "--max-sessions",
                "5",
                "--debug",
                "--listen",
                "127.0.0.1:1",
                "--",
                "--debug"
            ]
        );
    }

    /// With no flags the relay runs with the core's defaults (but for what only the CLI knows:
    /// the server's label).
    #[test]
    fn no_flags_means_the_core_defaults() {
        let config = validated(&[]).expect("valid");
        let mut ours = Config {
            server_label: String::new(),
            seed: [0; 32],
            ..config.core
        };
        // Derived from this machine's name (the core has no default name).
        assert!(!ours.http.instance_id.is_empty());
        ours.http.instance_id.clear();
        let core = Config {
            server_label: String::new(),
            ..Config::default()
        };
        assert_eq!(format!("{ours:?}"), format!("{core:?}"));
    }

    /// The core's rules reach the operator under the flag's name.
    #[test]
    fn core_rules_name_the_flag() {
        for (argv, expect) in [
            (
                &["--max-message-size", "0"][..],
                "--max-message-size must be at least 1 byte",
            ),
            (
                &["--max-buffered", "0"],
                "--max-buffered must be at least 1 byte",
            ),
            (
                &["--max-in-flight", "0"],
                "--max-in-flight must be at least 1",
            ),
            (
                &["--heartbeat-interval", "0"],
                "--heartbeat-interval must be more than 0",
            ),
            (
                &["--ping-timeout", "0"],
                "--ping-timeout must be more than 0",
            ),
            (
                &["--restart-window", "0"],
                "--restart-window must be more than 0",
            ),
            (
                &["--max-sessions", "0"],
                "--max-sessions must be at least 1",
            ),
            (
                &["--stateless-pool", "0"],
                "--stateless-pool must be at least 1",
            ),
            (
                &["--session-timeout", "0"],
                "--session-timeout must be more than 0",
            ),
            (
                &["--sse-keepalive", "0"],
                "--sse-keepalive must be more than 0",
            ),
            (
                &["--header-timeout", "0"],
                "--header-timeout must be more than 0",
            ),
            (
                &["--auth-token", "a b"],
                "--auth-token: a token must be non-empty and have no spaces",
            ),
        ] {
            assert_eq!(validated(argv).err().as_deref(), Some(expect), "{argv:?}");
        }
        // Zero is how these flags turn something off.
        for argv in [
            &["--ping-interval", "0"][..],
            &["--max-restarts", "0", "--restart-window", "0"],
            &["--restart-delay", "1m"],
        ] {
            assert!(validated(argv).is_ok(), "{argv:?}");
        }
    }
}
