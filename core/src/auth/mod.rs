//! OAuth 2.1 for client mode, as the MCP authorization specification (2025-11-25) has it:
//! a sans-IO machine that logs in to a remote server's authorization server.
//!
//! It opens nothing and reads no clock: it says which HTTP requests to make
//! ([`AuthOutput::Fetch`]) and takes their responses ([`OAuth::handle_response`]); it says
//! which authorization URL the user must open ([`AuthOutput::Authorize`]) and takes the query
//! of the redirect that comes back ([`OAuth::handle_redirect`]); `now` is always an argument.
//! PKCE verifiers and `state` come from a ChaCha20 stream seeded by the caller (the runtime
//! seeds it from the OS), and SHA-256 is handed in ([`AuthConfig::sha256`]) so that the core
//! needs no hashing crate.
//!
//! The flow, after a `401` (or a `403 insufficient_scope`) from the resource:
//! 1. protected resource metadata (RFC 9728): the challenge's `resource_metadata`, else
//!    `/.well-known/oauth-protected-resource` + the server's path, else at the root. Its
//!    `resource` must cover the server's URL; a metadata naming another resource is refused.
//!    When none is found, the 2025-03-26 fallback: the server's origin is the issuer.
//! 2. authorization server metadata (RFC 8414 and OpenID Connect discovery, path-aware, in
//!    the spec's order); with the fallback, `/authorize`, `/token` and `/register` at the
//!    origin when even that is missing.
//! 3. client identity: pre-registered, else a Client ID Metadata Document when the server
//!    supports it, else dynamic client registration (RFC 7591).
//! 4. authorization code with PKCE S256, `state`, the RFC 8707 `resource`, the RFC 9207 `iss`
//!    checked; scopes from the challenge, else the resource's `scopes_supported`, plus
//!    `offline_access` where the server lists it; step-up adds to the scopes granted.
//! 5. the token request, with the client authentication the server supports (`none`,
//!    `client_secret_basic`, `client_secret_post`); later, refreshes (`refresh_token` grant),
//!    falling back to a new login once when the refresh token is refused.
//!
//! After every `handle_*` the caller drains [`OAuth::poll_output`] until it is empty.

mod challenge;
mod text;

pub use challenge::Challenge;
pub use text::{base64, base64url, parse_query, percent_encode, Url};

use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// How long before expiry a token is refreshed.
pub const REFRESH_EARLY: Duration = Duration::from_secs(60);

/// How the machine is set up.
#[derive(Clone)]
pub struct AuthConfig {
    /// The MCP endpoint (what `--connect` names).
    pub server_url: String,
    /// The loopback redirect URI the runtime listens on (`http://127.0.0.1:PORT/callback`).
    pub redirect_uri: String,
    /// A pre-registered client id (`--client-id`).
    pub client_id: Option<String>,
    /// Its secret (`--client-secret`), if it is a confidential client.
    pub client_secret: Option<String>,
    /// An HTTPS URL serving this client's metadata document (`--client-metadata-url`).
    pub client_metadata_url: Option<String>,
    /// `client_name` in dynamic registration.
    pub client_name: String,
    /// How many authorizations one machine may run (first login, re-logins, step-ups)
    /// before it gives up: a server that keeps answering `403` cannot loop it.
    pub max_authorizations: u32,
    /// How long a login may wait for the user's browser.
    pub login_timeout: Duration,
    /// SHA-256, for the PKCE S256 challenge.
    pub sha256: fn(&[u8]) -> [u8; 32],
    /// Seeds the generator of PKCE verifiers and `state` values.
    pub seed: [u8; 32],
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret and the seed stay out of logs.
        f.debug_struct("AuthConfig")
            .field("server_url", &self.server_url)
            .field("redirect_uri", &self.redirect_uri)
            .field("client_id", &self.client_id)
            .field("client_metadata_url", &self.client_metadata_url)
            .finish_non_exhaustive()
    }
}

/// One HTTP request the machine wants made. Its answer goes to [`OAuth::handle_response`]
/// with the same id. Its `Debug` leaves out the headers and body (credentials, tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// Names this request; a response with a stale id is ignored.
    pub id: u64,
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Absolute `http(s)` URL.
    pub url: String,
    /// Headers beyond `Host`, `Content-Length` and `Connection`.
    pub headers: Vec<(String, String)>,
    /// The body (empty for `GET`).
    pub body: Vec<u8>,
}

impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("id", &self.id)
            .field("method", &self.method)
            .field("url", &self.url)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// What the machine asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutput {
    /// Make this request.
    Fetch(AuthRequest),
    /// Have the user open this authorization URL; the redirect comes back to the
    /// configured redirect URI.
    Authorize(String),
    /// Logged in (or refreshed): use these tokens, and store [`OAuth::saved`].
    Tokens(Tokens),
    /// The login failed; requests waiting for it should be answered with this error.
    Failed(AuthError),
}

/// Tokens from the token endpoint.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// The bearer token.
    pub access_token: String,
    /// The refresh token, if the server issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The scopes granted (as the server said, else as requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// When the access token expires (not stored: the runtime keeps wall-clock time).
    #[serde(skip)]
    pub expires_at: Option<Instant>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens are never logged.
        f.debug_struct("Tokens")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("scope", &self.scope)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The protected resource metadata names a resource other than the server.
    ResourceMismatch {
        /// What the metadata said.
        resource: String,
    },
    /// No usable authorization server metadata.
    Discovery(String),
    /// The authorization server does not support PKCE S256.
    NoPkce,
    /// No client id: not pre-registered, no metadata document, no registration endpoint.
    NoClientIdentity,
    /// Dynamic client registration failed.
    Registration(String),
    /// The authorization server (or the user) refused the authorization.
    Denied(String),
    /// The redirect does not belong to this login (`state` or `iss` mismatch).
    BadRedirect(String),
    /// The token endpoint refused or gave nonsense.
    Token(String),
    /// Too many authorizations (a server that keeps asking for more scopes).
    TooManyAttempts,
    /// The user did not finish in time.
    Timeout,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::ResourceMismatch { resource } => write!(
                f,
                "the server's protected resource metadata names another resource ({resource}); refusing to log in"
            ),
            AuthError::Discovery(why) => write!(f, "authorization server discovery failed: {why}"),
            AuthError::NoPkce => f.write_str("the authorization server does not support PKCE S256"),
            AuthError::NoClientIdentity => f.write_str(
                "no client identity: pass --client-id (the server supports neither client metadata documents nor dynamic registration)",
            ),
            AuthError::Registration(why) => write!(f, "dynamic client registration failed: {why}"),
            AuthError::Denied(why) => write!(f, "authorization refused: {why}"),
            AuthError::BadRedirect(why) => write!(f, "authorization redirect rejected: {why}"),
            AuthError::Token(why) => write!(f, "token request failed: {why}"),
            AuthError::TooManyAttempts => {
                f.write_str("gave up after repeated authorizations (the server keeps refusing the token)")
            }
            AuthError::Timeout => f.write_str("the login was not completed in time"),
        }
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A public client: `client_id` in the form.
    None,
    /// HTTP Basic with the id and secret.
    ClientSecretBasic,
    /// Id and secret in the form.
    ClientSecretPost,
}

/// What is worth keeping across runs: the client registration, the endpoints, the tokens.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Saved {
    /// The issuer the client is registered with.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Its authorization endpoint.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// Its token endpoint.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// The resource the tokens are for (RFC 8707).
    #[serde(default)]
    pub resource: Option<String>,
    /// The client id (registered or metadata document URL).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its secret, if confidential.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// How it authenticates.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// Whether the client id came from dynamic registration (a new server needs a new one).
    #[serde(default)]
    pub registered: bool,
    /// The tokens.
    #[serde(default)]
    pub tokens: Option<Tokens>,
}

impl fmt::Debug for Saved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret and tokens stay out of logs.
        f.debug_struct("Saved")
            .field("issuer", &self.issuer)
            .field("token_endpoint", &self.token_endpoint)
            .field("resource", &self.resource)
            .field("client_id", &self.client_id)
            .field("client_auth", &self.client_auth)
            .field("registered", &self.registered)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// Where the machine is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Fetching protected resource metadata: the candidates left.
    ResourceMetadata(VecDeque<String>),
    /// Fetching authorization server metadata: the candidates left.
    ServerMetadata(VecDeque<String>),
    Registering,
    /// Waiting for the redirect.
    Redirect {
        state: String,
        verifier: String,
        scope: Option<String>,
    },
    /// Waiting for the token endpoint.
    Token {
        scope: Option<String>,
    },
    Refreshing,
}

