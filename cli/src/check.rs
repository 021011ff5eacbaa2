//! `mcp-relay check`: opens a session with an MCP server as a client would (initialize, the
//! lists the server offers, ping), with a deadline on every step, and reports what it found.
//! For scripts and health checks: exit status 0 means the server answered everything in time.
//!
//! The server is either a stdio command (`check -- COMMAND ARGS…`, run directly, no shell) or
//! a URL, reached through this very binary in client mode (`mcp-relay --connect URL`), so that
//! the check takes the path a real client of the relay takes. Either way the checked process
//! is a child on pipes, in a process group of its own; before the check returns it is stopped
//! (stdin closed, a short grace, then SIGKILL to the whole group) and reaped.
//!
//! Blocking I/O on threads, no event loop: one reader thread per output pipe feeds a single
//! channel, so that every wait is a `recv_timeout` bounded by the step's deadline, and a
//! writer thread owns the child's stdin, so that a child that never reads cannot block the
//! check.

use argh::FromArgs;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// The protocol version the check asks for.
const PROTOCOL_VERSION: &str = "2025-11-25";
const CLIENT_NAME: &str = "mcp-relay-check";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `--timeout` accepted (a mistyped unit should not make a health check hang).
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Between closing the child's stdin and SIGKILL to its process group.
const GRACE: Duration = Duration::from_secs(2);
/// How long an early exit's status and last stderr lines are waited for.
const EXIT_WAIT: Duration = Duration::from_secs(1);
/// How long the child's stderr may stay open after its group was killed (a process that left
/// the group may hold it).
const STDERR_WAIT: Duration = Duration::from_millis(500);
/// How often the child's exit is looked at during the grace (there is no event for it here).
const EXIT_POLL: Duration = Duration::from_millis(10);
/// Pages of one list followed at most; a server whose cursor never ends is not an error.
const MAX_PAGES: usize = 50;
/// The longest line read from the child's stdout (the relay's default --max-message-size).
const MAX_LINE: u64 = 16 * 1024 * 1024;
/// Longer stderr lines are cut into pieces of this size.
const MAX_STDERR_LINE: u64 = 64 * 1024;
/// Stderr lines kept (and shown on failure).
const STDERR_TAIL: usize = 5;
/// Non-JSON lines on stdout tolerated (banners, stray prints: the relay drops them too)
/// before the output counts as malformed.
const MAX_NOISE_LINES: usize = 100;
/// What the relay in client mode logs once it knows the remote's transport.
const TRANSPORT_PHRASE: &str = "the remote speaks ";
/// Names shown per list in the human report before "… N more".
const MAX_NAMES_SHOWN: usize = 40;
/// Characters of the joined names shown per list in the human report.
const MAX_NAMES_CHARS: usize = 500;
/// The options of `check` that take a value (for finding the `--` that starts a command).
const VALUE_OPTIONS: [&str; 7] = [
    "--transport",
    "--ca-cert",
    "--header",
    "--bearer-token",
    "--connect-timeout",
    "--log-level",
    "--timeout",
];

/// Check an MCP server end to end: initialize, list its tools, resources and prompts, ping.
#[derive(FromArgs, Debug)]
#[argh(
    example = "mcp-relay check http://127.0.0.1:8080/mcp\nmcp-relay check --json --bearer-token \"$TOKEN\" https://mcp.example.com/mcp\nmcp-relay check --timeout 30s -- npx -y @modelcontextprotocol/server-everything",
    note = "Forms: `mcp-relay check [options] URL` (the URL reached through `mcp-relay --connect\nURL`, with the flags marked URL) and `mcp-relay check [options] -- COMMAND ARGS…` (a stdio\nserver, run directly, without a shell).\n\nThe check sends initialize (protocol 2025-11-25), then tools/list, resources/list and\nprompts/list for what the server offers (up to 50 pages each), then ping. Each step must\nfinish within --timeout (so the whole check, within 5 × --timeout and a few seconds).\nThe server is stopped afterwards: stdin closed, 2s, then SIGKILL to its process group.\nExit status: 0 all answered, 1 failed (the reason on stderr), 2 usage error."
)]
struct CheckArgs {
    /// the server's URL (or a stdio server command after `--`)
    #[argh(positional)]
    url: Option<String>,

    /// URL: auto, streamable-http, stateless, sse or tcp (default: auto)
    #[argh(option)]
    transport: Option<String>,

    /// URL: an HTTP header for every request, 'Name: value' (repeatable)
    #[argh(option)]
    header: Vec<String>,

    /// URL: send `Authorization: Bearer TOKEN`
    #[argh(option)]
    bearer_token: Option<String>,

