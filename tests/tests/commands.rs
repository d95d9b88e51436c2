//! Commands that change the tree (STOR APPE STOU MKD RMD DELE RNFR/RNTO SITE)
//! and the options that allow each of them, with vsftpd's replies; the
//! RFC 3659/2389/7151 extras (FEAT, MLST, MLSD, OPTS, HOST); and the small
//! commands vsftpd answers for compatibility (ALLO MODE STRU ACCT HELP).

use std::{
    os::unix::fs::MetadataExt,
    path::Path,
    process::Command,
    time::{Duration, SystemTime},
};

use ftpd_tests::{Ftp, Server, assert_file, make_writable, mode_of, python, random_file, run_ok, sha256_file};

/// Every write permission an anonymous user can get.
const WRITE: [&str; 4] =
    ["write_enable=YES", "anon_upload_enable=YES", "anon_mkdir_write_enable=YES", "anon_other_write_enable=YES"];

/// `dir/root` is served: `pub/a.txt` ("alpha\n"), `pub/b.txt` ("bravo\n"),
/// all of it writable by the account anonymous sessions act as.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("pub")).expect("mkdir");
    std::fs::write(root.join("pub/a.txt"), b"alpha\n").expect("write");
    std::fs::write(root.join("pub/b.txt"), b"bravo\n").expect("write");
    make_writable(&root);
    dir
}

fn settings<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(extra).copied().collect()
}

#[test]
fn stor_with_ftplib_and_curl() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &WRITE);

    // Python's ftplib: STOR from a local file.
    let local = dir.path().join("local.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let out = python(&format!(
        "{}with open({:?}, 'rb') as src:\n    print(f.storbinary('STOR pub/up.bin', src))\nprint(f.size('pub/up.bin'))\nprint(f.quit())\n",
        server.py_login(),
        local.display().to_string()
    ));
    assert_eq!(out, "226 Transfer complete.\n200000\n221 Goodbye.\n");
    assert_file(&root.join("pub/up.bin"), &data, "ftplib STOR");
    // file_open_mode 0666 & ~anon_umask 077.
    assert_eq!(mode_of(&root.join("pub/up.bin")), 0o600);

    // curl -T.
    let src = dir.path().join("curl-src.bin");
    random_file(&src, 3 << 20);
    run_ok(Command::new("curl").args(["-sS", "--max-time", "60", "-T"]).arg(&src).arg(server.url("/pub/curl.bin")));
    assert_eq!(sha256_file(&root.join("pub/curl.bin")), sha256_file(&src));
    assert_eq!(mode_of(&root.join("pub/curl.bin")), 0o600);
}

#[test]
fn stou_picks_a_unique_name() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &WRITE);
    let mut c = server.login();
    // STOU: a taken name gets a numeric suffix, a free one is used as it is.
    c.cmd_ok("CWD pub", 250);
    let (first, code, end) = c.upload("STOU a.txt", b"unique one");
    assert_eq!(first, "150 FILE: a.txt.1\r\n");
    assert_eq!(code, 226, "{end}");
    let (first, code, _) = c.upload("STOU a.txt", b"unique two");
    assert_eq!((first.as_str(), code), ("150 FILE: a.txt.2\r\n", 226));
    let (first, code, _) = c.upload("STOU fresh.txt", b"unique three");
    assert_eq!((first.as_str(), code), ("150 FILE: fresh.txt\r\n", 226));
    assert_eq!(std::fs::read(root.join("pub/a.txt")).unwrap(), b"alpha\n", "STOU must not touch the original");
    assert_eq!(std::fs::read(root.join("pub/a.txt.1")).unwrap(), b"unique one");
    assert_eq!(std::fs::read(root.join("pub/a.txt.2")).unwrap(), b"unique two");
    assert_eq!(std::fs::read(root.join("pub/fresh.txt")).unwrap(), b"unique three");

    // STOR over a directory cannot work.
    c.cmd_ok("CWD /", 250);
    let (_, code, text) = c.upload("STOR pub", b"x");
    assert_eq!(code, 553, "{text}");
    assert!(root.join("pub").is_dir());
}

