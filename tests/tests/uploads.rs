//! Uploads that go wrong or take long: REST resumes, interrupted uploads with
//! and without `ftpd_atomic_uploads`, overwrites that never expose a half
//! file, a full disk, 1 GiB through curl, and lftp mirroring whole trees.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use ftpd_tests::{
    Ftp, Server, assert_bytes, assert_file, give_to_anon, is_root, make_writable, mode_of, names, python, random_bytes,
    random_file, run, run_ok, sha256_file, uid_of,
};

/// Every write permission an anonymous user can get.
const WRITE: [&str; 4] =
    ["write_enable=YES", "anon_upload_enable=YES", "anon_mkdir_write_enable=YES", "anon_other_write_enable=YES"];

/// A served `root` (writable by the anonymous account) inside a tempdir.
fn served() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    make_writable(&root);
    (dir, root)
}

fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    WRITE.iter().chain(extra).copied().collect()
}

#[test]
fn rest_stor_resumes_an_aborted_upload() {
    let (_dir, root) = served();
    let server = Server::start(&root, &WRITE);
    let full = random_bytes(3 << 20);
    let part = 1_234_567;
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let data = c.start_upload("resume.bin", &full[..part]);
    // Without ftpd_atomic_uploads the file grows under its own name (vsftpd).
    assert_file(&root.join("resume.bin"), &full[..part], "the part under its own name");
    c.abort_transfer();
    drop(data);
    // The part stays, and a client resumes from its size.
    assert_file(&root.join("resume.bin"), &full[..part], "the part after ABOR");
    assert_eq!(c.cmd_ok("SIZE resume.bin", 213), format!("213 {part}\r\n"));
    assert_eq!(c.cmd_ok(&format!("REST {part}"), 350), format!("350 Restart position accepted ({part}).\r\n"));
    let (_, code, text) = c.upload("STOR resume.bin", &full[part..]);
    assert_eq!(code, 226, "{text}");
    assert_file(&root.join("resume.bin"), &full, "resumed upload");
    // REST applies to one command only: the next STOR starts from zero.
    let (_, code, _) = c.upload("STOR resume.bin", b"short");
    assert_eq!(code, 226);
    assert_file(&root.join("resume.bin"), b"short", "STOR after a resume");
    // APPE continues a file, as resuming clients without REST do.
    let (_, code, text) = c.upload("APPE resume.bin", b" and appended");
    assert_eq!(code, 226, "{text}");
    assert_file(&root.join("resume.bin"), b"short and appended", "APPE");
}

/// A client whose data connection dies (reset, not a clean close) mid-upload:
/// `426`, and the part is kept for a resume, under its name without
/// `ftpd_atomic_uploads`, hidden but reported by SIZE with it.
#[test]
fn upload_cut_by_a_reset_keeps_the_part() {
    for atomic in ["NO", "YES"] {
        let (_dir, root) = served();
        let server = Server::start(&root, &with(&[&format!("ftpd_atomic_uploads={atomic}")]));
        let out = python(&format!(
            r#"{}import socket, struct, time
f.voidcmd('TYPE I')
conn = f.transfercmd('STOR cut.bin')
conn.sendall(bytes(range(256)) * 1000)
deadline = time.time() + 10
while '256000 bytes' not in f.sendcmd('STAT') and time.time() < deadline:
    time.sleep(0.02)
conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
conn.close()
try:
    print(f.getresp())
except ftplib.all_errors as e:
    print(e)
print(f.size('cut.bin'))
"#,
            server.py_login()
        ));
        assert_eq!(out, "426 Failure reading network stream.\n256000\n", "atomic={atomic}");
        let want: Vec<u8> = (0..=255u8).cycle().take(256_000).collect();
        if atomic == "NO" {
            assert_file(&root.join("cut.bin"), &want, "part of a reset upload");
        } else {
            assert!(!root.join("cut.bin").exists(), "an atomic upload appeared before it was complete");
            let mut c = server.login();
            c.cmd_ok("TYPE I", 200);
            c.cmd_ok("REST 256000", 350);
            let (_, code, _) = c.upload("STOR cut.bin", b"end");
            assert_eq!(code, 226);
            let mut all = want.clone();
            all.extend_from_slice(b"end");
            assert_file(&root.join("cut.bin"), &all, "resumed atomic upload");
            assert_eq!(names(&root), ["cut.bin"], "leftovers after the resumed upload");
        }
    }
}