    /// URL: time allowed to connect to the remote
    #[argh(option)]
    connect_timeout: Option<String>,

    /// URL (https://): also trust the CA certificates in this PEM file
    #[argh(option)]
    ca_cert: Option<String>,

    /// URL (https://): do not verify the server's certificate (testing only)
    #[argh(switch)]
    tls_insecure_skip_verify: bool,

    /// URL: the log level of the relay that connects
    #[argh(option)]
    log_level: Option<String>,

    /// time each step may take, a list with all its pages (default: 10s)
    #[argh(option, from_str_fn(parse_timeout), default = "DEFAULT_TIMEOUT")]
    timeout: Duration,

    /// print one JSON object instead of the report
    #[argh(switch)]
    json: bool,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = crate::config::parse_duration(s)?;
    if d.is_zero() {
        return Err("--timeout must be more than 0".into());
    }
    if d > MAX_TIMEOUT {
        return Err("--timeout must be at most 1h".into());
    }
    Ok(d)
}

/// What is checked.
#[derive(Debug, PartialEq)]
enum Target {
    Url(String),
    Command(Vec<OsString>),
}

/// `mcp-relay check ARGS`: `args` are the arguments after `check`.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let (opts, target) = match parse(args) {
        Ok(parsed) => parsed,
        Err(Usage::Help(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(Usage::Error(e)) => {
            eprintln!("mcp-relay check: {e}");
            eprintln!("Run `mcp-relay check --help` for usage.");
            return ExitCode::from(2);
        }
    };
    let report = run(&opts, &target);
    if opts.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if let Some(failure) = &report.failure {
        eprintln!("mcp-relay check: {}", failure);
        if !report.stderr_tail.is_empty() {
            eprintln!("  its stderr ended with:");
            for line in &report.stderr_tail {
                eprintln!("  | {line}");
            }
        }
    }
    if report.interrupted {
        ExitCode::from(130)
    } else if report.failure.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(Debug)]
enum Usage {
    Help(String),
    Error(String),
}

/// Splits the arguments at the `--` that starts a command (not one that is an option's
/// value), and parses the options before it.
fn parse(args: Vec<OsString>) -> Result<(CheckArgs, Target), Usage> {
    let mut split = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].to_string_lossy();
        if arg == "--" {
            split = Some(i);
            break;
        }
        i += if VALUE_OPTIONS.contains(&arg.as_ref()) {
            2
        } else {
            1
        };
    }
    let (options, command) = match split {
        Some(at) => (&args[..at], args[at + 1..].to_vec()),
        None => (&args[..], Vec::new()),
    };
    let options: Vec<String> = options
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let strs: Vec<&str> = options.iter().map(String::as_str).collect();
    let opts = CheckArgs::from_args(&["mcp-relay", "check"], &strs).map_err(|early| {
        if early.status.is_ok() {
            Usage::Help(early.output)
        } else {
            Usage::Error(early.output.trim_end().to_owned())
        }
    })?;
    let target = match (&opts.url, split.is_some()) {
        (Some(_), true) => {
            return Err(Usage::Error(
                "give a URL or a command after `--`, not both".into(),
            ))
        }
        (None, false) => {
            return Err(Usage::Error(
                "nothing to check: give a URL (http://HOST:PORT/mcp) or a stdio server command after `--`".into(),
            ))
        }
        (None, true) if command.is_empty() => {
            return Err(Usage::Error("no command after `--`".into()))
        }
        (None, true) => Target::Command(command),
        (Some(url), false) => Target::Url(url.clone()),
    };
    if matches!(target, Target::Command(_)) {
        let url_only = [
            ("--transport", opts.transport.is_some()),
            ("--header", !opts.header.is_empty()),
            ("--bearer-token", opts.bearer_token.is_some()),
            ("--connect-timeout", opts.connect_timeout.is_some()),
            ("--log-level", opts.log_level.is_some()),
            ("--ca-cert", opts.ca_cert.is_some()),
            ("--tls-insecure-skip-verify", opts.tls_insecure_skip_verify),
        ];
        if let Some((flag, _)) = url_only.iter().find(|(_, given)| *given) {
            return Err(Usage::Error(format!(
                "{flag} applies to a URL, not to a command after `--`"
            )));
        }
    }
    Ok((opts, target))
}

