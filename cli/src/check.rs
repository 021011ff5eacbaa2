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
//!
//! `check --config FILE` checks every server of a servers file (the file of `mcp-relay
//! --config`), up to [`MAX_PARALLEL`] at a time, each as the relay would start or reach it: a
//! command entry with its `env`, `cwd` and `clean-env`; a remote entry through client mode
//! with its headers, transport and connect timeout, and the file's CA settings for https. It
//! prints one row per server (or one JSON object) and exits 1 if any failed. Header and
//! environment values are never printed nor put on a command line: a header reaches the
//! client-mode relay as `--header 'Name: ${MCP_RELAY_CHECK_H0}'`, its value in that
//! variable of the relay's environment (which a non-dumpable process keeps from other
//! processes of the user).

use crate::servers_file::{self, EntryKind, ServerEntry, ServersFile};
use argh::FromArgs;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};
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
/// With `--config`: servers checked at once.
const MAX_PARALLEL: usize = 4;
/// With `--config`: the client-mode relay reads the i-th header's value from this variable
/// followed by i (so that the value is neither on its command line nor expanded twice).
const HEADER_VAR: &str = "MCP_RELAY_CHECK_H";
/// With `--config`: characters of a failure's reason shown in the table (all of it goes to
/// stderr).
const MAX_REASON_SHOWN: usize = 60;
/// The options of `check` that take a value (for finding the `--` that starts a command).
const VALUE_OPTIONS: [&str; 8] = [
    "--config",
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
    example = "mcp-relay check http://127.0.0.1:8080/mcp\nmcp-relay check --json --bearer-token \"$TOKEN\" https://mcp.example.com/mcp\nmcp-relay check --timeout 30s -- npx -y @modelcontextprotocol/server-everything\nmcp-relay check --config servers.json",
    note = "Forms: `mcp-relay check [options] URL` (the URL reached through `mcp-relay --connect\nURL`, with the flags marked URL), `mcp-relay check [options] -- COMMAND ARGS…` (a stdio\nserver, run directly, without a shell) and `mcp-relay check [options] --config FILE`\n(every server of a servers file, as `mcp-relay --config FILE` would run or reach it: a\ncommand with its env, cwd and clean-env; a url through `mcp-relay --connect` with its\nheaders, type, transport, connect-timeout and the file's ca_cert; up to 4 at a time; one\nrow each: NAME KIND RESULT SERVER TOOLS RESOURCES PROMPTS TIME; with --json, one object\n{{\"servers\": [...], \"ok\": ...}}). Header and env values are never printed.\n\nThe check sends initialize (protocol 2025-11-25), then tools/list, resources/list and\nprompts/list for what the server offers (up to 50 pages each), then ping. Each step must\nfinish within --timeout (so the whole check, within 5 × --timeout and a few seconds).\nThe server is stopped afterwards: stdin closed, 2s, then SIGKILL to its process group.\nExit status: 0 all answered, 1 failed (the reason on stderr; with --config, any server),\n2 usage error or a servers file that cannot be read or is wrong (its message on stderr)."
)]
struct CheckArgs {
    /// the server's URL (or a stdio server command after `--`)
    #[argh(positional)]
    url: Option<String>,

