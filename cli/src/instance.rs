//! `--instance-id`: the name a relay puts at the start of every session id, so that a load
//! balancer in front of several relays can send a session's requests to the relay that made
//! it.

/// Most characters of an instance id (the core's limit).
const MAX_LEN: usize = 32;

/// Checks a given `--instance-id`.
pub fn parse(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not an instance id: 1 to {MAX_LEN} of A-Z a-z 0-9 _ -"
        ))
    }
}

/// The default: the host name's first label and the first HTTP listener's port
/// (`web1-8080`), which stays the same across restarts of the same instance.
pub fn derive(host: &str, port: Option<u16>) -> String {
    let label = host.split('.').next().unwrap_or_default();
    let mut id: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if id.is_empty() {
        id.push_str("relay");
    }
    let suffix = port.map(|p| format!("-{p}")).unwrap_or_default();
    id.truncate(MAX_LEN - suffix.len());
    id.push_str(&suffix);
    id
}

/// This machine's host name (Linux: the kernel's; elsewhere `$HOSTNAME`), or `relay`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "relay".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_valid_and_keep_the_port() {
        assert_eq!(derive("web1.example.com", Some(8080)), "web1-8080");
        assert_eq!(derive("", None), "relay");
        assert_eq!(derive("my host", Some(1)), "my-host-1");
        let long = derive(&"x".repeat(80), Some(65535));
        assert_eq!(long.len(), MAX_LEN);
        assert!(long.ends_with("-65535"));
        assert!(parse(&long).is_ok());
        assert!(parse("a.b").is_err());
        assert!(parse("").is_err());
    }
}
