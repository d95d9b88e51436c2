//! Outside test suites against ftpd, judged by what they report:
//!
//! - PyFilesystem2's generic file-system tests (`fs.test.FSTestCases`, about
//!   80: directories, open modes, append, seek and REST, uploads and
//!   downloads, info by MLST and MDTM, Unicode names, errors from reply
//!   codes), through its FTP file system, as a real local user with write
//!   access. Twice: with listings by MLSD and MLST, and with PyFilesystem2
//!   made to parse LIST. The same runs go against Debian's vsftpd with the
//!   same configuration. ftpd may fail only the tests that fail on vsftpd too
//!   and are listed, with their cause, in `docs/vsftpd-differences.md`
//!   ("Where PyFilesystem2's test suite fails on both"); a listed test that
//!   passes fails this test until its row is removed.
//! - testssl.sh's audit of explicit FTPS (`AUTH TLS`): protocols, cipher
//!   categories, forward secrecy, server cipher order, certificate and the
//!   known vulnerabilities. No finding may be HIGH or CRITICAL but those a
//!   self-signed test certificate always causes.
//! - FTPS clients that connect by IP address leave no WARN line in the log.
//!
//! Why: these suites were written by others, for other servers. They try
//! what our own tests may not think of, the way real clients do it, and
//! vsftpd shows which of their expectations no vsftpd-compatible server meets.
//!
//! Needs what `cargo xtask setup` installs: the virtual environment
//! `target/venv` with PyFilesystem2, `testssl` (Debian's testssl.sh), vsftpd
//! and openssl. The PyFilesystem2 suite also needs root (it creates a system
//! user, and vsftpd runs as root); without root, or without vsftpd, it fails
//! unless `FTPD_TEST_ALLOW_SKIP` lists it (tests/README.md, Conventions).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::Write as _,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use ftpd_tests::{Cert, Launch, Server, free_port, python, run, run_ok, served_by_nobody, workspace};

/// The table of failures ftpd shares with vsftpd, relative to the workspace.
const TABLE: &str = "docs/vsftpd-differences.md";
/// The heading of that table's section.
const SECTION: &str = "## Where PyFilesystem2's test suite fails on both";
const VSFTPD: &str = "/usr/sbin/vsftpd";
/// vsftpd refuses to start without it (its unprivileged side chroots there).
const SECURE_CHROOT: &str = "/var/run/vsftpd/empty";
/// Debian's testssl.sh.
const TESTSSL: &str = "/usr/bin/testssl";

/// Whether this run is one of `cargo xtask test`'s kernel-plane stages,
/// which run the suites a second time.
fn kernel_stage() -> bool {
    std::env::var_os("FTPD_TEST_PLANE").is_some()
}

/// Prints past the test harness's capture: counts and skips must be seen.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

// ---------------------------------------------------------------------------
// PyFilesystem2

/// Runs `fs.test.FSTestCases` against one server. Arguments: HOST PORT USER
/// PASSWORD BASE [TEST-ID-PART ...]; BASE is an absolute directory the user
/// may create, and each test gets a fresh subdirectory of it.
const DRIVER: &str = r##"
import ftplib
import io
import itertools
import sys
import time
import traceback
import unittest

import fs
import fs.test

HOST, PORT, USER, PASSWORD, BASE = sys.argv[1:6]
ONLY = sys.argv[6:]
seq = itertools.count()

# Each control connection writes its commands and replies to stdout (ftplib
# masks PASS): a failed test's detail ends with what was sent and answered.
ftplib.FTP.set_debuglevel = lambda self, level: setattr(self, "debugging", 1)


class MLSD(fs.test.FSTestCases, unittest.TestCase):
    """Listings and file info by MLSD and MLST, when FEAT announces MLST."""

    def make_fs(self):
        # timeout: seconds per socket operation (PyFilesystem2's default is 10).
        url = "ftp://%s:%s@%s:%s%s/%s-%03d?timeout=5" % (
            USER, PASSWORD, HOST, PORT, BASE, type(self).__name__.lower(), next(seq))
        return fs.open_fs(url, create=True)


