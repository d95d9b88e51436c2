//! Builds the kernel programs (`ftpd-ebpf`) and hands the object to the daemon,
//! which embeds it with `include_bytes_aligned!`.
//!
//! Why not `aya-build`: it forces `-Z build-std=core` and strips `RUSTC`, so it
//! can never use Debian's `/usr/bin/rustc`, the only toolchain on this machine
//! kind that has a prebuilt `core` for `bpfel-unknown-none` (design/ebpf.md §8).
//! So this script runs that cargo build itself.
//!
//! Without the toolchain the daemon still builds, without the object, and runs
//! on its userspace fallback. `cargo xtask build` sets `FTPD_REQUIRE_EBPF=1` so a
//! release build can never silently lose its kernel side.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("ftpd-user lives inside the workspace").to_path_buf();
    let ebpf_dir = root.join("ftpd-ebpf");
    for p in
        ["ftpd-ebpf/src", "ftpd-ebpf/Cargo.toml", "ftpd-ebpf/Cargo.lock", "ftpd-common/src", "ftpd-common/Cargo.toml"]
    {
        println!("cargo::rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo::rerun-if-env-changed=FTPD_REQUIRE_EBPF");
    // Installing the toolchain must trigger a rebuild with the kernel side; a
    // path that does not exist yet makes cargo rerun this script every build.
    println!("cargo::rerun-if-changed={DEBIAN_RUSTC}");
    if let Some(bin) = cargo_bin() {
        println!("cargo::rerun-if-changed={}", bin.join("bpf-linker").display());
    }
    println!("cargo::rustc-check-cfg=cfg(ftpd_ebpf_embedded)");
    let required = env::var("FTPD_REQUIRE_EBPF").is_ok_and(|v| v == "1");

    match build_ebpf(&ebpf_dir) {
        Ok(object) => {
            let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("ftpd-ebpf.o");
            std::fs::copy(&object, &out)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", object.display(), out.display()));
            println!("cargo::rustc-cfg=ftpd_ebpf_embedded");
        }
        Err(why) if required => {
            panic!("cannot build the eBPF programs: {why}\nrun `cargo xtask setup` to install the toolchain")
        }
        Err(why) => {
            println!("cargo::warning=building ftpd without its eBPF programs (userspace enforcement only): {why}")
        }
    }
}

/// `$CARGO_HOME/bin`, where `cargo install` puts bpf-linker.
fn cargo_bin() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin"))
}

fn build_ebpf(dir: &Path) -> Result<PathBuf, String> {
    if !Path::new(DEBIAN_RUSTC).exists() {
        return Err(format!("{DEBIAN_RUSTC} not found (Debian package rustc-web)"));
    }
    let cargo_bin = cargo_bin();
    let mut path = env::var_os("PATH").unwrap_or_default();
    if let Some(bin) = &cargo_bin {
        let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
        dirs.push(bin.clone());
        path = env::join_paths(dirs).map_err(|e| e.to_string())?;
    }
    let has_linker = env::split_paths(&path).any(|d| d.join("bpf-linker").is_file());
    if !has_linker {
        return Err("bpf-linker not found on PATH or in ~/.cargo/bin".into());
    }
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--release", "--locked", "--target", "bpfel-unknown-none"])
        .env("PATH", path)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1");
    // The outer build's settings (wrappers, flags, target dir, profile) are for
    // the host and must not leak into the kernel build.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_") && k != "CARGO_HOME"
            || k.starts_with("RUSTC_") && k != "RUSTC_BOOTSTRAP"
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo for ftpd-ebpf: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of ftpd-ebpf failed: {status}"));
    }
    Ok(dir.join("target/bpfel-unknown-none/release/ftpd-ebpf"))
}
