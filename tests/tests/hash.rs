//! HASH (draft-bryan-ftpext-hash) and XSHA256: a file's digest from the
//! server, checked against Python's hashlib, with RETR's permissions.

use std::{
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use ftpd_tests::{Ftp, Server, python, random_file};

/// A logged-in anonymous session from `source` (another loopback address).
fn login_from(server: &Server, source: &str) -> Ftp {
    let mut c = Ftp::connect_from(server.addr, source.parse().expect("address"));
    c.read_reply();
    c.cmd_ok("USER anonymous", 230);
    c
}

/// `root/pub/big.bin` (5 MiB of random bytes), `root/pub/secret.bin`
/// (mode 0600, so anonymous users may not download it), `root/pub/x.deny`,
/// and the directory `root/pub/dir`.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("pub/dir")).expect("mkdir");
    random_file(&root.join("pub/big.bin"), 5 << 20);
    std::fs::write(root.join("pub/secret.bin"), b"not for anonymous\n").expect("write");
    std::fs::set_permissions(root.join("pub/secret.bin"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(root.join("pub/x.deny"), b"denied by name\n").expect("write");
    for d in [dir.path(), root.as_path(), &root.join("pub"), &root.join("pub/dir")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

#[test]
fn hash_and_xsha256_match_hashlib_with_retrs_permissions() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &["deny_file={*.deny}"]);
    let script = format!(
        r#"{login}import hashlib
data = open({big:?}, 'rb').read()
sha256 = hashlib.sha256(data).hexdigest()
sha512 = hashlib.sha512(data).hexdigest()
def ask(cmd):
    try:
        return f.sendcmd(cmd)
    except ftplib.all_errors as e:
        return str(e)
print(ask('XSHA256 pub/big.bin') == '213 ' + sha256)
print(ask('HASH pub/big.bin') == '213 SHA-256 0-%d %s pub/big.bin' % (len(data), sha256))
print(ask('OPTS HASH'))
print(ask('OPTS HASH sha-512'))
print(ask('HASH /pub/big.bin') == '213 SHA-512 0-%d %s /pub/big.bin' % (len(data), sha512))
print(ask('OPTS HASH MD4'))
print(ask('OPTS HASH'))
print(ask('XSHA256 pub/big.bin') == '213 ' + sha256)
for name in ['pub/secret.bin', 'pub/missing.bin', 'pub/dir', 'pub/x.deny', '../../etc/passwd']:
    print(name, ask('HASH ' + name), ask('XSHA256 ' + name))
print('HASH' in f.sendcmd('FEAT'))
f.quit()
"#,
        login = server.py_login(),
        big = root.join("pub/big.bin").display().to_string(),
    );
    let out = python(&script);
    let want = "True\nTrue\n200 SHA-256\n200 SHA-512\nTrue\n501 Unknown algorithm, current selection not changed\n\
                200 SHA-512\nTrue\n\
                pub/secret.bin 550 Failed to open file. 550 Failed to open file.\n\
                pub/missing.bin 550 Failed to open file. 550 Failed to open file.\n\
                pub/dir 550 Failed to open file. 550 Failed to open file.\n\
                pub/x.deny 550 Permission denied. 550 Permission denied.\n\
                ../../etc/passwd 550 Failed to open file. 550 Failed to open file.\n";
    assert!(out.starts_with(want), "got:\n{out}");
    assert!(out.ends_with("True\n"), "FEAT lacks HASH:\n{out}");
}

#[test]
fn hash_needs_login_and_download_enable() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &["download_enable=NO"]);
    let mut c = server.connect();
    assert_eq!(c.cmd("XSHA256 pub/big.bin"), (530, "530 Please login with USER and PASS.\r\n".into()));
    assert_eq!(c.cmd("HASH pub/big.bin").0, 530);
    c.cmd_ok("USER anonymous", 230);
    assert_eq!(c.cmd("HASH pub/big.bin"), (550, "550 Permission denied.\r\n".into()));
    assert_eq!(c.cmd("XSHA256 pub/big.bin"), (550, "550 Permission denied.\r\n".into()));
}

