//! Differential test: vsftpd (from Debian) and ftpd run with the same
//! vsftpd.conf text (only `listen_port` differs) and get the same scripted
//! sessions over raw sockets. Reply codes, reply texts and listing bytes are
//! compared byte for byte, after the one normalisation in [`normalise`].
//!
//! Every difference must be listed in `docs/vsftpd-differences.md` (command
//! sent, vsftpd's reply, ftpd's reply, why); an unlisted difference fails the
//! test, and so does a listed one that no longer occurs.
//!
//! Out of scope here: what happens after a 421 (closing the connection),
//! which another change settles; no session provokes one.
//!
//! Needs root (vsftpd runs as root; the local-user configuration creates a
//! system user). If vsftpd is missing the test installs it from Debian, without
//! starting its service; when that is impossible the test fails, unless
//! `FTPD_TEST_ALLOW_SKIP` lists it (tests/README.md, Conventions).

use std::{
    collections::BTreeMap,
    ffi::CString,
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::{
        ffi::OsStrExt,
        fs::{PermissionsExt, symlink},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ftpd_tests::{Ftp, accept_within, free_port, ftpd_bin, is_root, pasv_addr, run_ok, workspace};

const VSFTPD: &str = "/usr/sbin/vsftpd";
/// vsftpd refuses to start without it (its unprivileged side chroots there).
const SECURE_CHROOT: &str = "/var/run/vsftpd/empty";
/// The table of intended differences, relative to the workspace.
const TABLE: &str = "docs/vsftpd-differences.md";
/// What an upload step sends.
const UPLOAD: &[u8] = b"uploaded by the differential test\n";

/// 2021-02-03 04:05:06 UTC: an old date (listings show the year).
const OLD: i64 = 1_612_325_106;
/// 1999-12-31 23:59:00 UTC.
const OLDER: i64 = 946_684_740;
/// 2035-06-07 08:09:10 UTC: in the future (listings show the year).
const FUTURE: i64 = 2_064_903_750;

/// Installs vsftpd if it is missing; `Err` says why it cannot be had.
fn ensure_vsftpd() -> Result<(), String> {
    if !is_root() {
        return Err("the test runs vsftpd as root and creates a system user; run it as root".into());
    }
    if Path::new(VSFTPD).exists() {
        return Ok(());
    }
    eprintln!("[vsftpd_diff] installing vsftpd from Debian (its service is not started)");
    // policy-rc.d exiting 101 keeps the package from starting a daemon on port 21.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n").map_err(|e| format!("writing {}: {e}", policy.display()))?;
        let _ = std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755));
    }
    let out = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "vsftpd"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    match out {
        Ok(o) if o.status.success() && Path::new(VSFTPD).exists() => Ok(()),
        Ok(o) => {
            Err(format!("apt-get install vsftpd failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim()))
        }
        Err(e) => Err(format!("cannot run apt-get: {e}")),
    }
}

// ---------------------------------------------------------------------------
// The served tree

/// Sets a path's access and modification time without following symlinks.
fn set_time(p: &Path, secs: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).expect("no NUL in test paths");
    let t = libc::timespec { tv_sec: secs, tv_nsec: 0 };
    let times = [t, t];
    // SAFETY: a valid C string and a two-element timespec array, as utimensat wants.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}: {}", p.display(), std::io::Error::last_os_error());
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// (Re)creates the served tree at `root`, identical every time: same names,
/// contents, modes and times (`recent` is a time within the last six months,
/// fixed for the whole run). `owner` gets `home/`.
fn make_tree(root: &Path, recent: i64, owner: Option<&str>) {
    // The root itself stays: ftpd holds it open from startup on.
    std::fs::create_dir_all(root).expect("mkdir the root");
    for entry in std::fs::read_dir(root).expect("read the old tree").flatten() {
        let p = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p).expect("remove the old tree");
        } else {
            std::fs::remove_file(&p).expect("remove the old tree");
        }
    }
    let files: &[(&str, &[u8], u32, i64)] = &[
        ("README", b"hello, world\n", 0o644, OLD),
        ("name with spaces.txt", b"spaces\n", 0o644, OLD),
        ("recent.txt", b"recent\n", 0o644, recent),
        ("future.bin", &[0u8; 1234], 0o644, FUTURE),
        ("y2k.txt", b"party\n", 0o444, OLDER),
        ("private.txt", b"root only\n", 0o600, OLD),
        ("run.sh", b"#!/bin/sh\n", 0o755, OLD),
        (".hidden", b"dot\n", 0o644, OLD),
        ("pub/a.txt", b"alpha\n", 0o644, OLD),
        ("pub/b.txt", b"bravo bravo\n", 0o644, recent),
        ("pub/sub/deep.txt", b"deep\n", 0o644, OLDER),
        ("pub/sub/.dot", b"\n", 0o644, OLDER),
        ("up/old.txt", b"old upload\n", 0o666, OLD),
        ("home/mine.txt", b"mine\n", 0o644, OLD),
    ];
    for (name, body, mode, _) in files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, body).expect("write");
        chmod(&p, *mode);
    }
    std::fs::create_dir_all(root.join("empty")).expect("mkdir");
    symlink("README", root.join("link")).expect("symlink");
    symlink("pub", root.join("pub-link")).expect("symlink");
    symlink("nowhere", root.join("dangling")).expect("symlink");
    if let Some(user) = owner {
        run_ok(Command::new("chown").arg("-R").arg(format!("{user}:")).arg(root.join("home")));
    }
    for (name, _, _, t) in files {
        set_time(&root.join(name), *t);
    }
    for (name, t) in [("link", OLD), ("pub-link", recent), ("dangling", OLDER)] {
        set_time(&root.join(name), t);
    }
    for (dir, mode, t) in [
        ("up", 0o777, OLD),
        ("home", 0o755, OLD),
        ("empty", 0o755, OLDER),
        ("pub/sub", 0o755, OLDER),
        ("pub", 0o755, recent),
        ("", 0o755, OLD),
    ] {
        let p = if dir.is_empty() { root.to_path_buf() } else { root.join(dir) };
        chmod(&p, mode);
        set_time(&p, t);
    }
}

