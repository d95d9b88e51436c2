//! Uploads under attack from other sessions (issue 10): an atomic upload's
//! part file belongs to one session, a commit never replaces a file the user
//! could not have replaced, part files stay invisible and do not pile up,
//! replaces keep the file's owner and links, and a large replace does not
//! stall other sessions.
//!
//! The races are made deterministic: session A sends part of its data and
//! keeps its data connection open while the other party acts, then finishes.
//! When the tests run as root (as CI does) each test runs twice: ftpd as root
//! (master, front and a file worker acting as `nobody`) and ftpd started as
//! `nobody` (single-process mode), which must behave the same.

use std::{
    io::Write,
    net::TcpStream,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use ftpd_tests::{Ftp, Server, assert_file, ftpd_passwd, give_to_anon, is_root, make_writable, names, run_ok, uid_of};

/// Anonymous uploads into new files only (vsftpd's `anon_other_write_enable=NO`).
const UPLOAD: [&str; 3] = ["write_enable=YES", "anon_upload_enable=YES", "ftpd_atomic_uploads=YES"];

/// How ftpd is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// As the test's user: as root, the privilege-separated server.
    AsTester,
    /// As `nobody` through setpriv: single-process mode.
    Single,
    /// As the test's user, on one CPU (so with one runtime thread).
    OneCpu,
}

/// The modes a test runs in: both when the tests run as root.
fn modes() -> Vec<Mode> {
    if is_root() { vec![Mode::AsTester, Mode::Single] } else { vec![Mode::AsTester] }
}

/// A served `root` inside a tempdir, with a world-writable `up` directory.
fn served() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    // `nobody` must reach the root in single-process mode.
    run_ok(Command::new("chmod").arg("a+rx").arg(dir.path()));
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("up")).expect("mkdir");
    make_writable(&root);
    (dir, root)
}