#[test]
fn appe_appends_to_existing_and_new_files() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &WRITE);
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    // A new file first, then appending to it.
    let (first, code, end) = c.upload("APPE pub/new.txt", b"fresh");
    assert_eq!((first.as_str(), code), ("150 Ok to send data.\r\n", 226), "{end}");
    assert_eq!(std::fs::read(root.join("pub/new.txt")).unwrap(), b"fresh");
    assert_eq!(mode_of(&root.join("pub/new.txt")), 0o600);
    let (_, code, end) = c.upload("APPE pub/new.txt", b" and more");
    assert_eq!(code, 226, "APPE to an existing file: {end}");
    assert_eq!(std::fs::read(root.join("pub/new.txt")).unwrap(), b"fresh and more");
    // A bigger append to a file that was there before the server started.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let (_, code, end) = c.upload("APPE pub/a.txt", &data);
    assert_eq!(code, 226, "{end}");
    let mut want = b"alpha\n".to_vec();
    want.extend_from_slice(&data);
    assert_file(&root.join("pub/a.txt"), &want, "APPE");
    // ftplib's APPE.
    let out = python(&format!(
        "import io\n{}print(f.storbinary('APPE pub/b.txt', io.BytesIO(b'+ftplib')))\n",
        server.py_login()
    ));
    assert_eq!(out, "226 Transfer complete.\n");
    assert_eq!(std::fs::read(root.join("pub/b.txt")).unwrap(), b"bravo\n+ftplib");
}

#[test]
fn mkd_rmd_dele_and_rename() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &WRITE);
    let mut c = server.login();

    assert_eq!(c.cmd_ok("MKD newdir", 257), "257 \"/newdir\" created\r\n");
    assert!(root.join("newdir").is_dir());
    assert_eq!(mode_of(&root.join("newdir")), 0o700, "0777 & ~anon_umask 077");
    c.cmd_ok("CWD newdir", 250);
    assert_eq!(c.cmd_ok("MKD sub", 257), "257 \"/newdir/sub\" created\r\n");
    assert_eq!(c.cmd_ok("XMKD /newdir/quo\"te", 257), "257 \"/newdir/quo\"\"te\" created\r\n");
    assert_eq!(c.cmd_ok("MKD sub", 550), "550 Create directory operation failed.\r\n");
    c.cmd_ok("CWD /", 250);

    assert_eq!(c.cmd_ok("RMD newdir", 550), "550 Remove directory operation failed.\r\n", "not empty");
    assert_eq!(c.cmd_ok("RMD newdir/sub", 250), "250 Remove directory operation successful.\r\n");
    c.cmd_ok("XRMD newdir/quo\"te", 250);
    assert!(!root.join("newdir/sub").exists());

    assert_eq!(c.cmd_ok("DELE pub/a.txt", 250), "250 Delete operation successful.\r\n");
    assert!(!root.join("pub/a.txt").exists());
    assert_eq!(c.cmd_ok("DELE pub/a.txt", 550), "550 Delete operation failed.\r\n");
    c.cmd_ok("DELE newdir", 550); // a directory is not deleted by DELE
    assert!(root.join("newdir").is_dir());

    assert_eq!(c.cmd_ok("RNFR pub/b.txt", 350), "350 Ready for RNTO.\r\n");
    assert_eq!(c.cmd_ok("RNTO pub/c.txt", 250), "250 Rename successful.\r\n");
    assert!(!root.join("pub/b.txt").exists());
    assert_eq!(std::fs::read(root.join("pub/c.txt")).unwrap(), b"bravo\n");
    // Into another directory, and a directory itself.
    c.cmd_ok("RNFR pub/c.txt", 350);
    c.cmd_ok("RNTO /newdir/moved.txt", 250);
    assert_eq!(std::fs::read(root.join("newdir/moved.txt")).unwrap(), b"bravo\n");
    c.cmd_ok("RNFR newdir", 350);
    c.cmd_ok("RNTO renamed", 250);
    assert!(root.join("renamed/moved.txt").is_file());
    // RNTO needs an RNFR right before it; RNFR needs an existing file.
    assert_eq!(c.cmd_ok("RNTO x", 503), "503 RNFR required first.\r\n");
    assert_eq!(c.cmd_ok("RNFR no-such-file", 550), "550 RNFR command failed.\r\n");
    c.cmd_ok("RNTO x", 503);

    // SITE CHMOD is never allowed to anonymous users, whatever else is.
    let before = mode_of(&root.join("renamed/moved.txt"));
    assert_eq!(c.cmd_ok("SITE CHMOD 0777 renamed/moved.txt", 550), "550 Permission denied.\r\n");
    assert_eq!(mode_of(&root.join("renamed/moved.txt")), before);
    c.cmd_ok("SITE CHMOD 0777 renamed", 550);
}