// ---------------------------------------------------------------------------
// The servers

/// A server process, killed (with its process group) on drop.
struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    fn start(cmd: &mut Command, port: u16, log: PathBuf) -> Result<Self, String> {
        let out = std::fs::File::create(&log).expect("log file");
        cmd.stdout(out.try_clone().expect("dup")).stderr(out).stdin(Stdio::null());
        // SAFETY: prctl and setpgid with constant arguments, between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        let mut d = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(format!("{cmd:?} exited with {status}: {}", d.log()));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(d);
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(format!("{cmd:?} not listening on {port} after 10 s: {}", d.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The whole group: vsftpd's session processes too. Only ours (setpgid above).
        let pgid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on our own child's process group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Starts a server on a free port, trying other ports if the one picked was
/// taken meanwhile (another test, another engineer's server).
fn start_retrying(
    mut cmd: Command,
    kind: &str,
    work: &Path,
    conf_text: impl Fn(u16) -> String,
) -> Result<Daemon, String> {
    let conf = work.join(format!("{kind}.conf"));
    cmd.arg(&conf);
    if kind == "ftpd" {
        // ftpd's own switches stay on the command line: vsftpd would refuse them.
        cmd.args(["-oftpd_ebpf=off", "-oftpd_metrics_listen="]).env("RUST_LOG", "info");
    }
    let mut tries = 0;
    loop {
        let port = free_port();
        std::fs::write(&conf, conf_text(port)).expect("write conf");
        match Daemon::start(&mut cmd, port, work.join(format!("{kind}.log"))) {
            // vsftpd: "could not bind listening IPv4 socket"; ftpd: "cannot listen on".
            Err(e) if tries < 3 && (e.contains("could not bind") || e.contains("cannot listen")) => tries += 1,
            result => return result,
        }
    }
}

/// One configuration: a name and the lines added to the common config.
struct Conf {
    name: &'static str,
    lines: Vec<String>,
    /// The sessions run under it.
    sessions: Vec<&'static Session>,
}

/// The common part of every config. vsftpd needs `seccomp_sandbox=NO` and
/// `isolate*=NO` in a container, and `secure_chroot_dir` to exist; ftpd accepts
/// them all.
fn common(port: u16) -> String {
    format!(
        "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\n\
         seccomp_sandbox=NO\nisolate=NO\nisolate_network=NO\nsecure_chroot_dir={SECURE_CHROOT}\n\
         ftpd_banner=Differential test server ready.\ndelay_failed_login=0\nxferlog_enable=NO\n\
         pam_service_name=vsftpd\nmax_per_ip=0\nmax_clients=0\nidle_session_timeout=60\n"
    )
}

// ---------------------------------------------------------------------------
// Sessions

/// A scripted session. Each step is a command line, except:
/// `<CMD`: PASV, then CMD with its data connection read to the end;
/// `>CMD`: PASV, then CMD sending [`UPLOAD`] on the data connection;
/// `^CMD`: PORT to a listener of the test (active mode), then as `<CMD`.
struct Session {
    name: &'static str,
    steps: &'static [&'static str],
}

const PRELOGIN: Session = Session {
    name: "prelogin",
    steps: &[
        "SYST",
        "PWD",
        "NOOP",
        "FEAT",
        "OPTS UTF8 ON",
        "OPTS",
        "OPTS FOO",
        "HELP",
        "STAT",
        "PASV",
        "EPSV",
        "PORT 127,0,0,1,156,64",
        "EPRT |3|x|5000|",
        "CWD /",
        "TYPE I",
        "MODE S",
        "STRU F",
        "REST 0",
        "ABOR",
        "ALLO 10",
        "ACCT x",
        "SITE HELP",
        "MLST",
        "MLSD",
        "LIST",
        "RETR README",
        "STOR x",
        "RNTO x",
        "HOST localhost",
        "XYZZY",
        "xyzzy plugh",
        "PASS secret",
        "USER",
        "USER nosuchuser12345",
        "PASS wrong",
        "PASS again",
        "USER anonymous",
        "USER anonymous",
        "PASS x@example.org",
        "USER anonymous",
        "PASS x@example.org",
        "QUIT",
    ],
};

const BROWSE: Session = Session {
    name: "browse",
    steps: &[
        "USER anonymous",
        "PASS guest@example.org",
        "PWD",
        "XPWD",
        "CWD pub",
        "PWD",
        "CWD ..",
        "CWD /pub/sub",
        "PWD",
        "CDUP",
        "XCUP",
        "PWD",
        "CWD nowhere",
        "CWD README",
        "CWD",
        "CWD ../../..",
        "PWD",
        "XCWD pub-link",
        "PWD",
        "CWD /",
        "TYPE I",
        "TYPE A",
        "TYPE L 8",
        "TYPE E",
        "TYPE",
        "TYPE A N",
        "TYPE i",
        "TYPE X",
        "MODE S",
        "MODE B",
        "MODE",
        "STRU F",
        "STRU R",
        "STRU",
        "SIZE README",
        "SIZE pub",
        "SIZE nowhere",
        "SIZE",
        "SIZE /pub/a.txt",
        "SIZE link",
        "MDTM README",
        "MDTM y2k.txt",
        "MDTM future.bin",
        "MDTM pub",
        "MDTM nowhere",
        "MDTM",
        "REST 5",
        "REST abc",
        "REST",
        "REST -1",
        "REST 0",
        "NOOP",
        "NOOP x",
        "SYST",
        "ALLO",
        "ALLO 100",
        "ACCT",
        "ACCT x",
        "HELP",
        "HELP LIST",
        "FEAT",
        "FEAT x",
        "OPTS UTF8 ON",
        "OPTS UTF8 OFF",
        "OPTS UTF8",
        "OPTS MLST type;",
        "OPTS FOO",
        "STAT",
        "PASV",
        "EPSV",
        "EPSV 1",
        "EPSV 2",
        "EPSV 3",
        "EPSV x",
        "PORT 127,0,0,1,156,64",
        "PORT 127,0,0,1,0,21",
        "PORT 10,1,2,3,156,64",
        "PORT 127,0,0,1,300,1",
        "PORT 127,0,0,1,156",
        "PORT x",
        "PORT",
        "EPRT |1|127.0.0.1|40000|",
        "EPRT |1|10.0.0.1|40000|",
        "EPRT |1|127.0.0.1|80|",
        "EPRT |2|::1|40000|",
        "EPRT |3|x|5000|",
        "EPRT |1|127.0.0.1|0|",
        "EPRT |1|127.0.0.1|",
        "EPRT !1!127.0.0.1!40000!",
        "EPRT x",
        "EPRT",
        "RETR README",
        "<RETR README",
        "REST 3",
        "<RETR README",
        "<RETR nowhere",
        "<RETR pub",
        "<RETR private.txt",
        "<RETR name with spaces.txt",
        "<RETR link",
        "<RETR dangling",
        "^RETR README",
        "^LIST pub",
        "^NLST",
        "^RETR nowhere",
        // A refused PORT clears any data connection setup: MLSD's reply
        // does not depend on the steps before.
        "PORT x",
        "MLSD",
        "MLST",
        "MLST README",
        "SITE",
        "SITE HELP",
        "SITE CHMOD 644 README",
        "SITE UMASK",
        "SITE UMASK 022",
        "SITE FOO",
        "STOR x",
        "APPE x",
        "STOU",
        "MKD x",
        "XMKD x",
        "RMD pub",
        "XRMD pub",
        "DELE README",
        "RNTO x",
        "RNFR README",
        "RNTO x",
        "HOST x",
        "XYZZY",
        "NOOP\0x",
        "CWD pub\0x",
        "REIN",
        "SMNT x",
        "AUTH TLS",
        "PBSZ 0",
        "PROT P",
        "QUIT",
    ],
};

const LISTINGS: Session = Session {
    name: "listings",
    steps: &[
        "USER anonymous",
        "PASS guest@example.org",
        "<LIST",
        "<LIST -l",
        "<LIST -a",
        "<LIST -la",
        "<LIST -al",
        "<LIST -R",
        "<LIST -lR",
        "<LIST -d pub",
        "<LIST pub",
        "<LIST /pub/sub",
        "<LIST -a pub/sub",
        "<LIST README",
        "<LIST name with spaces.txt",
        "<LIST nowhere",
        "<LIST link",
        "<LIST pub-link",
        "<LIST dangling",
        "<LIST empty",
        "<LIST *.txt",
        "<LIST p*",
        "<LIST -x",
        "<LIST --",
        "<NLST",
        "<NLST -a",
        "<NLST -l",
        "<NLST -R",
        "<NLST pub",
        "<NLST nowhere",
        "<NLST *.txt",
        "<NLST README",
        "STAT .",
        "STAT README",
        "STAT pub",
        "STAT nowhere",
        "STAT -la",
        "STAT -la pub",
        "STAT -R",
        "STAT *.txt",
        "CWD pub",
        "<LIST",
        "<NLST",
        "<LIST ..",
        "QUIT",
    ],
};

const EPSV_ALL: Session = Session {
    name: "epsv-all",
    steps: &[
        "USER anonymous",
        "PASS guest@example.org",
        "EPSV ALL",
        "PASV",
        "PORT 127,0,0,1,156,64",
        "EPRT |1|127.0.0.1|40000|",
        "EPSV",
        "EPSV 3",
        "QUIT",
    ],
};

const WRITES: Session = Session {
    name: "writes",
    steps: &[
        "USER anonymous",
        "PASS guest@example.org",
        "MKD up/newdir",
        "MKD up/newdir",
        "XMKD up/dir with space",
        "MKD /up/abs",
        "MKD nowhere/x",
        "MKD",
        "RMD up/newdir",
        "RMD up/newdir",
        "RMD up/old.txt",
        "RMD",
        ">STOR up/new.txt",
        "SIZE up/new.txt",
        ">STOR up/new.txt",
        ">APPE up/new.txt",
        "SIZE up/new.txt",
        ">APPE up/fresh.txt",
        ">STOR nowhere/x",
        ">STOR",
        "DELE up/fresh.txt",
        "DELE up/fresh.txt",
        "DELE",
        "RNFR up/new.txt",
        "RNTO up/renamed.txt",
        "RNFR up/nowhere",
        "RNTO up/x",
        "RNFR up/renamed.txt",
        "NOOP",
        "RNTO up/again.txt",
        "RNFR",
        "RNTO",
        "RNFR up/old.txt",
        "RNTO nowhere/x",
        "SIZE up/renamed.txt",
        "SITE CHMOD 600 up/renamed.txt",
        "SITE CHMOD",
        "SITE CHMOD 999 up/renamed.txt",
        "SITE UMASK 077",
        "SITE UMASK",
        "SITE UMASK 8",
        "DELE up/renamed.txt",
        "DELE README",
        "DELE up",
        "MKD up/old.txt",
        ">STOU up/old.txt",
        ">STOU",
        "MDTM 20200101000000 up/old.txt",
        "MDTM up/old.txt",
        "MDTM 2020 up/old.txt",
        "REST 4",
        ">STOR up/rest.txt",
        "SIZE up/rest.txt",
        "MDTM 20200101000000 up/rest.txt",
        "MDTM up/rest.txt",
        "MDTM 19991231235959.5 up/rest.txt",
        "MDTM up/rest.txt",
        "MDTM 20200101 up/rest.txt",
        "MDTM up/rest.txt",
        "QUIT",
    ],
};

const LOCAL_WRITES: Session = Session {
    name: "local-writes",
    steps: &[
        "USER anonymous",
        "PASS guest@example.org",
        "USER $USER",
        "PASS wrong",
        "USER $USER",
        "PASS $PASS",
        "PWD",
        "STAT",
        "<LIST -la",
        "<LIST home",
        "CWD home",
        "MKD d",
        "MKD d",
        "RMD d",
        ">STOR new.txt",
        ">APPE new.txt",
        "SIZE new.txt",
        "RNFR new.txt",
        "RNTO moved.txt",
        "RNTO moved.txt",
        "SITE CHMOD 640 moved.txt",
        "SITE CHMOD 640 nowhere",
        "SITE CHMOD x moved.txt",
        "SITE UMASK 027",
        "SITE UMASK",
        "DELE moved.txt",
        "DELE /README",
        "MKD /newdir",
        "RNFR /README",
        "RNTO /x",
        "CWD /..",
        "PWD",
        "QUIT",
    ],
};

const HIDDEN: Session = Session {
    name: "hide-deny",
    steps: &[
        "USER anonymous",
        "PASS guest@example.org",
        "<LIST",
        "<LIST -a",
        "<NLST",
        "<LIST run.sh",
        "<RETR run.sh",
        "SIZE run.sh",
        "<RETR private.txt",
        "SIZE private.txt",
        "MDTM private.txt",
        "<LIST private.txt",
        "CWD empty",
        "CWD /",
        "STAT .",
        "QUIT",
    ],
};

/// Only root's files: vsftpd, chrooted, may not resolve a user made during
/// the run (it showed the test user's number), which is no behaviour to copy.
const USERDB: Session = Session {
    name: "userdb",
    steps: &["USER anonymous", "PASS guest@example.org", "<LIST y2k.txt", "<LIST -la pub", "STAT pub/sub", "QUIT"],
};

const GREETING: Session = Session { name: "greeting", steps: &["QUIT"] };

const NO_LIST: Session = Session {
    name: "no-list",
    steps: &[
        "USER anonymous",
        "PASS guest@example.org",
        "<LIST",
        "<NLST",
        "STAT .",
        "STAT",
        "<RETR README",
        "SIZE README",
        "PWD",
        "CWD pub",
        "MKD x",
        "NOOP",
        "FEAT",
        "QUIT",
    ],
};

/// One observed exchange: what was sent and what came back (normalised).
struct Exchange {
    cmd: String,
    reply: String,
}

/// Replies that depend on the server identity or the moment, made comparable
/// here and only here:
/// - PASV/EPSV port numbers (each server picks its own free port);
/// - the last line of `STAT`, which names the server and its version (ftpd's
///   also its data plane);
/// - the `unique` fact of ftpd's MLST/MLSD (device and inode numbers);
/// - an MDTM time within the hour: a file uploaded during the test.
///
/// The banner is not normalised: both configs set `ftpd_banner`. Every other
/// MDTM is of a file whose time the tree or an `MDTM TIME FILE` fixes.
fn normalise(reply: &str) -> String {
    let mut out = String::new();
    for line in reply.split_inclusive("\r\n") {
        let l = if let Some(rest) = line.strip_prefix("227 Entering Passive Mode (") {
            // (h1,h2,h3,h4,p1,p2): keep the address, hide the port.
            let addr: Vec<&str> = rest.split(',').take(4).collect();
            format!("227 Entering Passive Mode ({},*,*).\r\n", addr.join(","))
        } else if line.starts_with("229 Entering Extended Passive Mode (|||") {
            "229 Entering Extended Passive Mode (|||*|)\r\n".to_string()
        } else if line.starts_with("     vsFTPd ") || line.starts_with("     ftpd ") {
            "     SERVER VERSION\r\n".to_string()
        } else if line.strip_prefix("213 ").is_some_and(|t| is_recent_mdtm(t.trim_end())) {
            // The time of a file uploaded during the test: the two servers
            // wrote it a second apart, or not.
            "213 (a time during the test)\r\n".to_string()
        } else if let Some(at) = line.find("unique=") {
            let end = line[at..].find(';').map_or(line.len(), |e| at + e);
            format!("{}unique=*{}", &line[..at], &line[end..])
        } else {
            line.to_string()
        };
        out.push_str(&l);
    }
    out
}

/// Whether `t` is an MDTM time (`YYYYMMDDHHMMSS`, UTC) within an hour of now.
fn is_recent_mdtm(t: &str) -> bool {
    if t.len() != 14 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap_or(0);
    let (y, m, d) = (n(0..4), n(4..6), n(6..8));
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + n(8..10) * 3600 + n(10..12) * 60 + n(12..14);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    (secs - i64::try_from(now).unwrap_or(0)).abs() < 3600
}

/// A reply as one table cell: CRLFs shown as `\n`, the last one dropped.
fn show(text: &str) -> String {
    text.strip_suffix("\r\n").unwrap_or(text).replace("\r\n", "\\n").replace('\r', "\\r")
}

fn substitute(step: &str, user: &LocalUser) -> String {
    step.replace("$USER", &user.name).replace("$PASS", &user.password)
}

/// Runs a session against a server; returns what was exchanged.
fn run_session(port: u16, session: &Session, user: &LocalUser) -> Vec<Exchange> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = Ftp::connect(addr);
    let mut out = Vec::new();
    let Some((_, greeting)) = c.try_read_reply() else {
        return vec![Exchange { cmd: "(connect)".into(), reply: "(closed)".into() }];
    };
    out.push(Exchange { cmd: "(connect)".into(), reply: normalise(&greeting) });
    for step in session.steps {
        let (data_cmd, upload, active) = match step.as_bytes().first() {
            Some(b'<') => (Some(substitute(&step[1..], user)), false, false),
            Some(b'>') => (Some(substitute(&step[1..], user)), true, false),
            Some(b'^') => (Some(substitute(&step[1..], user)), false, true),
            _ => (None, false, false),
        };
        let Some(line) = data_cmd else {
            let line = substitute(step, user);
            let reply = send(&mut c, &line);
            let closed = reply.is_none();
            out.push(Exchange { cmd: shown_cmd(&line), reply: reply.unwrap_or_else(|| "(closed)".into()) });
            if closed {
                break;
            }
            continue;
        };
        let (setup, listener) = if active {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind a data listener");
            let p = l.local_addr().expect("local addr").port();
            (format!("PORT 127,0,0,1,{},{}", p >> 8, p & 0xff), Some(l))
        } else {
            ("PASV".to_string(), None)
        };
        let shown_setup = if active { "PORT 127,0,0,1,*,*" } else { "PASV" };
        let raw = c.send_raw(format!("{setup}\r\n").as_bytes()).ok().and_then(|()| c.try_read_reply());
        let Some((_, raw_setup)) = raw else {
            out.push(Exchange { cmd: shown_setup.into(), reply: "(closed)".into() });
            break;
        };
        out.push(Exchange { cmd: shown_setup.into(), reply: normalise(&raw_setup) });
        let mut data = if active {
            None
        } else {
            pasv_addr(&raw_setup).and_then(|a| TcpStream::connect(("127.0.0.1", a.port())).ok())
        };
        let first = c.send_raw(format!("{line}\r\n").as_bytes()).ok().and_then(|()| c.try_read_reply());
        let Some((_, first)) = first else {
            out.push(Exchange { cmd: line, reply: "(closed)".into() });
            break;
        };
        let first = normalise(&first);
        let mut reply = first.clone();
        let mut bytes = Vec::new();
        if first.starts_with('1') {
            if let Some(l) = &listener {
                data = accept_within(l, Duration::from_secs(10));
            }
            if let Some(mut d) = data.take() {
                d.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                if upload {
                    let _ = d.write_all(UPLOAD);
                } else {
                    let _ = d.read_to_end(&mut bytes);
                }
            }
            match c.try_read_reply() {
                Some((_, end)) => reply.push_str(&normalise(&end)),
                None => reply.push_str("(closed)"),
            }
        }
        drop(data);
        out.push(Exchange { cmd: line.clone(), reply });
        if !upload {
            out.push(Exchange { cmd: format!("{line} (data)"), reply: String::from_utf8_lossy(&bytes).into_owned() });
        }
    }
    // Sessions end with QUIT: wait for the server to close, so that the next
    // session's "client count" (STAT) does not race this one's end.
    let mut s = c.stream();
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = std::io::copy(&mut s, &mut std::io::sink());
    out
}

/// PASS arguments are not shown (they can be a real password); a NUL byte
/// is shown as `\0`.
fn shown_cmd(line: &str) -> String {
    if line.starts_with("PASS ") && !line.contains('@') && line != "PASS wrong" && line != "PASS again" {
        "PASS (password)".into()
    } else {
        line.replace('\0', "\\0")
    }
}

/// Sends a line; returns the reply, and the final reply too after a 1xx
/// (a data command sent without a data connection set up by this step).
fn send(c: &mut Ftp, line: &str) -> Option<String> {
    c.send_raw(format!("{line}\r\n").as_bytes()).ok()?;
    let (code, mut text) = c.try_read_reply()?;
    if code < 200 && !line.starts_with("PASV") {
        text.push_str(&c.try_read_reply().map_or_else(|| "(closed)".into(), |(_, t)| t));
    }
    Some(normalise(&text))
}

// ---------------------------------------------------------------------------
// Local user

/// A system user for the local-user configuration, removed on drop.
struct LocalUser {
    name: String,
    password: String,
}

impl LocalUser {
    fn new(home: &Path) -> Self {
        // A fixed name: it shows in replies (STAT), which the table quotes.
        let name = "ftpdvsdiff".to_string();
        let _ = Command::new("userdel").arg(&name).stderr(Stdio::null()).status();
        run_ok(Command::new("useradd").args(["-M", "-d"]).arg(home).args(["-s", "/bin/sh", &name]));
        let password = format!("pw-{name}-Secret");
        let mut chpasswd = Command::new("chpasswd").stdin(Stdio::piped()).spawn().expect("chpasswd");
        writeln!(chpasswd.stdin.as_mut().expect("stdin"), "{name}:{password}").expect("write");
        assert!(chpasswd.wait().expect("chpasswd").success());
        Self { name, password }
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).stderr(Stdio::null()).status();
    }
}

