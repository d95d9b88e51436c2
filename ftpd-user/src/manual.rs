//! The man pages. `ftpd.conf(5)` is generated from the option table, as the
//! README's reference is, so that no option can be documented in one place
//! and missing from another; `ftpd(8)` is built in `main.rs` from the
//! command-line parser for the same reason.

use roff::{Roff, bold, italic, roman};

use crate::config::Config;

/// The date in the pages' title line: the release, not the build time, so
/// that two builds of one version give identical packages.
pub const DATE: &str = "2026-11-30";

/// `ftpd.conf(5)` in roff.
pub fn conf_page() -> String {
    let version = concat!("ftpd ", env!("CARGO_PKG_VERSION"));
    let mut r = Roff::new();
    r.control("TH", ["FTPD.CONF", "5", DATE, version, "File Formats"]);
    r.control("SH", ["NAME"]).text([roman("ftpd.conf - configuration file of ftpd, in vsftpd.conf syntax")]);
    r.control("SH", ["DESCRIPTION"]).text([
        roman("ftpd reads the file named on its command line (the package installs "),
        bold("/etc/ftpd/ftpd.conf"),
        roman("). Each line is "),
        italic("name"),
        roman("="),
        italic("value"),
        roman(" with no spaces around the "),
        bold("="),
        roman(". A line starting with "),
        bold("#"),
        roman(" in the first column is a comment. Names are case-sensitive; booleans are "),
        bold("YES"),
        roman(" or "),
        bold("NO"),
        roman(" (also TRUE/FALSE/1/0, any case); numbers with a leading 0 are octal; an empty value restores the default; the last duplicate wins. A vsftpd.conf is read as is: "),
        bold("ftpd check-config"),
        roman(" tells what ftpd would do differently with it. An error names the file, the line and the closest real option names."),
    ]);
    r.control("PP", []).text([
        roman("Options that vsftpd lacks start with "),
        bold("ftpd_"),
        roman(". Settings given with "),
        bold("-o"),
        italic("name"),
        bold("="),
        italic("value"),
        roman(" on the command line apply after the file. SIGHUP re-reads the file."),
    ]);
    r.control("SH", ["OPTIONS"]);
    for o in Config::TABLE {
        let kind = o.kind.describe("|");
        let default = if o.default.is_empty() { "(empty)".to_owned() } else { o.default.to_owned() };
        r.control("TP", []).text([bold(o.name), roman(format!(" ({kind}, default {default})"))]);
        r.text([roman(format!("{}{}", o.doc, o.reload_note()).replace('`', ""))]);
    }
    r.control("SH", ["SEE ALSO"]).text([roman("ftpd(8), vsftpd.conf(5)")]);
    r.to_roff()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_says_which_options_need_a_restart() {
        let page = super::conf_page();
        let after = |name: &str| {
            page.split(&format!("\\fB{name}\\fR")).nth(1).and_then(|s| s.split(".TP").next()).unwrap_or("")
        };
        assert!(after("listen_port").contains("(port, default 21)"), "{}", after("listen_port"));
        assert!(after("listen_port").contains("Restart to change."), "{}", after("listen_port"));
        assert!(after("pasv_min_port").contains("With the kernel data plane, restart to change."));
        assert!(after("anon_umask").contains("(octal mode, default 0077)"), "{}", after("anon_umask"));
        assert!(!after("ftpd_banner").contains("estart"));
    }
}
