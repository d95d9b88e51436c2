//! The login decision: given a user name and password, who does the session
//! act as and where is its root. Runs in the privileged master when ftpd
//! starts as root, in-process otherwise; the rules are vsftpd's.

use std::path::{Path, PathBuf};

use crate::{auth, config::Config};

/// A successful login.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    pub root_dir: PathBuf,
    /// Where the session starts, inside the root.
    pub cwd: Vec<u8>,
    /// Text of `user_config_dir/USER`, applied on top of the global config.
    pub user_config: Option<String>,
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
    Denial { config_error: true, ..deny("Login incorrect.", reason) }
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
        return Err(deny("This FTP server is anonymous only.", "local logins disabled"));
    }
    if cfg.userlist_enable {
        let listed = userlist.iter().any(|u| u == user);
        if listed == cfg.userlist_deny {
            return Err(deny("Permission denied.", "refused by userlist_file"));
        }
    }
    Ok(())
}

/// Decides a login. `anon_root` is the resolved anonymous root.
pub fn decide(cfg: &Config, anon_root: &Path, user: &str, password: &[u8], rhost: &str) -> Result<Grant, Denial> {
    if user.len() > crate::commands::auth::MAX_CREDENTIAL || password.len() > crate::commands::auth::MAX_CREDENTIAL {
        return Err(deny("Login incorrect.", "overlong credentials"));
    }
    if is_anonymous(user) && cfg.anonymous_enable {
        if cfg.deny_email_enable && auth::read_list(&cfg.banned_email_file).iter().any(|b| b.as_bytes() == password) {
            return Err(deny("Login incorrect.", "banned anonymous password"));
        }
        if cfg.secure_email_list_enable
            && !auth::read_list(&cfg.email_password_file).iter().any(|b| b.as_bytes() == password)
        {
            return Err(deny("Login incorrect.", "anonymous password not in email_password_file"));
        }
        let acct = auth::account(&cfg.ftp_username)
            .ok_or_else(|| deny("Login incorrect.", format!("ftp_username={} does not exist", cfg.ftp_username)))?;
        return Ok(Grant {
            name: "anonymous".into(),
            anonymous: true,
            uid: acct.uid,
            gid: acct.gid,
            groups: vec![acct.gid],
            root_dir: anon_root.to_path_buf(),
            cwd: b"/".to_vec(),
            user_config: None,
        });
    }
    // Authenticate first; every failure below looks the same to the client.
    let authenticated = if cfg.virtual_users_file.is_empty() {
        auth::pam_login(&cfg.pam_service_name, user, password, rhost).map_err(|e| deny("Login incorrect.", e))
    } else {
        let users = auth::virtual_users(Path::new(&cfg.virtual_users_file)).map_err(|e| deny("Login incorrect.", e))?;
        if users.check(user, password) {
            Ok(())
        } else {
            Err(deny("Login incorrect.", "wrong password (virtual_users_file)"))
        }
    };
    authenticated?;
    let user_config = read_user_config(cfg, user)?;
    let eff = match &user_config {
        Some(text) => cfg
            .for_user(&format!("{}/{user}", cfg.user_config_dir), text)
            .map_err(|e| misconfigured(format!("bad per-user config: {e}")))?,
        None => cfg.clone(),
    };
    let (acct, virtual_user) = if eff.guest_enable {
        let a = auth::account(&eff.guest_username)
            .ok_or_else(|| deny("Login incorrect.", format!("guest_username={} does not exist", eff.guest_username)))?;
        (a, true)
    } else {
        let a =
            auth::account(user).ok_or_else(|| deny("Login incorrect.", "authenticated, but no such system user"))?;
        if eff.check_shell && !auth::shell_allowed(&a.shell) {
            return Err(deny("Login incorrect.", format!("shell {} not in /etc/shells (check_shell=YES)", a.shell)));
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
        user_config,
    })
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
        Err(e) => Err(deny("Login incorrect.", format!("{}: {e}", path.display()))),
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
