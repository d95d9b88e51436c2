//! The login decision: given a user name and password, who does the session
//! act as and where is its root. Runs in the privileged master when ftpd
//! starts as root, in-process otherwise; the rules are vsftpd's.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{auth, config::Config, policy::Policy, reply};

/// A successful login: what the master sends the front.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Name for logs and STAT (`anonymous` for anonymous users).
    pub name: String,
    /// Anonymous rules apply.
    pub anonymous: bool,
    /// Credentials the user's file operations run with.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// All groups.
    pub groups: Vec<u32>,
    /// The directory that is `/` for this session.
    #[serde(with = "os_path")]
    pub root_dir: PathBuf,
    /// Where the session starts, inside the root.
    #[serde(with = "serde_bytes")]
    pub cwd: Vec<u8>,
    /// The session's effective config when `user_config_dir/USER` changes
    /// it: the global config with the file applied, validated by the
    /// master. `None`: the global config applies (sessions share it).
    pub config: Option<Box<Config>>,
    /// The limit and permission rules of the session, decided from its
    /// effective config.
    pub policy: Policy,
}

/// A path as its bytes: home directories need not be UTF-8.
mod os_path {
    use std::{ffi::OsStr, os::unix::ffi::OsStrExt, path::PathBuf};

    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(p: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(p.as_os_str().as_bytes())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let bytes: &[u8] = serde_bytes::deserialize(d)?;
        Ok(PathBuf::from(OsStr::from_bytes(bytes)))
    }
}

/// A refused login: the reply text, and the reason for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// What the client is told (after `530 `), vsftpd's wording.
    pub reply: String,
    /// What the log says.
    pub reason: String,
    /// The operator's configuration is wrong (a bad per-user file): logged
    /// as a warning, since only the operator can fix it.
    pub config_error: bool,
}

fn deny(reply: &str, reason: impl Into<String>) -> Denial {
    Denial { reply: reply.into(), reason: reason.into(), config_error: false }
}

/// A login refused because of a configuration error.
fn misconfigured(reason: impl Into<String>) -> Denial {
    Denial { config_error: true, ..deny(reply::LOGIN_INCORRECT.text, reason) }
}

/// Whether `user` is an anonymous login name.
pub fn is_anonymous(user: &str) -> bool {
    user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp")
}

/// The USER-time checks (before any password is asked): vsftpd answers these
/// before PASS, so a denied user never sends a password.
pub fn check_user(cfg: &Config, userlist: &[String], user: &str) -> Result<(), Denial> {
    if is_anonymous(user) && cfg.anonymous_enable {
        return Ok(());
    }
    if !cfg.local_enable && !cfg.guest_enable {
        return Err(deny(reply::ANON_ONLY.text, "local logins disabled"));
    }
    if cfg.userlist_enable {
        let listed = userlist.iter().any(|u| u == user);
        if listed == cfg.userlist_deny {
            return Err(deny(reply::PERMISSION_DENIED.text, "refused by userlist_file"));
        }
    }
    Ok(())
}

