//! Client mode's configuration: where the remote servers are ([`RemoteUrl`]), what is spoken
//! to them ([`RemoteTransport`]), with which headers, and how sessions spread over several
//! ([`Balance`]). Plain data and the pure parsing of it.

use std::fmt;
use std::time::Duration;

/// How the relay reaches remote servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteConfig {
    /// Where the remote server is; several are tried in order (failover).
    pub urls: Vec<RemoteUrl>,
    /// Which transport to speak (HTTP URLs only; `tcp://` is always [`RemoteTransport::Tcp`]).
    pub transport: RemoteTransport,
    /// Headers sent with every HTTP request (`Authorization` among them), already expanded.
    /// Never logged.
    pub headers: Vec<(String, String)>,
    /// How long a connection may take to be established, and how long a request may wait for
    /// an unreachable remote before it is answered with an error.
    pub connect_timeout: Duration,
    /// Connections one session keeps to a Streamable HTTP remote for its POSTs (its GET
    /// stream takes one more).
    pub max_connections: usize,
    /// How new sessions are spread over several URLs.
    pub balance: Balance,
    /// How long a URL that could not be reached is skipped by new sessions.
    pub down_for: Duration,
    /// Log in (OAuth) when the remote refuses a request with `401`, or `403
    /// insufficient_scope`: the request is held, [`crate::Output::RemoteLogin`] asks the
    /// driver for a token, and [`crate::Input::RemoteToken`] sends it again with it.
    pub login: bool,
    /// How many tokens `Input::RemoteToken` has brought so far (the core counts; set it to
    /// 0). A request refused with an older token is sent again with the newest one, and
    /// `Output::RemoteLogin` names the generation of the token that was refused.
    pub login_generation: u32,
}

/// How new sessions pick among several remote URLs. Whatever the choice, a session whose
/// remote cannot be reached moves on to the next URL when it reconnects, and a URL that could
/// not be reached is skipped by new sessions for a while (`down_for`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// The first URL that is not down (the others are fallbacks).
    Failover,
    /// Each new session the next URL in turn.
    RoundRobin,
    /// The URL serving the fewest sessions now.
    LeastSessions,
}

impl Balance {
    /// Parses a `--balance` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "failover" => Ok(Balance::Failover),
            "round-robin" => Ok(Balance::RoundRobin),
            "least-sessions" => Ok(Balance::LeastSessions),
            other => Err(format!(
                "unknown balance {other:?}: expected failover, round-robin or least-sessions"
            )),
        }
    }
}

impl RemoteConfig {
    /// A new token from a login (`Input::RemoteToken`): it replaces any `Authorization`
    /// header, and the generation counts it. Only with `login`.
    pub(crate) fn set_bearer(&mut self, token: &str) {
        if !self.login {
            return;
        }
        self.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
        self.headers
            .push(("Authorization".into(), format!("Bearer {token}")));
        self.login_generation += 1;
    }
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            urls: Vec::new(),
            transport: RemoteTransport::Auto,
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            max_connections: 8,
            balance: Balance::Failover,
            down_for: Duration::from_secs(30),
            login: false,
            login_generation: 0,
        }
    }
}

/// The transport spoken to an HTTP remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteTransport {
    /// Streamable HTTP, falling back to HTTP+SSE when the remote refuses the `initialize`
    /// POST with 400, 404 or 405 (the spec's backwards-compatibility rule).
    Auto,
    /// Streamable HTTP only.
    StreamableHttp,
    /// The legacy HTTP+SSE transport only (`GET` an event stream, `POST` to its endpoint).
    Sse,
    /// Streamable HTTP at 2026-07-28 (stateless) from the first request: the client's
    /// `initialize` is answered from `server/discover`. (`Auto` gets there too, after the
    /// remote refused the `initialize` POST the way that era does.)
    Stateless,
    /// Newline-delimited JSON-RPC over a TCP connection.
    Tcp,
}

impl RemoteTransport {
    /// Parses a `--transport` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(RemoteTransport::Auto),
            "streamable-http" | "http" => Ok(RemoteTransport::StreamableHttp),
            "sse" => Ok(RemoteTransport::Sse),
            "stateless" | "2026-07-28" => Ok(RemoteTransport::Stateless),
            "tcp" => Ok(RemoteTransport::Tcp),
            other => Err(format!(
                "unknown transport {other:?}: expected auto, streamable-http, stateless, sse or tcp"
            )),
        }
    }
}

impl fmt::Display for RemoteTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteTransport::Auto => "auto",
            RemoteTransport::StreamableHttp => "streamable-http",
            RemoteTransport::Sse => "sse",
            RemoteTransport::Stateless => "stateless",
            RemoteTransport::Tcp => "tcp",
        })
    }
}

/// A URL's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `https://` (HTTP over TLS).
    Https,
    /// `tcp://`: newline-delimited JSON-RPC.
    Tcp,
    /// `tls://`: newline-delimited JSON-RPC over TLS.
    Tls,
}

