//! Per-session limits and timeouts, and the passive-mode address rules, in
//! userspace (the kernel data plane is off in these tests).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use ftpd_tests::{Server, SocketSetup, pasv_addr, random_file, tcp_connect_within, writable_by_all};

fn tree(size: u64) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    random_file(&d.path().join("f.bin"), size);
    writable_by_all(d.path());
    d
}

#[test]
fn anon_max_rate_paces_downloads_and_uploads() {
    // 4 MB at 2 MB/s: about 2 s each way. Coarse bounds: this is a functional
    // check that the limit is enforced, not a benchmark.
    let d = tree(4_000_000);
    let server = Server::start(d.path(), &["anon_max_rate=2000000", "write_enable=YES", "anon_upload_enable=YES"]);
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let start = Instant::now();
    let (bytes, code, _) = c.transfer("RETR f.bin");
    let down = start.elapsed().as_secs_f64();
    assert_eq!((bytes.len(), code), (4_000_000, 226));
    assert!((1.6..3.0).contains(&down), "download took {down:.2} s, expected about 2 s at 2 MB/s");

    let mut data = c.pasv_connect();
    c.send_raw(b"STOR up.bin\r\n").unwrap();
    assert_eq!(c.read_reply().0, 150);
    let start = Instant::now();
    data.write_all(&bytes).unwrap();
    drop(data);
    assert_eq!(c.read_reply().0, 226);
    let up = start.elapsed().as_secs_f64();
    assert!((1.6..3.0).contains(&up), "upload took {up:.2} s, expected about 2 s at 2 MB/s");
    assert_eq!(std::fs::read(d.path().join("up.bin")).unwrap(), bytes);

    // Without a limit the same download is far faster.
    let server = Server::start(d.path(), &[]);
    let mut c = server.login();
    let start = Instant::now();
    let (bytes, _, _) = c.transfer("RETR f.bin");
    assert_eq!(bytes.len(), 4_000_000);
    assert!(start.elapsed().as_secs_f64() < 1.0);
}

#[test]
fn accept_and_data_timeouts() {
    let d = tree(64 << 20);
    let server = Server::start(d.path(), &["accept_timeout=1", "data_connection_timeout=1"]);
    let mut c = server.login();
    // PASV, but the client never connects.
    c.cmd_ok("PASV", 227);
    let start = Instant::now();
    assert_eq!(c.cmd("RETR f.bin").0, 425);
    assert!(start.elapsed() < Duration::from_secs(4));
    // The client connects but never reads: the transfer stalls and is dropped.
    let _data = c.pasv_connect();
    assert_eq!(c.cmd("RETR f.bin").0, 150);
    let (code, text) = c.read_reply();
    assert_eq!((code, text.as_str()), (421, "421 Data timeout. Reconnect. Sorry.\r\n"));
}

#[test]
fn passive_connections_from_another_ip_are_refused() {
    let d = tree(1000);
    let server = Server::start(d.path(), &[]);
    let mut c = server.login();
    let text = c.cmd_ok("PASV", 227);
    let port = pasv_addr(&text).expect("a 227 reply").port();
    // 127.0.0.2 is another host as far as ftpd is concerned. The kernel
    // plane drops its SYN (no pinhole for that IP); userspace accepts and
    // refuses with vsftpd's 425.
    let sock = try_connect_from("127.0.0.2", SocketAddr::from(([127, 0, 0, 1], port)));
    if server.kernel_pinholes() {
        assert!(sock.is_none(), "the pinhole must drop a SYN from another IP");
    } else {
        assert!(sock.is_some());
        let (code, text) = c.cmd("RETR f.bin");
        assert_eq!((code, text.as_str()), (425, "425 Security: Bad IP connecting.\r\n"));
    }
    drop(sock);

    let server = Server::start(d.path(), &["pasv_promiscuous=YES"]);
    let mut c = server.login();
    let port = pasv_addr(&c.cmd_ok("PASV", 227)).expect("a 227 reply").port();
    let mut sock = try_connect_from("127.0.0.2", SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("pasv_promiscuous admits any IP");
    assert_eq!(c.cmd("RETR f.bin").0, 150);
    let mut got = Vec::new();
    sock.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 1000);
    assert_eq!(c.read_reply().0, 226);
}

#[test]
fn pasv_address_is_resolved_when_asked() {
    let d = tree(10);
    let server = Server::start(d.path(), &["pasv_address=localhost", "pasv_addr_resolve=YES"]);
    let mut c = server.login();
    assert!(c.cmd_ok("PASV", 227).starts_with("227 Entering Passive Mode (127,0,0,1,"));
    // And again after a reload, by the same front: the name is resolved by
    // the process that reads the file, not by a confined front, which may
    // not open the sockets a resolver uses (nscd's, netlink's).
    let front = ftpd_tests::is_root().then(|| server.front());
    server.sighup();
    server.wait_log("SIGHUP: configuration re-read", 1, Duration::from_secs(5));
    let mut c = server.login();
    assert!(c.cmd_ok("PASV", 227).starts_with("227 Entering Passive Mode (127,0,0,1,"));
    assert!(!server.log().contains("killed by"), "{}", server.log());
    assert_eq!(front, ftpd_tests::is_root().then(|| server.front()), "the front was replaced");
    let port = format!("-olisten_port={}", ftpd_tests::free_port());
    let out = ftpd_tests::run(std::process::Command::new(ftpd_tests::ftpd_bin()).arg("--root").arg(d.path()).args([
        "-opasv_address=no.such.host.invalid",
        "-opasv_addr_resolve=YES",
        "-oftpd_ebpf=off",
        &port,
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pasv_address=no.such.host.invalid: cannot resolve"));
}

/// A TCP connection from a chosen local address; `None` when the SYN goes
/// unanswered for 2 s (dropped in XDP).
fn try_connect_from(from: &str, to: SocketAddr) -> Option<TcpStream> {
    let how = SocketSetup { source: Some(from.parse().expect("an address")), ..SocketSetup::default() };
    tcp_connect_within(to, how, Duration::from_secs(2)).ok()
}
