//! What a server costs: CPU time, memory and open files of every process it
//! runs, read from its own cgroup (v2) and /proc.
//!
//! vsftpd forks two processes per session and ftpd a front and workers, so a
//! number for the top process alone would flatter vsftpd's listener and miss
//! ftpd's workers. Each server runs in a cgroup of its own because walking
//! the process tree loses time: when a vsftpd session's parent exits before
//! reaping its child, the child is re-parented to init and its CPU time goes
//! to init's `cutime` (a download once showed vsftpd at 0.01 CPU-s/GiB). A
//! cgroup's `cpu.stat` counts every task that ever ran in it. Without a
//! cgroup2 mount the tree walk is the fallback.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context, Result};

/// Clock ticks per second of the /proc/PID/stat times (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;
/// Prefix of this benchmark's cgroups (the flood uses `ftpd-bench-`).
const CGROUP_PREFIX: &str = "xtask-bench-";

/// A cgroup v2 directory holding one server; removed on drop.
pub(super) struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// A new, empty cgroup named after `name`, or `None` when this system has
    /// no writable cgroup2 hierarchy.
    pub(super) fn create(name: &str) -> Option<Self> {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let mount = cgroup2_mount()?;
        remove_stale(&mount);
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let dir = mount.join(format!("{CGROUP_PREFIX}{}-{name}-{n}", std::process::id()));
        fs::create_dir(&dir).ok()?;
        Some(Self { dir })
    }

    /// `cgroup.procs`, opened for the child to write "0" into between fork
    /// and exec (see `Server::start`), so that the server and everything it
    /// forks is inside from its first instruction.
    pub(super) fn procs_file(&self) -> Result<fs::File> {
        let path = self.dir.join("cgroup.procs");
        fs::File::options().write(true).open(&path).with_context(|| format!("opening {}", path.display()))
    }

    /// CPU seconds (user + system) used by every task that ever ran in it.
    pub(super) fn cpu_seconds(&self) -> Option<f64> {
        let stat = fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        let usec: f64 = stat.lines().find_map(|l| l.strip_prefix("usage_usec "))?.trim().parse().ok()?;
        Some(usec / 1e6)
    }

    /// The processes in it now.
    pub(super) fn pids(&self) -> Vec<u32> {
        let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        procs.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    /// Kills every process in it (`cgroup.kill`, Linux 5.14), orphans included.
    pub(super) fn kill(&self) {
        if let Ok(mut f) = fs::File::options().write(true).open(self.dir.join("cgroup.kill")) {
            let _ = f.write_all(b"1");
        } else {
            for p in self.pids() {
                signal(p, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // rmdir fails while killed tasks are still exiting.
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            self.kill();
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!("[bench] warning: could not remove {}", self.dir.display());
    }
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup`, or `.../unified` on a hybrid
/// system).
fn cgroup2_mount() -> Option<PathBuf> {
    let out = Command::new("findmnt").args(["-n", "-t", "cgroup2", "-o", "TARGET"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| PathBuf::from(l.trim())).filter(|p| p.is_dir())
}

/// Removes empty cgroups left by earlier runs that were killed.
fn remove_stale(mount: &Path) {
    let Ok(entries) = fs::read_dir(mount) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let owner = name.strip_prefix(CGROUP_PREFIX).and_then(|r| r.split('-').next()).and_then(|p| p.parse().ok());
        if owner.is_some_and(|pid: u32| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = fs::remove_dir(e.path());
        }
    }
}

/// `pid` and all its live descendants, parents before children.
///
/// Children are listed per thread (`task/TID/children`), and ftpd forks from
/// whichever runtime thread handles the login, so every thread is read.
pub(super) fn tree(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if !fs::exists(format!("/proc/{p}")).unwrap_or(false) {
            continue;
        }
        out.push(p);
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for task in tasks.flatten() {
            let kids = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            todo.extend(kids.split_whitespace().filter_map(|k| k.parse::<u32>().ok()));
        }
    }
    out
}

/// Fields of /proc/PID/stat after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Vec<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    rest.split(' ').map(|v| v.parse().unwrap_or(0.0)).collect()
}

/// CPU seconds (user + system) used so far by `pid`'s tree: every live
/// process's own time plus the time of the children each has reaped. The
/// fallback without a cgroup: it misses orphans reaped by init.
pub(super) fn tree_cpu_seconds(pid: u32) -> f64 {
    tree(pid)
        .into_iter()
        .map(|p| {
            let f = stat_fields(p);
            // utime, stime, cutime, cstime are fields 14-17 of stat(5), 11-14 here.
            f.iter().skip(11).take(4).sum::<f64>() / TICKS
        })
        .sum()
}

/// Memory of a set of processes, in KiB.
#[derive(Clone, Copy, Default)]
pub(super) struct Memory {
    /// Sum of resident set sizes: shared pages count once per process.
    pub(super) rss_kib: f64,
    /// Sum of proportional set sizes: shared pages split between sharers, so
    /// vsftpd's forked sessions are not charged for the binary 20 000 times.
    pub(super) pss_kib: f64,
    /// Processes.
    pub(super) procs: usize,
    /// Open file descriptors.
    pub(super) fds: usize,
}

/// Memory, process count and open files of `pids`.
pub(super) fn memory(pids: &[u32]) -> Memory {
    let page_kib = page_size() as f64 / 1024.0;
    let mut m = Memory::default();
    for p in pids {
        m.procs += 1;
        let statm = fs::read_to_string(format!("/proc/{p}/statm")).unwrap_or_default();
        let pages: f64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        m.rss_kib += pages * page_kib;
        let rollup = fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        m.pss_kib += rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        m.fds += open_files(*p);
    }
    m
}

/// Open file descriptors of `pid`.
pub(super) fn open_files(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a constant of the running system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(p) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a pid of a process we started or one of its
        // descendants; no memory is passed.
        unsafe { libc::kill(p, sig) };
    }
}

/// Stops `pid` and everything it forked: SIGTERM to the tree and its process
/// group, up to two seconds' grace, then SIGKILL to whatever is left.
///
/// The tree is listed before the first signal because once the top process
/// dies its children are re-parented to init and no longer findable from it.
/// Servers are started as process-group leaders, so the group catches
/// children that were forked between the listing and the signal.
pub(super) fn kill_tree(pid: u32) {
    let pids = tree(pid);
    let signal_all = |sig| {
        // The group id is the leader's pid; a negative pid signals the group.
        if let Ok(group) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) on the process group we created; no memory is passed.
            unsafe { libc::kill(-group, sig) };
        }
        for p in &pids {
            signal(*p, sig);
        }
    };
    signal_all(libc::SIGTERM);
    for _ in 0..20 {
        if pids.iter().all(|p| !alive(*p)) {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    signal_all(libc::SIGKILL);
}

/// Whether `pid` still runs (a zombie does not).
pub(super) fn alive(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}
