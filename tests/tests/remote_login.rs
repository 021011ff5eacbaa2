//! Client mode with `RemoteConfig::login`: a request the remote refuses for want of a token
//! is held, the driver is asked once to log in (`Output::RemoteLogin`), and the token it
//! answers with (`Input::RemoteToken`) sends the held requests again; a failed login answers
//! them with its error. Driven by hand against a scripted Streamable HTTP remote.

use mcp_relay_core::{
    Config, ConnId, Endpoint, Input, Output, RemoteConfig, RemoteTransport, RemoteUrl, UpId,
};
use mcp_relay_tests::script::{json_response, sent_in, Script};

const STDIO: ConnId = ConnId(1);

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const INIT_OK: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"s","version":"1"}}}"#;
const CHALLENGE: &str = r#"Bearer resource_metadata="http://127.0.0.1:9/.well-known/oauth-protected-resource/mcp", scope="mcp""#;

fn config(login: bool) -> Config {
    Config {
        remote: Some(RemoteConfig {
            urls: vec![RemoteUrl::parse("http://127.0.0.1:9/mcp").unwrap()],
            transport: RemoteTransport::StreamableHttp,
            headers: vec![("X-Api-Key".into(), "k".into())],
            login,
            ..RemoteConfig::default()
        }),
        ping_interval: None,
        ..Config::default()
    }
}

/// The logins asked for: status, challenge, the refused token's generation.
fn logins(out: &[Output]) -> Vec<(u16, Option<String>, u32)> {
    out.iter()
        .filter_map(|o| match o {
            Output::RemoteLogin {
                status,
                challenge,
                generation,
            } => Some((*status, challenge.clone(), *generation)),
            _ => None,
        })
        .collect()
}

fn refusal(status: &str, www: &str) -> String {
    json_response(
        status,
        &format!("WWW-Authenticate: {www}\r\n"),
        r#"{"error":"invalid_token"}"#,
    )
}

struct Run {
    s: Script,
    c: UpId,
}

impl Run {
    /// The relay's stdio client attached, its first connection to the remote open.
    fn new(login: bool) -> Run {
        let mut s = Script::new(config(login));
        let out = s.input(Input::Attached { conn: STDIO });
        let c = out
            .iter()
            .find_map(|o| match o {
                Output::Connect { conn, .. } => Some(*conn),
                _ => None,
            })
            .expect("a connection to the remote");
        s.input(Input::Connected { conn: c });
        Run { s, c }
    }

    fn client(&mut self, line: &str) -> Vec<Output> {
        let out = self.s.client_data(STDIO.0, format!("{line}\n").as_bytes());
        self.ack(&out);
        out
    }

    fn remote(&mut self, data: &str) -> Vec<Output> {
        let out = self.s.input(Input::Data {
            from: Endpoint::Upstream(self.c),
            data: data.as_bytes(),
        });
        self.ack(&out);
        out
    }

    fn token(&mut self, token: Result<&str, &str>) -> Vec<Output> {
        let out = self.s.input(Input::RemoteToken { token });
        self.ack(&out);
        out
    }

    fn ack(&mut self, out: &[Output]) {
        let n = sent_in(out, Endpoint::Upstream(self.c)).len();
        if n > 0 {
            self.s.written(Endpoint::Upstream(self.c), n);
        }
    }

    fn to_client(&self) -> String {
        String::from_utf8_lossy(&self.s.sent_to(Endpoint::Conn(STDIO))).into_owned()
    }
}

