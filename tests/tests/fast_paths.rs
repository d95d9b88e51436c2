//! The fast paths, and that they change nothing a client can see:
//! streamed directory listings (a chunk of entries at a time from the file
//! worker) and their cache, the anonymous login that skips the master, and
//! anonymous downloads the front opens itself. Big listings arrive whole and
//! sorted, an aborted listing stops its producer and frees what it held, a
//! killed file worker is replaced for the next anonymous login, and a file
//! `ftp_username` may not read stays refused.

use std::{
    io::Read,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use ftpd_tests::{Server, served_by_nobody, wait_for};

/// `n` empty files named `f<i>` (then `pad`) in `dir/big`, created in a
/// scrambled order so the directory order is not the sorted order.
fn big_dir(root: &Path, n: u32, pad: &str) {
    let dir = root.join("big");
    std::fs::create_dir(&dir).expect("mkdir big");
    served_by_nobody(&dir);
    for i in 0..n {
        let k = (u64::from(i) * 7919) % u64::from(n);
        std::fs::write(dir.join(format!("f{k:06}{pad}")), b"").expect("create");
    }
}

#[test]
fn a_large_listing_arrives_whole_and_sorted() {
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    big_dir(dir.path(), 12_000, "");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.login();
    // After a first command the file worker exists: the baseline.
    c.cmd_ok("CWD big", 250);
    c.cmd_ok("CWD /", 250);
    let fds = server.fd_count();
    for (cmd, kind) in [("LIST big", "LIST"), ("NLST big", "NLST"), ("MLSD big", "MLSD")] {
        let (bytes, code, text) = c.transfer(cmd);
        assert_eq!(code, 226, "{cmd}: {text}");
        let text = String::from_utf8(bytes).expect("utf-8 listing");
        let names: Vec<&str> = text
            .lines()
            .map(|l| match kind {
                "MLSD" => l.rsplit_once("; ").map_or(l, |(_, n)| n),
                "LIST" => l.rsplit(' ').next().unwrap_or(l),
                // NLST names carry the directory given, as in vsftpd.
                _ => l.strip_prefix("big/").unwrap_or(l),
            })
            .collect();
        assert_eq!(names.len(), 12_000, "{cmd}: every entry once");
        let want: Vec<String> = (0..12_000).map(|i| format!("f{i:06}")).collect();
        assert!(names.iter().zip(&want).all(|(a, b)| a == b), "{cmd}: sorted by name");
    }
    wait_for("listing threads to end", Duration::from_secs(10), || server.threads_named("listing") == 0);
    wait_for("fds back to the baseline", Duration::from_secs(10), || server.fd_count() <= fds);
}

#[test]
fn abor_during_a_listing_stops_its_producer() {
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    // 60 000 lines of about 250 bytes: more than the socket buffers hold
    // (the sender's grows to 4 MiB here; the receiver's stays small while
    // the client does not read), so the producer has to wait.
    big_dir(dir.path(), 60_000, &"x".repeat(180));
    std::fs::write(dir.path().join("small.txt"), b"x").expect("write");
    let server = Server::start(dir.path(), &[]);
    let mut c = server.login();
    c.cmd_ok("CWD big", 250);
    c.cmd_ok("CWD /", 250);
    let fds = server.fd_count();
    let mut data = c.pasv_connect();
    c.cmd_ok("LIST big", 150);
    // Read a little, then stop reading: the front stops sending, the
    // producer stops on its full channel, and nothing else is buffered.
    let mut first = vec![0u8; 8192];
    data.read_exact(&mut first).expect("the listing starts before it is complete");
    wait_for("the producer to wait on the reader", Duration::from_secs(10), || server.threads_named("listing") == 1);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(server.threads_named("listing"), 1, "one producer, parked");
    c.send_raw(b"ABOR\r\n").expect("ABOR");
    let (code, text) = c.read_reply();
    assert_eq!(code, 426, "{text}");
    let (code, text) = c.read_reply();
    assert_eq!(code, 226, "{text}");
    drop(data);
    wait_for("the producer to exit", Duration::from_secs(10), || server.threads_named("listing") == 0);
    // The session and the worker still serve.
    let (bytes, code, _) = c.transfer("NLST small.txt");
    assert_eq!((String::from_utf8_lossy(&bytes).trim(), code), ("small.txt", 226));
    wait_for("fds back to the baseline", Duration::from_secs(10), || server.fd_count() <= fds);
}

#[test]
fn anonymous_logins_survive_a_killed_file_worker() {
    if !ftpd_tests::is_root() {
        return ftpd_tests::cannot_run(
            "fast_paths::anonymous_logins_survive_a_killed_file_worker",
            "file workers exist only when ftpd starts as root",
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    std::fs::write(dir.path().join("a.txt"), b"alpha\n").expect("write");
    std::fs::set_permissions(dir.path().join("a.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let server = Server::start(dir.path(), &["no_anon_password=NO"]);
    let get = |server: &Server| {
        let mut c = server.connect();
        c.cmd_ok("USER anonymous", 331);
        c.cmd_ok("PASS me@example.org", 230);
        c.transfer("RETR a.txt")
    };
    assert_eq!(get(&server).0, b"alpha\n");
    // Later anonymous logins reuse the first one's worker without asking the master.
    assert_eq!(get(&server).0, b"alpha\n");
    let worker = *server.workers().first().expect("a file worker process");
    ftpd_tests::run_ok(std::process::Command::new("kill").args(["-KILL", &worker.to_string()]));
    // Dead: gone, or a zombie until the master reaps it at the next login it decides.
    wait_for("the worker to die", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{worker}/stat"))
            .map_or(true, |s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
    });
    let (bytes, code, text) = get(&server);
    assert_eq!((bytes.as_slice(), code), (&b"alpha\n"[..], 226), "after the worker died: {text}");
}

/// Sizes shown by `LIST` in `dir`, by name.
fn sizes(c: &mut ftpd_tests::Ftp, dir: &str) -> std::collections::BTreeMap<String, u64> {
    let (bytes, code, text) = c.transfer(&format!("LIST {dir}"));
    assert_eq!(code, 226, "{text}");
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.last()?.to_string(), f.get(4)?.parse().ok()?))
        })
        .collect()
}

#[test]
fn the_listing_cache_sees_every_change_but_in_place_ones_within_its_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let pubdir = dir.path().join("pub");
    std::fs::create_dir(&pubdir).expect("mkdir");
    ftpd_tests::make_writable(&pubdir);
    std::fs::write(pubdir.join("a"), b"1").expect("write");
    // Anonymous acts as nobody: the file it appends to must be writable by it.
    std::fs::set_permissions(pubdir.join("a"), std::os::unix::fs::PermissionsExt::from_mode(0o666)).expect("chmod");
    let server = Server::start(
        dir.path(),
        &["write_enable=YES", "anon_upload_enable=YES", "anon_other_write_enable=YES", "ftpd_list_cache_ms=1500"],
    );
    let exact = Server::start(dir.path(), &["ftpd_list_cache_ms=0"]);
    let mut c = server.login();
    let mut e = exact.login();
    assert_eq!(sizes(&mut c, "pub").get("a"), Some(&1));
    // Another program adds a file: the directory changed, so it shows at once.
    std::fs::write(pubdir.join("b"), b"22").expect("write");
    assert_eq!(sizes(&mut c, "pub").get("b"), Some(&2));
    // An upload through ftpd (in place, APPE) shows at once.
    let (_, code, text) = c.upload("APPE pub/a", b"more");
    assert_eq!(code, 226, "{text}");
    assert_eq!(sizes(&mut c, "pub").get("a"), Some(&5));
    // Listed by another session while an append is under way, then listed
    // again once it is done: the final size, not the one cached midway.
    let mut other = server.login();
    let mut data = c.pasv_connect();
    c.cmd_ok("APPE pub/a", 150);
    std::io::Write::write_all(&mut data, b"xx").expect("append");
    let midway = Instant::now() + Duration::from_secs(5);
    while sizes(&mut other, "pub").get("a") != Some(&7) {
        assert!(Instant::now() < midway, "the appended bytes never showed");
    }
    std::io::Write::write_all(&mut data, b"yyy").expect("append");
    drop(data);
    assert_eq!(c.read_reply().0, 226);
    assert_eq!(sizes(&mut other, "pub").get("a"), Some(&10), "the upload's end clears the cache");
    // Changed in place by another program: the directory's times do not
    // move, so within ftpd_list_cache_ms the old size shows; without the
    // cache, the new one.
    let started = Instant::now();
    std::fs::write(pubdir.join("a"), b"123456789012").expect("rewrite in place");
    let cached = sizes(&mut c, "pub").get("a").copied();
    if started.elapsed() < Duration::from_millis(1200) {
        assert_eq!(cached, Some(10), "reused within the cache time");
    }
    assert_eq!(sizes(&mut e, "pub").get("a"), Some(&12), "ftpd_list_cache_ms=0 always reads");
    thread::sleep(Duration::from_millis(1600));
    assert_eq!(sizes(&mut c, "pub").get("a"), Some(&12), "read again after the cache time");
}

