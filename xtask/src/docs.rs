//! `cargo xtask docs`: regenerates the README's option reference from the
//! option table in the binary (`ftpd --help-config`).

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{build, workspace_root};

const BEGIN: &str = "<!-- options:begin -->\n";
const END: &str = "<!-- options:end -->";

/// Rewrites the section between the markers; says whether anything changed.
pub(crate) fn run() -> Result<()> {
    let bin = build::run()?;
    let out = Command::new(&bin).arg("--help-config").output().with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} --help-config failed: {}", bin.display(), out.status);
    }
    let table = String::from_utf8(out.stdout).context("--help-config printed non-UTF-8")?;
    let path = workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(b), Some(e)) = (readme.find(BEGIN), readme.find(END)) else {
        bail!("README.md lacks the {BEGIN:?} / {END:?} markers");
    };
    let new = format!("{}{BEGIN}{table}{}", &readme[..b], &readme[e..]);
    if new == readme {
        println!("README.md option reference is up to date");
    } else {
        std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
        println!("README.md option reference regenerated");
    }
    Ok(())
}
