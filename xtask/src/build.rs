//! `cargo xtask build`: the release binary with its eBPF programs embedded.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::{REQUIRE_EBPF, cargo, exec, ftpd_bin};

/// Builds `ftpd-user` in release mode and returns the path of `ftpd`.
///
/// `ftpd-user/build.rs` compiles `ftpd-ebpf` itself; with [`REQUIRE_EBPF`] it
/// fails when it cannot, so the result always carries its kernel side.
///
/// `--workspace --bin ftpd`, not `-p ftpd-user`: cargo resolves features for
/// the packages it is given, and for ftpd-user alone rustix, digest and sha2
/// get fewer of them than in `cargo test --workspace`, so the tests compiled
/// ftpd-user and the binary a second time. With the whole workspace's
/// features the tests reuse what this builds.
pub(crate) fn run() -> Result<PathBuf> {
    exec(
        cargo(["build", "--release", "--locked", "--workspace", "--bin", "ftpd"]).env(REQUIRE_EBPF.0, REQUIRE_EBPF.1),
    )?;
    let bin = ftpd_bin();
    if !bin.is_file() {
        bail!("cargo build succeeded but {} does not exist (is the target dir somewhere else?)", bin.display());
    }
    println!("built {}", bin.display());
    Ok(bin)
}