fn start(mode: Mode, root: &Path, settings: &[&str]) -> Server {
    match mode {
        Mode::AsTester => Server::start(root, settings),
        Mode::Single => {
            Server::start_wrapped(&["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"], root, settings)
        }
        Mode::OneCpu => Server::start_wrapped(&["taskset", "-c", "0"], root, settings),
    }
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Sends the rest of an upload started by [`Ftp::start_upload`] and returns the final reply.
fn finish(c: &mut Ftp, mut data: TcpStream, rest: &[u8]) -> (u16, String) {
    data.write_all(rest).expect("send");
    drop(data);
    c.read_reply()
}

fn login(server: &Server) -> Ftp {
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    c
}

const REFUSED: (u16, &str) = (553, "553 Could not create file.\r\n");

/// Another session cannot write into, publish or resume an atomic upload in
/// progress: its STOR, REST+STOR and SIZE of that name are refused, and A's
/// upload completes with A's bytes only.
#[test]
fn an_atomic_upload_in_progress_belongs_to_its_session() {
    for mode in modes() {
        let (_dir, root) = served();
        let server = start(mode, &root, &UPLOAD);
        let full = bytes(300_000, 1);
        let mut a = login(&server);
        let data = a.start_upload("up/f.bin", &full[..100_000]);
        let mut b = login(&server);
        let (_, code, text) = b.upload("STOR up/f.bin", b"BBBB");
        assert_eq!((code, text.as_str()), REFUSED, "{mode:?}: STOR of a name being uploaded");
        b.cmd_ok("REST 10", 350);
        let (_, code, text) = b.upload("STOR up/f.bin", b"BBBB");
        assert_eq!((code, text.as_str()), REFUSED, "{mode:?}: REST+STOR into an upload in progress");
        // Nothing to learn about another session's upload either.
        b.cmd_ok("SIZE up/f.bin", 550);
        b.cmd_ok("MDTM up/f.bin", 550);
        let (got, code, _) = b.transfer("RETR up/f.bin");
        assert_eq!((got.len(), code), (0, 550), "{mode:?}: RETR of an upload in progress");
        let (nlst, code, _) = b.transfer("NLST -a up");
        // `.` and `..` only (vsftpd's NLST -a names them, with the directory given).
        assert_eq!((String::from_utf8_lossy(&nlst).as_ref(), code), ("up/.\r\nup/..\r\n", 226), "{mode:?}: listing");
        assert!(!root.join("up/f.bin").exists(), "{mode:?}: published while A is still uploading");
        let (code, text) = finish(&mut a, data, &full[100_000..]);
        assert_eq!(code, 226, "{mode:?}: A's upload: {text}");
        assert_file(&root.join("up/f.bin"), &full, &format!("{mode:?}: A's upload"));
        assert_eq!(names(&root.join("up")), ["f.bin"], "{mode:?}: leftovers");
    }
}

/// A user who may overwrite gets a STOR of a name being uploaded, written
/// aside: both uploads complete whole and the later commit wins; neither
/// writes into the other's file.
#[test]
fn a_user_who_may_overwrite_uploads_beside_an_upload_in_progress() {
    let mut settings = UPLOAD.to_vec();
    settings.push("anon_other_write_enable=YES");
    for mode in modes() {
        let (_dir, root) = served();
        let server = start(mode, &root, &settings);
        let full = bytes(300_000, 2);
        let mut a = login(&server);
        let data = a.start_upload("up/f.bin", &full[..100_000]);
        let mut b = login(&server);
        let (_, code, text) = b.upload("STOR up/f.bin", b"BBBB");
        assert_eq!(code, 226, "{mode:?}: B's STOR: {text}");
        assert_file(&root.join("up/f.bin"), b"BBBB", &format!("{mode:?}: B's upload"));
        let (code, text) = finish(&mut a, data, &full[100_000..]);
        assert_eq!(code, 226, "{mode:?}: A's upload: {text}");
        assert_file(&root.join("up/f.bin"), &full, &format!("{mode:?}: A's upload, committed last"));
        assert_eq!(names(&root.join("up")), ["f.bin"], "{mode:?}: leftovers");
    }
}

/// A file published while an anonymous user (who may not overwrite) uploads
/// the same name is not replaced by the commit: the upload gets 553, the
/// published file stays, and nothing of the upload is left.
#[test]
fn the_commit_never_replaces_a_file_published_meanwhile() {
    for mode in modes() {
        let (_dir, root) = served();
        let server = start(mode, &root, &UPLOAD);
        let mut a = login(&server);
        let data = a.start_upload("up/release.tar", b"evil bytes, part 1;");
        // The admin publishes the real release meanwhile (write + rename, like rsync).
        std::fs::write(root.join("up/.release.tmp"), b"the real release\n").unwrap();
        std::fs::rename(root.join("up/.release.tmp"), root.join("up/release.tar")).unwrap();
        let (code, text) = finish(&mut a, data, b" part 2");
        assert_eq!((code, text.as_str()), REFUSED, "{mode:?}: the commit over a published file");
        assert_file(&root.join("up/release.tar"), b"the real release\n", &format!("{mode:?}: published file"));
        assert_eq!(names(&root.join("up")), ["release.tar"], "{mode:?}: leftovers");
        a.cmd_ok("NOOP", 200);
    }
}

/// A user who may overwrite replaces a file only if, at the commit, the file
/// there is one they may write: one swapped for a read-only file meanwhile
/// is kept. Needs the server's sessions to act as another account than the
/// files' owner (root), so runs only as root.
#[test]
fn a_replace_rechecks_permission_at_the_commit() {
    if !ftpd_tests::root_or_skip(
        "upload_security::a_replace_rechecks_permission_at_the_commit",
        "the sessions must act as another account than the files' owner",
    ) {
        return;
    }
    let mut settings = UPLOAD.to_vec();
    settings.push("anon_other_write_enable=YES");
    for atomic in ["NO", "YES"] {
        for mode in modes() {
            let (_dir, root) = served();
            let target = root.join("up/data.bin");
            std::fs::write(&target, b"old, writable by anonymous\n").unwrap();
            give_to_anon(&target);
            let atomic_setting = format!("ftpd_atomic_uploads={atomic}");
            let mut s = settings.clone();
            s.push(&atomic_setting);
            let server = start(mode, &root, &s);
            let mut a = login(&server);
            let data = a.start_upload("up/data.bin", b"new part 1;");
            // Root swaps in a file anonymous may not write.
            std::fs::write(root.join("up/.swap"), b"root's, read-only\n").unwrap();
            std::fs::set_permissions(root.join("up/.swap"), std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
            std::fs::rename(root.join("up/.swap"), &target).unwrap();
            let (code, text) = finish(&mut a, data, b" part 2");
            assert_eq!((code, text.as_str()), REFUSED, "atomic={atomic} {mode:?}: the commit over a read-only file");
            assert_file(&target, b"root's, read-only\n", &format!("atomic={atomic} {mode:?}: swapped-in file"));
            assert_eq!(uid_of(&target), 0);
            assert_eq!(names(&root.join("up")), ["data.bin"], "atomic={atomic} {mode:?}: leftovers");
        }
    }
}

/// The name of `user`'s part file of an atomic upload of `name`
/// (`.NAME.<first 8 bytes of SHA-256 of the login name, in hex>.ftpd-part`).
fn part_name(name: &str, user: &str) -> String {
    use sha2::Digest;
    let h: String = sha2::Sha256::digest(user.as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!(".{name}.{h}.ftpd-part")
}

/// Sets a file's mtime to `ago` (`touch -d`).
fn age(path: &Path, ago: &str) {
    run_ok(Command::new("touch").args(["-m", "-d", ago]).arg(path));
}

/// Part files of aborted uploads older than a day are removed when their
/// directory is next uploaded to; younger ones are kept for a resume.
#[test]
fn stale_part_files_are_removed() {
    for mode in modes() {
        let (_dir, root) = served();
        let up = root.join("up");
        let (old, recent) = (part_name("old.bin", "anonymous"), part_name("recent.bin", "anonymous"));
        let tmp = ".ftpd-tmp.x.bin.0123456789abcdef";
        for name in [&old, &recent, tmp] {
            std::fs::write(up.join(name), b"partial").unwrap();
            give_to_anon(&up.join(name));
        }
        for name in [&old, tmp] {
            age(&up.join(name), "3 days ago");
        }
        age(&up.join(&recent), "2 hours ago");
        let server = start(mode, &root, &UPLOAD);
        let mut c = login(&server);
        let (_, code, text) = c.upload("STOR up/new.bin", b"new");
        assert_eq!(code, 226, "{mode:?}: {text}");
        assert_eq!(names(&up), [recent.as_str(), "new.bin"], "{mode:?}: stale parts");
        // The recent part is this user's: SIZE reports it, so a client can resume.
        assert_eq!(c.cmd_ok("SIZE up/recent.bin", 213), "213 7\r\n", "{mode:?}");
        c.cmd_ok("REST 7", 350);
        let (_, code, _) = c.upload("STOR up/recent.bin", b" and the rest");
        assert_eq!(code, 226);
        assert_file(&up.join("recent.bin"), b"partial and the rest", &format!("{mode:?}: resumed part"));
    }
}

/// Sleeps until just after the start of the next second of wall-clock time,
/// so that what follows happens within one second.
fn align_to_second() {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
    std::thread::sleep(Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos())) + Duration::from_millis(10));
}

/// Two sessions replacing one file at the same moment both succeed, and the
/// later commit wins (the temporary names must not collide).
#[test]
fn two_replaces_of_one_file_at_once_both_succeed() {
    let settings = ["write_enable=YES", "anon_upload_enable=YES", "anon_other_write_enable=YES"];
    for mode in modes() {
        let (_dir, root) = served();
        let target = root.join("up/data.bin");
        std::fs::write(&target, b"old\n").unwrap();
        give_to_anon(&target);
        let server = start(mode, &root, &settings);
        let full = bytes(200_000, 3);
        let mut a = login(&server);
        let mut b = login(&server);
        align_to_second();
        let data = a.start_upload("up/data.bin", &full[..50_000]);
        let (_, code, text) = b.upload("STOR up/data.bin", b"B's replacement");
        assert_eq!(code, 226, "{mode:?}: the second replace: {text}");
        assert_file(&target, b"B's replacement", &format!("{mode:?}: B's replace"));
        let (code, text) = finish(&mut a, data, &full[50_000..]);
        assert_eq!(code, 226, "{mode:?}: the first replace: {text}");
        assert_file(&target, &full, &format!("{mode:?}: A's replace, committed last"));
        assert_eq!(names(&root.join("up")), ["data.bin"], "{mode:?}: leftovers");
    }
}

/// A replace keeps the file's owner, group and mode, and its hard links,
/// also when the uploader may write the file but could not give a new file
/// its owner (then it is written in place, as vsftpd does). Runs as root only:
/// the sessions must act as another account than the file's owner.
#[test]
fn a_replace_keeps_owner_mode_and_hard_links() {
    if !ftpd_tests::root_or_skip(
        "upload_security::a_replace_keeps_owner_mode_and_hard_links",
        "the sessions must act as another account than the files' owner",
    ) {
        return;
    }
    let settings = ["write_enable=YES", "anon_upload_enable=YES", "anon_other_write_enable=YES"];
    for atomic in ["NO", "YES"] {
        for mode in modes() {
            let (_dir, root) = served();
            let atomic_setting = format!("ftpd_atomic_uploads={atomic}");
            let mut s = settings.to_vec();
            s.push(&atomic_setting);
            let server = start(mode, &root, &s);
            let what = format!("atomic={atomic} {mode:?}");
            let mut c = login(&server);

            // Root's file, writable by everyone: the uploader cannot chown a new one to root.
            let shared = root.join("up/shared.txt");
            std::fs::write(&shared, b"root's old content\n").unwrap();
            std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
            let (_, code, text) = c.upload("STOR up/shared.txt", b"new content\n");
            assert_eq!(code, 226, "{what}: {text}");
            assert_file(&shared, b"new content\n", &what);
            let md = std::fs::metadata(&shared).unwrap();
            assert_eq!(
                (md.uid(), md.gid(), md.mode() & 0o7777),
                (0, 0, 0o666),
                "{what}: owner and mode of root's file"
            );

            // The uploader's own file with a second hard link: both names see the new content.
            let linked = root.join("up/linked.txt");
            std::fs::write(&linked, b"old\n").unwrap();
            give_to_anon(&linked);
            std::fs::hard_link(&linked, root.join("link2.txt")).unwrap();
            let (_, code, text) = c.upload("STOR up/linked.txt", b"new through a link\n");
            assert_eq!(code, 226, "{what}: {text}");
            assert_file(&root.join("link2.txt"), b"new through a link\n", &format!("{what}: the other link"));
            assert_eq!(std::fs::metadata(&linked).unwrap().nlink(), 2, "{what}: links");
            assert_eq!(names(&root.join("up")), ["linked.txt", "shared.txt"], "{what}: leftovers");
        }
    }
}

/// The fsync and the rename of a large replace do not stall other sessions:
/// another session's NOOPs are answered quickly meanwhile.
#[test]
fn noop_is_answered_while_a_large_replace_commits() {
    let settings = ["write_enable=YES", "anon_upload_enable=YES", "anon_other_write_enable=YES"];
    let (_dir, root) = served();
    let target = root.join("up/big.bin");
    std::fs::write(&target, b"old\n").unwrap();
    give_to_anon(&target);
    // One CPU: one runtime thread, so anything that blocks it stalls every session.
    let server = start(Mode::OneCpu, &root, &settings);
    let mut a = login(&server);
    let mut b = login(&server);
    let chunk = bytes(1 << 20, 4);
    let total = 600usize;
    let mut data = a.pasv_connect();
    a.cmd_ok("STOR up/big.bin", 150);
    for _ in 0..total {
        data.write_all(&chunk).unwrap();
    }
    a.wait_progress(total << 20);
    // Everything is written; closing the data connection starts the commit
    // (fsync of 600 MiB, then the rename). B pings all along.
    let pinger = std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let t = Instant::now();
            b.cmd_ok("NOOP", 200);
            worst = worst.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
        worst
    });
    std::thread::sleep(Duration::from_millis(50));
    let committing = Instant::now();
    drop(data);
    let (code, text) = a.read_reply();
    assert_eq!(code, 226, "{text}");
    let commit = committing.elapsed();
    let worst = pinger.join().unwrap();
    eprintln!("commit took {commit:?}, worst NOOP {worst:?}");
    assert_eq!(std::fs::metadata(&target).unwrap().len(), (total as u64) << 20);
    // Bounded, not exact: a NOOP never waits for the commit. On this one
    // CPU a blocked runtime makes the worst NOOP as slow as the commit.
    assert!(worst < Duration::from_millis(300), "a NOOP waited {worst:?} during a {commit:?} commit");
    assert!(worst * 2 < commit.max(Duration::from_millis(100)), "a NOOP waited {worst:?} during a {commit:?} commit");
}

