//! One control connection: its state, the read loop, and command dispatch.
//!
//! The session owns its state (`&mut self`, no locks). Handlers live in
//! `commands/` by topic; `dispatch` is the one place that lists every command.
//! While a transfer runs, `race` keeps reading the control connection, so ABOR
//! and STAT are answered mid-transfer (see docs/ARCHITECTURE.md).

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    os::fd::OwnedFd,
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    time::timeout,
};
use tracing::{debug, info, warn};

use crate::{
    config::Config,
    control::{self, LineError, LineReader},
    data::{self, DataError},
    fs::VPath,
    server::Shared,
    tls::{CtlRead, CtlWrite, SessionTls},
    worker::Fs,
};

/// Longest a TLS handshake may take, control or data.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Who is logged in.
pub struct User {
    /// Login name as shown in logs (`anonymous` for anonymous users).
    pub name: String,
    /// Anonymous users get the `anon_*` rules.
    pub anonymous: bool,
    /// The user's files: the root held open here, or the worker acting as the user.
    pub root: Arc<Fs>,
    /// Effective settings (the global config, plus `user_config_dir` overrides).
    pub cfg: Arc<Config>,
}

/// Where the session is in the login sequence.
pub(crate) enum Phase {
    /// No USER yet (or a failed login).
    Greeted,
    /// USER was accepted; PASS expected.
    NeedPass(String),
    /// Logged in.
    Ready(Box<User>),
}

/// How the next data connection will be made.
pub(crate) enum DataSetup {
    None,
    /// PASV/EPSV: a listener waiting for the client.
    Passive(TcpListener),
    /// PORT/EPRT: the client's address to connect to.
    Active(SocketAddr),
}

/// What the read loop does after a command.
pub(crate) enum Next {
    Continue,
    Quit,
}

/// How a raced future ended.
pub(crate) enum Raced<T> {
    Done(T),
    /// ABOR arrived, or the control connection closed.
    Aborted,
}

/// A control connection's state.
pub struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) r: CtlRead,
    pub(crate) w: CtlWrite,
    pub(crate) reader: LineReader,
    pub(crate) phase: Phase,
    pub(crate) cwd: VPath,
    pub(crate) binary: bool,
    pub(crate) rest: u64,
    pub(crate) epsv_all: bool,
    pub(crate) data: DataSetup,
    pub(crate) rnfr: Option<VPath>,
    pub(crate) umask: u32,
    /// The splice pipe, created on the first upload and reused.
    pub(crate) pipe: Option<(OwnedFd, OwnedFd)>,
    /// A command that arrived during a transfer, run once it ends.
    pending: Option<Vec<u8>>,
    /// The client hung up during a transfer.
    control_closed: bool,
    /// Directories whose message file was already shown.
    pub(crate) seen_messages: Vec<VPath>,
    /// Bytes moved by the running transfer (for STAT during a transfer).
    pub(crate) progress: Arc<data::Progress>,
    /// The name logs show: the USER argument, then the login name.
    pub(crate) log_user: String,
    /// xferlog's user field: the login name, or an anonymous user's password.
    pub(crate) xfer_user: String,
    /// The peer's IP as text, for logs.
    pub(crate) client: String,
    /// Failed logins so far (`max_login_fails`).
    pub(crate) login_fails: u32,
    /// Set while this session holds a passive port (the pool-use gauge).
    pub(crate) pasv_slot: Option<prometheus_client::metrics::gauge::Gauge>,
    /// Control connections open when this one was accepted (itself included),
    /// for STAT as vsftpd reports it.
    pub(crate) clients_at_start: u32,
    /// The active-sessions gauge this session counts in, once logged in.
    pub(crate) active: Option<prometheus_client::metrics::gauge::Gauge>,
    /// The passive port whose kernel pinhole this session opened.
    pub(crate) pinhole: Option<u16>,
    /// A 421 was sent: the session ends after the current command, as the
    /// reply tells the client (RFC 959: the service is closing the
    /// control connection).
    pub(crate) closing: bool,
    /// The control connection's TLS (after AUTH, or implicit): the
    /// configuration whose session store its data connections resume from.
    pub(crate) tls: Option<SessionTls>,
    /// `PROT P`: data connections are encrypted.
    pub(crate) prot_private: bool,
    /// Whether the running transfer's data connection is encrypted (metrics).
    pub(crate) data_tls: bool,
}

