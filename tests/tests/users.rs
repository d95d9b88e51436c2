//! Privileged: real local users (created here with useradd, removed after),
//! PAM logins, virtual users, confinement and per-user config, with the
//! process split that ftpd uses when started as root.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use ftpd_tests::{Server, privileged, run, run_ok};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A system user with a home and a password, deleted (with its home) on drop.
struct LocalUser {
    name: String,
    password: String,
    home: PathBuf,
    uid: u32,
}

impl LocalUser {
    fn new(shell: &str) -> Self {
        let name = format!("ftpdt{}x{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::Relaxed));
        let home = PathBuf::from(format!("/home/{name}"));
        run_ok(Command::new("useradd").args(["-m", "-d"]).arg(&home).args(["-s", shell, &name]));
        let u = Self { password: format!("pw-{name}-Secret"), uid: 0, home, name };
        let mut chpasswd = Command::new("chpasswd").stdin(Stdio::piped()).spawn().expect("chpasswd");
        use std::io::Write;
        writeln!(chpasswd.stdin.as_mut().unwrap(), "{}:{}", u.name, u.password).unwrap();
        assert!(chpasswd.wait().unwrap().success());
        let mut u = u;
        u.uid = std::fs::metadata(&u.home).unwrap().uid();
        u
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["-r", "-f", &self.name]).stderr(Stdio::null()).status();
    }
}

fn ftplib(server: &Server, user: &str, password: &str, body: &str) -> String {
    let code = format!(
        "import ftplib, io\nf = ftplib.FTP()\nf.connect('{}', {}, timeout=20)\ntry:\n    print(f.login({user:?}, {password:?}))\nexcept ftplib.error_perm as e:\n    print('ERR', e)\n    raise SystemExit(0)\n{body}\n",
        server.addr.ip(),
        server.addr.port()
    );
    ftpd_tests::python(&code)
}

fn served() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn settings<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["local_enable=YES", "write_enable=YES"];
    v.extend_from_slice(extra);
    v
}

#[test]
#[ignore = "privileged: creates system users (cargo xtask test as root)"]
fn local_user_logs_in_with_pam_and_acts_as_itself() {
    assert!(privileged());
    let u = LocalUser::new("/usr/sbin/nologin");
    std::fs::write(u.home.join("mine.txt"), b"mine\n").unwrap();
    std::fs::write(u.home.join("roots.txt"), b"secret\n").unwrap();
    std::fs::set_permissions(u.home.join("roots.txt"), std::fs::Permissions::from_mode(0o600)).unwrap(); // root-owned
    run_ok(Command::new("chown").arg(format!("{}:", u.name)).arg(u.home.join("mine.txt")));
    let anon = served();
    let server = Server::start(anon.path(), &settings(&[]));
    let out = ftplib(
        &server,
        &u.name,
        &u.password,
        "print(f.pwd())\nprint(f.storbinary('STOR up.bin', io.BytesIO(b'x'*1000)))\nb = io.BytesIO(); f.retrbinary('RETR mine.txt', b.write); print(b.getvalue())\ntry:\n    f.retrbinary('RETR roots.txt', print)\nexcept ftplib.error_perm as e:\n    print('DENIED', e)\nprint(f.sendcmd('STAT').splitlines()[2])\nf.quit()",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "230 Login successful.", "{out}\n{}", server.log());
    // Not confined: the real path of the home, as vsftpd shows it.
    assert_eq!(lines[1], u.home.display().to_string());
    assert_eq!(lines[2], "226 Transfer complete.");
    assert_eq!(lines[3], "b'mine\\n'");
    assert!(lines[4].starts_with("DENIED 550"), "{out}");
    assert_eq!(lines[5].trim(), format!("Logged in as {}", u.name));
    let meta = std::fs::metadata(u.home.join("up.bin")).unwrap();
    assert_eq!((meta.uid(), meta.len()), (u.uid, 1000), "upload must be owned by the user");
    assert_eq!(meta.mode() & 0o777, 0o600, "local_umask=077 default");
    // Wrong password, unknown user: the same 530.
    assert!(ftplib(&server, &u.name, "wrong", "").starts_with("ERR 530 Login incorrect."));
    assert!(ftplib(&server, "no-such-user-xyz", "x", "").starts_with("ERR 530 Login incorrect."));
    // The network-facing process is not root.
    let log = server.log();
    assert!(log.contains("front process running unprivileged"), "{log}");
}

