//! One control connection's state, its replies, and its data-connection
//! setup; the loop that reads commands and runs the handlers is
//! `commands::dispatch`, above the handlers.
//!
//! The session owns its state (`&mut self`, no locks), grouped by owner
//! (see [`Session`]). Handlers live in `commands/` by topic; what more than
//! one of them needs is here and in `session::{tree, tls, transfer}`;
//! `command.rs` is the one place that lists every verb.
//! While a transfer runs, `race` keeps reading the control connection, so ABOR
//! and STAT are answered mid-transfer (see docs/ARCHITECTURE.md).

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::{io::AsyncWriteExt, net::TcpStream, time::timeout};
use tracing::{debug, warn};

use crate::{
    command::HashAlg,
    config::Config,
    control::{self, LineReader},
    data::{self, DataError},
    fs::VPath,
    reply::{self, Reply, code},
    shared::{Shared, Stop},
    tls::{CtlRead, CtlWrite, SessionTls},
    worker::Fs,
};

pub mod tls;
pub mod transfer;
pub mod tree;

/// A logged-in session's place in the active-sessions gauge and in its
/// user's rate sharing. Given back on drop, so that a session that ends any
/// way (a panic in its task included: tokio drops the task) leaves no count
/// behind.
pub(crate) struct LoggedIn {
    gauge: prometheus_client::metrics::gauge::Gauge,
    /// The limit cell this session shares with its user's other sessions.
    limit: crate::rates::SessionLimit,
}

impl LoggedIn {
    /// Counts the session in `gauge` and gives it `owner`'s limit cell.
    pub(crate) fn new(
        gauge: prometheus_client::metrics::gauge::Gauge,
        rates: &Arc<crate::rates::Rates>,
        owner: crate::rates::Owner,
    ) -> Self {
        gauge.inc();
        Self { gauge, limit: crate::rates::Rates::login(rates, owner) }
    }
}

impl Drop for LoggedIn {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

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
    /// Its limit and permission rules, decided at login.
    pub policy: crate::policy::Policy,
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

/// How the next data connection will be made. It owns what that holds, and
/// replacing or dropping it releases all of it (see [`PassivePort`]).
pub(crate) enum DataSetup {
    None,
    /// PASV/EPSV: a listener waiting for the client.
    Passive(PassivePort),
    /// PORT/EPRT: the client's address to connect to.
    Active(SocketAddr),
    /// Nothing set up, but the passive port of the last transfer listens
    /// for the next PASV/EPSV (see [`data::KeptPort`]); anything else set
    /// here gives it up.
    Kept(data::KeptPort),
}

impl DataSetup {
    /// When a kept port is given up (see [`data::KeptPort`]).
    pub(crate) fn kept_until(&self) -> Option<tokio::time::Instant> {
        match self {
            Self::Kept(k) => Some(k.until()),
            _ => None,
        }
    }
}

/// A passive port between PASV/EPSV and its data connection: the listener,
/// the kernel pinhole (on the kernel plane with a port range), and its count
/// in the pool gauge. All three are released in `Drop`, however the port
/// ends: used, timed out, aborted, replaced by another PASV or a PORT, or
/// the session gone.
pub(crate) struct PassivePort {
    pub(crate) wait: data::PassiveWait,
    shared: Arc<Shared>,
    /// The pinhole this opened: port, client, any client.
    pinhole: Option<(u16, IpAddr, bool)>,
    /// `ftpd_pasv_ports_in_use`, incremented while this lives.
    slot: prometheus_client::metrics::gauge::Gauge,
    /// How it ended, for `ftpd_pasv_pinholes_total` (set once a data
    /// connection was awaited on it).
    pub(crate) event: Option<&'static str>,
}

impl PassivePort {
    /// Takes `wait` into the pool's count, and opens its pinhole for
    /// `client` for `ttl` when the kernel plane is on. Opening happens
    /// before the reply, or the client's SYN could win the race.
    ///
    /// # Errors
    /// The pinhole could not be opened (the port is released again).
    pub(crate) fn open(
        shared: &Arc<Shared>,
        wait: data::PassiveWait,
        client: IpAddr,
        ttl: Duration,
        any_ip: bool,
    ) -> io::Result<Self> {
        let port = wait.port();
        crate::metrics::Metrics::inc(&shared.metrics.pinholes, "event", "opened");
        let slot = shared.metrics.pasv_in_use.clone();
        slot.inc();
        let mut me = Self { wait, shared: Arc::clone(shared), pinhole: None, slot, event: None };
        if let Some(dp) = shared.kernel() {
            dp.open_pinhole(port, client, ttl, any_ip).map_err(io::Error::other)?;
            me.pinhole = Some((port, client, any_ip));
        }
        Ok(me)
    }
}

impl PassivePort {
    /// Keeps the port for the session's next PASV/EPSV (see
    /// [`data::KeptPort`]). Its pinhole is closed first: once kept, another
    /// session of the same client may take the port and open its own
    /// pinhole there, which closing this one later would remove.
    pub(crate) fn keep(&mut self) -> Option<data::KeptPort> {
        self.close_pinhole();
        self.wait.keep()
    }

