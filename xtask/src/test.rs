//! `cargo xtask test`: everything CI checks, in order, with one summary.
//!
//! Stages: fmt, clippy, build, tests, privileged eBPF tests, fuzzing. A failing stage
//! does not stop the later ones (a formatting slip shouldn't hide a test
//! failure), except that the tests need the binary the build stage makes.
//!
//! A test that cannot run (not root, a tool missing) fails unless
//! `FTPD_TEST_ALLOW_SKIP` names it; the summary ends with the tests that
//! skipped that way, so that a skip is read where the verdict is.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{REQUIRE_EBPF, build, cargo, exec, modules, setup};

/// How a stage ended.
enum Outcome {
    Passed,
    Failed(anyhow::Error),
    Skipped(String),
}

/// One finished stage, for the summary.
struct Stage {
    name: &'static str,
    outcome: Outcome,
    seconds: f64,
}

/// Runs all stages and fails if any of them failed.
pub(crate) fn run() -> Result<()> {
    setup::run(setup::Verbosity::Summary)?;
    // The package test (`tests/tests/package.rs`) builds the .deb with it.
    setup::ensure_cargo_deb(setup::Verbosity::Summary)?;
    let mut stages = Vec::new();
    let skips = skip_log();
    let _ = std::fs::remove_file(&skips);

    stage(&mut stages, "fmt", || exec(&mut cargo(["fmt", "--all", "--", "--check"])));
    stage(&mut stages, "module cycles", || modules::run(true));
    stage(&mut stages, "clippy", || {
        exec(
            cargo(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"])
                .env(REQUIRE_EBPF.0, REQUIRE_EBPF.1),
        )
    });
    let mut bin: Option<PathBuf> = None;
    stage(&mut stages, "build", || {
        bin = Some(build::run()?);
        Ok(())
    });

    let Some(bin) = bin else {
        skip(&mut stages, "tests", "the build failed".into());
        skip(&mut stages, "privileged eBPF tests", "the build failed".into());
        return summarize(&stages);
    };
    stage(&mut stages, "tests", || {
        exec(&mut test_cmd(&bin, ["test", "--release", "--locked", "--no-fail-fast", "--workspace"]))
    });
    match privileged_skip_reason()? {
        None => stage(&mut stages, "protocol tests, kernel plane", || {
            // The same suites again with the eBPF data plane loaded on `lo`
            // (serially: `lo` has one XDP slot), so both planes answer alike.
            // Not the files that never start ftpd on the plane the harness
            // picks (see `NOT_ON_KERNEL_PLANE`).
            let files = integration_tests()?;
            let kept: Vec<&str> =
                files.iter().map(String::as_str).filter(|f| !NOT_ON_KERNEL_PLANE.contains(f)).collect();
            let mut cmd = test_cmd(&bin, suite_args(&kept, &["--test-threads=1"]));
            exec(cmd.env("FTPD_TEST_PLANE", "kernel"))
        }),
        Some(ref why) => skip(&mut stages, "protocol tests, kernel plane", why.clone()),
    }
    match privileged_skip_reason()? {
        None => stage(&mut stages, "limits, kernel plane, vsftpd defaults", || {
            // The limit and timeout suites once more on the kernel plane with
            // vsftpd's defaults (no passive range, active mode on): a limit
            // that only held with a range once went unenforced here.
            let mut cmd = test_cmd(&bin, suite_args(&["rate_limits", "limits"], &["--test-threads=1"]));
            exec(cmd.env("FTPD_TEST_PLANE", "kernel-defaults"))
        }),
        Some(ref why) => skip(&mut stages, "limits, kernel plane, vsftpd defaults", why.clone()),
    }
    match privileged_skip_reason()? {
        None => stage(&mut stages, "privileged eBPF tests", || {
            let files = integration_tests()?;
            let all: Vec<&str> = files.iter().map(String::as_str).collect();
            exec(&mut test_cmd(&bin, suite_args(&all, &["--ignored", "--test-threads=1"])))
        }),
        Some(why) => {
            println!("\nskipping privileged eBPF tests: {why} (run as root to include them)");
            skip(&mut stages, "privileged eBPF tests", why);
        }
    }
    // After every suite that runs ftpd on the kernel plane, the privileged
    // ones in their own namespaces included.
    if privileged_skip_reason()?.is_none() {
        stage(&mut stages, "no XDP left outside lo", no_xdp_outside_lo);
    }
    // Bounded: every parser target for 15 s, so that a crash that a short
    // run finds fails CI (the saved crashes and the minimised corpora are
    // replayed by the tests stage; hour-long runs are `cargo xtask fuzz`'s).
    // 15 s keeps the whole run near 25 minutes on two cores, where two
    // targets run at once.
    stage(&mut stages, "fuzz, 15 s per target", || crate::fuzz::run_targets(crate::fuzz::TARGETS, 15));
    summarize(&stages)
}

/// Where the tests record a skip (`FTPD_TEST_SKIP_LOG`, read by the test kit).
fn skip_log() -> PathBuf {
    crate::workspace_root().join("target").join("test-skips.log")
}

/// The tests that skipped, one `file::test: why` each, in order and once.
fn skipped_tests(log: &str) -> Vec<&str> {
    let mut seen = std::collections::BTreeSet::new();
    log.lines().filter(|l| !l.trim().is_empty() && seen.insert(*l)).collect()
}

/// Prints one line per stage, then the tests that skipped; fails if any
/// stage failed.
fn summarize(stages: &[Stage]) -> Result<()> {
    println!("\n== summary ==");
    let mut failed = Vec::new();
    for s in stages {
        match &s.outcome {
            Outcome::Passed => println!("ok       {:<22} {:.1}s", s.name, s.seconds),
            Outcome::Failed(e) => {
                println!("FAILED   {:<22} {:.1}s  {e:#}", s.name, s.seconds);
                failed.push(s.name);
            }
            Outcome::Skipped(why) => println!("skipped  {:<22} {why}", s.name),
        }
    }
    let log = std::fs::read_to_string(skip_log()).unwrap_or_default();
    let skipped = skipped_tests(&log);
    println!("\n== tests skipped (listed in FTPD_TEST_ALLOW_SKIP) ==");
    if skipped.is_empty() {
        println!("none");
    }
    for line in &skipped {
        println!("skipped  {line}");
    }
    if !failed.is_empty() {
        bail!("{} stage(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

/// Runs one stage between a header and its elapsed time, and records it.
fn stage(stages: &mut Vec<Stage>, name: &'static str, body: impl FnOnce() -> Result<()>) {
    println!("\n== {name} ==");
    let start = Instant::now();
    let outcome = match body() {
        Ok(()) => Outcome::Passed,
        Err(e) => Outcome::Failed(e),
    };
    let seconds = start.elapsed().as_secs_f64();
    let verdict = if matches!(outcome, Outcome::Passed) { "ok" } else { "FAILED" };
    println!("== {name}: {verdict} in {seconds:.1}s ==");
    stages.push(Stage { name, outcome, seconds });
}

fn skip(stages: &mut Vec<Stage>, name: &'static str, why: String) {
    stages.push(Stage { name, outcome: Outcome::Skipped(why), seconds: 0.0 });
}

/// Integration test files (`tests/tests/NAME.rs`) the kernel-plane stage
/// leaves out: none of them starts ftpd through the test kit's `Server`, the
/// only thing `FTPD_TEST_PLANE` changes, so a second run there repeats the
/// first one exactly. `check_config` and `manual` start no server (`ftpd
/// check-config`, `--help`, the man pages); `journal`, `package`,
/// `vsftpd_diff` and `xtask_run` start theirs with `ftpd_ebpf=off` on their
/// own command line. Every other file, and any new one, runs on both planes.
const NOT_ON_KERNEL_PLANE: &[&str] = &["check_config", "journal", "manual", "package", "vsftpd_diff", "xtask_run"];

/// The names of the integration test files, `tests/tests/*.rs`, sorted.
/// Fails if a name in [`NOT_ON_KERNEL_PLANE`] is not among them, so that a
/// renamed file cannot leave a stale entry behind.
fn integration_tests() -> Result<Vec<String>> {
    let dir = crate::workspace_root().join("tests").join("tests");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry.with_context(|| format!("reading {}", dir.display()))?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    if let Some(stale) = NOT_ON_KERNEL_PLANE.iter().find(|n| !names.iter().any(|f| f == *n)) {
        bail!("NOT_ON_KERNEL_PLANE names {stale}, but there is no {}/{stale}.rs", dir.display());
    }
    Ok(names)
}

/// `cargo test` of these integration test files, with `harness` for the
/// test binaries. `--workspace` as in the tests stage, not `-p ftpd-tests`:
/// cargo resolves features for the packages it is given, and on its own
/// `ftpd-tests` gets smaller features of libc, rustix and others, so it and
/// the test kit were compiled a second time (35 s in CI).
fn suite_args(files: &[&str], harness: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["test", "--release", "--locked", "--no-fail-fast", "--workspace"].map(String::from).into();
    for f in files {
        args.extend(["--test".to_string(), (*f).to_string()]);
    }
    args.push("--".into());
    args.extend(harness.iter().map(|h| (*h).to_string()));
    args
}

/// A `cargo test` that knows where the built server is. It also sets
/// `FTPD_REQUIRE_EBPF` as the build did, so the binary isn't rebuilt.
fn test_cmd<I: IntoIterator<Item = S>, S: Into<std::ffi::OsString>>(bin: &Path, args: I) -> Command {
    let mut cmd = cargo(args);
    cmd.env(REQUIRE_EBPF.0, REQUIRE_EBPF.1).env("FTPD_BIN", bin).env("FTPD_TEST_SKIP_LOG", skip_log());
    cmd
}

/// The kernel-plane suites run on `lo` only: after them, no interface of
/// this (the root) network namespace but `lo` may carry an XDP program. A
/// test that attached one to the machine's real interface would disturb the
/// host's traffic (generic XDP on a NIC even turns off its GRO offload).
fn no_xdp_outside_lo() -> Result<()> {
    let out = Command::new("ip").args(["-o", "link", "show"]).output().context("running ip -o link show")?;
    if !out.status.success() {
        bail!("ip -o link show failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let attached: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" xdp") || l.contains("prog/xdp"))
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .filter(|name| *name != "lo")
        .collect();
    if !attached.is_empty() {
        bail!("XDP programs left attached outside lo: {}", attached.join(", "));
    }
    println!("no XDP program on any interface but lo");
    Ok(())
}

/// Why the privileged tests (network namespaces, loading eBPF) can't run
/// here, or `None` if they can.
fn privileged_skip_reason() -> Result<Option<String>> {
    if !setup::is_root()? {
        return Ok(Some("not running as root".into()));
    }
    if !Path::new("/sys/fs/bpf").is_dir() {
        return Ok(Some("/sys/fs/bpf does not exist (no bpffs)".into()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kernel_plane_leaves_out_only_files_that_exist() {
        let files = super::integration_tests().expect("tests/tests lists");
        assert!(files.iter().any(|f| f == "protocol"), "{files:?}");
    }

    #[test]
    fn each_skipped_test_is_listed_once() {
        let log = "reload::a: needs root\nsandbox::b: needs root\nreload::a: needs root\n\n";
        assert_eq!(super::skipped_tests(log), ["reload::a: needs root", "sandbox::b: needs root"]);
    }
}
