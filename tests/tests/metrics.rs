//! Observability: /metrics during real transfers, promtool, a real Prometheus
//! server scraping ftpd, `ftpd stats`, and the Grafana dashboard's queries.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ftpd_tests::{
    Response, Server, free_port, ftpd_bin, http_get, metric_samples, random_file, run, run_ok, writable_by_all,
};

fn get(addr: &str, accept: Option<&str>) -> String {
    let r = http_get(addr, "/metrics", &accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default());
    assert!(r.head().starts_with("HTTP/1.1 200"), "{}", r.head());
    r.body().to_owned()
}

/// One HTTP response read off `s`: its head (status line and headers) and
/// a body of Content-Length bytes (none for a HEAD request). `None` when
/// the server closed the connection (or reset it) before a whole head.
fn read_response(s: &mut TcpStream, head_request: bool) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(head).expect("an ASCII head");
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
        .map_or(0, |v| v.expect("a numeric Content-Length"));
    let mut body = vec![0u8; if head_request { 0 } else { len }];
    s.read_exact(&mut body).expect("the whole body");
    Some((head, body))
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Whether the server closes `s` within `within` (reads see the end or a
/// reset; anything the server sends first is skipped).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => {
                // Said, so that a failure tells a reset from an orderly close.
                eprintln!(
                    "read after {:?} before the deadline: {e}",
                    deadline.saturating_duration_since(Instant::now())
                );
                return true;
            }
        }
    }
    false
}

#[test]
fn http_keep_alive_head_and_methods() {
    let d = tempfile::tempdir().unwrap();
    let (_server, addr) = server_with_metrics(d.path(), &[]);
    // Two requests on one connection (HTTP/1.1 keeps it open by default).
    let mut s = connect(&addr);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut s, false).expect("a first response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("# TYPE ftpd_sessions_total counter") && !body.contains("# EOF"), "{body}");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut s, false).expect("a second response on the same connection");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8(body).unwrap().ends_with("# EOF\n"), "OpenMetrics on request");
    // HEAD: the headers of GET, no body (the next response follows at once).
    s.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut s, true).expect("a HEAD response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-length: "), "{head}");
    // Other methods: 405 naming the allowed ones; other paths: 404.
    s.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").unwrap();
    let (head, _) = read_response(&mut s, false).expect("a POST response");
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert!(head.to_ascii_lowercase().contains("allow: get, head"), "{head}");
    for method in ["DELETE", "PUT", "OPTIONS"] {
        write!(s, "{method} /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (head, _) = read_response(&mut s, false).expect("a response");
        assert!(head.starts_with("HTTP/1.1 405"), "{method}: {head}");
    }
    s.write_all(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut s, false).expect("a 404 response");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // The client may still close it: Connection: close is honoured.
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut s, false).expect("a last response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(closed_within(&mut s, Duration::from_secs(2)), "Connection: close closes");
}

#[test]
fn http_slow_and_huge_requests_are_cut_off() {
    let d = tempfile::tempdir().unwrap();
    let (server, addr) = server_with_metrics(d.path(), &[]);
    // Slowloris: a header byte a second never completes a request; the
    // connection is closed within the header timeout (5 s), not held.
    let mut s = connect(&addr);
    let start = Instant::now();
    let trickle = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for (i, b) in trickle.iter().enumerate() {
        if let Err(e) = s.write_all(&[*b]) {
            eprintln!("write of byte {i} failed after {:?}: {e}", start.elapsed());
            closed = true;
            break;
        }
        if closed_within(&mut s, Duration::from_secs(1)) {
            closed = true;
            break;
        }
    }
    let took = start.elapsed();
    assert!(closed, "a slow client held its connection for {took:?}");
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(9)).contains(&took),
        "the slow client's connection was closed after {took:?}:\n{}",
        server.log()
    );
    // An idle kept-alive connection is closed as well.
    let mut s = connect(&addr);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(read_response(&mut s, false).is_some());
    let start = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(9)), "an idle connection stays open");
    assert!(
        start.elapsed() >= Duration::from_secs(4),
        "the idle connection was closed after {:?}:\n{}",
        start.elapsed(),
        server.log()
    );
    // A huge header: 431, never a 200, and the connection ends.
    let mut s = connect(&addr);
    let mut req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 20_000));
    req.extend_from_slice(b"\r\n\r\n");
    let _ = s.write_all(&req);
    match read_response(&mut s, false) {
        Some((head, _)) => assert!(head.starts_with("HTTP/1.1 431"), "{head}"),
        None => panic!("no 431 for a 20 kB header"),
    }
    assert!(closed_within(&mut s, Duration::from_secs(2)), "the connection ends after 431");
    // Many headers: refused as well.
    let mut s = connect(&addr);
    let mut req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..200 {
        req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let _ = s.write_all(&req);
    let answer = read_response(&mut s, false).map(|(h, _)| h).unwrap_or_default();
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The listener still serves.
    assert!(get(&addr, None).contains("ftpd_sessions_total"));
}

