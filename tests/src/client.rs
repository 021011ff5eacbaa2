//! The scripted client: writes JSON-RPC lines of every kind, reads (slowly, sometimes not at
//! all for a while) what the relay writes back, then ends its connection in one of three ways.
//!
//! The client does not wait for answers before writing more (MCP clients pipeline), and it
//! does not interpret what it reads: the invariants do, from the relay's outputs.

use crate::jsonrpc::{ClientLine, ClientLines};
use crate::pipe::Pipe;
use mcp_relay_core::ConnId;
use std::time::Duration;

/// How a client leaves once its script is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Half-close: end of file on its side, keeps reading until the relay closes.
    HalfClose,
    /// Closes the socket entirely: end of file, and writes to it fail (`Broken`).
    Quit,
    /// The connection is reset in the middle of the script: the relay's next read or write
    /// fails (`Broken`); what the client wrote and the relay did not read is lost.
    Reset { after_lines: usize },
}

/// One line the client wrote and what became of it.
#[derive(Debug)]
pub struct Sent {
    pub line: ClientLine,
    /// Offset just past its last byte in the client's byte stream.
    pub end: usize,
    /// The step in which its last byte reached the relay (`Input::Data`), and when.
    pub delivered_step: Option<u64>,
    pub delivered_at: Option<Duration>,
}

#[derive(Debug)]
pub struct Client {
    pub conn: ConnId,
    pub gen: ClientLines,
    /// Lines still to write.
    pub remaining: usize,
    pub ending: Ending,
    pub sent: Vec<Sent>,
    /// Lines (by index into `sent`) whose delivery was already recorded.
    delivered_upto: usize,
    /// Client → relay.
    pub tx: Pipe,
    /// Everything the relay wrote to the client (what `Input::Written` reported).
    pub rx: Vec<u8>,
    /// The connection was reset (by this client).
    pub reset: bool,
    /// The relay closed the connection (or it broke): the client stops.
    pub gone: bool,
    /// Not reading until then (a slow reader).
    pub stall_until: Duration,
    /// It turned the relay's heartbeats on: it sends one every half interval until it ends.
    pub heartbeats: bool,
    /// It waited for answers after its last line.
    pub lingered: bool,
    /// When it last wrote a heartbeat.
    pub last_heartbeat: Option<Duration>,
}

impl Client {
    pub fn new(conn: ConnId, gen: ClientLines, lines: usize, ending: Ending) -> Self {
        Client {
            conn,
            gen,
            remaining: lines,
            ending,
            sent: Vec::new(),
            delivered_upto: 0,
            tx: Pipe::default(),
            rx: Vec::new(),
            reset: false,
            gone: false,
            stall_until: Duration::ZERO,
            heartbeats: false,
            lingered: false,
            last_heartbeat: None,
        }
    }

    /// The script is over: end of file written or connection reset.
    pub fn finished(&self) -> bool {
        self.gone || self.reset || self.tx.closed
    }

    /// Writes the next line of its script; returns it.
    pub fn write_next(&mut self) -> &Sent {
        let line = self.gen.next_line();
        self.remaining -= 1;
        self.write(line)
    }

    /// Writes one line.
    pub fn write(&mut self, line: ClientLine) -> &Sent {
        self.tx.write(&line.wire());
        self.sent.push(Sent {
            line,
            end: self.tx.written(),
            delivered_step: None,
            delivered_at: None,
        });
        self.sent.last().expect("just pushed")
    }

    /// Records which lines are now complete on the relay's side.
    pub fn mark_delivered(&mut self, step: u64, now: Duration) {
        let taken = self.tx.taken();
        while let Some(s) = self.sent.get_mut(self.delivered_upto) {
            if s.end > taken {
                break;
            }
            s.delivered_step = Some(step);
            s.delivered_at = Some(now);
            self.delivered_upto += 1;
        }
    }
}