    fn close_pinhole(&mut self) {
        if let (Some((port, client, any)), Some(dp)) = (self.pinhole.take(), self.shared.kernel()) {
            dp.close_pinhole(port, client, any);
        }
    }
}

impl Drop for PassivePort {
    fn drop(&mut self) {
        self.close_pinhole();
        // Counted in both planes, so the metrics mean the same with and without eBPF.
        self.slot.dec();
        if let Some(event) = self.event {
            crate::metrics::Metrics::inc(&self.shared.metrics.pinholes, "event", event);
        }
    }
}

/// A control connection a balancer forwarded with a PROXY header.
#[derive(Clone, Copy, Debug)]
pub struct Proxied {
    /// The balancer's own address (the connection's TCP peer): where
    /// forwarded data connections come from (`ftpd_proxy_data`).
    pub balancer: IpAddr,
    /// The address the client connected to (the header's destination). An
    /// EPSV reply sends the client's data connection there.
    pub dialed: IpAddr,
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
///
/// Which configuration a handler reads, one rule: `cfg()`. Once logged in
/// that is the user's effective config, fixed at login (a reload changes
/// only the rate limit of a running session, through `rate()`); before
/// login, the settings in force now. What the settings derive from files
/// (banner, deny/hide patterns, TLS, metrics users) is in `settings`, the
/// snapshot of the connect, replaced at login. Never `shared.cfg()`, which
/// would be the live global for one handler and the login's for another.
pub struct Session {
    /// The admission slot (connection counts): first, so that it is given
    /// back before the control connection closes, and a client that
    /// reconnects once it sees the close is never counted twice.
    pub(crate) slot: Option<crate::shared::Slot>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: u64,
    /// Who is at either end, under which names.
    pub(crate) names: Names,
    pub(crate) ctl: Control,
    pub(crate) phase: Phase,
    pub(crate) nav: Navigation,
    pub(crate) chan: DataChannel,
    /// HASH's algorithm (`OPTS HASH`).
    pub(crate) hash_alg: HashAlg,
    /// Failed logins so far (`max_login_fails`).
    pub(crate) login_fails: u32,
    /// Control connections open when this one was accepted (itself included),
    /// for STAT as vsftpd reports it.
    pub(crate) clients_at_start: u32,
    /// What this session counts in once logged in, given back when the
    /// session is dropped.
    pub(crate) active: Option<LoggedIn>,
    /// The settings in force when the session connected, then when it
    /// logged in: a reload changes them for later sessions.
    pub(crate) settings: Arc<crate::settings::Settings>,
}

/// The ends of the control connection and the names logs give them.
pub(crate) struct Names {
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    /// With `ftpd_proxy_protocol`: how the control connection came.
    pub(crate) proxied: Option<Proxied>,
    /// The peer's IP as text, for logs.
    pub(crate) client: String,
    /// The name logs show: the USER argument, then the login name.
    pub(crate) log_user: String,
    /// xferlog's user field: the login name, or an anonymous user's password.
    pub(crate) xfer_user: String,
}

/// The control connection: its halves, its reader, and what `race` leaves
/// for the command loop.
pub(crate) struct Control {
    pub(crate) r: CtlRead,
    pub(crate) w: CtlWrite,
    pub(crate) reader: LineReader,
    /// A command that arrived during a transfer, run once it ends.
    pub(crate) pending: Option<Vec<u8>>,
    /// The client hung up during a transfer.
    pub(crate) control_closed: bool,
    /// A 421 was sent: the session ends after the current command, as the
    /// reply tells the client (RFC 959: the service is closing the
    /// control connection).
    pub(crate) closing: bool,
    /// The control connection's TLS (after AUTH, or implicit): the
    /// configuration whose session store its data connections resume from.
    pub(crate) tls: Option<SessionTls>,
}

/// Where the session is in its tree, and what the next command there carries over.
pub(crate) struct Navigation {
    pub(crate) cwd: VPath,
    /// RNFR's path, for the RNTO that follows.
    pub(crate) rnfr: Option<VPath>,
    /// REST's offset, for the next transfer.
    pub(crate) rest: u64,
    /// `SITE UMASK`, applied to uploads and new directories.
    pub(crate) umask: u32,
    /// Directories whose message file was already shown.
    pub(crate) seen_messages: Vec<VPath>,
}

/// The data channel: how the next data connection is made, how it is
/// protected, and the running transfer's state.
pub(crate) struct DataChannel {
    pub(crate) data: DataSetup,
    /// TYPE I (else TYPE A).
    pub(crate) binary: bool,
    /// `EPSV ALL`: PASV, PORT and EPRT are refused from now on.
    pub(crate) epsv_all: bool,
    /// `PROT P`: data connections are encrypted.
    pub(crate) prot_private: bool,
    /// Whether the running transfer's data connection is encrypted (metrics).
    pub(crate) data_tls: bool,
    /// Bytes moved by the running transfer (for STAT during a transfer).
    pub(crate) progress: Arc<data::Progress>,
}

impl Session {
    /// The two replies RFC 959 gives for an ABOR that ends a transfer.
    pub(crate) async fn abort_replies(&mut self) -> io::Result<()> {
        if self.shared.stop_state() == crate::shared::Stop::Now {
            tracing::info!(session = self.id, peer = %self.names.peer, "shutdown: transfer ended");
            self.reply(426, "Connection closed; transfer aborted.").await?;
            return self.reply(421, "Server shutting down.").await;
        }
        tracing::info!(session = self.id, peer = %self.names.peer, "transfer aborted by the client");
        self.send(reply::NETWORK_WRITE_FAILED).await?;
        self.send(reply::ABOR_OK).await
    }

