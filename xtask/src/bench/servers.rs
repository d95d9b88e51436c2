//! The servers under test and the files they serve.
//!
//! ftpd and vsftpd read the very same vsftpd.conf text (only the port
//! differs), so every difference in the numbers is the server's, not the
//! configuration's. ProFTPD and Pure-FTPd get the equivalent in their own
//! terms: anonymous read of the same tree, `up/` writable, umask 022,
//! sendfile where it is a setting, no reverse DNS, no ident, no limit on
//! clients, passive ports from the kernel's ephemeral range as for the others.

use std::{
    fs,
    io::Write as _,
    os::{
        fd::AsRawFd,
        unix::{fs::PermissionsExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    Kind,
    client::Ftp,
    nofile_arg,
    procs::{self, Cgroup},
};
use crate::exec;

/// 1 GiB: the single-stream file.
pub(super) const GIB: u64 = 1 << 30;
/// The concurrent-download file.
pub(super) const MID: u64 = 16 << 20;
/// Files in `big/` (the LIST workload).
pub(super) const BIG_FILES: usize = 10_000;
/// Files in `small/` (the RETR workload), each `SMALL_SIZE` bytes.
pub(super) const SMALL_FILES: usize = 1_000;
/// Size of each file in `small/`.
pub(super) const SMALL_SIZE: u64 = 4096;
/// The file of the limited workload: 15 s at 100 kB/s.
pub(super) const LIMITED_SIZE: u64 = 1_500_000;
const VSFTPD: &str = "/usr/sbin/vsftpd";
/// vsftpd refuses to start without its chroot directory for the unprivileged side.
const SECURE_CHROOT: &str = "/var/run/vsftpd/empty";

/// Where the tmpfs variants' files are, under the served root.
pub(super) const TMPFS_DIR: &str = "tmpfs";
/// Its size: the 1 GiB file, a 1 GiB upload, and 64 × 64 MiB at once, with room.
const TMPFS_SIZE: &str = "6g";

/// The servers' binaries.
pub(super) struct Bins {
    pub(super) ftpd: PathBuf,
    pub(super) proftpd: PathBuf,
    /// ProFTPD's loadable modules (`mod_tls.so` for FTPS).
    pub(super) proftpd_modules: PathBuf,
    pub(super) pure_ftpd: PathBuf,
}

/// The benchmark's directory tree under the temp dir.
pub(super) struct Fixture {
    /// Configs and server logs.
    pub(super) work: PathBuf,
    /// `anon_root`: what the servers serve.
    pub(super) root: PathBuf,
    /// The tmpfs mounted at [`TMPFS_DIR`] under `root`; unmounted on drop.
    tmpfs: PathBuf,
}

impl Drop for Fixture {
    /// The tmpfs holds GiBs of RAM; a shared machine wants them back. Lazy
    /// (`-l`): a server killed a moment ago may still hold it (Pure-FTPd's
    /// mount namespace has a copy), and it is freed when the last user goes.
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.tmpfs).status();
    }
}

/// Whether `path` is on a tmpfs.
fn on_tmpfs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs is plain data; all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a statfs to write into.
    unsafe { libc::statfs(c.as_ptr(), &raw mut st) == 0 && st.f_type == libc::TMPFS_MAGIC }
}

/// Whether something is mounted exactly at `path`.
fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(path) else { return false };
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m) == canon)
}

