//! `cargo xtask run`, the README's first command, on the embedded default:
//! it must serve the given directory on 127.0.0.1:2121 to a real curl.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use ftpd_tests::{run, run_ok, workspace};

#[test]
fn xtask_run_serves_the_default_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), b"hi\n").unwrap();
    ftpd_tests::served_by_nobody(dir.path());
    let mut child = Command::new("cargo")
        .args(["xtask", "run", "--root"])
        .arg(dir.path())
        // The default loads XDP on `lo` when run as root, and its pinholes
        // would drop the passive connections of the tests running beside
        // this one; the kernel path has its own tests in network namespaces.
        .args(["--", "-oftpd_ebpf=off"])
        .current_dir(workspace())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group: cargo starts xtask, which becomes ftpd, and all
        // of them must be stopped together.
        .process_group(0)
        .spawn()
        .expect("spawn cargo xtask run");
    let pgid = child.id();
    let stop = move || {
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).status();
    };
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The first run may build; allow for it.
    let banner = loop {
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(line) if line.contains("try: curl ftp://") => break line,
            Ok(_) => {}
            Err(e) => {
                stop();
                panic!("cargo xtask run never printed its URL: {e}");
            }
        }
    };
    assert!(banner.contains("127.0.0.1:2121"), "{banner}");
    let listing = run(Command::new("curl").args(["-sS", "--max-time", "10", "ftp://127.0.0.1:2121/"]));
    let file = run(Command::new("curl").args(["-sS", "--max-time", "10", "ftp://127.0.0.1:2121/hello.txt"]));
    stop();
    let status = child.wait().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(listing.trim_end().ends_with(" hello.txt"), "{listing}");
    assert_eq!(file.stdout, b"hi\n");
    assert!(!status.success() || status.code() == Some(0), "{status}");
    // Stopped means stopped: nothing listens on 2121 any more.
    std::thread::sleep(Duration::from_millis(300));
    let after = run_ok(Command::new("ss").args(["-Htln", "sport = :2121"]));
    assert!(after.trim().is_empty(), "still listening: {after}");
}