    /// A session for a freshly accepted control connection.
    pub fn new(shared: Arc<Shared>, id: u64, stream: TcpStream, peer: SocketAddr, local: SocketAddr) -> Self {
        let (r, w) = stream.into_split();
        let (r, w) = (CtlRead::Plain(r), CtlWrite::Plain(w));
        let clients_at_start = shared.clients();
        let settings = shared.settings();
        Self {
            slot: None,
            settings,
            shared,
            id,
            names: Names {
                peer,
                local,
                proxied: None,
                client: crate::net::canonical(peer.ip()).to_string(),
                log_user: "?".into(),
                xfer_user: String::new(),
            },
            ctl: Control {
                r,
                w,
                reader: LineReader::default(),
                pending: None,
                control_closed: false,
                closing: false,
                tls: None,
            },
            phase: Phase::Greeted,
            nav: Navigation { cwd: VPath::root(), rnfr: None, rest: 0, umask: 0o077, seen_messages: Vec::new() },
            chan: DataChannel {
                data: DataSetup::None,
                binary: false,
                epsv_all: false,
                prot_private: false,
                data_tls: false,
                progress: Arc::new(data::Progress::default()),
            },
            hash_alg: HashAlg::default(),
            login_fails: 0,
            clients_at_start,
            active: None,
        }
    }

    fn log_reply(&self, code: u16, text: &str) {
        if self.shared.logs.protocol() {
            self.shared.logs.protocol_line(
                &self.names.log_user,
                &self.names.client,
                true,
                format!("{code} {text}").as_bytes(),
            );
        }
    }

    /// Writes `CODE TEXT`. After a 421 the session closes once the
    /// command is done.
    pub(crate) async fn reply(&mut self, code: u16, text: &str) -> io::Result<()> {
        self.ctl.closing |= code == code::CLOSING;
        self.log_reply(code, text);
        self.shared.metrics.reply(code);
        control::reply(&mut self.ctl.w, code, text).await
    }

    /// Writes a named reply.
    pub(crate) async fn send(&mut self, r: Reply) -> io::Result<()> {
        self.reply(r.code, r.text).await
    }