impl Fixture {
    /// Creates the served files, reusing those of an earlier run when they
    /// are complete.
    pub(super) fn prepare() -> Result<Self> {
        let work = std::env::temp_dir().join("ftpd-bench");
        let root = work.join("root");
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        // vsftpd refuses an anonymous root the ftp user can write to: the
        // root stays root's and 0755, uploads go to up/ (0777).
        fs::set_permissions(&work, fs::Permissions::from_mode(0o755))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
        let up = root.join("up");
        fs::create_dir_all(&up)?;
        fs::set_permissions(&up, fs::Permissions::from_mode(0o777))?;
        for old in fs::read_dir(&up)?.flatten() {
            let _ = fs::remove_file(old.path());
        }
        for kind in super::Kind::ALL {
            let _ = fs::remove_file(work.join(format!("{}.log", kind.slug())));
        }
        if on_tmpfs(&root) {
            println!(
                "[bench] warning: {} is on a tmpfs, so the \"disk\" variants are not on a disk; \
                 set TMPDIR to a directory on a disk",
                root.display()
            );
        }
        let tmpfs = root.join(TMPFS_DIR);
        fs::create_dir_all(&tmpfs)?;
        if !is_mount_point(&tmpfs) {
            println!("[bench] mounting a {TMPFS_SIZE} tmpfs at {} (the tmpfs variants)", tmpfs.display());
            exec(
                Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE},mode=0755"), "ftpd-bench"])
                    .arg(&tmpfs),
            )?;
        }
        let tmp_up = tmpfs.join("up");
        fs::create_dir_all(&tmp_up)?;
        fs::set_permissions(&tmp_up, fs::Permissions::from_mode(0o777))?;
        for old in fs::read_dir(&tmp_up)?.flatten() {
            let _ = fs::remove_file(old.path());
        }