#[test]
#[ignore = "privileged: creates system users (cargo xtask test as root)"]
fn chroot_local_user_confines_and_refuses_writable_roots() {
    assert!(privileged());
    let u = LocalUser::new("/bin/bash");
    std::fs::write(u.home.join("f.txt"), b"f\n").unwrap();
    let anon = served();
    // useradd's home is owned by (so writable by) the user: refused by default.
    let server = Server::start(anon.path(), &settings(&["chroot_local_user=YES"]));
    let out = ftplib(&server, &u.name, &u.password, "");
    assert!(out.starts_with("ERR 530 OOPS: vsftpd: refusing to run with writable root inside chroot()"), "{out}");
    drop(server);
    let server = Server::start(anon.path(), &settings(&["chroot_local_user=YES", "allow_writeable_chroot=YES"]));
    let out = ftplib(
        &server,
        &u.name,
        &u.password,
        "print(f.pwd())\nf.cwd('../../..')\nprint(f.pwd())\nprint(sorted(f.nlst()))\ntry:\n    f.size('/etc/passwd')\nexcept ftplib.error_perm as e:\n    print('DENIED', e)\nf.quit()",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..4], ["230 Login successful.", "/", "/", "['f.txt']"], "{out}");
    assert!(lines[4].starts_with("DENIED 550"), "{out}");
    // chroot_list_enable: listed users are the exception.
    let list = anon.path().join("chroot_list");
    std::fs::write(&list, format!("{}\n", u.name)).unwrap();
    drop(server);
    let l = format!("chroot_list_file={}", list.display());
    let server = Server::start(anon.path(), &settings(&["chroot_local_user=YES", "chroot_list_enable=YES", &l]));
    let out = ftplib(&server, &u.name, &u.password, "print(f.pwd())");
    assert_eq!(out.lines().nth(1), Some(u.home.to_str().unwrap()), "{out}");
}

#[test]
#[ignore = "privileged: creates system users (cargo xtask test as root)"]
fn userlist_check_shell_and_user_config_dir() {
    assert!(privileged());
    let u = LocalUser::new("/usr/sbin/nologin");
    let anon = served();
    let list = anon.path().join("user_list");
    std::fs::write(&list, format!("{}\n", u.name)).unwrap();
    let l = format!("userlist_file={}", list.display());
    // Denied at USER, before any password is sent.
    let server = Server::start(anon.path(), &settings(&["userlist_enable=YES", &l]));
    let mut c = server.connect();
    assert_eq!(c.cmd(&format!("USER {}", u.name)), (530, "530 Permission denied.\r\n".into()));
    c.cmd_ok("USER someone-else", 331);
    drop(server);
    // userlist_deny=NO: only listed users.
    let server = Server::start(anon.path(), &settings(&["userlist_enable=YES", "userlist_deny=NO", &l]));
    let mut c = server.connect();
    c.cmd_ok(&format!("USER {}", u.name), 331);
    c.cmd_ok("USER someone-else", 530);
    drop(server);
    // check_shell: nologin is not in /etc/shells.
    let server = Server::start(anon.path(), &settings(&["check_shell=YES"]));
    assert!(ftplib(&server, &u.name, &u.password, "").starts_with("ERR 530"));
    drop(server);
    // user_config_dir: this user may not write and starts in local_root.
    let confdir = anon.path().join("users.d");
    std::fs::create_dir(&confdir).unwrap();
    let sub = u.home.join("pub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(confdir.join(&u.name), format!("write_enable=NO\nlocal_root={}\n", sub.display())).unwrap();
    let c = format!("user_config_dir={}", confdir.display());
    let server = Server::start(anon.path(), &settings(&[&c]));
    let out = ftplib(
        &server,
        &u.name,
        &u.password,
        "print(f.pwd())\ntry:\n    f.storbinary('STOR x', io.BytesIO(b'x'))\nexcept ftplib.error_perm as e:\n    print('DENIED', e)",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "230 Login successful.", "{out}");
    assert_eq!(lines[1], sub.display().to_string());
    assert!(lines[2].starts_with("DENIED 550"), "{out}");
}

#[test]
#[ignore = "privileged: runs file workers as another user (cargo xtask test as root)"]
fn virtual_users_act_as_guest_username() {
    assert!(privileged());
    let anon = served();
    let vroot = anon.path().join("vroot");
    std::fs::create_dir(&vroot).unwrap();
    std::fs::set_permissions(&vroot, std::fs::Permissions::from_mode(0o777)).unwrap();
    let users = anon.path().join("vusers");
    let set = |user: &str, pw: &str| {
        let mut p = Command::new(ftpd_tests::ftpd_bin())
            .args(["passwd"])
            .arg(&users)
            .arg(user)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(p.stdin.as_mut().unwrap(), "{pw}").unwrap();
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    set("vince", "first");
    set("vera", "other");
    set("vince", "second");
    let text = std::fs::read_to_string(&users).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.lines().all(|l| l.contains(":$argon2id$")), "{text}");
    let vu = format!("virtual_users_file={}", users.display());
    let lr = format!("local_root={}", vroot.display());
    let server = Server::start(
        anon.path(),
        &settings(&[
            "guest_enable=YES",
            "guest_username=nobody",
            &vu,
            &lr,
            "allow_writeable_chroot=YES",
            "virtual_use_local_privs=YES",
        ]),
    );
    assert!(ftplib(&server, "vince", "first", "").starts_with("ERR 530"));
    let out = ftplib(&server, "vince", "second", "print(f.pwd())\nprint(f.storbinary('STOR v.txt', io.BytesIO(b'v')))");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["230 Login successful.", "/", "226 Transfer complete."], "{out}\n{}", server.log());
    let meta = std::fs::metadata(vroot.join("v.txt")).unwrap();
    assert_eq!(meta.uid(), 65534, "virtual users' files belong to guest_username");
    // A users file that turns malformed keeps the users read before, and
    // the log says why.
    std::fs::write(&users, "garbage\n").unwrap();
    assert!(ftplib(&server, "vince", "second", "").starts_with("230"));
    assert!(server.log().contains("expected user:hash"), "{}", server.log());
}

