//! The machine: CPU affinity, file-descriptor limit, `/proc` readings, CPU accounting, and the
//! date and hardware line of the report. Linux only (the relay's targets are measured there).

use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A set of CPU numbers for `sched_setaffinity`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuSet(pub Vec<usize>);

impl CpuSet {
    fn to_libc(&self) -> libc::cpu_set_t {
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in &self.0 {
            // SAFETY: CPU_SET writes one bit of `set`; `cpu` is below CPU_SETSIZE (checked by
            // `allowed_cpus`, which is where every number comes from).
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        set
    }

    /// Applies the set to the thread `tid` (0: the calling thread). Threads and processes
    /// created afterwards by that thread inherit it.
    pub fn apply(&self, tid: libc::pid_t) -> io::Result<()> {
        let set = self.to_libc();
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let rc =
            unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl std::fmt::Display for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.0.iter().map(usize::to_string).collect();
        write!(f, "{}", names.join(","))
    }
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: all zeroes is a valid (empty) cpu_set_t; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Where the load generator and the server side (the relay and its children, or the directly
/// spawned servers) run.
#[derive(Clone, Debug)]
pub struct Pinning {
    pub generator: CpuSet,
    pub server: CpuSet,
}

/// Splits the allowed CPUs: the first for the load generator, the rest for the server side.
/// `None` when fewer than two CPUs are available (then nothing is pinned).
pub fn plan_pinning() -> Option<Pinning> {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        return None;
    }
    Some(Pinning {
        generator: CpuSet(vec![cpus[0]]),
        server: CpuSet(cpus[1..].to_vec()),
    })
}

/// Raises the soft RLIMIT_NOFILE toward `want` (at most the hard limit); children inherit
/// it. Returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let target = want.min(lim.rlim_max);
    if lim.rlim_cur < target {
        let new = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `new` is a valid rlimit; raising the soft limit up to the hard one is
        // allowed without privileges.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            return target;
        }
    }
    lim.rlim_cur
}

/// A field of `/proc/<pid>/status` given in kB (`VmHWM`, `VmRSS`), in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// A plain number field of `/proc/<pid>/status` (`Threads`).
pub fn proc_status_value(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .parse()
            .ok()
    })
}

/// How [`cpu_time`] read a process's CPU time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSource {
    /// The run time of its threads, `/proc/<pid>/task/*/schedstat` (nanoseconds).
    Schedstat,
    /// utime + stime, `/proc/<pid>/stat` fields 14 and 15 (clock ticks).
    Stat,
}

/// CPU time used so far by the process `pid` itself, all its threads, not its children: the
/// sum of its live threads' run times where the kernel keeps them (exact), else utime +
/// stime (in clock ticks, usually 10 ms).
pub fn cpu_time(pid: u32) -> Option<(Duration, CpuSource)> {
    let schedstat = || -> Option<u64> {
        let mut ns = 0u64;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(ns)
    };
    if let Some(ns) = schedstat().filter(|ns| *ns > 0) {
        return Some((Duration::from_nanos(ns), CpuSource::Schedstat));
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, which may hold spaces) come fields 3 onwards.
    let fields: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        hz if hz > 0 => hz as f64,
        _ => 100.0,
    };
    Some((Duration::from_secs_f64(ticks as f64 / hz), CpuSource::Stat))
}

/// Number of live child processes of `pid` (over all its threads), from
/// `/proc/<pid>/task/*/children`. `None` if the kernel does not provide that file.
pub fn child_count(pid: u32) -> Option<usize> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut n = 0;
    let mut seen = false;
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            seen = true;
            n += text.split_whitespace().count();
        }
    }
    seen.then_some(n)
}

/// Waits until `pid` has at most `n` children, up to `timeout`. False on timeout (or when the
/// count cannot be read, after a short pause).
pub fn wait_children_at_most(pid: u32, n: usize, timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        match child_count(pid) {
            Some(c) if c <= n => return true,
            None => {
                std::thread::sleep(Duration::from_millis(20));
                return false;
            }
            Some(_) => {}
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// CPU time the whole machine spent busy, and what this process and its reaped descendants
/// used, to tell how much of the machine other work took during a run.
pub struct CpuAccount {
    machine_busy: f64,
    ours: f64,
    at: Instant,
}

fn machine_busy_secs() -> f64 {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = text.lines().next() else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal ...
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return 0.0;
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    busy / hz
}

fn rusage_secs(who: libc::c_int) -> f64 {
    // SAFETY: all zeroes is a valid rusage; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn our_cpu_secs() -> f64 {
    rusage_secs(libc::RUSAGE_SELF) + rusage_secs(libc::RUSAGE_CHILDREN)
}

impl CpuAccount {
    pub fn start() -> Self {
        CpuAccount {
            machine_busy: machine_busy_secs(),
            ours: our_cpu_secs(),
            at: Instant::now(),
        }
    }

    /// (CPU seconds used by others, the share of the machine that is, wall seconds).
    /// Descendants count as ours once reaped, so call this after every child was waited for.
    pub fn others(&self) -> (f64, f64, f64) {
        let wall = self.at.elapsed().as_secs_f64();
        let busy = machine_busy_secs() - self.machine_busy;
        let ours = our_cpu_secs() - self.ours;
        let others = (busy - ours).max(0.0);
        let ncpu = online_cpus().max(1) as f64;
        (others, others / (wall * ncpu).max(1e-9), wall)
    }
}

pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1)
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `nproc`, the CPU model, memory and kernel, on one line.
pub fn description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                let kib: u64 = l
                    .strip_prefix("MemTotal:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(format!("{:.1} GiB RAM", kib as f64 / 1024.0 / 1024.0))
            })
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("nproc {}, {model}, {mem}, Linux {kernel}", online_cpus())
}

/// The current UTC date and time, `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Runs the program `cmd` starts on `cpus` (if any) and has it killed when the thread that
/// starts it exits (PR_SET_PDEATHSIG), so that nothing outlives an interrupted benchmark.
pub fn pinned_and_tied(cmd: &mut std::process::Command, cpus: Option<&CpuSet>) {
    use std::os::unix::process::CommandExt;
    let cpus = cpus.cloned();
    // SAFETY: runs in the forked child before exec and only calls sched_setaffinity and
    // prctl, which are async-signal-safe; `cpus` was cloned before the fork and building the
    // cpu_set_t from it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(cpus) = &cpus {
                cpus.apply(0)?;
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
