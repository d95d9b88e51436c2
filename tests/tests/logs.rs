//! vsftpd-compatible logs (xferlog, vsftpd_log_file, log_ftp_protocol) and
//! the session-policy options (cmds_allowed/denied, dirlist_enable,
//! force_dot_files, max_login_fails, delete_failed_uploads).

use std::time::Duration;

use ftpd_tests::{Server, python, wait_file, writable_by_all};

fn tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("a file.txt"), b"0123456789").unwrap();
    std::fs::write(root.join(".dot"), b"d").unwrap();
    writable_by_all(&root);
    d
}

/// Polls until `path` has `n` lines (logs are written after the reply).
fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let text = wait_file(path, Duration::from_secs(2), &format!("had {n} lines"), |t| t.lines().count() >= n);
    text.lines().map(str::to_owned).collect()
}

/// Polls until `path` contains `needle`; returns the whole text.
fn wait_for(path: &std::path::Path, needle: &str) -> String {
    wait_file(path, Duration::from_secs(2), &format!("contained {needle:?}"), |t| t.contains(needle))
}

#[test]
fn xferlog_std_format_parses_field_by_field() {
    let d = tree();
    let xfer = d.path().join("xferlog");
    let x = format!("xferlog_file={}", xfer.display());
    let server = Server::start(
        &d.path().join("root"),
        &[
            "xferlog_enable=YES",
            "xferlog_std_format=YES",
            &x,
            "write_enable=YES",
            "anon_upload_enable=YES",
            "no_anon_password=NO",
        ],
    );
    let code = format!(
        "import ftplib, io\nf=ftplib.FTP()\nf.connect('127.0.0.1',{})\nf.login('anonymous','me@example.org')\nf.retrbinary('RETR a file.txt', lambda b: None)\nf.storbinary('STOR up.bin', io.BytesIO(b'x'*12345))\nf.quit()",
        server.addr.port()
    );
    python(&code);
    let got = lines(&xfer, 2);
    // current-time(5 fields) transfer-time remote-host file-size filename
    // transfer-type special-action direction access-mode username service
    // authentication-method authenticated-user-id completion-status
    let f: Vec<&str> = got[0].split(' ').filter(|s| !s.is_empty()).collect();
    assert_eq!(f.len(), 18, "{}", got[0]);
    assert!(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&f[0]));
    assert!(f[5].parse::<u64>().unwrap() >= 1);
    assert_eq!(&f[6..], ["127.0.0.1", "10", "/a_file.txt", "b", "_", "o", "a", "me@example.org", "ftp", "0", "*", "c"]);
    let f: Vec<&str> = got[1].split(' ').filter(|s| !s.is_empty()).collect();
    assert_eq!(&f[7..], ["12345", "/up.bin", "b", "_", "i", "a", "me@example.org", "ftp", "0", "*", "c"]);
}

#[test]
fn vsftpd_log_with_protocol_hides_passwords() {
    let d = tree();
    let log = d.path().join("vsftpd.log");
    let l = format!("vsftpd_log_file={}", log.display());
    let server = Server::start(
        &d.path().join("root"),
        &["xferlog_enable=YES", "log_ftp_protocol=YES", &l, "no_anon_password=NO"],
    );
    let code = format!(
        "import ftplib\nf=ftplib.FTP()\nf.connect('127.0.0.1',{})\nf.login('anonymous','topsecret@x')\nf.retrbinary('RETR a file.txt', lambda b: None)\nf.quit()",
        server.addr.port()
    );
    python(&code);
    let text = wait_for(&log, "OK DOWNLOAD");
    assert!(!text.contains("topsecret"), "{text}");
    assert!(text.contains("FTP command: Client \"127.0.0.1\", \"PASS <password>\""), "{text}");
    assert!(text.contains("FTP response: Client \"127.0.0.1\", \"230 Login successful.\""), "{text}");
    assert!(text.contains("] OK LOGIN: Client \"127.0.0.1\""), "{text}");
    assert!(text.contains("] OK DOWNLOAD: Client \"127.0.0.1\", \"/a file.txt\", 10 bytes,"), "{text}");
}

#[test]
fn command_filters_and_listing_options() {
    let d = tree();
    let root = d.path().join("root");
    let server = Server::start(&root, &["cmds_denied=SIZE,MDTM"]);
    let mut c = server.login();
    c.cmd_ok("SIZE a file.txt", 550);
    c.cmd_ok("MDTM a file.txt", 550);
    c.cmd_ok("NOOP", 200);
    let server = Server::start(&root, &["cmds_allowed=PASV,NLST,QUIT,USER,PASS"]);
    let mut c = server.login();
    c.cmd_ok("PWD", 550);
    let (names, code, _) = c.transfer("NLST");
    assert_eq!((String::from_utf8(names).unwrap().as_str(), code), ("a file.txt\r\n", 226));
    let server = Server::start(&root, &["dirlist_enable=NO"]);
    let mut c = server.login();
    c.cmd_ok("PASV", 227);
    c.cmd_ok("LIST", 550);
    c.cmd_ok("STAT /", 550);
    c.cmd_ok("SIZE a file.txt", 213); // files are still reachable
    let server = Server::start(&root, &["force_dot_files=YES"]);
    let mut c = server.login();
    let (names, _, _) = c.transfer("NLST");
    assert_eq!(String::from_utf8(names).unwrap(), ".dot\r\na file.txt\r\n");
}

#[test]
fn max_login_fails_closes_the_connection() {
    let d = tree();
    let server =
        Server::start(&d.path().join("root"), &["local_enable=YES", "max_login_fails=2", "delay_failed_login=0"]);
    let mut c = server.connect();
    c.cmd_ok("USER nosuchuser1", 331);
    c.cmd_ok("PASS x", 530);
    c.cmd_ok("USER nosuchuser1", 331);
    c.cmd_ok("PASS y", 530);
    assert!(c.try_read_reply().is_none(), "connection must close after max_login_fails");
}
