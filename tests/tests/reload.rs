//! Reload and shutdown without loss (issue 15, point 5): SIGHUP re-reads the
//! whole configuration and every file it names for new sessions, while the
//! sessions already there carry on; SIGTERM closes the listener at once, lets
//! running transfers finish for `ftpd_shutdown_timeout`, ends the rest with
//! `421` and exits 0.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use ftpd_tests::{Ftp, Launch, Server, python, random_file, run_ok, served_by_nobody, sha256_file};

/// A served tree and a config file for it (the file is what SIGHUP re-reads;
/// the harness's `-o` settings stay on top of it).
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("pub");
        std::fs::create_dir(&root).expect("mkdir");
        served_by_nobody(dir.path());
        served_by_nobody(&root);
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("pub")
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("ftpd.conf")
    }

    /// Writes the config file: anonymous read-only on 127.0.0.1, plus `extra` lines.
    fn write(&self, extra: &str) {
        let text = format!(
            "listen=YES\nlisten_address=127.0.0.1\nanonymous_enable=YES\nno_anon_password=YES\n\
             anon_root={}\nftp_username=nobody\n{extra}",
            self.root().display()
        );
        std::fs::write(self.conf(), text).expect("write config");
    }

    fn start(&self, extra: &str) -> Server {
        self.write(extra);
        let conf = self.conf();
        Server::launch(&self.root(), &[], &Launch { config: Some(&conf), ..Launch::default() })
    }
}

/// SIGHUP, then waits for the reload to be done (applied or refused).
fn reload(server: &Server, n: usize) {
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        let done = log.matches("SIGHUP: configuration re-read").count()
            + log.matches("SIGHUP: configuration not reloaded").count();
        if done >= n {
            return;
        }
        assert!(Instant::now() < deadline, "reload {n} not done:\n{log}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A new control connection's greeting.
fn greeting(server: &Server) -> String {
    let mut c = Ftp::connect(server.addr);
    let (code, text) = c.read_reply();
    assert_eq!(code, 220, "{text}");
    text
}

#[test]
fn a_new_banner_greets_new_sessions_while_an_old_session_carries_on() {
    let s = Setup::new();
    std::fs::write(s.root().join("a.txt"), b"alpha\n").expect("write");
    let server = s.start("ftpd_banner=first banner\n");
    let mut old = Ftp::connect(server.addr);
    assert!(old.read_reply().1.contains("first banner"));
    old.cmd_ok("USER anonymous", 230);

    s.write("ftpd_banner=second banner\n");
    reload(&server, 1);
    let text = greeting(&server);
    assert!(text.contains("220 second banner"), "{text}");
    // The session from before the reload is still served.
    old.cmd_ok("NOOP", 200);
    let (data, code, _) = old.transfer("RETR a.txt");
    assert_eq!((data.as_slice(), code), (&b"alpha\n"[..], 226));

    // banner_file is read again too, and wins over ftpd_banner.
    let banner = s.dir.path().join("banner.txt");
    std::fs::write(&banner, "Welcome to the mirror\nsecond line\n").expect("write");
    s.write(&format!("ftpd_banner=second banner\nbanner_file={}\n", banner.display()));
    reload(&server, 2);
    let text = greeting(&server);
    assert!(text.starts_with("220-Welcome to the mirror\r\n220-second line\r\n220 "), "{text:?}");
    std::fs::write(&banner, "Edited\n").expect("write");
    reload(&server, 3);
    assert!(greeting(&server).starts_with("220-Edited\r\n"), "the file is read at each reload");
    old.cmd_ok("NOOP", 200);
}

#[test]
fn deny_file_and_hide_file_apply_to_sessions_after_the_reload() {
    let s = Setup::new();
    std::fs::write(s.root().join("image.iso"), b"iso\n").expect("write");
    std::fs::write(s.root().join("notes.txt"), b"notes\n").expect("write");
    let server = s.start("");
    let mut old = server.login();
    assert_eq!(old.cmd("SIZE image.iso").0, 213);

    s.write("deny_file={*.iso}\nhide_file={notes*}\n");
    reload(&server, 1);
    let mut new = server.login();
    assert_eq!(new.cmd("SIZE image.iso").0, 550, "deny_file for a session after the reload");
    assert_eq!(new.transfer("RETR image.iso").1, 550);
    let (list, code, _) = new.transfer("NLST");
    assert_eq!(code, 226);
    let names = String::from_utf8_lossy(&list).to_string();
    // As in vsftpd, deny_file refuses access but does not hide.
    assert!(!names.contains("notes") && names.contains("image.iso"), "hide_file in NLST: {names}");
    // A session keeps the settings it logged in with.
    assert_eq!(old.cmd("SIZE image.iso").0, 213);

    // Back to nothing denied.
    s.write("");
    reload(&server, 2);
    let mut later = server.login();
    assert_eq!(later.cmd("SIZE image.iso").0, 213);
}

#[test]
fn max_per_ip_and_max_clients_change_for_new_connections() {
    let s = Setup::new();
    let server = s.start("max_per_ip=2\n");
    let held: Vec<Ftp> = (0..2).map(|_| server.login()).collect();
    let mut third = Ftp::connect(server.addr);
    let (code, text) = third.read_reply();
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("too many connections from your internet address"), "{text}");

    s.write("max_per_ip=4\n");
    reload(&server, 1);
    let more: Vec<Ftp> = (0..2).map(|_| server.login()).collect();
    assert_eq!(Ftp::connect(server.addr).read_reply().0, 421, "the fifth of max_per_ip=4");

    // Lower than what is open: those stay, new ones are refused.
    s.write("max_per_ip=1\n");
    reload(&server, 2);
    // Six connections are open: on the kernel plane that is past the new
    // hard cap (twice max_per_ip), so XDP drops the SYN instead of letting
    // the front say 421. Either way the connection is refused.
    turned_away(&server, "too many connections from your internet address");
    for mut c in held.into_iter().chain(more) {
        c.cmd_ok("NOOP", 200);
    }
    thread::sleep(Duration::from_millis(200));
    let mut one = server.login();
    one.cmd_ok("NOOP", 200);

    s.write("max_per_ip=0\nmax_clients=1\n");
    reload(&server, 3);
    // `one` and the refused `third` are open: past the kernel's hard cap too.
    turned_away(&server, "too many connected users");
}

/// A new connection is refused: `421` with `text` from the front, or, on the
/// kernel plane past its hard cap (twice the limit, counting refused
/// connections the client keeps open), no answer to the SYN at all.
fn turned_away(server: &Server, text: &str) {
    match std::net::TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)) {
        Ok(stream) => {
            let (code, got) = Ftp::from_stream(stream).read_reply();
            assert!(code == 421 && got.contains(text), "want 421 {text}: {code} {got}");
        }
        Err(e) => assert!(server.kernel_plane(), "connect failed on the userspace plane: {e}"),
    }
}