/// A part older than a day that a client resumes is resumed, not swept away
/// under it (which would publish the new bytes after a hole of zeros); a
/// REST beyond the part, or with no part at all, is refused and publishes
/// nothing.
#[test]
fn a_resume_never_writes_past_the_end_of_its_part() {
    for mode in modes() {
        let (_dir, root) = served();
        let up = root.join("up");
        let old = bytes(20_000, 5);
        let part = up.join(part_name("big.iso", "anonymous"));
        std::fs::write(&part, &old).unwrap();
        give_to_anon(&part);
        age(&part, "2 days ago");
        let server = start(mode, &root, &UPLOAD);
        let mut c = login(&server);
        assert_eq!(c.cmd_ok("SIZE up/big.iso", 213), "213 20000\r\n", "{mode:?}");
        c.cmd_ok("REST 20000", 350);
        let (_, code, text) = c.upload("STOR up/big.iso", b"the rest");
        assert_eq!(code, 226, "{mode:?}: resuming a 2-day-old part: {text}");
        assert_file(&up.join("big.iso"), &[&old[..], b"the rest"].concat(), &format!("{mode:?}: resumed old part"));

        // Beyond the part's end: refused, the part kept as it was.
        let part = up.join(part_name("short.bin", "anonymous"));
        std::fs::write(&part, b"12345").unwrap();
        give_to_anon(&part);
        c.cmd_ok("REST 6", 350);
        let (_, code, text) = c.upload("STOR up/short.bin", b"X");
        assert_eq!((code, text.as_str()), REFUSED, "{mode:?}: REST beyond the part");
        assert_file(&part, b"12345", &format!("{mode:?}: the part after a refused resume"));
        // At its end exactly: fine.
        c.cmd_ok("REST 5", 350);
        let (_, code, _) = c.upload("STOR up/short.bin", b"678");
        assert_eq!(code, 226, "{mode:?}");
        assert_file(&up.join("short.bin"), b"12345678", &format!("{mode:?}: resumed at the end"));

        // No part at all: refused, and no empty part left behind.
        c.cmd_ok("REST 500", 350);
        let (_, code, text) = c.upload("STOR up/none.bin", b"X");
        assert_eq!((code, text.as_str()), REFUSED, "{mode:?}: REST with no part");
        assert_eq!(names(&up), ["big.iso", "short.bin"], "{mode:?}: leftovers");
        assert!(server.log().contains("REST 500 is beyond the 0 bytes of the part"), "{mode:?}: the log says why");
    }
}

