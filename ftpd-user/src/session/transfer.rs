//! What every transfer shares, whichever handler runs it: the rate group it
//! joins, how its pacing, log line and metrics are recorded, and the checks
//! that make a file downloadable (RETR and HASH read the same files).

use std::{io, os::fd::OwnedFd, time::Instant};

use crate::{
    fs::VPath,
    reply::{self, Reply},
    session::{Raced, Session},
    xferlog::{Direction, Who},
};

/// Largest file whose TYPE A `SIZE` is computed. Reading the file is the
/// only way to count its LFs; vsftpd never does it ("a potential I/O DoS")
/// and answers the binary size. ftpd answers the converted size, which a
/// client resuming a TYPE A download needs, for files up to this size, and
/// `550 Could not get file size.` above it rather than a wrong number.
pub const ASCII_SIZE_MAX: u64 = 16 << 20;

/// Size of `file` after LF → CRLF conversion (what a TYPE A download sends),
/// reading at most [`ASCII_SIZE_MAX`] bytes: `None` if it is longer (it may
/// have grown since it was stat'ed). Blocking: call it off the async threads.
pub fn ascii_size(file: &OwnedFd) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    let mut size = 0u64;
    let mut prev = 0u8;
    loop {
        if off > ASCII_SIZE_MAX {
            return Ok(None);
        }
        let n = rustix::io::pread(file, &mut buf, off)?;
        if n == 0 {
            return Ok(Some(size));
        }
        for &b in &buf[..n] {
            size += if b == b'\n' && prev != b'\r' { 2 } else { 1 };
            prev = b;
        }
        off += n as u64;
    }
}
impl Session {
    /// Records a transfer in the metrics.
    pub(crate) fn count_transfer(&self, direction: &str, result: &str, bytes: u64, secs: f64, path: &[u8]) {
        let name = &self.user().name;
        let user = self.settings.metrics_users.iter().any(|u| u == name).then_some(name.as_str());
        self.shared.metrics.transfer(direction, result, bytes, secs, user);
        if self.settings.tls.is_some() {
            self.shared.metrics.tls_transfer(direction, self.chan.data_tls);
        }
        self.shared.metrics.dir_transfer(&self.cfg().ftpd_metrics_dirs, path, direction, bytes);
    }

    /// Writes the transfer to the xferlog / vsftpd log, as configured.
    pub(crate) fn log_transfer(&self, dir: Direction, path: &[u8], bytes: u64, secs: f64, complete: bool) {
        let class = if self.user().anonymous {
            'a'
        } else if self.cfg().guest_enable {
            'g'
        } else {
            'r'
        };
        let who = Who {
            client: &self.names.client,
            user: &self.names.xfer_user,
            log_user: &self.names.log_user,
            class,
            binary: self.chan.binary,
        };
        self.shared.logs.transfer(&who, dir, path, bytes, secs, complete);
    }

    /// Joins the rate group for a transfer about to start, limited or not
    /// (a reload may limit it later).
    pub(crate) fn start_flow(&self) -> crate::rates::FlowGuard {
        let key = match self.cfg().ftpd_rate_scope {
            crate::config::RateScope::User => format!("u:{}", self.user().name),
            crate::config::RateScope::Ip => format!("i:{}", self.peer_ip()),
            crate::config::RateScope::Session => format!("s:{}", self.id),
        };
        self.logged_in().limit.start(key, self.user().policy.max_rate)
    }

    /// Counts a limited transfer by how it was paced; returns that for the log.
    pub(crate) fn count_paced(&self, direction: &str, pacer: &crate::rates::Pacer) -> &'static str {
        match pacer.how() {
            Some(how) => {
                self.shared.metrics.paced(direction, how);
                how
            }
            None => "no",
        }
    }

    /// Opens a file for reading as RETR may: `download_enable`, the path
    /// confined and not denied, opened by the user's worker (or the front
    /// with the same credentials), and for anonymous users only a file
    /// everyone may read. The refusal is the reply to send.
    pub(crate) fn open_download(&self, arg: &[u8]) -> Result<(VPath, OwnedFd, rustix::fs::Stat), Reply> {
        let cfg = self.cfg();
        if !cfg.download_enable {
            return Err(reply::PERMISSION_DENIED);
        }
        let opened = self.path(arg).and_then(|p| self.user().root.open_file(&p).ok().map(|(f, st)| (p, f, st)));
        let Some((vpath, file, st)) = opened else {
            return Err(reply::FAILED_TO_OPEN_FILE);
        };
        if self.user().policy.world_readable_only && st.st_mode & 0o004 == 0 {
            return Err(reply::FAILED_TO_OPEN_FILE);
        }
        Ok((vpath, file, st))
    }
}

/// How a transfer's data phase ended.
pub(crate) struct Sent<R> {
    pub(crate) raced: Raced<R>,
    /// How the rate limit paced it, for the log.
    pub(crate) paced: &'static str,
    pub(crate) started: Instant,
}
