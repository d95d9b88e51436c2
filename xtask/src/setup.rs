//! `cargo xtask setup`: make sure the eBPF toolchain and the test tools are
//! installed, installing what is missing. Safe to run any number of times.
//!
//! The kernel programs are compiled by Debian's rustc (`rustc-web`, which ships
//! a prebuilt `core` for `bpfel-unknown-none`) and linked by `bpf-linker` built
//! against Debian's LLVM 22. See `ftpd-user/build.rs`.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::exec;

/// Debian packages that build the kernel programs.
const EBPF_PACKAGES: &[&str] =
    &["rustc-web", "libstd-rust-web-dev-bpf", "llvm-22-dev", "libpolly-22-dev", "libzstd-dev"];
/// Debian packages the integration tests run.
const TEST_PACKAGES: &[&str] = &[
    "curl",
    "iproute2",
    "lftp",
    "bpftool",
    "python3",
    "prometheus",
    "man-db",
    "systemd",
    "adduser",
    "logrotate",
    "python3-seccomp",
    // The sandbox tests make a process call a forbidden syscall through gdb.
    "gdb",
    // setfacl, for the ACL cases of `tests/tests/security.rs`.
    "acl",
    // The users test with a user only NSS (systemd-userdb) knows.
    "libnss-systemd",
    // The interop tests (`tests/tests/interop.rs`, `interop_suites.rs`): rclone
    // as a client, testssl.sh's TLS audit (`/usr/bin/testssl`), and venv for
    // the Python suite's virtual environment (see `ensure_venv`).
    "rclone",
    "testssl.sh",
    "python3-venv",
    // Tests to come run them as peers; installed with their services not
    // started (policy-rc.d, see `install_packages`), as vsftpd.
    "haproxy",
    "redis-server",
];
/// The cargo-deb release `cargo xtask deb` is tested with.
const CARGO_DEB_VERSION: &str = "3.8.0";
/// The reference server of `tests/tests/vsftpd_diff.rs`, installed when
/// possible (its service is never started, see `install_packages`); without
/// it the tests that compare with vsftpd fail unless `FTPD_TEST_ALLOW_SKIP`
/// lists them (tests/README.md, Conventions).
const VSFTPD_PACKAGE: &str = "vsftpd";
/// Debian's hook that decides whether a package may start its service.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// The Python virtual environment of the interop suites, under the workspace.
const VENV: &str = "target/venv";
/// What is installed into it: PyFilesystem2 (`fs`), whose FTP file system and
/// generic test cases `tests/tests/interop_suites.rs` runs against ftpd, and a
/// setuptools that still ships `pkg_resources`, which `fs` imports.
const VENV_PACKAGES: &[&str] = &["fs", "setuptools<81"];
/// The compiler `ftpd-user/build.rs` uses for the kernel programs.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// The `bpf-linker` release known to work with Debian's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where `llvm-22-dev` puts LLVM; `bpf-linker`'s build links against it.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// How much setup prints when everything is already installed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verbosity {
    /// One line per check (`cargo xtask setup`).
    EachCheck,
    /// One line in all (before other subcommands). Installs are always shown.
    Summary,
}

