//! The session's view of the file tree, which most handlers need: client
//! paths resolved against the current directory and `deny_file`, what the
//! user may change (the policy decided at login), the MLSx `perm` fact that
//! says so, and the directory messages CWD and login show.

use crate::{
    fs::{self, VPath},
    policy::Op,
    session::Session,
};

impl Session {
    /// Whether the user may make a change of this class (decided at login,
    /// see [`crate::policy::Policy::decide`]).
    pub(crate) fn may(&self, op: Op) -> bool {
        self.user().policy.may(op)
    }

    /// Resolves a client path. `None` for NUL bytes, overlong paths and
    /// `deny_file` matches, which the caller answers like "not found".
    pub(crate) fn path(&self, arg: &[u8]) -> Option<VPath> {
        let p = self.nav.cwd.join(arg).ok()?;
        if self.settings.deny.matches_path(&p) || fs::is_upload_temp(p.file_name()) {
            return None;
        }
        Some(p)
    }

    /// RFC 3659 `perm` fact for an entry, from what this session may do.
    pub(crate) fn perm_fact(&self, is_dir: bool) -> String {
        let mut p = String::new();
        if is_dir {
            p.push_str("el");
            if self.may(Op::Upload) {
                p.push('c');
            }
            if self.may(Op::Mkdir) {
                p.push('m');
            }
            if self.may(Op::Other) {
                p.push_str("dfp");
            }
        } else {
            if self.cfg().download_enable {
                p.push('r');
            }
            if self.may(Op::Other) {
                p.push_str("adfw");
            }
        }
        p
    }

    /// With `dirmessage_enable`, the lines of `dir`'s message file the first
    /// time this session enters `dir` (vsftpd shows each message once).
    pub(crate) fn dir_message(&mut self, dir: &VPath) -> Vec<String> {
        let cfg = self.cfg();
        if !cfg.dirmessage_enable || self.nav.seen_messages.contains(dir) {
            return Vec::new();
        }
        self.nav.seen_messages.push(dir.clone());
        dir.join(cfg.message_file.as_bytes())
            .ok()
            .and_then(|m| self.read_small(&m))
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Reads a small text file (a message file) inside the root, up to 8 KiB.
    fn read_small(&self, path: &VPath) -> Option<String> {
        let (fd, _) = self.user().root.open_file(path).ok()?;
        let mut buf = vec![0u8; 8192];
        let n = rustix::io::read(&fd, &mut buf).ok()?;
        buf.truncate(n);
        Some(String::from_utf8_lossy(&buf).into_owned())
    }
}
