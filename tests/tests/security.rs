//! Defects found by attacking a running server (issue 10): each test replays
//! the attack and checks that it no longer works.

use std::{
    io::Read,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use ftpd_tests::{Ftp, Server, ftpd_passwd, is_root, pasv_addr, run_ok, served_by_nobody, status_field, wait_for};

/// A TCP connection from `src` (any port) to `dst`, with a receive buffer
/// of `rcvbuf` bytes if given (set before the handshake, so the window the
/// server sees stays small).
fn connect_from(src: Ipv4Addr, dst: SocketAddr, rcvbuf: Option<i32>) -> TcpStream {
    let how = ftpd_tests::SocketSetup { source: Some(src.into()), rcvbuf, mss: None };
    ftpd_tests::tcp_connect(dst, how).unwrap_or_else(|e| panic!("connect {dst} from {src}: {e}"))
}

/// An anonymous session whose control connection comes from `src`.
fn login_from(server: &Server, src: Ipv4Addr) -> Ftp {
    let mut c = Ftp::from_stream(connect_from(src, server.addr, None));
    assert_eq!(c.read_reply().0, 220, "greeting");
    c.cmd_ok("USER anonymous", 230);
    c
}

/// PASV, then a data connection from `src` (the control connection's
/// address: ftpd refuses data connections from elsewhere).
fn pasv_from(c: &mut Ftp, src: Ipv4Addr, rcvbuf: Option<i32>) -> TcpStream {
    let text = c.cmd_ok("PASV", 227);
    let addr = pasv_addr(&text).unwrap_or_else(|| panic!("PASV: {text}"));
    connect_from(src, addr.into(), rcvbuf)
}

/// A whole data command over a connection from `src`.
fn transfer_from(c: &mut Ftp, src: Ipv4Addr, line: &str) -> (Vec<u8>, u16, String) {
    let data = pasv_from(c, src, None);
    c.transfer_on(data, line)
}

fn put(path: &Path, mode: u32, owner: &str) {
    std::fs::write(path, path.file_name().expect("name").as_encoded_bytes()).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    run_ok(Command::new("chown").arg(owner).arg(path));
}

fn mkdir(path: &Path, mode: u32, owner: &str) {
    std::fs::create_dir(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    run_ok(Command::new("chown").arg(owner).arg(path));
}

/// `setfacl` (Debian's `acl` package), or `None` when it is not installed.
fn setfacl(args: &[&str], path: &Path) -> Option<()> {
    let out = Command::new("setfacl").args(args).arg(path).output().ok()?;
    assert!(out.status.success(), "setfacl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Some(())
}

/// Defect 1: the front opened anonymous downloads itself and checked only the
/// file's mode bits for `ftp_username`, so a file in a directory that
/// `ftp_username` may not search (mode bits or an ACL), or with an ACL entry
/// that denies it, was served while CWD into it was refused.
#[test]
fn anonymous_downloads_obey_directory_search_permission_and_acls() {
    if !ftpd_tests::root_or_skip(
        "security::anonymous_downloads_obey_directory_search_permission_and_acls",
        "files of other owners, privilege separation",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let root = dir.path();
    put(&root.join("open.txt"), 0o644, "root:root");
    // daemon's group may not search it; everyone else (the front's nobody) may.
    mkdir(&root.join("nosearch"), 0o705, "root:daemon");
    put(&root.join("nosearch/f.txt"), 0o644, "root:root");
    // Open to all by its bits, closed to daemon by an ACL entry.
    mkdir(&root.join("acl"), 0o755, "root:root");
    put(&root.join("acl/f.txt"), 0o644, "root:root");
    put(&root.join("acl-file.txt"), 0o644, "root:root");
    let acls = setfacl(&["-m", "u:daemon:---"], &root.join("acl"))
        .and_then(|()| setfacl(&["-m", "u:daemon:---"], &root.join("acl-file.txt")));
    if acls.is_none() {
        // Allowed to skip, the rest of the test still runs.
        ftpd_tests::cannot_run(
            "security::anonymous_downloads_obey_directory_search_permission_and_acls",
            "setfacl is not installed (Debian: apt-get install acl) for its ACL cases",
        );
    }
    // What the kernel says daemon may do: the reference the server must match.
    let as_daemon = |p: &str| {
        Command::new("setpriv")
            .args(["--reuid=daemon", "--regid=daemon", "--init-groups", "cat"])
            .arg(root.join(p))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let server = Server::start(root, &["ftp_username=daemon"]);
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let mut cases = vec![("open.txt", true), ("nosearch/f.txt", false)];
    if acls.is_some() {
        cases.extend([("acl/f.txt", false), ("acl-file.txt", false)]);
    }
    for (path, readable) in cases {
        assert_eq!(as_daemon(path), readable, "daemon reading {path} directly");
        // Twice: the second time the worker exists and any fast path is warm.
        for _ in 0..2 {
            let (bytes, code, text) = c.transfer(&format!("RETR {path}"));
            if readable {
                assert_eq!(code, 226, "RETR {path}: {text}");
                assert_eq!(bytes, Path::new(path).file_name().unwrap().as_encoded_bytes());
            } else {
                assert_eq!(code, 550, "RETR {path} must be refused as for ftp_username: {text}");
            }
            let (code, text) = c.cmd(&format!("SIZE {path}"));
            assert_eq!(code, if readable { 213 } else { 550 }, "SIZE {path}: {text}");
        }
    }
    c.cmd_ok("CWD nosearch", 550);
    if acls.is_some() {
        c.cmd_ok("CWD acl", 550);
    }
    // With ftp_username = nopriv_user (the default nobody), an ACL that
    // denies nobody is obeyed too.
    if acls.is_some() {
        put(&root.join("no-nobody.txt"), 0o644, "root:root");
        setfacl(&["-m", "u:nobody:---"], &root.join("no-nobody.txt"));
        let server = Server::start(root, &[]);
        let mut c = server.login();
        for _ in 0..2 {
            c.cmd_ok("TYPE I", 200);
            let (bytes, code, _) = c.transfer("RETR open.txt");
            assert_eq!((bytes.as_slice(), code), (&b"open.txt"[..], 226));
            let (_, code, text) = c.transfer("RETR no-nobody.txt");
            assert_eq!(code, 550, "{text}");
        }
    }
}

/// Median of a few durations.
/// Serialises the tests that flood the machine with those that time it:
/// the test harness runs a file's tests in parallel, and a password flood
/// beside a timing comparison makes the comparison measure the flood.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a timing comparison (`round` says whether it held, and its figures)
/// until it holds, at most three times: a leak shows in every round, while
/// a burst of other work on the machine (a build, in CI) rarely spans
/// three. Returns whether one held, and every round's figures.
fn up_to_three_rounds(mut round: impl FnMut() -> (bool, String)) -> (bool, String) {
    let mut said = Vec::new();
    for _ in 0..3 {
        let (held, figures) = round();
        eprintln!("fastest PASS: {figures}");
        said.push(figures);
        if held {
            return (true, said.join("; "));
        }
    }
    (false, said.join("; "))
}

/// The fastest of several timings: the cost of the path itself. Noise from
/// other work on the machine only ever adds time, and it moved the median
/// of 20 tries by 40% while two other processes kept both cores busy; the
/// fastest tries of both kinds stayed within 5% of each other.
fn fastest(v: &[Duration]) -> Duration {
    v.iter().copied().min().expect("timings")
}

/// Settings for virtual users from `users`, confined to `root`.
fn virtual_settings(users: &Path, root: &Path) -> Vec<String> {
    vec![
        "local_enable=YES".into(),
        "guest_enable=YES".into(),
        "guest_username=nobody".into(),
        format!("virtual_users_file={}", users.display()),
        format!("local_root={}", root.display()),
        "allow_writeable_chroot=YES".into(),
        "delay_failed_login=0".into(),
    ]
}

/// Defect 2: PASS for an unknown virtual user was answered in 2.9 ms, for a
/// known one with a wrong password in 18.5 ms: the names could be listed.
#[test]
fn unknown_virtual_users_cost_as_much_as_known_ones() {
    let _alone = alone();
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let users = dir.path().join("vusers");
    ftpd_passwd(&users, "vera", "right");
    ftpd_passwd(&users, "vince", "other");
    let settings = virtual_settings(&users, dir.path());
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let server = Server::start(dir.path(), &settings);
    let pass = |user: &str| {
        let mut c = server.connect();
        c.cmd_ok(&format!("USER {user}"), 331);
        let t = Instant::now();
        c.cmd_ok("PASS wrong", 530);
        t.elapsed()
    };
    // Warm up (the first login starts the worker machinery, caches the file).
    pass("vera");
    pass("nobody-here");
    let rounds = up_to_three_rounds(|| {
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for i in 0..20 {
            known.push(pass("vera"));
            unknown.push(pass(&format!("ghost{i}")));
        }
        let (k, u) = (fastest(&known), fastest(&unknown));
        let ratio = k.as_secs_f64() / u.as_secs_f64();
        let said = format!("known {k:?} vs unknown {u:?} (ratio {ratio:.2})");
        ((0.7..=1.3).contains(&ratio), said)
    });
    assert!(rounds.0, "a user name shows in the timing, fastest PASS: {}", rounds.1);
    // And the right password still works.
    let mut c = server.connect();
    c.cmd_ok("USER vera", 331);
    c.cmd_ok("PASS right", 230);
}

/// F2: unknown names were checked against a dummy of the file's first
/// entry only, so in a file that mixes hashes a user whose entry is of
/// another kind (`openssl passwd -6`) answered faster than unknown names.
#[test]
fn unknown_virtual_users_cost_as_much_as_known_ones_in_a_mixed_file() {
    let _alone = alone();
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let users = dir.path().join("vusers");
    ftpd_passwd(&users, "vera", "right");
    // `openssl passwd -6 -salt saltsalt right`
    let sha = "$6$saltsalt$gzY3OAolfMFSB9Ld7iMdOQlViFqO3IOPeU0zkHsD.58tcMxRAFD0Qjfi2sjus3i.8aqWarEvFPREqzp18Jm291";
    let text = std::fs::read_to_string(&users).expect("read");
    std::fs::write(&users, format!("{text}sam:{sha}\n")).expect("write");
    let settings = virtual_settings(&users, dir.path());
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let server = Server::start(dir.path(), &settings);
    let pass = |user: &str, password: &str| {
        let mut c = server.connect();
        c.cmd_ok(&format!("USER {user}"), 331);
        let t = Instant::now();
        let code = c.cmd(&format!("PASS {password}")).0;
        (code, t.elapsed())
    };
    assert_eq!(pass("sam", "right").0, 230, "the SHA-512-crypt user logs in");
    assert_eq!(pass("vera", "right").0, 230, "the argon2 user logs in");
    pass("nobody-here", "wrong");
    let rounds = up_to_three_rounds(|| {
        let (mut argon, mut crypt, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..15 {
            argon.push(pass("vera", "wrong").1);
            crypt.push(pass("sam", "wrong").1);
            unknown.push(pass(&format!("ghost{i}"), "wrong").1);
        }
        let (a, c, u) = (fastest(&argon), fastest(&crypt), fastest(&unknown));
        let within = [a, c].iter().all(|k| (0.7..=1.3).contains(&(k.as_secs_f64() / u.as_secs_f64())));
        (within, format!("argon2 user {a:?}, SHA-512-crypt user {c:?}, unknown user {u:?}"))
    });
    assert!(rounds.0, "a user name shows in the timing, fastest PASS: {}", rounds.1);
    assert!(server.log().contains("mixes 2 hash algorithms or parameters"), "no warning about the mix");
}

/// `n` empty files with long names in `root/big`, so that their listing is
/// megabytes: more than the socket buffers of a client that does not read.
fn big_dir(root: &Path, n: u32) {
    let dir = root.join("big");
    std::fs::create_dir(&dir).expect("mkdir big");
    served_by_nobody(&dir);
    let pad = "x".repeat(120);
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i:06}{pad}")), b"").expect("create");
    }
}

/// Defect 3: 64 sessions that start a big LIST and never read took every
/// listing slot of the anonymous worker: every other user got 451 until
/// `data_connection_timeout` (300 s), and the worker kept the memory.
#[test]
fn stalled_listings_from_one_address_do_not_deny_another() {
    let _alone = alone();
    if !ftpd_tests::root_or_skip(
        "security::stalled_listings_from_one_address_do_not_deny_another",
        "a file worker to measure",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    big_dir(dir.path(), 20_000);
    let small = dir.path().join("small");
    std::fs::create_dir(&small).expect("mkdir");
    served_by_nobody(&small);
    std::fs::write(small.join("one.txt"), b"1").expect("write");
    let server = Server::start(dir.path(), &["max_per_ip=0", "max_clients=0", "ftpd_list_stall_timeout=3"]);
    let (a, b) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
    let mut other = login_from(&server, b);
    let (bytes, code, _) = transfer_from(&mut other, b, "NLST small");
    assert_eq!((String::from_utf8_lossy(&bytes).contains("one.txt"), code), (true, 226));
    let worker = *server.workers().first().expect("the anonymous file worker");
    let baseline = status_field(worker, "VmRSS");
    // The attack: 64 listings from one address, never read.
    let mut stalled = Vec::new();
    let mut refused = 0;
    for _ in 0..64 {
        let mut c = login_from(&server, a);
        let data = pasv_from(&mut c, a, Some(2048));
        let (code, text) = c.cmd("LIST big");
        match code {
            150 => stalled.push((c, data)),
            451 => refused += 1,
            _ => panic!("LIST big: {text}"),
        }
    }
    thread::sleep(Duration::from_millis(500));
    let peak = status_field(worker, "VmRSS");
    // Another address lists as usual meanwhile.
    for cmd in ["LIST small", "NLST small", "MLSD small"] {
        let (_, code, text) = transfer_from(&mut other, b, cmd);
        assert_eq!(code, 226, "{cmd} from another address while {} listings stall: {text}", stalled.len());
    }
    assert!(stalled.len() <= 16, "{} listings from one address at once", stalled.len());
    assert_eq!(stalled.len() + refused, 64);
    // Stalled listings end after ftpd_list_stall_timeout, not data_connection_timeout.
    let started = Instant::now();
    for (c, _data) in &mut stalled {
        let (code, text) = c.read_reply();
        assert!(matches!(code, 421 | 426), "a stalled listing ends with an error: {text}");
    }
    assert!(started.elapsed() < Duration::from_secs(8), "stalled listings lasted {:?}", started.elapsed());
    drop(stalled);
    wait_for("the listing threads to end", Duration::from_secs(10), || server.threads_named("listing") == 0);
    let after = status_field(worker, "VmRSS");
    eprintln!("worker RSS: {baseline} KiB before, {peak} KiB with the stalled listings, {after} KiB after");
    assert!(after < baseline + 16 * 1024, "the worker kept {} KiB", after.saturating_sub(baseline));
    // And the address that stalled may list again.
    let mut c = login_from(&server, a);
    let (_, code, text) = transfer_from(&mut c, a, "NLST small");
    assert_eq!(code, 226, "{text}");
}

/// F4: 8 stalled listings from each of 9 addresses (72, more than a
/// worker's 64 listing slots) refused every listing from anyone else with
/// 451 until `ftpd_list_stall_timeout` (30 s). A full worker now ends the
/// oldest listing of the address with the most running instead.
#[test]
fn stalled_listings_from_many_addresses_do_not_deny_another() {
    let _alone = alone();
    if !ftpd_tests::root_or_skip("security::stalled_listings_from_many_addresses_do_not_deny_another", "a file worker")
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    big_dir(dir.path(), 20_000);
    let small = dir.path().join("small");
    std::fs::create_dir(&small).expect("mkdir");
    served_by_nobody(&small);
    std::fs::write(small.join("one.txt"), b"1").expect("write");
    let server = Server::start(dir.path(), &["max_per_ip=0", "max_clients=0"]);
    let mut stalled = Vec::new();
    let (mut started, mut refused) = (0, 0);
    for a in 2..=10u8 {
        let src = Ipv4Addr::new(127, 0, 0, a);
        for _ in 0..8 {
            let mut c = login_from(&server, src);
            let data = pasv_from(&mut c, src, Some(2048));
            let (code, text) = c.cmd("LIST big");
            match code {
                150 => started += 1,
                451 => refused += 1,
                _ => panic!("LIST big: {text}"),
            }
            stalled.push((c, data));
        }
    }
    thread::sleep(Duration::from_millis(300));
    eprintln!("attack: {started} listings started, {refused} refused");
    let t = Instant::now();
    for (i, cmd) in ["LIST small", "NLST small", "MLSD small"].into_iter().enumerate() {
        let src = Ipv4Addr::new(127, 0, 0, 200 + i as u8);
        let mut c = login_from(&server, src);
        let (bytes, code, text) = transfer_from(&mut c, src, cmd);
        assert_eq!(code, 226, "{cmd} from a fresh address while 72 listings stall: {text}");
        assert!(String::from_utf8_lossy(&bytes).contains("one.txt"), "{cmd}: {bytes:?}");
    }
    assert!(t.elapsed() < Duration::from_secs(5), "the fresh address waited {:?}", t.elapsed());
    assert!(server.log().contains("listing preempted"), "no preemption in the log");
}

/// Defect 4: with `ascii_download_enable`, `TYPE A` + `SIZE` of a 4 GiB file
/// read the whole file on the async threads: every other session stalled.
#[test]
fn ascii_size_of_a_huge_file_does_not_stall_other_sessions() {
    let _alone = alone();
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let huge = dir.path().join("huge.txt");
    // Sparse: no disk used, but reading it is 4 GiB of work.
    std::fs::File::create(&huge).expect("create").set_len(4 << 30).expect("set_len");
    std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(dir.path().join("small.txt"), b"a\nb\n").expect("write");
    std::fs::set_permissions(dir.path().join("small.txt"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let server = Server::start(dir.path(), &["ascii_download_enable=YES"]);
    let mut others: Vec<Ftp> = (0..4).map(|_| server.login()).collect();
    let mut c = server.login();
    c.cmd_ok("TYPE A", 200);
    // Small files still get their converted size.
    assert_eq!(c.cmd_ok("SIZE small.txt", 213), "213 6\r\n");
    // One per runtime thread and more: were any of them read on the async
    // threads, every thread would be busy.
    let cpus = thread::available_parallelism().map_or(2, usize::from);
    let mut sizers: Vec<Ftp> = (0..cpus * 2)
        .map(|_| {
            let mut s = server.login();
            s.cmd_ok("TYPE A", 200);
            s
        })
        .collect();
    for s in &mut sizers {
        s.send_raw(b"SIZE huge.txt\r\n").expect("send");
    }
    c.send_raw(b"SIZE huge.txt\r\n").expect("send");
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(2) {
        for o in &mut others {
            let t = Instant::now();
            o.cmd_ok("NOOP", 200);
            worst = worst.max(t.elapsed());
        }
        thread::sleep(Duration::from_millis(10));
    }
    for s in &mut sizers {
        assert_eq!(s.read_reply().0, 550);
    }
    let (code, text) = c.read_reply();
    eprintln!("SIZE huge.txt in TYPE A: {text:?}; slowest NOOP meanwhile {worst:?}");
    assert!(worst < Duration::from_millis(300), "other sessions stalled for {worst:?}");
    assert_eq!((code, text.as_str()), (550, "550 Could not get file size.\r\n"));
    c.cmd_ok("TYPE I", 200);
    assert_eq!(c.cmd_ok("SIZE huge.txt", 213), format!("213 {}\r\n", 4u64 << 30));
}

/// Runs ftpd serving `root` with `settings`, expecting it to refuse to
/// start; returns what it printed.
fn refuses_to_start(root: &Path, settings: &[String]) -> String {
    let mut child = Command::new(ftpd_tests::ftpd_bin())
        .arg("--root")
        .arg(root)
        .args(Server::base_settings(ftpd_tests::free_port()).iter().map(|s| format!("-o{s}")))
        .args(settings.iter().map(|s| format!("-o{s}")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ftpd");
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!("ftpd started: {}", String::from_utf8_lossy(&out.stderr));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success(), "ftpd exited successfully");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Defect 7: a malformed line disabled every virtual login with an error at
/// login time only; duplicates silently took the last; spaces became part of
/// names; a name with `/` (which `ftpd passwd` refuses) was accepted and,
/// with `user_sub_token`, moved the root outside `local_root`.
#[test]
fn a_bad_virtual_users_file_stops_startup_naming_file_line_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let users = dir.path().join("vusers");
    ftpd_passwd(&users, "vera", "right");
    let good = std::fs::read_to_string(&users).expect("read");
    let hash = good.trim().split_once(':').expect("user:hash").1.to_string();
    let base = dir.path().join("v");
    let mut settings = virtual_settings(&users, &base.join("$USER"));
    settings.push("user_sub_token=$USER".into());
    for (line, reason) in [
        ("garbage".to_string(), "expected user:hash"),
        (format!("vera:{hash}"), "vera is already defined on line 1"),
        (format!("ve ra:{hash}"), "user name with a space"),
        (format!("../../etc:{hash}"), "user name with '/'"),
        (format!("..:{hash}"), "user name . or .."),
        ("vince:plain".to_string(), "unsupported hash for vince"),
    ] {
        std::fs::write(&users, format!("{good}{line}\n")).expect("write");
        let err = refuses_to_start(dir.path(), &settings);
        let at = format!("{}:2:", users.display());
        assert!(err.contains(&at) && err.contains(reason), "{line:?}: want {at} and {reason:?} in: {err}");
    }
    // And `ftpd passwd` refuses the same names.
    for name in ["ve ra", "a/b", ".."] {
        let out = ftpd_tests::run(
            Command::new(ftpd_tests::ftpd_bin()).arg("passwd").arg(&users).arg(name).stdin(Stdio::null()),
        );
        assert!(!out.status.success(), "ftpd passwd accepted {name:?}");
    }
}

/// Defect 7, continued: a users file that turns bad while ftpd runs keeps
/// the users read before (and the log says why), instead of refusing every
/// virtual login; a good change is picked up.
#[test]
fn a_virtual_users_file_that_turns_bad_keeps_the_users_read_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let users = dir.path().join("vusers");
    ftpd_passwd(&users, "vera", "right");
    let settings = virtual_settings(&users, dir.path());
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let server = Server::start(dir.path(), &settings);
    let login = |user: &str, password: &str| {
        let mut c = server.connect();
        c.cmd_ok(&format!("USER {user}"), 331);
        c.cmd(&format!("PASS {password}")).0
    };
    assert_eq!(login("vera", "right"), 230);
    ftpd_passwd(&users, "vince", "new");
    assert_eq!(login("vince", "new"), 230, "a user added while ftpd runs");
    let good = std::fs::read_to_string(&users).expect("read");
    std::fs::write(&users, format!("{good}garbage\n")).expect("write");
    assert_eq!(login("vera", "right"), 230, "{}", server.log());
    assert_eq!(login("vince", "new"), 230);
    assert_eq!(login("vera", "wrong"), 530);
    let log = server.log();
    let at = format!("{}:3: expected user:hash", users.display());
    assert!(log.contains(&at) && log.contains("keeping the users read before"), "{log}");
}

/// F1: one argon2 entry with `t=4000000` in the users file made the master
/// compute a dummy hash with that cost on its main loop at startup or on
/// SIGHUP: every login hung at 331, SIGTERM was ignored. Hash costs are now
/// bounded and checked when the file is read, without hashing.
#[test]
fn a_costly_or_unusable_hash_in_the_users_file_is_refused_without_blocking_the_master() {
    let _alone = alone();
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let users = dir.path().join("vusers");
    ftpd_passwd(&users, "vera", "right");
    let good = std::fs::read_to_string(&users).expect("read");
    let hash = good.trim().split_once(':').expect("user:hash").1.to_string();
    assert!(hash.contains("m=19456,t=2,p=1"), "{hash}");
    let costly = hash.replace("t=2,", "t=4000000,");
    let settings = virtual_settings(&users, dir.path());
    let sha_out = "a".repeat(86);
    for (line, reason) in [
        (format!("vince:{costly}"), "t=4000000"),
        (format!("vince:{}", hash.replace("m=19456", "m=4194304")), "m=4194304"),
        (format!("vince:{}", hash.replace("p=1", "p=64")), "p=64"),
        ("vince:$argon2id$v=19$m=19456,t=2,p=1$garbage".to_string(), "without its output"),
        (format!("vince:$6$rounds=900000000$saltsalt${sha_out}"), "rounds=900000000"),
        ("vince:$6$saltsalt$short".to_string(), "86 crypt characters"),
    ] {
        std::fs::write(&users, format!("{good}{line}\n")).expect("write");
        let err = refuses_to_start(dir.path(), &settings);
        let at = format!("{}:2:", users.display());
        assert!(err.contains(&at) && err.contains(reason), "{line:?}: want {at} and {reason:?} in: {err}");
    }
    // While running: the costly line first (it used to set the dummy's cost).
    std::fs::write(&users, &good).expect("write");
    let s: Vec<&str> = settings.iter().map(String::as_str).collect();
    let server = Server::start(dir.path(), &s);
    let login = |user: &str, password: &str| {
        let mut c = server.connect();
        c.cmd_ok(&format!("USER {user}"), 331);
        let t = Instant::now();
        let code = c.cmd(&format!("PASS {password}")).0;
        (code, t.elapsed())
    };
    assert_eq!(login("vera", "right").0, 230);
    std::fs::write(&users, format!("vince:{costly}\n{good}")).expect("write");
    server.sighup();
    let at = format!("{}:1: hash of vince: argon2 cost", users.display());
    wait_for("the reload to report the costly line", Duration::from_secs(3), || server.log().contains(&at));
    assert!(server.log().contains("keeping the users read before"), "{}", server.log());
    for (user, password, want) in [("vera", "right", 230), ("vince", "x", 530), ("ghost", "x", 530)] {
        let (code, took) = login(user, password);
        assert_eq!(code, want, "{user}: {}", server.log());
        assert!(took < Duration::from_secs(2), "{user}: PASS took {took:?}");
    }
    // A file left without users is reported.
    std::fs::write(&users, "# nobody\n").expect("write");
    server.sighup();
    wait_for("the warning about no users", Duration::from_secs(3), || server.log().contains("has no users"));
    // SIGTERM is obeyed at once.
    let t = Instant::now();
    server.stop();
    assert!(t.elapsed() < Duration::from_secs(3), "SIGTERM took {:?}", t.elapsed());
}

/// Defect 5: `SITE CHMOD 6755` set the setuid and setgid bits. vsftpd's
/// chmod allows 0 to 0777 only.
#[test]
fn site_chmod_never_sets_setuid_setgid_or_sticky() {
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("mkdir");
    ftpd_tests::writable_by_all(&home);
    let users = dir.path().join("vusers");
    ftpd_passwd(&users, "vera", "right");
    let mut settings = virtual_settings(&users, &home);
    settings.extend(["write_enable=YES".into(), "virtual_use_local_privs=YES".into()]);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let server = Server::start(dir.path(), &settings);
    let mut c = server.connect();
    c.cmd_ok("USER vera", 331);
    c.cmd_ok("PASS right", 230);
    let (_, code, text) = c.upload("STOR tool", b"#!/bin/sh\n");
    assert_eq!(code, 226, "{text}");
    for (mode, want) in [("6755", 0o755), ("4777", 0o777), ("1777", 0o777), ("2750", 0o750), ("0640", 0o640)] {
        assert_eq!(c.cmd_ok(&format!("SITE CHMOD {mode} tool"), 200), "200 SITE CHMOD command ok.\r\n");
        assert_eq!(ftpd_tests::mode_of(&home.join("tool")), want, "SITE CHMOD {mode}");
    }
    c.cmd_ok("SITE CHMOD 17777 tool", 501);
}

/// Defect 6: `vsftpd_log_file` lines carried raw CR and other control
/// bytes from client names, so a client could forge log lines. vsftpd
/// writes `?` for every unprintable byte.
#[test]
fn log_lines_carry_no_control_bytes_from_client_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    ftpd_tests::writable_by_all(&root);
    let log = dir.path().join("vsftpd.log");
    let xfer = dir.path().join("xferlog");
    let server = Server::start(
        &root,
        &[
            "write_enable=YES",
            "anon_upload_enable=YES",
            "anon_mkdir_write_enable=YES",
            "anon_other_write_enable=YES",
            "xferlog_enable=YES",
            "dual_log_enable=YES",
            &format!("vsftpd_log_file={}", log.display()),
            &format!("xferlog_file={}", xfer.display()),
        ],
    );
    let mut c = server.login();
    let forged = "Mon Jan  1 00:00:00 2024 [pid 1] [ftp] OK LOGIN: Client \"6.6.6.6\"";
    c.send_raw(format!("MKD d\r{forged}\x1b[2J\r\n").as_bytes()).expect("send");
    assert_eq!(c.read_reply().0, 257);
    let (_, code, text) = c.upload("STOR f\rforged\x07.txt", b"x");
    assert_eq!(code, 226, "{text}");
    c.cmd_ok("RNFR f\rforged\x07.txt", 350);
    c.cmd_ok("RNTO g\rforged\x7f.txt", 250);
    c.cmd_ok("DELE g\rforged\x7f.txt", 250);
    c.cmd_ok("QUIT", 221);
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let t = std::fs::read(&log).unwrap_or_default();
        if String::from_utf8_lossy(&t).contains("DELETE") || Instant::now() > deadline {
            break t;
        }
        thread::sleep(Duration::from_millis(20));
    };
    for (name, bytes) in [("vsftpd_log_file", text), ("xferlog", std::fs::read(&xfer).expect("xferlog"))] {
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        let bad: Vec<&str> = shown.lines().filter(|l| l.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f)).collect();
        assert!(bad.is_empty(), "{name} has control bytes: {bad:?}");
    }
    let shown = String::from_utf8_lossy(&std::fs::read(&log).expect("log")).into_owned();
    for (what, name) in [
        ("OK MKDIR", "\"/d?Mon Jan  1"),
        ("OK UPLOAD", "\"/f?forged?.txt\""),
        ("OK RENAME", "\"/f?forged?.txt"),
        ("OK DELETE", "\"/g?forged?.txt\""),
    ] {
        assert!(shown.lines().any(|l| l.contains(what) && l.contains(name)), "{what} {name} in {shown}");
    }
    assert!(!shown.lines().any(|l| l.starts_with("Mon Jan  1 00:00:00 2024")), "a forged line: {shown}");
}

/// The master: the process started, which is root and not a worker.
fn master(server: &Server) -> u32 {
    server.pid()
}

/// Defect 8: the root master ran each password check on a new thread with
/// no cap: 300 concurrent wrong passwords took it to 3.9 GiB, 664 MiB stayed.
#[test]
fn concurrent_wrong_passwords_do_not_grow_the_master() {
    let _alone = alone();
    if !ftpd_tests::root_or_skip("security::concurrent_wrong_passwords_do_not_grow_the_master", "a privileged master") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let users = dir.path().join("vusers");
    ftpd_passwd(&users, "vera", "right");
    let mut settings = virtual_settings(&users, dir.path());
    settings.extend(["max_per_ip=0".into(), "max_clients=0".into(), "max_login_fails=0".into()]);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let server = Server::start(dir.path(), &settings);
    let pid = master(&server);
    let baseline = status_field(pid, "VmRSS");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = server.addr;
    let attackers: Vec<_> = (0..120)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            thread::spawn(move || {
                let mut c = Ftp::connect(addr);
                c.read_reply();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = c.send_raw(b"USER vera\r\nPASS wrong\r\n");
                    let (Some(_), Some(_)) = (c.try_read_reply(), c.try_read_reply()) else { break };
                }
            })
        })
        .collect();
    let (mut threads, mut rss) = (0, 0);
    let started = Instant::now();
    let mut good = None;
    while started.elapsed() < Duration::from_secs(4) {
        threads = threads.max(status_field(pid, "Threads"));
        rss = rss.max(status_field(pid, "VmRSS"));
        if good.is_none() && started.elapsed() > Duration::from_secs(1) {
            // A good login from another address still gets in meanwhile.
            let t = Instant::now();
            let mut c = Ftp::from_stream(connect_from(Ipv4Addr::new(127, 0, 0, 2), addr, None));
            assert_eq!(c.read_reply().0, 220);
            c.cmd_ok("USER vera", 331);
            c.cmd_ok("PASS right", 230);
            good = Some(t.elapsed());
        }
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        let _ = a.join();
    }
    thread::sleep(Duration::from_millis(500));
    let after = status_field(pid, "VmRSS");
    eprintln!(
        "master: {threads} threads at most, RSS {baseline} KiB before, {rss} KiB at most, {after} KiB after; \
         good login took {good:?}"
    );
    assert!(threads <= 16, "the master ran {threads} threads");
    assert!(rss < baseline + 256 * 1024, "the master grew to {rss} KiB");
    assert!(after < baseline + 32 * 1024, "the master kept {after} KiB");
    assert!(good.is_some_and(|g| g < Duration::from_secs(3)), "the good login took {good:?}");
    // The refusals are reported.
    assert!(server.log().contains("too many logins waiting for a password check"), "no warning in the log");
}

/// F3: wrong passwords from 20 addresses, 16 at a time each, filled the
/// master's login queue (256): a right password from another address was
/// refused with 530 about one time in four. A full queue now drops a
/// waiting login of the address with the most queued instead.
#[test]
fn a_login_from_a_quiet_address_gets_in_while_many_addresses_flood() {
    let _alone = alone();
    if !ftpd_tests::root_or_skip(
        "security::a_login_from_a_quiet_address_gets_in_while_many_addresses_flood",
        "a privileged master",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let users = dir.path().join("vusers");
    ftpd_passwd(&users, "vera", "right");
    let mut settings = virtual_settings(&users, dir.path());
    settings.extend(["max_per_ip=0".into(), "max_clients=0".into(), "max_login_fails=0".into()]);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let server = Server::start(dir.path(), &settings);
    let addr = server.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..20u8)
        .flat_map(|a| (0..16).map(move |_| a))
        .map(|a| {
            let stop = std::sync::Arc::clone(&stop);
            thread::spawn(move || {
                let mut c = Ftp::from_stream(connect_from(Ipv4Addr::new(127, 0, 2, 10 + a), addr, None));
                c.read_reply();
                let started = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < Duration::from_secs(15) {
                    let _ = c.send_raw(b"USER vera\r\nPASS wrong\r\n");
                    let (Some(_), Some(_)) = (c.try_read_reply(), c.try_read_reply()) else { break };
                }
            })
        })
        .collect();
    // The queue is full once the master says so.
    wait_for("the login queue to fill", Duration::from_secs(5), || {
        server.log().contains("too many logins waiting for a password check")
    });
    let mut took = Vec::new();
    let mut refused = 0;
    for i in 0..5u8 {
        let t = Instant::now();
        let mut c = Ftp::from_stream(connect_from(Ipv4Addr::new(127, 0, 3, 10 + i), addr, None));
        assert_eq!(c.read_reply().0, 220);
        c.cmd_ok("USER vera", 331);
        if c.cmd("PASS right").0 != 230 {
            refused += 1;
        }
        took.push(t.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        let _ = a.join();
    }
    eprintln!("good logins during the flood: {refused} of 5 refused; took {took:?}");
    assert_eq!(refused, 0, "good logins refused during the flood");
    assert!(took.iter().all(|t| *t < Duration::from_secs(5)), "{took:?}");
    // Logins refused for load are told apart in the log.
    assert!(server.log().contains("server busy"), "no refusal for load in the log");
}

/// Minor: a bad value in a per-user config file refused the login with a
/// log line at INFO level; it is the operator's error, logged as WARN.
#[test]
fn a_bad_per_user_file_is_logged_as_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let users = dir.path().join("vusers");
    ftpd_passwd(&users, "vera", "right");
    let confdir = dir.path().join("users.d");
    std::fs::create_dir(&confdir).expect("mkdir");
    std::fs::write(confdir.join("vera"), "local_max_rate=lots\n").expect("write");
    let mut settings = virtual_settings(&users, dir.path());
    settings.push(format!("user_config_dir={}", confdir.display()));
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let server = Server::start(dir.path(), &settings);
    let mut c = server.connect();
    c.cmd_ok("USER vera", 331);
    c.cmd_ok("PASS right", 530);
    let log = server.log();
    let line = log.lines().find(|l| l.contains("bad per-user config")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("WARN"), "{line}");
}

/// Minor: MLST showed `perm=elc` for a directory anonymous cannot enter.
#[test]
fn mlst_does_not_offer_to_enter_a_directory_the_session_cannot_open() {
    if !ftpd_tests::root_or_skip(
        "security::mlst_does_not_offer_to_enter_a_directory_the_session_cannot_open",
        "a directory of another owner",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    mkdir(&dir.path().join("secret"), 0o700, "root");
    mkdir(&dir.path().join("open"), 0o755, "root");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.login();
    let fact = |c: &mut Ftp, name: &str| {
        let text = c.cmd_ok(&format!("MLST {name}"), 250);
        let perm = text.split(';').find_map(|f| f.trim().strip_prefix("perm=")).map(str::to_owned);
        perm.unwrap_or_else(|| panic!("no perm fact: {text}"))
    };
    let open = fact(&mut c, "open");
    assert!(open.contains('e') && open.contains('l'), "open: perm={open}");
    c.cmd_ok("CWD secret", 550);
    let secret = fact(&mut c, "secret");
    assert!(!secret.contains('e') && !secret.contains('l'), "secret: perm={secret}");
}

/// Defect 9: file workers kept a second copy of the channel and root
/// descriptors they inherit.
#[test]
fn file_workers_hold_only_the_descriptors_they_use() {
    if !ftpd_tests::root_or_skip("security::file_workers_hold_only_the_descriptors_they_use", "file workers") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let server = Server::start(dir.path(), &[]);
    let mut c = server.login();
    c.cmd_ok("CWD /", 250);
    let worker = *server.workers().first().expect("a file worker");
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{worker}/fd"))
        .expect("fd dir")
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).map(|t| t.display().to_string()).unwrap_or_default();
            format!("{} -> {target}", e.file_name().display())
        })
        .collect();
    // stdin, stdout, stderr, the channel (3) and the root (4).
    assert_eq!(fds.len(), 5, "worker descriptors: {fds:?}");
}

