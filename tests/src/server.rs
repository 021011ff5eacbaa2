//! The simulated child: an echo-like MCP server on stdio.
//!
//! It answers every request it reads with a response carrying the same id (raw, byte for
//! byte) and a body derived from the request; it sometimes writes notifications, non-JSON
//! noise (banners, heartbeats), responses too large for the relay, and lines ending in
//! `\r\n`. Depending on its traits it exits when its stdin ends (after answering what it
//! read) or ignores that and SIGTERM (a stubborn child), crashes, closes its stdout early, or
//! leaves a grandchild holding its pipes after it exits.
//!
//! Not modelled: process groups (a signal reaches "the child", grandchildren just hold
//! pipes), pipe capacity (writing never blocks), partial writes by the child itself.

use crate::jsonrpc::{is_own_id, padding, requests_in_line, Request};
use crate::pipe::Pipe;
use crate::rng::Rng;
use mcp_relay_core::{ChildId, ExitStatus, Signal};
use serde_json::{json, Value};
use std::time::Duration;

/// Pipes a grandchild keeps open after the child exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Holds {
    #[default]
    Nothing,
    /// stdout and stderr: the relay never sees their end of file.
    Both,
    /// Only stderr.
    Stderr,
}

/// How one child behaves; drawn when it is spawned.
#[derive(Clone, Debug, Default)]
pub struct Traits {
    /// Ignores the end of its stdin and SIGTERM; only SIGKILL stops it.
    pub stubborn: bool,
    /// Prints a non-JSON banner on stdout when it starts.
    pub banner: bool,
    /// Reads its stdin slowly: small amounts with long pauses.
    pub slow_stdin: bool,
    pub holds: Holds,
    /// Exits on its own this long after starting, with this status.
    pub crash: Option<(Duration, ExitStatus)>,
    /// Closes its stdout (and keeps running) this long after starting.
    pub close_stdout: Option<Duration>,
    /// Hangs this long after starting: stops reading its stdin and answering, but still
    /// reacts to signals.
    pub hang: Option<Duration>,
    /// Per mille of answers followed by a noise line (not JSON-RPC).
    pub noise: u32,
    /// Per mille of answers followed by a notification.
    pub notify: u32,
    /// Per mille of answers too large for the relay.
    pub oversize: u32,
    /// Per mille of answers exactly at the size limit (or one byte off).
    pub near_limit: u32,
    /// Per mille of lines ending in `\r\n`.
    pub crlf: u32,
    /// Per mille of non-JSON lines read that it answers with an `"id": null` parse error.
    pub parse_error: u32,
    /// Serves MCP tools as the HTTP clients call them (see [`Server`]'s tools mode): `echo`
    /// and `slow` (progress notifications, then the answer), every message tagged. Only once
    /// an HTTP client's `initialize` (`clientInfo.name` `sim-s<n>`) tied it to a session.
    pub tools: bool,
}

/// An `initialize` from one of the simulated HTTP clients.
fn http_initialize(line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(line).is_ok_and(|m| {
        m["method"] == json!("initialize")
            && m["params"]["clientInfo"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("sim-s"))
    })
}

/// What the relay must do with one line the child wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildKind {
    /// A JSON-RPC message: forwarded to the client byte for byte.
    Forward,
    /// The answer to a request the relay made itself (a probe, a replay): never forwarded.
    Own,
    /// Not JSON-RPC, or too large without an id: dropped.
    Dropped,
    /// Too large, with this raw id: the client gets a -32001 error instead.
    Lost { id: String },
}

#[derive(Debug)]
pub struct ChildLine {
    pub content: Vec<u8>,
    pub kind: ChildKind,
    /// The raw ids this line answers.
    pub answers: Vec<String>,
    /// Offsets of its first byte and just past its last byte on stdout.
    pub start: usize,
    pub end: usize,
    pub delivered_step: Option<u64>,
}

