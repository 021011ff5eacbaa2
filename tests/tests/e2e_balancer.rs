//! End to end: three relays behind a real load balancer (issue 14), HAProxy and open-source
//! nginx from the distribution's packages, each with its configuration from `deploy/` used as
//! shipped (only the ports rewritten).
//!
//! - 270 Streamable HTTP sessions (the official MCP Python SDK: initialize, the GET stream it
//!   opens, calls, progress, a sampling request from the server) and 30 legacy HTTP+SSE
//!   sessions through the balancer, all at once: every request of a session must reach the
//!   relay that created it. A request that reached another relay would get 404 (the SDK
//!   fails the session); the relays' own metrics must show no 404 and every relay serving
//!   sessions. 2026-07-28 (stateless) requests are spread over all three.
//! - A relay drained mid-run (SIGTERM): the call in flight on its session gets its answer, the
//!   session's next request is served, new sessions keep succeeding and none lands on it,
//!   and it exits 0 once its client ends the session.
//! - A relay killed mid-run: its sessions' requests get 404 (from another relay), a new
//!   session lands on a live relay, and the other relays' sessions do not notice.
//!
//! Needs `haproxy` and `nginx` (Debian packages: .ci/run installs them) and the Python SDK
//! 2.x virtual environment (tests/python/.venv-mcp2): the tests are `#[ignore]`d (run them
//! with `--include-ignored`, as CI does), and one run without its peers fails naming them.

mod http_support;

use http_support::{
    initialize_request, python_of, python_sdk_missing_of, run_bounded, skip, tests_dir, Conn,
    HttpRelay, Response, TempDir, DEADLINE, MCP_POST,
};
use serde_json::{json, Value};
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The Python client's own bound on its whole run; it is killed a little after it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);
/// 300 sessions in all through each balancer.
const SESSIONS: usize = 270;
const LEGACY_SESSIONS: usize = 30;
/// The tests take turns: the 300-session runs are most of two cores' work, and a balancer
/// must be alone on its port (HAProxy binds with SO_REUSEPORT: two would share one).
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Clone, Copy, Debug)]
enum Balancer {
    HAProxy,
    Nginx,
}

impl Balancer {
    fn program(self) -> &'static str {
        match self {
            Balancer::HAProxy => "haproxy",
            Balancer::Nginx => "nginx",
        }
    }

    fn shipped(self) -> PathBuf {
        let file = match self {
            Balancer::HAProxy => "haproxy.cfg",
            Balancer::Nginx => "nginx.conf",
        };
        tests_dir()
            .parent()
            .expect("the repository")
            .join("deploy")
            .join(file)
    }

    /// Where the program is, if it is installed (Debian puts both in /usr/sbin).
    fn path(self) -> Option<PathBuf> {
        ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(self.program()))
            .find(|p| p.is_file())
    }
}