/// With `write_enable=NO` nothing changes, whatever the `anon_*` switches say.
#[test]
fn write_enable_no_refuses_every_change() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &settings(&WRITE, &["write_enable=NO"]));
    let mut c = server.login();
    let denied = "550 Permission denied.\r\n";
    for cmd in ["STOR pub/new.txt", "APPE pub/a.txt", "STOU pub/a.txt"] {
        let (_, code, text) = c.upload(cmd, b"data");
        assert_eq!((code, text.as_str()), (550, denied), "{cmd}");
    }
    for cmd in ["MKD pub/d", "RMD pub", "DELE pub/a.txt", "RNFR pub/a.txt", "SITE CHMOD 777 pub/a.txt"] {
        assert_eq!(c.cmd_ok(cmd, 550), denied, "{cmd}");
    }
    assert!(!root.join("pub/new.txt").exists() && !root.join("pub/d").exists() && !root.join("pub/a.txt.1").exists());
    assert_eq!(std::fs::read(root.join("pub/a.txt")).unwrap(), b"alpha\n");
    // The default config (no write settings at all) is read-only too.
    let server = Server::start(&root, &[]);
    let mut c = server.login();
    let (_, code, _) = c.upload("STOR pub/new.txt", b"data");
    assert_eq!(code, 550);
    c.cmd_ok("MKD pub/d", 550);
    c.cmd_ok("DELE pub/a.txt", 550);
    assert!(root.join("pub/a.txt").exists());
}

#[test]
fn anon_upload_enable_no_refuses_new_files_only() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &settings(&WRITE, &["anon_upload_enable=NO"]));
    let mut c = server.login();
    let (_, code, text) = c.upload("STOR pub/new.txt", b"data");
    assert_eq!((code, text.as_str()), (550, "550 Permission denied.\r\n"));
    let (_, code, _) = c.upload("STOU pub/a.txt", b"data");
    assert_eq!(code, 550);
    assert!(!root.join("pub/new.txt").exists() && !root.join("pub/a.txt.1").exists());
    // The other switches still work.
    c.cmd_ok("MKD pub/d", 257);
    c.cmd_ok("DELE pub/b.txt", 250);
    c.cmd_ok("RNFR pub/a.txt", 350);
    c.cmd_ok("RNTO pub/z.txt", 250);
}

#[test]
fn anon_mkdir_write_enable_no_refuses_mkd_only() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &settings(&WRITE, &["anon_mkdir_write_enable=NO"]));
    let mut c = server.login();
    assert_eq!(c.cmd_ok("MKD pub/d", 550), "550 Permission denied.\r\n");
    assert_eq!(c.cmd_ok("XMKD pub/d", 550), "550 Permission denied.\r\n");
    assert!(!root.join("pub/d").exists());
    let (_, code, _) = c.upload("STOR pub/new.txt", b"data");
    assert_eq!(code, 226);
    assert_eq!(std::fs::read(root.join("pub/new.txt")).unwrap(), b"data");
}

/// `anon_other_write_enable=NO`: new files yes; deleting, renaming and
/// overwriting no. vsftpd creates anonymous uploads with O_EXCL in that case,
/// so an overwrite (or a REST resume of an existing file) fails with
/// `553 Could not create file.`, while DELE/RNFR/RMD are refused outright.
#[test]
fn anon_other_write_enable_no_protects_existing_files() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &settings(&WRITE, &["anon_other_write_enable=NO"]));
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let (_, code, _) = c.upload("STOR pub/new.txt", b"new");
    assert_eq!(code, 226);
    c.cmd_ok("MKD pub/d", 257);

    let (_, code, text) = c.upload("STOR pub/a.txt", b"overwritten");
    assert_eq!((code, text.as_str()), (553, "553 Could not create file.\r\n"));
    c.cmd_ok("REST 3", 350);
    let (_, code, text) = c.upload("STOR pub/a.txt", b"resumed");
    assert_eq!((code, text.as_str()), (553, "553 Could not create file.\r\n"));
    let (_, code, _) = c.upload("STOR pub/new.txt", b"again");
    assert_eq!(code, 553, "an anonymous user's own upload is not overwritable either");
    for cmd in ["DELE pub/a.txt", "RNFR pub/a.txt", "RMD pub/d"] {
        assert_eq!(c.cmd_ok(cmd, 550), "550 Permission denied.\r\n", "{cmd}");
    }
    assert_eq!(std::fs::read(root.join("pub/a.txt")).unwrap(), b"alpha\n");
    assert_eq!(std::fs::read(root.join("pub/new.txt")).unwrap(), b"new");
    assert!(root.join("pub/d").is_dir());
}