/// The command line that starts the checked process.
fn command_for(opts: &CheckArgs, target: &Target) -> Result<Command, String> {
    match target {
        Target::Command(argv) => {
            // `parse` refuses an empty command.
            let Some((program, args)) = argv.split_first() else {
                return Err("no command after `--`".into());
            };
            let mut cmd = Command::new(program);
            cmd.args(args);
            // The relay never hands its own secret to servers; neither does its check.
            cmd.env_remove(crate::AUTH_TOKEN_VAR);
            Ok(cmd)
        }
        Target::Url(url) => {
            let exe = std::env::current_exe()
                .map_err(|e| format!("cannot find this program's own path: {e}"))?;
            let mut cmd = Command::new(exe);
            cmd.arg("--connect").arg(url);
            if let Some(t) = &opts.transport {
                cmd.arg("--transport").arg(t);
            }
            for h in &opts.header {
                cmd.arg("--header").arg(h);
            }
            if let Some(t) = &opts.bearer_token {
                cmd.arg("--bearer-token").arg(t);
            }
            if let Some(t) = &opts.connect_timeout {
                cmd.arg("--connect-timeout").arg(t);
            }
            if let Some(l) = &opts.log_level {
                cmd.arg("--log-level").arg(l);
            }
            if let Some(c) = &opts.ca_cert {
                cmd.arg("--ca-cert").arg(c);
            }
            if opts.tls_insecure_skip_verify {
                cmd.arg("--tls-insecure-skip-verify");
            }
            Ok(cmd)
        }
    }
}

fn describe_target(target: &Target) -> String {
    match target {
        Target::Url(url) => escape(url, 160),
        Target::Command(argv) => {
            let joined = argv
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ");
            escape(&joined, 160)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Step {
    name: &'static str,
    ms: f64,
    ok: bool,
    error: Option<String>,
    /// For the lists: how many items, whether pages were left unread, and what they are.
    items: Option<(usize, bool, &'static str)>,
}

#[derive(Debug)]
struct Report {
    target: String,
    server: Option<(String, String)>,
    protocol_version: Option<String>,
    transport: String,
    steps: Vec<Step>,
    /// `None`: not offered by the server (or not reached).
    tools: Option<Vec<String>>,
    resources: Option<Vec<String>>,
    prompts: Option<Vec<String>>,
    /// Non-JSON lines the server wrote to stdout, and the first few of them.
    noise: (usize, Vec<String>),
    failure: Option<String>,
    stderr_tail: Vec<String>,
    interrupted: bool,
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

impl Report {
    fn to_json(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                let mut step = json!({"name": s.name, "ms": s.ms, "ok": s.ok});
                if let Some(e) = &s.error {
                    step["error"] = json!(e);
                }
                step
            })
            .collect();
        let mut out = json!({
            "ok": self.failure.is_none(),
            "target": self.target,
            "server": self.server.as_ref().map(|(name, version)| json!({"name": name, "version": version})),
            "protocolVersion": self.protocol_version,
            "transport": self.transport,
            "steps": steps,
            "tools": self.tools,
            "resources": self.resources,
            "prompts": self.prompts,
        });
        if let Some(f) = &self.failure {
            out["error"] = json!(f);
            out["stderr"] = json!(self.stderr_tail);
        }
        if self.noise.0 > 0 {
            out["nonJsonLines"] = json!(self.noise.0);
        }
        out
    }

    fn to_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "target     {}", self.target);
        if let Some((name, version)) = &self.server {
            let _ = writeln!(
                out,
                "server     {} {}",
                escape(name, 200),
                escape(version, 100)
            );
        }
        if let Some(v) = &self.protocol_version {
            let _ = writeln!(out, "protocol   {}", escape(v, 100));
        }
        let _ = writeln!(out, "transport  {}", self.transport);
        for s in &self.steps {
            let mut line = format!("  {:<16}{:>9.1} ms", s.name, s.ms);
            if !s.ok {
                line.push_str("  FAILED");
            } else if let Some((n, more, what)) = s.items {
                let more = if more {
                    " (more pages left unread)"
                } else {
                    ""
                };
                let _ = write!(line, "  {n} {what}{more}");
            }
            let _ = writeln!(out, "{line}");
        }
        for (what, list) in [
            ("tools", &self.tools),
            ("resources", &self.resources),
            ("prompts", &self.prompts),
        ] {
            match list {
                Some(names) => {
                    let _ = writeln!(out, "{what} ({}): {}", names.len(), shown_names(names));
                }
                None if self.failure.is_none() => {
                    let _ = writeln!(out, "{what}: not offered");
                }
                None => {}
            }
        }
        if self.noise.0 > 0 {
            let _ = writeln!(
                out,
                "warning: {} non-JSON line(s) on stdout (the relay drops them), first: {}",
                self.noise.0,
                self.noise.1.first().map_or("", String::as_str)
            );
        }
        let _ = writeln!(
            out,
            "{}",
            if self.failure.is_none() {
                "OK"
            } else {
                "FAILED"
            }
        );
        out
    }
}

/// The names joined, cut to a readable length.
fn shown_names(names: &[String]) -> String {
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        let name = escape(name, 80);
        if i == MAX_NAMES_SHOWN || out.len() + name.len() > MAX_NAMES_CHARS {
            let _ = write!(out, ", … {} more", names.len() - i);
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&name);
    }
    out
}

