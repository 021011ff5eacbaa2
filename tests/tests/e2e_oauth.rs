//! Logging in to a remote server (issue 15): the conformance suite's client authorization
//! scenarios (`@modelcontextprotocol/conformance` 0.1.16, `auth/*`) with
//! tests/python/conformance_client_driver.py as the client: the SDK's stdio client and
//! `mcp-relay --connect <the scenario server's URL>`, whose login runs headless
//! (`--auth-url-command` runs tests/python/follow_url.py, which follows the authorization URL;
//! the suite's mock authorization server redirects straight back to the relay's loopback
//! callback). Each scenario gets a token store of its own (`XDG_CONFIG_HOME`).
//!
//! Every scenario of the suite's auth list for 2025-03-26 … 2025-11-25 and the draft runs
//! here and must pass with no FAILURE or WARNING check; so does every 2026-07-28 one of
//! 0.2.0-alpha.12 (installed as `conformance-2026`, run with `--spec-version 2026-07-28`;
//! the relay's default `--transport auto` finds the era: those servers refuse a session-era
//! `initialize` with -32020). Not run: the
//! `extension` scenarios (client credentials, JWT bearer, DPoP, enterprise-managed and
//! cross-app access): machine-to-machine grants and token binding, not the authorization
//! code flow a stdio client's user logs in with.
//!
//! Prerequisites as in e2e_client_mode.rs (`npm ci --prefix tests/node`, the Python SDK 1.x
//! venv): the scenario tests are `#[ignore]`d interop tests (`--include-ignored` runs them;
//! then a missing prerequisite fails).

mod common;
mod http_support;

use http_support::{
    conformance_missing, node22, python_of, python_sdk_missing_of, relay_bin, run_bounded, skip,
    tests_dir, Suite,
};
use serde_json::Value;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

/// The Python SDK major the stdio client runs with.
const SDK: u32 = 1;

