//! The option table and the vsftpd.conf reader.
//!
//! Every option lives in exactly one place: the `options!` invocation below
//! gives its name, type, default and doc line, and its row's flags say what
//! else there is to know about it (`[restart]`: a reload keeps its running
//! value; `[restart_with_ebpf]`: so does it with the kernel data plane;
//! `[no_effect]`; `[refused]`: YES stops startup). The `Config` struct, the
//! setter, `check-config`, reload and the reference tables all read that
//! row (vsftpd keeps each option in four places; this keeps it in one).
//! A value is checked for its type when it is read, so a port, a mode or an
//! address is a typed field, and a bad one is a [`SettingError`] naming the
//! option for startup and `check-config` alike.
//!
//! Syntax follows vsftpd's `parseconf.c`: `name=value` split at the first `=`,
//! `#` starts a comment only in column 0, names are case-sensitive, booleans are
//! `YES|TRUE|1|NO|FALSE|0` in any case, an integer with a leading `0` is octal,
//! an empty value resets the option to its default, the last duplicate wins.
//! Where vsftpd dies, ftpd refuses too, but says which file, which line and
//! what to do about it.

use std::{fmt, path::Path};

/// How an option's value is spelled in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `YES|TRUE|1|NO|FALSE|0`, any case.
    Bool,
    /// Decimal, or octal with a leading `0`.
    UInt,
    /// A TCP port, spelled as a number; above 65535 is refused when read.
    Port,
    /// Permission bits (a umask, a file mode), octal with a leading `0` as
    /// vsftpd writes them; bits beyond `07777` are refused when read.
    Mode,
    /// An IPv4 address, or empty for none.
    Ipv4,
    /// An IPv6 address, or empty for none.
    Ipv6,
    /// `ADDR:PORT` (`[ADDR]:PORT` for IPv6), or empty for none.
    SockAddr,
    /// Anything up to the end of the line.
    Str,
    /// One of these words (an enum option: see [`Choice`]).
    Choice(&'static [&'static str]),
}

impl Kind {
    /// The value syntax as the reference tables name it.
    pub fn describe(self, or: &str) -> String {
        match self {
            Self::Bool => "YES|NO".replace('|', or),
            Self::UInt => "number".into(),
            Self::Port => "port".into(),
            Self::Mode => "octal mode".into(),
            Self::Ipv4 => "IPv4 address".into(),
            Self::Ipv6 => "IPv6 address".into(),
            Self::SockAddr => "ADDR:PORT".into(),
            Self::Str => "string".into(),
            Self::Choice(names) => names.join(or),
        }
    }
}

/// Whether a running ftpd takes a new value of an option at SIGHUP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// A reload puts the new value in force.
    Live,
    /// Set up before the front started (listeners, the privilege split, log
    /// files, the fleet link): a reload keeps the running value and says so.
    Restart,
    /// As `Restart` with the kernel data plane, whose maps were filled at
    /// load (the passive range, the client network sizes); live without it.
    RestartWithEbpf,
}

/// What ftpd does with an option vsftpd has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// It does what its doc line says.
    Works,
    /// Accepted so that a vsftpd.conf loads, but it changes nothing.
    None,
    /// A vsftpd feature ftpd lacks: YES stops startup (`validate`), so that
    /// no one believes it is in force; the doc line says why.
    RefusedWhenYes,
}

/// An option whose value is one of a few words. The struct field is the
/// enum itself, parsed once when the file is read (never again per use), so
/// a new enum option is its type and one row of the table.
pub trait Choice: Sized + Copy + 'static {
    /// Every value with its word, in the order `--help-config` shows them.
    const CHOICES: &'static [(&'static str, Self)];
    /// The words alone, for the documentation.
    const NAMES: &'static [&'static str];

    /// The word for `self`.
    fn name(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::CHOICES.iter().find(|(_, v)| *v == self).map_or("", |(n, _)| n)
    }

    /// The value a word names.
    fn parse_choice(v: &str) -> Result<Self, SettingError> {
        Self::CHOICES
            .iter()
            .find(|(n, _)| *n == v)
            .map(|(_, c)| *c)
            .ok_or_else(|| SettingError::BadChoice(v.to_owned(), Self::NAMES))
    }

    /// The table's default, a word the table's own test checks.
    fn default_choice(v: &str) -> Self {
        Self::parse_choice(v).unwrap_or(Self::CHOICES[0].1)
    }
}

/// One row of the option table, for `--help-config` and the README.
#[derive(Clone, Copy, Debug)]
pub struct OptionDoc {
    /// The option's name in vsftpd.conf.
    pub name: &'static str,
    /// Its value syntax.
    pub kind: Kind,
    /// The default, as it would be written in the file.
    pub default: &'static str,
    /// One line on what it does; "ftpd extension" marks options vsftpd lacks.
    pub doc: &'static str,
    /// Whether SIGHUP changes it.
    pub reload: Reload,
    /// Whether it does anything.
    pub effect: Effect,
}

/// The row flags of the `options!` table, one builder per flag word.
impl OptionDoc {
    const fn row(name: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> Self {
        Self { name, kind, default, doc, reload: Reload::Live, effect: Effect::Works }
    }

    const fn restart(mut self) -> Self {
        self.reload = Reload::Restart;
        self
    }

    const fn restart_with_ebpf(mut self) -> Self {
        self.reload = Reload::RestartWithEbpf;
        self
    }

    const fn no_effect(mut self) -> Self {
        self.effect = Effect::None;
        self
    }

    const fn refused(mut self) -> Self {
        self.effect = Effect::RefusedWhenYes;
        self
    }

    /// Whether a reload keeps the running value, given whether the kernel
    /// data plane is loaded.
    pub fn needs_restart(&self, ebpf: bool) -> bool {
        match self.reload {
            Reload::Live => false,
            Reload::Restart => true,
            Reload::RestartWithEbpf => ebpf,
        }
    }

    /// What the reference adds to the doc line from the row's flags.
    pub fn reload_note(&self) -> &'static str {
        match self.reload {
            Reload::Live => "",
            Reload::Restart => " Restart to change.",
            Reload::RestartWithEbpf => " With the kernel data plane, restart to change.",
        }
    }
}

macro_rules! options {
    ($( $([$flag:ident])* $name:ident : $kind:ident = $default:expr, $doc:literal; )*) => {
        /// Every setting of the server, with vsftpd's defaults. Serializable:
        /// the master sends the front a reloaded config, and a user's effective
        /// one, as values rather than text to parse again.
        #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct Config {
            $( #[doc = $doc] pub $name: options!(@ty $kind), )*
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $( $name: options!(@default $kind, $default), )* }
            }
        }

        impl Config {
            /// The option table, in declaration order.
            pub const TABLE: &'static [OptionDoc] = &[
                $( OptionDoc::row(stringify!($name), options!(@kind $kind), options!(@show $kind, $default), $doc)$(.$flag())*, )*
            ];

            /// An option's value as the file would spell it; `None` for an unknown name.
            pub fn get(&self, name: &str) -> Option<String> {
                match name {
                    $( stringify!($name) => Some(options!(@text $kind, &self.$name)), )*
                    _ => None,
                }
            }

            /// Sets option `name` to its value in `from`; false for an unknown name.
            pub fn copy_option(&mut self, from: &Self, name: &str) -> bool {
                match name {
                    $( stringify!($name) => { self.$name = from.$name.clone(); true } )*
                    _ => false,
                }
            }

            /// Applies one `name=value` setting. An empty value is the
            /// default for text and address options, and refused for the
            /// rest, as vsftpd refuses it ("missing value in config file").
            pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingError> {
                match name {
                    $( stringify!($name) => {
                        self.$name = if value.is_empty() {
                            if !options!(@empty_ok $kind) {
                                return Err(SettingError::Missing);
                            }
                            options!(@default $kind, $default)
                        } else {
                            options!(@parse $kind, value)?
                        };
                        Ok(())
                    } )*
                    _ => Err(SettingError::Unknown),
                }
            }
        }
    };
    (@ty Bool) => { bool };
    (@ty UInt) => { u32 };
    (@ty Port) => { u16 };
    (@ty Mode) => { u32 };
    (@ty Ipv4) => { Option<std::net::Ipv4Addr> };
    (@ty Ipv6) => { Option<std::net::Ipv6Addr> };
    (@ty SockAddr) => { Option<std::net::SocketAddr> };
    (@ty Str) => { String };
    (@default Bool, $d:expr) => { $d };
    (@default UInt, $d:expr) => { $d };
    (@default Port, $d:expr) => { $d };
    (@default Mode, $d:expr) => { $d };
    (@default Ipv4, $d:expr) => { parse_addr::<std::net::Ipv4Addr>($d, "IPv4 address").ok().flatten() };
    (@default Ipv6, $d:expr) => { parse_addr::<std::net::Ipv6Addr>($d, "IPv6 address").ok().flatten() };
    (@default SockAddr, $d:expr) => { parse_addr::<std::net::SocketAddr>($d, "ADDR:PORT").ok().flatten() };
    (@default Str, $d:expr) => { String::from($d) };
    (@text Bool, $v:expr) => { if *$v { "YES".to_string() } else { "NO".to_string() } };
    (@text UInt, $v:expr) => { $v.to_string() };
    (@text Port, $v:expr) => { $v.to_string() };
    (@text Mode, $v:expr) => { format!("0{:o}", $v) };
    (@text Ipv4, $v:expr) => { $v.map_or_else(String::new, |a| a.to_string()) };
    (@text Ipv6, $v:expr) => { $v.map_or_else(String::new, |a| a.to_string()) };
    (@text SockAddr, $v:expr) => { $v.map_or_else(String::new, |a| a.to_string()) };
    (@text Str, $v:expr) => { $v.clone() };
    (@show Bool, $d:expr) => { if $d { "YES" } else { "NO" } };
    (@show UInt, $d:expr) => { options!(@uint_text stringify!($d)) };
    (@show Port, $d:expr) => { stringify!($d) };
    (@show Mode, $d:expr) => { options!(@uint_text stringify!($d)) };
    (@show Ipv4, $d:expr) => { $d };
    (@show Ipv6, $d:expr) => { $d };
    (@show SockAddr, $d:expr) => { $d };
    (@uint_text $t:expr) => { if matches!($t.as_bytes(), [b'0', b'o', ..]) { const_octal($t) } else { $t } };
    (@show Str, $d:expr) => { $d };
    (@parse Bool, $v:expr) => { parse_bool($v) };
    (@parse UInt, $v:expr) => { parse_uint($v) };
    (@parse Port, $v:expr) => { parse_port($v) };
    (@parse Mode, $v:expr) => { parse_mode($v) };
    (@parse Ipv4, $v:expr) => { parse_addr::<std::net::Ipv4Addr>($v, "IPv4 address") };
    (@parse Ipv6, $v:expr) => { parse_addr::<std::net::Ipv6Addr>($v, "IPv6 address") };
    (@parse SockAddr, $v:expr) => { parse_addr::<std::net::SocketAddr>($v, "ADDR:PORT") };
    (@parse Str, $v:expr) => { Ok::<String, SettingError>($v.to_owned()) };
    (@kind Bool) => { Kind::Bool };
    (@kind UInt) => { Kind::UInt };
    (@kind Port) => { Kind::Port };
    (@kind Mode) => { Kind::Mode };
    (@kind Ipv4) => { Kind::Ipv4 };
    (@kind Ipv6) => { Kind::Ipv6 };
    (@kind SockAddr) => { Kind::SockAddr };
    (@kind Str) => { Kind::Str };
    // Any other kind is a type that implements `Choice`; its default is a word.
    (@kind $t:ident) => { Kind::Choice(<$t as Choice>::NAMES) };
    (@empty_ok Str) => { true };
    (@empty_ok Ipv4) => { true };
    (@empty_ok Ipv6) => { true };
    (@empty_ok SockAddr) => { true };
    (@empty_ok $t:ident) => { false };
    (@ty $t:ident) => { $t };
    (@default $t:ident, $d:expr) => { <$t as Choice>::default_choice($d) };
    (@text $t:ident, $v:expr) => { Choice::name(*$v).to_string() };
    (@show $t:ident, $d:expr) => { $d };
    (@parse $t:ident, $v:expr) => { <$t as Choice>::parse_choice($v) };
}

