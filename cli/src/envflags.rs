//! `MCP_RELAY_<FLAG>`: every flag of the relay from the environment, for containers and
//! service managers. `--max-sessions` is `MCP_RELAY_MAX_SESSIONS` (upper case, dashes as
//! underscores). The variables become flags placed before the command line, for the flags
//! the command line does not give itself: the command line wins over the environment, which
//! wins over the `--config` file's `"relay"` (a variable replaces the file's setting, a flag
//! replaces the variable: lists are not merged).
//!
//! - A switch takes `1`, `true`, `yes` or `0`, `false`, `no` (any case); anything else is an
//!   error naming the variable.
//! - A repeatable flag takes one value per line; those whose values never hold a comma
//!   (`--listen`, `--allow-origin`, `--allow-host`) take commas too. Blank items are skipped.
//! - An empty variable counts as unset.
//! - The relay removes the variables it reads from its own environment at startup, so that no
//!   server (which inherits the relay's environment) sees them, as with
//!   `MCP_RELAY_AUTH_TOKEN` (read apart, in `main`: its tokens add to `--auth-token`'s).
//! - Another `MCP_RELAY_` name is warned about (a misspelling shows) and left in place.

use crate::servers_file::{flag_kind, setting_flags, Arity};
use std::ffi::OsString;

/// What every variable's name starts with.
pub const PREFIX: &str = "MCP_RELAY_";

/// `MCP_RELAY_` names that are not flags and are not warned about: the bearer token (read
/// apart, see `main`), and what the project's own tools read (its test harness, whose
/// `MCP_RELAY_E2E_` variables reach the servers through the relay; `check`
/// hands header values to the relay it runs as `MCP_RELAY_CHECK_H<n>`).
const NOT_FLAGS: &[&str] = &[
    "MCP_RELAY_AUTH_TOKEN",
    "MCP_RELAY_BIN",
    "MCP_RELAY_REQUIRE_SDK",
    "MCP_RELAY_ALLOW_SKIP",
    "MCP_RELAY_NODE22",
    "MCP_RELAY_SERVER_NODE",
    "MCP_RELAY_PYTHON",
];
const NOT_FLAG_PREFIXES: &[&str] = &["MCP_RELAY_PYTHON_", "MCP_RELAY_E2E_", "MCP_RELAY_CHECK_H"];

/// Flags that are not `--config` settings but can come from the environment.
const EXTRA: &[(&str, Arity, bool)] = &[
    ("config", Arity::One, false),
    ("connect", Arity::Many, false),
    ("demo", Arity::Switch, false),
    // The login flags of --connect (not file settings either).
    ("no-login", Arity::Switch, false),
    ("client-id", Arity::One, false),
    ("client-secret", Arity::One, true),
    ("client-metadata-url", Arity::One, false),
    ("no-browser", Arity::Switch, false),
    ("auth-url-command", Arity::One, false),
    ("auth-callback-port", Arity::One, false),
];

/// Flags that are neither: they are not settings.
const NEVER: &[&str] = &["help", "version"];

/// Repeatable flags whose values never hold a comma: a comma separates them too.
const COMMA_LISTS: &[&str] = &["listen", "allow-origin", "allow-host"];

/// How `--{flag}` takes its value and whether that may be secret; `None` if no variable
/// sets it.
fn kind(flag: &str) -> Option<(Arity, bool)> {
    if NEVER.contains(&flag) {
        return None;
    }
    flag_kind(flag).or_else(|| {
        EXTRA
            .iter()
            .find(|(f, _, _)| *f == flag)
            .map(|(_, a, secret)| (*a, *secret))
    })
}

/// The variable that `name` (not one) most likely meant: one a typo or two away.
pub fn suggest(name: &str) -> Option<String> {
    let flags = setting_flags().chain(EXTRA.iter().map(|(f, _, _)| *f));
    flags
        .map(var_name)
        .map(|known| (distance(name, &known), known))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, known)| known)
}

/// Levenshtein distance, by bytes (the names are ASCII).
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The variable for `--{flag}`.
pub fn var_name(flag: &str) -> String {
    format!("{PREFIX}{}", flag.to_ascii_uppercase().replace('-', "_"))
}

