//! Why a deadline is set: one value per kind of timer, so that "why did the relay wake up?"
//! has an answer that code can match on (and logs and the simulation can print).

use crate::Signal;
use std::fmt;

/// The reason for a deadline.
///
/// `as_str` gives the text the simulation and the logs have always used; its prefix names the
/// machine that set the deadline (`child:`, `session:`, `heartbeat:`, `liveness:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    // ---- a child process (`child.rs`, `server.rs`) ----
    /// The next step of the stop sequence is due: this signal, after the grace period.
    ChildStop(Signal),
    /// The child exited and its output is still open after the grace period.
    ChildOutputDrain,
    /// A stopping child read none of what was queued for its stdin for the stall limit.
    StopStall,

    // ---- a session (`session.rs`) ----
    /// Start the replacement server.
    SessionRestart,
    /// The replacement did not answer the replayed `initialize` in time.
    ReplayTimeout,
    /// Close a connection no server will serve (it was given time to say something).
    LingerClose,
    /// Send the client its next heartbeat.
    HeartbeatSend,
    /// The client that asked for heartbeats has been silent too long.
    HeartbeatSilence,
    /// A serving server has not read its stdin for the stall limit.
    StdinStall,
    /// The server has been quiet: probe it.
    ProbeSend,
    /// The probe was not answered in time.
    ProbeTimeout,
    /// A TCP client has said nothing and waited for nothing for `--idle-timeout`.
    IdleClose,
    /// Requests still in flight when the relay began draining (or a client half-closed)
    /// had `--drain-timeout` to finish: the server's stdin closes now.
    DrainTimeout,
    /// A client request got no answer within `--request-timeout`.
    RequestTimeout,

    // ---- the HTTP server (`http/`) ----
    /// A request head or body must arrive, or an idle keep-alive connection closes.
    HttpConnection,
    /// A session with no open stream expires (`--session-timeout`).
    HttpSessionIdle,
    /// Open event streams get a `:` comment.
    SseKeepalive,
    /// A stateless request waits for a pool child resting after a cancellation.
    PoolRest,
    /// The requests a stateless child sent the client are gathered: they go out as one
    /// `input_required` answer.
    StatelessInputRound,
    /// A request answered with `input_required` got no retry within `--session-timeout`.
    StatelessRetryWait,
    /// A queued stateless request may take the place of a request held for its retry.
    StatelessEvict,

    // ---- a remote server (`remote/`) ----
    /// A connection to the remote is not established within `--connect-timeout`.
    RemoteConnect,
    /// An idle keep-alive connection to the remote is closed.
    RemoteIdle,
    /// An event stream is reopened (resumed) after the remote's `retry:` delay.
    RemoteRetry,
    /// A stopping remote session is given up on (in-flight answers, then `DELETE`).
    RemoteStop,
    /// Requests held for an unreachable remote waited `--connect-timeout`: they are answered.
    RemoteHeld,

    // ---- the prespawn pool (`pool.rs`) ----
    /// Start a prespawned child in place of one taken or lost.
    PrespawnReplace,

    // ---- a configured server (`served.rs`) ----
    /// A server a reload left out had `--retire-timeout` for its sessions to end: they are
    /// drained.
    RetiredDrain,
}

impl Timer {
    /// The reason as text, byte for byte what it has always been.
    pub fn as_str(self) -> &'static str {
        match self {
            Timer::ChildStop(Signal::Term) => "child: SIGTERM after grace",
            Timer::ChildStop(Signal::Kill) => "child: SIGKILL after grace",
            Timer::ChildOutputDrain => "child: output still open after exit",
            Timer::StopStall => "child: stdin not read while stopping",
            Timer::SessionRestart => "session: start the replacement child",
            Timer::ReplayTimeout => "session: replacement did not answer initialize",
            Timer::LingerClose => "session: close a connection no server will serve",
            Timer::HeartbeatSend => "heartbeat: send",
            Timer::HeartbeatSilence => "heartbeat: client silent",
            Timer::StdinStall => "liveness: server not reading stdin",
            Timer::ProbeSend => "liveness: send a probe",
            Timer::ProbeTimeout => "liveness: probe unanswered",
            Timer::IdleClose => "session: close an idle client",
            Timer::DrainTimeout => "session: stop waiting for requests in flight (drain)",
            Timer::RequestTimeout => "session: a request got no answer in time",
            Timer::HttpConnection => "http: request or idle timeout",
            Timer::HttpSessionIdle => "http: session idle",
            Timer::SseKeepalive => "http: SSE keep-alive",
            Timer::PoolRest => "http: a pool child's rest ends",
            Timer::StatelessInputRound => "http: a stateless request's input round is gathered",
            Timer::StatelessRetryWait => "http: no retry came for an input_required answer",
            Timer::StatelessEvict => "http: a held request may give way to a queued one",
            Timer::RemoteConnect => "remote: connection not established in time",
            Timer::RemoteIdle => "remote: close an idle connection",
            Timer::RemoteRetry => "remote: reopen an event stream",
            Timer::RemoteStop => "remote: stop given up on",
            Timer::RemoteHeld => "session: requests waited too long for the remote",
            Timer::PrespawnReplace => "prespawn: replace a child",
            Timer::RetiredDrain => "server: retired sessions drained",
        }
    }
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulation sorts deadlines by the machine that set them, from the text's prefix.
    #[test]
    fn each_reason_names_its_machine() {
        let cases = [
            (Timer::ChildStop(Signal::Term), "child:"),
            (Timer::ChildStop(Signal::Kill), "child:"),
            (Timer::ChildOutputDrain, "child:"),
            (Timer::StopStall, "child:"),
            (Timer::SessionRestart, "session:"),
            (Timer::ReplayTimeout, "session:"),
            (Timer::LingerClose, "session:"),
            (Timer::HeartbeatSend, "heartbeat:"),
            (Timer::HeartbeatSilence, "heartbeat:"),
            (Timer::StdinStall, "liveness:"),
            (Timer::ProbeSend, "liveness:"),
            (Timer::ProbeTimeout, "liveness:"),
        ];
        for (timer, prefix) in cases {
            assert!(timer.as_str().starts_with(prefix), "{timer}");
            assert_eq!(timer.to_string(), timer.as_str());
        }
    }
}