/// Authorization server facts found by discovery.
#[derive(Debug, Clone, Default)]
struct ServerFacts {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    registration_endpoint: Option<String>,
    scopes_supported: Option<Vec<String>>,
    auth_methods: Option<Vec<String>>,
    iss_supported: bool,
    cimd_supported: bool,
}

/// The OAuth machine for one remote server.
pub struct OAuth {
    config: AuthConfig,
    server: Option<Url>,
    rng: rand_chacha::ChaCha20Rng,
    phase: Phase,
    out: VecDeque<AuthOutput>,
    next_id: u64,
    /// The id of the request in flight.
    waiting: Option<u64>,
    deadline: Option<Instant>,
    authorizations: u32,
    /// The challenge that started this login.
    challenge: Challenge,
    resource: Option<String>,
    resource_scopes: Option<Vec<String>>,
    /// The authorization server named by the resource metadata (or the fallback).
    issuer: Option<String>,
    legacy: bool,
    facts: Option<ServerFacts>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_auth: ClientAuth,
    registered: bool,
    /// The issuer a registered client id belongs to: another one needs a new registration.
    registered_with: Option<String>,
    tokens: Option<Tokens>,
    /// A refresh was refused and a new login followed: another refusal does not loop.
    relogged: bool,
}

impl OAuth {
    /// A machine for `config.server_url`, with what an earlier run saved, if anything.
    pub fn new(config: AuthConfig, saved: Option<Saved>) -> OAuth {
        let server = Url::parse(&config.server_url);
        let mut machine = OAuth {
            rng: rand_chacha::ChaCha20Rng::from_seed(config.seed),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            config,
            server,
            phase: Phase::Idle,
            out: VecDeque::new(),
            next_id: 0,
            waiting: None,
            deadline: None,
            authorizations: 0,
            challenge: Challenge::default(),
            resource: None,
            resource_scopes: None,
            issuer: None,
            legacy: false,
            facts: None,
            client_auth: ClientAuth::None,
            registered: false,
            registered_with: None,
            tokens: None,
            relogged: false,
        };
        if let Some(s) = saved {
            machine.restore(s);
        }
        machine
    }

    fn restore(&mut self, s: Saved) {
        self.tokens = s.tokens;
        self.registered_with = s.issuer.clone();
        self.resource = s.resource;
        if let (Some(issuer), Some(authz), Some(token)) =
            (s.issuer, s.authorization_endpoint, s.token_endpoint)
        {
            self.issuer = Some(issuer.clone());
            self.facts = Some(ServerFacts {
                issuer,
                authorization_endpoint: authz,
                token_endpoint: token,
                ..ServerFacts::default()
            });
        }
        // A saved client is kept unless a pre-registered one was given.
        if self.config.client_id.is_none() {
            if let Some(id) = s.client_id {
                self.client_id = Some(id);
                self.client_secret = s.client_secret;
                self.client_auth = s.client_auth.unwrap_or(ClientAuth::None);
                self.registered = s.registered;
            }
        } else {
            self.client_auth = s.client_auth.unwrap_or(ClientAuth::None);
        }
    }

    // ---- getters ----

    /// The access token to send, if there is one that has not expired at `now`.
    pub fn access_token(&self, now: Instant) -> Option<&str> {
        let t = self.tokens.as_ref()?;
        match t.expires_at {
            Some(at) if at <= now => None,
            _ => Some(&t.access_token),
        }
    }

    /// How many authorizations (logins, re-logins, step-ups) this machine started.
    pub fn authorizations(&self) -> u32 {
        self.authorizations
    }

    /// Whether a login or refresh is under way.
    pub fn busy(&self) -> bool {
        self.phase != Phase::Idle
    }

    /// When the access token should be refreshed (a minute before it expires), if it can be.
    pub fn refresh_at(&self) -> Option<Instant> {
        let t = self.tokens.as_ref()?;
        t.refresh_token.as_ref()?;
        let at = t.expires_at?;
        Some(at.checked_sub(REFRESH_EARLY).unwrap_or(at))
    }

    /// The deadline of a pending login.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// What to store so that the next run needs no login.
    pub fn saved(&self) -> Saved {
        Saved {
            issuer: self.facts.as_ref().map(|f| f.issuer.clone()),
            authorization_endpoint: self
                .facts
                .as_ref()
                .map(|f| f.authorization_endpoint.clone()),
            token_endpoint: self.facts.as_ref().map(|f| f.token_endpoint.clone()),
            resource: self.resource.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            client_auth: Some(self.client_auth),
            registered: self.registered,
            tokens: self.tokens.clone(),
        }
    }