    /// check every server of this servers file (the format of `mcp-relay --config`) and
    /// print a table; not with a URL or a command
    #[argh(option)]
    config: Option<PathBuf>,

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
    /// A servers file: each of its servers is a `Url` or a `Command`.
    Config(PathBuf),
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
    if let Target::Config(path) = &target {
        return main_config(&opts, path);
    }
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
    if opts.config.is_some() {
        return config_target(opts, split.is_some());
    }
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

/// `--config FILE`: neither a URL nor a command, and none of the flags that the file's
/// entries give themselves.
fn config_target(opts: CheckArgs, command: bool) -> Result<(CheckArgs, Target), Usage> {
    let Some(path) = opts.config.clone() else {
        return Err(Usage::Error("no --config".into()));
    };
    if opts.url.is_some() || command {
        let what = if command {
            "the command after `--`"
        } else {
            "the URL"
        };
        return Err(Usage::Error(format!(
            "--config checks the servers of the file: leave out {what} (check one server with `mcp-relay check URL` or `mcp-relay check -- COMMAND`)"
        )));
    }
    let from_the_file = [
        ("--transport", opts.transport.is_some()),
        ("--header", !opts.header.is_empty()),
        ("--bearer-token", opts.bearer_token.is_some()),
        ("--connect-timeout", opts.connect_timeout.is_some()),
        ("--ca-cert", opts.ca_cert.is_some()),
        ("--tls-insecure-skip-verify", opts.tls_insecure_skip_verify),
    ];
    if let Some((flag, _)) = from_the_file.iter().find(|(_, given)| *given) {
        return Err(Usage::Error(format!(
            "{flag} does not go with --config: the file says it, in an entry or in its \"relay\" settings"
        )));
    }
    Ok((opts, Target::Config(path)))
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
        Target::Config(path) => Err(format!(
            "{}: a servers file is checked server by server",
            path.display()
        )),
    }
}

fn describe_target(target: &Target) -> String {
    match target {
        Target::Url(url) => escape(url, 160),
        Target::Command(argv) => describe_command(argv.iter().map(|a| a.to_string_lossy())),
        Target::Config(path) => escape(&path.display().to_string(), 160),
    }
}

fn describe_command<S: AsRef<str>>(argv: impl Iterator<Item = S>) -> String {
    let joined = argv
        .map(|a| a.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join(" ");
    escape(&joined, 160)
}

/// What the error says when the process cannot be started.
fn spawn_what(target: &Target) -> String {
    match target {
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
        Target::Config(_) => "the server".to_owned(),
    }
}

/// How one server is checked: the process to start, and what the report says of it.
struct Launch {
    command: Result<Command, String>,
    /// The report's `target` (with nothing secret in it).
    target: String,
    /// Through client mode: the relay logs the transport it found.
    via_relay: bool,
    /// The transport the report names (until the relay tells).
    transport: String,
    /// Who answers, for the failure messages: "the server" or "the relay".
    who: &'static str,
    /// What the error names when the process cannot be started.
    what: String,
}

impl Launch {
    /// The single server of `mcp-relay check URL` or `check -- COMMAND`.
    fn of(opts: &CheckArgs, target: &Target) -> Launch {
        let via_relay = matches!(target, Target::Url(_));
        Launch {
            command: command_for(opts, target),
            target: describe_target(target),
            via_relay,
            transport: if via_relay {
                opts.transport.clone().unwrap_or_else(|| "auto".into())
            } else {
                "stdio".into()
            },
            who: if via_relay { "the relay" } else { "the server" },
            what: spawn_what(target),
        }
    }
}

// ---------------------------------------------------------------------------------------
// --config FILE
// ---------------------------------------------------------------------------------------

/// One server of a servers file, checked.
#[derive(Debug)]
struct Row {
    name: String,
    /// stdio, http, sse or tcp.
    kind: &'static str,
    report: Report,
}

/// `check --config FILE`: every server, a table (or one JSON object), the reasons on stderr.
fn main_config(opts: &CheckArgs, path: &Path) -> ExitCode {
    let file = match servers_file::load(path, &|name| std::env::var(name).ok()) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("mcp-relay check: {e}");
            return ExitCode::from(2);
        }
    };
    let rows = check_all(opts, &file);
    let ok = rows.iter().all(|r| r.report.failure.is_none());
    if opts.json {
        let servers: Vec<Value> = rows.iter().map(Row::to_json).collect();
        println!("{}", json!({"servers": servers, "ok": ok}));
    } else {
        print!("{}", table(&rows));
    }
    for row in &rows {
        let Some(failure) = &row.report.failure else {
            continue;
        };
        eprintln!("mcp-relay check: {}: {failure}", row.name);
        if !row.report.stderr_tail.is_empty() {
            eprintln!("  its stderr ended with:");
            for line in &row.report.stderr_tail {
                eprintln!("  | {line}");
            }
        }
    }
    if rows.iter().any(|r| r.report.interrupted) {
        ExitCode::from(130)
    } else if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Checks the servers of `file`, up to [`MAX_PARALLEL`] at once; the rows in file order.
