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