    // ---- output ----

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<AuthOutput> {
        self.out.pop_front()
    }

    // ---- handle_* ----

    /// The resource answered `401` or `403` with this `WWW-Authenticate` (if any): log in,
    /// refresh, or step up. Ignored while a login is already under way.
    pub fn handle_challenge(&mut self, now: Instant, status: u16, www_authenticate: Option<&str>) {
        if self.busy() {
            return;
        }
        let challenge = www_authenticate
            .and_then(Challenge::parse)
            .unwrap_or_default();
        if status == 403 && !challenge.insufficient_scope() {
            // A plain 403 is not ours to fix.
            return;
        }
        let step_up = status == 403;
        // A 401 with a refresh token in hand is first a refresh.
        if !step_up && self.try_refresh(now) {
            self.challenge = challenge;
            return;
        }
        let granted = self.tokens.as_ref().and_then(|t| t.scope.clone());
        self.challenge = challenge;
        if step_up {
            // Keep what was granted: the new scopes are added, not substituted.
            let mut scopes = split(granted.as_deref());
            for s in split(self.challenge.scope.as_deref()) {
                if !scopes.contains(&s) {
                    scopes.push(s);
                }
            }
            self.challenge.scope = (!scopes.is_empty()).then(|| scopes.join(" "));
        }
        self.tokens = None;
        self.begin_login(now);
    }

    /// Starts a refresh if the refresh token is there; `false` when there is none.
    pub fn refresh(&mut self, now: Instant) -> bool {
        !self.busy() && self.try_refresh(now)
    }

    /// The redirect to the loopback listener came back with this query.
    pub fn handle_redirect(&mut self, now: Instant, query: &str) {
        let Phase::Redirect {
            state,
            verifier,
            scope,
        } = self.phase.clone()
        else {
            return;
        };
        let params = parse_query(query);
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if get("state") != Some(state.as_str()) {
            // Someone else's redirect (or a forgery): this login goes on waiting.
            log::warn!(target: "mcp_relay::auth", "ignored an authorization redirect with the wrong state");
            return;
        }
        let Some(facts) = self.facts.clone() else {
            return self.fail(AuthError::Discovery("lost the server metadata".into()));
        };
        match get("iss") {
            // RFC 9207 §2.4: a simple string comparison, no normalisation.
            Some(iss) if iss != facts.issuer => {
                return self.fail(AuthError::BadRedirect(format!(
                    "iss {iss:?} is not the authorization server {:?} (RFC 9207)",
                    facts.issuer
                )))
            }
            None if facts.iss_supported => {
                return self.fail(AuthError::BadRedirect(
                    "the authorization server promised an iss parameter and sent none (RFC 9207)"
                        .into(),
                ))
            }
            _ => {}
        }
        if let Some(error) = get("error") {
            let desc = get("error_description").unwrap_or("");
            return self.fail(AuthError::Denied(
                format!("{error} {desc}").trim().to_owned(),
            ));
        }
        let Some(code) = get("code") else {
            return self.fail(AuthError::BadRedirect("no code".into()));
        };
        let redirect_uri = self.config.redirect_uri.clone();
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        if let Some(r) = &self.resource {
            form.push(("resource", r.clone()));
        }
        self.phase = Phase::Token { scope };
        self.post_token(now, &facts.token_endpoint, form);
    }