class LIST(MLSD):
    """The same with MLST hidden from PyFilesystem2: it parses LIST."""

    def make_fs(self):
        sub = super().make_fs()
        ftp = sub.delegate_fs()
        parse = type(ftp)._parse_features

        def without_mlst(reply):
            features = parse(reply)
            features.pop("MLST", None)
            return features

        # FEAT is parsed again on each new control connection (every open
        # file has its own), so the parser itself leaves MLST out. (Making
        # and opening the fresh directory, above, still used MLST.)
        ftp._parse_features = without_mlst
        ftp._features.pop("MLST", None)
        assert not ftp.supports_mlst
        return sub


def escape(text):
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


class Result(unittest.TestResult):
    """One line per test: @@RESULT run test pass|fail|skip seconds detail."""

    def startTest(self, test):
        super().startTest(test)
        self.started = time.monotonic()
        self.transcript = io.StringIO()
        sys.stdout = self.transcript

    def stopTest(self, test):
        sys.stdout = sys.__stdout__
        super().stopTest(test)

    def record(self, test, outcome, detail=""):
        run, name = test.id().split(".")[-2:]
        if outcome == "fail":
            lines = self.transcript.getvalue().splitlines()
            detail += "\nlast commands and replies:\n" + "\n".join(lines[-40:])
        seconds = "%.2f" % (time.monotonic() - self.started)
        sys.__stdout__.write("\t".join(["@@RESULT", run, name, outcome, seconds, escape(detail)]) + "\n")
        sys.__stdout__.flush()

    def addSuccess(self, test):
        self.record(test, "pass")

    def addFailure(self, test, err):
        self.record(test, "fail", "".join(traceback.format_exception(*err)))

    addError = addFailure

    def addSubTest(self, test, subtest, err):
        if err is not None:
            self.record(test, "fail", "".join(traceback.format_exception(*err)))

    def addSkip(self, test, reason):
        self.record(test, "skip", reason)

    def addExpectedFailure(self, test, err):
        self.record(test, "pass")

    def addUnexpectedSuccess(self, test):
        self.record(test, "fail", "unexpected success")


tests = [
    t
    for cls in (MLSD, LIST)
    for t in unittest.TestLoader().loadTestsFromTestCase(cls)
    if not ONLY or any(part in t.id() for part in ONLY)
]
unittest.TestSuite(tests).run(Result())
print("@@DONE\t%d" % len(tests))
"##;

/// The two runs of the suite.
const RUNS: [&str; 2] = ["MLSD", "LIST"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Fail,
    Skip,
}

/// One server's results: (run, test) -> verdict and detail.
type Results = BTreeMap<(String, String), (Verdict, String)>;

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The virtual environment's Python, with PyFilesystem2.
fn venv_python() -> PathBuf {
    let python = workspace().join("target/venv/bin/python3");
    assert!(
        python.is_file(),
        "{} is missing: `cargo xtask setup` makes the virtual environment with PyFilesystem2",
        python.display()
    );
    python
}

