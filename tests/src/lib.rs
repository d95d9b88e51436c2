//! Test harness: starts the real `ftpd` binary, speaks raw FTP, drives real
//! clients (curl, Python ftplib), and builds network namespaces for the
//! privileged eBPF tests.
//!
//! The binary comes from `FTPD_BIN` (set by `cargo xtask test`), else from the
//! workspace's `target/release` or `target/debug`.
#![expect(clippy::missing_panics_doc, reason = "a test harness panics by design")]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
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
            // The embedded default serves metrics on 127.0.0.1:9121; parallel
            // test servers must not fight for it.
            let mut all =
                vec!["ftpd_ebpf=off".to_string(), format!("listen_port={port}"), "ftpd_metrics_listen=".to_string()];
            let plane = std::env::var("FTPD_TEST_PLANE").unwrap_or_default();
            if plane == "kernel-defaults" {
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
                // between another server and its clients.
                all[0] = "ftpd_ebpf=auto".into();
                let base = 20_000 + u32::from(port) % 1_900 * 10;
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
        let mut out = Vec::new();
        let mut todo = vec![self.pid()];
        while let Some(pid) = todo.pop() {
            out.push(pid);
            // Children are listed by the thread that forked them (the master
            // starts workers from its login threads).
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
            for task in tasks {
                let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                todo.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
        out
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

    /// Sends SIGTERM and waits; returns the full log.
    pub fn stop(mut self) -> String {
        self.terminate();
        self.log()
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
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

/// Makes `dir` (not its contents) enterable and readable by everyone.
pub fn served_by_nobody(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(dir) {
        let mode = m.permissions().mode() | 0o755;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
    }
}

/// Makes `dir` writable by everyone, for upload tests: anonymous sessions act
/// as `nobody` when the tests run as root, as vsftpd's act as `ftp`.
pub fn writable_by_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod 0777");
}

/// What [`tcp_connect`] sets on a socket before its handshake, which std's
/// `TcpStream::connect` cannot.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketSetup {
    /// Local address to bind (another loopback address is another client).
    pub source: Option<IpAddr>,
    /// `SO_RCVBUF`: a small window, for a client that reads slowly or not at all.
    pub rcvbuf: Option<i32>,
    /// `TCP_MAXSEG`: a real network's segment size instead of loopback's 64 KiB.
    pub mss: Option<i32>,
}

/// A TCP connection to `to`, set up as `how` says before the handshake.
pub fn tcp_connect(to: SocketAddr, how: SocketSetup) -> std::io::Result<TcpStream> {
    tcp_connect_within(to, how, None)
}

/// Like [`tcp_connect`], giving up after `timeout` without an answer to the
/// SYN (`SO_SNDTIMEO`, which connect(2) honours): a SYN dropped in XDP gets
/// none, and connect(2) then fails with `EINPROGRESS`.
pub fn tcp_connect_within(to: SocketAddr, how: SocketSetup, timeout: Option<Duration>) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match a {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
                let sin = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in>() };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in6>() };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = v6.port().to_be();
                sin6.sin6_addr.s6_addr = v6.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, libc::socklen_t::try_from(len).expect("small"))
    }
    let family = if to.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let int = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: plain socket calls on a fresh fd, which the TcpStream owns from
    // its creation on (so it is closed on every failure); every pointer names
    // a local of the length passed.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let check = |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
        if let Some(n) = how.rcvbuf {
            check(libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&raw const n).cast(), int))?;
        }
        if let Some(n) = how.mss {
            check(libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, (&raw const n).cast(), int))?;
        }
        if let Some(t) = timeout {
            let tv = libc::timeval {
                tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_usec: libc::suseconds_t::from(t.subsec_micros()),
            };
            let len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
            check(libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, (&raw const tv).cast(), len))?;
        }
        if let Some(ip) = how.source {
            let (src, slen) = sockaddr(SocketAddr::new(ip, 0));
            check(libc::bind(fd, (&raw const src).cast(), slen))?;
        }
        let (dst, dlen) = sockaddr(to);
        check(libc::connect(fd, (&raw const dst).cast(), dlen))?;
        Ok(stream)
    }
}

