//! cgroup v2 directories: a server inside one can be counted (CPU of every
//! process that ever ran in it, orphans included) and killed whole, and its
//! sockets are the ones a cgroup-attached eBPF program (sock_ops) sees.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

/// Where the privileged tests and the flood mount cgroup2 when the system has
/// not (a container without systemd).
const OWN_MOUNT: &str = "/run/ftpd/cgroup2";

/// A cgroup v2 directory, emptied (killed) and removed on drop.
pub struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// Where cgroup2 is mounted (`/sys/fs/cgroup`, or `.../unified` on a
    /// hybrid system), if it is.
    pub fn mount_point() -> Option<PathBuf> {
        let out = Command::new("findmnt").args(["-n", "-t", "cgroup2", "-o", "TARGET"]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().next().map(|l| PathBuf::from(l.trim())).filter(|p| p.is_dir())
    }

    /// [`Cgroup::mount_point`], or a cgroup2 mounted now under /run/ftpd.
    ///
    /// # Errors
    /// The mount failed (it needs CAP_SYS_ADMIN).
    pub fn mount_point_or_mount() -> io::Result<PathBuf> {
        if let Some(m) = Self::mount_point() {
            return Ok(m);
        }
        let m = PathBuf::from(OWN_MOUNT);
        fs::create_dir_all(&m)?;
        let status = Command::new("mount").args(["-t", "cgroup2", "cgroup2"]).arg(&m).status()?;
        if !status.success() {
            return Err(io::Error::other(format!("mount -t cgroup2 cgroup2 {OWN_MOUNT}: {status}")));
        }
        Ok(m)
    }

    /// A new, empty cgroup `PREFIX<pid>-<name>-<n>` under `mount`. Empty
    /// cgroups with the same prefix left by runs that were killed are
    /// removed first.
    ///
    /// # Errors
    /// The directory cannot be created (a read-only hierarchy).
    pub fn create_in(mount: &Path, prefix: &str, name: &str) -> io::Result<Self> {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        remove_stale(mount, prefix);
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let dir = mount.join(format!("{prefix}{}-{name}-{n}", std::process::id()));
        fs::create_dir(&dir)?;
        Ok(Self { dir })
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A `sh -c` script that moves the shell into this cgroup, then execs
    /// its arguments (`"$0" "$@"`) in network namespace `netns` with
    /// `nsenter` (`ip netns exec` would hide /sys/fs/cgroup).
    pub fn enter_netns_script(&self, netns: &str) -> String {
        format!("echo $$ > {}/cgroup.procs && exec nsenter --net=/run/netns/{netns} \"$0\" \"$@\"", self.dir.display())
    }

    /// `cgroup.procs`, opened for a child to write "0" into between fork
    /// and exec, so that it and everything it forks is inside from its
    /// first instruction.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn procs_file(&self) -> io::Result<fs::File> {
        fs::File::options().write(true).open(self.dir.join("cgroup.procs"))
    }

    /// CPU seconds (user + system) used by every task that ever ran in it.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        let usec: f64 = stat.lines().find_map(|l| l.strip_prefix("usage_usec "))?.trim().parse().ok()?;
        Some(usec / 1e6)
    }

    /// The processes in it now.
    pub fn pids(&self) -> Vec<u32> {
        let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        procs.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    /// Kills every process in it (`cgroup.kill`, Linux 5.14), orphans included.
    pub fn kill(&self) {
        if let Ok(mut f) = fs::File::options().write(true).open(self.dir.join("cgroup.kill")) {
            let _ = f.write_all(b"1");
        } else {
            for p in self.pids() {
                if let Ok(p) = libc::pid_t::try_from(p) {
                    // SAFETY: kill(2) on a process in our own cgroup; no memory is passed.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
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
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

/// Removes empty cgroups named `PREFIX<pid>-...` whose process is gone.
fn remove_stale(mount: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(mount) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let owner = name.strip_prefix(prefix).and_then(|r| r.split('-').next()).and_then(|p| p.parse().ok());
        if owner.is_some_and(|pid: u32| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = fs::remove_dir(e.path());
        }
    }
}