#[test]
fn passwd_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let f: &Path = &dir.path().join("u");
    let out = run(Command::new(ftpd_tests::ftpd_bin()).arg("passwd").arg(f).arg("bad:name").stdin(Stdio::null()));
    assert_eq!(out.status.code(), Some(2));
    let out = run(Command::new(ftpd_tests::ftpd_bin()).arg("passwd").arg(f));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: ftpd passwd FILE USER"));
}

#[test]
#[ignore = "privileged: binds port 20 (cargo xtask test as root)"]
fn connect_from_port_20_uses_the_data_port() {
    assert!(privileged());
    let anon = served();
    std::fs::write(anon.path().join("f.txt"), b"port twenty").unwrap();
    let port = ftpd_tests::free_port();
    let server = Server::start(anon.path(), &["connect_from_port_20=YES", &format!("ftp_data_port={port}")]);
    let mut c = server.login();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    c.cmd_ok(&format!("PORT 127,0,0,1,{},{}", p >> 8, p & 0xff), 200);
    c.send_raw(b"RETR f.txt\r\n").unwrap();
    let (mut s, from) = l.accept().unwrap();
    assert_eq!(from.port(), port, "the data connection must come from ftp_data_port");
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut got).unwrap();
    assert_eq!(got, b"port twenty");
    assert_eq!(c.read_reply().0, 150);
    assert_eq!(c.read_reply().0, 226);
}

