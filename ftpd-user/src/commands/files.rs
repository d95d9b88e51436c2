//! Navigation, information and file-system changes: PWD CWD TYPE PASV EPSV
//! PORT EPRT REST SIZE MDTM MLST STAT MKD RMD DELE RNFR RNTO SITE.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use tracing::{info, warn};

use crate::{
    data,
    fs::{self, VPath},
    session::{DataSetup, Session},
};

/// A class of file-system change, for the permission rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Create a new file.
    Upload,
    /// Create a directory.
    Mkdir,
    /// Delete, rename, append to or overwrite (vsftpd's "other write").
    Other,
    /// SITE CHMOD.
    Chmod,
}

impl Session {
    /// Whether the user may make a change of this class (vsftpd's rules:
    /// `write_enable` first, then the `anon_*` switches or `chmod_enable`).
    pub(crate) fn may(&self, op: Op) -> bool {
        let u = self.user();
        let c = &u.cfg;
        if !c.write_enable {
            return false;
        }
        match (self.anon_rules(), op) {
            (true, Op::Upload) => c.anon_upload_enable,
            (true, Op::Mkdir) => c.anon_mkdir_write_enable,
            (true, Op::Other) => c.anon_other_write_enable,
            (true, Op::Chmod) => false,
            (false, Op::Chmod) => c.chmod_enable,
            (false, _) => true,
        }
    }

    /// Resolves a client path. `None` for NUL bytes, overlong paths and
    /// `deny_file` matches, which the caller answers like "not found".
    pub(crate) fn path(&self, arg: &[u8]) -> Option<VPath> {
        let p = self.cwd.join(arg).ok()?;
        if self.shared.deny.matches_path(&p) || fs::is_upload_temp(p.file_name()) {
            return None;
        }
        Some(p)
    }

    /// vsftpd's log line for a file-system change: `OK MKDIR: Client "ip", "/path"`.
    fn log_change(&self, ok: bool, what: &str, path: &VPath) {
        let tag = format!("{} {what}", if ok { "OK" } else { "FAIL" });
        self.shared.logs.event(&self.log_user, &tag, &self.client, Some(path.as_bytes()));
    }

    pub(crate) async fn cmd_pwd(&mut self) -> io::Result<()> {
        let path = String::from_utf8_lossy(self.cwd.as_bytes()).replace('"', "\"\"");
        self.reply(257, &format!("\"{path}\" is the current directory")).await
    }

    pub(crate) async fn cmd_cwd(&mut self, arg: &[u8]) -> io::Result<()> {
        // An empty CWD names no directory (vsftpd: chdir("") fails).
        let ok = self.path(arg).filter(|p| !arg.is_empty() && self.user().root.is_dir(p));
        let Some(p) = ok else {
            return self.reply(550, "Failed to change directory.").await;
        };
        self.cwd = p.clone();
        let mut lines = self.dir_message(&p);
        lines.push("Directory successfully changed.".into());
        self.reply_lines(250, &lines).await
    }

