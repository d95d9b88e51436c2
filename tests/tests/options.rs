//! vsftpd.conf options, each switched on and off against a real server:
//! what is listed, what may be downloaded, how it is converted, what the
//! greeting and directory messages say, and where passive mode points.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ftpd_tests::{Ftp, Launch, Server, give_to_anon, make_writable, python, random_file, run, run_ok, sha256_file};

fn names(listing: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(listing).lines().map(str::to_owned).collect()
}

#[test]
fn deny_file_wildcards_match_names_that_contain_a_star() {
    // A `*` in the name was compared with the pattern's `*` as a plain byte,
    // so `*x.secret` dodged `{*.secret}` (found by the vpath fuzz target).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("*x.secret"), b"secret\n").unwrap();
    make_writable(root);
    let server = Server::start(root, &["deny_file={*.secret}", "write_enable=YES", "anon_upload_enable=YES"]);
    let mut c = server.login();
    assert_eq!(c.cmd_ok("SIZE *x.secret", 550), "550 Permission denied.\r\n");
    let (bytes, code, _) = c.transfer("RETR *x.secret");
    assert_eq!((bytes.len(), code), (0, 550));
    let (_, code, _) = c.upload("STOR *new.secret", b"x");
    assert_eq!(code, 550);
    assert!(!root.join("*new.secret").exists());
}

#[test]
fn deny_file_makes_names_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("pub/dir.secret")).unwrap();
    std::fs::write(root.join("pub/x.secret"), b"secret\n").unwrap();
    std::fs::write(root.join("pub/ok.txt"), b"ok\n").unwrap();
    std::fs::write(root.join("pub/dir.secret/inner.txt"), b"inner\n").unwrap();
    make_writable(root);
    let server = Server::start(
        root,
        &["deny_file={*.secret}", "write_enable=YES", "anon_upload_enable=YES", "anon_other_write_enable=YES"],
    );
    let mut c = server.login();
    for cmd in ["SIZE pub/x.secret", "MDTM pub/x.secret", "CWD pub/dir.secret", "SIZE pub/dir.secret/inner.txt"] {
        assert_eq!(c.cmd_ok(cmd, 550), "550 Permission denied.\r\n", "{cmd}");
    }
    for path in ["pub/x.secret", "/pub/x.secret", "pub/dir.secret/inner.txt", "pub/../pub/x.secret"] {
        let (bytes, code, _) = c.transfer(&format!("RETR {path}"));
        assert_eq!((bytes.len(), code), (0, 550), "RETR {path}");
    }
    // Denied names are not hidden (vsftpd's manual: "The affected items are
    // not hidden"; was: left out of listings); hide_file hides.
    let (nlst, _, _) = c.transfer("NLST pub");
    assert_eq!(names(&nlst), ["pub/dir.secret", "pub/ok.txt", "pub/x.secret"]);
    assert!(c.cmd_ok("STAT pub", 213).contains(" x.secret\r\n"));
    assert_eq!(c.cmd_ok("STAT pub/x.secret", 550), "550 Permission denied.\r\n");
    let (list, code, text) = c.transfer("LIST pub/dir.secret");
    assert_eq!((list.len(), code, text.as_str()), (0, 550, "550 Permission denied.\r\n"));
    // Nor can denied names be created, deleted or renamed to.
    let (_, code, _) = c.upload("STOR pub/new.secret", b"x");
    assert_eq!(code, 550);
    c.cmd_ok("DELE pub/x.secret", 550);
    c.cmd_ok("RNFR pub/ok.txt", 350);
    c.cmd_ok("RNTO pub/ok.secret", 550);
    assert!(root.join("pub/x.secret").exists() && !root.join("pub/new.secret").exists());
    assert!(root.join("pub/ok.txt").exists());
    // Without the option, all of it is there.
    let server = Server::start(root, &[]);
    let mut c = server.login();
    c.cmd_ok("SIZE pub/x.secret", 213);
    c.cmd_ok("CWD pub/dir.secret", 250);
    let (nlst, _, _) = c.transfer("NLST /pub");
    assert_eq!(names(&nlst), ["/pub/dir.secret", "/pub/ok.txt", "/pub/x.secret"]);
}