    /// Writes a multi-line reply whose last line repeats the code.
    pub(crate) async fn reply_multi(&mut self, code: u16, first: &str, lines: &[String], last: &str) -> io::Result<()> {
        self.log_reply(code, first);
        self.shared.metrics.reply(code);
        control::reply_multi(&mut self.ctl.w, code, first, lines, last).await
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
        control::reply_listing(&mut self.ctl.w, code, first, lines, last).await
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
                self.ctl.w.write_all(&out).await?;
                self.ctl.w.flush().await
            }
        }
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
    /// users unless `virtual_use_local_privs` (see [`crate::policy::Policy`]).
    pub(crate) fn anon_rules(&self) -> bool {
        self.user().policy.anon_rules
    }

    /// The configuration every handler reads (the one rule; see
    /// [`Session`]): once logged in, the user's effective settings, fixed at
    /// login (the main file with any `user_config_dir` file applied); before
    /// that, the settings in force now, which the login will be decided with.
    pub(crate) fn cfg(&self) -> Arc<Config> {
        match &self.phase {
            Phase::Ready(u) => Arc::clone(&u.cfg),
            _ => self.shared.cfg(),
        }
    }

    /// Runs `fut` while answering the control connection: ABOR ends it, STAT
    /// reports progress, anything else waits until it is done.
    /// At shutdown, once running transfers may no longer finish, it ends
    /// `fut` as ABOR would (the caller's abort path cleans up).
    pub(crate) async fn race<F: Future>(&mut self, fut: F) -> io::Result<Raced<F::Output>> {
        tokio::pin!(fut);
        let mut stop = self.shared.stopping();
        loop {
            let reading = self.ctl.pending.is_none() && !self.ctl.control_closed;
            // A kept passive port (see `data::KeptPort`) is given up on time
            // while a transfer runs too, not held until it ends.
            let kept_until = self.chan.data.kept_until();
            let line = tokio::select! {
                // The shutdown first, then the work: work done at once (a
                // small file sent in one call) does not read the control
                // connection for nothing (nor sets a timer).
                biased;
                () = stopped(&mut stop, Stop::Now) => return Ok(Raced::Aborted),
                out = &mut fut => return Ok(Raced::Done(out)),
                () = tokio::time::sleep_until(kept_until.unwrap_or_else(tokio::time::Instant::now)), if kept_until.is_some() => None,
                line = self.ctl.reader.read_line(&mut self.ctl.r), if reading => Some(line.map(<[u8]>::to_vec)),
            };
            let Some(line) = line else {
                self.chan.data = DataSetup::None;
                continue;
            };
            let line = match line {
                Ok(l) => l,
                Err(_) => {
                    // The client hung up: there is nobody to finish the transfer for.
                    self.ctl.control_closed = true;
                    return Ok(Raced::Aborted);
                }
            };
            let (verb, _) = control::split_command(control::strip_telnet(&line));
            match verb.as_str() {
                "ABOR" => return Ok(Raced::Aborted),
                "STAT" => {
                    let moved = self.chan.progress.get();
                    let lines = vec![format!("Transfer in progress: {moved} bytes transferred")];
                    self.reply_multi(code::SYSTEM_STATUS, "FTP server status:", &lines, "End of status").await?;
                }
                _ => self.ctl.pending = Some(line),
            }
        }
    }

