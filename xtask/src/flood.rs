//! `cargo xtask flood`: the flood figures, shown.
//!
//! The test `flood_figures_memory_and_descriptors_stay_bounded` in
//! `tests/tests/security.rs` (also run by CI) opens and drops 10,000
//! connections, holds 5,000 idle sessions, and sends 2,000 wrong passwords
//! from one address and 2,000 from 200 addresses, printing the RSS and
//! descriptors of each ftpd process before, at the peak and after each run.
//! This runs it alone with its output shown, and with `FTPD_FLOOD=full` it
//! also waits 15 s for the figures once idle threads have exited.

use anyhow::Result;

use crate::{REQUIRE_EBPF, build, cargo, exec, setup};

/// Builds ftpd, then runs the flood test with the full counts.
pub(crate) fn run() -> Result<()> {
    setup::run(setup::Verbosity::Summary)?;
    let bin = build::run()?;
    exec(
        cargo([
            "test",
            "--release",
            "--locked",
            "-p",
            "ftpd-tests",
            "--test",
            "security",
            "flood_figures",
            "--",
            "--nocapture",
        ])
        .env(REQUIRE_EBPF.0, REQUIRE_EBPF.1)
        .env("FTPD_BIN", bin)
        .env("FTPD_FLOOD", "full"),
    )
}