/// Something the child does at a scheduled moment.
#[derive(Clone, Debug)]
pub enum Act {
    Answer {
        req: Request,
        len: usize,
    },
    AnswerBatch(Vec<Request>),
    /// An `"id": null` parse error for a non-JSON line it read.
    ParseError,
    Notify,
    Noise,
    Stderr(Vec<u8>),
    CloseStdout,
    Hang,
    Exit(ExitStatus),
    /// Exits on its own (its [`Traits::crash`]).
    Crash(ExitStatus),
    /// Tools mode: writes one prepared message, tagged `(tag, session, request id)`.
    Say {
        line: Vec<u8>,
        tag: Option<(String, usize, u64)>,
        answer: Option<String>,
    },
    /// Tools mode: writes the answers to several calls of a batch as one batch of answers,
    /// each tagged `(tag, session, request id)`.
    SayAll {
        line: Vec<u8>,
        tags: Vec<(String, usize, u64)>,
        answers: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    Running,
    Exited(ExitStatus),
}

#[derive(Debug)]
pub struct Server {
    pub child: ChildId,
    rng: Rng,
    pub traits: Traits,
    max: usize,
    pub state: ProcState,
    pub exited_at: Option<Duration>,
    /// It hung (see [`Traits::hang`]).
    pub hung: bool,
    /// Everything read from stdin.
    pub stdin: Vec<u8>,
    parsed: usize,
    pub stdin_eof: bool,
    pub stdout: Pipe,
    pub stderr: Pipe,
    pub lines: Vec<ChildLine>,
    delivered_upto: usize,
    /// Requests read, and answers written.
    pub requests_read: usize,
    pub answers_written: usize,
    /// When the last scheduled answer is due.
    answer_by: Duration,
    /// When it last read a request of the relay (a probe, a replay: the relay's own id), and
    /// how many it read.
    pub probe_read_at: Option<Duration>,
    pub own_requests_read: usize,
    seq: u64,
    /// Tools mode: the client session it serves (`clientInfo.name` of `initialize`).
    pub session: Option<usize>,
    /// Tools mode: every tagged message written, `(tag, session, request id)`.
    pub tagged: Vec<(String, usize, u64)>,
    /// Tools mode: what it read that it should never have (cross-talk, a call before
    /// `initialize`); the harness reports these.
    pub complaints: Vec<String>,
    /// Tools mode: tagged messages written too large for the relay, `(tag, session, request
    /// id)`: a progress notification the relay drops, or an answer it replaces with -32001.
    pub oversize: Vec<(String, usize, u64)>,
    /// It exited on its own (a crash), closed its stdout early: faults its session's client
    /// may be told about.
    pub crashed: bool,
    pub closed_early: bool,
}

impl Server {
    pub fn new(child: ChildId, rng: Rng, traits: Traits, max: usize) -> Self {
        Server {
            child,
            rng,
            traits,
            max,
            state: ProcState::Running,
            exited_at: None,
            hung: false,
            stdin: Vec::new(),
            parsed: 0,
            stdin_eof: false,
            stdout: Pipe::default(),
            stderr: Pipe::default(),
            lines: Vec::new(),
            delivered_upto: 0,
            requests_read: 0,
            answers_written: 0,
            answer_by: Duration::ZERO,
            probe_read_at: None,
            own_requests_read: 0,
            seq: 0,
            session: None,
            tagged: Vec::new(),
            complaints: Vec::new(),
            oversize: Vec::new(),
            crashed: false,
            closed_early: false,
        }
    }

    pub fn alive(&self) -> bool {
        self.state == ProcState::Running
    }

    /// It reads its stdin (alive and not hung).
    pub fn reading(&self) -> bool {
        self.alive() && !self.hung
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_micros(self.rng.range(lo * 1000, hi * 1000))
    }

