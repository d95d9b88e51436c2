//! Observability: /metrics during real transfers, promtool, a real Prometheus
//! server scraping ftpd, `ftpd stats`, and the Grafana dashboard's queries.

use std::{
    io::{Read, Write},
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
