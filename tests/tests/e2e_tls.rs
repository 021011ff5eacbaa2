//! TLS end to end (issue 12), with certificates made at test time by the `openssl` command
//! line (tests/tests/tls_support) and real clients and servers on the other side:
//!
//! 1. `--listen https://`: curl (initialize, tools/list, a call, /healthz; TLS 1.2 and 1.3,
//!    ALPN http/1.1; no trust without `--cacert`); each key format and certificate kind, and
//!    a full chain through an intermediate CA.
//! 2. The official SDKs over HTTPS: the Python SDK 2.x and 1.x (`SSL_CERT_FILE`, which httpx
//!    honours), the legacy `/sse` endpoint with 1.x, the TypeScript SDK
//!    (`NODE_EXTRA_CA_CERTS`).
//! 3. `--listen tls://`: newline-delimited JSON-RPC through `openssl s_client`.
//! 4. `--tls-client-ca`: a client certificate from that CA is required.
//! 5. Startup: each file mistake is one line and exit status 2; a certificate about to
//!    expire is warned about.
//! 6. The wrong protocol on a port: plain HTTP to an https:// listener (400, logged at most
//!    once a minute), TLS to an http:// one.
//! 7. Client mode (`--connect https://`): the Python SDK's stdio client through the relay to
//!    an https:// relay, `mcp-relay check` trusting `SSL_CERT_FILE`, and each verification
//!    failure as the error the local client gets; `--tls-insecure-skip-verify`.
//! 8. The Python SDK's own Streamable HTTP server behind uvicorn's TLS, reached in client mode.
//! 9. SIGHUP: a new certificate for new handshakes, sessions kept, bad files refused; and
//!    calls in a loop across several reloads, none lost.
//!
//! Needs `openssl` and `curl`; sections 2, 7 and 8 need the Python SDK virtual environments
//! (tests/python/.venv-mcp1 and .venv-mcp2, made by .ci/run) and `npm ci --prefix
//! tests/node`.
//!
//! The tests that need them are `#[ignore]`d, so that the test summary counts them (as
//! ignored) when they do not run; `cargo test -- --include-ignored` runs them (as .ci/run
//! does), and then a missing one fails the test, naming what to install.

mod common;
mod http_support;
mod tls_support;

use common::{read_proc, run_cli, CliOutput, StdioServer};
use http_support::{
    free_port, python_of, python_sdk_missing_of, relay_bin, run_bounded, show, skip, tests_dir,
    ts_sdk_missing, wait_for_port, Conn, HttpRelay, Ran, DEADLINE,
};
use serde_json::{json, Value};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};
use tls_support::{
    clean_env, curl, curl_post, date_from_now, listener_addr, presented_cert, replace_file, s,
    s_client_args, CertKey, KeyKind, Pki, Spec, Validity,
};

/// An SDK client's own bound on its run; the process is killed a little after it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The stdio driver's bound on each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Relays and requests
// ---------------------------------------------------------------------------------------

/// `mcp-relay --listen SCHEME://127.0.0.1:0 --tls-cert … --tls-key … --demo extra…`.
fn tls_relay(scheme: &str, cert: &CertKey, extra: &[&str]) -> HttpRelay {
    HttpRelay::builder()
        .listen(format!("{scheme}://127.0.0.1:0"))
        .demo()
        .args(["--tls-cert", s(&cert.cert), "--tls-key", s(&cert.key)])
        .args(extra)
        .start()
}

fn https_relay(cert: &CertKey) -> HttpRelay {
    tls_relay("https", cert, &[])
}

fn https_url(relay: &HttpRelay, path: &str) -> String {
    format!("https://{}{path}", relay.addr)
}

/// Whether the relay still runs (not gone, not a zombie).
fn alive(relay: &HttpRelay) -> bool {
    read_proc(relay.pid()).is_some_and(|p| p.state != 'Z')
}

fn signal(relay: &HttpRelay, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is the relay's, our child.
    unsafe {
        libc::kill(relay.pid(), sig);
    }
}

fn initialize_body(id: i64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "mcp-relay-e2e-tls", "version": "0"}}})
    .to_string()
}

fn echo_body(id: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"message": message}}})
    .to_string()
}

/// The answer with `id` among a response's messages.
fn answer(resp: &http_support::Response, id: i64) -> Value {
    resp.messages()
        .into_iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no answer with id {id} in {resp:?}"))
}