#[test]
fn options_that_need_a_restart_are_reported_and_keep_their_running_values() {
    let s = Setup::new();
    let server = s.start("ftpd_banner=before\n");
    // listen_address, nopriv_user and the log files cannot change while
    // running; the banner in the same file can.
    s.write("ftpd_banner=after\nnopriv_user=ftp\nxferlog_enable=YES\n");
    let text = std::fs::read_to_string(s.conf()).expect("read");
    std::fs::write(s.conf(), text.replace("listen_address=127.0.0.1", "listen_address=127.0.0.9")).expect("write");
    reload(&server, 1);
    let log = server.log();
    assert!(log.contains("SIGHUP: needs a restart: listen_address, nopriv_user, xferlog_enable"), "{log}");
    assert!(log.contains("SIGHUP: configuration re-read"), "{log}");
    assert!(greeting(&server).contains("220 after"), "the other options still apply");
    // Still served where it listened.
    server.login().cmd_ok("NOOP", 200);
}

/// A read-only anonymous server's front runs as ftp_username
/// (`ftpd_anon_fast_path`); anonymous writes turned on by a reload would
/// leave it with an identity that can write past the worker's rules, so
/// they wait for a restart (turning them off never does).
#[test]
fn anonymous_writes_wait_for_a_restart_when_the_front_runs_as_ftp_username() {
    if !ftpd_tests::root_or_skip(
        "reload::anonymous_writes_wait_for_a_restart_when_the_front_runs_as_ftp_username",
        "privilege separation",
    ) {
        return;
    }
    let s = Setup::new();
    let up = s.root().join("up");
    std::fs::create_dir(&up).expect("mkdir");
    std::fs::set_permissions(&up, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let server = s.start("ftp_username=daemon\n");
    assert_eq!(ftpd_tests::status_field(server.front(), "Uid"), 1, "the front acts as ftp_username:\n{}", server.log());
    s.write("ftp_username=daemon\nwrite_enable=YES\nanon_upload_enable=YES\nftpd_banner=after\n");
    reload(&server, 1);
    let log = server.log();
    assert!(log.contains("SIGHUP: needs a restart: write_enable, anon_upload_enable"), "{log}");
    assert!(greeting(&server).contains("220 after"), "the other options still apply");
    let mut c = server.login();
    let (_, code, text) = c.upload("STOR up/new.txt", b"x");
    assert_eq!(code, 550, "anonymous uploads wait for a restart: {text}");
    assert_eq!(ftpd_tests::status_field(server.front(), "Uid"), 1);
}

#[test]
fn a_broken_file_is_reported_with_file_line_and_reason_and_the_old_settings_stay() {
    let s = Setup::new();
    let server = s.start("ftpd_banner=kept\nmax_per_ip=5\n");
    let conf = s.conf().display().to_string();

    // A bad value on line 8.
    s.write("ftpd_banner=lost\nmax_per_ip=lots\n");
    reload(&server, 1);
    let log = server.log();
    let at = format!("{conf}:8: max_per_ip: bad number \"lots\"");
    assert!(log.contains(&at), "want {at:?} in:\n{log}");
    assert!(log.contains("SIGHUP: configuration not reloaded, the old one stays"), "{log}");
    assert!(greeting(&server).contains("220 kept"));

    // An unknown option, with the closest real one.
    s.write("ftpd_banner=lost\nmax_per_ipp=3\n");
    reload(&server, 2);
    assert!(server.log().contains(&format!("{conf}:8: max_per_ipp: unrecognised option")), "{}", server.log());

    // A relation between options.
    // (Not the passive range: the kernel-plane test servers set theirs on
    // the command line, which applies after the file.)
    s.write("ftpd_banner=lost\nftpd_ban_enable=YES\nftpd_ban_time=0\n");
    reload(&server, 3);
    let want = format!("{conf}: ftpd_ban_time=0 with ftpd_ban_enable=YES");
    assert!(server.log().contains(&want), "want {want:?} in:\n{}", server.log());

    // A file the config names that cannot be read.
    s.write("ftpd_banner=lost\nbanner_file=/nonexistent/banner\n");
    reload(&server, 4);
    assert!(server.log().contains("banner_file=/nonexistent/banner: No such file or directory"), "{}", server.log());
    assert!(greeting(&server).contains("220 kept"), "the old settings stay after every refusal");
    assert_eq!(server.log().matches("SIGHUP: configuration re-read").count(), 0);

    // Fixed: applied.
    s.write("ftpd_banner=fixed\n");
    reload(&server, 5);
    assert!(greeting(&server).contains("220 fixed"));
}

/// A self-signed certificate with its key readable by root only.
fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    run_ok(Command::new("chmod").arg("600").arg(&key));
    (cert, key)
}

