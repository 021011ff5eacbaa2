//! What each connection's peers must see, checked as the relay hands bytes out.
//!
//! The checks hold after every step:
//!
//! * Toward the children: the lines the client wrote reach the session's children in order,
//!   each at most once and byte for byte; the only gaps are at a change of child (what the
//!   dead child's queue held is lost, and its requests are answered by the relay). Lines the
//!   relay writes itself (probes, replayed setup) carry its own ids.
//! * Toward the client: each line is either one its own servers wrote (in their order,
//!   skipping some), or one the relay made: an error answering the next malformed line, an
//!   error answering a request, a heartbeat response, a restart notice.
//! * Every client request is answered at most once, and only after the relay read it.
//!
//! Completeness (everything owed arrived) can only be judged at the end of a run; see
//! [`crate::invariants::at_end`].

use crate::client::Client;
use crate::jsonrpc::{classify_to_client, is_relay_line, ClientKind, RelayError, ToClient};
use crate::server::{ChildKind, Server};
use crate::trace::Bytes;
use mcp_relay_core::ChildId;
use std::collections::BTreeMap;

/// A client request and the answers it got.
#[derive(Debug)]
pub struct Owed {
    /// Index of the client line that carried it.
    pub line: usize,
    /// Who answered it: `server` or the relay's error code and message.
    pub answers: Vec<String>,
}

#[derive(Debug, Default)]
pub struct ConnModel {
    /// Indexes of the client's forwardable lines, in order.
    pub fwd: Vec<usize>,
    /// How many of `fwd` were handed to a child, or passed over at a change of child.
    pub fwd_done: usize,
    /// Client lines handed to a child, with that child.
    pub to_children: Vec<(usize, ChildId)>,
    /// Lines the relay wrote to the children itself.
    pub relay_lines_to_children: usize,
    last_child_fed: Option<ChildId>,
    /// Every request the client sent, by raw id.
    pub requests: BTreeMap<String, Owed>,
    next_bad: usize,
    /// Malformed client lines answered (always the first ones, in order).
    pub bad_answered: usize,
    /// Next line of the session's servers that may reach the client: (child index, line).
    cursor: (usize, usize),
    /// Lines of the servers passed over (not forwarded): (child index, line).
    pub skipped: Vec<(usize, usize)>,
    pub forwarded: usize,
    pub heartbeat_responses: usize,
    /// Steps at which a restart notice reached the client, with its reason.
    pub restarted_notices: Vec<(u64, String)>,
    pub first_unavailable_step: Option<u64>,

    // Steps at which something happened that may excuse a loss.
    pub eof_step: Option<u64>,
    pub broken_step: Option<u64>,
    pub drain_step: Option<u64>,
    pub closed_step: Option<u64>,
    /// The relay closed the connection because the client went silent (heartbeats).
    pub silent_close_step: Option<u64>,
    /// An immediate shutdown happened while the connection was open.
    pub aborted: bool,
    /// When the client left (end of file, reset, shutdown), as far as the relay knows.
    pub client_left_at: Option<std::time::Duration>,

    // Cut-through: sends may end mid-line; complete lines are checked.
    /// Bytes sent toward a child after its last newline, and that child.
    child_partial: Vec<u8>,
    child_partial_of: Option<ChildId>,
    /// Bytes sent toward the client after its last newline.
    client_partial: Vec<u8>,
    /// First client line a line cut short toward a child may have started as.
    cut_floor: usize,
    /// Lines the children got cut short (a proper prefix of a client line, then `\n`).
    pub cut_to_children: usize,
    /// Lines the client got cut short (a proper prefix of a server line, then `\n`).
    pub cut_to_client: usize,
}

/// `part` is a proper, non-empty prefix of `whole`.
fn proper_prefix(part: &[u8], whole: &[u8]) -> bool {
    !part.is_empty() && part.len() < whole.len() && whole.starts_with(part)
}

/// Joins what was sent before the last newline with `data`: the complete lines, and what
/// is left after the last newline (kept in `partial`).
fn complete_lines(partial: &mut Vec<u8>, data: &[u8]) -> Vec<u8> {
    partial.extend_from_slice(data);
    let end = partial
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let rest = partial.split_off(end);
    std::mem::replace(partial, rest)
}

