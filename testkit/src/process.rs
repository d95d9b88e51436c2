//! Commands and processes: running a command and checking it, the tree of
//! processes a server forked, and polling until something is true.

use std::{
    path::Path,
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

/// Runs a command, panicking with its output if it cannot be spawned.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs Python code with ftplib available; returns stdout.
pub fn python(code: &str) -> String {
    run_ok(Command::new("python3").arg("-c").arg(code))
}

/// Whether the tests run as root (which bypasses file permission checks).
pub fn is_root() -> bool {
    run(Command::new("id").arg("-u")).stdout.starts_with(b"0\n")
}

/// Whether this process may create network namespaces and load eBPF.
pub fn privileged() -> bool {
    is_root() && Path::new("/sys/fs/bpf").is_dir()
}

/// `pid` and all its live descendants, parents before children.
///
/// Children are listed per thread (`task/TID/children`), and ftpd forks from
/// whichever runtime thread handles the login (the master starts workers
/// from its login threads), so every thread is read.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if !std::fs::exists(format!("/proc/{p}")).unwrap_or(false) {
            continue;
        }
        out.push(p);
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for task in tasks.flatten() {
            let kids = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            todo.extend(kids.split_whitespace().filter_map(|k| k.parse::<u32>().ok()));
        }
    }
    out
}

/// Whether `pid` still runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}

/// A field of /proc/PID/status as a number (`VmRSS` in KiB, `Threads`).
pub fn status_field(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Polls `done` every `every` until it holds; panics naming `what` if it
/// still does not after `limit`.
pub fn wait_until(what: &str, limit: Duration, every: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(every);
    }
}

/// [`wait_until`], polling every 50 ms.
pub fn wait_for(what: &str, limit: Duration, done: impl FnMut() -> bool) {
    wait_until(what, limit, Duration::from_millis(50), done);
}

/// Polls the file at `path` (a log written after the event) every 20 ms
/// until `found` accepts its text; returns that text. Panics with the text
/// after `limit`.
pub fn wait_file(path: &Path, limit: Duration, what: &str, mut found: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if found(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{} never {what}: {text:?}", path.display());
        thread::sleep(Duration::from_millis(20));
    }
}
