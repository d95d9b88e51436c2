//! One control connection: login, navigation, listings and downloads.
//!
//! The session owns its state (`&mut self`, no shared locks). Each handler
//! returns after writing its reply; the dispatch `match` in `handle` is the one
//! place that lists every command.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::OwnedFd,
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};
use tracing::{debug, info, warn};

use crate::{
    control::{self, LineError, LineReader},
    data::{self, DataError},
    fs::{self, FsError, Root, VPath},
    server::Shared,
};

/// Most bytes of a listing buffered before they are written to the client.
const LIST_CHUNK: usize = 64 * 1024;

/// Where the session is in the login sequence.
enum Phase {
    /// No USER yet.
    Greeted,
    /// USER was anonymous; PASS expected.
    NeedAnonPass,
    /// Logged in, with the user's root open.
    Ready(Root),
}

/// What the dispatcher tells the read loop.
enum Next {
    Continue,
    Quit,
}

/// A control connection's state.
pub struct Session {
    shared: Arc<Shared>,
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    phase: Phase,
    cwd: VPath,
    binary: bool,
    rest: u64,
    epsv_all: bool,
    passive: Option<TcpListener>,
}

impl Session {
    /// A session for a freshly accepted control connection.
    pub fn new(shared: Arc<Shared>, id: u64, peer: SocketAddr, local: SocketAddr) -> Self {
        Self {
            shared,
            id,
            peer,
            local,
            phase: Phase::Greeted,
            cwd: VPath::root(),
            binary: false,
            rest: 0,
            epsv_all: false,
            passive: None,
        }
    }

    /// Serves the connection until QUIT, timeout, or the client leaves.
    pub async fn run(mut self, mut stream: TcpStream) {
        let banner = if self.shared.cfg.ftpd_banner.is_empty() {
            format!("(ftpd {})", env!("CARGO_PKG_VERSION"))
        } else {
            self.shared.cfg.ftpd_banner.clone()
        };
        if control::reply(&mut stream, 220, &banner).await.is_err() {
            return;
        }
        let idle = Duration::from_secs(u64::from(self.shared.cfg.idle_session_timeout));
        let mut reader = LineReader::default();
        loop {
            let line = if idle.is_zero() {
                reader.read_line(&mut stream).await
            } else {
                match timeout(idle, reader.read_line(&mut stream)).await {
                    Ok(r) => r,
                    Err(_) => {
                        let _ = control::reply(&mut stream, 421, "Timeout.").await;
                        info!(session = self.id, peer = %self.peer, "idle timeout");
                        return;
                    }
                }
            };
            let line = match line {
                Ok(l) => l.to_vec(),
                Err(LineError::Closed) => return,
                Err(LineError::TooLong) => {
                    let _ = control::reply(&mut stream, 500, "Input line too long.").await;
                    warn!(session = self.id, peer = %self.peer, "command line too long; closing");
                    return;
                }
                Err(LineError::Io(e)) => {
                    debug!(session = self.id, peer = %self.peer, error = %e, "control read failed");
                    return;
                }
            };
            match self.handle(&mut stream, &line).await {
                Ok(Next::Continue) => {}
                Ok(Next::Quit) => return,
                Err(e) => {
                    debug!(session = self.id, peer = %self.peer, error = %e, "control write failed");
                    return;
                }
            }
        }
    }

