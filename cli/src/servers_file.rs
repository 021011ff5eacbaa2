//! `--config FILE`: many servers behind one relay, described the way Claude Desktop and
//! Claude Code already describe them (their `mcpServers` object), plus the relay's own
//! settings. This module only reads and checks the file: it turns it into plain data
//! ([`ServersFile`]) and every mistake into one line that points into the file.
//!
//! ```json
//! {
//!   "mcpServers": {
//!     "demo":   { "command": "mcp-relay", "args": ["demo-server"], "default": true },
//!     "remote": { "type": "http", "url": "https://mcp.example.com/mcp",
//!                 "headers": { "Authorization": "Bearer ${TOKEN}" } }
//!   },
//!   "relay": { "listen": ["http://127.0.0.1:8080"], "max_sessions": 100 }
//! }
//! ```
//!
//! What it accepts, and decided here:
//! - A server name is 1 to 64 of `A-Z a-z 0-9 . _ -`, and not `.` or `..`: it is a URL path
//!   segment (`/servers/NAME/mcp`).
//! - An entry runs a command (`command`, optional `args`, `env`, `cwd`; `type` absent or
//!   `"stdio"`) or reaches a remote (`url`, optional `headers`; `type` `"http"`,
//!   `"streamable-http"` (the same) or `"sse"`; `url` without `type` means `"http"`). Both
//!   take `default` (true or false), `disabled` (true leaves the entry out, as Cline and others
//!   write it) and `relay` (settings for that server alone). Any other key is an error.
//! - `${VAR}` and `${VAR:-default}` are expanded in every string value (not in keys), with the
//!   semantics of `--header` ([`crate::config::expand_vars`]: the default also replaces an
//!   empty value); a variable that is unset and has no default is an error.
//! - Relay settings are named like the flags without `--`, with `-` or `_`. Relative paths
//!   in `cwd` and in the file settings (`auth_token_file`, `tls_cert`, `tls_key`,
//!   `tls_client_ca`, `ca_cert`) are taken from the directory of the file, so that the relay
//!   may be started from anywhere. Values are checked with the flags' own parsers.
//! - Top-level keys other than `mcpServers` and `relay` are ignored (a debug log line), so
//!   that a real Claude Desktop file can be given as is; but one that looks like a misspelling
//!   of them (`Relay`, `relays`, `mcp_servers`) is an error.
//!
//! Errors read `PATH:LINE:COLUMN: message` (columns count characters, from 1), except when the
//! file cannot be read (`--config PATH: cannot read it: …`) or is empty. They never show the
//! value of an environment variable for the server, of a header or of a token: only its name.

use crate::config::{expand_vars, is_token_byte, redact_url, RESERVED_HEADERS};
use argh::FromArgs;
use mcp_relay_core::RemoteUrl;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

/// A checked servers file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServersFile {
    /// The servers, in the order of the file (disabled entries left out); at least one.
    pub servers: Vec<ServerEntry>,
    /// The server `/mcp` and `/sse` stand for: the one marked `"default": true`, or the only
    /// server when there is one (unless it says `"default": false`); `None` when there are
    /// several and none is marked.
    pub default: Option<String>,
    /// The top-level `"relay"` settings, in file order, as flags: (`"--max-sessions"`,
    /// `["100"]`); a switch set true has no value, one set false is left out; a list gives a
    /// repeatable flag several values.
    pub relay: Vec<(String, Vec<String>)>,
}

/// One server of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    /// Its name: 1 to 64 of `A-Za-z0-9._-`.
    pub name: String,
    /// What serves it.
    pub kind: EntryKind,
    /// Its own `"relay"` settings (they override the relay's for this server), as in
    /// [`ServersFile::relay`]. Only the per-server settings appear (see the module doc).
    pub relay: Vec<(String, Vec<String>)>,
}

/// A command to run per session, or a remote server to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// `command`, `args`, `env` (in file order), `cwd` (made absolute against the file's
    /// directory when relative).
    Command {
        command: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<PathBuf>,
    },
    /// `url`; `sse` for `"type": "sse"` (HTTP+SSE), false for `"http"`, `"streamable-http"` or
    /// no type; `headers` in file order.
    Remote {
        url: String,
        sse: bool,
        headers: Vec<(String, String)>,
    },
}

/// Reads and checks the file; see [`parse`].
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<ServersFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--config {}: cannot read it: {e}", path.display()))?;
    parse(&text, path, env)
}