fn server_with_metrics(root: &std::path::Path, extra: &[&str]) -> (Server, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let m = format!("ftpd_metrics_listen={addr}");
    let mut s = vec![m.as_str(), "write_enable=YES", "anon_upload_enable=YES"];
    s.extend_from_slice(extra);
    (Server::start(root, &s), addr)
}

#[test]
fn counters_move_by_the_bytes_transferred() {
    let d = tempfile::tempdir().unwrap();
    writable_by_all(d.path());
    random_file(&d.path().join("five"), 5_000_000);
    random_file(&d.path().join("slow"), 6_000_000);
    let (server, addr) = server_with_metrics(d.path(), &["anon_max_rate=3000000", "ftpd_metrics_users=anonymous"]);
    let before = metric_samples(&get(&addr, None));
    assert_eq!(before["ftpd_transfer_bytes_total{direction=\"download\"}"], 0.0);
    assert_eq!(before["ftpd_ebpf_enabled"], if server.kernel_plane() { 1.0 } else { 0.0 });
    // A slow download, scraped while it runs.
    let mut c = server.login();
    let mut data = c.pasv_connect();
    c.send_raw(b"RETR slow\r\n").unwrap();
    assert_eq!(c.read_reply().0, 150);
    let mut first = vec![0u8; 1_000_000];
    data.read_exact(&mut first).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mid = metric_samples(&get(&addr, None));
    let moving = mid["ftpd_transfer_bytes_total{direction=\"download\"}"];
    assert!((1_000_000.0..6_000_000.0).contains(&moving), "bytes counted while moving: {moving}");
    assert_eq!(mid["ftpd_sessions_active{class=\"anonymous\"}"], 1.0);
    let mut rest = Vec::new();
    data.read_to_end(&mut rest).unwrap();
    assert_eq!(c.read_reply().0, 226);
    // A fast download and an upload with ftplib.
    let code = format!(
        "import ftplib, io\nf=ftplib.FTP()\nf.connect('127.0.0.1',{})\nf.login()\nf.retrbinary('RETR five', lambda b: None)\nf.storbinary('STOR up', io.BytesIO(b'u'*1234567))\nf.quit()",
        server.addr.port()
    );
    ftpd_tests::python(&code);
    c.cmd_ok("QUIT", 221);
    std::thread::sleep(Duration::from_millis(300));
    let after = metric_samples(&get(&addr, None));
    let m = |k: &str| after.get(k).copied().unwrap_or_else(|| panic!("no {k} in {after:?}"));
    assert_eq!(m("ftpd_transfer_bytes_total{direction=\"download\"}"), 11_000_000.0);
    assert_eq!(m("ftpd_transfer_bytes_total{direction=\"upload\"}"), 1_234_567.0);
    assert_eq!(m("ftpd_user_transfer_bytes_total{user=\"anonymous\",direction=\"download\"}"), 11_000_000.0);
    assert_eq!(m("ftpd_transfers_total{direction=\"download\",result=\"complete\"}"), 2.0);
    assert_eq!(m("ftpd_transfers_total{direction=\"upload\",result=\"complete\"}"), 1.0);
    assert_eq!(m("ftpd_transfer_duration_seconds_count{direction=\"download\"}"), 2.0);
    // Server-side duration: until the last byte is handed to the kernel, so
    // a paced 6 MB takes less than 2 s here (the socket buffer holds the rest).
    assert!(m("ftpd_transfer_duration_seconds_sum{direction=\"download\"}") >= 0.2, "a paced download is not instant");
    assert_eq!(m("ftpd_logins_total{result=\"ok\"}"), 2.0);
    assert_eq!(m("ftpd_sessions_total"), 2.0);
    assert_eq!(m("ftpd_sessions_active{class=\"anonymous\"}"), 0.0);
    assert_eq!(m("ftpd_commands_total{command=\"RETR\"}"), 2.0);
    assert_eq!(m("ftpd_pasv_pinholes_total{event=\"opened\"}"), m("ftpd_pasv_pinholes_total{event=\"used\"}"));
    assert_eq!(m("ftpd_pasv_ports_in_use"), 0.0);
    assert!(m("ftpd_replies_total{class=\"2xx\"}") >= 10.0);
    assert!(m("ftpd_process_resident_memory_bytes") > 1_000_000.0);
    assert_eq!(m("ftpd_build_info{version=\"0.1.0\"}"), 1.0);
}

#[test]
fn refusals_are_counted_by_reason() {
    let d = tempfile::tempdir().unwrap();
    let (server, addr) = server_with_metrics(d.path(), &["max_per_ip=1"]);
    let _a = server.connect();
    let mut b = ftpd_tests::Ftp::connect(server.addr);
    assert_eq!(b.read_reply().0, 421);
    std::thread::sleep(Duration::from_millis(200));
    let s = metric_samples(&get(&addr, None));
    assert_eq!(s["ftpd_connections_refused_total{reason=\"max_per_ip\"}"], 1.0);
    assert_eq!(s["ftpd_connections_refused_total{reason=\"max_clients\"}"], 0.0);
}