/// A whole MCP session through curl at `url` (`trust`: how curl trusts the server and which
/// certificate it shows): initialize, initialized, tools/list, an echo. Returns the tools.
fn curl_session(test: &str, relay: &HttpRelay, url: &str, trust: &[&str]) -> Vec<String> {
    let fail = |what: &str, ran: Ran| -> ! {
        panic!(
            "{test}: {what} through curl at {url} failed ({}):\nstdout:\n{}\nstderr:\n{}\nthe relay's log:\n{}",
            ran.status,
            ran.stdout,
            ran.stderr,
            relay.log_text()
        )
    };
    let init = curl_post(url, trust, None, &initialize_body(1))
        .unwrap_or_else(|ran| fail("initialize", ran));
    assert_eq!(init.status(), 200, "{test}: {init:?}");
    assert_eq!(
        answer(&init, 1)["result"]["serverInfo"]["name"],
        "mcp-relay-demo",
        "{test}: {init:?}"
    );
    let session = init
        .header("mcp-session-id")
        .unwrap_or_else(|| panic!("{test}: no session id: {init:?}"))
        .to_owned();
    let note = curl_post(
        url,
        trust,
        Some(&session),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .unwrap_or_else(|ran| fail("notifications/initialized", ran));
    assert_eq!(note.status(), 202, "{test}: {note:?}");
    let list = curl_post(
        url,
        trust,
        Some(&session),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    )
    .unwrap_or_else(|ran| fail("tools/list", ran));
    let tools: Vec<String> = answer(&list, 2)["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{test}: tools/list: {list:?}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    assert!(tools.iter().any(|t| t == "echo"), "{test}: {tools:?}");
    let echo = curl_post(url, trust, Some(&session), &echo_body(3, "over TLS"))
        .unwrap_or_else(|ran| fail("tools/call", ran));
    assert_eq!(
        answer(&echo, 3)["result"]["content"][0]["text"],
        "over TLS",
        "{test}: {echo:?}"
    );
    tools
}

/// GET `url` through curl; the status, or curl's failure.
fn curl_get(url: &str, trust: &[&str]) -> Result<u16, Ran> {
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    args.extend(trust);
    args.push(url);
    let ran = curl(&args);
    match ran.stdout.trim().parse() {
        Ok(code) if ran.ok() => Ok(code),
        _ => Err(ran),
    }
}

// ---------------------------------------------------------------------------------------
// 1. --listen https:// with curl
// ---------------------------------------------------------------------------------------

#[test]
fn curl_speaks_mcp_over_https_and_trusts_nothing_without_the_ca() {
    let test = "curl_speaks_mcp_over_https_and_trusts_nothing_without_the_ca";
    let pki = Pki::new("curl");
    let cert = pki.server("server", "relay-server");
    let relay = https_relay(&cert);
    let ca = s(pki.ca());
    let trust = ["--cacert", ca];
    // By IP address (the certificate's IP SAN, no SNI) and by name (its DNS SAN).
    curl_session(test, &relay, &https_url(&relay, "/mcp"), &trust);
    let by_name = format!("https://localhost:{}/mcp", relay.addr.port());
    curl_session(test, &relay, &by_name, &trust);
    assert_eq!(
        curl_get(&https_url(&relay, "/healthz"), &trust).map_err(|r| format!("{r:?}")),
        Ok(200),
        "{test}: GET /healthz; the relay's log:\n{}",
        relay.log_text()
    );
    // TLS 1.2 and 1.3 are both spoken, and ALPN settles on http/1.1 (curl offers h2 first).
    for (flags, version) in [
        (["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"),
        (["--tlsv1.3", "--tls-max", "1.3"], "TLSv1.3"),
    ] {
        let mut args = vec!["-v", "-o", "/dev/null", "--cacert", ca];
        args.extend(flags);
        let url = https_url(&relay, "/healthz");
        args.push(&url);
        let ran = curl(&args);
        assert!(
            ran.ok()
                && ran
                    .stderr
                    .contains(&format!("SSL connection using {version}"))
                && ran.stderr.contains("ALPN: server accepted http/1.1")
                && ran.stderr.contains("< HTTP/1.1 200"),
            "{test}: {version}: {ran:?}\nthe relay's log:\n{}",
            relay.log_text()
        );
    }
    // Keep-alive: one connection, three requests.
    let health = https_url(&relay, "/healthz");
    let ran = curl(&[
        "-v",
        "--cacert",
        ca,
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        &health,
        &health,
        &health,
    ]);
    assert!(
        ran.ok()
            && ran.stderr.matches("< HTTP/1.1 200").count() == 3
            && ran.stderr.matches("Re-using existing connection").count() == 2,
        "{test}: three requests on one TLS connection: {ran:?}\nthe relay's log:\n{}",
        relay.log_text()
    );
    // Without the CA, curl (with no store of its own: the environment's is taken out, and the
    // system's does not hold a CA made a moment ago) refuses the certificate.
    let ran = curl_get(&https_url(&relay, "/healthz"), &[]).expect_err("trusted without the CA");
    assert!(
        ran.status.code() == Some(60) && ran.stderr.contains("SSL certificate problem"),
        "{test}: curl without --cacert should fail verification (exit 60): {ran:?}"
    );
    assert!(
        alive(&relay),
        "{test}: the relay died: {}",
        relay.log_text()
    );
}

#[test]
fn concurrent_handshakes_all_complete() {
    let test = "concurrent_handshakes_all_complete";
    let pki = Pki::new("concurrent");
    let relay = https_relay(&pki.server("server", "relay-server"));
    let url = https_url(&relay, "/healthz");
    // 12 clients at once, 4 connections each, TLS 1.2 and 1.3 mixed.
    let results: Vec<Result<u16, String>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let (url, ca) = (&url, s(pki.ca()));
                scope.spawn(move || {
                    let max = if i % 2 == 0 { "1.2" } else { "1.3" };
                    (0..4)
                        .map(|_| {
                            curl_get(url, &["--cacert", ca, "--tls-max", max])
                                .map_err(|r| format!("{r:?}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a client thread"))
            .collect()
    });
    let failed: Vec<&Result<u16, String>> = results.iter().filter(|r| **r != Ok(200)).collect();
    assert!(
        results.len() == 48 && failed.is_empty(),
        "{test}: {} of 48 requests failed: {failed:#?}\nthe relay's log:\n{}",
        failed.len(),
        relay.log_text()
    );
}

#[test]
fn a_silent_or_stalled_tls_client_is_closed() {
    let test = "a_silent_or_stalled_tls_client_is_closed";
    let pki = Pki::new("silent");
    // The handshake must finish within min(120 s, 6 × --header-timeout): 3 s here.
    let relay = tls_relay(
        "https",
        &pki.server("server", "relay-server"),
        &["--header-timeout", "500ms"],
    );
    let start = Instant::now();
    let silent = TcpStream::connect(relay.addr).expect("connecting");
    let mut stalled = TcpStream::connect(relay.addr).expect("connecting");
    // A TLS record header announcing a ClientHello that never comes.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("writing");
    // Meanwhile others are served.
    assert!(
        matches!(
            curl_get(&https_url(&relay, "/healthz"), &["--cacert", s(pki.ca())]),
            Ok(200)
        ),
        "{test}: {}",
        relay.log_text()
    );
    for (what, mut conn) in [("silent", silent), ("stalled", stalled)] {
        conn.set_read_timeout(Some(DEADLINE)).expect("read timeout");
        let mut got = Vec::new();
        let end = conn.read_to_end(&mut got);
        let took = start.elapsed();
        assert!(
            !matches!(&end, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "{test}: the {what} client was not closed within {DEADLINE:?}: {end:?}; the log:\n{}",
            relay.log_text()
        );
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(10),
            "{test}: the {what} client was closed after {took:?}, not about 3 s; the log:\n{}",
            relay.log_text()
        );
    }
    assert!(alive(&relay), "{test}: {}", relay.log_text());
}

#[test]
fn every_key_format_and_certificate_kind_is_served() {
    let test = "every_key_format_and_certificate_kind_is_served";
    let pki = Pki::new("kinds");
    let ec = pki.server("ec", "relay-ec");
    let rsa = pki.issue("rsa", &Spec::server("relay-rsa").key(KeyKind::Rsa2048));
    let ed = pki.issue("ed", &Spec::server("relay-ed25519").key(KeyKind::Ed25519));
    let with_key = |c: &CertKey, key: PathBuf| CertKey {
        cert: c.cert.clone(),
        key,
        cn: c.cn.clone(),
    };
    let ec_sec1 = with_key(&ec, pki.traditional_key(&ec.key, "ec-sec1.key"));
    let rsa_pkcs1 = with_key(&rsa, pki.traditional_key(&rsa.key, "rsa-pkcs1.key"));
    // A leaf issued by an intermediate CA, served with it (the client trusts the root only).
    let intermediate = pki.intermediate("intermediate", "mcp-relay test intermediate");
    let leaf = pki.issue_by(&intermediate, "leaf", &Spec::server("relay-chained"));
    let chain = pki.full_chain("fullchain.pem", &leaf, &[&intermediate]);
    let header = |p: &Path| {
        fs::read_to_string(p)
            .expect("reading a key")
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(header(&ec_sec1.key), "-----BEGIN EC PRIVATE KEY-----");
    assert_eq!(header(&rsa_pkcs1.key), "-----BEGIN RSA PRIVATE KEY-----");
    assert_eq!(header(&ec.key), "-----BEGIN PRIVATE KEY-----");
    let cases = [
        ("ECDSA P-256, PKCS#8", &ec),
        ("ECDSA P-256, SEC1", &ec_sec1),
        ("RSA 2048, PKCS#8", &rsa),
        ("RSA 2048, PKCS#1", &rsa_pkcs1),
        ("Ed25519, PKCS#8", &ed),
        ("a full chain through an intermediate", &chain),
    ];
    for (what, cert) in cases {
        let relay = https_relay(cert);
        let got = curl_get(&https_url(&relay, "/healthz"), &["--cacert", s(pki.ca())]);
        assert!(
            matches!(got, Ok(200)),
            "{test}: {what}: {got:?}\nthe relay's log:\n{}",
            relay.log_text()
        );
        let presented = presented_cert(relay.addr, pki.ca());
        assert_eq!(
            presented.as_deref(),
            Ok(cert.leaf_base64().as_str()),
            "{test}: {what}: the relay should present its certificate"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. The SDKs over HTTPS
// ---------------------------------------------------------------------------------------

/// Runs an SDK client (tests/python/http_sdk_client.py or tests/node/http_ts_client.mjs:
/// every check they have, with a 1 MiB payload each way) at `url`; all must pass.
fn run_sdk_client(test: &str, mut cmd: Command, url: &str, relay: &HttpRelay) {
    let timeout = CLIENT_TIMEOUT.as_secs().to_string();
    let ran = run_bounded(
        cmd.args(["--url", url, "--timeout", &timeout, "--payload-mib", "1"]),
        CLIENT_TIMEOUT + Duration::from_secs(15),
    )
    .unwrap_or_else(|| panic!("{test}: cannot start the client"));
    let summary = ran.stdout.lines().rev().find(|l| l.starts_with("SUMMARY"));
    assert!(
        ran.ok() && summary.is_some_and(|s| s.ends_with("failed=0")),
        "{test}: the SDK client failed at {url} ({}).\nstdout:\n{}\nstderr:\n{}\nthe relay's log:\n{}",
        ran.status,
        ran.stdout,
        ran.stderr,
        relay.log_text()
    );
    show(&format!("{test} {url}"), &ran);
}

/// The Python SDK `major`.x client, trusting `ca` through `SSL_CERT_FILE` only.
fn python_client(major: u32, ca: &Path) -> Command {
    let mut cmd = Command::new(python_of(major));
    clean_env(&mut cmd)
        .arg(tests_dir().join("python").join("http_sdk_client.py"))
        .env("SSL_CERT_FILE", ca);
    cmd
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn python_sdk2_over_https() {
    let test = "python_sdk2_over_https";
    if let Some(why) = python_sdk_missing_of(2) {
        return skip(test, &why);
    }
    let pki = Pki::new("py2");
    let relay = https_relay(&pki.server("server", "relay-server"));
    let url = https_url(&relay, "/mcp");
    run_sdk_client(test, python_client(2, pki.ca()), &url, &relay);
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn python_sdk1_over_https_streamable_http_and_legacy_sse() {
    let test = "python_sdk1_over_https_streamable_http_and_legacy_sse";
    if let Some(why) = python_sdk_missing_of(1) {
        return skip(test, &why);
    }
    let pki = Pki::new("py1");
    let relay = https_relay(&pki.server("server", "relay-server"));
    for path in ["/mcp", "/sse"] {
        let url = https_url(&relay, path);
        run_sdk_client(test, python_client(1, pki.ca()), &url, &relay);
    }
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn typescript_sdk_over_https() {
    let test = "typescript_sdk_over_https";
    if let Some(why) = ts_sdk_missing() {
        return skip(test, &why);
    }
    let pki = Pki::new("ts");
    let relay = https_relay(&pki.server("server", "relay-server"));
    let mut cmd = Command::new("node");
    clean_env(&mut cmd)
        .arg(tests_dir().join("node").join("http_ts_client.mjs"))
        .env("NODE_EXTRA_CA_CERTS", pki.ca());
    run_sdk_client(test, cmd, &https_url(&relay, "/mcp"), &relay);
}

// ---------------------------------------------------------------------------------------
// 3. --listen tls://
// ---------------------------------------------------------------------------------------

/// A line session over TLS: `openssl s_client -quiet` on pipes, verifying the server as
/// `localhost` against `ca` (and showing `client`'s certificate, if any).
fn s_client_session(addr: SocketAddr, ca: &Path, client: Option<&CertKey>) -> StdioServer {
    let mut cmd = Command::new("openssl");
    clean_env(&mut cmd)
        .args(s_client_args(addr, ca))
        .arg("-quiet");
    if let Some(c) = client {
        cmd.args(["-cert", s(&c.cert), "-key", s(&c.key)]);
    }
    StdioServer::spawn(&mut cmd)
}

/// initialize and an echo over a line session (s_client, or the relay in client mode); fails
/// the test with its stderr and `log` otherwise.
fn line_session_works(test: &str, session: &mut StdioServer, log: &dyn Fn() -> String) {
    session.send(&initialize_body(1));
    let (init, _) = session.read_response(&json!(1), DEADLINE);
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        "mcp-relay-demo",
        "{test}: {init}\nthe session's stderr:\n{}\nthe relay's log:\n{}",
        session.stderr_text(),
        log()
    );
    session.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    line_echo(test, session, 2, log);
}

fn line_echo(test: &str, session: &mut StdioServer, id: i64, log: &dyn Fn() -> String) {
    let message = format!("line echo {id}");
    session.send(&echo_body(id, &message));
    let (echo, _) = session.read_response(&json!(id), DEADLINE);
    assert_eq!(
        echo["result"]["content"][0]["text"],
        message,
        "{test}: {echo}\nthe session's stderr:\n{}\nthe relay's log:\n{}",
        session.stderr_text(),
        log()
    );
}

#[test]
fn tcp_over_tls_with_openssl_s_client() {
    let test = "tcp_over_tls_with_openssl_s_client";
    let pki = Pki::new("tcp");
    let relay = tls_relay("tls", &pki.server("server", "relay-server"), &[]);
    let mut session = s_client_session(relay.addr, pki.ca(), None);
    line_session_works(test, &mut session, &|| relay.log_text());
    line_echo(test, &mut session, 3, &|| relay.log_text());
    // A plaintext line to the TLS port is no TLS record: answered with a JSON-RPC error line
    // and closed; the relay goes on.
    let mut plain = TcpStream::connect(relay.addr).expect("connecting");
    plain
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    plain
        .write_all(format!("{}\n", initialize_body(1)).as_bytes())
        .expect("writing");
    let mut got = Vec::new();
    let end = plain.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    let error: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
    assert!(
        end.is_ok() && error["error"]["code"].is_i64() && text.ends_with('\n'),
        "{test}: a plaintext client of the tls:// port should get one JSON-RPC error line and a close, got {end:?} {text:?}"
    );
    line_echo(test, &mut session, 4, &|| relay.log_text());
    // 4 MiB each way: many TLS records, more than rustls buffers.
    let big = "0123456789abcdef".repeat(256 * 1024);
    session.send(&echo_body(5, &big));
    let (echo, _) = session.read_response(&json!(5), DEADLINE);
    let back = echo["result"]["content"][0]["text"].as_str().unwrap_or("");
    assert!(
        back == big,
        "{test}: 4 MiB came back as {} bytes: {}",
        back.len(),
        relay.log_text()
    );
    assert!(alive(&relay), "{test}: {}", relay.log_text());
    // The client leaves (s_client killed: no close_notify): its session and server go.
    drop(session);
    relay.wait_children(0, DEADLINE);
}

// ---------------------------------------------------------------------------------------
// 4. Mutual TLS
// ---------------------------------------------------------------------------------------

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let test = "mutual_tls_requires_a_client_certificate_from_the_client_ca";
    let pki = Pki::new("mtls");
    let server = pki.server("server", "relay-server");
    let client = pki.client("client", "test-client");
    let stranger_pki = Pki::new("mtls-stranger");
    let stranger = stranger_pki.client("stranger", "stranger-client");
    let ca = s(pki.ca());
    let relay = tls_relay("https", &server, &["--tls-client-ca", ca]);
    let url = https_url(&relay, "/healthz");
    let with_cert = [
        "--cacert",
        ca,
        "--cert",
        s(&client.cert),
        "--key",
        s(&client.key),
    ];
    curl_session(test, &relay, &https_url(&relay, "/mcp"), &with_cert);
    assert!(matches!(curl_get(&url, &with_cert), Ok(200)), "{test}");
    // No certificate, or one from another CA: the handshake ends with the server's alert
    // (`certificate required`, `unknown ca`), and no answer.
    let refused_by_alert =
        |got: &Result<u16, Ran>| matches!(got, Err(ran) if ran.stderr.contains("alert"));
    let without = curl_get(&url, &["--cacert", ca]);
    assert!(
        refused_by_alert(&without),
        "{test}: a client without a certificate should be refused by an alert: {without:?}"
    );
    let other = curl_get(
        &url,
        &[
            "--cacert",
            ca,
            "--cert",
            s(&stranger.cert),
            "--key",
            s(&stranger.key),
        ],
    );
    assert!(
        refused_by_alert(&other),
        "{test}: a client certificate from another CA should be refused by an alert: {other:?}"
    );
    // A flood of them is logged at most once a minute (with a count of the rest).
    for _ in 0..20 {
        assert!(
            refused_by_alert(&curl_get(&url, &["--cacert", ca])),
            "{test}"
        );
    }
    assert!(alive(&relay), "{test}: {}", relay.log_text());
    assert!(
        matches!(curl_get(&url, &with_cert), Ok(200)),
        "{test}: after the refusals; the relay's log:\n{}",
        relay.log_text()
    );
    let refusals = relay.log_count("sent no certificate");
    assert!(
        (1..=2).contains(&refusals),
        "{test}: 21 clients without a certificate should make one or two log lines, not {refusals}:\n{}",
        relay.log_text()
    );

    // The same on a tls:// listener.
    let relay = tls_relay("tls", &server, &["--tls-client-ca", ca]);
    let mut session = s_client_session(relay.addr, pki.ca(), Some(&client));
    line_session_works(test, &mut session, &|| relay.log_text());
    let mut refused = s_client_session(relay.addr, pki.ca(), None);
    refused.send(&initialize_body(1));
    let line = refused.try_read_line(DEADLINE);
    assert!(
        line.is_none() && refused.wait_exit(DEADLINE).is_some(),
        "{test}: tls:// without a client certificate should be refused and closed, got {line:?}"
    );
    line_echo(test, &mut session, 3, &|| relay.log_text());
}

/// On a `tls://` listener a session is a connection; with `--tls-client-ca` only a client
/// that proved who it is should get one, so no server process may start for a connection
/// that has not finished its handshake (else anyone who can connect makes the relay run the
/// command, once per connection, until the handshake times out).
#[test]
fn mutual_tls_starts_no_server_for_a_client_that_has_not_authenticated() {
    let test = "mutual_tls_starts_no_server_for_a_client_that_has_not_authenticated";
    let pki = Pki::new("mtls-spawn");
    let server = pki.server("server", "relay-server");
    let client = pki.client("client", "test-client");
    let relay = tls_relay("tls", &server, &["--tls-client-ca", s(pki.ca())]);
    // Three connections that never start a handshake, and one without a certificate (refused).
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(relay.addr).expect("connecting"))
        .collect();
    let mut refused = s_client_session(relay.addr, pki.ca(), None);
    refused.send(&initialize_body(1));
    assert!(refused.try_read_line(DEADLINE).is_none(), "{test}");
    // Then an authenticated client, accepted after them: once it is answered, whatever the
    // relay started for the earlier connections has been started too.
    let mut session = s_client_session(relay.addr, pki.ca(), Some(&client));
    line_session_works(test, &mut session, &|| relay.log_text());
    let children = relay.live_children();
    assert_eq!(
        children.len(),
        1,
        "{test}: only the authenticated client's server should run, not one per connection that has not authenticated: {children:#?}\nthe relay's log:\n{}",
        relay.log_text()
    );
    drop(silent);
}

// ---------------------------------------------------------------------------------------
// 5. Startup
// ---------------------------------------------------------------------------------------

/// Exit status 2, nothing on stdout, one error line (starting `mcp-relay: `) containing every
/// one of `mentions` (the pointer to --help is the only other line allowed).
fn assert_startup_error(args: &[&str], mentions: &[&str]) -> String {
    let out: CliOutput = run_cli(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    assert_eq!(out.stdout, "", "{args:?}: {out:?}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.starts_with("Run `mcp-relay --help`"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{args:?}: one error line expected: {out:?}"
    );
    let error = errors[0];
    assert!(error.starts_with("mcp-relay: "), "{args:?}: {error}");
    for m in mentions {
        assert!(
            error.contains(m),
            "{args:?}: {error:?} does not mention {m:?}"
        );
    }
    error.to_owned()
}

#[test]
fn a_missing_file_is_a_startup_error() {
    let pki = Pki::new("missing");
    let cert = pki.server("server", "relay-server");
    let nowhere = pki.path("no-such-dir/cert.pem");
    let nowhere = s(&nowhere);
    for scheme in ["https", "tls"] {
        let listen = format!("{scheme}://127.0.0.1:0");
        assert_startup_error(
            &[
                "--listen",
                &listen,
                "--tls-cert",
                nowhere,
                "--tls-key",
                s(&cert.key),
                "--demo",
            ],
            &[&format!("--tls-cert {nowhere}: cannot read it: ")],
        );
    }
    let listen = "https://127.0.0.1:0";
    assert_startup_error(
        &[
            "--listen",
            listen,
            "--tls-cert",
            s(&cert.cert),
            "--tls-key",
            nowhere,
            "--demo",
        ],
        &["--tls-key", nowhere],
    );
    assert_startup_error(
        &[
            "--listen",
            listen,
            "--tls-cert",
            s(&cert.cert),
            "--tls-key",
            s(&cert.key),
            "--tls-client-ca",
            nowhere,
            "--demo",
        ],
        &["--tls-client-ca", nowhere],
    );
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_a_startup_error() {
    let pki = Pki::new("mismatch");
    let a = pki.server("a", "relay-a");
    let b = pki.server("b", "relay-b");
    let (cert, key) = (s(&a.cert), s(&b.key));
    assert_startup_error(
        &[
            "--listen",
            "https://127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--demo",
        ],
        &[&format!(
            "--tls-key {key} does not match the certificate in --tls-cert {cert}"
        )],
    );
}

#[test]
fn an_expired_certificate_is_a_startup_error() {
    let pki = Pki::new("expired");
    let expired = pki.issue(
        "expired",
        &Spec::server("relay-expired").validity(Validity::Between(
            "20200101000000Z".into(),
            "20200201000000Z".into(),
        )),
    );
    let cert = s(&expired.cert);
    assert_startup_error(
        &[
            "--listen",
            "https://127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            s(&expired.key),
            "--demo",
        ],
        &[&format!(
            "--tls-cert {cert}: the certificate expired on 2020-02-01 00:00:00 UTC"
        )],
    );
}

#[test]
fn a_tls_listener_without_its_files_is_a_startup_error() {
    let pki = Pki::new("nofiles");
    let cert = pki.server("server", "relay-server");
    for scheme in ["https", "tls"] {
        let listen = format!("{scheme}://127.0.0.1:0");
        assert_startup_error(&["--listen", &listen, "--demo"], &["--tls-cert"]);
        assert_startup_error(
            &["--listen", &listen, "--tls-cert", s(&cert.cert), "--demo"],
            &["--tls-key"],
        );
    }
}

#[test]
fn a_certificate_about_to_expire_is_warned_about() {
    let test = "a_certificate_about_to_expire_is_warned_about";
    let pki = Pki::new("expiring");
    let (start, _) = date_from_now(Duration::ZERO);
    let five_days = Duration::from_secs(5 * 86_400);
    let (end, printed) = date_from_now(five_days);
    let expiring = pki.issue(
        "expiring",
        &Spec::server("relay-expiring").validity(Validity::Between(start, end)),
    );
    let relay = https_relay(&expiring);
    let line = relay.wait_log("expires on", DEADLINE);
    let day = &printed[..10];
    assert!(
        line.contains("WARN") && line.contains("renew it") && line.contains(day),
        "{test}: the warning should name the day ({day}) and say to renew it: {line}"
    );
    // It serves anyway.
    assert!(
        matches!(
            curl_get(&https_url(&relay, "/healthz"), &["--cacert", s(pki.ca())]),
            Ok(200)
        ),
        "{test}: {}",
        relay.log_text()
    );
    // A certificate valid for 30 days is not warned about.
    let fresh = https_relay(&pki.server("fresh", "relay-fresh"));
    assert!(
        fresh
            .try_wait_log("renew it", Duration::from_millis(300))
            .is_none(),
        "{test}: a 30-day certificate was warned about: {}",
        fresh.log_text()
    );
}

// ---------------------------------------------------------------------------------------
// 6. The wrong protocol on a port
// ---------------------------------------------------------------------------------------

/// Sends a plain HTTP request to `addr` and reads everything until the relay closes.
fn plain_request(addr: SocketAddr) -> String {
    let mut conn = TcpStream::connect(addr).expect("connecting");
    conn.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    conn.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("writing");
    let mut got = Vec::new();
    conn.read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("the relay did not close after its answer: {e}"));
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn plain_http_to_an_https_port_gets_400_and_one_warning() {
    let test = "plain_http_to_an_https_port_gets_400_and_one_warning";
    let pki = Pki::new("plain");
    let relay = https_relay(&pki.server("server", "relay-server"));
    for i in 0..50 {
        let got = plain_request(relay.addr);
        assert!(
            got.starts_with("HTTP/1.1 400") && got.contains("this port speaks HTTPS"),
            "{test}: plain request {i} got {got:?}"
        );
    }
    relay.wait_log("plain HTTP", DEADLINE);
    // Logged once, not once per connection (a second line may be the count of a minute).
    let more = relay.wait_for_log(Duration::from_millis(500), |lines| {
        lines.iter().filter(|l| l.contains("plain HTTP")).count() > 2
    });
    assert!(
        !more,
        "{test}: 50 plain connections should make at most 2 `plain HTTP` lines; the log:\n{}",
        relay.log_text()
    );
    assert!(
        matches!(
            curl_get(&https_url(&relay, "/healthz"), &["--cacert", s(pki.ca())]),
            Ok(200)
        ),
        "{test}: HTTPS after the flood; the log:\n{}",
        relay.log_text()
    );
}

#[test]
fn tls_to_a_plain_http_port_is_refused_and_the_relay_stays_up() {
    let test = "tls_to_a_plain_http_port_is_refused_and_the_relay_stays_up";
    let pki = Pki::new("tls-to-plain");
    let relay = HttpRelay::demo();
    let url = format!("https://{}/healthz", relay.addr);
    let got = curl_get(&url, &["--cacert", s(pki.ca())]);
    assert!(got.is_err(), "{test}: TLS to http:// was answered: {got:?}");
    // What a TLS client's first record gets: a 400, or nothing and a close.
    let mut conn = TcpStream::connect(relay.addr).expect("connecting");
    conn.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    conn.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03,
    ])
    .expect("writing");
    let mut answer = Vec::new();
    let end = conn.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        end.is_ok() && (answer.is_empty() || text.starts_with("HTTP/1.1 400")),
        "{test}: a TLS record to http:// should get a 400 or a close: {end:?} {text:?}"
    );
    let health = Conn::connect(relay.addr).request("GET", "/healthz", &[], b"");
    assert_eq!(health.status(), 200, "{test}: {}", relay.log_text());
}

// ---------------------------------------------------------------------------------------
// 7. Client mode: --connect https://
// ---------------------------------------------------------------------------------------

/// tests/python/stdio_connect_client.py (SDK 1.x) running `steps` through `mcp-relay
/// relay_args` (which it spawns as its stdio server), with no certificate store from the
/// environment; every step must pass.
fn run_stdio_driver(
    test: &str,
    steps: &[&str],
    relay_args: &[&str],
    remote_log: &dyn Fn() -> String,
) {
    let mut cmd = Command::new(python_of(1));
    clean_env(&mut cmd)
        .arg(tests_dir().join("python").join("stdio_connect_client.py"))
        .arg("--relay")
        .arg(relay_bin())
        .args(["--timeout", &CLIENT_TIMEOUT.as_secs().to_string()])
        .args(["--step-timeout", &STEP_TIMEOUT.as_secs().to_string()]);
    for step in steps {
        cmd.args(["--step", step]);
    }
    cmd.arg("--").args(relay_args).env("RUST_LOG", "info");
    let ran = run_bounded(&mut cmd, CLIENT_TIMEOUT + Duration::from_secs(15))
        .unwrap_or_else(|| panic!("{test}: cannot start {}", python_of(1)));
    let passed = ran
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("SUMMARY"))
        .is_some_and(|s| s.ends_with("failed=0"));
    assert!(
        ran.ok() && passed,
        "{test}: the stdio client through `mcp-relay {}` failed ({}).\nstdout:\n{}\nstderr (the driver's and the relay's):\n{}\nthe remote's log:\n{}",
        relay_args.join(" "),
        ran.status,
        ran.stdout,
        ran.stderr,
        remote_log()
    );
    show(&format!("{test} {}", relay_args.join(" ")), &ran);
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn client_mode_reaches_an_https_relay_with_ca_cert() {
    let test = "client_mode_reaches_an_https_relay_with_ca_cert";
    if let Some(why) = python_sdk_missing_of(1) {
        return skip(test, &why);
    }
    let pki = Pki::new("connect");
    let remote = https_relay(&pki.server("server", "relay-server"));
    let ca = s(pki.ca());
    // Streamable HTTP by IP address, the legacy transport by name.
    let by_ip = https_url(&remote, "/mcp");
    run_stdio_driver(
        test,
        &["tools", "payload:1"],
        &["--connect", &by_ip, "--ca-cert", ca],
        &|| remote.log_text(),
    );
    let by_name = format!("https://localhost:{}/sse", remote.addr.port());
    run_stdio_driver(
        test,
        &["tools"],
        &["--connect", &by_name, "--ca-cert", ca, "--transport", "sse"],
        &|| remote.log_text(),
    );
}

#[test]
fn check_an_https_url_trusting_ssl_cert_file_or_ca_cert() {
    let test = "check_an_https_url_trusting_ssl_cert_file_or_ca_cert";
    let pki = Pki::new("check");
    let remote = https_relay(&pki.server("server", "relay-server"));
    let url = https_url(&remote, "/mcp");
    let check = |env_ca: Option<&Path>, extra: &[&str]| {
        let mut cmd = Command::new(relay_bin());
        clean_env(&mut cmd)
            .args([
                "check",
                "--json",
                "--timeout",
                "10s",
                "--connect-timeout",
                "3s",
                &url,
            ])
            .args(extra);
        if let Some(ca) = env_ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        run_bounded(&mut cmd, Duration::from_secs(60)).expect("running mcp-relay check")
    };
    for (how, ran) in [
        ("SSL_CERT_FILE", check(Some(pki.ca()), &[])),
        ("--ca-cert", check(None, &["--ca-cert", s(pki.ca())])),
        (
            "--tls-insecure-skip-verify (trusting nothing)",
            check(None, &["--tls-insecure-skip-verify"]),
        ),
    ] {
        let report: Value = serde_json::from_str(ran.stdout.trim()).unwrap_or(Value::Null);
        assert!(
            ran.ok() && report["ok"] == true && report["server"]["name"] == "mcp-relay-demo",
            "{test}: check with {how}: {ran:?}\nthe remote's log:\n{}",
            remote.log_text()
        );
    }
    // Trusting neither: it fails, and says why.
    let ran = check(None, &[]);
    assert!(
        ran.status.code() == Some(1) && ran.stderr.contains("unknown CA"),
        "{test}: check without the CA should fail naming an unknown CA: {ran:?}"
    );
}

/// `mcp-relay --connect url extra…` on pipes as a local stdio server, with no certificate
/// store from the environment.
fn stdio_relay(url: &str, extra: &[&str]) -> StdioServer {
    let mut cmd = Command::new(relay_bin());
    clean_env(&mut cmd)
        .args(["--connect", url, "--connect-timeout", "2s"])
        .args(extra)
        .env("RUST_LOG", "info");
    StdioServer::spawn(&mut cmd)
}

#[test]
fn client_mode_reaches_a_tls_relay() {
    let test = "client_mode_reaches_a_tls_relay";
    let pki = Pki::new("connect-tls");
    let remote = tls_relay("tls", &pki.server("server", "relay-server"), &[]);
    let ca = s(pki.ca());
    let by_name = format!("tls://localhost:{}", remote.addr.port());
    for url in [format!("tls://{}", remote.addr), by_name] {
        let mut relay = stdio_relay(&url, &["--ca-cert", ca]);
        line_session_works(test, &mut relay, &|| remote.log_text());
    }
    let got = connect_error(test, &format!("tls://{}", remote.addr), &[]);
    assert_reported(test, &got, &["unknown CA", "--ca-cert"]);
}

/// A gateway with TLS on both sides: curl → `--listen https://` → `--connect tls://` → a
/// relay's `tls://` listener.
#[test]
fn a_gateway_speaks_tls_on_both_sides() {
    let test = "a_gateway_speaks_tls_on_both_sides";
    let pki = Pki::new("gateway");
    let cert = pki.server("server", "relay-server");
    let remote = tls_relay("tls", &cert, &[]);
    let ca = s(pki.ca());
    let gateway = HttpRelay::builder()
        .listen("https://127.0.0.1:0")
        .args(["--tls-cert", s(&cert.cert), "--tls-key", s(&cert.key)])
        .args([
            "--connect",
            &format!("tls://{}", remote.addr),
            "--ca-cert",
            ca,
        ])
        .start();
    curl_session(
        test,
        &gateway,
        &https_url(&gateway, "/mcp"),
        &["--cacert", ca],
    );
    assert_eq!(
        remote.log_count("accepted from"),
        1,
        "{test}: the session should have crossed one connection to the remote: {}",
        remote.log_text()
    );
}

/// `mcp-relay --connect url extra…` on pipes, with no certificate store from the environment:
/// its answer to initialize must be the -32000 error of a remote it cannot reach; returns
/// that error's message and the relay's log.
fn connect_error(test: &str, url: &str, extra: &[&str]) -> (String, String) {
    let mut cmd = Command::new(relay_bin());
    clean_env(&mut cmd)
        .args(["--connect", url, "--connect-timeout", "2s"])
        .args(extra)
        .env("RUST_LOG", "info");
    let mut relay = StdioServer::spawn(&mut cmd);
    relay.send(&initialize_body(1));
    let (resp, _) = relay.read_response(&json!(1), Duration::from_secs(30));
    let message = resp["error"]["message"].as_str().unwrap_or("").to_owned();
    assert_eq!(
        resp["error"]["code"],
        -32000,
        "{test}: initialize through {url} should fail with -32000: {resp}\nthe relay's log:\n{}",
        relay.stderr_text()
    );
    relay.close_stdin();
    let status = relay.wait_exit(DEADLINE);
    assert!(
        status.is_some(),
        "{test}: the relay should exit at the end of its stdin; its log:\n{}",
        relay.stderr_text()
    );
    (message, relay.stderr_text())
}

/// The error and the log both contain every one of `mentions`.
fn assert_reported(test: &str, (message, log): &(String, String), mentions: &[&str]) {
    for m in mentions {
        assert!(
            message.contains(m) && log.contains(m),
            "{test}: the error the client gets and the log should both say {m:?}.\nerror: {message}\nlog:\n{log}"
        );
    }
}

#[test]
fn client_mode_refuses_a_certificate_from_an_unknown_ca() {
    let test = "client_mode_refuses_a_certificate_from_an_unknown_ca";
    let pki = Pki::new("unknown-ca");
    let remote = https_relay(&pki.server("server", "relay-server"));
    let got = connect_error(test, &https_url(&remote, "/mcp"), &[]);
    assert_reported(test, &got, &["unknown CA", "--ca-cert"]);
    // Another CA given with --ca-cert does not help either.
    let other = Pki::new("unknown-ca-other");
    let got = connect_error(
        test,
        &https_url(&remote, "/mcp"),
        &["--ca-cert", s(other.ca())],
    );
    assert_reported(test, &got, &["unknown CA"]);
}

#[test]
fn client_mode_refuses_a_certificate_for_another_name() {
    let test = "client_mode_refuses_a_certificate_for_another_name";
    let pki = Pki::new("other-name");
    let other = pki.issue(
        "other",
        &Spec::server("elsewhere").san("DNS:elsewhere.example"),
    );
    let remote = https_relay(&other);
    let ca = s(pki.ca());
    let got = connect_error(test, &https_url(&remote, "/mcp"), &["--ca-cert", ca]);
    assert_reported(test, &got, &["not valid for"]);
    let by_name = format!("https://localhost:{}/mcp", remote.addr.port());
    let got = connect_error(test, &by_name, &["--ca-cert", ca]);
    assert_reported(test, &got, &["not valid for"]);
}

/// `openssl s_server -www` on a free port of 127.0.0.1 with `cert` (a TLS server the relay
/// would not start with); killed on drop.
fn s_server(cert: &CertKey) -> (StdioServer, SocketAddr) {
    let port = free_port();
    let mut cmd = Command::new("openssl");
    clean_env(&mut cmd).args([
        "s_server",
        "-accept",
        &format!("127.0.0.1:{port}"),
        "-cert",
        s(&cert.cert),
        "-key",
        s(&cert.key),
        "-www",
    ]);
    let mut server = StdioServer::spawn(&mut cmd);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let pid = server.pid();
    let up = wait_for_port(addr, DEADLINE, || {
        read_proc(pid).is_some_and(|p| p.state != 'Z')
    });
    if !up {
        let _ = server.wait_exit(Duration::from_millis(100));
        panic!(
            "openssl s_server did not listen at {addr}: {}",
            server.stderr_text()
        );
    }
    (server, addr)
}

#[test]
fn client_mode_refuses_an_expired_certificate() {
    let test = "client_mode_refuses_an_expired_certificate";
    let pki = Pki::new("remote-expired");
    let expired = pki.issue(
        "expired",
        &Spec::server("relay-expired").validity(Validity::Between(
            "20200101000000Z".into(),
            "20200201000000Z".into(),
        )),
    );
    let (_server, addr) = s_server(&expired);
    let got = connect_error(
        test,
        &format!("https://{addr}/mcp"),
        &["--ca-cert", s(pki.ca())],
    );
    assert_reported(test, &got, &["expired"]);
}

#[test]
fn client_mode_says_when_an_https_url_reaches_plain_http() {
    let test = "client_mode_says_when_an_https_url_reaches_plain_http";
    let remote = HttpRelay::demo();
    let got = connect_error(test, &format!("https://{}/mcp", remote.addr), &[]);
    assert_reported(test, &got, &["does not speak TLS"]);
}

#[test]
fn client_mode_insecure_skip_verify_connects_and_warns() {
    let test = "client_mode_insecure_skip_verify_connects_and_warns";
    let pki = Pki::new("insecure");
    let remote = https_relay(&pki.server("server", "relay-server"));
    let mut cmd = Command::new(relay_bin());
    clean_env(&mut cmd)
        .args([
            "--connect",
            &https_url(&remote, "/mcp"),
            "--tls-insecure-skip-verify",
        ])
        .args(["--connect-timeout", "2s"])
        .env("RUST_LOG", "info");
    let mut relay = StdioServer::spawn(&mut cmd);
    line_session_works(test, &mut relay, &|| remote.log_text());
    let log = relay.stderr_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("--tls-insecure-skip-verify"))
        .collect();
    assert!(
        !warnings.is_empty(),
        "{test}: each connection should be logged with a warning naming --tls-insecure-skip-verify; the log:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// 8. A third-party HTTPS server: the Python SDK's own, behind uvicorn
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn client_mode_reaches_the_python_sdk_server_over_https() {
    let test = "client_mode_reaches_the_python_sdk_server_over_https";
    if let Some(why) = python_sdk_missing_of(1) {
        return skip(test, &why);
    }
    let pki = Pki::new("sdk-server");
    let cert = pki.server("server", "sdk-server");
    let mut cmd = Command::new(python_of(1));
    clean_env(&mut cmd)
        .arg(tests_dir().join("python").join("tls_sdk_server.py"))
        .args(["--certfile", s(&cert.cert), "--keyfile", s(&cert.key)]);
    let mut server = StdioServer::spawn(&mut cmd);
    let port: Option<u16> = server
        .read_until(Duration::from_secs(30), |l| l.starts_with("PORT "))
        .ok()
        .and_then(|(line, _)| line["PORT ".len()..].trim().parse().ok());
    let Some(port) = port else {
        panic!(
            "{test}: tls_sdk_server.py did not say its port: {}",
            server.stderr_text()
        )
    };
    let url = format!("https://127.0.0.1:{port}/mcp");
    run_stdio_driver(
        test,
        &["tools", "payload:1"],
        &["--connect", &url, "--ca-cert", s(pki.ca())],
        &|| server.stderr_text(),
    );
}

// ---------------------------------------------------------------------------------------
// 9. SIGHUP
// ---------------------------------------------------------------------------------------

/// An HTTP+SSE session whose event stream is held open over TLS through `openssl s_client`
/// (`-crlf`: the lines it is given become HTTP's); the stream and the path its `endpoint`
/// event names for the POSTs.
fn sse_session(test: &str, relay: &HttpRelay, ca: &Path) -> (StdioServer, String) {
    let mut cmd = Command::new("openssl");
    clean_env(&mut cmd)
        .args(s_client_args(relay.addr, ca))
        .args(["-quiet", "-crlf"]);
    let mut stream = StdioServer::spawn(&mut cmd);
    for line in [
        "GET /sse HTTP/1.1".to_owned(),
        format!("Host: {}", relay.addr),
        "Accept: text/event-stream".to_owned(),
        String::new(),
    ] {
        stream.send(&line);
    }
    let endpoint = match stream.read_until(DEADLINE, |l| l.trim_end().starts_with("data: /")) {
        Ok((line, _)) => line.trim_end()["data: ".len()..].to_owned(),
        Err(lines) => panic!(
            "{test}: no endpoint event on GET /sse over TLS: {lines:?}\n{}\nthe relay's log:\n{}",
            stream.stderr_text(),
            relay.log_text()
        ),
    };
    (stream, endpoint)
}

/// POSTs `body` (a request with `id`) to the session's endpoint on a new connection through
/// curl, and reads its answer from the event stream.
fn sse_call(
    test: &str,
    relay: &HttpRelay,
    ca: &Path,
    (stream, endpoint): &mut (StdioServer, String),
    id: i64,
    body: &str,
) -> Value {
    let url = https_url(relay, endpoint);
    let posted = curl_post(&url, &["--cacert", s(ca)], None, body);
    assert!(
        matches!(&posted, Ok(r) if r.status() == 202),
        "{test}: POST {url}: {posted:?}\nthe relay's log:\n{}",
        relay.log_text()
    );
    let is_answer = |l: &str| {
        l.trim_end()
            .strip_prefix("data: ")
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
            .is_some_and(|m| m["id"] == id && m.get("method").is_none())
    };
    match stream.read_until(DEADLINE, is_answer) {
        Ok((line, _)) => {
            serde_json::from_str(&line.trim_end()["data: ".len()..]).expect("checked above")
        }
        Err(lines) => panic!(
            "{test}: no answer to {id} on the event stream: {lines:?}\nthe relay's log:\n{}",
            relay.log_text()
        ),
    }
}

/// An echo through the HTTP+SSE session.
fn sse_echo(test: &str, relay: &HttpRelay, ca: &Path, sse: &mut (StdioServer, String), id: i64) {
    let message = format!("sse echo {id}");
    let got = sse_call(test, relay, ca, sse, id, &echo_body(id, &message));
    assert_eq!(
        got["result"]["content"][0]["text"],
        message,
        "{test}: {got}\nthe relay's log:\n{}",
        relay.log_text()
    );
}

/// Waits until a new handshake with `addr` is presented `want`.
fn wait_presented(test: &str, relay: &HttpRelay, addr: SocketAddr, ca: &Path, want: &CertKey) {
    let deadline = Instant::now() + DEADLINE;
    let want_b64 = want.leaf_base64();
    loop {
        let got = presented_cert(addr, ca);
        if got.as_deref() == Ok(want_b64.as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{test}: {addr} should present {} by now; the last handshake: {got:?}\nthe relay's log:\n{}",
            want.cn,
            relay.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_sessions() {
    let test = "sighup_reloads_the_certificate_and_keeps_sessions";
    let pki = Pki::new("reload");
    let a = pki.server("a", "relay-a");
    let b = pki.server("b", "relay-b");
    let live = CertKey {
        cert: pki.path("live.pem"),
        key: pki.path("live.key"),
        cn: "live".into(),
    };
    let install = |from: &CertKey| {
        replace_file(&from.cert, &live.cert);
        replace_file(&from.key, &live.key);
    };
    install(&a);
    let relay = tls_relay("https", &live, &["--listen", "tls://127.0.0.1:0"]);
    let tls_addr = listener_addr(&relay.wait_log("listening on tls://", DEADLINE), "tls");
    let ca = pki.ca();
    for addr in [relay.addr, tls_addr] {
        assert_eq!(
            presented_cert(addr, ca),
            Ok(a.leaf_base64()),
            "{test}: {addr}"
        );
    }
    let log = || relay.log_text();
    let mut session = s_client_session(tls_addr, ca, None);
    line_session_works(test, &mut session, &log);
    let mut sse = sse_session(test, &relay, ca);
    let init = sse_call(test, &relay, ca, &mut sse, 1, &initialize_body(1));
    assert_eq!(
        init["result"]["serverInfo"]["name"], "mcp-relay-demo",
        "{test}: {init}"
    );
    let posted = curl_post(
        &https_url(&relay, &sse.1),
        &["--cacert", s(ca)],
        None,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert!(
        matches!(&posted, Ok(r) if r.status() == 202),
        "{test}: {posted:?}"
    );
    sse_echo(test, &relay, ca, &mut sse, 2);
    let reloads = |n: usize| {
        relay.wait_for_log(DEADLINE, |lines| {
            lines
                .iter()
                .filter(|l| l.contains("SIGHUP: reloaded"))
                .count()
                >= n
        })
    };
    let refusals = |n: usize| {
        relay.wait_for_log(DEADLINE, |lines| {
            lines
                .iter()
                .filter(|l| l.contains("ERROR") && l.contains("still using"))
                .count()
                >= n
        })
    };

    // A renewed certificate: new handshakes get it, the open sessions go on (the SSE one's
    // POSTs come on new connections, with the new certificate, and its answers on the stream
    // opened with the old one).
    install(&b);
    signal(&relay, libc::SIGHUP);
    assert!(reloads(1), "{test}: no reload logged: {}", log());
    for addr in [relay.addr, tls_addr] {
        wait_presented(test, &relay, addr, ca, &b);
    }
    line_echo(test, &mut session, 3, &log);
    sse_echo(test, &relay, ca, &mut sse, 3);

    // A file that is no certificate, then a certificate without its key (a renewal caught
    // half-way): each is refused with an error, and B is still served.
    fs::write(&live.cert, "not a certificate\n").expect("writing");
    signal(&relay, libc::SIGHUP);
    assert!(
        refusals(1),
        "{test}: a bad certificate file was not refused: {}",
        log()
    );
    replace_file(&a.cert, &live.cert);
    signal(&relay, libc::SIGHUP);
    assert!(
        refusals(2),
        "{test}: a key that does not match was not refused: {}",
        log()
    );
    let refused: Vec<String> = relay
        .log_text()
        .lines()
        .filter(|l| l.contains("still using"))
        .map(str::to_owned)
        .collect();
    assert!(
        refused.iter().all(|l| l.contains(s(&live.cert))),
        "{test}: each refusal should name the file: {refused:#?}"
    );
    for addr in [relay.addr, tls_addr] {
        assert_eq!(
            presented_cert(addr, ca),
            Ok(b.leaf_base64()),
            "{test}: {addr} should still present B; the log:\n{}",
            log()
        );
    }
    line_echo(test, &mut session, 4, &log);
    sse_echo(test, &relay, ca, &mut sse, 4);
    let mut second = s_client_session(tls_addr, ca, None);
    line_session_works(test, &mut second, &log);

    // Whole again: A comes back.
    install(&a);
    signal(&relay, libc::SIGHUP);
    assert!(reloads(2), "{test}: {}", log());
    wait_presented(test, &relay, relay.addr, ca, &a);
    line_echo(test, &mut session, 5, &log);
    sse_echo(test, &relay, ca, &mut sse, 5);
    line_echo(test, &mut second, 3, &log);
    assert!(
        alive(&relay),
        "{test}: SIGHUP must not stop the relay: {}",
        log()
    );
    curl_session(
        test,
        &relay,
        &https_url(&relay, "/mcp"),
        &["--cacert", s(ca)],
    );
}

#[test]
fn calls_in_a_loop_across_sighups_lose_none() {
    let test = "calls_in_a_loop_across_sighups_lose_none";
    let pki = Pki::new("reload-load");
    let a = pki.server("a", "relay-a");
    let b = pki.server("b", "relay-b");
    let live = CertKey {
        cert: pki.path("live.pem"),
        key: pki.path("live.key"),
        cn: "live".into(),
    };
    let install = |from: &CertKey| {
        replace_file(&from.cert, &live.cert);
        replace_file(&from.key, &live.key);
    };
    install(&a);
    let relay = https_relay(&live);
    let mut cmd = Command::new("python3");
    clean_env(&mut cmd)
        .arg(tests_dir().join("python").join("tls_load_client.py"))
        .args(["--url", &https_url(&relay, "/mcp"), "--cafile", s(pki.ca())])
        .args(["--timeout", "45"]);
    let mut client = StdioServer::spawn(&mut cmd);
    let mut seen: Vec<String> = Vec::new();
    let context = |seen: &[String], client: &StdioServer| {
        format!(
            "the client's output:\n{}\nits stderr:\n{}\nthe relay's log:\n{}",
            seen.join("\n"),
            client.stderr_text(),
            relay.log_text()
        )
    };
    // Reads the client's lines until `pred`; no call may fail meanwhile.
    let read_until =
        |client: &mut StdioServer, seen: &mut Vec<String>, pred: &dyn Fn(&str) -> bool| {
            let got = client.read_until(DEADLINE, |l| l.contains(" FAIL ") || pred(l));
            let (line, before) = match got {
                Ok(x) => x,
                Err(before) => {
                    seen.extend(before);
                    panic!(
                        "{test}: the client stopped short; {}",
                        context(seen, client)
                    );
                }
            };
            seen.extend(before);
            seen.push(line.clone());
            assert!(
                !line.contains(" FAIL "),
                "{test}: a call failed: {line}\n{}",
                context(seen, client)
            );
        };
    let mut reloads = 0;
    for round in 0..4 {
        // Twenty more calls, then the other certificate and SIGHUP while calls go on; then wait
        // for a call whose handshake got the new one.
        for _ in 0..20 {
            read_until(&mut client, &mut seen, &|l| l.starts_with("CALL "));
        }
        let next = if round % 2 == 0 { &b } else { &a };
        install(next);
        signal(&relay, libc::SIGHUP);
        reloads += 1;
        let ok_with = format!(" ok {}", next.cn);
        read_until(&mut client, &mut seen, &|l| l.ends_with(&ok_with));
    }
    client.send("stop");
    read_until(&mut client, &mut seen, &|l| l.starts_with("SUMMARY"));
    let summary = seen.last().cloned().unwrap_or_default();
    let status = client.wait_exit(DEADLINE);
    assert!(
        summary.contains(" failed=0 ")
            && summary.contains("relay-a")
            && summary.contains("relay-b")
            && status.is_some_and(|s| s.success()),
        "{test}: {summary} (exit {status:?})\n{}",
        context(&seen, &client)
    );
    let calls = seen.iter().filter(|l| l.starts_with("CALL ")).count();
    let _ = writeln!(
        std::io::stderr(),
        "{test}: {calls} calls, each on a new TLS connection, across {reloads} reloads: none lost"
    );
    assert!(alive(&relay), "{test}: {}", relay.log_text());
}
