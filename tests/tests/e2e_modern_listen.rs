//! `subscriptions/listen` through the 2026-07-28 bridge, in front of the session-era fixture
//! server (tests/fixtures/legacy_server.py): the acknowledgement comes first and names what the
//! server can send; list changes and updates of watched resources arrive tagged with the
//! subscription's id, and nothing the client did not ask for does.

mod http_support;

use http_support::{send_modern, skip, HttpRelay};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/legacy_server.py")
}

fn python_missing() -> Option<String> {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then(|| "python3 is not installed".to_owned())
}

fn call(relay: &HttpRelay, id: i64, tool: &str, arguments: Value) -> Value {
    let mut conn = relay.connect();
    send_modern(
        &mut conn,
        id,
        "tools/call",
        Some(tool),
        json!({"name": tool, "arguments": arguments}),
        json!({}),
    );
    let response = conn.read_response();
    response
        .messages()
        .into_iter()
        .find(|m| m["id"] == json!(id))
        .unwrap_or_else(|| panic!("no answer to {tool}: {}", response.text()))
}

#[test]
#[ignore = "interop: needs the peers of README's Tests section; run with --include-ignored"]
fn listen_streams_carry_what_was_asked_for_tagged_with_their_id() {
    let test = "listen_streams_carry_what_was_asked_for_tagged_with_their_id";
    if let Some(why) = python_missing() {
        return skip(test, &why);
    }
    // One server process, so that the tool calls below reach the process that watches.
    let relay = HttpRelay::builder()
        .command(["python3".as_ref(), fixture().as_os_str()])
        .args(["--stateless-pool", "1"])
        .start();
    let mut listen = relay.connect();
    listen.set_read_timeout(Duration::from_secs(20));
    send_modern(
        &mut listen,
        77,
        "subscriptions/listen",
        None,
        json!({"notifications": {
            "toolsListChanged": true,
            "resourceSubscriptions": ["test://watched-resource"],
        }}),
        json!({}),
    );
    let head = listen.read_head();
    assert_eq!(head.status, 200, "{test}: the listen request was refused");
    let ack = listen.next_event().expect("an acknowledgement").json();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{test}: {ack}"
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true, "resourceSubscriptions": ["test://watched-resource"]}),
        "{test}: {ack}"
    );
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 77,
        "{test}: {ack}"
    );

    // The relay subscribed the server: an update of the watched resource reaches the stream.
    let done = call(
        &relay,
        1,
        "test_trigger_resource_update",
        json!({"uri": "test://watched-resource"}),
    );
    assert!(
        done["result"]["content"].to_string().contains("updated"),
        "{test}: the server was not subscribed: {done}"
    );
    let update = listen.next_event().expect("a resource update").json();
    assert_eq!(
        update["method"], "notifications/resources/updated",
        "{test}: {update}"
    );
    assert_eq!(update["params"]["uri"], "test://watched-resource");
    assert_eq!(
        update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 77,
        "{test}: {update}"
    );

    // Prompt changes were not asked for; tool changes were. The prompt change goes first, so
    // that a leak would be the next event.
    call(&relay, 2, "test_trigger_prompt_change", json!({}));
    call(&relay, 3, "test_trigger_tool_change", json!({}));
    let next = listen.next_event().expect("a tool list change").json();
    assert_eq!(
        next["method"], "notifications/tools/list_changed",
        "{test}: {next}"
    );
    assert_eq!(
        next["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 77,
        "{test}: {next}"
    );
}
