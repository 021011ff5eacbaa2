//! A test logger that captures the core's `log` records on the thread that runs the
//! simulation, so that a run can fail on an ERROR record it did not expect.
//!
//! Test threads run side by side; each one only sees the records logged on its own thread
//! (the core is single-threaded and runs on the simulation's thread).

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::cell::RefCell;
use std::sync::Once;

/// One captured record.
#[derive(Clone, Debug)]
pub struct LogLine {
    pub level: Level,
    pub target: String,
    pub message: String,
}

thread_local! {
    static CAPTURED: RefCell<Option<Vec<LogLine>>> = const { RefCell::new(None) };
}

struct Capture;

static CAPTURE: Capture = Capture;

impl Log for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Info && CAPTURED.with(|c| c.borrow().is_some())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        CAPTURED.with(|c| {
            if let Some(lines) = c.borrow_mut().as_mut() {
                lines.push(LogLine {
                    level: record.level(),
                    target: record.target().to_owned(),
                    message: record.args().to_string(),
                });
            }
        });
    }

    fn flush(&self) {}
}

/// Installs the capturing logger (once per process) and starts capturing on this thread.
pub fn start_capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Another logger may already be installed by some other test: then nothing is
        // captured and the ERROR check is vacuous, which the harness reports.
        if log::set_logger(&CAPTURE).is_ok() {
            log::set_max_level(LevelFilter::Info);
        }
    });
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
}

/// Stops capturing on this thread.
pub fn stop_capture() {
    CAPTURED.with(|c| *c.borrow_mut() = None);
}

/// The records captured since the last call.
pub fn take() -> Vec<LogLine> {
    CAPTURED.with(|c| {
        c.borrow_mut()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    })
}