/// `s` safe to print on a terminal: control and direction-changing characters escaped, at
/// most `max` characters.
fn escape(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        let bidi = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The check
// ---------------------------------------------------------------------------------------

fn run(opts: &CheckArgs, target: &Target) -> Report {
    let (who, given_transport) = match target {
        Target::Url(_) => (
            "the relay",
            opts.transport.clone().unwrap_or_else(|| "auto".into()),
        ),
        Target::Command(_) => ("the server", "stdio".to_owned()),
    };
    let mut report = Report {
        target: describe_target(target),
        server: None,
        protocol_version: None,
        transport: given_transport.clone(),
        steps: Vec::new(),
        tools: None,
        resources: None,
        prompts: None,
        noise: (0, Vec::new()),
        failure: None,
        stderr_tail: Vec::new(),
        interrupted: false,
    };
    let mut peer = match command_for(opts, target).and_then(|cmd| Peer::spawn(cmd, who, target)) {
        Ok(peer) => peer,
        Err(e) => {
            report.failure = Some(e);
            return report;
        }
    };
    if let Err(e) = session(&mut peer, opts.timeout, &mut report) {
        report.failure = Some(e);
    }
    peer.stop();
    report.interrupted = peer.interrupted;
    report.noise = (peer.noise_count, peer.noise.clone());
    let stderr = lock(&peer.stderr);
    if matches!(target, Target::Url(_)) {
        if let Some(t) = &stderr.transport {
            report.transport = t.clone();
        }
    }
    if report.failure.is_some() {
        report.stderr_tail = stderr.tail.iter().cloned().collect();
    }
    report
}

/// The steps; the first failure ends them (recorded in the step, returned as the reason).
fn session(peer: &mut Peer, timeout: Duration, report: &mut Report) -> Result<(), String> {
    let init = step(peer, report, "initialize", timeout, |peer, deadline| {
        let result = peer.request(
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": CLIENT_NAME, "version": env!("CARGO_PKG_VERSION")},
            }),
            deadline,
        )?;
        let Some(version) = result.get("protocolVersion").and_then(Value::as_str) else {
            return Err(format!(
                "malformed output: the initialize result has no protocolVersion: {}",
                escape(&result.to_string(), 200)
            ));
        };
        Ok((result.clone(), version.to_owned()))
    })?;
    let (result, version) = init;
    let info = result.get("serverInfo");
    let field = |k: &str| {
        info.and_then(|i| i.get(k))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    report.server = Some((field("name"), field("version")));
    report.protocol_version = Some(version);
    peer.waiting_for = "notifications/initialized";
    peer.notify("notifications/initialized")?;

    let caps = result.get("capabilities").cloned().unwrap_or(Value::Null);
    for (cap, method, key) in [
        ("tools", "tools/list", "tools"),
        ("resources", "resources/list", "resources"),
        ("prompts", "prompts/list", "prompts"),
    ] {
        if caps.get(cap).is_none_or(Value::is_null) {
            continue;
        }
        let (names, more) = step(peer, report, method, timeout, |peer, deadline| {
            list(peer, method, key, deadline)
        })?;
        if let Some(last) = report.steps.last_mut() {
            last.items = Some((names.len(), more, key));
        }
        match cap {
            "tools" => report.tools = Some(names),
            "resources" => report.resources = Some(names),
            _ => report.prompts = Some(names),
        }
    }

    step(peer, report, "ping", timeout, |peer, deadline| {
        peer.request("ping", json!({}), deadline).map(drop)
    })
}

/// Runs one step with its deadline and records it.
fn step<T>(
    peer: &mut Peer,
    report: &mut Report,
    name: &'static str,
    timeout: Duration,
    f: impl FnOnce(&mut Peer, Instant) -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    peer.waiting_for = name;
    peer.timeout = timeout;
    let outcome = f(peer, start + timeout);
    report.steps.push(Step {
        name,
        ms: round_ms(start.elapsed()),
        ok: outcome.is_ok(),
        error: outcome.as_ref().err().cloned(),
        items: None,
    });
    outcome
}