#[test]
fn anonymous_downloads_keep_ftp_usernames_permissions() {
    if !ftpd_tests::root_or_skip(
        "fast_paths::anonymous_downloads_keep_ftp_usernames_permissions",
        "files owned by another group, privilege separation",
    ) {
        return;
    }
    use std::os::unix::fs::{PermissionsExt, chown};
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let put = |name: &str, mode: u32, gid: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, name.as_bytes()).expect("write");
        chown(&p, Some(0), Some(gid)).expect("chown");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    // Anonymous acts as daemon (gid 1); the front runs as nobody.
    put("open.txt", 0o644, 0);
    // World-readable, but daemon's group may not read it: POSIX applies the
    // group bits to daemon, the other bits to nobody. vsftpd refuses it.
    put("group-denied.txt", 0o604, 1);
    // Only daemon's group may search this directory: the front cannot open
    // the file inside, the worker (as daemon) can.
    let inner = dir.path().join("staff");
    std::fs::create_dir(&inner).expect("mkdir");
    chown(&inner, Some(0), Some(1)).expect("chown");
    std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o710)).expect("chmod");
    put("staff/inside.txt", 0o644, 0);
    // The front keeps nopriv_user's identity here, so that every open but
    // the world-readable one is the worker's decision.
    let server = Server::start(dir.path(), &["ftp_username=daemon", "ftpd_anon_fast_path=NO"]);
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    let (bytes, code, _) = c.transfer("RETR open.txt");
    assert_eq!((bytes.as_slice(), code), (&b"open.txt"[..], 226));
    let (_, code, text) = c.transfer("RETR group-denied.txt");
    assert_eq!(code, 550, "ftp_username may not read it: {text}");
    let (bytes, code, text) = c.transfer("RETR staff/inside.txt");
    assert_eq!((bytes.as_slice(), code), (&b"staff/inside.txt"[..], 226), "through the worker: {text}");
}

