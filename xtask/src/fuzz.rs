//! `cargo xtask fuzz`: run the libFuzzer targets of `fuzz/` for a while each.
//!
//! The targets are functions in `fuzz/src/lib.rs`; `fuzz/libfuzzer/` wraps
//! each in a libFuzzer binary. cargo-fuzz builds them with the stable
//! toolchain: it passes `-Zsanitizer=address` and other `-Z` flags, which
//! `RUSTC_BOOTSTRAP=1` lets stable rustc accept (rustup's stable ships the
//! sanitizer runtimes). Inputs that find new code go to
//! `fuzz/libfuzzer/corpus/<target>/` (not committed); the seeds in
//! `fuzz/corpus/<target>/` are read, never written. A crash is saved under
//! `fuzz/libfuzzer/artifacts/<target>/`: copy it to
//! `fuzz/regressions/<target>/` with the fix, and `cargo test` replays it.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::{Mutex, PoisonError},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{exec, workspace_root};

/// The cargo-fuzz release this is tested with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Where the libFuzzer crate lives, from the workspace root.
const FUZZ_DIR: &str = "fuzz/libfuzzer";
/// Every target, in the order they run (names of `fuzz/libfuzzer/fuzz_targets/*.rs`).
pub(crate) const TARGETS: &[&str] =
    &["command", "config", "user_config", "vpath", "port_args", "tls_args", "ipc_master", "ipc_worker", "proxy_header"];

/// Arguments of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Run only this target (default: all, one after the other).
    #[arg(long, value_name = "T", value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    target: Option<String>,
    /// How long each target runs.
    #[arg(long, value_name = "N", default_value_t = 30)]
    seconds: u32,
}

/// How one target's run ended.
struct Outcome {
    target: &'static str,
    executions: Option<u64>,
    seconds: f64,
    crashed: bool,
}

/// Installs cargo-fuzz if needed, builds every target, runs the chosen ones
/// and prints executions per target. Fails if any target crashed.
pub(crate) fn run(args: &Args) -> Result<()> {
    let targets: Vec<&'static str> = match &args.target {
        Some(t) => TARGETS.iter().copied().filter(|x| x == t).collect(),
        None => TARGETS.to_vec(),
    };
    run_targets(&targets, args.seconds)
}

/// Runs `targets` for `seconds` each (also the CI stage), as many at once
/// as there are CPUs: libFuzzer runs one process on one CPU, so on two CPUs
/// two targets side by side each get what they got one after the other.
pub(crate) fn run_targets(targets: &[&'static str], seconds: u32) -> Result<()> {
    ensure_cargo_fuzz()?;
    println!("[fuzz] building the libFuzzer targets (cargo fuzz build, address sanitizer)");
    exec(&mut cargo_fuzz(["build"]))?;
    let jobs = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(targets.len()).max(1);
    println!("[fuzz] {} target(s), {jobs} at a time, {seconds} s each", targets.len());
    let queue = Mutex::new(targets.iter().copied().enumerate());
    let done: Mutex<Vec<(usize, Result<Outcome>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let Some((i, target)) = queue.lock().unwrap_or_else(PoisonError::into_inner).next() else {
                        break;
                    };
                    println!("[fuzz] {target}: {seconds} s");
                    let outcome = run_one(target, seconds);
                    done.lock().unwrap_or_else(PoisonError::into_inner).push((i, outcome));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    done.sort_by_key(|(i, _)| *i);
    let mut outcomes = Vec::new();
    for (_, outcome) in done {
        outcomes.push(outcome?);
    }
    println!("\n== fuzz summary ({seconds} s per target) ==");
    println!("{:<12} {:>12} {:>8}  result", "target", "executions", "seconds");
    for o in &outcomes {
        let execs = o.executions.map_or_else(|| "?".to_string(), |n| n.to_string());
        let result = if o.crashed { "CRASH" } else { "ok" };
        println!("{:<12} {execs:>12} {:>8.1}  {result}", o.target, o.seconds);
    }
    let crashed: Vec<&str> = outcomes.iter().filter(|o| o.crashed).map(|o| o.target).collect();
    if !crashed.is_empty() {
        bail!(
            "fuzz target(s) crashed: {} (inputs under {FUZZ_DIR}/artifacts/; fix, then keep each in fuzz/regressions/<target>/)",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// Runs one target; libFuzzer's own output goes to `fuzz/libfuzzer/logs/`,
/// and its last lines are shown when it crashes.
fn run_one(target: &'static str, seconds: u32) -> Result<Outcome> {
    let root = workspace_root();
    let corpus = root.join(FUZZ_DIR).join("corpus").join(target);
    let seeds = root.join("fuzz/corpus").join(target);
    let logs = root.join(FUZZ_DIR).join("logs");
    for dir in [&corpus, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let mut log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = cargo_fuzz(["run"]);
    cmd.arg(target).arg(&corpus).arg(&seeds).arg("--").arg(format!("-max_total_time={seconds}"));
    // libFuzzer's default is 20 minutes; any input slower than this is a bug.
    cmd.arg("-timeout=10").stdout(Stdio::null()).stderr(Stdio::piped());
    // Targets that build real files (config, user_config, ipc_worker) ran
    // ten times slower on the disk's journal than in memory.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let tmp = shm.join("ftpd-fuzz");
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        cmd.env("TMPDIR", tmp);
    }
    println!("$ {cmd:?}");
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("failed to run {cmd:?}"))?;
    let stderr = child.stderr.take().context("libFuzzer's stderr")?;
    let mut executions = None;
    let mut tail: Vec<String> = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading libFuzzer's output")?;
        writeln!(log, "{line}").context("writing the fuzz log")?;
        // "Done 181990 runs in 21 second(s)"
        if let Some(n) = line.strip_prefix("Done ").and_then(|r| r.split_whitespace().next()) {
            executions = n.parse().ok();
        }
        tail.push(line);
        if tail.len() > 40 {
            tail.remove(0);
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    let crashed = !status.success();
    if crashed {
        // One print, so that a target running beside it cannot cut into it.
        let mut report = format!("[fuzz] {target} failed ({status}); last lines of {}:", log_path.display());
        for l in &tail {
            report.push_str("\n    ");
            report.push_str(l);
        }
        println!("{report}");
    }
    Ok(Outcome { target, executions, seconds: start.elapsed().as_secs_f64(), crashed })
}

/// `cargo fuzz SUB --fuzz-dir fuzz/libfuzzer`, from the workspace root, on
/// the stable toolchain.
fn cargo_fuzz<const N: usize>(sub: [&str; N]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root()).arg("fuzz").args(sub).args(["--fuzz-dir", FUZZ_DIR]);
    // cargo-fuzz's -Z flags on stable rustc.
    cmd.env("RUSTC_BOOTSTRAP", "1");
    cmd
}

/// Installs cargo-fuzz with `cargo install` unless it runs already.
fn ensure_cargo_fuzz() -> Result<()> {
    let out = Command::new("cargo").args(["fuzz", "--version"]).output();
    if let Ok(o) = out.as_ref()
        && o.status.success()
    {
        println!("[fuzz] ok: {}", String::from_utf8_lossy(&o.stdout).trim());
        return Ok(());
    }
    println!("[fuzz] installing: cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install, about a minute)");
    exec(Command::new("cargo").args(["install", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION, "--locked"]))
}