impl Session {
    /// A session for a freshly accepted control connection.
    pub fn new(shared: Arc<Shared>, id: u64, stream: TcpStream, peer: SocketAddr, local: SocketAddr) -> Self {
        let (r, w) = stream.into_split();
        let (r, w) = (CtlRead::Plain(r), CtlWrite::Plain(w));
        let clients_at_start = shared.clients();
        Self {
            shared,
            id,
            peer,
            local,
            r,
            w,
            reader: LineReader::default(),
            phase: Phase::Greeted,
            cwd: VPath::root(),
            binary: false,
            rest: 0,
            epsv_all: false,
            data: DataSetup::None,
            rnfr: None,
            umask: 0o077,
            pipe: None,
            pending: None,
            control_closed: false,
            seen_messages: Vec::new(),
            progress: Arc::new(data::Progress::default()),
            log_user: "?".into(),
            xfer_user: String::new(),
            client: data::canonical(peer.ip()).to_string(),
            login_fails: 0,
            clients_at_start,
            active: None,
            pasv_slot: None,
            pinhole: None,
            closing: false,
            tls: None,
            prot_private: false,
            data_tls: false,
        }
    }

    /// Serves the connection until QUIT, timeout, or the client leaves.
    pub async fn run(mut self) {
        self.serve().await;
        if let Some(g) = self.active.take() {
            g.dec();
        }
        if let Some(g) = self.pasv_slot.take() {
            g.dec();
        }
        self.close_pinhole();
        if let Phase::Ready(_) = self.phase {
            self.shared.rates.logout(&self.owner());
        }
        // A 421 (or any end) closes the connection cleanly: FIN after the
        // last reply, so the client reads it before it sees the close.
        let _ = self.w.shutdown().await;
    }

    async fn serve(&mut self) {
        if self.shared.tls.is_some() && self.shared.cfg().implicit_ssl {
            // Implicit FTPS: TLS before the greeting, data encrypted by default.
            if !self.start_tls().await {
                return;
            }
            self.prot_private = true;
        }
        if self.greet().await.is_err() {
            return;
        }
        loop {
            let line = match self.pending.take() {
                Some(l) => l,
                None if self.control_closed => return,
                None => match self.next_line().await {
                    Some(l) => l,
                    None => return,
                },
            };
            // Boxed: the command futures (transfers with their raced futures)
            // are far larger than the idle read loop, and an idle session
            // should not carry their space (docs: issue 5's 4 KiB target).
            match Box::pin(self.dispatch(&line)).await {
                Ok(Next::Continue) if self.closing => return,
                Ok(Next::Continue) if self.control_closed && self.pending.is_none() => return,
                Ok(Next::Continue) => {}
                Ok(Next::Quit) => return,
                Err(e) => {
                    debug!(session = self.id, peer = %self.peer, error = %e, "control write failed");
                    return;
                }
            }
        }
    }

    async fn greet(&mut self) -> io::Result<()> {
        let cfg = self.shared.cfg();
        if let Some(text) = &self.shared.banner {
            // vsftpd's form: every line of the file as `220-`, then a bare `220 `.
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.push(String::new());
            return self.reply_lines(220, &lines).await;
        }
        let banner = if cfg.ftpd_banner.is_empty() {
            format!("(ftpd {})", env!("CARGO_PKG_VERSION"))
        } else {
            cfg.ftpd_banner.clone()
        };
        self.reply(220, &banner).await
    }

    /// Reads the next command line, handling the idle timeout and framing errors.
    async fn next_line(&mut self) -> Option<Vec<u8>> {
        let idle = Duration::from_secs(u64::from(self.shared.cfg().idle_session_timeout));
        let read = self.reader.read_line(&mut self.r);
        let line = if idle.is_zero() {
            read.await
        } else {
            match timeout(idle, read).await {
                Ok(r) => r,
                Err(_) => {
                    let _ = self.reply(421, "Timeout.").await;
                    info!(session = self.id, peer = %self.peer, "idle timeout");
                    return None;
                }
            }
        };
        match line {
            Ok(l) => Some(l.to_vec()),
            Err(LineError::Closed) => None,
            Err(LineError::TooLong) => {
                let _ = self.reply(500, "Input line too long.").await;
                warn!(session = self.id, peer = %self.peer, "command line too long; closing");
                None
            }
            Err(LineError::Io(e)) => {
                debug!(session = self.id, peer = %self.peer, error = %e, "control read failed");
                None
            }
        }
    }

