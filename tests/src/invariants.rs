//! The invariants, checked after every step ([`after_step`]) and at the end of a run
//! ([`at_end`]). Others are checked where the relay's outputs are performed (in
//! [`crate::sim`]: nothing is sent, closed, paused or signalled where it must not be, and the
//! stop sequence keeps time) and as bytes are handed out (in [`crate::model`]: delivery in
//! order, byte for byte, to the right peer only, and the relay's own errors).
//!
//! The numbers refer to the list in `tests/src/lib.rs`.

use crate::clock::Ms;
use crate::jsonrpc::ClientKind;
use crate::server::{ChildKind, ProcState};
use crate::sim::Sim;
use mcp_relay_core::{ExitStatus, RestartPolicy};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// After every step.
pub fn after_step(sim: &mut Sim) -> Result<(), String> {
    buffers_bounded(sim)?;
    output_given_up_fairly(sim)?;
    stop_sequence_on_time(sim)?;
    accepted_once(sim)?;
    immediate_shutdown_kills(sim)?;
    Ok(())
}

/// Invariant 3: `buffered(conn) <= buffer_bound()` for every connection.
fn buffers_bounded(sim: &mut Sim) -> Result<(), String> {
    let bound = sim.relay.buffer_bound();
    for conn in sim.conns.keys() {
        if let Some(b) = sim.relay.buffered(*conn) {
            sim.max_buffered_seen = sim.max_buffered_seen.max(b);
            if b > bound {
                return Err(format!(
                    "{conn}: the relay holds {b} bytes for this session, more than buffer_bound() \
                     = {bound} (invariant 3)"
                ));
            }
        }
    }
    Ok(())
}

/// When the relay gives up on a child's output after its exit (`shutdown_grace` later), the
/// output must really be stuck (a grandchild holds the pipe), not waiting in a pipe the
/// relay itself paused.
/// Which child it gave up on comes from the core's counter (`Stats::outputs_abandoned`), not
/// from log text (`Sim::given_up_on`).
fn output_given_up_fairly(sim: &Sim) -> Result<(), String> {
    for &child in &sim.cur.gave_up {
        let Some(ch) = sim.children.get(&child) else {
            continue;
        };
        // Fair: the output had `shutdown_grace` unpaused since the exit (or the last resume)
        // to reach its end.
        let unread = ch.server.stdout.pending();
        let grace = sim.config.shutdown_grace;
        let unpaused_since = ch.drv.resumed_at.filter(|_| ch.drv.paused_after_exit);
        let fair = !ch.drv.stdout_paused && unpaused_since.is_none_or(|r| sim.now() >= r + grace);
        if unread > 0 && !fair {
            return Err(format!(
                "the relay gave up on {child}'s output while {unread} bytes of it \
                 wait in its pipe, which the relay itself paused (paused now: {}, resumed at \
                 {:?}): the server's answers are lost",
                ch.drv.stdout_paused,
                ch.drv.resumed_at.map(Ms)
            ));
        }
    }
    Ok(())
}

/// The stop sequence: SIGTERM exactly `shutdown_grace` after stdin was closed, SIGKILL exactly
/// `shutdown_grace` after SIGTERM, unless the child exited. (Early or unexpected signals are
/// caught where the signal is performed; this catches late ones.)
fn stop_sequence_on_time(sim: &Sim) -> Result<(), String> {
    let now = sim.now();
    let grace = sim.config.shutdown_grace;
    for (id, ch) in &sim.children {
        if ch.drv.spawned_at.is_none() || ch.drv.exit_reported.is_some() || ch.drv.released {
            continue;
        }
        if let (Some(c), None, None) = (ch.stop.stdin_closed_at, ch.stop.term_at, ch.stop.kill_at) {
            if now > c + grace {
                return Err(format!(
                    "{id}: stdin closed at {} and no SIGTERM by {} (shutdown_grace {})",
                    Ms(c),
                    Ms(c + grace),
                    Ms(grace)
                ));
            }
        }
        if let (Some(t), None) = (ch.stop.term_at, ch.stop.kill_at) {
            if now > t + grace {
                return Err(format!(
                    "{id}: SIGTERM at {} and no SIGKILL by {} (shutdown_grace {})",
                    Ms(t),
                    Ms(t + grace),
                    Ms(grace)
                ));
            }
        }
    }
    Ok(())
}