#[test]
fn hide_file_hides_from_listings_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("pub/sub.hid")).unwrap();
    std::fs::write(root.join("pub/a.hid"), b"hidden but there\n").unwrap();
    std::fs::write(root.join("pub/b.txt"), b"b\n").unwrap();
    let server = Server::start(root, &["hide_file={*.hid}"]);
    let mut c = server.login();
    let (nlst, _, _) = c.transfer("NLST pub");
    assert_eq!(names(&nlst), ["pub/b.txt"]);
    let (list, _, _) = c.transfer("LIST -a pub");
    assert!(!String::from_utf8_lossy(&list).contains(".hid"));
    let (mlsd, _, _) = c.transfer("MLSD pub");
    assert!(!String::from_utf8_lossy(&mlsd).contains(".hid"));
    let (bytes, code, _) = c.transfer("RETR pub/a.hid");
    assert_eq!((bytes.as_slice(), code), (&b"hidden but there\n"[..], 226));
    assert_eq!(c.cmd_ok("SIZE pub/a.hid", 213), "213 17\r\n");
    c.cmd_ok("CWD pub/sub.hid", 250);
    let got = run_ok(Command::new("curl").args(["-sS", &server.url("/pub/a.hid")]));
    assert_eq!(got, "hidden but there\n");
    let server = Server::start(root, &["hide_file="]);
    let mut c = server.login();
    let (nlst, _, _) = c.transfer("NLST pub");
    assert_eq!(names(&nlst), ["pub/a.hid", "pub/b.txt", "pub/sub.hid"]);
}

#[test]
fn hide_ids_shows_ftp_as_owner() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("d")).unwrap();
    std::fs::write(root.join("f.txt"), b"f\n").unwrap();
    for (setting, hidden) in [("hide_ids=YES", true), ("hide_ids=NO", false)] {
        let server = Server::start(root, &[setting]);
        let mut c = server.login();
        let (list, _, _) = c.transfer("LIST");
        let list = String::from_utf8(list).unwrap();
        assert_eq!(list.lines().count(), 2, "{list}");
        for line in list.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let name = f.last().unwrap();
            let meta = std::fs::metadata(root.join(name)).unwrap();
            let want = if hidden {
                ("ftp".to_string(), "ftp".to_string())
            } else {
                (meta.uid().to_string(), meta.gid().to_string())
            };
            assert_eq!((f[2].to_string(), f[3].to_string()), want, "{setting}: {line}");
        }
    }
}

#[test]
fn dirmessage_shown_once_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("pub")).unwrap();
    std::fs::create_dir_all(root.join("custom")).unwrap();
    std::fs::write(root.join("pub/.message"), "Welcome to pub\nSecond line\n").unwrap();
    std::fs::write(root.join("custom/README.msg"), "Custom message\n").unwrap();
    let plain = "250 Directory successfully changed.\r\n";

    let server = Server::start(root, &["dirmessage_enable=YES"]);
    let mut c = server.login();
    assert_eq!(
        c.cmd_ok("CWD pub", 250),
        "250-Welcome to pub\r\n250-Second line\r\n250 Directory successfully changed.\r\n"
    );
    c.cmd_ok("CWD /custom", 250);
    assert_eq!(c.cmd_ok("CWD /pub", 250), plain, "shown once per session");
    let mut c2 = server.login();
    assert!(c2.cmd_ok("CWD /pub", 250).starts_with("250-Welcome to pub\r\n"), "once per session, not per server");

    let server = Server::start(root, &["dirmessage_enable=YES", "message_file=README.msg"]);
    let mut c = server.login();
    assert_eq!(c.cmd_ok("CWD custom", 250), "250-Custom message\r\n250 Directory successfully changed.\r\n");
    assert_eq!(c.cmd_ok("CWD /pub", 250), plain);

    let server = Server::start(root, &["dirmessage_enable=NO"]);
    let mut c = server.login();
    assert_eq!(c.cmd_ok("CWD pub", 250), plain);
}

/// vsftpd shows the message of the directory a user starts in with the 230
/// reply (`vsf_banner_dir_changed(p_sess, FTP_LOGINOK)` in postlogin.c), and
/// does not show it again on a CWD there.
#[test]
fn dirmessage_of_the_start_directory_comes_with_the_login() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join(".message"), "Root message\n").unwrap();
    let server = Server::start(root, &["dirmessage_enable=YES"]);
    let mut c = server.connect();
    assert_eq!(c.cmd("USER anonymous"), (230, "230-Root message\r\n230 Login successful.\r\n".into()));
    assert_eq!(c.cmd_ok("CWD /", 250), "250 Directory successfully changed.\r\n");
}

