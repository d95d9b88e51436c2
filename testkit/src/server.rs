//! Starting the real `ftpd` binary: where it is, on which port and data
//! plane, and a [`Server`] that is stopped (and its log shown, if the test
//! failed) on drop.
//!
//! The binary comes from `FTPD_BIN` (set by `cargo xtask test`), else from the
//! workspace's `target/release` or `target/debug`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    Ftp,
    process::{alive, process_tree},
    run_ok,
};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testkit/ is inside the workspace").to_path_buf()
}

/// Path of the `ftpd` binary under test.
pub fn ftpd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FTPD_BIN") {
        return PathBuf::from(p);
    }
    for profile in ["release", "debug"] {
        let p = workspace().join("target").join(profile).join("ftpd");
        if p.is_file() {
            return p;
        }
    }
    panic!("no ftpd binary: run `cargo xtask test`, or build it and set FTPD_BIN");
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

/// A port on `ip` that was free a moment ago.
pub fn free_port_on(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

/// The first of `width` passive ports for a test server whose control port
/// is `port`: spread by the control port so that servers running side by
/// side rarely share a range, and always below the first ephemeral port
/// (`ip_local_port_range`). Control ports come from there, and so do the
/// local ports of every test's client connections: a port one of those
/// holds cannot be bound, and a range of the embedded default's 100 ports
/// inside the ephemeral range, shared by every test server at once, ran
/// out under a busy test run (rclone: `425 Failed to enter passive mode`).
fn passive_base(port: u16, width: u32) -> u32 {
    let first_ephemeral = u32::from(ephemeral_ports().unwrap_or_else(|e| panic!("{e}")).0);
    let ranges = first_ephemeral.saturating_sub(20_000) / width;
    assert!(
        ranges >= 100,
        "the ephemeral ports start at {first_ephemeral}: no room for test passive ranges from 20000"
    );
    20_000 + u32::from(port) % ranges * width
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`),
/// read once: where `free_port` and every client connection's local port
/// come from, and so where no test passive range may lie.
///
/// # Errors
/// The file is unreadable or not two ports.
pub fn ephemeral_ports() -> Result<(u16, u16), String> {
    static RANGE: std::sync::OnceLock<Result<(u16, u16), String>> = std::sync::OnceLock::new();
    RANGE
        .get_or_init(|| {
            let path = "/proc/sys/net/ipv4/ip_local_port_range";
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            let ports: Vec<u16> = text
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{path}: {text:?}: {e}"))?;
            match ports[..] {
                [low, high] => Ok((low, high)),
                _ => Err(format!("{path}: {text:?} is not two ports")),
            }
        })
        .clone()
}

/// Where a server started by [`Server::launch`] listens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Listen {
    /// 127.0.0.1 (the embedded default's `listen_address`).
    #[default]
    V4Loopback,
    /// `listen_ipv6=YES listen_address6=::1`; clients connect to `[::1]`.
    V6Loopback,
    /// `listen_ipv6=YES listen_address6=::` (dual stack); clients connect to
    /// 127.0.0.1 and arrive as v4-mapped addresses.
    DualStack,
}

/// How [`Server::launch`] starts ftpd, beyond the settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct Launch<'a> {
    /// A config file, passed as ftpd's positional argument instead of the
    /// embedded default (the `-o` settings still apply after it).
    pub config: Option<&'a Path>,
    /// Extra environment variables for the server process (e.g. `TZ`).
    pub env: &'a [(&'a str, &'a str)],
    /// Where to listen.
    pub listen: Listen,
}

/// A running `ftpd` process, killed on drop. Its stderr is kept for diagnostics.
pub struct Server {
    child: Option<Child>,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The served directory.
    pub root: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts ftpd on 127.0.0.1 with the embedded default config, serving
    /// `root`, with `settings` (`name=value`) applied on top. The kernel data
    /// plane is off unless a setting turns it on: tests on the host's `lo` must
    /// not fight over its single XDP slot.
    pub fn start(root: &Path, settings: &[&str]) -> Self {
        Self::launch(root, settings, &Launch::default())
    }

    /// Like [`Server::start`], with a config file, environment variables or
    /// another listening address (see [`Launch`]).
    pub fn launch(root: &Path, settings: &[&str], how: &Launch<'_>) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let (port, connect_ip, listen): (u16, IpAddr, &[&str]) = match how.listen {
                Listen::V4Loopback => (free_port(), Ipv4Addr::LOCALHOST.into(), &[]),
                Listen::V6Loopback => (
                    free_port_on(Ipv6Addr::LOCALHOST.into()),
                    Ipv6Addr::LOCALHOST.into(),
                    &["listen_ipv6=YES", "listen_address6=::1"],
                ),
                Listen::DualStack => (
                    free_port_on(Ipv6Addr::UNSPECIFIED.into()),
                    Ipv4Addr::LOCALHOST.into(),
                    &["listen_ipv6=YES", "listen_address6=::"],
                ),
            };
            let mut all = Self::base_settings(port);
            let plane = std::env::var("FTPD_TEST_PLANE").unwrap_or_default();
            if plane.is_empty() {
                // Each server its own 100 ports (rclone alone runs 16
                // sessions from one address, which cannot share a port).
                let base = passive_base(port, 100);
                all.extend([format!("pasv_min_port={base}"), format!("pasv_max_port={}", base + 99)]);
            } else if plane == "kernel-defaults" {
                // The kernel plane under vsftpd's defaults: no passive port
                // range (any port; the embedded default has one), active
                // mode allowed.
                all[0] = "ftpd_ebpf=auto".into();
                all.extend(["pasv_min_port=0".into(), "pasv_max_port=0".into()]);
            } else if plane == "kernel" {
                // The protocol suites again, with the kernel data plane on `lo`
                // (serially: `lo` has one XDP slot; a second server at once
                // falls back to userspace, which `auto` allows).
                // Each server its own passive range: the kernel plane of one
                // server guards its whole range on `lo`, and must not stand
                // between another server and its clients. The ranges stay
                // below the ephemeral ports, where every test server's
                // control port comes from: a range over another server's
                // control port drops that server's clients.
                all[0] = "ftpd_ebpf=auto".into();
                let base = passive_base(port, 10);
                all.extend([format!("pasv_min_port={base}"), format!("pasv_max_port={}", base + 9)]);
            }
            if plane.starts_with("kernel") {
                // Only ever `lo`: a wildcard listener (dual stack) would
                // otherwise attach XDP to every interface of the machine.
                all.push("ftpd_xdp_interfaces=lo".into());
            }
            all.extend(listen.iter().map(|s| (*s).to_string()));
            all.extend(settings.iter().map(|s| (*s).to_string()));
            match Self::spawn_full(None, how, root, &all, SocketAddr::new(connect_ip, port)) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("ftpd did not start: {last}");
    }

    /// What every test server starts with on 127.0.0.1:`port`: the kernel
    /// plane off (tests on the host's `lo` must not fight over its single XDP
    /// slot) and no metrics endpoint (the embedded default serves metrics on
    /// 127.0.0.1:9121; parallel test servers must not fight for it).
    pub fn base_settings(port: u16) -> Vec<String> {
        vec!["ftpd_ebpf=off".to_string(), format!("listen_port={port}"), "ftpd_metrics_listen=".to_string()]
    }

    /// Starts ftpd on 127.0.0.1 behind `prefix` (e.g. `setpriv ...` or
    /// `taskset -c 0`), with [`Server::base_settings`] then `settings`, and
    /// never the kernel plane: a wrapped server is about how ftpd runs, not
    /// about the data plane. Retries on another port up to five times.
    pub fn start_wrapped(prefix: &[&str], root: &Path, settings: &[&str]) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut all = Self::base_settings(port);
            all.extend(settings.iter().map(|s| (*s).to_string()));
            match Self::spawn(Some(prefix), root, &all, SocketAddr::from(([127, 0, 0, 1], port))) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("ftpd ({prefix:?}) did not start: {last}");
    }

    /// Starts ftpd with `prefix` (e.g. `ip netns exec NS`) before the binary,
    /// listening on `addr`.
    pub fn spawn(prefix: Option<&[&str]>, root: &Path, settings: &[String], addr: SocketAddr) -> Result<Self, String> {
        Self::spawn_full(prefix, &Launch::default(), root, settings, addr)
    }

    fn spawn_full(
        prefix: Option<&[&str]>,
        how: &Launch<'_>,
        root: &Path,
        settings: &[String],
        addr: SocketAddr,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("ftpd.log");
        let logf = std::fs::File::create(&log).expect("create log");
        let mut cmd = match prefix {
            Some(p) => {
                let mut c = Command::new(p[0]);
                c.args(&p[1..]).arg(ftpd_bin());
                c
            }
            None => Command::new(ftpd_bin()),
        };
        if let Some(conf) = how.config {
            cmd.arg(conf);
        }
        cmd.arg("--root").arg(root);
        for s in settings {
            cmd.arg(format!("-o{s}"));
        }
        for (k, v) in how.env {
            cmd.env(k, v);
        }
        cmd.env("RUST_LOG", "debug").stdout(Stdio::null()).stderr(logf);
        // A test process that dies (killed, crashed) takes its servers along.
        // SAFETY: prctl with constant arguments, between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        let mut s = Self { child: Some(child), addr, root: root.to_path_buf(), log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("ftpd exited with {status}: {}", s.log()));
            }
            if s.log().contains("ftpd listening") {
                if std::env::var("FTPD_TEST_PLANE").is_ok_and(|p| p.starts_with("kernel")) {
                    let plane = if s.log().contains("eBPF data plane loaded") {
                        "kernel"
                    } else {
                        "userspace (lo's XDP slot is taken)"
                    };
                    let why = s.log().lines().find(|l| l.contains("eBPF")).unwrap_or_default().to_string();
                    eprintln!("[ftpd-tests] server on {} runs the {plane} data plane: {why}", s.addr);
                }
                return Ok(s);
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(format!("ftpd not listening after 10 s: {}", s.log()))
    }

    /// Whether this server runs the kernel data plane (see `FTPD_TEST_PLANE`).
    pub fn kernel_plane(&self) -> bool {
        self.log().contains("eBPF data plane loaded")
    }

    /// Whether XDP guards this server's passive ports (the kernel plane with
    /// a passive port range; without one any port may be used).
    pub fn kernel_pinholes(&self) -> bool {
        self.kernel_plane() && !self.log().contains("passive pinholes are not enforced in the kernel")
    }

    /// The server's process id (for fd and memory checks).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Open file descriptors of the server: the process started and its
    /// children (the front and the file workers, when ftpd runs as root).
    pub fn fd_count(&self) -> usize {
        self.pids()
            .iter()
            .map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).map(Iterator::count).unwrap_or(0))
            .sum()
    }

    /// The server's processes: the one started and all its descendants.
    pub fn pids(&self) -> Vec<u32> {
        process_tree(self.pid())
    }

    /// The file workers that still run: the server's processes started with
    /// `--ftpd-worker`. A dead one not yet reaped is left out, so tests that
    /// kill a worker can wait for its replacement.
    pub fn workers(&self) -> Vec<u32> {
        self.pids().into_iter().filter(|&p| is_worker(p) && alive(p)).collect()
    }

    /// The front: the running process below the master that is not a file
    /// worker. Only ftpd started as root has one; panics with the log when
    /// there is none.
    pub fn front(&self) -> u32 {
        let master = self.pid();
        self.pids()
            .into_iter()
            .find(|&p| p != master && !is_worker(p) && alive(p))
            .unwrap_or_else(|| panic!("no front process:\n{}", self.log()))
    }

    /// Threads named `name` in all the server's processes (e.g. `listing`,
    /// the producers of streamed listings).
    pub fn threads_named(&self, name: &str) -> usize {
        self.pids()
            .iter()
            .flat_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten())
            .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
            .count()
    }

    /// Sends SIGHUP (the master forwards it to the front): re-read the config.
    pub fn sighup(&self) {
        run_ok(Command::new("kill").arg("-HUP").arg(self.pid().to_string()));
    }

    /// Waits until the log holds `needle` at least `n` times; returns the log.
    /// Panics with the log after `limit`.
    pub fn wait_log(&self, needle: &str, n: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= n {
                return log;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the log:\n{log}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything ftpd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `ftp://host:port/` for curl (IPv6 hosts in brackets: give curl `-g`).
    pub fn url(&self, path: &str) -> String {
        format!("ftp://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Python lines that import ftplib and leave `f` logged in as anonymous.
    pub fn py_login(&self) -> String {
        format!(
            "import ftplib\nf = ftplib.FTP()\nf.connect({:?}, {}, timeout=30)\nf.login()\n",
            self.addr.ip().to_string(),
            self.addr.port()
        )
    }

    /// A raw control connection, greeting consumed.
    pub fn connect(&self) -> Ftp {
        let mut c = Ftp::connect(self.addr);
        let (code, _) = c.read_reply();
        assert_eq!(code, 220, "greeting");
        c
    }

    /// A raw control connection logged in as anonymous.
    pub fn login(&self) -> Ftp {
        let mut c = self.connect();
        c.cmd_ok("USER anonymous", 230);
        c
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, ...) to the process started.
    pub fn signal(&self, name: &str) {
        run_ok(Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()));
    }

    /// Waits up to `limit` for the process to exit; its status, or `None`
    /// if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits; returns the full log.
    pub fn stop(mut self) -> String {
        self.terminate();
        self.log()
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
        if thread::panicking() {
            eprintln!("---- ftpd log ----\n{}", self.log());
        }
    }
}

fn is_worker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(13).any(|w| w == b"--ftpd-worker"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_passive_range_covers_a_port_free_port_can_return() {
        let first_ephemeral = ephemeral_ports().expect("the ephemeral range").0;
        for width in [10, 100] {
            let ports = [0, 1, 20_000, 32_768, 36_851, 50_000, u16::MAX].into_iter().chain(first_ephemeral..=u16::MAX);
            for port in ports {
                let (base, last) = (passive_base(port, width), passive_base(port, width) + width - 1);
                assert!(base >= 1_024 && last < u32::from(first_ephemeral), "port {port}: range {base}-{last}");
            }
        }
    }
}
