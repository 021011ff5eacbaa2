//! What a family of runs looks like: how many clients, what they send, which faults happen
//! and how often. Each test file picks a profile; the seed picks everything else.

use crate::jsonrpc::LineMix;
use crate::rng::Rng;
use mcp_relay_core::{Config, HttpConfig, RestartPolicy};
use std::time::Duration;

/// Probabilities are per mille unless said otherwise.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Connections in a run (inclusive range).
    pub conns: (usize, usize),
    /// Lines each client writes (inclusive range).
    pub lines: (usize, usize),
    pub mix: LineMix,
    /// Candidates for `Config::max_message_size` (at least 128: the malformed lines the
    /// clients write must fit).
    pub max_message_size: Vec<usize>,
    pub max_buffered: Vec<usize>,
    /// Candidates for `Config::cut_through_from`: small ones make most lines (malformed,
    /// oversize and heartbeat-sized ones too) go on before their end.
    pub cut_through_from: Vec<usize>,
    pub grace_ms: Vec<u64>,
    /// Candidates for `Config::drain_timeout`; empty: its default (no draw, so that the
    /// other profiles' runs stay as they were).
    pub drain_ms: Vec<u64>,
    pub restart: Vec<RestartPolicy>,
    pub restart_delay_ms: Vec<u64>,
    pub max_restarts: Vec<u32>,
    /// `None`: no liveness probes.
    pub ping_interval_ms: Vec<Option<u64>>,
    /// At least a few hundred milliseconds: a child that is merely slow must not look hung.
    pub ping_timeout_ms: Vec<u64>,
    pub heartbeat_interval_ms: Vec<u64>,
    pub max_in_flight: Vec<usize>,
    /// Children started ahead of need (`Config::prespawn`).
    pub prespawn: Vec<usize>,
    /// Largest chunk the driver reads at once.
    pub max_chunk: usize,

    // Children.
    pub spawn_fail: u32,
    pub stubborn: u32,
    pub banner: u32,
    pub slow_stdin: u32,
    pub crash: u32,
    pub close_stdout: u32,
    /// The child stops reading and answering (it hangs) at a random moment.
    pub hang: u32,
    pub grandchild: u32,
    pub child_noise: u32,
    pub child_notify: u32,
    pub child_oversize: u32,
    pub child_near_limit: u32,
    pub child_crlf: u32,
    /// Candidates (drawn once per run) for the per mille of non-JSON lines a child answers
    /// with an `"id": null` parse error, as SDK servers do (the only such lines it reads are
    /// lines the relay cut short).
    pub child_parse_error: Vec<u32>,

    // Clients.
    pub client_reset: u32,
    pub client_quit: u32,
    /// Per write the relay makes: the client then stops reading for a while.
    pub client_stall: u32,
    /// Longest stall, in milliseconds.
    pub stall_ms: u64,
    /// Longest wait (ms) after its last line before a client ends (waiting for answers).
    pub linger_ms: u64,

    // The operator.
    /// A graceful shutdown at a random moment while clients are still busy (otherwise it
    /// comes once every client is done).
    pub shutdown_early: u32,
    /// A second shutdown (immediate) after the first.
    pub shutdown_twice: u32,
    /// A connection accepted in the same instant as the shutdown (it must be closed).
    pub late_accept: u32,
    /// `handle_timeout` called when nothing is due (harmless by contract).
    pub spurious_timeout: u32,
}

impl Profile {
    /// Healthy peers, no faults: everything sent must arrive.
    pub fn healthy() -> Self {
        Profile {
            conns: (1, 4),
            lines: (0, 40),
            mix: LineMix {
                not_json: 0,
                invalid: 0,
                oversize: 0,
                near_limit: 0,
                batch: 80,
                notification: 150,
                cancel: 0,
                stray_response: 0,
                heartbeat: 0,
                setup: 50,
                crlf: 200,
                initialize: 700,
            },
            max_message_size: vec![512, 1000, 4096],
            max_buffered: vec![1, 64, 512, 4096, 1 << 20],
            cut_through_from: vec![Config::default().cut_through_from, 16, 40, 100, 400],
            drain_ms: Vec::new(),
            grace_ms: vec![100, 500, 2000, 5000],
            restart: vec![RestartPolicy::OnFailure],
            restart_delay_ms: vec![0, 10, 100],
            max_restarts: vec![5],
            ping_interval_ms: vec![None],
            ping_timeout_ms: vec![1000],
            heartbeat_interval_ms: vec![30_000],
            max_in_flight: vec![1024],
            prespawn: vec![0, 0, 1, 2],
            max_chunk: 4096,
            spawn_fail: 0,
            stubborn: 0,
            banner: 0,
            slow_stdin: 0,
            crash: 0,
            close_stdout: 0,
            hang: 0,
            grandchild: 0,
            child_noise: 0,
            child_notify: 100,
            child_oversize: 0,
            child_near_limit: 0,
            child_crlf: 200,
            child_parse_error: vec![0, 500, 1000],
            client_reset: 0,
            client_quit: 0,
            client_stall: 20,
            stall_ms: 300,
            linger_ms: 300,
            shutdown_early: 0,
            shutdown_twice: 0,
            late_accept: 0,
            spurious_timeout: 10,
        }
    }