        let big = root.join("1g.bin");
        // An earlier version of this benchmark kept the file here.
        let legacy = std::env::temp_dir().join("ftpd-bench-dl/1g.bin");
        if size_of_file(&big) != GIB && size_of_file(&legacy) == GIB {
            fs::rename(&legacy, &big).with_context(|| format!("moving {} to {}", legacy.display(), big.display()))?;
        }
        random_file(&big, GIB)?;
        let tmp_big = tmpfs.join("1g.bin");
        if size_of_file(&tmp_big) != GIB {
            println!("[bench] copying 1g.bin to {}", tmpfs.display());
            fs::copy(&big, &tmp_big).with_context(|| format!("copying 1g.bin to {}", tmpfs.display()))?;
        }
        random_file(&root.join("16m.bin"), MID)?;
        random_file(&root.join("limited.bin"), LIMITED_SIZE)?;
        fill_dir(&root.join("big"), BIG_FILES, |i| format!("f{i:05}"), 0)?;
        fill_dir(&root.join("small"), SMALL_FILES, |i| format!("s{i:04}"), SMALL_SIZE)?;
        fs::create_dir_all(SECURE_CHROOT).with_context(|| format!("creating {SECURE_CHROOT}"))?;
        // Into the page cache before any sample: otherwise the first server
        // to download pays for the disk (ftpd's first sample was half speed).
        for name in ["1g.bin", "16m.bin"] {
            let path = root.join(name);
            let mut f = fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
            std::io::copy(&mut f, &mut std::io::sink()).with_context(|| format!("reading {}", path.display()))?;
        }
        Ok(Self { work, root, tmpfs })
    }

    /// The directory of `place`'s files relative to the served root, with
    /// a trailing slash ("" for the root itself).
    pub(super) fn prefix(place: Option<super::Place>) -> &'static str {
        match place {
            Some(super::Place::Tmpfs) => "tmpfs/",
            Some(super::Place::Disk) | None => "",
        }
    }

    /// The certificate both FTPS servers use (made once, self-signed).
    fn cert(&self) -> (PathBuf, PathBuf) {
        (self.work.join("ftps-cert.pem"), self.work.join("ftps-key.pem"))
    }

    /// Makes the FTPS certificate unless an earlier run left one.
    pub(super) fn ensure_cert(&self) -> Result<()> {
        let (cert, key) = self.cert();
        if cert.exists() && key.exists() {
            return Ok(());
        }
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .context("running openssl to make the FTPS certificate")?;
        if !out.status.success() {
            bail!("openssl req failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    /// The config both FTP servers run with. `listen_address` keeps a server
    /// with anonymous uploads off every interface but loopback. With `tls`,
    /// explicit FTPS with the same certificate for both (vsftpd 3.0's
    /// default cipher list is 3DES, which curl's OpenSSL no longer offers:
    /// both get `HIGH`).
    ///
    /// `ftp_username` and `nopriv_user` differ (`nopriv_user` is the
    /// default, `nobody`). With anonymous uploads on, as here, ftpd's front
    /// keeps `nopriv_user` and every anonymous open goes through the file
    /// worker; `read_only` turns writes off, the mirror's config, where the
    /// front takes `ftp_username`'s identity and opens downloads itself
    /// (`ftpd_anon_fast_path`, on by default): the `ftpd (read-only mirror)` row.
    fn conf(&self, port: u16, tls: bool, read_only: bool) -> String {
        let tls = if tls {
            let (cert, key) = self.cert();
            format!(
                "ssl_enable=YES\nallow_anon_ssl=YES\nssl_ciphers=HIGH\nrsa_cert_file={}\nrsa_private_key_file={}\n",
                cert.display(),
                key.display()
            )
        } else {
            String::new()
        };
        tls + &format!(
            "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={port}\nanonymous_enable=YES\n\
             no_anon_password=NO\nanon_root={}\nftp_username=daemon\nnopriv_user=nobody\nlocal_enable=NO\n\
             write_enable={}\nanon_upload_enable={}\nanon_umask=022\nmax_clients=0\nmax_per_ip=0\n\
             use_sendfile=YES\nseccomp_sandbox=NO\nsecure_chroot_dir={SECURE_CHROOT}\nbackground=NO\n\
             idle_session_timeout=0\nxferlog_enable=NO\n",
            self.root.display(),
            if read_only { "NO" } else { "YES" },
            if read_only { "NO" } else { "YES" },
        )
    }

    /// ProFTPD's equivalent of [`Fixture::conf`]. No modules are loaded
    /// but with `tls` Debian's `mod_tls` (package `proftpd-mod-crypto`), so
    /// there are no ident lookups (`mod_ident` is one of the modules not
    /// loaded); `mod_delay` (which pads logins to hide which user names
    /// exist) and PAM are turned off, as vsftpd and ftpd do neither for
    /// anonymous logins. Anonymous logins run as `daemon`, like
    /// `ftp_username=daemon`. With `tls`, explicit FTPS as for the others:
    /// same certificate, `HIGH` ciphers, not required; session reuse on the
    /// data connection is not demanded (vsftpd's `require_ssl_reuse=NO` is
    /// not demanded of curl by the others either).
    fn proftpd_conf(&self, port: u16, tls: bool, modules: &Path) -> String {
        let work = self.work.display();
        let suffix = if tls { "-tls" } else { "" };
        let tls = if tls {
            let (cert, key) = self.cert();
            format!(
                "ModulePath {}\nLoadModule mod_tls.c\nTLSEngine on\nTLSRequired off\nTLSRSACertificateFile {}\n\
                 TLSRSACertificateKeyFile {}\nTLSCipherSuite HIGH\nTLSProtocol TLSv1.2 TLSv1.3\n\
                 TLSOptions NoSessionReuseRequired\nTLSLog none\n",
                modules.display(),
                cert.display(),
                key.display()
            )
        } else {
            String::new()
        };
        format!(
            "ServerType standalone\nServerName \"bench\"\nUseIPv6 off\nDefaultAddress 127.0.0.1\n\
             SocketBindTight on\nPort {port}\nUser nobody\nGroup nogroup\nMaxInstances none\n\
             UseReverseDNS off\nUseSendfile on\nDelayEngine off\nAuthPAM off\nUseFtpUsers off\nWtmpLog off\n\
             TransferLog none\nSystemLog none\nScoreboardFile {work}/proftpd{suffix}.scoreboard\n\
             PidFile {work}/proftpd{suffix}.pid\nUmask 022\nTimeoutIdle 0\nTimeoutNoTransfer 0\n{tls}\
             <Anonymous {}>\n  User daemon\n  Group daemon\n  UserAlias anonymous daemon\n\
             RequireValidShell off\n  AnonRequirePassword off\n  MaxClients none\n</Anonymous>\n",
            self.root.display()
        )
    }
}

fn size_of_file(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// Writes `size` random bytes to `path` unless it already has that size.
fn random_file(path: &Path, size: u64) -> Result<()> {
    if size_of_file(path) == size {
        return Ok(());
    }
    println!("[bench] writing {} random bytes to {}", size, path.display());
    exec(Command::new("sh").arg("-c").arg(format!("head -c {size} /dev/urandom > '{}'", path.display())))?;
    if size_of_file(path) != size {
        bail!("{} does not have {size} bytes after writing it", path.display());
    }
    Ok(())
}

/// Fills `dir` with `count` files named by `name`, each `size` bytes, unless
/// it already holds exactly those.
fn fill_dir(dir: &Path, count: usize, name: impl Fn(usize) -> String, size: u64) -> Result<()> {
    let complete = fs::read_dir(dir).map(Iterator::count).ok() == Some(count)
        && (0..count).all(|i| size_of_file(&dir.join(name(i))) == size && dir.join(name(i)).is_file());
    if complete {
        return Ok(());
    }
    println!(
        "[bench] creating {count} files in {}/",
        dir.file_name().map_or_else(String::new, |n| n.display().to_string())
    );
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    for i in 0..count {
        let path = dir.join(name(i));
        fs::File::create(&path)
            .and_then(|mut f| f.write_all(&body))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Installs vsftpd if needed. The package starts its own daemon on port 21;
/// that one is stopped through its service (not by name: other vsftpd
/// processes on this machine are not ours to end).
pub(super) fn ensure_vsftpd() -> Result<()> {
    if Path::new(VSFTPD).exists() {
        return Ok(());
    }
    println!("[bench] installing vsftpd (the peer)");
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "vsftpd"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let _ = Command::new("service").args(["vsftpd", "stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !Path::new(VSFTPD).exists() {
        bail!("apt-get installed vsftpd but {VSFTPD} does not exist");
    }
    Ok(())
}

/// A running server; stopping it (with everything it forked) on drop.
pub(super) struct Server {
    pub(super) kind: Kind,
    pub(super) port: u16,
    child: Child,
    log: PathBuf,
    /// Where its CPU time is counted; `None` without cgroup2.
    cgroup: Option<Cgroup>,
    /// Started with `ssl_enable=YES`; clients use explicit FTPS.
    pub(super) tls: bool,
}

/// The kernel-plane row's passive range: below the ephemeral ports, where
/// every other server's passive ports come from (its XDP program drops SYNs
/// to this range that no pinhole admits, whichever server they are for).
pub(super) const KERNEL_PASV: (u16, u16) = (25_000, 25_999);

impl Server {
    /// Starts `kind` on a free port and waits until it answers: with FTPS
    /// (`ssl_enable=YES`) when `tls`, and `extra` lines added to the shared
    /// config (ftpd and vsftpd only). `peer_pasv` keeps every other
    /// server's passive ports in that range while a kernel-plane ftpd runs
    /// (see `start_servers` in the bench's module).
    pub(super) fn start_as(
        kind: Kind,
        fx: &Fixture,
        bins: &Bins,
        tls: bool,
        extra: &str,
        peer_pasv: Option<(u16, u16)>,
    ) -> Result<Self> {
        let port = ftpd_testkit::free_port();
        let suffix = if tls { "-tls" } else { "" };
        let log = fx.work.join(format!("{}{suffix}.log", kind.slug()));
        // Appended to, so a restarted server keeps its predecessor's output.
        let mut out = fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        writeln!(out, "=== [bench] starting {} on port {port}", kind.name())?;
        let mut cmd = Command::new("prlimit");
        cmd.arg(nofile_arg());
        match kind {
            Kind::Ftpd
            | Kind::FtpdAtomic
            | Kind::FtpdReadOnly
            | Kind::FtpdReadOnlyKernel
            | Kind::FtpdBaseline
            | Kind::Vsftpd => {
                let conf = fx.work.join(format!("{}{suffix}.conf", kind.slug()));
                let read_only = matches!(kind, Kind::FtpdReadOnly | Kind::FtpdReadOnlyKernel);
                let mut text = fx.conf(port, tls, read_only) + extra;
                if let Some((min, max)) = peer_pasv.filter(|_| kind != Kind::FtpdReadOnlyKernel) {
                    text += &format!("pasv_min_port={min}\npasv_max_port={max}\n");
                }
                match kind {
                    Kind::FtpdAtomic => text += "ftpd_atomic_uploads=YES\n",
                    Kind::FtpdReadOnly => text += "ftpd_ebpf=off\n",
                    // A passive range, so that the kernel plane's pinholes
                    // are on.
                    Kind::FtpdReadOnlyKernel => {
                        let (min, max) = KERNEL_PASV;
                        text += &format!(
                            "ftpd_ebpf=on\nftpd_xdp_interfaces=lo\npasv_min_port={min}\npasv_max_port={max}\n"
                        );
                    }
                    _ => {}
                }
                fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
                if kind == Kind::Vsftpd {
                    cmd.arg(VSFTPD).arg(&conf);
                } else {
                    // An empty listen address turns the metrics endpoint off.
                    let bin = match (kind, super::BASELINE.get()) {
                        (Kind::FtpdBaseline, Some(b)) => b,
                        _ => &bins.ftpd,
                    };
                    cmd.arg(bin).arg(&conf).arg("-oftpd_metrics_listen=");
                }
            }
            Kind::Proftpd => {
                let conf = fx.work.join(format!("proftpd{suffix}.conf"));
                let mut text = fx.proftpd_conf(port, tls, &bins.proftpd_modules);
                if let Some((min, max)) = peer_pasv {
                    text += &format!("PassivePorts {min} {max}\n");
                }
                fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
                // -n: in the foreground, as vsftpd's background=NO.
                cmd.arg(&bins.proftpd).arg("-n").arg("-c").arg(&conf);
            }
            Kind::PureFtpd => {
                // Pure-FTPd has no anon_root: anonymous users get the home of
                // the `ftp` user. Rather than change that account (tests on
                // this machine use it), the served tree is bind-mounted over
                // that home in a mount namespace of Pure-FTPd's own, which
                // nothing else sees and which ends with it. `--rbind` brings
                // the tmpfs mounted inside the tree along. Anonymous sessions
                // run as `ftp` (the others' as `daemon`): the same rights
                // here, the files are world-readable and up/ world-writable.
                let home = ftp_home()?;
                cmd.args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
                    .arg(r#"mount --rbind "$1" "$2" && shift 2 && exec "$@""#)
                    .arg("sh")
                    .arg(&fx.root)
                    .arg(&home)
                    .arg(&bins.pure_ftpd)
                    // Listen on loopback only, IPv4, anonymous only; no
                    // reverse DNS (-H); no client limits (-c, -C); files 644
                    // and directories 755 (-U, as anon_umask=022); no idle
                    // timeout to speak of (-I, minutes); no syslog (-f none).
                    // It has no sendfile setting and no ident lookups.
                    .args(["-S", &format!("127.0.0.1,{port}"), "-4", "-e", "-H"])
                    .args(["-c", "20000", "-C", "20000", "-U", "133:022", "-I", "100000", "-f", "none"]);
                if let Some((min, max)) = peer_pasv {
                    cmd.arg("-p").arg(format!("{min}:{max}"));
                }
                if tls {
                    // Explicit FTPS allowed, not required (-Y 1), with the
                    // others' certificate and ciphers.
                    let (cert, key) = fx.cert();
                    cmd.args(["-Y", "1", "-J", "HIGH", "-2"]).arg(format!("{},{}", cert.display(), key.display()));
                }
            }
            Kind::Ceiling => {
                let me = std::env::current_exe().context("finding the xtask binary")?;
                cmd.arg(me).arg("bench-ceiling").arg("--port").arg(port.to_string()).arg("--dir").arg(&fx.root);
            }
        }
        let cgroup = procs::cgroup(kind.slug());
        if cgroup.is_none() && !NO_CGROUP_NOTED.swap(true, Ordering::Relaxed) {
            println!("[bench] note: no writable cgroup2 hierarchy; server CPU is summed over the process tree");
        }
        let procs_file = cgroup
            .as_ref()
            .map(|cg| cg.procs_file().with_context(|| format!("opening {}/cgroup.procs", cg.dir().display())))
            .transpose()?;
        let procs_fd = procs_file.as_ref().map(AsRawFd::as_raw_fd);
        // prlimit execs the server, so the child's pid is the server's. Its
        // own process group lets the drop reach everything it forks; being in
        // its own group also keeps a terminal's Ctrl-C from reaching it, so
        // it is told to die with us instead (Drop does not run on a signal).
        // SAFETY: the closure runs in the forked child before exec and calls
        // only write(2) and prctl(2), which are async-signal-safe; `procs_fd`
        // stays open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = procs_fd
                    && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}: {cmd:?}", kind.name()))?;
        drop(procs_file);
        let server = Self { kind, port, child, log, cgroup, tls };
        server
            .wait_ready()
            .with_context(|| format!("{} did not start; its output: {}", kind.name(), server.log_tail()))?;
        let plane = match kind {
            Kind::Ftpd | Kind::FtpdAtomic | Kind::FtpdReadOnly | Kind::FtpdReadOnlyKernel | Kind::FtpdBaseline => {
                format!(", {} data plane", server.plane())
            }
            _ => String::new(),
        };
        println!("[bench] {} listening on 127.0.0.1:{port} (pid {}{plane})", kind.name(), server.pid());
        Ok(server)
    }

    /// Replaces this server with a fresh one of the same kind (on a new port).
    pub(super) fn restart(&mut self, fx: &Fixture, bins: &Bins) -> Result<()> {
        let (kind, tls) = (self.kind, self.tls);
        procs::kill_tree(self.pid());
        *self = Self::start_as(kind, fx, bins, tls, "", None)?;
        Ok(())
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every process of the server now.
    pub(super) fn pids(&self) -> Vec<u32> {
        match &self.cgroup {
            Some(cg) => cg.pids(),
            None => procs::tree(self.pid()),
        }
    }

    /// CPU seconds the server has used since it started, exited processes included.
    pub(super) fn cpu_seconds(&self) -> f64 {
        self.cgroup.as_ref().and_then(Cgroup::cpu_seconds).unwrap_or_else(|| procs::tree_cpu_seconds(self.pid()))
    }

    /// Fails when the server has exited (a crash mid-run), with its last output.
    pub(super) fn check_alive(&self) -> Result<()> {
        if !procs::alive(self.pid()) {
            bail!("{} (pid {}) has exited; its output: {}", self.kind.name(), self.pid(), self.log_tail());
        }
        Ok(())
    }

    fn wait_ready(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let ready = match self.kind {
                Kind::Ceiling => std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
                _ => Ftp::connect(self.port).is_ok(),
            };
            if ready {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(15) {
                bail!("no answer on 127.0.0.1:{} after 15 s", self.port);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Which data plane this ftpd started with, from its output since the
    /// bench started it: a row's figures depend on it, and `auto` gives the
    /// kernel plane only to the first ftpd that asks for `lo`.
    fn plane(&self) -> &'static str {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let ours = text.rsplit("=== [bench] starting").next().unwrap_or_default();
        if ours.contains("eBPF data plane loaded") { "kernel" } else { "userspace" }
    }

    /// The end of the server's output, for error messages.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        if tail.is_empty() { format!("(nothing in {})", self.log.display()) } else { format!("\n{tail}") }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        procs::kill_tree(self.pid());
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The home directory of the `ftp` user (what Pure-FTPd serves anonymously).
fn ftp_home() -> Result<PathBuf> {
    let out = Command::new("getent").args(["passwd", "ftp"]).output().context("running getent passwd ftp")?;
    let line = String::from_utf8_lossy(&out.stdout);
    let home = line.trim().split(':').nth(5).filter(|h| !h.is_empty()).map(PathBuf::from);
    match home {
        Some(h) if h.is_dir() => Ok(h),
        _ => bail!(
            "Pure-FTPd serves anonymous users the home of the user `ftp`, and there is no such user with an \
             existing home here; create one: adduser --system --group --home /srv/ftp ftp"
        ),
    }
}

/// Whether the missing-cgroup note has been printed.
static NO_CGROUP_NOTED: AtomicBool = AtomicBool::new(false);
