//! The control connection's loop: greet, read a line, parse it with the
//! command table, check what the session may do, and run the handler. Above
//! the handlers, which it calls, and below the server, which starts it.

use std::{io, sync::Arc, time::Duration};

use tokio::{io::AsyncWriteExt, time::timeout};
use tracing::{debug, info, warn};

use crate::{
    command::{Access, Command, HashAlg, ListArgs, ParseError, Verb},
    commands::{listing::ListKind, upload::StoreKind},
    config::Config,
    control::{self, LineError},
    policy::Op,
    reply::{self, code},
    session::{DataSetup, Next, Phase, Session, stopped},
    shared::Stop,
};

/// Serves one control connection until QUIT, timeout, or the client leaves.
pub async fn run(session: Session) {
    session.run().await;
}

impl Session {
    async fn run(mut self) {
        self.serve().await;
        // Its place in the gauge and rate sharing (given back on drop too,
        // for a task that panics).
        self.active = None;
        // A passive port left unused: its pinhole and pool count go now.
        self.chan.data = DataSetup::None;
        // A 421 (or any end) closes the connection cleanly: FIN after the
        // last reply, so the client reads it before it sees the close.
        let _ = self.ctl.w.shutdown().await;
    }

    async fn serve(&mut self) {
        if self.settings.tls.is_some() && self.settings.cfg.implicit_ssl {
            // Implicit FTPS: TLS before the greeting, data encrypted by default.
            if !self.start_tls().await {
                return;
            }
            self.chan.prot_private = true;
        }
        if self.greet().await.is_err() {
            return;
        }
        loop {
            let line = match self.ctl.pending.take() {
                Some(l) => l,
                None if self.ctl.control_closed => return,
                None => match self.next_line().await {
                    Some(l) => l,
                    None => return,
                },
            };
            // Boxed: the command futures (transfers with their raced futures)
            // are far larger than the idle read loop, and an idle session
            // should not carry their space (docs: issue 5's 4 KiB target).
            match Box::pin(self.dispatch(&line)).await {
                Ok(Next::Continue) if self.ctl.closing => return,
                Ok(Next::Continue) if self.ctl.control_closed && self.ctl.pending.is_none() => return,
                Ok(Next::Continue) => {}
                Ok(Next::Quit) => return,
                Err(e) => {
                    debug!(session = self.id, peer = %self.names.peer, error = %e, "control write failed");
                    return;
                }
            }
        }
    }

    async fn greet(&mut self) -> io::Result<()> {
        let cfg = Arc::clone(&self.settings.cfg);
        if let Some(text) = &self.settings.banner {
            // vsftpd's form: every line of the file as `220-`, then a bare `220 `.
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.push(String::new());
            return self.reply_lines(code::READY, &lines).await;
        }
        let banner = if cfg.ftpd_banner.is_empty() {
            format!("(ftpd {})", env!("CARGO_PKG_VERSION"))
        } else {
            cfg.ftpd_banner.clone()
        };
        self.reply(code::READY, &banner).await
    }

    /// Reads the next command line, handling the idle timeout, the shutdown
    /// and framing errors.
    async fn next_line(&mut self) -> Option<Vec<u8>> {
        let idle = Duration::from_secs(u64::from(self.cfg().idle_session_timeout));
        let mut stop = self.shared.stopping();
        let kept_until = self.chan.data.kept_until();
        let (ctl, data) = (&mut self.ctl, &mut self.chan.data);
        let read = async {
            let read = async move {
                let mut read = std::pin::pin!(ctl.reader.read_line(&mut ctl.r));
                if let Some(until) = kept_until {
                    // The last transfer's passive port is given up if the
                    // next command is slow to come (the read goes on: it
                    // loses nothing when it waits).
                    tokio::select! {
                        biased;
                        line = &mut read => return line,
                        () = tokio::time::sleep_until(until) => *data = DataSetup::None,
                    }
                }
                read.await
            };
            if idle.is_zero() { Ok(read.await) } else { timeout(idle, read).await }
        };
        let line = tokio::select! {
            // Between commands a session has nothing to finish: it ends at once.
            biased;
            () = stopped(&mut stop, Stop::Draining) => {
                let _ = self.reply(421, "Server shutting down.").await;
                info!(session = self.id, peer = %self.names.peer, "shutdown: idle session ended");
                return None;
            }
            r = read => match r {
                Ok(r) => r,
                Err(_) => {
                    let _ = self.send(reply::IDLE_TIMEOUT).await;
                    info!(session = self.id, peer = %self.names.peer, "idle timeout");
                    return None;
                }
            },
        };
        match line {
            Ok(l) => Some(l.to_vec()),
            Err(LineError::Closed) => None,
            Err(LineError::TooLong) => {
                let _ = self.send(reply::LINE_TOO_LONG).await;
                warn!(session = self.id, peer = %self.names.peer, "command line too long; closing");
                None
            }
            Err(LineError::Io(e)) => {
                debug!(session = self.id, peer = %self.names.peer, error = %e, "control read failed");
                None
            }
        }
    }

