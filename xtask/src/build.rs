//! `cargo xtask build`: the release binary with its eBPF programs embedded.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::{REQUIRE_EBPF, cargo, exec, ftpd_bin};

/// Builds `ftpd-user` in release mode and returns the path of `ftpd`.
///
/// `ftpd-user/build.rs` compiles `ftpd-ebpf` itself; with [`REQUIRE_EBPF`] it
/// fails when it cannot, so the result always carries its kernel side.
pub(crate) fn run() -> Result<PathBuf> {
    exec(cargo(["build", "--release", "--locked", "-p", "ftpd-user"]).env(REQUIRE_EBPF.0, REQUIRE_EBPF.1))?;
    let bin = ftpd_bin();
    if !bin.is_file() {
        bail!("cargo build succeeded but {} does not exist (is the target dir somewhere else?)", bin.display());
    }
    println!("built {}", bin.display());
    Ok(bin)
}