#[test]
fn banner_file_and_ftpd_banner() {
    let dir = tempfile::tempdir().unwrap();
    let banner = dir.path().join("banner.txt");
    std::fs::write(&banner, "Welcome to the test server\nSecond banner line\n").unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();

    let greeting = |server: &Server| {
        let mut c = Ftp::connect(server.addr);
        let got = c.read_reply();
        c.cmd_ok("USER anonymous", 230);
        got
    };
    let server = Server::start(&root, &[&format!("banner_file={}", banner.display()), "ftpd_banner=Not this one"]);
    let (code, text) = greeting(&server);
    assert_eq!(code, 220);
    assert!(text.starts_with("220-Welcome to the test server\r\n"), "{text}");
    assert!(text.contains("Second banner line") && !text.contains("Not this one"), "{text}");
    assert!(text.lines().last().unwrap().starts_with("220 "), "{text}");

    let server = Server::start(&root, &["ftpd_banner=Hello from the test"]);
    assert_eq!(greeting(&server), (220, "220 Hello from the test\r\n".into()));
    let server = Server::start(&root, &[]);
    let (code, text) = greeting(&server);
    assert!(code == 220 && text.starts_with("220 (ftpd ") && text.ends_with(")\r\n"), "{text}");
}

#[test]
fn download_enable_no_refuses_retr() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), b"data\n").unwrap();
    let server = Server::start(dir.path(), &["download_enable=NO"]);
    let mut c = server.login();
    let (bytes, code, text) = c.transfer("RETR f.txt");
    assert_eq!((bytes.len(), code, text.as_str()), (0, 550, "550 Permission denied.\r\n"));
    c.cmd_ok("SIZE f.txt", 213); // only RETR is refused
    let (list, code, _) = c.transfer("NLST");
    assert_eq!((names(&list), code), (vec!["f.txt".to_string()], 226));
    assert!(c.cmd_ok("MLST f.txt", 250).contains(";perm=;"), "no `r` in perm");
    let out = run(Command::new("curl").args(["-sS", &server.url("/f.txt")]));
    assert!(!out.status.success() && out.stdout.is_empty());
}

#[test]
fn anon_world_readable_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let private = root.join("private.bin");
    std::fs::write(&private, b"owner only\n").unwrap();
    give_to_anon(&private); // so that only the world-readable rule stands in the way
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(root.join("public.bin"), b"everyone\n").unwrap();

    let server = Server::start(root, &[]);
    let mut c = server.login();
    let (bytes, code, text) = c.transfer("RETR private.bin");
    assert_eq!((bytes.len(), code, text.as_str()), (0, 550, "550 Failed to open file.\r\n"));
    let (bytes, code, _) = c.transfer("RETR public.bin");
    assert_eq!((bytes.as_slice(), code), (&b"everyone\n"[..], 226));

    let server = Server::start(root, &["anon_world_readable_only=NO"]);
    let mut c = server.login();
    let (bytes, code, _) = c.transfer("RETR private.bin");
    assert_eq!((bytes.as_slice(), code), (&b"owner only\n"[..], 226));
}

/// vsftpd applies `anon_world_readable_only` to directory listings too: an
/// anonymous LIST of a directory that is not world-readable sends nothing and
/// says `226 Transfer done (but failed to open directory).` (postlogin.c).
#[test]
fn anon_world_readable_only_covers_listings() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let private = root.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::write(private.join("inside.txt"), b"x\n").unwrap();
    give_to_anon(&private);
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let server = Server::start(root, &[]);
    let mut c = server.login();
    let (list, code, text) = c.transfer("LIST private");
    assert_eq!(
        (String::from_utf8_lossy(&list).into_owned(), code, text.as_str()),
        (String::new(), 226, "226 Transfer done (but failed to open directory).\r\n")
    );
    let server = Server::start(root, &["anon_world_readable_only=NO"]);
    let mut c = server.login();
    let (list, code, _) = c.transfer("NLST private");
    // NLST names carry the directory given, as in vsftpd (was: inside.txt).
    assert_eq!((names(&list), code), (vec!["private/inside.txt".to_string()], 226));
}