    async fn dispatch(&mut self, line: &[u8]) -> io::Result<Next> {
        let line = control::strip_telnet(line);
        if line == b"XPANIC" && panic_hook_on() {
            panic!("XPANIC: FTPD_TEST_HOOKS=panic asked this session to panic");
        }
        let (word, arg) = control::split_command(line);
        let verb = Verb::find(&word);
        let shown: &[u8] = if word == "PASS" { b"PASS <password>" } else { line };
        debug!(session = self.id, peer = %self.names.peer, "{}", String::from_utf8_lossy(shown));
        self.shared.logs.protocol_line(&self.names.log_user, &self.names.client, false, shown);
        self.shared.metrics.command(Verb::label(verb));
        let cmd = match Command::parse(line) {
            Err(ParseError::Nul) => {
                self.send(reply::NUL_IN_COMMAND).await?;
                return Ok(Next::Continue);
            }
            other => other,
        };
        let tls = self.settings.tls.is_some();
        // Before login only the table's open verbs run (vsftpd's prelogin.c,
        // plus HOST); AUTH only while the control connection is in the clear.
        let open = match verb.map(|v| v.access) {
            Some(Access::Open) => true,
            Some(Access::Tls) => tls && !(matches!(cmd, Ok(Command::Auth(_))) && self.ctl.tls.is_some()),
            _ => false,
        };
        if !open {
            let Phase::Ready(_) = self.phase else {
                self.send(reply::LOGIN_FIRST).await?;
                return Ok(Next::Continue);
            };
            // A dead worker (killed, or by its seccomp filter) would make every
            // file command fail in its own misleading way (an empty listing, a
            // "failed to change directory"): end the session clearly instead; a
            // new login gets a new worker.
            if let crate::worker::Fs::Remote(link, _) = &*self.user().root
                && verb.is_none_or(Verb::checks_worker)
                && !link.alive()
            {
                warn!(session = self.id, peer = %self.names.peer, "the session's file worker is gone; closing the session");
                self.send(reply::LOST_FILE_ACCESS).await?;
                return Ok(Next::Quit);
            }
            if !command_allowed(&self.user().cfg, &word) {
                self.send(reply::PERMISSION_DENIED).await?;
                return Ok(Next::Continue);
            }
            // vsftpd refuses a deny_file path with one reply, whatever the command.
            let denied = verb.and_then(|v| v.denied_path(arg));
            if denied.is_some_and(|a| self.nav.cwd.join(a).is_ok_and(|p| self.settings.deny.matches_path(&p))) {
                self.send(reply::PERMISSION_DENIED).await?;
                return Ok(Next::Continue);
            }
        }
        let cmd = match cmd {
            Ok(c) => c,
            Err(e) => {
                self.send(e.reply()).await?;
                return Ok(Next::Continue);
            }
        };
        match cmd {
            Command::Quit => {
                self.send(reply::GOODBYE).await?;
                return Ok(Next::Quit);
            }
            Command::User(a) => self.cmd_user(a).await?,
            Command::Pass(a) => {
                self.cmd_pass(a).await?;
                let max = self.cfg().max_login_fails;
                if max != 0 && self.login_fails >= max {
                    info!(session = self.id, peer = %self.names.peer, fails = self.login_fails, "too many failed logins; closing");
                    return Ok(Next::Quit);
                }
            }
            Command::Feat => self.cmd_feat().await?,
            Command::Opts(o) => self.cmd_opts(o).await?,
            Command::Host(a) => self.cmd_host(a).await?,
            Command::Auth(kind) if open => return self.cmd_auth(kind).await,
            Command::Pbsz if open => self.cmd_pbsz().await?,
            Command::Prot(p) if open => self.cmd_prot(p).await?,
            Command::Ccc if open => return self.cmd_ccc().await,
            // TLS commands without TLS: PBSZ and PROT are known to vsftpd,
            // refused like a denied command; AUTH and CCC are not.
            Command::Pbsz | Command::Prot(_) => self.send(reply::PERMISSION_DENIED).await?,
            Command::Auth(_) | Command::Ccc => self.send(reply::UNKNOWN_COMMAND).await?,
            Command::Help => self.cmd_help().await?,
            Command::Abor => self.send(reply::NO_TRANSFER_TO_ABOR).await?,
            Command::Rein => self.send(reply::REIN_NOT_IMPLEMENTED).await?,
            Command::Smnt => self.send(reply::SMNT_NOT_IMPLEMENTED).await?,
            Command::Syst => self.send(reply::SYST).await?,
            Command::Noop => self.send(reply::NOOP_OK).await?,
            Command::Acct => self.send(reply::ACCT_NOT_IMPLEMENTED).await?,
            Command::Allo => self.send(reply::ALLO_IGNORED).await?,
            Command::Pwd => self.cmd_pwd().await?,
            Command::Cwd(a) => self.cmd_cwd(a).await?,
            Command::Cdup => self.cmd_cwd(b"..").await?,
            Command::Type(binary) => self.cmd_type(binary).await?,
            Command::Mode => self.send(reply::MODE_OK).await?,
            Command::Stru => self.send(reply::STRU_OK).await?,
            Command::Pasv => self.cmd_pasv(false).await?,
            Command::Epsv(e) => self.cmd_epsv(e).await?,
            Command::Port(to) => self.cmd_port(to).await?,
            Command::Eprt(e) => self.cmd_eprt(e).await?,
            Command::Rest(n) => self.cmd_rest(n).await?,
            Command::Size(a) => self.cmd_size(a).await?,
            Command::Mdtm(m) => self.cmd_mdtm(m).await?,
            Command::Mfmt(m) => self.cmd_mfmt(m).await?,
            Command::Mlst(a) => self.cmd_mlst(a).await?,
            Command::Stat(None) => self.cmd_stat().await?,
            Command::Stat(Some(l)) => self.cmd_stat_path(l).await?,
            Command::List(l) => self.cmd_list(l, ListKind::Long).await?,
            Command::Nlst(l) => self.cmd_list(l, ListKind::Names).await?,
            Command::Mlsd(a) => self.cmd_list(ListArgs { path: a, ..ListArgs::default() }, ListKind::Machine).await?,
            Command::Retr(a) => self.cmd_retr(a).await?,
            Command::Stor(a) => self.cmd_store(a, StoreKind::Stor).await?,
            Command::Appe(a) => self.cmd_store(a, StoreKind::Appe).await?,
            Command::Stou(a) => self.cmd_store(a, StoreKind::Stou).await?,
            Command::Mkd(a) => self.cmd_mkd(a).await?,
            Command::Rmd(a) => self.cmd_rmd(a).await?,
            Command::Dele(a) => self.cmd_dele(a).await?,
            Command::Rnfr(a) => self.cmd_rnfr(a).await?,
            Command::Rnto(a) => {
                // RNFR's name stays until RNTO uses it, also across other commands
                // (vsftpd does not enforce RFC 959's "immediately").
                let from = if self.may(Op::Other) { self.nav.rnfr.take() } else { None };
                self.cmd_rnto(a, from).await?;
            }
            Command::Site(s) => self.cmd_site(s).await?,
            Command::Xsha256(a) => self.cmd_hash(a, Some(HashAlg::Sha256)).await?,
            Command::Hash(a) => self.cmd_hash(a, None).await?,
        }
        Ok(Next::Continue)
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

/// Whether `FTPD_TEST_HOOKS=panic` is in the environment: the line `XPANIC`
/// then panics in its session's task, for the test that a bug ends its own
/// session only. Read once; an operator never sets it.
fn panic_hook_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FTPD_TEST_HOOKS").is_some_and(|v| v == "panic"))
}