    /// What it does once started: acts to schedule, with their delays.
    pub fn on_start(&mut self) -> Vec<(Duration, Act)> {
        let mut acts = Vec::new();
        if self.traits.banner {
            acts.push((self.ms(0, 3), Act::Noise));
        }
        if self.rng.chance(500) {
            acts.push((
                self.ms(0, 5),
                Act::Stderr(b"sim-server: starting\nsim-server: ready (stdio)\r\n".to_vec()),
            ));
        }
        let notes = self.rng.below(3);
        if !self.traits.tools || self.traits.notify > 0 {
            for _ in 0..notes {
                acts.push((self.ms(0, 200), Act::Notify));
            }
        }
        if let Some((after, status)) = self.traits.crash {
            acts.push((after, Act::Crash(status)));
        }
        if let Some(after) = self.traits.close_stdout {
            acts.push((after, Act::CloseStdout));
        }
        if let Some(after) = self.traits.hang {
            acts.push((after, Act::Hang));
        }
        acts
    }

    /// Reads bytes from stdin; returns the answers to schedule.
    pub fn on_stdin(&mut self, now: Duration, bytes: &[u8]) -> Vec<(Duration, Act)> {
        self.stdin.extend_from_slice(bytes);
        let mut acts = Vec::new();
        while let Some(nl) = self.stdin[self.parsed..].iter().position(|b| *b == b'\n') {
            let line = self.stdin[self.parsed..self.parsed + nl].to_vec();
            self.parsed += nl + 1;
            // A line that is not JSON is the relay's fault (the invariants report it) unless
            // the relay cut it short; SDK servers answer it with an id-less parse error, which
            // the relay must drop.
            let Some(requests) = requests_in_line(&line) else {
                if serde_json::from_slice::<Value>(&line).is_err()
                    && self.rng.chance(self.traits.parse_error)
                {
                    acts.push((self.ms(0, 15), Act::ParseError));
                }
                continue;
            };
            let batch = line.trim_ascii_start().starts_with(b"[");
            self.requests_read += requests.len();
            let own = requests.iter().filter(|r| is_own_id(&r.id)).count();
            if own > 0 {
                self.probe_read_at = Some(now);
                self.own_requests_read += own;
            }
            let delay = self.ms(0, 15);
            self.answer_by = self.answer_by.max(now + delay);
            // Tools mode starts with an HTTP client's `initialize` (a TCP client's server
            // stays an echo server).
            if self.traits.tools && (self.session.is_some() || http_initialize(&line)) {
                self.tools_line(&line, requests, now, delay, &mut acts);
            } else if batch {
                if !requests.is_empty() {
                    acts.push((delay, Act::AnswerBatch(requests)));
                }
            } else {
                for req in requests {
                    acts.push((
                        delay,
                        Act::Answer {
                            req,
                            len: line.len(),
                        },
                    ));
                }
            }
        }
        acts
    }

    /// Its stdin ended: a well-behaved server answers what it read, then exits.
    pub fn on_stdin_eof(&mut self, now: Duration) -> Vec<(Duration, Act)> {
        self.stdin_eof = true;
        if self.traits.stubborn || !self.alive() {
            return vec![(
                Duration::ZERO,
                Act::Stderr(b"sim-server: stdin closed; not leaving\n".to_vec()),
            )];
        }
        let after = self.answer_by.saturating_sub(now) + self.ms(0, 10);
        vec![(after, Act::Exit(ExitStatus::Code(0)))]
    }

    pub fn on_signal(&mut self, signal: Signal) -> Vec<(Duration, Act)> {
        if !self.alive() {
            return Vec::new();
        }
        match signal {
            Signal::Kill => vec![(Duration::ZERO, Act::Exit(ExitStatus::Signal(9)))],
            Signal::Term if self.traits.stubborn => vec![(
                Duration::ZERO,
                Act::Stderr(b"sim-server: SIGTERM ignored\n".to_vec()),
            )],
            Signal::Term => {
                let status = if self.rng.chance(500) {
                    ExitStatus::Code(0)
                } else {
                    ExitStatus::Signal(15)
                };
                vec![(self.ms(0, 20), Act::Exit(status))]
            }
        }
    }