/// Every page of a list: the items' names, and whether pages were left unread.
fn list(
    peer: &mut Peer,
    method: &str,
    key: &str,
    deadline: Instant,
) -> Result<(Vec<String>, bool), String> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let result = peer.request(method, params, deadline)?;
        let Some(items) = result.get(key).and_then(Value::as_array) else {
            return Err(format!(
                "malformed output: the {method} result has no `{key}` array: {}",
                escape(&result.to_string(), 200)
            ));
        };
        for item in items {
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .or_else(|| item.get("uri").and_then(Value::as_str))
                .unwrap_or("?");
            names.push(name.to_owned());
        }
        match result.get("nextCursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok((names, false)),
        }
    }
    Ok((names, true))
}

// ---------------------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------------------

enum Event {
    Line(Vec<u8>),
    LineTooLong,
    StdoutClosed,
    StderrClosed,
    Interrupted,
}

#[derive(Default)]
struct StderrState {
    tail: VecDeque<String>,
    transport: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a child ended.
#[derive(Clone, Copy, Debug)]
enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => {
                let name = match s {
                    libc::SIGHUP => " (SIGHUP)",
                    libc::SIGINT => " (SIGINT)",
                    libc::SIGABRT => " (SIGABRT)",
                    libc::SIGKILL => " (SIGKILL)",
                    libc::SIGSEGV => " (SIGSEGV)",
                    libc::SIGPIPE => " (SIGPIPE)",
                    libc::SIGTERM => " (SIGTERM)",
                    _ => "",
                };
                write!(f, "killed by signal {s}{name}")
            }
        }
    }
}

/// The checked process and the session with it.
struct Peer {
    child: Child,
    /// Its pid, which is also its process group's id.
    pid: i32,
    /// To the writer thread, which owns the child's stdin; `None` once stdin is closed.
    stdin: Option<Sender<Vec<u8>>>,
    events: Receiver<Event>,
    stderr: Arc<Mutex<StderrState>>,
    stdout_closed: bool,
    stderr_closed: bool,
    exit: Option<Exit>,
    reaped: bool,
    interrupted: bool,
    who: &'static str,
    /// The step under way and its timeout, for the failure messages.
    waiting_for: &'static str,
    timeout: Duration,
    next_id: u64,
    noise_count: usize,
    noise: Vec<String>,
}