impl ConnModel {
    /// Next line of the session's servers that may reach the client: (child index, line).
    pub fn cursor(&self) -> (usize, usize) {
        self.cursor
    }

    pub fn client_left(&mut self, at: std::time::Duration) {
        self.client_left_at.get_or_insert(at);
    }

    pub fn on_client_line(&mut self, idx: usize, kind: &ClientKind) {
        if let ClientKind::Forward { requests, .. } = kind {
            self.fwd.push(idx);
            for id in requests {
                self.requests.insert(
                    id.clone(),
                    Owed {
                        line: idx,
                        answers: Vec::new(),
                    },
                );
            }
        }
    }

    /// Toward a child: client lines in order (a gap only where a replacement starts), or
    /// the relay's own lines.
    pub fn check_send_child(
        &mut self,
        child: ChildId,
        replacement: bool,
        data: &[u8],
        client: &Client,
    ) -> Result<(), String> {
        if self.child_partial_of != Some(child) {
            // The start of a line toward a child that was then replaced is lost with it.
            self.child_partial.clear();
            self.child_partial_of = Some(child);
        }
        let lines = complete_lines(&mut self.child_partial, data);
        for line in lines.split_inclusive(|b| *b == b'\n') {
            let content = &line[..line.len() - 1];
            if is_relay_line(content) {
                self.relay_lines_to_children += 1;
                continue;
            }
            let first_for_child = self.last_child_fed != Some(child);
            let matches = |k: usize| client.sent[self.fwd[k]].line.content == content;
            let found = if first_for_child && replacement {
                (self.fwd_done..self.fwd.len()).find(|&k| matches(k))
            } else {
                (self.fwd_done < self.fwd.len() && matches(self.fwd_done)).then_some(self.fwd_done)
            };
            let Some(k) = found else {
                if self.cut_to_child(content, first_for_child && replacement, client) {
                    continue;
                }
                let next = self
                    .fwd
                    .get(self.fwd_done)
                    .map(|&i| format!("client line {i} {}", Bytes(&client.sent[i].line.content)));
                return Err(format!(
                    "{child} got a line that is not the next line its client sent (invariant 1): \
                     got {}, expected {}",
                    Bytes(content),
                    next.unwrap_or_else(|| "nothing".into())
                ));
            };
            let idx = self.fwd[k];
            if client.sent[idx].delivered_step.is_none() {
                return Err(format!(
                    "client line {idx} reached {child} before all of it reached the relay"
                ));
            }
            self.fwd_done = k + 1;
            self.cut_floor = idx + 1;
            self.to_children.push((idx, child));
            self.last_child_fed = Some(child);
        }
        Ok(())
    }

    /// A line a child got cut short (cut-through, then refused at its end): a proper prefix
    /// of the client line that came next (the next forwardable line, or a line the relay
    /// refuses before it), or for a replacement's first line of any later client line.
    fn cut_to_child(&mut self, content: &[u8], replacement: bool, client: &Client) -> bool {
        let last = match self.fwd.get(self.fwd_done) {
            Some(&i) if !replacement => i,
            _ => client.sent.len().saturating_sub(1),
        };
        let found = (self.cut_floor..=last)
            .take_while(|&i| i < client.sent.len())
            .find(|&i| proper_prefix(content, &client.sent[i].line.content));
        let Some(i) = found else {
            return false;
        };
        self.cut_floor = i + 1;
        self.cut_to_children += 1;
        true
    }

