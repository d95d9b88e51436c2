//! Navigation, information and file-system changes: PWD CWD TYPE PASV EPSV
//! PORT EPRT REST SIZE MDTM MLST STAT MKD RMD DELE RNFR RNTO SITE.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
};

use tracing::{info, warn};

use crate::{
    command::{Eprt, Epsv, Mdtm, Site, Umask},
    fs::{self, VPath},
    reply::{self, code},
    session::{DataSetup, PassivePort, Session},
};

pub(crate) use crate::policy::Op;

impl Session {
    /// vsftpd's log line for a file-system change: `OK MKDIR: Client "ip", "/path"`.
    fn log_change(&self, ok: bool, what: &str, path: &VPath) {
        let tag = format!("{} {what}", if ok { "OK" } else { "FAIL" });
        self.shared.logs.event(&self.names.log_user, &tag, &self.names.client, Some(path.as_bytes()));
    }

    pub(crate) async fn cmd_pwd(&mut self) -> io::Result<()> {
        let path = String::from_utf8_lossy(self.nav.cwd.as_bytes()).replace('"', "\"\"");
        self.reply(code::PATH_CREATED, &format!("\"{path}\" is the current directory")).await
    }

    pub(crate) async fn cmd_cwd(&mut self, arg: &[u8]) -> io::Result<()> {
        // An empty CWD names no directory (vsftpd: chdir("") fails).
        let ok = self.path(arg).filter(|p| !arg.is_empty() && self.user().root.is_dir(p));
        let Some(p) = ok else {
            return self.send(reply::CWD_FAILED).await;
        };
        self.nav.cwd = p.clone();
        let mut lines = self.dir_message(&p);
        lines.push("Directory successfully changed.".into());
        self.reply_lines(code::FILE_ACTION_OK, &lines).await
    }

    pub(crate) async fn cmd_type(&mut self, binary: bool) -> io::Result<()> {
        self.chan.binary = binary;
        self.send(if binary { reply::TYPE_BINARY } else { reply::TYPE_ASCII }).await
    }