/// Every accepted connection gets one child, or is closed at once during a shutdown.
fn accepted_once(sim: &Sim) -> Result<(), String> {
    let Some(conn) = sim.cur.accepted else {
        return Ok(());
    };
    let side = &sim.conns[&conn];
    if sim.shutdowns > 0 {
        if side.drv.open || !side.children.is_empty() {
            return Err(format!(
                "{conn} was accepted during a shutdown and not closed at once (children {:?})",
                side.children
            ));
        }
    } else if side.children.is_empty() || !side.drv.open {
        return Err(format!(
            "{conn} was accepted but got no child (or was closed)"
        ));
    }
    Ok(())
}

/// A second shutdown stops at once: every running child gets SIGKILL in that step, a child
/// still being spawned gets it the moment it is spawned, and every connection is closed.
fn immediate_shutdown_kills(sim: &mut Sim) -> Result<(), String> {
    if sim.immediate_step == Some(sim.step) {
        let mut spawning = Vec::new();
        for (id, ch) in &sim.children {
            if ch.drv.released
                || ch.drv.failed_step.is_some()
                || ch.drv.exit_reported.is_some()
                || ch.drv.cancelled_step.is_some()
            {
                continue;
            }
            if ch.drv.spawned_at.is_none() {
                spawning.push(*id);
            } else if ch.stop.kill_at.is_none() {
                return Err(format!(
                    "immediate shutdown: {id} is running and got no SIGKILL"
                ));
            }
        }
        sim.kill_on_spawn.extend(spawning);
        for (conn, side) in &sim.conns {
            if side.drv.open {
                return Err(format!("immediate shutdown left {conn} open"));
            }
        }
    }
    if sim.cur.input == Some("Spawned") {
        let child = sim.cur.child.expect("Spawned names its child");
        if sim.kill_on_spawn.contains(&child) && !sim.cur.kills.contains(&child) {
            return Err(format!(
                "{child} was still being spawned during an immediate shutdown; once spawned it \
                 must get SIGKILL at once, and it did not"
            ));
        }
    }
    Ok(())
}

/// At the end of a run (everything quiet after the last shutdown): nothing left behind
/// (invariant 7), and nothing owed went missing (completeness of invariants 1, 5 and 6).
pub fn at_end(sim: &Sim) -> Result<(), String> {
    if !sim.relay.is_finished() {
        return Err(format!(
            "the run went quiet but the relay is not finished (invariant 7): {:?}\n{}",
            sim.relay.stats(),
            describe(sim)
        ));
    }
    let stats = sim.relay.stats();
    if stats.sessions_open != 0 {
        return Err(format!(
            "the run went quiet with sessions left open (invariant 7): {stats:?}\n{}",
            describe(sim)
        ));
    }
    for (id, ch) in &sim.children {
        if ch.drv.spawned_at.is_some() {
            if ch.server.alive() {
                return Err(format!("{id} is still running at the end (invariant 7)"));
            }
            if ch.drv.exit_reported.is_none() {
                return Err(format!("{id} exited but its exit was never reported"));
            }
        }
        let started_or_settled = ch.drv.spawned_at.is_some()
            || ch.drv.failed_step.is_some()
            || ch.drv.cancelled_step.is_some();
        if !ch.drv.released && started_or_settled {
            return Err(format!("{id} was never released (invariant 7)"));
        }
    }
    for (conn, side) in &sim.conns {
        if side.drv.open {
            return Err(format!("{conn} is still open at the end (invariant 7)"));
        }
    }
    for conn in sim.conns.keys() {
        completeness(sim, *conn).map_err(|e| format!("{conn}: {e}"))?;
        restarts_happened(sim, *conn).map_err(|e| format!("{conn}: {e}"))?;
    }
    Ok(())
}

