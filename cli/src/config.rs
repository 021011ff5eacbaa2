//! Turning flags into a validated configuration: every mistake is one readable line.

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

/// Parses a byte size: a plain number or with a unit (`64KiB`, `16MiB`, `1GiB`; `K`, `M`, `G`
/// and `KB`, `MB`, `GB` mean the same binary multiples).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], t[i..].to_ascii_lowercase()),
        None => (t, String::new()),
    };
    let scale: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}` is not a size (use 1048576, 64KiB, 16MiB or 1GiB)"
            ))
        }
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size (use 1048576, 64KiB, 16MiB or 1GiB)"))?;
    value
        .checked_mul(scale)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// What a `--listen` value asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(Vec<SocketAddr>),
    Http(Vec<SocketAddr>),
}

/// Parses `tcp://HOST:PORT`, `http://HOST:PORT` or `HOST:PORT` (TCP; IPv6 as `[::1]:9000`).
/// A host name is resolved and every address it has is bound.
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    let (rest, http) = if let Some(rest) = text.strip_prefix("tcp://") {
        (rest, false)
    } else if let Some(rest) = text.strip_prefix("http://") {
        (rest, true)
    } else if let Some((scheme, _)) = text.split_once("://") {
        return Err(format!(
            "--listen {text}: unsupported scheme `{scheme}://` (use tcp://HOST:PORT or http://HOST:PORT)"
        ));
    } else {
        (text, false)
    };
    let wrap = |addrs| {
        if http {
            Listen::Http(addrs)
        } else {
            Listen::Tcp(addrs)
        }
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
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("123"), Ok(123));
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
}
