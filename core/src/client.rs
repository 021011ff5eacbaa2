//! The client side of a session: a TCP connection (lines, in order) or the HTTP layer
//! (messages with a route, placed on streams by `http`).

use crate::message::{self, RawId};
use crate::outbound::Outbound;
use crate::{ConnId, Endpoint, Output};
use std::collections::VecDeque;

/// What the HTTP layer needs to know to put a message on the right stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// The answer to the client request with this id (`None`: an error about an unreadable id).
    Response(Option<RawId>),
    /// A batch of answers, to the client requests with these ids.
    Responses(Vec<RawId>),
    /// A message from the server that is not an answer: a notification (with the progress
    /// token it carries, if any), a request, or a batch.
    FromServer { progress_token: Option<RawId> },
    /// Said by the relay itself and tied to no request (`$/mcp/serverRestarted`).
    Relay,
    /// The client cancelled this request: no answer will come (the message is empty).
    Cancelled(RawId),
}

#[derive(Debug)]
pub(crate) enum ClientSide {
    Tcp(Outbound),
    Http(HttpSide),
}

/// Messages for an HTTP session's client, waiting for the HTTP layer to take them.
#[derive(Debug, Default)]
pub(crate) struct HttpSide {
    pub(crate) outbox: VecDeque<(Route, Vec<u8>)>,
    /// Set by the HTTP layer: the session's streams hold more than they should.
    pub(crate) loaded: bool,
    /// Bytes the HTTP layer holds for this session's streams (for the memory bound).
    pub(crate) held_by_streams: usize,
    /// The session asked to end (no server will serve it again).
    pub(crate) close_requested: bool,
    /// The HTTP layer is done with the session (deleted, expired, stream closed).
    pub(crate) gone: bool,
}

impl ClientSide {
    pub(crate) fn tcp(conn: ConnId, high_water: usize) -> Self {
        ClientSide::Tcp(Outbound::new(Endpoint::Conn(conn), true, high_water))
    }

    /// The connection of a TCP session.
    pub(crate) fn conn(&self) -> Option<ConnId> {
        match self {
            ClientSide::Tcp(o) => match o.sink() {
                Endpoint::Conn(c) => Some(c),
                Endpoint::Child(_) | Endpoint::Upstream(_) => None,
            },
            ClientSide::Http(_) => None,
        }
    }

    /// Sends bytes of a line ahead of its end (cut-through, TCP only; an HTTP client gets
    /// whole messages).
    pub(crate) fn send_partial(&mut self, bytes: &[u8]) {
        if let ClientSide::Tcp(o) = self {
            o.stage_part(bytes);
        }
    }

    /// Sends the rest of a line whose start went with [`ClientSide::send_partial`], and its
    /// newline (an empty `rest` cuts it short).
    pub(crate) fn send_rest(&mut self, rest: &[u8]) {
        if let ClientSide::Tcp(o) = self {
            o.end_part(rest);
        }
    }

    /// Ends the line begun with [`ClientSide::send_partial`] short (a newline now).
    pub(crate) fn cut_partial(&mut self) {
        if let ClientSide::Tcp(o) = self {
            o.cut_part();
        }
    }

    /// Bytes of the relay's own lines waiting for the end of a line being cut through.
    pub(crate) fn waiting(&self) -> usize {
        match self {
            ClientSide::Tcp(o) => o.waiting(),
            ClientSide::Http(_) => 0,
        }
    }

    /// Sends one message (a line without its newline).
    pub(crate) fn send(&mut self, route: Route, line: &[u8]) {
        match self {
            ClientSide::Tcp(o) => o.stage_line(line),
            ClientSide::Http(h) => {
                if !h.gone && !h.close_requested {
                    h.outbox.push_back((route, line.to_vec()));
                }
            }
        }
    }

    /// Sends an error response made by the relay.
    pub(crate) fn error(&mut self, id: Option<&RawId>, code: i64, text: &str) {
        let mut line = Vec::with_capacity(64 + text.len());
        message::write_error(&mut line, id.map(RawId::as_str), code, text);
        self.send(Route::Response(id.cloned()), &line);
    }

    /// The client cancelled a request: over HTTP its stream must end without an answer.
    pub(crate) fn cancelled(&mut self, id: RawId) {
        if let ClientSide::Http(h) = self {
            if !h.gone && !h.close_requested {
                h.outbox.push_back((Route::Cancelled(id), Vec::new()));
            }
        }
    }

    pub(crate) fn load(&self) -> usize {
        match self {
            ClientSide::Tcp(o) => o.load(),
            ClientSide::Http(h) => {
                h.outbox.iter().map(|(_, l)| l.len()).sum::<usize>() + h.held_by_streams
            }
        }
    }

    pub(crate) fn is_loaded(&self) -> bool {
        match self {
            ClientSide::Tcp(o) => o.is_loaded(),
            ClientSide::Http(h) => h.loaded,
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        match self {
            ClientSide::Tcp(o) => o.is_finished(),
            ClientSide::Http(h) => h.gone,
        }
    }

    pub(crate) fn is_gone(&self) -> bool {
        match self {
            ClientSide::Tcp(o) => o.is_gone(),
            ClientSide::Http(h) => h.gone,
        }
    }

    pub(crate) fn set_gone(&mut self) {
        match self {
            ClientSide::Tcp(o) => o.set_gone(),
            ClientSide::Http(h) => {
                h.gone = true;
                h.outbox.clear();
            }
        }
    }

    pub(crate) fn close_when_flushed(&mut self, out: &mut VecDeque<Output>) {
        match self {
            ClientSide::Tcp(o) => o.close_when_flushed(out),
            ClientSide::Http(h) => h.close_requested = true,
        }
    }

    pub(crate) fn flush(&mut self, out: &mut VecDeque<Output>) {
        if let ClientSide::Tcp(o) = self {
            o.flush(out);
        }
    }

    pub(crate) fn written(&mut self, n: usize, out: &mut VecDeque<Output>) {
        if let ClientSide::Tcp(o) = self {
            o.written(n, out);
        }
    }
}