/// A big file is hashed off the event loop: other sessions, and this
/// one's ABOR, are answered while it runs.
#[test]
fn a_long_hash_blocks_nobody_and_abor_stops_it() {
    let dir = tree();
    let root = dir.path().join("root");
    // Sparse: 16 GiB of zeros that take no disk, and many seconds to hash.
    let huge = std::fs::File::create(root.join("pub/huge.bin")).expect("create");
    huge.set_len(16 << 30).expect("sparse file");
    std::fs::set_permissions(root.join("pub/huge.bin"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let server = Server::start(&root, &[]);
    let mut c = server.login();
    c.send_raw(b"HASH pub/huge.bin\r\n").expect("send");
    std::thread::sleep(Duration::from_millis(300));
    // Another client address is answered while it runs.
    let mut other = login_from(&server, "127.0.0.2");
    let asked = Instant::now();
    other.cmd_ok("NOOP", 200);
    other.cmd_ok("XSHA256 pub/big.bin", 213);
    assert!(asked.elapsed() < Duration::from_secs(3), "another session waited {:?}", asked.elapsed());
    // The same address has its one HASH running: told so at once.
    let mut same = server.login();
    let asked = Instant::now();
    assert_eq!(same.cmd_ok("HASH pub/dir/../big.bin", 450), "450 Too many HASH commands running, try again later.\r\n");
    assert!(asked.elapsed() < Duration::from_secs(1), "the busy reply took {:?}", asked.elapsed());
    let asked = Instant::now();
    c.send_raw(b"ABOR\r\n").expect("send");
    assert_eq!(c.read_reply(), (451, "451 Hash aborted.\r\n".into()));
    assert_eq!(c.read_reply(), (226, "226 ABOR successful.\r\n".into()));
    assert!(asked.elapsed() < Duration::from_secs(3), "ABOR took {:?}", asked.elapsed());
    c.cmd_ok("NOOP", 200);
}

/// Four sessions from one address hashing huge files cannot keep another
/// address's HASH of a small file waiting: one address runs one HASH at a
/// time, the others are told 450 at once instead of queueing; the server's
/// four slots hold one for each of four addresses, then 450 too.
#[test]
fn one_address_cannot_monopolise_hash() {
    let dir = tree();
    let root = dir.path().join("root");
    let huge = std::fs::File::create(root.join("pub/huge.bin")).expect("create");
    huge.set_len(16 << 30).expect("sparse file");
    std::fs::set_permissions(root.join("pub/huge.bin"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(root.join("pub/six.txt"), b"sixby\n").expect("write");
    let server = Server::start(&root, &[]);
    let mut hogs: Vec<Ftp> = (0..4).map(|_| login_from(&server, "127.0.0.3")).collect();
    hogs[0].send_raw(b"HASH pub/huge.bin\r\n").expect("send");
    std::thread::sleep(Duration::from_millis(300));
    for h in &mut hogs[1..] {
        let asked = Instant::now();
        assert_eq!(h.cmd("HASH pub/huge.bin").0, 450, "a second HASH from the same address");
        assert!(asked.elapsed() < Duration::from_secs(1), "the busy reply took {:?}", asked.elapsed());
    }
    let mut small = login_from(&server, "127.0.0.4");
    let asked = Instant::now();
    let reply = small.cmd_ok("HASH pub/six.txt", 213);
    assert!(reply.contains("SHA-256 0-6 "), "{reply}");
    assert!(asked.elapsed() < Duration::from_secs(1), "a small file from another address took {:?}", asked.elapsed());
    // The server's limit: four addresses hashing at once, a fifth is told 450.
    let mut more: Vec<Ftp> = ["127.0.0.5", "127.0.0.6", "127.0.0.7"].iter().map(|ip| login_from(&server, ip)).collect();
    for m in &mut more {
        m.send_raw(b"HASH pub/huge.bin\r\n").expect("send");
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut fifth = login_from(&server, "127.0.0.8");
    assert_eq!(fifth.cmd("HASH pub/six.txt").0, 450, "the server runs four at a time");
    // An ABOR gives the slot back.
    hogs[0].send_raw(b"ABOR\r\n").expect("send");
    assert_eq!(hogs[0].read_reply().0, 451);
    assert_eq!(hogs[0].read_reply().0, 226);
    assert_eq!(fifth.cmd("HASH pub/six.txt").0, 213, "a slot came back");
    for m in &mut more {
        m.send_raw(b"ABOR\r\n").expect("send");
        assert_eq!(m.read_reply().0, 451);
        assert_eq!(m.read_reply().0, 226);
    }
}