options! {
    [restart] listen: Bool = false, "Listen for IPv4 control connections (on `listen_address`). ftpd always runs standalone; vsftpd's inetd mode does not exist.";
    [restart] listen_ipv6: Bool = false, "Listen on IPv6 (`listen_address6`, default `::`, which also takes IPv4 clients as v4-mapped addresses). Excludes `listen`, as in vsftpd.";
    [restart] listen_address: Ipv4 = "", "IPv4 address to listen on; empty means every IPv4 address.";
    [restart] listen_address6: Ipv6 = "", "IPv6 address to listen on with `listen_ipv6`; empty means `::`.";
    [restart] listen_port: Port = 21, "Port for control connections.";
    [restart] background: Bool = false, "Detach from the terminal after startup. ftpd stays in the foreground unless this is YES.";
    port_enable: Bool = true, "Allow active mode (PORT/EPRT).";
    connect_from_port_20: Bool = false, "Open active-mode data connections from `ftp_data_port` (needs privilege).";
    ftp_data_port: Port = 20, "Source port of active-mode data connections with `connect_from_port_20`.";
    port_promiscuous: Bool = false, "Allow PORT/EPRT to name any IP and port. NO: only the client's own IP, never a port below 1024 (FTP bounce defence).";
    connect_timeout: UInt = 60, "Seconds to wait for an active-mode data connection to be accepted by the client.";
    pasv_enable: Bool = true, "Allow passive mode (PASV/EPSV).";
    [restart_with_ebpf] pasv_min_port: Port = 0, "Lowest port for passive data connections; 0 means any port.";
    [restart_with_ebpf] pasv_max_port: Port = 0, "Highest port for passive data connections; 0 means any port. Unlike vsftpd, ftpd shares a port between sessions of different client addresses (each data connection goes to the session waiting for its address; with the kernel plane, the pinhole is per port and address): a range of a few ports serves as many clients at once as have distinct addresses, and one address gets as many sessions waiting at once as there are ports.";
    pasv_address: Str = "", "IPv4 address announced in the 227 reply (for NAT); empty means the control connection's local address.";
    pasv_addr_resolve: Bool = false, "`pasv_address` is a host name, resolved at startup and at each SIGHUP.";
    pasv_promiscuous: Bool = false, "Accept passive data connections from any IP, not only from the control connection's client.";
    anonymous_enable: Bool = false, "Allow anonymous logins (user `anonymous` or `ftp`).";
    no_anon_password: Bool = false, "Do not ask anonymous users for a password.";
    ftp_username: Str = "ftp", "The system user whose home is the anonymous root (when `anon_root` is empty) and as whom anonymous users act.";
    [restart] anon_root: Str = "", "Directory served to anonymous users; empty means the home directory of `ftp_username`.";
    anon_upload_enable: Bool = false, "Let anonymous users upload new files (needs `write_enable`).";
    anon_mkdir_write_enable: Bool = false, "Let anonymous users create directories (needs `write_enable`).";
    anon_other_write_enable: Bool = false, "Let anonymous users delete, rename, append and overwrite (needs `write_enable`).";
    anon_world_readable_only: Bool = true, "Anonymous users may only download world-readable files.";
    anon_umask: Mode = 0o0077, "Umask for files and directories anonymous users create (octal with a leading 0).";
    secure_email_list_enable: Bool = false, "Anonymous logins need a password listed in `email_password_file`.";
    email_password_file: Str = "/etc/vsftpd.email_passwords", "Accepted anonymous passwords, one per line, for `secure_email_list_enable`.";
    deny_email_enable: Bool = false, "Refuse anonymous passwords (e-mail addresses) listed in `banned_email_file`.";
    banned_email_file: Str = "/etc/vsftpd.banned_emails", "One banned anonymous password per line, for `deny_email_enable`.";
    local_enable: Bool = false, "Allow local (system) users to log in, authenticated by PAM.";
    pam_service_name: Str = "ftp", "PAM service used to authenticate local users (/etc/pam.d/NAME; PAM falls back to `other`).";
    local_root: Str = "", "Directory local (and virtual) users start in; empty means their home directory.";
    userlist_enable: Bool = false, "Check `userlist_file` at USER time.";
    userlist_deny: Bool = true, "With `userlist_enable`: YES refuses the listed users, NO admits only them.";
    userlist_file: Str = "/etc/vsftpd.user_list", "One user name per line, for `userlist_enable`.";
    check_shell: Bool = false, "Refuse local users whose shell is not in /etc/shells. vsftpd's default YES has no effect in its PAM builds, so ftpd's NO keeps that behaviour (users with /sbin/nologin log in).";
    guest_enable: Bool = false, "Every non-anonymous login acts as `guest_username` (virtual users).";
    guest_username: Str = "ftp", "The system user virtual users act as, with `guest_enable`.";
    virtual_use_local_privs: Bool = false, "Virtual users get local users' rights (`write_enable`, `local_umask`, `local_max_rate`). NO: anonymous users' rights (`anon_*`), as in vsftpd.";
    user_sub_token: Str = "", "Text replaced by the user name in `local_root` (e.g. `$USER` with `local_root=/srv/ftp/$USER`).";
    virtual_users_file: Str = "", "ftpd extension. `user:hash` lines (argon2 or $6$ SHA-512 crypt) that authenticate non-anonymous users instead of PAM; `ftpd passwd FILE USER` maintains it.";
    user_config_dir: Str = "", "Directory of per-user config files named after the user, applied at login (e.g. `local_root`, `write_enable`, `local_max_rate`).";
    chroot_local_user: Bool = false, "Confine local users to their root (home or `local_root`). NO: they see the whole file system, starting in it.";
    chroot_list_enable: Bool = false, "Users in `chroot_list_file` are the exception to `chroot_local_user`.";
    chroot_list_file: Str = "/etc/vsftpd.chroot_list", "One user name per line, for `chroot_list_enable`.";
    allow_writeable_chroot: Bool = false, "Allow a confined user's root to be writable by that user (vsftpd refuses such logins).";
    [restart] nopriv_user: Str = "nobody", "The unprivileged user the network-facing process runs as when ftpd starts as root; except on an anonymous server, where it runs as `ftp_username` (see `ftpd_anon_fast_path`).";
    [restart] ftpd_anon_fast_path: Bool = true, "ftpd extension. YES: when anonymous logins are on and only world-readable files are served to them (`anon_world_readable_only`), the network-facing process runs as `ftp_username` instead of `nopriv_user`, as vsftpd's anonymous session processes do, and opens anonymous downloads itself instead of asking the file worker (about twice the small-file RETRs per second). The kernel first takes from it every right to change a file (Landlock, and a seccomp filter for modes, owners, times and extended attributes, even with `seccomp_sandbox=NO`): uploads and every other change are made by the file worker. Where the kernel is older than Linux 6.12 (Landlock ABI 6), this holds only while anonymous users may not write. It then holds nothing an anonymous user could not already ask for, but it is not chrooted: it could read what `ftp_username` may read outside the anonymous root. NO: it always runs as `nopriv_user`, and every open goes through the worker.";
    write_enable: Bool = false, "Allow any command that changes the file system.";
    local_umask: Mode = 0o0077, "Umask for files and directories local users create.";
    file_open_mode: Mode = 0o0666, "Permission bits of uploaded files, before the umask.";
    chmod_enable: Bool = true, "Allow SITE CHMOD (never for anonymous users).";
    download_enable: Bool = true, "Allow downloads (RETR) and file digests (HASH, XSHA256).";
    text_userdb_names: Bool = false, "Show owner and group names instead of numbers in listings. With `seccomp_sandbox=YES` the names come from sources read as files (/etc/passwd, /etc/group, /run/userdb), not from those asked over a socket (nscd, sssd, systemd-userdbd), as in vsftpd: an owner only those know shows as a number.";
    hide_ids: Bool = false, "Show every owner and group as `ftp` in listings.";
    ls_recurse_enable: Bool = false, "Honour `LIST -R` (recursive listings).";
    deny_file: Str = "", "Patterns (`{*.iso,private}`) of names that cannot be accessed at all.";
    hide_file: Str = "", "Patterns of names left out of listings (still reachable by name).";
    use_localtime: Bool = false, "Show listing and MDTM times in local time instead of UTC.";
    mdtm_write: Bool = true, "Let `MDTM YYYYMMDDHHMMSS FILE` set a file's modification time (UTC, or local time with `use_localtime`), for users who may change existing files (`write_enable`, and `anon_other_write_enable` for anonymous users).";
    ftpd_banner: Str = "", "Text of the 220 greeting; empty means `(ftpd VERSION)`.";
    banner_file: Str = "", "File whose contents are the 220 greeting (wins over `ftpd_banner`).";
    dirmessage_enable: Bool = false, "Show `message_file` of a directory when a client enters it.";
    message_file: Str = ".message", "Name of the per-directory message file for `dirmessage_enable`.";
    ascii_upload_enable: Bool = false, "Convert CRLF to LF on TYPE A uploads. NO: TYPE A uploads are byte-exact.";
    ascii_download_enable: Bool = false, "Convert LF to CRLF on TYPE A downloads. NO: TYPE A downloads are byte-exact (and use sendfile).";
    async_abor_enable: Bool = false, "Kept for vsftpd.conf compatibility: ftpd reads the control connection during every transfer, so ABOR works either way.";
    use_sendfile: Bool = true, "Send files with sendfile(2). NO: read and write through a buffer.";
    ftpd_atomic_uploads: Bool = false, "ftpd extension. YES: a new file is written as a hidden part file (`.NAME.HASH.ftpd-part`, never listed or served) and appears under its name only when complete; it never replaces a file that appeared meanwhile unless the user may overwrite. Each login name has its own part (HASH is a hash of the login name; a name too long for that is shortened with a hash of it): an interrupted upload can be resumed (SIZE, then REST or APPE) only by the user who started it, from at most the part's size; a part in use by another session is refused (553). Virtual users sharing `guest_username` are told apart by their login names; anonymous users all log in as `anonymous` and share their parts, as vsftpd's anonymous users share a partial file. Parts and temporary files not written for 24 hours are removed when their directory is next uploaded to (only files of the uploading account, named exactly as ftpd names them, and never the part being resumed). NO: vsftpd's behaviour. Either way a replace is written to a temporary file renamed over the old one, which keeps owner, group and mode; when those cannot be kept or the file has other hard links, it is truncated and written in place as vsftpd does.";
    [restart] xferlog_enable: Bool = false, "Log every upload and download (format: see `xferlog_std_format`).";
    [restart] xferlog_std_format: Bool = false, "Write transfers in the wu-ftpd xferlog format to `xferlog_file`. NO: vsftpd's own format to `vsftpd_log_file`.";
    [restart] xferlog_file: Str = "/var/log/xferlog", "The xferlog-format transfer log.";
    [restart] vsftpd_log_file: Str = "/var/log/vsftpd.log", "vsftpd-format log of transfers, logins and (with `log_ftp_protocol`) commands and replies. ftpd's own diagnostics go to stderr/journald.";
    [restart] dual_log_enable: Bool = false, "Write both transfer logs.";
    [restart] log_ftp_protocol: Bool = false, "Log every command and reply to `vsftpd_log_file` (PASS is logged without the password).";
    dirlist_enable: Bool = true, "Allow directory listings (LIST, NLST, MLSD, STAT PATH).";
    force_dot_files: Bool = false, "List files starting with `.` even without `-a`.";
    cmds_allowed: Str = "", "Comma-separated commands that may be used after login; empty means all.";
    cmds_denied: Str = "", "Comma-separated commands refused after login (wins over `cmds_allowed`).";
    delete_failed_uploads: Bool = false, "Delete what a failed upload wrote (vsftpd's option; with `ftpd_atomic_uploads` the part file).";
    max_login_fails: UInt = 3, "Failed PASS attempts before the connection is closed.";
    delay_failed_login: UInt = 1, "Seconds to wait before answering a failed login.";
    delay_successful_login: UInt = 0, "Seconds to wait before answering a successful login.";
    [no_effect] secure_chroot_dir: Str = "/var/run/vsftpd/empty", "Accepted for vsftpd.conf compatibility; no effect: ftpd's unprivileged process never opens files, so it needs no empty directory to be confined in.";
    utf8_filesystem: Bool = false, "Accepted for compatibility (a Debian vsftpd option); ftpd always passes file names through unchanged and announces UTF8 in FEAT.";
    [no_effect] setproctitle_enable: Bool = false, "Accepted for compatibility; no effect (ftpd's sessions are tasks, not processes).";
    [no_effect] one_process_model: Bool = false, "Accepted for compatibility; no effect (ftpd's process model is fixed: docs/ARCHITECTURE.md).";
    seccomp_sandbox: Bool = true, "YES (as vsftpd): the front (all sessions) and every file worker run under a seccomp allow-list of system calls; any other call (starting a program, a new process, ptrace, mounts, credential changes...) kills that process at once, and the master logs which process seccomp killed (SIGSYS; the kernel's audit log names the call). A dead front is replaced within a second, a dead worker at the next login of its identity. The lists are in docs/ARCHITECTURE.md. Only when ftpd starts as root (privilege separation); NO: no filter.";
    [no_effect] isolate: Bool = true, "Accepted for compatibility; no effect.";
    [no_effect] isolate_network: Bool = true, "Accepted for compatibility; no effect.";
    [no_effect] reverse_lookup_enable: Bool = true, "Accepted for compatibility; no effect (ftpd never resolves client addresses).";
    no_log_lock: Bool = false, "Accepted for compatibility; ftpd writes each log line with one append-mode write, which needs no lock.";
    [no_effect] trans_chunk_size: UInt = 0, "Accepted for compatibility; no effect (rate limits use TCP pacing, not chunked writes).";
    [restart] ssl_enable: Bool = false, "FTPS (RFC 4217): `AUTH TLS`/`AUTH SSL`, `PBSZ`, `PROT`, `CCC`, with rustls. Needs `rsa_cert_file`.";
    implicit_ssl: Bool = false, "Implicit FTPS: TLS from the first byte of every control connection (needs `ssl_enable`; usually with `listen_port=990`).";
    rsa_cert_file: Str = "/usr/share/ssl/certs/vsftpd.pem", "PEM certificate chain (server certificate first). Read as root at startup; a missing or unreadable file stops startup.";
    rsa_private_key_file: Str = "", "PEM private key (PKCS#8, PKCS#1 or SEC1); empty: read from `rsa_cert_file`, as vsftpd. Read as root before the privilege split: the unprivileged process never opens it.";
    [no_effect] dsa_cert_file: Str = "", "Accepted for compatibility; no effect (rustls serves one certificate: `rsa_cert_file`, which may hold an ECDSA key).";
    [no_effect] dsa_private_key_file: Str = "", "Accepted for compatibility; no effect (see `dsa_cert_file`).";
    ca_certs_file: Str = "", "PEM CA certificates that client certificates are checked against, with `require_cert` and `validate_cert`.";
    ssl_ciphers: Str = "HIGH", "OpenSSL-style cipher list for TLS 1.2 (`HIGH`, `DEFAULT`, or suite names such as `ECDHE-RSA-AES128-GCM-SHA256`); TLS 1.3 suites stay unless named. `!NAME` removes a suite or a family (`!CHACHA20`, `!AES128`, `!ECDSA`); exclusions of what rustls never offers (`!aNULL`, `!RC4`, `!3DES`) remove nothing, and an unknown word stops startup. rustls has no 3DES/RC4/CBC suites, so vsftpd 3.0's default `DES-CBC3-SHA` is refused at startup; ftpd's default is `HIGH`.";
    allow_anon_ssl: Bool = false, "Let anonymous users use TLS; NO answers `530 Anonymous sessions may not use encryption.` to an anonymous USER over TLS.";
    force_local_data_ssl: Bool = true, "Non-anonymous users' data connections must be `PROT P` (`522 Data connections must be encrypted.`).";
    force_local_logins_ssl: Bool = true, "Non-anonymous users must log in over TLS (`530 Non-anonymous sessions must use encryption.`).";
    force_anon_data_ssl: Bool = false, "Anonymous users' data connections must be `PROT P`.";
    force_anon_logins_ssl: Bool = false, "Anonymous users must log in over TLS (implies `allow_anon_ssl`).";
    [no_effect] ssl_tlsv1: Bool = true, "Accepted for compatibility; no effect: TLS 1.0 and 1.1 are never offered (see `ssl_tlsv1_2`, `ssl_tlsv1_3`).";
    ssl_tlsv1_2: Bool = true, "Offer TLS 1.2.";
    ssl_tlsv1_3: Bool = true, "Offer TLS 1.3.";
    ssl_sslv2: Bool = false, "SSLv2 does not exist in rustls: YES with `ssl_enable` stops startup.";
    ssl_sslv3: Bool = false, "SSLv3 does not exist in rustls: YES with `ssl_enable` stops startup.";
    require_ssl_reuse: Bool = true, "A TLS data connection must resume a TLS session of its own client: one descending from the same full handshake as its control connection's (a client with several control connections, such as rclone, may use any of their sessions; another client's session, or none, gets `522 SSL connection failed; session reuse required`).";
    ssl_request_cert: Bool = true, "Accepted for compatibility; a client certificate is asked for only with `require_cert`.";
    require_cert: Bool = false, "Clients must present a certificate (checked against `ca_certs_file` with `validate_cert`).";
    validate_cert: Bool = false, "With `require_cert`: the client certificate must chain to `ca_certs_file`.";
    debug_ssl: Bool = false, "Accepted for compatibility; TLS failures are always logged (at debug level) and counted in the metrics.";
    strict_ssl_read_eof: Bool = true, "A TLS upload must end with close_notify; one that ends with a bare TCP close failed (`426`) and is not kept as complete. ftpd's default YES differs from vsftpd's NO: a truncated upload is never stored as complete.";
    strict_ssl_write_shutdown: Bool = false, "After a TLS download, wait for the client's close_notify; without it the transfer failed (`426`).";
    [refused] session_support: Bool = false, "utmp/wtmp session records: not implemented, so YES stops startup.";
    [refused] tcp_wrappers: Bool = false, "TCP wrappers (hosts.allow): not implemented, so YES stops startup; use the firewall or `max_per_ip`.";
    [refused] syslog_enable: Bool = false, "vsftpd log to syslog: not implemented, so YES stops startup; ftpd's own log already reaches journald through stderr.";
    [refused] chown_uploads: Bool = false, "Give anonymous uploads to `chown_username`: not implemented, so YES stops startup.";
    [no_effect] chown_username: Str = "root", "Accepted for compatibility; only used with `chown_uploads`.";
    max_clients: UInt = 2000, "Most control connections at once; 0 means no limit.";
    max_per_ip: UInt = 50, "Most control connections from one IP address; 0 means no limit.";
    anon_max_rate: UInt = 0, "Bytes per second per anonymous session; 0 means no limit.";
    local_max_rate: UInt = 0, "Bytes per second per local-user session; 0 means no limit.";
    idle_session_timeout: UInt = 300, "Seconds a client may stay silent between commands before `421 Timeout.`";
    data_connection_timeout: UInt = 300, "Seconds a data transfer may make no progress before it is dropped.";
    accept_timeout: UInt = 60, "Seconds to wait for the client to open a passive data connection.";
    ftpd_kernel_max_per_ip: UInt = 0, "ftpd extension. Control-port SYNs from an IP with this many established control connections are dropped in XDP, before accept(). 0: twice `max_per_ip` (off when `max_per_ip=0`).";
    ftpd_kernel_max_clients: UInt = 0, "ftpd extension. Control-port SYNs are dropped in XDP while this many control connections are established. 0: twice `max_clients` (off when `max_clients=0`).";
    ftpd_max_per_prefix: UInt = 0, "ftpd extension. Most control connections from one client network (`ftpd_prefix_v4`, `ftpd_prefix_v6`: by default one IPv4 address, one IPv6 /64, which a single IPv6 host usually has to itself); more get `421`. With the kernel data plane, SYNs from a network with twice this many established connections are dropped in XDP. 0 means no limit.";
    [restart_with_ebpf] ftpd_prefix_v4: UInt = 32, "ftpd extension. Leading bits of an IPv4 address that make one client network, for `ftpd_max_per_prefix` and bans (1-32). 32: each address on its own; 24: a /24 counts as one client.";
    [restart_with_ebpf] ftpd_prefix_v6: UInt = 64, "ftpd extension. Leading bits of an IPv6 address that make one client network, for `ftpd_max_per_prefix` and bans (1-128). 64: one /64, the smallest network an IPv6 site is usually given, so a client cannot escape a ban or a cap by changing its address inside it.";
    ftpd_ban_enable: Bool = false, "ftpd extension. YES: a client network (`ftpd_prefix_v4`, `ftpd_prefix_v6`) with `ftpd_ban_fails` failed logins within `ftpd_ban_window` seconds, summed over all its sessions, is banned for `ftpd_ban_time` seconds: its SYNs to the control port are dropped in XDP with the kernel data plane, and its connections are closed with `421` right after accept() without it. `max_login_fails` still ends each session. NO (the default, as vsftpd never bans): failed logins only end sessions.";
    ftpd_ban_fails: UInt = 0, "ftpd extension. Failed logins from one client network, within `ftpd_ban_window`, that start a ban (`ftpd_ban_enable`). 0 (the default): `max_login_fails`, summed over all the network's sessions. Raise it where many users share one address (NAT) and mistype passwords.";
    ftpd_ban_window: UInt = 600, "ftpd extension. Seconds over which failed logins are summed for `ftpd_ban_fails`.";
    ftpd_ban_time: UInt = 900, "ftpd extension. Seconds a ban lasts; long enough to make password guessing pointless, short enough that a network that shares one address (NAT) is not locked out for long by one user.";
    ftpd_ban_allow: Str = "", "ftpd extension. Comma-separated addresses and CIDR networks (e.g. `192.0.2.0/24, 2001:db8::/32`) that are never banned and whose failed logins are not counted: monitoring, the operator's own hosts. A banned network (`ftpd_prefix_v4`, `ftpd_prefix_v6`) that holds a listed address is refused after accept() only, not in XDP, so that the listed address still gets in.";
    ftpd_proxy_protocol: Bool = false, "ftpd extension. YES: every control connection starts with a PROXY protocol header (v1 or v2, as HAProxy's `send-proxy`/`send-proxy-v2`, AWS NLB and Envoy send it) from a balancer in `ftpd_proxy_trusted`, and the client is the address the header names: for `max_per_ip`, `ftpd_max_per_prefix`, bans, the PORT and data-connection address checks, pinholes, logs and metrics. A connection from any other source, or without a whole header within 5 seconds, is closed before the greeting and counted (`ftpd_connections_refused_total`, reasons `proxy_*`). The kernel plane's per-IP and per-network SYN caps are then off (the kernel sees the balancer on the control port; the caps hold after the header). Data connections: see `ftpd_proxy_data`.";
    ftpd_proxy_data: Bool = false, "ftpd extension. With `ftpd_proxy_protocol`: YES: passive data connections come through the balancers too (each node its own passive range, forwarded to it with a PROXY header), so clients that ignore the PASV address (curl since 7.74, Python's ftplib) and EPSV work; a data connection from a balancer must carry a header, and the client it names is checked as `pasv_promiscuous` says; the kernel pinhole admits the balancer that forwarded the control connection, and each waiting session has its passive port to itself (size the ranges for the sessions waiting at once). NO: data connections go straight to the node's own address (`pasv_address`), and EPSV is refused (502) when it would send the client to the balancer.";
    ftpd_proxy_trusted: Str = "", "ftpd extension. Comma-separated addresses and CIDR networks of the balancers allowed to send a PROXY header (`ftpd_proxy_protocol`); required with it.";
    [restart] ftpd_cluster_redis: Str = "", "ftpd extension. `redis://HOST:PORT[/DB]` (or `redis://:PASSWORD@HOST:PORT`): the Redis through which the nodes of a fleet share `max_clients`, `max_per_ip` and the `ftpd_rate_scope=user|ip` bandwidth limits, so that a client at its cap on one node is refused on another and a user's limit is split over its transfers on every node (re-split within a tenth of a second). Each node's counts are leases of `ftpd_cluster_lease` seconds: a node that dies stops counting within that time. Redis out of reach: each node holds its limits alone, logs it once, shows it in `ftpd_cluster_up`, keeps serving and rejoins by itself. Empty: no fleet.";
    [restart] ftpd_cluster_node: Str = "", "ftpd extension. This node's name in the fleet (`ftpd_cluster_redis`), unique per node, and the `node` label of all its metrics. Empty: the host name.";
    [restart] ftpd_cluster_lease: UInt = 10, "ftpd extension. Seconds a node's published counts last without being renewed (each node renews them three times per lease): how long a node that died keeps counting (1-3600).";
    ftpd_rate_scope: RateScope = "session", "ftpd extension. What `anon_max_rate`/`local_max_rate` limit: `session` (vsftpd's meaning), or `user` / `ip`: one limit shared by all that user's (or IP's) concurrent transfers, re-split when one starts or ends.";
    ftpd_list_cache_ms: UInt = 1000, "ftpd extension. Milliseconds a directory's listing (names and stats) is reused by the next LIST/NLST/MLSD of that directory by the same user, while the directory itself is unchanged (same mtime and ctime) and no write went through that user's sessions. Within this time, a file changed in place by another program may show its old size and time. 0: every listing reads the directory (vsftpd's behaviour).";
    ftpd_max_listings_per_ip: UInt = 8, "ftpd extension. Most directory listings (LIST/NLST/MLSD) running at once for one client IP address; more get `451`. Each holds one of its file worker's 64 listing slots while its client reads, so one address cannot take them all. 0 means no limit.";
    ftpd_list_stall_timeout: UInt = 30, "ftpd extension. Seconds a listing's data connection may make no progress before the listing is ended (`426`), when shorter than `data_connection_timeout`: a listing holds a file worker's thread and memory while its client does not read. 0: `data_connection_timeout` alone.";
    [restart] ftpd_metrics_listen: SockAddr = "", "ftpd extension. `ADDR:PORT` of the Prometheus /metrics endpoint (e.g. `127.0.0.1:9121`); empty: off.";
    ftpd_metrics_users: Str = "", "ftpd extension. Comma-separated users whose transfers get a per-user `user` label in the metrics (others are not labelled, to bound cardinality).";
    ftpd_metrics_dirs: Str = "", "ftpd extension. Comma-separated top-level directories (projects, e.g. `debian,ubuntu`) whose downloads and uploads are counted apart in the metrics (`dir` label) and in `ftpd stats`; transfers elsewhere count as `other`. Empty: no per-directory metrics.";
    ftpd_shutdown_timeout: UInt = 30, "ftpd extension. Seconds that running transfers may take to finish after SIGTERM (or SIGINT): the listeners close at once, idle sessions get `421` at once, and sessions still transferring when the time is up get `426` and `421`; then ftpd exits 0. A second SIGTERM ends them at once. 0: end every session at once.";
    [restart] ftpd_ebpf: EbpfMode = "auto", "ftpd extension. `auto`: load the kernel data plane when possible, else enforce limits in userspace; `on`: refuse to start without it; `off`: never load it.";
    ftpd_ebpf_log: Bool = false, "ftpd extension. Log the kernel programs' rare decisions (a SYN dropped by a ban or a connection cap, with its address) at debug level, target `ftpd_ebpf`. Also on when RUST_LOG enables `ftpd_ebpf` at debug. Off, they cost one read per drop; on, one ring-buffer record each, so leave it off under floods.";
    [restart] ftpd_xdp_interfaces: Str = "", "ftpd extension. Comma-separated interfaces to attach XDP to; empty means those carrying `listen_address` (`lo` for loopback, every interface that is up for the wildcard), native mode where the driver has it, generic otherwise; the log says which per interface.";
}