impl Scheme {
    /// Whether it is newline-delimited JSON-RPC over a stream (`tcp://`, `tls://`), not HTTP.
    pub fn is_stream(self) -> bool {
        matches!(self, Scheme::Tcp | Scheme::Tls)
    }

    /// Whether the connection speaks TLS (`https://`, `tls://`).
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Tls)
    }
}

/// A remote server's address: `http://host:port/path?query`, `https://…` or `tcp://host:port`.
/// `Display` leaves out the query (it may carry a key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteUrl {
    /// The scheme.
    pub scheme: Scheme,
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The port (80 and 443 by default for HTTP and HTTPS).
    pub port: u16,
    /// The path and query, starting with `/` (`/` when the URL has none; empty for TCP).
    pub path: String,
}

impl RemoteUrl {
    /// Parses a URL. Refuses user info (credentials belong in `--header` or
    /// `--bearer-token`), fragments, and anything but the four schemes.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("{url:?} is not a URL (expected http://, https://, tcp:// or tls://)")
        })?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "tcp" => Scheme::Tcp,
            "tls" => Scheme::Tls,
            other => {
                return Err(format!(
                    "unsupported scheme {other:?} in {url:?} (expected http, https, tcp or tls)"
                ))
            }
        };
        if rest.contains('#') {
            return Err(format!(
                "{url:?} has a fragment, which means nothing to a server"
            ));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(format!(
                "{url:?} carries credentials; pass them with --header or --bearer-token"
            ));
        }
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("unclosed [ in {url:?}"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty()
            || host
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("{url:?} has no usable host"));
        }
        let port = match (port, scheme) {
            (Some(p), _) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("bad port {p:?} in {url:?}"))?,
            (None, Scheme::Http) => 80,
            (None, Scheme::Https) => 443,
            (None, Scheme::Tcp | Scheme::Tls) => {
                return Err(format!("{url:?} needs a port (tcp://host:port)"))
            }
        };
        let path = match scheme {
            Scheme::Tcp | Scheme::Tls if !path.is_empty() && path != "/" => {
                return Err(format!("{url:?}: a tcp:// or tls:// URL has no path"))
            }
            Scheme::Tcp | Scheme::Tls => String::new(),
            _ if path.is_empty() => "/".to_owned(),
            _ if path.starts_with('?') => format!("/{path}"),
            _ => path.to_owned(),
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "{url:?} has spaces or control characters in its path (percent-encode them)"
            ));
        }
        Ok(RemoteUrl {
            scheme,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// The `Host` header's value: the host, with the port unless it is the scheme's default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.scheme, self.port) {
            (Scheme::Http, 80) | (Scheme::Https, 443) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
        };
        let authority = match (self.scheme, self.port) {
            (Scheme::Http, 80) | (Scheme::Https, 443) => self.authority(),
            _ if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        };
        // A query may carry a key: logs and errors show that there is one, not what it is.
        match self.path.split_once('?') {
            Some((path, _)) => write!(f, "{scheme}://{authority}{path}?…"),
            None => write!(f, "{scheme}://{authority}{}", self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expect: Result<(&str, u16, &str), &str>) {
        let got = RemoteUrl::parse(url);
        match (got, expect) {
            (Ok(u), Ok((host, port, path))) => {
                assert_eq!(
                    (u.host.as_str(), u.port, u.path.as_str()),
                    (host, port, path)
                )
            }
            (Err(e), Err(part)) => assert!(e.contains(part), "{e}"),
            (got, expect) => panic!("{url}: {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn urls() {
        check("http://127.0.0.1:8080/mcp", Ok(("127.0.0.1", 8080, "/mcp")));
        check("http://example.com", Ok(("example.com", 80, "/")));
        check(
            "HTTPS://example.com/a?b=c",
            Ok(("example.com", 443, "/a?b=c")),
        );
        check("http://h:1?x=1", Ok(("h", 1, "/?x=1")));
        check("http://[::1]:9/sse", Ok(("::1", 9, "/sse")));
        check("tcp://localhost:7000", Ok(("localhost", 7000, "")));
        check("tcp://localhost", Err("needs a port"));
        check("tcp://h:1/x", Err("no path"));
        check("ftp://h/", Err("unsupported scheme"));
        check("h:1", Err("not a URL"));
        check("http://u:p@h/", Err("credentials"));
        check("http://h:0/", Err("bad port"));
        check("http://h:99999/", Err("bad port"));
        check("http:///x", Err("no usable host"));
        check("http://h/#f", Err("fragment"));
        check("http://h/a b", Err("spaces"));
        let u = RemoteUrl::parse("http://[::1]:80/mcp").unwrap();
        assert_eq!(u.authority(), "[::1]");
        assert_eq!(u.to_string(), "http://[::1]/mcp");
        let u = RemoteUrl::parse("http://h/mcp?key=secret").unwrap();
        assert_eq!(u.to_string(), "http://h/mcp?…");
        let u = RemoteUrl::parse("http://h:8/mcp").unwrap();
        assert_eq!(u.authority(), "h:8");
    }
}
