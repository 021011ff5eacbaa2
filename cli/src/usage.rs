//! Startup mistakes as one line each: argh's messages reworded, and the parsers of the flags
//! that argh would otherwise parse with std's terse errors.

/// argh's error for a command line, as one line without the `mcp-relay: ` prefix.
pub fn argh_error(output: &str) -> String {
    let out = output.trim();
    if let Some((flag, _, message)) = value_error(out) {
        // The flags' parsers quote the value (and some name the flag themselves).
        return if message.starts_with(flag) {
            message.to_owned()
        } else {
            format!("{flag}: {message}")
        };
    }
    if let Some(rest) = out.strip_prefix("No value provided for option '") {
        let flag = rest.trim_end_matches(['.', '\'']);
        return format!("{flag} needs a value");
    }
    if let Some(rest) = out.strip_prefix("Unrecognized argument: ") {
        let given = rest
            .split(". Did you mean")
            .next()
            .unwrap_or(rest)
            .trim_matches('"');
        if let Some((flag, _)) = given.split_once('=').filter(|_| given.starts_with("--")) {
            return format!("unknown flag {given}: write the value after a space ({flag} VALUE)");
        }
        if given.starts_with('-') {
            return format!("unknown flag {given} (`mcp-relay --help` lists them)");
        }
        return format!("unexpected argument `{given}` (the server command goes after `--`)");
    }
    // Anything else (argh's own wording, several lines): one line all the same.
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// argh's "Error parsing option '--flag' with value 'value': message": the three parts.
pub fn value_error(output: &str) -> Option<(&str, &str, &str)> {
    let rest = output.trim().strip_prefix("Error parsing option '")?;
    let (flag, rest) = rest.split_once("' with value '")?;
    // The value may hold `': `; the message of a parser here never starts with a quote.
    let (value, message) = rest.rsplit_once("': ")?;
    Some((flag, value, message))
}

/// A whole number: `--prespawn`, `--max-sessions` and the other counts.
pub fn parse_count(text: &str) -> Result<usize, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number (for example 4)"))
}

/// A whole number that fits 32 bits (`--max-restarts`).
pub fn parse_count_u32(text: &str) -> Result<u32, String> {
    let n = parse_count(text)?;
    u32::try_from(n).map_err(|_| format!("`{text}` is too large"))
}

/// `--log-level`.
pub fn parse_log_level(text: &str) -> Result<log::LevelFilter, String> {
    text.trim().parse().map_err(|_| {
        format!("`{text}` is not a log level (error, warn, info, debug, trace or off)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(output: &str, expect: &str) {
        assert_eq!(argh_error(output), expect, "{output:?}");
    }

    #[test]
    fn arghs_errors_become_one_line() {
        check(
            "Error parsing option '--shutdown-grace' with value '5x': `5x` is not a duration\n",
            "--shutdown-grace: `5x` is not a duration",
        );
        check(
            "Error parsing option '--listen' with value 'x': --listen x: expected HOST:PORT\n",
            "--listen x: expected HOST:PORT",
        );
        check(
            "No value provided for option '--listen'.\n",
            "--listen needs a value",
        );
        check(
            "Unrecognized argument: --frobnicate\n",
            "unknown flag --frobnicate (`mcp-relay --help` lists them)",
        );
        check(
            "Unrecognized argument: \"--lisen\". Did you mean \"--listen\"?\n",
            "unknown flag --lisen (`mcp-relay --help` lists them)",
        );
        check(
            "Unrecognized argument: --listen=127.0.0.1:0\n",
            "unknown flag --listen=127.0.0.1:0: write the value after a space (--listen VALUE)",
        );
        check(
            "Required options not provided:\n    --x\n",
            "Required options not provided: --x",
        );
    }

    #[test]
    fn counts_and_levels() {
        assert_eq!(parse_count("12"), Ok(12));
        assert!(parse_count("x")
            .unwrap_err()
            .contains("`x` is not a whole number"));
        assert!(parse_count("-1").is_err());
        assert_eq!(parse_count_u32("5"), Ok(5));
        assert!(parse_count_u32("99999999999").is_err());
        assert_eq!(parse_log_level("debug"), Ok(log::LevelFilter::Debug));
        assert!(parse_log_level("verbose")
            .unwrap_err()
            .contains("`verbose` is not a log level"));
    }
}