/// The sweep of stale leftovers removes only files ftpd could have made:
/// owned by the uid the session acts as, and named exactly as ftpd names
/// them. Old look-alikes of other owners, or of other names, stay.
#[test]
fn the_sweep_removes_only_leftovers_ftpd_made() {
    for mode in modes() {
        let (_dir, root) = served();
        let up = root.join("up");
        make_writable(&up);
        let ours = [part_name("gone.bin", "anonymous"), ".ftpd-tmp.gone.txt.0123456789abcdef".to_string()];
        let lookalikes = [".opfile.ftpd-part", ".ftpd-tmp.opnotes", ".ftpd-tmp.x.bin.1234", ".x.1234.ftpd-part"];
        // ftpd's own names, but another owner's files (root's): made by no session.
        let foreign = [part_name("root.bin", "anonymous"), ".ftpd-tmp.root.txt.fedcba9876543210".to_string()];
        for name in ours.iter().map(String::as_str).chain(lookalikes) {
            std::fs::write(up.join(name), b"x").unwrap();
            give_to_anon(&up.join(name));
            age(&up.join(name), "2 days ago");
        }
        if is_root() {
            for name in &foreign {
                std::fs::write(up.join(name), b"root's").unwrap();
                age(&up.join(name), "2 days ago");
            }
        }
        let server = start(mode, &root, &UPLOAD);
        let mut c = login(&server);
        let (_, code, text) = c.upload("STOR up/new.bin", b"new");
        assert_eq!(code, 226, "{mode:?}: {text}");
        let mut want: Vec<String> = lookalikes.iter().map(|s| (*s).to_string()).collect();
        if is_root() {
            want.extend(foreign.iter().cloned());
        }
        want.push("new.bin".into());
        want.sort();
        assert_eq!(names(&up), want, "{mode:?}: after the sweep");
    }
}

