//! Bytes on their way to one sink (a socket, or a child's stdin), and the backpressure that
//! keeps them bounded.
//!
//! Bytes are first *staged* while one input is handled (so that the lines of one read leave
//! as one write), then handed to the driver with [`Output::Send`] once the sink exists. The
//! driver reports what it wrote; what it holds and what is staged together are the sink's
//! *load*. Above the high-water mark the source feeding this sink is paused; at half of it,
//! resumed. One message may exceed the mark on its own (it was accepted whole by the framer),
//! so the load is bounded by the mark plus one message.

use crate::{Endpoint, Output};
use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct Outbound {
    sink: Endpoint,
    /// The endpoint whose reading is paused when this sink is loaded.
    source: Endpoint,
    staged: Vec<u8>,
    in_driver: usize,
    /// The sink exists and may be handed bytes.
    open: bool,
    /// The sink is gone: staged and future bytes are dropped.
    gone: bool,
    source_paused: bool,
    /// The source will not be read again (end of file, or closed): never pause or resume it.
    source_done: bool,
    close_when_flushed: bool,
    closed: bool,
    high_water: usize,
}

impl Outbound {
    pub(crate) fn new(sink: Endpoint, source: Endpoint, open: bool, high_water: usize) -> Self {
        Outbound {
            sink,
            source,
            staged: Vec::new(),
            in_driver: 0,
            open,
            gone: false,
            source_paused: false,
            source_done: false,
            close_when_flushed: false,
            closed: false,
            high_water: high_water.max(1),
        }
    }

    pub(crate) fn sink(&self) -> Endpoint {
        self.sink
    }

    /// Takes back what was staged and not yet handed out.
    pub(crate) fn take_staged(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.staged)
    }

    /// Bytes staged or held by the driver.
    pub(crate) fn load(&self) -> usize {
        self.staged.len() + self.in_driver
    }

    /// No more bytes can go this way (closed, or the sink failed).
    pub(crate) fn is_finished(&self) -> bool {
        self.closed || self.gone
    }

    pub(crate) fn accepts(&self) -> bool {
        !self.gone && !self.closed && !self.close_when_flushed
    }

    /// Stages bytes; dropped if the sink is gone or closing.
    pub(crate) fn stage(&mut self, bytes: &[u8]) {
        if self.accepts() {
            self.staged.extend_from_slice(bytes);
        }
    }

    /// Stages one line and its newline.
    pub(crate) fn stage_line(&mut self, line: &[u8]) {
        if self.accepts() {
            self.staged.reserve(line.len() + 1);
            self.staged.extend_from_slice(line);
            self.staged.push(b'\n');
        }
    }

    /// The sink now exists.
    pub(crate) fn open(&mut self, out: &mut VecDeque<Output>) {
        self.open = true;
        self.flush(out);
    }

    /// The sink failed: drop everything, never write again, and stop pausing the source.
    pub(crate) fn set_gone(&mut self, out: &mut VecDeque<Output>) {
        self.gone = true;
        self.staged = Vec::new();
        self.in_driver = 0;
        self.resume_source(out);
    }

    /// Closes the sink once everything staged has been written.
    pub(crate) fn close_when_flushed(&mut self, out: &mut VecDeque<Output>) {
        if !self.is_finished() {
            self.close_when_flushed = true;
            self.flush(out);
        }
    }

    /// Hands staged bytes to the driver, closes when due, and pauses the source when loaded.
    pub(crate) fn flush(&mut self, out: &mut VecDeque<Output>) {
        if self.gone || self.closed || !self.open {
            self.update_pause(out);
            return;
        }
        if !self.staged.is_empty() {
            let data = std::mem::take(&mut self.staged);
            self.in_driver += data.len();
            out.push_back(Output::Send {
                to: self.sink,
                data,
            });
        }
        if self.close_when_flushed && self.in_driver == 0 {
            self.closed = true;
            out.push_back(Output::Close {
                endpoint: self.sink,
            });
        }
        self.update_pause(out);
    }

    /// The driver wrote `n` bytes.
    pub(crate) fn written(&mut self, n: usize, out: &mut VecDeque<Output>) {
        self.in_driver = self.in_driver.saturating_sub(n);
        self.flush(out);
    }

    /// The source will not be read again: forget about pausing it.
    pub(crate) fn source_done(&mut self) {
        self.source_done = true;
        self.source_paused = false;
    }

    fn update_pause(&mut self, out: &mut VecDeque<Output>) {
        if self.source_done {
            return;
        }
        let load = self.load();
        if !self.source_paused && load > self.high_water && !self.gone {
            self.source_paused = true;
            out.push_back(Output::Pause {
                endpoint: self.source,
            });
        } else if self.source_paused && (load <= self.high_water / 2 || self.is_finished()) {
            self.resume_source(out);
        }
    }

    fn resume_source(&mut self, out: &mut VecDeque<Output>) {
        if self.source_paused && !self.source_done {
            self.source_paused = false;
            out.push_back(Output::Resume {
                endpoint: self.source,
            });
        }
    }
}