/// Nothing owed to a peer of this connection went missing, unless a fault excuses it.
fn completeness(sim: &Sim, conn: mcp_relay_core::ConnId) -> Result<(), String> {
    let side = &sim.conns[&conn];
    let (Some(&first), Some(&last)) = (side.children.first(), side.children.last()) else {
        return Ok(());
    };
    let m = &side.model;
    let sent = &side.client.sent;
    let lc = &sim.children[&last];
    // After the last child ended, the session may end and close the connection: what the
    // client sent from then on may go unanswered.
    let cut = [lc.drv.exit_reported.map(|(s, _)| s), lc.drv.failed_step]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX);
    let left_badly = m.broken_step.is_some() || m.aborted || m.silent_close_step.is_some();
    let cancelled = |id: &str| {
        sent.iter().any(|s| {
            s.delivered_step.is_some()
                && matches!(&s.line.kind, ClientKind::Forward { cancels: Some(c), .. } if c == id)
        })
    };

    // Invariant 6: a server that could not start; every request read up to the first answer
    // got -32000 naming the cause (checked as it was sent).
    let failed_step = sim.children[&first].drv.failed_step;
    if let (Some(failed_step), false) = (failed_step, left_badly) {
        let until = m.first_unavailable_step;
        for (id, owed) in &m.requests {
            let Some(d) = sent[owed.line].delivered_step else {
                continue;
            };
            // Without a request in flight the relay lingers `shutdown_grace` for the first one.
            let linger_end = sim.children[&first]
                .drv
                .failed_at
                .map(|f| f + sim.config.shutdown_grace);
            let at = sent[owed.line].delivered_at;
            let owed_answer = match until {
                Some(u) => d <= u,
                None => {
                    m.closed_step.is_none_or(|c| d < c)
                        && (d < failed_step || at.zip(linger_end).is_none_or(|(a, l)| a < l))
                }
            };
            if owed_answer && owed.answers.is_empty() && !cancelled(id) {
                return Err(format!(
                    "{first} could not start, and request {id} (client line {}) got no -32000 \
                     answer (invariant 6)",
                    owed.line
                ));
            }
        }
    }

    // Every request gets exactly one answer (at most one was checked as they were sent).
    if !left_badly {
        for (id, owed) in &m.requests {
            let Some(d) = sent[owed.line].delivered_step else {
                continue;
            };
            if owed.answers.is_empty() && d < cut && !cancelled(id) {
                return Err(format!(
                    "request {id} (client line {}, read at step {d}) never got an answer; every \
                     request gets exactly one",
                    owed.line
                ));
            }
        }
    }

    let closed_normally = m.closed_step.is_some() && !left_badly;
    if !closed_normally {
        return Ok(());
    }

    // Invariant 5: malformed lines read while the session still answered got their error.
    let owed: Vec<usize> = (0..sent.len())
        .filter(|&i| sent[i].line.kind.bad_line_code().is_some())
        .filter(|&i| sent[i].delivered_step.is_some_and(|s| s < cut))
        .collect();
    if m.bad_answered < owed.len() {
        let i = owed[m.bad_answered];
        return Err(format!(
            "client line {i} ({:?}) {} got no error (invariant 5)",
            sent[i].line.kind,
            crate::trace::Bytes(&sent[i].line.wire())
        ));
    }

    // Invariant 1, server → client: every JSON-RPC line the relay read from a server reached
    // the client, except from a server found hung, from a replacement before it was
    // re-initialized, and answers to cancelled requests.
    for (ci, child) in side.children.iter().enumerate() {
        let ch = &sim.children[child];
        let notice = m.restarted_notices.get(ci.wrapping_sub(1)).map(|(s, _)| *s);
        for (li, line) in ch.server.lines.iter().enumerate() {
            let Some(d) = line.delivered_step else {
                continue;
            };
            if line.kind != ChildKind::Forward {
                continue;
            }
            let forwarded = !m.skipped.contains(&(ci, li)) && (ci, li) < m.cursor();
            if forwarded {
                continue;
            }
            // A prespawned child's output before a session took it is dropped.
            let excused = ch
                .adopted
                .is_some_and(|(s, taken)| d <= s || line.start < taken)
                || ch.drv.hung_step.is_some_and(|h| d >= h)
                || ch.drv.gave_up_step.is_some_and(|g| d >= g)
                || (ci > 0 && notice.is_none_or(|n| d <= n))
                || line.answers.iter().any(|id| cancelled(id));
            if !excused {
                return Err(format!(
                    "{child} wrote {} (read by the relay at step {d}); it never reached the \
                     client (invariant 1)",
                    crate::trace::Bytes(&line.content)
                ));
            }
        }
    }
    Ok(())
}

