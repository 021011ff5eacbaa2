//! The OAuth machine of client mode (`mcp_relay_core::auth`) against scripted servers: each
//! test names the URLs that answer and what they answer; everything else is a 404. Time is
//! the fake clock's: the core reads none.

use mcp_relay_core::auth::*;
use mcp_relay_tests::clock::Clock;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The tests' origin of time (the fake clock's start), only ever passed in as `now`.
fn t0() -> Instant {
    Clock::new().now()
}

const SERVER: &str = "https://mcp.example/api/mcp";
const REDIRECT: &str = "http://127.0.0.1:33418/callback";

/// A stand-in hash: the test checks the challenge is derived from the verifier through it.
fn fake_sha(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in data.iter().enumerate() {
        out[i % 32] = out[i % 32].wrapping_mul(31).wrapping_add(*b);
    }
    out
}

fn config() -> AuthConfig {
    AuthConfig {
        server_url: SERVER.into(),
        redirect_uri: REDIRECT.into(),
        client_id: None,
        client_secret: None,
        client_metadata_url: None,
        client_name: "mcp-relay".into(),
        max_authorizations: 3,
        login_timeout: Duration::from_secs(300),
        sha256: fake_sha,
        seed: [7; 32],
    }
}

fn prm(resource: &str, extra: Value) -> Value {
    let mut v = json!({
        "resource": resource,
        "authorization_servers": ["https://auth.example/tenant"],
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v
}

fn asm(extra: Value) -> Value {
    let mut v = json!({
        "issuer": "https://auth.example/tenant",
        "authorization_endpoint": "https://auth.example/tenant/authorize",
        "token_endpoint": "https://auth.example/tenant/token",
        "registration_endpoint": "https://auth.example/tenant/register",
        "code_challenge_methods_supported": ["S256"],
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v
}

/// A scripted network: URL → (status, body). Records every request.
struct Net {
    routes: BTreeMap<String, (u16, String)>,
    seen: Vec<AuthRequest>,
}

impl Net {
    fn new(routes: &[(&str, u16, Value)]) -> Net {
        Net {
            routes: routes
                .iter()
                .map(|(u, s, b)| (u.to_string(), (*s, b.to_string())))
                .collect(),
            seen: Vec::new(),
        }
    }

    fn urls(&self) -> Vec<String> {
        self.seen.iter().map(|r| r.url.clone()).collect()
    }

    /// Drains the machine, answering its fetches, until it asks for something else.
    /// Bounded: a machine that keeps fetching fails the test.
    fn run(&mut self, m: &mut OAuth, now: Instant) -> AuthOutput {
        for _ in 0..50 {
            match m.poll_output() {
                Some(AuthOutput::Fetch(req)) => {
                    let (status, body) = self
                        .routes
                        .get(req.url.split('?').next().unwrap_or(""))
                        .cloned()
                        .unwrap_or((404, "not found".into()));
                    let id = req.id;
                    self.seen.push(req);
                    m.handle_response(now, id, status, body.as_bytes());
                }
                Some(other) => return other,
                None => panic!("the machine went quiet; requests: {:#?}", self.urls()),
            }
        }
        panic!("more than 50 steps");
    }
}

fn authorize_url(out: AuthOutput) -> (Url, BTreeMap<String, String>) {
    let AuthOutput::Authorize(url) = out else {
        panic!("expected an authorization URL, got {out:?}");
    };
    let u = Url::parse(&url).unwrap();
    let q = parse_query(u.query.as_deref().unwrap_or(""))
        .into_iter()
        .collect();
    (u, q)
}

fn standard_routes() -> Vec<(&'static str, u16, Value)> {
    vec![
        (
            "https://mcp.example/.well-known/oauth-protected-resource/api/mcp",
            200,
            prm(
                SERVER,
                json!({"scopes_supported": ["mcp:read", "mcp:write"]}),
            ),
        ),
        (
            "https://auth.example/.well-known/oauth-authorization-server/tenant",
            200,
            asm(json!({})),
        ),
        (
            "https://auth.example/tenant/register",
            201,
            json!({"client_id": "dyn-1"}),
        ),
        (
            "https://auth.example/tenant/token",
            200,
            json!({"access_token": "AT1", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "RT1"}),
        ),
    ]
}

/// Runs a login to the redirect and returns (machine, net, authorize params).
fn login_to_redirect(
    cfg: AuthConfig,
    routes: &[(&str, u16, Value)],
    www: Option<&str>,
    now: Instant,
) -> (OAuth, Net, BTreeMap<String, String>) {
    let mut m = OAuth::new(cfg, None);
    let mut net = Net::new(routes);
    m.handle_challenge(now, 401, www);
    let (_, q) = authorize_url(net.run(&mut m, now));
    (m, net, q)
}

fn finish(m: &mut OAuth, net: &mut Net, q: &BTreeMap<String, String>, now: Instant) -> AuthOutput {
    let query = format!(
        "code=C1&state={}&iss={}",
        percent_encode(&q["state"]),
        percent_encode("https://auth.example/tenant")
    );
    m.handle_redirect(now, &query);
    net.run(m, now)
}

#[test]
fn full_login_with_dynamic_registration() {
    let now = t0();
    let (mut m, mut net, q) = login_to_redirect(config(), &standard_routes(), Some("Bearer"), now);
    assert_eq!(
        net.urls(),
        [
            "https://mcp.example/.well-known/oauth-protected-resource/api/mcp",
            "https://auth.example/.well-known/oauth-authorization-server/tenant",
            "https://auth.example/tenant/register",
        ]
    );
    let reg: Value = serde_json::from_slice(&net.seen[2].body).unwrap();
    assert_eq!(reg["redirect_uris"], json!([REDIRECT]));
    assert_eq!(
        reg["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(reg["application_type"], "native");
    assert_eq!(q["client_id"], "dyn-1");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["resource"], SERVER);
    assert_eq!(q["redirect_uri"], REDIRECT);
    assert_eq!(
        q["scope"], "mcp:read mcp:write",
        "scopes_supported when the challenge has none"
    );
    assert!(q["state"].len() >= 16);

    let out = finish(&mut m, &mut net, &q, now);
    let AuthOutput::Tokens(t) = out else {
        panic!("{out:?}")
    };
    assert_eq!(t.access_token, "AT1");
    assert_eq!(t.refresh_token.as_deref(), Some("RT1"));
    assert_eq!(t.expires_at, Some(now + Duration::from_secs(3600)));
    assert_eq!(m.access_token(now), Some("AT1"));
    assert_eq!(m.access_token(now + Duration::from_secs(3600)), None);
    assert_eq!(
        m.refresh_at(),
        Some(now + Duration::from_secs(3600) - REFRESH_EARLY)
    );

    let token_req = net.seen.last().unwrap();
    let form: BTreeMap<_, _> = parse_query(std::str::from_utf8(&token_req.body).unwrap())
        .into_iter()
        .collect();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "C1");
    assert_eq!(form["client_id"], "dyn-1");
    assert_eq!(form["resource"], SERVER);
    assert_eq!(form["redirect_uri"], REDIRECT);
    // PKCE: the challenge sent on authorize is base64url(sha256(verifier sent on token)).
    assert_eq!(
        base64url(&fake_sha(form["code_verifier"].as_bytes())),
        q["code_challenge"]
    );
    assert!(form["code_verifier"].len() >= 43);
    assert!(!token_req.headers.iter().any(|(k, _)| k == "Authorization"));
    assert!(!m.busy());
    assert_eq!(m.poll_output(), None);
}

#[test]
fn resource_metadata_parameter_comes_first_then_well_known_order() {
    let now = t0();
    let mut m = OAuth::new(config(), None);
    let mut net = Net::new(&[]);
    m.handle_challenge(
        now,
        401,
        Some(r#"Bearer resource_metadata="https://mcp.example/custom/prm""#),
    );
    let out = net.run(&mut m, now);
    // Nothing found anywhere: the 2025-03-26 fallback, then default endpoints at the origin,
    // then registration there fails (404).
    assert!(
        matches!(out, AuthOutput::Failed(AuthError::Registration(_))),
        "{out:?}"
    );
    assert_eq!(
        net.urls(),
        [
            "https://mcp.example/custom/prm",
            "https://mcp.example/.well-known/oauth-protected-resource/api/mcp",
            "https://mcp.example/.well-known/oauth-protected-resource",
            "https://mcp.example/.well-known/oauth-authorization-server",
            "https://mcp.example/register",
        ]
    );
}

#[test]
fn authorization_server_discovery_is_path_aware_in_the_spec_order() {
    let now = t0();
    let routes = vec![
        (
            "https://mcp.example/.well-known/oauth-protected-resource/api/mcp",
            200,
            prm(SERVER, json!({})),
        ),
        (
            "https://auth.example/tenant/.well-known/openid-configuration",
            200,
            asm(json!({})),
        ),
        (
            "https://auth.example/tenant/register",
            201,
            json!({"client_id": "c"}),
        ),
    ];
    let (_, net, q) = login_to_redirect(config(), &routes, None, now);
    assert_eq!(
        net.urls()[1..4],
        [
            "https://auth.example/.well-known/oauth-authorization-server/tenant",
            "https://auth.example/.well-known/openid-configuration/tenant",
            "https://auth.example/tenant/.well-known/openid-configuration",
        ]
    );
    assert!(
        !q.contains_key("scope"),
        "no challenge scope, no scopes_supported: none"
    );

    // An issuer without a path: RFC 8414 first, then OpenID.
    let mut routes = routes;
    routes[0].2 = json!({"resource": SERVER, "authorization_servers": ["https://auth.example"]});
    routes[1] = (
        "https://auth.example/.well-known/openid-configuration",
        200,
        asm(
            json!({"issuer": "https://auth.example", "registration_endpoint": "https://auth.example/tenant/register"}),
        ),
    );
    let (_, net, _) = login_to_redirect(config(), &routes, None, now);
    assert_eq!(
        net.urls()[1..3],
        [
            "https://auth.example/.well-known/oauth-authorization-server",
            "https://auth.example/.well-known/openid-configuration",
        ]
    );
}

#[test]
fn legacy_fallback_uses_origin_metadata_or_default_endpoints() {
    let now = t0();
    let routes = [
        (
            "https://mcp.example/.well-known/oauth-authorization-server",
            200,
            json!({
                "issuer": "https://mcp.example",
                "authorization_endpoint": "https://mcp.example/oauth/authorize",
                "token_endpoint": "https://mcp.example/oauth/token",
                "registration_endpoint": "https://mcp.example/oauth/register",
                "code_challenge_methods_supported": ["S256"],
            }),
        ),
        (
            "https://mcp.example/oauth/register",
            201,
            json!({"client_id": "legacy"}),
        ),
    ];
    let (_, _, q) = login_to_redirect(config(), &routes, None, now);
    assert_eq!(q["client_id"], "legacy");
    assert_eq!(q["resource"], SERVER);

    let routes = [(
        "https://mcp.example/register",
        201,
        json!({"client_id": "dflt"}),
    )];
    let (mut m, mut net, q) = login_to_redirect(config(), &routes, None, now);
    assert_eq!(q["client_id"], "dflt");
    m.handle_redirect(now, &format!("code=x&state={}", q["state"]));
    assert!(matches!(
        net.run(&mut m, now),
        AuthOutput::Failed(AuthError::Token(_))
    ));
    assert_eq!(net.urls().last().unwrap(), "https://mcp.example/token");
}

#[test]
fn challenge_scope_wins_and_offline_access_only_where_offered() {
    let now = t0();
    let (_, _, q) = login_to_redirect(
        config(),
        &standard_routes(),
        Some(r#"Bearer scope="mcp:read""#),
        now,
    );
    assert_eq!(q["scope"], "mcp:read");

    let mut routes = standard_routes();
    routes[1].2 = asm(json!({"scopes_supported": ["mcp:read", "offline_access"]}));
    let (_, _, q) = login_to_redirect(config(), &routes, Some(r#"Bearer scope="mcp:read""#), now);
    assert_eq!(q["scope"], "mcp:read offline_access");
}

#[test]
fn a_resource_naming_another_resource_is_refused() {
    let now = t0();
    let mut routes = standard_routes();
    routes[0].2 = prm("https://evil.example/mcp", json!({}));
    let mut m = OAuth::new(config(), None);
    let mut net = Net::new(&routes);
    m.handle_challenge(now, 401, None);
    assert_eq!(
        net.run(&mut m, now),
        AuthOutput::Failed(AuthError::ResourceMismatch {
            resource: "https://evil.example/mcp".into()
        })
    );
    assert_eq!(net.seen.len(), 1, "nothing after the refusal");
    // A resource covering the server (its parent path) is accepted and sent as is.
    routes[0].2 = prm("https://mcp.example/api", json!({}));
    let (_, _, q) = login_to_redirect(config(), &routes, None, now);
    assert_eq!(q["resource"], "https://mcp.example/api");
}

#[test]
fn no_pkce_no_login() {
    let now = t0();
    let mut routes = standard_routes();
    routes[1].2 = asm(json!({"code_challenge_methods_supported": ["plain"]}));
    let mut m = OAuth::new(config(), None);
    let mut net = Net::new(&routes);
    m.handle_challenge(now, 401, None);
    assert_eq!(net.run(&mut m, now), AuthOutput::Failed(AuthError::NoPkce));
}

#[test]
fn pre_registered_client_with_basic_or_post() {
    let now = t0();
    let cfg = AuthConfig {
        client_id: Some("pre id".into()),
        client_secret: Some("s&cret".into()),
        ..config()
    };
    let mut routes = standard_routes();
    routes[1].2 = asm(json!({"token_endpoint_auth_methods_supported": ["client_secret_basic"]}));
    let (mut m, mut net, q) = login_to_redirect(cfg.clone(), &routes, None, now);
    assert_eq!(q["client_id"], "pre id");
    assert!(
        !net.urls().iter().any(|u| u.ends_with("/register")),
        "no registration"
    );
    assert!(matches!(
        finish(&mut m, &mut net, &q, now),
        AuthOutput::Tokens(_)
    ));
    let req = net.seen.last().unwrap();
    let auth = &req
        .headers
        .iter()
        .find(|(k, _)| k == "Authorization")
        .unwrap()
        .1;
    assert_eq!(auth, &format!("Basic {}", base64(b"pre%20id:s%26cret")));
    let body = String::from_utf8(req.body.clone()).unwrap();
    assert!(
        !body.contains("client_secret") && !body.contains("client_id"),
        "{body}"
    );

    routes[1].2 = asm(json!({"token_endpoint_auth_methods_supported": ["client_secret_post"]}));
    let (mut m, mut net, q) = login_to_redirect(cfg, &routes, None, now);
    assert!(matches!(
        finish(&mut m, &mut net, &q, now),
        AuthOutput::Tokens(_)
    ));
    let req = net.seen.last().unwrap();
    assert!(!req.headers.iter().any(|(k, _)| k == "Authorization"));
    let form: BTreeMap<_, _> = parse_query(std::str::from_utf8(&req.body).unwrap())
        .into_iter()
        .collect();
    assert_eq!(form["client_id"], "pre id");
    assert_eq!(form["client_secret"], "s&cret");
}

#[test]
fn registration_answer_decides_the_token_endpoint_auth() {
    let now = t0();
    let mut routes = standard_routes();
    routes[2].2 = json!({"client_id": "c", "client_secret": "x", "token_endpoint_auth_method": "client_secret_post"});
    let (mut m, mut net, q) = login_to_redirect(config(), &routes, None, now);
    assert!(matches!(
        finish(&mut m, &mut net, &q, now),
        AuthOutput::Tokens(_)
    ));
    let body = String::from_utf8(net.seen.last().unwrap().body.clone()).unwrap();
    assert!(body.contains("client_secret=x"), "{body}");
    let saved = m.saved();
    assert_eq!(saved.client_auth, Some(ClientAuth::ClientSecretPost));
    assert!(saved.registered);
}

#[test]
fn client_metadata_document_when_supported_else_registration() {
    let now = t0();
    let cfg = AuthConfig {
        client_metadata_url: Some("https://relay.example/client.json".into()),
        ..config()
    };
    let mut routes = standard_routes();
    routes[1].2 = asm(json!({"client_id_metadata_document_supported": true}));
    let (_, net, q) = login_to_redirect(cfg.clone(), &routes, None, now);
    assert_eq!(q["client_id"], "https://relay.example/client.json");
    assert!(!net.urls().iter().any(|u| u.ends_with("/register")));
    let (_, _, q) = login_to_redirect(cfg, &standard_routes(), None, now);
    assert_eq!(q["client_id"], "dyn-1");
}

#[test]
fn no_client_identity_fails_clearly() {
    let now = t0();
    let mut routes = standard_routes();
    routes[1].2 = json!({
        "issuer": "https://auth.example/tenant",
        "authorization_endpoint": "https://auth.example/tenant/authorize",
        "token_endpoint": "https://auth.example/tenant/token",
        "code_challenge_methods_supported": ["S256"],
    });
    let mut m = OAuth::new(config(), None);
    let mut net = Net::new(&routes);
    m.handle_challenge(now, 401, None);
    assert_eq!(
        net.run(&mut m, now),
        AuthOutput::Failed(AuthError::NoClientIdentity)
    );
}

#[test]
fn redirect_checks_state_iss_and_errors() {
    let now = t0();
    let mut routes = standard_routes();
    routes[1].2 = asm(json!({"authorization_response_iss_parameter_supported": true}));
    let (mut m, _net, q) = login_to_redirect(config(), &routes, None, now);
    // A wrong state is ignored: the login keeps waiting.
    m.handle_redirect(now, "code=x&state=forged");
    assert_eq!(m.poll_output(), None);
    assert!(m.busy());
    // The issuer promised iss: its absence fails the login.
    m.handle_redirect(now, &format!("code=x&state={}", q["state"]));
    assert!(matches!(
        m.poll_output(),
        Some(AuthOutput::Failed(AuthError::BadRedirect(_)))
    ));

    let (mut m, _, q) = login_to_redirect(config(), &standard_routes(), None, now);
    m.handle_redirect(
        now,
        &format!(
            "code=x&state={}&iss=https%3A%2F%2Fmallory.example",
            q["state"]
        ),
    );
    assert!(matches!(
        m.poll_output(),
        Some(AuthOutput::Failed(AuthError::BadRedirect(_)))
    ));

    let (mut m, _, q) = login_to_redirect(config(), &standard_routes(), None, now);
    m.handle_redirect(
        now,
        &format!(
            "error=access_denied&error_description=no+way&state={}",
            q["state"]
        ),
    );
    assert_eq!(
        m.poll_output(),
        Some(AuthOutput::Failed(AuthError::Denied(
            "access_denied no way".into()
        )))
    );
}

#[test]
fn token_errors_are_reported() {
    let now = t0();
    let mut routes = standard_routes();
    routes[3] = (
        "https://auth.example/tenant/token",
        400,
        json!({"error": "invalid_grant", "error_description": "code expired"}),
    );
    let (mut m, mut net, q) = login_to_redirect(config(), &routes, None, now);
    assert_eq!(
        finish(&mut m, &mut net, &q, now),
        AuthOutput::Failed(AuthError::Token(
            "HTTP 400: invalid_grant code expired".into()
        ))
    );
    routes[3].2 = json!({"access_token": "x", "token_type": "DPoP"});
    routes[3].1 = 200;
    let (mut m, mut net, q) = login_to_redirect(config(), &routes, None, now);
    assert!(matches!(
        finish(&mut m, &mut net, &q, now),
        AuthOutput::Failed(AuthError::Token(_))
    ));
}

fn logged_in(routes: &[(&str, u16, Value)], now: Instant) -> (OAuth, Net) {
    let (mut m, mut net, q) = login_to_redirect(config(), routes, None, now);
    assert!(matches!(
        finish(&mut m, &mut net, &q, now),
        AuthOutput::Tokens(_)
    ));
    (m, net)
}

#[test]
fn a_401_with_a_refresh_token_refreshes_and_keeps_the_refresh_token() {
    let now = t0();
    let (mut m, mut net) = logged_in(&standard_routes(), now);
    net.routes.insert(
        "https://auth.example/tenant/token".into(),
        (
            200,
            json!({"access_token": "AT2", "token_type": "bearer", "expires_in": 60}).to_string(),
        ),
    );
    let later = now + Duration::from_secs(10);
    m.handle_challenge(later, 401, Some("Bearer error=\"invalid_token\""));
    let AuthOutput::Tokens(t) = net.run(&mut m, later) else {
        panic!()
    };
    assert_eq!(t.access_token, "AT2");
    assert_eq!(
        t.refresh_token.as_deref(),
        Some("RT1"),
        "kept when not rotated"
    );
    assert_eq!(t.scope.as_deref(), Some("mcp:read mcp:write"));
    let req = net.seen.last().unwrap();
    let form: BTreeMap<_, _> = parse_query(std::str::from_utf8(&req.body).unwrap())
        .into_iter()
        .collect();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "RT1");
    assert_eq!(form["resource"], SERVER);
    assert_eq!(form["client_id"], "dyn-1");
    // Expiry 60 s: refresh is due right away (a minute early), not in the past forever.
    assert_eq!(m.refresh_at(), Some(later));
}

#[test]
fn a_refused_refresh_logs_in_again_once() {
    let now = t0();
    let (mut m, mut net) = logged_in(&standard_routes(), now);
    net.routes.insert(
        "https://auth.example/tenant/token".into(),
        (400, json!({"error": "invalid_grant"}).to_string()),
    );
    assert!(m.refresh(now));
    // Refused: a new login, reusing the registration (no second /register).
    let registrations = |n: &Net| n.urls().iter().filter(|u| u.ends_with("/register")).count();
    let (_, q) = authorize_url(net.run(&mut m, now));
    assert_eq!(registrations(&net), 1);
    // Its token request is refused too: a failure, not another login.
    m.handle_redirect(now, &format!("code=x&state={}", q["state"]));
    assert!(matches!(
        net.run(&mut m, now),
        AuthOutput::Failed(AuthError::Token(_))
    ));
    assert_eq!(m.poll_output(), None);
}

#[test]
fn step_up_keeps_granted_scopes_and_has_a_limit() {
    let now = t0();
    let mut routes = standard_routes();
    routes[3].2 = json!({"access_token": "AT1", "token_type": "Bearer", "scope": "mcp:read"});
    let (mut m, mut net, q) =
        login_to_redirect(config(), &routes, Some(r#"Bearer scope="mcp:read""#), now);
    assert!(matches!(
        finish(&mut m, &mut net, &q, now),
        AuthOutput::Tokens(_)
    ));
    // A plain 403 is not a step-up.
    m.handle_challenge(now, 403, Some("Bearer error=\"forbidden\""));
    assert_eq!(m.poll_output(), None);
    m.handle_challenge(
        now,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="mcp:admin""#),
    );
    let (_, q) = authorize_url(net.run(&mut m, now));
    assert_eq!(q["scope"], "mcp:read mcp:admin");
    assert!(matches!(
        finish(&mut m, &mut net, &q, now),
        AuthOutput::Tokens(_)
    ));
    // Third authorization is allowed (max 3), the fourth is refused.
    m.handle_challenge(
        now,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="mcp:admin""#),
    );
    let (_, q) = authorize_url(net.run(&mut m, now));
    assert!(matches!(
        finish(&mut m, &mut net, &q, now),
        AuthOutput::Tokens(_)
    ));
    m.handle_challenge(
        now,
        403,
        Some(r#"Bearer error="insufficient_scope", scope="mcp:admin""#),
    );
    assert_eq!(
        m.poll_output(),
        Some(AuthOutput::Failed(AuthError::TooManyAttempts))
    );
}

#[test]
fn a_pending_login_times_out_and_challenges_meanwhile_are_ignored() {
    let now = t0();
    let (mut m, _, _) = login_to_redirect(config(), &standard_routes(), None, now);
    m.handle_challenge(now, 401, None);
    assert_eq!(m.poll_output(), None, "one login at a time");
    assert_eq!(m.poll_timeout(), Some(now + Duration::from_secs(300)));
    m.handle_timeout(now + Duration::from_secs(299));
    assert_eq!(m.poll_output(), None);
    m.handle_timeout(now + Duration::from_secs(300));
    assert_eq!(
        m.poll_output(),
        Some(AuthOutput::Failed(AuthError::Timeout))
    );
    assert_eq!(m.poll_timeout(), None);
    assert!(!m.busy());
}

#[test]
fn stale_and_failed_fetches() {
    let now = t0();
    let mut m = OAuth::new(config(), None);
    m.handle_challenge(now, 401, None);
    let Some(AuthOutput::Fetch(first)) = m.poll_output() else {
        panic!()
    };
    // A response with another id is ignored.
    m.handle_response(now, first.id + 7, 200, b"{}");
    assert_eq!(m.poll_output(), None);
    // An unreachable candidate is skipped like a 404.
    m.handle_fetch_failed(now, first.id, "connection refused");
    let Some(AuthOutput::Fetch(second)) = m.poll_output() else {
        panic!()
    };
    assert_eq!(
        second.url,
        "https://mcp.example/.well-known/oauth-protected-resource"
    );
}

#[test]
fn saved_state_round_trips_and_skips_discovery() {
    let now = t0();
    let (m, _) = logged_in(&standard_routes(), now);
    let saved = m.saved();
    let text = serde_json::to_string(&saved).unwrap();
    let mut back: Saved = serde_json::from_str(&text).unwrap();
    assert_eq!(
        back.tokens.as_ref().unwrap().expires_at,
        None,
        "expiry is the runtime's"
    );
    back.tokens.as_mut().unwrap().expires_at = Some(now + Duration::from_secs(5));
    let mut m2 = OAuth::new(config(), Some(back));
    assert_eq!(m2.access_token(now), Some("AT1"));
    let mut net = Net::new(&standard_routes());
    assert!(m2.refresh(now));
    assert!(matches!(net.run(&mut m2, now), AuthOutput::Tokens(_)));
    assert_eq!(
        net.urls(),
        ["https://auth.example/tenant/token"],
        "no discovery"
    );
    // Debug output never shows tokens.
    let shown = format!("{:?}", m2.saved());
    assert!(!shown.contains("AT1") && !shown.contains("RT1"), "{shown}");
}

#[test]
fn same_seed_same_login() {
    let now = t0();
    let (_, _, a) = login_to_redirect(config(), &standard_routes(), None, now);
    let (_, _, b) = login_to_redirect(config(), &standard_routes(), None, now);
    assert_eq!(a, b);
    let other = AuthConfig {
        seed: [8; 32],
        ..config()
    };
    let (_, _, c) = login_to_redirect(other, &standard_routes(), None, now);
    assert_ne!(a["state"], c["state"]);
    assert_ne!(a["code_challenge"], c["code_challenge"]);
}

#[test]
fn a_move_to_another_authorization_server_registers_again() {
    let now = t0();
    let (m, _) = logged_in(&standard_routes(), now);
    let saved = m.saved();
    assert_eq!(saved.client_id.as_deref(), Some("dyn-1"));
    // The resource now names another authorization server; the old tokens are refused.
    let routes = [
        (
            "https://mcp.example/.well-known/oauth-protected-resource/api/mcp",
            200,
            json!({"resource": SERVER, "authorization_servers": ["https://new-auth.example"]}),
        ),
        (
            "https://new-auth.example/.well-known/oauth-authorization-server",
            200,
            json!({
                "issuer": "https://new-auth.example",
                "authorization_endpoint": "https://new-auth.example/authorize",
                "token_endpoint": "https://new-auth.example/token",
                "registration_endpoint": "https://new-auth.example/register",
                "code_challenge_methods_supported": ["S256"],
            }),
        ),
        (
            "https://new-auth.example/register",
            201,
            json!({"client_id": "dyn-2"}),
        ),
        (
            "https://auth.example/tenant/token",
            400,
            json!({"error": "invalid_grant"}),
        ),
    ];
    let mut m2 = OAuth::new(config(), Some(saved));
    let mut net = Net::new(&routes);
    m2.handle_challenge(now, 401, None);
    let (u, q) = authorize_url(net.run(&mut m2, now));
    assert_eq!(u.authority, "new-auth.example");
    assert_eq!(
        q["client_id"], "dyn-2",
        "the old server's client id is not reused"
    );
    assert!(net
        .urls()
        .contains(&"https://new-auth.example/register".to_owned()));
}
