//! At start: is each server command there to run? The runtime runs it without a shell, as
//! `execvp` would (a name without `/` is looked up in `PATH`). A missing command is worth a
//! warning, not a refusal: it may appear later (a volume mounted, a package installed), and
//! until then each session gets an error saying why.

use mcp_relay_runtime::CommandSpec;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why `spec`'s program cannot be run as things stand, or `None` if it can (or if there is no
/// program: client mode). `path` is the relay's `PATH`.
pub fn problem(spec: &CommandSpec, path: Option<&OsStr>) -> Option<String> {
    let program = Path::new(&spec.program);
    if spec.program.is_empty() {
        return None;
    }
    let shown = program.display();
    if spec.program.as_bytes().contains(&b'/') {
        // Relative to the server's working directory, where it is started.
        let at = match &spec.cwd {
            Some(dir) if program.is_relative() => dir.join(program),
            _ => program.to_path_buf(),
        };
        return match runnable(&at) {
            Ok(()) => None,
            Err(why) => Some(format!("`{shown}` {why}")),
        };
    }
    // The server's PATH: its own if --env sets one, else the relay's (--clean-env keeps it).
    let path: Option<OsString> = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| path.map(OsStr::to_owned));
    let Some(path) = path else {
        return Some(format!("`{shown}` is not a path, and PATH is not set"));
    };
    let mut found_unrunnable = None;
    for dir in std::env::split_paths(&path) {
        // An empty entry is the working directory, as for execvp.
        let dir = if dir.as_os_str().is_empty() {
            spec.cwd.clone().unwrap_or_else(|| PathBuf::from("."))
        } else {
            dir
        };
        let candidate = dir.join(program);
        match runnable(&candidate) {
            Ok(()) => return None,
            Err(why) if candidate.exists() && found_unrunnable.is_none() => {
                found_unrunnable = Some(format!("`{}` {why}", candidate.display()));
            }
            Err(_) => {}
        }
    }
    Some(found_unrunnable.unwrap_or_else(|| format!("`{shown}` is not found in PATH")))
}

/// Whether `path` is a file this process may execute.
fn runnable(path: &Path) -> Result<(), &'static str> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err("cannot be reached (permission denied)")
        }
        Err(_) => return Err("does not exist"),
    };
    if meta.is_dir() {
        return Err("is a directory");
    }
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return Err("does not exist");
    };
    // SAFETY: access(2) reads the NUL-terminated string it is given, which lives until the
    // call returns.
    if unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } != 0 {
        return Err("is not executable");
    }
    Ok(())
}

/// Logs a warning for each server whose command cannot be run now: `servers` pairs a label
/// (`None` for the relay's one command) with its command.
pub fn warn<'a>(servers: impl IntoIterator<Item = (Option<&'a str>, &'a CommandSpec)>) {
    let path = std::env::var_os("PATH");
    for (name, spec) in servers {
        if let Some(why) = problem(spec, path.as_deref()) {
            match name {
                Some(name) => log::warn!(
                    "server {name:?}: its command {why}; serving anyway: its sessions fail until it can be run"
                ),
                None => log::warn!(
                    "the server command {why}; serving anyway: sessions fail until it can be run"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn spec(program: &str) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            ..CommandSpec::default()
        }
    }

    #[test]
    fn programs() {
        let dir = std::env::temp_dir().join(format!("mcp-relay-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("server");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.join("notes.txt");
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = std::ffi::OsString::from(format!("/nonexistent:{}", dir.display()));
        let path = Some(path.as_os_str());

        assert_eq!(problem(&spec(""), path), None);
        assert_eq!(problem(&spec("server"), path), None);
        assert_eq!(problem(&spec(&exe.display().to_string()), None), None);
        // Relative to --cwd.
        let mut relative = spec("./server");
        relative.cwd = Some(dir.clone());
        assert_eq!(problem(&relative, None), None);

        let p = problem(&spec("no-such-server-x"), path).unwrap();
        assert_eq!(p, "`no-such-server-x` is not found in PATH");
        let p = problem(&spec("/nonexistent/srv"), path).unwrap();
        assert_eq!(p, "`/nonexistent/srv` does not exist");
        let p = problem(&spec(&dir.display().to_string()), path).unwrap();
        assert!(p.ends_with("is a directory"), "{p}");
        // Not even root may execute a file with no x bit (access(2) agrees).
        let p = problem(&spec("notes.txt"), path).unwrap();
        assert!(p.ends_with("notes.txt` is not executable"), "{p}");
        // The server's own PATH, from --env, is where it is looked up.
        let mut own = spec("server");
        own.env = vec![("PATH".into(), "/nonexistent".into())];
        assert!(problem(&own, path).is_some());
        assert_eq!(
            problem(&spec("server"), None).unwrap(),
            "`server` is not a path, and PATH is not set"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
