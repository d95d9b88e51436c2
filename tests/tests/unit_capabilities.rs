//! The systemd unit's `CapabilityBoundingSet` and `NoNewPrivileges` are
//! enough for what ftpd does as root: bind port 21, load the eBPF programs
//! and attach XDP, split privileges, serve a download, reload on SIGHUP. Run
//! with exactly those bounds (setpriv), in a network namespace of its own so
//! that port 21 and the XDP slot of `lo` are its own.

use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ftpd_tests::{ftpd_bin, privileged, run, workspace};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["netns", "del", &self.0]));
    }
}

fn wait_log(log: &std::path::Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(Instant::now() < deadline, "log never said {what:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "privileged: network namespace, eBPF (cargo xtask test as root)"]
fn the_units_capabilities_suffice() {
    assert!(privileged());
    let unit = std::fs::read_to_string(workspace().join("ftpd-user/debian/ftpd.service")).unwrap();
    assert!(unit.lines().any(|l| l == "NoNewPrivileges=yes"), "{unit}");
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds capabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(caps.len() >= 5 && !caps.iter().any(|c| c == "+sys_admin"), "{caps:?}");
    let bounding = format!("-all,{}", caps.join(","));

    let ns = Netns(format!("ftpd-caps-{}", std::process::id()));
    assert!(run(Command::new("ip").args(["netns", "add", &ns.0])).status.success());
    assert!(run(Command::new("ip").args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"])).status.success());
    let served = tempfile::tempdir().unwrap();
    std::fs::set_permissions(served.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(served.path().join("f.txt"), b"bounded\n").unwrap();
    // Under systemd cgroup2 is always mounted; here it may not be, and
    // mounting it needs CAP_SYS_ADMIN, which the unit does not grant: mount
    // one first, in a mount namespace of this test's own.
    let cg = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("ftpd.log");
    let script = format!(
        "mount --make-rprivate / && mount -t cgroup2 none '{cg}' && exec ip netns exec {ns} setpriv --bounding-set={bounding} --no-new-privs '{bin}' --root '{root}' -oftpd_ebpf=on -olisten_port=21 -oftpd_metrics_listen= -opasv_min_port=50000 -opasv_max_port=50009",
        cg = cg.path().display(),
        ns = ns.0,
        bin = ftpd_bin().display(),
        root = served.path().display(),
    );
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let text = wait_log(&log, "ftpd listening");
    assert!(text.contains("eBPF data plane loaded"), "{text}");
    let got = run(Command::new("ip").args([
        "netns",
        "exec",
        &ns.0,
        "curl",
        "-sS",
        "--max-time",
        "10",
        "ftp://127.0.0.1:21/f.txt",
    ]));
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-HUP", &pid]).status();
    let reloaded = wait_log(&log, "SIGHUP: configuration re-read");
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().unwrap();
    assert_eq!(got.stdout, b"bounded\n", "{}\n{reloaded}", String::from_utf8_lossy(&got.stderr));
    assert!(status.success(), "ftpd exited {status}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
}