/// A raw FTP control connection.
pub struct Ftp {
    r: BufReader<TcpStream>,
    w: TcpStream,
    /// The server's address.
    pub peer: SocketAddr,
}

impl Ftp {
    /// Connects from `source` (another local address, such as 127.0.0.2,
    /// is another client as far as the server is concerned); no greeting read.
    pub fn connect_from(addr: SocketAddr, source: IpAddr) -> Self {
        let s = tcp_connect(addr, SocketSetup { source: Some(source), ..SocketSetup::default() })
            .unwrap_or_else(|e| panic!("connect from {source} to {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Self { r: BufReader::new(s.try_clone().expect("clone")), w: s, peer: addr }
    }

    /// Connects (no greeting read).
    pub fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to ftpd");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Self { r: BufReader::new(s.try_clone().expect("clone")), w: s, peer: addr }
    }

    /// Wraps a connected stream (e.g. one bound to a chosen source address);
    /// no greeting read.
    pub fn from_stream(s: TcpStream) -> Self {
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let peer = s.peer_addr().expect("peer addr");
        Self { r: BufReader::new(s.try_clone().expect("clone")), w: s, peer }
    }

    /// The local address of the control connection (what PORT/EPRT should name).
    pub fn local_addr(&self) -> SocketAddr {
        self.w.local_addr().expect("local addr")
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.w.write_all(bytes)
    }

    /// Reads one (possibly multi-line) reply: code and full text.
    pub fn read_reply(&mut self) -> (u16, String) {
        self.try_read_reply().expect("a reply")
    }

    /// Reads one reply, or `None` if the server closed the connection.
    pub fn try_read_reply(&mut self) -> Option<(u16, String)> {
        let mut all = String::new();
        let mut line = String::new();
        if self.r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        all.push_str(&line);
        let code: u16 = line.get(..3)?.parse().ok()?;
        if line.as_bytes().get(3) == Some(&b'-') {
            let end = format!("{code} ");
            loop {
                line.clear();
                if self.r.read_line(&mut line).ok()? == 0 {
                    return None;
                }
                all.push_str(&line);
                if line.starts_with(&end) {
                    break;
                }
            }
        }
        Some((code, all))
    }

    /// Sends a command and returns the reply.
    pub fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send_raw(format!("{line}\r\n").as_bytes()).expect("send");
        self.read_reply()
    }

    /// Sends a command and asserts the reply code.
    pub fn cmd_ok(&mut self, line: &str, code: u16) -> String {
        let (c, text) = self.cmd(line);
        assert_eq!(c, code, "{line} -> {text}");
        text
    }

    /// PASV, then connects to the announced port.
    pub fn pasv_connect(&mut self) -> TcpStream {
        let text = self.cmd_ok("PASV", 227);
        let inner = &text[text.find('(').expect("(") + 1..text.find(')').expect(")")];
        let n: Vec<u16> = inner.split(',').map(|x| x.trim().parse().expect("number")).collect();
        let ip = Ipv4Addr::new(n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8);
        let addr = SocketAddr::from((ip, n[4] * 256 + n[5]));
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("data connect")
    }

    /// EPSV, then connects to the announced port on the server's address.
    pub fn epsv_connect(&mut self) -> TcpStream {
        let text = self.cmd_ok("EPSV", 229);
        let port: u16 = text.split('|').nth(3).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("EPSV: {text}"));
        let addr = SocketAddr::new(self.peer.ip(), port);
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("data connect")
    }

    /// Runs an upload command (STOR, APPE, STOU) over PASV, sending `bytes`
    /// and closing the data connection; returns the 150 reply text (empty if
    /// the command was refused) and the final reply.
    pub fn upload(&mut self, line: &str, bytes: &[u8]) -> (String, u16, String) {
        let mut data = self.pasv_connect();
        let (code, text) = self.cmd(line);
        if code != 150 {
            return (String::new(), code, text);
        }
        data.write_all(bytes).expect("send upload data");
        drop(data);
        let (code, end) = self.read_reply();
        (text, code, end)
    }

    /// Runs a data command (LIST, RETR …) over PASV; returns the bytes and the final reply.
    pub fn transfer(&mut self, line: &str) -> (Vec<u8>, u16, String) {
        let mut data = self.pasv_connect();
        let (code, text) = self.cmd(line);
        if code != 150 {
            return (Vec::new(), code, text);
        }
        let mut buf = Vec::new();
        data.read_to_end(&mut buf).expect("read data");
        let (code, text) = self.read_reply();
        (buf, code, text)
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Asserts `got == want` without dumping megabytes: on a mismatch it reports
/// both lengths and the first differing offset.
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!("{what}: got {} bytes, want {}; first difference at offset {at}", got.len(), want.len());
    }
}

