//! Options beyond the command set: anonymous password lists, owner names in
//! listings, background mode.

use std::{process::Command, time::Duration};

use ftpd_tests::{Ftp, free_port, ftpd_bin, served_by_nobody};

fn root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("f.txt"), b"f").unwrap();
    served_by_nobody(d.path());
    d
}

#[test]
fn anonymous_password_lists() {
    let d = root();
    let banned = d.path().join("banned");
    std::fs::write(&banned, "spam@example.org\n").unwrap();
    let b = format!("banned_email_file={}", banned.display());
    let server = ftpd_tests::Server::start(
        d.path(),
        &["no_anon_password=NO", "deny_email_enable=YES", &b, "delay_failed_login=0"],
    );
    let mut c = server.connect();
    c.cmd_ok("USER anonymous", 331);
    c.cmd_ok("PASS spam@example.org", 530);
    c.cmd_ok("USER anonymous", 331);
    c.cmd_ok("PASS fine@example.org", 230);

    let good = d.path().join("good");
    std::fs::write(&good, "friend@example.org\n").unwrap();
    let g = format!("email_password_file={}", good.display());
    let server = ftpd_tests::Server::start(
        d.path(),
        &["no_anon_password=NO", "secure_email_list_enable=YES", &g, "delay_failed_login=0"],
    );
    let mut c = server.connect();
    c.cmd_ok("USER anonymous", 331);
    c.cmd_ok("PASS stranger@example.org", 530);
    c.cmd_ok("USER ftp", 331);
    c.cmd_ok("PASS friend@example.org", 230);

    // A missing banned_email_file stops startup instead of banning nobody.
    let out = ftpd_tests::run(Command::new(ftpd_bin()).args([
        "-odeny_email_enable=YES",
        "-obanned_email_file=/nonexistent/x",
        "-olisten_port=1",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("banned_email_file=/nonexistent/x"));
}

#[test]
fn text_userdb_names_in_listings() {
    let d = root();
    let server = ftpd_tests::Server::start(d.path(), &["text_userdb_names=YES"]);
    let mut c = server.login();
    let (list, _, _) = c.transfer("LIST");
    let list = String::from_utf8(list).unwrap();
    let uid = std::fs::metadata(d.path().join("f.txt")).map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
    let want = if uid == 0 { " root     root " } else { "" };
    assert!(list.contains(want), "{list}");
    let server = ftpd_tests::Server::start(d.path(), &[]);
    let mut c = server.login();
    let (list, code, text) = c.transfer("LIST");
    let list = String::from_utf8(list).unwrap();
    assert!(list.contains(&format!(" {uid:<8} ")), "{list:?} {code} {text}\n{}", server.log());
}

#[test]
fn background_detaches_and_keeps_serving() {
    let d = root();
    let port = free_port();
    let out = Command::new(ftpd_bin())
        .arg("--root")
        .arg(d.path())
        .args([
            format!("-olisten_port={port}"),
            "-obackground=YES".into(),
            "-oftpd_ebpf=off".into(),
            format!("-oftpd_banner=bg-{port}-{}", std::process::id()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    // The foreground process returns at once; the server lives on detached.
    assert!(out.success());
    let mut c = None;
    for _ in 0..50 {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            drop(s);
            c = Some(Ftp::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port))));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = c.expect("the background server accepts connections");
    assert_eq!(c.read_reply().0, 220);
    c.cmd_ok("USER anonymous", 230);
    c.cmd_ok("QUIT", 221);
    // Only this test's server carries this banner on its command line.
    let _ =
        Command::new("pkill").args(["-TERM", "-f", &format!("ftpd_banner=bg-{port}-{}", std::process::id())]).status();
}

#[test]
fn a_low_descriptor_limit_is_reported() {
    let d = root();
    let port = free_port();
    // A hard limit of 256 descriptors cannot hold max_clients=2000 sessions.
    let script = format!(
        "ulimit -n 256 && exec \"$0\" --root {} -olisten_port={port} -oftpd_ebpf=off -oftpd_metrics_listen= -omax_clients=2000",
        d.path().display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .arg(ftpd_bin())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let _ = child.wait();
    assert!(err.contains("RLIMIT_NOFILE allows about 96 sessions, fewer than max_clients"), "{err}");
}
