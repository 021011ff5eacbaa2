//! The remote server side: one incarnation of a remote session.

/// A remote server serving one session (one incarnation: a reconnect is a new one).
#[derive(Debug)]
pub(crate) struct RemoteServer {}