    /// Toward the client: see the module doc.
    pub fn check_send_client(
        &mut self,
        data: &[u8],
        client: &Client,
        servers: &[&Server],
        spawn_error: Option<&str>,
        step: u64,
    ) -> Result<(), String> {
        let lines = complete_lines(&mut self.client_partial, data);
        for line in lines.split_inclusive(|b| *b == b'\n') {
            let content = &line[..line.len() - 1];
            match classify_to_client(content) {
                ToClient::Server => self.server_line(content, client, servers)?,
                ToClient::Error(e) => self.relay_error(e, client, servers, spawn_error, step)?,
                ToClient::Batch(errors) => {
                    for e in errors {
                        if e.code != -32000 && e.code != -32003 {
                            return Err(format!(
                                "a batch of relay errors holds {e:?}: {}",
                                String::from_utf8_lossy(content)
                            ));
                        }
                        self.relay_error(e, client, servers, spawn_error, step)?;
                    }
                }
                ToClient::HeartbeatResponse => {
                    let asked = client.sent.iter().any(|s| {
                        s.line.kind == ClientKind::Heartbeat && s.delivered_step.is_some()
                    });
                    if !asked {
                        return Err(
                            "a heartbeat_response to a client that never sent a heartbeat".into(),
                        );
                    }
                    self.heartbeat_responses += 1;
                }
                ToClient::Restarted { reason } => {
                    if servers.len() < 2 {
                        return Err(format!(
                            "a serverRestarted notice ({reason:?}) but no replacement was started"
                        ));
                    }
                    self.restarted_notices.push((step, reason));
                }
                ToClient::Malformed(_) if self.cut_to_client(content, servers) => {}
                ToClient::Malformed(why) => {
                    return Err(format!(
                        "the relay made up a malformed line ({why}): {}",
                        Bytes(content)
                    ))
                }
            }
        }
        Ok(())
    }