/// A running balancer, stopped on drop.
struct Lb {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Drop for Lb {
    /// The whole process group: nginx's workers outlive a killed master otherwise.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group this test started for the balancer.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

impl Lb {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// Three relays behind a balancer of `kind`, this test's turn held.
struct Stage {
    relays: Vec<HttpRelay>,
    lb: Lb,
    front: u16,
    _turn: std::sync::MutexGuard<'static, ()>,
}

fn stage(kind: Balancer) -> Stage {
    let turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The balancer's port is held while the relays pick theirs, so that none takes it.
    let holder = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let front = holder.local_addr().expect("its address").port();
    let relays = relays(front);
    drop(holder);
    let lb = balancer(kind, front, &relays);
    Stage {
        relays,
        lb,
        front,
        _turn: turn,
    }
}

/// Three relays (`r1`, `r2`, `r3`) serving the demo server, accepting the balancer's Host.
fn relays(front: u16) -> Vec<HttpRelay> {
    (1..=3)
        .map(|i| {
            HttpRelay::builder()
                .demo()
                .args(["--instance-id", &format!("r{i}")])
                .args(["--allow-host", &format!("127.0.0.1:{front}")])
                .start()
        })
        .collect()
}

/// The shipped configuration with the test's ports.
fn configuration(kind: Balancer, front: u16, relays: &[HttpRelay]) -> String {
    let shipped = kind.shipped();
    let mut text = fs::read_to_string(&shipped)
        .unwrap_or_else(|e| panic!("reading {}: {e}", shipped.display()));
    text = text.replace("127.0.0.1:8080", &format!("127.0.0.1:{front}"));
    for (i, r) in relays.iter().enumerate() {
        text = text.replace(&format!("127.0.0.1:808{}", i + 1), &r.addr.to_string());
    }
    text
}

/// Starts the balancer in front of `relays` and waits until it passes requests.
fn balancer(kind: Balancer, front: u16, relays: &[HttpRelay]) -> Lb {
    let dir = TempDir::new(&format!("lb-{}", kind.program()));
    let conf = dir.path().join("lb.conf");
    fs::write(&conf, configuration(kind, front, relays)).expect("writing the configuration");
    let program = kind.path().expect("the balancer is installed");
    let mut cmd = Command::new(program);
    match kind {
        Balancer::HAProxy => {
            cmd.arg("-db").arg("-f").arg(&conf);
        }
        Balancer::Nginx => {
            let d = dir.path().display().to_string();
            cmd.arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-g")
                .arg(format!("daemon off; pid {d}/nginx.pid;"));
        }
    }
    let log = fs::File::create(dir.path().join("stderr.log")).expect("a log file");
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", kind.program()));
    let lb = Lb {
        child,
        port: front,
        dir,
    };
    // Up once every relay is reachable through it (HAProxy's checks mark them up first).
    let deadline = Instant::now() + DEADLINE;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < relays.len() {
        if let Some(id) = try_open(&lb) {
            seen.insert(instance_of(&id).to_owned());
            // Nothing of the probe stays behind (a drained relay waits for its sessions).
            close(&lb, &id);
        } else {
            thread::sleep(Duration::from_millis(50));
        }
        assert!(
            Instant::now() < deadline,
            "{} did not pass sessions to every relay within {DEADLINE:?} (reached {seen:?}); its log:\n{}\n{}",
            kind.program(),
            fs::read_to_string(lb.dir.path().join("stderr.log")).unwrap_or_default(),
            lb.log()
        );
    }
    lb
}

fn missing(kind: Balancer) -> Option<String> {
    if kind.path().is_none() {
        return Some(format!(
            "{} is not installed (apt-get install {}, as .ci/run does)",
            kind.program(),
            if matches!(kind, Balancer::Nginx) {
                "nginx-light"
            } else {
                "haproxy"
            }
        ));
    }
    None
}

/// The relay a session id names (`r2.` → `r2`).
fn instance_of(id: &str) -> &str {
    id.split('.').next().unwrap_or_default()
}

fn post(lb: &Lb, session: Option<&str>, body: &Value) -> Response {
    let mut conn = Conn::connect(lb.addr());
    conn.set_read_timeout(DEADLINE);
    conn.post_mcp(session, body)
}

/// Initializes a session through the balancer: its id, if it got one.
fn try_open(lb: &Lb) -> Option<String> {
    std::net::TcpStream::connect(lb.addr()).ok()?;
    let resp = post(lb, None, &initialize_request("2025-06-18"));
    (resp.status() == 200)
        .then(|| resp.header("mcp-session-id").map(str::to_owned))
        .flatten()
}

/// Ends a session through the balancer, as an SDK client does when it closes.
fn close(lb: &Lb, id: &str) {
    let mut conn = Conn::connect(lb.addr());
    conn.set_read_timeout(DEADLINE);
    let headers = [
        ("Mcp-Session-Id", id),
        ("MCP-Protocol-Version", "2025-06-18"),
    ];
    let resp = conn.request("DELETE", "/mcp", &headers, b"");
    assert!(resp.status() < 300, "DELETE {id}: {}", resp.text());
}

fn open(lb: &Lb) -> String {
    try_open(lb).unwrap_or_else(|| panic!("no session through the balancer:\n{}", lb.log()))
}

fn tools_list(lb: &Lb, session: &str) -> u16 {
    post(
        lb,
        Some(session),
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .status()
}

/// A metric's value summed over its labels, from one relay's `/metrics` (asked with the
/// balancer's name as Host: the only one the relays allow).
fn metric(relay: &HttpRelay, front: u16, name: &str, label: Option<&str>) -> u64 {
    let mut conn = Conn::connect(relay.addr);
    let host = format!("127.0.0.1:{front}");
    let resp = conn.request("GET", "/metrics", &[("Host", &host)], b"");
    assert_eq!(resp.status(), 200, "/metrics: {}", resp.text());
    let text = resp.text();
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with(['{', ' '])
                && label.is_none_or(|want| l.contains(want))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// 300 SDK sessions and 30 legacy ones through the balancer, then stateless requests.
fn sessions_stay_on_their_relay(kind: Balancer) {
    let test = format!("{kind:?}: sessions_stay_on_their_relay");
    if let Some(why) = missing(kind).or_else(|| python_sdk_missing_of(2)) {
        return skip(&test, &why);
    }
    // (`_turn` bound, not `..`: the turn is held to the end.)
    let Stage {
        relays,
        lb,
        front,
        _turn,
    } = stage(kind);
    let before: u64 = relays
        .iter()
        .map(|r| metric(r, front, "mcp_relay_sessions_created_total", None))
        .sum();

    let plan = json!([
        {"label": "streamable", "url": lb.url("/mcp"), "sessions": SESSIONS,
         "calls": [
             {"name": "echo", "arguments": {"message": "lb-{s}-{c}"}},
             {"name": "slow", "arguments": {"steps": 3, "interval_ms": 10}, "progress": true},
             {"name": "sample", "arguments": {"prompt": "p-{s}"}},
         ]},
        {"label": "legacy", "url": lb.url("/sse"), "transport": "sse", "sessions": LEGACY_SESSIONS,
         "calls": [{"name": "echo", "arguments": {"message": "legacy-{s}"}}]},
    ]);
    let ran = run_bounded(
        Command::new(python_of(2))
            .arg(tests_dir().join("python").join("servers_sdk_client.py"))
            .args(["--plan", &plan.to_string()])
            .args(["--timeout", &CLIENT_TIMEOUT.as_secs().to_string()]),
        CLIENT_TIMEOUT + Duration::from_secs(15),
    )
    .unwrap_or_else(|| panic!("{test}: cannot start the Python client"));
    let lines: Vec<Value> = ran
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let failed: Vec<&Value> = lines.iter().filter(|l| l.get("error").is_some()).collect();
    assert!(
        ran.ok() && failed.is_empty() && lines.len() == SESSIONS + LEGACY_SESSIONS,
        "{test}: {} of {} sessions failed ({}): {:#?}\nstderr (tail): {}\nbalancer log:\n{}",
        failed.len(),
        lines.len(),
        ran.status,
        &failed[..failed.len().min(5)],
        tail(&ran.stderr, 40),
        lb.log()
    );
    for line in &lines {
        let s = line["session"].as_u64().expect("a session number");
        let results = line["results"].as_array().expect("results");
        let texts: Vec<&str> = results.iter().filter_map(|r| r["text"].as_str()).collect();
        if line["label"] == "legacy" {
            assert_eq!(texts, [format!("legacy-{s}")], "{line}");
            continue;
        }
        assert_eq!(
            texts.first().copied(),
            Some(&*format!("lb-{s}-0")),
            "{line}"
        );
        assert_eq!(results[1]["progress"], 3, "progress of session {s}: {line}");
        assert!(
            texts.get(2).is_some_and(|t| t.contains(&format!("p-{s}"))),
            "sampling in session {s}: {line}"
        );
    }
    eprintln!(
        "{test}: {} sessions in {:.1} s",
        lines.len(),
        ran.took.as_secs_f64()
    );

    // The relays saw every session, each created where it was served, and no request for a
    // session another relay holds (that would be a 404).
    let per_relay: Vec<u64> = relays
        .iter()
        .map(|r| metric(r, front, "mcp_relay_sessions_created_total", None))
        .collect();
    let wrong: u64 = relays
        .iter()
        .map(|r| {
            metric(
                r,
                front,
                "mcp_relay_http_responses_total",
                Some("status=\"404\""),
            )
        })
        .sum();
    assert_eq!(
        per_relay.iter().sum::<u64>() - before,
        (SESSIONS + LEGACY_SESSIONS) as u64,
        "{test}: sessions per relay {per_relay:?}"
    );
    assert!(
        per_relay.iter().all(|n| *n > 10),
        "{test}: every relay serves sessions: {per_relay:?}"
    );
    assert_eq!(wrong, 0, "{test}: requests routed to the wrong relay");
    eprintln!("{test}: sessions per relay {per_relay:?}; requests routed to the wrong relay: 0");

    // 2026-07-28 requests need no affinity: they are spread over all three.
    for i in 0..30 {
        let body = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": format!("modern-{i}")},
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {}}}});
        let mut conn = Conn::connect(lb.addr());
        conn.set_read_timeout(DEADLINE);
        let mut headers: Vec<(&str, &str)> = MCP_POST.to_vec();
        headers.extend([
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "echo"),
        ]);
        let resp = conn.request("POST", "/mcp", &headers, body.to_string().as_bytes());
        assert_eq!(resp.status(), 200, "{test}: stateless {i}: {}", resp.text());
        assert!(
            resp.text().contains(&format!("modern-{i}")),
            "{}",
            resp.text()
        );
    }
    for (i, r) in relays.iter().enumerate() {
        assert!(
            r.log_text().contains("stateless#1"),
            "{test}: relay r{} served no stateless request:\n{}",
            i + 1,
            r.log_text()
        );
    }
}