/// Asserts that the file at `path` holds exactly `want` (see [`assert_bytes`]).
pub fn assert_file(path: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{what}: read {}: {e}", path.display()));
    assert_bytes(&got, want, &format!("{what} ({})", path.display()));
}

/// Writes `len` random bytes to `path` (from /dev/urandom).
pub fn random_file(path: &Path, len: u64) {
    let mut src = std::fs::File::open("/dev/urandom").expect("urandom").take(len);
    let mut dst = std::fs::File::create(path).expect("create");
    std::io::copy(&mut src, &mut dst).expect("copy random bytes");
}

/// Runs a command, panicking with its output if it cannot be spawned.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs Python code with ftplib available; returns stdout.
pub fn python(code: &str) -> String {
    run_ok(Command::new("python3").arg("-c").arg(code))
}

/// Whether the tests run as root (which bypasses file permission checks).
pub fn is_root() -> bool {
    run(Command::new("id").arg("-u")).stdout.starts_with(b"0\n")
}

/// The account anonymous sessions act as when ftpd starts as root: the
/// embedded default's `ftp_username=nobody` (vsftpd likewise runs anonymous
/// sessions as its `ftp_username`, never as root).
pub const ANON_USER: &str = "nobody";

/// Makes `path` and everything under it writable by everyone, so that an
/// anonymous session may change it whichever account it acts as.
pub fn make_writable(path: &Path) {
    run_ok(Command::new("chmod").arg("-R").arg("a+rwX").arg(path));
}

/// Gives `path` to [`ANON_USER`] and its login group when the tests run as
/// root, so that its owner permission bits are the ones an anonymous session
/// gets, and a replace can keep owner and group (else it is written in
/// place). Without root the server acts as the test's own user, who owns the
/// file already.
pub fn give_to_anon(path: &Path) {
    if is_root() {
        run_ok(Command::new("chown").arg(format!("{ANON_USER}:")).arg(path));
    }
}

/// Owner uid of a file on disk.
pub fn uid_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).uid()
}

/// Permission bits of a file or directory on disk.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).permissions().mode() & 0o7777
}

/// Whether this process may create network namespaces and load eBPF.
pub fn privileged() -> bool {
    run(Command::new("id").arg("-u")).stdout.starts_with(b"0\n") && Path::new("/sys/fs/bpf").is_dir()
}

static NETNS_SEQ: AtomicU32 = AtomicU32::new(0);

/// Two network namespaces joined by a veth pair: a server at `10.77.N.1`, a
/// client at `10.77.N.2` (and a second client address `10.77.N.3`).
/// Deleting the namespaces on drop removes the veth pair with them, so a
/// failing test leaves nothing behind.
pub struct NetPair {
    /// Server namespace name.
    pub server_ns: String,
    /// Client namespace name.
    pub client_ns: String,
    /// Server address.
    pub server_ip: Ipv4Addr,
    /// Client address.
    pub client_ip: Ipv4Addr,
    /// A second address on the client side (a "foreign" client).
    pub other_ip: Ipv4Addr,
    /// Name of the server-side veth.
    pub server_if: String,
    /// Server IPv6 address (`fd77:N::1`).
    pub server_ip6: String,
    /// Client IPv6 address (`fd77:N::2`).
    pub client_ip6: String,
    /// A second client IPv6 address (`fd77:N::3`).
    pub other_ip6: String,
}

