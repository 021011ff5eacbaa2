//! `--config`: the servers of a servers file as the core's [`NamedServer`]s, with the
//! command each one runs and the TCP listeners each one asks for. Each server starts from
//! the relay's settings (the flags, and the file's `"relay"`) and takes its own overrides.

use crate::config::{self, Listen};
use crate::servers_file::{EntryKind, ServersFile};
use mcp_relay_core::{Config, NamedServer, RemoteConfig, RemoteTransport, RemoteUrl, ServerId};
use mcp_relay_runtime::CommandSpec;
use std::net::SocketAddr;

/// What the servers of a file come to.
pub struct Servers {
    /// For `Config::servers`, in file order (`ServerId(i)` is the i-th).
    pub named: Vec<NamedServer>,
    /// Each one's command, in the same order (a remote's is never run).
    pub commands: Vec<CommandSpec>,
    /// TCP listeners a server asked for: where, over TLS or not, and whose.
    pub listen: Vec<(SocketAddr, bool, ServerId)>,
}

/// Builds every server of `file` from the relay's core configuration `base` (its server
/// fields are replaced), the command template `template` (environment, working directory
/// and clean-env of the flags) and the remote settings of the flags (`remote`: headers and
/// timeouts for every remote entry).
pub fn build(
    file: &ServersFile,
    base: &Config,
    template: &CommandSpec,
    remote: &RemoteConfig,
) -> Result<Servers, String> {
    let mut out = Servers {
        named: Vec::new(),
        commands: Vec::new(),
        listen: Vec::new(),
    };
    for (i, entry) in file.servers.iter().enumerate() {
        let id = ServerId(i as u32);
        let name = &entry.name;
        let mut config = base.clone();
        config.servers = Vec::new();
        // A server's own tokens only: the relay's are checked beside them.
        config.http.auth_tokens = Vec::new();
        let mut command = template.clone();
        match &entry.kind {
            EntryKind::Command {
                command: program,
                args,
                env,
                cwd,
            } => {
                config.remote = None;
                config.server_label = std::iter::once(program.as_str())
                    .chain(args.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(" ");
                command.program = program.into();
                command.args = args.iter().map(Into::into).collect();
                command
                    .env
                    .extend(env.iter().map(|(k, v)| (k.into(), v.into())));
                if let Some(cwd) = cwd {
                    command.cwd = Some(cwd.clone());
                }
            }
            EntryKind::Remote { url, sse, headers } => {
                let url = RemoteUrl::parse(url)
                    .map_err(|e| format!("server {name:?}: {}", config::redact_url(&e)))?;
                let mut all = remote.headers.clone();
                for (k, v) in headers {
                    all.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
                    all.push((k.clone(), v.clone()));
                }
                config.server_label = url.to_string();
                config.prespawn = 0;
                config.remote = Some(RemoteConfig {
                    transport: if *sse {
                        RemoteTransport::Sse
                    } else if url.scheme.is_stream() {
                        RemoteTransport::Tcp
                    } else {
                        remote.transport
                    },
                    urls: vec![url],
                    headers: all,
                    ..remote.clone()
                });
            }
        }
        for (flag, values) in &entry.relay {
            override_one(&mut config, &mut command, &mut out.listen, id, flag, values)
                .map_err(|e| format!("server {name:?}: {flag}: {e}"))?;
        }
        if config.remote.is_some() && config.prespawn != 0 {
            return Err(format!(
                "server {name:?}: prespawn starts processes, and a remote server runs none"
            ));
        }
        config
            .validate()
            .map_err(|e| format!("server {name:?}: {e}"))?;
        out.named.push(NamedServer {
            name: name.clone(),
            default: file.default.as_deref() == Some(name.as_str()),
            config,
        });
        out.commands.push(command);
    }
    Ok(out)
}

/// One per-server setting of the file (the file reader allows only these, and checked
/// their values with the flags' parsers).
fn override_one(
    config: &mut Config,
    command: &mut CommandSpec,
    listen: &mut Vec<(SocketAddr, bool, ServerId)>,
    id: ServerId,
    flag: &str,
    values: &[String],
) -> Result<(), String> {
    let one = || values.first().map(String::as_str).unwrap_or_default();
    let duration = || config::parse_duration(one());
    let count = || {
        one()
            .parse::<usize>()
            .map_err(|_| format!("`{}` is not a number", one()))
    };
    match flag {
        "--restart" => config.restart = crate::parse_restart(one())?,
        "--restart-delay" => {
            config.restart_delay = duration()?;
            config.max_restart_delay = config.max_restart_delay.max(config.restart_delay);
        }
        "--max-restarts" => {
            config.max_restarts =
                u32::try_from(count()?).map_err(|_| format!("`{}` is too large", one()))?
        }
        "--restart-window" => config.restart_window = duration()?,
        "--prespawn" => config.prespawn = count()?,
        "--shutdown-grace" => config.shutdown_grace = duration()?,
        "--ping-interval" => {
            let d = duration()?;
            config.ping_interval = (!d.is_zero()).then_some(d);
        }
        "--ping-timeout" => config.ping_timeout = duration()?,
        "--max-in-flight" => config.max_in_flight = count()?,
        "--max-message-size" => config.max_message_size = config::parse_size(one())?,
        "--idle-timeout" => {
            let d = duration()?;
            config.idle_timeout = (!d.is_zero()).then_some(d);
        }
        "--session-timeout" => config.http.session_timeout = duration()?,
        "--retire-timeout" => {
            let d = duration()?;
            config.retire_timeout = (!d.is_zero()).then_some(d);
        }
        "--auth-token" => config.http.auth_tokens.extend(values.iter().cloned()),
        "--clean-env" => command.clean_env = true,
        "--transport" => {
            if let Some(r) = &mut config.remote {
                r.transport = RemoteTransport::parse(one())?;
            }
        }
        "--connect-timeout" => {
            if let Some(r) = &mut config.remote {
                r.connect_timeout = duration()?;
            }
        }
        "--listen" => {
            for v in values {
                let (addrs, tls) = match config::parse_listen(v)? {
                    Listen::Tcp(addrs) => (addrs, false),
                    Listen::Tls(addrs) => (addrs, true),
                    Listen::Http(_) | Listen::Https(_) => {
                        return Err(format!(
                            "{v}: a server's own listener is tcp:// or tls:// (HTTP reaches it at /servers/NAME/mcp)"
                        ))
                    }
                };
                listen.extend(addrs.into_iter().map(|a| (a, tls, id)));
            }
        }
        other => return Err(format!("{other} is not a per-server setting")),
    }
    Ok(())
}

/// Reading `--config` again on SIGHUP: unchanged servers keep their id (and their sessions),
/// changed and added ones get new ids, and those left out are retired.
pub struct Reload {
    path: std::path::PathBuf,
    /// The command line (after the environment's flags), to combine with the file's
    /// settings again.
    argv: Vec<String>,
    /// The flags the environment set (the file's settings for them are left out).
    env_flags: Vec<String>,
    /// `MCP_RELAY_AUTH_TOKEN` as it was at start.
    env_token: Option<String>,
    state: std::sync::Mutex<State>,
}

/// What the running servers were made from.
struct State {
    servers: Vec<(ServerId, crate::servers_file::ServerEntry)>,
    relay: Vec<(String, Vec<String>)>,
    next: u32,
}

impl Reload {
    pub fn new(
        path: std::path::PathBuf,
        argv: Vec<String>,
        env_flags: Vec<String>,
        env_token: Option<String>,
        file: &ServersFile,
    ) -> Reload {
        Reload {
            path,
            argv,
            env_flags,
            env_token,
            state: std::sync::Mutex::new(State {
                servers: file
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (ServerId(i as u32), e.clone()))
                    .collect(),
                relay: file.relay.clone(),
                next: file.servers.len() as u32,
            }),
        }
    }

    /// Reads the file again and hands the runtime what changed; a file that does not load
    /// or validate is logged, and the servers stay as they are.
    pub fn reload(&self, runtime: &mcp_relay_runtime::ReconfigureHandle) {
        let env = |name: &str| std::env::var(name).ok();
        let fail = |e: String| log::error!("reloading --config: {e}; the servers stay as they are");
        let file = match crate::servers_file::load(&self.path, &env) {
            Ok(file) => file,
            Err(e) => return fail(e),
        };
        let argv: Vec<&str> = self.argv.iter().map(String::as_str).collect();
        let merged = crate::with_file_settings(&file.relay, &argv, &self.env_flags);
        let merged: Vec<&str> = merged.iter().map(String::as_str).collect();
        let args = match <crate::Args as argh::FromArgs>::from_args(&["mcp-relay"], &merged) {
            Ok(args) => args,
            Err(early) => return fail(crate::usage::argh_error(&early.output)),
        };
        let setup = match crate::validate(args, self.env_token.clone(), &env, Some(file.clone())) {
            Ok(setup) => setup,
            Err(e) => return fail(e),
        };
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let same_relay = state.relay == file.relay;
        if !same_relay {
            log::warn!(
                "reloading --config: the file's \"relay\" settings changed: every server counts as changed; \
                 listeners and relay-wide limits change only with a restart"
            );
        }
        let mut servers = Vec::new();
        let mut commands = Vec::new();
        let mut entries = Vec::new();
        let (mut added, mut changed, mut kept) = (Vec::new(), Vec::new(), 0);
        let named = setup.runtime.core.servers;
        let mut specs = setup.runtime.commands.into_iter();
        for (named, entry) in named.into_iter().zip(&file.servers) {
            let spec = specs.next().unwrap_or_default();
            let same = state
                .servers
                .iter()
                .find(|(_, e)| same_relay && e == entry)
                .map(|(id, _)| *id);
            let id = match same {
                Some(id) => {
                    kept += 1;
                    id
                }
                None => {
                    let id = ServerId(state.next);
                    state.next += 1;
                    if state.servers.iter().any(|(_, e)| e.name == entry.name) {
                        changed.push(entry.name.clone());
                    } else {
                        added.push(entry.name.clone());
                    }
                    if entry.relay.iter().any(|(flag, _)| flag == "--listen") {
                        log::warn!(
                            "reloading --config: server {:?}: its own listeners change only with a restart",
                            entry.name
                        );
                    }
                    crate::preflight::warn([(Some(entry.name.as_str()), &spec)]);
                    commands.push((id, spec));
                    id
                }
            };
            servers.push((id, named));
            entries.push((id, entry.clone()));
        }
        let removed: Vec<&str> = state
            .servers
            .iter()
            .filter(|(_, e)| !file.servers.iter().any(|n| n.name == e.name))
            .map(|(_, e)| e.name.as_str())
            .collect();
        log::info!(
            "{} reloaded: {kept} unchanged, added [{}], changed [{}], removed [{}]",
            self.path.display(),
            added.join(", "),
            changed.join(", "),
            removed.join(", ")
        );
        state.servers = entries;
        state.relay = file.relay;
        runtime.reconfigure(servers, commands);
    }
}

/// `--watch-config`: a thread that looks at the file every second and reloads it once it has
/// changed (its size or modification time) and stayed so for a moment (an editor writing it).
pub fn watch(
    reload: std::sync::Arc<Reload>,
    runtime: mcp_relay_runtime::ReconfigureHandle,
) -> std::io::Result<()> {
    let stamp = |path: &std::path::Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let mut seen = stamp(&reload.path);
    std::thread::Builder::new()
        .name("mcp-relay-watch-config".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let now = stamp(&reload.path);
            if now == seen {
                continue;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            if stamp(&reload.path) != now {
                continue;
            }
            seen = now;
            log::info!("{} changed", reload.path.display());
            reload.reload(&runtime);
        })?;
    Ok(())
}