#[test]
fn atomic_uploads_appear_only_when_complete() {
    let (_dir, root) = served();
    let server = Server::start(&root, &with(&["ftpd_atomic_uploads=YES"]));
    let full = random_bytes(2 << 20);
    let part = 700_001;
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let mut other = server.login();

    // A complete upload: invisible while it runs, there once it is done.
    let mut data = c.start_upload("new.bin", &full[..part]);
    assert!(!root.join("new.bin").exists(), "visible before it is complete");
    let (nlst, code, _) = other.transfer("NLST -a");
    // `.` and `..` only, as vsftpd lists them with -a (was: nothing at all).
    assert_eq!((nlst.as_slice(), code), (&b".\r\n..\r\n"[..], 226), "nothing is listed during the upload");
    // Another session's upload in progress is nobody else's business.
    other.cmd_ok("SIZE new.bin", 550);
    let (bytes, code, _) = other.transfer("RETR new.bin");
    assert_eq!((bytes.len(), code), (0, 550), "a part file is never served");
    data.write_all(&full[part..]).unwrap();
    drop(data);
    assert_eq!(c.read_reply().0, 226);
    assert_file(&root.join("new.bin"), &full, "atomic upload");
    assert_eq!(mode_of(&root.join("new.bin")), 0o600);

    // An interrupted one: still invisible, SIZE tells the part, REST+STOR finishes it.
    let data = c.start_upload("resumed.bin", &full[..part]);
    c.abort_transfer();
    drop(data);
    assert!(!root.join("resumed.bin").exists());
    assert_eq!(c.cmd_ok("SIZE resumed.bin", 213), format!("213 {part}\r\n"));
    c.cmd_ok(&format!("REST {part}"), 350);
    let (_, code, text) = c.upload("STOR resumed.bin", &full[part..]);
    assert_eq!(code, 226, "{text}");
    assert_file(&root.join("resumed.bin"), &full, "resumed atomic upload");
    assert_eq!(names(&root), ["new.bin", "resumed.bin"], "leftovers on disk");
    let (nlst, _, _) = other.transfer("NLST -a");
    assert_eq!(String::from_utf8(nlst).unwrap(), ".\r\n..\r\nnew.bin\r\nresumed.bin\r\n");
}

/// Replacing a file goes through a temporary file: the old content stays
/// whole until the new upload is complete, also when it is interrupted, and
/// the old file's mode is kept.
#[test]
fn overwrite_keeps_the_old_file_until_complete() {
    for atomic in ["NO", "YES"] {
        let (_dir, root) = served();
        let old = b"old content\n".repeat(10_000);
        let target = root.join("data.bin");
        std::fs::write(&target, &old).unwrap();
        give_to_anon(&target);
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o604)).unwrap();
        let server = Server::start(&root, &with(&[&format!("ftpd_atomic_uploads={atomic}")]));
        let new = random_bytes(3 << 20);
        let part = 1 << 20;
        let mut c = server.login();
        c.cmd_ok("TYPE I", 200);

        let mut data = c.start_upload("data.bin", &new[..part]);
        assert_file(&target, &old, &format!("atomic={atomic}: old content during the upload"));
        let mut other = server.login();
        other.cmd_ok("TYPE I", 200);
        let (bytes, code, _) = other.transfer("RETR data.bin");
        assert_eq!(code, 226);
        assert_bytes(&bytes, &old, "downloads see the old file meanwhile");
        data.write_all(&new[part..]).unwrap();
        drop(data);
        assert_eq!(c.read_reply().0, 226);
        assert_file(&target, &new, &format!("atomic={atomic}: replaced file"));
        assert_eq!(mode_of(&target), 0o604, "the replaced file keeps its mode");
        assert_eq!(names(&root), ["data.bin"], "atomic={atomic}: temporary files left behind");

        // Interrupted: the previous content survives whole.
        let data = c.start_upload("data.bin", &old[..50_000]);
        c.abort_transfer();
        drop(data);
        assert_file(&target, &new, &format!("atomic={atomic}: after an aborted overwrite"));
        assert_eq!(names(&root), ["data.bin"], "atomic={atomic}: temporary files left behind");
    }
}