/// Why a single setting was refused. `Display` says how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingError {
    /// No such option.
    Unknown,
    /// Not one of the boolean spellings.
    BadBool(String),
    /// Not a number, or too big.
    BadUInt(String),
    /// A number that is no TCP port.
    BadPort(String),
    /// A number with bits beyond `07777`.
    BadMode(String),
    /// Not an address of that form (`IPv4 address`, `ADDR:PORT`...).
    BadAddress(String, &'static str),
    /// Not one of an enum option's words.
    BadChoice(String, &'static [&'static str]),
    /// An empty value for an option that is not text or an address.
    Missing,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown => write!(f, "unrecognised option (run `ftpd --help-config` for the list)"),
            Self::BadBool(v) => write!(f, "bad boolean value {v:?} (use YES or NO)"),
            Self::BadUInt(v) => write!(f, "bad number {v:?} (use a decimal number, or octal with a leading 0)"),
            Self::BadPort(v) => write!(f, "bad port {v:?} (use 0-65535)"),
            Self::BadMode(v) => write!(f, "bad mode {v:?} (use octal permission bits with a leading 0, at most 07777)"),
            Self::BadAddress(v, form) => write!(f, "bad {form} {v:?} (or leave it empty)"),
            Self::BadChoice(v, names) => write!(f, "bad value {v:?} (use {})", names.join(", ")),
            Self::Missing => {
                write!(f, "missing value (only text and address options may be empty; vsftpd refuses it too)")
            }
        }
    }
}

