//! Core bugs the simulation found, by name.
//!
//! Each one has a strict regression test (it fails until the bug is fixed). Random runs step
//! around them ([`crate::Tolerate`]) so that a known bug does not hide the next one: the
//! symptom is accepted, or the generator avoids the trigger. `SIM_STRICT=1` turns every
//! tolerance off.

/// Relay-made lines (errors for malformed lines, errors for every request in flight when a
/// server dies, heartbeat responses) are staged toward the client without backpressure, so
/// `buffered(conn)` exceeds `buffer_bound()` — without limit for a client that writes
/// malformed lines and does not read.
pub const RELAY_ERRORS_EXCEED_BOUND: &str = "relay-errors-exceed-bound";
/// One read of several lines is staged whole: a queue just under its mark takes a whole
/// read on top, not "one message", so `buffered(conn)` exceeds `buffer_bound()` whenever a
/// read is larger than `max_message_size` (the runtime reads 64 KiB at a time).
pub const READ_EXCEEDS_BOUND: &str = "multi-line-read-exceeds-bound";
/// After the first spawn failed, a notification (or a response) from the client ends the
/// linger (meant to wait for its first request, to say why) although nothing was answered:
/// the connection closes and the next request gets no answer.
pub const LINGER_ENDED_BY_NOTIFICATION: &str = "linger-ended-by-notification";
/// SIGTERM is timed from when the stop sequence was asked for, not from when the child's
/// stdin was actually closed: a child still reading queued input is terminated early.
pub const TERM_BEFORE_STDIN_CLOSED: &str = "term-before-stdin-closed";
/// After an immediate shutdown, a child whose spawn was still pending gets the graceful stop
/// sequence (SIGTERM after the grace, without its stdin being closed) instead of SIGKILL.
pub const NO_KILL_AFTER_IMMEDIATE: &str = "no-kill-for-child-spawned-after-immediate-shutdown";
/// A server whose stdout the relay paused (its client reads slowly) is declared hung when the
/// probe answer waits unread in the paused pipe.
pub const HANG_VERDICT_IGNORES_PAUSE: &str = "hang-verdict-ignores-own-pause";
/// A server that reads its stdin slowly (but steadily) is declared hung because the probe's
/// deadline starts when the probe is queued, while the probe still waits behind the input the
/// server is reading.
pub const HANG_VERDICT_PROBE_QUEUED: &str = "hang-verdict-while-probe-queued";
/// A heartbeat client is closed for silence while its heartbeats wait unread: in the socket
/// the relay itself paused, or in the relay's own backlog (a backlogged heartbeat is judged by
/// the time its bytes arrived).
pub const SILENCE_VERDICT_IGNORES_PAUSE: &str = "silence-verdict-ignores-own-pause";
/// After a server exits, the relay gives up on its stdout after `shutdown_grace` even when
/// the relay itself paused that stdout: the server's answers are replaced by -32003 errors.
pub const DRAIN_DEADLINE_IGNORES_PAUSE: &str = "drain-deadline-ignores-own-pause";
/// A line of exactly `max_message_size` bytes ending in `\r\n` is accepted when `\r\n` arrives
/// in one read, and rejected as oversize when the read ends between `\r` and `\n`.
pub const CRLF_AT_LIMIT: &str = "crlf-at-limit-depends-on-fragmentation";
/// With `shutdown_grace` 0, `poll_timeout()` after `handle_timeout(now)` is `now` (SIGKILL
/// is due at the same instant as SIGTERM, or SIGTERM for a stop begun in that timeout, and
/// each needs another call).
pub const ZERO_GRACE_DEADLINE: &str = "zero-grace-deadline-not-after-now";

/// A respawn of a prespawned child scheduled while the pool cannot fill (it gave up after
/// repeated failures, or a shutdown began) is never cleared: `pool_fill` returns early
/// without resetting `respawn_at`, so `poll_timeout()` stays in the past — a busy loop for
/// the rest of the relay's life (gave up) or of the drain (shutdown), and while tolerated the
/// random runs do not let prespawned children fail (the stuck deadline hides every other).
pub const POOL_RESPAWN_STUCK: &str = "prespawn-respawn-deadline-stuck-in-shutdown";
/// After an immediate shutdown, a prespawned child that had exited while its output was still
/// draining has its output abandoned but is never reaped, so it is never released.
pub const POOL_NOT_REAPED_AFTER_ABORT: &str =
    "prespawned-child-not-released-after-immediate-shutdown";

/// Lines the relay read but held back in the client framer's backlog (the server's queue was
/// loaded) are resumed when the session ends, after the client queue was already set to close:
/// their answers (-32000, or the error for a malformed line) are dropped, so requests the relay
/// read never get one.
pub const BACKLOG_DROPPED_AT_END: &str = "backlog-answers-dropped-at-session-end";

/// Lines in the client backlog are still processed after the connection is gone; a
/// backlogged heartbeat turns heartbeats back on for a closed client, `heartbeat_timeout`
/// returns early for a finished client while `poll_timeout` keeps offering the heartbeat
/// deadline: it stays in the past (a busy loop). Runs that meet it are skipped, not failed.
pub const HEARTBEAT_DEADLINE_STUCK: &str = "heartbeat-deadline-stuck-after-close";

/// The known bugs random runs tolerate. `RELAY_ERRORS_EXCEED_BOUND`, `READ_EXCEEDS_BOUND`
/// and `DRAIN_DEADLINE_IGNORES_PAUSE` were fixed in d3f85e9 and are no longer tolerated
/// (their regression tests now pass and guard the fix).
pub const ALL: &[&str] = &[
    LINGER_ENDED_BY_NOTIFICATION,
    TERM_BEFORE_STDIN_CLOSED,
    NO_KILL_AFTER_IMMEDIATE,
    HANG_VERDICT_IGNORES_PAUSE,
    HANG_VERDICT_PROBE_QUEUED,
    SILENCE_VERDICT_IGNORES_PAUSE,
    CRLF_AT_LIMIT,
    ZERO_GRACE_DEADLINE,
    POOL_RESPAWN_STUCK,
    POOL_NOT_REAPED_AFTER_ABORT,
    BACKLOG_DROPPED_AT_END,
    HEARTBEAT_DEADLINE_STUCK,
];