/// The flag (without dashes) a variable stands for, if it stands for one.
fn flag_of(name: &str) -> Option<String> {
    if NOT_FLAGS.contains(&name) {
        return None;
    }
    let rest = name.strip_prefix(PREFIX)?;
    if rest.is_empty() || rest.bytes().any(|b| b.is_ascii_lowercase() || b == b'-') {
        return None;
    }
    let flag = rest.to_ascii_lowercase().replace('_', "-");
    kind(&flag).map(|_| flag)
}

/// The relay's variables, as read at startup.
#[derive(Debug, Default)]
pub struct FromEnv {
    /// Those that set a flag, by name: (name, flag without dashes, value; `None` if not
    /// UTF-8).
    vars: Vec<(String, String, Option<String>)>,
    /// `MCP_RELAY_` names that set nothing.
    pub unknown: Vec<String>,
}

/// What the variables add to the command line.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Flags and values, to go before the command line.
    pub argv: Vec<String>,
    /// Every flag a variable set (`--debug` too when it said `false`), with the variable:
    /// the file's settings for them are left out.
    pub set: Vec<(String, String)>,
}

impl Applied {
    /// The flags the variables set (`--max-sessions`).
    pub fn flags(&self) -> Vec<String> {
        self.set.iter().map(|(flag, _)| flag.clone()).collect()
    }

    /// `error` with the variable named, when it is about a flag a variable set.
    pub fn blame(&self, error: String) -> String {
        let named = self.set.iter().find(|(flag, _)| {
            error.match_indices(flag.as_str()).any(|(at, _)| {
                !error[at + flag.len()..]
                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            })
        });
        match named {
            Some((_, var)) => format!("{error} (from {var})"),
            None => error,
        }
    }
}

/// Reads the relay's variables from `vars` (as `std::env::vars_os` gives them).
pub fn read(vars: impl IntoIterator<Item = (OsString, OsString)>) -> FromEnv {
    let mut out = FromEnv::default();
    for (name, value) in vars {
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(PREFIX) {
            continue;
        }
        match flag_of(name) {
            Some(flag) => out
                .vars
                .push((name.to_owned(), flag, value.into_string().ok())),
            None if NOT_FLAGS.contains(&name)
                || NOT_FLAG_PREFIXES.iter().any(|p| name.starts_with(p)) => {}
            None => out.unknown.push(name.to_owned()),
        }
    }
    out.vars.sort();
    out.unknown.sort();
    out
}

/// Reads the relay's variables and removes those that set a flag (and the bearer token) from
/// this process's environment, so that no child inherits them. Call it while the process has
/// one thread.
pub fn take() -> FromEnv {
    let found = read(std::env::vars_os());
    for (name, _, _) in &found.vars {
        std::env::remove_var(name);
    }
    std::env::remove_var(crate::AUTH_TOKEN_VAR);
    found
}

/// The flags (`--listen`) a command line gives itself: those before `--` or before the
/// server command (the first word that is neither a flag nor a flag's value).
pub fn given_flags(argv: &[&str]) -> Vec<String> {
    let mut given = Vec::new();
    let mut args = argv.iter();
    while let Some(a) = args.next() {
        if *a == "--" || !a.starts_with('-') {
            break;
        }
        given.push((*a).to_owned());
        let takes_value = a
            .strip_prefix("--")
            .and_then(kind)
            .is_some_and(|(arity, _)| arity != Arity::Switch);
        if takes_value {
            args.next();
        }
    }
    given
}

impl FromEnv {
    /// The flags the variables stand for, leaving out those `argv` (the command line) gives.
    /// A value a flag would refuse is an error naming the variable (a secret one's value is
    /// never shown).
    pub fn apply(&self, argv: &[&str]) -> Result<Applied, String> {
        let given = given_flags(argv);
        let mut out = Applied::default();
        for (name, flag, value) in &self.vars {
            let dashed = format!("--{flag}");
            if given.contains(&dashed) {
                continue;
            }
            let Some(value) = value else {
                return Err(format!("{name} is not valid UTF-8"));
            };
            if value.trim().is_empty() {
                continue;
            }
            let Some((arity, secret)) = kind(flag) else {
                continue;
            };
            match arity {
                Arity::Switch => match value.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" => out.argv.push(dashed.clone()),
                    "0" | "false" | "no" => {}
                    _ => {
                        return Err(format!(
                            "{name}={value}: expected 1, true or yes (or 0, false or no)"
                        ))
                    }
                },
                Arity::One => {
                    check(&dashed, value.as_str(), secret).map_err(|e| format!("{name}: {e}"))?;
                    out.argv.push(dashed.clone());
                    out.argv.push(value.clone());
                }
                Arity::Many => {
                    let commas = COMMA_LISTS.contains(&flag.as_str());
                    let items = value
                        .split(|c| c == '\n' || (commas && c == ','))
                        .map(|i| i.strip_suffix('\r').unwrap_or(i))
                        .filter(|i| !i.trim().is_empty())
                        .map(|i| if commas { i.trim() } else { i });
                    for (n, item) in items.enumerate() {
                        check(&dashed, item, secret)
                            .map_err(|e| format!("{name}, item {}: {e}", n + 1))?;
                        out.argv.push(dashed.clone());
                        out.argv.push(item.to_owned());
                    }
                }
            }
            out.set.push((dashed, name.clone()));
        }
        Ok(out)
    }
}