    /// Everything at once.
    pub fn chaos() -> Self {
        Profile {
            conns: (1, 8),
            lines: (0, 40),
            mix: LineMix {
                not_json: 60,
                invalid: 50,
                oversize: 40,
                near_limit: 40,
                batch: 80,
                notification: 120,
                cancel: 30,
                stray_response: 30,
                heartbeat: 20,
                setup: 60,
                crlf: 250,
                initialize: 600,
            },
            max_message_size: vec![128, 200, 1000, 4096],
            max_buffered: vec![1, 64, 512, 4096, 1 << 20],
            drain_ms: Vec::new(),
            grace_ms: vec![0, 1, 30, 200, 1000, 5000],
            restart: vec![
                RestartPolicy::OnFailure,
                RestartPolicy::Always,
                RestartPolicy::Never,
            ],
            restart_delay_ms: vec![0, 5, 50, 300],
            max_restarts: vec![0, 1, 3, 5],
            ping_interval_ms: vec![None, Some(100), Some(1000), Some(30_000)],
            ping_timeout_ms: vec![300, 1000, 10_000],
            heartbeat_interval_ms: vec![200, 1000, 30_000],
            max_in_flight: vec![1, 4, 1024],
            prespawn: vec![0, 0, 0, 1, 3],
            spawn_fail: 80,
            stubborn: 150,
            banner: 200,
            slow_stdin: 100,
            crash: 100,
            close_stdout: 50,
            hang: 50,
            grandchild: 50,
            child_noise: 50,
            child_notify: 100,
            child_oversize: 30,
            child_near_limit: 30,
            child_crlf: 250,
            client_reset: 100,
            client_quit: 80,
            client_stall: 30,
            shutdown_early: 200,
            shutdown_twice: 150,
            late_accept: 100,
            spurious_timeout: 20,
            ..Profile::healthy()
        }
    }

    /// Malformed input from both sides: non-JSON, non-messages, oversize lines and lines at
    /// the limit, `\r\n`, stray responses, heartbeats; servers that print banners,
    /// tracebacks and answers too large for the relay.
    pub fn malformed() -> Self {
        let mut p = Profile::healthy();
        p.conns = (1, 6);
        p.mix.not_json = 120;
        p.mix.invalid = 100;
        p.mix.oversize = 80;
        p.mix.near_limit = 120;
        p.mix.stray_response = 50;
        p.mix.heartbeat = 30;
        p.mix.crlf = 400;
        p.max_message_size = vec![128, 200, 512, 1000];
        p.banner = 500;
        p.child_noise = 150;
        p.child_oversize = 100;
        p.child_near_limit = 100;
        p.child_crlf = 400;
        p
    }

    /// Slow and stalled readers on both sides, tiny queues, few requests in flight.
    pub fn backpressure() -> Self {
        let mut p = Profile::healthy();
        p.conns = (1, 6);
        p.lines = (10, 60);
        p.max_buffered = vec![1, 16, 128, 1024];
        p.max_in_flight = vec![1, 2, 8, 1024];
        p.max_chunk = 8192;
        p.slow_stdin = 400;
        p.client_stall = 150;
        p.stall_ms = 600;
        p.mix.batch = 150;
        p.child_notify = 400;
        p
    }

    /// Servers that crash, close stdout, hang or leave grandchildren holding their pipes;
    /// clients that reset or quit. No restarts, so each fault ends its session.
    pub fn crashes() -> Self {
        let mut p = Profile::chaos();
        p.restart = vec![mcp_relay_core::RestartPolicy::Never];
        p.spawn_fail = 0;
        p.crash = 300;
        p.close_stdout = 150;
        p.hang = 100;
        p.grandchild = 150;
        p.client_reset = 200;
        p.client_quit = 150;
        p.shutdown_early = 0;
        p.shutdown_twice = 0;
        p.ping_interval_ms = vec![Some(100), Some(1000)];
        p
    }

