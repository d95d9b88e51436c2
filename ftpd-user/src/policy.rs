//! The rules a logged-in session runs under: its bandwidth limit, its umask
//! and what it may change. Decided in one place, [`Policy::decide`], from the
//! session's effective config (the global one, plus the user's
//! `user_config_dir` file, which only the master reads).

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// A class of file-system change, for the permission rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create a new file.
    Upload,
    /// Create a directory.
    Mkdir,
    /// Delete, rename, append to or overwrite (vsftpd's "other write").
    Other,
    /// SITE CHMOD.
    Chmod,
}

/// What a session may do and how fast, decided at login. The master sends it
/// with the grant, so the front applies rules it never has to work out (nor
/// read the user's file for), and a SIGHUP reload gives running sessions new
/// limits decided by the same function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Anonymous users' rights (`anon_*`) apply: anonymous sessions, and
    /// virtual users without `virtual_use_local_privs`.
    pub anon_rules: bool,
    /// Bytes per second (0: no limit).
    pub max_rate: u64,
    /// The umask of new files and directories.
    pub umask: u32,
    /// Only files everyone may read are served (`anon_world_readable_only`
    /// for sessions under anonymous rights).
    pub world_readable_only: bool,
    /// May create files.
    pub upload: bool,
    /// May create directories.
    pub mkdir: bool,
    /// May delete, rename, append to or overwrite.
    pub other_write: bool,
    /// May SITE CHMOD.
    pub chmod: bool,
}

impl Policy {
    /// The one place that decides which limit and which permission rules
    /// apply; vsftpd's rules. `cfg` is the session's effective config.
    pub fn decide(cfg: &Config, anonymous: bool) -> Self {
        let anon_rules = anonymous || (cfg.guest_enable && !cfg.virtual_use_local_privs);
        // `write_enable` comes first; then the `anon_*` switches, or `chmod_enable`.
        let w = cfg.write_enable;
        Self {
            anon_rules,
            max_rate: u64::from(if anon_rules { cfg.anon_max_rate } else { cfg.local_max_rate }),
            umask: if anon_rules { cfg.anon_umask } else { cfg.local_umask },
            world_readable_only: anon_rules && cfg.anon_world_readable_only,
            upload: w && (!anon_rules || cfg.anon_upload_enable),
            mkdir: w && (!anon_rules || cfg.anon_mkdir_write_enable),
            other_write: w && (!anon_rules || cfg.anon_other_write_enable),
            chmod: w && !anon_rules && cfg.chmod_enable,
        }
    }

    /// Whether the session may make a change of this class.
    pub fn may(&self, op: Op) -> bool {
        match op {
            Op::Upload => self.upload,
            Op::Mkdir => self.mkdir,
            Op::Other => self.other_write,
            Op::Chmod => self.chmod,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        let mut c = Config::default();
        c.apply_text("t", text).unwrap();
        c
    }

    #[test]
    fn rates_follow_the_rights_that_apply() {
        let c = cfg("anon_max_rate=1000\nlocal_max_rate=2000\nanon_umask=077\nlocal_umask=022\n");
        let anon = Policy::decide(&c, true);
        assert!(anon.anon_rules);
        assert_eq!((anon.max_rate, anon.umask), (1000, 0o077));
        let local = Policy::decide(&c, false);
        assert!(!local.anon_rules);
        assert_eq!((local.max_rate, local.umask), (2000, 0o022));
        // Virtual users get anonymous rights unless virtual_use_local_privs.
        let virt = cfg("guest_enable=YES\nanon_max_rate=1000\nlocal_max_rate=2000\n");
        assert_eq!(Policy::decide(&virt, false).max_rate, 1000);
        let privs = cfg("guest_enable=YES\nvirtual_use_local_privs=YES\nanon_max_rate=1000\nlocal_max_rate=2000\n");
        assert_eq!(Policy::decide(&privs, false).max_rate, 2000);
    }

    #[test]
    fn write_enable_gates_every_change() {
        let ops = [Op::Upload, Op::Mkdir, Op::Other, Op::Chmod];
        let off = cfg("write_enable=NO\nanon_upload_enable=YES\nanon_mkdir_write_enable=YES\n");
        for op in ops {
            assert!(!Policy::decide(&off, false).may(op), "{op:?}");
            assert!(!Policy::decide(&off, true).may(op), "{op:?}");
        }
        let local = Policy::decide(&cfg("write_enable=YES\n"), false);
        assert!(ops.iter().all(|&op| local.may(op)));
        let no_chmod = Policy::decide(&cfg("write_enable=YES\nchmod_enable=NO\n"), false);
        assert!(no_chmod.may(Op::Other) && !no_chmod.may(Op::Chmod));
        let anon = Policy::decide(&cfg("write_enable=YES\nanon_upload_enable=YES\n"), true);
        assert!(anon.may(Op::Upload) && !anon.may(Op::Mkdir) && !anon.may(Op::Other) && !anon.may(Op::Chmod));
        assert!(anon.world_readable_only && !local.world_readable_only);
    }
}