    pub(crate) async fn cmd_pasv(&mut self, extended: bool) -> io::Result<()> {
        let cfg = self.cfg();
        if !cfg.pasv_enable {
            return self.send(reply::PERMISSION_DENIED).await;
        }
        if self.chan.epsv_all && !extended {
            return self.send(reply::PERMISSION_DENIED).await;
        }
        let local_ip = crate::net::canonical(self.names.local.ip());
        if !extended && !local_ip.is_ipv4() {
            return self.send(reply::PASV_NEEDS_IPV4).await;
        }
        // Behind a balancer that does not forward data connections, EPSV's
        // client would connect to the address it dialed (the balancer's);
        // unless the data ports are reached there too (`pasv_address` naming
        // it), only PASV, which names this node, can work. Clients (curl,
        // lftp) fall back to PASV on a refused EPSV.
        let data_at = self.settings.pasv_address.map_or(local_ip, IpAddr::V4);
        let through_balancer = cfg.ftpd_proxy_data;
        if extended && !through_balancer && self.names.proxied.is_some_and(|p| p.dialed != data_at) {
            return self.send(reply::EPSV_THROUGH_BALANCER).await;
        }
        // The previous passive port, if any, is released first; the last
        // transfer's is taken again if it fits.
        let kept = match std::mem::replace(&mut self.chan.data, DataSetup::None) {
            DataSetup::Kept(k) => Some(k),
            _ => None,
        };
        // Each PASV starts its scan elsewhere, also within one session and second.
        let seed = self.shared.pasv_seeds.next(self.id);
        // Bind on the control connection's own local address, as it arrived
        // (a v4-mapped address stays IPv6 on a dual-stack socket). The pinhole
        // and the port wait for whoever will connect: the balancer, when it
        // forwards data connections.
        let from = match self.names.proxied {
            Some(p) if through_balancer => p.balancer,
            _ => self.peer_ip(),
        };
        // Only balancers that forward data connections send them a header.
        let balancers = through_balancer.then(|| self.settings.proxy_trusted.clone());
        // A port is shared by sessions of different clients, told apart by
        // address; not when any address may connect, nor when every data
        // connection comes from the balancer (the kernel pinhole, keyed by
        // port and address, could not tell them apart).
        let alone = cfg.pasv_promiscuous || (through_balancer && self.names.proxied.is_some());
        let ask = crate::data::PassiveAsk {
            ip: self.names.local.ip(),
            range: cfg.pasv_range(),
            seed,
            client: self.peer_ip(),
            alone,
            balancers,
        };
        let wait = match self.shared.passive.wait(ask, kept) {
            Ok(w) => w,
            Err(e) => {
                warn!(session = self.id, error = %e, "cannot open a passive port");
                return self.send(reply::PASV_FAILED).await;
            }
        };
        let port = wait.port();
        let ttl = std::time::Duration::from_secs(u64::from(cfg.accept_timeout.max(1)));
        match PassivePort::open(&self.shared, wait, from, ttl, cfg.pasv_promiscuous) {
            Ok(p) => self.chan.data = DataSetup::Passive(p),
            Err(e) => {
                warn!(session = self.id, error = %e, "cannot open a passive pinhole");
                return self.send(reply::PASV_FAILED).await;
            }
        }
        if extended {
            return self.reply(code::EXTENDED_PASSIVE, &format!("Entering Extended Passive Mode (|||{port}|)")).await;
        }
        let announce = match self.settings.pasv_address {
            Some(a) => a,
            None => match local_ip {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            },
        };
        let o = announce.octets();
        let text =
            format!("Entering Passive Mode ({},{},{},{},{},{}).", o[0], o[1], o[2], o[3], port >> 8, port & 0xff);
        self.reply(code::PASSIVE, &text).await
    }

    pub(crate) async fn cmd_epsv(&mut self, arg: Epsv) -> io::Result<()> {
        let v6 = !crate::net::canonical(self.names.local.ip()).is_ipv4();
        match arg {
            Epsv::All => {
                self.chan.epsv_all = true;
                self.send(reply::EPSV_ALL_OK).await
            }
            Epsv::Any => self.cmd_pasv(true).await,
            Epsv::V4 if !v6 => self.cmd_pasv(true).await,
            Epsv::V6 if v6 => self.cmd_pasv(true).await,
            // RFC 2428: any protocol this connection cannot use, named or not.
            _ => self.reply(code::BAD_PROTOCOL, &unsupported_protocol(if v6 { "2" } else { "1" })).await,
        }
    }

    /// Checks an active-mode target: vsftpd's bounce defence unless `port_promiscuous`.
    fn active_allowed(&self, to: SocketAddr) -> bool {
        let cfg = self.cfg();
        cfg.port_promiscuous || (crate::net::canonical(to.ip()) == self.peer_ip() && to.port() >= 1024)
    }

    pub(crate) async fn cmd_port(&mut self, to: Option<SocketAddrV4>) -> io::Result<()> {
        self.chan.data = DataSetup::None;
        if !self.cfg().port_enable || self.chan.epsv_all {
            return self.send(reply::PERMISSION_DENIED).await;
        }
        let Some(to) = to.map(SocketAddr::V4) else {
            return self.send(reply::ILLEGAL_PORT_COMMAND).await;
        };
        if !self.active_allowed(to) {
            info!(session = self.id, peer = %self.names.peer, target = %to, "PORT refused (bounce defence)");
            return self.send(reply::ILLEGAL_PORT_COMMAND).await;
        }
        // A v4 target on a dual-stack control connection is reached through IPv4.
        self.chan.data = DataSetup::Active(to);
        self.send(reply::PORT_OK).await
    }