    /// Crashing and hanging servers under every restart policy, with clients that set up
    /// state (`initialize`, `logging/setLevel`, `resources/subscribe`) that replacements
    /// must get again.
    pub fn restarts() -> Self {
        let mut p = Profile::crashes();
        p.restart = vec![
            mcp_relay_core::RestartPolicy::OnFailure,
            mcp_relay_core::RestartPolicy::Always,
        ];
        p.restart_delay_ms = vec![0, 5, 50, 300];
        p.max_restarts = vec![1, 3, 5];
        p.mix.initialize = 900;
        p.mix.setup = 150;
        p.spawn_fail = 50;
        p.client_reset = 30;
        p.client_quit = 30;
        p.grandchild = 50;
        p.linger_ms = 1500;
        p
    }

    /// Servers that often fail to start.
    pub fn spawn_failures() -> Self {
        let mut p = Profile::chaos();
        p.spawn_fail = 500;
        p.shutdown_early = 50;
        p.shutdown_twice = 50;
        p
    }

    /// One or two shutdowns at any moment, connections racing them, stubborn servers.
    pub fn shutdowns() -> Self {
        let mut p = Profile::chaos();
        p.shutdown_early = 700;
        p.shutdown_twice = 400;
        p.late_accept = 300;
        p.stubborn = 300;
        p
    }

    /// Shutdowns with requests in flight and drain timeouts from none to longer than the
    /// runs: requests finish, or are cut off with an error that says the relay is stopping.
    pub fn drains() -> Self {
        let mut p = Profile::shutdowns();
        p.drain_ms = vec![0, 5, 50, 400, 30_000];
        p
    }

    /// Clients that ask for heartbeats, with relay heartbeats every 200 ms to 30 s.
    pub fn heartbeats() -> Self {
        let mut p = Profile::backpressure();
        p.mix.heartbeat = 150;
        p.heartbeat_interval_ms = vec![100, 200, 1000, 30_000];
        p.linger_ms = 2000;
        p
    }

    /// Servers that hang, read slowly or go quiet, probed every 100 ms to 1 s.
    pub fn liveness() -> Self {
        let mut p = Profile::crashes();
        p.hang = 300;
        p.crash = 50;
        p.close_stdout = 50;
        p.slow_stdin = 300;
        p.ping_interval_ms = vec![Some(50), Some(100), Some(1000)];
        p.ping_timeout_ms = vec![300, 1000];
        p.restart = vec![
            mcp_relay_core::RestartPolicy::Never,
            mcp_relay_core::RestartPolicy::OnFailure,
        ];
        p.linger_ms = 1500;
        p
    }

    /// Servers that ignore the end of their stdin (and often SIGTERM): every stop goes
    /// through the whole sequence.
    pub fn stubborn() -> Self {
        let mut p = Profile::chaos();
        p.stubborn = 800;
        p.crash = 0;
        p.hang = 0;
        p.close_stdout = 0;
        p.grace_ms = vec![0, 1, 50, 500, 2000];
        p
    }

    /// The TCP side of a run of HTTP sessions only: no TCP connections, no early shutdown;
    /// its children are drawn with the HTTP profile's traits.
    pub fn for_http(h: &HttpProfile) -> Self {
        Profile {
            conns: (0, 0),
            max_chunk: 8192,
            stubborn: h.stubborn,
            banner: h.banner,
            slow_stdin: h.slow_stdin,
            grandchild: h.grandchild,
            child_noise: h.child_noise,
            child_notify: 0,
            child_crlf: h.child_crlf,
            spawn_fail: h.spawn_fail,
            crash: h.crash,
            hang: h.hang,
            close_stdout: h.close_stdout,
            spurious_timeout: 0,
            ..Profile::healthy()
        }
    }

    /// Draws the relay's configuration for one run.
    pub fn config(&self, rng: &mut Rng) -> Config {
        let ms = Duration::from_millis;
        let restart_delay = ms(*rng.pick(&self.restart_delay_ms));
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        Config {
            max_message_size: *rng.pick(&self.max_message_size),
            max_buffered: *rng.pick(&self.max_buffered),
            max_in_flight: *rng.pick(&self.max_in_flight),
            shutdown_grace: ms(*rng.pick(&self.grace_ms)),
            server_label: "sim-server --stdio".into(),
            heartbeat_interval: ms(*rng.pick(&self.heartbeat_interval_ms)),
            ping_interval: rng.pick(&self.ping_interval_ms).map(ms),
            ping_timeout: ms(*rng.pick(&self.ping_timeout_ms)),
            restart: *rng.pick(&self.restart),
            restart_delay,
            max_restart_delay: restart_delay * 8,
            max_restarts: *rng.pick(&self.max_restarts),
            restart_window: ms(*rng.pick(&[500, 5_000, 60_000])),
            prespawn: *rng.pick(&self.prespawn),
            drain_timeout: if self.drain_ms.is_empty() {
                Config::default().drain_timeout
            } else {
                ms(*rng.pick(&self.drain_ms))
            },
            seed,
            ..Config::default()
        }
    }
}