    /// Performs an act. Returns whether the process exited now.
    pub fn act(&mut self, now: Duration, act: Act) -> bool {
        if !self.alive() {
            return false;
        }
        match act {
            Act::Answer { .. }
            | Act::AnswerBatch(_)
            | Act::Notify
            | Act::Noise
            | Act::ParseError
            | Act::Say { .. }
            | Act::SayAll { .. }
                if self.hung => {}
            Act::SayAll {
                line,
                tags,
                answers,
            } => {
                // Its maker keeps it within the relay's limit.
                if !self.stdout.closed {
                    self.tagged.extend(tags);
                }
                self.answers_written += answers.len();
                self.write(line, ChildKind::Forward, answers);
            }
            Act::Say { line, tag, answer } => {
                let too_large = line.len() > self.max;
                if let Some(tag) = tag {
                    if !self.stdout.closed {
                        if too_large {
                            self.oversize.push(tag);
                        } else {
                            self.tagged.push(tag);
                        }
                    }
                }
                if answer.is_some() {
                    self.answers_written += 1;
                }
                let kind = match &answer {
                    Some(id) if too_large => ChildKind::Lost { id: id.clone() },
                    None if too_large => ChildKind::Dropped,
                    _ => ChildKind::Forward,
                };
                self.write(line, kind, answer.into_iter().collect());
            }
            Act::Answer { req, len } => {
                self.answers_written += 1;
                let line = self.answer(&req, len);
                let id = req.id;
                let kind = if is_own_id(&id) {
                    ChildKind::Own
                } else if line.len() > self.max {
                    ChildKind::Lost { id: id.clone() }
                } else {
                    ChildKind::Forward
                };
                if let (ChildKind::Lost { id }, Some(s)) = (&kind, self.session) {
                    // An HTTP client's request the relay answers with -32001.
                    let rid = id.parse().unwrap_or(u64::MAX);
                    self.oversize.push((format!("s{s}/r{id}/answer"), s, rid));
                }
                self.write(line, kind, vec![id]);
                if self.rng.chance(self.traits.notify) {
                    self.notify();
                }
                if self.rng.chance(self.traits.noise) {
                    self.noise();
                }
            }
            Act::AnswerBatch(requests) => {
                self.answers_written += requests.len();
                let mut line = b"[".to_vec();
                for (i, req) in requests.iter().enumerate() {
                    if i > 0 {
                        line.push(b',');
                    }
                    line.extend_from_slice(&self.answer(req, 0));
                }
                line.push(b']');
                let kind = if line.len() > self.max {
                    ChildKind::Dropped
                } else {
                    ChildKind::Forward
                };
                self.write(line, kind, requests.into_iter().map(|r| r.id).collect());
            }
            Act::Notify => self.notify(),
            Act::Noise => self.noise(),
            Act::ParseError => {
                // Only lines the relay cut short reach it unparsable: its answer is the
                // relay's to drop (never forwarded).
                let line = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;
                self.write(line.to_vec(), ChildKind::Dropped, Vec::new());
            }
            Act::Stderr(bytes) => {
                if !self.stderr.closed {
                    self.stderr.write(&bytes);
                }
            }
            Act::CloseStdout => {
                self.closed_early = true;
                self.stdout.closed = true;
            }
            Act::Hang => self.hung = true,
            Act::Crash(status) => {
                self.crashed = true;
                return self.act(now, Act::Exit(status));
            }
            Act::Exit(status) => {
                self.state = ProcState::Exited(status);
                self.exited_at = Some(now);
                if !self.stderr.closed && self.rng.chance(300) {
                    // A last line without its newline.
                    self.stderr.write(b"sim-server: bye");
                }
                if self.traits.holds != Holds::Both {
                    self.stdout.closed = true;
                }
                if self.traits.holds == Holds::Nothing {
                    self.stderr.closed = true;
                }
                return true;
            }
        }
        false
    }

