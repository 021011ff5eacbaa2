//! Starting a server's process without `fork`, and keeping a handle on it.
//!
//! `std::process::Command` with a `pre_exec` closure (which the relay needed for
//! `PR_SET_PDEATHSIG`) must `fork`: the kernel copies the relay's page tables and descriptor
//! table for a child that throws them away at `exec`, which costs more the bigger the relay
//! gets. On Linux, [`spawn`] instead starts the child with `clone(CLONE_VM | CLONE_VFORK)`,
//! as the C library's `posix_spawn` does: the child runs on a small stack of its own in the
//! relay's memory, the spawner thread waits until it has called `exec` (or given up), and
//! nothing is copied but the descriptor table. In between the child makes only plain system
//! calls on values prepared beforehand (no allocation, no lock, no handler of the relay's),
//! among them the `prctl(PR_SET_PDEATHSIG, SIGKILL)` that makes it die with the spawner
//! thread, so that not even a relay killed with SIGKILL leaks its servers.
//!
//! Nor, where the kernel allows (`close_range(2)` with `CLOSE_RANGE_UNSHARE`, Linux 5.9), is
//! the whole descriptor table copied: a relay with thousands of sessions holds thousands of
//! sockets, and copying them at `clone` only for `exec` to close them again made each start
//! cost more the more sessions were open. Instead the child starts on the relay's own table
//! (`CLONE_FILES`) and its first step is to unshare it, copying only the few descriptors
//! below three low ones the spawner keeps for the purpose ([`prepare`]), onto which the
//! child's ends of its pipes are put for the duration of the start. Where the call is
//! missing, the child gets a copy of the whole table, as before.
//!
//! What the child gets is what `Command` gave it: the same environment, the same program
//! lookup (`execvp`'s: the `PATH` of the child's environment, `/bin:/usr/bin` without one, a
//! file without `#!` run by `/bin/sh`), its own process group, the relay's signal mask,
//! SIGPIPE back at its default, and the same errors when it cannot start (`NotFound`,
//! `PermissionDenied`, …).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// A child of the relay's: its pid, and its status once reaped. Like `std::process::Child`,
/// dropping it neither kills nor reaps the process.
#[derive(Debug)]
pub(crate) struct ChildHandle {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl ChildHandle {
    /// A handle on a child of this process that nobody else reaps.
    pub(crate) fn from_pid(pid: libc::pid_t) -> Self {
        ChildHandle { pid, status: None }
    }

    pub(crate) fn id(&self) -> u32 {
        // pids are positive.
        self.pid.unsigned_abs()
    }