/// Runs the suite against 127.0.0.1:`port` as `user`, under `base`.
fn run_suite(kind: &str, port: u16, user: &LocalUser, base: &Path, work: &Path) -> Results {
    let script = work.join("fs_suite.py");
    std::fs::write(&script, DRIVER).expect("write the driver");
    let started = Instant::now();
    let out = run(Command::new(venv_python())
        .arg(&script)
        .args(["127.0.0.1", &port.to_string(), &user.name, &user.password])
        .arg(base)
        .stdin(Stdio::null()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().any(|l| l.starts_with("@@DONE\t")),
        "the PyFilesystem2 suite against {kind} did not finish ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let mut results = Results::new();
    for line in stdout.lines().filter_map(|l| l.strip_prefix("@@RESULT\t")) {
        let f: Vec<&str> = line.splitn(5, '\t').collect();
        assert_eq!(f.len(), 5, "a result line: {line}");
        let verdict = match f[2] {
            "pass" => Verdict::Pass,
            "fail" => Verdict::Fail,
            "skip" => Verdict::Skip,
            other => panic!("verdict {other:?} in {line}"),
        };
        let entry = results.entry((f[0].to_string(), f[1].to_string())).or_insert((verdict, String::new()));
        // A test that fails and then errs in tearDown reports twice: a failure stays one.
        if verdict == Verdict::Fail {
            entry.0 = Verdict::Fail;
        }
        entry.1.push_str(&unescape(f[4]));
    }
    let mut summary = format!("PyFilesystem2 FSTestCases on {kind} ({:.1} s):", started.elapsed().as_secs_f64());
    let (mut p, mut f, mut s) = (0, 0, 0);
    for run in RUNS {
        let count = |v: Verdict| results.iter().filter(|((r, _), (got, _))| r == run && *got == v).count();
        let (rp, rf, rs) = (count(Verdict::Pass), count(Verdict::Fail), count(Verdict::Skip));
        let _ = write!(summary, " {run} {rp} passed, {rf} failed, {rs} skipped;");
        (p, f, s) = (p + rp, f + rf, s + rs);
    }
    let _ = write!(summary, " in all {p} passed, {f} failed, {s} skipped");
    for ((run, test), (verdict, detail)) in &results {
        if *verdict != Verdict::Pass {
            // A skip's reason, or a failure's exception (the traceback's last line).
            let text = detail.split("\nlast commands and replies:").next().unwrap_or_default();
            let why = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default();
            let _ = write!(summary, "\n  {verdict:?} {run} {test}: {why}");
        }
    }
    say(&summary);
    // Both runs ran the whole suite.
    let names = |run: &str| results.keys().filter(|(r, _)| r == run).map(|(_, t)| t.clone()).collect::<BTreeSet<_>>();
    assert!(names("MLSD").len() >= 70, "{kind}: only {} tests reported:\n{stdout}", names("MLSD").len());
    assert_eq!(names("MLSD"), names("LIST"), "{kind}: both runs report the same tests");
    results
}

/// The (run, test) pairs listed in [`TABLE`]'s [`SECTION`].
fn listed_failures() -> BTreeSet<(String, String)> {
    let path = workspace().join(TABLE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let section = text.split_once(SECTION).unwrap_or_else(|| panic!("{TABLE} has no section {SECTION:?}")).1;
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut listed = BTreeSet::new();
    for line in section.lines().filter(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<String> =
            line.trim().trim_matches('|').split('|').map(|c| c.trim().trim_matches('`').to_string()).collect();
        if cells[0] == "PyFilesystem2 test" || cells[0].chars().all(|c| c == '-' || c == ' ') {
            continue;
        }
        assert!(
            cells.len() == 4 && cells[0].starts_with("test_") && cells.iter().all(|c| !c.is_empty()),
            "{TABLE}: a row needs test, runs, expectation and behaviour: {line}"
        );
        for run in cells[1].split(',').map(str::trim) {
            assert!(RUNS.contains(&run), "{TABLE}: unknown run {run:?} in: {line}");
            listed.insert((run.to_string(), cells[0].clone()));
        }
    }
    assert!(!listed.is_empty(), "{TABLE}: the section {SECTION:?} has no rows");
    listed
}

/// A system user with a home and a password, deleted (with its home) on drop.
struct LocalUser {
    name: String,
    password: String,
    home: PathBuf,
}

impl LocalUser {
    fn new() -> Self {
        let name = format!("ftpdis{}", std::process::id() % 100_000);
        let home = PathBuf::from(format!("/home/{name}"));
        let _ = Command::new("userdel").args(["-r", "-f", &name]).stderr(Stdio::null()).status();
        run_ok(Command::new("useradd").args(["-m", "-d"]).arg(&home).args(["-s", "/bin/bash", &name]));
        let user = Self { password: format!("pw-{name}-Secret"), name, home };
        // SHA-512 crypt, not Debian's default yescrypt: the suite logs in about
        // a thousand times, and PAM checks a SHA-512 hash five times faster.
        let mut chpasswd =
            Command::new("chpasswd").args(["-c", "SHA512"]).stdin(Stdio::piped()).spawn().expect("chpasswd");
        writeln!(chpasswd.stdin.as_mut().expect("stdin"), "{}:{}", user.name, user.password).expect("write");
        assert!(chpasswd.wait().expect("chpasswd").success());
        user
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["-r", "-f", &self.name]).stderr(Stdio::null()).status();
    }
}

/// vsftpd, killed with its session processes on drop.
struct Vsftpd {
    child: Child,
    port: u16,
}

impl Vsftpd {
    /// Starts vsftpd with `conf` and a free `listen_port`.
    fn start(work: &Path, conf: &str) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let path = work.join("vsftpd.conf");
            std::fs::write(&path, format!("{conf}listen_port={port}\n")).expect("write vsftpd.conf");
            let log = work.join("vsftpd.log");
            let out = std::fs::File::create(&log).expect("log file");
            let mut cmd = Command::new(VSFTPD);
            cmd.arg(&path).stdin(Stdio::null()).stdout(out.try_clone().expect("dup")).stderr(out);
            // SAFETY: prctl and setpgid with constant arguments, between fork and exec.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    libc::setpgid(0, 0);
                    Ok(())
                });
            }
            let mut d = Self { child: cmd.spawn().expect("spawn vsftpd"), port };
            let deadline = Instant::now() + Duration::from_secs(10);
            last = loop {
                let log = || std::fs::read_to_string(&log).unwrap_or_default();
                if let Ok(Some(status)) = d.child.try_wait() {
                    break format!("vsftpd exited with {status}: {}", log());
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return d;
                }
                if Instant::now() > deadline {
                    break format!("vsftpd not listening on {port} after 10 s: {}", log());
                }
                thread::sleep(Duration::from_millis(20));
            };
            // "could not bind": the port was taken meanwhile; try another.
            if !last.contains("could not bind") {
                break;
            }
        }
        panic!("vsftpd did not start: {last}");
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        let pgid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on our own child's process group (setpgid above).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The configuration both servers get (vsftpd also its `listen_port`; ftpd
/// gets its port and test settings on the command line). vsftpd needs
/// `seccomp_sandbox=NO` and `isolate*=NO` in a container; ftpd accepts them.
fn shared_conf() -> String {
    format!(
        "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nbackground=NO\nseccomp_sandbox=NO\nisolate=NO\n\
         isolate_network=NO\nsecure_chroot_dir={SECURE_CHROOT}\npam_service_name=vsftpd\nxferlog_enable=NO\n\
         max_per_ip=0\nmax_clients=0\nanonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\n"
    )
}

