//! `cargo xtask run`: set up, build, then become `ftpd`.

use std::{ffi::OsString, os::unix::process::CommandExt, path::PathBuf, process::Command};

use anyhow::{Result, anyhow};

use crate::{build, setup};

/// Arguments of `cargo xtask run`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Directory to serve anonymously (default: the current directory).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Passed to ftpd unchanged, e.g. a vsftpd.conf path or `-o NAME=VALUE`.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<OsString>,
}

/// Replaces this process with `ftpd`, so Ctrl-C and SIGTERM reach it directly
/// and its exit status is ours. Returns only if the exec fails.
pub(crate) fn run(args: Args) -> Result<()> {
    setup::run(setup::Verbosity::Summary)?;
    let bin = build::run()?;
    let mut cmd = Command::new(&bin);
    if let Some(root) = &args.root {
        cmd.arg("--root").arg(root);
    }
    cmd.args(&args.args);
    println!("$ {cmd:?}");
    let err = cmd.exec();
    Err(anyhow!(err).context(format!("failed to run {cmd:?}")))
}