impl Peer {
    fn spawn(mut cmd: Command, who: &'static str, target: &Target) -> Result<Peer, String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that the final SIGKILL reaches grandchildren too.
            .process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe. The child is SIGKILLed if this thread (the main thread, which
        // lives as long as the check) dies, so that not even a SIGKILLed check leaks it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            let what = match target {
                Target::Url(_) => "the relay (`mcp-relay --connect`)".to_owned(),
                Target::Command(argv) => format!(
                    "`{}`",
                    escape(
                        &argv
                            .first()
                            .map(|a| a.to_string_lossy())
                            .unwrap_or_default(),
                        200
                    )
                ),
            };
            match e.kind() {
                io::ErrorKind::NotFound => format!("cannot start {what}: not found ({e})"),
                io::ErrorKind::PermissionDenied => {
                    format!("cannot start {what}: not executable ({e})")
                }
                _ => format!("cannot start {what}: {e}"),
            }
        })?;
        let pid = i32::try_from(child.id()).unwrap_or(0);
        let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (Some(stdin), Some(stdout), Some(stderr), true) = (pipes.0, pipes.1, pipes.2, pid > 1)
        else {
            // All three were asked for as pipes above, so std always provides them, and a
            // child's pid is never 0 or 1; this only keeps the group kill below sound.
            let _ = child.kill();
            let _ = child.wait();
            return Err("cannot start the child: its pipes were not created".into());
        };
        let (tx, events) = mpsc::channel();
        let stderr_state = Arc::new(Mutex::new(StderrState::default()));
        let started = spawn_stdout_reader(stdout, tx.clone())
            .and_then(|()| spawn_stderr_reader(stderr, Arc::clone(&stderr_state), tx.clone()))
            .and_then(|()| spawn_writer(stdin));
        let stdin_tx = match started {
            Ok(stdin_tx) => stdin_tx,
            Err(e) => {
                kill_group(pid);
                let _ = child.wait();
                return Err(format!("cannot start the check's threads: {e}"));
            }
        };
        // A Ctrl-C would otherwise end the check and leave the child, which is in a process
        // group of its own and does not see the terminal's signal, running. The handler can
        // only be set once per process; `check` runs once.
        let (on_term, on_hup) = (tx.clone(), tx.clone());
        let _ = ctrlc::set_handler(move || {
            let _ = tx.send(Event::Interrupted);
        });
        // SIGTERM and SIGHUP (a closed terminal) end the check the same way.
        let _ = crate::signals::install(
            move || {
                let _ = on_term.send(Event::Interrupted);
            },
            move || {
                let _ = on_hup.send(Event::Interrupted);
            },
        );
        Ok(Peer {
            child,
            pid,
            stdin: Some(stdin_tx),
            events,
            stderr: stderr_state,
            stdout_closed: false,
            stderr_closed: false,
            exit: None,
            reaped: false,
            interrupted: false,
            who,
            waiting_for: "initialize",
            timeout: DEFAULT_TIMEOUT,
            next_id: 0,
            noise_count: 0,
            noise: Vec::new(),
        })
    }

    fn send(&mut self, msg: &Value) -> Result<(), String> {
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        match &self.stdin {
            Some(tx) if tx.send(line).is_ok() => Ok(()),
            // The writer thread stops when a write fails: the child closed its stdin.
            _ => Err(self.ended()),
        }
    }

    fn notify(&mut self, method: &str) -> Result<(), String> {
        self.send(&json!({"jsonrpc": "2.0", "method": method}))
    }

    /// Sends a request and waits until `deadline` for its response; answers the child's own
    /// requests meanwhile. The result, or why there is none.
    fn request(&mut self, method: &str, params: Value, deadline: Instant) -> Result<Value, String> {
        self.next_id += 1;
        let id = json!(self.next_id);
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        loop {
            let now = Instant::now();
            let event = match self
                .events
                .recv_timeout(deadline.saturating_duration_since(now))
            {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => return Err(self.timed_out()),
                // Cannot happen while the Ctrl-C handler holds a sender; if it did, nothing
                // more could arrive.
                Err(RecvTimeoutError::Disconnected) => return Err(self.ended()),
            };
            let line = match event {
                Event::Line(line) => line,
                Event::LineTooLong => {
                    return Err(format!(
                    "malformed output: {} wrote a line longer than {} MiB while we waited for {}",
                    self.who,
                    MAX_LINE >> 20,
                    self.waiting_for
                ))
                }
                Event::StdoutClosed => {
                    self.stdout_closed = true;
                    return Err(self.ended());
                }
                Event::StderrClosed => {
                    self.stderr_closed = true;
                    continue;
                }
                Event::Interrupted => {
                    self.interrupted = true;
                    return Err(format!(
                        "interrupted while waiting for {}",
                        self.waiting_for
                    ));
                }
            };
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let msgs = match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(batch)) => batch,
                Ok(msg) => vec![msg],
                Err(_) => {
                    self.noise_count += 1;
                    if self.noise.len() < 3 {
                        self.noise.push(escape(text, 120));
                    }
                    if self.noise_count > MAX_NOISE_LINES {
                        return Err(format!(
                            "malformed output: {} wrote more than {MAX_NOISE_LINES} lines that are not JSON to stdout (the first: {})",
                            self.who,
                            self.noise.first().map_or("", String::as_str)
                        ));
                    }
                    continue;
                }
            };
            for msg in msgs {
                if let Some(result) = self.handle(msg, &id, method)? {
                    return Ok(result);
                }
            }
        }
    }

    /// One message from the child: the result if it answers `id`.
    fn handle(&mut self, msg: Value, id: &Value, method: &str) -> Result<Option<Value>, String> {
        let Value::Object(mut msg) = msg else {
            return Err(format!(
                "malformed output: {} sent JSON that is not a JSON-RPC message: {}",
                self.who,
                escape(&msg.to_string(), 200)
            ));
        };
        if let Some(m) = msg.get("method") {
            if let Some(their_id) = msg.get("id") {
                // A request to us: ping is answered, anything else is not supported.
                let answer = if m == "ping" {
                    json!({"jsonrpc": "2.0", "id": their_id, "result": {}})
                } else {
                    json!({"jsonrpc": "2.0", "id": their_id, "error": {
                        "code": -32601,
                        "message": format!("mcp-relay check does not support {}", m.as_str().unwrap_or("this method")),
                    }})
                };
                self.send(&answer)?;
            }
            // Notifications (logging, progress, list changes) need nothing.
            return Ok(None);
        }
        if msg.get("id") != Some(id) {
            if msg.contains_key("id") {
                // An answer to nothing we are waiting for.
                return Ok(None);
            }
            return Err(format!(
                "malformed output: {} sent JSON that is not a JSON-RPC message: {}",
                self.who,
                escape(&Value::Object(msg).to_string(), 200)
            ));
        }
        if let Some(error) = msg.get("error") {
            let code = error.get("code").and_then(Value::as_i64);
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            let code = code.map_or_else(String::new, |c| format!(" {c}"));
            return Err(format!(
                "{method} failed: {} answered with error{code}: {}",
                self.who,
                escape(message, 300)
            ));
        }
        match msg.remove("result") {
            Some(result @ Value::Object(_)) => Ok(Some(result)),
            _ => Err(format!(
                "malformed output: the answer to {method} has neither an object result nor an error: {}",
                escape(&Value::Object(msg).to_string(), 200)
            )),
        }
    }

    fn timed_out(&mut self) -> String {
        let mut reason = format!(
            "timed out: no answer to {} within {}",
            self.waiting_for,
            show_duration(self.timeout)
        );
        if let Some(exit) = self.peek_exit() {
            let _ = write!(reason, " ({} exited: {exit})", self.who);
        }
        reason
    }

    /// Why the child can no longer answer: it exited, or closed its stdout (or stdin).
    fn ended(&mut self) -> String {
        let until = Instant::now() + EXIT_WAIT;
        // Its exit status and its last words on stderr may come a moment after its stdout.
        while self.peek_exit().is_none() && Instant::now() < until {
            self.wait_event(Instant::now() + EXIT_POLL);
        }
        while !self.stderr_closed && Instant::now() < until {
            self.wait_event(until);
        }
        match self.exit {
            Some(exit) => format!("{} exited during {} ({exit})", self.who, self.waiting_for),
            None if self.stdout_closed => format!(
                "{} closed its stdout during {} (it still runs)",
                self.who, self.waiting_for
            ),
            None => format!(
                "{} closed its stdin during {} (it still runs)",
                self.who, self.waiting_for
            ),
        }
    }

    /// Waits for one event until `until`, noting pipes that end and interruptions.
    fn wait_event(&mut self, until: Instant) {
        match self
            .events
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            Ok(Event::StdoutClosed) => self.stdout_closed = true,
            Ok(Event::StderrClosed) => self.stderr_closed = true,
            Ok(Event::Interrupted) => self.interrupted = true,
            Ok(Event::Line(_) | Event::LineTooLong) => {}
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                self.stdout_closed = true;
                self.stderr_closed = true;
                // Nothing more can arrive: do not spin until `until`.
                thread::sleep(
                    until
                        .saturating_duration_since(Instant::now())
                        .min(EXIT_POLL),
                );
            }
        }
    }

    /// The child's exit, if it has exited, without reaping it: while it is a zombie its pid,
    /// which is its process group's id, cannot be reused, so the group may still be signalled.
    fn peek_exit(&mut self) -> Option<Exit> {
        if self.exit.is_some() || self.reaped {
            return self.exit;
        }
        // SAFETY: siginfo_t is plain data, for which all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid siginfo_t to write to; `pid` is our unreaped child.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc != 0 {
            return None;
        }
        // SAFETY: waitid(2) filled `info` as for SIGCHLD (si_pid is 0 when nothing exited),
        // so the pid and status fields are the ones to read.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return None;
        }
        self.exit = match info.si_code {
            libc::CLD_EXITED => Some(Exit::Code(status)),
            libc::CLD_KILLED | libc::CLD_DUMPED => Some(Exit::Signal(status)),
            _ => None,
        };
        self.exit
    }

    /// Closes the child's stdin, gives it [`GRACE`] to exit, SIGKILLs its process group and
    /// reaps it; then waits a little for the rest of its stderr.
    fn stop(&mut self) {
        self.stdin = None;
        let grace_end = Instant::now() + GRACE;
        while self.peek_exit().is_none() && Instant::now() < grace_end {
            self.wait_event(Instant::now() + EXIT_POLL);
        }
        // Not reaped yet, so the group id is still ours (see `peek_exit`); grandchildren
        // that stayed in the group go too.
        kill_group(self.pid);
        if let Ok(status) = self.child.wait() {
            use std::os::unix::process::ExitStatusExt;
            if self.exit.is_none() {
                self.exit = status
                    .code()
                    .map(Exit::Code)
                    .or(status.signal().map(Exit::Signal));
            }
        }
        self.reaped = true;
        let until = Instant::now() + STDERR_WAIT;
        while !self.stderr_closed && Instant::now() < until {
            self.wait_event(until);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // `stop` is always called; this covers a panic between spawn and stop.
        if !self.reaped {
            kill_group(self.pid);
            let _ = self.child.wait();
        }
    }
}