/// A relay killed mid-run loses its own sessions only.
fn a_killed_relay_loses_only_its_sessions(kind: Balancer) {
    let test = format!("{kind:?}: a_killed_relay_loses_only_its_sessions");
    if let Some(why) = missing(kind) {
        return skip(&test, &why);
    }
    let Stage {
        mut relays,
        lb,
        _turn,
        ..
    } = stage(kind);
    // A session on each relay.
    let mut on: std::collections::BTreeMap<String, String> = Default::default();
    let deadline = Instant::now() + DEADLINE;
    while on.len() < 3 {
        let id = open(&lb);
        on.entry(instance_of(&id).to_owned()).or_insert(id);
        assert!(Instant::now() < deadline, "sessions landed on {on:?} only");
    }
    let victim = relays.remove(0);
    // SAFETY: kill(2) on the relay this test started and still holds.
    unsafe {
        libc::kill(victim.pid(), libc::SIGKILL);
    }
    // Its session is gone: another relay answers 404, and the client starts anew there.
    let status = tools_list(&lb, &on["r1"]);
    assert_eq!(status, 404, "{test}: r1's session after r1 died");
    for _ in 0..10 {
        let id = open(&lb);
        assert_ne!(
            instance_of(&id),
            "r1",
            "{test}: a new session on the dead relay"
        );
    }
    for r in ["r2", "r3"] {
        assert_eq!(tools_list(&lb, &on[r]), 200, "{test}: {r}'s session");
    }
    drop(victim);
}