/// Runs `auth/<scenario>` and asserts that every check the suite made passed. `env` is more
/// environment for the driver (and so the relay).
fn auth_scenario(test: &str, suite: Suite, scenario: &str, env: &[(&str, &str)]) {
    if let Some(why) = conformance_missing(suite.package()).or_else(|| python_sdk_missing_of(SDK)) {
        return skip(test, &why);
    }
    let suite_js = suite.script();
    let driver = tests_dir()
        .join("python")
        .join("conformance_client_driver.py");
    let words = [
        python_of(SDK),
        driver.display().to_string(),
        relay_bin().display().to_string(),
    ];
    assert!(
        words.iter().all(|w| !w.contains(char::is_whitespace)),
        "{test}: the suite cannot run a command whose paths hold spaces: {words:?}"
    );
    let command = format!("{} {} --relay {}", words[0], words[1], words[2]);
    let scratch =
        std::env::temp_dir().join(format!("mcp-relay-e2e-oauth-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let results = scratch.join("results");
    let config_home = scratch.join("config");
    std::fs::create_dir_all(&config_home).expect("a scratch directory");
    let mut suite_cmd = Command::new(node22());
    suite_cmd
        .arg(&suite_js)
        .args(["client", "--scenario", &format!("auth/{scenario}")])
        .args(suite.args())
        .args(["--timeout", "40000", "--command"])
        .arg(&command)
        .arg("-o")
        .arg(&results)
        .env("RUST_LOG", "info")
        .env("XDG_CONFIG_HOME", &config_home);
    for (k, v) in env {
        suite_cmd.env(k, v);
    }
    let ran = run_bounded(&mut suite_cmd, Duration::from_secs(90))
        .expect("running the conformance suite under Node 22");
    // The suite names the results' folder after the scenario: auth/<scenario>-<time>.
    let checks: Vec<Value> = std::fs::read_dir(results.join("auth"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("checks.json")).ok())
        .filter_map(|raw| serde_json::from_slice::<Vec<Value>>(&raw).ok())
        .flatten()
        .collect();
    let status_of = |c: &Value| c["status"].as_str().unwrap_or("").to_owned();
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| matches!(status_of(c).as_str(), "FAILURE" | "WARNING"))
        .map(|c| format!("{} {}: {}", c["id"], status_of(c), c["description"]))
        .collect();
    let good = checks.iter().filter(|c| status_of(c) == "SUCCESS").count();
    assert!(
        ran.ok() && bad.is_empty() && good > 0,
        "{test}: auth/{scenario} failed ({}; {good} check(s) succeeded; failed: {bad:#?}).\nthe suite's stdout:\n{}\nits stderr (the client's and the relay's output among it):\n{}",
        ran.status,
        ran.stdout,
        ran.stderr
    );
    // The token store: one file for the server, mode 0600, and no token in the relay's logs.
    let store = config_home.join("mcp-relay").join("auth");
    let files: Vec<_> = std::fs::read_dir(&store)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    let refused = [
        "resource-mismatch",
        "metadata-issuer-mismatch",
        "iss-supported-missing",
        "iss-wrong-issuer",
        "iss-unexpected",
        "iss-normalized",
    ];
    if !refused.contains(&scenario) {
        assert_eq!(
            files.len(),
            1,
            "{test}: one token file in {}",
            store.display()
        );
        use std::os::unix::fs::PermissionsExt;
        let meta = files[0].metadata().expect("the token file's metadata");
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{test}: token file mode"
        );
        let stored: Value = serde_json::from_slice(&std::fs::read(files[0].path()).unwrap())
            .expect("the token file is JSON");
        let token = stored["tokens"]["access_token"]
            .as_str()
            .expect("an access token is stored");
        assert!(
            !ran.stderr.contains(token) && !ran.stdout.contains(token),
            "{test}: the access token showed in the output"
        );
    } else {
        assert!(
            files.iter().all(|f| {
                let v: Value = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
                v["tokens"].is_null()
            }),
            "{test}: no token stored after a refused login"
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "{test}: {good} check(s) succeeded in {:.1} s",
        ran.took.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

macro_rules! scenarios {
    ($suite:expr; $($name:ident => $scenario:literal $(, $k:literal = $v:literal)?;)*) => {$(
        #[test]
        #[ignore = "interop: needs the conformance suites and the Python SDK (README's Tests section); run with --include-ignored"]
        fn $name() {
            auth_scenario(stringify!($name), $suite, $scenario, &[$(($k, $v))?]);
        }
    )*};
}

scenarios! {
    Suite::SessionEra;
    oauth_metadata_default => "metadata-default";
    oauth_metadata_var1 => "metadata-var1";
    oauth_metadata_var2 => "metadata-var2";
    oauth_metadata_var3 => "metadata-var3";
    oauth_basic_cimd => "basic-cimd",
        "MCP_RELAY_CLIENT_METADATA_URL" = "https://conformance-test.local/client-metadata.json";
    oauth_scope_from_www_authenticate => "scope-from-www-authenticate";
    oauth_scope_from_scopes_supported => "scope-from-scopes-supported";
    oauth_scope_omitted_when_undefined => "scope-omitted-when-undefined";
    oauth_scope_step_up => "scope-step-up";
    oauth_scope_retry_limit => "scope-retry-limit";
    oauth_token_endpoint_auth_basic => "token-endpoint-auth-basic";
    oauth_token_endpoint_auth_post => "token-endpoint-auth-post";
    oauth_token_endpoint_auth_none => "token-endpoint-auth-none";
    oauth_pre_registration => "pre-registration";
    oauth_2025_03_26_metadata_backcompat => "2025-03-26-oauth-metadata-backcompat";
    oauth_2025_03_26_endpoint_fallback => "2025-03-26-oauth-endpoint-fallback";
    oauth_resource_mismatch => "resource-mismatch";
    oauth_offline_access_scope => "offline-access-scope";
    oauth_offline_access_not_supported => "offline-access-not-supported";
}

scenarios! {
    Suite::Modern;
    oauth_2026_metadata_default => "metadata-default";
    oauth_2026_metadata_var1 => "metadata-var1";
    oauth_2026_metadata_var2 => "metadata-var2";
    oauth_2026_metadata_var3 => "metadata-var3";
    oauth_2026_basic_cimd => "basic-cimd",
        "MCP_RELAY_CLIENT_METADATA_URL" = "https://conformance-test.local/client-metadata.json";
    oauth_2026_scope_from_www_authenticate => "scope-from-www-authenticate";
    oauth_2026_scope_from_scopes_supported => "scope-from-scopes-supported";
    oauth_2026_scope_omitted_when_undefined => "scope-omitted-when-undefined";
    oauth_2026_scope_step_up => "scope-step-up";
    oauth_2026_scope_retry_limit => "scope-retry-limit";
    oauth_2026_token_endpoint_auth_basic => "token-endpoint-auth-basic";
    oauth_2026_token_endpoint_auth_post => "token-endpoint-auth-post";
    oauth_2026_token_endpoint_auth_none => "token-endpoint-auth-none";
    oauth_2026_pre_registration => "pre-registration";
    oauth_2026_resource_mismatch => "resource-mismatch";
    oauth_2026_offline_access_scope => "offline-access-scope";
    oauth_2026_offline_access_not_supported => "offline-access-not-supported";
    oauth_2026_authorization_server_migration => "authorization-server-migration";
    oauth_2026_iss_supported => "iss-supported";
    oauth_2026_iss_not_advertised => "iss-not-advertised";
    oauth_2026_iss_supported_missing => "iss-supported-missing";
    oauth_2026_iss_wrong_issuer => "iss-wrong-issuer";
    oauth_2026_iss_unexpected => "iss-unexpected";
    oauth_2026_iss_normalized => "iss-normalized";
    oauth_2026_metadata_issuer_mismatch => "metadata-issuer-mismatch";
}

/// `mcp-relay auth status` and `logout` on a server never logged in to: they say so, and
/// touch nothing else.
#[test]
fn auth_status_and_logout_without_a_login() {
    let home = std::env::temp_dir().join(format!("mcp-relay-e2e-oauth-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let run = |verb: &str| {
        let out = Command::new(relay_bin())
            .args(["auth", verb, "https://mcp.example.com/mcp"])
            .env("XDG_CONFIG_HOME", &home)
            .output()
            .expect("running mcp-relay auth");
        assert!(out.status.success(), "auth {verb}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run("status").contains("not logged in"), "status");
    assert!(run("logout").contains("was not logged in"), "logout");
    let out = Command::new(relay_bin())
        .args(["auth", "frobnicate", "https://mcp.example.com/mcp"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown verb is a usage error"
    );
    let _ = std::fs::remove_dir_all(&home);
}