/// SIGKILL to process group `pgid`.
fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions; pgid > 1 keeps it off init and
        // off "every process".
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

fn show_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn spawn_stdout_reader(stdout: impl Read + Send + 'static, tx: Sender<Event>) -> io::Result<()> {
    thread::Builder::new()
        .name("check-stdout".into())
        .spawn(move || {
            let mut r = BufReader::with_capacity(64 * 1024, stdout);
            loop {
                let mut buf = Vec::new();
                match (&mut r).take(MAX_LINE).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if buf.last() != Some(&b'\n') && n as u64 == MAX_LINE {
                            let _ = tx.send(Event::LineTooLong);
                            return;
                        }
                        if tx.send(Event::Line(buf)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Event::StdoutClosed);
        })
        .map(drop)
}

fn spawn_stderr_reader(
    stderr: impl Read + Send + 'static,
    state: Arc<Mutex<StderrState>>,
    tx: Sender<Event>,
) -> io::Result<()> {
    thread::Builder::new()
        .name("check-stderr".into())
        .spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match (&mut r).take(MAX_STDERR_LINE).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']);
                        let mut state = lock(&state);
                        if state.transport.is_none() {
                            state.transport = transport_in(line);
                        }
                        if state.tail.len() == STDERR_TAIL {
                            state.tail.pop_front();
                        }
                        state.tail.push_back(escape(line, 300));
                    }
                }
            }
            let _ = tx.send(Event::StderrClosed);
        })
        .map(drop)
}