/// The real options an unknown name most likely meant, best first. Tutorials
/// invent names by recombining real words (`listen_data_port`), so options
/// sharing most words rank first, those sharing the name's ending ahead;
/// plain typos are caught by the edit distance.
pub fn closest_options(name: &str) -> Vec<&'static str> {
    // The edit distance costs the product of the two lengths for each of the
    // ~150 options: past this length a name is no typo of any option, and a
    // long garbage line would otherwise spend milliseconds on its error.
    const TYPO_MAX: usize = 64;
    let distance = |a: &str, b: &str| if name.len() <= TYPO_MAX { strsim::levenshtein(a, b) } else { usize::MAX };
    let words: Vec<&str> = name.split('_').filter(|w| !w.is_empty()).collect();
    let score = |opt: &str| {
        let theirs: Vec<&str> = opt.split('_').collect();
        let shared =
            words.iter().filter(|w| theirs.iter().any(|t| t == *w || (w.len() >= 3 && t.starts_with(*w)))).count();
        let suffix = words.iter().rev().zip(theirs.iter().rev()).take_while(|(a, b)| a == b).count();
        (shared, suffix, distance(name, opt))
    };
    let mut by_words: Vec<(usize, usize, usize, &'static str)> = Config::TABLE
        .iter()
        .map(|o| {
            let (shared, suffix, dist) = score(o.name);
            (shared, suffix, dist, o.name)
        })
        .collect();
    by_words.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    let most = by_words.first().map_or(0, |c| c.0);
    let mut out: Vec<&'static str> =
        by_words.iter().filter(|c| most >= 2 && c.0 == most).take(2).map(|c| c.3).collect();
    let lower = name.to_ascii_lowercase();
    let typo = Config::TABLE
        .iter()
        .map(|o| (distance(&lower, o.name), o.name))
        .min()
        .filter(|(d, _)| *d <= name.len() / 3 + 1);
    if let Some((_, t)) = typo
        && !out.contains(&t)
    {
        out.insert(0, t);
    }
    out.truncate(3);
    out
}