/// How big the flood figures' runs are: the full counts (about 20 s in
/// all on this 2-core machine, so CI runs them too).
struct FloodCounts {
    /// Connections opened and dropped at once.
    connections: usize,
    /// Sessions held open, idle, at the same time.
    idle: usize,
    /// Wrong passwords, in each of the two brute-force runs.
    passwords: usize,
}

fn flood_counts() -> FloodCounts {
    FloodCounts { connections: 10_000, idle: 5_000, passwords: 2_000 }
}

/// One of the server's processes: its role, RSS in KiB and open descriptors.
#[derive(Clone, Debug)]
struct Footprint {
    role: String,
    pid: u32,
    rss: u64,
    fds: usize,
}

/// RSS and descriptors of every process of the server, by role.
fn footprints(server: &Server) -> Vec<Footprint> {
    let workers = server.workers();
    let mut out: Vec<Footprint> = server
        .pids()
        .into_iter()
        .map(|pid| {
            let role = if pid == server.pid() {
                if is_root() { "master" } else { "ftpd" }
            } else if workers.contains(&pid) {
                "worker"
            } else {
                "front"
            };
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(Iterator::count).unwrap_or(0);
            Footprint { role: role.into(), pid, rss: status_field(pid, "VmRSS"), fds }
        })
        .collect();
    out.sort_by(|a, b| a.role.cmp(&b.role).then(a.pid.cmp(&b.pid)));
    out
}

