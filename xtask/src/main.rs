//! `cargo xtask`: install the toolchain, build, run and test ftpd.
//!
//! One module per subcommand. Every subcommand but `setup` runs setup first,
//! so a fresh machine needs nothing but cargo (and root, for apt).

mod bench;
mod build;
mod deb;
mod docs;
mod flood;
mod fuzz;
mod modules;
mod run;
mod setup;
mod test;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// Environment for every cargo command that compiles `ftpd-user`: its build
/// script then fails instead of quietly building a userspace-only binary. The
/// script reruns when this variable changes, so clippy, build and test all set
/// it; otherwise each would rebuild what the previous one built.
const REQUIRE_EBPF: (&str, &str) = ("FTPD_REQUIRE_EBPF", "1");

#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about = "Developer tasks for ftpd")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install (or check) the Debian eBPF toolchain, bpf-linker and the test tools.
    Setup,
    /// Build the release binary target/release/ftpd with its eBPF programs embedded.
    Build,
    /// Build, then run ftpd in the foreground (arguments after `--` go to ftpd).
    Run(run::Args),
    /// Run fmt, clippy, build, all tests, and the privileged eBPF tests when root.
    Test,
    /// Regenerate the README's option reference from the option table.
    Docs,
    /// Print ftpd-user's modules bottom-up with the modules each one uses; fail on an import cycle.
    Modules {
        /// Only check for cycles (the `cargo xtask test` stage).
        #[arg(long)]
        check: bool,
    },
    /// Run each fuzz target (libFuzzer through cargo-fuzz, installed if missing) for a while, then print
    /// executions per target. A crash fails; its input is kept under fuzz/libfuzzer/artifacts/.
    Fuzz(fuzz::Args),
    /// Build the Debian package target/debian/ftpd_*.deb (with cargo-deb, from the release binary).
    Deb,
    /// (root) Benchmarks: ftpd against vsftpd, ProFTPD, Pure-FTPd (unpacked from Debian's packages, not
    /// installed) and a raw sendfile/splice ceiling, workload by workload, every repetition shown; then
    /// the SYN and connection floods (eBPF against ftpd_ebpf=off). Writes bench-results/latest.{md,json}.
    Bench(bench::Args),
    /// Flood figures at full size: 10,000 connections, 5,000 idle sessions, 2,000 wrong passwords from
    /// one address and from 200; prints the RSS and descriptors of each ftpd process (CI runs small counts).
    Flood,
    /// The benchmark's "ceiling" server (started by `bench`, not by hand).
    #[command(hide = true, name = "bench-ceiling")]
    BenchCeiling(bench::CeilingArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup::run(setup::Verbosity::EachCheck),
        Task::Build => setup::run(setup::Verbosity::Summary).and_then(|()| build::run().map(drop)),
        Task::Run(args) => run::run(args),
        Task::Test => test::run(),
        Task::Deb => setup::run(setup::Verbosity::Summary)
            .and_then(|()| setup::ensure_cargo_deb(setup::Verbosity::Summary))
            .and_then(|()| deb::run().map(drop)),
        Task::Modules { check } => modules::run(check),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Docs => setup::run(setup::Verbosity::Summary).and_then(|()| docs::run()),
        Task::Bench(args) => bench::run(&args),
        Task::Flood => flood::run(),
        Task::BenchCeiling(args) => bench::ceiling(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `cmd`, runs it with inherited stdio and fails unless it exits 0.
fn exec(cmd: &mut Command) -> Result<()> {
    println!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("failed to run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> &'static Path {
    // xtask/Cargo.toml is a workspace member one level below the root, so its
    // directory always has a parent.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ lives inside the workspace root")
}

/// The release binary, under `CARGO_TARGET_DIR` if set, else `<root>/target`.
fn ftpd_bin() -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d));
    target.join("release").join("ftpd")
}

/// `cargo ARGS...` run from the workspace root.
fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root()).args(args.into_iter().map(Into::into));
    cmd
}
