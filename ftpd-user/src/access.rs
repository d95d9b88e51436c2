//! Can the identity that serves a root actually read it? A root that its
//! sessions cannot enter does not fail loudly: every client sees an empty
//! listing and `550` for each file, and nothing is logged. So at startup and
//! on reload ftpd checks each root it can resolve, as the user who will
//! serve it, and says what to change.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::{auth, config::Config};

/// Who serves a root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name, for the message.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary and supplementary groups.
    pub groups: Vec<u32>,
}

impl Identity {
    /// A system user, with its groups.
    pub fn of_user(name: &str) -> Option<Self> {
        let a = auth::account(name)?;
        let groups = auth::groups(&a);
        Some(Self { name: a.name, uid: a.uid, groups })
    }

    /// This process (when not root, every session acts as it).
    pub fn current() -> Self {
        let uid = rustix::process::geteuid().as_raw();
        let mut groups: Vec<u32> = rustix::process::getgroups()
            .map(|g| g.into_iter().map(rustix::process::Gid::as_raw).collect())
            .unwrap_or_default();
        groups.push(rustix::process::getegid().as_raw());
        Self { name: user_name(uid), uid, groups }
    }
}

/// Why `who` cannot serve `root`, with the fix; `None` when it can. Every
/// directory on the way must be searchable, the root itself also readable.
/// Mode bits only: an ACL granting access is not seen.
pub fn check_dir(root: &Path, who: &Identity) -> Option<String> {
    if who.uid == 0 {
        return None;
    }
    let mut path = PathBuf::new();
    let comps: Vec<_> = root.components().collect();
    for (i, c) in comps.iter().enumerate() {
        path.push(c);
        let last = i + 1 == comps.len();
        let Ok(m) = std::fs::metadata(&path) else {
            return Some(format!("{} does not exist or cannot be examined", path.display()));
        };
        let bits = if m.uid() == who.uid {
            (m.mode() >> 6) & 7
        } else if who.groups.contains(&m.gid()) {
            (m.mode() >> 3) & 7
        } else {
            m.mode() & 7
        };
        let need = if last { 0o5 } else { 0o1 };
        if bits & need != need {
            let what = if last { "list and enter" } else { "pass through" };
            let fix = if last { "o+rx" } else { "o+x" };
            return Some(format!(
                "user {} (uid {}) cannot {what} {} (mode {:04o}, owner {}:{}); fix: chmod {fix} {}",
                who.name,
                who.uid,
                path.display(),
                m.mode() & 0o7777,
                user_name(m.uid()),
                m.gid(),
                path.display()
            ));
        }
    }
    None
}

/// One warning per root that its sessions cannot read: the anonymous root
/// (`anon`, already resolved), `local_root` for virtual users, and the
/// `local_root`/`anon_root` of each `user_config_dir` file. Local users'
/// own homes are not checked: each is a different identity, and a home
/// closed to others is normal.
pub fn unservable_roots(cfg: &Config, anon: &Path) -> Vec<String> {
    let root = rustix::process::geteuid().is_root();
    let as_user = |name: &str| if root { Identity::of_user(name) } else { Some(Identity::current()) };
    let mut out = Vec::new();
    if cfg.anonymous_enable {
        match as_user(&cfg.ftp_username) {
            Some(who) => {
                if let Some(why) = check_dir(anon, &who) {
                    out.push(format!(
                        "anonymous root {}: anonymous sessions act as {}, and {why}, or set ftp_username to a user who can read it; until then clients see an empty listing and 550 for every file",
                        anon.display(),
                        who.name
                    ));
                }
            }
            None => out.push(format!("ftp_username={} does not exist: anonymous logins will fail", cfg.ftp_username)),
        }
    }
    let fixed_local_root =
        !cfg.local_root.is_empty() && (cfg.user_sub_token.is_empty() || !cfg.local_root.contains(&cfg.user_sub_token));
    if cfg.guest_enable
        && fixed_local_root
        && let Some(who) = as_user(&cfg.guest_username)
        && let Some(why) = check_dir(Path::new(&cfg.local_root), &who)
    {
        out.push(format!(
            "local_root {}: virtual users act as {}, and {why}, or set guest_username",
            cfg.local_root, who.name
        ));
    }
    if !cfg.user_config_dir.is_empty()
        && let Ok(entries) = std::fs::read_dir(&cfg.user_config_dir)
    {
        let mut names: Vec<String> =
            entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| !n.starts_with('.')).collect();
        names.sort();
        for user in names {
            let Ok(Some(text)) = crate::login::read_user_config(cfg, &user) else { continue };
            let mut eff = cfg.clone();
            if eff.apply_text(&user, &text).is_err() {
                continue;
            }
            let (dir, serving) = if eff.guest_enable {
                (&eff.local_root, eff.guest_username.clone())
            } else {
                (&eff.local_root, user.clone())
            };
            if dir.is_empty() || text.lines().all(|l| !l.starts_with("local_root=")) {
                continue;
            }
            let dir = if eff.user_sub_token.is_empty() { dir.clone() } else { dir.replace(&eff.user_sub_token, &user) };
            if let Some(who) = as_user(&serving)
                && let Some(why) = check_dir(Path::new(&dir), &who)
            {
                out.push(format!("local_root {dir} of {}/{user}: {why}", cfg.user_config_dir));
            }
        }
    }
    out
}

/// A user id's name from the user database, or the number.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn nobody() -> Identity {
        Identity { name: "somebody".into(), uid: 4_000_000, groups: vec![4_000_000] }
    }

    #[test]
    fn closed_root_is_named_with_mode_and_fix() {
        let dir = tempfile_dir();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let why = check_dir(&dir, &nobody()).expect("0700 is closed to others");
        assert!(why.contains("mode 0700") && why.contains(&format!("chmod o+rx {}", dir.display())), "{why}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_dir(&dir, &nobody()), None);
        let inner = dir.join("pub");
        std::fs::create_dir(&inner).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        let why = check_dir(&inner, &nobody()).expect("parent not searchable");
        assert!(why.contains("pass through") && why.contains("o+x"), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("ftpd-access-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        d
    }
}
