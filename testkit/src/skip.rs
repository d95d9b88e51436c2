//! Tests that cannot run here: not root, a tool missing. Such a test fails,
//! saying what it needs, unless it is named in `FTPD_TEST_ALLOW_SKIP`: a
//! test that passes without having run hides a regression as well as one
//! that is not run at all, and nobody reads the line it printed. A listed
//! test is skipped, says so on stderr, and is written to the file named by
//! `FTPD_TEST_SKIP_LOG`, which `cargo xtask test` prints at the end.

use std::io::Write as _;

use crate::is_root;

/// Comma-separated tests that may skip: `file::test` (`reload::sighup_...`)
/// for one test, or `file` for every test of a file.
pub const ALLOW_SKIP: &str = "FTPD_TEST_ALLOW_SKIP";

/// The file skipped tests are appended to, one `file::test: why` a line.
pub const SKIP_LOG: &str = "FTPD_TEST_SKIP_LOG";

/// Whether `list` (the value of [`ALLOW_SKIP`]) names `test` or its file.
pub fn allowed(list: &str, test: &str) -> bool {
    let file = test.split("::").next().unwrap_or(test);
    list.split(',').map(str::trim).any(|entry| !entry.is_empty() && (entry == test || entry == file))
}

/// `test` (`file::test`) cannot run here, because of `why`. Panics unless it
/// is listed in [`ALLOW_SKIP`]; returns when it is, and the caller returns too.
pub fn cannot_run(test: &str, why: &str) {
    let list = std::env::var(ALLOW_SKIP).unwrap_or_default();
    assert!(
        allowed(&list, test),
        "{test} cannot run here: {why}. Run it where it can (CI runs as root with the tools of \
         `cargo xtask setup`), or name it in {ALLOW_SKIP} (e.g. {ALLOW_SKIP}={test}) to skip it"
    );
    // Straight to stderr, past the harness's capture: a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why} (listed in {ALLOW_SKIP})");
    if let Some(path) = std::env::var_os(SKIP_LOG) {
        let line = format!("{test}: {why}\n");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
        // One write per line: test binaries run in parallel and append alike.
        if let Err(e) = file.and_then(|mut f| f.write_all(line.as_bytes())) {
            let _ = writeln!(std::io::stderr(), "cannot record the skip in {}: {e}", path.display());
        }
    }
}

/// Whether the test may go on: it runs as root, or [`cannot_run`] let it skip
/// (`needs`: what root is needed for).
pub fn root_or_skip(test: &str, needs: &str) -> bool {
    if is_root() {
        return true;
    }
    cannot_run(test, &format!("needs root ({needs})"));
    false
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn a_skip_is_allowed_only_for_the_tests_and_files_listed() {
        assert!(!allowed("", "reload::a_test"));
        assert!(allowed("reload::a_test", "reload::a_test"));
        assert!(allowed("sandbox, reload", "reload::a_test"), "a whole file");
        assert!(!allowed("reload::other", "reload::a_test"));
        assert!(!allowed("reload::a", "reload::a_test"), "no prefixes of names");
        assert!(!allowed("rel", "reload::a_test"));
    }
}