#[test]
fn a_401_holds_the_request_asks_once_and_the_token_sends_it_again() {
    let mut r = Run::new(true);
    let out = r.client(INIT);
    let post = sent_in(&out, Endpoint::Upstream(r.c));
    assert!(
        post.ends_with(INIT) && !post.contains("Authorization"),
        "{post}"
    );
    let out = r.remote(&refusal("401 Unauthorized", CHALLENGE));
    assert_eq!(
        logins(&out),
        [(401, Some(CHALLENGE.to_owned()), 0)],
        "{}",
        r.s.show()
    );
    assert_eq!(r.to_client(), "", "held, not answered");
    // The token: the initialize goes again, with it and the configured headers.
    let out = r.token(Ok("T1"));
    let again = sent_in(&out, Endpoint::Upstream(r.c));
    assert!(
        again.contains("\r\nAuthorization: Bearer T1\r\n"),
        "{again}"
    );
    assert!(again.contains("\r\nX-Api-Key: k\r\n"), "{again}");
    assert!(again.ends_with(INIT), "{again}");
    r.remote(&json_response("200 OK", "Mcp-Session-Id: s1\r\n", INIT_OK));
    assert_eq!(r.to_client(), format!("{INIT_OK}\n"));
    // A new token (a refresh) replaces the old one: later requests carry it, alone.
    let out = r.token(Ok("T2"));
    assert!(
        sent_in(&out, Endpoint::Upstream(r.c)).is_empty(),
        "nothing was held"
    );
    let out = r.client(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let post = sent_in(&out, Endpoint::Upstream(r.c));
    assert!(post.contains("\r\nAuthorization: Bearer T2\r\n"), "{post}");
    assert_eq!(post.matches("Authorization:").count(), 1, "{post}");
}

#[test]
fn a_failed_login_answers_the_held_request_with_its_error() {
    let mut r = Run::new(true);
    r.client(INIT);
    let out = r.remote(&refusal("401 Unauthorized", CHALLENGE));
    assert_eq!(logins(&out).len(), 1);
    r.token(Err("the user did not finish in time"));
    let answer = r.to_client();
    assert!(answer.contains(r#""id":1"#), "{answer}");
    assert!(
        answer.contains("the user did not finish in time"),
        "{answer}"
    );
    assert!(answer.contains("login"), "{answer}");
}

#[test]
fn a_step_up_403_is_held_and_a_plain_403_is_not() {
    let mut r = Run::new(true);
    r.client(INIT);
    r.remote(&refusal("401 Unauthorized", CHALLENGE));
    r.token(Ok("T1"));
    r.remote(&json_response("200 OK", "Mcp-Session-Id: s1\r\n", INIT_OK));
    r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}"#);
    let step_up = r#"Bearer error="insufficient_scope", scope="mcp admin""#;
    let out = r.remote(&refusal("403 Forbidden", step_up));
    assert_eq!(logins(&out), [(403, Some(step_up.to_owned()), 1)]);
    let out = r.token(Ok("T2"));
    let again = sent_in(&out, Endpoint::Upstream(r.c));
    assert!(
        again.contains("Bearer T2") && again.contains(r#""id":2"#),
        "{again}"
    );
    // Forbidden for another reason: the client gets the refusal, no login is asked.
    let out = r.remote(&refusal("403 Forbidden", r#"Bearer error="forbidden""#));
    assert!(logins(&out).is_empty());
    assert!(r.to_client().contains("HTTP 403"), "{}", r.to_client());
}

#[test]
fn a_request_refused_after_every_login_gets_an_error_in_the_end() {
    let mut r = Run::new(true);
    r.client(INIT);
    let mut asked = 0;
    for i in 0..10 {
        let out = r.remote(&refusal("401 Unauthorized", CHALLENGE));
        if logins(&out).is_empty() {
            break;
        }
        asked += 1;
        r.token(Ok(&format!("T{i}")));
    }
    assert_eq!(asked, 3, "three logins for one request, then its refusal");
    let answer = r.to_client();
    assert!(
        answer.contains(r#""id":1"#) && answer.contains("HTTP 401"),
        "{answer}"
    );
}

#[test]
fn without_login_a_401_is_answered_at_once() {
    let mut r = Run::new(false);
    r.client(INIT);
    let out = r.remote(&refusal("401 Unauthorized", CHALLENGE));
    assert!(logins(&out).is_empty());
    let answer = r.to_client();
    assert!(
        answer.contains("HTTP 401") && answer.contains("--bearer-token"),
        "{answer}"
    );
}

#[test]
fn a_request_refused_with_a_token_replaced_since_goes_again_without_a_login() {
    let mut r = Run::new(true);
    let out = r.client(INIT);
    assert!(!sent_in(&out, Endpoint::Upstream(r.c)).contains("Authorization"));
    // A refresh lands while the initialize is out with no token (generation 0).
    let out = r.token(Ok("T1"));
    assert!(sent_in(&out, Endpoint::Upstream(r.c)).is_empty());
    let out = r.remote(&refusal("401 Unauthorized", CHALLENGE));
    assert!(
        logins(&out).is_empty(),
        "no login for an old token's refusal"
    );
    let again = sent_in(&out, Endpoint::Upstream(r.c));
    assert!(
        again.contains("\r\nAuthorization: Bearer T1\r\n") && again.ends_with(INIT),
        "{again}"
    );
    // Refused with T1 too: now a login, naming generation 1.
    let out = r.remote(&refusal("401 Unauthorized", CHALLENGE));
    assert_eq!(logins(&out), [(401, Some(CHALLENGE.to_owned()), 1)]);
}