#[test]
fn ascii_download_enable_converts_lf_to_crlf() {
    let dir = tempfile::tempdir().unwrap();
    let text = b"one\ntwo\r\nthree\n\nend";
    std::fs::write(dir.path().join("t.txt"), text).unwrap();
    let converted = b"one\r\ntwo\r\nthree\r\n\r\nend";

    let server = Server::start(dir.path(), &["ascii_download_enable=YES"]);
    let mut c = server.login();
    c.cmd_ok("TYPE A", 200);
    assert_eq!(c.cmd_ok("SIZE t.txt", 213), format!("213 {}\r\n", converted.len()));
    let mut data = c.pasv_connect();
    let opening = c.cmd_ok("RETR t.txt", 150);
    assert_eq!(opening, format!("150 Opening ASCII mode data connection for t.txt ({} bytes).\r\n", text.len()));
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut data, &mut got).unwrap();
    assert_eq!((got.as_slice(), c.read_reply().0), (&converted[..], 226));
    c.cmd_ok("TYPE I", 200);
    assert_eq!(c.cmd_ok("SIZE t.txt", 213), format!("213 {}\r\n", text.len()));
    let (got, code, _) = c.transfer("RETR t.txt");
    assert_eq!((got.as_slice(), code), (&text[..], 226));
    // ftplib's retrlines (TYPE A) sees the lines.
    let out = python(&format!("{}f.retrlines('RETR t.txt', lambda l: print(repr(l)))\n", server.py_login()));
    assert_eq!(out, "'one'\n'two'\n'three'\n''\n'end'\n");

    let server = Server::start(dir.path(), &["ascii_download_enable=NO"]);
    let mut c = server.login();
    c.cmd_ok("TYPE A", 200);
    assert_eq!(c.cmd_ok("SIZE t.txt", 213), format!("213 {}\r\n", text.len()));
    let (got, code, _) = c.transfer("RETR t.txt");
    assert_eq!((got.as_slice(), code), (&text[..], 226), "TYPE A is byte-exact without the option");
}

/// Without `ascii_download_enable`, vsftpd announces a TYPE A download as what
/// it is: `150 Opening BINARY mode data connection for ...` (postlogin.c).
#[test]
fn unconverted_type_a_download_announces_binary() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.txt"), b"a\nb\n").unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.login();
    c.cmd_ok("TYPE A", 200);
    let _data = c.pasv_connect();
    assert_eq!(c.cmd_ok("RETR t.txt", 150), "150 Opening BINARY mode data connection for t.txt (4 bytes).\r\n");
}

#[test]
fn ascii_upload_enable_converts_crlf_to_lf() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_writable(root);
    let w = ["write_enable=YES", "anon_upload_enable=YES", "anon_other_write_enable=YES"];
    let sent = b"a\r\nb\r\nc\rd\r\n\r\nlast\r";
    let server = Server::start(root, &[&w[..], &["ascii_upload_enable=YES"]].concat());
    let mut c = server.login();
    c.cmd_ok("TYPE A", 200);
    let (_, code, _) = c.upload("STOR a.txt", sent);
    assert_eq!(code, 226);
    assert_eq!(std::fs::read(root.join("a.txt")).unwrap(), b"a\nb\nc\rd\n\nlast\r", "lone CRs are kept");
    c.cmd_ok("TYPE I", 200);
    let (_, code, _) = c.upload("STOR i.txt", sent);
    assert_eq!(code, 226);
    assert_eq!(std::fs::read(root.join("i.txt")).unwrap(), sent, "TYPE I is never converted");
    // A CRLF split across two network reads is still one line end.
    c.cmd_ok("TYPE A", 200);
    let mut data = c.pasv_connect();
    c.cmd_ok("STOR split.txt", 150);
    std::io::Write::write_all(&mut data, b"x\r").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::io::Write::write_all(&mut data, b"\ny\r\n").unwrap();
    drop(data);
    assert_eq!(c.read_reply().0, 226);
    assert_eq!(std::fs::read(root.join("split.txt")).unwrap(), b"x\ny\n");
    // ftplib's storlines sends CRLF line ends in TYPE A.
    let out = python(&format!(
        "import io\n{}print(f.storlines('STOR lines.txt', io.BytesIO(b'first\\nsecond\\n')))\n",
        server.py_login()
    ));
    assert_eq!(out, "226 Transfer complete.\n");
    assert_eq!(std::fs::read(root.join("lines.txt")).unwrap(), b"first\nsecond\n");

    let server = Server::start(root, &w);
    let mut c = server.login();
    c.cmd_ok("TYPE A", 200);
    let (_, code, _) = c.upload("STOR b.txt", sent);
    assert_eq!(code, 226);
    assert_eq!(std::fs::read(root.join("b.txt")).unwrap(), sent, "byte-exact without the option");
}