/// Shows an octal default as vsftpd writes it. Octal defaults in the table are
/// written `0o0NNN`, so dropping the `0o` leaves `0NNN`, which `parse_uint`
/// reads back as octal (`every_default_passes_set` checks the round trip).
const fn const_octal(t: &'static str) -> &'static str {
    match t.as_bytes() {
        [b'0', b'o', rest @ ..] => match std::str::from_utf8(rest) {
            Ok(r) => r,
            Err(_) => t,
        },
        _ => t,
    }
}

fn parse_bool(v: &str) -> Result<bool, SettingError> {
    match v.to_ascii_uppercase().as_str() {
        "YES" | "TRUE" | "1" => Ok(true),
        "NO" | "FALSE" | "0" => Ok(false),
        _ => Err(SettingError::BadBool(v.to_owned())),
    }
}

fn parse_uint(v: &str) -> Result<u32, SettingError> {
    let bad = || SettingError::BadUInt(v.to_owned());
    if v.len() > 1 && v.starts_with('0') {
        u32::from_str_radix(&v[1..], 8).map_err(|_| bad())
    } else {
        v.parse::<u32>().map_err(|_| bad())
    }
}

fn parse_port(v: &str) -> Result<u16, SettingError> {
    u16::try_from(parse_uint(v)?).map_err(|_| SettingError::BadPort(v.to_owned()))
}

fn parse_mode(v: &str) -> Result<u32, SettingError> {
    Some(parse_uint(v)?).filter(|m| *m <= 0o7777).ok_or_else(|| SettingError::BadMode(v.to_owned()))
}

/// An address, or `None` for the empty default.
fn parse_addr<A: std::str::FromStr>(v: &str, form: &'static str) -> Result<Option<A>, SettingError> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| SettingError::BadAddress(v.to_owned(), form))
}

/// A config file or `-o` setting that could not be applied, with where it came from.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// File name, or `-o` for a command-line setting.
    pub source: String,
    /// 1-based line number; 0 when the error is about the whole file.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.source, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.source, self.line, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// vsftpd refuses config files over this size (`VSFTP_CONF_FILE_MAX`).
pub const MAX_CONFIG_BYTES: u64 = 100_000;

impl Config {
    /// Applies the settings in `text`, as vsftpd reads its config file.
    pub fn apply_text(&mut self, source: &str, text: &str) -> Result<(), ConfigError> {
        for (i, raw) in text.split('\n').enumerate() {
            let err = |reason: String| ConfigError { source: source.to_owned(), line: i + 1, reason };
            if raw.is_empty() || raw.starts_with('#') {
                continue;
            }
            if raw.ends_with('\r') {
                return Err(err("line ends with a carriage return (CRLF file); convert it with `dos2unix`".into()));
            }
            if raw.trim().is_empty() {
                return Err(err("line holds only white space; delete it".into()));
            }
            self.apply_setting(raw).map_err(err)?;
        }
        Ok(())
    }

    /// The settings of a user who has a `user_config_dir` file: these with
    /// `text` (read from `source`) applied on top, validated like the main
    /// file, so that a per-user file cannot make a setting the main file
    /// could not (a passive range upside down...). A validation error is
    /// about the file as a whole (line 0).
    pub fn for_user(&self, source: &str, text: &str) -> Result<Config, ConfigError> {
        let mut own = self.clone();
        own.apply_text(source, text)?;
        own.validate().map_err(|reason| ConfigError { source: source.to_owned(), line: 0, reason })?;
        Ok(own)
    }

    /// Applies one `name=value` line (also the form of `-o` arguments).
    pub fn apply_setting(&mut self, line: &str) -> Result<(), String> {
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("{line:?} has no `=`; write name=value"));
        };
        if name != name.trim() || name.is_empty() {
            return Err(format!("option name {name:?} has white space around it; write name=value with no spaces"));
        }
        if value.ends_with([' ', '\t']) {
            return Err(format!(
                "value of {name} ends with white space; vsftpd would refuse it too, remove the trailing spaces"
            ));
        }
        self.set(name, value).map_err(|e| match e {
            SettingError::Unknown => match closest_options(name).as_slice() {
                [] => format!("{name}: {e}"),
                near => format!("{name}: {e}; did you mean {}?", near.join(" or ")),
            },
            e => format!("{name}: {e}"),
        })
    }

    /// Reads a config file. Unreadable, oversized or non-UTF-8 files are errors.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let source = path.display().to_string();
        let whole = |reason: String| ConfigError { source: source.clone(), line: 0, reason };
        let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        if !meta.is_file() {
            return Err(whole("not a regular file".into()));
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(whole(format!("larger than {MAX_CONFIG_BYTES} bytes")));
        }
        let bytes = std::fs::read(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| whole(format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to())))?;
        self.apply_text(&source, &text)
    }

    /// Checks relations between options that no single setting can check.
    /// Failed logins from one network that start a ban: `ftpd_ban_fails`,
    /// or `max_login_fails` when that is 0.
    pub fn ban_fails(&self) -> u32 {
        if self.ftpd_ban_fails == 0 { self.max_login_fails } else { self.ftpd_ban_fails }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.listen_port == 0 {
            return Err(format!("listen_port={} is not a TCP port (1-65535)", self.listen_port));
        }
        if self.pasv_max_port != 0 && self.pasv_min_port > self.pasv_max_port {
            return Err(format!(
                "pasv_min_port={} is above pasv_max_port={}; swap them",
                self.pasv_min_port, self.pasv_max_port
            ));
        }
        // pasv_min_port=0 starts the range at 1024 (`pasv_range`).
        if self.pasv_min_port == 0 && self.pasv_max_port != 0 && self.pasv_max_port < 1024 {
            return Err(format!(
                "pasv_max_port={} is below 1024, where the passive range starts without pasv_min_port; \
                 set pasv_min_port too, or raise pasv_max_port",
                self.pasv_max_port
            ));
        }
        if self.listen && self.listen_ipv6 {
            return Err(
                "listen=YES and listen_ipv6=YES together: pick one (listen_ipv6 also serves IPv4 clients)".into()
            );
        }
        if self.ftp_data_port == 0 {
            return Err(format!("ftp_data_port={} is not a TCP port", self.ftp_data_port));
        }
        if !self.pasv_addr_resolve
            && !self.pasv_address.is_empty()
            && self.pasv_address.parse::<std::net::Ipv4Addr>().is_err()
        {
            return Err(format!("pasv_address={:?} is not an IPv4 address", self.pasv_address));
        }
        if self.implicit_ssl && !self.ssl_enable {
            return Err("implicit_ssl=YES needs ssl_enable=YES".into());
        }
        if self.ssl_enable {
            for (name, on) in [("ssl_sslv2", self.ssl_sslv2), ("ssl_sslv3", self.ssl_sslv3)] {
                if on {
                    return Err(format!("{name}=YES: SSLv2/SSLv3 are broken and not implemented; set it to NO"));
                }
            }
            if !self.ssl_tlsv1_2 && !self.ssl_tlsv1_3 {
                return Err("ssl_tlsv1_2=NO and ssl_tlsv1_3=NO leave no TLS version to offer".into());
            }
            crate::ciphers::provider(&self.ssl_ciphers)?;
        }
        for o in Self::TABLE.iter().filter(|o| o.effect == Effect::RefusedWhenYes) {
            if self.get(o.name).as_deref() == Some("YES") {
                return Err(format!(
                    "{}=YES is not supported by ftpd; set it to NO (`ftpd --help-config` says why)",
                    o.name
                ));
            }
        }
        if self.ftpd_prefix_v4 == 0 || self.ftpd_prefix_v4 > 32 {
            return Err(format!("ftpd_prefix_v4={} is not an IPv4 prefix length (1-32)", self.ftpd_prefix_v4));
        }
        if self.ftpd_prefix_v6 == 0 || self.ftpd_prefix_v6 > 128 {
            return Err(format!("ftpd_prefix_v6={} is not an IPv6 prefix length (1-128)", self.ftpd_prefix_v6));
        }
        if self.ftpd_ban_enable {
            if self.ban_fails() == 0 {
                return Err("ftpd_ban_enable=YES with ftpd_ban_fails=0 and max_login_fails=0: no count of failed logins starts a ban; set ftpd_ban_fails (or max_login_fails) to at least 1, or ftpd_ban_enable=NO".into());
            }
            for (name, v) in [("ftpd_ban_window", self.ftpd_ban_window), ("ftpd_ban_time", self.ftpd_ban_time)] {
                if v == 0 {
                    return Err(format!("{name}=0 with ftpd_ban_enable=YES: use at least 1, or ftpd_ban_enable=NO"));
                }
            }
        }
        crate::net::Allow::parse("ftpd_ban_allow", &self.ftpd_ban_allow)?;
        let trusted = crate::net::Allow::parse("ftpd_proxy_trusted", &self.ftpd_proxy_trusted)?;
        if self.ftpd_proxy_data && !self.ftpd_proxy_protocol {
            return Err(
                "ftpd_proxy_data=YES needs ftpd_proxy_protocol=YES (and the balancers in ftpd_proxy_trusted)".into()
            );
        }
        if self.ftpd_proxy_protocol {
            if trusted.is_empty() {
                return Err("ftpd_proxy_protocol=YES needs ftpd_proxy_trusted: the balancers' addresses or networks (e.g. 10.0.0.5, 10.0.1.0/24); no other source may name the client".into());
            }
            if self.ftpd_kernel_max_per_ip != 0 {
                return Err(format!(
                    "ftpd_kernel_max_per_ip={} with ftpd_proxy_protocol=YES would cap the balancer's own address in XDP; set it to 0 (max_per_ip holds per client after the PROXY header)",
                    self.ftpd_kernel_max_per_ip
                ));
            }
        }
        if !self.ftpd_cluster_redis.is_empty() {
            let url = &self.ftpd_cluster_redis;
            if !url.starts_with("redis://") {
                return Err(format!("ftpd_cluster_redis={url:?} is not a redis:// URL (e.g. redis://10.0.0.9:6379/0)"));
            }
            redis::Client::open(url.as_str()).map_err(|e| format!("ftpd_cluster_redis={url:?}: {e}"))?;
            if !(1..=3600).contains(&self.ftpd_cluster_lease) {
                return Err(format!("ftpd_cluster_lease={} is not 1-3600 seconds", self.ftpd_cluster_lease));
            }
        }
        Ok(())
    }

    /// The passive port range, `None` when any port will do.
    pub fn pasv_range(&self) -> Option<(u16, u16)> {
        match (self.pasv_min_port, self.pasv_max_port) {
            (0, 0) => None,
            (0, hi) => Some((1024, hi)),
            (lo, 0) => Some((lo, 65535)),
            (lo, hi) => Some((lo, hi)),
        }
    }

    /// The option table as Markdown, for `--help-config` and the README.
    pub fn describe() -> String {
        let mut out = String::from("| option | type | default | meaning |\n| --- | --- | --- | --- |\n");
        for o in Self::TABLE {
            let kind = if o.kind == Kind::Bool { "bool".to_owned() } else { o.kind.describe(" \\| ") };
            let default = if o.default.is_empty() { "(empty)".to_string() } else { format!("`{}`", o.default) };
            let doc = format!("{}{}", o.doc, o.reload_note());
            out.push_str(&format!("| `{}` | {kind} | {default} | {} |\n", o.name, doc.replace('|', "\\|")));
        }
        out
    }
}