    /// A line the client got cut short (cut-through, then dropped or never ended): a proper
    /// prefix of a line of its servers the cursor still allows (not an answer to the
    /// relay's own request), which with every line before it counts as not forwarded.
    fn cut_to_client(&mut self, content: &[u8], servers: &[&Server]) -> bool {
        let (ci, li) = self.cursor;
        let mut found = None;
        'search: for (c, server) in servers.iter().enumerate().skip(ci) {
            let from = if c == ci { li } else { 0 };
            for (l, sl) in server.lines.iter().enumerate().skip(from) {
                if sl.kind != ChildKind::Own && proper_prefix(content, &sl.content) {
                    found = Some((c, l));
                    break 'search;
                }
            }
        }
        let Some((c, l)) = found else {
            return false;
        };
        for (cc, server) in servers.iter().enumerate().take(c + 1).skip(ci) {
            let from = if cc == ci { li } else { 0 };
            let to = if cc == c { l + 1 } else { server.lines.len() };
            self.skipped.extend((from..to).map(|x| (cc, x)));
        }
        self.cursor = (c, l + 1);
        self.cut_to_client += 1;
        true
    }

    /// A line that must be the next forwardable line of one of the session's servers.
    fn server_line(
        &mut self,
        content: &[u8],
        client: &Client,
        servers: &[&Server],
    ) -> Result<(), String> {
        let (ci, li) = self.cursor;
        let mut found = None;
        'search: for (c, server) in servers.iter().enumerate().skip(ci) {
            let from = if c == ci { li } else { 0 };
            for (l, sl) in server.lines.iter().enumerate().skip(from) {
                if sl.kind != ChildKind::Dropped && sl.content == content {
                    found = Some((c, l));
                    break 'search;
                }
            }
        }
        let Some((c, l)) = found else {
            if self.cut_to_client(content, servers) {
                return Ok(());
            }
            let next = servers
                .get(ci)
                .and_then(|s| s.lines.get(li))
                .map(|l| Bytes(&l.content).to_string());
            return Err(format!(
                "the client got a line that none of its own servers wrote, in this order \
                 (invariants 1 and 5): {}; next unforwarded line: {}",
                Bytes(content),
                next.unwrap_or_else(|| "none".into())
            ));
        };
        let sl = &servers[c].lines[l];
        match &sl.kind {
            ChildKind::Own => {
                return Err(format!(
                    "the answer of {} to the relay's own request reached the client: {}",
                    servers[c].child,
                    Bytes(content)
                ))
            }
            ChildKind::Lost { .. } => {
                return Err(format!(
                    "an oversize line of {} reached the client: {}",
                    servers[c].child,
                    Bytes(content)
                ))
            }
            _ => {}
        }
        if sl.delivered_step.is_none() {
            return Err(format!(
                "a line of {} reached the client before the relay read all of it",
                servers[c].child
            ));
        }
        // Everything passed over since the cursor was not forwarded.
        for (cc, server) in servers.iter().enumerate().take(c + 1).skip(ci) {
            let from = if cc == ci { li } else { 0 };
            let to = if cc == c { l } else { server.lines.len() };
            self.skipped.extend((from..to).map(|x| (cc, x)));
        }
        self.cursor = (c, l + 1);
        self.forwarded += 1;
        for id in &sl.answers {
            if self.requests.contains_key(id) {
                let who = format!("{}'s response", servers[c].child);
                self.answer(id, who, client)?;
            }
        }
        Ok(())
    }

    fn relay_error(
        &mut self,
        e: RelayError,
        client: &Client,
        servers: &[&Server],
        spawn_error: Option<&str>,
        step: u64,
    ) -> Result<(), String> {
        match e.code {
            -32700 | -32600 => self.bad_line(e, client),
            -32000 | -32003 => {
                let id = e.id.clone().ok_or_else(|| format!("{e:?} answers no id"))?;
                if let Some(cause) = spawn_error {
                    if e.code != -32000
                        || !e.message.contains(cause)
                        || !e.message.contains("could not start the server")
                    {
                        return Err(format!(
                            "the server could not start ({cause}), yet the relay answered {e:?} \
                             (invariant 6 wants -32000 naming the cause)"
                        ));
                    }
                }
                if e.code == -32000 {
                    self.first_unavailable_step.get_or_insert(step);
                }
                self.answer(&id, format!("relay {} {:?}", e.code, e.message), client)
            }
            -32001 => {
                let id = e.id.clone().ok_or_else(|| format!("{e:?} answers no id"))?;
                let lost = servers.iter().any(|s| {
                    s.lines.iter().any(|l| {
                        l.kind == (ChildKind::Lost { id: id.clone() }) && l.delivered_step.is_some()
                    })
                });
                if !lost {
                    return Err(format!("{e:?} answers no oversize response of the servers"));
                }
                self.answer(&id, format!("relay -32001 {:?}", e.message), client)
            }
            _ => Err(format!(
                "the relay sent an error with an unexpected code: {e:?}"
            )),
        }
    }

    /// Invariant 5: each error for a malformed line answers the next such line, in order.
    fn bad_line(&mut self, e: RelayError, client: &Client) -> Result<(), String> {
        let idx = (self.next_bad..client.sent.len())
            .find(|&i| client.sent[i].line.kind.bad_line_code().is_some())
            .ok_or_else(|| format!("error {e:?} answers no line the client sent (or one twice)"))?;
        let sent = &client.sent[idx];
        let kind = &sent.line.kind;
        let shown = Bytes(&sent.line.wire()).to_string();
        if sent.delivered_step.is_none() {
            return Err(format!(
                "client line {idx} {shown} was answered before all of it reached the relay"
            ));
        }
        let want = (kind.bad_line_code(), kind.bad_line_id());
        if (Some(e.code), e.id.as_deref()) != want {
            return Err(format!(
                "client line {idx} ({kind:?}) {shown} is owed error {:?} with id {:?} \
                 (invariant 5); the next error the relay sent was {e:?}",
                want.0, want.1
            ));
        }
        let text_ok = match kind {
            ClientKind::NotJson => e.message.starts_with("mcp-relay: parse error"),
            ClientKind::Oversize { .. } => e.message.contains("exceeds the limit"),
            _ => e.message.starts_with("mcp-relay: invalid request"),
        };
        if !text_ok {
            return Err(format!(
                "error for client line {idx} {shown} says {:?}",
                e.message
            ));
        }
        self.next_bad = idx + 1;
        self.bad_answered += 1;
        Ok(())
    }

    /// Records an answer to request `id`: at most one each, and only once it was read.
    fn answer(&mut self, id: &str, who: String, client: &Client) -> Result<(), String> {
        let owed = self.requests.get_mut(id).ok_or_else(|| {
            format!("an answer ({who}) for id {id}, which is no request of this client")
        })?;
        if client.sent[owed.line].delivered_step.is_none() {
            return Err(format!(
                "request {id} was answered ({who}) before it reached the relay"
            ));
        }
        if let Some(first) = owed.answers.first() {
            return Err(format!(
                "request {id} was answered twice: first by {first}, then by {who} (every request \
                 gets exactly one answer)"
            ));
        }
        owed.answers.push(who);
        Ok(())
    }
}