    fn log_reply(&self, code: u16, text: &str) {
        if self.shared.logs.protocol() {
            self.shared.logs.protocol_line(&self.log_user, &self.client, true, format!("{code} {text}").as_bytes());
        }
    }

    /// Writes `CODE TEXT`. After a 421 the session closes once the
    /// command is done.
    pub(crate) async fn reply(&mut self, code: u16, text: &str) -> io::Result<()> {
        self.closing |= code == 421;
        self.log_reply(code, text);
        self.shared.metrics.reply(code);
        control::reply(&mut self.w, code, text).await
    }

    /// Writes a multi-line reply whose last line repeats the code.
    pub(crate) async fn reply_multi(&mut self, code: u16, first: &str, lines: &[String], last: &str) -> io::Result<()> {
        self.log_reply(code, first);
        self.shared.metrics.reply(code);
        control::reply_multi(&mut self.w, code, first, lines, last).await
    }

    /// Writes a listing as a multi-line reply, its lines unindented (`STAT PATH`).
    pub(crate) async fn reply_listing(
        &mut self,
        code: u16,
        first: &str,
        lines: &[String],
        last: &str,
    ) -> io::Result<()> {
        self.log_reply(code, first);
        self.shared.metrics.reply(code);
        control::reply_listing(&mut self.w, code, first, lines, last).await
    }

    /// Writes lines as one reply, `CODE-` on all but the last (vsftpd's banner style).
    pub(crate) async fn reply_lines(&mut self, code: u16, lines: &[String]) -> io::Result<()> {
        match lines {
            [] => self.reply(code, "").await,
            [one] => self.reply(code, one).await,
            [first, middle @ .., last] => {
                self.log_reply(code, first);
                self.shared.metrics.reply(code);
                let mut out = Vec::new();
                out.extend_from_slice(format!("{code}-{}\r\n", clean(first)).as_bytes());
                for l in middle {
                    out.extend_from_slice(format!("{code}-{}\r\n", clean(l)).as_bytes());
                }
                out.extend_from_slice(format!("{code} {}\r\n", clean(last)).as_bytes());
                self.w.write_all(&out).await?;
                self.w.flush().await
            }
        }
    }