#[test]
fn promtool_accepts_the_exposition() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("f"), b"x").unwrap();
    let (server, addr) = server_with_metrics(d.path(), &[]);
    let mut c = server.login();
    let _ = c.transfer("RETR f");
    for (accept, what) in [(None, "text format"), (Some("application/openmetrics-text"), "OpenMetrics")] {
        let text = get(&addr, accept);
        if accept.is_some() {
            assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
            continue;
        }
        let mut p = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (Debian package prometheus)");
        p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool rejects the {what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_real_prometheus_scrapes_ftpd() {
    let d = tempfile::tempdir().unwrap();
    random_file(&d.path().join("f"), 777_777);
    let (server, addr) = server_with_metrics(d.path(), &[]);
    let mut c = server.login();
    let (bytes, code, _) = c.transfer("RETR f");
    assert_eq!((bytes.len(), code), (777_777, 226));
    let prom_dir = tempfile::tempdir().unwrap();
    let conf = prom_dir.path().join("prometheus.yml");
    std::fs::write(&conf, format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ftpd\n    static_configs:\n      - targets: ['{addr}']\n")).unwrap();
    // Prometheus listens on a port picked here; should that port be taken in
    // the meantime, it exits, and a fresh one is tried (its log says why).
    let log_path = prom_dir.path().join("prometheus.log");
    let start = |web: &str| {
        Command::new("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.tsdb.path={}", prom_dir.path().join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("prometheus (Debian package prometheus)")
    };
    let mut web = format!("127.0.0.1:{}", free_port());
    let mut prom = start(&web);
    let mut restarts = 0;
    let query = "ftpd_transfer_bytes_total%7Bdirection%3D%22download%22%7D";
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    let value = loop {
        if Instant::now() > deadline {
            let _ = prom.kill();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("Prometheus never returned the metric: {last}\nits log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(Some(status)) = prom.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            restarts += 1;
            assert!(restarts < 3, "Prometheus exited ({status}) three times; its log:\n{log}");
            eprintln!("Prometheus exited ({status}); again on a fresh port. Its log:\n{log}");
            web = format!("127.0.0.1:{}", free_port());
            prom = start(&web);
            continue;
        }
        // A plain HTTP request: no client configuration (proxies) in between.
        let addr = web.parse().expect("address");
        last = match Response::get_within(addr, &format!("/api/v1/query?query={query}"), Duration::from_secs(5)) {
            Ok(r) => r.body().to_owned(),
            Err(e) => format!("GET http://{web}: {e}"),
        };
        // {"status":"success","data":{"resultType":"vector","result":[{"metric":{...},"value":[ts,"777777"]}]}}
        if let Some(v) = last.split("\"value\":[").nth(1).and_then(|r| r.split('"').nth(1)) {
            break v.to_owned();
        }
    };
    let _ = prom.kill();
    let _ = prom.wait();
    assert_eq!(value, "777777", "{last}");
}

#[test]
fn ftpd_stats_prints_the_numbers() {
    let d = tempfile::tempdir().unwrap();
    random_file(&d.path().join("f"), 2_000_000);
    let (server, addr) = server_with_metrics(d.path(), &[]);
    let mut c = server.login();
    let _ = c.transfer("RETR f");
    let out = run_ok(Command::new(ftpd_bin()).args(["stats", &addr]));
    assert!(out.contains(&format!("ftpd at {addr}")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("sessions active") && l.contains(" 1 ") && l.contains("anonymous 1")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("download") && l.contains("(total 2.0 MB)")), "{out}");
    let plane = if server.kernel_plane() { "eBPF on" } else { "eBPF off" };
    assert!(out.lines().any(|l| l.starts_with("kernel drops") && l.contains(plane)), "{out}");
    // --watch refreshes: several tables until stopped.
    let mut watch =
        Command::new(ftpd_bin()).args(["stats", "--watch", "0.2", &addr]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let tables = String::from_utf8_lossy(&out.stdout).matches("ftpd at ").count();
    assert!(tables >= 3, "--watch 0.2 printed {tables} tables in 1.5 s");
    let bad = run(Command::new(ftpd_bin()).args(["stats", "127.0.0.1:1"]));
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot connect to 127.0.0.1:1"));
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let d = tempfile::tempdir().unwrap();
    let (_server, addr) = server_with_metrics(d.path(), &[]);
    let text = get(&addr, None);
    let families: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    let dash = std::fs::read_to_string(ftpd_tests::workspace().join("docs/grafana-dashboard.json")).unwrap();
    let code = "import json,sys\nd=json.load(open(sys.argv[1]))\nfor p in d['panels']:\n    for t in p['targets']: print(t['expr'])";
    let exprs = run_ok(
        Command::new("python3").args(["-c", code]).arg(ftpd_tests::workspace().join("docs/grafana-dashboard.json")),
    );
    assert!(dash.contains("\"uid\": \"ftpd-overview\""));
    let mut used = 0;
    for e in exprs.lines() {
        for word in e.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| w.starts_with("ftpd_")) {
            let base = word.strip_suffix("_bucket").unwrap_or(word);
            assert!(families.contains(&base), "dashboard uses {word}, which ftpd does not export");
            used += 1;
        }
    }
    assert!(used >= 15, "{exprs}");
}