#[test]
fn pyfilesystem2_suite_fails_on_ftpd_only_where_it_fails_on_vsftpd() {
    if !ftpd_tests::root_or_skip(
        "interop_suites::pyfilesystem2_suite_fails_on_ftpd_only_where_it_fails_on_vsftpd",
        "a system user, vsftpd as root",
    ) {
        return;
    }
    let python = venv_python();
    run_ok(Command::new(&python).args(["-c", "import fs.test, fs.ftpfs"]));
    let listed = listed_failures();
    let work = tempfile::tempdir().expect("tempdir");
    let user = LocalUser::new();
    let conf = shared_conf();
    let conf_path = work.path().join("ftpd.conf");
    std::fs::write(&conf_path, &conf).expect("write ftpd.conf");

    // One server at a time: on the kernel plane ftpd's XDP program guards its
    // passive ports on `lo`, and vsftpd's passive ports are any.
    let ftpd = {
        let server = Server::launch(&user.home, &[], &Launch { config: Some(&conf_path), ..Launch::default() });
        let results = run_suite("ftpd", server.addr.port(), &user, &user.home.join("ftpd"), work.path());
        let log = server.stop();
        assert!(!log.contains("panicked"), "ftpd panicked:\n{log}");
        results
    };
    let vsftpd = if kernel_stage() {
        say("vsftpd's run is skipped: it runs once, in the userspace stage");
        None
    } else if !Path::new(VSFTPD).exists() {
        ftpd_tests::cannot_run(
            "interop_suites::pyfilesystem2_suite_fails_on_ftpd_only_where_it_fails_on_vsftpd",
            "vsftpd is not installed (`cargo xtask setup` installs it) for vsftpd's run",
        );
        None
    } else {
        std::fs::create_dir_all(SECURE_CHROOT).expect("secure_chroot_dir");
        let server = Vsftpd::start(work.path(), &conf);
        Some(run_suite("vsftpd", server.port, &user, &user.home.join("vsftpd"), work.path()))
    };

    let fails = |r: &Results| -> BTreeSet<(String, String)> {
        r.iter().filter(|(_, (v, _))| *v == Verdict::Fail).map(|(k, _)| k.clone()).collect()
    };
    let ftpd_fails = fails(&ftpd);
    let mut problems = String::new();
    for key @ (run, test) in ftpd_fails.difference(&listed) {
        let on_vsftpd = match vsftpd.as_ref().and_then(|v| v.get(key)) {
            Some((Verdict::Fail, _)) => "fails on vsftpd too, but is not listed in the table",
            Some((Verdict::Pass, _)) => "PASSES on vsftpd: a bug in ftpd",
            Some((Verdict::Skip, _)) => "is skipped on vsftpd",
            None => "vsftpd did not run it",
        };
        let detail = &ftpd[key].1;
        let _ = writeln!(problems, "\n== {run} {test} fails on ftpd and {on_vsftpd}:\n{detail}");
    }
    for (run, test) in listed.difference(&ftpd_fails) {
        let _ =
            writeln!(problems, "\n== {run} {test} is listed in {TABLE} but no longer fails on ftpd: remove its row");
    }
    if let Some(vsftpd) = &vsftpd {
        for (run, test) in listed.difference(&fails(vsftpd)) {
            let _ = writeln!(problems, "\n== {run} {test} is listed as failing on both, but passes on vsftpd");
        }
    }
    assert!(problems.is_empty(), "PyFilesystem2's suite, against the rows of {TABLE} ({SECTION:?}):{problems}");
}