    async fn dispatch(&mut self, line: &[u8]) -> io::Result<Next> {
        let line = control::strip_telnet(line);
        let (verb, arg) = control::split_command(line);
        let shown: &[u8] = if verb == "PASS" { b"PASS <password>" } else { line };
        debug!(session = self.id, peer = %self.peer, "{}", String::from_utf8_lossy(shown));
        self.shared.logs.protocol_line(&self.log_user, &self.client, false, shown);
        self.shared.metrics.command(&verb);
        if line.contains(&0) {
            self.reply(501, "NUL byte in command.").await?;
            return Ok(Next::Continue);
        }
        // Commands allowed before login (vsftpd's prelogin.c, plus HOST).
        match verb.as_str() {
            "QUIT" => {
                self.reply(221, "Goodbye.").await?;
                return Ok(Next::Quit);
            }
            "USER" => return self.cmd_user(arg).await.map(|()| Next::Continue),
            "PASS" => {
                self.cmd_pass(arg).await?;
                let max = self.shared.cfg().max_login_fails;
                if max != 0 && self.login_fails >= max {
                    info!(session = self.id, peer = %self.peer, fails = self.login_fails, "too many failed logins; closing");
                    return Ok(Next::Quit);
                }
                return Ok(Next::Continue);
            }
            "FEAT" => return self.cmd_feat().await.map(|()| Next::Continue),
            "OPTS" => return self.cmd_opts(arg).await.map(|()| Next::Continue),
            "HOST" => return self.cmd_host(arg).await.map(|()| Next::Continue),
            "AUTH" if self.shared.tls.is_some() && self.tls.is_none() => {
                return self.cmd_auth(arg).await;
            }
            "PBSZ" if self.shared.tls.is_some() => return self.cmd_pbsz(arg).await.map(|()| Next::Continue),
            "PROT" if self.shared.tls.is_some() => return self.cmd_prot(arg).await.map(|()| Next::Continue),
            "CCC" if self.shared.tls.is_some() => return self.cmd_ccc().await,
            _ => {}
        }
        let Phase::Ready(_) = self.phase else {
            self.reply(530, "Please login with USER and PASS.").await?;
            return Ok(Next::Continue);
        };
        // A dead worker (killed, or by its seccomp filter) would make every
        // file command fail in its own misleading way (an empty listing, a
        // "failed to change directory"): end the session clearly instead; a
        // new login gets a new worker.
        if let crate::worker::Fs::Remote(link, _) = &*self.user().root
            && !link.alive()
        {
            warn!(session = self.id, peer = %self.peer, "the session's file worker is gone; closing the session");
            self.reply(421, "Service not available: this session lost its file access; log in again.").await?;
            return Ok(Next::Quit);
        }
        if !command_allowed(&self.user().cfg, &verb) {
            self.reply(550, "Permission denied.").await?;
            return Ok(Next::Continue);
        }
        // vsftpd refuses a deny_file path with one reply, whatever the command.
        let path_arg = match verb.as_str() {
            "RETR" | "SIZE" | "MDTM" | "CWD" | "XCWD" | "MKD" | "XMKD" | "RMD" | "XRMD" | "DELE" | "RNFR" | "STOR"
            | "APPE" | "MLST" | "MLSD" => Some(arg),
            "LIST" | "NLST" | "STAT" if !arg.is_empty() => Some(crate::commands::transfer::split_list_args(arg).1),
            _ => None,
        };
        if path_arg.is_some_and(|a| self.cwd.join(a).is_ok_and(|p| self.shared.deny.matches_path(&p))) {
            self.reply(550, "Permission denied.").await?;
            return Ok(Next::Continue);
        }
        // RNFR's name stays until RNTO uses it, also across other commands
        // (vsftpd does not enforce RFC 959's "immediately").
        let rnfr = if verb == "RNTO" && self.may(crate::commands::files::Op::Other) { self.rnfr.take() } else { None };
        match verb.as_str() {
            "HELP" => self.cmd_help().await?,
            "ABOR" => self.reply(225, "No transfer to ABOR.").await?,
            "REIN" => self.reply(502, "REIN not implemented.").await?,
            "SMNT" => self.reply(502, "SMNT not implemented.").await?,
            // TLS commands without TLS: known to vsftpd, refused like a denied command.
            "PBSZ" | "PROT" => self.reply(550, "Permission denied.").await?,
            "SYST" => self.reply(215, "UNIX Type: L8").await?,
            "NOOP" => self.reply(200, "NOOP ok.").await?,
            "ACCT" => self.reply(502, "ACCT not implemented.").await?,
            "ALLO" => self.reply(202, "ALLO command ignored.").await?,
            "PWD" | "XPWD" => self.cmd_pwd().await?,
            "CWD" | "XCWD" => self.cmd_cwd(arg).await?,
            "CDUP" | "XCUP" => self.cmd_cwd(b"..").await?,
            "TYPE" => self.cmd_type(arg).await?,
            "MODE" => match arg {
                b"S" | b"s" => self.reply(200, "Mode set to S.").await?,
                _ => self.reply(504, "Bad MODE command.").await?,
            },
            "STRU" => match arg {
                b"F" | b"f" => self.reply(200, "Structure set to F.").await?,
                _ => self.reply(504, "Bad STRU command.").await?,
            },
            "PASV" => self.cmd_pasv(false).await?,
            "EPSV" => self.cmd_epsv(arg).await?,
            "PORT" => self.cmd_port(arg).await?,
            "EPRT" => self.cmd_eprt(arg).await?,
            "REST" => self.cmd_rest(arg).await?,
            "SIZE" => self.cmd_size(arg).await?,
            "MDTM" => self.cmd_mdtm(arg).await?,
            "MLST" => self.cmd_mlst(arg).await?,
            "STAT" => self.cmd_stat(arg).await?,
            "LIST" => self.cmd_list(arg, crate::commands::transfer::ListKind::Long).await?,
            "NLST" => self.cmd_list(arg, crate::commands::transfer::ListKind::Names).await?,
            "MLSD" => self.cmd_list(arg, crate::commands::transfer::ListKind::Machine).await?,
            "RETR" => self.cmd_retr(arg).await?,
            "STOR" => self.cmd_store(arg, crate::commands::transfer::StoreKind::Stor).await?,
            "APPE" => self.cmd_store(arg, crate::commands::transfer::StoreKind::Appe).await?,
            "STOU" => self.cmd_store(arg, crate::commands::transfer::StoreKind::Stou).await?,
            "MKD" | "XMKD" => self.cmd_mkd(arg).await?,
            "RMD" | "XRMD" => self.cmd_rmd(arg).await?,
            "DELE" => self.cmd_dele(arg).await?,
            "RNFR" => self.cmd_rnfr(arg).await?,
            "RNTO" => self.cmd_rnto(arg, rnfr).await?,
            "SITE" => self.cmd_site(arg).await?,
            _ => self.reply(500, "Unknown command.").await?,
        }
        Ok(Next::Continue)
    }