/// A child that ended while its client was still there is replaced when the policy says so
/// and the budget allows.
fn restarts_happened(sim: &Sim, conn: mcp_relay_core::ConnId) -> Result<(), String> {
    let side = &sim.conns[&conn];
    let (Some(&first), Some(&last)) = (side.children.first(), side.children.last()) else {
        return Ok(());
    };
    let lc = &sim.children[&last];
    if first == last && lc.drv.failed_step.is_some() {
        // The very first start failed: the session ends at once.
        return Ok(());
    }
    let Some(finished) = sim.finished_at(last) else {
        return Ok(());
    };
    let failed = lc.drv.declared_hung
        || lc.drv.failed_step.is_some()
        || !matches!(lc.server.state, ProcState::Exited(ExitStatus::Code(0)));
    let wanted = match sim.config.restart {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => failed,
        RestartPolicy::Always => true,
    };
    let window = sim.config.restart_window;
    let recent = side
        .restart_decisions
        .iter()
        .filter(|t| finished.saturating_sub(**t) < window)
        .count() as u32;
    let delay = sim
        .config
        .restart_delay
        .checked_mul(1u32.checked_shl(recent).unwrap_or(u32::MAX))
        .unwrap_or(sim.config.max_restart_delay)
        .min(sim.config.max_restart_delay);
    let left = side
        .model
        .client_left_at
        .is_some_and(|t| t <= finished + delay);
    if wanted && recent < sim.config.max_restarts && !left {
        return Err(format!(
            "{last} ended at {} while its client was still there; --restart {:?} wants a \
             replacement after {} ({recent} restarts so far), and none was started",
            Ms(finished),
            sim.config.restart,
            Ms(delay)
        ));
    }
    Ok(())
}

/// A summary of what is left, for a stuck run.
fn describe(sim: &Sim) -> String {
    let mut out = String::new();
    for (conn, side) in &sim.conns {
        let _ = writeln!(
            out,
            "  {conn}: open={} paused={} queued={} children={:?} buffered={:?}",
            side.drv.open,
            side.drv.paused,
            side.drv.queue.len(),
            side.children,
            sim.relay.buffered(*conn)
        );
    }
    for (id, ch) in &sim.children {
        let _ = writeln!(
            out,
            "  {id}: {:?} spawned={:?} failed={:?} exit_reported={:?} released={} stdin_open={} \
             stdout(pending={} closed={} eof_seen={}) stderr(pending={} closed={} eof_seen={}) \
             holds={:?}",
            ch.server.state,
            ch.drv.spawned_at.map(Ms),
            ch.drv.failed_step,
            ch.drv.exit_reported.map(|(s, t)| (s, Ms(t))),
            ch.drv.released,
            ch.drv.stdin_open,
            ch.server.stdout.pending(),
            ch.server.stdout.closed,
            ch.server.stdout.eof_seen,
            ch.server.stderr.pending(),
            ch.server.stderr.closed,
            ch.server.stderr.eof_seen,
            ch.server.traits.holds,
        );
    }
    out
}