    async fn handle(&mut self, w: &mut TcpStream, line: &[u8]) -> io::Result<Next> {
        let (verb, arg) = control::split_command(line);
        if verb == "PASS" {
            debug!(session = self.id, peer = %self.peer, "PASS <hidden>");
        } else {
            debug!(session = self.id, peer = %self.peer, "{}", String::from_utf8_lossy(line));
        }
        if line.contains(&0) {
            control::reply(w, 501, "NUL byte in command.").await?;
            return Ok(Next::Continue);
        }
        // Commands allowed before login (vsftpd's prelogin.c).
        match verb.as_str() {
            "QUIT" => {
                control::reply(w, 221, "Goodbye.").await?;
                return Ok(Next::Quit);
            }
            "USER" => return self.user(w, arg).await.map(|()| Next::Continue),
            "PASS" => return self.pass(w).await.map(|()| Next::Continue),
            "FEAT" => {
                let feats = ["EPSV", "MDTM", "PASV", "REST STREAM", "SIZE", "TVFS", "UTF8"].map(String::from);
                control::reply_multi(w, 211, "Features:", &feats, "End").await?;
                return Ok(Next::Continue);
            }
            "OPTS" => {
                if arg.eq_ignore_ascii_case(b"UTF8 ON") {
                    control::reply(w, 200, "Always in UTF8 mode.").await?;
                } else {
                    control::reply(w, 501, "Option not understood.").await?;
                }
                return Ok(Next::Continue);
            }
            _ => {}
        }
        let Phase::Ready(_) = self.phase else {
            control::reply(w, 530, "Please login with USER and PASS.").await?;
            return Ok(Next::Continue);
        };
        match verb.as_str() {
            "SYST" => control::reply(w, 215, "UNIX Type: L8").await?,
            "NOOP" => control::reply(w, 200, "NOOP ok.").await?,
            "PWD" | "XPWD" => {
                let path = String::from_utf8_lossy(self.cwd.as_bytes()).replace('"', "\"\"");
                control::reply(w, 257, &format!("\"{path}\" is the current directory")).await?;
            }
            "CWD" | "XCWD" => self.cwd(w, arg).await?,
            "CDUP" | "XCUP" => self.cwd(w, b"..").await?,
            "TYPE" => self.type_(w, arg).await?,
            "MODE" => match arg {
                b"S" | b"s" => control::reply(w, 200, "Mode set to S.").await?,
                _ => control::reply(w, 504, "Bad MODE command.").await?,
            },
            "STRU" => match arg {
                b"F" | b"f" => control::reply(w, 200, "Structure set to F.").await?,
                _ => control::reply(w, 504, "Bad STRU command.").await?,
            },
            "PASV" => self.pasv(w, false).await?,
            "EPSV" => {
                if arg.eq_ignore_ascii_case(b"ALL") {
                    self.epsv_all = true;
                    control::reply(w, 200, "EPSV ALL ok.").await?;
                } else {
                    self.pasv(w, true).await?;
                }
            }
            "REST" => match std::str::from_utf8(arg).ok().and_then(|s| s.parse::<u64>().ok()) {
                Some(n) => {
                    self.rest = n;
                    control::reply(w, 350, &format!("Restart position accepted ({n}).")).await?;
                }
                None => control::reply(w, 501, "REST needs a byte offset.").await?,
            },
            "SIZE" => self.size(w, arg).await?,
            "MDTM" => self.mdtm(w, arg).await?,
            "LIST" => self.list(w, arg, false).await?,
            "NLST" => self.list(w, arg, true).await?,
            "RETR" => self.retr(w, arg).await?,
            "STAT" if arg.is_empty() => self.stat(w).await?,
            "ALLO" => control::reply(w, 202, "ALLO command ignored.").await?,
            "HELP" => {
                let lines = [
                    "CDUP CWD EPSV FEAT HELP LIST MDTM MODE NLST NOOP OPTS PASS PASV PWD QUIT",
                    "REST RETR SIZE STAT STRU SYST TYPE USER XCUP XCWD XPWD",
                ]
                .map(String::from);
                control::reply_multi(w, 214, "The following commands are recognized.", &lines, "Help OK.").await?;
            }
            // This build serves read-only: writes are refused as vsftpd does with write_enable=NO.
            "STOR" | "STOU" | "APPE" | "DELE" | "MKD" | "XMKD" | "RMD" | "XRMD" | "RNFR" | "RNTO" | "SITE" => {
                control::reply(w, 550, "Permission denied.").await?;
            }
            _ => control::reply(w, 500, "Unknown command.").await?,
        }
        Ok(Next::Continue)
    }