    /// The logged-in user. Only called from post-login handlers.
    pub(crate) fn user(&self) -> &User {
        match &self.phase {
            Phase::Ready(u) => u,
            // `dispatch` only runs post-login commands in `Ready`.
            _ => unreachable!("post-login command before login"),
        }
    }

    /// Whether anonymous users' rights apply: anonymous users, and virtual
    /// users unless `virtual_use_local_privs` (vsftpd's rule).
    pub(crate) fn anon_rules(&self) -> bool {
        let u = self.user();
        u.cfg.anon_rules(u.anonymous)
    }

    /// The logged-in user's effective settings.
    pub(crate) fn cfg(&self) -> Arc<Config> {
        Arc::clone(&self.user().cfg)
    }

    /// Runs `fut` while answering the control connection: ABOR ends it, STAT
    /// reports progress, anything else waits until it is done.
    pub(crate) async fn race<F: Future>(&mut self, fut: F) -> io::Result<Raced<F::Output>> {
        tokio::pin!(fut);
        loop {
            let reading = self.pending.is_none() && !self.control_closed;
            let line = tokio::select! {
                out = &mut fut => return Ok(Raced::Done(out)),
                line = self.reader.read_line(&mut self.r), if reading => line.map(<[u8]>::to_vec),
            };
            let line = match line {
                Ok(l) => l,
                Err(_) => {
                    // The client hung up: there is nobody to finish the transfer for.
                    self.control_closed = true;
                    return Ok(Raced::Aborted);
                }
            };
            let (verb, _) = control::split_command(control::strip_telnet(&line));
            match verb.as_str() {
                "ABOR" => return Ok(Raced::Aborted),
                "STAT" => {
                    let moved = self.progress.get();
                    let lines = vec![format!("Transfer in progress: {moved} bytes transferred")];
                    self.reply_multi(211, "FTP server status:", &lines, "End of status").await?;
                }
                _ => self.pending = Some(line),
            }
        }
    }