/// Checks everything and installs what is missing.
///
/// # Errors
///
/// When something is missing and cannot be installed from here (not root, or
/// no apt-get); the message lists the commands to run instead.
pub(crate) fn run(verbosity: Verbosity) -> Result<()> {
    let ok = |what: &str| {
        if verbosity == Verbosity::EachCheck {
            println!("[setup] ok: {what}");
        }
    };

    let packages: Vec<&str> = EBPF_PACKAGES.iter().chain(TEST_PACKAGES).copied().collect();
    let mut missing = Vec::new();
    for &pkg in &packages {
        match installed_version(pkg)? {
            Some(version) => ok(&format!("{pkg} ({version})")),
            None => missing.push(pkg),
        }
    }
    let linker = find_bpf_linker();
    if !missing.is_empty() {
        install_packages(&missing, linker.is_none())?;
        let still: Vec<&str> =
            missing.iter().copied().filter(|p| !matches!(installed_version(p), Ok(Some(_)))).collect();
        if !still.is_empty() {
            bail!("apt-get install finished but these packages are still not installed: {}", still.join(" "));
        }
    }
    if !Path::new(DEBIAN_RUSTC).is_file() {
        bail!(
            "{DEBIAN_RUSTC} is missing although rustc-web is installed; reinstall it: apt-get install --reinstall rustc-web"
        );
    }

    let linker = match linker {
        Some(path) => path,
        None => install_bpf_linker()?,
    };
    let version = tool_version(&linker).unwrap_or_else(|| "unknown version".into());
    let version = version.strip_prefix("bpf-linker ").unwrap_or(&version);
    if version.contains(BPF_LINKER_VERSION) {
        ok(&format!("bpf-linker ({version}, {})", linker.display()));
    } else {
        println!(
            "[setup] warning: {} is {version}; ftpd is tested with {BPF_LINKER_VERSION}. To replace it: {} --force",
            linker.display(),
            bpf_linker_install_line()
        );
    }

    ensure_components(&ok)?;
    match installed_version(VSFTPD_PACKAGE)? {
        Some(version) => ok(&format!("{VSFTPD_PACKAGE} ({version})")),
        None => {
            if let Err(e) = install_packages(&[VSFTPD_PACKAGE], false) {
                println!(
                    "[setup] warning: {VSFTPD_PACKAGE} not installed, so the vsftpd differential test will be skipped: {e:#}"
                );
            }
        }
    }
    ensure_venv(&ok)?;
    if verbosity == Verbosity::EachCheck {
        ensure_cargo_deb(verbosity)?;
    }
    if verbosity == Verbosity::Summary {
        println!("[setup] ok: {} Debian packages, bpf-linker, rustfmt, clippy, {VENV}", packages.len());
    }
    Ok(())
}

/// Whether this process runs as root (`id -u` prints 0).
pub(crate) fn is_root() -> Result<bool> {
    let out = Command::new("id").arg("-u").output().context("failed to run `id -u`")?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The installed version of a Debian package, or `None` if it is not installed.
fn installed_version(pkg: &str) -> Result<Option<String>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}\t${Version}", pkg])
        .output()
        .context("failed to run dpkg-query: `cargo xtask setup` supports Debian 12 (bookworm) and its derivatives")?;
    // dpkg-query exits 1 for a package it has never heard of: not installed.
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(match text.split_once('\t') {
        Some((status, version)) if out.status.success() && status.contains("install ok installed") => {
            Some(version.trim().to_owned())
        }
        _ => None,
    })
}

/// Installs Debian packages with apt-get, or explains how to when we can't.
fn install_packages(missing: &[&str], linker_missing: bool) -> Result<()> {
    let root = is_root()?;
    let apt = on_path("apt-get").is_some();
    if !root || !apt {
        let why = if root { "apt-get is not available" } else { "installing Debian packages needs root" };
        let list = missing.join(" ");
        let linker = if linker_missing {
            format!("\nthen as your build user:\n    {}", bpf_linker_install_line())
        } else {
            String::new()
        };
        bail!(
            "missing Debian packages: {list}; {why}. Run as root:\n    apt-get update\n    \
             DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {list}{linker}\n\
             then run `cargo xtask setup` again"
        );
    }
    println!("[setup] installing: {}", missing.join(" "));
    exec(Command::new("apt-get").arg("update"))?;
    // A policy-rc.d that exits 101 keeps packages (vsftpd) from starting
    // their services; an existing one is left as it is.
    let ours = !Path::new(POLICY_RC_D).exists();
    if ours {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(POLICY_RC_D, "#!/bin/sh\n# written by cargo xtask setup while installing\nexit 101\n")
            .with_context(|| format!("writing {POLICY_RC_D}"))?;
        std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))?;
    }
    let result = exec(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(missing),
    );
    if ours {
        let _ = std::fs::remove_file(POLICY_RC_D);
    }
    result
}

/// The interop suites' Python virtual environment ([`VENV`]): created when it
/// is missing, and (re)filled with [`VENV_PACKAGES`] when its Python cannot
/// import `fs`. Needs no root, only `python3-venv` and PyPI.
fn ensure_venv(ok: &impl Fn(&str)) -> Result<()> {
    let venv = crate::workspace_root().join(VENV);
    let python = venv.join("bin/python3");
    let imports =
        |python: &Path| Command::new(python).args(["-c", "import fs"]).output().is_ok_and(|o| o.status.success());
    if python.is_file() && imports(&python) {
        ok(&format!("{VENV} (fs)"));
        return Ok(());
    }
    println!("[setup] installing: Python virtual environment {VENV} with {}", VENV_PACKAGES.join(" "));
    if !python.is_file() {
        // Debian's interpreter, the one python3-venv is for (not a pyenv shim
        // that may come first on PATH).
        let system = Path::new("/usr/bin/python3");
        let base = if system.is_file() { system.to_path_buf() } else { PathBuf::from("python3") };
        exec(Command::new(base).args(["-m", "venv"]).arg(&venv))?;
    }
    exec(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(VENV_PACKAGES),
    )?;
    if !imports(&python) {
        bail!(
            "pip installed {} into {VENV}, but `{} -c 'import fs'` still fails",
            VENV_PACKAGES.join(" "),
            python.display()
        );
    }
    Ok(())
}

