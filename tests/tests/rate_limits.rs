//! Rate limits hold in every configuration a vsftpd.conf can express, and
//! to within ±5 % of the configured rate, measured as a client sees it: from
//! the 150 reply to the last byte (downloads) or to the 226 (uploads), over at
//! least 4 s, so a burst at the start counts against the limit.
//!
//! These run on whichever plane the harness gives (`FTPD_TEST_PLANE`):
//! userspace, the kernel plane with a passive range, and the kernel plane with
//! vsftpd's defaults (no passive range), which is where a kernel-only
//! limiter once enforced nothing at all.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use ftpd_tests::{Ftp, Server, random_file, writable_by_all};

/// Seconds each accuracy transfer is sized for (the "at least 4 s").
const SECONDS: f64 = 4.2;

/// How a data connection is made.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Passive,
    Active,
    /// Active, with a receive buffer so small that the server's socket
    /// buffers fill after a few hundred KiB (a client that stops reading).
    ActiveSmallWindow,
    /// EPSV (RFC 2428), for IPv6 and dual-stack listeners.
    Epsv,
    /// EPRT (RFC 2428).
    Eprt,
}

/// Opens the data connection for `cmd` and returns the stream once the 150
/// reply has arrived, with the instant it arrived.
fn start_transfer(c: &mut Ftp, mode: Mode, cmd: &str) -> (TcpStream, Instant) {
    match mode {
        Mode::Passive => {
            let data = c.pasv_connect();
            let (code, text) = c.cmd(cmd);
            assert_eq!(code, 150, "{cmd}: {text}");
            (data, Instant::now())
        }
        Mode::Epsv => {
            let data = c.epsv_connect();
            let (code, text) = c.cmd(cmd);
            assert_eq!(code, 150, "{cmd}: {text}");
            (data, Instant::now())
        }
        Mode::Active | Mode::ActiveSmallWindow | Mode::Eprt => {
            let ip = c.local_addr().ip();
            let listener = TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
            if matches!(mode, Mode::ActiveSmallWindow) {
                // Accepted sockets inherit it, before their handshake.
                set_rcvbuf(&listener, 4096);
            }
            let port = listener.local_addr().unwrap().port();
            match (mode, ip) {
                (Mode::Eprt, std::net::IpAddr::V4(a)) => c.cmd_ok(&format!("EPRT |1|{a}|{port}|"), 200),
                (Mode::Eprt, std::net::IpAddr::V6(a)) => c.cmd_ok(&format!("EPRT |2|{a}|{port}|"), 200),
                (_, std::net::IpAddr::V4(a)) => {
                    let o = a.octets();
                    c.cmd_ok(&format!("PORT {},{},{},{},{},{}", o[0], o[1], o[2], o[3], port >> 8, port & 0xff), 200)
                }
                (_, std::net::IpAddr::V6(_)) => panic!("PORT needs an IPv4 control connection"),
            };
            c.send_raw(format!("{cmd}\r\n").as_bytes()).unwrap();
            let (data, _) = listener.accept().unwrap();
            let (code, text) = c.read_reply();
            assert_eq!(code, 150, "{cmd}: {text}");
            (data, Instant::now())
        }
    }
}