fn show(fp: &[Footprint]) -> String {
    fp.iter().map(|f| format!("{} {}: {} KiB, {} fds", f.role, f.pid, f.rss, f.fds)).collect::<Vec<_>>().join("; ")
}

/// Waits (at most 10 s) until every process holds no more descriptors than
/// in `base`, and with `memory` (at most 25 s) until none is more than
/// 32 MiB above its RSS in `base`; returns the footprints then. Fails naming a process that
/// kept descriptors.
fn settled(server: &Server, base: &[Footprint], what: &str, memory: bool) -> Vec<Footprint> {
    let start = Instant::now();
    loop {
        let now = footprints(server);
        let leaked: Vec<String> = now
            .iter()
            .filter_map(|f| {
                let before = base.iter().find(|b| b.pid == f.pid).map_or(0, |b| b.fds);
                (f.fds > before).then(|| format!("{} {} holds {} fds, {before} before", f.role, f.pid, f.fds))
            })
            .collect();
        // Memory comes back later than descriptors: the front's blocking
        // threads (one per login waiting on the master) end after 10 s
        // idle, and the front trims the allocator every 10 s. Up to 25 s
        // for it; the caller's check says what was kept.
        let heavy = now.iter().any(|f| base.iter().any(|b| b.pid == f.pid && f.rss > b.rss + 32 * 1024));
        if leaked.is_empty() && (!memory || !heavy || start.elapsed() > Duration::from_secs(25)) {
            return now;
        }
        assert!(start.elapsed() < Duration::from_secs(10) || leaked.is_empty(), "after {what}: {}", leaked.join("; "));
        thread::sleep(Duration::from_millis(100));
    }
}

