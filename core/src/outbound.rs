//! Bytes on their way to one sink (a socket, or a child's stdin), and how loaded it is.
//!
//! Bytes are first *staged* while one input is handled (so that the lines of one read leave
//! as one write), then handed to the driver with [`Output::Send`] once the sink exists. The
//! driver reports what it wrote; what it holds and what is staged together are the sink's
//! *load*. The sink is *loaded* above the high-water mark and stays so until the load falls
//! to half of it; the session pauses the source feeding a loaded sink. One message may exceed
//! the mark on its own (the framer accepted it whole), so the load is bounded by the mark plus
//! one message.

use crate::{Endpoint, Output};
use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct Outbound {
    sink: Endpoint,
    staged: Vec<u8>,
    in_driver: usize,
    /// The sink exists and may be handed bytes.
    open: bool,
    /// The sink is gone: staged and future bytes are dropped.
    gone: bool,
    close_when_flushed: bool,
    closed: bool,
    high_water: usize,
    loaded: bool,
    /// Every byte ever staged (what the HTTP access log counts as sent).
    staged_total: u64,
    /// A line was begun ahead of its end (cut-through, [`Outbound::stage_part`]): whole lines
    /// staged meanwhile wait in `after_line` for its end, so that none lands inside it.
    mid_line: bool,
    after_line: Vec<u8>,
    /// Lines cut short here (begun, then ended early) whose `"id": null` parse error the
    /// receiver may still send back.
    cuts: u32,
}

impl Outbound {
    pub(crate) fn new(sink: Endpoint, open: bool, high_water: usize) -> Self {
        Outbound {
            sink,
            staged: Vec::new(),
            in_driver: 0,
            open,
            gone: false,
            close_when_flushed: false,
            closed: false,
            high_water: high_water.max(1),
            loaded: false,
            staged_total: 0,
            mid_line: false,
            after_line: Vec::new(),
            cuts: 0,
        }
    }

    pub(crate) fn sink(&self) -> Endpoint {
        self.sink
    }

    /// Bytes staged or held by the driver.
    pub(crate) fn load(&self) -> usize {
        // Not the lines waiting for a line's end: that end comes from the source this load
        // pauses, so counting them could stop it for good.
        self.staged.len() + self.in_driver
    }

    /// Everything staged was written, including the lines waiting for a line's end.
    pub(crate) fn all_written(&self) -> bool {
        self.load() == 0 && self.after_line.is_empty()
    }

    /// Above the high-water mark (with hysteresis): the source should not be read.
    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Handed out and not yet written (the driver is waiting for the sink).
    pub(crate) fn in_driver(&self) -> usize {
        self.in_driver
    }

    /// No more bytes can go this way (closed, or the sink failed).
    pub(crate) fn is_finished(&self) -> bool {
        self.closed || self.gone
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone
    }

    pub(crate) fn accepts(&self) -> bool {
        !self.gone && !self.closed && !self.close_when_flushed
    }

    /// Every byte staged so far.
    pub(crate) fn staged_total(&self) -> u64 {
        self.staged_total
    }

    /// Stages whole lines; dropped if the sink is gone or closing.
    pub(crate) fn stage(&mut self, bytes: &[u8]) {
        if self.accepts() {
            let to = if self.mid_line {
                &mut self.after_line
            } else {
                &mut self.staged
            };
            to.extend_from_slice(bytes);
            self.staged_total += bytes.len() as u64;
        }
    }

    /// Stages pieces that go out together (a response head and its body, the framing of an
    /// event around a message), growing the buffer once to the size they need: a large
    /// message is copied once, straight to where it leaves from.
    pub(crate) fn stage_parts(&mut self, parts: &[&[u8]]) {
        if self.accepts() {
            let len: usize = parts.iter().map(|p| p.len()).sum();
            self.staged.reserve(len);
            for part in parts {
                self.staged.extend_from_slice(part);
            }
            self.staged_total += len as u64;
        }
    }

    /// Stages a buffer that is whole already (a large message) without copying it: what is
    /// staged before it is handed to the driver first, then it, as a write of its own, so that
    /// what follows starts a buffer of its own too. Where the sink is not open yet it is
    /// copied into what is staged, as [`Self::stage`] does.
    pub(crate) fn stage_owned(&mut self, bytes: Vec<u8>, out: &mut VecDeque<Output>) {
        if !self.accepts() {
            return;
        }
        if !self.staged.is_empty() {
            self.flush(out);
        }
        self.staged_total += bytes.len() as u64;
        if self.staged.is_empty() {
            self.staged = bytes;
            self.flush(out);
        } else {
            self.staged.extend_from_slice(&bytes);
        }
    }

    /// Stages one line and its newline.
    pub(crate) fn stage_line(&mut self, line: &[u8]) {
        if self.accepts() {
            let to = if self.mid_line {
                &mut self.after_line
            } else {
                &mut self.staged
            };
            to.reserve(line.len() + 1);
            to.extend_from_slice(line);
            to.push(b'\n');
            self.staged_total += line.len() as u64 + 1;
        }
    }

