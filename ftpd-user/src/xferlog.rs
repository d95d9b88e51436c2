//! vsftpd-compatible log files: the wu-ftpd `xferlog` format that transfer
//! statistics tools parse (`xferlog_std_format=YES`), and vsftpd's own log
//! (`vsftpd_log_file`: transfers, logins and, with `log_ftp_protocol`, every
//! command and reply).
//!
//! The files are opened by the privileged process at startup (append-only)
//! and written by sessions with one `write` per line, which `O_APPEND` keeps
//! whole even with concurrent writers.

use std::{fs::File, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use crate::{config::Config, fs};

/// Open log files, per the config.
#[derive(Debug, Default)]
pub struct Logs {
    /// `xferlog_file`, with `xferlog_enable` and `xferlog_std_format` (or `dual_log_enable`).
    xferlog: Option<File>,
    /// `vsftpd_log_file`, with `xferlog_enable` and not `xferlog_std_format` (or `dual_log_enable`),
    /// or with `log_ftp_protocol`.
    vsftpd: Option<File>,
    protocol: bool,
    localtime: bool,
}

fn open_append(path: &str) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(Path::new(path))
        .map_err(|e| format!("cannot open log file {path}: {e}"))
}

/// What a transfer log line describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// RETR.
    Download,
    /// STOR, APPE, STOU.
    Upload,
}

/// The session fields a log line needs.
pub struct Who<'a> {
    /// The client's IP, as text.
    pub client: &'a str,
    /// xferlog's user field: the login name, or for anonymous users the
    /// password (e-mail address) they gave, as xferlog has always recorded it.
    pub user: &'a str,
    /// The name in vsftpd's own log (`ftp_username` for anonymous users).
    pub log_user: &'a str,
    /// `a` anonymous, `r` real (local) user, `g` guest (virtual) user.
    pub class: char,
    /// TYPE I (`b` in xferlog) or TYPE A (`a`).
    pub binary: bool,
}

impl Logs {
    /// Opens what the config asks for. Call as root, before dropping privileges.
    pub fn open(cfg: &Config) -> Result<Self, String> {
        let std_fmt = cfg.xferlog_enable && (cfg.xferlog_std_format || cfg.dual_log_enable);
        let own = (cfg.xferlog_enable && (!cfg.xferlog_std_format || cfg.dual_log_enable)) || cfg.log_ftp_protocol;
        Ok(Self {
            xferlog: if std_fmt { Some(open_append(&cfg.xferlog_file)?) } else { None },
            vsftpd: if own { Some(open_append(&cfg.vsftpd_log_file)?) } else { None },
            protocol: cfg.log_ftp_protocol,
            localtime: cfg.use_localtime,
        })
    }

    /// Whether commands and replies are logged.
    pub fn protocol(&self) -> bool {
        self.protocol && self.vsftpd.is_some()
    }

    fn now(&self) -> String {
        let t = fs::now_secs();
        ctime(if self.localtime { t + fs::local_offset(t) } else { t })
    }

    fn write(mut file: &File, line: &str) {
        // A full disk must not stop transfers; the loss shows in the file.
        let _ = file.write_all(line.as_bytes());
    }

    /// One finished (or failed) transfer, in each enabled format.
    pub fn transfer(&self, who: &Who<'_>, dir: Direction, path: &[u8], bytes: u64, secs: f64, complete: bool) {
        let path = printable(path);
        if let Some(f) = &self.xferlog {
            // Fields are space-separated, so a space in a name would shift them.
            let name: String = path.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect();
            let line = format!(
                "{} {} {} {} {} {} _ {} {} {} ftp 0 * {}\n",
                self.now(),
                secs.round().max(1.0) as u64,
                who.client,
                bytes,
                name,
                if who.binary { 'b' } else { 'a' },
                if dir == Direction::Download { 'o' } else { 'i' },
                who.class,
                if who.user.is_empty() { "*" } else { who.user },
                if complete { 'c' } else { 'i' },
            );
            Self::write(f, &line);
        }
        if let Some(f) = &self.vsftpd {
            let rate = if secs > 0.0 { bytes as f64 / 1024.0 / secs } else { 0.0 };
            let line = format!(
                "{} [pid {}] [{}] {} {}: Client \"{}\", \"{}\", {} bytes, {:.2}Kbyte/sec\n",
                self.now(),
                std::process::id(),
                who.log_user,
                if complete { "OK" } else { "FAIL" },
                if dir == Direction::Download { "DOWNLOAD" } else { "UPLOAD" },
                who.client,
                path,
                bytes,
                rate
            );
            Self::write(f, &line);
        }
    }

    /// A vsftpd log event: `OK LOGIN`, `FAIL LOGIN`, `OK MKDIR`, `CONNECT` …
    pub fn event(&self, user: &str, what: &str, client: &str, detail: Option<&[u8]>) {
        if let Some(f) = &self.vsftpd {
            let detail = detail.map(|d| format!(", \"{}\"", printable(d))).unwrap_or_default();
            let line =
                format!("{} [pid {}] [{user}] {what}: Client \"{client}\"{detail}\n", self.now(), std::process::id());
            Self::write(f, &line);
        }
    }

    /// A command (`FTP command`) or a reply (`FTP response`), with `log_ftp_protocol`.
    pub fn protocol_line(&self, user: &str, client: &str, response: bool, text: &[u8]) {
        if !self.protocol() {
            return;
        }
        if let Some(f) = &self.vsftpd {
            let kind = if response { "FTP response" } else { "FTP command" };
            let text = printable(text);
            let line = format!(
                "{} [pid {}] [{user}] {kind}: Client \"{client}\", \"{text}\"\n",
                self.now(),
                std::process::id()
            );
            Self::write(f, &line);
        }
    }
}

/// A client's bytes as they may appear in a log line: every control
/// character (CR, LF, ESC, DEL, C1) becomes `?`, as vsftpd's
/// `str_replace_unprintable` does, so that a name cannot end a line and
/// forge the next one or drive a terminal. Non-ASCII UTF-8 stays readable.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// `ctime(3)` without the newline: `Tue Nov 24 05:20:41 2026`.
pub fn ctime(t: i64) -> String {
    let stamp = fs::mdtm(t); // YYYYMMDDHHMMSS
    let month: usize = stamp[4..6].parse().unwrap_or(1);
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let day: u32 = stamp[6..8].parse().unwrap_or(1);
    let weekday = DAYS[usize::try_from(t.div_euclid(86_400).rem_euclid(7)).unwrap_or(0)];
    format!(
        "{weekday} {} {day:>2} {}:{}:{} {}",
        months[month.clamp(1, 12) - 1],
        &stamp[8..10],
        &stamp[10..12],
        &stamp[12..14],
        &stamp[0..4]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_matches_libc() {
        assert_eq!(ctime(1_795_495_947), "Tue Nov 24 04:52:27 2026");
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
    }
}