/// A file the session's account cannot write is not replaced (the temporary
/// file must not sidestep the permission check).
#[test]
fn overwrite_needs_write_permission_on_the_file() {
    let (_dir, root) = served();
    let server = Server::start(&root, &WRITE);
    let mut c = server.login();
    let (_, code, _) = c.upload("STOR probe.txt", b"probe");
    assert_eq!(code, 226);
    if is_root() && uid_of(&root.join("probe.txt")) == 0 {
        // This server acts as root for anonymous sessions; root may write any
        // file, so there is no permission to check.
        return;
    }
    let ro = root.join("readonly.txt");
    std::fs::write(&ro, b"keep me\n").unwrap();
    give_to_anon(&ro);
    std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let (_, code, text) = c.upload("STOR readonly.txt", b"replaced");
    assert_eq!((code, text.as_str()), (553, "553 Could not create file.\r\n"));
    c.cmd_ok("REST 2", 350);
    let (_, code, _) = c.upload("STOR readonly.txt", b"resumed");
    assert_eq!(code, 553);
    assert_file(&ro, b"keep me\n", "read-only file");
    assert_eq!(names(&root), ["probe.txt", "readonly.txt"]);
}

/// Unmounts on drop, also when the test fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Needs root (mounts a 1 MiB tmpfs; CI runs the tests as root).
#[test]
fn full_disk_gives_552_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let out = run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs"]).arg(&mnt));
    assert!(out.status.success(), "mount a tmpfs (needs root): {}", String::from_utf8_lossy(&out.stderr));
    let _mount = Mount(mnt.clone());
    let old = random_bytes(300_000);
    std::fs::write(mnt.join("f.bin"), &old).unwrap();
    make_writable(&mnt);
    // The anonymous account's file: a replace keeps its owner, so it goes
    // through a temporary file (one it could not keep is written in place).
    give_to_anon(&mnt.join("f.bin"));
    // Declared after the mount guard, so stopped before the unmount.
    let server = Server::start(&mnt, &WRITE);
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let big = random_bytes(2 << 20);
    let full_upload = |c: &mut Ftp, name: &str| {
        let mut data = c.pasv_connect();
        c.cmd_ok(&format!("STOR {name}"), 150);
        // The server stops reading when the disk is full; this write may fail.
        let _ = data.write_all(&big);
        drop(data);
        c.read_reply()
    };
    // A new file: 552, and the session goes on.
    let (code, text) = full_upload(&mut c, "new.bin");
    assert_eq!(code, 552, "STOR new.bin: {text}");
    c.cmd_ok("NOOP", 200);
    std::fs::remove_file(mnt.join("new.bin")).unwrap(); // the part a resume would continue
    // Replacing a file: 552, the old content whole, no temporary file left.
    let (code, text) = full_upload(&mut c, "f.bin");
    assert_eq!(code, 552, "STOR f.bin: {text}");
    assert_file(&mnt.join("f.bin"), &old, "the old file was damaged");
    assert_eq!(names(&mnt), ["f.bin"], "temporary files left behind on a full disk");
    // There is room again for a small upload.
    let (_, code, _) = c.upload("STOR small.txt", b"fits");
    assert_eq!(code, 226);
    let ls = run_ok(Command::new("ls").arg("-a").arg(&mnt));
    assert_eq!(ls, ".\n..\nf.bin\nsmall.txt\n");
}

/// Pipes open in the server's processes.
fn pipes(server: &Server) -> usize {
    server
        .pids()
        .iter()
        .flat_map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten())
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().starts_with("pipe:")))
        .count()
}

