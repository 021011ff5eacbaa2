//! End to end: the relay's secrets are not its servers' to read. A server (same user as the
//! relay) tries `/proc/<relay>/environ`, where the initial environment, bearer token
//! included, would be; the relay is non-dumpable, so it is refused. Nor does the server
//! inherit the token.

mod common;

use common::{Relay, DEADLINE};

/// What the server finds out, on its stderr (which the relay logs). The tag is spelled out
/// at run time so that the relay's own line quoting the command does not match.
const PROBE: &str = r#"
p=probe-result
if out=$(cat "/proc/$PPID/environ" 2>&1 >/dev/null); then
    echo "$p: environ readable" >&2
else
    echo "$p: environ refused: $out" >&2
fi
if [ -n "${MCP_RELAY_AUTH_TOKEN+set}" ]; then
    echo "$p: token inherited" >&2
else
    echo "$p: token not inherited" >&2
fi
exec cat >/dev/null
"#;

const SECRET: &str = "e2e-secret-token-3f9a";

#[test]
fn a_server_cannot_read_the_relays_environment() {
    // As root, CAP_SYS_PTRACE would let the server read it anyway: run as an ordinary user.
    let relay = Relay::builder()
        .unprivileged()
        .env("MCP_RELAY_AUTH_TOKEN", SECRET)
        // A token guards HTTP: without an HTTP listener the relay refuses it.
        .args(["--listen", "http://127.0.0.1:0"])
        .command(["sh", "-c", PROBE])
        .start();
    let _client = relay.connect();
    let environ = relay.wait_log("probe-result: environ", DEADLINE);
    assert!(
        environ.contains("probe-result: environ refused") && environ.contains("Permission denied"),
        "the server could read the relay's environment: {environ}"
    );
    let inherited = relay.wait_log("probe-result: token", DEADLINE);
    assert!(inherited.contains("token not inherited"), "{inherited}");
    assert_eq!(relay.log_count(SECRET), 0, "{}", relay.log_text());
}