#[test]
fn use_sendfile_no_is_still_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.bin");
    random_file(&f, (8 << 20) + 12_345);
    let all = std::fs::read(&f).unwrap();
    let server = Server::start(dir.path(), &["use_sendfile=NO"]);
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let (got, code, _) = c.transfer("RETR r.bin");
    assert_eq!(code, 226);
    assert!(got == all, "download differs");
    c.cmd_ok("REST 1000001", 350);
    let (got, code, _) = c.transfer("RETR r.bin");
    assert_eq!(code, 226);
    assert!(got == all[1_000_001..], "REST download differs");
    let out = dir.path().join("curl.bin");
    run_ok(Command::new("curl").args(["-sS", "-o"]).arg(&out).arg(server.url("/r.bin")));
    assert_eq!(sha256_file(&out), sha256_file(&f));
}

#[test]
fn ls_recurse_enable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("top.txt"), b"t").unwrap();
    std::fs::write(root.join("a/mid.txt"), b"m").unwrap();
    std::fs::write(root.join("a/b/deep.txt"), b"d").unwrap();

    let server = Server::start(root, &["ls_recurse_enable=NO"]);
    let mut c = server.login();
    let (list, code, _) = c.transfer("LIST -R");
    let list = String::from_utf8(list).unwrap();
    assert_eq!(code, 226);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(!list.contains("mid.txt") && !list.contains("deep.txt"), "{list}");

    let server = Server::start(root, &["ls_recurse_enable=YES"]);
    let mut c = server.login();
    let (list, code, _) = c.transfer("LIST -R");
    let list = String::from_utf8(list).unwrap();
    assert_eq!(code, 226);
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines.iter().any(|l| l.ends_with(" top.txt")), "{list}");
    assert!(lines.iter().any(|l| l.ends_with(" mid.txt")), "{list}");
    assert!(lines.iter().any(|l| l.ends_with(" deep.txt")), "{list}");
    let mid_header = lines.iter().position(|l| l.ends_with("a:")).unwrap_or_else(|| panic!("{list}"));
    let deep_header = lines.iter().position(|l| l.ends_with("a/b:")).unwrap_or_else(|| panic!("{list}"));
    let mid = lines.iter().position(|l| l.ends_with(" mid.txt")).unwrap();
    let deep = lines.iter().position(|l| l.ends_with(" deep.txt")).unwrap();
    assert!(mid_header < mid && deep_header < deep, "each directory's entries under its header: {list}");
    // Without -R the option changes nothing.
    let (list, _, _) = c.transfer("LIST");
    assert_eq!(String::from_utf8(list).unwrap().lines().count(), 2);
}

/// `YYYYMMDDHHMMSS` and `HH:MM` of a UTC time, by Python's time module.
fn utc_strings(t: u64) -> (String, String) {
    let out = python(&format!("import time\nprint(time.strftime('%Y%m%d%H%M%S %H:%M', time.gmtime({t})))"));
    let (a, b) = out.trim().split_once(' ').unwrap();
    (a.to_string(), b.to_string())
}

