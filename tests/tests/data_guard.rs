//! A passive port's resources (listener, pinhole, pool count) are released
//! however the port ends: used, replaced by PASV or PORT, or with its session.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use ftpd_tests::{Server, free_port, wait_for};

/// `ftpd_pasv_ports_in_use`, read with one HTTP/1.0 request.
fn in_use(addr: &str) -> f64 {
    let mut s = TcpStream::connect_timeout(&addr.parse().expect("address"), Duration::from_secs(5)).expect("metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body.lines()
        .find_map(|l| l.strip_prefix("ftpd_pasv_ports_in_use "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ftpd_pasv_ports_in_use in:\n{body}"))
}

/// Waits (briefly) for the gauge to reach `want`: sessions release on their own task.
fn expect_in_use(addr: &str, want: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = in_use(addr);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got} passive ports in use, want {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The port a PASV reply announces.
fn pasv_port(reply: &str) -> u16 {
    let inner = &reply[reply.find('(').expect("(") + 1..reply.find(')').expect(")")];
    let n: Vec<u16> = inner.split(',').map(|x| x.trim().parse().expect("number")).collect();
    n[4] * 256 + n[5]
}

#[test]
fn passive_ports_are_released_however_they_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("f.txt"), b"data\n").expect("write");
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = Server::start(dir.path(), &[&format!("ftpd_metrics_listen={metrics}")]);
    let mut c = server.login();
    expect_in_use(&metrics, 0.0, "at login");

    // A second PASV replaces the first: one port, and the first one closed.
    let first = pasv_port(&c.cmd_ok("PASV", 227));
    expect_in_use(&metrics, 1.0, "after PASV");
    // A small passive range (the kernel-plane test servers have ten ports)
    // may hand out the freed port again: ask until another one comes.
    let mut tries = 0;
    while pasv_port(&c.cmd_ok("PASV", 227)) == first {
        tries += 1;
        assert!(tries < 50, "PASV kept announcing port {first}");
    }
    expect_in_use(&metrics, 1.0, "after a second PASV");
    let refused = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], first)), Duration::from_secs(2));
    assert!(refused.is_err(), "the replaced passive port still accepts");

    // PORT gives up the passive port at once.
    let active = TcpListener::bind("127.0.0.1:0").expect("bind");
    let p = active.local_addr().expect("addr").port();
    c.cmd_ok(&format!("PORT 127,0,0,1,{},{}", p >> 8, p & 0xff), 200);
    expect_in_use(&metrics, 0.0, "after PORT");

    // Used by a transfer.
    let (body, code, _) = c.transfer("RETR f.txt");
    assert_eq!((body.as_slice(), code), (&b"data\n"[..], 226));
    expect_in_use(&metrics, 0.0, "after a transfer");

    // Left behind by a session that ends, by QUIT or by hanging up.
    c.cmd_ok("PASV", 227);
    expect_in_use(&metrics, 1.0, "before QUIT");
    c.cmd_ok("QUIT", 221);
    expect_in_use(&metrics, 0.0, "after QUIT");
    let mut gone = server.login();
    gone.cmd_ok("EPSV", 229);
    expect_in_use(&metrics, 1.0, "before the hang-up");
    drop(gone);
    expect_in_use(&metrics, 0.0, "after the hang-up");
}

/// The port of an EPSV reply.
fn epsv_port(reply: &str) -> u16 {
    reply.split('|').nth(3).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("EPSV: {reply}"))
}

/// Waits until a connection to `port` is refused (or dropped by the kernel
/// plane) rather than accepted; panics with `what` after `within`.
fn expect_refused(port: u16, within: Duration, what: &str) {
    wait_for(what, within, || {
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(2)).is_err()
    });
}

/// A mirror client fetching many small files sends EPSV (or PASV) before
/// each one. The port its last transfer used still listens for it, so the
/// next EPSV is answered with that port and no new listener is bound per
/// file. The kept port counts as no port in use, and it is given up by PORT,
/// by the session's end, and after a second unused.
#[test]
fn a_sessions_used_passive_port_serves_its_next_transfer() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("f.txt"), b"data\n").expect("write");
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = Server::start(dir.path(), &[&format!("ftpd_metrics_listen={metrics}")]);
    let mut c = server.login();
    let retr = |c: &mut ftpd_tests::Ftp, port: u16| {
        let data = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(5))
            .expect("data connect");
        let (body, code, text) = c.transfer_on(data, "RETR f.txt");
        assert_eq!((body.as_slice(), code), (&b"data\n"[..], 226), "{text}");
    };

    let first = epsv_port(&c.cmd_ok("EPSV", 229));
    retr(&mut c, first);
    for i in 0..5 {
        let again = epsv_port(&c.cmd_ok("EPSV", 229));
        assert_eq!(again, first, "EPSV after transfer {i} moved to another port");
        retr(&mut c, again);
    }
    expect_in_use(&metrics, 0.0, "between transfers");
    // PASV takes the same port too.
    assert_eq!(pasv_port(&c.cmd_ok("PASV", 227)), first, "PASV after a transfer");
    retr(&mut c, first);

    // Unused for a second: given up.
    std::thread::sleep(Duration::from_millis(1200));
    expect_refused(first, Duration::from_millis(500), "a kept port still listens after a second unused");

    // PORT gives it up at once.
    let p = epsv_port(&c.cmd_ok("EPSV", 229));
    retr(&mut c, p);
    let active = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ap = active.local_addr().expect("addr").port();
    c.cmd_ok(&format!("PORT 127,0,0,1,{},{}", ap >> 8, ap & 0xff), 200);
    expect_refused(p, Duration::from_secs(5), "a kept port still listens after PORT");

    // So does the session's end.
    let p = epsv_port(&c.cmd_ok("EPSV", 229));
    retr(&mut c, p);
    c.cmd_ok("QUIT", 221);
    expect_refused(p, Duration::from_secs(5), "a kept port still listens after QUIT");
}

/// A transfer that outlasts the second a used port is kept does not hold
/// that port's listener until it ends.
#[test]
fn a_kept_port_is_given_up_during_a_long_transfer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = vec![b'x'; 300_000];
    std::fs::write(dir.path().join("big.bin"), &body).expect("write");
    // Three seconds at 100 kB/s.
    let server = Server::start(dir.path(), &["anon_max_rate=100000"]);
    let mut c = server.login();
    let p = epsv_port(&c.cmd_ok("EPSV", 229));
    let mut data =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], p)), Duration::from_secs(5)).expect("connect");
    c.cmd_ok("RETR big.bin", 150);
    std::thread::sleep(Duration::from_millis(1300));
    expect_refused(p, Duration::from_millis(500), "a kept port still listens 1.3 s into a long transfer");
    let mut got = Vec::new();
    data.read_to_end(&mut got).expect("read");
    assert_eq!(got.len(), body.len());
    assert_eq!(c.read_reply().0, 226);
}
