//! The relay's own stdin and stdout as one client connection ([`mcp_relay_core::Input::Attached`]).
//!
//! Descriptors 0 and 1 are not the relay's alone: stdin may be a terminal, a file, or a pipe
//! the parent shares, so they are never made non-blocking (that flag belongs to the open file,
//! and the parent would see it too). Instead one thread reads stdin and one writes stdout,
//! both blocking:
//!
//! * the reader hands chunks (at most one read each) to the loop over a small bounded channel
//!   and wakes it; when the core pauses the connection the loop stops taking chunks, the
//!   channel fills and the reader blocks: that is the backpressure. End of file (or a read
//!   error, logged) ends the chunks.
//! * the writer writes each chunk the core sends, in order, and reports it written; a write
//!   error (`EPIPE`: the client went away) is reported once and ends it. When the loop closes
//!   the connection it drops its sender; the writer finishes what it was given, then closes
//!   stdout (descriptor 1 becomes `/dev/null`, so that no later file takes its number).

use crate::Event;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::Waker;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::thread;

/// Chunks read ahead of the loop. With reads of up to `max_read` bytes, at most this many
/// times that wait in the channel (plus one in the reader's hands) while the core pauses.
const READ_AHEAD: usize = 2;

/// What the reader hands the loop.
pub(crate) enum Chunk {
    Data(Vec<u8>),
    /// End of file; `Some` when a read failed (the text of the error).
    End(Option<String>),
}

/// What the loop gets from [`Stdio::take`].
pub(crate) enum Taken {
    Data(Vec<u8>),
    End(Option<String>),
    /// Nothing now (or paused, or already ended).
    Nothing,
}

/// The stdio connection, as the loop holds it.
pub(crate) struct Stdio {
    input: Option<Receiver<Chunk>>,
    output: Option<Sender<Vec<u8>>>,
    writer: Option<thread::JoinHandle<()>>,
    pub(crate) paused: bool,
    /// Bytes handed to the writer and not yet reported written.
    unwritten: usize,
}

impl Stdio {
    /// Starts the reader and the writer. Their events come back as [`Event::StdoutWritten`]
    /// and [`Event::StdoutBroken`]; chunks of stdin wait in the channel (the loop is woken
    /// for each) until [`Stdio::take`].
    pub(crate) fn attach(
        max_read: usize,
        events: Sender<Event>,
        waker: Arc<Waker>,
    ) -> io::Result<Stdio> {
        let (chunk_tx, chunk_rx) = crossbeam_channel::bounded(READ_AHEAD);
        let (out_tx, out_rx) = crossbeam_channel::unbounded::<Vec<u8>>();
        let reader_waker = Arc::clone(&waker);
        // Not joined: a read from a terminal cannot be interrupted, and the process exits
        // without waiting for it. It ends by itself at end of file, or at its next chunk once
        // the loop has dropped the receiver.
        thread::Builder::new()
            .name("mcp-relay-stdin".into())
            .stack_size(128 * 1024)
            .spawn(move || read_stdin(max_read.max(1), &chunk_tx, &reader_waker))?;
        let writer = thread::Builder::new()
            .name("mcp-relay-stdout".into())
            .stack_size(128 * 1024)
            .spawn(move || write_stdout(&out_rx, &events, &waker))?;
        Ok(Stdio {
            input: Some(chunk_rx),
            output: Some(out_tx),
            writer: Some(writer),
            paused: false,
            unwritten: 0,
        })
    }

    /// The next chunk of stdin, unless paused or none is there.
    pub(crate) fn take(&mut self) -> Taken {
        if self.paused {
            return Taken::Nothing;
        }
        let Some(rx) = &self.input else {
            return Taken::Nothing;
        };
        match rx.try_recv() {
            Ok(Chunk::Data(d)) => Taken::Data(d),
            Ok(Chunk::End(why)) => {
                self.input = None;
                Taken::End(why)
            }
            Err(TryRecvError::Empty) => Taken::Nothing,
            // The reader is gone without a word (it cannot be, short of a panic): that is
            // the end of stdin too.
            Err(TryRecvError::Disconnected) => {
                self.input = None;
                Taken::End(Some("the stdin reader stopped".into()))
            }
        }
    }

    /// Hands bytes to the writer. False if it has stopped (its `StdoutBroken` is on the way,
    /// or the connection was closed).
    pub(crate) fn send(&mut self, data: Vec<u8>) -> bool {
        let n = data.len();
        let sent = self.output.as_ref().is_some_and(|tx| tx.send(data).is_ok());
        if sent {
            self.unwritten += n;
        }
        sent
    }

    /// The writer reported `n` bytes written.
    pub(crate) fn written(&mut self, n: usize) {
        self.unwritten = self.unwritten.saturating_sub(n);
    }

    /// Whether the connection was closed or broke (no inputs about it are due any more).
    pub(crate) fn is_closed(&self) -> bool {
        self.output.is_none()
    }

    /// Closes the connection: stdin is no longer taken, and stdout is closed once what was
    /// sent is written.
    pub(crate) fn close(&mut self) {
        self.input = None;
        self.output = None;
    }

    /// The runtime is going away. If everything sent was written, waits for the writer to
    /// close stdout (it has nothing left to block on); otherwise leaves it (stdout may be
    /// stuck, and the process is about to exit anyway).
    pub(crate) fn finish(mut self) {
        self.close();
        if let Some(writer) = self.writer.take() {
            if self.unwritten == 0 {
                let _ = writer.join();
            }
        }
    }
}

fn read_stdin(max_read: usize, chunks: &Sender<Chunk>, waker: &Waker) {
    let stdin = io::stdin();
    let mut stdin = stdin.lock();
    let mut buf = vec![0u8; max_read];
    let end = loop {
        match stdin.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                // Blocks while the channel is full: the loop has stopped taking (paused).
                if chunks.send(Chunk::Data(buf[..n].to_vec())).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Some(e.to_string()),
        }
    };
    if chunks.send(Chunk::End(end)).is_ok() {
        let _ = waker.wake();
    }
}

fn write_stdout(chunks: &Receiver<Vec<u8>>, events: &Sender<Event>, waker: &Waker) {
    let report = |event| {
        if events.send(event).is_ok() {
            let _ = waker.wake();
        }
    };
    // `recv` returns what was sent before the loop dropped its sender, then `Err`.
    while let Ok(chunk) = chunks.recv() {
        // Locked per chunk, not for good: a stray `print!` elsewhere would then wait forever.
        let mut out = io::stdout().lock();
        match out.write_all(&chunk).and_then(|()| out.flush()) {
            Ok(()) => report(Event::StdoutWritten(chunk.len())),
            Err(e) => {
                report(Event::StdoutBroken(e.to_string()));
                return;
            }
        }
    }
    close_stdout();
}

/// Closes the relay's stdout so that the client sees its end: descriptor 1 is pointed at
/// `/dev/null` rather than closed, so that no file opened later gets number 1 (and with it
/// whatever a stray `print!` would write).
fn close_stdout() {
    use std::os::fd::AsRawFd;
    let mut out = io::stdout().lock();
    let _ = out.flush();
    match std::fs::OpenOptions::new().write(true).open("/dev/null") {
        Ok(null) => {
            // SAFETY: dup2 takes two descriptors and touches no memory; `null` is open for
            // the duration of the call, and descriptor 1 is the process's stdout, whose
            // `Stdout` handle is locked here so that nothing writes meanwhile.
            if unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
                log::debug!("cannot close stdout: {}", io::Error::last_os_error());
            }
        }
        Err(e) => log::debug!("cannot close stdout: /dev/null: {e}"),
    }
}