/// MFMT (draft-somers-ftp-mfxx) sets a file's modification time in UTC,
/// answers the time it set, and needs what vsftpd's `MDTM TIME FILE` needs:
/// `mdtm_write` and the right to change existing files; `deny_file` covers
/// the file name after the time.
#[test]
fn mfmt_sets_modification_times_with_mdtms_rights() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &settings(&WRITE, &["deny_file={*.secret}"]));
    std::fs::write(root.join("pub/x.secret"), b"s").expect("write");
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    // Setting a time needs the file's owner (utime(2)), as in vsftpd: files
    // the anonymous account uploaded.
    for name in ["pub/up.txt", "pub/up2.txt"] {
        assert_eq!(c.upload(&format!("STOR {name}"), b"up").1, 226);
    }
    assert_eq!(c.cmd_ok("MFMT 20210203040506 pub/up.txt", 213), "213 Modify=20210203040506; pub/up.txt\r\n");
    let mtime = |name: &str| std::fs::metadata(root.join(name)).expect("stat").mtime();
    assert_eq!(mtime("pub/up.txt"), 1_612_325_106, "the time is UTC");
    assert_eq!(c.cmd_ok("MDTM pub/up.txt", 213), "213 20210203040506\r\n");
    // A fraction is accepted and dropped.
    c.cmd_ok("MFMT 19991231235900.250 pub/up2.txt", 213);
    assert_eq!(mtime("pub/up2.txt"), 946_684_740);
    for bad in ["MFMT", "MFMT 20210203 pub/up.txt", "MFMT 20211303040506 pub/up.txt", "MFMT 20210203040506", "MFMT x y"]
    {
        assert_eq!(c.cmd_ok(bad, 501), "501 MFMT needs YYYYMMDDHHMMSS and a file.\r\n", "{bad}");
    }
    assert_eq!(mtime("pub/up.txt"), 1_612_325_106, "a refused MFMT changes nothing");
    for missing in ["pub/none.txt", "pub", "../../etc/passwd", "pub/a.txt"] {
        let reply = c.cmd_ok(&format!("MFMT 20210203040506 {missing}"), 550);
        assert_eq!(reply, "550 Could not set file modification time.\r\n", "{missing}");
    }
    assert_eq!(c.cmd_ok("MFMT 20210203040506 pub/x.secret", 550), "550 Permission denied.\r\n");
    drop(c);

    for extra in ["anon_other_write_enable=NO", "mdtm_write=NO"] {
        let server = Server::start(&root, &settings(&WRITE, &[extra]));
        let mut c = server.login();
        assert_eq!(c.cmd_ok("MFMT 20000101000000 pub/up.txt", 550), "550 Permission denied.\r\n", "{extra}");
        assert_eq!(mtime("pub/up.txt"), 1_612_325_106, "{extra}");
    }
    let server = Server::start(&root, &[]);
    let mut c = server.login();
    assert_eq!(c.cmd_ok("MFMT 20000101000000 pub/up.txt", 550), "550 Permission denied.\r\n", "read-only");
    let mut fresh = server.connect();
    assert_eq!(fresh.cmd_ok("MFMT 20000101000000 pub/up.txt", 530).get(..4), Some("530 "), "before login");
}

/// vsftpd only dispatches APPE when `anon_other_write_enable` allows it
/// (postlogin.c), so APPE is `550 Permission denied.` for an existing file
/// and for a new one alike.
#[test]
fn appe_needs_anon_other_write_enable() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &settings(&WRITE, &["anon_other_write_enable=NO"]));
    let mut c = server.login();
    let (_, code, text) = c.upload("APPE pub/a.txt", b"more");
    assert_eq!((code, text.as_str()), (550, "550 Permission denied.\r\n"), "APPE to an existing file");
    assert_eq!(std::fs::read(root.join("pub/a.txt")).unwrap(), b"alpha\n");
    let (_, code, text) = c.upload("APPE pub/appended.txt", b"more");
    assert_eq!((code, text.as_str()), (550, "550 Permission denied.\r\n"), "APPE to a new file");
    assert!(!root.join("pub/appended.txt").exists());
}

