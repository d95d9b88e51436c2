//! The systemd unit's sandbox is enough for what ftpd does as root: bind
//! port 21, load the eBPF programs and attach XDP, split privileges, start
//! workers, serve a listing and a download, reload on SIGHUP, stop. ftpd runs
//! with exactly the unit's `CapabilityBoundingSet` and `NoNewPrivileges`
//! (setpriv) and its `SystemCallFilter` (expanded by `systemd-analyze
//! syscall-filter`, loaded with libseccomp), in a network namespace of its
//! own so that port 21 and the XDP slot of `lo` are its own.

use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt,
    process::{Command, Output, Stdio},
    time::Duration,
};

use ftpd_tests::{Netns, ftpd_bin, privileged, run, run_ok, wait_file, workspace};

/// Loads an allow-list filter (EPERM for the rest, as
/// `SystemCallErrorNumber=EPERM`) and becomes the program: argv is the
/// list file, then the program and its arguments.
const SECCOMP: &str = r#"
import errno, os, sys, seccomp
f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
for name in open(sys.argv[1]).read().split():
    try:
        f.add_rule(seccomp.ALLOW, name)
    except Exception:
        pass  # not a system call on this architecture
f.load()
os.execv(sys.argv[2], sys.argv[2:])
"#;

/// The system calls a `SystemCallFilter=` value names, groups expanded.
fn syscalls(spec: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for item in spec.split_whitespace() {
        if item.starts_with('@') {
            let text = run_ok(Command::new("systemd-analyze").args(["syscall-filter", item]));
            for line in text.lines().filter_map(|l| l.strip_prefix("    ")) {
                if line.starts_with('@') {
                    out.extend(syscalls(line));
                } else if !line.starts_with('#') {
                    out.insert(line.trim().to_owned());
                }
            }
        } else {
            out.insert(item.to_owned());
        }
    }
    out
}

fn wait_log(log: &std::path::Path, what: &str) -> String {
    wait_file(log, Duration::from_secs(15), &format!("said {what:?}"), |t| t.contains(what))
}

#[test]
#[ignore = "privileged: network namespace, eBPF (cargo xtask test as root)"]
fn the_units_sandbox_suffices() {
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
    // SystemCallFilter=ALLOW... then SystemCallFilter=~DENY..., combined as
    // systemd does: what the first allows, less what the second denies.
    let filters: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("SystemCallFilter=")).collect();
    let allow = filters.iter().find(|f| !f.starts_with('~')).expect("an allow list");
    let deny = filters.iter().find_map(|f| f.strip_prefix('~')).unwrap_or_default();
    let allowed: BTreeSet<String> = &syscalls(allow) - &syscalls(deny);
    assert!(allowed.contains("bpf") && allowed.contains("setuid") && !allowed.contains("mount"), "{allowed:?}");
    let work = tempfile::tempdir().unwrap();
    let list = work.path().join("syscalls");
    std::fs::write(&list, allowed.into_iter().collect::<Vec<_>>().join("\n")).unwrap();

    let ns = Netns::new(&format!("ftpd-caps-{}", std::process::id()));
    let served = tempfile::tempdir().unwrap();
    std::fs::set_permissions(served.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(served.path().join("f.txt"), b"bounded\n").unwrap();
    // Under systemd cgroup2 is always mounted; here it may not be, and
    // mounting it needs CAP_SYS_ADMIN, which the unit does not grant: mount
    // one first, in a mount namespace of this test's own.
    let cg = tempfile::tempdir().unwrap();
    let log = work.path().join("ftpd.log");
    let script = format!(
        "mount --make-rprivate / && mount -t cgroup2 none '{cg}' && exec ip netns exec {ns} \
         setpriv --bounding-set={bounding} --no-new-privs /usr/bin/python3 -c \"$SECCOMP\" '{list}' \
         '{bin}' --root '{root}' -oftpd_ebpf=on -olisten_port=21 -oftpd_metrics_listen= \
         -opasv_min_port=50000 -opasv_max_port=50009",
        cg = cg.path().display(),
        ns = ns.name,
        list = list.display(),
        bin = ftpd_bin().display(),
        root = served.path().display(),
    );
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("SECCOMP", SECCOMP)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let text = wait_log(&log, "ftpd listening");
    assert!(text.contains("eBPF data plane loaded"), "{text}");
    let curl = |url: &str| -> Output {
        run(Command::new("ip").args(["netns", "exec", &ns.name, "curl", "-sS", "--max-time", "10", url]))
    };
    let listing = curl("ftp://127.0.0.1:21/");
    let got = curl("ftp://127.0.0.1:21/f.txt");
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-HUP", &pid]).status();
    let reloaded = wait_log(&log, "SIGHUP: configuration re-read");
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().unwrap();
    let listed = String::from_utf8_lossy(&listing.stdout);
    assert!(listed.contains("f.txt"), "{listed} {}\n{reloaded}", String::from_utf8_lossy(&listing.stderr));
    assert_eq!(got.stdout, b"bounded\n", "{}\n{reloaded}", String::from_utf8_lossy(&got.stderr));
    assert!(status.success(), "ftpd exited {status}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
}
