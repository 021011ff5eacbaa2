//! A host program that embeds the relay: no tokio, no `mcp-relay` binary.
//!
//! It binds the runtime on 127.0.0.1 (port 0: any free port), runs it on a thread of its own,
//! connects to it as an MCP client over TCP, makes one tool call, then stops the runtime with
//! its [`ShutdownHandle`] and joins the thread. The server the relay runs for each session is
//! this same program started with the argument `echo-server`: a tiny stdio MCP server (see
//! [`echo_server`]) written with nothing but `std` and `serde_json`.
//!
//! Run it with `cargo run -p mcp-relay-runtime --example embedded_host`; `cargo test -p
//! mcp-relay-runtime` runs it too, and it fails (exit status 1) if any step goes wrong.
//!
//! [`ShutdownHandle`]: mcp_relay_runtime::ShutdownHandle

use mcp_relay_core::{Config, Transport};
use mcp_relay_runtime::{CommandSpec, Listen, Runtime, RuntimeConfig};
use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

/// How long the client waits for any one line before it gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the whole run may take.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    // The same executable plays the server when the relay starts it.
    if std::env::args().nth(1).as_deref() == Some("echo-server") {
        return match echo_server() {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    match host() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embedded_host: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The host: start, use, stop.
fn host() -> Result<(), Box<dyn std::error::Error>> {
    // This also runs as a test: whatever goes wrong, it ends.
    thread::spawn(|| {
        thread::sleep(GIVE_UP_AFTER);
        eprintln!("embedded_host: still running after {GIVE_UP_AFTER:?}; giving up");
        std::process::exit(1);
    });
    let config = RuntimeConfig {
        listen: vec![Listen::plain("127.0.0.1:0".parse()?, Transport::Tcp)],
        command: CommandSpec {
            program: std::env::current_exe()?.into_os_string(),
            args: vec!["echo-server".into()],
            ..CommandSpec::default()
        },
        core: Config {
            server_label: "embedded echo server".into(),
            shutdown_grace: Duration::from_secs(1),
            ..Config::default()
        },
        stdio: false,
        commands: Vec::new(),
        tls_client: None,
    };

    // Bind on this thread, so that a bad address is an error here and the bound port is
    // known before anything runs; then the loop gets a thread of its own.
    let runtime = Runtime::bind(config)?;
    let (addr, _) = *runtime
        .local_addrs()
        .first()
        .ok_or("the runtime bound no listener")?;
    let stop = runtime.shutdown_handle();
    let relay = thread::Builder::new()
        .name("mcp-relay".into())
        .spawn(move || runtime.run())?;
    println!("host: the relay listens on tcp://{addr}");

    // Anything the host does; here it is the relay's client.
    let result = call_echo(addr, "hello from the host");

    // Stop and join whatever happened: a graceful shutdown ends the sessions, stops the
    // servers and returns from `run` once they are reaped.
    stop.shutdown();
    let ran = relay.join().map_err(|_| "the relay thread panicked")?;
    ran?;
    println!("host: the relay stopped");

    let text = result?;
    if text != "hello from the host" {
        return Err(format!("the server echoed {text:?}").into());
    }
    Ok(())
}

/// Connects, initializes, calls the `echo` tool once and returns the text it answered.
fn call_echo(addr: std::net::SocketAddr, text: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut lines = BufReader::new(stream.try_clone()?);
    let mut send = |msg: Value| -> io::Result<()> {
        println!("client → relay: {msg}");
        writeln!(stream, "{msg}")
    };
    let mut receive = || -> Result<Value, Box<dyn std::error::Error>> {
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            return Err("the relay closed the connection".into());
        }
        println!("relay → client: {}", line.trim_end());
        Ok(serde_json::from_str(&line)?)
    };

    send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "embedded-host", "version": "0"}}}))?;
    let init = receive()?;
    if init["result"]["serverInfo"]["name"] != "echo" {
        return Err(format!("unexpected initialize answer: {init}").into());
    }
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}}}))?;
    let answer = receive()?;
    answer["result"]["content"][0]["text"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("unexpected tools/call answer: {answer}").into())
}

/// A tiny stdio MCP server: one JSON-RPC message per line on stdin, one answer per request on
/// stdout; `initialize`, `ping` and a `tools/call` that echoes its `text` argument. It ends
/// when stdin does.
fn echo_server() -> io::Result<()> {
    let mut out = io::stdout().lock();
    for line in io::stdin().lock().lines() {
        let Ok(msg) = serde_json::from_str::<Value>(&line?) else {
            continue;
        };
        let Some(id) = msg.get("id").cloned() else {
            continue; // a notification
        };
        let answer = match msg["method"].as_str() {
            Some("initialize") => json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "echo", "version": "0"}}}),
            Some("ping") => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
            Some("tools/call") => json!({"jsonrpc": "2.0", "id": id, "result": {
                "content": [{"type": "text", "text": msg["params"]["arguments"]["text"]}]}}),
            _ => json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": "method not found"}}),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}