/// What a family of Streamable HTTP runs ([`crate::http_sim::HttpSim`]) does. Probabilities
/// are per mille.
#[derive(Clone, Debug)]
pub struct HttpProfile {
    /// Sessions in a run (inclusive range).
    pub sessions: (usize, usize),
    /// Calls each session makes (inclusive range).
    pub calls: (usize, usize),
    /// Slow calls whose event stream the client drops (and resumes).
    pub drops: u32,
    /// Session 0 drops a long call's stream, never resumes it, and must expire.
    pub doomed: bool,
    pub session_timeout: Duration,
    /// Candidates for `Config::max_buffered`.
    pub max_buffered: Vec<usize>,
    /// Connections whose client reads slowly.
    pub slow_readers: u32,
    /// Connections whose client half-closes after its one request (it still reads).
    pub half_close: u32,
    /// Groups of calls preceded by a notification POSTed on its own connection.
    pub notify_posts: u32,
    /// In a 2025-03-26 session, groups of 2 to 4 calls sent as one JSON-RPC batch (one POST,
    /// sometimes with a notification inside), answered on that POST's stream.
    pub batches: u32,
    /// How long a client waits for a call's answer before it gives up and cancels it
    /// (`notifications/cancelled`), as SDK clients do (the TypeScript SDK's default is 60 s):
    /// a server that hangs where nothing probes it (`ping_interval` unset) answers nothing.
    pub call_timeout: Duration,

    // Children (the same [`crate::server::Server`] as the TCP runs').
    pub stubborn: u32,
    pub banner: u32,
    pub slow_stdin: u32,
    pub grandchild: u32,
    pub child_noise: u32,
    pub child_crlf: u32,
    /// Servers that fail to start, crash, hang or close their stdout (the session restarts
    /// them or ends; its client is told with -32003, -32000 or 404 and initializes anew).
    pub spawn_fail: u32,
    pub crash: u32,
    pub hang: u32,
    pub close_stdout: u32,
}

impl HttpProfile {
    /// 1 to 6 sessions, each initialized, then echo and slow calls with progress, some
    /// concurrent on connections of their own, some pipelined on one keep-alive connection,
    /// some sequential on one; bodies sometimes chunked; some sessions deleted at the end;
    /// marks from 1 KiB (below one answer) to 4 MiB; slow readers.
    pub fn sessions() -> Self {
        HttpProfile {
            sessions: (1, 6),
            calls: (1, 7),
            drops: 0,
            doomed: false,
            session_timeout: HttpConfig::default().session_timeout,
            max_buffered: vec![1024, 8 * 1024, 16 * 1024, 4 * 1024 * 1024],
            slow_readers: 200,
            half_close: 200,
            notify_posts: 200,
            batches: 300,
            call_timeout: Duration::from_secs(60),
            stubborn: 100,
            banner: 200,
            slow_stdin: 150,
            grandchild: 50,
            child_noise: 50,
            child_crlf: 200,
            spawn_fail: 0,
            crash: 0,
            hang: 0,
            close_stdout: 0,
        }
    }

    /// As [`HttpProfile::resumption`], with servers that crash (30%), hang (10%), close their
    /// stdout or fail to start, under every restart setting: in-flight calls get -32003, a
    /// session whose server cannot start gets -32000, a session given up answers 404, and the
    /// client initializes a new session.
    pub fn faults() -> Self {
        HttpProfile {
            spawn_fail: 100,
            crash: 300,
            hang: 100,
            close_stdout: 50,
            ..HttpProfile::resumption()
        }
    }

    /// Whether its servers fail at all.
    pub fn faulty(&self) -> bool {
        self.spawn_fail + self.crash + self.hang + self.close_stdout > 0
    }

    /// As [`HttpProfile::sessions`], and the client drops most slow calls' streams mid-way
    /// (end of file or reset), then resumes each with `GET /mcp` and `Last-Event-ID`.
    pub fn resumption() -> Self {
        HttpProfile {
            drops: 700,
            ..HttpProfile::sessions()
        }
    }

    /// A short `session_timeout`; session 0 abandons a long call and must expire, while the
    /// others (some reading slowly) must not.
    pub fn expiry() -> Self {
        HttpProfile {
            sessions: (1, 4),
            calls: (1, 5),
            drops: 300,
            doomed: true,
            session_timeout: Duration::from_secs(2),
            ..HttpProfile::sessions()
        }
    }

    /// Only small marks (1 KiB, 8 KiB) against answers up to 2 KB, with slow readers.
    pub fn small_buffers() -> Self {
        HttpProfile {
            max_buffered: vec![1024, 8 * 1024],
            ..HttpProfile::sessions()
        }
    }
}