    /// The response to request `id`.
    pub fn handle_response(&mut self, now: Instant, id: u64, status: u16, body: &[u8]) {
        if self.waiting != Some(id) {
            return;
        }
        self.waiting = None;
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let ok = (200..300).contains(&status);
        match self.phase.clone() {
            Phase::Idle | Phase::Redirect { .. } => {}
            Phase::ResourceMetadata(rest) => {
                match json.filter(|_| ok).and_then(|j| ResourceMeta::from(&j)) {
                    Some(meta) => self.resource_found(now, meta),
                    None => self.next_resource_candidate(now, rest),
                }
            }
            Phase::ServerMetadata(rest) => match json.filter(|_| ok) {
                Some(j) => self.server_found(now, &j),
                None => self.next_server_candidate(now, rest),
            },
            Phase::Registering => {
                let id = json
                    .as_ref()
                    .filter(|_| ok)
                    .and_then(|j| j.get("client_id"))
                    .and_then(Value::as_str);
                let Some(client_id) = id else {
                    return self.fail(AuthError::Registration(format!(
                        "HTTP {status}: {}",
                        snippet(body)
                    )));
                };
                let j = json.as_ref();
                self.client_id = Some(client_id.to_owned());
                self.client_secret = j
                    .and_then(|j| j.get("client_secret"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let method = j
                    .and_then(|j| j.get("token_endpoint_auth_method"))
                    .and_then(Value::as_str);
                self.client_auth = match (method, &self.client_secret) {
                    (Some("client_secret_post"), Some(_)) => ClientAuth::ClientSecretPost,
                    (Some("client_secret_basic"), Some(_)) => ClientAuth::ClientSecretBasic,
                    (Some("none"), _) | (_, None) => ClientAuth::None,
                    (_, Some(_)) => self.secret_method(),
                };
                self.registered = true;
                self.registered_with = self.facts.as_ref().map(|f| f.issuer.clone());
                self.authorize(now);
            }
            Phase::Token { scope } => {
                if let Some(t) = json
                    .as_ref()
                    .filter(|_| ok)
                    .and_then(|j| parse_tokens(j, now, scope, None))
                {
                    self.logged_in(t);
                } else {
                    self.fail(AuthError::Token(token_error(status, json.as_ref(), body)));
                }
            }
            Phase::Refreshing => {
                let old = self.tokens.as_ref();
                let keep_refresh = old.and_then(|t| t.refresh_token.clone());
                let scope = old.and_then(|t| t.scope.clone());
                if let Some(t) = json
                    .as_ref()
                    .filter(|_| ok)
                    .and_then(|j| parse_tokens(j, now, scope, keep_refresh))
                {
                    self.logged_in(t);
                } else if (400..500).contains(&status) && !self.relogged {
                    // The refresh token was revoked or expired: one new login, not a loop.
                    log::info!(target: "mcp_relay::auth", "the refresh was refused ({}); logging in again", token_error(status, json.as_ref(), body));
                    self.relogged = true;
                    self.tokens = None;
                    self.phase = Phase::Idle;
                    self.begin_login(now);
                } else {
                    self.fail(AuthError::Token(token_error(status, json.as_ref(), body)));
                }
            }
        }
    }

    /// The request `id` failed without a response (connection refused, TLS, timeout).
    pub fn handle_fetch_failed(&mut self, now: Instant, id: u64, why: &str) {
        if self.waiting != Some(id) {
            return;
        }
        match self.phase.clone() {
            // A candidate that cannot be reached is a candidate that is not there.
            Phase::ResourceMetadata(_) | Phase::ServerMetadata(_) => {
                self.handle_response(now, id, 0, b"")
            }
            _ => {
                self.waiting = None;
                self.fail(AuthError::Discovery(why.to_owned()))
            }
        }
    }

    /// Time passed: a login past its deadline fails.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.waiting = None;
            self.fail(AuthError::Timeout);
        }
    }

    // ---- the flow ----