    /// Opens the data connection set up by PASV/EPSV/PORT/EPRT, answering the
    /// control connection meanwhile. Replies and returns `None` on failure.
    pub(crate) async fn open_data(&mut self) -> io::Result<Option<TcpStream>> {
        let setup = std::mem::replace(&mut self.chan.data, DataSetup::None);
        let cfg = self.cfg();
        if matches!(setup, DataSetup::None | DataSetup::Kept(_)) {
            self.send(reply::NO_DATA_SETUP).await?;
            return Ok(None);
        }
        let forced = if self.user().anonymous { cfg.force_anon_data_ssl } else { cfg.force_local_data_ssl };
        if self.settings.tls.is_some() && forced && !self.chan.prot_private {
            self.chan.data = setup;
            self.send(reply::DATA_MUST_BE_ENCRYPTED).await?;
            return Ok(None);
        }
        let result = match setup {
            DataSetup::None | DataSetup::Kept(_) => return Ok(None),
            DataSetup::Passive(mut port) => {
                let wait = Duration::from_secs(u64::from(cfg.accept_timeout));
                let client = crate::net::canonical(self.names.peer.ip());
                let waiting = &mut port.wait;
                let fut = async move { data::accept(waiting, client, cfg.pasv_promiscuous, wait).await };
                let result = self.race(fut).await?;
                // Used (sock_ops already closed its pinhole), timed out or
                // aborted: it is done, and dropped here.
                let used = matches!(result, Raced::Done(Ok(_)));
                port.event = Some(if used { "used" } else { "expired" });
                if used && let Some(kept) = port.keep() {
                    self.chan.data = DataSetup::Kept(kept);
                }
                result
            }
            DataSetup::Active(to) => {
                let wait = Duration::from_secs(u64::from(cfg.connect_timeout));
                let bound = if cfg.connect_from_port_20 {
                    // A v4 target from a dual-stack control connection leaves from IPv4.
                    let local = match (to.ip(), self.names.local.ip()) {
                        (IpAddr::V4(_), IpAddr::V6(v6)) => {
                            v6.to_ipv4_mapped().map_or(self.names.local.ip(), IpAddr::V4)
                        }
                        (_, ip) => ip,
                    };
                    let port = cfg.ftp_data_port;
                    let shared = Arc::clone(&self.shared);
                    match tokio::task::spawn_blocking(move || shared.authority.bind_data_port(local, port)).await {
                        Ok(Ok(fd)) => Some(fd),
                        Ok(Err(e)) => {
                            warn!(session = self.id, error = %e, "cannot bind ftp_data_port for connect_from_port_20");
                            self.send(reply::DATA_CONNECT_FAILED).await?;
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
        match result {
            Raced::Done(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(Some(s))
            }
            Raced::Done(Err(DataError::BadIp(ip))) => {
                warn!(session = self.id, peer = %self.names.peer, intruder = %ip, "passive connection from a foreign IP refused");
                self.send(reply::BAD_IP_CONNECTING).await?;
                Ok(None)
            }
            Raced::Done(Err(DataError::Proxy(reason))) => {
                warn!(session = self.id, peer = %self.names.peer, reason = reason.label(), "passive connection from a balancer without a usable PROXY header refused");
                self.send(reply::DATA_CONNECT_FAILED).await?;
                Ok(None)
            }
            Raced::Done(Err(e)) => {
                debug!(session = self.id, error = ?e, "no data connection");
                self.send(reply::DATA_CONNECT_FAILED).await?;
                Ok(None)
            }
            Raced::Aborted => {
                self.send(reply::ABOR_BEFORE_DATA).await?;
                Ok(None)
            }
        }
    }

    /// This session's bandwidth limit in bytes per second (0: none): its
    /// effective config's, unless a reload since its login changed it.
    pub(crate) fn rate(&self) -> u64 {
        self.logged_in().limit.get(self.user().policy.max_rate)
    }

    /// The session's hold on its user's gauge and limit. Only called from
    /// post-login handlers.
    pub(crate) fn logged_in(&self) -> &LoggedIn {
        match &self.active {
            Some(a) => a,
            None => unreachable!("post-login command before login"),
        }
    }

    /// How long a transfer may make no progress: the user's
    /// `data_connection_timeout` (a `user_config_dir` file may set it).
    pub(crate) fn stall(&self) -> Duration {
        match self.cfg().data_connection_timeout {
            0 => Duration::from_secs(u64::from(u32::MAX)),
            s => Duration::from_secs(u64::from(s)),
        }
    }

    /// The peer's IP as the limits see it (v4-mapped addresses as IPv4).
    pub(crate) fn peer_ip(&self) -> IpAddr {
        crate::net::canonical(self.names.peer.ip())
    }
}

/// Resolves once the shutdown has reached `stage`; never if the process is
/// not stopping.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<Stop>, stage: Stop) {
    // The guard `wait_for` returns is not Send: dropped here, not held by the caller.
    if stop.wait_for(|s| *s >= stage).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn clean(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// [`refuse`] for implicit FTPS, whose clients expect TLS from the first
/// byte: the 421 goes over a (bounded) handshake, as vsftpd sends it, so the
/// client shows the reply instead of a TLS error.
pub async fn refuse_tls(stream: TcpStream, tls: &crate::tls::Tls, text: &str) {
    let Ok(hs) = tls.control_handshake(0) else { return };
    if let Ok(Ok(mut s)) = timeout(Duration::from_secs(10), hs.acceptor.accept(stream)).await {
        let _ = control::reply(&mut s, code::CLOSING, text).await;
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
    let _ = control::reply(stream, code::CLOSING, text).await;
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