/// The transport named in a log line of the relay in client mode, if the line names one.
fn transport_in(line: &str) -> Option<String> {
    let rest = line.split(TRANSPORT_PHRASE).nth(1)?;
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '.'))
        .collect();
    let word = word.trim_end_matches('.');
    (!word.is_empty()).then(|| word.to_owned())
}

/// The thread that writes to the child's stdin; dropping the returned sender closes it.
fn spawn_writer(mut stdin: ChildStdin) -> io::Result<Sender<Vec<u8>>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    thread::Builder::new()
        .name("check-stdin".into())
        .spawn(move || {
            for line in rx {
                if stdin.write_all(&line).and_then(|()| stdin.flush()).is_err() {
                    return;
                }
            }
        })?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    fn target(a: &[&str]) -> Result<Target, String> {
        match parse(args(a)) {
            Ok((_, t)) => Ok(t),
            Err(Usage::Error(e)) => Err(e),
            Err(Usage::Help(_)) => Err("help".into()),
        }
    }

    #[test]
    fn the_target_is_a_url_or_the_command_after_the_separator() {
        assert_eq!(
            target(&["http://h/mcp"]),
            Ok(Target::Url("http://h/mcp".into()))
        );
        assert_eq!(
            target(&["--timeout", "1s", "--", "srv", "--", "x"]),
            Ok(Target::Command(args(&["srv", "--", "x"])))
        );
        // A `--` that is an option's value is not the separator.
        assert_eq!(
            target(&["--header", "--", "http://h/mcp"]),
            Ok(Target::Url("http://h/mcp".into()))
        );
        assert_eq!(
            target(&["--", "http://h/mcp"]),
            Ok(Target::Command(args(&["http://h/mcp"])))
        );
        for (argv, expect) in [
            (&[][..], "nothing to check"),
            (&["--"], "no command after `--`"),
            (&["http://h/mcp", "--", "srv"], "not both"),
            (
                &["--transport", "sse", "--", "srv"],
                "--transport applies to a URL",
            ),
            (&["--timeout", "0", "http://h/mcp"], "more than 0"),
            (&["--timeout", "2h", "http://h/mcp"], "at most 1h"),
        ] {
            let e = target(argv).expect_err(expect);
            assert!(e.contains(expect), "{argv:?}: {e}");
        }
        assert_eq!(target(&["--help"]), Err("help".into()));
    }

    #[test]
    fn the_transport_is_read_from_the_relay_log_line() {
        for (line, expect) in [
            (
                "[.. INFO] the remote speaks streamable-http",
                Some("streamable-http"),
            ),
            (
                "the remote speaks sse (legacy HTTP+SSE), endpoint /messages",
                Some("sse"),
            ),
            ("the remote speaks tcp.", Some("tcp")),
            ("the remote speaks ", None),
            ("connecting to http://h/mcp", None),
        ] {
            assert_eq!(transport_in(line).as_deref(), expect, "{line}");
        }
    }

    #[test]
    fn escaping_keeps_the_terminal_safe() {
        assert_eq!(escape("a\x1b[31mb\r\n", 100), "a\\u{1b}[31mb\\r\\n");
        assert_eq!(escape("evil\u{202e}txt", 100), "evil\\u{202e}txt");
        assert_eq!(escape("abcdef", 3), "abc…");
    }

    #[test]
    fn long_lists_are_cut() {
        let names: Vec<String> = (0..100).map(|i| format!("tool{i}")).collect();
        let shown = shown_names(&names);
        assert!(shown.starts_with("tool0, tool1, "), "{shown}");
        assert!(
            shown.ends_with(&format!("… {} more", 100 - MAX_NAMES_SHOWN)),
            "{shown}"
        );
        assert_eq!(shown_names(&["a".into(), "b".into()]), "a, b");
    }
}