// ---------------------------------------------------------------------------
// testssl.sh

/// Findings a self-signed test certificate causes on any server; everything
/// else HIGH or CRITICAL fails the test.
const SELF_SIGNED_FINDINGS: &[&str] = &[
    // CRITICAL "failed (self signed)": no trusted CA issued it.
    "cert_chain_of_trust",
    // HIGH "Neither CRL nor OCSP URI provided": a self-made certificate names
    // no revocation service.
    "cert_revocation",
];

/// Findings each audit must contain, so that one that stopped early (or
/// never got past `AUTH TLS`) cannot pass for a clean one.
const EXPECTED_FINDINGS: &[&str] = &[
    "service",
    "TLS1_2",
    "TLS1_3",
    "cipher_order",
    "cert_chain_of_trust",
    "heartbleed",
    "CCS",
    "ROBOT",
    "secure_renego",
    "secure_client_renego",
    "CRIME_TLS",
    "POODLE_SSL",
    "fallback_SCSV",
    "SWEET32",
    "FREAK",
    "DROWN",
    "LOGJAM",
    "BEAST",
    "LUCKY13",
    "RC4",
];

#[test]
fn testssl_finds_nothing_high_but_what_the_self_signed_certificate_causes() {
    if kernel_stage() {
        say("skipped: the TLS audit runs once, in the userspace stage (the data plane does not touch handshakes)");
        return;
    }
    assert!(Path::new(TESTSSL).is_file(), "{TESTSSL} is missing: `cargo xtask setup` installs Debian's testssl.sh");
    let root = tempfile::tempdir().expect("tempdir");
    served_by_nobody(root.path());
    let cert = Cert::for_loopback();
    let settings = cert.settings();
    let server = Server::start(root.path(), &settings.iter().map(String::as_str).collect::<Vec<_>>());
    let out = tempfile::tempdir().expect("tempdir");
    let json = out.path().join("testssl.json");
    let started = Instant::now();
    // The default run but for client simulation (-c) and one handshake per
    // cipher (-e): -p protocols, -s cipher categories, -f forward secrecy,
    // -P server preference and cipher order, -S certificate and session
    // resumption, -U every vulnerability. Its exit code is not a verdict.
    let o = run(Command::new(TESTSSL)
        .args(["--quiet", "--color", "0", "--warnings", "batch", "--nodns", "none"])
        .args(["--connect-timeout", "10", "--openssl-timeout", "10", "--jsonfile"])
        .arg(&json)
        .args(["-p", "-s", "-f", "-P", "-S", "-U", "-t", "ftp"])
        .arg(server.addr.to_string())
        .current_dir(out.path())
        .stdin(Stdio::null()));
    let elapsed = started.elapsed().as_secs_f64();
    let report = format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(json.is_file(), "testssl wrote no {} ({}):\n{report}", json.display(), o.status);
    // (severity, id, finding), one line each.
    let flat = python(&format!(
        "import json\nfor f in json.load(open({:?})):\n    print(f['severity'], f['id'], \" \".join(f['finding'].split()), \
         sep='\\t')\n",
        json.display().to_string()
    ));
    let findings: Vec<(&str, &str, &str)> = flat
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            (f.next().unwrap_or_default(), f.next().unwrap_or_default(), f.next().unwrap_or_default())
        })
        .collect();
    let mut shown = format!("testssl on ftpd: {} findings in {elapsed:.1} s", findings.len());
    for (severity, id, finding) in &findings {
        if matches!(*severity, "MEDIUM" | "HIGH" | "CRITICAL" | "WARN" | "FATAL") {
            let note = if SELF_SIGNED_FINDINGS.contains(id) { " (the self-signed test certificate)" } else { "" };
            let _ = write!(shown, "\n  {severity} {id}: {finding}{note}");
        }
    }
    say(&shown);
    let ids: BTreeSet<&str> = findings.iter().map(|f| f.1).collect();
    let missing: Vec<&&str> = EXPECTED_FINDINGS.iter().filter(|id| !ids.contains(**id)).collect();
    assert!(missing.is_empty(), "the audit did not run through: no {missing:?}\n{shown}\n{report}");
    assert!(findings.iter().any(|f| f.1 == "service" && f.2 == "ftp"), "testssl did not speak FTP:\n{shown}");
    let bad: Vec<String> = findings
        .iter()
        .filter(|(s, id, _)| matches!(*s, "HIGH" | "CRITICAL" | "FATAL") && !SELF_SIGNED_FINDINGS.contains(id))
        .map(|(s, id, f)| format!("{s} {id}: {f}"))
        .collect();
    assert!(bad.is_empty(), "testssl's findings of severity HIGH or above:\n{}\n\n{shown}", bad.join("\n"));
    let log = server.stop();
    let warnings: Vec<&str> = log.lines().filter(|l| is_warning(l)).collect();
    say(&format!("ftpd logged {} WARN or ERROR lines during the audit:\n{}", warnings.len(), warnings.join("\n")));
}

