//! Socket activation: listening sockets handed over by a service manager (systemd, or
//! `systemd-socket-activate`) instead of bound by the relay.
//!
//! The protocol is sd_listen_fds(3)'s: when `LISTEN_PID` is this process's id, `LISTEN_FDS`
//! descriptors starting at 3 are open listening sockets, named (optionally) by the
//! colon-separated `LISTEN_FDNAMES`. The manager keeps its own copy of each socket, so the
//! port stays open, and connections wait in its backlog, while the relay restarts.
//!
//! Mechanism only: [`take_from_env`] takes the sockets, [`assign`] gives each to the
//! [`Listen`] bound to the same address. What an unmatched socket means is the binary's call.

use crate::Listen;
#[cfg(doc)]
use crate::Runtime;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// More descriptors than this is taken for a garbled `LISTEN_FDS`, not a configuration.
const MAX_FDS: usize = 4096;

/// The variables of the protocol, removed from the environment by [`take_from_env`].
const VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// One listening socket received from the service manager.
#[derive(Debug)]
pub struct Inherited {
    /// The descriptor it came as (3, 4, …), for messages.
    pub fd: RawFd,
    /// Its name in `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`; by default the socket
    /// unit's name), if any.
    pub name: Option<String>,
    /// The address it is bound to.
    pub addr: SocketAddr,
    socket: TcpListener,
}

impl Inherited {
    /// `descriptor 3 ("mcp-relay.socket")`: the socket, as an operator would look for it.
    pub fn describe(&self) -> String {
        describe(self.fd, self.name.as_deref())
    }
}

fn describe(fd: RawFd, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("descriptor {fd} ({name:?})"),
        None => format!("descriptor {fd}"),
    }
}

/// Takes the listening sockets the service manager passed to this process, if any, and
/// removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` from the environment whether or
/// not they were meant for it (the servers the relay starts must not take them for theirs).
///
/// Each socket is made close-on-exec (no server inherits it); [`Runtime::bind`] makes it
/// non-blocking. An error
/// names the variable or descriptor that is wrong: a descriptor that is not open, not a
/// listening socket, or not TCP over IPv4 or IPv6.
///
/// Call it once, early, while the process has a single thread (it changes the
/// environment) and before it opens any descriptor of its own.
pub fn take_from_env() -> Result<Vec<Inherited>, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for var in VARS {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_PID={pid:?} is not a process id"))?;
    if pid != std::process::id() {
        // Meant for another process (an ancestor that was socket-activated): not ours to touch.
        return Ok(Vec::new());
    }
    let count: usize = fds
        .trim()
        .parse()
        .ok()
        .filter(|n| *n <= MAX_FDS)
        .ok_or_else(|| format!("LISTEN_FDS={fds:?} is not a number of descriptors"))?;
    let mut names = names.map(|n| n.split(':').map(str::to_owned).collect::<Vec<_>>());
    let mut taken = Vec::with_capacity(count);
    for i in 0..count {
        // `count` is at most MAX_FDS, so this fits.
        let fd = FIRST_FD + i as RawFd;
        let name = names
            .as_mut()
            .and_then(|n| n.get_mut(i).map(std::mem::take))
            .filter(|n| !n.is_empty());
        let what = describe(fd, name.as_deref());
        check_listening(fd).map_err(|e| format!("socket activation: {what}: {e}"))?;
        // SAFETY: the descriptor is open (checked just above) and was passed to this
        // process by the service manager (LISTEN_PID names it); nothing else in the process
        // owns it, as this runs once (the variables are gone now) before the process opens
        // descriptors of its own.
        let socket = unsafe { TcpListener::from_raw_fd(fd) };
        let addr = socket.local_addr().map_err(|e| {
            format!("socket activation: {what} is not a TCP socket (IPv4 or IPv6): {e}")
        })?;
        taken.push(Inherited {
            fd,
            name,
            addr,
            socket,
        });
    }
    Ok(taken)
}

/// Gives each inherited socket to the first [`Listen`] with the same address that has none
/// yet ([`Listen::inherited`]); a listener left without one is bound as usual. Returns the
/// sockets that no listener asked for.
pub fn assign(listen: &mut [Listen], inherited: Vec<Inherited>) -> Vec<Inherited> {
    let mut unmatched = Vec::new();
    for socket in inherited {
        match listen
            .iter_mut()
            .find(|l| l.inherited.is_none() && l.addr == socket.addr)
        {
            Some(l) => l.inherited = Some(Arc::new(socket.socket)),
            None => unmatched.push(socket),
        }
    }
    unmatched
}

/// The mio listener for an inherited socket. The last holder of the `Arc` hands the socket
/// over as it is; otherwise it is duplicated (close-on-exec, as std's duplicates are).
pub(crate) fn adopt(socket: Arc<TcpListener>) -> io::Result<mio::net::TcpListener> {
    let socket = Arc::try_unwrap(socket).or_else(|shared| shared.try_clone())?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(socket))
}

/// Whether `fd` is open and a listening socket; makes it close-on-exec.
fn check_listening(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) and getsockopt(2) on a descriptor number touch no memory of ours
    // but `listening` and `len`, which outlive the calls.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(io::Error::other("not open"));
        }
        let mut listening: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        );
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::ENOTSOCK) {
                io::Error::other("not a socket")
            } else {
                e
            });
        }
        if listening == 0 {
            return Err(io::Error::other(
                "not a listening socket (a socket unit with Accept=no and ListenStream= passes one)",
            ));
        }
        if libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_relay_core::Transport;

    fn inherited(socket: TcpListener) -> Inherited {
        Inherited {
            fd: FIRST_FD,
            name: None,
            addr: socket.local_addr().unwrap(),
            socket,
        }
    }

    #[test]
    fn each_socket_goes_to_the_listener_with_its_address() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let stray = TcpListener::bind("127.0.0.1:0").unwrap();
        let (addr_a, addr_b, addr_stray) = (
            a.local_addr().unwrap(),
            b.local_addr().unwrap(),
            stray.local_addr().unwrap(),
        );
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut listen = vec![
            Listen::plain(addr_b, Transport::Http),
            Listen::plain(other, Transport::Tcp),
            Listen::plain(addr_a, Transport::Tcp),
        ];
        let unmatched = assign(
            &mut listen,
            vec![inherited(a), inherited(stray), inherited(b)],
        );
        let got = |i: usize| {
            listen[i]
                .inherited
                .as_ref()
                .map(|s| s.local_addr().unwrap())
        };
        assert_eq!(got(0), Some(addr_b));
        assert_eq!(got(1), None, "no socket for it: bound as usual");
        assert_eq!(got(2), Some(addr_a));
        assert_eq!(unmatched.len(), 1);
        assert_eq!(unmatched[0].addr, addr_stray);
    }

    #[test]
    fn the_last_holder_hands_the_socket_over_and_a_shared_one_is_duplicated() {
        let socket = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = socket.local_addr().unwrap();
        let kept = Arc::clone(&socket);
        let dup = adopt(socket).unwrap();
        assert_eq!(dup.local_addr().unwrap(), addr);
        let own = adopt(kept).unwrap();
        assert_eq!(own.local_addr().unwrap(), addr);
    }

    #[test]
    fn a_descriptor_that_is_not_a_listening_socket_is_refused() {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open("/dev/null").unwrap();
        let err = check_listening(file.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let err = check_listening(stream.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not a listening socket"), "{err}");
        check_listening(listener.as_raw_fd()).unwrap();
    }
}