/// Whether `flag value` parses; the error is the parser's (which quotes the value), or, for a
/// secret, one that does not show it.
fn check(flag: &str, value: &str, secret: bool) -> Result<(), String> {
    match <crate::Args as argh::FromArgs>::from_args(&["mcp-relay"], &[flag, value]) {
        Ok(_) => Ok(()),
        Err(_) if secret => Err(format!(
            "not a valid {flag} value (not shown: it may be secret)"
        )),
        Err(early) => Err(match crate::usage::value_error(&early.output) {
            Some((_, _, message)) => message.to_owned(),
            None => crate::usage::argh_error(&early.output),
        }),
    }
}

/// Every variable, for README (a test checks that it lists them all).
#[cfg(test)]
pub fn all_vars(flags: &[String]) -> Vec<String> {
    flags
        .iter()
        .filter_map(|f| f.strip_prefix("--"))
        .filter(|f| kind(f).is_some())
        .map(var_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> FromEnv {
        read(vars.iter().map(|(k, v)| (k.into(), v.into())))
    }

    fn applied(vars: &[(&str, &str)], argv: &[&str]) -> Result<Vec<String>, String> {
        env(vars).apply(argv).map(|a| a.argv)
    }

    fn check(vars: &[(&str, &str)], argv: &[&str], expect: &[&str]) {
        assert_eq!(
            applied(vars, argv),
            Ok(expect.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            "{vars:?} {argv:?}"
        );
    }

    fn check_err(vars: &[(&str, &str)], expect: &str) {
        let e = applied(vars, &[]).expect_err("refused");
        assert!(e.contains(expect), "{vars:?}: {e}");
    }

    #[test]
    fn names() {
        assert_eq!(var_name("max-sessions"), "MCP_RELAY_MAX_SESSIONS");
        assert_eq!(
            flag_of("MCP_RELAY_MAX_SESSIONS").as_deref(),
            Some("max-sessions")
        );
        assert_eq!(flag_of("MCP_RELAY_CONNECT").as_deref(), Some("connect"));
        assert_eq!(flag_of("MCP_RELAY_max_sessions"), None);
        assert_eq!(flag_of("MCP_RELAY_MAX-SESSIONS"), None);
        assert_eq!(flag_of("MCP_RELAY_VERSION"), None);
        assert_eq!(flag_of("MCP_RELAY_HELP"), None);
        assert_eq!(flag_of("MCP_RELAY_"), None);
        let found = env(&[
            ("MCP_RELAY_MAX_SESION", "1"),
            ("MCP_RELAY_PORT", "8080"),
            ("MCP_RELAY_AUTH_TOKEN", "t"),
            ("MCP_RELAY_REQUIRE_SDK", "1"),
            ("MCP_RELAY_CHECK_H0", "v"),
            ("MCP_RELAY_PYTHON_V2", "p"),
            ("MCP_PORT", "1"),
            ("MCP_RELAY_DEBUG", "1"),
        ]);
        assert_eq!(found.unknown, ["MCP_RELAY_MAX_SESION", "MCP_RELAY_PORT"]);
        assert_eq!(found.vars.len(), 1);
    }

    #[test]
    fn values_become_flags() {
        check(
            &[("MCP_RELAY_MAX_SESSIONS", "7")],
            &[],
            &["--max-sessions", "7"],
        );
        check(
            &[
                ("MCP_RELAY_SHUTDOWN_GRACE", "2s"),
                ("MCP_RELAY_DEMO", "yes"),
            ],
            &[],
            &["--demo", "--shutdown-grace", "2s"],
        );
        // Switches.
        for on in ["1", "true", "TRUE", "Yes"] {
            check(&[("MCP_RELAY_DEBUG", on)], &[], &["--debug"]);
        }
        for off in ["0", "false", "No"] {
            check(&[("MCP_RELAY_DEBUG", off)], &[], &[]);
        }
        // Empty is unset.
        check(
            &[("MCP_RELAY_MAX_SESSIONS", ""), ("MCP_RELAY_DEBUG", " ")],
            &[],
            &[],
        );
        // Lists: lines; commas too where values never hold one.
        check(
            &[(
                "MCP_RELAY_LISTEN",
                "127.0.0.1:1, http://127.0.0.1:2\n\ntls://[::1]:3\r\n",
            )],
            &[],
            &[
                "--listen",
                "127.0.0.1:1",
                "--listen",
                "http://127.0.0.1:2",
                "--listen",
                "tls://[::1]:3",
            ],
        );
        check(
            &[("MCP_RELAY_HEADER", "X-A: 1,2\nX-B: 3")],
            &[],
            &["--header", "X-A: 1,2", "--header", "X-B: 3"],
        );
        check(
            &[("MCP_RELAY_ENV", "A=1,2\nB= spaced ")],
            &[],
            &["--env", "A=1,2", "--env", "B= spaced "],
        );
    }

    #[test]
    fn the_command_line_wins() {
        let vars = [
            ("MCP_RELAY_LISTEN", "127.0.0.1:1"),
            ("MCP_RELAY_MAX_SESSIONS", "7"),
            ("MCP_RELAY_DEBUG", "1"),
        ];
        check(
            &vars,
            &[
                "--listen",
                "127.0.0.1:9",
                "--debug",
                "--",
                "x",
                "--max-sessions",
            ],
            &["--max-sessions", "7"],
        );
        // A flag's value is not a flag; the server command's flags are not the relay's.
        check(
            &vars,
            &["--header", "--debug", "./server", "--listen", "x"],
            &["--debug", "--listen", "127.0.0.1:1", "--max-sessions", "7"],
        );
        let a = env(&[("MCP_RELAY_DEBUG", "0"), ("MCP_RELAY_PRESPAWN", "1")])
            .apply(&["--prespawn", "2"])
            .expect("valid");
        assert_eq!(a.flags(), ["--debug"]);
    }

    #[test]
    fn mistakes_name_the_variable() {
        check_err(
            &[("MCP_RELAY_DEBUG", "maybe")],
            "MCP_RELAY_DEBUG=maybe: expected 1, true or yes (or 0, false or no)",
        );
        check_err(
            &[("MCP_RELAY_SHUTDOWN_GRACE", "5x")],
            "MCP_RELAY_SHUTDOWN_GRACE: `5x` is not a duration",
        );
        check_err(
            &[("MCP_RELAY_MAX_SESSIONS", "lots")],
            "MCP_RELAY_MAX_SESSIONS: `lots` is not a whole number",
        );
        check_err(
            &[("MCP_RELAY_LISTEN", "127.0.0.1:1,nonsense")],
            "MCP_RELAY_LISTEN, item 2: --listen nonsense: expected HOST:PORT",
        );
        // A secret's value is not shown.
        let e = applied(&[("MCP_RELAY_ENV", "A=1\nhunter2")], &[]).expect_err("refused");
        assert!(
            e.starts_with("MCP_RELAY_ENV, item 2: not a valid --env value"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn misspellings_get_a_suggestion() {
        assert_eq!(
            suggest("MCP_RELAY_MAX_SESION").as_deref(),
            Some("MCP_RELAY_MAX_SESSIONS")
        );
        assert_eq!(
            suggest("MCP_RELAY_LISTENS").as_deref(),
            Some("MCP_RELAY_LISTEN")
        );
        assert_eq!(suggest("MCP_RELAY_PORT"), None);
        assert_eq!(distance("", "ab"), 2);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn blame_names_the_variable() {
        let a = env(&[("MCP_RELAY_MAX_SESSIONS", "0")])
            .apply(&[])
            .expect("valid");
        assert_eq!(
            a.blame("--max-sessions must be at least 1".into()),
            "--max-sessions must be at least 1 (from MCP_RELAY_MAX_SESSIONS)"
        );
        assert_eq!(a.blame("--max-sessions-x".into()), "--max-sessions-x");
        assert_eq!(a.blame("--listen: x".into()), "--listen: x");
    }
}