/// A normal client from an address of its own: greeting, anonymous login,
/// a listing, QUIT. Returns how long it took.
fn normal_client(addr: SocketAddr) -> Duration {
    let t = Instant::now();
    let src = Ipv4Addr::new(127, 0, 9, 9);
    let mut c = Ftp::from_stream(connect_from(src, addr, None));
    assert_eq!(c.read_reply().0, 220, "greeting");
    c.cmd_ok("USER anonymous", 230);
    let (list, code, text) = transfer_from(&mut c, src, "NLST");
    assert_eq!(code, 226, "{text}");
    assert!(String::from_utf8_lossy(&list).contains("readme"), "listing: {list:?}");
    c.cmd_ok("QUIT", 221);
    t.elapsed()
}

/// Runs [`normal_client`] every 200 ms until `stop`, from a thread; the
/// handle yields the slowest time.
fn probe(addr: SocketAddr, stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) -> thread::JoinHandle<Duration> {
    let stop = std::sync::Arc::clone(stop);
    thread::spawn(move || {
        let mut worst = Duration::ZERO;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            worst = worst.max(normal_client(addr));
            thread::sleep(Duration::from_millis(200));
        }
        worst
    })
}

/// Raises this process's RLIMIT_NOFILE to its hard limit (idle sessions
/// each hold a socket here too).
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a struct owned here.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// `user`'s line for a virtual users file: SHA-512 crypt (5000 rounds, a few
/// ms a check), so that thousands of wrong passwords take seconds; the cost
/// of argon2 checks is the subject of `concurrent_wrong_passwords_do_not_grow_the_master`.
fn sha_crypt_entry(user: &str, password: &str) -> String {
    let out = run_ok(Command::new("openssl").args(["passwd", "-6", "-salt", "floodsalt", password]));
    format!("{user}:{}\n", out.trim())
}