/// `url` with its host name replaced by the address it resolves to (for
/// the same reason as `pasv_address`: the confined front cannot resolve).
fn resolve_redis(text: &str) -> Result<String, String> {
    let mut url = url::Url::parse(text).map_err(|e| format!("ftpd_cluster_redis={text:?}: {e}"))?;
    if let Some(url::Host::Domain(name)) = url.host() {
        let name = name.to_owned();
        let port = url.port().unwrap_or(6379);
        let ip = std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), port))
            .map_err(|e| format!("ftpd_cluster_redis={text:?}: cannot resolve {name:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("ftpd_cluster_redis={text:?}: {name:?} has no address"))?
            .ip();
        url.set_ip_host(ip).map_err(|()| format!("ftpd_cluster_redis={text:?}: cannot use {ip}"))?;
    }
    Ok(url.to_string())
}

impl Config {
    /// Gives `new` (a reloaded config) the running values of the options a
    /// running ftpd cannot change (with the kernel data plane loaded when
    /// `ebpf`) that it changes, and returns their names: the caller warns
    /// that they need a restart.
    pub fn keep_running_values(&self, new: &mut Self, ebpf: bool) -> Vec<&'static str> {
        let mut kept = Vec::new();
        for o in Self::TABLE.iter().filter(|o| o.needs_restart(ebpf)) {
            if self.get(o.name) != new.get(o.name) && new.copy_option(self, o.name) {
                kept.push(o.name);
            }
        }
        // A front that took ftp_username's identity (`front_user`) keeps it
        // until a restart: anonymous writes must wait for one (as that user
        // the front could write past the worker's rules), and so must
        // another ftp_username (the front would keep the old one's rights).
        // Turning anonymous access or writes off takes effect at once.
        if self.front_user() != self.nopriv_user {
            let mut keep = Vec::new();
            if new.anon_writes() && !self.anon_writes() {
                keep.extend([
                    "write_enable",
                    "anon_upload_enable",
                    "anon_mkdir_write_enable",
                    "anon_other_write_enable",
                ]);
            }
            keep.push("ftp_username");
            for name in keep {
                if self.get(name) != new.get(name) && new.copy_option(self, name) {
                    kept.push(name);
                }
            }
        }
        kept
    }
}

/// Where the configuration comes from, kept so that SIGHUP can read it again.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    /// The config file; `None` means the embedded default.
    pub path: Option<std::path::PathBuf>,
    /// `-oNAME=VALUE` arguments, in order.
    pub settings: Vec<String>,
    /// `--root DIR`.
    pub root: Option<String>,
}

impl ConfigSource {
    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Config, String> {
        let mut cfg = Config::default();
        match &self.path {
            Some(p) => cfg.apply_file(p).map_err(|e| e.to_string())?,
            None => cfg.apply_text("<embedded default>", EMBEDDED_DEFAULT).map_err(|e| e.to_string())?,
        }
        for s in &self.settings {
            cfg.apply_setting(s).map_err(|e| format!("-o {s}: {e}"))?;
        }
        if let Some(root) = &self.root {
            cfg.anon_root.clone_from(root);
        }
        let name = self.path.as_ref().map_or_else(|| "<embedded default>".into(), |p| p.display().to_string());
        cfg.validate().map_err(|e| format!("{name}: {e}"))?;
        // Resolved by the process that reads the file (the master, at start
        // and at each SIGHUP), and handed on as an address: the confined
        // front may not open the sockets a resolver uses (nscd's unix
        // socket, netlink for sorting several answers).
        if cfg.pasv_addr_resolve && !cfg.pasv_address.is_empty() {
            cfg.pasv_address = resolve_v4(&cfg.pasv_address)?.to_string();
        }
        if !cfg.ftpd_cluster_redis.is_empty() {
            cfg.ftpd_cluster_redis = resolve_redis(&cfg.ftpd_cluster_redis)?;
        }
        Ok(cfg)
    }
}