    fn try_refresh(&mut self, now: Instant) -> bool {
        let Some(refresh) = self.tokens.as_ref().and_then(|t| t.refresh_token.clone()) else {
            return false;
        };
        let Some(endpoint) = self.facts.as_ref().map(|f| f.token_endpoint.clone()) else {
            return false;
        };
        if self.client_id.is_none() {
            return false;
        }
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh),
        ];
        if let Some(r) = &self.resource {
            form.push(("resource", r.clone()));
        }
        self.phase = Phase::Refreshing;
        self.deadline = Some(now + self.config.login_timeout);
        self.post_token(now, &endpoint, form);
        true
    }

    fn begin_login(&mut self, now: Instant) {
        self.authorizations += 1;
        if self.authorizations > self.config.max_authorizations {
            return self.fail(AuthError::TooManyAttempts);
        }
        self.deadline = Some(now + self.config.login_timeout);
        let Some(server) = self.server.clone() else {
            return self.fail(AuthError::Discovery(format!(
                "{} is not an http(s) URL",
                self.config.server_url
            )));
        };
        let mut candidates = Vec::new();
        if let Some(u) = self.challenge.resource_metadata.clone() {
            candidates.push(u);
        }
        let origin = server.origin();
        let suffix = server.path_suffix();
        if !suffix.is_empty() {
            candidates.push(format!(
                "{origin}/.well-known/oauth-protected-resource{suffix}"
            ));
        }
        candidates.push(format!("{origin}/.well-known/oauth-protected-resource"));
        candidates.dedup();
        self.next_resource_candidate(now, candidates.into());
    }

    fn next_resource_candidate(&mut self, now: Instant, mut rest: VecDeque<String>) {
        match rest.pop_front() {
            Some(url) => {
                self.phase = Phase::ResourceMetadata(rest);
                self.get(now, url);
            }
            None => {
                // 2025-03-26: no resource metadata; the server's origin is the issuer.
                let Some(server) = &self.server else { return };
                self.legacy = true;
                self.resource = Some(canonical_resource(server));
                self.resource_scopes = None;
                self.issuer = Some(server.origin());
                let candidates = VecDeque::from([format!(
                    "{}/.well-known/oauth-authorization-server",
                    server.origin()
                )]);
                self.next_server_candidate(now, candidates);
            }
        }
    }

    fn resource_found(&mut self, now: Instant, meta: ResourceMeta) {
        let Some(server) = self.server.clone() else {
            return;
        };
        if let Some(r) = &meta.resource {
            match Url::parse(r) {
                Some(u) if u.covers(&server) => {}
                _ => {
                    return self.fail(AuthError::ResourceMismatch {
                        resource: r.clone(),
                    })
                }
            }
        }
        self.legacy = false;
        self.resource = Some(meta.resource.unwrap_or_else(|| canonical_resource(&server)));
        self.resource_scopes = meta.scopes_supported;
        let Some(issuer) = meta.authorization_servers.into_iter().next() else {
            return self.fail(AuthError::Discovery(
                "the protected resource metadata names no authorization server".into(),
            ));
        };
        let Some(iu) = Url::parse(&issuer) else {
            return self.fail(AuthError::Discovery(format!("bad issuer {issuer:?}")));
        };
        self.issuer = Some(issuer);
        let origin = iu.origin();
        let p = iu.path_suffix();
        let candidates: VecDeque<String> = if p.is_empty() {
            VecDeque::from([
                format!("{origin}/.well-known/oauth-authorization-server"),
                format!("{origin}/.well-known/openid-configuration"),
            ])
        } else {
            VecDeque::from([
                format!("{origin}/.well-known/oauth-authorization-server{p}"),
                format!("{origin}/.well-known/openid-configuration{p}"),
                format!("{origin}{p}/.well-known/openid-configuration"),
            ])
        };
        self.next_server_candidate(now, candidates);
    }

    fn next_server_candidate(&mut self, now: Instant, mut rest: VecDeque<String>) {
        match rest.pop_front() {
            Some(url) => {
                self.phase = Phase::ServerMetadata(rest);
                self.get(now, url);
            }
            None if self.legacy => {
                // 2025-03-26 without metadata: the default endpoints at the origin.
                let Some(origin) = self.server.as_ref().map(Url::origin) else {
                    return;
                };
                self.facts = Some(ServerFacts {
                    issuer: origin.clone(),
                    authorization_endpoint: format!("{origin}/authorize"),
                    token_endpoint: format!("{origin}/token"),
                    registration_endpoint: Some(format!("{origin}/register")),
                    ..ServerFacts::default()
                });
                self.identify(now);
            }
            None => self.fail(AuthError::Discovery(format!(
                "no authorization server metadata for {}",
                self.issuer.as_deref().unwrap_or("?")
            ))),
        }
    }

    fn server_found(&mut self, now: Instant, j: &Value) {
        let s = |k: &str| j.get(k).and_then(Value::as_str).map(str::to_owned);
        let list = |k: &str| {
            j.get(k).and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
        };
        let (Some(authz), Some(token)) = (s("authorization_endpoint"), s("token_endpoint")) else {
            return self.fail(AuthError::Discovery(
                "the authorization server metadata lacks its endpoints".into(),
            ));
        };
        let issuer = s("issuer").unwrap_or_else(|| self.issuer.clone().unwrap_or_default());
        if let Some(expected) = &self.issuer {
            if !self.legacy && !same_issuer(&issuer, expected) {
                return self.fail(AuthError::Discovery(format!(
                    "the metadata's issuer {issuer:?} is not {expected:?} (RFC 8414 §3.3)"
                )));
            }
        }
        let pkce = list("code_challenge_methods_supported");
        if !pkce.is_some_and(|m| m.iter().any(|m| m == "S256")) {
            return self.fail(AuthError::NoPkce);
        }
        self.facts = Some(ServerFacts {
            issuer,
            authorization_endpoint: authz,
            token_endpoint: token,
            registration_endpoint: s("registration_endpoint"),
            scopes_supported: list("scopes_supported"),
            auth_methods: list("token_endpoint_auth_methods_supported"),
            iss_supported: j
                .get("authorization_response_iss_parameter_supported")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            cimd_supported: j
                .get("client_id_metadata_document_supported")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        });
        self.identify(now);
    }

    /// The client identity, in the spec's order of preference.
    fn identify(&mut self, now: Instant) {
        let Some(facts) = self.facts.clone() else {
            return;
        };
        if let Some(id) = self.config.client_id.clone() {
            self.client_id = Some(id);
            self.client_secret = self.config.client_secret.clone();
            self.client_auth = if self.client_secret.is_some() {
                self.secret_method()
            } else {
                ClientAuth::None
            };
            return self.authorize(now);
        }
        if let (Some(url), true) = (&self.config.client_metadata_url, facts.cimd_supported) {
            self.client_id = Some(url.clone());
            self.client_secret = None;
            self.client_auth = ClientAuth::None;
            self.registered = false;
            return self.authorize(now);
        }
        if self.client_id.is_some()
            && self.registered
            && self.registered_with.as_deref() == Some(facts.issuer.as_str())
        {
            // Registered earlier with this authorization server. (A client id is bound to
            // the server that issued it: after a move to another one, a new registration.)
            return self.authorize(now);
        }
        let Some(endpoint) = facts.registration_endpoint.clone() else {
            return self.fail(AuthError::NoClientIdentity);
        };
        let mut body = serde_json::json!({
            "client_name": self.config.client_name,
            "redirect_uris": [self.config.redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "application_type": "native",
        });
        if let Some(scope) = self.scope_to_request() {
            body["scope"] = Value::String(scope);
        }
        self.phase = Phase::Registering;
        self.fetch(
            now,
            "POST",
            endpoint,
            vec![
                ("Content-Type".into(), "application/json".into()),
                ("Accept".into(), "application/json".into()),
            ],
            body.to_string().into_bytes(),
        );
    }

    /// A confidential client's method: Basic unless the server lists only `post` (RFC 8414's
    /// default is Basic).
    fn secret_method(&self) -> ClientAuth {
        let methods = self.facts.as_ref().and_then(|f| f.auth_methods.as_ref());
        match methods {
            Some(m) if m.iter().any(|m| m == "client_secret_basic") => {
                ClientAuth::ClientSecretBasic
            }
            Some(m) if m.iter().any(|m| m == "client_secret_post") => ClientAuth::ClientSecretPost,
            _ => ClientAuth::ClientSecretBasic,
        }
    }

    fn scope_to_request(&self) -> Option<String> {
        let mut scopes = match split(self.challenge.scope.as_deref()) {
            s if !s.is_empty() => s,
            _ => self.resource_scopes.clone().unwrap_or_default(),
        };
        let offers_offline = self
            .facts
            .as_ref()
            .and_then(|f| f.scopes_supported.as_ref())
            .is_some_and(|s| s.iter().any(|s| s == "offline_access"));
        if offers_offline && !scopes.iter().any(|s| s == "offline_access") {
            scopes.push("offline_access".into());
        }
        (!scopes.is_empty()).then(|| scopes.join(" "))
    }

    fn authorize(&mut self, _now: Instant) {
        let (Some(facts), Some(client_id)) = (self.facts.clone(), self.client_id.clone()) else {
            return self.fail(AuthError::NoClientIdentity);
        };
        let Some(endpoint) = Url::parse(&facts.authorization_endpoint) else {
            return self.fail(AuthError::Discovery(format!(
                "bad authorization endpoint {:?}",
                facts.authorization_endpoint
            )));
        };
        let verifier = self.random(32);
        let challenge = base64url(&(self.config.sha256)(verifier.as_bytes()));
        let state = self.random(16);
        let scope = self.scope_to_request();
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", &self.config.redirect_uri),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", &state),
        ];
        if let Some(r) = &self.resource {
            params.push(("resource", r));
        }
        if let Some(s) = &scope {
            params.push(("scope", s));
        }
        let url = endpoint.with_query(&params);
        self.phase = Phase::Redirect {
            state,
            verifier,
            scope,
        };
        self.out.push_back(AuthOutput::Authorize(url));
    }

    fn post_token(&mut self, now: Instant, endpoint: &str, mut form: Vec<(&'static str, String)>) {
        let client_id = self.client_id.clone().unwrap_or_default();
        let mut headers = vec![
            (
                "Content-Type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("Accept".to_owned(), "application/json".to_owned()),
        ];
        match (self.client_auth, &self.client_secret) {
            (ClientAuth::ClientSecretBasic, Some(secret)) => {
                // RFC 6749 §2.3.1: both parts form-encoded before base64.
                let pair = format!("{}:{}", percent_encode(&client_id), percent_encode(secret));
                headers.push((
                    "Authorization".into(),
                    format!("Basic {}", base64(pair.as_bytes())),
                ));
            }
            (ClientAuth::ClientSecretPost, Some(secret)) => {
                form.push(("client_id", client_id));
                form.push(("client_secret", secret.clone()));
            }
            _ => form.push(("client_id", client_id)),
        }
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.fetch(
            now,
            "POST",
            endpoint.to_owned(),
            headers,
            text::form(&pairs),
        );
    }

    fn logged_in(&mut self, t: Tokens) {
        self.tokens = Some(t.clone());
        self.phase = Phase::Idle;
        self.deadline = None;
        self.out.push_back(AuthOutput::Tokens(t));
    }

    fn fail(&mut self, why: AuthError) {
        log::warn!(target: "mcp_relay::auth", "{why}");
        self.phase = Phase::Idle;
        self.waiting = None;
        self.deadline = None;
        self.out.push_back(AuthOutput::Failed(why));
    }

    fn get(&mut self, now: Instant, url: String) {
        self.fetch(
            now,
            "GET",
            url,
            vec![("Accept".into(), "application/json".into())],
            Vec::new(),
        );
    }

    fn fetch(
        &mut self,
        _now: Instant,
        method: &'static str,
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) {
        self.next_id += 1;
        self.waiting = Some(self.next_id);
        self.out.push_back(AuthOutput::Fetch(AuthRequest {
            id: self.next_id,
            method,
            url,
            headers,
            body,
        }));
    }

    fn random(&mut self, n: usize) -> String {
        let mut bytes = vec![0u8; n];
        self.rng.fill_bytes(&mut bytes);
        base64url(&bytes)
    }
}

struct ResourceMeta {
    resource: Option<String>,
    authorization_servers: Vec<String>,
    scopes_supported: Option<Vec<String>>,
}

impl ResourceMeta {
    fn from(j: &Value) -> Option<ResourceMeta> {
        let servers: Vec<String> = j
            .get("authorization_servers")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        Some(ResourceMeta {
            resource: j.get("resource").and_then(Value::as_str).map(str::to_owned),
            authorization_servers: servers,
            scopes_supported: j
                .get("scopes_supported")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                }),
        })
    }
}

