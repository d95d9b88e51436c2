//! What an operator reads: `ftpd --help`, and the man pages `ftpd(8)` and
//! `ftpd.conf(5)` rendered by the real `man`.

use std::process::Command;

use ftpd_tests::{ftpd_bin, run_ok};

#[test]
fn help_lists_every_subcommand() {
    let help = run_ok(Command::new(ftpd_bin()).arg("--help"));
    for sub in ["stats", "passwd", "check-config"] {
        let line = help.lines().find(|l| l.trim_start().starts_with(sub)).unwrap_or_else(|| panic!("{sub}:\n{help}"));
        assert!(line.trim_start().len() > sub.len() + 5, "{sub} has no description: {line:?}");
    }
}

/// Renders a man page as `man -l` shows it, without a pager or bold.
fn render(page: &std::path::Path) -> String {
    let out = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "200")
        .env("MAN_KEEP_FORMATTING", "0")
        .env("PAGER", "cat")
        .env("MANPAGER", "cat")
        .output()
        .expect("run man (apt-get install man-db)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "man -l {} failed: {err}", page.display());
    assert!(!err.contains("warning"), "man -l {} warns: {err}", page.display());
    // Strip overstrike (bold/underline) in case the pager kept it.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut clean = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            clean.pop();
        } else {
            clean.push(c);
        }
    }
    clean
}

#[test]
fn man_pages_render_and_cover_commands_and_options() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(Command::new(ftpd_bin()).arg("--man").arg(dir.path()));
    let ftpd8 = render(&dir.path().join("ftpd.8"));
    for want in [
        "stats",
        "passwd",
        "check-config",
        "SIGHUP",
        "SIGTERM",
        "/etc/ftpd/ftpd.conf",
        "EXIT STATUS",
        "--help-config",
        "ftpd.conf(5)",
    ] {
        assert!(ftpd8.contains(want), "ftpd(8) lacks {want:?}:\n{ftpd8}");
    }
    let conf5 = render(&dir.path().join("ftpd.conf.5"));
    let table = run_ok(Command::new(ftpd_bin()).arg("--help-config"));
    let names: Vec<&str> = table.lines().skip(2).filter_map(|l| l.split('`').nth(1)).collect();
    assert!(names.len() > 100, "{names:?}");
    for name in names {
        assert!(conf5.lines().any(|l| l.trim_start().starts_with(name)), "ftpd.conf(5) lacks option {name}");
    }
    assert!(conf5.contains("ftpd_atomic_uploads"), "{conf5}");
}
