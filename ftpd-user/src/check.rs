//! `ftpd check-config FILE`: what ftpd does differently from vsftpd with a
//! given vsftpd.conf, line by line, so an operator can switch knowingly.
//!
//! Everything is derived from the option table (which options have no
//! effect, which are refused) and from `Config::validate`, so the report
//! cannot drift from what the server does at startup.

use std::{fmt::Write as _, path::Path};

use crate::config::{Config, Effect, MAX_CONFIG_BYTES};

/// How much a finding matters for the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// ftpd behaves differently from vsftpd, or refuses the setting.
    Differs,
    /// Accepted without effect; clients see no difference.
    Note,
    /// An ftpd option that would serve better.
    Suggest,
}

/// One finding, tied to a line (0: the file as a whole).
#[derive(Clone, Debug)]
pub struct Finding {
    /// 1-based line, or 0.
    pub line: usize,
    /// The line's `name=value`, or the option concerned.
    pub setting: String,
    /// Its weight.
    pub kind: Kind,
    /// What happens and what to do.
    pub message: String,
}

/// The findings for one file.
#[derive(Debug)]
pub struct Report {
    /// The file name as shown.
    pub source: String,
    /// In line order; whole-file findings last.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether ftpd behaves as vsftpd would with this file.
    pub fn same(&self) -> bool {
        !self.findings.iter().any(|f| f.kind == Kind::Differs)
    }

    /// The report as printed: `FILE:LINE: name=value: kind: message`.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let name = Path::new(&self.source).file_name().map_or(self.source.as_str(), |n| n.to_str().unwrap_or(""));
        let name = if name.is_empty() { self.source.as_str() } else { name };
        for f in &self.findings {
            let kind = match f.kind {
                Kind::Differs => "differs",
                Kind::Note => "same",
                Kind::Suggest => "suggest",
            };
            let _ = writeln!(out, "{name}:{}: {}: {kind}: {}", f.line, f.setting, f.message);
        }
        let differ = self.findings.iter().filter(|f| f.kind == Kind::Differs).count();
        if differ == 0 {
            let _ = writeln!(out, "{}: ftpd behaves as vsftpd would with this file", self.source);
        } else {
            let _ = writeln!(out, "{}: {differ} difference(s) from vsftpd", self.source);
        }
        out
    }
}

/// Reads and checks a file. Errors only when it cannot be read at all.
pub fn check_file(path: &Path) -> Result<Report, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!("{}: larger than {MAX_CONFIG_BYTES} bytes (vsftpd refuses it too)", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| format!("{}: not UTF-8: {e}", path.display()))?;
    Ok(check_text(&path.display().to_string(), &text))
}

