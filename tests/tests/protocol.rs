//! The control protocol over real sockets: replies, confinement, hostile input,
//! limits. Reply texts follow vsftpd so that scripts written for it keep working.

use std::{io::Read, os::unix::fs::symlink, process::Command, time::Duration};

use ftpd_tests::{Ftp, Server, ftpd_bin, run};

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("pub/sub")).expect("mkdir");
    std::fs::write(root.join("pub/a.txt"), b"alpha\n").expect("write");
    std::fs::write(root.join(".hidden"), b"h").expect("write");
    std::fs::write(dir.path().join("secret.txt"), b"outside the root\n").expect("write");
    symlink(dir.path().join("secret.txt"), root.join("escape")).expect("symlink");
    symlink("/etc", root.join("etc-link")).expect("symlink");
    symlink("pub/a.txt", root.join("inside-link")).expect("symlink");
    dir
}

#[test]
fn login_sequence_and_basic_commands() {
    let dir = tree();
    let server = Server::start(&dir.path().join("root"), &["no_anon_password=NO"]);
    let mut c = server.connect();
    c.cmd_ok("PWD", 530);
    c.cmd_ok("PASS x", 503);
    c.cmd_ok("USER alice", 530);
    c.cmd_ok("USER anonymous", 331);
    c.cmd_ok("PASS guest@example.org", 230);
    assert_eq!(c.cmd_ok("SYST", 215), "215 UNIX Type: L8\r\n");
    let feat = c.cmd_ok("FEAT", 211);
    assert!(
        feat.starts_with("211-Features:\r\n") && feat.contains("\r\n EPSV\r\n") && feat.ends_with("211 End\r\n"),
        "{feat}"
    );
    assert_eq!(c.cmd_ok("PWD", 257), "257 \"/\" is the current directory\r\n");
    c.cmd_ok("CWD pub/sub", 250);
    assert_eq!(c.cmd_ok("PWD", 257), "257 \"/pub/sub\" is the current directory\r\n");
    c.cmd_ok("CDUP", 250);
    assert_eq!(c.cmd_ok("PWD", 257), "257 \"/pub\" is the current directory\r\n");
    c.cmd_ok("CWD nowhere", 550);
    c.cmd_ok("TYPE I", 200);
    c.cmd_ok("TYPE A", 200);
    c.cmd_ok("TYPE X", 500);
    assert_eq!(c.cmd_ok("SIZE a.txt", 213), "213 6\r\n");
    c.cmd_ok("SIZE sub", 550);
    let mdtm = c.cmd_ok("MDTM a.txt", 213);
    assert_eq!(mdtm.trim_end().len(), "213 20261124045227".len(), "{mdtm}");
    c.cmd_ok("NOOP", 200);
    c.cmd_ok("XYZZY", 500);
    c.cmd_ok("STOR x", 550);
    c.cmd_ok("DELE a.txt", 550);
    c.cmd_ok("OPTS UTF8 ON", 200);
    c.cmd_ok("RETR a.txt", 425); // no PASV yet
    c.cmd_ok("noop", 200); // verbs are case-insensitive
    c.cmd_ok("QUIT", 221);
    assert!(c.try_read_reply().is_none(), "connection closed after QUIT");
}

#[test]
fn listings() {
    let dir = tree();
    let server = Server::start(&dir.path().join("root"), &[]);
    let mut c = server.login();
    let (names, code, _) = c.transfer("NLST");
    assert_eq!(code, 226);
    assert_eq!(String::from_utf8(names).unwrap(), "escape\r\netc-link\r\ninside-link\r\npub\r\n");
    let (list, _, _) = c.transfer("LIST -la");
    let list = String::from_utf8(list).unwrap();
    assert!(list.lines().any(|l| l.ends_with(" .hidden")), "{list}");
    assert!(list.lines().any(|l| l.starts_with('l') && l.ends_with(" inside-link -> pub/a.txt")), "{list}");
    let (one, code, _) = c.transfer("LIST pub/a.txt");
    assert_eq!(code, 226);
    let one = String::from_utf8(one).unwrap();
    // vsftpd lists a file as an entry of its directory (was: " pub/a.txt").
    assert!(one.starts_with("-rw") && one.ends_with(" a.txt\r\n"), "{one}");
    let (none, code, text) = c.transfer("LIST /no/such/dir");
    assert_eq!((none.len(), code), (0, 226), "{text}");
    let (got, code, _) = c.transfer("RETR inside-link");
    assert_eq!((got.as_slice(), code), (&b"alpha\n"[..], 226));
}