#[test]
#[ignore = "privileged: runs file workers as another user (cargo xtask test as root)"]
fn virtual_users_get_anonymous_rights_unless_told_otherwise() {
    assert!(privileged());
    let anon = served();
    let base = anon.path().join("v");
    let vroot = base.join("ann");
    std::fs::create_dir_all(&vroot).unwrap();
    std::fs::set_permissions(&vroot, std::fs::Permissions::from_mode(0o777)).unwrap();
    let users = anon.path().join("vusers");
    std::fs::write(&users, format!("ann:{}\n", sha_crypt_of("pw"))).unwrap();
    let vu = format!("virtual_users_file={}", users.display());
    let lr = format!("local_root={}/$USER", base.display());
    let common = ["guest_enable=YES", "guest_username=nobody", "user_sub_token=$USER", "allow_writeable_chroot=YES"];
    let mut s = settings(&common);
    s.extend([vu.as_str(), lr.as_str()]);
    let server = Server::start(anon.path(), &s);
    let up = "try:\n    print(f.storbinary('STOR a.txt', io.BytesIO(b'a')))\nexcept ftplib.error_perm as e:\n    print('DENIED', e)";
    let out = ftplib(&server, "ann", "pw", up);
    assert_eq!(out.lines().nth(1).map(|l| l.starts_with("DENIED 550")), Some(true), "{out}");
    drop(server);
    s.push("anon_upload_enable=YES");
    let server = Server::start(anon.path(), &s);
    let out = ftplib(&server, "ann", "pw", up);
    assert_eq!(out.lines().nth(1), Some("226 Transfer complete."), "{out}\n{}", server.log());
    // user_sub_token put ann in her own directory; anon_umask (077) applied.
    let meta = std::fs::metadata(vroot.join("a.txt")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
}

/// A `$6$` SHA-512 crypt hash made by the system's crypt (openssl is not
/// guaranteed; Python 3.11's crypt module is).
fn sha_crypt_of(pw: &str) -> String {
    let code = format!("import crypt; print(crypt.crypt({pw:?}, crypt.mksalt(crypt.METHOD_SHA512)))");
    ftpd_tests::python(&code).trim().to_owned()
}

#[test]
#[ignore = "privileged: creates system users and a PAM service (cargo xtask test as root)"]
fn pam_service_name_and_chmod_enable() {
    assert!(privileged());
    struct PamFile(PathBuf);
    impl Drop for PamFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let u = LocalUser::new("/bin/sh");
    let service = format!("ftpd-test-deny-{}", std::process::id());
    let pam = PamFile(PathBuf::from("/etc/pam.d").join(&service));
    std::fs::write(&pam.0, "auth required pam_deny.so\naccount required pam_permit.so\n").unwrap();
    let anon = served();
    let s = format!("pam_service_name={service}");
    let server = Server::start(anon.path(), &settings(&[&s]));
    assert!(ftplib(&server, &u.name, &u.password, "").starts_with("ERR 530"), "pam_deny must refuse");
    drop(server);
    std::fs::write(u.home.join("c.txt"), b"c").unwrap();
    run_ok(Command::new("chown").arg(format!("{}:", u.name)).arg(u.home.join("c.txt")));
    let chmod =
        "try:\n    print(f.sendcmd('SITE CHMOD 640 c.txt'))\nexcept ftplib.error_perm as e:\n    print('DENIED', e)";
    let server = Server::start(anon.path(), &settings(&[]));
    let out = ftplib(&server, &u.name, &u.password, chmod);
    assert_eq!(out.lines().nth(1), Some("200 SITE CHMOD command ok."), "{out}");
    assert_eq!(std::fs::metadata(u.home.join("c.txt")).unwrap().mode() & 0o777, 0o640);
    drop(server);
    let server = Server::start(anon.path(), &settings(&["chmod_enable=NO"]));
    let out = ftplib(&server, &u.name, &u.password, chmod.replace("640", "600").as_str());
    assert!(out.lines().nth(1).is_some_and(|l| l.starts_with("DENIED 550")), "{out}");
    assert_eq!(std::fs::metadata(u.home.join("c.txt")).unwrap().mode() & 0o777, 0o640);
}

#[test]
#[ignore = "privileged: starts ftpd as another user (cargo xtask test as root)"]
fn started_without_root_ftpd_serves_in_one_process_on_the_userspace_plane() {
    assert!(privileged());
    let anon = served();
    std::fs::write(anon.path().join("f.txt"), b"plain").unwrap();
    std::fs::set_permissions(anon.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = ftpd_tests::free_port();
    let settings: Vec<String> = vec![
        format!("listen_port={port}"),
        "ftpd_metrics_listen=".into(),
        "write_enable=YES".into(),
        "anon_upload_enable=YES".into(),
        "ftpd_ebpf=auto".into(),
    ];
    let prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    let server =
        Server::spawn(Some(&prefix), anon.path(), &settings, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .unwrap();
    let log = server.log();
    assert!(log.contains("not started as root: no privilege separation"), "{log}");
    assert!(log.contains("falling back to userspace enforcement"), "{log}");
    let out = ftplib(
        &server,
        "anonymous",
        "x",
        "b = io.BytesIO(); f.retrbinary('RETR f.txt', b.write); print(b.getvalue())\nprint(f.storbinary('STOR n.txt', io.BytesIO(b'n')))",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["230 Login successful.", "b'plain'", "226 Transfer complete."], "{out}\n{}", server.log());
    assert_eq!(std::fs::metadata(anon.path().join("n.txt")).unwrap().uid(), 65534);
    // The one process runs as nobody: no root anywhere.
    assert_eq!(ftpd_tests::status_field(server.pid(), "Uid"), 65534);
}

#[test]
#[ignore = "privileged: creates system users (cargo xtask test as root)"]
fn a_local_users_rate_from_user_config_dir_holds_and_bad_files_refuse_the_login() {
    use std::io::{Read, Write};
    assert!(privileged());
    let u = LocalUser::new("/bin/sh");
    let size = 420_000usize; // 4.2 s at 100 kB/s
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let file = u.home.join("f.bin");
    std::fs::write(&file, &data).unwrap();
    std::os::unix::fs::chown(&file, Some(u.uid), None).unwrap();
    let anon = served();
    let confdir = anon.path().join("users.d");
    std::fs::create_dir(&confdir).unwrap();
    std::fs::write(confdir.join(&u.name), "local_max_rate=100000\n").unwrap();
    let c = format!("user_config_dir={}", confdir.display());
    // The global rate is far higher: the per-user file must win.
    let server = Server::start(anon.path(), &settings(&[&c, "local_max_rate=5000000"]));
    let login = |server: &Server| {
        let mut f = server.connect();
        f.cmd_ok(&format!("USER {}", u.name), 331);
        f
    };
    let mut f = login(&server);
    f.cmd_ok(&format!("PASS {}", u.password), 230);
    assert!(f.cmd_ok("STAT", 211).contains("100000"));
    f.cmd_ok("TYPE I", 200);
    let mut d = f.pasv_connect();
    assert_eq!(f.cmd("RETR f.bin").0, 150);
    let t0 = std::time::Instant::now();
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    let down = size as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(got, data);
    assert_eq!(f.read_reply().0, 226);
    let mut d = f.pasv_connect();
    assert_eq!(f.cmd("STOR up.bin").0, 150);
    let t0 = std::time::Instant::now();
    d.write_all(&data).unwrap();
    drop(d);
    assert_eq!(f.read_reply().0, 226);
    let up = size as f64 / t0.elapsed().as_secs_f64();
    eprintln!("measured: local user, user_config_dir local_max_rate=100000: down {down:.0} B/s, up {up:.0} B/s");
    assert!((down / 100e3 - 1.0).abs() <= 0.05, "download at {down:.0} B/s");
    assert!((up / 100e3 - 1.0).abs() <= 0.05, "upload at {up:.0} B/s");
    drop(server);

    // A bad value, or a setting the main file could not make, refuses the
    // login with a log line naming the file; never a silent default.
    for (text, needle) in [
        ("local_max_rate=fast\n", "local_max_rate"),
        ("pasv_min_port=60000\npasv_max_port=50000\n", "pasv_min_port=60000"),
    ] {
        std::fs::write(confdir.join(&u.name), text).unwrap();
        let server = Server::start(anon.path(), &settings(&[&c]));
        let mut f = login(&server);
        assert_eq!(f.cmd(&format!("PASS {}", u.password)).0, 530, "{text}");
        let log = server.log();
        let line = log.lines().find(|l| l.contains("login refused")).unwrap_or_else(|| panic!("{log}"));
        assert!(line.contains(&u.name) && line.contains(needle) && line.contains("users.d"), "{line}");
    }
}

/// `data_connection_timeout` from a user's file is the one that user's
/// transfers stall out by, not the main file's.
#[test]
#[ignore = "privileged: creates system users (cargo xtask test as root)"]
fn a_users_data_connection_timeout_from_user_config_dir_ends_a_stalled_transfer() {
    assert!(privileged());
    let u = LocalUser::new("/bin/sh");
    let file = u.home.join("big.bin");
    std::fs::write(&file, vec![7u8; 64 << 20]).unwrap();
    std::os::unix::fs::chown(&file, Some(u.uid), None).unwrap();
    let anon = served();
    let confdir = anon.path().join("users.d");
    std::fs::create_dir(&confdir).unwrap();
    std::fs::write(confdir.join(&u.name), "data_connection_timeout=1\n").unwrap();
    let c = format!("user_config_dir={}", confdir.display());
    let server = Server::start(anon.path(), &settings(&[&c, "data_connection_timeout=300"]));
    let mut f = server.connect();
    f.cmd_ok(&format!("USER {}", u.name), 331);
    f.cmd_ok(&format!("PASS {}", u.password), 230);
    f.cmd_ok("TYPE I", 200);
    // The client connects but never reads: the transfer stalls.
    let _data = f.pasv_connect();
    assert_eq!(f.cmd("RETR big.bin").0, 150);
    let start = std::time::Instant::now();
    let (code, text) = f.read_reply();
    assert_eq!((code, text.as_str()), (421, "421 Data timeout. Reconnect. Sorry.\r\n"));
    assert!(start.elapsed() < std::time::Duration::from_secs(10), "stalled for {:?}", start.elapsed());
}

/// The master reads a user's file at login and sends the front the settings
/// it decided: the file is root's alone (0600), so the front (nobody) could
/// not read it, and a session keeps the settings of its login while the
/// next login, or a reload, gets the new file.
#[test]
#[ignore = "privileged: creates system users (cargo xtask test as root)"]
fn a_session_keeps_the_settings_of_its_login_and_the_next_login_gets_the_new_file() {
    assert!(privileged());
    let u = LocalUser::new("/bin/sh");
    let anon = served();
    let confdir = anon.path().join("users.d");
    std::fs::create_dir(&confdir).unwrap();
    let file = confdir.join(&u.name);
    let write = |text: &str| {
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    write("write_enable=NO\nlocal_max_rate=100000\n");
    let c = format!("user_config_dir={}", confdir.display());
    let server = Server::start(anon.path(), &settings(&[&c, "local_max_rate=5000000"]));
    let login = || {
        let mut f = server.connect();
        f.cmd_ok(&format!("USER {}", u.name), 331);
        f.cmd_ok(&format!("PASS {}", u.password), 230);
        f
    };
    let limit = |f: &mut ftpd_tests::Ftp| {
        let stat = f.cmd_ok("STAT", 211);
        let line = stat.lines().find(|l| l.contains("bandwidth limit")).unwrap_or_else(|| panic!("{stat}"));
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap_or_else(|_| panic!("{line}"))
    };
    let mut first = login();
    assert_eq!(limit(&mut first), 100_000);
    assert_eq!(first.cmd("MKD a").0, 550);

    write("write_enable=YES\nlocal_max_rate=200000\n");
    assert_eq!(limit(&mut first), 100_000, "a running session changed its limit without a reload");
    assert_eq!(first.cmd("MKD a").0, 550, "a running session changed its permissions");
    let mut second = login();
    assert_eq!(limit(&mut second), 200_000, "the next login did not get the new file");
    second.cmd_ok("MKD b", 257);

    // A reload gives running sessions the limit the master decides from the
    // file now; their permissions stay those of their login.
    let reloaded = |n: usize| {
        run_ok(Command::new("kill").arg("-HUP").arg(server.pid().to_string()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while server.log().matches("SIGHUP: configuration").count() < n {
            assert!(std::time::Instant::now() < deadline, "no reload in the log:\n{}", server.log());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    write("write_enable=YES\nlocal_max_rate=300000\n");
    reloaded(1);
    assert_eq!(limit(&mut first), 300_000);
    assert_eq!(limit(&mut second), 300_000);
    assert_eq!(first.cmd("MKD c").0, 550);
    // A bad file refuses the whole reload: nothing changes.
    write("local_max_rate=fast\n");
    reloaded(2);
    let log = server.log();
    assert!(log.contains("configuration not reloaded") && log.contains("local_max_rate"), "{log}");
    assert_eq!(limit(&mut first), 300_000);
    assert_eq!(limit(&mut second), 300_000);
}

/// A child process killed (SIGTERM, then waited for) on drop.
/// /etc/nsswitch.conf, which must ask nss-systemd for users (Debian's
/// `passwd: files systemd`, package libnss-systemd).
fn needs_nss_systemd() -> String {
    let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
    assert!(
        nsswitch.lines().any(|l| l.starts_with("passwd:") && l.contains("systemd")),
        "this test needs nss-systemd in /etc/nsswitch.conf (Debian package libnss-systemd): {nsswitch}"
    );
    nsswitch
}

/// Waits (at most 10 s) until a server started by hand accepts on `addr`;
/// fails with its `log`.
fn wait_listening(addr: std::net::SocketAddr, log: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "ftpd does not listen: {}", log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "privileged: a mount namespace for a systemd-userdb record (cargo xtask test as root)"]
fn a_user_only_the_user_database_knows_is_ftp_username_and_named_in_listings() {
    assert!(privileged());
    // The user and its group exist only as systemd-userdb records, which
    // nss-systemd (`passwd: files systemd` in Debian's nsswitch.conf) reads
    // from /run/userdb; ftpd runs in a mount namespace with its own /run,
    // so the host never sees them. /etc/passwd does not name them: only a
    // lookup through the user database finds them, as with LDAP.
    let nsswitch = needs_nss_systemd();
    let n = std::process::id() % 100_000;
    let (name, group, id) = (format!("ftpdnss{n}"), format!("ftpdnssg{n}"), 3_900_000 + n);
    assert!(!nsswitch.is_empty() && run(Command::new("getent").args(["passwd", &name])).stdout.is_empty());
    let home = served();
    std::fs::write(home.path().join("owned.txt"), b"mine\n").unwrap();
    std::os::unix::fs::chown(home.path().join("owned.txt"), Some(id), Some(id)).unwrap();
    let udb = tempfile::tempdir().unwrap();
    let user = format!(
        r#"{{"userName":"{name}","uid":{id},"gid":{id},"homeDirectory":"{}","shell":"/usr/sbin/nologin","disposition":"regular"}}"#,
        home.path().display()
    );
    std::fs::write(udb.path().join(format!("{name}.user")), user).unwrap();
    std::os::unix::fs::symlink(format!("{name}.user"), udb.path().join(format!("{id}.user"))).unwrap();
    let grp = format!(r#"{{"groupName":"{group}","gid":{id},"disposition":"regular"}}"#);
    std::fs::write(udb.path().join(format!("{group}.group")), grp).unwrap();
    std::os::unix::fs::symlink(format!("{group}.group"), udb.path().join(format!("{id}.group"))).unwrap();
    std::fs::set_permissions(udb.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // No anon_root, no --root: the anonymous root is ftp_username's home.
    let port = ftpd_tests::free_port();
    let conf = udb.path().join("ftpd.conf");
    std::fs::write(
        &conf,
        format!(
            "listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\nanonymous_enable=YES\nno_anon_password=YES\n\
             ftp_username={name}\ntext_userdb_names=YES\nftpd_ebpf=off\nftpd_metrics_listen=\n"
        ),
    )
    .unwrap();
    let log = udb.path().join("ftpd.log");
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs none /run && mkdir /run/userdb && cp -P '{udb}'/*.user \
         '{udb}'/*.group /run/userdb/ && exec '{bin}' '{conf}' 2>'{log}'",
        udb = udb.path().display(),
        bin = ftpd_tests::ftpd_bin().display(),
        conf = conf.display(),
        log = log.display(),
    );
    let mut child = Command::new("unshare").args(["-m", "sh", "-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let server = Running(child);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let log = || std::fs::read_to_string(&log).unwrap_or_default();
    let canonical = home.path().canonicalize().unwrap();
    assert!(first.contains(&format!("serving {} on", canonical.display())), "{first}\n{}", log());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, log);
    let mut c = ftpd_tests::Ftp::connect(addr);
    assert_eq!(c.read_reply().0, 220);
    c.cmd_ok("USER anonymous", 230);
    let (list, code, text) = c.transfer("LIST");
    let list = String::from_utf8(list).unwrap();
    assert_eq!(code, 226, "{text}\n{}", log());
    let line = list.lines().find(|l| l.ends_with(" owned.txt")).unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains(&format!(" {name} {group} ")), "owner and group by name: {line}");
    drop(server);
}

/// On a host whose user database answers over a socket (nscd, sssd, or
/// systemd's varlink services under /run/systemd/userdb, which PID 1 always
/// offers), a listing with `text_userdb_names=YES` makes glibc open a unix
/// socket to ask for an owner /etc/passwd does not name. Under seccomp that
/// killed the front. Now the call fails (EACCES, as vsftpd's filter
/// answers it), the source is skipped, and the owner shows as a number,
/// for anonymous and for a virtual user alike.
#[test]
#[ignore = "privileged: a mount namespace with its own /run/systemd/userdb (cargo xtask test as root)"]
fn a_user_database_behind_a_socket_does_not_kill_the_listing() {
    assert!(privileged());
    needs_nss_systemd();
    let root = served();
    let unknown = 3_800_000 + std::process::id() % 100_000;
    std::fs::write(root.path().join("stray.txt"), b"who owns me\n").unwrap();
    std::os::unix::fs::chown(root.path().join("stray.txt"), Some(unknown), Some(unknown)).unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let users = work.path().join("vusers");
    ftpd_tests::ftpd_passwd(&users, "vera", "right");
    let port = ftpd_tests::free_port();
    let conf = work.path().join("ftpd.conf");
    std::fs::write(
        &conf,
        format!(
            "listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\nanonymous_enable=YES\nno_anon_password=YES\n\
             anon_root={root}\nlocal_enable=YES\nguest_enable=YES\nguest_username=nobody\nvirtual_users_file={users}\n\
             local_root={root}\nallow_writeable_chroot=YES\ntext_userdb_names=YES\nftpd_ebpf=off\nftpd_metrics_listen=\n",
            root = root.path().display(),
            users = users.display(),
        ),
    )
    .unwrap();
    let log = work.path().join("ftpd.log");
    // A varlink service that accepts and hangs up: nss-systemd finds it in
    // the directory and opens a socket to ask it.
    // Each connection is counted in `accepted`.
    let accepted = work.path().join("accepted");
    let service = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\n\
         s.bind('/run/systemd/userdb/io.systemd.DynamicUser')\ns.listen(64)\n\
         while True:\n    c, _ = s.accept()\n    open('{}', 'a').write('x')\n    c.close()\n",
        accepted.display()
    );
    std::fs::write(work.path().join("userdb.py"), service).unwrap();
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs none /run && mkdir -p /run/systemd/userdb && \
         {{ python3 '{work}/userdb.py' </dev/null >/dev/null 2>&1 & echo $! >'{work}/userdb.pid'; }} && \
         while [ ! -S /run/systemd/userdb/io.systemd.DynamicUser ]; do sleep 0.05; done && \
         {{ getent passwd {unknown} >/dev/null || true; }} && \
         exec '{bin}' '{conf}' 2>'{log}'",
        work = work.path().display(),
        bin = ftpd_tests::ftpd_bin().display(),
        conf = conf.display(),
        log = log.display(),
    );
    let child = Command::new("unshare").args(["-m", "sh", "-c", &script]).stdout(Stdio::null()).spawn();
    let server = Running(child.unwrap());
    let _service = KillOnDrop(work.path().join("userdb.pid"));
    let log = || std::fs::read_to_string(&log).unwrap_or_default();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, log);
    // The lookup that glibc makes here does go through the socket (getent
    // connected before ftpd started); ftpd's are refused before they do.
    let connections = || std::fs::read(&accepted).map_or(0, |a| a.len());
    assert!(connections() >= 1, "nss-systemd never asked the service: this test would prove nothing");
    let before = connections();
    for (user, pass) in [("anonymous", None), ("vera", Some("right"))] {
        let mut c = ftpd_tests::Ftp::connect(addr);
        assert_eq!(c.read_reply().0, 220);
        match pass {
            None => c.cmd_ok(&format!("USER {user}"), 230),
            Some(p) => {
                c.cmd_ok(&format!("USER {user}"), 331);
                c.cmd_ok(&format!("PASS {p}"), 230)
            }
        };
        let (list, code, text) = c.transfer("LIST");
        assert_eq!(code, 226, "{user}: {text}\n{}", log());
        let list = String::from_utf8(list).unwrap();
        let line = list.lines().find(|l| l.ends_with(" stray.txt")).unwrap_or_else(|| panic!("{user}: {list}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[2..4], [unknown.to_string(), unknown.to_string()], "{user}: the owner as a number: {line}");
        assert!(!log().contains("killed by"), "{user}:\n{}", log());
    }
    assert_eq!(connections(), before, "a confined process reached the user database's socket");
    drop(server);
}

/// Kills the process whose pid a file holds, when dropped.
struct KillOnDrop(PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}