/// A part belongs to the login name, not the uid: virtual users all act as
/// `guest_username`, yet one neither sees (SIZE) nor continues (REST+STOR)
/// another's interrupted upload. Each writes their own part; the first
/// user still resumes theirs intact. Virtual users need the root-started
/// server, so runs as root only.
#[test]
fn a_part_belongs_to_its_login_name_not_its_uid() {
    if !ftpd_tests::root_or_skip(
        "upload_security::a_part_belongs_to_its_login_name_not_its_uid",
        "virtual users need the root-started server",
    ) {
        return;
    }
    let (dir, root) = served();
    let users = dir.path().join("vusers");
    ftpd_passwd(&users, "alice", "alicepw");
    ftpd_passwd(&users, "bob", "bobpw");
    let vu = format!("virtual_users_file={}", users.display());
    let lr = format!("local_root={}", root.display());
    let settings = [
        "anonymous_enable=NO",
        "local_enable=YES",
        "write_enable=YES",
        "guest_enable=YES",
        "guest_username=nobody",
        "virtual_use_local_privs=YES",
        "allow_writeable_chroot=YES",
        "ftpd_atomic_uploads=YES",
        &vu,
        &lr,
    ];
    let server = Server::start(&root, &settings);
    let log_in = |user: &str, pw: &str| {
        let mut c = server.connect();
        c.cmd_ok(&format!("USER {user}"), 331);
        c.cmd_ok(&format!("PASS {pw}"), 230);
        c.cmd_ok("TYPE I", 200);
        c
    };
    let full = bytes(40_000, 6);
    let mut alice = log_in("alice", "alicepw");
    let data = alice.start_upload("/up/doc.bin", &full[..13_000]);
    alice.abort_transfer();
    drop(data);
    assert_eq!(alice.cmd_ok("SIZE /up/doc.bin", 213), "213 13000\r\n", "alice sees her part");

    let mut bob = log_in("bob", "bobpw");
    bob.cmd_ok("SIZE /up/doc.bin", 550);
    bob.cmd_ok("REST 13000", 350);
    let (_, code, text) = bob.upload("STOR /up/doc.bin", b"BOB");
    assert_eq!((code, text.as_str()), REFUSED, "bob resuming alice's part");
    assert!(!root.join("up/doc.bin").exists(), "nothing published by bob's resume");
    // Bob's own upload of the name is his alone.
    let (_, code, text) = bob.upload("STOR /up/doc.bin", b"bob's own");
    assert_eq!(code, 226, "{text}");
    assert_file(&root.join("up/doc.bin"), b"bob's own", "bob's upload");

    // Alice's part is intact, and hers to finish (she may overwrite).
    assert_eq!(alice.cmd_ok("SIZE /up/doc.bin", 213), "213 9\r\n", "the published file now");
    alice.cmd_ok("DELE /up/doc.bin", 250);
    assert_eq!(alice.cmd_ok("SIZE /up/doc.bin", 213), "213 13000\r\n", "alice's part");
    alice.cmd_ok("REST 13000", 350);
    let (_, code, text) = alice.upload("STOR /up/doc.bin", &full[13_000..]);
    assert_eq!(code, 226, "{text}");
    assert_file(&root.join("up/doc.bin"), &full, "alice's resumed upload");
    assert_eq!(names(&root.join("up")), ["doc.bin"], "leftovers");
}