/// `bpf-linker` on `PATH`, else in `$CARGO_HOME/bin` (where `ftpd-user/build.rs`
/// also looks).
fn find_bpf_linker() -> Option<PathBuf> {
    on_path("bpf-linker").or_else(|| Some(cargo_home()?.join("bin/bpf-linker")).filter(|p| p.is_file()))
}

/// Builds `bpf-linker` from crates.io against Debian's LLVM 22.
fn install_bpf_linker() -> Result<PathBuf> {
    println!("[setup] installing: bpf-linker {BPF_LINKER_VERSION} (cargo install, a few minutes)");
    exec(Command::new("cargo").env("LLVM_PREFIX", LLVM_PREFIX).args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        "llvm-22",
    ]))?;
    find_bpf_linker()
        .context("cargo install bpf-linker succeeded, but bpf-linker is neither on PATH nor in $CARGO_HOME/bin")
}

/// The command that installs `bpf-linker`, for messages.
fn bpf_linker_install_line() -> String {
    format!(
        "LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker --version {BPF_LINKER_VERSION} --no-default-features --features llvm-22"
    )
}

/// rustfmt and clippy, which `cargo xtask test` runs. A rustup `minimal`
/// profile leaves them out.
fn ensure_components(ok: &impl Fn(&str)) -> Result<()> {
    let missing: Vec<&str> = [("rustfmt", "fmt"), ("clippy", "clippy")]
        .into_iter()
        .filter_map(|(component, sub)| {
            let found = Command::new("cargo").args([sub, "--version"]).output().is_ok_and(|o| o.status.success());
            if found {
                ok(component);
            }
            (!found).then_some(component)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if on_path("rustup").is_none() {
        bail!(
            "cargo {} not available and rustup not found: install the Rust components {}",
            missing.join("/"),
            missing.join(" ")
        );
    }
    println!("[setup] installing: rustup components {}", missing.join(" "));
    exec(Command::new("rustup").args(["component", "add"]).args(&missing))
}

/// cargo-deb, which `cargo xtask deb` (and so the package test) runs. Only
/// `setup`, `deb` and `test` install it: `cargo xtask run` on a fresh
/// machine should not wait for a packaging tool.
pub(crate) fn ensure_cargo_deb(verbosity: Verbosity) -> Result<()> {
    let out = Command::new("cargo").args(["deb", "--version"]).output();
    if let Ok(o) = out.as_ref()
        && o.status.success()
    {
        if verbosity == Verbosity::EachCheck {
            println!("[setup] ok: {}", String::from_utf8_lossy(&o.stdout).trim());
        }
        return Ok(());
    }
    println!("[setup] installing: cargo-deb {CARGO_DEB_VERSION} (cargo install, a few minutes)");
    exec(Command::new("cargo").args(["install", "cargo-deb", "--version", CARGO_DEB_VERSION, "--locked"]))
}

/// `<name> --version`, trimmed, if it runs.
fn tool_version(path: &Path) -> Option<String> {
    let out = Command::new(path).arg("--version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The first file called `name` in a `PATH` directory.
fn on_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// `$CARGO_HOME`, defaulting to `~/.cargo` as cargo does.
fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// The bench's peer servers: Debian package and the file of it the bench
/// uses. `proftpd-mod-crypto` has ProFTPD's `mod_tls`, for FTPS.
const BENCH_PEERS: &[(&str, &str)] = &[
    ("proftpd-core", "usr/sbin/proftpd"),
    ("proftpd-mod-crypto", "usr/lib/proftpd/mod_tls.so"),
    ("pure-ftpd", "usr/sbin/pure-ftpd"),
];
/// Where the peers' packages are downloaded and unpacked, under the workspace.
const BENCH_PEERS_DIR: &str = "target/bench-peers";

/// Paths of the unpacked peer servers.
pub(crate) struct BenchPeers {
    pub(crate) proftpd: PathBuf,
    /// `mod_tls.so`, in the directory of ProFTPD's loadable modules.
    pub(crate) proftpd_tls: PathBuf,
    pub(crate) pure_ftpd: PathBuf,
    /// `package version` of each, for the report.
    pub(crate) versions: Vec<String>,
}

/// ProFTPD (with `mod_tls`) and Pure-FTPd for `cargo xtask bench`, as Debian ships them but not
/// installed: installing would run their maintainer scripts and start
/// services (Pure-FTPd's needs inetd) on port 21 that other tests on this
/// machine may want. `apt-get download` fetches the candidate `.deb`s and
/// `dpkg -x` unpacks them under [`BENCH_PEERS_DIR`]; the shared libraries
/// they link (the `lib*` packages of their `Depends`) are installed with
/// apt, being ordinary libraries. Done once: a stamp names the unpacked
/// versions, and a newer candidate is fetched next time.
pub(crate) fn ensure_bench_peers() -> Result<BenchPeers> {
    let dir = crate::workspace_root().join(BENCH_PEERS_DIR);
    let debs = dir.join("debs");
    let root = dir.join("root");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let mut versions = Vec::new();
    for &(pkg, _) in BENCH_PEERS {
        let stamp = dir.join(format!("{pkg}.unpacked"));
        let unpacked = std::fs::read_to_string(&stamp).ok();
        // Without apt's lists (offline, or never updated) what is unpacked will do.
        let version = match (candidate_version(pkg), &unpacked) {
            (Ok(v), _) => v,
            (Err(_), Some(v)) => v.clone(),
            (Err(e), None) => return Err(e),
        };
        if unpacked.as_deref() != Some(version.as_str()) {
            println!(
                "[setup] fetching {pkg} {version} (a bench peer) and unpacking it into {} (not installed)",
                root.display()
            );
            for old in std::fs::read_dir(&debs)?.flatten() {
                if old.file_name().to_string_lossy().starts_with(&format!("{pkg}_")) {
                    let _ = std::fs::remove_file(old.path());
                }
            }
            exec(Command::new("apt-get").current_dir(&debs).args(["download", &format!("{pkg}={version}")]))?;
            let deb = std::fs::read_dir(&debs)?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pkg}_"))))
                .with_context(|| format!("apt-get download left no {pkg}_*.deb in {}", debs.display()))?;
            exec(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
            let libs = deb_library_depends(&deb)?;
            let missing: Vec<&str> =
                libs.iter().map(String::as_str).filter(|l| !matches!(installed_version(l), Ok(Some(_)))).collect();
            if !missing.is_empty() {
                println!("[setup] {pkg} links libraries not installed here: {}", missing.join(" "));
                install_packages(&missing, false)?;
            }
            std::fs::write(&stamp, &version).with_context(|| format!("writing {}", stamp.display()))?;
        }
        versions.push(format!("{pkg} {version}"));
    }
    println!("[setup] ok: bench peers {} (unpacked in {})", versions.join(", "), root.display());
    let bin = |i: usize| root.join(BENCH_PEERS[i].1);
    let peers = BenchPeers { proftpd: bin(0), proftpd_tls: bin(1), pure_ftpd: bin(2), versions };
    for path in [&peers.proftpd, &peers.proftpd_tls, &peers.pure_ftpd] {
        if !path.is_file() {
            bail!("{} is missing after unpacking; remove {} and run again", path.display(), dir.display());
        }
    }
    Ok(peers)
}

/// The version apt would install of `pkg`.
fn candidate_version(pkg: &str) -> Result<String> {
    let out = Command::new("apt-cache").args(["policy", pkg]).output().context("running apt-cache policy")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:").map(str::trim))
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_owned)
        .with_context(|| format!("apt knows no candidate for {pkg}; run apt-get update"))
}

/// The library packages (`lib*`) among a `.deb`'s `Depends`, without
/// versions; alternatives (`a | b`) count by their first.
fn deb_library_depends(deb: &Path) -> Result<Vec<String>> {
    let out = Command::new("dpkg-deb").arg("-f").arg(deb).arg("Depends").output().context("running dpkg-deb -f")?;
    if !out.status.success() {
        bail!("dpkg-deb -f {} Depends failed", deb.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split(',')
        .filter_map(|d| d.split('|').next()?.split_whitespace().next().map(str::to_owned))
        .filter(|name| name.starts_with("lib") && !name.starts_with("libpam-"))
        .collect())
}
