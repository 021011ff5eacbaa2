//! Malformed input from either side. Every non-JSON client line gets -32700 with id null,
//! every other malformed or oversize line -32600 (with its id when it has one), in order;
//! a server's banners and tracebacks never reach the client; an oversize answer becomes
//! -32001 for its request. Whatever the fragmentation.

use mcp_relay_core::message::codes;
use mcp_relay_core::{Config, ConnId, Endpoint, Output};
use mcp_relay_tests::{run_seeds, test_name, Profile, Script, Sim};

#[test]
fn malformed_lines_get_their_errors() {
    run_seeds(
        test_name!("malformed_lines_get_their_errors"),
        80,
        |seed, keep| Sim::new(seed, Profile::malformed(), keep),
        |_| Ok(()),
    );
}

/// A request of exactly `max_message_size` bytes, ending in `\r\n`.
fn line_at_limit(max: usize) -> Vec<u8> {
    let head = br#"{"jsonrpc":"2.0","id":7,"method":"ping","params":{"pad":""#;
    let tail = br#""}}"#;
    let mut line = head.to_vec();
    line.resize(max - tail.len(), b'a');
    line.extend_from_slice(tail);
    assert_eq!(line.len(), max);
    line
}

/// Regression test (fixed) for `crlf-at-limit-depends-on-fragmentation` (core/src/framing.rs, `push`): a line
/// of exactly the limit ending in `\r\n` is accepted when `\r\n` arrives in one read, but
/// rejected as oversize (-32600, "201 bytes") when a read ends between `\r` and `\n`,
/// because the partial-line check counts the `\r`.
#[test]
fn crlf_line_at_the_limit_is_accepted_however_it_is_cut() {
    let max = 200;
    let line = line_at_limit(max);
    let mut wire = line.clone();
    wire.extend_from_slice(b"\r\n");
    let mut expected = line.clone();
    expected.push(b'\n');
    for cut in [wire.len(), wire.len() - 1, wire.len() - 2, 1] {
        let mut s = Script::new(Config {
            max_message_size: max,
            ..Config::default()
        });
        let child = s.accept(1);
        s.spawned(child);
        s.client_data(1, &wire[..cut]);
        s.client_data(1, &wire[cut..]);
        let to_client = s.sent_to(Endpoint::Conn(ConnId(1)));
        assert_eq!(
            s.sent_to(Endpoint::Child(child)),
            expected,
            "a {max}-byte line ending in \\r\\n, cut after byte {cut}, must reach the server \
             as it is; the client got {:?}\n{}",
            String::from_utf8_lossy(&to_client),
            s.show()
        );
        assert!(
            !String::from_utf8_lossy(&to_client).contains(&codes::INVALID_REQUEST.to_string()),
            "cut after byte {cut}: no -32600 for a line within the limit"
        );
        // The relay made up nothing else.
        assert!(!s.log.iter().any(|(_, o)| matches!(o, Output::Close { .. })));
    }
}