fn check_all(opts: &CheckArgs, file: &ServersFile) -> Vec<Row> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Row>>> = Mutex::new(file.servers.iter().map(|_| None).collect());
    let work = || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        let Some(entry) = file.servers.get(i) else {
            return;
        };
        let row = check_entry(opts, file, entry);
        if let Some(slot) = lock(&done).get_mut(i) {
            *slot = Some(row);
        }
    };
    thread::scope(|scope| {
        for n in 1..MAX_PARALLEL.min(file.servers.len()) {
            let helper = thread::Builder::new()
                .name(format!("check-{n}"))
                .spawn_scoped(scope, work);
            // With fewer threads than asked for, fewer checks run at once: this thread
            // works too.
            if helper.is_err() {
                break;
            }
        }
        work();
    });
    let done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    done.into_iter()
        .zip(&file.servers)
        .map(|(row, entry)| {
            // Every index below the length was taken by a worker, and a worker that
            // panicked made the scope panic; this only keeps the table whole.
            row.unwrap_or_else(|| {
                let (kind, mut launch) = launch_entry(opts, file, entry);
                launch.command = Err("not checked".into());
                Row {
                    name: entry.name.clone(),
                    kind,
                    report: run_launch(launch, opts.timeout),
                }
            })
        })
        .collect()
}

fn check_entry(opts: &CheckArgs, file: &ServersFile, entry: &ServerEntry) -> Row {
    let (kind, mut launch) = launch_entry(opts, file, entry);
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);
    if interrupted {
        launch.command = Err("interrupted before it was checked".into());
    }
    let mut report = run_launch(launch, opts.timeout);
    report.interrupted |= interrupted;
    Row {
        name: entry.name.clone(),
        kind,
        report,
    }
}

/// The values of a relay setting (the file reader allows each setting once).
fn values<'a>(settings: &'a [(String, Vec<String>)], flag: &str) -> &'a [String] {
    settings
        .iter()
        .find(|(f, _)| f == flag)
        .map_or(&[], |(_, v)| v.as_slice())
}

fn value<'a>(settings: &'a [(String, Vec<String>)], flag: &str) -> Option<&'a str> {
    values(settings, flag).first().map(String::as_str)
}

fn switch(settings: &[(String, Vec<String>)], flag: &str) -> bool {
    settings.iter().any(|(f, _)| f == flag)
}

/// An entry as `mcp-relay --config` would run it (a command) or reach it (a remote, through
/// client mode), and its kind.
fn launch_entry(
    opts: &CheckArgs,
    file: &ServersFile,
    entry: &ServerEntry,
) -> (&'static str, Launch) {
    match &entry.kind {
        EntryKind::Command {
            command,
            args,
            env,
            cwd,
        } => {
            let target = Target::Command(
                std::iter::once(command)
                    .chain(args)
                    .map(OsString::from)
                    .collect(),
            );
            let launch = Launch {
                command: entry_command(file, entry, command, args, env, cwd.as_deref()),
                target: describe_target(&target),
                via_relay: false,
                transport: "stdio".into(),
                who: "the server",
                what: spawn_what(&target),
            };
            ("stdio", launch)
        }
        EntryKind::Remote { url, sse, headers } => {
            let parsed = mcp_relay_core::RemoteUrl::parse(url).ok();
            let stream = parsed.as_ref().is_some_and(|u| u.scheme.is_stream());
            let tls = parsed.as_ref().is_some_and(|u| u.scheme.is_tls());
            // As the relay decides (servers.rs): the entry's own setting, then its type, then
            // the file's setting (which a tcp:// URL does not take).
            let transport = value(&entry.relay, "--transport")
                .or(sse.then_some("sse"))
                .or(if stream {
                    None
                } else {
                    value(&file.relay, "--transport")
                });
            let kind = match transport {
                Some("sse") => "sse",
                Some("tcp") => "tcp",
                _ if stream => "tcp",
                _ => "http",
            };
            let launch = Launch {
                command: remote_command(opts, file, entry, url, transport, headers, tls),
                target: escape(&crate::config::redact_url(url), 160),
                via_relay: true,
                transport: transport.unwrap_or("auto").to_owned(),
                who: "the relay",
                what: spawn_what(&Target::Url(String::new())),
            };
            (kind, launch)
        }
    }
}