/// The first IPv4 address of `host` (an address is taken as it is).
///
/// # Errors
/// The name does not resolve, or only to IPv6 addresses.
pub fn resolve_v4(host: &str) -> Result<std::net::Ipv4Addr, String> {
    use std::net::{IpAddr, ToSocketAddrs};
    if let Ok(v4) = host.parse() {
        return Ok(v4);
    }
    (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("pasv_address={host}: cannot resolve: {e}"))?
        .find_map(|a| match a.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("pasv_address={host}: no IPv4 address"))
}

/// The `ftpd_rate_scope` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RateScope {
    /// Each session has the full rate.
    Session,
    /// All transfers of one user share it.
    User,
    /// All transfers from one client IP share it.
    Ip,
}

impl Choice for RateScope {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("session", Self::Session), ("user", Self::User), ("ip", Self::Ip)];
    const NAMES: &'static [&'static str] = &["session", "user", "ip"];
}

impl Config {
    /// The XDP hard cap per IP (0: none).
    pub fn kernel_max_per_ip(&self) -> u32 {
        // Behind a balancer the kernel sees its address on the control port.
        if self.ftpd_proxy_protocol {
            0
        } else if self.ftpd_kernel_max_per_ip != 0 {
            self.ftpd_kernel_max_per_ip
        } else {
            self.max_per_ip.saturating_mul(2)
        }
    }

    /// The XDP hard cap per client network (0: none): twice
    /// `ftpd_max_per_prefix`, as the per-IP cap is twice `max_per_ip`, since
    /// refused connections are held open until the client closes them.
    pub fn kernel_max_per_prefix(&self) -> u32 {
        if self.ftpd_proxy_protocol { 0 } else { self.ftpd_max_per_prefix.saturating_mul(2) }
    }

    /// The XDP hard cap on all control connections (0: none).
    pub fn kernel_max_clients(&self) -> u32 {
        if self.ftpd_kernel_max_clients != 0 {
            self.ftpd_kernel_max_clients
        } else {
            self.max_clients.saturating_mul(2)
        }
    }
}

/// The `ftpd_ebpf` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EbpfMode {
    /// Load when possible, fall back to userspace otherwise.
    Auto,
    /// Refuse to start without the kernel data plane.
    On,
    /// Never load it.
    Off,
}

impl Choice for EbpfMode {
    const CHOICES: &'static [(&'static str, Self)] = &[("auto", Self::Auto), ("on", Self::On), ("off", Self::Off)];
    const NAMES: &'static [&'static str] = &["auto", "on", "off"];
}

impl Config {
    /// Whether anonymous users may change anything.
    pub fn anon_writes(&self) -> bool {
        self.write_enable && (self.anon_upload_enable || self.anon_mkdir_write_enable || self.anon_other_write_enable)
    }

    /// The user the front runs as: `ftp_username` on an anonymous server
    /// (`ftpd_anon_fast_path`), so that the kernel's answer to the front's own
    /// open of an anonymous download is the worker's answer; `nopriv_user`
    /// everywhere else. With anonymous writes on, the worker must keep judging
    /// them (overwrite, delete, umask rules): a front with `ftp_username`'s
    /// identity could write wherever that user may, past those rules, unless
    /// the kernel takes every file change from it first (Landlock,
    /// `sandbox::forbid_fs_writes`). Without Landlock it keeps `nopriv_user`.
    pub fn front_user(&self) -> &str {
        if self.ftpd_anon_fast_path
            && self.anonymous_enable
            && self.anon_world_readable_only
            && (!self.anon_writes() || crate::sandbox::can_forbid_fs_writes())
        {
            &self.ftp_username
        } else {
            &self.nopriv_user
        }
    }
}

