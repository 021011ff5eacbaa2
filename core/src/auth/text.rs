//! The small text codecs OAuth needs: absolute `http(s)` URLs, percent-encoding for queries
//! and forms, base64 (standard for HTTP Basic, URL-safe unpadded for PKCE and random values).

use std::fmt;

/// An absolute `http` or `https` URL, split the way discovery needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `http` or `https`, lower case.
    pub scheme: String,
    /// `host[:port]`, host lower case; a default port is dropped.
    pub authority: String,
    /// The path, starting with `/` (just `/` when the URL has none).
    pub path: String,
    /// The query without its `?`, if any.
    pub query: Option<String>,
}

impl Url {
    /// Parses an absolute `http(s)` URL; the fragment is dropped. `None` for anything else.
    pub fn parse(s: &str) -> Option<Url> {
        let s = s.trim();
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let rest = rest.split('#').next().unwrap_or("");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.is_empty()
            || authority.contains('@')
            || !authority.bytes().all(|b| b.is_ascii_graphic())
        {
            return None;
        }
        let mut authority = authority.to_ascii_lowercase();
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        if authority.ends_with(default_port) && !authority.ends_with("]") {
            authority.truncate(authority.len() - default_port.len());
        }
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (tail, None),
        };
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let path = if path.is_empty() { "/" } else { path };
        Some(Url {
            scheme,
            authority,
            path: path.to_owned(),
            query,
        })
    }

    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// The path without its trailing `/` (empty for the root): what path-aware well-known
    /// URLs append.
    pub fn path_suffix(&self) -> &str {
        self.path.trim_end_matches('/')
    }

    /// This URL with `params` appended to its query.
    pub fn with_query(&self, params: &[(&str, &str)]) -> String {
        let mut q = self.query.clone().unwrap_or_default();
        for (k, v) in params {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(&percent_encode(k));
            q.push('=');
            q.push_str(&percent_encode(v));
        }
        let mut url = Url {
            query: None,
            ..self.clone()
        }
        .to_string();
        if !q.is_empty() {
            url.push('?');
            url.push_str(&q);
        }
        url
    }

    /// Whether `self` (a protected resource's identifier) covers `server`: the same origin
    /// and `server`'s path is this path or below it.
    pub fn covers(&self, server: &Url) -> bool {
        if self.origin() != server.origin() {
            return false;
        }
        let mine = self.path_suffix();
        let theirs = server.path_suffix();
        theirs == mine || theirs.starts_with(&format!("{mine}/"))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.path)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space). Invalid
/// escapes are kept as they are; invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Splits a query or form body into decoded `(name, value)` pairs.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// An `application/x-www-form-urlencoded` body.
pub fn form(params: &[(&str, &str)]) -> Vec<u8> {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[(n >> (18 - 6 * i)) as usize & 63]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding (HTTP Basic credentials).
pub fn base64(data: &[u8]) -> String {
    encode64(data, STANDARD, true)
}

/// URL-safe base64 without padding (PKCE, `state`).
pub fn base64url(data: &[u8]) -> String {
    encode64(data, URL_SAFE, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_normalise() {
        let u = Url::parse("HTTPS://Example.COM:443/mcp/?a=b#frag").unwrap();
        assert_eq!(u.scheme, "https");
        assert_eq!(u.authority, "example.com");
        assert_eq!(u.path, "/mcp/");
        assert_eq!(u.query.as_deref(), Some("a=b"));
        assert_eq!(u.path_suffix(), "/mcp");
        assert_eq!(u.to_string(), "https://example.com/mcp/?a=b");
        let root = Url::parse("http://localhost:8080").unwrap();
        assert_eq!(root.path, "/");
        assert_eq!(root.path_suffix(), "");
        assert_eq!(root.origin(), "http://localhost:8080");
        for bad in [
            "ftp://x/",
            "no-scheme",
            "http:///path",
            "http://u@h/",
            "http://h/a b",
        ] {
            assert_eq!(Url::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn resource_coverage_is_by_origin_and_path_segment() {
        let server = Url::parse("https://h.example/api/mcp").unwrap();
        let covers = |r: &str| Url::parse(r).unwrap().covers(&server);
        assert!(covers("https://h.example/api/mcp"));
        assert!(covers("https://h.example/api/mcp/"));
        assert!(covers("https://h.example/api"));
        assert!(covers("https://h.example/"));
        assert!(!covers("https://h.example/ap"));
        assert!(!covers("https://h.example/api/mcp/deeper"));
        assert!(!covers("https://evil.example/api/mcp"));
        assert!(!covers("http://h.example/api/mcp"));
        assert!(!covers("https://h.example:8443/api/mcp"));
    }

    #[test]
    fn queries_are_encoded_and_decoded() {
        let u = Url::parse("https://as.example/authorize?x=1").unwrap();
        assert_eq!(
            u.with_query(&[("scope", "a b"), ("r", "https://h/mcp")]),
            "https://as.example/authorize?x=1&scope=a%20b&r=https%3A%2F%2Fh%2Fmcp"
        );
        assert_eq!(
            parse_query("?code=a%2Bb&state=x+y&bare&bad=%zz&end=%4"),
            vec![
                ("code".into(), "a+b".into()),
                ("state".into(), "x y".into()),
                ("bare".into(), String::new()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
        assert_eq!(
            form(&[("a", "1 2"), ("b", "é")]),
            b"a=1%202&b=%C3%A9".to_vec()
        );
    }

    #[test]
    fn base64_both_alphabets() {
        assert_eq!(base64(b"client:secret"), "Y2xpZW50OnNlY3JldA==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(b"abc"), "YWJj");
    }
}