/// A command entry's process: its command and arguments, the file's `env` and then its own,
/// its `cwd` (or the file's), and only PATH besides when `clean-env` is set (in the file or
/// the entry); never the relay's token.
fn entry_command(
    file: &ServersFile,
    entry: &ServerEntry,
    program: &str,
    args: &[String],
    env: &[(String, String)],
    cwd: Option<&Path>,
) -> Result<Command, String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if switch(&file.relay, "--clean-env") || switch(&entry.relay, "--clean-env") {
        let path = std::env::var_os("PATH");
        cmd.env_clear();
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
    }
    cmd.env_remove(crate::AUTH_TOKEN_VAR);
    for (i, pair) in values(&file.relay, "--env").iter().enumerate() {
        // The value is never shown.
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("relay env #{}: expected KEY=VALUE", i + 1));
        };
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let dir = cwd
        .map(Path::to_path_buf)
        .or_else(|| value(&file.relay, "--cwd").map(PathBuf::from));
    if let Some(dir) = dir {
        // Otherwise the spawn's "not found" would blame the command.
        if !dir.is_dir() {
            return Err(format!(
                "cwd {}: not a directory",
                escape(&dir.display().to_string(), 200)
            ));
        }
        cmd.current_dir(dir);
    }
    Ok(cmd)
}

/// A remote entry's client-mode relay: `mcp-relay --connect URL` with the transport, connect
/// timeout and headers the relay would use, and the file's CA settings for https. Each
/// header's value is in the relay's environment, named on its command line as `${VAR}`.
fn remote_command(
    opts: &CheckArgs,
    file: &ServersFile,
    entry: &ServerEntry,
    url: &str,
    transport: Option<&str>,
    headers: &[(String, String)],
    tls: bool,
) -> Result<Command, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this program's own path: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--connect").arg(url);
    if let Some(t) = transport {
        cmd.arg("--transport").arg(t);
    }
    if let Some(t) =
        value(&entry.relay, "--connect-timeout").or_else(|| value(&file.relay, "--connect-timeout"))
    {
        cmd.arg("--connect-timeout").arg(t);
    }
    for (i, (name, value)) in remote_headers(file, headers)?.into_iter().enumerate() {
        let var = format!("{HEADER_VAR}{i}");
        cmd.arg("--header").arg(format!("{name}: ${{{var}}}"));
        cmd.env(var, value);
    }
    if tls {
        if let Some(ca) = value(&file.relay, "--ca-cert") {
            cmd.arg("--ca-cert").arg(ca);
        }
        if switch(&file.relay, "--tls-insecure-skip-verify") {
            cmd.arg("--tls-insecure-skip-verify");
        }
    }
    if let Some(l) = &opts.log_level {
        cmd.arg("--log-level").arg(l);
    }
    Ok(cmd)
}