    async fn user(&mut self, w: &mut TcpStream, arg: &[u8]) -> io::Result<()> {
        if matches!(self.phase, Phase::Ready(_)) {
            return control::reply(w, 530, "Can't change to another user.").await;
        }
        let anon = arg.eq_ignore_ascii_case(b"anonymous") || arg.eq_ignore_ascii_case(b"ftp");
        if !anon {
            self.phase = Phase::Greeted;
            return control::reply(w, 530, "This FTP server is anonymous only.").await;
        }
        if !self.shared.cfg.anonymous_enable {
            return control::reply(w, 530, "Login incorrect.").await;
        }
        if self.shared.cfg.no_anon_password {
            return self.login(w).await;
        }
        self.phase = Phase::NeedAnonPass;
        control::reply(w, 331, "Please specify the password.").await
    }

    async fn pass(&mut self, w: &mut TcpStream) -> io::Result<()> {
        match self.phase {
            Phase::Greeted => control::reply(w, 503, "Login with USER first.").await,
            Phase::Ready(_) => control::reply(w, 230, "Already logged in.").await,
            Phase::NeedAnonPass => self.login(w).await,
        }
    }

    async fn login(&mut self, w: &mut TcpStream) -> io::Result<()> {
        match Root::open(&self.shared.anon_root) {
            Ok(root) => {
                self.phase = Phase::Ready(root);
                self.cwd = VPath::root();
                info!(session = self.id, peer = %self.peer, user = "anonymous", "login");
                control::reply(w, 230, "Login successful.").await
            }
            Err(e) => {
                warn!(session = self.id, root = %self.shared.anon_root.display(), error = %e, "cannot open the anonymous root");
                self.phase = Phase::Greeted;
                control::reply(w, 500, "OOPS: cannot change directory.").await
            }
        }
    }

    fn root(&self) -> &Root {
        match &self.phase {
            Phase::Ready(r) => r,
            // `handle` only dispatches post-login commands in `Ready`.
            _ => unreachable!("post-login command before login"),
        }
    }

    async fn cwd(&mut self, w: &mut TcpStream, arg: &[u8]) -> io::Result<()> {
        let ok = self.cwd.join(arg).ok().filter(|p| self.root().open_dir(p).is_ok());
        match ok {
            Some(p) => {
                self.cwd = p;
                control::reply(w, 250, "Directory successfully changed.").await
            }
            None => control::reply(w, 550, "Failed to change directory.").await,
        }
    }

    async fn type_(&mut self, w: &mut TcpStream, arg: &[u8]) -> io::Result<()> {
        let arg = arg.to_ascii_uppercase();
        match arg.as_slice() {
            b"I" | b"L 8" | b"L8" => {
                self.binary = true;
                control::reply(w, 200, "Switching to Binary mode.").await
            }
            b"A" | b"A N" => {
                self.binary = false;
                control::reply(w, 200, "Switching to ASCII mode.").await
            }
            _ => control::reply(w, 500, "Unrecognised TYPE command.").await,
        }
    }

    async fn pasv(&mut self, w: &mut TcpStream, extended: bool) -> io::Result<()> {
        let cfg = &self.shared.cfg;
        if !cfg.pasv_enable {
            return control::reply(w, 550, "Permission denied.").await;
        }
        if self.epsv_all && !extended {
            return control::reply(w, 550, "PASV not allowed after EPSV ALL.").await;
        }
        let local_ip = data::canonical(self.local.ip());
        if !extended && !local_ip.is_ipv4() {
            return control::reply(w, 522, "Network protocol not supported, use EPSV (2).").await;
        }
        self.passive = None;
        let seed = self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(fs::now_secs().unsigned_abs() as u32);
        let listener = match data::bind_passive(local_ip, cfg.pasv_range(), seed) {
            Ok(l) => l,
            Err(e) => {
                warn!(session = self.id, error = %e, "cannot open a passive port");
                return control::reply(w, 425, "Failed to enter passive mode.").await;
            }
        };
        let port = listener.local_addr()?.port();
        self.passive = Some(listener);
        if extended {
            return control::reply(w, 229, &format!("Entering Extended Passive Mode (|||{port}|)")).await;
        }
        let announce = match cfg.pasv_address.parse::<std::net::Ipv4Addr>() {
            Ok(a) => a,
            Err(_) => match local_ip {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => unreachable!("checked above: PASV needs IPv4"),
            },
        };
        let o = announce.octets();
        control::reply(
            w,
            227,
            &format!("Entering Passive Mode ({},{},{},{},{},{}).", o[0], o[1], o[2], o[3], port >> 8, port & 0xff),
        )
        .await
    }