/// Python: an FTPS session (`PROT P`, data connections resuming the control
/// connection's session) that prints the SHA-256 of the server's
/// certificate, then the listing, then does it again each time a line
/// arrives on its standard input.
fn ftps_script(server: &Server) -> String {
    format!(
        r#"import ftplib, ssl, hashlib, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
class FTPS(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size
f = FTPS(context=ctx)
f.connect({host:?}, {port}, timeout=30)
f.login()
f.prot_p()
def show():
    print(hashlib.sha256(f.sock.getpeercert(binary_form=True)).hexdigest(), f.nlst(), flush=True)
show()
for line in sys.stdin:
    show()
f.quit()
"#,
        host = server.addr.ip().to_string(),
        port = server.addr.port()
    )
}

/// One FTPS session's output (see [`ftps_script`]).
fn ftps_session(server: &Server) -> String {
    python(&ftps_script(server))
}

fn fingerprint(cert: &Path) -> String {
    let out = run_ok(Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in"]).arg(cert));
    out.trim().rsplit('=').next().expect("fingerprint").replace(':', "").to_ascii_lowercase()
}

#[test]
fn a_new_certificate_is_served_to_new_tls_sessions() {
    let s = Setup::new();
    std::fs::write(s.root().join("a.txt"), b"alpha\n").expect("write");
    let (cert_a, key_a) = make_cert(s.dir.path(), "first");
    let (cert_b, key_b) = make_cert(s.dir.path(), "second");
    let tls = |cert: &Path, key: &Path| {
        format!(
            "ssl_enable=YES\nallow_anon_ssl=YES\nrsa_cert_file={}\nrsa_private_key_file={}\n",
            cert.display(),
            key.display()
        )
    };
    let server = s.start(&tls(&cert_a, &key_a));
    let out = ftps_session(&server);
    assert!(out.starts_with(&fingerprint(&cert_a)) && out.contains("a.txt"), "{out}");

    // A session from before the reload keeps its certificate and works.
    let mut old = Command::new("python3")
        .arg("-c")
        .arg(ftps_script(&server))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut old_out = std::io::BufReader::new(old.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut old_out, &mut line).expect("read");
    assert!(line.starts_with(&fingerprint(&cert_a)), "{line}");
    s.write(&tls(&cert_b, &key_b));
    reload(&server, 1);
    assert!(server.log().contains("SIGHUP: configuration re-read"), "{}", server.log());
    let out = ftps_session(&server);
    assert!(out.starts_with(&fingerprint(&cert_b)) && out.contains("a.txt"), "{out}");
    let mut stdin = old.stdin.take().expect("stdin");
    stdin.write_all(b"again\n").expect("write");
    line.clear();
    std::io::BufRead::read_line(&mut old_out, &mut line).expect("read");
    assert!(line.starts_with(&fingerprint(&cert_a)) && line.contains("a.txt"), "old session after the reload: {line}");
    drop(stdin);
    assert!(old.wait().expect("wait").success());

    // A key that does not match its certificate is refused; the new one stays.
    s.write(&tls(&cert_a, &key_b));
    reload(&server, 2);
    let log = server.log();
    assert!(log.contains("the private key does not match the certificate"), "{log}");
    assert!(ftps_session(&server).starts_with(&fingerprint(&cert_b)));
}

// ---- shutdown ----

/// A control connection logged in, TYPE I, with a passive data connection
/// on which `RETR name` has started (150 read).
fn start_download(server: &Server, name: &str) -> (Ftp, TcpStream) {
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let data = c.pasv_connect();
    c.cmd_ok(&format!("RETR {name}"), 150);
    data.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    (c, data)
}

/// Reads until the server closes the data connection.
fn read_all(mut data: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = data.read_to_end(&mut out);
    out
}

/// Whether a new connection to the control port is refused.
fn refused(server: &Server) -> bool {
    match TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)) {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

#[test]
fn sigterm_lets_a_running_download_finish_and_exits_0() {
    let s = Setup::new();
    random_file(&s.root().join("big"), 2_000_000);
    let want = sha256_file(&s.root().join("big"));
    // About 2 s of download.
    let mut server = s.start("anon_max_rate=1000000\nftpd_shutdown_timeout=10\n");
    let mut idle = server.login();
    let (mut c, data) = start_download(&server, "big");
    let reader = thread::spawn(move || read_all(data));
    thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    server.signal("TERM");
    // The idle session is told at once.
    let (code, text) = idle.read_reply();
    assert_eq!(code, 421, "{text}");
    assert!(t.elapsed() < Duration::from_secs(1), "the idle session's 421 took {:?}", t.elapsed());
    assert!(idle.try_read_reply().is_none(), "the idle session is closed after its 421");
    // No new connection is accepted.
    assert!(refused(&server), "a connection was accepted after SIGTERM");
    // The download completes, whole.
    let got = reader.join().expect("reader");
    assert_eq!(got.len(), 2_000_000);
    let path = s.dir.path().join("got");
    std::fs::write(&path, &got).expect("write");
    assert_eq!(sha256_file(&path), want);
    assert_eq!(c.read_reply().0, 226);
    assert_eq!(c.read_reply().0, 421, "then the session ends");
    let status = server.wait_exit(Duration::from_secs(3)).expect("ftpd exits once the transfer is done");
    assert!(status.success(), "exit status {status}");
    assert!(t.elapsed() < Duration::from_secs(6), "exit took {:?}", t.elapsed());
    let log = server.log();
    assert!(log.contains("listener closed; ending the sessions"), "{log}");
    assert!(log.contains("download complete"), "{log}");
}

#[test]
fn sigterm_ends_transfers_left_after_the_timeout_with_421_and_exits_0() {
    let s = Setup::new();
    random_file(&s.root().join("big"), 5_000_000);
    // About 10 s of download, far longer than the 1 s allowed.
    let mut server = s.start("anon_max_rate=500000\nftpd_shutdown_timeout=1\n");
    let (mut c, data) = start_download(&server, "big");
    let reader = thread::spawn(move || read_all(data));
    thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    server.signal("TERM");
    let (code, text) = c.read_reply();
    assert_eq!(code, 426, "{text}");
    let (code, text) = c.read_reply();
    assert_eq!(code, 421, "{text}");
    let cut = t.elapsed();
    assert!(cut >= Duration::from_millis(900) && cut < Duration::from_secs(2), "ended after {cut:?}");
    let got = reader.join().expect("reader");
    assert!(got.len() < 5_000_000, "the transfer was cut short ({} bytes)", got.len());
    let status = server.wait_exit(Duration::from_secs(2)).expect("ftpd exits within the timeout + 1 s");
    assert!(status.success(), "exit status {status}");
    assert!(t.elapsed() < Duration::from_secs(2), "exit took {:?}", t.elapsed());
}

#[test]
fn a_second_sigterm_ends_at_once_without_publishing_a_partial_upload() {
    let s = Setup::new();
    let up = s.root().join("up");
    std::fs::create_dir(&up).expect("mkdir");
    ftpd_tests::writable_by_all(&up);
    random_file(&s.root().join("big"), 5_000_000);
    let mut server = s.start(
        "anon_max_rate=500000\nftpd_shutdown_timeout=30\nwrite_enable=YES\nanon_upload_enable=YES\n\
         ftpd_atomic_uploads=YES\n",
    );
    let (mut down, data) = start_download(&server, "big");
    let reader = thread::spawn(move || read_all(data));
    let mut upc = server.login();
    upc.cmd_ok("TYPE I", 200);
    let mut updata = upc.pasv_connect();
    upc.cmd_ok("STOR up/new.bin", 150);
    updata.write_all(&[7u8; 100_000]).expect("upload data");
    thread::sleep(Duration::from_millis(300));
    server.signal("TERM");
    thread::sleep(Duration::from_millis(500));
    assert!(server.wait_exit(Duration::ZERO).is_none(), "ftpd waits for its transfers after one SIGTERM");
    assert!(refused(&server));
    let t = Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(3)).expect("ftpd exits after the second SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(t.elapsed() < Duration::from_secs(1), "the second SIGTERM took {:?}", t.elapsed());
    assert_eq!(down.read_reply().0, 426);
    assert_eq!(down.read_reply().0, 421);
    assert_eq!(upc.read_reply().0, 426);
    assert_eq!(upc.read_reply().0, 421);
    assert!(reader.join().expect("reader").len() < 5_000_000);
    assert!(!up.join("new.bin").exists(), "a partial upload was published under its name");
    drop(updata);
}

#[test]
fn shutdown_timeout_0_ends_every_session_at_once() {
    let s = Setup::new();
    random_file(&s.root().join("big"), 5_000_000);
    let mut server = s.start("anon_max_rate=500000\nftpd_shutdown_timeout=0\n");
    let (mut c, data) = start_download(&server, "big");
    let reader = thread::spawn(move || read_all(data));
    thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    server.signal("TERM");
    assert_eq!(c.read_reply().0, 426);
    assert_eq!(c.read_reply().0, 421);
    let status = server.wait_exit(Duration::from_secs(2)).expect("ftpd exits at once");
    assert!(status.success(), "exit status {status}");
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    assert!(reader.join().expect("reader").len() < 5_000_000);
}

/// The init system or a terminal's Ctrl-C may signal every process of ftpd
/// at once; the front then gets its own SIGTERM and the one the master
/// forwards. That is one request to stop, not two: transfers still finish.
#[test]
fn sigterm_to_master_and_front_at_once_is_one_request() {
    if !ftpd_tests::root_or_skip("reload::sigterm_to_master_and_front_at_once_is_one_request", "a master and a front") {
        return;
    }
    let s = Setup::new();
    random_file(&s.root().join("big"), 1_000_000);
    let mut server = s.start("anon_max_rate=1000000\nftpd_shutdown_timeout=10\n");
    let (mut c, data) = start_download(&server, "big");
    let reader = thread::spawn(move || read_all(data));
    thread::sleep(Duration::from_millis(200));
    let master = server.pid();
    let front = server
        .pids()
        .into_iter()
        .find(|p| {
            *p != master
                && !std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.windows(13).any(|w| w == b"--ftpd-worker"))
        })
        .expect("the front");
    run_ok(Command::new("kill").arg("-TERM").arg(master.to_string()).arg(front.to_string()));
    assert_eq!(reader.join().expect("reader").len(), 1_000_000, "the download was cut:\n{}", server.log());
    assert_eq!(c.read_reply().0, 226);
    let status = server.wait_exit(Duration::from_secs(3)).expect("ftpd exits");
    assert!(status.success(), "exit status {status}");
    assert!(!server.log().contains("second signal"), "{}", server.log());
}

/// A front that replaces a dead one serves the configuration of the last
/// good reload, not the one ftpd started with, and not an edit nobody
/// signalled: the master hands the reloaded one over.
#[test]
fn a_front_that_replaces_a_dead_one_keeps_the_reloaded_settings() {
    if !ftpd_tests::is_root() {
        return ftpd_tests::cannot_run(
            "reload::a_front_that_replaces_a_dead_one_keeps_the_reloaded_settings",
            "a separate front exists only when ftpd starts as root",
        );
    }
    let s = Setup::new();
    std::fs::write(s.root().join("image.iso"), b"iso\n").expect("write");
    let server = s.start("ftpd_banner=first banner\n");
    s.write("ftpd_banner=second banner\ndeny_file={*.iso}\n");
    reload(&server, 1);
    assert!(greeting(&server).contains("220 second banner"));
    // Edited, not signalled: not in force, before or after the restart.
    s.write("ftpd_banner=third banner\n");

    let old = server.front();
    run_ok(Command::new("kill").args(["-KILL", &old.to_string()]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let answer = TcpStream::connect_timeout(&server.addr, Duration::from_millis(500)).ok().and_then(|s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            Ftp::from_stream(s).try_read_reply()
        });
        match answer {
            Some((220, text)) => break text,
            _ => assert!(Instant::now() < deadline, "no new front within 10 s:\n{}", server.log()),
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(server.front(), old);
    assert!(text.contains("220 second banner"), "the new front greets with {text:?}:\n{}", server.log());
    let mut c = server.login();
    assert_eq!(c.cmd("SIZE image.iso").0, 550, "deny_file of the reload, in the new front");
}

/// A SIGHUP that reaches a front before it listens for the signal waits
/// for it. The front's default action for SIGHUP is to end: a reload sent
/// just as ftpd (or a replacement front) started killed the new front, with
/// its sessions, and left its reload undone.
#[test]
fn a_sighup_that_reaches_a_starting_front_waits_for_it() {
    if !ftpd_tests::is_root() {
        return ftpd_tests::cannot_run(
            "reload::a_sighup_that_reaches_a_starting_front_waits_for_it",
            "a separate front exists only when ftpd starts as root",
        );
    }
    for attempt in 0..5 {
        let s = Setup::new();
        let port = ftpd_tests::free_port();
        let common = format!("listen_port={port}\nftpd_ebpf=off\nftpd_metrics_listen=\n");
        s.write(&format!("{common}ftpd_banner=first banner\n"));
        let mut ftpd = Started::spawn(&s, None);
        let master = ftpd.child.id();
        // The master forks the front once it has read the file: the front
        // is its first child.
        let started = Instant::now();
        let front = loop {
            let kids = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
            if let Some(pid) = kids.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()) {
                break pid;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no front:\n{}", ftpd.log());
            std::thread::yield_now();
        };
        s.write(&format!("{common}ftpd_banner=second banner\n"));
        // SAFETY: kill(2) with a pid and a signal number.
        assert_eq!(unsafe { libc::kill(front, libc::SIGHUP) }, 0);
        ftpd.wait_reloaded(attempt);
        ftpd.greets(port, "220 second banner", attempt);
        let log = ftpd.log();
        assert!(!log.contains("new front started"), "attempt {attempt}: the front was replaced:\n{log}");
        ftpd.stop();
    }
}

/// `systemctl reload` as soon as ftpd said READY: systemd sends SIGHUP to
/// the master the moment it reads READY=1 from the notify socket. The
/// master said READY before it handled SIGHUP, so the signal's default
/// action ended ftpd. Now it is handled from before READY, and a reload
/// that comes before the front can take it is passed on once it can.
#[test]
fn a_reload_right_after_ready_reloads_and_kills_nothing() {
    if !ftpd_tests::is_root() {
        return ftpd_tests::cannot_run(
            "reload::a_reload_right_after_ready_reloads_and_kills_nothing",
            "a separate front exists only when ftpd starts as root",
        );
    }
    for attempt in 0..10 {
        let s = Setup::new();
        let port = ftpd_tests::free_port();
        let common = format!("listen_port={port}\nftpd_ebpf=off\nftpd_metrics_listen=\n");
        s.write(&format!("{common}ftpd_banner=first banner\n"));
        let notify_path = s.dir.path().join("notify");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
        notify.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut ftpd = Started::spawn(&s, Some(&notify_path));
        // The edit is renamed into place after READY: written over the file
        // while ftpd starts, it could be read half-written.
        let second = s.dir.path().join("second.conf");
        let text = std::fs::read_to_string(s.conf()).expect("config");
        std::fs::write(&second, text.replace("first banner", "second banner")).expect("write");
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).unwrap_or_else(|e| panic!("no READY: {e}\n{}", ftpd.log()));
        assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
        std::fs::rename(&second, s.conf()).expect("rename");
        // SAFETY: kill(2) with a pid and a signal number.
        assert_eq!(unsafe { libc::kill(ftpd.child.id() as i32, libc::SIGHUP) }, 0);
        ftpd.wait_reloaded(attempt);
        ftpd.greets(port, "220 second banner", attempt);
        ftpd.stop();
    }
}

/// A reload signalled while a dead front is being replaced is not lost: the
/// master passed it to the dead front's pid, and the new front took over
/// only the reloads done before. Now the new front gets it as it starts.
#[test]
fn a_reload_while_the_front_is_replaced_reaches_the_new_front() {
    if !ftpd_tests::is_root() {
        return ftpd_tests::cannot_run(
            "reload::a_reload_while_the_front_is_replaced_reaches_the_new_front",
            "a separate front exists only when ftpd starts as root",
        );
    }
    let s = Setup::new();
    let server = s.start("ftpd_banner=first banner\n");
    for (attempt, banner) in ["second banner", "third banner", "fourth banner"].iter().enumerate() {
        s.write(&format!("ftpd_banner={banner}\n"));
        let before = server.log().matches("SIGHUP: configuration re-read").count();
        run_ok(Command::new("kill").args(["-KILL", &server.front().to_string()]));
        // SAFETY: kill(2) with a pid and a signal number.
        assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) }, 0);
        server.wait_log("SIGHUP: configuration re-read", before + 1, Duration::from_secs(10));
        assert!(greeting(&server).contains(&format!("220 {banner}")), "attempt {attempt}:\n{}", server.log());
    }
}