impl NetPair {
    /// Creates the pair. Panics (after cleaning up) if any step fails.
    pub fn new() -> Self {
        let n = NETNS_SEQ.fetch_add(1, Ordering::Relaxed);
        let id = std::process::id() % 100_000;
        let net = 100 + (id + n) % 150;
        let me = Self {
            server_ns: format!("ftpds-{id}-{n}"),
            client_ns: format!("ftpdc-{id}-{n}"),
            server_ip: Ipv4Addr::new(10, 77, net as u8, 1),
            client_ip: Ipv4Addr::new(10, 77, net as u8, 2),
            other_ip: Ipv4Addr::new(10, 77, net as u8, 3),
            server_if: format!("vs{id}x{n}"),
            server_ip6: format!("fd77:{net:x}::1"),
            client_ip6: format!("fd77:{net:x}::2"),
            other_ip6: format!("fd77:{net:x}::3"),
        };
        let client_if = format!("vc{id}x{n}");
        // From here on, Drop cleans up whatever was created.
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), me.server_ns.clone()],
            vec!["netns".into(), "add".into(), me.client_ns.clone()],
            vec![
                "link".into(),
                "add".into(),
                me.server_if.clone(),
                "netns".into(),
                me.server_ns.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                client_if.clone(),
                "netns".into(),
                me.client_ns.clone(),
            ],
        ];
        for s in &steps {
            run_ok(Command::new("ip").args(s));
        }
        let ns_steps: Vec<(&str, String)> = vec![
            (&me.server_ns, format!("addr add {}/24 dev {}", me.server_ip, me.server_if)),
            (&me.server_ns, format!("link set {} up", me.server_if)),
            (&me.server_ns, "link set lo up".into()),
            (&me.client_ns, format!("addr add {}/24 dev {client_if}", me.client_ip)),
            (&me.client_ns, format!("addr add {}/24 dev {client_if}", me.other_ip)),
            (&me.client_ns, format!("link set {client_if} up")),
            (&me.client_ns, "link set lo up".into()),
            (&me.server_ns, format!("-6 addr add {}/64 dev {} nodad", me.server_ip6, me.server_if)),
            (&me.client_ns, format!("-6 addr add {}/64 dev {client_if} nodad", me.client_ip6)),
            (&me.client_ns, format!("-6 addr add {}/64 dev {client_if} nodad", me.other_ip6)),
        ];
        for (ns, s) in ns_steps {
            run_ok(Command::new("ip").args(["-n", ns]).args(s.split(' ')));
        }
        // Wait until both ends report carrier.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let up = |ns: &str, dev: &str| {
                String::from_utf8_lossy(
                    &run(Command::new("ip").args(["-n", ns, "-o", "link", "show", "dev", dev])).stdout,
                )
                .contains("state UP")
            };
            if up(&me.server_ns, &me.server_if) && up(&me.client_ns, &client_if) {
                return me;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("veth between {} and {} never came up", me.server_ns, me.client_ns);
    }

    /// Settings for ftpd serving in the server namespace on port 2121, the
    /// passive range 50000-50099 and the eBPF plane required, then `extra`.
    pub fn server_settings(&self, extra: &[&str]) -> Vec<String> {
        let mut settings = vec![
            format!("listen_address={}", self.server_ip),
            "listen_port=2121".to_string(),
            "pasv_min_port=50000".to_string(),
            "pasv_max_port=50099".to_string(),
            "ftpd_ebpf=on".to_string(),
        ];
        settings.extend(extra.iter().map(|s| (*s).to_string()));
        settings
    }

    /// A command run inside the client namespace.
    pub fn client_cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.client_ns, program]);
        c
    }

    /// Whether a namespace of this pair still exists.
    pub fn exists(name: &str) -> bool {
        run(Command::new("ip").args(["netns", "list"]))
            .stdout
            .split(|&b| b == b'\n')
            .any(|l| l.starts_with(name.as_bytes()))
    }
}

impl Default for NetPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}