    /// Tools mode: what to do about one line read (a message or a batch). `initialize` ties
    /// the server to its client session; `tools/call` of `echo` or `slow` is answered with its
    /// tag after `k` progress notifications `interval_ms` apart; other requests get the
    /// ordinary echo answer.
    fn tools_line(
        &mut self,
        line: &[u8],
        requests: Vec<Request>,
        now: Duration,
        delay: Duration,
        acts: &mut Vec<(Duration, Act)>,
    ) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        let batch = v.is_array();
        let messages: Vec<Value> = match v {
            Value::Array(a) => a,
            one => vec![one],
        };
        // Instant answers to a batch sometimes go back as one batch of answers (when it fits
        // the relay's limit; a line too large would lose every id in it).
        let mut together = batch && self.rng.chance(500);
        let mut joint: Vec<(Value, (String, usize, u64), String)> = Vec::new();
        for req in requests {
            let want: Option<Value> = serde_json::from_str(&req.id).ok();
            let Some(m) = messages
                .iter()
                .find(|m| want.is_some() && m.get("id") == want.as_ref())
            else {
                continue;
            };
            let method = m["method"].as_str().unwrap_or("");
            if method == "initialize" {
                let name = m["params"]["clientInfo"]["name"].as_str().unwrap_or("");
                match name.strip_prefix("sim-s").and_then(|n| n.parse().ok()) {
                    Some(s) if self.session.is_none() => self.session = Some(s),
                    Some(s) => self.complaints.push(format!(
                        "{} of s{:?} initialized again, by s{s}",
                        self.child, self.session
                    )),
                    None => self.complaints.push(format!(
                        "{}: initialize from an unknown client: {m}",
                        self.child
                    )),
                }
                let len = line.len();
                acts.push((delay, Act::Answer { req, len }));
                continue;
            }
            if method != "tools/call" {
                let len = line.len();
                acts.push((delay, Act::Answer { req, len }));
                continue;
            }
            let Some(s) = self.session else {
                self.complaints
                    .push(format!("{}: tools/call before initialize: {m}", self.child));
                continue;
            };
            let args = &m["params"]["arguments"];
            if args["session"] != json!(s) {
                self.complaints.push(format!(
                    "{} of s{s} got a call of another session (cross-talk): {m}",
                    self.child
                ));
                continue;
            }
            let rid = m["id"].as_u64().unwrap_or(u64::MAX);
            let token = m["params"]["_meta"]["progressToken"].clone();
            let (k, interval) = if m["params"]["name"] == json!("slow") {
                (
                    args["k"].as_u64().unwrap_or(0),
                    args["interval_ms"].as_u64().unwrap_or(0),
                )
            } else {
                (0, 0)
            };
            let at = |i: u64| delay + Duration::from_millis(i * interval);
            for i in 1..=k {
                let tag = format!("s{s}/r{rid}/p{i}");
                let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": i, "total": k, "message": tag}});
                acts.push((
                    at(i),
                    Act::Say {
                        line: note.to_string().into_bytes(),
                        tag: Some((tag, s, rid)),
                        answer: None,
                    },
                ));
            }
            let tag = format!("s{s}/r{rid}/final");
            let answer = json!({"jsonrpc": "2.0", "id": m["id"], "result": {
                "content": [{"type": "text", "text": tag}],
                "tag": tag, "session": s, "args": args,
            }});
            self.answer_by = self.answer_by.max(now + at(k + 1));
            if together && k == 0 {
                joint.push((answer, (tag, s, rid), req.id));
                continue;
            }
            together = false;
            acts.push((
                at(k + 1),
                Act::Say {
                    line: answer.to_string().into_bytes(),
                    tag: Some((tag, s, rid)),
                    answer: Some(req.id),
                },
            ));
        }
        if joint.is_empty() {
            return;
        }
        let line = Value::Array(joint.iter().map(|(a, _, _)| a.clone()).collect()).to_string();
        if together && line.len() <= self.max {
            let (tags, answers) = joint.into_iter().map(|(_, t, id)| (t, id)).unzip();
            acts.push((
                delay,
                Act::SayAll {
                    line: line.into_bytes(),
                    tags,
                    answers,
                },
            ));
            return;
        }
        for (answer, tag, id) in joint {
            acts.push((
                delay,
                Act::Say {
                    line: answer.to_string().into_bytes(),
                    tag: Some(tag),
                    answer: Some(id),
                },
            ));
        }
    }