#[test]
fn upload_modes_follow_umask_and_file_open_mode() {
    let dir = tree();
    let root = dir.path().join("root");
    let server = Server::start(&root, &settings(&WRITE, &["anon_umask=022"]));
    let mut c = server.login();
    let (_, code, _) = c.upload("STOR pub/f644", b"x");
    assert_eq!(code, 226);
    assert_eq!(mode_of(&root.join("pub/f644")), 0o644);
    c.cmd_ok("MKD pub/d755", 257);
    assert_eq!(mode_of(&root.join("pub/d755")), 0o755);

    // vsftpd has no SITE commands for anonymous users (was: SITE UMASK
    // answered); local users' SITE UMASK is compared with vsftpd in vsftpd_diff.
    for site in ["SITE UMASK", "SITE UMASK 027", "SITE HELP", "SITE FROB"] {
        assert_eq!(c.cmd_ok(site, 550), "550 Permission denied.\r\n");
    }
    let (_, code, _) = c.upload("STOR pub/f644b", b"x");
    assert_eq!(code, 226);
    assert_eq!(mode_of(&root.join("pub/f644b")), 0o644, "the refused SITE UMASK changed nothing");

    let server = Server::start(&root, &settings(&WRITE, &["file_open_mode=0640", "anon_umask=0"]));
    let mut c = server.login();
    let (_, code, _) = c.upload("STOR pub/open640", b"x");
    assert_eq!(code, 226);
    assert_eq!(mode_of(&root.join("pub/open640")), 0o640);
}

#[test]
fn feat_opts_and_host() {
    let dir = tree();
    let server = Server::start(&dir.path().join("root"), &[]);
    let mut c = server.connect();
    // Before login: FEAT and HOST (RFC 7151) work.
    let feat = c.cmd_ok("FEAT", 211);
    for f in [
        "EPRT",
        "EPSV",
        "HOST",
        "MDTM",
        "MFMT",
        "MLST type*;size*;modify*;perm*;unique*;",
        "PASV",
        "REST STREAM",
        "SIZE",
        "UTF8",
    ] {
        assert!(feat.contains(&format!("\r\n {f}\r\n")), "FEAT lacks {f}: {feat}");
    }
    assert!(feat.starts_with("211-Features:\r\n") && feat.ends_with("211 End\r\n"), "{feat}");
    assert_eq!(c.cmd_ok("HOST", 501).get(..4), Some("501 "));
    assert_eq!(c.cmd_ok("HOST ftp.example.org", 220), "220 Host accepted.\r\n");
    assert_eq!(c.cmd_ok("OPTS UTF8 ON", 200), "200 Always in UTF8 mode.\r\n");
    c.cmd_ok("USER anonymous", 230);
    assert_eq!(c.cmd_ok("HOST ftp.example.org", 503).get(..4), Some("503 "));
    c.cmd_ok("OPTS UTF8 ON", 200);
    c.cmd_ok("OPTS MLST type;size;", 200);
    c.cmd_ok("OPTS NONSENSE", 501);
    assert_eq!(c.cmd_ok("FEAT", 211), feat, "FEAT is the same after login");
}

/// Sets a file's modification time.
fn set_mtime(p: &Path, t: SystemTime) {
    std::fs::File::options().write(true).open(p).unwrap().set_modified(t).unwrap();
}

fn unique(p: &Path) -> String {
    let m = std::fs::metadata(p).unwrap();
    format!("{:x}g{:x}", m.dev(), m.ino())
}