/// Decides a login. `anon_root` is the resolved anonymous root.
pub fn decide(cfg: &Config, anon_root: &Path, user: &str, password: &[u8], rhost: &str) -> Result<Grant, Denial> {
    if user.len() > crate::auth::MAX_CREDENTIAL || password.len() > crate::auth::MAX_CREDENTIAL {
        return Err(deny(reply::LOGIN_INCORRECT.text, "overlong credentials"));
    }
    if is_anonymous(user) && cfg.anonymous_enable {
        if cfg.deny_email_enable && auth::read_list(&cfg.banned_email_file).iter().any(|b| b.as_bytes() == password) {
            return Err(deny(reply::LOGIN_INCORRECT.text, "banned anonymous password"));
        }
        if cfg.secure_email_list_enable
            && !auth::read_list(&cfg.email_password_file).iter().any(|b| b.as_bytes() == password)
        {
            return Err(deny(reply::LOGIN_INCORRECT.text, "anonymous password not in email_password_file"));
        }
        let acct = auth::account(&cfg.ftp_username).ok_or_else(|| {
            deny(reply::LOGIN_INCORRECT.text, format!("ftp_username={} does not exist", cfg.ftp_username))
        })?;
        return Ok(Grant {
            name: "anonymous".into(),
            anonymous: true,
            uid: acct.uid,
            gid: acct.gid,
            groups: vec![acct.gid],
            root_dir: anon_root.to_path_buf(),
            cwd: b"/".to_vec(),
            config: None,
            policy: Policy::decide(cfg, true),
        });
    }
    // Authenticate first; every failure below looks the same to the client.
    let authenticated = if cfg.virtual_users_file.is_empty() {
        auth::pam_login(&cfg.pam_service_name, user, password, rhost).map_err(|e| deny(reply::LOGIN_INCORRECT.text, e))
    } else {
        let users = auth::virtual_users(Path::new(&cfg.virtual_users_file))
            .map_err(|e| deny(reply::LOGIN_INCORRECT.text, e))?;
        if users.check(user, password) {
            Ok(())
        } else {
            Err(deny(reply::LOGIN_INCORRECT.text, "wrong password (virtual_users_file)"))
        }
    };
    authenticated?;
    let (config, policy) = user_settings(cfg, user, false)?;
    let eff = config.as_deref().unwrap_or(cfg);
    let (acct, virtual_user) = if eff.guest_enable {
        let a = auth::account(&eff.guest_username).ok_or_else(|| {
            deny(reply::LOGIN_INCORRECT.text, format!("guest_username={} does not exist", eff.guest_username))
        })?;
        (a, true)
    } else {
        let a = auth::account(user)
            .ok_or_else(|| deny(reply::LOGIN_INCORRECT.text, "authenticated, but no such system user"))?;
        if eff.check_shell && !auth::shell_allowed(&a.shell) {
            return Err(deny(
                reply::LOGIN_INCORRECT.text,
                format!("shell {} not in /etc/shells (check_shell=YES)", a.shell),
            ));
        }
        (a, false)
    };
    let local_root = if eff.user_sub_token.is_empty() {
        eff.local_root.clone()
    } else {
        eff.local_root.replace(&eff.user_sub_token, user)
    };
    let base = if local_root.is_empty() { acct.home.clone() } else { PathBuf::from(local_root) };
    let listed = eff.chroot_list_enable && auth::read_list(&eff.chroot_list_file).iter().any(|u| u == user);
    // Virtual users are always confined: they have no system identity of their own.
    let confined = virtual_user || (eff.chroot_local_user != listed);
    let groups = if virtual_user { vec![acct.gid] } else { auth::groups(&acct) };
    let (root_dir, cwd) = if confined {
        if !eff.allow_writeable_chroot && writable_by(&base, acct.uid, &groups) {
            return Err(deny(
                "OOPS: vsftpd: refusing to run with writable root inside chroot()",
                format!(
                    "{} is writable by the user; set allow_writeable_chroot=YES or remove write permission",
                    base.display()
                ),
            ));
        }
        (base, b"/".to_vec())
    } else {
        use std::os::unix::ffi::OsStrExt;
        (PathBuf::from("/"), base.as_os_str().as_bytes().to_vec())
    };
    Ok(Grant {
        name: user.to_owned(),
        anonymous: false,
        uid: acct.uid,
        gid: acct.gid,
        groups,
        root_dir,
        cwd,
        config,
        policy,
    })
}

/// A user's effective settings: `cfg` with `user_config_dir/USER` applied
/// and validated (`None` without such a file), and the policy decided from
/// them. The only reader of per-user files for sessions: the master calls it
/// at login and at reload (and the single process when not started as root).
/// Anonymous sessions have no per-user file, as at login.
pub fn user_settings(cfg: &Config, user: &str, anonymous: bool) -> Result<(Option<Box<Config>>, Policy), Denial> {
    let text = if anonymous { None } else { read_user_config(cfg, user)? };
    let Some(text) = text else {
        return Ok((None, Policy::decide(cfg, anonymous)));
    };
    let source = format!("{}/{user}", cfg.user_config_dir);
    // Validated like the main file: a per-user file must not make a
    // setting the main file could not (a passive range upside down...).
    let eff = cfg.for_user(&source, &text).map_err(|e| misconfigured(format!("bad per-user config: {e}")))?;
    let policy = Policy::decide(&eff, anonymous);
    Ok((Some(Box::new(eff)), policy))
}

/// The text of `user_config_dir/USER`, if there is one.
pub fn read_user_config(cfg: &Config, user: &str) -> Result<Option<String>, Denial> {
    if cfg.user_config_dir.is_empty() || user.contains('/') || user.starts_with('.') {
        return Ok(None);
    }
    let path = Path::new(&cfg.user_config_dir).join(user);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(deny(reply::LOGIN_INCORRECT.text, format!("{}: {e}", path.display()))),
    }
}

/// Whether `uid` (with `groups`) may write `dir`, from its mode bits.
fn writable_by(dir: &Path, uid: u32, groups: &[u32]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(dir) else { return false };
    let mode = m.mode();
    if uid == 0 {
        return true;
    }
    if m.uid() == uid {
        mode & 0o200 != 0
    } else if groups.contains(&m.gid()) {
        mode & 0o020 != 0
    } else {
        mode & 0o002 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userlist_rules() {
        let mut cfg = Config { local_enable: true, userlist_enable: true, ..Config::default() };
        let list = vec!["root".to_string()];
        assert!(check_user(&cfg, &list, "root").is_err());
        assert!(check_user(&cfg, &list, "alice").is_ok());
        cfg.userlist_deny = false;
        assert!(check_user(&cfg, &list, "root").is_ok());
        assert!(check_user(&cfg, &list, "alice").is_err());
        cfg.local_enable = false;
        assert_eq!(check_user(&cfg, &list, "root").unwrap_err().reply, "This FTP server is anonymous only.");
    }
}
