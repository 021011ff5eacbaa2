//! SIGTERM and SIGHUP (SIGINT is ctrlc's): a handler that only writes the signal's number to
//! a pipe, and a thread that reads it and acts, where anything may be done.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// The pipe's write end, for the handler (-1 until installed).
static PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; it reads one byte from a local. The pipe is
        // non-blocking, so a burst of signals never blocks the handler (a full pipe drops
        // the byte: the same request is already waiting).
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// Calls `on_term` for each SIGTERM and `on_hup` for each SIGHUP, on a thread of its own.
pub fn install(
    on_term: impl Fn() + Send + 'static,
    on_hup: impl Fn() + Send + 'static,
) -> io::Result<()> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe(2) writes two descriptors into the array we own.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [read_end, write_end] = fds;
    for (fd, flags) in [(read_end, 0), (write_end, libc::O_NONBLOCK)] {
        // SAFETY: fcntl on descriptors this function just created.
        let ok = unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) == 0
                && (flags == 0 || libc::fcntl(fd, libc::F_SETFL, flags) == 0)
        };
        if !ok {
            return Err(io::Error::last_os_error());
        }
    }
    PIPE.store(write_end, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("mcp-relay-signals".into())
        .spawn(move || loop {
            let mut byte = 0u8;
            // SAFETY: read(2) into one byte we own, from the pipe's read end, which this
            // thread alone uses and never closes.
            let n = unsafe { libc::read(read_end, (&mut byte as *mut u8).cast(), 1) };
            if n == 1 {
                match libc::c_int::from(byte) {
                    libc::SIGTERM => on_term(),
                    libc::SIGHUP => on_hup(),
                    _ => {}
                }
            } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return;
            }
        })?;
    for sig in [libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid value to fill in; the handler only calls
        // async-signal-safe functions; SA_RESTART keeps other threads' syscalls going.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