    async fn size(&mut self, w: &mut TcpStream, arg: &[u8]) -> io::Result<()> {
        match self.cwd.join(arg).and_then(|p| self.root().open_file(&p)) {
            Ok((_, st)) => control::reply(w, 213, &st.st_size.to_string()).await,
            Err(_) => control::reply(w, 550, "Could not get file size.").await,
        }
    }

    async fn mdtm(&mut self, w: &mut TcpStream, arg: &[u8]) -> io::Result<()> {
        match self.cwd.join(arg).and_then(|p| self.root().open_file(&p)) {
            Ok((_, st)) => control::reply(w, 213, &fs::mdtm(st.st_mtime)).await,
            Err(_) => control::reply(w, 550, "Could not get file modification time.").await,
        }
    }

    async fn stat(&mut self, w: &mut TcpStream) -> io::Result<()> {
        let mut lines = vec![
            format!("Connected to {}", self.peer.ip()),
            "Logged in as ftp".to_string(),
            format!("TYPE: {}", if self.binary { "BINARY" } else { "ASCII" }),
            format!("Session timeout in seconds is {}", self.shared.cfg.idle_session_timeout),
        ];
        lines.push(self.shared.plane_status());
        control::reply_multi(w, 211, "FTP server status:", &lines, "End of status").await
    }

    /// Takes the passive listener and waits for the client on it, replying on failure.
    async fn open_data(&mut self, w: &mut TcpStream) -> io::Result<Option<TcpStream>> {
        let Some(listener) = self.passive.take() else {
            control::reply(w, 425, "Use PORT or PASV first.").await?;
            return Ok(None);
        };
        let cfg = &self.shared.cfg;
        let wait = Duration::from_secs(u64::from(cfg.accept_timeout));
        match data::accept(&listener, data::canonical(self.peer.ip()), cfg.pasv_promiscuous, wait).await {
            Ok(s) => Ok(Some(s)),
            Err(DataError::BadIp(ip)) => {
                warn!(session = self.id, peer = %self.peer, intruder = %ip, "passive connection from a foreign IP refused");
                control::reply(w, 425, "Security: Bad IP connecting.").await?;
                Ok(None)
            }
            Err(e) => {
                debug!(session = self.id, error = ?e, "no data connection");
                control::reply(w, 425, "Failed to establish connection.").await?;
                Ok(None)
            }
        }
    }

    async fn list(&mut self, w: &mut TcpStream, arg: &[u8], names_only: bool) -> io::Result<()> {
        // Skip `ls`-style options (`-la`), which clients send; `a` shows dot files.
        let mut rest = arg;
        let mut all = false;
        while rest.starts_with(b"-") {
            let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            all |= rest[..end].contains(&b'a');
            rest = rest[end..].strip_prefix(b" ").unwrap_or(&rest[end..]);
        }
        let Some(mut data) = self.open_data(w).await? else { return Ok(()) };
        control::reply(w, 150, "Here comes the directory listing.").await?;
        let stall = self.stall();
        let result = match self.cwd.join(rest) {
            Ok(path) => self.write_listing(&mut data, &path, rest, all, names_only, stall).await,
            Err(e) => Ok(Err(e)),
        };
        drop(data);
        match result {
            Ok(Ok(())) => control::reply(w, 226, "Directory send OK.").await,
            // vsftpd reports an unreadable directory as a (successful) empty listing.
            Ok(Err(_)) => control::reply(w, 226, "Transfer done (but failed to open directory).").await,
            Err(e) => {
                debug!(session = self.id, error = ?e, "listing aborted");
                control::reply(w, 426, "Failure writing network stream.").await
            }
        }
    }

