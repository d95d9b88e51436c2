//! `cargo xtask deb`: the Debian package, built by cargo-deb from the
//! release binary the other tasks use (`--no-build`), so packaging costs
//! seconds, not a second build.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::{build, cargo, exec, workspace_root};

/// Builds `target/debian/ftpd_*.deb` and returns its path.
pub(crate) fn run() -> Result<PathBuf> {
    let bin = build::run()?;
    // The man pages come from the binary itself (its parser and option table).
    let man = bin.parent().context("binary without a directory")?.join("man");
    exec(Command::new(&bin).arg("--man").arg(&man))?;
    for page in ["ftpd.8", "ftpd.conf.5"] {
        // -n: no name or time stamp inside, so equal inputs give equal packages.
        exec(Command::new("gzip").args(["-9", "-n", "-f"]).arg(man.join(page)))?;
    }
    let out = workspace_root().join("target/debian");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let before = debs(&out)?;
    for old in &before {
        std::fs::remove_file(old).with_context(|| format!("removing {}", old.display()))?;
    }
    exec(cargo(["deb", "-p", "ftpd-user", "--no-build", "--strip", "--output"]).arg(&out))?;
    match debs(&out)?.as_slice() {
        [deb] => {
            println!("built {}\ninstall it with: apt install {}", deb.display(), deb.display());
            Ok(deb.clone())
        }
        other => bail!("cargo deb left {} packages in {}", other.len(), out.display()),
    }
}

fn debs(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            v.push(p);
        }
    }
    Ok(v)
}
