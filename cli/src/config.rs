//! Turning flags into a validated configuration: every mistake is one readable line.

use mcp_relay_core::RemoteUrl;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Parses a duration: plain seconds (`5`, `0.5`) or with a unit (`500ms`, `2s`, `1m`, `1h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "`{text}` is not a duration (use 5, 0.5, 500ms, 2s, 1m or 1h)"
            ))
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (use 5, 0.5, 500ms, 2s, 1m or 1h)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "`{text}` is not a duration: it must be zero or more"
        ));
    }
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("`{text}` is too long a duration"))
}

/// Parses a byte size: a plain number of bytes, or one with a unit, any case. `KiB`, `MiB`,
/// `GiB` (and `K`, `M`, `G`, as in systemd and Docker) are powers of 1024; `kB`, `MB`, `GB`
/// are powers of 1000, as the SI has them. `B` is bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], t[i..].to_ascii_lowercase()),
        None => (t, String::new()),
    };
    let scale: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(not_a_size(text)),
    };
    let value: u64 = number.trim().parse().map_err(|_| not_a_size(text))?;
    value
        .checked_mul(scale)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("`{text}` is too large"))
}

fn not_a_size(text: &str) -> String {
    format!("`{text}` is not a size (use 1048576, 64KiB, 16MiB or 1GiB; MB is 10^6 bytes)")
}

/// What a `--listen` value asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(Vec<SocketAddr>),
    Http(Vec<SocketAddr>),
    /// `tls://`: newline-delimited JSON-RPC over TLS.
    Tls(Vec<SocketAddr>),
    /// `https://`: HTTP over TLS.
    Https(Vec<SocketAddr>),
}

impl Listen {
    /// Whether it speaks TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Listen::Tls(_) | Listen::Https(_))
    }
}

/// Parses `tcp://HOST:PORT`, `http://HOST:PORT`, `tls://HOST:PORT`, `https://HOST:PORT` or
/// `HOST:PORT` (TCP; IPv6 as `[::1]:9000`). A host name is resolved and every address it
/// has is bound.
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    let (rest, wrap): (&str, fn(Vec<SocketAddr>) -> Listen) = match text.split_once("://") {
        None => (text, Listen::Tcp),
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "tcp" => (rest, Listen::Tcp),
            "http" => (rest, Listen::Http),
            "tls" => (rest, Listen::Tls),
            "https" => (rest, Listen::Https),
            _ => {
                return Err(format!(
                    "--listen {text}: unsupported scheme `{scheme}://` (use tcp://, http://, tls:// or https://HOST:PORT)"
                ))
            }
        },
    };
    let rest = rest.trim_end_matches('/');
    if let Some((_, path)) = rest.split_once('/') {
        return Err(format!(
            "--listen {text}: no path please (`/{path}`): MCP is served at /mcp and /sse"
        ));
    }
    if let Ok(addr) = rest.parse::<SocketAddr>() {
        return Ok(wrap(vec![addr]));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(format!(
            "--listen {text}: expected HOST:PORT, for example 127.0.0.1:9000"
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "--listen {text}: `{port}` is not a port number (0-65535)"
        ));
    }
    if host.is_empty() {
        return Err(format!("--listen {text}: the host is missing; use 127.0.0.1:{port} for this machine only, or 0.0.0.0:{port} for every interface"));
    }
    let addrs: Vec<SocketAddr> = rest
        .to_socket_addrs()
        .map_err(|e| format!("--listen {text}: cannot resolve `{host}`: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("--listen {text}: `{host}` has no address"));
    }
    Ok(wrap(addrs))
}

/// Parses `KEY=VALUE` for `--env`.
pub fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_owned(), v.to_owned()))
        }
        _ => Err(format!("--env {text}: expected KEY=VALUE")),
    }
}

/// Parses a `--connect` URL. Errors show the URL without what may be secret in it (user
/// info, the query).
pub fn parse_connect(text: &str) -> Result<RemoteUrl, String> {
    RemoteUrl::parse(text).map_err(|e| {
        let shown = redact_url(text);
        format!("--connect: {}", e.replace(text, &shown))
    })
}

