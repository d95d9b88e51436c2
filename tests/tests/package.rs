//! The Debian package (`cargo xtask deb`), installed for real with dpkg: its
//! files and the `ftp` user, the man pages through `man`, the unit through
//! `systemd-analyze`, the installed binary with the installed config serving
//! a download to curl (on a spare port, userspace plane, loopback), then
//! `dpkg --purge`, after which nothing the package created is left.

use std::{
    io::{BufRead, BufReader},
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ftpd_tests::{free_port, run, run_ok, workspace};

const FILES: &[&str] = &[
    "/usr/sbin/ftpd",
    "/etc/ftpd/ftpd.conf",
    "/lib/systemd/system/ftpd.service",
    "/etc/logrotate.d/ftpd",
    "/usr/share/man/man8/ftpd.8.gz",
    "/usr/share/man/man5/ftpd.conf.5.gz",
];

/// The link that enabling the service makes.
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/ftpd.service";

/// Processes running the installed binary.
fn installed_binary_processes() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"/usr/sbin/ftpd\0")))
        .collect()
}

/// Purges the package and stops the server however the test ends.
struct Installed {
    server: Option<Child>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        if package_installed() {
            let out = run(Command::new("dpkg").args(["--purge", "ftpd"]));
            eprintln!("cleanup: dpkg --purge ftpd: {}", out.status);
        }
    }
}

fn package_installed() -> bool {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "ftpd"]));
    String::from_utf8_lossy(&out.stdout).contains("installed")
}

fn user_exists(name: &str) -> bool {
    run(Command::new("getent").args(["passwd", name])).status.success()
}

/// Builds the package with `cargo xtask deb`, unless `FTPD_DEB` names one.
fn package() -> PathBuf {
    if let Some(p) = std::env::var_os("FTPD_DEB") {
        return PathBuf::from(p);
    }
    let out = run_ok(Command::new("cargo").args(["xtask", "deb"]).current_dir(workspace()));
    let line = out.lines().find_map(|l| l.strip_prefix("built ").filter(|p| p.ends_with(".deb")));
    PathBuf::from(line.unwrap_or_else(|| panic!("cargo xtask deb named no package:\n{out}")))
}