#[test]
fn mlst_and_mlsd_facts() {
    let dir = tree();
    let root = dir.path().join("root");
    std::fs::create_dir(root.join("pub/sub")).unwrap();
    // 2001-02-03 04:05:06 UTC
    set_mtime(&root.join("pub/a.txt"), SystemTime::UNIX_EPOCH + Duration::from_secs(981_173_106));
    let server = Server::start(&root, &[]);
    let mut c = server.login();

    let mlst = c.cmd_ok("MLST pub/a.txt", 250);
    let fact =
        format!("type=file;size=6;modify=20010203040506;perm=r;unique={}; /pub/a.txt", unique(&root.join("pub/a.txt")));
    assert_eq!(mlst, format!("250-Listing /pub/a.txt\r\n {fact}\r\n250 End\r\n"));
    c.cmd_ok("MLST pub/nothing", 550);

    let (listing, code, _) = c.transfer("MLSD pub");
    assert_eq!(code, 226);
    let listing = String::from_utf8(listing).unwrap();
    let lines: Vec<&str> = listing.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 3, "{listing}");
    assert_eq!(
        lines[0],
        format!("type=file;size=6;modify=20010203040506;perm=r;unique={}; a.txt", unique(&root.join("pub/a.txt")))
    );
    assert!(lines[1].starts_with("type=file;size=6;modify=") && lines[1].ends_with("; b.txt"), "{listing}");
    assert!(lines[2].starts_with("type=dir;") && lines[2].contains(";perm=el;") && lines[2].ends_with("; sub"));
    assert!(lines.iter().all(|l| l.len() > 14 && l.split(';').count() == 6), "{listing}");
    let (_, code, _) = c.transfer("MLSD pub/a.txt");
    assert_eq!(code, 550, "MLSD of a file");

    // ftplib's MLSD parser understands the facts.
    let out = python(&format!(
        "{}for name, facts in f.mlsd('pub', ['type', 'size', 'modify', 'perm', 'unique']):\n    print(name, facts['type'], facts.get('size'), facts['modify'], facts['perm'])\n",
        server.py_login()
    ));
    let out: Vec<&str> = out.lines().collect();
    assert_eq!(out[0], "a.txt file 6 20010203040506 r");
    assert!(out[1].starts_with("b.txt file 6 "), "{out:?}");
    assert!(out[2].starts_with("sub dir ") && out[2].ends_with(" el"), "{out:?}");

    // With every write permission, `perm` says so.
    let server = Server::start(&root, &WRITE);
    let mut c = server.login();
    let mlst = c.cmd_ok("MLST pub/a.txt", 250);
    assert!(mlst.contains(";perm=radfw;"), "{mlst}");
    let mlst = c.cmd_ok("MLST pub/sub", 250);
    assert!(mlst.contains("type=dir;") && mlst.contains(";perm=elcmdfp;"), "{mlst}");
}

#[test]
fn small_compatibility_commands() {
    let dir = tree();
    let server = Server::start(&dir.path().join("root"), &[]);
    let mut c = server.login();
    assert_eq!(c.cmd_ok("ALLO 1000", 202), "202 ALLO command ignored.\r\n");
    assert_eq!(c.cmd_ok("MODE S", 200), "200 Mode set to S.\r\n");
    assert_eq!(c.cmd_ok("MODE B", 504), "504 Bad MODE command.\r\n");
    assert_eq!(c.cmd_ok("STRU F", 200), "200 Structure set to F.\r\n");
    assert_eq!(c.cmd_ok("STRU R", 504), "504 Bad STRU command.\r\n");
    assert_eq!(c.cmd_ok("ACCT billing", 502), "502 ACCT not implemented.\r\n");
    assert_eq!(c.cmd_ok("ABOR", 225), "225 No transfer to ABOR.\r\n");
    let help = c.cmd_ok("HELP", 214);
    assert!(help.starts_with("214-The following commands are recognized.\r\n"), "{help}");
    assert!(help.ends_with("214 Help OK.\r\n") && help.contains(" STOU ") && help.contains(" MLSD "), "{help}");
    let stat = c.cmd_ok("STAT", 211);
    assert!(stat.starts_with("211-FTP server status:\r\n") && stat.ends_with("211 End of status\r\n"), "{stat}");
    // vsftpd names the anonymous user by ftp_username (was: "anonymous").
    let me = format!("     Logged in as {}\r\n", ftpd_tests::ANON_USER);
    assert!(stat.contains("     Connected to 127.0.0.1\r\n") && stat.contains(&me), "{stat}");
    assert!(stat.contains("TYPE: ASCII\r\n"), "{stat}");
    c.cmd_ok("TYPE I", 200);
    assert!(c.cmd_ok("STAT", 211).contains("TYPE: BINARY\r\n"));
    let stat = c.cmd_ok("STAT pub", 213);
    assert!(stat.starts_with("213-Status follows:\r\n") && stat.ends_with("213 End of status\r\n"), "{stat}");
    assert!(stat.contains(" a.txt\r\n") && stat.contains(" b.txt\r\n"), "{stat}");
    // Raw session: the harness's own reply reader sees one reply per command.
    let mut raw = Ftp::connect(server.addr);
    assert_eq!(raw.read_reply().0, 220);
    assert_eq!(raw.cmd("ALLO 5").0, 530, "ALLO needs a login");
}