/// Uploads splice through a pipe. One pipe per uploading session ran out of
/// the kernel's allowance for one user's pipes (`fs.pipe-user-pages-soft`,
/// 64 MiB by default) after a few hundred uploaders, and later pipes shrank
/// to one page: 300 uploads at once must hold a few pipes, not 300, and each
/// arrives whole.
#[test]
fn three_hundred_uploads_at_once_share_a_few_splice_pipes() {
    let (_dir, root) = served();
    let server = Server::start(&root, &with(&["max_clients=0", "max_per_ip=0"]));
    let before = pipes(&server);
    let n = 300;
    let file = |i: usize| -> Vec<u8> { (0..200_000).map(|j| (j * 7 + i * 13) as u8).collect() };
    let mut open = Vec::new();
    for i in 0..n {
        let mut c = server.login();
        c.cmd_ok("TYPE I", 200);
        let data = c.start_upload(&format!("u{i}.bin"), &file(i)[..65_536]);
        open.push((c, data));
    }
    let during = pipes(&server);
    assert!(during <= before + 16, "{n} uploads at once hold {} pipes (before: {before})", during - before);
    for (i, (mut c, mut data)) in open.into_iter().enumerate() {
        data.write_all(&file(i)[65_536..]).expect("send");
        drop(data);
        let (code, text) = c.read_reply();
        assert_eq!(code, 226, "upload {i}: {text}");
    }
    for i in 0..n {
        assert_bytes(&std::fs::read(root.join(format!("u{i}.bin"))).expect("read"), &file(i), &format!("u{i}.bin"));
    }
}

#[test]
fn one_gib_through_curl_both_ways() {
    let (dir, root) = served();
    let src = dir.path().join("src.bin");
    random_file(&src, 1 << 30);
    // anon_umask=022: uploads are world-readable, so anonymous may download them.
    let server = Server::start(&root, &with(&["anon_umask=022"]));
    run_ok(Command::new("curl").args(["-sS", "--max-time", "300", "-T"]).arg(&src).arg(server.url("/big.bin")));
    let want = sha256_file(&src);
    assert_eq!(std::fs::metadata(root.join("big.bin")).unwrap().len(), 1 << 30);
    assert_eq!(sha256_file(&root.join("big.bin")), want, "upload");
    std::fs::remove_file(&src).unwrap();
    let back = dir.path().join("back.bin");
    run_ok(Command::new("curl").args(["-sS", "--max-time", "300", "-o"]).arg(&back).arg(server.url("/big.bin")));
    assert_eq!(sha256_file(&back), want, "download");
}

/// Relative path -> content (None for directories) of a whole tree.
fn snapshot(base: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.insert(rel, None);
                walk(base, &p, out);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(base, base, &mut out);
    out
}

fn lftp(server: &Server, script: &str) -> String {
    let cmds = format!(
        "set ftp:passive-mode on; set ftp:ssl-allow no; set net:max-retries 1; set net:timeout 10; \
         open -u anonymous,x ftp://{}; {script}",
        server.addr
    );
    run_ok(Command::new("lftp").arg("-c").arg(cmds))
}

fn small_tree(base: &Path, salt: &str) {
    std::fs::create_dir_all(base.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(base.join("empty")).unwrap();
    std::fs::write(base.join("top.txt"), format!("top {salt}\n")).unwrap();
    std::fs::write(base.join("sub/b.bin"), random_bytes(150_000)).unwrap();
    std::fs::write(base.join("sub/deeper/c.txt"), format!("deep {salt}\n").repeat(100)).unwrap();
    std::fs::write(base.join("sub/deeper/zero"), b"").unwrap();
}

#[test]
fn lftp_mirrors_a_tree_both_ways() {
    let (dir, root) = served();
    small_tree(&root.join("tree"), "served");
    make_writable(&root);
    let server = Server::start(&root, &WRITE);

    let down = dir.path().join("down");
    lftp(&server, &format!("mirror /tree {}", down.display()));
    assert_eq!(snapshot(&down), snapshot(&root.join("tree")), "mirror (download)");

    let up = dir.path().join("up");
    small_tree(&up, "uploaded");
    lftp(&server, &format!("mirror -R {} /uploaded", up.display()));
    assert_eq!(snapshot(&root.join("uploaded")), snapshot(&up), "mirror -R (upload)");

    // put and get of one file.
    lftp(&server, &format!("put {} -o /single.txt", up.join("top.txt").display()));
    assert_file(&root.join("single.txt"), b"top uploaded\n", "lftp put");
    let got = dir.path().join("got.txt");
    lftp(&server, &format!("get /tree/top.txt -o {}", got.display()));
    assert_file(&got, b"top served\n", "lftp get");
}
