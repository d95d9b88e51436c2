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

use std::{fs, thread, time::Duration};

pub(super) use ftpd_testkit::{Cgroup, alive, process_tree as tree};

/// Clock ticks per second of the /proc/PID/stat times (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;
/// Prefix of this benchmark's cgroups (the flood uses `ftpd-bench-`).
const CGROUP_PREFIX: &str = "xtask-bench-";

/// A new, empty cgroup for server `name`, or `None` when this system has
/// no writable cgroup2 hierarchy.
pub(super) fn cgroup(name: &str) -> Option<Cgroup> {
    Cgroup::create_in(&Cgroup::mount_point()?, CGROUP_PREFIX, name).ok()
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