    /// SIGKILL to the child itself; nothing once it is reaped (its pid may be another's).
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the child to exit and reaps it.
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            match self.reap(0)? {
                Some(status) => return Ok(status),
                // Without WNOHANG waitpid only returns once the child has changed state.
                None => continue,
            }
        }
    }

    /// Reaps the child if it has exited; never blocks.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    fn reap(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        loop {
            let mut status = 0;
            // SAFETY: waitpid(2) on our own child writes only to `status`, which we own.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, flags) };
            if rc == self.pid {
                let status = ExitStatus::from_raw(status);
                self.status = Some(status);
                return Ok(Some(status));
            }
            if rc == 0 {
                return Ok(None);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// A started child and the relay's ends of its three pipes (blocking, close-on-exec).
pub(crate) struct Spawned {
    pub(crate) child: ChildHandle,
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

#[cfg(target_os = "linux")]
pub(crate) use linux::{prepare, spawn};

#[cfg(target_os = "linux")]
mod linux {
    use super::{ChildHandle, Spawned};
    use crate::process::CommandSpec;
    use std::ffi::{CString, OsStr, OsString};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::ptr;
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::{Mutex, PoisonError};

    /// `execvp`'s search path when the environment has no `PATH` (glibc's and musl's).
    const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";
    /// The child's stack: what it runs needs a few KiB at most.
    const STACK_SIZE: usize = 64 * 1024;
    /// The kernel's signal set is 64 bits; `sigset_t` is larger but starts with it.
    const KERNEL_SIGSET_SIZE: libc::c_long = 8;
    /// Signals are 1..NSIG.
    const NSIG: libc::c_int = 65;
    /// close_range(2)'s "every descriptor from here on".
    const ALL_FDS: libc::c_uint = libc::c_uint::MAX;

    /// Starts `spec` with its stdin, stdout and stderr on new pipes, in a process group of
    /// its own, set to be killed when the calling thread exits. The program's failure to
    /// start (not found, not executable, a bad working directory…) is this call's error.
    pub(crate) fn spawn(spec: &CommandSpec) -> io::Result<Spawned> {
        spawn_with(spec, false)
    }

    /// As [`spawn`]; with `copy_table` the child gets a copy of the whole descriptor table
    /// even where it could share ours (what it gets where close_range(2) is missing).
    pub(super) fn spawn_with(spec: &CommandSpec, copy_table: bool) -> io::Result<Spawned> {
        let prepared = Prepared::new(spec)?;
        let (stdin_child, stdin) = pipe()?;
        let (stdout, stdout_child) = pipe()?;
        let (stderr, stderr_child) = pipe()?;
        let fds = [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ];
        let pid = prepared.start(fds, copy_table)?;
        // Ours are closed (the child has its copies): our ends see EOF when it exits.
        drop((stdin_child, stdout_child, stderr_child));
        Ok(Spawned {
            child: ChildHandle::from_pid(pid),
            stdin,
            stdout,
            stderr,
        })
    }

    /// A pipe, both ends close-on-exec and at 3 or above (so that moving the child's ends
    /// onto 0, 1 and 2 never overwrites another of them). Returns (read end, write end).
    fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2(2) writes two descriptors into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned these descriptors to us and nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((above_stdio(read)?, above_stdio(write)?))
    }

    /// The descriptor itself if it is 3 or above, else a close-on-exec duplicate that is.
    fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
        if fd.as_raw_fd() > 2 {
            return Ok(fd);
        }
        dup_above_stdio(&fd)
    }

    /// Everything the child needs, made before it exists: it must not allocate.
    struct Prepared {
        /// The files `execve` tries, in order (one unless the program is looked up in `PATH`).
        candidates: Vec<CString>,
        /// Owns what `argv_ptrs` and `script_argv` point to.
        _argv: Vec<CString>,
        /// The arguments as the null-terminated array `execve` takes.
        argv_ptrs: Vec<*const libc::c_char>,
        /// For a file the kernel cannot execute: `/bin/sh FILE ARGS…`, where the child puts
        /// FILE in slot 1. Points into `argv` and at a static string.
        script_argv: Vec<*const libc::c_char>,
        /// Owns what `envp` points to.
        _env: Vec<CString>,
        /// The environment as the null-terminated array `execve` takes.
        envp: Vec<*const libc::c_char>,
        cwd: Option<CString>,
    }

    fn cstring(bytes: &[u8]) -> io::Result<CString> {
        CString::new(bytes).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "nul byte found in provided data",
            )
        })
    }

    impl Prepared {
        fn new(spec: &CommandSpec) -> io::Result<Prepared> {
            let env = child_env(spec);
            let path: Option<&OsStr> = env
                .iter()
                .find(|(k, _)| k.as_bytes() == b"PATH")
                .map(|(_, v)| v.as_os_str());
            let candidates = candidates(spec.program.as_bytes(), path)?;
            let mut argv = Vec::with_capacity(spec.args.len() + 1);
            argv.push(cstring(spec.program.as_bytes())?);
            for arg in &spec.args {
                argv.push(cstring(arg.as_bytes())?);
            }
            let mut env_c = Vec::with_capacity(env.len());
            for (k, v) in &env {
                let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
                kv.extend_from_slice(k.as_bytes());
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                env_c.push(cstring(&kv)?);
            }
            let cwd = match &spec.cwd {
                Some(dir) => Some(cstring(dir.as_os_str().as_bytes())?),
                None => None,
            };
            let argv_ptrs = null_terminated(&argv);
            let envp = null_terminated(&env_c);
            let mut script_argv = Vec::with_capacity(argv.len() + 2);
            script_argv.push(c"/bin/sh".as_ptr());
            script_argv.push(ptr::null());
            script_argv.extend(argv.iter().skip(1).map(|a| a.as_ptr()));
            script_argv.push(ptr::null());
            Ok(Prepared {
                candidates,
                _argv: argv,
                argv_ptrs,
                script_argv,
                _env: env_c,
                envp,
                cwd,
            })
        }

        /// Starts the child with `fds` as its stdin, stdout and stderr; returns its pid once
        /// it has called `exec`, or the error that kept it from doing so. With `copy_table`
        /// it gets a copy of our whole descriptor table even where it could share it.
        fn start(mut self, fds: [libc::c_int; 3], copy_table: bool) -> io::Result<libc::pid_t> {
            let candidates = null_terminated(&self.candidates);
            // One stack and one set of slots, reused: a child is on the stack, and the slots
            // hold its pipes, only while the thread that started it waits, with the lock held.
            let mut guard = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
            let spawner = &mut *guard;
            let stack = match spawner.stack.take() {
                Some(stack) => stack,
                None => Stack::new()?,
            };
            if matches!(spawner.table, Table::Unknown) {
                spawner.table = Table::reserve();
            }
            let mut result = None;
            if let (Table::Shared(slots), false) = (&spawner.table, copy_table) {
                let mut ctx = self.context(&candidates, slots.raw(), slots.above());
                let started = match slots.fill(fds) {
                    Ok(()) => Some(clone_child(&stack, &mut ctx)),
                    Err(_) => None,
                };
                // The child could not unshare (and did nothing else), or the slots could not
                // take the pipes: this start, and every later one, copies the table instead.
                let unsupported =
                    started.is_none() || ctx.unshare_error.load(Ordering::SeqCst) != 0;
                // The slots go back to /dev/null whatever happened: the relay must not keep
                // the child's ends of its pipes (it would never see their EOF).
                let emptied = slots.empty();
                if unsupported || emptied.is_err() {
                    // Dropped, the slots are closed, along with any pipe end left on them.
                    spawner.table = Table::Copy;
                }
                if !unsupported {
                    result = started;
                }
            }
            let result = result.unwrap_or_else(|| {
                let mut ctx = self.context(&candidates, fds, 0);
                clone_child(&stack, &mut ctx)
            });
            spawner.stack = Some(stack);
            drop(guard);
            // Keep what the child read alive until it is done with it (clone_child returns
            // after the child's exec or exit).
            drop(candidates);
            drop(self);
            result
        }

        /// What the child reads: `fds` become its stdin, stdout and stderr; `unshare_from`,
        /// if not 0, is where the part of the shared table it does not copy begins.
        fn context(
            &mut self,
            candidates: &[*const libc::c_char],
            fds: [libc::c_int; 3],
            unshare_from: libc::c_uint,
        ) -> ChildContext {
            ChildContext {
                candidates: candidates.as_ptr(),
                argv: self.argv_ptrs.as_ptr(),
                script_argv: self.script_argv.as_mut_ptr(),
                envp: self.envp.as_ptr(),
                fds,
                unshare_from,
                cwd: self.cwd.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
                // SAFETY: getpid(2) has no preconditions.
                parent: unsafe { libc::getpid() },
                // SAFETY: an all-zero sigset_t is a valid (empty) set; filled in later.
                mask: unsafe { std::mem::zeroed() },
                error: AtomicI32::new(0),
                unshare_error: AtomicI32::new(0),
            }
        }
    }

    /// Runs the child on `stack` and waits until it has called `exec` or given up. With
    /// `ctx.unshare_from` set, the child starts on our descriptor table (see child_main).
    fn clone_child(stack: &Stack, ctx: &mut ChildContext) -> io::Result<libc::pid_t> {
        // Every signal blocked around the clone: a handler of the relay's must never run in
        // the child, which shares the relay's memory. The child resets the handled ones to
        // their defaults before it unblocks them (glibc's posix_spawn does the same).
        // Every bit set: the kernel's set is 64 bits (it leaves SIGKILL and SIGSTOP alone).
        let all: u64 = u64::MAX;
        // SAFETY: rt_sigprocmask(2) reads the 8 bytes of `all` and writes the old mask into
        // `ctx.mask`, a sigset_t (at least 8 bytes) we own. Unlike sigfillset and glibc's
        // wrapper, the raw call also blocks the two signals glibc keeps for itself.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &all as *const u64,
                &mut ctx.mask as *mut libc::sigset_t,
                KERNEL_SIGSET_SIZE,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
        if ctx.unshare_from != 0 {
            flags |= libc::CLONE_FILES;
        }
        // SAFETY: the child runs `child_main` on `stack`, a mapping of its own that nothing
        // else uses meanwhile (the caller holds its lock), with a guard page below it. It
        // shares our memory, but CLONE_VFORK suspends this thread until the child has
        // called execve or exited, so `ctx` and what it points to (owned by our caller)
        // stay alive and untouched by us meanwhile, and the child only reads them (except
        // `error`, `unshare_error` and the script slot, which we read only afterwards).
        // With every signal blocked, no handler runs in the child before it resets them.
        // With CLONE_FILES it shares our descriptor table until its first system call
        // gives it one of its own, and touches no descriptor before that.
        let pid = unsafe {
            libc::clone(
                child_main,
                stack.top(),
                flags,
                ctx as *mut ChildContext as *mut libc::c_void,
            )
        };
        let clone_error = (pid < 0).then(io::Error::last_os_error);
        // SAFETY: rt_sigprocmask(2) reads the mask we saved above; it writes nothing.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &ctx.mask as *const libc::sigset_t,
                ptr::null_mut::<libc::sigset_t>(),
                KERNEL_SIGSET_SIZE,
            );
        }
        if let Some(e) = clone_error {
            return Err(e);
        }
        let errno = match ctx.unshare_error.load(Ordering::SeqCst) {
            0 => ctx.error.load(Ordering::SeqCst),
            unshare_errno => unshare_errno,
        };
        if errno == 0 {
            return Ok(pid);
        }
        // It has exited (or is exiting) without exec: reap it.
        let _ = ChildHandle::from_pid(pid).wait();
        Err(io::Error::from_raw_os_error(errno))
    }

    /// The child's first and only function: prepares the process and calls `exec`; on
    /// failure leaves the errno in `ctx.error` and exits with 127.
    extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the ChildContext that clone_child passed to clone(2); it lives on
        // the suspended spawner thread's stack until this process has exec'd or exited.
        let ctx = unsafe { &*(arg as *const ChildContext) };
        if ctx.unshare_from != 0 {
            // The descriptor table is still the relay's, which its other threads go on
            // using: before anything else, one of our own, with only the descriptors below
            // `unshare_from` (the slots that hold our pipes, and whatever the relay has
            // below them) copied, not the thousands above. See Table.
            // SAFETY: close_range(2) takes integers only; with CLOSE_RANGE_UNSHARE it closes
            // descriptors in the child's new table, never in the relay's.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    ctx.unshare_from,
                    ALL_FDS,
                    libc::CLOSE_RANGE_UNSHARE,
                )
            };
            if rc != 0 {
                // Still on the relay's table: the caller tries again with a copy of it.
                ctx.unshare_error.store(errno(), Ordering::SeqCst);
                // SAFETY: as below.
                unsafe { libc::_exit(127) }
            }
        }
        // SAFETY: `ctx` holds what child_run requires (see ChildContext and Prepared).
        let error = unsafe { child_run(ctx) };
        ctx.error.store(error, Ordering::SeqCst);
        // SAFETY: _exit(2) ends this process only (it is not in our thread group) and runs
        // no handler or destructor of the relay's.
        unsafe { libc::_exit(127) }
    }

    /// The child's steps before `exec`. Only system calls, on memory prepared beforehand:
    /// no allocation, no lock, no panic. Returns the errno of the step that failed.
    ///
    /// # Safety
    /// Only to be called in a child started by clone_child, with every signal blocked and
    /// `ctx`'s pointers valid (null-terminated arrays of C strings; `cwd` null or a C string).
    unsafe fn child_run(ctx: &ChildContext) -> libc::c_int {
        // No handler of the relay's may run here: those signals go back to their defaults
        // (exec would reset them anyway). SIGPIPE too, which Rust programs ignore and
        // `Command` restores for its children; other ignored signals stay ignored.
        for sig in 1..NSIG {
            // SAFETY: all-zero is a valid sigaction, which sigaction(2) overwrites.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: sigaction(2) writes only to `old`; the glibc wrapper is a plain
            // system call (and refuses its own two signals, which we then skip).
            if unsafe { libc::sigaction(sig, ptr::null(), &mut old) } != 0 {
                continue;
            }
            let handled = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if handled || sig == libc::SIGPIPE {
                // SAFETY: as above; an all-zero sigaction with SIG_DFL is the default.
                let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
                dfl.sa_sigaction = libc::SIG_DFL;
                // SAFETY: sigaction(2) reads `dfl`, which we own.
                if unsafe { libc::sigaction(sig, &dfl, ptr::null_mut()) } != 0 {
                    return errno();
                }
            }
        }
        let stdio = [
            (libc::STDIN_FILENO, ctx.fds[0]),
            (libc::STDOUT_FILENO, ctx.fds[1]),
            (libc::STDERR_FILENO, ctx.fds[2]),
        ];
        for (target, fd) in stdio {
            // The pipes (or the slots holding them) are all above 2 (see `pipe` and
            // `Table::reserve`), so no dup2 overwrites a later one; the copy on 0, 1 or 2 is
            // not close-on-exec.
            // SAFETY: dup2(2) on descriptors of this process; no memory is touched.
            if unsafe { libc::dup2(fd, target) } < 0 {
                return errno();
            }
        }
        // Nothing else of the relay's reaches the server: not the few descriptors below the
        // slots (close-on-exec anyway), nor any the relay was itself started with and left
        // open for its children (a socket handed over by systemd, a shell's stray ones).
        // SAFETY: close_range(2) takes integers only; it closes descriptors of this process,
        // whose table is its own by now. A kernel without it (before 5.9) leaves them to
        // close-on-exec, as before.
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, ALL_FDS, 0u32) };
        // SAFETY: chdir(2) reads the C string `cwd` points to (checked non-null).
        if !ctx.cwd.is_null() && unsafe { libc::chdir(ctx.cwd) } != 0 {
            return errno();
        }
        // Its own process group, so that the stop signals reach grandchildren too.
        // SAFETY: setpgid(2) takes integers only.
        if unsafe { libc::setpgid(0, 0) } != 0 {
            return errno();
        }
        // Killed when the spawner thread (which lives as long as the relay) dies, so that
        // not even a SIGKILLed relay leaks its servers.
        // SAFETY: prctl(2) with PR_SET_PDEATHSIG takes integers only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
            return errno();
        }
        // The relay died before the death signal was set: nobody would ever stop this one.
        // SAFETY: getppid(2) has no preconditions.
        if unsafe { libc::getppid() } != ctx.parent {
            // SAFETY: as in child_main.
            unsafe { libc::_exit(127) }
        }
        // The spawner thread's mask, as `Command` leaves it to its children.
        // SAFETY: rt_sigprocmask(2) reads the saved mask; it writes nothing.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &ctx.mask as *const libc::sigset_t,
                ptr::null_mut::<libc::sigset_t>(),
                KERNEL_SIGSET_SIZE,
            )
        };
        if rc != 0 {
            return errno();
        }
        // execvp's rules: try each candidate; one the kernel cannot execute (no `#!`) is run
        // by /bin/sh; go on past "not there" (and past "not executable", which is reported
        // if nothing else is found); stop at any other error.
        let mut eacces = false;
        let mut last = libc::ENOENT;
        let mut next = ctx.candidates;
        loop {
            // SAFETY: `candidates` is a null-terminated array; `next` never passes the null.
            let file = unsafe { *next };
            if file.is_null() {
                break;
            }
            // SAFETY: execve(2) reads the C string and the null-terminated arrays prepared
            // by Prepared; it returns only on failure.
            unsafe { libc::execve(file, ctx.argv, ctx.envp) };
            let mut e = errno();
            if e == libc::ENOEXEC {
                // SAFETY: `script_argv` has at least three slots (sh, the file, the null);
                // slot 1 is ours to fill, and execve reads the null-terminated array.
                unsafe {
                    *ctx.script_argv.add(1) = file;
                    libc::execve(c"/bin/sh".as_ptr(), ctx.script_argv, ctx.envp);
                }
                e = errno();
            }
            match e {
                libc::EACCES => eacces = true,
                libc::ENOENT | libc::ESTALE | libc::ENOTDIR | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => return e,
            }
            last = e;
            // SAFETY: `file` was not the terminating null, so the next slot exists.
            next = unsafe { next.add(1) };
        }
        if eacces {
            libc::EACCES
        } else {
            last
        }
    }

    fn errno() -> libc::c_int {
        // SAFETY: __errno_location returns this thread's errno slot, always valid to read.
        unsafe { *libc::__errno_location() }
    }

    /// The child's stack: a private mapping with a guard page below, never unmapped.
    struct Stack {
        base: *mut libc::c_void,
        len: usize,
    }

    // SAFETY: a Stack is only an address range; it is used under SPAWNER's lock only.
    unsafe impl Send for Stack {}

    /// What every start reuses, under one lock: a start holds it from before the clone until
    /// the child has exec'd and the slots are emptied again.
    struct Spawner {
        stack: Option<Stack>,
        table: Table,
    }

    static SPAWNER: Mutex<Spawner> = Mutex::new(Spawner {
        stack: None,
        table: Table::Unknown,
    });

    /// How a child gets its descriptor table.
    enum Table {
        /// Not decided yet (the first start or [`prepare`] decides).
        Unknown,
        /// It starts on the relay's table and unshares it, copying only what lies below the
        /// slots' end.
        Shared(Slots),
        /// It gets a copy of the whole table at clone (no close_range, or the slots failed).
        Copy,
    }

    /// Three low descriptors (3 and above), reserved early while the relay holds few, that
    /// hold /dev/null between starts and the child's ends of its pipes during one: the child
    /// copies the table only up to them. Close-on-exec always, so that no other program the
    /// relay's threads may start inherits them; touched only under SPAWNER's lock.
    struct Slots {
        /// What the slots hold between starts.
        null: OwnedFd,
        fds: [OwnedFd; 3],
    }

    impl Table {
        /// Slots if close_range(2) is there and they can be had, else Copy.
        fn reserve() -> Table {
            // Closes nothing (no descriptor is that high); fails where the call (and its
            // CLOSE_RANGE_UNSHARE, both Linux 5.9) is missing or filtered. Not tried here
            // with CLOSE_RANGE_UNSHARE, which would give this thread a table of its own.
            // SAFETY: close_range(2) takes integers only.
            let rc = unsafe { libc::syscall(libc::SYS_close_range, ALL_FDS, ALL_FDS, 0) };
            if rc != 0 {
                return Table::Copy;
            }
            match Slots::new() {
                Ok(slots) => Table::Shared(slots),
                Err(_) => Table::Copy,
            }
        }
    }

    impl Slots {
        fn new() -> io::Result<Slots> {
            // SAFETY: open(2) reads the C string; the descriptor it returns is ours alone.
            let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
            if null < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
            let null = above_stdio(unsafe { OwnedFd::from_raw_fd(null) })?;
            let fds = [
                dup_above_stdio(&null)?,
                dup_above_stdio(&null)?,
                dup_above_stdio(&null)?,
            ];
            Ok(Slots { null, fds })
        }

        fn raw(&self) -> [libc::c_int; 3] {
            [
                self.fds[0].as_raw_fd(),
                self.fds[1].as_raw_fd(),
                self.fds[2].as_raw_fd(),
            ]
        }

        /// Where the part of the table a child does not copy begins: just past the slots.
        fn above(&self) -> libc::c_uint {
            let highest = self.raw().into_iter().max().unwrap_or(0);
            // Descriptors are non-negative.
            highest.unsigned_abs() + 1
        }

        /// Puts `fds` on the slots (close-on-exec).
        fn fill(&self, fds: [libc::c_int; 3]) -> io::Result<()> {
            for (fd, slot) in fds.into_iter().zip(self.raw()) {
                replace(fd, slot)?;
            }
            Ok(())
        }

        /// Puts /dev/null back on every slot; an error leaves some holding a pipe end.
        fn empty(&self) -> io::Result<()> {
            let mut result = Ok(());
            for slot in self.raw() {
                if let Err(e) = replace(self.null.as_raw_fd(), slot) {
                    result = Err(e);
                }
            }
            result
        }
    }

    /// dup3(fd, slot, O_CLOEXEC): `slot` (one of ours, open) now refers to what `fd` does.
    fn replace(fd: libc::c_int, slot: libc::c_int) -> io::Result<()> {
        loop {
            // SAFETY: dup3(2) on descriptors we own; the old file on `slot` is closed by it.
            if unsafe { libc::dup3(fd, slot, libc::O_CLOEXEC) } >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// A close-on-exec duplicate of `fd` at 3 or above.
    fn dup_above_stdio(fd: &OwnedFd) -> io::Result<OwnedFd> {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we own returns a new one or -1.
        let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(dup) })
    }

    /// Reserves the slots now, while the relay holds few descriptors (the spawner thread
    /// calls it when it starts); otherwise the first start does.
    pub(crate) fn prepare() {
        let mut spawner = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(spawner.table, Table::Unknown) {
            spawner.table = Table::reserve();
        }
    }

    impl Stack {
        fn new() -> io::Result<Stack> {
            // SAFETY: sysconf(3) has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let page = usize::try_from(page)
                .ok()
                .filter(|p| *p > 0)
                .unwrap_or(4096);
            let len = STACK_SIZE + page;
            // SAFETY: a new anonymous private mapping; it overlaps nothing of ours.
            let base = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: the lowest page of the mapping we just made becomes the guard page.
            if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
                let e = io::Error::last_os_error();
                // SAFETY: unmaps exactly the mapping made above, which nothing uses.
                unsafe { libc::munmap(base, len) };
                return Err(e);
            }
            Ok(Stack { base, len })
        }

        /// The stack's top (it grows down), 16-byte aligned as the ABI wants (`len` is a
        /// multiple of the page size).
        fn top(&self) -> *mut libc::c_void {
            self.base.wrapping_byte_add(self.len)
        }
    }

    /// What the child reads (and, for `error` and the script slot, writes) in our memory.
    #[repr(C)]
    struct ChildContext {
        /// Null-terminated.
        candidates: *const *const libc::c_char,
        argv: *const *const libc::c_char,
        script_argv: *mut *const libc::c_char,
        envp: *const *const libc::c_char,
        fds: [libc::c_int; 3],
        /// 0: the child has a copy of our descriptor table. Else it starts on ours
        /// (CLONE_FILES) and first unshares it, copying only the descriptors below this one.
        unshare_from: libc::c_uint,
        /// Null for none.
        cwd: *const libc::c_char,
        /// Our pid: if the child's parent is another by the time its death signal is set,
        /// the relay is already gone.
        parent: libc::pid_t,
        /// The spawner thread's signal mask, which the child gets.
        mask: libc::sigset_t,
        /// The errno that kept the child from `exec`; 0 if it did not fail.
        error: AtomicI32,
        /// The errno of the child's failed unshare (then it did nothing else); 0 otherwise.
        unshare_error: AtomicI32,
    }

    fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(ptr::null());
        ptrs
    }

    /// The child's environment, as `Command` would make it from the spec.
    fn child_env(spec: &CommandSpec) -> Vec<(OsString, OsString)> {
        let changed = spec.clean_env || !spec.env_remove.is_empty() || !spec.env.is_empty();
        if !changed {
            // Unchanged: the relay's own, in its order.
            return std::env::vars_os().collect();
        }
        let mut env = std::collections::BTreeMap::new();
        if spec.clean_env {
            if let Some(path) = std::env::var_os("PATH") {
                env.insert(OsString::from("PATH"), path);
            }
        } else {
            env.extend(std::env::vars_os());
        }
        for k in &spec.env_remove {
            env.remove(k);
        }
        for (k, v) in &spec.env {
            env.insert(k.clone(), v.clone());
        }
        env.into_iter().collect()
    }

    /// The files `execvp` would try for `program`: the program itself if it names a path
    /// (has a slash), else `DIR/program` for each directory of `PATH` in order (an empty one
    /// meaning the working directory).
    fn candidates(program: &[u8], path: Option<&OsStr>) -> io::Result<Vec<CString>> {
        if program.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        if program.contains(&b'/') {
            return Ok(vec![cstring(program)?]);
        }
        let program = cstring(program)?;
        let path = path.map_or(DEFAULT_PATH, |p| p.as_bytes());
        let mut files = Vec::new();
        for dir in path.split(|b| *b == b':') {
            if dir.is_empty() {
                files.push(program.clone());
                continue;
            }
            let mut file = Vec::with_capacity(dir.len() + 1 + program.as_bytes().len());
            file.extend_from_slice(dir);
            file.push(b'/');
            file.extend_from_slice(program.as_bytes());
            // A directory with a nul byte names no file.
            if let Ok(file) = CString::new(file) {
                files.push(file);
            }
        }
        Ok(files)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::process::CommandSpec;
    use std::ffi::OsString;
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    fn spec(program: &str, args: &[&str]) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            ..CommandSpec::default()
        }
    }

    /// Writes `input` to the child's stdin, closes it, and returns (stdout, stderr, status).
    fn run(spec: &CommandSpec, input: &[u8]) -> (String, String, ExitStatus) {
        let Spawned {
            mut child,
            stdin,
            stdout,
            stderr,
        } = spawn(spec).expect("spawn");
        let mut stdin = std::fs::File::from(stdin);
        stdin.write_all(input).expect("write stdin");
        drop(stdin);
        let err_reader = std::thread::spawn(move || {
            let mut err = String::new();
            std::fs::File::from(stderr)
                .read_to_string(&mut err)
                .expect("read stderr");
            err
        });
        let mut out = String::new();
        std::fs::File::from(stdout)
            .read_to_string(&mut out)
            .expect("read stdout");
        let err = err_reader.join().expect("stderr reader");
        (out, err, child.wait().expect("wait"))
    }

    /// A fresh directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mcp-relay-spawn-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn write_file(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).expect("write file");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn pipes_env_args_and_cwd_reach_the_child() {
        let mut s = spec(
            "sh",
            &[
                "-c",
                "echo \"$FOO $1\"; pwd; echo oops >&2; cat; exit 3",
                "sh",
                "arg one",
            ],
        );
        s.env.push(("FOO".into(), "bar".into()));
        s.cwd = Some("/".into());
        let (out, err, status) = run(&s, b"from stdin");
        assert_eq!(out, "bar arg one\n/\nfrom stdin");
        assert_eq!(err, "oops\n");
        assert_eq!(status.code(), Some(3));
    }

    #[test]
    fn clean_env_keeps_only_path_and_env_remove_removes() {
        let mut s = spec("env", &[]);
        s.clean_env = true;
        s.env.push(("ADDED".into(), "1".into()));
        let (out, _, status) = run(&s, b"");
        assert!(status.success());
        let mut names: Vec<&str> = out.lines().filter_map(|l| l.split('=').next()).collect();
        names.sort_unstable();
        let expected: &[&str] = if std::env::var_os("PATH").is_some() {
            &["ADDED", "PATH"]
        } else {
            &["ADDED"]
        };
        assert_eq!(names, expected);

        // A variable of ours (other than PATH, which `env` is found by) is not inherited.
        let (name, _) = std::env::vars_os()
            .find(|(k, _)| k != "PATH")
            .expect("the test runs with some variable besides PATH");
        let mut s = spec("env", &[]);
        s.env_remove.push(name.clone());
        let (out, _, _) = run(&s, b"");
        let prefix = format!("{}=", name.to_string_lossy());
        assert!(out.contains("PATH="), "{out}");
        assert!(!out.lines().any(|l| l.starts_with(&prefix)), "{out}");
    }

    #[test]
    fn missing_program_is_not_found() {
        let e = spawn(&spec("no-such-program-mcp-relay-spawn", &[]))
            .err()
            .expect("fails");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let e = spawn(&spec("/no/such/dir/program", &[]))
            .err()
            .expect("fails");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let mut s = spec("true", &[]);
        s.cwd = Some("/no/such/dir".into());
        let e = spawn(&s).err().expect("fails");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let e = spawn(&spec("sh", &["nul\0byte"])).err().expect("fails");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn program_without_execute_permission_is_permission_denied() {
        let dir = scratch("noexec");
        let file = dir.join("server");
        write_file(&file, "#!/bin/sh\necho hi\n", 0o644);
        let e = spawn(&spec(file.to_str().expect("utf-8 path"), &[]))
            .err()
            .expect("fails");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        // Looked up in PATH: found but not executable is reported as such.
        let mut s = spec("server", &[]);
        s.env.push(("PATH".into(), dir.clone().into_os_string()));
        let e = spawn(&s).err().expect("fails");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn program_is_looked_up_in_the_childs_path_and_scripts_run_with_sh() {
        let dir = scratch("path");
        let empty = scratch("path-empty");
        // No `#!`: execve says ENOEXEC, and /bin/sh runs it, as execvp does.
        write_file(
            &dir.join("mcp-relay-spawn-tool"),
            "echo tool ran \"$1\"\n",
            0o755,
        );
        let mut s = spec("mcp-relay-spawn-tool", &["x"]);
        let path = format!("{}:{}", empty.display(), dir.display());
        s.env.push(("PATH".into(), path.into()));
        let (out, _, status) = run(&s, b"");
        assert_eq!(out, "tool ran x\n");
        assert!(status.success());
        // Not in the relay's own PATH.
        let e = spawn(&spec("mcp-relay-spawn-tool", &[]))
            .err()
            .expect("fails");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(empty);
    }

    #[test]
    fn child_has_its_own_group_default_sigpipe_and_our_mask() {
        // What the program exec'd gets (a shell would show its own changes to the mask).
        let (status_text, _, status) = run(&spec("cat", &["/proc/self/status"]), b"");
        assert!(status.success(), "{status_text}");
        let field = |name: &str| -> u64 {
            let line = status_text
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {status_text}"));
            u64::from_str_radix(line.split_whitespace().nth(1).expect("a value"), 16)
                .expect("hex mask")
        };
        // SIGPIPE (13) is ignored in Rust programs, but not in their children.
        assert_eq!(
            field("SigIgn") & (1 << (libc::SIGPIPE - 1)),
            0,
            "{status_text}"
        );
        // The test thread's mask (nothing blocked) and not the all-blocked one of the clone.
        assert_eq!(field("SigBlk"), 0, "{status_text}");
        let (stat, _, _) = run(&spec("cat", &["/proc/self/stat"]), b"");
        // `pid (comm) state ppid pgrp …`
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("stat has a comm")
            .1
            .split_whitespace()
            .collect();
        let pid = stat.split_whitespace().next().expect("a pid");
        assert_eq!(fields[2], pid, "the child leads its own group: {stat}");
    }

    #[test]
    fn child_dies_with_the_thread_that_started_it() {
        let (tx, rx) = std::sync::mpsc::channel();
        let starter = std::thread::spawn(move || {
            let spawned = spawn(&spec("sleep", &["30"])).expect("spawn");
            tx.send(spawned).expect("send");
            // The thread ends here: the death signal goes to the child.
        });
        let mut spawned = rx.recv().expect("the child");
        starter.join().expect("starter thread");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = spawned.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = spawned.child.kill();
                let _ = spawned.child.wait();
                panic!("the child outlived the thread that started it");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn handle_kills_waits_and_is_idempotent_after_reaping() {
        let Spawned { mut child, .. } = spawn(&spec("sleep", &["30"])).expect("spawn");
        assert!(child.try_wait().expect("try_wait").is_none());
        child.kill().expect("kill");
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Reaped: kill does nothing, and the status stays.
        child.kill().expect("kill after reaping");
        assert_eq!(child.try_wait().expect("try_wait"), Some(status));
    }

    /// Raises the soft limit on descriptors to the hard one; the limit now.
    fn raise_nofile_limit() -> u64 {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write the struct we own.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur
    }

    /// Everything `fd` gives until EOF, or None if that takes longer than 10 s (someone else
    /// still holds the pipe's write end).
    fn read_until_eof(fd: std::os::fd::OwnedFd) -> Option<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let read = std::fs::File::from(fd).read_to_string(&mut text);
            let _ = tx.send(read.map(|_| text));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .ok()
            .map(|read| read.expect("read"))
    }

    #[test]
    fn the_child_gets_none_of_our_many_descriptors_and_we_keep_none_of_its_pipe_ends() {
        let limit = raise_nofile_limit();
        assert!(
            limit >= 2_200,
            "the test needs 2,200 descriptors, the limit is {limit}"
        );
        // The slots below the ballast, as the relay takes them when its spawner starts.
        linux::prepare();
        // A file of its own, so that the child's listing names it if it got any of them.
        let dir = scratch("ballast");
        let ballast_file = dir.join("ballast");
        write_file(&ballast_file, "", 0o644);
        let ballast: Vec<std::fs::File> = (0..2_000)
            .map(|_| std::fs::File::open(&ballast_file).expect("open"))
            .collect();
        // Both ways a child can get its table: sharing ours and unsharing the low part (where
        // the kernel has close_range), and a copy of the whole (where it has not).
        for copy_table in [false, true] {
            let Spawned {
                mut child,
                stdin,
                stdout,
                stderr,
            } = linux::spawn_with(&spec("ls", &["-l", "/proc/self/fd/"]), copy_table)
                .expect("spawn");
            drop(stdin);
            let listing = read_until_eof(stdout).expect("ls exits");
            let err = read_until_eof(stderr);
            let status = child.wait().expect("wait");
            assert!(
                status.success(),
                "copy_table {copy_table}: {status:?} {err:?}"
            );
            // `lr-x------ 1 user group 64 date N -> target`, after a `total` line.
            let fds: Vec<(i32, &str)> = listing
                .lines()
                .filter_map(|l| l.split_once(" -> "))
                .filter_map(|(left, target)| {
                    let fd = left.rsplit(' ').next()?.parse().ok()?;
                    Some((fd, target))
                })
                .collect();
            // Its stdin, stdout and stderr (pipes) and the directory `ls` reads: nothing of
            // ours, not the ballast, not what we were given without close-on-exec.
            for fd in 0..3 {
                assert!(
                    fds.iter().any(|(n, t)| *n == fd && t.starts_with("pipe:")),
                    "copy_table {copy_table}: {listing}"
                );
            }
            assert!(
                !listing.contains("ballast"),
                "copy_table {copy_table}: {listing}"
            );
            assert!(
                fds.iter().all(|(n, _)| *n <= 3),
                "copy_table {copy_table}: {listing}"
            );

            // Once the child has exited its stdout and stderr are at EOF (we hold no write end
            // of them) and its stdin has no reader left (we hold no read end).
            let Spawned {
                mut child,
                stdin,
                stdout,
                stderr,
            } = linux::spawn_with(&spec("sh", &["-c", "echo out; echo err >&2"]), copy_table)
                .expect("spawn");
            assert_eq!(read_until_eof(stdout).as_deref(), Some("out\n"));
            assert_eq!(read_until_eof(stderr).as_deref(), Some("err\n"));
            assert!(child.wait().expect("wait").success());
            // SIGPIPE is ignored in the test process: the write fails instead. (Retried: a
            // child another test starts meanwhile may hold a copy of the read end until its
            // exec.)
            let mut stdin = std::fs::File::from(stdin);
            let deadline = Instant::now() + Duration::from_secs(10);
            let e = loop {
                match stdin.write_all(b"x") {
                    Err(e) => break e,
                    Ok(()) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(()) => {
                        panic!("copy_table {copy_table}: the child's stdin still has a reader")
                    }
                }
            };
            assert_eq!(
                e.kind(),
                io::ErrorKind::BrokenPipe,
                "copy_table {copy_table}"
            );
        }
        drop(ballast);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// How long N starts take with std's fork path (a `pre_exec` closure, as the relay had),
    /// std's posix_spawn path (no closure: no death signal), and [`spawn`] (sharing our
    /// descriptor table until the child unshares the low part of it, or with a copy of the
    /// whole table, as where close_range is missing), with and without a relay's worth of
    /// descriptors and memory.
    ///
    /// `cargo test --release -p mcp-relay-runtime --lib spawn_cost -- --ignored --nocapture`
    /// (MCP_RELAY_BIN=path/to/mcp-relay adds its demo server; SPAWN_COST_N sets N).
    #[test]
    #[ignore = "a benchmark, run by hand"]
    fn spawn_cost() {
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};

        let n: usize = std::env::var("SPAWN_COST_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(300);
        let mut programs = vec![("/bin/true", spec("/bin/true", &[]))];
        if let Some(bin) = std::env::var_os("MCP_RELAY_BIN") {
            let bin = bin.into_string().expect("utf-8 path");
            let s = spec(&bin, &["demo-server"]);
            programs.push(("demo-server", s));
        }
        fn std_spawn(s: &CommandSpec, pdeathsig: bool) -> (Duration, Duration) {
            let t0 = Instant::now();
            let mut cmd = Command::new(&s.program);
            cmd.args(&s.args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            if pdeathsig {
                // SAFETY: prctl is async-signal-safe (as the relay had it).
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                            return Err(io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            let mut child = cmd.spawn().expect("spawn");
            let started = t0.elapsed();
            drop(child.stdin.take());
            child.wait().expect("wait");
            (started, t0.elapsed())
        }
        fn clone_spawn(s: &CommandSpec, copy_table: bool) -> (Duration, Duration) {
            let t0 = Instant::now();
            let Spawned {
                mut child, stdin, ..
            } = linux::spawn_with(s, copy_table).expect("spawn");
            let started = t0.elapsed();
            drop(stdin);
            child.wait().expect("wait");
            (started, t0.elapsed())
        }
        fn median(mut v: Vec<Duration>) -> f64 {
            v.sort_unstable();
            v[v.len() / 2].as_secs_f64() * 1e6
        }
        let methods = [
            "fork (pre_exec)",
            "posix_spawn",
            "clone (copy fds)",
            "clone (unshare)",
        ];
        let mut ballast_files = Vec::new();
        let mut ballast_heap: Vec<Vec<u8>> = Vec::new();
        for load in ["0 extra fds", "4000 extra fds + 100 MiB heap"] {
            if !ballast_files.is_empty() || load.starts_with('0') {
                // first round: nothing extra
            } else {
                raise_nofile_limit();
                for _ in 0..4000 {
                    ballast_files.push(std::fs::File::open("/dev/null").expect("open"));
                }
                // 100 MiB in 1 MiB buffers, every page touched.
                for _ in 0..100 {
                    ballast_heap.push(vec![1u8; 1 << 20]);
                }
            }
            for (name, s) in &programs {
                let mut starts: Vec<Vec<Duration>> = vec![Vec::new(); methods.len()];
                let mut totals: Vec<Vec<Duration>> = vec![Vec::new(); methods.len()];
                for _ in 0..n {
                    for (m, (start, total)) in [
                        std_spawn(s, true),
                        std_spawn(s, false),
                        clone_spawn(s, true),
                        clone_spawn(s, false),
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        starts[m].push(start);
                        totals[m].push(total);
                    }
                }
                for m in 0..methods.len() {
                    println!(
                        "{load:30} {name:12} {:16} spawn {:8.1} us   spawn+wait {:8.1} us",
                        methods[m],
                        median(starts[m].clone()),
                        median(totals[m].clone()),
                    );
                }
            }
        }
        std::hint::black_box(&ballast_heap);
    }
}