    /// With `dirmessage_enable`, the lines of `dir`'s message file the first
    /// time this session enters `dir` (vsftpd shows each message once).
    pub(crate) fn dir_message(&mut self, dir: &VPath) -> Vec<String> {
        let cfg = self.cfg();
        if !cfg.dirmessage_enable || self.seen_messages.contains(dir) {
            return Vec::new();
        }
        self.seen_messages.push(dir.clone());
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

    pub(crate) async fn cmd_type(&mut self, arg: &[u8]) -> io::Result<()> {
        match arg.to_ascii_uppercase().as_slice() {
            b"I" | b"L 8" | b"L8" => {
                self.binary = true;
                self.reply(200, "Switching to Binary mode.").await
            }
            b"A" | b"A N" => {
                self.binary = false;
                self.reply(200, "Switching to ASCII mode.").await
            }
            _ => self.reply(500, "Unrecognised TYPE command.").await,
        }
    }

    pub(crate) async fn cmd_pasv(&mut self, extended: bool) -> io::Result<()> {
        let cfg = self.cfg();
        if !cfg.pasv_enable {
            return self.reply(550, "Permission denied.").await;
        }
        if self.epsv_all && !extended {
            return self.reply(550, "Permission denied.").await;
        }
        let local_ip = data::canonical(self.local.ip());
        if !extended && !local_ip.is_ipv4() {
            return self.reply(522, "Network protocol not supported, use EPSV (2).").await;
        }
        self.data = DataSetup::None;
        self.close_pinhole();
        if let Some(g) = self.pasv_slot.take() {
            g.dec();
        }
        // Each PASV starts its scan elsewhere, also within one session and second.
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seed = (self.id ^ call.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ fs::now_secs().unsigned_abs();
        // Bind on the control connection's own local address, as it arrived
        // (a v4-mapped address stays IPv6 on a dual-stack socket).
        let listener = match data::bind_passive(self.local.ip(), cfg.pasv_range(), seed) {
            Ok(l) => l,
            Err(e) => {
                warn!(session = self.id, error = %e, "cannot open a passive port");
                return self.reply(425, "Failed to enter passive mode.").await;
            }
        };
        let port = listener.local_addr()?.port();
        crate::metrics::Metrics::inc(&self.shared.metrics.pinholes, "event", "opened");
        let slot = self.shared.metrics.pasv_in_use.clone();
        slot.inc();
        self.pasv_slot = Some(slot);
        // The pinhole opens before the reply, or the client's SYN could win the race.
        if let Some(dp) = self.shared.kernel() {
            let ttl = std::time::Duration::from_secs(u64::from(cfg.accept_timeout.max(1)));
            if let Err(e) = dp.open_pinhole(port, self.peer_ip(), ttl, cfg.pasv_promiscuous) {
                warn!(session = self.id, error = %e, "cannot open a passive pinhole");
                return self.reply(425, "Failed to enter passive mode.").await;
            }
            self.pinhole = Some(port);
        }
        self.data = DataSetup::Passive(listener);
        if extended {
            return self.reply(229, &format!("Entering Extended Passive Mode (|||{port}|)")).await;
        }
        let announce = match self.shared.pasv_address {
            Some(a) => a,
            None => match local_ip {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            },
        };
        let o = announce.octets();
        let text =
            format!("Entering Passive Mode ({},{},{},{},{},{}).", o[0], o[1], o[2], o[3], port >> 8, port & 0xff);
        self.reply(227, &text).await
    }

    pub(crate) async fn cmd_epsv(&mut self, arg: &[u8]) -> io::Result<()> {
        let v6 = !data::canonical(self.local.ip()).is_ipv4();
        match parse_epsv(arg) {
            Epsv::All => {
                self.epsv_all = true;
                self.reply(200, "EPSV ALL ok.").await
            }
            Epsv::Any => self.cmd_pasv(true).await,
            Epsv::Ipv4 if !v6 => self.cmd_pasv(true).await,
            Epsv::Ipv6 if v6 => self.cmd_pasv(true).await,
            // RFC 2428: any protocol this connection cannot use, named or not.
            _ => self.reply(522, &unsupported_protocol(if v6 { "2" } else { "1" })).await,
        }
    }

    /// Checks an active-mode target: vsftpd's bounce defence unless `port_promiscuous`.
    fn active_allowed(&self, to: SocketAddr) -> bool {
        let cfg = self.cfg();
        cfg.port_promiscuous || (data::canonical(to.ip()) == self.peer_ip() && to.port() >= 1024)
    }

    pub(crate) async fn cmd_port(&mut self, arg: &[u8]) -> io::Result<()> {
        self.data = DataSetup::None;
        if !self.cfg().port_enable || self.epsv_all {
            return self.reply(550, "Permission denied.").await;
        }
        let Some(to) = parse_port(arg) else {
            return self.reply(500, "Illegal PORT command.").await;
        };
        if !self.active_allowed(to) {
            info!(session = self.id, peer = %self.peer, target = %to, "PORT refused (bounce defence)");
            return self.reply(500, "Illegal PORT command.").await;
        }
        // A v4 target on a dual-stack control connection is reached through IPv4.
        self.data = DataSetup::Active(to);
        self.reply(200, "PORT command successful. Consider using PASV.").await
    }

    pub(crate) async fn cmd_eprt(&mut self, arg: &[u8]) -> io::Result<()> {
        self.data = DataSetup::None;
        if !self.cfg().port_enable || self.epsv_all {
            return self.reply(550, "Permission denied.").await;
        }
        let v6 = !data::canonical(self.local.ip()).is_ipv4();
        let to = match parse_eprt(arg) {
            // As vsftpd: an IPv6 connection may name either protocol.
            Eprt::Addr(to) if v6 || to.is_ipv4() => to,
            // An IPv6 connection can reach either protocol, an IPv4 one only IPv4.
            Eprt::Addr(_) | Eprt::Unsupported => {
                return self.reply(522, &unsupported_protocol(if v6 { "1,2" } else { "1" })).await;
            }
            Eprt::BadProtocol => return self.reply(500, "Bad EPRT protocol.").await,
            Eprt::Bad => return self.reply(500, "Bad EPRT command.").await,
        };
        if !self.active_allowed(to) {
            info!(session = self.id, peer = %self.peer, target = %to, "EPRT refused (bounce defence)");
            return self.reply(500, "Illegal EPRT command.").await;
        }
        self.data = DataSetup::Active(to);
        self.reply(200, "EPRT command successful. Consider using EPSV.").await
    }

    pub(crate) async fn cmd_rest(&mut self, arg: &[u8]) -> io::Result<()> {
        // vsftpd's reading: the leading digits, anything else (a sign, letters,
        // nothing) counts as 0; so every REST is accepted.
        let digits = arg.iter().take_while(|b| b.is_ascii_digit()).count();
        let n = std::str::from_utf8(&arg[..digits]).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        self.rest = n;
        self.reply(350, &format!("Restart position accepted ({n}).")).await
    }

    pub(crate) async fn cmd_size(&mut self, arg: &[u8]) -> io::Result<()> {
        let Some(p) = self.path(arg) else {
            return self.reply(550, "Could not get file size.").await;
        };
        let root = &self.user().root;
        let found = match root.open_file(&p) {
            Ok(x) => Some(x),
            // An interrupted atomic upload reports its part, so that its
            // user can resume it; another session's upload in progress, or
            // another user's part, is nobody else's business.
            Err(_) => fs::part_path(&p, &self.user().name).and_then(|part| root.resumable_part(&part).ok()),
        };
        let Some((fd, st)) = found else {
            return self.reply(550, "Could not get file size.").await;
        };
        let cfg = self.cfg();
        let size = if !self.binary && cfg.ascii_download_enable {
            use crate::commands::transfer::{ASCII_SIZE_MAX, ascii_size};
            // Reading a file is never done on the async threads: a big one
            // would stall every session of this process meanwhile.
            let counted = if u64::try_from(st.st_size).unwrap_or(u64::MAX) > ASCII_SIZE_MAX {
                None
            } else {
                tokio::task::spawn_blocking(move || ascii_size(&fd)).await.ok().and_then(Result::ok).flatten()
            };
            match counted {
                Some(n) => n,
                None => return self.reply(550, "Could not get file size.").await,
            }
        } else {
            u64::try_from(st.st_size).unwrap_or(0)
        };
        self.reply(213, &size.to_string()).await
    }

    pub(crate) async fn cmd_mdtm(&mut self, arg: &[u8]) -> io::Result<()> {
        // vsftpd's `mdtm_write`: `MDTM TIME FILE` sets the time when the whole
        // argument is not itself a file and starts with a time of 8 or 14
        // digits (or 14 and a fraction). Without the right to change files
        // that form is answered as a failed read, as vsftpd does.
        let cfg = self.cfg();
        let mut arg = arg;
        let mut set = None;
        if cfg.mdtm_write
            && self.path(arg).and_then(|p| self.user().root.stat(&p).ok()).is_none()
            && let Some((time, name)) = split_mdtm_time(arg)
        {
            arg = name;
            set = Some(time);
        }
        if set.is_some() && !self.may(Op::Other) {
            return self.reply(550, "Could not get file modification time.").await;
        }
        if let Some(time) = set {
            let secs = if cfg.use_localtime { time - fs::local_offset(time) } else { time };
            let done = self.path(arg).is_some_and(|p| self.user().root.set_mtime(&p, secs).is_ok());
            return if done {
                self.reply(213, "File modification time set.").await
            } else {
                self.reply(550, "Could not set file modification time.").await
            };
        }
        let st = self.path(arg).and_then(|p| self.user().root.open_file(&p).ok()).map(|(_, st)| st);
        match st {
            Some(st) => {
                let shift = if self.cfg().use_localtime { fs::local_offset(st.st_mtime) } else { 0 };
                self.reply(213, &fs::mdtm(st.st_mtime + shift)).await
            }
            None => self.reply(550, "Could not get file modification time.").await,
        }
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

    pub(crate) async fn cmd_mlst(&mut self, arg: &[u8]) -> io::Result<()> {
        let st = self.path(arg).and_then(|p| self.user().root.stat(&p).ok().map(|st| (p, st)));
        let Some((p, st)) = st else {
            return self.reply(550, "Could not list that path.").await;
        };
        let mut perm = self.perm_fact(fs::is_dir(&st));
        // `e` (CWD) and `l` (LIST) only if this session can open the
        // directory, which is what CWD and LIST do: a 0700 directory of
        // another user showed `perm=elc` to anonymous.
        if fs::is_dir(&st) && !self.user().root.is_dir(&p) {
            perm.retain(|c| c != 'e' && c != 'l');
        }
        let mut line = Vec::new();
        fs::mlsx_line(p.as_bytes(), &st, &perm, &mut line);
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        self.reply_multi(250, &format!("Listing {}", String::from_utf8_lossy(p.as_bytes())), &[text], "End").await
    }

    pub(crate) async fn cmd_stat(&mut self, arg: &[u8]) -> io::Result<()> {
        if arg.is_empty() {
            // vsftpd's lines, indented as it does; ftpd's version line also
            // names the data plane.
            let cfg = self.cfg();
            let who = if self.user().anonymous { cfg.ftp_username.clone() } else { self.user().name.clone() };
            let rate = self.rate();
            let lines = [
                format!("Connected to {}", self.peer_ip()),
                format!("Logged in as {who}"),
                format!("TYPE: {}", if self.binary { "BINARY" } else { "ASCII" }),
                if rate == 0 {
                    "No session bandwidth limit".into()
                } else {
                    format!("Session bandwidth limit in byte/s is {rate}")
                },
                format!("Session timeout in seconds is {}", cfg.idle_session_timeout),
                "Control connection is plain text".into(),
                "Data connections will be plain text".into(),
                format!("At session startup, client count was {}", self.clients_at_start),
                format!("ftpd {} - {}", env!("CARGO_PKG_VERSION"), self.shared.plane_status()),
            ]
            .map(|l| format!("     {l}"));
            return self.reply_listing(211, "FTP server status:", &lines, "End of status").await;
        }
        // STAT PATH: a listing over the control connection.
        if !self.cfg().dirlist_enable {
            return self.reply(550, "Permission denied.").await;
        }
        let (flags, path_arg) = crate::commands::transfer::split_list_args(arg);
        let recurse = flags.contains(&b'R') && self.cfg().ls_recurse_enable;
        let listing = match self.path(path_arg) {
            Some(p) => self.listing_bytes(p, path_arg, recurse).await,
            None => Vec::new(),
        };
        let lines: Vec<String> = String::from_utf8_lossy(&listing).lines().map(str::to_owned).collect();
        self.reply_listing(213, "Status follows:", &lines, "End of status").await
    }

    pub(crate) async fn cmd_mkd(&mut self, arg: &[u8]) -> io::Result<()> {
        let Some(p) = self.path(arg).filter(|_| self.may(Op::Mkdir)) else {
            return self.reply(550, "Permission denied.").await;
        };
        let r = self.user().root.mkdir(&p, 0o777 & !self.umask);
        self.log_change(r.is_ok(), "MKDIR", &p);
        match r {
            Ok(()) => {
                let shown = String::from_utf8_lossy(p.as_bytes()).replace('"', "\"\"");
                self.reply(257, &format!("\"{shown}\" created")).await
            }
            Err(_) => self.reply(550, "Create directory operation failed.").await,
        }
    }

    pub(crate) async fn cmd_rmd(&mut self, arg: &[u8]) -> io::Result<()> {
        let Some(p) = self.path(arg).filter(|_| self.may(Op::Other)) else {
            return self.reply(550, "Permission denied.").await;
        };
        let r = self.user().root.rmdir(&p);
        self.log_change(r.is_ok(), "RMDIR", &p);
        match r {
            Ok(()) => self.reply(250, "Remove directory operation successful.").await,
            Err(_) => self.reply(550, "Remove directory operation failed.").await,
        }
    }

    pub(crate) async fn cmd_dele(&mut self, arg: &[u8]) -> io::Result<()> {
        let Some(p) = self.path(arg).filter(|_| self.may(Op::Other)) else {
            return self.reply(550, "Permission denied.").await;
        };
        let r = self.user().root.unlink(&p);
        self.log_change(r.is_ok(), "DELETE", &p);
        match r {
            Ok(()) => {
                info!(session = self.id, peer = %self.peer, user = %self.user().name, path = %String::from_utf8_lossy(p.as_bytes()), "deleted");
                self.reply(250, "Delete operation successful.").await
            }
            Err(_) => self.reply(550, "Delete operation failed.").await,
        }
    }

    pub(crate) async fn cmd_rnfr(&mut self, arg: &[u8]) -> io::Result<()> {
        let Some(p) = self.path(arg).filter(|_| self.may(Op::Other)) else {
            return self.reply(550, "Permission denied.").await;
        };
        if self.user().root.lstat(&p).is_err() {
            return self.reply(550, "RNFR command failed.").await;
        }
        self.rnfr = Some(p);
        self.reply(350, "Ready for RNTO.").await
    }

    pub(crate) async fn cmd_rnto(&mut self, arg: &[u8], from: Option<VPath>) -> io::Result<()> {
        // Permission before sequence, as vsftpd: a client without write rights
        // learns nothing about RNFR state.
        if !self.may(Op::Other) {
            return self.reply(550, "Permission denied.").await;
        }
        let Some(from) = from else {
            return self.reply(503, "RNFR required first.").await;
        };
        let Some(to) = self.path(arg) else {
            return self.reply(550, "Permission denied.").await;
        };
        let r = self.user().root.rename(&from, &to);
        self.log_change(r.is_ok(), "RENAME", &from);
        match r {
            Ok(()) => self.reply(250, "Rename successful.").await,
            Err(_) => self.reply(550, "Rename failed.").await,
        }
    }

    pub(crate) async fn cmd_site(&mut self, arg: &[u8]) -> io::Result<()> {
        // vsftpd has no SITE commands for anonymous users at all.
        if self.user().anonymous {
            return self.reply(550, "Permission denied.").await;
        }
        let (sub, rest) = crate::control::split_command(arg);
        match sub.as_str() {
            "CHMOD" => {
                if !self.may(Op::Chmod) {
                    return self.reply(550, "Permission denied.").await;
                }
                let (mode, path) = match rest.iter().position(|&b| b == b' ') {
                    Some(i) => (&rest[..i], &rest[i + 1..]),
                    None => (rest, &b""[..]),
                };
                let mode = std::str::from_utf8(mode)
                    .ok()
                    .and_then(|m| u32::from_str_radix(m, 8).ok())
                    .filter(|m| *m <= 0o7777);
                let (Some(mode), Some(p)) = (mode, self.path(path).filter(|_| !path.is_empty())) else {
                    return self.reply(501, "SITE CHMOD needs <mode> <file>.").await;
                };
                // vsftpd's chmod allows 0 to 0777 only: no setuid, setgid or
                // sticky bit from a client.
                match self.user().root.chmod(&p, mode & 0o777) {
                    Ok(()) => self.reply(200, "SITE CHMOD command ok.").await,
                    Err(_) => self.reply(550, "SITE CHMOD command failed.").await,
                }
            }
            "UMASK" => {
                if rest.is_empty() {
                    return self.reply(200, &format!("Your current UMASK is 0{:o}", self.umask)).await;
                }
                match std::str::from_utf8(rest)
                    .ok()
                    .and_then(|s| u32::from_str_radix(s, 8).ok())
                    .filter(|m| *m <= 0o777)
                {
                    Some(m) => {
                        self.umask = m;
                        self.reply(200, &format!("UMASK set to 0{m:o}")).await
                    }
                    None => self.reply(501, "Bad UMASK value.").await,
                }
            }
            "HELP" => self.reply(214, "CHMOD UMASK HELP").await,
            _ => self.reply(500, "Unknown SITE command.").await,
        }
    }
}

/// RFC 2428's 522 text, naming the protocols this connection's data can use.
fn unsupported_protocol(usable: &str) -> String {
    format!("Network protocol not supported, use ({usable})")
}

/// Parses PORT's `h1,h2,h3,h4,p1,p2` (RFC 959 section 4.1.2): six decimal
/// bytes, white space around each allowed. `None`: 500 Illegal PORT command.
pub fn parse_port(arg: &[u8]) -> Option<SocketAddr> {
    let parsed: Option<Vec<u8>> =
        std::str::from_utf8(arg).ok().and_then(|s| s.split(',').map(|n| n.trim().parse::<u8>().ok()).collect());
    let n = parsed.filter(|n| n.len() == 6)?;
    Some(SocketAddr::from((Ipv4Addr::new(n[0], n[1], n[2], n[3]), u16::from(n[4]) << 8 | u16::from(n[5]))))
}

/// What an EPSV argument asks for (RFC 2428 section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epsv {
    /// `EPSV ALL`: from now on only EPSV sets up data connections.
    All,
    /// No argument: the control connection's own protocol.
    Any,
    /// `EPSV 1`.
    Ipv4,
    /// `EPSV 2`.
    Ipv6,
    /// Any other protocol number, or anything else (522).
    Other,
}

/// Reads an EPSV argument; `ALL` in any case, as vsftpd does.
pub fn parse_epsv(arg: &[u8]) -> Epsv {
    match arg.to_ascii_uppercase().as_slice() {
        b"ALL" => Epsv::All,
        b"" => Epsv::Any,
        b"1" => Epsv::Ipv4,
        b"2" => Epsv::Ipv6,
        _ => Epsv::Other,
    }
}

/// What an EPRT argument says.
#[derive(Debug, PartialEq, Eq)]
pub enum Eprt {
    /// The address to connect to.
    Addr(SocketAddr),
    /// A protocol number other than 1 and 2 (RFC 2428 answers 522).
    Unsupported,
    /// No protocol number at all (vsftpd: `500 Bad EPRT protocol.`).
    BadProtocol,
    /// Anything else malformed (vsftpd: `500 Bad EPRT command.`).
    Bad,
}

/// Parses `|1|132.235.1.2|6275|` / `|2|::1|6275|` (RFC 2428); any delimiter.
/// The checks come in vsftpd's order, so a bad argument gets its reply.
pub fn parse_eprt(arg: &[u8]) -> Eprt {
    let Ok(s) = std::str::from_utf8(arg) else { return Eprt::Bad };
    let Some(d) = s.chars().next() else { return Eprt::BadProtocol };
    if d.is_ascii_alphanumeric() {
        return Eprt::Bad;
    }
    let parts: Vec<&str> = s.split(d).collect();
    // The number, not its spelling, names the family (vsftpd reads it with atoi).
    let v4 = match parts.get(1).map(|p| p.parse::<u32>()) {
        Some(Ok(1)) => true,
        Some(Ok(2)) => false,
        Some(Ok(_)) => return Eprt::Unsupported,
        _ => return Eprt::BadProtocol,
    };
    if parts.len() != 5 || !parts[4].is_empty() {
        return Eprt::Bad;
    }
    let Ok(port) = parts[3].parse::<u16>() else { return Eprt::Bad };
    let ip: Option<IpAddr> =
        if v4 { parts[2].parse().ok().map(IpAddr::V4) } else { parts[2].parse().ok().map(IpAddr::V6) };
    ip.map_or(Eprt::Bad, |ip| Eprt::Addr(SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eprt_forms() {
        assert_eq!(parse_eprt(b"|1|10.0.0.1|6275|"), Eprt::Addr("10.0.0.1:6275".parse().unwrap()));
        assert_eq!(parse_eprt(b"!2!::1!2000!"), Eprt::Addr("[::1]:2000".parse().unwrap()));
        assert_eq!(parse_eprt(b"|3|x|5000|"), Eprt::Unsupported);
        assert_eq!(parse_eprt(b""), Eprt::BadProtocol);
        assert_eq!(parse_eprt(b"||x|5000|"), Eprt::BadProtocol);
        for bad in [&b"|1|::1|20|"[..], b"|1|10.0.0.1|70000|", b"1|10.0.0.1|20|", b"|1|10.0.0.1|", b"x"] {
            assert_eq!(parse_eprt(bad), Eprt::Bad, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn eprt_protocol_number_decides_the_family_however_written() {
        // Found by the port_args fuzz target: `+1` is protocol 1 to the
        // number check, but only the text `1` chose IPv4, so an IPv6
        // address was taken for protocol 1. vsftpd reads the field as a
        // number (atoi), so `01` is IPv4 there.
        assert_eq!(parse_eprt(b"!+1!::1!20!"), Eprt::Bad);
        assert_eq!(parse_eprt(b"|01|10.0.0.1|6275|"), Eprt::Addr("10.0.0.1:6275".parse().unwrap()));
        assert_eq!(parse_eprt(b"|+2|::1|6275|"), Eprt::Addr("[::1]:6275".parse().unwrap()));
    }
}

/// Splits vsftpd's `MDTM TIME FILE`: `TIME` is `YYYYMMDD`, `YYYYMMDDHHMMSS`
/// or that with a fraction (ignored); returns the time as seconds since the
/// epoch read as UTC, and the file name. `None`: not that form.
pub fn split_mdtm_time(arg: &[u8]) -> Option<(i64, &[u8])> {
    let space = arg.iter().position(|&b| b == b' ')?;
    let (time, name) = (&arg[..space], &arg[space + 1..]);
    let digits = match time.len() {
        8 | 14 => time,
        n if n > 15 && time[14] == b'.' => &time[..14],
        _ => return None,
    };
    if name.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| std::str::from_utf8(digits.get(r)?).ok()?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = if digits.len() == 14 { (num(8..10)?, num(10..12)?, num(12..14)?) } else { (0, 0, 0) };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some((days_from_civil(i64::from(y), mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s), name))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod mdtm_tests {
    use super::*;

    #[test]
    fn mdtm_times_parse_as_vsftpd_reads_them() {
        assert_eq!(split_mdtm_time(b"20200101000000 a b"), Some((1_577_836_800, &b"a b"[..])));
        assert_eq!(split_mdtm_time(b"20210203040506.123 f"), Some((1_612_325_106, &b"f"[..])));
        assert_eq!(split_mdtm_time(b"19700102 f"), Some((86_400, &b"f"[..])));
        assert_eq!(split_mdtm_time(b"2020010100000 f"), None, "13 digits");
        assert_eq!(split_mdtm_time(b"20201301000000 f"), None, "month 13");
        assert_eq!(split_mdtm_time(b"2020010100000x f"), None);
        assert_eq!(split_mdtm_time(b"20200101000000 "), None, "no file");
        assert_eq!(split_mdtm_time(b"file.txt"), None);
    }
}
