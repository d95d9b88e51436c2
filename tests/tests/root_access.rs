//! A root its sessions cannot enter is reported at startup and on reload,
//! with the path, mode, owner, the identity and the fix: otherwise clients
//! see an empty listing and 550 for every file, and nothing is logged.

use std::{os::unix::fs::PermissionsExt, time::Duration};

use ftpd_tests::Server;

#[test]
fn closed_anonymous_root_is_reported_at_startup_and_on_reload() {
    if !ftpd_tests::root_or_skip(
        "root_access::closed_anonymous_root_is_reported_at_startup_and_on_reload",
        "as another user the served directory is the server's own",
    ) {
        return;
    }
    // What `mktemp -d` makes: mode 0700, owned by root.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.path().join("f.txt"), b"x").unwrap();
    let server = Server::start(dir.path(), &[]);
    let log = server.wait_log("anonymous root", 1, Duration::from_secs(5));
    let line = log.lines().find(|l| l.contains("anonymous root")).unwrap();
    let path = dir.path().display().to_string();
    for want in [path.as_str(), "mode 0700", "root", "nobody", &format!("chmod o+rx {path}"), "ftp_username"] {
        assert!(line.contains(want), "{want:?} missing: {line}");
    }
    // The symptom it explains.
    let mut c = server.login();
    let (code, _) = c.cmd("SIZE f.txt");
    assert_eq!(code, 550);
    drop(server);

    // Fixed, then closed again while running: the reload says so.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(dir.path(), &[]);
    assert!(!server.log().contains("anonymous root"), "{}", server.log());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let _ = std::process::Command::new("kill").args(["-HUP", &server.pid().to_string()]).status();
    let log = server.wait_log("reload: anonymous root", 1, Duration::from_secs(5));
    assert!(log.contains("mode 0700"), "{log}");
}

/// `cargo xtask run --root DIR` on what `mktemp -d` makes prints the advice
/// before the line that says where it serves.
#[test]
fn xtask_run_prints_the_advice_before_serving() {
    use std::{
        io::{BufRead, BufReader},
        os::unix::process::CommandExt,
        process::{Command, Stdio},
    };
    if !ftpd_tests::root_or_skip(
        "root_access::xtask_run_prints_the_advice_before_serving",
        "as another user the served directory is the server's own",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let port = ftpd_tests::free_port();
    // One pipe for both streams, so their order is kept.
    let script = format!(
        "exec cargo xtask run --root '{}' -- -oftpd_ebpf=off -olisten_port={port} -oftpd_metrics_listen= 2>&1",
        dir.path().display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .current_dir(ftpd_tests::workspace())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        let done = line.contains("try: curl ftp://");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).status();
    let _ = child.wait();
    assert!(seen.last().is_some_and(|l| l.contains("try: curl")), "never served:\n{}", seen.join("\n"));
    let advice = format!("chmod o+rx {}", dir.path().display());
    assert!(seen.iter().any(|l| l.contains(&advice)), "no advice before serving:\n{}", seen.join("\n"));
}

/// A `local_root` set in a `user_config_dir` file is checked as that user.
#[test]
fn closed_local_root_of_a_user_config_is_reported() {
    if !ftpd_tests::root_or_skip(
        "root_access::closed_local_root_of_a_user_config_is_reported",
        "as another user the directory is the server's own",
    ) {
        return;
    }
    let anon = tempfile::tempdir().unwrap();
    std::fs::set_permissions(anon.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let closed = tempfile::tempdir().unwrap();
    std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let users = tempfile::tempdir().unwrap();
    std::fs::write(users.path().join("nobody"), format!("local_root={}\n", closed.path().display())).unwrap();
    let server =
        Server::start(anon.path(), &["local_enable=YES", &format!("user_config_dir={}", users.path().display())]);
    let log = server.wait_log("local_root", 1, Duration::from_secs(5));
    let line = log.lines().find(|l| l.contains("local_root")).unwrap();
    let want = format!("user nobody (uid 65534) cannot list and enter {}", closed.path().display());
    assert!(line.contains(&want) && line.contains("mode 0700"), "{line}");
    assert!(!log.contains("anonymous root"), "{log}");
}