/// A URL as it may be logged: user info and the query (where some servers take an API key)
/// are replaced with `…`.
pub fn redact_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, _)) => format!("{path}?…"),
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Parses one `--header` (`Name: value`, or `Name:value`: some MCP hosts drop or split
/// spaces in arguments) and expands `${VAR}` and `${VAR:-default}` in its value from `env`.
/// Returns the header and the variables that were unset with no default (they expand to
/// nothing; the caller warns). Errors never quote the value, nor the text when it has no
/// colon (it may be a token pasted alone). `n` numbers the header among the flags (from 1).
pub fn parse_header(
    text: &str,
    n: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<((String, String), Vec<String>), String> {
    let Some((name, value)) = text.split_once(':') else {
        return Err(format!(
            "--header #{n}: expected `Name: value` (there is no colon)"
        ));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!(
            "--header #{n}: the name before the colon is missing"
        ));
    }
    if !name.bytes().all(is_token_byte) {
        // Not quoted: what precedes the colon may be a secret (`Bearer abc:def`).
        return Err(format!(
            "--header #{n}: the name before the colon may only have letters, digits and !#$%&'*+-.^_`|~"
        ));
    }
    if let Some(reserved) = RESERVED_HEADERS
        .iter()
        .find(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(format!("--header {name}: the relay sets {reserved} itself"));
    }
    let (value, unset) = expand_vars(value.trim(), env);
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!(
            "--header {name}: the value has a line break or NUL (after expanding variables)"
        ));
    }
    Ok(((name.to_owned(), value.trim().to_owned()), unset))
}

/// Headers that frame the request or the connection: the relay writes them, and a second
/// copy would break the request.
pub const RESERVED_HEADERS: &[&str] = &[
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Upgrade",
];