// ---------------------------------------------------------------------------
// The log

/// Whether a log line has the level WARN or ERROR (`<time>  WARN <where>: ...`).
fn is_warning(line: &str) -> bool {
    matches!(line.split_whitespace().nth(1), Some("WARN" | "ERROR"))
}

#[test]
fn ftps_clients_connecting_by_ip_address_leave_no_warning_in_the_log() {
    let root = tempfile::tempdir().expect("tempdir");
    served_by_nobody(root.path());
    std::fs::write(root.path().join("a.txt"), b"alpha\n").expect("write");
    let cert = Cert::for_loopback();
    let mut settings = cert.settings();
    settings.push("allow_anon_ssl=YES".into());
    let server = Server::start(root.path(), &settings.iter().map(String::as_str).collect::<Vec<_>>());
    let url = format!("ftp://127.0.0.1:{}/a.txt", server.addr.port());
    for versions in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"]] {
        let got = run_ok(
            Command::new("curl")
                .args(["-sS", "--fail", "-k", "--max-time", "60", "--ssl-reqd"])
                .args(versions)
                .arg(&url),
        );
        assert_eq!(got, "alpha\n", "curl {versions:?}");
    }
    // curl sends no SNI to an address; openssl s_client sends the one it is
    // given, which rustls ignores with a warning of its own.
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-quiet", "-starttls", "ftp", "-servername", "127.0.0.1", "-connect"])
        .arg(server.addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    s_client.stdin.as_mut().expect("stdin").write_all(b"USER anonymous\r\nQUIT\r\n").expect("write");
    let o = s_client.wait_with_output().expect("s_client");
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("230 ") && said.contains("221 "),
        "s_client's session: {said}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let log = server.stop();
    let warnings: Vec<&str> = log.lines().filter(|l| is_warning(l)).collect();
    assert!(warnings.is_empty(), "FTPS sessions by IP address logged:\n{}", warnings.join("\n"));
    assert!(log.contains("control connection encrypted"), "no TLS session in the log:\n{log}");
}