#[test]
fn use_localtime_follows_tz() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.txt");
    std::fs::write(&f, b"f").unwrap();
    // Ten days ago, on a whole minute: recent enough for LIST to show the time.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let t = (now - 10 * 86_400) / 60 * 60;
    std::fs::File::options().write(true).open(&f).unwrap().set_modified(UNIX_EPOCH + Duration::from_secs(t)).unwrap();
    let (utc_mdtm, utc_hm) = utc_strings(t);
    // POSIX TZ "XYZ-5": five hours east of UTC, no zone files needed.
    let (local_mdtm, local_hm) = utc_strings(t + 5 * 3600);
    let env = [("TZ", "XYZ-5")];
    for (setting, mdtm, hm) in [("use_localtime=YES", &local_mdtm, &local_hm), ("use_localtime=NO", &utc_mdtm, &utc_hm)]
    {
        let server = Server::launch(dir.path(), &[setting], &Launch { env: &env, ..Launch::default() });
        let mut c = server.login();
        assert_eq!(c.cmd_ok("MDTM f.txt", 213), format!("213 {mdtm}\r\n"), "{setting}");
        let (list, _, _) = c.transfer("LIST f.txt");
        let list = String::from_utf8(list).unwrap();
        assert_eq!(list.split_whitespace().nth(7), Some(hm.as_str()), "{setting}: {list}");
        // RFC 3659 facts are always UTC.
        assert!(c.cmd_ok("MLST f.txt", 250).contains(&format!(";modify={utc_mdtm};")), "{setting}");
    }
}

#[test]
fn pasv_address_and_pasv_enable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), b"f").unwrap();
    let server = Server::start(dir.path(), &["pasv_address=1.2.3.4"]);
    let mut c = server.login();
    let text = c.cmd_ok("PASV", 227);
    assert!(text.starts_with("227 Entering Passive Mode (1,2,3,4,"), "{text}");
    // EPSV carries no address: the client uses the control connection's.
    let (bytes, code, _) = {
        let mut data = c.epsv_connect();
        c.cmd_ok("RETR f.txt", 150);
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut data, &mut b).unwrap();
        (b, c.read_reply().0, ())
    };
    assert_eq!((bytes.as_slice(), code), (&b"f"[..], 226));

    let server = Server::start(dir.path(), &["pasv_enable=NO"]);
    let mut c = server.login();
    assert_eq!(c.cmd_ok("PASV", 550), "550 Permission denied.\r\n");
    assert_eq!(c.cmd_ok("EPSV", 550), "550 Permission denied.\r\n");
    c.cmd_ok("RETR f.txt", 425);
    // Active mode still works, e.g. for curl -P.
    let got = run_ok(Command::new("curl").args(["-sS", "-P", "127.0.0.1", &server.url("/f.txt")]));
    assert_eq!(got, "f");
}

#[test]
fn settings_from_a_config_file_with_o_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("f.txt"), b"from the root\n").unwrap();
    let conf = dir.path().join("ftpd.conf");
    std::fs::write(
        &conf,
        "# a vsftpd.conf\nanonymous_enable=YES\nno_anon_password=YES\nftp_username=nobody\nlisten_address=127.0.0.1\n\
         ftpd_banner=From the file\nhide_ids=YES\ndownload_enable=NO\n",
    )
    .unwrap();
    let server = Server::launch(&root, &["download_enable=YES"], &Launch { config: Some(&conf), ..Launch::default() });
    let mut c = Ftp::connect(server.addr);
    assert_eq!(c.read_reply(), (220, "220 From the file\r\n".into()));
    c.cmd_ok("USER anonymous", 230);
    let (list, _, _) = c.transfer("LIST");
    let list = String::from_utf8(list).unwrap();
    assert!(list.contains(" ftp      ftp "), "hide_ids from the file: {list}");
    let (bytes, code, _) = c.transfer("RETR f.txt");
    assert_eq!((bytes.as_slice(), code), (&b"from the root\n"[..], 226), "-o comes after the file and wins");
    // The same file without the override.
    let server = Server::launch(&root, &[], &Launch { config: Some(&conf), ..Launch::default() });
    let mut c = server.login();
    let (_, code, _) = c.transfer("RETR f.txt");
    assert_eq!(code, 550);
}

/// No option: curl's resume (SIZE, then REST and RETR) on the default config.
#[test]
fn curl_resumes_a_download() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.bin");
    random_file(&f, 1 << 20);
    let server = Server::start(dir.path(), &[]);
    let out = dir.path().join("partial.bin");
    std::fs::write(&out, &std::fs::read(&f).unwrap()[..300_000]).unwrap();
    run_ok(Command::new("curl").args(["-sS", "-C", "-", "-o"]).arg(&out).arg(server.url("/r.bin")));
    assert_eq!(sha256_file(&out), sha256_file(&f), "curl -C - resumed download");
}