/// A byte of an HTTP token (RFC 9110 `tchar`).
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Expands `${VAR}` and `${VAR:-default}` (the default also when `VAR` is empty, as in the
/// shell). Anything else, `$VAR` and an unclosed `${` among it, stays as written. Returns the
/// text and the names of the variables that were unset with no default.
pub fn expand_vars(text: &str, env: &dyn Fn(&str) -> Option<String>) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut unset = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return (out, unset);
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            // Not a variable reference: kept as written.
            out.push_str(&rest[start..start + 2 + end + 1]);
        } else {
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    if env(name).is_none() {
                        unset.push(name.to_owned());
                    }
                }
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    (out, unset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok =
            |t: &str, ms: u64| assert_eq!(parse_duration(t), Ok(Duration::from_millis(ms)), "{t}");
        ok("5", 5000);
        ok("0.5", 500);
        ok("500ms", 500);
        ok("2s", 2000);
        ok("1m", 60_000);
        ok("1h", 3_600_000);
        ok("0", 0);
        for bad in ["", "x", "5x", "-1", "ms", "1.2.3s", "inf", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        let ok = |t: &str, n: usize| assert_eq!(parse_size(t), Ok(n), "{t}");
        // Binary: the IEC units, and the single letters.
        ok("16MiB", 16 << 20);
        ok("16mib", 16 << 20);
        ok("16 MiB", 16 << 20);
        ok("16M", 16 << 20);
        ok("64k", 64 << 10);
        ok("64KiB", 64 << 10);
        ok("1GiB", 1 << 30);
        ok("1G", 1 << 30);
        // Decimal: the SI units.
        ok("64kB", 64_000);
        ok("64KB", 64_000);
        ok("16MB", 16_000_000);
        ok("1GB", 1_000_000_000);
        ok("123", 123);
        ok("123B", 123);
        for bad in ["", "x", "1.5M", "-1", "1T", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_addresses() {
        let one = |t: &str, a: &str| {
            assert_eq!(
                parse_listen(t),
                Ok(Listen::Tcp(vec![a.parse().unwrap()])),
                "{t}"
            )
        };
        one("127.0.0.1:9000", "127.0.0.1:9000");
        one("tcp://0.0.0.0:1", "0.0.0.0:1");
        one("[::1]:9000", "[::1]:9000");
        one("tcp://[::]:80/", "[::]:80");
        assert!(matches!(parse_listen("localhost:9000"), Ok(Listen::Tcp(a)) if !a.is_empty()));
        assert_eq!(
            parse_listen("http://127.0.0.1:8080"),
            Ok(Listen::Http(vec!["127.0.0.1:8080".parse().unwrap()]))
        );
        assert!(parse_listen("http://127.0.0.1:8080/mcp").is_err());
        for bad in [
            "9000",
            ":9000",
            "127.0.0.1",
            "127.0.0.1:x",
            "127.0.0.1:70000",
            "udp://1.2.3.4:5",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), "".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }

    /// A fake environment: `TOKEN=abc:123`, `EMPTY=` (set, empty).
    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("abc:123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn check_header(text: &str, expect: Result<(&str, &str, &[&str]), &str>) {
        let got = parse_header(text, 1, &env);
        match (got, expect) {
            (Ok(((name, value), unset)), Ok((n, v, u))) => {
                assert_eq!((name.as_str(), value.as_str()), (n, v), "{text:?}");
                assert_eq!(unset, u, "{text:?}");
            }
            (Err(e), Err(part)) => {
                assert!(e.contains(part), "{text:?}: {e}");
                assert!(
                    !e.contains("abc") && !e.contains("secret"),
                    "{text:?} leaks: {e}"
                );
            }
            (got, expect) => panic!("{text:?}: {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn headers() {
        check_header("X-Api-Key: secret", Ok(("X-Api-Key", "secret", &[])));
        // Hosts that mangle spaces: no space, or several.
        check_header("X-Api-Key:secret", Ok(("X-Api-Key", "secret", &[])));
        check_header("  X-Api-Key :   secret  ", Ok(("X-Api-Key", "secret", &[])));
        // The value may hold colons.
        check_header("X-Url: http://h:1/", Ok(("X-Url", "http://h:1/", &[])));
        check_header("X-Empty:", Ok(("X-Empty", "", &[])));
        check_header(
            "Authorization: Bearer ${TOKEN}",
            Ok(("Authorization", "Bearer abc:123", &[])),
        );
        check_header(
            "Authorization:${TOKEN}",
            Ok(("Authorization", "abc:123", &[])),
        );
        check_header("X: ${NOPE}", Ok(("X", "", &["NOPE"])));
        check_header("X: a${NOPE:-dflt}b", Ok(("X", "adfltb", &[])));
        check_header("X: ${EMPTY:-dflt}", Ok(("X", "dflt", &[])));
        // Set but empty: no warning.
        check_header("X: <${EMPTY}>", Ok(("X", "<>", &[])));

        check_header("Bearer secret", Err("no colon"));
        check_header(": secret", Err("name before the colon is missing"));
        check_header("Bearer abc: x", Err("may only have letters"));
        check_header("X\u{e9}: x", Err("may only have letters"));
        check_header("Host: example.com", Err("sets Host itself"));
        check_header("content-length: 5", Err("sets Content-Length itself"));
        check_header("X: secret\r\nY: z", Err("line break"));
    }

    fn check_expand(text: &str, expect: &str, unset: &[&str]) {
        assert_eq!(
            expand_vars(text, &env),
            (
                expect.to_owned(),
                unset.iter().map(|u| u.to_string()).collect::<Vec<_>>()
            ),
            "{text:?}"
        );
    }

    #[test]
    fn variables() {
        check_expand("plain", "plain", &[]);
        check_expand("${TOKEN}", "abc:123", &[]);
        check_expand("${TOKEN:-x}", "abc:123", &[]);
        check_expand("${A}${B:-b}${C}", "b", &["A", "C"]);
        check_expand("${A:-}", "", &[]);
        check_expand("${A:-x:-y}", "x:-y", &[]);
        // Not references: kept as written.
        check_expand("$TOKEN", "$TOKEN", &[]);
        check_expand("${TOKEN", "${TOKEN", &[]);
        check_expand("a ${} b", "a ${} b", &[]);
        check_expand("${1X}", "${1X}", &[]);
        check_expand("${A B}", "${A B}", &[]);
        check_expand("$${TOKEN}}", "$abc:123}", &[]);
    }

    #[test]
    fn connect_urls_keep_their_secrets() {
        let check = |url: &str, expect: Result<&str, &str>| match (parse_connect(url), expect) {
            (Ok(u), Ok(shown)) => assert_eq!(u.to_string(), shown, "{url}"),
            (Err(e), Err(part)) => {
                assert!(
                    e.starts_with("--connect: ") && e.contains(part),
                    "{url}: {e}"
                );
                assert!(!e.contains("hunter2"), "{url}: {e}");
            }
            (got, expect) => panic!("{url}: {got:?}, expected {expect:?}"),
        };
        check("http://127.0.0.1:8080/mcp", Ok("http://127.0.0.1:8080/mcp"));
        check("tcp://localhost:9000", Ok("tcp://localhost:9000"));
        check("http://u:hunter2@h/mcp", Err("credentials"));
        check("http://h/mcp?key=hunter2#frag", Err("http://h/mcp?…"));
        check("ftp://h/", Err("unsupported scheme"));
        assert_eq!(redact_url("http://h:1/a?k=v"), "http://h:1/a?…");
        assert_eq!(redact_url("http://u:p@h?k"), "http://…@h?…");
        assert_eq!(redact_url("tcp://h:1"), "tcp://h:1");
    }
}