/// What `cargo xtask run` serves when no config file is given: anonymous,
/// read-only, on loopback, with a fixed passive range so the XDP program has a
/// range to watch.
pub const EMBEDDED_DEFAULT: &str = "\
# ftpd's embedded default: anonymous read-only downloads on loopback.
anonymous_enable=YES
no_anon_password=YES
# No `ftp` account is needed to try ftpd: anonymous users act as nobody.
ftp_username=nobody
listen_address=127.0.0.1
listen_port=2121
pasv_min_port=50000
pasv_max_port=50099
ftpd_metrics_listen=127.0.0.1:9121
";

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        c.apply_text("test.conf", text).map(|()| c)
    }

    #[test]
    fn an_empty_value_is_refused_but_for_text_and_addresses() {
        for line in ["listen_port=", "anon_umask=", "anonymous_enable=", "anon_max_rate=", "ftpd_ebpf="] {
            let err = load(&format!("{line}\n")).expect_err(line).to_string();
            assert!(err.contains("missing value") && err.contains(":1"), "{line}: {err}");
        }
        let c = load("ftpd_banner=\nlisten_address=\nftpd_metrics_listen=\n").expect("text and addresses may be empty");
        assert_eq!((c.ftpd_banner.as_str(), c.listen_address, c.ftpd_metrics_listen), ("", None, None));
    }

    #[test]
    fn booleans_in_any_case() {
        for (v, want) in
            [("YES", true), ("yes", true), ("True", true), ("1", true), ("no", false), ("FALSE", false), ("0", false)]
        {
            assert_eq!(load(&format!("anonymous_enable={v}\n")).unwrap().anonymous_enable, want, "{v}");
        }
        let e = load("anonymous_enable=maybe\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.reason.contains("bad boolean"), "{e}");
    }

    #[test]
    fn leading_zero_is_octal() {
        assert_eq!(load("listen_port=021\n").unwrap().listen_port, 17);
        assert_eq!(load("listen_port=21\n").unwrap().listen_port, 21);
        assert!(load("listen_port=089\n").is_err());
    }

    #[test]
    fn comments_only_in_column_zero() {
        assert!(load("# comment\n\nlisten_port=2121\n").is_ok());
        let e = load("listen_port=21\n  # indented\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn last_duplicate_wins_and_empty_text_resets() {
        assert_eq!(load("listen_port=1\nlisten_port=2\n").unwrap().listen_port, 2);
        assert_eq!(load("ftpd_banner=hi\nftpd_banner=\n").unwrap().ftpd_banner, "");
        assert!(load("max_clients=5\nmax_clients=\n").is_err(), "an empty number is refused, as vsftpd does");
    }

    #[test]
    fn refuses_what_vsftpd_refuses() {
        let cases = [
            ("no_such_option=1\n", "unrecognised"),
            ("listen_port\n", "no `=`"),
            ("listen_port=21 \n", "white space"),
            ("listen_port=21\r\n", "carriage return"),
            ("Listen_port=21\n", "unrecognised"),
        ];
        for (text, want) in cases {
            let e = load(text).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
            assert!(e.to_string().starts_with("test.conf:1:"), "{e}");
        }
    }

    #[test]
    fn unknown_names_get_the_closest_real_ones() {
        assert_eq!(closest_options("listen_data_port").first(), Some(&"ftp_data_port"));
        assert_eq!(closest_options("Listen_port"), vec!["listen_port"]);
        assert!(closest_options("anon_enable").contains(&"anonymous_enable"), "{:?}", closest_options("anon_enable"));
        assert!(closest_options("zzzz").is_empty());
        // Too long to be a typo, but its words still point at an option.
        let long = format!("{}_listen_port", "x".repeat(200));
        assert!(closest_options(&long).contains(&"listen_port"), "{:?}", closest_options(&long));
        assert!(closest_options(&"x".repeat(200)).is_empty());
        let e = load("listen_data_port=5020\n").unwrap_err();
        assert!(e.to_string().contains("did you mean ftp_data_port"), "{e}");
    }

    #[test]
    fn split_at_first_equals() {
        assert_eq!(load("ftpd_banner=a=b\n").unwrap().ftpd_banner, "a=b");
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = load(EMBEDDED_DEFAULT).unwrap();
        c.validate().unwrap();
        assert_eq!(c.pasv_range(), Some((50000, 50099)));
    }

    #[test]
    fn every_default_passes_set() {
        for o in Config::TABLE {
            let mut c = Config::default();
            c.set(o.name, o.default).unwrap_or_else(|e| panic!("{}: {e}", o.name));
            assert_eq!(c, Config::default(), "{} default does not round-trip", o.name);
        }
    }

    #[test]
    fn debian_default_vsftpd_conf_loads() {
        // Debian 12's /etc/vsftpd.conf, comments removed.
        let debian = "listen=NO\nlisten_ipv6=YES\nanonymous_enable=NO\nlocal_enable=YES\ndirmessage_enable=YES\nuse_localtime=YES\nxferlog_enable=YES\nconnect_from_port_20=YES\nsecure_chroot_dir=/var/run/vsftpd/empty\npam_service_name=vsftpd\nrsa_cert_file=/etc/ssl/certs/ssl-cert-snakeoil.pem\nrsa_private_key_file=/etc/ssl/private/ssl-cert-snakeoil.key\nssl_enable=NO\n";
        let c = load(debian).unwrap();
        c.validate().unwrap();
        assert!(c.listen_ipv6 && c.local_enable && c.xferlog_enable && c.pam_service_name == "vsftpd");
        let e = load("ssl_enable=YES\nssl_ciphers=DES-CBC3-SHA\n").unwrap().validate().unwrap_err();
        assert!(e.contains("ssl_ciphers"), "{e}");
        assert!(load("implicit_ssl=YES\n").unwrap().validate().is_err());
    }

    #[test]
    fn a_reload_keeps_the_running_values_of_restart_only_options() {
        let old = load("listen_port=2121\nftpd_banner=old\n").unwrap();
        let mut new = load("listen_port=2222\nftpd_banner=new\n").unwrap();
        new.nopriv_user = "ftp".into();
        new.pasv_min_port = 50000;
        let kept = old.clone().keep_running_values(&mut new.clone(), true);
        assert_eq!(kept, ["listen_port", "pasv_min_port", "nopriv_user"], "with the kernel plane");
        let kept = old.keep_running_values(&mut new, false);
        assert_eq!(kept, ["listen_port", "nopriv_user"]);
        assert_eq!((new.listen_port, new.nopriv_user.as_str()), (2121, "nobody"));
        assert_eq!(new.ftpd_banner, "new", "other options take their new values");
        assert_eq!(new.pasv_min_port, 50000, "the passive range reloads without the kernel plane");
    }

    #[test]
    fn the_table_says_which_options_need_a_restart() {
        let with = |reload| Config::TABLE.iter().filter(|o| o.reload == reload).map(|o| o.name).collect::<Vec<_>>();
        assert_eq!(
            with(Reload::RestartWithEbpf),
            ["pasv_min_port", "pasv_max_port", "ftpd_prefix_v4", "ftpd_prefix_v6"]
        );
        let restart = with(Reload::Restart);
        for name in [
            "listen",
            "listen_ipv6",
            "listen_address",
            "listen_address6",
            "listen_port",
            "background",
            "nopriv_user",
            "anon_root",
            "ftpd_ebpf",
            "ftpd_xdp_interfaces",
            "ftpd_metrics_listen",
            "xferlog_enable",
            "xferlog_std_format",
            "xferlog_file",
            "vsftpd_log_file",
            "dual_log_enable",
            "log_ftp_protocol",
            "ssl_enable",
            "ftpd_cluster_redis",
            "ftpd_cluster_node",
            "ftpd_cluster_lease",
            // The front's identity is chosen when it is forked.
            "ftpd_anon_fast_path",
        ] {
            assert!(restart.contains(&name), "{name} is not flagged restart-only");
        }
        assert_eq!(restart.len(), 22, "{restart:?}");
        let none: Vec<_> = Config::TABLE.iter().filter(|o| o.effect == Effect::None).map(|o| o.name).collect();
        assert!(none.contains(&"isolate") && none.contains(&"chown_username") && !none.contains(&"check_shell"));
        // `validate` refuses them by their value YES.
        assert!(Config::TABLE.iter().filter(|o| o.effect == Effect::RefusedWhenYes).all(|o| o.kind == Kind::Bool));
        assert!(Config::describe().contains("| ftpd extension. This node's name"), "the table renders");
        assert!(
            Config::describe()
                .lines()
                .any(|l| l.starts_with("| `listen_port` | port |") && l.ends_with("Restart to change. |"))
        );
    }

    #[test]
    fn ports_modes_and_addresses_are_typed_when_read() {
        let e = load("pasv_max_port=70000\n").unwrap_err().to_string();
        assert!(e.contains("pasv_max_port") && e.contains("bad port \"70000\""), "{e}");
        assert_eq!(load("listen_port=021\n").unwrap().listen_port, 17u16);
        let e = load("anon_umask=0999\n").unwrap_err().to_string();
        assert!(e.contains("anon_umask") && e.contains("bad number"), "{e}");
        let e = load("file_open_mode=017777\n").unwrap_err().to_string();
        assert!(e.contains("file_open_mode") && e.contains("bad mode"), "{e}");
        assert_eq!(load("local_umask=022\n").unwrap().get("local_umask").as_deref(), Some("022"));
        assert_eq!(Config::default().get("anon_umask").as_deref(), Some("077"));
        let e = load("listen_address=::1\n").unwrap_err().to_string();
        assert!(e.contains("listen_address") && e.contains("bad IPv4 address"), "{e}");
        let e = load("listen_address6=127.0.0.1\n").unwrap_err().to_string();
        assert!(e.contains("listen_address6") && e.contains("bad IPv6 address"), "{e}");
        let c = load("listen_address=10.0.0.1\nlisten_address6=::1\n").unwrap();
        assert_eq!(
            (c.listen_address, c.listen_address6),
            (Some([10, 0, 0, 1].into()), Some(std::net::Ipv6Addr::LOCALHOST))
        );
        assert_eq!(load("listen_address=10.0.0.1\nlisten_address=\n").unwrap().listen_address, None);
        let e = load("ftpd_metrics_listen=localhost:9121\n").unwrap_err().to_string();
        assert!(e.contains("ftpd_metrics_listen") && e.contains("bad ADDR:PORT"), "{e}");
        let c = load("ftpd_metrics_listen=[::1]:9121\n").unwrap();
        assert_eq!(c.get("ftpd_metrics_listen").as_deref(), Some("[::1]:9121"));
        // A host name stays text: the master resolves it (`pasv_addr_resolve`).
        assert_eq!(load("pasv_addr_resolve=YES\npasv_address=ftp.example\n").unwrap().pasv_address, "ftp.example");
    }

    #[test]
    fn every_enum_default_is_one_of_its_words() {
        for o in Config::TABLE {
            if let Kind::Choice(names) = o.kind {
                assert!(names.contains(&o.default), "{}: default {:?} is not one of {names:?}", o.name, o.default);
                assert_eq!(Config::default().get(o.name).as_deref(), Some(o.default), "{}", o.name);
            }
        }
        assert_eq!(Config::default().ftpd_ebpf, EbpfMode::Auto);
        assert_eq!(Config::default().ftpd_rate_scope, RateScope::Session);
    }

    #[test]
    fn validate_catches_relations() {
        assert!(load("pasv_min_port=200\npasv_max_port=100\n").unwrap().validate().is_err());
        assert!(load("listen_port=70000\n").is_err());
        assert!(load("listen_port=0\n").unwrap().validate().is_err());
        // Enum options are refused when the file is read, with the words to use.
        let e = load("ftpd_ebpf=maybe\n").expect_err("not a mode").to_string();
        assert!(e.contains("ftpd_ebpf") && e.contains("use auto, on, off"), "{e}");
        let e = load("ftpd_rate_scope=host\n").expect_err("not a scope").to_string();
        assert!(e.contains("use session, user, ip"), "{e}");
        assert_eq!(load("ftpd_rate_scope=ip\n").unwrap().ftpd_rate_scope, RateScope::Ip);
    }

    #[test]
    fn proxy_protocol_needs_its_balancers_and_turns_off_the_kernels_per_ip_caps() {
        let e = load("ftpd_proxy_protocol=YES\n").unwrap().validate().unwrap_err();
        assert!(e.contains("ftpd_proxy_trusted"), "{e}");
        let e = load("ftpd_proxy_data=YES\n").unwrap().validate().unwrap_err();
        assert!(e.contains("ftpd_proxy_protocol=YES"), "{e}");
        let e = load("ftpd_proxy_protocol=YES\nftpd_proxy_trusted=10.0.0.5, 10.0.1.0/33\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.contains("ftpd_proxy_trusted") && e.contains("10.0.1.0/33"), "{e}");
        let e = load("ftpd_proxy_protocol=YES\nftpd_proxy_trusted=10.0.0.5\nftpd_kernel_max_per_ip=10\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.contains("ftpd_kernel_max_per_ip=10") && e.contains("balancer"), "{e}");
        let c = load("ftpd_proxy_protocol=YES\nftpd_proxy_trusted=10.0.0.5\nmax_per_ip=5\nftpd_max_per_prefix=9\n")
            .unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!((c.kernel_max_per_ip(), c.kernel_max_per_prefix()), (0, 0), "the kernel sees only the balancer");
        assert_eq!(c.kernel_max_clients(), 4000, "the total cap still holds in XDP");
    }

    #[test]
    fn a_fleet_needs_a_redis_url_and_a_sane_lease() {
        let bad = |text: &str| load(text).unwrap().validate().unwrap_err();
        let e = bad("ftpd_cluster_redis=10.0.0.9:6379\n");
        assert!(e.contains("redis://"), "{e}");
        let e = bad("ftpd_cluster_redis=redis://10.0.0.9:6379\nftpd_cluster_lease=0\n");
        assert!(e.contains("ftpd_cluster_lease=0"), "{e}");
        assert_eq!(load("ftpd_cluster_redis=redis://10.0.0.9:6379/2\n").unwrap().validate(), Ok(()));
        assert_eq!(resolve_redis("redis://localhost:6380/1").as_deref(), Ok("redis://127.0.0.1:6380/1"));
        assert_eq!(resolve_redis("redis://:pw@10.0.0.9").as_deref(), Ok("redis://:pw@10.0.0.9"));
        assert!(resolve_redis("redis://no-such-host.invalid:6379").unwrap_err().contains("cannot resolve"));
    }

    #[test]
    fn a_passive_range_is_never_upside_down() {
        // Found by the config fuzz target's property: with pasv_min_port=0
        // the range starts at 1024, so pasv_max_port=500 passed the check
        // but gave the range 1024-500 (an overflow in the passive port scan).
        let e = load("pasv_max_port=500\n").unwrap().validate().unwrap_err();
        assert!(e.contains("pasv_max_port=500") && e.contains("1024"), "{e}");
        let ok = load("pasv_min_port=100\npasv_max_port=500\n").unwrap();
        assert_eq!((ok.validate(), ok.pasv_range()), (Ok(()), Some((100, 500))));
    }
}
