//! Per-project traffic (`ftpd_metrics_dirs`): what mirror operators publish.
//! Bytes and transfers by top-level directory, a bounded label.

use std::{process::Command, time::Duration};

use ftpd_tests::{Server, free_port, ftpd_bin, http_get, random_file, run_ok, writable_by_all};

#[test]
fn bytes_and_transfers_by_top_level_directory() {
    let d = tempfile::tempdir().unwrap();
    writable_by_all(d.path());
    for sub in ["debian", "ubuntu", "misc"] {
        std::fs::create_dir(d.path().join(sub)).unwrap();
        writable_by_all(&d.path().join(sub));
    }
    random_file(&d.path().join("debian/pool.bin"), 3_000_000);
    random_file(&d.path().join("misc/x.bin"), 70_000);
    random_file(&d.path().join("top.bin"), 5_000);
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        d.path(),
        &[
            &format!("ftpd_metrics_listen={addr}"),
            "ftpd_metrics_dirs=debian, /ubuntu",
            "write_enable=YES",
            "anon_upload_enable=YES",
        ],
    );
    let key = |dir: &str, direction: &str| {
        format!("ftpd_dir_transfer_bytes_total{{dir=\"{dir}\",direction=\"{direction}\"}}")
    };
    let before = http_get(&addr, "/metrics", "").samples();
    assert_eq!(before.get(&key("debian", "download")).copied().unwrap_or(0.0), 0.0);

    let mut c = server.login();
    let (bytes, code, _) = c.transfer("RETR /debian/pool.bin");
    assert_eq!((bytes.len(), code), (3_000_000, 226));
    c.cmd_ok("CWD /misc", 250);
    let (_, code, _) = c.transfer("RETR x.bin");
    assert_eq!(code, 226);
    let (_, code, _) = c.transfer("RETR ../top.bin");
    assert_eq!(code, 226);
    let (_, code, _) = c.upload("STOR /ubuntu/new.iso", &[7u8; 12_345]);
    assert_eq!(code, 226);
    c.cmd_ok("QUIT", 221);
    std::thread::sleep(Duration::from_millis(200));

    let after = http_get(&addr, "/metrics", "").samples();
    let m = |k: String| after.get(&k).copied().unwrap_or_else(|| panic!("no {k}"));
    assert_eq!(m(key("debian", "download")), 3_000_000.0);
    assert_eq!(m(key("other", "download")), 75_000.0);
    assert_eq!(m(key("ubuntu", "upload")), 12_345.0);
    assert_eq!(m("ftpd_dir_transfers_total{dir=\"debian\",direction=\"download\"}".into()), 1.0);
    assert_eq!(m("ftpd_dir_transfers_total{dir=\"other\",direction=\"download\"}".into()), 2.0);
    // Only the listed directories and `other` ever appear as labels.
    for k in after.keys().filter(|k| k.starts_with("ftpd_dir_")) {
        assert!(["\"debian\"", "\"ubuntu\"", "\"other\""].iter().any(|d| k.contains(d)), "unbounded label: {k}");
    }

    let out = run_ok(Command::new(ftpd_bin()).args(["stats", &addr]));
    let line = out.lines().find(|l| l.trim_start().starts_with("debian")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("3.0 MB"), "{line}");

    let dash = std::fs::read_to_string(ftpd_tests::workspace().join("docs/grafana-dashboard.json")).unwrap();
    assert!(dash.contains("ftpd_dir_transfer_bytes_total"), "the dashboard has no per-project panel");
}