/// `man -l PAGE` as plain text.
fn man(page: &str) -> String {
    let out = run(Command::new("man").args(["-l", page]).env("MANWIDTH", "200").env("MANPAGER", "cat"));
    assert!(out.status.success(), "man -l {page}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `systemd-analyze security` exposure of a unit file, e.g. 2.9.
fn exposure(unit: &str) -> f64 {
    let out = run_ok(Command::new("systemd-analyze").args(["security", "--offline=true", unit]));
    let line = out.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{out}"));
    line.split(':').nth(1).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap()
}

#[test]
fn debian_package_installs_serves_and_purges() {
    if !ftpd_tests::is_root() {
        return ftpd_tests::cannot_run(
            "package::debian_package_installs_serves_and_purges",
            "installing a package with dpkg needs root",
        );
    }
    if std::env::var_os("FTPD_TEST_PLANE").is_some() {
        eprintln!("skipped: the package test runs once, in the userspace stage");
        return;
    }
    assert!(!package_installed(), "a package named ftpd is installed already; this test would purge it");
    let deb = package();
    let ftp_before = user_exists("ftp");
    let srv_before = Path::new("/srv/ftp").exists();
    let mut guard = Installed { server: None };

    // Beside an installed vsftpd too, if there is one: no conflict.
    let out = run_ok(Command::new("dpkg").arg("-i").arg(&deb));
    eprintln!("{out}");
    for f in FILES {
        assert!(Path::new(f).is_file(), "{f} not installed");
    }
    assert!(user_exists("ftp"), "postinst did not create the ftp user");
    assert!(Path::new("/var/log/ftpd").is_dir());
    assert!(Path::new(WANTS).is_symlink(), "postinst did not enable ftpd.service");
    let version = run_ok(Command::new("/usr/sbin/ftpd").arg("--version"));
    assert!(version.starts_with("ftpd "), "{version}");
    let check = run(Command::new("/usr/sbin/ftpd").args(["check-config", "/etc/ftpd/ftpd.conf"]));
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    assert!(man("/usr/share/man/man8/ftpd.8.gz").contains("SIGHUP"));
    assert!(man("/usr/share/man/man5/ftpd.conf.5.gz").contains("ftpd_metrics_dirs"));

    let verify = run(Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/ftpd.service"]));
    let said = String::from_utf8_lossy(&verify.stderr).into_owned() + &String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    assert!(!said.contains("ftpd.service"), "systemd-analyze verify complains: {said}");
    let ours = exposure("/lib/systemd/system/ftpd.service");
    eprintln!("systemd-analyze security: ftpd.service exposure {ours}");
    assert!(ours < 5.0, "ftpd.service exposure {ours}");
    if Path::new("/lib/systemd/system/vsftpd.service").is_file() {
        let theirs = exposure("/lib/systemd/system/vsftpd.service");
        eprintln!("systemd-analyze security: vsftpd.service exposure {theirs}");
        assert!(ours < theirs, "ftpd.service {ours} is not below vsftpd.service {theirs}");
    }
    if Path::new("/usr/sbin/logrotate").is_file() {
        run_ok(Command::new("/usr/sbin/logrotate").args(["-d", "/etc/logrotate.d/ftpd"]));
    }

    // The installed binary and config, on a spare loopback port, userspace
    // plane, metrics on a spare port; it tells readiness as under systemd.
    let served = tempfile::tempdir().unwrap();
    std::fs::set_permissions(served.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(served.path().join("pub")).unwrap();
    let body = b"served by the packaged ftpd\n".repeat(1000);
    std::fs::write(served.path().join("pub/hello.txt"), &body).unwrap();
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new("/usr/sbin/ftpd")
        .arg("/etc/ftpd/ftpd.conf")
        .args([
            format!("-olisten_port={port}"),
            "-oftpd_ebpf=off".into(),
            "-olisten=YES".into(),
            "-olisten_ipv6=NO".into(),
            "-olisten_address=127.0.0.1".into(),
            format!("-oftpd_metrics_listen={metrics_addr}"),
            "-oftpd_metrics_dirs=pub".into(),
        ])
        .arg(format!("-oanon_root={}", served.path().display()))
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    guard.server = Some(child);
    let log = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("no READY=1 from ftpd on NOTIFY_SOCKET");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");

    let got = run(Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg(format!("ftp://127.0.0.1:{port}/pub/hello.txt")));
    assert!(got.status.success(), "curl: {}", String::from_utf8_lossy(&got.stderr));
    assert_eq!(got.stdout, body);
    let deadline = Instant::now() + Duration::from_secs(5);
    let key = "ftpd_dir_transfer_bytes_total{dir=\"pub\",direction=\"download\"}";
    let want = format!("{key} {}", body.len());
    while !ftpd_tests::http_get(&metrics_addr, "/metrics", "").raw.contains(&want) {
        assert!(
            Instant::now() < deadline,
            "{want} not in\n{}",
            ftpd_tests::http_get(&metrics_addr, "/metrics", "").raw
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let xferlog = std::fs::read_to_string("/var/log/ftpd/xferlog").unwrap_or_default();
    assert!(xferlog.contains("/pub/hello.txt"), "xferlog: {xferlog:?}");

    let mut child = guard.server.take().unwrap();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    let lines = log.join().unwrap();
    assert!(status.success(), "ftpd exited {status}:\n{}", lines.join("\n"));

    // Its workers (acting as `ftp`) end with it; userdel refuses a user
    // that still has processes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !installed_binary_processes().is_empty() {
        assert!(Instant::now() < deadline, "ftpd processes left: {:?}", installed_binary_processes());
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = run_ok(Command::new("dpkg").args(["--purge", "ftpd"]));
    eprintln!("{out}");
    assert!(!package_installed());
    for f in FILES.iter().chain(&["/etc/ftpd", "/var/log/ftpd", "/var/lib/ftpd", WANTS]) {
        assert!(Path::new(f).symlink_metadata().is_err(), "{f} left after purge");
    }
    assert_eq!(user_exists("ftp"), ftp_before, "purge must remove the ftp user only if it created it");
    assert_eq!(Path::new("/srv/ftp").exists(), srv_before, "purge must remove /srv/ftp only if it created it");
}