#[test]
fn nothing_outside_the_root_is_reachable() {
    let dir = tree();
    let server = Server::start(&dir.path().join("root"), &[]);
    let mut c = server.login();
    for path in ["../secret.txt", "/../secret.txt", "pub/../../secret.txt", "escape", "etc-link/passwd", "/etc/passwd"]
    {
        c.cmd_ok(&format!("SIZE {path}"), 550);
        let (bytes, code, text) = c.transfer(&format!("RETR {path}"));
        assert_eq!(code, 550, "RETR {path}: {text}");
        assert!(bytes.is_empty());
    }
    c.cmd_ok("CWD ../../..", 250);
    assert_eq!(c.cmd_ok("PWD", 257), "257 \"/\" is the current directory\r\n");
    c.cmd_ok("CWD etc-link", 550);
    // Listing through the escaping links shows nothing from outside.
    let (bytes, _, _) = c.transfer("NLST etc-link");
    assert!(!String::from_utf8_lossy(&bytes).contains("passwd"));
}

#[test]
fn hostile_input_gets_replies_not_crashes() {
    let dir = tree();
    let server = Server::start(&dir.path().join("root"), &[]);
    // Warm up: the first login starts the anonymous file worker (as root).
    {
        let mut w = server.login();
        w.cmd_ok("QUIT", 221);
    }
    std::thread::sleep(Duration::from_millis(200));
    let fds_before = server.fd_count();
    let mut c = server.login();
    // NUL byte: refused, session goes on.
    c.send_raw(b"RETR a\0b\r\n").unwrap();
    assert_eq!(c.read_reply().0, 501);
    // Invalid UTF-8 in a path: just a file that does not exist.
    c.send_raw(b"SIZE \xff\xfe\r\n").unwrap();
    assert_eq!(c.read_reply().0, 550);
    // Bare LF ends a command too.
    c.send_raw(b"NOOP\n").unwrap();
    assert_eq!(c.read_reply().0, 200);
    // A binary verb is an unknown command.
    c.send_raw(b"\x01\x02\x03\r\n").unwrap();
    assert_eq!(c.read_reply().0, 500);
    // Many commands at once (pipelined) are all answered in order.
    c.send_raw(b"NOOP\r\nSYST\r\nPWD\r\n").unwrap();
    assert_eq!([c.read_reply().0, c.read_reply().0, c.read_reply().0], [200, 215, 257]);
    // An overlong line ends the session with a reply.
    let mut long = vec![b'A'; 10_000];
    long.extend_from_slice(b"\r\n");
    let _ = c.send_raw(&long);
    let (code, text) = c.read_reply();
    assert_eq!(code, 500, "{text}");
    assert!(text.contains("too long"));
    assert!(c.try_read_reply().is_none());
    // Connections that vanish mid-transfer or mid-PASV leak nothing.
    for _ in 0..20 {
        let mut c = server.login();
        let mut data = c.pasv_connect();
        c.send_raw(b"RETR pub/a.txt\r\n").unwrap();
        let mut one = [0u8; 1];
        let _ = data.read(&mut one);
        drop(c);
        let mut c = server.login();
        c.cmd_ok("PASV", 227);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.fd_count(), fds_before, "file descriptors leaked");
    // The server still works.
    let mut c = server.login();
    c.cmd_ok("NOOP", 200);
}

#[test]
fn passive_ports_stay_in_range() {
    let dir = tree();
    // Below the ephemeral ports: on the kernel plane the range is guarded on
    // `lo`, where other servers' and clients' ports come from that range.
    let server = Server::start(&dir.path().join("root"), &["pasv_min_port=31000", "pasv_max_port=31009"]);
    let mut c = server.login();
    for _ in 0..5 {
        let text = c.cmd_ok("EPSV", 229);
        let port: u16 = text.split('|').nth(3).unwrap().parse().unwrap();
        assert!((31000..=31009).contains(&port), "{text}");
    }
    let mut c2 = server.login();
    let text = c2.cmd_ok("PASV", 227);
    assert!(text.starts_with("227 Entering Passive Mode (127,0,0,1,121,"), "{text}"); // 121*256 = 30976
    c.cmd_ok("EPSV ALL", 200);
    c.cmd_ok("PASV", 550);
}

