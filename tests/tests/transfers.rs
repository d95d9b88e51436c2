//! Transfers under control: ABOR and STAT while data flows, active mode
//! (PORT/EPRT) with vsftpd's bounce defence, and IPv6 (EPSV, EPRT |2|) with
//! raw sockets, curl and Python's ftplib.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use ftpd_tests::{
    Ftp, Launch, Listen, Server, accept_within, eprt_arg, make_writable, port_arg, python, random_file, run, run_ok,
    sha256_file,
};

const BIG: u64 = 64 << 20;

/// `big.bin` (64 MiB random), `pub/a.txt` ("alpha\n").
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    random_file(&dir.path().join("big.bin"), BIG);
    std::fs::create_dir(dir.path().join("pub")).expect("mkdir");
    std::fs::write(dir.path().join("pub/a.txt"), b"alpha\n").expect("write");
    dir
}

/// ftplib sends `ABOR\r\n` as urgent data (MSG_OOB), as RFC 959 suggests.
#[test]
fn ftplib_abort_during_retr() {
    let dir = tree();
    let server = Server::start(dir.path(), &[]);
    let out = python(&format!(
        r#"{}f.sock.settimeout(10)
f.voidcmd('TYPE I')
conn = f.transfercmd('RETR big.bin')
assert len(conn.recv(65536)) > 0
resp = f.abort()
print(resp)
if resp.startswith('426'):
    print(f.getresp())
conn.close()
print(f.pwd())
print(f.voidcmd('NOOP'))
print(f.size('big.bin'))
"#,
        server.py_login()
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("426 ") && lines[1].starts_with("226 "), "RFC 959: 426, then 226: {out}");
    assert_eq!(lines[2..], ["/", "200 NOOP ok.", &BIG.to_string()]);
}

#[test]
fn raw_abor_during_retr_and_stor() {
    let dir = tree();
    make_writable(dir.path());
    let server = Server::start(dir.path(), &["write_enable=YES", "anon_upload_enable=YES"]);
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    // Plain ABOR, then ABOR behind Telnet IP/DM as clients send it.
    for abor in [&b"ABOR\r\n"[..], b"\xff\xf4\xff\xf2ABOR\r\n"] {
        let mut data = c.pasv_connect();
        c.cmd_ok("RETR big.bin", 150);
        let mut buf = vec![0u8; 65536];
        data.read_exact(&mut buf).unwrap();
        c.send_raw(abor).unwrap();
        assert_eq!(c.read_reply().0, 426);
        assert_eq!(c.read_reply().0, 226);
        // The data connection ends long before the file does.
        let mut rest = Vec::new();
        let _ = data.read_to_end(&mut rest);
        assert!(((65536 + rest.len()) as u64) < BIG, "the whole file came after ABOR");
        assert_eq!(c.cmd_ok("PWD", 257), "257 \"/\" is the current directory\r\n");
    }
    // ABOR of an upload.
    let mut data = c.pasv_connect();
    c.cmd_ok("STOR up.bin", 150);
    data.write_all(&[7u8; 100_000]).unwrap();
    c.send_raw(b"ABOR\r\n").unwrap();
    assert_eq!(c.read_reply().0, 426);
    assert_eq!(c.read_reply().0, 226);
    c.cmd_ok("NOOP", 200);
    // ABOR with nothing running.
    assert_eq!(c.cmd_ok("ABOR", 225), "225 No transfer to ABOR.\r\n");
    // ABOR while the server waits for the passive connection.
    c.cmd_ok("PASV", 227);
    c.send_raw(b"RETR pub/a.txt\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    c.send_raw(b"ABOR\r\n").unwrap();
    let (code, text) = c.read_reply();
    assert!(code == 225 || code == 226, "{text}");
    c.cmd_ok("NOOP", 200);
}

/// vsftpd's texts for an aborted download: the transfer's `426 Failure
/// writing network stream.`, then check_abor()'s `226 ABOR successful.`
/// (postlogin.c).
#[test]
fn abor_replies_use_vsftpd_texts() {
    let dir = tree();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let mut data = c.pasv_connect();
    c.cmd_ok("RETR big.bin", 150);
    let mut buf = vec![0u8; 65536];
    data.read_exact(&mut buf).unwrap();
    c.send_raw(b"ABOR\r\n").unwrap();
    let first = c.read_reply();
    let second = c.read_reply();
    assert_eq!(first, (426, "426 Failure writing network stream.\r\n".into()));
    assert_eq!(second, (226, "226 ABOR successful.\r\n".into()));
}

#[test]
fn stat_during_a_slow_download_then_the_rest_arrives() {
    let dir = tree();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let mut data = c.pasv_connect();
    c.cmd_ok("RETR big.bin", 150);
    let mut got = vec![0u8; 65536];
    data.read_exact(&mut got).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stat = c.cmd_ok("STAT", 211);
    assert!(stat.starts_with("211-FTP server status:\r\n") && stat.ends_with("211 End of status\r\n"), "{stat}");
    let moved: u64 = stat
        .split("Transfer in progress: ")
        .nth(1)
        .and_then(|t| t.strip_suffix(" bytes transferred\r\n211 End of status\r\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stat}"));
    assert!((65536..BIG).contains(&moved), "{stat}");
    // Other commands wait until the transfer is over, and are answered in order.
    c.send_raw(b"NOOP\r\n").unwrap();
    data.read_to_end(&mut got).unwrap();
    assert_eq!(got.len() as u64, BIG);
    assert_eq!(c.read_reply(), (226, "226 Transfer complete.\r\n".into()));
    assert_eq!(c.read_reply(), (200, "200 NOOP ok.\r\n".into()));
    let want = std::fs::read(dir.path().join("big.bin")).unwrap();
    assert!(got == want, "download differs after STAT");
    // STAT with no transfer is the normal status.
    assert!(!c.cmd_ok("STAT", 211).contains("Transfer in progress"));
}

/// Waits up to 10 s for the server's active-mode connection.
fn accept(l: &TcpListener) -> TcpStream {
    let s = accept_within(l, Duration::from_secs(10)).expect("an active-mode connection from the server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// An active-mode download: `setup` (PORT/EPRT) must have pointed at `l`.
fn active_get(c: &mut Ftp, l: &TcpListener, line: &str) -> (Vec<u8>, u16) {
    let (code, text) = c.cmd(line);
    assert_eq!(code, 150, "{line}: {text}");
    let mut data = accept(l);
    let mut buf = Vec::new();
    data.read_to_end(&mut buf).unwrap();
    (buf, c.read_reply().0)
}

#[test]
fn port_and_eprt_to_the_client_itself() {
    let dir = tree();
    make_writable(dir.path());
    let server = Server::start(dir.path(), &["write_enable=YES", "anon_upload_enable=YES"]);
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let me = l.local_addr().unwrap();
    assert!(me.port() >= 1024);

    let text = c.cmd_ok(&format!("PORT {}", port_arg(me)), 200);
    assert_eq!(text, "200 PORT command successful. Consider using PASV.\r\n");
    let (list, code) = active_get(&mut c, &l, "LIST");
    let list = String::from_utf8(list).unwrap();
    assert_eq!(code, 226);
    assert!(list.contains(" big.bin\r\n") && list.contains(" pub\r\n"), "{list}");

    c.cmd_ok(&format!("PORT {}", port_arg(me)), 200);
    let (bytes, code) = active_get(&mut c, &l, "RETR big.bin");
    assert_eq!((bytes.len() as u64, code), (BIG, 226));
    assert!(bytes == std::fs::read(dir.path().join("big.bin")).unwrap());

    let text = c.cmd_ok(&format!("EPRT {}", eprt_arg(me)), 200);
    assert_eq!(text, "200 EPRT command successful. Consider using EPSV.\r\n");
    let (bytes, code) = active_get(&mut c, &l, "RETR pub/a.txt");
    assert_eq!((bytes.as_slice(), code), (&b"alpha\n"[..], 226));

    // An active-mode upload.
    c.cmd_ok(&format!("EPRT {}", eprt_arg(me)), 200);
    c.cmd_ok("STOR up.txt", 150);
    let mut data = accept(&l);
    data.write_all(b"sent actively").unwrap();
    drop(data);
    assert_eq!(c.read_reply().0, 226);
    assert_eq!(std::fs::read(dir.path().join("up.txt")).unwrap(), b"sent actively");

    // A PORT is used once.
    c.cmd_ok(&format!("PORT {}", port_arg(me)), 200);
    let _ = active_get(&mut c, &l, "RETR pub/a.txt");
    assert_eq!(c.cmd_ok("RETR pub/a.txt", 425), "425 Use PORT or PASV first.\r\n");
    // PASV after PORT replaces it, and the other way round.
    c.cmd_ok(&format!("PORT {}", port_arg(me)), 200);
    let (bytes, code, _) = c.transfer("RETR pub/a.txt");
    assert_eq!((bytes.as_slice(), code), (&b"alpha\n"[..], 226));
}

#[test]
fn real_clients_in_active_mode() {
    let dir = tree();
    let server = Server::start(dir.path(), &[]);
    let url = server.url("/big.bin");
    let want = sha256_file(&dir.path().join("big.bin"));
    for extra in [&[][..], &["--disable-eprt"][..]] {
        let out = dir.path().join("curl.bin");
        run_ok(
            Command::new("curl")
                .args(["-sS", "--max-time", "60", "-P", "127.0.0.1"])
                .args(extra)
                .arg("-o")
                .arg(&out)
                .arg(&url),
        );
        assert_eq!(sha256_file(&out), want, "curl -P {extra:?}");
    }
    let out = python(&format!(
        "import hashlib\n{}f.set_pasv(False)\nh = hashlib.sha256()\nprint(f.retrbinary('RETR big.bin', h.update))\nprint(h.hexdigest())\nprint(f.nlst('pub'))\n",
        server.py_login()
    ));
    // NLST of a directory names its entries with the directory, as vsftpd (was: a.txt).
    assert_eq!(out, format!("226 Transfer complete.\n{want}\n['pub/a.txt']\n"));
}

#[test]
fn port_bounce_defence_and_malformed_arguments() {
    let dir = tree();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.login();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let illegal = "500 Illegal PORT command.\r\n";
    // Another IP than the client's (the control connection comes from 127.0.0.1).
    let other = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), port));
    assert_eq!(c.cmd_ok(&format!("PORT {}", port_arg(other)), 500), illegal);
    assert_eq!(c.cmd_ok("PORT 10,1,2,3,200,10", 500), illegal);
    // A privileged port.
    assert_eq!(c.cmd_ok("PORT 127,0,0,1,0,21", 500), illegal);
    assert_eq!(c.cmd_ok("PORT 127,0,0,1,3,255", 500), illegal, "port 1023");
    // Malformed.
    for bad in [
        "127,0,0,1,200",
        "127,0,0,1,200,10,7",
        "127,0,0,256,200,10",
        "127,0,0,1,200,300",
        "a,b,c,d,e,f",
        "127.0.0.1:51210",
        "",
        "-1,0,0,1,200,10",
    ] {
        assert_eq!(c.cmd_ok(&format!("PORT {bad}"), 500), illegal, "PORT {bad}");
    }
    assert_eq!(c.cmd_ok(&format!("EPRT |1|127.0.0.2|{port}|"), 500), "500 Illegal EPRT command.\r\n");
    assert_eq!(c.cmd_ok("EPRT |1|127.0.0.1|21|", 500), "500 Illegal EPRT command.\r\n");
    // An IPv6 target from an IPv4 client: RFC 2428's 522 (was 500).
    assert_eq!(c.cmd_ok(&format!("EPRT |2|::1|{port}|"), 522), "522 Network protocol not supported, use (1)\r\n");
    for bad in ["|1|127.0.0.1|", "|1|127.0.0.1|x|", "|1|300.0.0.1|5000|", "1|127.0.0.1|5000|"] {
        c.cmd_ok(&format!("EPRT {bad}"), 500);
    }
    c.cmd_ok("EPRT |3|127.0.0.1|5000|", 522); // an unknown network protocol (was 500)
    // After all that, no data connection is set up.
    assert_eq!(c.cmd_ok("RETR pub/a.txt", 425), "425 Use PORT or PASV first.\r\n");
    // A refused PORT also cancels an earlier good one.
    c.cmd_ok(&format!("PORT {}", port_arg(l.local_addr().unwrap())), 200);
    c.cmd_ok(&format!("PORT {}", port_arg(other)), 500);
    c.cmd_ok("RETR pub/a.txt", 425);
}

#[test]
fn port_promiscuous_allows_another_ip() {
    let dir = tree();
    let server = Server::start(dir.path(), &["port_promiscuous=YES"]);
    let mut c = server.login();
    // 127.0.0.2 is another address than the control connection's 127.0.0.1.
    let l = TcpListener::bind("127.0.0.2:0").unwrap();
    c.cmd_ok(&format!("PORT {}", port_arg(l.local_addr().unwrap())), 200);
    let (bytes, code) = active_get(&mut c, &l, "RETR pub/a.txt");
    assert_eq!((bytes.as_slice(), code), (&b"alpha\n"[..], 226));
    c.cmd_ok(&format!("EPRT {}", eprt_arg(l.local_addr().unwrap())), 200);
    let (bytes, code) = active_get(&mut c, &l, "RETR pub/a.txt");
    assert_eq!((bytes.as_slice(), code), (&b"alpha\n"[..], 226));
    c.cmd_ok("PORT 127,0,0,1,0,21", 200); // privileged ports too
}

/// vsftpd does not dispatch PORT/EPRT at all with `port_enable=NO` (nor after
/// EPSV ALL): they fall through to `550 Permission denied.`
#[test]
fn port_enable_no_refuses_active_mode() {
    let dir = tree();
    let server = Server::start(dir.path(), &["port_enable=NO"]);
    let mut c = server.login();
    assert!(!c.cmd_ok("FEAT", 211).contains(" EPRT\r\n"), "EPRT advertised with port_enable=NO");
    let me = c.local_addr();
    let target = SocketAddr::new(me.ip(), 50_000);
    let (code, text) = c.cmd(&format!("PORT {}", port_arg(target)));
    let (ecode, etext) = c.cmd(&format!("EPRT {}", eprt_arg(target)));
    assert_ne!(code, 200, "PORT accepted with port_enable=NO");
    assert_ne!(ecode, 200, "EPRT accepted with port_enable=NO");
    c.cmd_ok("RETR pub/a.txt", 425);
    let (bytes, pcode, _) = c.transfer("RETR pub/a.txt");
    assert_eq!((bytes.as_slice(), pcode), (&b"alpha\n"[..], 226), "passive mode still works");
    assert_eq!((code, text.as_str()), (550, "550 Permission denied.\r\n"), "PORT");
    assert_eq!((ecode, etext.as_str()), (550, "550 Permission denied.\r\n"), "EPRT");
    let mut c = server.login();
    c.cmd_ok("EPSV ALL", 200);
    assert_eq!(c.cmd(&format!("PORT {}", port_arg(target))), (550, "550 Permission denied.\r\n".into()));
}

fn v6_available() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn ipv6_epsv_and_eprt() {
    assert!(v6_available(), "this test needs IPv6 on lo (::1)");
    let dir = tree();
    let server = Server::launch(dir.path(), &[], &Launch { listen: Listen::V6Loopback, ..Launch::default() });
    assert_eq!(server.addr.ip().to_string(), "::1");
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    assert!(c.cmd_ok("STAT", 211).contains("Connected to ::1\r\n"));
    // RFC 2428's 522 names what this connection can use: passive data on the
    // control connection's own address, active data to either protocol.
    assert_eq!(c.cmd_ok("EPSV 1", 522), "522 Network protocol not supported, use (2)\r\n");
    assert_eq!(c.cmd_ok("EPRT |3|x|5000|", 522), "522 Network protocol not supported, use (1,2)\r\n");
    c.cmd_ok("EPSV 2", 229);
    // EPSV and a download.
    let mut data = c.epsv_connect();
    c.cmd_ok("RETR pub/a.txt", 150);
    let mut got = Vec::new();
    data.read_to_end(&mut got).unwrap();
    assert_eq!((got.as_slice(), c.read_reply().0), (&b"alpha\n"[..], 226));
    // EPRT |2| to the client's own address.
    let l = TcpListener::bind("[::1]:0").unwrap();
    let me = l.local_addr().unwrap();
    let text = c.cmd_ok(&format!("EPRT {}", eprt_arg(me)), 200);
    assert_eq!(text, "200 EPRT command successful. Consider using EPSV.\r\n");
    let (bytes, code) = active_get(&mut c, &l, "RETR big.bin");
    assert_eq!((bytes.len() as u64, code), (BIG, 226));
    c.cmd_ok(&format!("EPRT {}", eprt_arg(me)), 200);
    let (list, code) = active_get(&mut c, &l, "NLST");
    assert_eq!((String::from_utf8(list).unwrap().as_str(), code), ("big.bin\r\npub\r\n", 226));
    // An IPv4 target, or a privileged port, is another host as far as the bounce defence goes.
    c.cmd_ok(&format!("EPRT |1|127.0.0.1|{}|", me.port()), 500);
    c.cmd_ok("EPRT |2|::1|21|", 500);
    c.cmd_ok("PORT 127,0,0,1,200,10", 500);
}

#[test]
fn ipv6_with_curl_and_ftplib() {
    assert!(v6_available(), "this test needs IPv6 on lo (::1)");
    let dir = tree();
    let server = Server::launch(dir.path(), &[], &Launch { listen: Listen::V6Loopback, ..Launch::default() });
    let url = format!("ftp://[::1]:{}/big.bin", server.addr.port());
    let want = sha256_file(&dir.path().join("big.bin"));
    for extra in [&[][..], &["-P", "::1"][..]] {
        let out = dir.path().join("got.bin");
        run_ok(Command::new("curl").args(["-sS", "-g", "--max-time", "60"]).args(extra).arg("-o").arg(&out).arg(&url));
        assert_eq!(sha256_file(&out), want, "curl {extra:?}");
    }
    let listing = run_ok(Command::new("curl").args(["-sS", "-g", &format!("ftp://[::1]:{}/pub/", server.addr.port())]));
    assert!(listing.ends_with(" a.txt\n"), "{listing}");
    let out = python(&format!(
        "import hashlib\n{}print(f.af == __import__('socket').AF_INET6)\nfor pasv in (True, False):\n    f.set_pasv(pasv)\n    h = hashlib.sha256()\n    print(f.retrbinary('RETR big.bin', h.update))\n    print(h.hexdigest())\n",
        server.py_login()
    ));
    assert_eq!(out, format!("True\n226 Transfer complete.\n{want}\n226 Transfer complete.\n{want}\n"));
}

/// `listen_address6=::` takes IPv4 clients too (as v4-mapped addresses);
/// to them the server looks like an IPv4 server.
#[test]
fn dual_stack_serves_ipv4_clients() {
    assert!(v6_available(), "this test needs IPv6");
    let dir = tree();
    let server = Server::launch(dir.path(), &[], &Launch { listen: Listen::DualStack, ..Launch::default() });
    let mut c = server.login();
    assert!(c.cmd_ok("STAT", 211).contains("Connected to 127.0.0.1\r\n"));
    let text = c.cmd_ok("PASV", 227);
    assert!(text.starts_with("227 Entering Passive Mode (127,0,0,1,"), "{text}");
    c.cmd_ok("ABOR", 225);
    let (bytes, code, _) = c.transfer("RETR pub/a.txt");
    assert_eq!((bytes.as_slice(), code), (&b"alpha\n"[..], 226));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    c.cmd_ok(&format!("PORT {}", port_arg(l.local_addr().unwrap())), 200);
    let (bytes, code) = active_get(&mut c, &l, "RETR pub/a.txt");
    assert_eq!((bytes.as_slice(), code), (&b"alpha\n"[..], 226));
    let got = run_ok(Command::new("curl").args(["-sS", &server.url("/pub/a.txt")]));
    assert_eq!(got, "alpha\n");
    // And IPv6 clients on the same port.
    let v6 = run(Command::new("curl").args(["-sS", "-g", &format!("ftp://[::1]:{}/pub/a.txt", server.addr.port())]));
    assert_eq!(String::from_utf8_lossy(&v6.stdout), "alpha\n", "{}", String::from_utf8_lossy(&v6.stderr));
}
