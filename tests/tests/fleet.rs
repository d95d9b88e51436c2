//! ftpd behind a load balancer: Debian's HAProxy in front, sending PROXY
//! protocol headers (v2 and v1), and ftpd's own rules for who may send one.
//!
//! Clients connect from other loopback addresses (127.0.0.2, 127.0.0.3):
//! HAProxy reaches ftpd from 127.0.0.1, so only the header tells ftpd who
//! the client is.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ftpd_tests::{Ftp, Server, SocketSetup, free_port, http_get, metric_samples, random_file, tcp_connect, wait_for};

/// The balancer's address: not the nodes' (127.0.0.1), as in a real
/// deployment, so that a data connection sent to it would miss the node.
const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);

/// A running HAProxy in TCP mode, killed on drop.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// HAProxy on [`BALANCER`] forwarding to `node` with `send`
    /// (`send-proxy`, `send-proxy-v2`).
    fn start(node: SocketAddr, send: &str) -> Self {
        Self::with_data(node, send, None)
    }

    /// Also forwarding the passive ports `data` to the node, each
    /// connection with a header (`ftpd_proxy_data=YES`).
    fn with_data(node: SocketAddr, send: &str, data: Option<(u16, u16)>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = ftpd_tests::free_port_on(BALANCER.into());
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                 frontend ftp\n  bind {BALANCER}:{port}\n  default_backend nodes\n\
                 backend nodes\n  server n1 {node} {send}\n{}",
                data.map_or_else(String::new, |(lo, hi)| format!(
                    "frontend data\n  bind {BALANCER}:{lo}-{hi}\n  default_backend data_nodes\n\
                     backend data_nodes\n  server n1 {} {send}\n",
                    node.ip()
                ))
            ),
        )
        .expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (cargo xtask setup installs it)");
        let addr = SocketAddr::from((BALANCER, port));
        // Probed from 127.0.0.4: a client like any other to ftpd.
        let probe = SocketSetup { source: Some(from([127, 0, 0, 4])), ..SocketSetup::default() };
        wait_for("haproxy listening", Duration::from_secs(10), || tcp_connect(addr, probe).is_ok());
        Self { child, addr, _dir: dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn from(ip: [u8; 4]) -> IpAddr {
    IpAddr::from(ip)
}

/// A control connection through `addr` from `source`, with its first reply.
fn greeted(addr: SocketAddr, source: IpAddr) -> (Ftp, u16) {
    let mut c = Ftp::connect_from(addr, source);
    let (code, _) = c.read_reply();
    (c, code)
}

fn curl(source: &str, args: &[&str]) -> std::process::Output {
    Command::new("curl").args(["-sS", "--max-time", "30", "--interface", source]).args(args).output().expect("curl")
}

fn proxied_server(root: &Path, extra: &[&str]) -> (Server, u16) {
    let metrics = free_port();
    let listen = format!("ftpd_metrics_listen=127.0.0.1:{metrics}");
    let mut settings = vec!["ftpd_proxy_protocol=YES", "ftpd_proxy_trusted=127.0.0.1", listen.as_str()];
    settings.extend_from_slice(extra);
    (Server::start(root, &settings), metrics)
}

#[test]
fn haproxy_v2_and_v1_hand_ftpd_the_real_client() {
    let d = tempfile::tempdir().unwrap();
    random_file(&d.path().join("f.bin"), 3_000_000);
    let want = std::fs::read(d.path().join("f.bin")).unwrap();
    for send in ["send-proxy-v2", "send-proxy"] {
        let (server, _) = proxied_server(d.path(), &["max_per_ip=2"]);
        let lb = Haproxy::start(server.addr, send);
        // Passive, then active: each data connection goes straight between
        // the client and the node, checked against the header's address.
        // curl (since 7.74) connects to the control connection's address
        // whatever PASV says, unless told to trust it.
        let url = format!("ftp://{}/f.bin", lb.addr);
        for mode in [&["--ftp-pasv", "--no-ftp-skip-pasv-ip"][..], &["--ftp-port", "127.0.0.2"][..]] {
            let out = curl("127.0.0.2", &[mode, &[url.as_str(), "-o", "-"]].concat());
            assert!(out.status.success(), "{send} {mode:?}: {}", String::from_utf8_lossy(&out.stderr));
            assert!(out.stdout == want, "{send} {mode:?}: {} bytes, not the file", out.stdout.len());
        }
        // EPSV would send the data connection to the balancer: refused, so
        // that clients use PASV, which names the node itself.
        let (mut c, _) = greeted(lb.addr, from([127, 0, 0, 5]));
        c.cmd("USER anonymous");
        assert_eq!(c.cmd("EPSV").0, 502, "{send}");
        let pasv = c.cmd_ok("PASV", 227);
        assert!(pasv.contains("(127,0,0,1,"), "{send}: PASV names the node: {pasv}");
        drop(c);
        // max_per_ip counts the real client, not the balancer: two from
        // 127.0.0.2 fill its cap, 127.0.0.3 still gets in.
        let held: Vec<_> = (0..2).map(|_| greeted(lb.addr, from([127, 0, 0, 2]))).collect();
        assert!(held.iter().all(|(_, code)| *code == 220), "{send}: two sessions from 127.0.0.2");
        let (_, third) = greeted(lb.addr, from([127, 0, 0, 2]));
        assert_eq!(third, 421, "{send}: a third from 127.0.0.2 is over max_per_ip=2");
        let (mut other, code) = greeted(lb.addr, from([127, 0, 0, 3]));
        assert_eq!(code, 220, "{send}: 127.0.0.3 is another client");
        let (code, _) = other.cmd("USER anonymous");
        assert!(code == 230 || code == 331, "{send}: {code}");
        drop(held);
        let log = server.stop();
        assert!(log.contains("peer=127.0.0.2:"), "{send}: sessions are logged with the real client: {log}");
        assert!(log.contains("peer=127.0.0.3:"), "{send}: {log}");
        assert!(!log.contains("peer=127.0.0.1:"), "{send}: never the balancer: {log}");
    }
}

#[test]
fn data_connections_through_the_balancer_carry_headers_too() {
    // Each node its own passive range, forwarded by the balancer with a
    // header: curl's and ftplib's defaults (EPSV, or PASV with its address
    // ignored) reach the node through the balancer's address.
    let d = tempfile::tempdir().unwrap();
    random_file(&d.path().join("f.bin"), 2_000_000);
    let want = std::fs::read(d.path().join("f.bin")).unwrap();
    let lo = 29_000 + u16::try_from(std::process::id() % 100).unwrap() * 10;
    let (min, max) = (format!("pasv_min_port={lo}"), format!("pasv_max_port={}", lo + 9));
    let (server, _) = proxied_server(d.path(), &["ftpd_proxy_data=YES", &min, &max]);
    if server.kernel_plane() {
        // On one host's `lo` the balancer's data ports are the node's own
        // numbers, and XDP on `lo` guards them on the balancer's address
        // too: the client's SYN to the balancer finds no pinhole. (A real
        // balancer is another host.)
        eprintln!("[fleet] data through a balancer on the same lo: userspace plane only");
        return;
    }
    let lb = Haproxy::with_data(server.addr, "send-proxy-v2", Some((lo, lo + 9)));
    let url = format!("ftp://{}/f.bin", lb.addr);
    for mode in [&[][..], &["--disable-epsv"][..]] {
        let out = curl("127.0.0.2", &[mode, &[url.as_str(), "-o", "-"]].concat());
        assert!(out.status.success(), "{mode:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == want, "{mode:?}: {} bytes, not the file", out.stdout.len());
    }
    let out = ftpd_tests::python(&format!(
        r#"import ftplib, io, socket
class FTP(ftplib.FTP):
    def connect(self, *a, **k):
        k["source_address"] = ("127.0.0.3", 0)
        return super().connect(*a, **k)
f = FTP()
f.connect("{ip}", {port}, timeout=20)
f.login()
got = io.BytesIO()
f.retrbinary("RETR f.bin", got.write)
print("ftplib", len(got.getvalue()))
"#,
        ip = lb.addr.ip(),
        port = lb.addr.port()
    ));
    assert!(out.contains("ftplib 2000000"), "{out}");
    // Another client racing for 127.0.0.2's passive port through the
    // balancer is named by the header, and refused.
    let (mut c, _) = greeted(lb.addr, from([127, 0, 0, 2]));
    c.cmd("USER anonymous");
    let epsv = c.cmd_ok("EPSV", 229);
    let port: u16 = epsv.split('|').nth(3).and_then(|p| p.parse().ok()).unwrap();
    let thief = tcp_connect(
        SocketAddr::from((BALANCER, port)),
        SocketSetup { source: Some(from([127, 0, 0, 7])), ..SocketSetup::default() },
    )
    .expect("connect");
    let (code, text) = c.cmd("RETR f.bin");
    assert_eq!(code, 425, "{text}");
    drop(thief);
    let log = server.stop();
    assert!(log.contains("intruder=127.0.0.7"), "{log}");
}

#[test]
fn data_connections_from_a_trusted_address_carry_no_header_unless_forwarded() {
    // With ftpd_proxy_data=NO a trusted address's data connection is a
    // plain one: a balancer's own session (PROXY UNKNOWN) transfers at once,
    // and a header on a data connection names no one.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("f.txt"), b"hello\n").unwrap();
    let (server, _) = proxied_server(d.path(), &[]);
    let lb = from([127, 0, 0, 1]);
    let s = tcp_connect(server.addr, SocketSetup { source: Some(lb), ..SocketSetup::default() }).unwrap();
    let mut c = Ftp::from_stream(s);
    c.send_raw(b"PROXY UNKNOWN\r\n").unwrap();
    assert_eq!(c.read_reply().0, 220);
    c.cmd("USER anonymous");
    let start = Instant::now();
    let data = c.pasv_connect();
    let (bytes, code, text) = c.transfer_on(data, "RETR f.txt");
    assert_eq!((bytes.as_slice(), code), (&b"hello\n"[..], 226), "{text}");
    assert!(start.elapsed() < Duration::from_secs(2), "no wait for a header: {:?}", start.elapsed());
    // A data connection that starts with a header is not another client's.
    let mut data = c.pasv_connect();
    std::io::Write::write_all(&mut data, b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 21\r\n").unwrap();
    let (code, _) = c.cmd("RETR f.txt");
    assert_eq!(code, 150, "the connection is the session's own (127.0.0.1)");
}

/// Sends `bytes` from `source` and says whether ftpd greeted the connection.
fn greeting_after(addr: SocketAddr, source: IpAddr, bytes: &[u8], close_after: bool) -> Option<String> {
    let mut s = tcp_connect(addr, SocketSetup { source: Some(source), ..SocketSetup::default() }).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).expect("send");
    if close_after {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got).into_owned();
    text.starts_with("220").then_some(text)
}

#[test]
fn only_trusted_senders_may_name_the_client_and_bad_headers_are_counted() {
    let d = tempfile::tempdir().unwrap();
    let (server, metrics) = proxied_server(d.path(), &["idle_session_timeout=2"]);
    let header = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 21\r\n";
    let lb = from([127, 0, 0, 1]);
    // A header from a trusted balancer: greeted (the session then idles out).
    assert!(greeting_after(server.addr, lb, header, false).is_some(), "a trusted v1 header is accepted");
    // The same header straight from a client is a forgery.
    assert_eq!(greeting_after(server.addr, from([127, 0, 0, 9]), header, false), None, "untrusted source");
    // From the balancer, anything but a whole header.
    assert_eq!(greeting_after(server.addr, lb, b"USER anonymous\r\n", false), None, "no header");
    assert_eq!(
        greeting_after(server.addr, lb, b"PROXY TCP4 192.0.2.999 127.0.0.1 40000 21\r\n", false),
        None,
        "malformed"
    );
    assert_eq!(greeting_after(server.addr, lb, b"PROXY TCP4 192.0", true), None, "truncated");
    let start = Instant::now();
    assert_eq!(greeting_after(server.addr, lb, b"", false), None, "silent: closed after the header timeout");
    assert!(start.elapsed() < Duration::from_secs(9), "closed after {:?}", start.elapsed());
    let m = metric_samples(http_get(&format!("127.0.0.1:{metrics}"), "/metrics", "").body());
    for (reason, n) in
        [("proxy_untrusted", 1.0), ("proxy_missing", 2.0), ("proxy_malformed", 1.0), ("proxy_truncated", 1.0)]
    {
        let key = format!("ftpd_connections_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(m.get(&key).copied(), Some(n), "{key}: {m:?}");
    }
    let log = server.stop();
    assert!(log.contains("peer=192.0.2.7:40000"), "the header's client is the session's peer: {log}");
    assert!(log.contains("reason=\"proxy_untrusted\"") || log.contains("reason=proxy_untrusted"), "{log}");
}

#[test]
fn implicit_ftps_after_a_header_in_the_same_segment() {
    // The header must be read without taking a byte of the ClientHello that
    // follows it: the client corks its socket so both leave in one segment.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("hello.txt"), b"hello over TLS\n").unwrap();
    let cert = ftpd_tests::Cert::new();
    let mut settings: Vec<String> = cert.settings();
    settings.push("implicit_ssl=YES".into());
    let refs: Vec<&str> = settings.iter().map(String::as_str).collect();
    let (server, _) = proxied_server(d.path(), &refs);
    let out = ftpd_tests::python(&format!(
        r#"import socket, ssl
s = socket.create_connection(("127.0.0.1", {port}))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
s.sendall(b"PROXY TCP4 192.0.2.8 127.0.0.1 40001 990\r\n")
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.setblocking(False)
t = ctx.wrap_socket(s, do_handshake_on_connect=False)
try:
    t.do_handshake()
except ssl.SSLWantReadError:
    pass
t.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
t.setblocking(True)
t.settimeout(10)
t.do_handshake()
print("greeting", t.recv(200).decode().strip())
"#,
        port = server.addr.port()
    ));
    assert!(out.contains("greeting 220"), "{out}");
    let log = server.stop();
    assert!(log.contains("peer=192.0.2.8:40001"), "{log}");
}

/// Debian's redis-server on 127.0.0.1, nothing kept on disk, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        Self::on(free_port())
    }

    fn on(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (cargo xtask setup installs it)");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        wait_for("redis listening", Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok());
        Self { child, port, _dir: dir }
    }

    fn url(&self) -> String {
        format!("ftpd_cluster_redis=redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fleet node: ftpd with the fleet's Redis, its name and its metrics port.
struct Node {
    server: Server,
    name: &'static str,
    metrics: u16,
}

impl Node {
    fn start(root: &Path, redis: &Redis, name: &'static str, extra: &[&str]) -> Self {
        let metrics = free_port();
        let listen = format!("ftpd_metrics_listen=127.0.0.1:{metrics}");
        let node = format!("ftpd_cluster_node={name}");
        let url = redis.url();
        let mut settings = vec![url.as_str(), node.as_str(), listen.as_str(), "ftpd_cluster_lease=2"];
        settings.extend_from_slice(extra);
        Self { server: Server::start(root, &settings), name, metrics }
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(&format!("127.0.0.1:{}", self.metrics), "/metrics", "");
        metric_samples(body.body()).get(&format!("{name}{{node=\"{}\"}}", self.name)).copied()
    }

    fn wait_up(&self, up: bool) {
        let want = f64::from(u8::from(up));
        wait_for(&format!("node {} cluster_up={want}", self.name), Duration::from_secs(15), || {
            self.metric("ftpd_cluster_up") == Some(want)
        });
    }

    fn greet(&self, source: [u8; 4]) -> (Ftp, u16) {
        greeted(self.server.addr, from(source))
    }
}

#[test]
fn two_nodes_share_max_per_ip_and_max_clients_through_redis() {
    let d = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let caps = ["max_per_ip=2", "max_clients=3"];
    let a = Node::start(d.path(), &redis, "a", &caps);
    let b = Node::start(d.path(), &redis, "b", &caps);
    a.wait_up(true);
    b.wait_up(true);
    let (a1, c1) = a.greet([127, 0, 0, 2]);
    let (_a2, c2) = a.greet([127, 0, 0, 2]);
    assert_eq!((c1, c2), (220, 220));
    assert_eq!(b.greet([127, 0, 0, 2]).1, 421, "127.0.0.2 holds max_per_ip=2 on node a");
    // And keeps holding it while nothing changes: a's counts stay published
    // between its renewals (three per lease), not only right after a change.
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(b.greet([127, 0, 0, 2]).1, 421, "a's sessions of 127.0.0.2 still count on b");
    }
    let (_b1, c) = b.greet([127, 0, 0, 3]);
    assert_eq!(c, 220, "another address on node b");
    assert_eq!(a.greet([127, 0, 0, 4]).1, 421, "the fleet holds max_clients=3");
    // One of 127.0.0.2's sessions ends on a: b admits it again at once
    // (within one publication).
    drop(a1);
    // Kept: the fleet holds 3 again (a 1, b 2).
    let mut _b2 = None;
    wait_for("b admits 127.0.0.2 again", Duration::from_secs(3), || {
        let (c, code) = b.greet([127, 0, 0, 2]);
        _b2 = Some(c).filter(|_| code == 220);
        _b2.is_some()
    });
    let m = metric_samples(http_get(&format!("127.0.0.1:{}", b.metrics), "/metrics", "").body());
    assert!(
        m.get("ftpd_connections_refused_total{node=\"b\",reason=\"max_per_ip\"}").copied() >= Some(1.0),
        "refusals counted with the node label: {m:?}"
    );
    // `ftpd stats` over both nodes: each node's table, then the fleet's.
    let stats = ftpd_tests::run_ok(Command::new(ftpd_tests::ftpd_bin()).args([
        "stats",
        &format!("127.0.0.1:{}", a.metrics),
        &format!("127.0.0.1:{}", b.metrics),
    ]));
    let tables: Vec<&str> = stats.split("ftpd at ").skip(1).collect();
    assert_eq!(tables.len(), 3, "a, b, then the fleet: {stats}");
    assert!(tables[2].starts_with("the fleet (2 of 2 nodes)"), "{stats}");
    // A number from a table: the word after `label`.
    let number = |t: &str, label: &str| -> f64 {
        t.split(label)
            .nth(1)
            .and_then(|r| r.split([' ', ',', ')']).find(|w| !w.is_empty())?.parse().ok())
            .unwrap_or_else(|| panic!("{label} in {t}"))
    };
    for label in ["sessions total", "(max_clients", "max_per_ip"] {
        let (na, nb, fleet) = (number(tables[0], label), number(tables[1], label), number(tables[2], label));
        assert_eq!(fleet, na + nb, "{label}: the fleet's is the nodes' sum: {stats}");
    }
    assert!(number(tables[2], "(max_clients") >= 1.0, "{stats}");
    // A node that dies stops counting when its lease ends (2 s here).
    let Node { mut server, .. } = a;
    server.signal("KILL");
    let _ = server.wait_exit(Duration::from_secs(5));
    let killed = Instant::now();
    assert_eq!(b.greet([127, 0, 0, 5]).1, 421, "a's sessions count until their lease ends");
    wait_for("a's lease ends", Duration::from_secs(6), || b.greet([127, 0, 0, 5]).1 == 220);
    let gone = killed.elapsed();
    println!("[fleet] a killed node's sessions counted for {gone:?} after its death (ftpd_cluster_lease=2)");
    assert!(gone <= Duration::from_secs(4), "a dead node counted for {gone:?} (lease 2 s)");
    let log = b.server.stop();
    assert!(log.contains("cluster: Redis reachable"), "{log}");
}

#[test]
fn without_redis_each_node_holds_its_own_limits_and_rejoins() {
    let d = tempfile::tempdir().unwrap();
    let mut redis = Redis::start();
    let caps = ["max_per_ip=1"];
    let a = Node::start(d.path(), &redis, "a", &caps);
    let b = Node::start(d.path(), &redis, "b", &caps);
    a.wait_up(true);
    b.wait_up(true);
    let port = redis.port;
    drop(redis);
    a.wait_up(false);
    b.wait_up(false);
    // Each node alone: one session from 127.0.0.2 on each, not two on one.
    let (_a1, c1) = a.greet([127, 0, 0, 2]);
    let (_b1, c2) = b.greet([127, 0, 0, 2]);
    assert_eq!((c1, c2), (220, 220), "both nodes keep serving");
    assert_eq!(a.greet([127, 0, 0, 2]).1, 421, "and keep their own caps");
    redis = Redis::on(port);
    a.wait_up(true);
    b.wait_up(true);
    assert!(a.metric("ftpd_cluster_fallbacks_total") >= Some(1.0));
    // Shared again: 127.0.0.6 on a fills its cap on b.
    let (_a6, c) = a.greet([127, 0, 0, 6]);
    assert_eq!(c, 220);
    assert_eq!(b.greet([127, 0, 0, 6]).1, 421, "shared again after Redis came back");
    let log = a.server.stop();
    drop(redis);
    assert_eq!(log.matches("cluster: Redis out of reach").count(), 1, "logged once per outage: {log}");
    assert!(log.matches("cluster: Redis reachable").count() >= 2, "{log}");
}

#[test]
fn a_rate_limit_holds_for_the_whole_fleet() {
    // One client IP with a 1 MB/s limit (ftpd_rate_scope=ip) downloads 1 MB
    // from node a and 3 MB from node b at once. Shared, the two get 0.5 MB/s
    // each until a's ends (2 s), then b gets the whole limit: 4 MB in about
    // 4 s. Limited per node, both would run at 1 MB/s (3 s); never re-split
    // after a's end, b would take 6 s.
    let d = tempfile::tempdir().unwrap();
    random_file(&d.path().join("small.bin"), 1_000_000);
    random_file(&d.path().join("big.bin"), 3_000_000);
    let redis = Redis::start();
    let limits = ["anon_max_rate=1000000", "ftpd_rate_scope=ip"];
    let a = Node::start(d.path(), &redis, "a", &limits);
    let b = Node::start(d.path(), &redis, "b", &limits);
    a.wait_up(true);
    b.wait_up(true);
    let start = Instant::now();
    let fetch = |node: &Node, name: &str| {
        let url = format!("ftp://{}/{name}", node.server.addr);
        Command::new("curl")
            .args(["-sS", "--max-time", "30", "--interface", "127.0.0.2", &url, "-o", "/dev/null"])
            .args(["-w", "%{size_download}"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl")
    };
    let (ca, cb) = (fetch(&a, "small.bin"), fetch(&b, "big.bin"));
    let oa = ca.wait_with_output().unwrap();
    let small = start.elapsed().as_secs_f64();
    let ob = cb.wait_with_output().unwrap();
    let took = start.elapsed().as_secs_f64();
    assert!(oa.status.success() && oa.stdout == b"1000000", "{oa:?}");
    assert!(ob.status.success() && ob.stdout == b"3000000", "{ob:?}");
    let rate = 4_000_000.0 / took;
    println!("[fleet] 1 MB from a and 3 MB from b at a shared 1 MB/s: a {small:.2} s, all {took:.2} s, {rate:.0} B/s");
    assert!(rate <= 1_050_000.0, "{rate:.0} B/s: the fleet's limit is 1 MB/s in all");
    assert!(small > 1.7, "a's 1 MB took {small:.2} s: it had half the limit while b ran");
    assert!(took < 4.6, "took {took:.2} s: b gets the whole limit once a's transfer ends");
}

/// The whole fleet in network namespaces: a client namespace with several
/// addresses, a balancer namespace (HAProxy, Redis, and the router between
/// the others), and two node namespaces each running ftpd with its kernel
/// plane on its own veth. Deleted on drop.
struct Lab {
    spaces: Vec<String>,
}

impl Lab {
    const CLIENT: &'static str = "10.88.1.2";
    const BALANCER: &'static str = "10.88.1.1";

    fn ns(&self, role: &str) -> &str {
        let i = ["client", "lb", "a", "b"].iter().position(|r| *r == role).expect("a role");
        &self.spaces[i]
    }

    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let lab = Self { spaces: ["c", "l", "a", "b"].iter().map(|r| format!("fl{r}{id}")).collect() };
        let ipc = |args: &str| {
            let out = Command::new("ip").args(args.split(' ')).output().expect("ip");
            assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
        };
        for ns in &lab.spaces {
            ipc(&format!("netns add {ns}"));
            ipc(&format!("-n {ns} link set lo up"));
        }
        let (c, l, a, b) = (lab.ns("client"), lab.ns("lb"), lab.ns("a"), lab.ns("b"));
        // client <-> lb 10.88.1.0/24, lb <-> a 10.88.2.0/24, lb <-> b 10.88.3.0/24.
        for (n, other, other_ips) in [
            (1, c, &["10.88.1.2", "10.88.1.3", "10.88.1.4", "10.88.1.9"][..]),
            (2, a, &["10.88.2.2"][..]),
            (3, b, &["10.88.3.2"][..]),
        ] {
            let (lif, oif) = (format!("fl{n}l{id}"), format!("fl{n}o{id}"));
            ipc(&format!("link add {lif} netns {l} type veth peer name {oif} netns {other}"));
            ipc(&format!("-n {l} addr add 10.88.{n}.1/24 dev {lif}"));
            ipc(&format!("-n {l} link set {lif} up"));
            for addr in other_ips {
                ipc(&format!("-n {other} addr add {addr}/24 dev {oif}"));
            }
            ipc(&format!("-n {other} link set {oif} up"));
            ipc(&format!("-n {other} route add default via 10.88.{n}.1"));
        }
        let fwd = Command::new("ip").args(["netns", "exec", l, "sysctl", "-qw", "net.ipv4.ip_forward=1"]).status();
        assert!(fwd.is_ok_and(|s| s.success()), "ip_forward in the balancer namespace");
        std::thread::sleep(Duration::from_millis(300));
        lab
    }

    fn exec(&self, role: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns(role), program]);
        c
    }

    /// Python in the client namespace; its stdout.
    fn client_py(&self, code: &str) -> String {
        ftpd_tests::run_ok(self.exec("client", "python3").arg("-c").arg(code))
    }

    /// ftpd in the namespace of `role`, in a cgroup of its own: sock_ops is
    /// attached to ftpd's cgroup, and two nodes sharing one would each see
    /// (and close) the other's pinholes.
    fn node(&self, role: &str, root: &Path, extra: &[&str]) -> (Server, ftpd_tests::Cgroup) {
        let (ip, lb) = if role == "a" { ("10.88.2.2", "10.88.2.1") } else { ("10.88.3.2", "10.88.3.1") };
        let mut settings: Vec<String> = [
            "xferlog_enable=YES".into(),
            "xferlog_std_format=YES".into(),
            format!("xferlog_file={}", root.join(format!("xferlog-{role}")).display()),
            format!("listen_address={ip}"),
            "listen_port=2121".into(),
            "pasv_min_port=50000".into(),
            "pasv_max_port=50003".into(),
            format!("pasv_address={ip}"),
            "ftpd_ebpf=on".into(),
            "ftpd_metrics_listen=".into(),
            "ftpd_proxy_protocol=YES".into(),
            format!("ftpd_proxy_trusted={lb}"),
            format!("ftpd_cluster_redis=redis://{lb}:6379"),
            format!("ftpd_cluster_node={role}"),
            "ftpd_cluster_lease=2".into(),
        ]
        .into();
        settings.extend(extra.iter().map(|s| (*s).to_string()));
        let mount = ftpd_tests::Cgroup::mount_point_or_mount().unwrap_or_else(|e| panic!("cgroup2: {e}"));
        let cg = ftpd_tests::Cgroup::create_in(&mount, "ftpd-test-", &format!("fleet-{role}")).expect("cgroup");
        let script = cg.enter_netns_script(self.ns(role));
        let server =
            Server::spawn(Some(&["sh", "-c", script.as_str()]), root, &settings, format!("{ip}:2121").parse().unwrap())
                .unwrap_or_else(|e| panic!("node {role}: {e}"));
        (server, cg)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.spaces {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

/// ftplib in the client namespace: sessions through the balancer from
/// `source`, trusting the PASV address (the node's own).
const LAB_PY: &str = r#"
import ftplib, hashlib, io, os, socket, sys, time
class FTP(ftplib.FTP):
    trust_server_pasv_ipv4_address = True
def session(src):
    f = FTP()
    f.connect("10.88.1.1", 21, timeout=20, source_address=(src, 0))
    f.login()
    return f
"#;

#[test]
#[ignore = "privileged: network namespaces, eBPF, HAProxy and Redis (cargo xtask test as root)"]
fn a_fleet_in_namespaces_behind_haproxy_with_redis() {
    let lab = Lab::new();
    let d = tempfile::tempdir().unwrap();
    let up = d.path().join("up");
    std::fs::create_dir(&up).unwrap();
    ftpd_tests::writable_by_all(&up);
    random_file(&d.path().join("big.bin"), 2_000_000);
    let sha = ftpd_tests::sha256_file(&d.path().join("big.bin"));
    // Redis and HAProxy in the balancer namespace.
    let redis_dir = tempfile::tempdir().unwrap();
    let spawn_redis = || {
        lab.exec("lb", "redis-server")
            .args(["--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(redis_dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server")
    };
    let mut redis = spawn_redis();
    let extra = [
        "write_enable=YES",
        "anon_upload_enable=YES",
        "anon_other_write_enable=YES",
        "anon_umask=022",
        "max_per_ip=2",
        "anon_max_rate=1000000",
        "ftpd_rate_scope=ip",
    ];
    let (a, _cg_a) = lab.node("a", d.path(), &extra);
    let (mut b, _cg_b) = lab.node("b", d.path(), &extra);
    for (name, n) in [("a", &a), ("b", &b)] {
        assert!(n.kernel_plane(), "node {name} runs its kernel plane: {}", n.log());
        n.wait_log("cluster: Redis reachable", 1, Duration::from_secs(10));
    }
    let hcfg = d.path().join("haproxy.cfg");
    std::fs::write(
        &hcfg,
        format!(
            "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
             frontend ftp\n  bind {}:21\n  default_backend nodes\n\
             backend nodes\n  balance roundrobin\n\
             \x20 server a 10.88.2.2:2121 send-proxy-v2 check check-send-proxy inter 300 fall 2 rise 2\n\
             \x20 server b 10.88.3.2:2121 send-proxy-v2 check check-send-proxy inter 300 fall 2 rise 2\n",
            Lab::BALANCER
        ),
    )
    .unwrap();
    let mut haproxy = lab
        .exec("lb", "haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&hcfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));

    // STOR, RETR and LIST through the balancer, on both nodes (round robin),
    // byte-exact by SHA-256.
    let out = lab.client_py(&format!(
        r#"{LAB_PY}
want = open("{big}", "rb").read()
for i in range(4):
    f = session("{client}")
    f.storbinary(f"STOR up/s{{i}}.bin", io.BytesIO(want))
    got = io.BytesIO(); f.retrbinary(f"RETR up/s{{i}}.bin", got.write)
    names = []; f.retrlines("LIST up", names.append)
    print("round", i, hashlib.sha256(got.getvalue()).hexdigest(), any(f"s{{i}}.bin" in n for n in names))
    f.quit()
"#,
        big = d.path().join("big.bin").display(),
        client = Lab::CLIENT
    ));
    assert_eq!(out.matches(&format!("{sha} True")).count(), 4, "{out}");

    // max_per_ip=2 holds across both nodes: two sessions (one per node),
    // a third refused; the budget of 1 MB/s (ftpd_rate_scope=ip) is split
    // over one address's downloads from both nodes.
    let out = lab.client_py(&format!(
        r#"{LAB_PY}
import threading
held = [session("10.88.1.3"), session("10.88.1.3")]
try:
    session("10.88.1.3"); print("third admitted")
except ftplib.error_temp as e:
    print("third refused", str(e)[:3])
for f in held: f.quit()
time.sleep(1)
def fetch(out):
    try:
        f = session("10.88.1.4"); n = [0]
        f.retrbinary("RETR big.bin", lambda b: n.__setitem__(0, n[0] + len(b))); out.append(n[0]); f.quit()
    except Exception as e:
        print("fetch failed", repr(e), f.sock.getpeername() if f.sock else None, flush=True)
got = []; t0 = time.time()
ts = [threading.Thread(target=fetch, args=(got,)) for _ in range(2)]
[t.start() for t in ts]; [t.join() for t in ts]
dt = time.time() - t0
print("budget", sum(got), f"{{sum(got) / dt:.0f}}")
"#
    ));
    assert!(out.contains("third refused 421"), "{out}");
    let rate: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("budget 4000000 "))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    println!("[fleet-lab] two downloads from two nodes under one 1 MB/s budget: {rate:.0} B/s");
    assert!((950_000.0..=1_050_000.0).contains(&rate), "{rate:.0} B/s is not 1 MB/s within 5 %: {out}");

    // Pinholes: a session's passive port admits its client and drops another
    // address's SYN in XDP; a PROXY header sent straight to a node from the
    // client network (not a trusted balancer) gets no greeting.
    let out = lab.client_py(&format!(
        r#"{LAB_PY}
f = session("{client}")
host, port = f.makepasv()
s = socket.socket(); s.bind(("10.88.1.9", 0)); s.settimeout(2)
try:
    s.connect((host, port)); print("stranger connected")
except OSError as e:
    print("stranger dropped")
d = socket.create_connection((host, port), 5, source_address=("{client}", 0))
f.sendcmd("TYPE I"); r = f.sendcmd("RETR big.bin")
n = 0
while True:
    b = d.recv(65536)
    if not b: break
    n += len(b)
d.close(); print("client got", n, f.voidresp()[:3])
f.quit()
x = socket.create_connection(("10.88.2.2", 2121), 5, source_address=("{client}", 0))
x.sendall(b"PROXY TCP4 10.88.1.2 10.88.1.1 40000 21\r\n"); x.settimeout(5)
try:
    print("spoofed", repr(x.recv(100)[:3]))
except OSError as e:
    print("spoofed closed")
"#,
        client = Lab::CLIENT
    ));
    assert!(out.contains("stranger dropped"), "{out}");
    assert!(out.contains("client got 2000000 226"), "{out}");
    assert!(out.contains("spoofed b''") || out.contains("spoofed closed"), "{out}");

    // Redis stopped: both nodes keep serving on their own limits, and
    // rejoin when it is back.
    let _ = redis.kill();
    let _ = redis.wait();
    a.wait_log("cluster: Redis out of reach", 1, Duration::from_secs(10));
    let out = lab.client_py(&format!(
        "{LAB_PY}\nfor i in range(2):\n    f = session('{}'); print('served', f.pwd()); f.quit()\n",
        Lab::CLIENT
    ));
    assert_eq!(out.matches("served").count(), 2, "{out}");
    redis = spawn_redis();
    a.wait_log("cluster: Redis reachable", 2, Duration::from_secs(10));
    b.wait_log("cluster: Redis reachable", 2, Duration::from_secs(10));

    // Node b killed: HAProxy's health check takes it out; the session held
    // on node a carries on, and every new login lands on a.
    let go = d.path().join("go");
    std::fs::write(&go, b"").unwrap();
    let script = format!(
        r#"{LAB_PY}
held = [session("{client}") for _ in range(2)]
print("holding", flush=True)
while os.path.exists("{go}"): time.sleep(0.05)
for f in held:
    try:
        print("held", f.sendcmd("NOOP")[:3])
    except Exception as e:
        print("held gone", type(e).__name__)
ok = 0
for i in range(6):
    try:
        f = session("10.88.1.4"); f.quit(); ok += 1
    except Exception as e:
        print("login failed", e)
print("logins", ok)
"#,
        client = Lab::CLIENT,
        go = go.display()
    );
    let mut py = lab.exec("client", "python3").arg("-c").arg(&script).stdout(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(py.stdout.as_mut().unwrap()), &mut first).unwrap();
    assert_eq!(first.trim(), "holding");
    b.signal("KILL");
    let _ = b.wait_exit(Duration::from_secs(5));
    // `inter 300 fall 2`: down after two failed checks.
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::remove_file(&go).unwrap();
    let out = py.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.matches("held 200").count(), 1, "node a's session carries on: {out}");
    assert_eq!(out.matches("held gone").count(), 1, "node b's is gone with it: {out}");
    assert!(out.contains("logins 6"), "every new login lands on node a: {out}");
    let _ = haproxy.kill();
    let _ = redis.kill();
    let _ = (haproxy.wait(), redis.wait());
    let log_a = a.stop();
    assert!(log_a.contains("peer=10.88.1.2:"), "node a logs the real client: {log_a}");
    // The balancer appears only as its own health checks (v2 LOCAL).
    let balancer_did: Vec<&str> = log_a
        .lines()
        .filter(|l| l.contains("peer=10.88.2.1:") && (l.contains(" login ") || l.contains("complete")))
        .collect();
    assert!(balancer_did.is_empty(), "logins and transfers name the client, never the balancer: {balancer_did:?}");
    assert!(log_a.contains("upload complete") && log_a.contains("download complete"), "{log_a}");
    let xferlog = std::fs::read_to_string(d.path().join("xferlog-a")).unwrap_or_default();
    assert!(xferlog.contains(" 10.88.1.2 ") && !xferlog.contains(" 10.88.2.1 "), "xferlog names the client: {xferlog}");
}