#[test]
fn connection_limits_answer_like_vsftpd() {
    let dir = tree();
    let server = Server::start(&dir.path().join("root"), &["max_per_ip=2"]);
    let _a = server.connect();
    let _b = server.connect();
    let mut c = Ftp::connect(server.addr);
    assert_eq!(c.read_reply(), (421, "421 There are too many connections from your internet address.\r\n".into()));
    assert!(c.try_read_reply().is_none());
    drop(_a);
    std::thread::sleep(Duration::from_millis(200));
    let _d = server.connect(); // a slot is free again

    let server = Server::start(&dir.path().join("root"), &["max_clients=1"]);
    let _a = server.connect();
    let mut c = Ftp::connect(server.addr);
    assert_eq!(c.read_reply(), (421, "421 There are too many connected users, please try later.\r\n".into()));
}

#[test]
fn idle_sessions_time_out() {
    let dir = tree();
    let server = Server::start(&dir.path().join("root"), &["idle_session_timeout=1"]);
    let mut c = server.login();
    let start = std::time::Instant::now();
    assert_eq!(c.read_reply(), (421, "421 Timeout.\r\n".into()));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn bad_config_stops_startup_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str); 4] = [
        ("anonymous_enable=YES\nno_such_option=1\n", ":2: no_such_option: unrecognised option"),
        ("listen_port=21 \n", ":1: value of listen_port ends with white space"),
        ("anonymous_enable=perhaps\n", ":1: anonymous_enable: bad boolean value"),
        ("pasv_min_port=2000\npasv_max_port=1000\n", "pasv_min_port=2000 is above pasv_max_port=1000"),
    ];
    for (text, want) in cases {
        let conf = dir.path().join("bad.conf");
        std::fs::write(&conf, text).unwrap();
        let out = run(Command::new(ftpd_bin()).arg(&conf));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert!(err.contains(want) && err.contains("bad.conf"), "{text:?}: {err}");
    }
    let out = run(Command::new(ftpd_bin()).arg(dir.path().join("missing.conf")));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.conf: cannot read"));
    let out = run(Command::new(ftpd_bin()).args(["-olisten_port=abc"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_port: bad number"));
    let help = run(Command::new(ftpd_bin()).arg("--help-config"));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("| `pasv_min_port` | port | `0` |") && help.contains("| `ftpd_ebpf` |"), "{help}");
}

#[test]
fn readme_option_reference_is_generated_from_the_table() {
    let help = run(Command::new(ftpd_bin()).arg("--help-config"));
    let table = String::from_utf8(help.stdout).unwrap();
    let readme = std::fs::read_to_string(ftpd_tests::workspace().join("README.md")).unwrap();
    let begin = readme.find("<!-- options:begin -->\n").expect("README marker") + "<!-- options:begin -->\n".len();
    let end = readme.find("<!-- options:end -->").expect("README marker");
    assert!(readme[begin..end] == table, "README's option table is stale: run `cargo xtask docs`");
    // One row per option, each documented.
    assert!(table.lines().skip(2).all(|l| l.split(" | ").count() == 4 && !l.ends_with("|  |")), "{table}");
}

#[test]
fn ebpf_fallback_is_logged_and_on_refuses() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &["ftpd_ebpf=auto", "ftpd_xdp_interfaces=nosuchif0"]);
    let mut c = server.login();
    let stat = c.cmd_ok("STAT", 211);
    assert!(stat.contains("Data plane: userspace ("), "{stat}");
    let log = server.stop();
    assert!(log.contains("eBPF data plane unavailable, falling back to userspace enforcement"), "{log}");

    let out = run(Command::new(ftpd_bin()).arg("--root").arg(&root).args([
        "-olisten_port=0",
        "-oftpd_ebpf=on",
        "-oftpd_xdp_interfaces=nosuchif0",
    ]));
    // listen_port=0 is refused before anything is loaded; use a real port.
    assert_eq!(out.status.code(), Some(2));
    let port = ftpd_tests::free_port();
    let out = run(Command::new(ftpd_bin()).arg("--root").arg(&root).args([
        format!("-olisten_port={port}"),
        "-oftpd_ebpf=on".into(),
        "-oftpd_xdp_interfaces=nosuchif0".into(),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("ftpd_ebpf=on but the eBPF data plane cannot start"), "{err}");
}