/// Checks `text`, reading on past bad lines (unlike the server) so that one
/// run lists every problem.
pub fn check_text(source: &str, text: &str) -> Report {
    let mut cfg = Config::default();
    let mut findings = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let setting = raw.trim_end_matches('\r').to_owned();
        let mut differs = |message: String| {
            findings.push(Finding { line, setting: setting.clone(), kind: Kind::Differs, message });
        };
        if raw.ends_with('\r') {
            differs(
                "line ends with a carriage return: vsftpd misreads it and ftpd refuses it; convert with `dos2unix`"
                    .into(),
            );
            continue;
        }
        if let Err(e) = cfg.apply_setting(raw) {
            if e.contains("unrecognised option") {
                differs(format!("neither vsftpd nor ftpd has this option; both refuse to start ({e})"));
            } else {
                differs(format!("ftpd refuses this line and will not start: {e}"));
            }
            continue;
        }
        let Some((name, value)) = raw.split_once('=') else { continue };
        let Some(doc) = Config::TABLE.iter().find(|o| o.name == name) else { continue };
        seen.push(doc.name);
        let on = matches!(value.to_ascii_uppercase().as_str(), "YES" | "TRUE" | "1");
        let push = |findings: &mut Vec<Finding>, kind, message: String| {
            findings.push(Finding { line, setting: raw.to_owned(), kind, message });
        };
        if doc.effect == Effect::RefusedWhenYes {
            if on {
                push(
                    &mut findings,
                    Kind::Differs,
                    format!("ftpd refuses to start with this: {}", doc.doc.replace('`', "")),
                );
            }
        } else if doc.effect == Effect::None {
            push(&mut findings, Kind::Note, format!("accepted, no effect in ftpd: {}", doc.doc.replace('`', "")));
        } else if name == "check_shell" && on {
            push(
                &mut findings,
                Kind::Differs,
                "ftpd refuses local users whose shell is not in /etc/shells; vsftpd's PAM builds (Debian's) ignore check_shell and let them in".into(),
            );
        } else if name == "async_abor_enable" {
            push(&mut findings, Kind::Note, "accepted; ftpd always handles ABOR during a transfer".into());
        }
    }

    let whole = |findings: &mut Vec<Finding>, setting: &str, kind, message: String| {
        findings.push(Finding { line: 0, setting: setting.to_owned(), kind, message });
    };
    if !seen.contains(&"anonymous_enable") {
        whole(
            &mut findings,
            "anonymous_enable",
            Kind::Differs,
            "not set: vsftpd's default is YES (anonymous logins allowed), ftpd's default is NO; write anonymous_enable=YES or NO explicitly".into(),
        );
    }
    if !cfg.listen && !cfg.listen_ipv6 {
        whole(
            &mut findings,
            "listen",
            Kind::Differs,
            "listen=NO and listen_ipv6=NO: vsftpd expects to be started by inetd; ftpd always listens itself (on IPv4); set listen=YES".into(),
        );
    }
    if cfg.ssl_enable && !seen.contains(&"strict_ssl_read_eof") {
        whole(
            &mut findings,
            "strict_ssl_read_eof",
            Kind::Differs,
            "ftpd's default is YES, vsftpd's NO: an FTPS upload that ends without the client's close_notify fails (426) instead of being kept; set strict_ssl_read_eof=NO for vsftpd's behaviour".into(),
        );
    }
    if cfg.ssl_enable && !seen.contains(&"ssl_ciphers") {
        whole(
            &mut findings,
            "ssl_ciphers",
            Kind::Note,
            "not set: vsftpd's default DES-CBC3-SHA does not exist in ftpd's TLS library; ftpd offers the HIGH suites (TLS 1.2 and 1.3 AEAD)".into(),
        );
    }
    if cfg.ftpd_banner.is_empty() && cfg.banner_file.is_empty() {
        whole(
            &mut findings,
            "ftpd_banner",
            Kind::Note,
            "not set: the 220 greeting names ftpd and its version where vsftpd names itself; set ftpd_banner if a monitor expects a text".into(),
        );
    }
    if let Err(e) = cfg.validate()
        && !Config::TABLE
            .iter()
            .any(|o| o.effect == Effect::RefusedWhenYes && e.starts_with(&format!("{}=YES", o.name)))
    {
        whole(&mut findings, "(whole file)", Kind::Differs, format!("ftpd will not start: {e}"));
    }

    // Better results with ftpd's own options: advice, not differences.
    if cfg.pasv_enable && cfg.pasv_range().is_none() {
        whole(
            &mut findings,
            "pasv_min_port",
            Kind::Suggest,
            "set pasv_min_port and pasv_max_port (e.g. 50000 and 50099): a firewall can then open exactly that range, and ftpd's kernel plane opens per-transfer pinholes in it".into(),
        );
    }
    let uploads = cfg.write_enable && (cfg.local_enable || cfg.anon_upload_enable || cfg.guest_enable);
    if uploads && !cfg.ftpd_atomic_uploads {
        whole(
            &mut findings,
            "ftpd_atomic_uploads",
            Kind::Suggest,
            "ftpd_atomic_uploads=YES: an upload appears under its name only when complete, so mirror clients never fetch half a file".into(),
        );
    }
    if (cfg.local_max_rate != 0 || cfg.anon_max_rate != 0) && cfg.ftpd_rate_scope == crate::config::RateScope::Session {
        whole(
            &mut findings,
            "ftpd_rate_scope",
            Kind::Suggest,
            "ftpd_rate_scope=ip (or user): the rate limit is shared by a client's parallel connections instead of multiplied by them".into(),
        );
    }
    if cfg.anonymous_enable && cfg.anon_world_readable_only && cfg.nopriv_user != cfg.ftp_username {
        let user = cfg.front_user();
        let note = if user == cfg.ftp_username {
            format!(
                "the network process runs as ftp_username={user}, not nopriv_user={} (ftpd_anon_fast_path): it opens anonymous downloads itself instead of asking the file worker",
                cfg.nopriv_user
            )
        } else if cfg.ftpd_anon_fast_path {
            format!(
                "the network process runs as nopriv_user={}: anonymous users may write and this kernel is older than Linux 6.12 (Landlock ABI 6), whose lock a front acting as ftp_username needs then, so every anonymous open goes through the file worker (about half the small-file RETRs per second)",
                cfg.nopriv_user
            )
        } else {
            "ftpd_anon_fast_path=NO: every anonymous open goes through the file worker (about half the small-file RETRs per second)"
                .to_string()
        };
        whole(&mut findings, "ftpd_anon_fast_path", Kind::Note, note);
    }
    if cfg.ftpd_metrics_listen.is_none() {
        whole(
            &mut findings,
            "ftpd_metrics_listen",
            Kind::Suggest,
            "ftpd_metrics_listen=127.0.0.1:9121: Prometheus metrics, read by `ftpd stats` and the Grafana dashboard"
                .into(),
        );
    }
    if cfg.anonymous_enable && cfg.ftpd_metrics_dirs.is_empty() {
        whole(
            &mut findings,
            "ftpd_metrics_dirs",
            Kind::Suggest,
            "ftpd_metrics_dirs=DIR,DIR...: bytes and transfers per top-level directory (project), as mirror operators publish them".into(),
        );
    }
    Report { source: source.to_owned(), findings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refused_option_is_refused_by_validate() {
        let refused: Vec<&str> =
            Config::TABLE.iter().filter(|o| o.effect == Effect::RefusedWhenYes).map(|o| o.name).collect();
        assert_eq!(refused, ["session_support", "tcp_wrappers", "syslog_enable", "chown_uploads"]);
        for name in refused {
            let mut c = Config::default();
            c.set(name, "YES").unwrap();
            assert!(c.validate().unwrap_err().contains(name), "{name}");
            let r = check_text("t", &format!("listen=YES\nanonymous_enable=NO\n{name}=YES\n"));
            assert!(r.findings.iter().any(|f| f.line == 3 && f.kind == Kind::Differs), "{}", r.text());
        }
    }

    #[test]
    fn options_without_effect_are_notes_and_check_shell_is_a_difference() {
        let r = check_text("t", "listen=YES\nanonymous_enable=NO\nisolate=NO\nchown_username=ftp\ncheck_shell=YES\n");
        let at = |line| r.findings.iter().find(|f| f.line == line).map(|f| (f.kind, f.message.clone()));
        assert!(matches!(at(3), Some((Kind::Note, m)) if m.contains("no effect")), "{}", r.text());
        assert!(matches!(at(4), Some((Kind::Note, m)) if m.contains("no effect")), "{}", r.text());
        // Its doc line mentions "no effect" (vsftpd's), which once made it a note.
        assert!(matches!(at(5), Some((Kind::Differs, m)) if m.contains("/etc/shells")), "{}", r.text());
    }

    #[test]
    fn ftps_configs_name_the_defaults_that_differ() {
        let r = check_text("t", "listen=YES\nssl_enable=YES\n");
        assert!(!r.same(), "{}", r.text());
        assert!(r.text().contains("strict_ssl_read_eof"), "{}", r.text());
        let r = check_text("t", "listen=YES\nssl_enable=YES\nstrict_ssl_read_eof=NO\nssl_ciphers=HIGH\n");
        assert!(!r.text().contains("strict_ssl_read_eof: "), "{}", r.text());
    }

    #[test]
    fn explicit_settings_that_match_are_silent() {
        let r = check_text(
            "t",
            "listen=YES\nanonymous_enable=NO\npasv_min_port=1\npasv_max_port=2\nftpd_metrics_listen=127.0.0.1:1\nftpd_banner=hi\n",
        );
        assert!(r.same() && r.findings.is_empty(), "{}", r.text());
    }

    #[test]
    fn bad_lines_do_not_hide_later_ones() {
        let r = check_text("t", "listen=YES\nanonymous_enable=NO\nbogus=1\ntcp_wrappers=YES\n");
        let lines: Vec<usize> = r.findings.iter().filter(|f| f.kind == Kind::Differs).map(|f| f.line).collect();
        assert_eq!(lines, vec![3, 4], "{}", r.text());
    }
}