// ---- Streamable HTTP runs ([`HttpSim`]) ----
//
// Checked as the clients read (in `crate::http_sim`): (a) every message a child wrote is
// received at most once, each event stream's ids go 1, 2, 3… without a gap or a repeat,
// also across a resumption; (b) every request gets one response with the status owed (404
// for an expired or deleted session); (c) no message of one session reaches another's
// client; (d) after `handle_timeout(now)` the next deadline is later than now; (e) nothing
// is sent, paused or closed where it must not be; (g) each call of a JSON-RPC batch gets
// exactly one answer on its POST's stream (a batch of answers, or single ones in any order,
// or the relay's error per request), none of another request. Below: after each step, and
// at the end (answers counted per call, that is per request id).

/// A client whose connection the relay closed has read everything: it must not be
/// waiting for anything more.
pub fn http_after_step(sim: &Sim) -> Result<(), String> {
    // Invariant 3 over HTTP: what the relay holds for one connection (unparsed input, a body
    // being read, responses not yet written) stays within `buffer_bound()`.
    let bound = sim.relay.buffer_bound();
    for id in sim.http.conns.keys() {
        if let Some(b) = sim.relay.buffered(mcp_relay_core::ConnId(*id)) {
            if b > bound {
                return Err(format!(
                    "conn#{id}: the relay holds {b} bytes for this HTTP connection, more than \
                     buffer_bound() = {bound} (invariant 3)"
                ));
            }
        }
    }
    let bad =
        sim.http.conns.iter().find(|(_, cn)| {
            !cn.open && !cn.deaf && (!cn.pending.is_empty() || !cn.rx.buf.is_empty())
        });
    if let Some((id, cn)) = bad {
        return Err(format!(
            "the relay closed conn#{id} while its client waits for {} response(s) ({} bytes \
             unparsed)",
            cn.pending.len(),
            cn.rx.buf.len()
        ));
    }
    Ok(())
}

/// HTTP (a), (b), (f) at the end of a run: every call not abandoned answered exactly once,
/// every message a child wrote received exactly once, every request got its response, no
/// connection left open, every child stopped, reported and released, the relay finished.
pub fn http_at_end(sim: &Sim) -> Result<(), String> {
    let abandoned: BTreeSet<(usize, u64)> = sim
        .http
        .sessions
        .iter()
        .enumerate()
        .flat_map(|(s, sess)| {
            sess.calls
                .iter()
                .filter(|c| c.abandoned || c.failed || c.cancelled)
                .map(move |c| (s, c.id))
        })
        .collect();
    for (s, sess) in sim.http.sessions.iter().enumerate() {
        for (i, c) in sess.calls.iter().enumerate() {
            let excused = c.abandoned || c.failed || c.cancelled;
            if !c.abandoned && !c.done || !excused && c.answered != 1 {
                return Err(format!(
                    "s{s} call {i}: {} answers, done {}",
                    c.answered, c.done
                ));
            }
        }
    }
    for (tag, who) in &sim.http.emitted {
        let n = sim.http.seen.get(tag).copied().unwrap_or(0);
        if n != 1 && !abandoned.contains(who) {
            return Err(format!("message {tag} was received {n} times"));
        }
    }
    for (id, cn) in &sim.http.conns {
        if cn.open {
            return Err(format!("conn#{id} is still open at the end"));
        }
        if !cn.deaf && (!cn.pending.is_empty() || !cn.later.is_empty()) {
            return Err(format!("conn#{id}: requests without a response at the end"));
        }
    }
    if !sim.relay.is_finished() {
        return Err("the relay did not finish".into());
    }
    Ok(())
}