/// Checks the text of a servers file; `path` is what errors name (and the directory that
/// relative paths start from); `env` looks up the variables that `${VAR}` names.
pub fn parse(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServersFile, String> {
    // Notepad and friends start UTF-8 files with a byte order mark; JSON has no room for it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(format!(
            "{}: the file is empty (expected {{\"mcpServers\": {{…}}}})",
            path.display()
        ));
    }
    if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
        return Err(syntax_error(text, path, &e));
    }
    // The text is valid JSON (and at most 128 levels deep, serde_json's limit), which the
    // scanner relies on; it fails only if the two disagree.
    let root = Scanner { text, i: 0 }.value().ok_or_else(|| {
        format!(
            "{}: cannot index this JSON (a bug in mcp-relay: please report it)",
            path.display()
        )
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let cx = Context {
        text,
        path,
        env,
        base,
    };
    cx.file(&root)
}

/// A JSON syntax error as `PATH:LINE:COLUMN: invalid JSON: …` (serde_json counts columns in
/// bytes; they are turned into characters, as everywhere else here).
fn syntax_error(text: &str, path: &Path, e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    let line_text = text
        .split('\n')
        .nth(e.line().saturating_sub(1))
        .unwrap_or("");
    let column = line_text
        .char_indices()
        .take_while(|(i, _)| *i < e.column())
        .count()
        .max(1);
    format!(
        "{}:{}:{column}: invalid JSON: {message}",
        path.display(),
        e.line()
    )
}

/// A JSON value and the byte offset where it starts.
#[derive(Debug)]
struct Node {
    at: usize,
    value: Json,
}

#[derive(Debug)]
enum Json {
    Null,
    Bool(bool),
    /// As written.
    Number(String),
    Str(String),
    Array(Vec<Node>),
    /// In file order, duplicates kept (they are reported where it matters).
    Object(Vec<Member>),
}

/// An object's key (with the byte offset of its opening quote) and value.
#[derive(Debug)]
struct Member {
    key: String,
    at: usize,
    value: Node,
}

impl Json {
    /// What it is, for messages.
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::Str(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// Walks JSON that serde_json has accepted, keeping where each key and value starts (what
/// serde_json's `Value` forgets), and the order of keys.
struct Scanner<'a> {
    text: &'a str,
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// The value at the cursor (after white space). `None` only on text that is not JSON.
    fn value(&mut self) -> Option<Node> {
        self.skip_space();
        let at = self.i;
        let value = match self.peek()? {
            b'{' => {
                self.i += 1;
                let mut members = Vec::new();
                loop {
                    self.skip_space();
                    match self.peek()? {
                        b'}' => break,
                        b',' => self.i += 1,
                        _ => {
                            let key_at = self.i;
                            let key = self.string()?;
                            self.skip_space();
                            if self.peek()? != b':' {
                                return None;
                            }
                            self.i += 1;
                            let value = self.value()?;
                            members.push(Member {
                                key,
                                at: key_at,
                                value,
                            });
                        }
                    }
                }
                self.i += 1;
                Json::Object(members)
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    match self.peek()? {
                        b']' => break,
                        b',' => self.i += 1,
                        _ => items.push(self.value()?),
                    }
                }
                self.i += 1;
                Json::Array(items)
            }
            b'"' => Json::Str(self.string()?),
            b't' => self.literal("true", Json::Bool(true))?,
            b'f' => self.literal("false", Json::Bool(false))?,
            b'n' => self.literal("null", Json::Null)?,
            _ => {
                let start = self.i;
                while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.peek() {
                    self.i += 1;
                }
                if start == self.i {
                    return None;
                }
                Json::Number(self.text.get(start..self.i)?.to_owned())
            }
        };
        Some(Node { at, value })
    }

    fn literal(&mut self, word: &str, value: Json) -> Option<Json> {
        if !self.text.get(self.i..)?.starts_with(word) {
            return None;
        }
        self.i += word.len();
        Some(value)
    }

    /// The string at the cursor, decoded by serde_json (escapes, surrogate pairs).
    fn string(&mut self) -> Option<String> {
        let start = self.i;
        if self.peek()? != b'"' {
            return None;
        }
        self.i += 1;
        loop {
            match self.peek()? {
                // In valid JSON an ASCII character follows the backslash.
                b'\\' => self.i += 2,
                b'"' => break,
                _ => self.i += 1,
            }
        }
        self.i += 1;
        serde_json::from_str(self.text.get(start..self.i)?).ok()
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A name or key as messages show it: quoted and escaped, cut after 64 characters.
fn shown(text: &str) -> String {
    if text.chars().count() <= 64 {
        format!("{text:?}")
    } else {
        let cut: String = text.chars().take(64).collect();
        format!("{cut:?}…")
    }
}

/// How a relay setting takes its value.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Arity {
    /// `true` or `false`.
    Switch,
    /// One value.
    One,
    /// A value or a list of them (a repeatable flag).
    Many,
}

/// Where a relay setting may appear.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scope {
    /// Only in the top-level `"relay"`.
    Relay,
    /// Also in any server's `"relay"`.
    Server,
    /// Also in a command entry's `"relay"`.
    CommandServer,
    /// Also in a remote entry's `"relay"`.
    RemoteServer,
}

/// A relay setting: a flag of `Args` (its name without `--`).
struct Setting {
    flag: &'static str,
    arity: Arity,
    scope: Scope,
    /// A file name: relative to the servers file's directory.
    path: bool,
    /// May hold a secret: never shown, never given to the flags' parser (whose errors quote).
    secret: bool,
}

const fn setting(flag: &'static str, arity: Arity, scope: Scope) -> Setting {
    Setting {
        flag,
        arity,
        scope,
        path: false,
        secret: false,
    }
}

const fn path_setting(flag: &'static str) -> Setting {
    Setting {
        flag,
        arity: Arity::One,
        scope: Scope::Relay,
        path: true,
        secret: false,
    }
}

const fn secret_setting(flag: &'static str, arity: Arity, scope: Scope) -> Setting {
    Setting {
        flag,
        arity,
        scope,
        path: false,
        secret: true,
    }
}

/// Every option of `Args` but those in [`NOT_SETTINGS`]; a unit test keeps the two in step.
const SETTINGS: &[Setting] = {
    use Arity::{Many, One, Switch};
    use Scope::{CommandServer, Relay, RemoteServer, Server};
    &[
        setting("listen", Many, Server),
        setting("transport", One, RemoteServer),
        secret_setting("header", Many, Relay),
        secret_setting("bearer-token", One, Relay),
        setting("connect-timeout", One, RemoteServer),
        setting("balance", One, Relay),
        secret_setting("env", Many, Relay),
        Setting {
            path: true,
            ..setting("cwd", One, Relay)
        },
        setting("clean-env", Switch, CommandServer),
        setting("shutdown-grace", One, Server),
        setting("drain-timeout", One, Relay),
        setting("request-timeout", One, Relay),
        setting("max-message-size", One, Server),
        setting("max-buffered", One, Relay),
        setting("prespawn", One, Server),
        setting("max-connections", One, Relay),
        setting("idle-timeout", One, Server),
        setting("retire-timeout", One, Server),
        setting("max-in-flight", One, Server),
        setting("restart", One, Server),
        setting("restart-delay", One, Server),
        setting("max-restarts", One, Server),
        setting("restart-window", One, Server),
        setting("ping-interval", One, Server),
        setting("ping-timeout", One, Server),
        setting("heartbeat-interval", One, Relay),
        setting("allow-origin", Many, Relay),
        setting("allow-host", Many, Relay),
        secret_setting("auth-token", Many, Server),
        path_setting("auth-token-file"),
        path_setting("tls-cert"),
        path_setting("tls-key"),
        path_setting("tls-client-ca"),
        path_setting("ca-cert"),
        setting("tls-insecure-skip-verify", Switch, Relay),
        setting("session-timeout", One, Server),
        setting("max-sessions", One, Relay),
        setting("sse-keepalive", One, Relay),
        setting("header-timeout", One, Relay),
        setting("stateless-pool", One, Relay),
        setting("instance-id", One, Relay),
        setting("no-healthz", Switch, Relay),
        setting("no-metrics", Switch, Relay),
        setting("log-level", One, Relay),
        setting("debug", Switch, Relay),
        setting("log-format", One, Relay),
        setting("log-messages", Switch, Relay),
        setting("watch-config", Switch, Relay),
    ]
};

/// How the flag `--{flag}` takes its value and whether its value may be a secret; `None` for
/// a flag that is not a file setting (see [`NOT_SETTINGS`]).
pub(crate) fn flag_kind(flag: &str) -> Option<(Arity, bool)> {
    SETTINGS
        .iter()
        .find(|s| s.flag == flag)
        .map(|s| (s.arity, s.secret))
}

/// Every file setting's flag (without `--`).
pub(crate) fn setting_flags() -> impl Iterator<Item = &'static str> {
    SETTINGS.iter().map(|s| s.flag)
}

/// Flags that are not file settings, and why.
const NOT_SETTINGS: &[(&str, &str)] = &[
    (
        "config",
        "the servers file cannot name another (give one --config)",
    ),
    (
        "connect",
        "a remote server is an entry of \"mcpServers\" with \"url\"",
    ),
    (
        "demo",
        "the demo server is an entry: {\"command\": \"mcp-relay\", \"args\": [\"demo-server\"]}",
    ),
    ("version", "it is not a setting"),
    ("help", "it is not a setting"),
    ("no-login", LOGIN_ONLY),
    ("client-id", LOGIN_ONLY),
    ("client-secret", LOGIN_ONLY),
    ("client-metadata-url", LOGIN_ONLY),
    ("no-browser", LOGIN_ONLY),
    ("auth-url-command", LOGIN_ONLY),
    ("auth-callback-port", LOGIN_ONLY),
];

/// Why the login flags are not file settings.
const LOGIN_ONLY: &str =
    "OAuth logins are for --connect; a servers file's remote entries take \"headers\"";

/// The keys of an entry.
const ENTRY_KEYS: &str = "type, command, args, env, cwd, url, headers, default, disabled, relay";

/// An entry's `type`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryType {
    Stdio,
    Http,
    Sse,
}

/// What the checks need besides the node at hand.
struct Context<'a> {
    text: &'a str,
    path: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// The file's directory (empty for a bare file name).
    base: PathBuf,
}