/// Two logins of one uid uploading one name at once each write their own
/// part; for users who may not overwrite, the later commit is refused
/// (`RENAME_NOREPLACE`) and the first upload stays whole. Virtual users
/// without `virtual_use_local_privs` get the anonymous rights; as root only.
#[test]
fn two_logins_uploading_one_name_write_their_own_parts() {
    if !ftpd_tests::root_or_skip(
        "upload_security::two_logins_uploading_one_name_write_their_own_parts",
        "virtual users need the root-started server",
    ) {
        return;
    }
    let (dir, root) = served();
    let users = dir.path().join("vusers");
    ftpd_passwd(&users, "alice", "alicepw");
    ftpd_passwd(&users, "bob", "bobpw");
    let vu = format!("virtual_users_file={}", users.display());
    let lr = format!("local_root={}", root.display());
    let settings = [
        "anonymous_enable=NO",
        "local_enable=YES",
        "write_enable=YES",
        "anon_upload_enable=YES",
        "guest_enable=YES",
        "guest_username=nobody",
        "allow_writeable_chroot=YES",
        "ftpd_atomic_uploads=YES",
        &vu,
        &lr,
    ];
    let server = Server::start(&root, &settings);
    let log_in = |user: &str, pw: &str| {
        let mut c = server.connect();
        c.cmd_ok(&format!("USER {user}"), 331);
        c.cmd_ok(&format!("PASS {pw}"), 230);
        c.cmd_ok("TYPE I", 200);
        c
    };
    let full = bytes(100_000, 8);
    let mut alice = log_in("alice", "alicepw");
    let data = alice.start_upload("/up/same.bin", &full[..30_000]);
    let mut bob = log_in("bob", "bobpw");
    let (_, code, text) = bob.upload("STOR /up/same.bin", b"bob's");
    assert_eq!(code, 226, "bob's upload beside alice's: {text}");
    let (code, text) = finish(&mut alice, data, &full[30_000..]);
    assert_eq!((code, text.as_str()), REFUSED, "alice's commit over bob's file");
    assert_file(&root.join("up/same.bin"), b"bob's", "the first commit stays");
    assert_eq!(names(&root.join("up")), ["same.bin"], "leftovers");
}