/// ftpd started by hand, for the tests that signal it before the test kit
/// would see it listen. Killed when dropped, so that a failing test leaves
/// no server behind: killing the master takes the front along (its
/// parent-death signal), and with them anything they attached.
struct Started {
    child: std::process::Child,
    log: PathBuf,
}

impl Started {
    /// ftpd on `s`'s config file, logging beside it; with `notify`, told to
    /// say READY there as to systemd.
    fn spawn(s: &Setup, notify: Option<&Path>) -> Self {
        let log = s.dir.path().join("ftpd.log");
        let mut cmd = Command::new(ftpd_tests::ftpd_bin());
        cmd.arg(s.conf()).stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&log).expect("log"));
        if let Some(path) = notify {
            cmd.env("NOTIFY_SOCKET", path);
        }
        Self { child: cmd.spawn().expect("spawn ftpd"), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the reload a SIGHUP asked for; fails at once if the signal
    /// ended ftpd or killed its front.
    fn wait_reloaded(&mut self, attempt: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains("SIGHUP: configuration re-read") {
            let ended = self.child.try_wait().expect("try_wait").is_some();
            assert!(!ended, "attempt {attempt}: the SIGHUP ended ftpd:\n{}", self.log());
            let log = self.log();
            assert!(!log.contains("killed by signal 1"), "attempt {attempt}: the SIGHUP killed the front:\n{log}");
            assert!(Instant::now() < deadline, "attempt {attempt}: no reload:\n{log}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The greeting on 127.0.0.1:`port` is `want`.
    fn greets(&self, port: u16, want: &str, attempt: usize) {
        let mut c = Ftp::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        let (code, text) = c.read_reply();
        assert_eq!((code, text.trim_end()), (220, want), "attempt {attempt}:\n{}", self.log());
    }

    /// SIGTERM, and ftpd exits 0.
    fn stop(mut self) {
        run_ok(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
        assert!(self.child.wait().expect("wait").success(), "{}", self.log());
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