    pub(crate) async fn cmd_eprt(&mut self, arg: Eprt) -> io::Result<()> {
        self.chan.data = DataSetup::None;
        if !self.cfg().port_enable || self.chan.epsv_all {
            return self.send(reply::PERMISSION_DENIED).await;
        }
        let v6 = !crate::net::canonical(self.names.local.ip()).is_ipv4();
        let to = match arg {
            // As vsftpd: an IPv6 connection may name either protocol.
            Eprt::Addr(to) if v6 || to.is_ipv4() => to,
            // An IPv6 connection can reach either protocol, an IPv4 one only IPv4.
            Eprt::Addr(_) | Eprt::Unsupported => {
                return self.reply(code::BAD_PROTOCOL, &unsupported_protocol(if v6 { "1,2" } else { "1" })).await;
            }
            Eprt::BadProtocol => return self.send(reply::BAD_EPRT_PROTOCOL).await,
            Eprt::Bad => return self.send(reply::BAD_EPRT_COMMAND).await,
        };
        if !self.active_allowed(to) {
            info!(session = self.id, peer = %self.names.peer, target = %to, "EPRT refused (bounce defence)");
            return self.send(reply::ILLEGAL_EPRT_COMMAND).await;
        }
        self.chan.data = DataSetup::Active(to);
        self.send(reply::EPRT_OK).await
    }

    pub(crate) async fn cmd_rest(&mut self, n: u64) -> io::Result<()> {
        self.nav.rest = n;
        self.reply(code::PENDING, &format!("Restart position accepted ({n}).")).await
    }

    pub(crate) async fn cmd_size(&mut self, arg: &[u8]) -> io::Result<()> {
        let Some(p) = self.path(arg) else {
            return self.send(reply::SIZE_FAILED).await;
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
            return self.send(reply::SIZE_FAILED).await;
        };
        let cfg = self.cfg();
        let size = if !self.chan.binary && cfg.ascii_download_enable {
            use crate::session::transfer::{ASCII_SIZE_MAX, ascii_size};
            // Reading a file is never done on the async threads: a big one
            // would stall every session of this process meanwhile.
            let counted = if u64::try_from(st.st_size).unwrap_or(u64::MAX) > ASCII_SIZE_MAX {
                None
            } else {
                tokio::task::spawn_blocking(move || ascii_size(&fd)).await.ok().and_then(Result::ok).flatten()
            };
            match counted {
                Some(n) => n,
                None => return self.send(reply::SIZE_FAILED).await,
            }
        } else {
            u64::try_from(st.st_size).unwrap_or(0)
        };
        self.reply(code::FILE_STATUS, &size.to_string()).await
    }

    pub(crate) async fn cmd_mdtm(&mut self, m: Mdtm<'_>) -> io::Result<()> {
        // vsftpd's `mdtm_write`: `MDTM TIME FILE` sets the time when the whole
        // argument is not itself a file and starts with a time of 8 or 14
        // digits (or 14 and a fraction). Without the right to change files
        // that form is answered as a failed read, as vsftpd does.
        let cfg = self.cfg();
        let mut arg = m.whole;
        let mut set = None;
        if cfg.mdtm_write
            && self.path(arg).and_then(|p| self.user().root.stat(&p).ok()).is_none()
            && let Some((time, name)) = m.set
        {
            arg = name;
            set = Some(time);
        }
        if set.is_some() && !self.may(Op::Other) {
            return self.send(reply::MDTM_FAILED).await;
        }
        if let Some(time) = set {
            let secs = if cfg.use_localtime { time - fs::local_offset(time) } else { time };
            let done = self.path(arg).is_some_and(|p| self.user().root.set_mtime(&p, secs).is_ok());
            return if done { self.send(reply::MDTM_SET_OK).await } else { self.send(reply::MDTM_SET_FAILED).await };
        }
        let st = self.path(arg).and_then(|p| self.user().root.open_file(&p).ok()).map(|(_, st)| st);
        match st {
            Some(st) => {
                let shift = if self.cfg().use_localtime { fs::local_offset(st.st_mtime) } else { 0 };
                self.reply(code::FILE_STATUS, &fs::mdtm(st.st_mtime + shift)).await
            }
            None => self.send(reply::MDTM_FAILED).await,
        }
    }