/// A download: bytes per second from the 150 reply to the last byte.
fn download_rate(server: &Server, mode: Mode, name: &str, size: u64) -> f64 {
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let (mut data, t0) = start_transfer(&mut c, mode, &format!("RETR {name}"));
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match data.read(&mut buf).unwrap() {
            0 => break,
            n => got += n as u64,
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(got, size, "{mode:?} download of {name}");
    assert_eq!(c.read_reply().0, 226);
    size as f64 / secs
}

/// An upload of `size` bytes as fast as the client can: bytes per second
/// from the 150 reply to the 226.
fn upload_rate(server: &Server, mode: Mode, name: &str, size: u64) -> f64 {
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let (mut data, t0) = start_transfer(&mut c, mode, &format!("STOR {name}"));
    let chunk = vec![7u8; 256 * 1024];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap();
        data.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    drop(data);
    let (code, text) = c.read_reply();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(code, 226, "{mode:?} upload {name}: {text}");
    assert_eq!(std::fs::metadata(server.root.join(name)).unwrap().len(), size);
    size as f64 / secs
}

/// A served tree with one file sized for [`SECONDS`] at `rate`, and a
/// writable directory for uploads.
fn tree(rate: u64) -> (tempfile::TempDir, u64) {
    let d = tempfile::tempdir().unwrap();
    let size = (rate as f64 * SECONDS) as u64;
    random_file(&d.path().join("f.bin"), size);
    writable_by_all(d.path());
    (d, size)
}

fn check(what: &str, rate: u64, measured: f64, failures: &mut Vec<String>) {
    let ratio = measured / rate as f64;
    eprintln!("measured: {what} at {rate} B/s -> {measured:.0} B/s ({:+.1} %)", (ratio - 1.0) * 100.0);
    if (ratio - 1.0).abs() > 0.05 {
        failures.push(format!("{what} at {rate} B/s: {measured:.0} B/s ({:+.1} %)", (ratio - 1.0) * 100.0));
    }
}

/// The accuracy matrix for one rate: downloads and uploads, passive and
/// active, all at once (each session has its own limit: scope `session`).
fn accuracy_at(rate: u64, failures: &mut Vec<String>) {
    let (d, size) = tree(rate);
    let server = Server::start(
        d.path(),
        &[&format!("anon_max_rate={rate}"), "write_enable=YES", "anon_upload_enable=YES", "port_enable=YES"],
    );
    let results: Vec<(String, f64)> = thread::scope(|s| {
        let server = &server;
        let jobs: Vec<_> = [Mode::Passive, Mode::Active]
            .into_iter()
            .flat_map(|mode| {
                [
                    s.spawn(move || (format!("{mode:?} download"), download_rate(server, mode, "f.bin", size))),
                    s.spawn(move || {
                        let name = format!("up-{mode:?}.bin");
                        (format!("{mode:?} upload"), upload_rate(server, mode, &name, size))
                    }),
                ]
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    for (what, measured) in results {
        check(&what, rate, measured, failures);
    }
}

/// Runs `jobs` (what, closure returning a rate) at once and checks each.
fn run_all<'a>(jobs: Vec<(String, Box<dyn FnOnce() -> f64 + Send + 'a>)>, rate: u64, failures: &mut Vec<String>) {
    let results: Vec<(String, f64)> = thread::scope(|s| {
        let handles: Vec<_> = jobs.into_iter().map(|(what, job)| (what, s.spawn(job))).collect();
        handles.into_iter().map(|(what, h)| (what, h.join().unwrap())).collect()
    });
    for (what, measured) in results {
        check(&what, rate, measured, failures);
    }
}

#[test]
fn limits_hold_on_ipv6_and_dual_stack_listeners() {
    let rate = 1_000_000;
    let mut failures = Vec::new();
    for listen in [ftpd_tests::Listen::V6Loopback, ftpd_tests::Listen::DualStack] {
        let (d, size) = tree(rate);
        // vsftpd's default of no passive port range, whatever the plane.
        let server = Server::launch(
            d.path(),
            &[
                &format!("anon_max_rate={rate}"),
                "write_enable=YES",
                "anon_upload_enable=YES",
                "pasv_min_port=0",
                "pasv_max_port=0",
            ],
            &ftpd_tests::Launch { listen, ..Default::default() },
        );
        let server = &server;
        let mut jobs: Vec<(String, Box<dyn FnOnce() -> f64 + Send>)> = Vec::new();
        for mode in [Mode::Epsv, Mode::Eprt] {
            jobs.push((
                format!("{listen:?} {mode:?} download"),
                Box::new(move || download_rate(server, mode, "f.bin", size)),
            ));
            jobs.push((
                format!("{listen:?} {mode:?} upload"),
                Box::new(move || upload_rate(server, mode, &format!("up-{mode:?}.bin"), size)),
            ));
        }
        run_all(jobs, rate, &mut failures);
    }
    assert!(failures.is_empty(), "rates off by more than 5 %:\n{}", failures.join("\n"));
}

/// A download on a session from `source`, in active mode so that the data
/// connection comes from the same address: bytes per second from the 150.
fn download_from(server: &Server, source: &str, name: &str, size: u64) -> f64 {
    let mut c = Ftp::connect_from(server.addr, source.parse().unwrap());
    assert_eq!(c.read_reply().0, 220);
    c.cmd_ok("USER anonymous", 230);
    c.cmd_ok("TYPE I", 200);
    let (mut data, t0) = start_transfer(&mut c, Mode::Active, &format!("RETR {name}"));
    let mut got = Vec::new();
    data.read_to_end(&mut got).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(got.len() as u64, size);
    assert_eq!(c.read_reply().0, 226);
    size as f64 / secs
}

#[test]
fn rate_scopes_share_one_limit_by_user_and_by_ip() {
    let rate = 1_000_000u64;
    let d = tempfile::tempdir().unwrap();
    // Half the rate each for 4.2 s, and the whole rate for 4.2 s.
    let half = (rate as f64 * SECONDS / 2.0) as u64;
    let whole = (rate as f64 * SECONDS) as u64;
    random_file(&d.path().join("half.bin"), half);
    random_file(&d.path().join("whole.bin"), whole);
    let mut failures = Vec::new();

    // user: two downloads of the same user share the limit.
    let server = Server::start(d.path(), &[&format!("anon_max_rate={rate}"), "ftpd_rate_scope=user"]);
    let t0 = Instant::now();
    thread::scope(|s| {
        let a = s.spawn(|| download_from(&server, "127.0.0.1", "half.bin", half));
        let b = s.spawn(|| download_from(&server, "127.0.0.1", "half.bin", half));
        a.join().unwrap();
        b.join().unwrap();
    });
    check("scope=user, two downloads together", rate, 2.0 * half as f64 / t0.elapsed().as_secs_f64(), &mut failures);
    drop(server);

    // ip: two downloads from one address share it; another address has its own.
    let server = Server::start(d.path(), &[&format!("anon_max_rate={rate}"), "ftpd_rate_scope=ip"]);
    let server = &server;
    run_all(
        vec![
            (
                "scope=ip, 127.0.0.1 download 1 (half)".into(),
                Box::new(move || 2.0 * download_from(server, "127.0.0.1", "half.bin", half)),
            ),
            (
                "scope=ip, 127.0.0.1 download 2 (half)".into(),
                Box::new(move || 2.0 * download_from(server, "127.0.0.1", "half.bin", half)),
            ),
            (
                "scope=ip, 127.0.0.2 alone".into(),
                Box::new(move || download_from(server, "127.0.0.2", "whole.bin", whole)),
            ),
        ],
        rate,
        &mut failures,
    );
    assert!(failures.is_empty(), "rates off by more than 5 %:\n{}", failures.join("\n"));
}

#[test]
fn limits_hold_for_active_mode_from_the_data_port() {
    // connect_from_port_20: the master binds the source port, the front
    // connects from it; the limit must hold all the same.
    let rate = 1_000_000;
    let (d, size) = tree(rate);
    let data_port = ftpd_tests::free_port();
    let server = Server::start(
        d.path(),
        &[&format!("anon_max_rate={rate}"), "connect_from_port_20=YES", &format!("ftp_data_port={data_port}")],
    );
    let mut failures = Vec::new();
    check(
        "active download from ftp_data_port",
        rate,
        download_rate(&server, Mode::Active, "f.bin", size),
        &mut failures,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn limits_hold_within_five_percent_at_100k_1m_10m() {
    let mut failures = Vec::new();
    for rate in [100_000, 1_000_000, 10_000_000] {
        accuracy_at(rate, &mut failures);
    }
    assert!(failures.is_empty(), "rates off by more than 5 %:\n{}", failures.join("\n"));
}

/// Reads from `data` as fast as possible for `secs`; returns bytes per second.
fn read_for(data: &mut TcpStream, secs: f64) -> f64 {
    let mut buf = vec![0u8; 64 * 1024];
    let t0 = Instant::now();
    let mut got = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        match data.read(&mut buf) {
            Ok(0) => panic!("the download ended early"),
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    got as f64 / t0.elapsed().as_secs_f64()
}

fn set_rcvbuf(s: &impl std::os::fd::AsRawFd, bytes: libc::c_int) {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&bytes`.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

/// A TCP connection whose segments are at most `mss` bytes and whose
/// receive buffer is `rcvbuf`, both set before the handshake.
fn connect_with_mss(to: SocketAddr, mss: libc::c_int, rcvbuf: libc::c_int) -> TcpStream {
    let how = ftpd_tests::SocketSetup { source: None, rcvbuf: Some(rcvbuf), mss: Some(mss) };
    ftpd_tests::tcp_connect(to, how).unwrap_or_else(|e| panic!("connect to {to}: {e}"))
}

fn write_conf(path: &Path, root: &Path, extra: &str) {
    let text = format!(
        "listen=YES\nlisten_address=127.0.0.1\nanonymous_enable=YES\nno_anon_password=YES\nanon_root={}\nftp_username=nobody\n{extra}",
        root.display()
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn sighup_moves_a_running_download_between_no_limit_and_limits() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("pub");
    std::fs::create_dir(&root).unwrap();
    ftpd_tests::served_by_nobody(&root);
    random_file(&root.join("big"), 200_000_000);
    let conf = d.path().join("ftpd.conf");
    write_conf(&conf, &root, "");
    let server = Server::launch(&root, &[], &ftpd_tests::Launch { config: Some(&conf), ..Default::default() });
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    // The segment size of a real network (loopback's is 64 KiB: at 20 kB/s
    // TCP would pace one 128 KiB segment every 6 s, and a new rate only
    // applies from the next one), and a small receive window, so that what
    // the server queued before a change drains within the settling time.
    let text = c.cmd_ok("PASV", 227);
    let inner = &text[text.find('(').unwrap() + 1..text.find(')').unwrap()];
    let n: Vec<u16> = inner.split(',').map(|x| x.trim().parse().unwrap()).collect();
    let mut data = connect_with_mss(SocketAddr::from(([127, 0, 0, 1], n[4] * 256 + n[5])), 1448, 64 * 1024);
    assert_eq!(c.cmd("RETR big").0, 150);
    data.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    // No limit yet: far faster than any limit set below.
    let t0 = Instant::now();
    let mut first = vec![0u8; 20_000_000];
    data.read_exact(&mut first).unwrap();
    let free = first.len() as f64 / t0.elapsed().as_secs_f64();
    assert!(free > 20e6, "unlimited download at {free:.0} B/s");

    // No limit -> 500 kB/s.
    write_conf(&conf, &root, "anon_max_rate=500000\n");
    server.sighup();
    server.wait_log("SIGHUP: configuration re-read", 1, Duration::from_secs(10));
    // What was queued before the change drains first.
    read_for(&mut data, 2.0);
    let r = read_for(&mut data, 2.0);
    assert!((r / 500e3 - 1.0).abs() < 0.10, "after SIGHUP to 500 kB/s: {r:.0} B/s");

    // A new login gets the new limit too, and STAT says so.
    let mut c2 = server.login();
    let stat = c2.cmd_ok("STAT", 211);
    assert!(stat.contains("500000"), "STAT of a new session after SIGHUP: {stat}");
    drop(c2);

    // 500 kB/s -> 1 MB/s.
    write_conf(&conf, &root, "anon_max_rate=1000000\n");
    server.sighup();
    server.wait_log("SIGHUP: configuration re-read", 2, Duration::from_secs(10));
    read_for(&mut data, 2.0);
    let r = read_for(&mut data, 2.0);
    assert!((r / 1e6 - 1.0).abs() < 0.10, "after SIGHUP to 1 MB/s: {r:.0} B/s");

    // A deep cut and a raise: the cut leaves about a second of the old rate
    // queued, worth a minute at the new one; the raise must not wait for it.
    write_conf(&conf, &root, "anon_max_rate=20000\n");
    server.sighup();
    server.wait_log("SIGHUP: configuration re-read", 3, Duration::from_secs(10));
    read_for(&mut data, 1.0);
    write_conf(&conf, &root, "anon_max_rate=2000000\n");
    server.sighup();
    server.wait_log("SIGHUP: configuration re-read", 4, Duration::from_secs(10));
    read_for(&mut data, 2.0);
    let r = read_for(&mut data, 2.0);
    assert!((r / 2e6 - 1.0).abs() < 0.10, "after a cut to 20 kB/s and a raise to 2 MB/s: {r:.0} B/s");

    // 2 MB/s -> no limit again: the rest (most of the file) comes at once.
    write_conf(&conf, &root, "");
    server.sighup();
    server.wait_log("SIGHUP: configuration re-read", 5, Duration::from_secs(10));
    let t0 = Instant::now();
    let mut rest = Vec::new();
    data.read_to_end(&mut rest).unwrap();
    let r = rest.len() as f64 / t0.elapsed().as_secs_f64();
    assert!(rest.len() > 100_000_000 && r > 20e6, "after SIGHUP back to no limit: {} bytes at {r:.0} B/s", rest.len());
}

#[test]
fn sighup_changes_how_new_logins_are_decided() {
    // The master decides logins: after a reload it must use the new file.
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("pub");
    std::fs::create_dir(&root).unwrap();
    ftpd_tests::served_by_nobody(&root);
    let banned = d.path().join("banned");
    std::fs::write(&banned, "evil@example.com\n").unwrap();
    let conf = d.path().join("ftpd.conf");
    write_conf(&conf, &root, "no_anon_password=NO\n");
    let server = Server::launch(&root, &[], &ftpd_tests::Launch { config: Some(&conf), ..Default::default() });
    let login = |server: &Server| {
        let mut c = server.connect();
        c.cmd_ok("USER anonymous", 331);
        c.cmd("PASS evil@example.com").0
    };
    assert_eq!(login(&server), 230);
    write_conf(
        &conf,
        &root,
        &format!("no_anon_password=NO\ndeny_email_enable=YES\nbanned_email_file={}\n", banned.display()),
    );
    server.sighup();
    server.wait_log("SIGHUP: configuration re-read", 1, Duration::from_secs(10));
    assert_eq!(login(&server), 530, "a banned password after the reload");
}

/// Expects `421 Data timeout. Reconnect. Sorry.` and then the end of the
/// control connection, as a 421 means.
fn expect_421_and_close(c: &mut Ftp, what: &str) {
    let (code, text) = c.read_reply();
    assert_eq!((code, text.as_str()), (421, "421 Data timeout. Reconnect. Sorry.\r\n"), "{what}");
    assert!(c.try_read_reply().is_none(), "{what}: the control connection must close after 421");
}

#[test]
fn stalled_transfers_end_with_421_and_the_session_closes() {
    let d = tempfile::tempdir().unwrap();
    random_file(&d.path().join("big"), 64 << 20);
    let many = d.path().join("many");
    std::fs::create_dir(&many).unwrap();
    // About 9 MB of listing: more than the socket buffers of both ends hold.
    for i in 0..60_000 {
        let name = format!("a-rather-long-file-name-to-fill-the-socket-buffers-of-both-ends-quickly-{i:06}");
        std::fs::write(many.join(name), b"").unwrap();
    }
    writable_by_all(d.path());
    let server = Server::start(
        d.path(),
        &["data_connection_timeout=1", "write_enable=YES", "anon_upload_enable=YES", "ftpd_list_cache_ms=0"],
    );

    // RETR, never read.
    let mut c = server.login();
    let (_data, _) = start_transfer(&mut c, Mode::Passive, "RETR big");
    expect_421_and_close(&mut c, "RETR");

    // STOR, a few bytes, then silence.
    let mut c = server.login();
    let (mut data, _) = start_transfer(&mut c, Mode::Passive, "STOR stalled.bin");
    data.write_all(b"some bytes").unwrap();
    expect_421_and_close(&mut c, "STOR");
    drop(data);

    // LIST of a big directory, never read.
    let mut c = server.login();
    let (_data, _) = start_transfer(&mut c, Mode::ActiveSmallWindow, "LIST many");
    expect_421_and_close(&mut c, "LIST");

    // Active mode too.
    let mut c = server.login();
    let (_data, _) = start_transfer(&mut c, Mode::Active, "RETR big");
    expect_421_and_close(&mut c, "active RETR");
}

#[test]
fn stat_reports_the_limit_the_transfer_uses_for_virtual_users() {
    // Virtual users get anonymous users' rights (anon_max_rate) unless
    // virtual_use_local_privs: STAT must name the rate transfers use.
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("home");
    std::fs::create_dir(&root).unwrap();
    ftpd_tests::served_by_nobody(&root);
    random_file(&root.join("f.bin"), 420_000);
    let users = d.path().join("users");
    let out = std::process::Command::new(ftpd_tests::ftpd_bin())
        .args(["passwd"])
        .arg(&users)
        .arg("vera")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            ch.stdin.take().unwrap().write_all(b"secret\n")?;
            ch.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "ftpd passwd: {out:?}");
    let server = Server::start(
        &root,
        &[
            "anonymous_enable=NO",
            "guest_enable=YES",
            "guest_username=nobody",
            &format!("virtual_users_file={}", users.display()),
            &format!("local_root={}", root.display()),
            "allow_writeable_chroot=YES",
            "anon_max_rate=100000",
            "local_max_rate=5000000",
        ],
    );
    let mut c = server.connect();
    c.cmd_ok("USER vera", 331);
    c.cmd_ok("PASS secret", 230);
    let stat = c.cmd_ok("STAT", 211);
    assert!(stat.contains("100000"), "STAT of a virtual user: {stat}");
    assert!(!stat.contains("5000000"), "STAT of a virtual user: {stat}");
    c.cmd_ok("TYPE I", 200);
    let (mut data, t0) = start_transfer(&mut c, Mode::Passive, "RETR f.bin");
    let mut got = Vec::new();
    data.read_to_end(&mut got).unwrap();
    let rate = got.len() as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(got.len(), 420_000);
    assert!((rate / 100e3 - 1.0).abs() < 0.05, "virtual user's download at {rate:.0} B/s, limit 100000");
}