/// A relay drained mid-run finishes its sessions' requests and gets no new session.
fn a_drained_relay_finishes_its_sessions(kind: Balancer) {
    let test = format!("{kind:?}: a_drained_relay_finishes_its_sessions");
    if let Some(why) = missing(kind) {
        return skip(&test, &why);
    }
    let Stage {
        mut relays,
        lb,
        _turn,
        ..
    } = stage(kind);
    let mut on: std::collections::BTreeMap<String, String> = Default::default();
    let mut opened = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while on.len() < 3 {
        let id = open(&lb);
        opened.push(id.clone());
        on.entry(instance_of(&id).to_owned()).or_insert(id);
        assert!(Instant::now() < deadline, "sessions landed on {on:?} only");
    }
    let r1 = on["r1"].clone();
    thread::scope(|scope| {
        // A 3 s call on r1's session, SIGTERM half a second into it.
        let call = scope.spawn(|| {
            let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "slow", "arguments": {"steps": 6, "interval_ms": 500}}});
            let resp = post(&lb, Some(&r1), &body);
            (resp.status(), resp.text())
        });
        thread::sleep(Duration::from_millis(500));
        relays[0].signal(libc::SIGTERM);
        // (From the moment it acts on the signal: a request that crossed it is not new.)
        relays[0].wait_log("shutting down", DEADLINE);
        // New sessions keep coming through the balancer: none fails, none lands on r1.
        let mut placed = std::collections::BTreeMap::<String, usize>::new();
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            let resp = post(&lb, None, &initialize_request("2025-06-18"));
            assert_eq!(resp.status(), 200, "{test}: a new session: {}", resp.text());
            let id = resp.header("mcp-session-id").unwrap_or_default().to_owned();
            *placed.entry(instance_of(&id).to_owned()).or_default() += 1;
            thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !placed.contains_key("r1"),
            "{test}: new sessions placed on the draining relay: {placed:?}"
        );
        // r1's session is still served while its relay drains.
        assert_eq!(
            tools_list(&lb, &r1),
            200,
            "{test}: r1's session while it drains"
        );
        let (status, text) = call.join().expect("the call's thread");
        assert_eq!(status, 200, "{test}: the call in flight: {text}");
        assert!(text.contains("done after 6 steps"), "{test}: {text}");
    });
    // Their clients end its sessions: the drained relay has nothing left, and exits 0.
    for id in opened.iter().filter(|id| instance_of(id) == "r1") {
        close(&lb, id);
    }
    let status = relays[0]
        .wait_exit(DEADLINE)
        .unwrap_or_else(|| panic!("{test}: r1 did not exit:\n{}", relays[0].log_text()));
    assert!(status.success(), "{test}: r1 exited {status:?}");
    for r in ["r2", "r3"] {
        assert_eq!(tools_list(&lb, &on[r]), 200, "{test}: {r}'s session");
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Each scenario with each balancer, as an interop test.
macro_rules! with_each_balancer {
    ($($haproxy:ident, $nginx:ident => $scenario:ident;)*) => {$(
        #[test]
        #[ignore = "interop: needs haproxy or nginx (and the Python SDK) as README's Tests section says; run with --include-ignored"]
        fn $haproxy() {
            $scenario(Balancer::HAProxy);
        }

        #[test]
        #[ignore = "interop: needs haproxy or nginx (and the Python SDK) as README's Tests section says; run with --include-ignored"]
        fn $nginx() {
            $scenario(Balancer::Nginx);
        }
    )*};
}

with_each_balancer! {
    haproxy_keeps_each_session_on_its_relay, nginx_keeps_each_session_on_its_relay
        => sessions_stay_on_their_relay;
    haproxy_a_killed_relay_loses_only_its_sessions, nginx_a_killed_relay_loses_only_its_sessions
        => a_killed_relay_loses_only_its_sessions;
    haproxy_a_drained_relay_finishes_its_sessions, nginx_a_drained_relay_finishes_its_sessions
        => a_drained_relay_finishes_its_sessions;
}