/// RETR a.txt ("alpha\n") while the session's file worker is stopped
/// (SIGSTOP): it succeeds only if the front opens the file itself.
fn retr_with_the_worker_stopped(server: &Server, c: &mut ftpd_tests::Ftp) {
    let worker = *server.workers().first().expect("a file worker process");
    ftpd_tests::run_ok(std::process::Command::new("kill").args(["-STOP", &worker.to_string()]));
    let (bytes, code, text) = c.transfer("RETR a.txt");
    ftpd_tests::run_ok(std::process::Command::new("kill").args(["-CONT", &worker.to_string()]));
    assert_eq!((bytes.as_slice(), code), (&b"alpha\n"[..], 226), "with the worker stopped: {text}");
}

#[test]
fn a_read_only_anonymous_front_takes_ftp_usernames_identity_and_opens_downloads_itself() {
    if !ftpd_tests::is_root() {
        eprintln!("skipped: needs root (privilege separation)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    std::fs::write(dir.path().join("a.txt"), b"alpha\n").expect("write");
    std::fs::set_permissions(dir.path().join("a.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    // vsftpd's defaults: nopriv_user=nobody, and anonymous acts as another
    // user (daemon, uid 1, standing in for `ftp`).
    let server = Server::start(dir.path(), &["ftp_username=daemon", "nopriv_user=nobody"]);
    assert_eq!(ftpd_tests::status_field(server.front(), "Uid"), 1, "the front acts as ftp_username:\n{}", server.log());
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    assert_eq!(c.transfer("RETR a.txt").0, b"alpha\n");
    // The front opens the download itself: a stopped worker does not hold it up.
    retr_with_the_worker_stopped(&server, &mut c);
    drop(c);
    drop(server);

    // Anonymous writes on: the front acts as ftp_username too, once the
    // kernel has taken every file change from it (Landlock); the worker
    // keeps writing uploads and judging them.
    let up = dir.path().join("up");
    std::fs::create_dir(&up).expect("mkdir");
    std::fs::set_permissions(&up, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let writes = ["ftp_username=daemon", "write_enable=YES", "anon_upload_enable=YES"];
    let server = Server::start(dir.path(), &writes);
    assert_eq!(ftpd_tests::status_field(server.front(), "Uid"), 1, "the front acts as ftp_username:\n{}", server.log());
    assert!(server.log().contains("front may not change any file (Landlock)"), "{}", server.log());
    let mut c = server.login();
    c.cmd_ok("TYPE I", 200);
    assert_eq!(c.upload("STOR up/new.txt", b"uploaded").1, 226);
    let (_, code, text) = c.upload("STOR up/new.txt", b"again");
    assert_eq!(code, 553, "no overwrite without anon_other_write_enable, as before: {text}");
    assert_eq!(std::fs::read(up.join("new.txt")).expect("uploaded"), b"uploaded");
    // Downloads are the front's own here too.
    retr_with_the_worker_stopped(&server, &mut c);
    drop(c);
    drop(server);
    // And the operator can say no.
    let server = Server::start(dir.path(), &["ftp_username=daemon", "ftpd_anon_fast_path=NO"]);
    assert_eq!(
        ftpd_tests::status_field(server.front(), "Uid"),
        65534,
        "ftpd_anon_fast_path=NO keeps the front as nopriv_user"
    );
    drop(server);
    // The front parses every byte from the network: never as root, whatever
    // ftp_username says.
    let server = Server::start(dir.path(), &["ftp_username=root"]);
    assert_eq!(
        ftpd_tests::status_field(server.front(), "Uid"),
        65534,
        "ftp_username=root must not make the front root:\n{}",
        server.log()
    );
}

/// 200 anonymous logins at once from one address, on a server that has
/// granted none yet (a mirror just restarted, a crowd behind one NAT): each
/// goes to the master, and the master's per-address queue, meant to keep one
/// address from holding every password check, refused those past 16 in
/// its queue with 530 (48 of 64 in one benchmark run).
#[test]
fn a_crowd_of_anonymous_logins_from_one_address_all_get_in() {
    if !ftpd_tests::root_or_skip(
        "fast_paths::a_crowd_of_anonymous_logins_from_one_address_all_get_in",
        "privilege separation",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let server = Server::start(dir.path(), &["no_anon_password=NO", "max_per_ip=0", "max_clients=0"]);
    let n = 200;
    let mut conns: Vec<_> = (0..n)
        .map(|_| {
            let mut c = server.connect();
            c.cmd_ok("USER anonymous", 331);
            c
        })
        .collect();
    let barrier = std::sync::Barrier::new(n);
    let codes: Vec<(u16, String)> = thread::scope(|s| {
        let handles: Vec<_> = conns
            .iter_mut()
            .map(|c| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    c.cmd("PASS crowd@example.org")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let refused: Vec<_> = codes.iter().filter(|(code, _)| *code != 230).collect();
    assert!(refused.is_empty(), "{} of {n} refused: {:?}\n{}", refused.len(), refused.first(), server.log());
}

#[test]
fn the_control_listener_queues_a_burst_of_connections() {
    // std's backlog (128) overflowed when 256 clients connected at once: the
    // kernel dropped handshakes and those clients waited a second for a
    // retransmission. `ss` shows a listener's backlog as its Send-Q.
    let dir = tempfile::tempdir().expect("tempdir");
    served_by_nobody(dir.path());
    let server = Server::start(dir.path(), &["max_per_ip=0"]);
    let out = ftpd_tests::run_ok(
        std::process::Command::new("ss").args(["-Hltn", &format!("sport = :{}", server.addr.port())]),
    );
    let backlog: u32 = out.split_whitespace().nth(2).and_then(|q| q.parse().ok()).unwrap_or(0);
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(4096);
    assert_eq!(backlog, somaxconn.min(4096), "listen backlog (ss: {out})");
    // And a burst of 300 connections is greeted, every one.
    let conns: Vec<_> = (0..300).map(|_| std::net::TcpStream::connect(server.addr).expect("connect")).collect();
    for mut c in conns {
        c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut greeting = [0u8; 3];
        c.read_exact(&mut greeting).expect("greeting");
        assert_eq!(&greeting, b"220");
    }
}