    /// Opens the data connection set up by PASV/EPSV/PORT/EPRT, answering the
    /// control connection meanwhile. Replies and returns `None` on failure.
    pub(crate) async fn open_data(&mut self) -> io::Result<Option<TcpStream>> {
        let setup = std::mem::replace(&mut self.data, DataSetup::None);
        let cfg = self.cfg();
        if matches!(setup, DataSetup::None) {
            self.reply(425, "Use PORT or PASV first.").await?;
            return Ok(None);
        }
        let forced = if self.user().anonymous { cfg.force_anon_data_ssl } else { cfg.force_local_data_ssl };
        if self.shared.tls.is_some() && forced && !self.prot_private {
            self.data = setup;
            self.reply(522, "Data connections must be encrypted.").await?;
            return Ok(None);
        }
        let result = match setup {
            DataSetup::None => return Ok(None),
            DataSetup::Passive(listener) => {
                let wait = Duration::from_secs(u64::from(cfg.accept_timeout));
                let client = data::canonical(self.peer.ip());
                let fut = async move { data::accept(&listener, client, cfg.pasv_promiscuous, wait).await };
                self.race(fut).await?
            }
            DataSetup::Active(to) => {
                let wait = Duration::from_secs(u64::from(cfg.connect_timeout));
                let bound = if cfg.connect_from_port_20 {
                    // A v4 target from a dual-stack control connection leaves from IPv4.
                    let local = match (to.ip(), self.local.ip()) {
                        (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(self.local.ip(), IpAddr::V4),
                        (_, ip) => ip,
                    };
                    let port = u16::try_from(cfg.ftp_data_port).unwrap_or(20);
                    let shared = Arc::clone(&self.shared);
                    match tokio::task::spawn_blocking(move || shared.authority.bind_data_port(local, port)).await {
                        Ok(Ok(fd)) => Some(fd),
                        Ok(Err(e)) => {
                            warn!(session = self.id, error = %e, "cannot bind ftp_data_port for connect_from_port_20");
                            self.reply(425, "Failed to establish connection.").await?;
                            return Ok(None);
                        }
                        Err(e) => return Err(io::Error::other(e)),
                    }
                } else {
                    None
                };
                self.race(data::connect_active(bound, to, wait)).await?
            }
        };
        // Used (sock_ops already closed it), timed out or aborted: it is done.
        self.close_pinhole();
        if let Some(g) = self.pasv_slot.take() {
            // Counted in both planes, so the metrics mean the same with and without eBPF.
            g.dec();
            let event = if matches!(result, Raced::Done(Ok(_))) { "used" } else { "expired" };
            crate::metrics::Metrics::inc(&self.shared.metrics.pinholes, "event", event);
        }
        match result {
            Raced::Done(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(Some(s))
            }
            Raced::Done(Err(DataError::BadIp(ip))) => {
                warn!(session = self.id, peer = %self.peer, intruder = %ip, "passive connection from a foreign IP refused");
                self.reply(425, "Security: Bad IP connecting.").await?;
                Ok(None)
            }
            Raced::Done(Err(e)) => {
                debug!(session = self.id, error = ?e, "no data connection");
                self.reply(425, "Failed to establish connection.").await?;
                Ok(None)
            }
            Raced::Aborted => {
                self.reply(225, "ABOR successful.").await?;
                Ok(None)
            }
        }
    }

    /// Closes this session's pinhole, if one is open.
    pub(crate) fn close_pinhole(&mut self) {
        if let (Some(port), Some(dp)) = (self.pinhole.take(), self.shared.kernel()) {
            dp.close_pinhole(port);
        }
    }

    /// Whose rate limit this session's transfers count against.
    pub(crate) fn owner(&self) -> crate::rates::Owner {
        let u = self.user();
        (u.name.clone(), u.anonymous)
    }

    /// This session's bandwidth limit in bytes per second (0: none): its
    /// effective config's, unless a reload since its login changed it.
    pub(crate) fn rate(&self) -> u64 {
        let u = self.user();
        self.shared.rates.limit(&self.owner(), u.cfg.max_rate(u.anonymous))
    }

    /// How long a transfer may make no progress.
    pub(crate) fn stall(&self) -> Duration {
        match self.shared.cfg().data_connection_timeout {
            0 => Duration::from_secs(u64::from(u32::MAX)),
            s => Duration::from_secs(u64::from(s)),
        }
    }

    /// The peer's IP as the limits see it (v4-mapped addresses as IPv4).
    pub(crate) fn peer_ip(&self) -> IpAddr {
        data::canonical(self.peer.ip())
    }
}

/// `cmds_allowed` / `cmds_denied`, checked after login as vsftpd does.
fn command_allowed(cfg: &Config, verb: &str) -> bool {
    let listed = |list: &str| list.split(',').any(|c| c.trim().eq_ignore_ascii_case(verb));
    if !cfg.cmds_denied.is_empty() && listed(&cfg.cmds_denied) {
        return false;
    }
    cfg.cmds_allowed.is_empty() || listed(&cfg.cmds_allowed)
}

fn clean(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// [`refuse`] for implicit FTPS, whose clients expect TLS from the first
/// byte: the 421 goes over a (bounded) handshake, as vsftpd sends it, so the
/// client shows the reply instead of a TLS error.
pub async fn refuse_tls(stream: TcpStream, tls: &crate::tls::Tls, text: &str) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.for_session().config);
    if let Ok(Ok(mut s)) = timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        let _ = control::reply(&mut s, 421, text).await;
        let _ = s.shutdown().await;
    }
}

/// Refuses a connection before any session exists (the connection limits).
///
/// With `hold` (the kernel plane is on), our side stays open until the client
/// closes (at most 60 s): sock_ops counts a connection until it is closed, so
/// a client that keeps refused connections open reaches the XDP hard cap and
/// its next SYNs are dropped before accept(). Without the kernel plane the
/// socket is closed at once, so that a flood cannot pin file descriptors.
pub async fn refuse(stream: &mut TcpStream, text: &str, hold: bool) {
    let _ = control::reply(stream, 421, text).await;
    let _ = stream.shutdown().await;
    if hold {
        let mut buf = [0u8; 256];
        let drain = async {
            loop {
                match tokio::io::AsyncReadExt::read(stream, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = timeout(Duration::from_secs(60), drain).await;
    }
}