// ---------------------------------------------------------------------------
// The table of intended differences

/// One row of the table: the exchange it allows, and whether it was seen.
struct Row {
    cmd: String,
    vsftpd: String,
    ftpd: String,
    seen: bool,
}

/// Splits a markdown table row on `|`s not escaped as `\|`.
fn cells(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.trim().trim_start_matches('|').chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().expect("a cell").push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            _ => out.last_mut().expect("a cell").push(ch),
        }
    }
    out.into_iter()
        .map(|c| {
            let c = c.trim();
            c.strip_prefix('`').and_then(|c| c.strip_suffix('`')).unwrap_or(c).to_string()
        })
        .collect()
}

/// Reads the table: rows after the `| command sent | vsftpd | ftpd | why |` header.
fn read_table() -> Vec<Row> {
    let path = workspace().join(TABLE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows = Vec::new();
    let (mut in_table, mut header) = (false, false);
    for line in text.lines() {
        if !line.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        let c = cells(line);
        if c.first().is_some_and(|h| h == "command sent") {
            (in_table, header) = (true, true);
            continue;
        }
        if !in_table || c.iter().all(|x| x.chars().all(|ch| ch == '-' || ch == ':' || ch == ' ')) {
            continue;
        }
        assert!(c.len() >= 4 && !c[3].is_empty(), "{TABLE}: a row needs command, vsftpd, ftpd and why: {line}");
        let unempty = |s: &str| if s == "(none)" { String::new() } else { s.to_string() };
        rows.push(Row { cmd: c[0].clone(), vsftpd: unempty(&c[1]), ftpd: unempty(&c[2]), seen: false });
    }
    assert!(header, "{TABLE} has no table with a `command sent` header");
    rows
}

// ---------------------------------------------------------------------------

#[test]
fn ftpd_answers_like_vsftpd() {
    if let Err(why) = ensure_vsftpd() {
        return ftpd_tests::cannot_run(
            "vsftpd_diff::ftpd_answers_like_vsftpd",
            &format!("vsftpd is not available: {why}"),
        );
    }
    let started = Instant::now();
    std::fs::create_dir_all(SECURE_CHROOT).expect("secure_chroot_dir");
    let work = PathBuf::from(format!("/tmp/ftpd-vsftpd-diff-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    chmod(&work, 0o755);
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(work.clone());
    let tree = work.join("tree");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    // Thirty days ago, on a whole minute: listings show month, day and time.
    let recent = i64::try_from(now - 30 * 86_400).expect("fits") / 60 * 60;
    let user = LocalUser::new(&tree);
    make_tree(&tree, recent, Some(&user.name));
    let banner = work.join("banner.txt");
    std::fs::write(&banner, "Welcome to the\ndifferential test.\n\nBe nice.\n").expect("banner");
    chmod(&banner, 0o644);

    let root = format!("anon_root={}", tree.display());
    let anon = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["anonymous_enable=YES".to_string(), root.clone(), "local_enable=YES".into()];
        v.extend(extra.iter().map(|s| (*s).to_string()));
        v
    };
    let confs = vec![
        Conf {
            name: "anonymous, read-only",
            lines: anon(&[]),
            sessions: vec![&PRELOGIN, &BROWSE, &LISTINGS, &EPSV_ALL],
        },
        Conf {
            name: "anonymous, all writes",
            lines: anon(&[
                "write_enable=YES",
                "anon_upload_enable=YES",
                "anon_mkdir_write_enable=YES",
                "anon_other_write_enable=YES",
                "anon_umask=022",
            ]),
            sessions: vec![&WRITES],
        },
        Conf {
            name: "anonymous, uploads only",
            lines: anon(&["write_enable=YES", "anon_upload_enable=YES", "anon_umask=022"]),
            sessions: vec![&WRITES],
        },
        Conf {
            name: "anonymous, write_enable=NO with anon_* on",
            lines: anon(&[
                "write_enable=NO",
                "anon_upload_enable=YES",
                "anon_mkdir_write_enable=YES",
                "anon_other_write_enable=YES",
            ]),
            sessions: vec![&WRITES],
        },
        Conf {
            name: "hide_ids, ls_recurse_enable, force_dot_files",
            lines: anon(&["hide_ids=YES", "ls_recurse_enable=YES", "force_dot_files=YES"]),
            sessions: vec![&LISTINGS],
        },
        Conf {
            name: "hide_file, deny_file",
            lines: anon(&["hide_file={*.sh}", "deny_file={private*,empty}", "anon_world_readable_only=NO"]),
            sessions: vec![&HIDDEN],
        },
        Conf { name: "text_userdb_names", lines: anon(&["text_userdb_names=YES"]), sessions: vec![&USERDB] },
        Conf { name: "dirlist_enable=NO", lines: anon(&["dirlist_enable=NO"]), sessions: vec![&NO_LIST] },
        Conf {
            name: "cmds_allowed",
            lines: anon(&["cmds_allowed=USER,PASS,QUIT,PASV,RETR,PWD,FEAT"]),
            sessions: vec![&NO_LIST, &PRELOGIN],
        },
        Conf {
            name: "local users only, no anonymous root",
            lines: vec![
                "anonymous_enable=NO".into(),
                "anon_root=/nonexistent/ftpd-vsftpd-diff".into(),
                "local_enable=YES".into(),
                "write_enable=YES".into(),
                "local_umask=022".into(),
                "chroot_local_user=YES".into(),
                format!("local_root={}", tree.display()),
            ],
            sessions: vec![&LOCAL_WRITES],
        },
        Conf {
            name: "anonymous root is ftp_username's home",
            lines: vec!["anonymous_enable=YES".into(), format!("ftp_username={}", user.name)],
            sessions: vec![&LISTINGS],
        },
        Conf {
            name: "banner_file",
            lines: vec!["anonymous_enable=YES".into(), root.clone(), format!("banner_file={}", banner.display())],
            sessions: vec![&GREETING],
        },
    ];

    let mut rows = read_table();
    let mut unlisted = String::new();
    let (mut exchanges, mut sessions_run) = (0usize, 0usize);
    let (mut verbs, mut cases) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    // For debugging: VSFTPD_DIFF_ONLY=WORD runs only the configurations whose
    // name contains WORD (the stale-row check is then off).
    let only = std::env::var("VSFTPD_DIFF_ONLY").ok();
    for conf in confs.iter().filter(|c| only.as_ref().is_none_or(|w| c.name.contains(w.as_str()))) {
        let text = |port: u16| format!("{}{}\n", common(port), conf.lines.join("\n"));
        let mut servers = BTreeMap::new();
        for kind in ["vsftpd", "ftpd"] {
            let cmd = Command::new(if kind == "vsftpd" { PathBuf::from(VSFTPD) } else { ftpd_bin() });
            servers.insert(kind, start_retrying(cmd, kind, &work, text));
        }
        // A server that does not start is a difference like any other.
        let runs: Vec<(&str, BTreeMap<&str, Vec<Exchange>>)> = if servers.values().all(Result::is_ok) {
            conf.sessions
                .iter()
                .map(|session| {
                    let mut got = BTreeMap::new();
                    for (kind, d) in &servers {
                        let d = d.as_ref().expect("started");
                        make_tree(&tree, recent, Some(&user.name));
                        let t = Instant::now();
                        let t_run = run_session(d.port, session, &user);
                        if std::env::var_os("VSFTPD_DIFF_DUMP").is_some() {
                            for e in &t_run {
                                eprintln!("{kind}> {}\n{}", e.cmd, e.reply.trim_end());
                            }
                        }
                        got.insert(*kind, t_run);
                        eprintln!("[{}] {} on {kind}: {:.2} s", conf.name, session.name, t.elapsed().as_secs_f64());
                    }
                    (session.name, got)
                })
                .collect()
        } else {
            let status = |d: &Result<Daemon, String>| Exchange {
                cmd: "(start)".into(),
                reply: match d {
                    Ok(_) => "listening".into(),
                    Err(e) => format!("does not start: {}", e.lines().last().unwrap_or_default()),
                },
            };
            let got = servers.iter().map(|(k, d)| (*k, vec![status(d)])).collect();
            vec![("startup", got)]
        };
        for (session_name, got) in runs {
            sessions_run += 1;
            let (v, f) = (&got["vsftpd"], &got["ftpd"]);
            for i in 0..v.len().max(f.len()) {
                let none = Exchange { cmd: "(nothing)".into(), reply: "(nothing)".into() };
                let (ve, fe) = (v.get(i).unwrap_or(&none), f.get(i).unwrap_or(&none));
                exchanges += 1;
                if !ve.cmd.starts_with('(') && !ve.cmd.ends_with(" (data)") {
                    verbs.insert(ve.cmd.split(' ').next().unwrap_or_default().to_ascii_uppercase());
                    cases.insert(ve.cmd.clone());
                }
                if ve.cmd == fe.cmd && ve.reply == fe.reply {
                    continue;
                }
                let (vs, fs) = (show(&ve.reply), show(&fe.reply));
                let cmd = if ve.cmd == fe.cmd { ve.cmd.clone() } else { format!("{} / {}", ve.cmd, fe.cmd) };
                match rows.iter_mut().find(|r| r.cmd == cmd && r.vsftpd == vs && r.ftpd == fs) {
                    Some(r) => r.seen = true,
                    None => {
                        let esc = |s: &str| if s.is_empty() { "(none)".to_string() } else { s.replace('|', "\\|") };
                        let _ = writeln!(
                            unlisted,
                            "[{} / {session_name}]\n| `{}` | `{}` | `{}` | ? |",
                            conf.name,
                            esc(&cmd),
                            esc(&vs),
                            esc(&fs)
                        );
                    }
                }
            }
        }
        for (kind, d) in servers.iter().filter_map(|(k, d)| Some((k, d.as_ref().ok()?))) {
            if d.log().contains("panicked") {
                panic!("[{}] {kind} panicked: {}", conf.name, d.log());
            }
        }
    }
    let stale: Vec<String> = rows
        .iter()
        .filter(|r| !r.seen && only.is_none())
        .map(|r| format!("| `{}` | `{}` | `{}` |", r.cmd, r.vsftpd, r.ftpd))
        .collect();
    let _ = writeln!(
        std::io::stderr(),
        "vsftpd_diff: {} configurations, {sessions_run} sessions, {exchanges} exchanges, {} commands in {} \
         distinct command lines, {:.1} s",
        confs.len(),
        verbs.len(),
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "differences from vsftpd not listed in {TABLE}:\n{unlisted}\nrows of {TABLE} that no longer occur:\n{}",
        stale.join("\n")
    );
}
