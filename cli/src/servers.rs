//! `--config`: the servers of a servers file as the core's [`NamedServer`]s, with the
//! command each one runs and the TCP listeners each one asks for. Each server starts from
//! the relay's settings (the flags, and the file's `"relay"`) and takes its own overrides.

use crate::config::{self, Listen};
use crate::servers_file::{EntryKind, ServersFile};
use mcp_relay_core::{
    Config, NamedServer, RemoteConfig, RemoteTransport, RemoteUrl, RestartPolicy, ServerId,
};
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
        "--restart" => {
            config.restart = match one() {
                "on-failure" => RestartPolicy::OnFailure,
                "always" => RestartPolicy::Always,
                "never" => RestartPolicy::Never,
                other => return Err(format!("`{other}` is not a restart policy")),
            }
        }
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