/// The headers the relay sends to a remote entry: the file's `header` settings, its
/// `bearer-token` as Authorization unless a header gives one, then the entry's own headers,
/// each replacing one of the same name.
fn remote_headers(
    file: &ServersFile,
    own: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let mut all: Vec<(String, String)> = Vec::new();
    for (i, text) in values(&file.relay, "--header").iter().enumerate() {
        // Not quoted: it holds the value.
        let Some((name, value)) = text.split_once(':') else {
            return Err(format!("relay header #{}: expected `Name: value`", i + 1));
        };
        all.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    if let Some(token) = value(&file.relay, "--bearer-token") {
        if !all
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        {
            all.push(("Authorization".into(), format!("Bearer {token}")));
        }
    }
    for (name, value) in own {
        all.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        all.push((name.clone(), value.clone()));
    }
    Ok(all)
}

impl Row {
    fn to_json(&self) -> Value {
        let mut out = self.report.to_json();
        out["name"] = json!(self.name);
        out["kind"] = json!(self.kind);
        out
    }

    /// NAME KIND RESULT SERVER TOOLS RESOURCES PROMPTS TIME.
    fn cells(&self) -> [String; 8] {
        let r = &self.report;
        let result = match &r.failure {
            None => "ok".to_owned(),
            Some(f) => format!(
                "FAILED: {}",
                escape(f.lines().next().unwrap_or_default(), MAX_REASON_SHOWN)
            ),
        };
        let server = r.server.as_ref().map_or_else(
            || "-".to_owned(),
            |(name, version)| format!("{} {}", escape(name, 40), escape(version, 20)),
        );
        let count = |list: &Option<Vec<String>>| {
            list.as_ref()
                .map_or_else(|| "-".to_owned(), |l| l.len().to_string())
        };
        [
            escape(&self.name, 64),
            self.kind.to_owned(),
            result,
            server,
            count(&r.tools),
            count(&r.resources),
            count(&r.prompts),
            format!("{:.0} ms", r.ms),
        ]
    }
}

/// The rows as a table, and a last line that sums them up.
fn table(rows: &[Row]) -> String {
    const HEADINGS: [&str; 8] = [
        "NAME",
        "KIND",
        "RESULT",
        "SERVER",
        "TOOLS",
        "RESOURCES",
        "PROMPTS",
        "TIME",
    ];
    // Numbers and times are right-aligned.
    const RIGHT: [bool; 8] = [false, false, false, false, true, true, true, true];
    let headings = HEADINGS.map(str::to_owned);
    let cells: Vec<[String; 8]> = std::iter::once(headings)
        .chain(rows.iter().map(Row::cells))
        .collect();
    let mut widths = [0; 8];
    for line in &cells {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &cells {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let w = widths[i];
            if RIGHT[i] {
                let _ = write!(text, "{cell:>w$}");
            } else {
                let _ = write!(text, "{cell:<w$}");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    }
    let failed = rows.iter().filter(|r| r.report.failure.is_some()).count();
    if failed == 0 {
        let _ = writeln!(out, "OK: {} of {} servers answered", rows.len(), rows.len());
    } else {
        let _ = writeln!(out, "FAILED: {failed} of {} servers", rows.len());
    }
    out
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
    /// From the start of the process to the last answer (or the failure).
    ms: f64,
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
            "ms": self.ms,
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
    run_launch(Launch::of(opts, target), opts.timeout)
}

fn run_launch(launch: Launch, timeout: Duration) -> Report {
    let start = Instant::now();
    let mut report = Report {
        target: launch.target,
        ms: 0.0,
        server: None,
        protocol_version: None,
        transport: launch.transport,
        steps: Vec::new(),
        tools: None,
        resources: None,
        prompts: None,
        noise: (0, Vec::new()),
        failure: None,
        stderr_tail: Vec::new(),
        interrupted: false,
    };
    let (who, what) = (launch.who, launch.what);
    let mut peer = match launch.command.and_then(|cmd| Peer::spawn(cmd, who, &what)) {
        Ok(peer) => peer,
        Err(e) => {
            report.failure = Some(e);
            report.ms = round_ms(start.elapsed());
            return report;
        }
    };
    if let Err(e) = session(&mut peer, timeout, &mut report) {
        report.failure = Some(e);
    }
    // The session's time: the process's start, its answers, not its stop.
    report.ms = round_ms(start.elapsed());
    peer.stop();
    report.interrupted = peer.interrupted;
    report.noise = (peer.noise_count, peer.noise.clone());
    let stderr = lock(&peer.stderr);
    if launch.via_relay {
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
    fn spawn(mut cmd: Command, who: &'static str, what: &str) -> Result<Peer, String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that the final SIGKILL reaches grandchildren too.
            .process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe. The child is SIGKILLed if this thread dies (the main thread, or
        // with --config a worker, which ends only after reaping every child it started), so
        // that not even a SIGKILLed check leaks it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!("cannot start {what}: not found ({e})"),
            io::ErrorKind::PermissionDenied => {
                format!("cannot start {what}: not executable ({e})")
            }
            _ => format!("cannot start {what}: {e}"),
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
        // group of its own and does not see the terminal's signal, running.
        tell_of_interruptions(tx);
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
                // Cannot happen while LISTENERS holds a sender; if it did, nothing more could
                // arrive.
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

/// The event channel of every check started, told when the check is interrupted (Ctrl-C,
/// SIGTERM, SIGHUP); with `--config` several run at once.
static LISTENERS: Mutex<Vec<Sender<Event>>> = Mutex::new(Vec::new());
/// Set at the first interruption: checks not started yet are not started.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The handlers are set once per process (ctrlc allows no more).
static HANDLERS: Once = Once::new();

fn interrupt_all() {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // Checks that have ended dropped their receiver: forget them.
    lock(&LISTENERS).retain(|tx| tx.send(Event::Interrupted).is_ok());
}

/// Sends [`Event::Interrupted`] to `tx` at an interruption, or at once if one came already.
fn tell_of_interruptions(tx: Sender<Event>) {
    HANDLERS.call_once(|| {
        let _ = ctrlc::set_handler(interrupt_all);
        // SIGTERM and SIGHUP (a closed terminal) end the check the same way.
        let _ = crate::signals::install(interrupt_all, interrupt_all);
    });
    lock(&LISTENERS).push(tx.clone());
    // One that came before the push above was not sent to `tx`.
    if INTERRUPTED.load(Ordering::SeqCst) {
        let _ = tx.send(Event::Interrupted);
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
    fn config_excludes_a_url_a_command_and_the_flags_the_file_gives() {
        assert_eq!(
            target(&["--config", "s.json", "--timeout", "1s", "--json"]),
            Ok(Target::Config("s.json".into()))
        );
        let (opts, _) = parse(args(&["--log-level", "debug", "--config", "s.json"]))
            .unwrap_or_else(|_| panic!("--log-level goes with --config"));
        assert_eq!(opts.log_level.as_deref(), Some("debug"));
        for (argv, expect) in [
            (
                &["--config", "s.json", "http://h/mcp"][..],
                "leave out the URL",
            ),
            (
                &["--config", "s.json", "--", "srv"],
                "leave out the command after `--`",
            ),
            (
                &["--header", "A: b", "--config", "s.json"],
                "--header does not go with --config",
            ),
            (
                &["--config", "s.json", "--tls-insecure-skip-verify"],
                "--tls-insecure-skip-verify does not go with --config",
            ),
            (&["--config"], "--config"),
        ] {
            let e = target(argv).expect_err(expect);
            assert!(e.contains(expect), "{argv:?}: {e}");
        }
    }

    /// A servers file in /etc/mcp, where `${X}` is `${HOME}`.
    fn file(text: &str) -> ServersFile {
        let env = |name: &str| (name == "X").then(|| "${HOME}".to_owned());
        servers_file::parse(text, Path::new("/etc/mcp/servers.json"), &env)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn no_opts() -> CheckArgs {
        parse(args(&["--config", "x"]))
            .unwrap_or_else(|_| panic!("--config x parses"))
            .0
    }

    type Env = Vec<(String, String)>;

    /// Each entry's kind, and the arguments and added environment of the process that
    /// checks it.
    fn launches(text: &str) -> Vec<(&'static str, Vec<String>, Env)> {
        let file = file(text);
        file.servers
            .iter()
            .map(|entry| {
                let (kind, launch) = launch_entry(&no_opts(), &file, entry);
                let cmd = launch.command.unwrap_or_else(|e| panic!("{e}"));
                let args = cmd
                    .get_args()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                let env = cmd
                    .get_envs()
                    .filter_map(|(k, v)| {
                        Some((
                            k.to_string_lossy().into_owned(),
                            v?.to_string_lossy().into_owned(),
                        ))
                    })
                    .collect();
                (kind, args, env)
            })
            .collect()
    }

    #[test]
    fn a_remote_entry_is_reached_through_client_mode_with_its_headers_out_of_sight() {
        let [(kind, args, env)]: [_; 1] = launches(
            r#"{"mcpServers": {"r": {"url": "https://h/mcp?key=k1", "headers": {"x-key": "s3cret ${X}", "X-Two": "two"}}},
                "relay": {"header": ["X-Key: file-secret", "X-Three: three"], "bearer_token": "t0k",
                          "ca_cert": "ca.pem", "connect_timeout": "3s"}}"#,
        )
        .try_into()
        .unwrap_or_else(|_| panic!("one entry"));
        assert_eq!(kind, "http");
        assert_eq!(
            args,
            [
                "--connect",
                "https://h/mcp?key=k1",
                "--connect-timeout",
                "3s",
                "--header",
                "X-Three: ${MCP_RELAY_CHECK_H0}",
                "--header",
                "Authorization: ${MCP_RELAY_CHECK_H1}",
                "--header",
                "x-key: ${MCP_RELAY_CHECK_H2}",
                "--header",
                "X-Two: ${MCP_RELAY_CHECK_H3}",
                "--ca-cert",
                "/etc/mcp/ca.pem",
            ]
        );
        let value = |var: &str| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.as_str());
        assert_eq!(value("MCP_RELAY_CHECK_H0"), Some("three"));
        assert_eq!(value("MCP_RELAY_CHECK_H1"), Some("Bearer t0k"));
        // Expanded once, by the file reader: the relay takes the variable's value as is.
        assert_eq!(value("MCP_RELAY_CHECK_H2"), Some("s3cret ${HOME}"));
        assert_eq!(value("MCP_RELAY_CHECK_H3"), Some("two"));
        assert!(!args
            .iter()
            .any(|a| a.contains("s3cret") || a.contains("t0k")));
    }

    #[test]
    fn a_remote_entrys_transport_and_kind() {
        let got: Vec<(&str, Vec<String>)> = launches(
            r#"{"mcpServers": {
                "a": {"type": "sse", "url": "http://h/sse"},
                "b": {"type": "sse", "url": "http://h/sse", "relay": {"transport": "streamable-http"}},
                "c": {"url": "http://h/mcp"},
                "d": {"url": "tcp://h:9000"},
                "e": {"url": "http://h/mcp", "relay": {"connect_timeout": "1s"}}
              },
              "relay": {"transport": "stateless", "ca_cert": "/ca.pem", "tls_insecure_skip_verify": true}}"#,
        )
        .into_iter()
        .map(|(kind, args, _)| (kind, args))
        .collect();
        let strs = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            [
                (
                    "sse",
                    strs(&["--connect", "http://h/sse", "--transport", "sse"])
                ),
                (
                    "http",
                    strs(&[
                        "--connect",
                        "http://h/sse",
                        "--transport",
                        "streamable-http"
                    ])
                ),
                (
                    "http",
                    strs(&["--connect", "http://h/mcp", "--transport", "stateless"])
                ),
                // No CA settings but for https:// (the relay refuses them otherwise).
                ("tcp", strs(&["--connect", "tcp://h:9000"])),
                (
                    "http",
                    strs(&[
                        "--connect",
                        "http://h/mcp",
                        "--transport",
                        "stateless",
                        "--connect-timeout",
                        "1s"
                    ])
                ),
            ]
        );
    }

    #[test]
    fn a_command_entry_runs_with_its_env_and_cwd() {
        let text = r#"{"mcpServers": {
            "a": {"command": "srv", "args": ["--stdio", "x y"], "env": {"K": "v1", "F": "own"}, "cwd": "/"},
            "b": {"command": "srv", "relay": {"clean_env": true}}
          },
          "relay": {"env": ["F=file", "G=g=h"], "cwd": "/tmp"}}"#;
        let file = file(text);
        let opts = no_opts();
        let (kind, a) = launch_entry(&opts, &file, &file.servers[0]);
        assert_eq!(kind, "stdio");
        assert_eq!(a.target, "srv --stdio x y");
        let cmd = a.command.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cmd.get_program(), "srv");
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/")));
        let envs: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        let get = |k: &str| envs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        // The entry's own value wins; the relay's token is never passed on.
        assert_eq!(get("F"), Some(Some("own".into())));
        assert_eq!(get("G"), Some(Some("g=h".into())));
        assert_eq!(get("K"), Some(Some("v1".into())));
        assert_eq!(get(crate::AUTH_TOKEN_VAR), Some(None));
        let (_, b) = launch_entry(&opts, &file, &file.servers[1]);
        let cmd = b.command.unwrap_or_else(|e| panic!("{e}"));
        // The file's cwd when the entry has none.
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/tmp")));

        let missing =
            self::file(r#"{"mcpServers": {"a": {"command": "srv", "cwd": "/nonexistent/dir"}}}"#);
        let (_, launch) = launch_entry(&opts, &missing, &missing.servers[0]);
        let e = launch.command.expect_err("a cwd that is not a directory");
        assert!(e.contains("/nonexistent/dir: not a directory"), "{e}");
    }

    #[test]
    fn the_table_has_a_row_per_server_and_a_summary() {
        let report = |failure: Option<&str>| Report {
            target: "t".into(),
            ms: 12.4,
            server: failure.is_none().then(|| ("demo".into(), "1.0".into())),
            protocol_version: None,
            transport: "stdio".into(),
            steps: Vec::new(),
            tools: failure.is_none().then(|| vec!["a".into(), "b".into()]),
            resources: None,
            prompts: None,
            noise: (0, Vec::new()),
            failure: failure.map(str::to_owned),
            stderr_tail: Vec::new(),
            interrupted: false,
        };
        let long = format!("cannot start `x`: {}\nsecond line", "y".repeat(100));
        let rows = [
            Row {
                name: "one".into(),
                kind: "stdio",
                report: report(None),
            },
            Row {
                name: "a-longer-name".into(),
                kind: "sse",
                report: report(Some(&long)),
            },
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("NAME           KIND   RESULT "),
            "{text}"
        );
        assert!(
            lines[0].ends_with("TOOLS  RESOURCES  PROMPTS   TIME"),
            "{text}"
        );
        assert!(lines[1].starts_with("one            stdio  ok "), "{text}");
        assert!(lines[1].contains("  demo 1.0  "), "{text}");
        assert!(lines[1].ends_with("2          -        -  12 ms"), "{text}");
        // The first line of the reason, cut.
        assert!(
            lines[2].contains(&format!("FAILED: cannot start `x`: {}…", "y".repeat(42))),
            "{text}"
        );
        assert!(!text.contains("second line"), "{text}");
        assert_eq!(lines[3], "FAILED: 1 of 2 servers");
        assert_eq!(
            table(&rows[..1]).lines().last(),
            Some("OK: 1 of 1 servers answered")
        );
        let json = rows[1].to_json();
        assert_eq!(json["name"], "a-longer-name");
        assert_eq!(json["kind"], "sse");
        assert_eq!(json["ok"], false);
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
