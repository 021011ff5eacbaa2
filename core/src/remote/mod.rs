//! Client mode: a remote MCP server as a session's server side.
//!
//! With [`Config::remote`](crate::Config::remote) set, a session is served by a remote server
//! reached over connections the relay opens ([`crate::Output::Connect`]) instead of a child:
//! Streamable HTTP, the legacy HTTP+SSE transport, or newline-delimited JSON-RPC over TCP.
//! Its configuration is in `remote_config.rs`; the machine is `RemoteServer` (a variant of
//! the session's `ServerSide`).

mod machine;
mod modern;
mod wire;

pub(crate) use machine::{Inbound, RemoteEnd, RemoteLimits, RemoteServer, Undelivered};