    fn answer(&mut self, req: &Request, len: usize) -> Vec<u8> {
        self.seq += 1;
        if let Some(version) = &req.version {
            return format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{{"protocolVersion":"{version}","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"sim-server","version":"{}"}}}}}}"#,
                req.id, self.child.0
            )
            .into_bytes();
        }
        if is_own_id(&req.id) {
            // The relay's probes and replays get short answers, as real servers give them.
            return format!(r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#, req.id).into_bytes();
        }
        let head = format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"echo":{},"child":{},"seq":{},"len":{len},"pad":""#,
            req.id, req.method, self.child.0, self.seq
        );
        let tail = r#""}}"#;
        let frame = head.len() + tail.len();
        let own = is_own_id(&req.id);
        let target = if !own && self.rng.chance(self.traits.oversize) {
            self.rng.range_usize(self.max + 1, self.max * 2 + 8)
        } else if !own && self.rng.chance(self.traits.near_limit) {
            self.rng
                .range_usize(self.max.saturating_sub(1), self.max + 1)
        } else {
            frame + self.rng.range_usize(0, 60)
        };
        let mut line = head.into_bytes();
        line.extend_from_slice(&padding(&mut self.rng, target.saturating_sub(frame)));
        line.extend_from_slice(tail.as_bytes());
        line
    }

    fn notify(&mut self) {
        self.seq += 1;
        let pad = self.rng.range_usize(0, 40);
        let mut line = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"child":{},"seq":{},"data":""#,
            self.child.0, self.seq
        )
        .into_bytes();
        line.extend_from_slice(&padding(&mut self.rng, pad));
        line.extend_from_slice(br#""}}"#);
        let kind = if line.len() > self.max {
            ChildKind::Dropped
        } else {
            ChildKind::Forward
        };
        self.write(line, kind, Vec::new());
    }

    fn noise(&mut self) {
        let n = self.child.0;
        let line = match self.rng.below(4) {
            0 => format!("sim-server {n} v0.1 ready on stdio"),
            1 => format!(r#"{{"type":"heartbeat","child":{n}}}"#),
            2 => format!(r#"{{"id":{n},"note":"no method, no result"}}"#),
            _ => "Traceback (most recent call last): [not JSON]".to_owned(),
        };
        self.write(line.into_bytes(), ChildKind::Dropped, Vec::new());
    }

    fn write(&mut self, content: Vec<u8>, kind: ChildKind, answers: Vec<String>) {
        if self.stdout.closed {
            return;
        }
        let crlf = self.rng.chance(self.traits.crlf);
        let start = self.stdout.written();
        self.stdout.write(&content);
        self.stdout.write(if crlf { b"\r\n" } else { b"\n" });
        self.lines.push(ChildLine {
            content,
            kind,
            answers,
            start,
            end: self.stdout.written(),
            delivered_step: None,
        });
    }

    /// Records which lines are now complete on the relay's side.
    pub fn mark_delivered(&mut self, step: u64) {
        let taken = self.stdout.taken();
        while let Some(l) = self.lines.get_mut(self.delivered_upto) {
            if l.end > taken {
                break;
            }
            l.delivered_step = Some(step);
            self.delivered_upto += 1;
        }
    }
}