/// Issue 15, point 7: floods of connections, idle sessions and wrong
/// passwords, from one address and from many. Memory stays bounded, every
/// descriptor comes back, and a normal client is served within 1 s
/// meanwhile. Prints the RSS and descriptors of each process before and
/// after each run (`cargo xtask flood` runs the full counts).
#[test]
fn flood_figures_memory_and_descriptors_stay_bounded() {
    let _alone = alone();
    let n = flood_counts();
    let limit = raise_nofile();
    assert!(limit as usize > n.idle + 256, "RLIMIT_NOFILE {limit} is too low for {} idle sessions", n.idle);
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    std::fs::write(dir.path().join("readme"), b"hello\n").expect("write");
    let users = dir.path().join("vusers");
    std::fs::write(&users, sha_crypt_entry("vera", "right")).expect("write");
    let mut settings = virtual_settings(&users, dir.path());
    settings.extend([
        "max_per_ip=0".into(),
        "max_clients=0".into(),
        "anonymous_enable=YES".into(),
        "idle_session_timeout=600".into(),
    ]);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let server = Server::start(dir.path(), &settings);
    let addr = server.addr;
    // The first logins start the file workers: part of the baseline.
    normal_client(addr);
    let mut c = server.connect();
    c.cmd_ok("USER vera", 331);
    c.cmd_ok("PASS right", 230);
    drop(c);
    let mut base = settled(&server, &footprints(&server), "the first logins", false);
    let start = base.clone();
    eprintln!("flood figures, start: {}", show(&base));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut report = Vec::new();
    // Peak RSS growth allowed per process: 32 MiB, plus `per_item` bytes for
    // each of `items` held at once (idle sessions, concurrent logins); what
    // is kept after a run must be back within 32 MiB.
    let check =
        |what: &str, before: &[Footprint], peak: &[Footprint], after: &[Footprint], per_item: u64, items: usize| {
            for b in before {
                let p = peak.iter().find(|f| f.pid == b.pid).map_or(0, |f| f.rss);
                let a = after.iter().find(|f| f.pid == b.pid).map_or(0, |f| f.rss);
                let allowed = 32 * 1024 + per_item * items as u64 / 1024;
                assert!(p <= b.rss + allowed, "{what}: {} {} grew from {} to {p} KiB", b.role, b.pid, b.rss);
                assert!(a <= b.rss + 32 * 1024, "{what}: {} {} kept {a} KiB ({} before)", b.role, b.pid, b.rss);
            }
        };

    // 1. Connections opened and dropped, from 8 threads.
    let t = Instant::now();
    let worst = probe(addr, &stop);
    let mut peak = base.clone();
    let openers: Vec<_> = (0..8)
        .map(|i| {
            let count = n.connections / 8 + usize::from(i < n.connections % 8);
            thread::spawn(move || {
                for j in 0..count {
                    let src = Ipv4Addr::new(127, 0, 7, 1 + u8::try_from((i * 31 + j) % 250).expect("u8"));
                    drop(connect_from(src, addr, None));
                }
            })
        })
        .collect();
    while !openers.iter().all(thread::JoinHandle::is_finished) {
        for f in footprints(&server) {
            if let Some(q) = peak.iter_mut().find(|q| q.pid == f.pid) {
                q.rss = q.rss.max(f.rss);
                q.fds = q.fds.max(f.fds);
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    for o in openers {
        o.join().expect("opener");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let slowest = worst.join().expect("probe");
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    let after = settled(&server, &base, "the connection flood", true);
    report.push(format!(
        "{} connections opened and dropped in {:.1?}; normal client at worst {slowest:.0?}\n  peak: {}\n  after: {}",
        n.connections,
        t.elapsed(),
        show(&peak),
        show(&after)
    ));
    check("connection flood", &base, &peak, &after, 0, 0);
    assert!(slowest < Duration::from_secs(1), "a normal client took {slowest:?} during the connection flood");
    base = after;

    // 2. Idle sessions held open (greeting read), from 250 addresses; a
    // normal client is served while they are opened, and beside them.
    let t = Instant::now();
    let worst = probe(addr, &stop);
    let mut idle = Vec::with_capacity(n.idle);
    for i in 0..n.idle {
        let src = Ipv4Addr::new(127, 0, 8, 1 + u8::try_from(i % 250).expect("u8"));
        let mut s = connect_from(src, addr, None);
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut greeting = [0u8; 64];
        let got = s.read(&mut greeting).expect("greeting");
        assert!(greeting[..got].starts_with(b"220"), "session {i}: {:?}", &greeting[..got]);
        idle.push(s);
    }
    let opened = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let slowest = worst.join().expect("probe");
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    let slowest = (0..3).map(|_| normal_client(addr)).max().expect("three").max(slowest);
    let peak = footprints(&server);
    drop(idle);
    let after = settled(&server, &base, "the idle sessions", true);
    report.push(format!(
        "{} idle sessions opened in {opened:.1?}; normal client at worst {slowest:.0?}\n  held: {}\n  after: {}",
        n.idle,
        show(&peak),
        show(&after)
    ));
    // 16 KiB per idle session is four times issue 5's target.
    check("idle sessions", &base, &peak, &after, 16 * 1024, n.idle);
    assert!(slowest < Duration::from_secs(1), "a normal client took {slowest:?} beside {} idle sessions", n.idle);
    base = after;

    // 3. Wrong passwords: from one address (16 connections, the most the
    // master queues for one address), then from 200 addresses.
    for (what, addresses, conns_per_address) in [("one address", 1usize, 16usize), ("200 addresses", 200, 1)] {
        let t = Instant::now();
        let worst = probe(addr, &stop);
        let conns = addresses * conns_per_address;
        let attackers: Vec<_> = (0..conns)
            .map(|k| {
                let count = n.passwords / conns + usize::from(k < n.passwords % conns);
                let src = Ipv4Addr::new(127, 0, 10, 1 + u8::try_from(k / conns_per_address).expect("u8"));
                thread::spawn(move || {
                    let mut sent = 0;
                    while sent < count {
                        // max_login_fails (3) closes the connection: reconnect.
                        let mut c = Ftp::from_stream(connect_from(src, addr, None));
                        assert_eq!(c.read_reply().0, 220);
                        for _ in 0..3.min(count - sent) {
                            c.send_raw(b"USER vera\r\nPASS wrong\r\n").expect("send");
                            let (Some((331, _)), Some((530, _))) = (c.try_read_reply(), c.try_read_reply()) else {
                                panic!("a wrong password was not refused with 530");
                            };
                            sent += 1;
                        }
                    }
                })
            })
            .collect();
        let mut peak = base.clone();
        while !attackers.iter().all(thread::JoinHandle::is_finished) {
            for f in footprints(&server) {
                if let Some(q) = peak.iter_mut().find(|q| q.pid == f.pid) {
                    q.rss = q.rss.max(f.rss);
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        for a in attackers {
            a.join().expect("attacker");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let slowest = worst.join().expect("probe");
        stop.store(false, std::sync::atomic::Ordering::Relaxed);
        let after = settled(&server, &base, what, true);
        report.push(format!(
            "{} wrong passwords from {what} in {:.1?}; normal client at worst {slowest:.0?}\n  peak: {}\n  after: {}",
            n.passwords,
            t.elapsed(),
            show(&peak),
            show(&after)
        ));
        // The front waits for each login's answer from the master on a
        // thread of tokio's blocking pool (at most 512; idle ones exit after
        // 10 s): about 160 KiB each while they run, measured.
        check(what, &base, &peak, &after, 256 * 1024, conns);
        assert!(
            slowest < Duration::from_secs(1),
            "a normal client took {slowest:?} during the brute force from {what}"
        );
        base = after;
    }
    // The right password still works, and nothing was left behind overall.
    let mut c = server.connect();
    c.cmd_ok("USER vera", 331);
    c.cmd_ok("PASS right", 230);
    drop(c);
    let end = settled(&server, &start, "all the floods", false);
    eprintln!("flood figures:\n{}\nend: {}", report.join("\n"), show(&end));
    if std::env::var("FTPD_FLOOD").is_ok_and(|v| v == "full") {
        // Idle threads of tokio's blocking pool exit after 10 s.
        thread::sleep(Duration::from_secs(15));
        eprintln!("15 s later: {}", show(&footprints(&server)));
    }
}