impl Context<'_> {
    /// An error at a byte offset of the file.
    fn at(&self, at: usize, message: impl Display) -> String {
        let (line, column) = line_col(self.text, at);
        format!("{}:{line}:{column}: {message}", self.path.display())
    }

    /// The members of an object, which must have no key twice; `what` names it for the
    /// error when the node is not an object.
    fn object<'n>(&self, node: &'n Node, what: impl Display) -> Result<&'n [Member], String> {
        let Json::Object(members) = &node.value else {
            return Err(self.at(
                node.at,
                format!("{what} must be an object, not {}", node.value.kind()),
            ));
        };
        let mut seen = BTreeMap::new();
        for m in members {
            if let Some(first) = seen.insert(m.key.as_str(), m.at) {
                let (line, column) = line_col(self.text, first);
                return Err(self.at(
                    m.at,
                    format!(
                        "{what}: {} appears twice (first at {line}:{column})",
                        shown(&m.key)
                    ),
                ));
            }
        }
        Ok(members)
    }

    /// `${VAR}` and `${VAR:-default}` expanded; `label` names the value for the error.
    fn expand(&self, text: &str, at: usize, label: &str) -> Result<String, String> {
        let (value, unset) = expand_vars(text, self.env);
        match unset.as_slice() {
            [] => Ok(value),
            [one] => Err(self.at(
                at,
                format!("{label}: ${{{one}}} is not set (write ${{{one}:-default}} to give it a default)"),
            )),
            several => Err(self.at(
                at,
                format!(
                    "{label}: {} are not set",
                    several
                        .iter()
                        .map(|v| format!("${{{v}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// A string value, expanded; `label` names it for errors.
    fn string(&self, node: &Node, label: &str) -> Result<String, String> {
        match &node.value {
            Json::Str(s) => self.expand(s, node.at, label),
            other => Err(self.at(
                node.at,
                format!("{label} must be a string, not {}", other.kind()),
            )),
        }
    }

    /// A relative path made relative to the file's directory instead.
    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_relative() {
            self.base.join(p)
        } else {
            p.to_path_buf()
        }
    }

    fn file(&self, root: &Node) -> Result<ServersFile, String> {
        let Json::Object(_) = &root.value else {
            return Err(self.at(
                root.at,
                format!(
                    "expected an object, {{\"mcpServers\": {{…}}}}, not {}",
                    root.value.kind()
                ),
            ));
        };
        let top = self.object(root, "the file")?;
        let mut servers = None;
        let mut relay = Vec::new();
        for m in top {
            match m.key.as_str() {
                "mcpServers" => servers = Some(m),
                "relay" => relay = self.relay(&m.value, None)?,
                key => {
                    let squashed: String = key
                        .chars()
                        .filter(|c| *c != '-' && *c != '_')
                        .flat_map(char::to_lowercase)
                        .collect();
                    if squashed.contains("relay") || squashed.contains("mcpserver") {
                        return Err(self.at(
                            m.at,
                            format!(
                                "unknown key {}: mcp-relay reads \"mcpServers\" and \"relay\" (other keys are ignored, but this one looks like a misspelling)",
                                shown(key)
                            ),
                        ));
                    }
                    log::debug!(
                        "{}: ignoring the top-level key {} (not mcp-relay's)",
                        self.path.display(),
                        shown(key)
                    );
                }
            }
        }
        let Some(servers) = servers else {
            return Err(self.at(
                root.at,
                "no \"mcpServers\": the servers go in {\"mcpServers\": {\"NAME\": {\"command\": …}}}",
            ));
        };
        let members = self.object(&servers.value, "\"mcpServers\"")?;
        let mut entries = Vec::new();
        // The entry marked `"default": true`, and what each entry said.
        let mut marked: Option<String> = None;
        let mut said = Vec::new();
        for m in members {
            let Some((entry, default)) = self.entry(m)? else {
                continue;
            };
            if default == Some(true) {
                if let Some(first) = &marked {
                    return Err(self.at(
                        m.at,
                        format!(
                            "server {}: \"default\": true, but {} is the default already (at most one)",
                            shown(&entry.name),
                            shown(first)
                        ),
                    ));
                }
                marked = Some(entry.name.clone());
            }
            said.push(default);
            entries.push(entry);
        }
        if entries.is_empty() {
            let why = if members.is_empty() {
                "\"mcpServers\" has no server"
            } else {
                "every server of \"mcpServers\" is disabled"
            };
            return Err(self.at(servers.at, why));
        }
        let default = match (marked, entries.as_slice(), said.as_slice()) {
            (Some(name), _, _) => Some(name),
            // The only server is the default, unless it says otherwise.
            (None, [only], [said]) if *said != Some(false) => Some(only.name.clone()),
            _ => None,
        };
        Ok(ServersFile {
            servers: entries,
            default,
            relay,
        })
    }

    /// One entry of `mcpServers`, with its `default` if given; `None` when it is disabled.
    fn entry(&self, m: &Member) -> Result<Option<(ServerEntry, Option<bool>)>, String> {
        let name = &m.key;
        let valid = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(self.at(
                m.at,
                format!(
                    "server name {}: use 1 to 64 letters, digits, '.', '_' and '-' (the name is the URL path /servers/NAME/mcp)",
                    shown(name)
                ),
            ));
        }
        if name == "." || name == ".." {
            return Err(self.at(
                m.at,
                format!("server name {name:?}: not usable as a URL path segment"),
            ));
        }
        let server = format!("server {}", shown(name));
        let members = self.object(&m.value, &server)?;
        let key = |k: &str| members.iter().find(|m| m.key == k);
        for member in members {
            if !ENTRY_KEYS.split(", ").any(|k| k == member.key) {
                return Err(self.at(
                    member.at,
                    format!(
                        "{server}: unknown key {} (an entry has {ENTRY_KEYS})",
                        shown(&member.key)
                    ),
                ));
            }
        }
        let flag = |k: &str| -> Result<Option<bool>, String> {
            match key(k).map(|m| &m.value) {
                None => Ok(None),
                Some(Node {
                    value: Json::Bool(b),
                    ..
                }) => Ok(Some(*b)),
                Some(node) => Err(self.at(
                    node.at,
                    format!(
                        "{server}: \"{k}\" must be true or false, not {}",
                        node.value.kind()
                    ),
                )),
            }
        };
        if flag("disabled")? == Some(true) {
            log::debug!("{}: {server} is disabled", self.path.display());
            return Ok(None);
        }
        let default = flag("default")?;
        let kind = match key("type") {
            None => None,
            Some(t) => match &t.value.value {
                Json::Str(s) => match s.as_str() {
                    "stdio" => Some((EntryType::Stdio, t)),
                    "http" | "streamable-http" => Some((EntryType::Http, t)),
                    "sse" => Some((EntryType::Sse, t)),
                    other => {
                        return Err(self.at(
                            t.value.at,
                            format!(
                                "{server}: \"type\" is {}; expected \"stdio\", \"http\", \"streamable-http\" or \"sse\"",
                                shown(other)
                            ),
                        ))
                    }
                },
                other => {
                    return Err(self.at(
                        t.value.at,
                        format!("{server}: \"type\" must be a string, not {}", other.kind()),
                    ))
                }
            },
        };
        let (command, url) = (key("command"), key("url"));
        // Which of the two it is, and the key that says so.
        let (remote, what) = match (kind, command, url) {
            (_, Some(_), Some(url)) => {
                return Err(self.at(
                    url.at,
                    format!("{server}: both \"command\" and \"url\": an entry runs a command or reaches a URL, not both"),
                ))
            }
            (Some((EntryType::Stdio, t)), None, _) => {
                return Err(self.at(
                    t.at,
                    format!("{server}: \"type\" is \"stdio\" but there is no \"command\""),
                ))
            }
            (Some((EntryType::Http | EntryType::Sse, _)), Some(c), None) => {
                return Err(self.at(
                    c.at,
                    format!("{server}: \"command\" does not go with \"type\": \"http\" or \"sse\" (those take \"url\")"),
                ))
            }
            (Some((EntryType::Http | EntryType::Sse, t)), None, None) => {
                return Err(self.at(
                    t.at,
                    format!("{server}: a remote entry (\"type\": \"http\" or \"sse\") needs \"url\""),
                ))
            }
            (None, None, None) => {
                return Err(self.at(
                    m.at,
                    format!("{server}: no \"command\" (a server to run) or \"url\" (a remote server)"),
                ))
            }
            (_, Some(command), None) => (false, command),
            (_, None, Some(url)) => (true, url),
        };
        // The keys of the other kind of entry.
        let others: &[&str] = if remote {
            &["args", "env", "cwd"]
        } else {
            &["headers"]
        };
        if let Some(wrong) = members.iter().find(|m| others.contains(&m.key.as_str())) {
            let (this, that) = if remote {
                ("a command entry", "\"url\"")
            } else {
                ("a remote entry", "\"command\"")
            };
            return Err(self.at(
                wrong.at,
                format!(
                    "{server}: \"{}\" is for {this}, and this one has {that}",
                    wrong.key
                ),
            ));
        }
        let kind = if remote {
            let sse = matches!(kind, Some((EntryType::Sse, _)));
            self.remote_entry(&server, what, sse, key("headers"))?
        } else {
            self.command_entry(&server, what, key("args"), key("env"), key("cwd"))?
        };
        let relay = match key("relay") {
            Some(r) => self.relay(&r.value, Some((name, remote)))?,
            None => Vec::new(),
        };
        Ok(Some((
            ServerEntry {
                name: name.clone(),
                kind,
                relay,
            },
            default,
        )))
    }

    fn command_entry(
        &self,
        server: &str,
        command: &Member,
        args: Option<&Member>,
        env: Option<&Member>,
        cwd: Option<&Member>,
    ) -> Result<EntryKind, String> {
        let no_nul = |text: String, at: usize, label: &str| {
            if text.contains('\0') {
                Err(self.at(at, format!("{label} has a NUL character")))
            } else {
                Ok(text)
            }
        };
        let label = format!("{server}: \"command\"");
        let program = no_nul(
            self.string(&command.value, &label)?,
            command.value.at,
            &label,
        )?;
        if program.is_empty() {
            return Err(self.at(command.value.at, format!("{label} is empty")));
        }
        let mut arg_list = Vec::new();
        if let Some(args) = args {
            let Json::Array(items) = &args.value.value else {
                return Err(self.at(
                    args.value.at,
                    format!(
                        "{server}: \"args\" must be an array of strings, not {}",
                        args.value.value.kind()
                    ),
                ));
            };
            for (i, item) in items.iter().enumerate() {
                let label = format!("{server}: \"args\"[{i}]");
                arg_list.push(no_nul(self.string(item, &label)?, item.at, &label)?);
            }
        }
        let mut vars = Vec::new();
        if let Some(env) = env {
            for var in self.object(&env.value, format!("{server}: \"env\""))? {
                let label = format!("{server}: env {}", shown(&var.key));
                if var.key.is_empty() || var.key.contains(['=', '\0']) {
                    return Err(self.at(
                        var.at,
                        format!("{label}: a variable name cannot be empty or hold '=' or NUL"),
                    ));
                }
                // The value is never shown: it may be a key.
                let Json::Str(raw) = &var.value.value else {
                    return Err(self.at(
                        var.value.at,
                        format!(
                            "{label} must be a string, not {} (write numbers and booleans in quotes)",
                            var.value.value.kind()
                        ),
                    ));
                };
                let value = self.expand(raw, var.value.at, &label)?;
                if value.contains('\0') {
                    return Err(self.at(
                        var.value.at,
                        format!("{label} has a NUL character (after expanding variables)"),
                    ));
                }
                vars.push((var.key.clone(), value));
            }
        }
        let cwd = match cwd {
            None => None,
            Some(cwd) => {
                let label = format!("{server}: \"cwd\"");
                let dir = no_nul(self.string(&cwd.value, &label)?, cwd.value.at, &label)?;
                if dir.is_empty() {
                    return Err(self.at(cwd.value.at, format!("{label} is empty")));
                }
                Some(self.resolve(&dir))
            }
        };
        Ok(EntryKind::Command {
            command: program,
            args: arg_list,
            env: vars,
            cwd,
        })
    }

    fn remote_entry(
        &self,
        server: &str,
        url: &Member,
        sse: bool,
        headers: Option<&Member>,
    ) -> Result<EntryKind, String> {
        let label = format!("{server}: \"url\"");
        let text = self.string(&url.value, &label)?;
        if text.is_empty() {
            return Err(self.at(url.value.at, format!("{label} is empty")));
        }
        // Errors quote the URL without its user info and query (where keys hide).
        let parsed = RemoteUrl::parse(&text).map_err(|e| {
            self.at(
                url.value.at,
                format!("{label}: {}", e.replace(&text, &redact_url(&text))),
            )
        })?;
        if sse && parsed.scheme.is_stream() {
            return Err(self.at(
                url.value.at,
                format!("{server}: \"type\" is \"sse\", which needs an http:// or https:// URL"),
            ));
        }
        let mut list = Vec::new();
        if let Some(headers) = headers {
            for h in self.object(&headers.value, format!("{server}: \"headers\""))? {
                if h.key.is_empty() || !h.key.bytes().all(is_token_byte) {
                    // Not quoted: a misplaced value may be a secret.
                    return Err(self.at(
                        h.at,
                        format!("{server}: a header name may only have letters, digits and !#$%&'*+-.^_`|~"),
                    ));
                }
                let label = format!("{server}: header {}", shown(&h.key));
                if let Some(reserved) = RESERVED_HEADERS
                    .iter()
                    .find(|r| r.eq_ignore_ascii_case(&h.key))
                {
                    return Err(self.at(h.at, format!("{label}: the relay sets {reserved} itself")));
                }
                // The value is never shown.
                let Json::Str(raw) = &h.value.value else {
                    return Err(self.at(
                        h.value.at,
                        format!("{label} must be a string, not {}", h.value.value.kind()),
                    ));
                };
                let value = self.expand(raw, h.value.at, &label)?;
                if value.contains(['\r', '\n', '\0']) {
                    return Err(self.at(
                        h.value.at,
                        format!("{label} has a line break or NUL (after expanding variables)"),
                    ));
                }
                list.push((h.key.clone(), value.trim().to_owned()));
            }
        }
        Ok(EntryKind::Remote {
            url: text,
            sse,
            headers: list,
        })
    }

    /// A `"relay"` object: the top-level one (`server` is `None`) or a server's (its name,
    /// and whether it is remote).
    fn relay(
        &self,
        node: &Node,
        server: Option<(&str, bool)>,
    ) -> Result<Vec<(String, Vec<String>)>, String> {
        let owner = match server {
            Some((name, _)) => format!("server {}: relay", shown(name)),
            None => "relay".to_owned(),
        };
        let what = match server {
            Some((name, _)) => format!("server {}: \"relay\"", shown(name)),
            None => "\"relay\"".to_owned(),
        };
        let members = self.object(node, &what)?;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut out = Vec::new();
        for m in members {
            let label = format!("{owner} {}", shown(&m.key));
            let dashed = m.key.replace('_', "-");
            let Some(s) = SETTINGS.iter().find(|s| s.flag == dashed) else {
                let why = match NOT_SETTINGS.iter().find(|(flag, _)| *flag == dashed) {
                    Some((_, why)) => format!("{label}: not a setting of the file: {why}"),
                    None => format!("{label}: no such setting (settings are the flags without \"--\": \"max_sessions\" or \"max-sessions\" for --max-sessions)"),
                };
                return Err(self.at(m.at, why));
            };
            if let Some(first) = seen.insert(s.flag, m.at) {
                let (line, column) = line_col(self.text, first);
                return Err(self.at(
                    m.at,
                    format!(
                        "{label}: --{} is set twice (first at {line}:{column})",
                        s.flag
                    ),
                ));
            }
            if let Some((_, remote)) = server {
                let refused = match s.scope {
                    Scope::Relay => Some("only for the whole relay (in the top-level \"relay\")"),
                    Scope::Server => None,
                    Scope::CommandServer if remote => Some("only for an entry with \"command\""),
                    Scope::RemoteServer if !remote => Some("only for an entry with \"url\""),
                    Scope::CommandServer | Scope::RemoteServer => None,
                };
                if let Some(why) = refused {
                    return Err(self.at(m.at, format!("{label}: {why}")));
                }
            }
            let values = match (s.arity, &m.value.value) {
                (Arity::Switch, Json::Bool(true)) => Some(Vec::new()),
                (Arity::Switch, Json::Bool(false)) => None,
                (Arity::Switch, other) => {
                    return Err(self.at(
                        m.value.at,
                        format!("{label} is a switch: true or false, not {}", other.kind()),
                    ))
                }
                (Arity::One, Json::Array(_)) => {
                    return Err(self.at(m.value.at, format!("{label} takes one value, not a list")))
                }
                (Arity::One, _) => {
                    Some(vec![self.setting_value(&m.value, &label, s, server, false)?])
                }
                (Arity::Many, Json::Array(items)) => {
                    let mut values = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        let label = format!("{label}[{i}]");
                        values.push(self.setting_value(item, &label, s, server, true)?);
                    }
                    Some(values).filter(|v| !v.is_empty())
                }
                (Arity::Many, Json::Object(pairs)) if matches!(s.flag, "env" | "header") => {
                    // {"K": "v"} as for an entry's env and headers.
                    let sep = if s.flag == "env" { "=" } else { ": " };
                    let mut values = Vec::new();
                    self.object(&m.value, &label)?;
                    for pair in pairs {
                        let label = format!("{label} {}", shown(&pair.key));
                        let Json::Str(raw) = &pair.value.value else {
                            return Err(self.at(
                                pair.value.at,
                                format!(
                                    "{label} must be a string, not {}",
                                    pair.value.value.kind()
                                ),
                            ));
                        };
                        let value = self.expand(raw, pair.value.at, &label)?;
                        let text = format!("{}{sep}{value}", pair.key);
                        self.check_value(&text, pair.at, &label, s, server)?;
                        values.push(text);
                    }
                    Some(values).filter(|v| !v.is_empty())
                }
                (Arity::Many, _) => {
                    Some(vec![self.setting_value(&m.value, &label, s, server, false)?])
                }
            };
            if let Some(values) = values {
                out.push((format!("--{}", s.flag), values));
            }
        }
        Ok(out)
    }

    /// One value of a setting as the flag's text: a string (expanded), a number as written,
    /// or a boolean; checked with the flag's parser.
    fn setting_value(
        &self,
        node: &Node,
        label: &str,
        s: &Setting,
        server: Option<(&str, bool)>,
        in_list: bool,
    ) -> Result<String, String> {
        let text = match &node.value {
            // `--header` expands its own variables: checked here (an unset one is an error
            // with the file's position), given on unexpanded, so that a variable's value is
            // never expanded a second time.
            Json::Str(raw) if s.flag == "header" => {
                self.expand(raw, node.at, label)?;
                raw.clone()
            }
            Json::Str(raw) => self.expand(raw, node.at, label)?,
            Json::Number(n) => n.clone(),
            Json::Bool(b) => b.to_string(),
            other => {
                let expected = if s.arity == Arity::Many && !in_list {
                    "a string, a number or a list of them"
                } else {
                    "a string or a number"
                };
                return Err(self.at(
                    node.at,
                    format!("{label} must be {expected}, not {}", other.kind()),
                ));
            }
        };
        let text = if s.path && !text.is_empty() {
            self.resolve(&text).to_string_lossy().into_owned()
        } else {
            text
        };
        self.check_value(&text, node.at, label, s, server)?;
        Ok(text)
    }

    /// Checks a setting's value as the command line would (secrets with checks of their own
    /// that never quote them).
    fn check_value(
        &self,
        text: &str,
        at: usize,
        label: &str,
        s: &Setting,
        server: Option<(&str, bool)>,
    ) -> Result<(), String> {
        if s.secret {
            let problem = match s.flag {
                "env" => match text.split_once('=') {
                    Some((k, _)) if !k.is_empty() && !text.contains('\0') => None,
                    _ => Some("expected KEY=VALUE (a variable name cannot be empty)"),
                },
                "header" => match text.split_once(':') {
                    None => Some("expected \"Name: value\" (there is no colon)"),
                    Some((name, _)) if name.trim().is_empty() || !name.trim().bytes().all(is_token_byte) => {
                        Some("the name before the colon may only have letters, digits and !#$%&'*+-.^_`|~")
                    }
                    Some((name, _)) if RESERVED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(name.trim())) => {
                        Some("the relay sets this header itself")
                    }
                    Some((_, v)) if v.contains(['\r', '\n', '\0']) => {
                        Some("the value has a line break or NUL (after expanding variables)")
                    }
                    Some(_) => None,
                },
                _ if text.contains(['\r', '\n', '\0']) => {
                    Some("has a line break or NUL (after expanding variables)")
                }
                _ => None,
            };
            return match problem {
                Some(p) => Err(self.at(at, format!("{label}: {p}"))),
                None => Ok(()),
            };
        }
        if let (Some((name, _)), "listen") = (server, s.flag) {
            let scheme = text.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            if !matches!(scheme.as_deref(), None | Some("tcp") | Some("tls")) {
                return Err(self.at(
                    at,
                    format!(
                        "{label}: a server's own listeners are tcp:// or tls:// (over HTTP it is /servers/{name}/mcp on the relay's listeners)"
                    ),
                ));
            }
        }
        check_flag(s.flag, text).map_err(|e| self.at(at, format!("{label}: {e}")))
    }
}

/// Runs the flag's own parser on a value: `--FLAG VALUE` through `Args`. The error is the
/// parser's message.
fn check_flag(flag: &str, value: &str) -> Result<(), String> {
    let dashed = format!("--{flag}");
    match crate::Args::from_args(&["mcp-relay"], &[dashed.as_str(), value]) {
        Ok(_) => Ok(()),
        Err(early) => {
            let out = early.output.trim_end();
            let prefix = format!("Error parsing option '{dashed}' with value '{value}': ");
            Err(out.strip_prefix(&prefix).unwrap_or(out).to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake environment: `TOKEN=s3cr3t-token`, `EMPTY=` (set, empty), `HOME=/home/u`.
    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t-token".into()),
            "EMPTY" => Some(String::new()),
            "HOME" => Some("/home/u".into()),
            _ => None,
        }
    }

    fn parse_ok(text: &str) -> ServersFile {
        match parse(text, Path::new("conf/servers.json"), &env) {
            Ok(file) => file,
            Err(e) => panic!("{text}\n→ {e}"),
        }
    }

    /// Checks that `marked` is refused with exactly `conf/servers.json:LINE:COLUMN: expect`,
    /// where LINE:COLUMN is that of the marker `‸` in it (removed before parsing), and that no
    /// secret of the fake environment or of the text leaks into the message.
    fn check_err(marked: &str, expect: &str) {
        let at = marked.find('‸').expect("a ‸ marker where the error points");
        let before = &marked[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        check_err_exactly(
            &marked.replacen('‸', "", 1),
            &format!("conf/servers.json:{line}:{column}: {expect}"),
        );
    }

    /// Checks that `text` is refused with exactly `expect`, leaking no secret.
    fn check_err_exactly(text: &str, expect: &str) {
        let e = match parse(text, Path::new("conf/servers.json"), &env) {
            Ok(file) => panic!("{text}\n→ accepted: {file:?}"),
            Err(e) => e,
        };
        assert_eq!(e, expect, "\n{text}");
        for secret in ["s3cr3t", "hunter2", "sekrit", "12345"] {
            assert!(!e.contains(secret), "{e} leaks {secret}");
        }
    }

    fn flags(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        list.iter()
            .map(|(f, v)| (f.to_string(), v.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const EXAMPLE: &str = r#"{
  "mcpServers": {
    "demo":   { "command": "mcp-relay", "args": ["demo-server"], "env": {"K": "v"}, "cwd": "/tmp", "default": true },
    "memory": { "command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"],
                "relay": { "prespawn": 1, "restart": "always", "auth_token": ["t2"], "listen": "tcp://127.0.0.1:9101" } },
    "remote": { "type": "http", "url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"} },
    "legacy": { "type": "sse", "url": "http://127.0.0.1:3001/sse" }
  },
  "relay": { "listen": ["http://127.0.0.1:8080"], "auth_token_file": "tokens.txt", "max_sessions": 100, "shutdown_grace": "2s" }
}"#;

    #[test]
    fn servers_file_the_example() {
        let file = parse_ok(EXAMPLE);
        assert_eq!(file.default.as_deref(), Some("demo"));
        let names: Vec<&str> = file.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["demo", "memory", "remote", "legacy"]);
        assert_eq!(
            file.servers[0].kind,
            EntryKind::Command {
                command: "mcp-relay".into(),
                args: strings(&["demo-server"]),
                env: vec![("K".into(), "v".into())],
                cwd: Some("/tmp".into()),
            }
        );
        assert!(file.servers[0].relay.is_empty());
        assert_eq!(
            file.servers[1].relay,
            flags(&[
                ("--prespawn", &["1"]),
                ("--restart", &["always"]),
                ("--auth-token", &["t2"]),
                ("--listen", &["tcp://127.0.0.1:9101"]),
            ])
        );
        assert_eq!(
            file.servers[2].kind,
            EntryKind::Remote {
                url: "https://mcp.example.com/mcp".into(),
                sse: false,
                headers: vec![("Authorization".into(), "Bearer s3cr3t-token".into())],
            }
        );
        assert_eq!(
            file.servers[3].kind,
            EntryKind::Remote {
                url: "http://127.0.0.1:3001/sse".into(),
                sse: true,
                headers: vec![],
            }
        );
        assert_eq!(
            file.relay,
            flags(&[
                ("--listen", &["http://127.0.0.1:8080"]),
                ("--auth-token-file", &["conf/tokens.txt"]),
                ("--max-sessions", &["100"]),
                ("--shutdown-grace", &["2s"]),
            ])
        );
    }

    /// What Claude Desktop writes (macOS, with its other top-level keys), taken as it is.
    #[test]
    fn servers_file_a_claude_desktop_file() {
        let text = "\u{feff}{\r\n  \"globalShortcut\": \"Alt+Space\",\r\n  \"mcpServers\": {\r\n    \"filesystem\": {\r\n      \"command\": \"npx\",\r\n      \"args\": [\r\n        \"-y\",\r\n        \"@modelcontextprotocol/server-filesystem\",\r\n        \"/Users/me/Desktop\"\r\n      ]\r\n    },\r\n    \"github\": {\r\n      \"command\": \"docker\",\r\n      \"args\": [\"run\", \"-i\", \"--rm\", \"-e\", \"GITHUB_PERSONAL_ACCESS_TOKEN\", \"ghcr.io/github/github-mcp-server\"],\r\n      \"env\": {\r\n        \"GITHUB_PERSONAL_ACCESS_TOKEN\": \"ghp_hunter2\"\r\n      }\r\n    },\r\n    \"old\": { \"command\": \"uvx\", \"args\": [\"mcp-server-fetch\"], \"disabled\": true }\r\n  },\r\n  \"preferences\": { \"menuBarEnabled\": false }\r\n}\r\n";
        let file = parse_ok(text);
        let names: Vec<&str> = file.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["filesystem", "github"]);
        assert_eq!(file.default, None, "two servers, none marked");
        assert!(file.relay.is_empty());
        let EntryKind::Command {
            command,
            args,
            env,
            cwd,
        } = &file.servers[1].kind
        else {
            panic!("{:?}", file.servers[1]);
        };
        assert_eq!(command, "docker");
        assert_eq!(args.len(), 6);
        assert_eq!(
            env,
            &[("GITHUB_PERSONAL_ACCESS_TOKEN".into(), "ghp_hunter2".into())]
        );
        assert_eq!(cwd, &None);
        // Claude Code's `.mcp.json`: "type": "stdio" and remote entries.
        let file = parse_ok(
            r#"{"mcpServers": {"x": {"type": "stdio", "command": "srv", "args": [], "env": {}}}}"#,
        );
        assert_eq!(file.default.as_deref(), Some("x"), "the only server");
        let file = parse_ok(
            r#"{"mcpServers": {"a": {"url": "tcp://127.0.0.1:9"}, "b": {"type": "streamable-http", "url": "http://h/mcp"}}}"#,
        );
        assert!(matches!(
            &file.servers[0].kind,
            EntryKind::Remote { sse: false, .. }
        ));
        assert!(matches!(
            &file.servers[1].kind,
            EntryKind::Remote { sse: false, .. }
        ));
    }

    #[test]
    fn servers_file_defaults() {
        let default = |text: &str| parse_ok(text).default;
        assert_eq!(
            default(r#"{"mcpServers": {"a": {"command": "x", "default": false}}}"#),
            None
        );
        assert_eq!(
            default(
                r#"{"mcpServers": {"a": {"command": "x"}, "b": {"command": "y", "default": true}}}"#
            ),
            Some("b".into())
        );
        assert_eq!(
            default(
                r#"{"mcpServers": {"a": {"command": "x", "default": false}, "b": {"command": "y"}}}"#
            ),
            None
        );
        // A disabled server is neither served nor the default; the other is the only one.
        assert_eq!(
            default(
                r#"{"mcpServers": {"a": {"command": "x", "default": true, "disabled": true}, "b": {"command": "y"}}}"#
            ),
            Some("b".into())
        );
    }

    #[test]
    fn servers_file_variables() {
        let one = |value: &str| -> String {
            let text =
                format!(r#"{{"mcpServers": {{"a": {{"command": "x", "args": ["{value}"]}}}}}}"#);
            match &parse_ok(&text).servers[0].kind {
                EntryKind::Command { args, .. } => args[0].clone(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(one("${HOME}/x"), "/home/u/x");
        assert_eq!(one("${NOPE:-dflt}"), "dflt");
        assert_eq!(one("${EMPTY:-dflt}"), "dflt", "empty takes the default");
        assert_eq!(one("${NOPE:-}"), "", "empty default");
        assert_eq!(one("<${EMPTY}>"), "<>", "set but empty");
        assert_eq!(one("$HOME ${1x} ${"), "$HOME ${1x} ${", "not references");
        check_err(
            r#"{"mcpServers": {"a": {"command": "x", "args": [‸"${NOPE}"]}}}"#,
            "server \"a\": \"args\"[0]: ${NOPE} is not set (write ${NOPE:-default} to give it a default)",
        );
        check_err(
            r#"{"mcpServers": {"a": {"command": "x", "args": ["", ‸"${A}${B:-b}${C}"]}}}"#,
            "server \"a\": \"args\"[1]: ${A}, ${C} are not set",
        );
        // Everywhere: command, env, cwd, url, headers, relay strings.
        let file = parse_ok(
            r#"{"mcpServers": {
                 "a": {"command": "${HOME}/bin/s", "env": {"T": "${TOKEN}"}, "cwd": "${HOME}",
                       "relay": {"restart": "${R:-never}"}},
                 "b": {"url": "http://h/mcp?k=${TOKEN}", "headers": {"X": "${TOKEN}"}}},
               "relay": {"auth_token": "${TOKEN}", "env": {"A": "${HOME}"}, "header": ["X-A: ${TOKEN}"]}}"#,
        );
        assert_eq!(
            file.servers[0].kind,
            EntryKind::Command {
                command: "/home/u/bin/s".into(),
                args: vec![],
                env: vec![("T".into(), "s3cr3t-token".into())],
                cwd: Some("/home/u".into()),
            }
        );
        assert_eq!(file.servers[0].relay, flags(&[("--restart", &["never"])]));
        assert_eq!(
            file.servers[1].kind,
            EntryKind::Remote {
                url: "http://h/mcp?k=s3cr3t-token".into(),
                sse: false,
                headers: vec![("X".into(), "s3cr3t-token".into())],
            }
        );
        assert_eq!(
            file.relay,
            flags(&[
                ("--auth-token", &["s3cr3t-token"]),
                ("--env", &["A=/home/u"]),
                // Expanded once, by --header itself.
                ("--header", &["X-A: ${TOKEN}"]),
            ])
        );
        // Unset: named with the server and the key; the value around it is never shown.
        let unset = "${NOPE} is not set (write ${NOPE:-default} to give it a default)";
        check_err(
            r#"{"mcpServers": {"a": {"command": ‸"${NOPE}/x"}}}"#,
            &format!("server \"a\": \"command\": {unset}"),
        );
        check_err(
            r#"{"mcpServers": {"a": {"command": "x", "cwd": ‸"${NOPE}"}}}"#,
            &format!("server \"a\": \"cwd\": {unset}"),
        );
        check_err(
            r#"{"mcpServers": {"a": {"command": "x", "env": {"KEY": ‸"sekrit-${NOPE}"}}}}"#,
            &format!("server \"a\": env \"KEY\": {unset}"),
        );
        check_err(
            r#"{"mcpServers": {"a": {"url": ‸"http://h/?k=sekrit${NOPE}"}}}"#,
            &format!("server \"a\": \"url\": {unset}"),
        );
        check_err(
            r#"{"mcpServers": {"a": {"url": "http://h/", "headers": {"Authorization": ‸"Bearer sekrit${NOPE}"}}}}"#,
            &format!("server \"a\": header \"Authorization\": {unset}"),
        );
        check_err(
            r#"{"mcpServers": {"a": {"command": "x", "relay": {"restart": ‸"${NOPE}"}}}}"#,
            &format!("server \"a\": relay \"restart\": {unset}"),
        );
        check_err(
            r#"{"mcpServers": {"a": {"command": "x"}}, "relay": {"auth_token": ‸"sekrit${NOPE}"}}"#,
            &format!("relay \"auth_token\": {unset}"),
        );
        check_err(
            r#"{"mcpServers": {"a": {"command": "x"}}, "relay": {"env": {"K": ‸"sekrit${NOPE}"}}}"#,
            &format!("relay \"env\" \"K\": {unset}"),
        );
    }

    #[test]
    fn servers_file_load() {
        let missing = Path::new("/nonexistent/servers.json");
        let e = load(missing, &env).expect_err("no such file");
        assert!(
            e.starts_with("--config /nonexistent/servers.json: cannot read it: "),
            "{e}"
        );
        let path =
            std::env::temp_dir().join(format!("mcp-relay-servers-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"mcpServers": {"a": {"command": "x", "cwd": "w"}}}"#,
        )
        .expect("write");
        let file = load(&path, &env);
        let _ = std::fs::remove_file(&path);
        let file = file.expect("valid");
        let EntryKind::Command { cwd, .. } = &file.servers[0].kind else {
            panic!("{file:?}");
        };
        assert_eq!(
            cwd.as_deref(),
            Some(std::env::temp_dir().join("w").as_path())
        );
    }

    #[test]
    fn servers_file_names() {
        for good in ["a", "A-b_c.9", &"x".repeat(64), "..."] {
            let text = format!(r#"{{"mcpServers": {{"{good}": {{"command": "x"}}}}}}"#);
            assert_eq!(parse_ok(&text).servers[0].name, good);
        }
        let bad = |name: &str, shown: &str| {
            check_err(
                &format!(r#"{{"mcpServers": {{‸"{name}": {{"command": "x"}}}}}}"#),
                &format!("server name {shown}: use 1 to 64 letters, digits, '.', '_' and '-' (the name is the URL path /servers/NAME/mcp)"),
            )
        };
        bad("", "\"\"");
        bad("a b", "\"a b\"");
        bad("a/b", "\"a/b\"");
        bad("caf\u{e9}", "\"caf\u{e9}\"");
        bad("a\\n", "\"a\\n\"");
        bad(&"x".repeat(65), &format!("\"{}\"…", "x".repeat(64)));
        for dots in [".", ".."] {
            check_err(
                &format!(r#"{{"mcpServers": {{‸"{dots}": {{"command": "x"}}}}}}"#),
                &format!("server name \"{dots}\": not usable as a URL path segment"),
            );
        }
    }

    #[test]
    fn servers_file_syntax_errors() {
        // Explicit positions here: serde_json's, turned into characters.
        let exactly = |text: &str, expect: &str| {
            check_err_exactly(text, &format!("conf/servers.json:{expect}"))
        };
        exactly(
            "{\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\",}\n  }\n}",
            "3:26: invalid JSON: trailing comma",
        );
        exactly(
            "{\"mcpServers\": {\"a\" {}}}",
            "1:21: invalid JSON: expected `:`",
        );
        exactly(
            "{\"mcpServers\": {\n",
            "2:1: invalid JSON: EOF while parsing an object",
        );
        // Columns count characters, not bytes (\u{e9} is two bytes).
        exactly(
            "{\"\u{e9}\u{e9}\": 1 x}",
            "1:10: invalid JSON: expected `,` or `}`",
        );
        exactly("{} {}", "1:4: invalid JSON: trailing characters");
        exactly(
            "{\"k\": \"hunter2\u{1}\"}",
            "1:15: invalid JSON: control character (\\u0000-\\u001F) found while parsing a string",
        );
        // The same through the marker: the two agree.
        check_err(
            "{\"mcpServers\": {\"a\" ‸{}}}",
            "invalid JSON: expected `:`",
        );
        assert_eq!(
            parse(" \n", Path::new("s.json"), &env),
            Err("s.json: the file is empty (expected {\"mcpServers\": {…}})".into())
        );
    }

    #[test]
    fn servers_file_structure_errors() {
        check_err(
            "‸[]",
            "expected an object, {\"mcpServers\": {…}}, not an array",
        );
        check_err(
            "‸{\n \"other\": 1\n}",
            "no \"mcpServers\": the servers go in {\"mcpServers\": {\"NAME\": {\"command\": …}}}",
        );
        check_err(
            r#"{"mcpServers": ‸[]}"#,
            "\"mcpServers\" must be an object, not an array",
        );
        check_err(r#"{‸"mcpServers": {}}"#, "\"mcpServers\" has no server");
        check_err(
            r#"{‸"mcpServers": {"a": {"command": "x", "disabled": true}}}"#,
            "every server of \"mcpServers\" is disabled",
        );
        check_err(
            "{\"mcpServers\": {\"a\": {\"command\": \"x\"},\n ‸\"a\": {\"command\": \"y\"}}}",
            "\"mcpServers\": \"a\" appears twice (first at 1:17)",
        );
        check_err(
            "{\"mcpServers\": {}, ‸\"mcpServers\": {}}",
            "the file: \"mcpServers\" appears twice (first at 1:2)",
        );
        for typo in ["Relay", "relays", "mcp-relay", "mcp_servers", "MCPServers"] {
            check_err(
                &format!(r#"{{"mcpServers": {{"a": {{"command": "x"}}}}, ‸"{typo}": {{}}}}"#),
                &format!("unknown key \"{typo}\": mcp-relay reads \"mcpServers\" and \"relay\" (other keys are ignored, but this one looks like a misspelling)"),
            );
        }
        check_err(
            r#"{"mcpServers": {"a": {"command": "x"}}, "relay": ‸[]}"#,
            "\"relay\" must be an object, not an array",
        );
        // A second default, reported where it is.
        check_err(
            "{\"mcpServers\": {\"a\": {\"command\": \"x\", \"default\": true},\n ‸\"b\": {\"command\": \"y\", \"default\": true}}}",
            "server \"b\": \"default\": true, but \"a\" is the default already (at most one)",
        );
    }

    #[test]
    fn servers_file_entry_errors() {
        let check = |entry: &str, expect: &str| {
            check_err(
                &format!("{{\"mcpServers\": {{\n\"s\": {entry}}}}}"),
                &format!("server \"s\"{expect}"),
            )
        };
        check("‸[]", " must be an object, not an array");
        check_err(
            "{\"mcpServers\": {\n‸\"s\": {}}}",
            "server \"s\": no \"command\" (a server to run) or \"url\" (a remote server)",
        );
        check(
            r#"{"command": "x", ‸"timeout": 5}"#,
            ": unknown key \"timeout\" (an entry has type, command, args, env, cwd, url, headers, default, disabled, relay)",
        );
        check(
            r#"{"command": "x", ‸"url": "http://h/"}"#,
            ": both \"command\" and \"url\": an entry runs a command or reaches a URL, not both",
        );
        check(
            r#"{"type": ‸"ws", "url": "ws://h/"}"#,
            ": \"type\" is \"ws\"; expected \"stdio\", \"http\", \"streamable-http\" or \"sse\"",
        );
        check(
            r#"{"type": ‸1}"#,
            ": \"type\" must be a string, not a number",
        );
        check(
            r#"{‸"type": "stdio", "url": "http://h/"}"#,
            ": \"type\" is \"stdio\" but there is no \"command\"",
        );
        check(
            r#"{"type": "http", ‸"command": "x"}"#,
            ": \"command\" does not go with \"type\": \"http\" or \"sse\" (those take \"url\")",
        );
        check(
            r#"{‸"type": "sse"}"#,
            ": a remote entry (\"type\": \"http\" or \"sse\") needs \"url\"",
        );
        check(
            r#"{"url": "http://h/", ‸"args": []}"#,
            ": \"args\" is for a command entry, and this one has \"url\"",
        );
        check(
            r#"{"command": "x", ‸"headers": {}}"#,
            ": \"headers\" is for a remote entry, and this one has \"command\"",
        );
        check(
            r#"{"command": ‸["x"]}"#,
            ": \"command\" must be a string, not an array",
        );
        check(r#"{"command": ‸""}"#, ": \"command\" is empty");
        check(
            r#"{"command": ‸"a\u0000"}"#,
            ": \"command\" has a NUL character",
        );
        check(
            r#"{"command": "x", "args": ‸"-y"}"#,
            ": \"args\" must be an array of strings, not a string",
        );
        check(
            r#"{"command": "x", "args": ["a", ‸8080]}"#,
            ": \"args\"[1] must be a string, not a number",
        );
        check(
            r#"{"command": "x", "env": ‸["A=1"]}"#,
            ": \"env\" must be an object, not an array",
        );
        check(
            r#"{"command": "x", "env": {"A": ‸12345}}"#,
            ": env \"A\" must be a string, not a number (write numbers and booleans in quotes)",
        );
        check(
            r#"{"command": "x", "env": {‸"A=B": "sekrit"}}"#,
            ": env \"A=B\": a variable name cannot be empty or hold '=' or NUL",
        );
        check(
            "{\"command\": \"x\", \"env\": {\"A\": \"sekrit\",\n‸\"A\": \"hunter2\"}}",
            ": \"env\": \"A\" appears twice (first at 2:31)",
        );
        check(
            r#"{"command": "x", "env": {"A": ‸"sekrit\u0000"}}"#,
            ": env \"A\" has a NUL character (after expanding variables)",
        );
        check(r#"{"command": "x", "cwd": ‸""}"#, ": \"cwd\" is empty");
        check(
            r#"{"command": "x", "default": ‸"yes"}"#,
            ": \"default\" must be true or false, not a string",
        );
        check(
            r#"{"command": "x", "disabled": ‸1}"#,
            ": \"disabled\" must be true or false, not a number",
        );
        check(r#"{"url": ‸5}"#, ": \"url\" must be a string, not a number");
        check(r#"{"url": ‸"${EMPTY}"}"#, ": \"url\" is empty");
        check(
            r#"{"url": ‸"ftp://h/?key=sekrit"}"#,
            ": \"url\": unsupported scheme \"ftp\" in \"ftp://h/?…\" (expected http, https, tcp or tls)",
        );
        check(
            r#"{"url": ‸"https://me:sekrit@h/"}"#,
            ": \"url\": \"https://…@h/\" carries credentials; pass them with --header or --bearer-token",
        );
        check(
            r#"{"type": "sse", "url": ‸"tcp://h:1"}"#,
            ": \"type\" is \"sse\", which needs an http:// or https:// URL",
        );
        check(
            r#"{"url": "http://h/", "headers": {‸"Bearer sekrit": "x"}}"#,
            ": a header name may only have letters, digits and !#$%&'*+-.^_`|~",
        );
        check(
            r#"{"url": "http://h/", "headers": {‸"host": "x"}}"#,
            ": header \"host\": the relay sets Host itself",
        );
        check(
            r#"{"url": "http://h/", "headers": {"X": ‸12345}}"#,
            ": header \"X\" must be a string, not a number",
        );
        check(
            r#"{"url": "http://h/", "headers": {"X": ‸"sekrit\r\nY: 1"}}"#,
            ": header \"X\" has a line break or NUL (after expanding variables)",
        );
    }

    #[test]
    fn servers_file_relay_settings() {
        let file = parse_ok(
            r#"{"mcpServers": {
                 "c": {"command": "x", "cwd": "work",
                       "relay": {"clean-env": true, "max_in_flight": 8, "listen": ["tcp://127.0.0.1:1", "tls://127.0.0.1:2"]}},
                 "r": {"url": "http://h/", "relay": {"transport": "sse", "connect_timeout": 0.5, "auth-token": []}}},
               "relay": {"debug": true, "no_metrics": false, "allow_origin": ["https://a", "https://b"],
                         "tls_cert": "/etc/c.pem", "tls-key": "k.pem", "cwd": "..", "log_level": "warn",
                         "env": ["A=1"], "max-message-size": "1MiB"}}"#,
        );
        assert_eq!(
            file.servers[0].relay,
            flags(&[
                ("--clean-env", &[]),
                ("--max-in-flight", &["8"]),
                ("--listen", &["tcp://127.0.0.1:1", "tls://127.0.0.1:2"]),
            ])
        );
        assert!(
            matches!(&file.servers[0].kind, EntryKind::Command { cwd: Some(c), .. } if c == Path::new("conf/work"))
        );
        assert_eq!(
            file.servers[1].relay,
            flags(&[("--transport", &["sse"]), ("--connect-timeout", &["0.5"])])
        );
        assert_eq!(
            file.relay,
            flags(&[
                ("--debug", &[]),
                ("--allow-origin", &["https://a", "https://b"]),
                ("--tls-cert", &["/etc/c.pem"]),
                ("--tls-key", &["conf/k.pem"]),
                ("--cwd", &["conf/.."]),
                ("--log-level", &["warn"]),
                ("--env", &["A=1"]),
                ("--max-message-size", &["1MiB"]),
            ])
        );
        // A bare file name: relative paths stay as written (the file's directory is the
        // current one).
        let file = parse(
            r#"{"mcpServers": {"a": {"command": "x"}}, "relay": {"auth_token_file": "t.txt"}}"#,
            Path::new("servers.json"),
            &env,
        )
        .expect("valid");
        assert_eq!(file.relay, flags(&[("--auth-token-file", &["t.txt"])]));
    }

    #[test]
    fn servers_file_relay_errors() {
        let top = |relay: &str, expect: &str| {
            check_err(
                &format!(
                    "{{\"mcpServers\": {{\"a\": {{\"command\": \"x\"}}}},\n\"relay\": {relay}}}"
                ),
                &format!("relay {expect}"),
            )
        };
        let no_such = "no such setting (settings are the flags without \"--\": \"max_sessions\" or \"max-sessions\" for --max-sessions)";
        top(
            r#"{‸"max_session": 1}"#,
            &format!("\"max_session\": {no_such}"),
        );
        top(r#"{‸"connect": "http://h/"}"#, "\"connect\": not a setting of the file: a remote server is an entry of \"mcpServers\" with \"url\"");
        top(r#"{‸"demo": true}"#, "\"demo\": not a setting of the file: the demo server is an entry: {\"command\": \"mcp-relay\", \"args\": [\"demo-server\"]}");
        top(r#"{‸"config": "x"}"#, "\"config\": not a setting of the file: the servers file cannot name another (give one --config)");
        top(
            r#"{"max_sessions": 1, ‸"max-sessions": 2}"#,
            "\"max-sessions\": --max-sessions is set twice (first at 2:11)",
        );
        top(
            r#"{"debug": ‸"yes"}"#,
            "\"debug\" is a switch: true or false, not a string",
        );
        top(
            r#"{"max_sessions": ‸[1, 2]}"#,
            "\"max_sessions\" takes one value, not a list",
        );
        top(
            r#"{"max_sessions": ‸null}"#,
            "\"max_sessions\" must be a string or a number, not null",
        );
        top(
            r#"{"listen": ‸{"a": 1}}"#,
            "\"listen\" must be a string, a number or a list of them, not an object",
        );
        top(
            r#"{"listen": ["http://127.0.0.1:1", ‸[1]]}"#,
            "\"listen\"[1] must be a string or a number, not an array",
        );
        // The flags' own parsers.
        top(
            r#"{"max_sessions": ‸"lots"}"#,
            "\"max_sessions\": `lots` is not a whole number (for example 4)",
        );
        top(
            r#"{"max_sessions": ‸-1}"#,
            "\"max_sessions\": `-1` is not a whole number (for example 4)",
        );
        top(
            r#"{"shutdown_grace": ‸"2x"}"#,
            "\"shutdown_grace\": `2x` is not a duration (use 5, 0.5, 500ms, 2s, 1m or 1h)",
        );
        top(
            r#"{"restart": ‸"on_failure"}"#,
            "\"restart\": `on_failure` is not a restart policy (on-failure, always or never)",
        );
        top(r#"{"listen": ‸"udp://1.2.3.4:5"}"#, "\"listen\": --listen udp://1.2.3.4:5: unsupported scheme `udp://` (use tcp://, http://, tls:// or https://HOST:PORT)");
        // Secrets: checked without being shown.
        top(
            r#"{"env": [‸"sekrit"]}"#,
            "\"env\"[0]: expected KEY=VALUE (a variable name cannot be empty)",
        );
        top(
            r#"{"env": {‸"": "sekrit"}}"#,
            "\"env\" \"\": expected KEY=VALUE (a variable name cannot be empty)",
        );
        top(
            r#"{"header": ‸"Bearer sekrit"}"#,
            "\"header\": expected \"Name: value\" (there is no colon)",
        );
        top(
            r#"{"header": {‸"Host": "sekrit"}}"#,
            "\"header\" \"Host\": the relay sets this header itself",
        );
        top(
            r#"{"header": {"X": ‸12345}}"#,
            "\"header\" \"X\" must be a string, not a number",
        );
        top(
            r#"{"bearer_token": ‸"sekrit\n"}"#,
            "\"bearer_token\": has a line break or NUL (after expanding variables)",
        );

        let server = |entry: &str, expect: &str| {
            check_err(
                &format!("{{\"mcpServers\": {{\n\"s\": {entry}}}}}"),
                &format!("server \"s\": {expect}"),
            )
        };
        server(
            r#"{"command": "x", "relay": ‸[]}"#,
            "\"relay\" must be an object, not an array",
        );
        server(
            r#"{"command": "x", "relay": {‸"max_sessions": 1}}"#,
            "relay \"max_sessions\": only for the whole relay (in the top-level \"relay\")",
        );
        server(
            r#"{"command": "x", "relay": {‸"transport": "sse"}}"#,
            "relay \"transport\": only for an entry with \"url\"",
        );
        server(
            r#"{"command": "x", "relay": {‸"connect_timeout": 1}}"#,
            "relay \"connect_timeout\": only for an entry with \"url\"",
        );
        server(
            r#"{"url": "http://h/", "relay": {‸"clean_env": true}}"#,
            "relay \"clean_env\": only for an entry with \"command\"",
        );
        server(
            r#"{"command": "x", "relay": {‸"bogus": 1}}"#,
            &format!("relay \"bogus\": {no_such}"),
        );
        server(
            r#"{"command": "x", "relay": {"listen": ‸"http://127.0.0.1:1"}}"#,
            "relay \"listen\": a server's own listeners are tcp:// or tls:// (over HTTP it is /servers/s/mcp on the relay's listeners)",
        );
        server(
            r#"{"command": "x", "relay": {"prespawn": ‸1.5}}"#,
            "relay \"prespawn\": `1.5` is not a whole number (for example 4)",
        );
        server(
            r#"{"command": "x", "relay": {"auth_token": ["t", 7, ‸"${NOPE}"]}}"#,
            "relay \"auth_token\"[2]: ${NOPE} is not set (write ${NOPE:-default} to give it a default)",
        );
    }

    /// Whatever the text, an answer and no panic: every prefix of the example, and the example
    /// with each character replaced by JSON punctuation; nesting past serde_json's limit.
    #[test]
    fn servers_file_never_panics() {
        // Without "listen": a mangled address would be a host name to resolve.
        let example = EXAMPLE.replace("\"listen\"", "\"allow_host\"");
        for (i, here) in example.char_indices() {
            let _ = parse(&example[..i], Path::new("f"), &env);
            for c in ["\"", "{", "}", "[", "]", ",", ":", "\\", " ", "0", "é"] {
                let text = format!("{}{c}{}", &example[..i], &example[i + here.len_utf8()..]);
                let _ = parse(&text, Path::new("f"), &env);
            }
        }
        let deep = |n: usize| {
            format!(
                r#"{{"x": {}{}, "mcpServers": {{"a": {{"command": "c"}}}}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(parse(&deep(100), Path::new("f"), &env).is_ok());
        let e = parse(&deep(1000), Path::new("f"), &env).expect_err("too deep");
        assert!(e.contains("recursion limit exceeded"), "{e}");
    }

    /// The settings table and `Args` agree, read from the usage line of `--help`: every
    /// flag is in SETTINGS (with the same arity) or in NOT_SETTINGS, so that a flag added to
    /// `Args` must be placed here too.
    #[test]
    fn servers_file_settings_match_the_flags() {
        let help = match crate::Args::from_args(&["mcp-relay"], &["--help"]) {
            Err(early) => early.output,
            Ok(_) => panic!("--help parsed"),
        };
        let usage = help.lines().next().expect("a usage line");
        // `[--listen <listen...>]`, `[--cwd <cwd>]`, `[--demo]`, `[-V]`.
        let mut flags: Vec<(String, Option<Arity>)> = Vec::new();
        for piece in usage.split('[').skip(1) {
            let piece = piece.split(']').next().unwrap_or("");
            if piece == "-V" {
                flags.push(("version".into(), None));
                continue;
            }
            let Some(rest) = piece.strip_prefix("--") else {
                continue; // the positional command
            };
            let name = rest.split(' ').next().unwrap_or("").to_owned();
            let arity = if rest.contains("...>") {
                Arity::Many
            } else if rest.contains('<') {
                Arity::One
            } else {
                Arity::Switch
            };
            flags.push((name, Some(arity)));
        }
        flags.sort();
        let mut known: Vec<(String, Option<Arity>)> = SETTINGS
            .iter()
            .map(|s| (s.flag.to_owned(), Some(s.arity)))
            .chain(
                NOT_SETTINGS
                    .iter()
                    .map(|(f, _)| (f.to_string(), None))
                    .filter(|(f, _)| f != "help"),
            )
            .collect();
        // `config` may or may not be a flag yet; its arity is not compared.
        if flags.iter().all(|(f, _)| f != "config") {
            known.retain(|(f, _)| f != "config");
        }
        for (f, arity) in &mut flags {
            if NOT_SETTINGS.iter().any(|(n, _)| n == f) {
                *arity = None;
            }
        }
        known.sort();
        assert_eq!(flags, known);
    }
}
