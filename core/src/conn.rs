//! The connection layer: every client socket the relay serves is registered here, and every
//! byte that crosses one passes through here, both ways, whatever speaks over it (a TCP
//! session's lines or the HTTP server). It is the one place where a transform between the
//! socket and the protocol machines belongs: TLS (its own issue) goes here, once, for TCP and
//! HTTP alike. Today every connection is plain and bytes pass through as they are.

use crate::{ConnId, Endpoint, Output, Transport};
use std::collections::BTreeMap;

/// One accepted connection.
#[derive(Debug)]
struct Connection {
    transport: Transport,
}

/// The connections open now.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    open: BTreeMap<ConnId, Connection>,
}

impl Connections {
    /// Registers an accepted connection.
    pub(crate) fn open(&mut self, conn: ConnId, transport: Transport) {
        self.open.insert(conn, Connection { transport });
    }

    /// The connection is open (accepted and not closed or broken).
    pub(crate) fn contains(&self, conn: ConnId) -> bool {
        self.open.contains_key(&conn)
    }

    /// Connections open now.
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    /// What the connection speaks, if it is open.
    pub(crate) fn transport(&self, conn: ConnId) -> Option<Transport> {
        self.open.get(&conn).map(|c| c.transport)
    }

    /// Bytes read from the socket, as the protocol machine must see them.
    pub(crate) fn incoming<'a>(&mut self, _conn: ConnId, data: &'a [u8]) -> &'a [u8] {
        data
    }

    /// The driver wrote `n` bytes to the socket: how many of the bytes the protocol machine
    /// handed out that settles.
    pub(crate) fn written(&mut self, _conn: ConnId, n: usize) -> usize {
        n
    }

    /// An effect on its way to the driver: bytes for a socket pass through the connection's
    /// transform; a closed or broken connection is forgotten.
    pub(crate) fn outgoing(&mut self, output: Output) -> Output {
        if let Output::Close {
            endpoint: Endpoint::Conn(conn),
        } = &output
        {
            self.open.remove(conn);
        }
        output
    }

    /// The socket failed: nothing more passes either way.
    pub(crate) fn broken(&mut self, conn: ConnId) {
        self.open.remove(&conn);
    }
}
