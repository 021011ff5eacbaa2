//! End to end: a server's stderr cannot rewrite the operator's terminal. Control characters
//! in the lines the relay logs for it come out escaped.

mod common;

use common::{Relay, DEADLINE};

#[test]
fn control_characters_in_server_stderr_are_escaped() {
    // An OSC sequence that sets the terminal's title, a bell, and a carriage return that
    // would let "real" overwrite "fake" on screen.
    let relay = Relay::builder()
        .command([
            "sh",
            "-c",
            r"printf '\033]0;pwned\007fake\rreal\n' >&2; exec cat >/dev/null",
        ])
        .start();
    let _client = relay.connect();
    let line = relay.wait_log(r"\x1b]0;pwned\x07fake\rreal", DEADLINE);
    assert!(line.contains("pid "), "not the server's line: {line}");
    let raw: Vec<String> = relay
        .log_lines()
        .into_iter()
        .filter(|l| l.contains(['\x1b', '\x07', '\r']))
        .collect();
    assert!(raw.is_empty(), "raw control characters in the log: {raw:?}");
}