fn parse_tokens(
    j: &Value,
    now: Instant,
    requested_scope: Option<String>,
    keep_refresh: Option<String>,
) -> Option<Tokens> {
    let access = j.get("access_token")?.as_str()?.to_owned();
    if let Some(kind) = j.get("token_type").and_then(Value::as_str) {
        if !kind.eq_ignore_ascii_case("bearer") {
            return None;
        }
    }
    let expires_at = j
        .get("expires_in")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .map(|s| now + Duration::from_secs(s.min(10 * 365 * 86_400)));
    Some(Tokens {
        access_token: access,
        refresh_token: j
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(keep_refresh),
        scope: j
            .get("scope")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(requested_scope),
        expires_at,
    })
}

fn token_error(status: u16, json: Option<&Value>, body: &[u8]) -> String {
    let field = |k: &str| json.and_then(|j| j.get(k)).and_then(Value::as_str);
    match field("error") {
        Some(e) => format!(
            "HTTP {status}: {e} {}",
            field("error_description").unwrap_or("")
        )
        .trim()
        .to_owned(),
        None => format!("HTTP {status}: {}", snippet(body)),
    }
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(200)]);
    s.chars().filter(|c| !c.is_control()).collect()
}

fn split(scopes: Option<&str>) -> Vec<String> {
    scopes
        .unwrap_or("")
        .split_ascii_whitespace()
        .map(str::to_owned)
        .collect()
}

fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The server's canonical URI (RFC 8707 as the MCP spec uses it): lower-case scheme and host,
/// no fragment, no trailing `/` on a bare origin.
fn canonical_resource(server: &Url) -> String {
    let mut u = server.clone();
    if u.path == "/" {
        u.path = String::new();
    }
    u.to_string()
}