/// STOU without a name creates a unique name inside the current directory
/// (not beside it), and its 150 reply names it.
#[test]
fn stou_without_a_name_stays_in_the_current_directory() {
    for atomic in ["NO", "YES"] {
        for mode in modes() {
            let (_dir, root) = served();
            std::fs::create_dir(root.join("up/sub")).unwrap();
            make_writable(&root.join("up/sub"));
            let a = format!("ftpd_atomic_uploads={atomic}");
            let server = start(mode, &root, &["write_enable=YES", "anon_upload_enable=YES", &a]);
            let mut c = login(&server);
            c.cmd_ok("CWD up/sub", 250);
            let (first, code, _) = c.upload("STOU", b"one");
            assert_eq!((first.as_str(), code), ("150 FILE: ftpd.upload\r\n", 226), "{atomic} {mode:?}");
            let (first, code, _) = c.upload("STOU", b"two");
            assert_eq!((first.as_str(), code), ("150 FILE: ftpd.upload.1\r\n", 226), "{atomic} {mode:?}");
            assert_file(&root.join("up/sub/ftpd.upload"), b"one", &format!("{atomic} {mode:?}"));
            assert_file(&root.join("up/sub/ftpd.upload.1"), b"two", &format!("{atomic} {mode:?}"));
            assert_eq!(names(&root.join("up")), ["sub"], "{atomic} {mode:?}: nothing beside the directory");
        }
    }
}

/// Names up to `NAME_MAX` (255 bytes) upload atomically and resume: the part
/// file's name is shortened with a hash when the name is too long for it.
#[test]
fn names_up_to_255_bytes_upload_and_resume() {
    for mode in modes() {
        let (_dir, root) = served();
        let server = start(mode, &root, &UPLOAD);
        let mut c = login(&server);
        for len in [200, 228, 245, 255] {
            let name: String = std::iter::repeat_n('n', len - 4).chain(".bin".chars()).collect();
            let (_, code, text) = c.upload(&format!("STOR up/{name}"), b"whole");
            assert_eq!(code, 226, "{mode:?}: STOR of a {len}-byte name: {text}");
            assert_file(&root.join("up").join(&name), b"whole", &format!("{mode:?}: {len}"));
        }
        let name: String = std::iter::repeat_n('r', 255).collect();
        let full = bytes(50_000, 7);
        let data = c.start_upload(&format!("up/{name}"), &full[..20_000]);
        c.abort_transfer();
        drop(data);
        assert_eq!(c.cmd_ok(&format!("SIZE up/{name}"), 213), "213 20000\r\n", "{mode:?}");
        c.cmd_ok("REST 20000", 350);
        let (_, code, text) = c.upload(&format!("STOR up/{name}"), &full[20_000..]);
        assert_eq!(code, 226, "{mode:?}: {text}");
        assert_file(&root.join("up").join(&name), &full, &format!("{mode:?}: resumed 255-byte name"));
        assert_eq!(names(&root.join("up")).len(), 5, "{mode:?}: leftovers");
    }
}