    /// Stages the start (or more) of a line ahead of its end (cut-through); whole lines
    /// staged until [`Outbound::end_part`] follow its end.
    pub(crate) fn stage_part(&mut self, bytes: &[u8]) {
        if self.accepts() {
            self.staged.extend_from_slice(bytes);
            self.staged_total += bytes.len() as u64;
            self.mid_line = true;
        }
    }

    /// Ends the line begun with [`Outbound::stage_part`] with `rest` and its newline (an
    /// empty `rest` cuts it short); the lines that waited for its end follow.
    pub(crate) fn end_part(&mut self, rest: &[u8]) {
        if self.accepts() {
            self.staged.extend_from_slice(rest);
            self.staged.push(b'\n');
            self.staged_total += rest.len() as u64 + 1;
            self.mid_line = false;
            let after = std::mem::take(&mut self.after_line);
            self.staged.extend_from_slice(&after);
        }
    }

    /// Ends the line begun with [`Outbound::stage_part`] short: a newline now.
    pub(crate) fn cut_part(&mut self) {
        if self.mid_line && self.accepts() {
            self.end_part(b"");
            self.cuts = self.cuts.saturating_add(1);
        }
    }

    /// One line cut short here is answered (if any was).
    pub(crate) fn take_cut(&mut self) -> bool {
        let any = self.cuts > 0;
        self.cuts = self.cuts.saturating_sub(1);
        any
    }

    /// Bytes of whole lines waiting for the end of a line begun ahead of it.
    pub(crate) fn waiting(&self) -> usize {
        self.after_line.len()
    }

    /// The sink now exists.
    pub(crate) fn open(&mut self, out: &mut VecDeque<Output>) {
        self.open = true;
        self.flush(out);
    }

    /// The sink failed or was dropped: forget everything and never write again.
    pub(crate) fn set_gone(&mut self) {
        self.gone = true;
        self.staged = Vec::new();
        self.after_line = Vec::new();
        self.mid_line = false;
        self.in_driver = 0;
        self.loaded = false;
    }

    /// Closes the sink once everything staged has been written.
    pub(crate) fn close_when_flushed(&mut self, out: &mut VecDeque<Output>) {
        if !self.is_finished() {
            if self.mid_line && !self.after_line.is_empty() {
                // The line begun will not end: it is cut short so that what waited for it
                // can follow (with nothing waiting, the sink's end ends it, as before).
                self.cut_part();
            }
            self.close_when_flushed = true;
            self.flush(out);
        }
    }

    /// Hands staged bytes to the driver, and closes when due.
    pub(crate) fn flush(&mut self, out: &mut VecDeque<Output>) {
        if !self.gone && !self.closed && self.open {
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
        }
        let load = self.load();
        if load > self.high_water {
            self.loaded = true;
        } else if load <= self.high_water / 2 || self.is_finished() {
            self.loaded = false;
        }
    }

    /// The driver wrote `n` bytes.
    pub(crate) fn written(&mut self, n: usize, out: &mut VecDeque<Output>) {
        self.in_driver = self.in_driver.saturating_sub(n);
        self.flush(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnId;

    #[test]
    fn parts_are_staged_together_in_order() {
        let mut o = Outbound::new(Endpoint::Conn(ConnId(1)), true, 1024);
        let mut out = VecDeque::new();
        o.stage(b"head ");
        o.stage_parts(&[b"a", b"", b"bc", b"\r\n"]);
        assert_eq!(o.staged_total(), 10);
        o.flush(&mut out);
        match out.pop_front() {
            Some(Output::Send { data, .. }) => assert_eq!(data, b"head abc\r\n"),
            other => panic!("{other:?}"),
        }
        o.set_gone();
        o.stage_parts(&[b"dropped"]);
        assert_eq!(o.staged_total(), 10);
    }

    #[test]
    fn an_owned_buffer_goes_out_as_it_is_in_order() {
        let mut o = Outbound::new(Endpoint::Conn(ConnId(1)), true, 1024);
        let mut out = VecDeque::new();
        o.stage(b"before ");
        let big = vec![b'x'; 4096];
        let at = big.as_ptr();
        o.stage_owned(big, &mut out);
        o.stage(b" after");
        o.flush(&mut out);
        let sent: Vec<Vec<u8>> = out
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { data, .. } => Some(data),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0], b"before ");
        assert!(
            sent[1].len() == 4096 && sent[1].as_ptr() == at,
            "not copied"
        );
        assert_eq!(sent[2], b" after");
        assert_eq!(o.staged_total(), 4096 + 13);
        assert!(o.is_loaded(), "it counts against the sink");
        // Not open yet: it waits with what is staged, copied after it.
        let mut o = Outbound::new(Endpoint::Conn(ConnId(2)), false, 1024);
        let mut out = VecDeque::new();
        o.stage(b"a");
        o.stage_owned(b"bc".to_vec(), &mut out);
        assert!(out.is_empty());
        o.open(&mut out);
        assert!(matches!(out.pop_front(), Some(Output::Send { data, .. }) if data == b"abc"));
    }
}