    /// MFMT (draft-somers-ftp-mfxx), which rclone, FileZilla and WinSCP use
    /// to keep modification times: the same rights as vsftpd's `MDTM TIME
    /// FILE` (`mdtm_write`, and the right to change existing files), but the
    /// time is always UTC and the reply names the time that was set.
    pub(crate) async fn cmd_mfmt(&mut self, m: Option<(i64, &[u8])>) -> io::Result<()> {
        let Some((time, name)) = m else {
            return self.send(reply::MFMT_USAGE).await;
        };
        if !self.cfg().mdtm_write || !self.may(Op::Other) {
            return self.send(reply::PERMISSION_DENIED).await;
        }
        let done = self.path(name).is_some_and(|p| self.user().root.set_mtime(&p, time).is_ok());
        if !done {
            return self.send(reply::MDTM_SET_FAILED).await;
        }
        let text = format!("Modify={}; {}", fs::mdtm(time), String::from_utf8_lossy(name));
        self.reply(code::FILE_STATUS, &text).await
    }

    pub(crate) async fn cmd_mlst(&mut self, arg: &[u8]) -> io::Result<()> {
        let st = self.path(arg).and_then(|p| self.user().root.stat(&p).ok().map(|st| (p, st)));
        let Some((p, st)) = st else {
            return self.send(reply::MLST_FAILED).await;
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
        self.reply_multi(
            code::FILE_ACTION_OK,
            &format!("Listing {}", String::from_utf8_lossy(p.as_bytes())),
            &[text],
            "End",
        )
        .await
    }

    /// STAT without an argument: the session's status (STAT PATH is a
    /// listing, `cmd_stat_path`).
    pub(crate) async fn cmd_stat(&mut self) -> io::Result<()> {
        // vsftpd's lines, indented as it does; ftpd's version line also
        // names the data plane.
        let cfg = self.cfg();
        let who = if self.user().anonymous { cfg.ftp_username.clone() } else { self.user().name.clone() };
        let rate = self.rate();
        let lines = [
            format!("Connected to {}", self.peer_ip()),
            format!("Logged in as {who}"),
            format!("TYPE: {}", if self.chan.binary { "BINARY" } else { "ASCII" }),
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
        self.reply_listing(code::SYSTEM_STATUS, "FTP server status:", &lines, "End of status").await
    }

    pub(crate) async fn cmd_mkd(&mut self, arg: &[u8]) -> io::Result<()> {
        let Some(p) = self.path(arg).filter(|_| self.may(Op::Mkdir)) else {
            return self.send(reply::PERMISSION_DENIED).await;
        };
        let r = self.user().root.mkdir(&p, 0o777 & !self.nav.umask);
        self.log_change(r.is_ok(), "MKDIR", &p);
        match r {
            Ok(()) => {
                let shown = String::from_utf8_lossy(p.as_bytes()).replace('"', "\"\"");
                self.reply(code::PATH_CREATED, &format!("\"{shown}\" created")).await
            }
            Err(_) => self.send(reply::MKD_FAILED).await,
        }
    }

    pub(crate) async fn cmd_rmd(&mut self, arg: &[u8]) -> io::Result<()> {
        let Some(p) = self.path(arg).filter(|_| self.may(Op::Other)) else {
            return self.send(reply::PERMISSION_DENIED).await;
        };
        let r = self.user().root.rmdir(&p);
        self.log_change(r.is_ok(), "RMDIR", &p);
        match r {
            Ok(()) => self.send(reply::RMD_OK).await,
            Err(_) => self.send(reply::RMD_FAILED).await,
        }
    }

    pub(crate) async fn cmd_dele(&mut self, arg: &[u8]) -> io::Result<()> {
        let Some(p) = self.path(arg).filter(|_| self.may(Op::Other)) else {
            return self.send(reply::PERMISSION_DENIED).await;
        };
        let r = self.user().root.unlink(&p);
        self.log_change(r.is_ok(), "DELETE", &p);
        match r {
            Ok(()) => {
                info!(session = self.id, peer = %self.names.peer, user = %self.user().name, path = %String::from_utf8_lossy(p.as_bytes()), "deleted");
                self.send(reply::DELE_OK).await
            }
            Err(_) => self.send(reply::DELE_FAILED).await,
        }
    }

    pub(crate) async fn cmd_rnfr(&mut self, arg: &[u8]) -> io::Result<()> {
        let Some(p) = self.path(arg).filter(|_| self.may(Op::Other)) else {
            return self.send(reply::PERMISSION_DENIED).await;
        };
        if self.user().root.lstat(&p).is_err() {
            return self.send(reply::RNFR_FAILED).await;
        }
        self.nav.rnfr = Some(p);
        self.send(reply::RNFR_OK).await
    }

    pub(crate) async fn cmd_rnto(&mut self, arg: &[u8], from: Option<VPath>) -> io::Result<()> {
        // Permission before sequence, as vsftpd: a client without write rights
        // learns nothing about RNFR state.
        if !self.may(Op::Other) {
            return self.send(reply::PERMISSION_DENIED).await;
        }
        let Some(from) = from else {
            return self.send(reply::RNFR_REQUIRED_FIRST).await;
        };
        let Some(to) = self.path(arg) else {
            return self.send(reply::PERMISSION_DENIED).await;
        };
        let r = self.user().root.rename(&from, &to);
        self.log_change(r.is_ok(), "RENAME", &from);
        match r {
            Ok(()) => self.send(reply::RENAME_OK).await,
            Err(_) => self.send(reply::RENAME_FAILED).await,
        }
    }

    pub(crate) async fn cmd_site(&mut self, sub: Site<'_>) -> io::Result<()> {
        // vsftpd has no SITE commands for anonymous users at all.
        if self.user().anonymous {
            return self.send(reply::PERMISSION_DENIED).await;
        }
        match sub {
            Site::Chmod { mode, path } => {
                if !self.may(Op::Chmod) {
                    return self.send(reply::PERMISSION_DENIED).await;
                }
                let (Some(mode), Some(p)) = (mode, self.path(path).filter(|_| !path.is_empty())) else {
                    return self.send(reply::SITE_CHMOD_USAGE).await;
                };
                // vsftpd's chmod allows 0 to 0777 only: no setuid, setgid or
                // sticky bit from a client.
                match self.user().root.chmod(&p, mode & 0o777) {
                    Ok(()) => self.send(reply::SITE_CHMOD_OK).await,
                    Err(_) => self.send(reply::SITE_CHMOD_FAILED).await,
                }
            }
            Site::Umask(Umask::Show) => {
                self.reply(code::OK, &format!("Your current UMASK is 0{:o}", self.nav.umask)).await
            }
            Site::Umask(Umask::Set(m)) => {
                self.nav.umask = m;
                self.reply(code::OK, &format!("UMASK set to 0{m:o}")).await
            }
            Site::Umask(Umask::Bad) => self.send(reply::BAD_UMASK_VALUE).await,
            Site::Help => self.send(reply::SITE_HELP).await,
            Site::Unknown => self.send(reply::UNKNOWN_SITE_COMMAND).await,
        }
    }
}

/// RFC 2428's 522 text, naming the protocols this connection's data can use.
fn unsupported_protocol(usable: &str) -> String {
    format!("Network protocol not supported, use ({usable})")
}
