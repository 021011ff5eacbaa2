//! The runtime serving its own stdin and stdout (`RuntimeConfig::stdio`), end to end: a
//! process running the runtime with no listener, a local client on its stdin and stdout, and
//! a child server behind it.
//!
//! No test harness (`harness = false` in Cargo.toml): libtest would print on stdout, which is
//! the relay's connection here. This one executable plays three parts, chosen by its first
//! argument: the client (none: the test itself), `relay` (the runtime, attached to stdio), and
//! `server` (a tiny stdio MCP server that echoes each request's params back).

use mcp_relay_core::Config;
use mcp_relay_runtime::{CommandSpec, Runtime, RuntimeConfig, Stopped};
use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::thread;
use std::time::Duration;

/// How long any part may run before it gives up (and the test fails).
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let part = std::env::args().nth(1);
    watchdog(part.as_deref().unwrap_or("client"));
    let result = match part.as_deref() {
        Some("relay") => relay(),
        Some("server") => server(),
        _ => client(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stdio_attach ({part:?}): {e}");
            ExitCode::FAILURE
        }
    }
}

fn watchdog(part: &str) {
    let part = part.to_owned();
    thread::spawn(move || {
        thread::sleep(GIVE_UP_AFTER);
        eprintln!("stdio_attach: the {part} still runs after {GIVE_UP_AFTER:?}; giving up");
        std::process::exit(1);
    });
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The relay: no listener, stdin and stdout attached, this executable as the server.
fn relay() -> Result<()> {
    let runtime = Runtime::bind(RuntimeConfig {
        listen: Vec::new(),
        command: CommandSpec {
            program: std::env::current_exe()?.into_os_string(),
            args: vec!["server".into()],
            ..CommandSpec::default()
        },
        core: Config {
            shutdown_grace: Duration::from_secs(1),
            // Small reads and buffers: a big message takes many chunks through the stdin
            // channel, and the core pauses stdin (the channel fills) while the server catches
            // up.
            max_read: 4096,
            max_buffered: 16 * 1024,
            ..Config::default()
        },
        stdio: true,
        commands: Vec::new(),
        tls_client: None,
    })?;
    match runtime.run()? {
        Stopped::Drained => Ok(()),
        Stopped::Forced => Err("stopped at once".into()),
    }
}

/// A stdio MCP server: answers `initialize`, and every other request with its params.
fn server() -> Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for line in io::stdin().lock().lines() {
        let msg: Value = serde_json::from_str(&line?)?;
        let (Some(id), Some(method)) = (msg.get("id"), msg.get("method")) else {
            continue; // a notification, or an answer
        };
        let result = if method == "initialize" {
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "serverInfo": {"name": "echo", "version": "1"},
            })
        } else {
            json!({"echo": msg.get("params")})
        };
        serde_json::to_writer(
            &mut out,
            &json!({"jsonrpc": "2.0", "id": id, "result": result}),
        )?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

fn start_relay() -> Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .arg("relay")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?)
}

fn request(id: u64, method: &str, params: Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(
        &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
    )
    .expect("a JSON value serializes");
    line.push(b'\n');
    line
}

fn read_message(from: &mut BufReader<ChildStdout>) -> Result<Value> {
    let mut line = String::new();
    if from.read_line(&mut line)? == 0 {
        return Err("the relay's stdout ended".into());
    }
    Ok(serde_json::from_str(&line)?)
}

fn client() -> Result<()> {
    serves_and_exits_at_the_end_of_stdin()?;
    exits_when_its_client_stops_reading()?;
    eprintln!("stdio_attach: ok");
    Ok(())
}

/// Requests on stdin reach the server, answers come back on stdout, and the end of stdin
/// ends the session and the relay, which closes stdout and exits with status 0.
fn serves_and_exits_at_the_end_of_stdin() -> Result<()> {
    let mut relay = start_relay()?;
    let mut stdin = relay.stdin.take().ok_or("no stdin")?;
    let mut stdout = BufReader::new(relay.stdout.take().ok_or("no stdout")?);

    stdin.write_all(&request(
        1,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}}),
    ))?;
    let init = read_message(&mut stdout)?;
    assert_eq!(init["id"], 1, "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "echo", "{init}");

    // A big request (many reads of stdin, many writes of stdout) and many small ones,
    // written by a thread of their own while this one reads the answers.
    let big = "x".repeat(1 << 20);
    let mut batch = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n".to_vec();
    batch.extend(request(2, "tools/call", json!({"blob": big})));
    for id in 3..=52 {
        batch.extend(request(id, "tools/call", json!({"n": id})));
    }
    let writer = thread::spawn(move || -> io::Result<()> {
        stdin.write_all(&batch)?;
        // The end of stdin: the relay finishes answering, then exits.
        drop(stdin);
        Ok(())
    });
    let mut seen = Vec::new();
    while seen.len() < 51 {
        let answer = read_message(&mut stdout)?;
        let id = answer["id"]
            .as_u64()
            .ok_or_else(|| format!("no id: {answer:.200}"))?;
        match id {
            2 => assert_eq!(answer["result"]["echo"]["blob"].as_str(), Some(&*big)),
            _ => assert_eq!(answer["result"]["echo"]["n"], id, "{answer}"),
        }
        seen.push(id);
    }
    writer.join().map_err(|_| "the writer panicked")??;
    seen.sort_unstable();
    assert_eq!(seen, (2..=52).collect::<Vec<_>>());

    // Nothing more, then the end of stdout, then a clean exit.
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest)?;
    assert!(
        rest.is_empty(),
        "after the answers: {}",
        String::from_utf8_lossy(&rest)
    );
    let status = relay.wait()?;
    assert!(status.success(), "the relay {status}");
    Ok(())
}

/// A client that closes its end of the relay's stdout (and keeps stdin open): the next write
/// fails, the session ends, and the relay exits, its stdin reader still blocked.
fn exits_when_its_client_stops_reading() -> Result<()> {
    let mut relay = start_relay()?;
    let mut stdin = relay.stdin.take().ok_or("no stdin")?;
    drop(relay.stdout.take());
    stdin.write_all(&request(
        1,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "test", "version": "1"}}),
    ))?;
    stdin.flush()?;
    let status = relay.wait()?;
    assert!(status.success(), "the relay {status}");
    drop(stdin);
    Ok(())
}