    async fn write_listing(
        &self,
        data: &mut TcpStream,
        path: &VPath,
        given: &[u8],
        all: bool,
        names_only: bool,
        stall: Duration,
    ) -> Result<Result<(), FsError>, DataError> {
        let root = self.root();
        let entries = match root.open_dir(path) {
            Ok(dir) => match fs::read_dir(&dir, all) {
                Ok(e) => e,
                Err(e) => return Ok(Err(e)),
            },
            Err(_) => {
                // Not a directory: list the file itself under the name given.
                let stat = match root.stat(path) {
                    Ok(s) => s,
                    Err(e) => return Ok(Err(e)),
                };
                vec![fs::Entry { name: given.to_vec(), stat, link: None }]
            }
        };
        let now = fs::now_secs();
        let mut buf = Vec::with_capacity(LIST_CHUNK.min(entries.len() * 80 + 64));
        for e in &entries {
            if names_only {
                buf.extend_from_slice(&e.name);
                buf.extend_from_slice(b"\r\n");
            } else {
                fs::list_line(e, now, &mut buf);
            }
            if buf.len() >= LIST_CHUNK {
                data::send_bytes(data, &buf, stall).await?;
                buf.clear();
            }
        }
        data::send_bytes(data, &buf, stall).await?;
        data.shutdown().await.map_err(DataError::Network)?;
        Ok(Ok(()))
    }

    async fn retr(&mut self, w: &mut TcpStream, arg: &[u8]) -> io::Result<()> {
        let offset = std::mem::take(&mut self.rest);
        let opened: Result<(OwnedFd, u64), FsError> = self
            .cwd
            .join(arg)
            .and_then(|p| self.root().open_file(&p))
            .map(|(fd, st)| (fd, u64::try_from(st.st_size).unwrap_or(0)));
        let Ok((file, size)) = opened else {
            return control::reply(w, 550, "Failed to open file.").await;
        };
        let Some(mut data) = self.open_data(w).await? else { return Ok(()) };
        let name = String::from_utf8_lossy(arg);
        let mode = if self.binary { "BINARY" } else { "ASCII" };
        control::reply(w, 150, &format!("Opening {mode} mode data connection for {name} ({size} bytes).")).await?;
        let len = size.saturating_sub(offset);
        let started = std::time::Instant::now();
        let result = data::send_file(&mut data, &file, offset, len, self.stall()).await;
        drop(data);
        match result {
            Ok(sent) => {
                info!(session = self.id, peer = %self.peer, file = %name, bytes = sent, secs = started.elapsed().as_secs_f64(), "download complete");
                control::reply(w, 226, "Transfer complete.").await
            }
            Err(DataError::File(e)) => {
                warn!(session = self.id, file = %name, error = %e, "reading the file failed");
                control::reply(w, 451, "Failure reading local file.").await
            }
            Err(DataError::Stalled) => {
                info!(session = self.id, peer = %self.peer, file = %name, "data connection stalled");
                control::reply(w, 421, "Data timeout. Reconnect. Sorry.").await
            }
            Err(e) => {
                info!(session = self.id, peer = %self.peer, file = %name, error = ?e, "download aborted");
                control::reply(w, 426, "Failure writing network stream.").await
            }
        }
    }

    fn stall(&self) -> Duration {
        match self.shared.cfg.data_connection_timeout {
            0 => Duration::from_secs(u64::from(u32::MAX)),
            s => Duration::from_secs(u64::from(s)),
        }
    }
}

/// Writes a reply to any writer; used by the server for pre-session refusals.
pub async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, text: &str) {
    let _ = control::reply(w, 421, text).await;
    let _ = w.shutdown().await;
}
