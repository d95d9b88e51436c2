//! The accept loop: connection limits, one task per session, shutdown.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::net::TcpListener;
use tracing::{Instrument, debug, error, info, warn};

use crate::{
    config::Config, dataplane::Dataplane, net::canonical, privsep::Authority, session, settings::Settings,
    xferlog::Logs,
};

/// Which data plane enforces limits in this process.
#[derive(Debug)]
pub enum Plane {
    /// eBPF programs are attached.
    Kernel(Box<Dataplane>),
    /// eBPF is not in use; the reason is shown in logs and STAT.
    Userspace(String),
}

/// State every session can see: the settings in force and what was set up at startup.
#[derive(Debug)]
pub struct Shared {
    /// Swapped whole by SIGHUP (see [`Settings`]).
    settings: RwLock<Arc<Settings>>,
    /// Absolute directory served to anonymous users.
    pub anon_root: PathBuf,
    /// The data plane in use.
    pub plane: Plane,
    /// Who decides logins and runs file operations.
    pub authority: Authority,
    /// Transfer and protocol logs (vsftpd formats).
    pub logs: Logs,
    /// Bandwidth shares of running transfers (`ftpd_rate_scope`).
    pub rates: Arc<crate::rates::Rates>,
    /// Where the config came from, for SIGHUP.
    pub source: crate::config::ConfigSource,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// Stop requests (SIGTERM): see [`Stop`].
    stop: tokio::sync::watch::Sender<Stop>,
    /// Failed logins per client network and the bans they started.
    pub bans: crate::bans::Bans,
    next_id: AtomicU64,
    conns: Mutex<Conns>,
}

/// How far a shutdown has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Serving.
    Running,
    /// SIGTERM: no new connections; idle sessions end, transfers may finish.
    Draining,
    /// `ftpd_shutdown_timeout` is over, or a second SIGTERM: every session ends now.
    Now,
}

#[derive(Debug, Default)]
struct Conns {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
    /// Per client network (`ftpd_max_per_prefix`), counted only while it is set.
    per_net: HashMap<ftpd_common::IpKey, u32>,
}

impl Shared {
    /// Bundles what sessions need; `settings` from [`Settings::derive`].
    pub fn new(
        settings: Settings,
        anon_root: PathBuf,
        plane: Plane,
        authority: Authority,
        logs: Logs,
        source: crate::config::ConfigSource,
    ) -> Self {
        let metrics = crate::metrics::Metrics::new();
        metrics.ebpf_enabled.set(i64::from(matches!(plane, Plane::Kernel(_))));
        metrics.ktls_available.set(i64::from(settings.tls.as_ref().is_some_and(|t| t.ktls)));
        metrics.pasv_range.set(settings.cfg.pasv_range().map_or(0, |(lo, hi)| i64::from(hi - lo) + 1));
        Self {
            metrics,
            source,
            rates: Arc::default(),
            logs,
            authority,
            settings: RwLock::new(Arc::new(settings)),
            anon_root,
            plane,
            stop: tokio::sync::watch::Sender::new(Stop::Running),
            bans: crate::bans::Bans::default(),
            next_id: AtomicU64::new(1),
            conns: Mutex::default(),
        }
    }

    /// The settings in force now: a session takes them when it connects and
    /// at login (with its per-user overrides) and keeps them.
    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The configuration in force now (see [`Shared::settings`]).
    pub fn cfg(&self) -> Arc<Config> {
        Arc::clone(&self.settings().cfg)
    }

    /// Makes `settings` (re-read by SIGHUP) those of later sessions.
    pub fn set_settings(&self, settings: Settings) {
        self.metrics.pasv_range.set(settings.cfg.pasv_range().map_or(0, |(lo, hi)| i64::from(hi - lo) + 1));
        *self.settings.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(settings);
    }

    /// Where the shutdown is; sessions watch it with [`Shared::stopping`].
    pub fn stop_state(&self) -> Stop {
        *self.stop.borrow()
    }

    /// A receiver that wakes when the shutdown advances.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<Stop> {
        self.stop.subscribe()
    }

    /// The kernel data plane, when it is in use.
    pub fn kernel(&self) -> Option<&Dataplane> {
        match &self.plane {
            Plane::Kernel(dp) => Some(dp),
            Plane::Userspace(_) => None,
        }
    }

    /// One line on the data plane and its counters, for STAT and the shutdown log.
    pub fn plane_status(&self) -> String {
        match &self.plane {
            Plane::Userspace(why) => format!("Data plane: userspace ({why})"),
            Plane::Kernel(dp) => match dp.counters() {
                Ok(c) => {
                    let list: Vec<String> = c.iter().map(|(k, v)| format!("{}={v}", k.name())).collect();
                    format!("Data plane: eBPF on {} ({})", dp.interfaces().join(","), list.join(" "))
                }
                Err(e) => format!("Data plane: eBPF (counters unreadable: {e})"),
            },
        }
    }

    /// Control connections open now.
    pub fn clients(&self) -> u32 {
        self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).total
    }

    /// Counts a new control connection, or says which vsftpd refusal applies.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut c = self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let cfg = self.cfg();
        let max = cfg.max_clients;
        if max != 0 && c.total >= max {
            return Err("There are too many connected users, please try later.");
        }
        let per_ip = cfg.max_per_ip;
        let n = c.per_ip.get(&ip).copied().unwrap_or(0);
        if per_ip != 0 && n >= per_ip {
            return Err("There are too many connections from your internet address.");
        }
        let net = (cfg.ftpd_max_per_prefix != 0).then(|| crate::bans::network(&cfg, ip));
        if let Some(net) = net {
            let have = c.per_net.get(&net).copied().unwrap_or(0);
            if have >= cfg.ftpd_max_per_prefix {
                return Err(TOO_MANY_FROM_NETWORK);
            }
            c.per_net.insert(net, have + 1);
        }
        c.total += 1;
        c.per_ip.insert(ip, n + 1);
        Ok(Slot { shared: Arc::clone(self), ip, net })
    }

    /// Counts a failed login from `ip` (`ftpd_ban_enable`), and bans its
    /// network when this failure is one too many: in the kernel too, when
    /// the kernel plane runs. Logged once per ban.
    pub fn login_failed(&self, ip: IpAddr) {
        let cfg = self.cfg();
        if !cfg.ftpd_ban_enable {
            return;
        }
        // validate() accepted the list.
        let allow = crate::net::Allow::parse(&cfg.ftpd_ban_allow).unwrap_or_default();
        let Some((net, time)) = self.bans.login_failed(&cfg, &allow, canonical(ip), std::time::Instant::now()) else {
            return;
        };
        let shown = crate::bans::show(&net, &cfg);
        let kernel = match self.kernel().map(|dp| dp.ban(net, time)) {
            None => "no (userspace plane)",
            Some(Ok(())) => "yes",
            Some(Err(e)) => {
                warn!(network = %shown, error = %e, "ban not written to the kernel; refused after accept() only");
                "no (map update failed)"
            }
        };
        warn!(
            network = %shown,
            fails = cfg.ftpd_ban_fails,
            window_s = cfg.ftpd_ban_window,
            seconds = time.as_secs(),
            kernel,
            "client network banned: too many failed logins"
        );
        self.metrics.bans_total.inc();
    }

    /// Lifts the bans that have expired, in the kernel too, with one log
    /// line each saying how much they refused.
    fn sweep_bans(&self) {
        let cfg = self.cfg();
        for lifted in self.bans.sweep(&cfg, std::time::Instant::now()) {
            let dropped = self.kernel().and_then(|dp| dp.lift(&lifted.net)).unwrap_or(0);
            info!(
                network = %crate::bans::show(&lifted.net, &cfg),
                refused_after_accept = lifted.refused,
                syns_dropped = dropped,
                "ban lifted"
            );
        }
    }
}

/// SIGHUP: reads the configuration again (through the master, which also
/// decides later logins with it) with every file it names, makes it the
/// settings of later sessions, and gives running transfers and logged-in
/// users their new rate limits. Options that need a restart keep their
/// running values; their names are returned with the number of rate groups
/// whose limit changed. A file that does not read changes nothing.
/// Blocking: it waits for the master.
pub fn reload(shared: &Shared) -> Result<(usize, Vec<&'static str>), String> {
    let owners = crate::rates::owners(&shared.rates);
    let crate::privsep::Reloaded { mut cfg, limits, tls } = shared.authority.reload(&shared.source, &owners)?;
    let old = shared.cfg();
    let mut kept = old.keep_running_values(&mut cfg, crate::config::RESTART_ONLY);
    if shared.kernel().is_some() {
        kept.extend(old.keep_running_values(&mut cfg, crate::config::RESTART_ONLY_WITH_EBPF));
    }
    // With privilege separation the master read them as root.
    let files = match tls {
        Some(files) if cfg.ssl_enable => Some(files),
        _ => crate::tls::TlsFiles::read(&cfg)?,
    };
    let tls = files.map(|f| crate::tls::Tls::build(&cfg, &f)).transpose()?;
    let limits: HashMap<crate::rates::Owner, u64> = owners.into_iter().zip(limits).collect();
    shared.set_settings(Settings::derive(cfg, tls)?);
    Ok((crate::rates::apply(&shared.rates, limits), kept))
}

/// The 421 text for `ftpd_max_per_prefix`, in vsftpd's `max_per_ip` style.
const TOO_MANY_FROM_NETWORK: &str = "There are too many connections from your network.";

/// The 421 text for a banned network.
const BANNED: &str = "Too many failed logins from your network; try again later.";

/// A counted connection; dropping it frees the slot.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
    net: Option<ftpd_common::IpKey>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.shared.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
        if let Some(net) = &self.net
            && let Some(n) = c.per_net.get_mut(net)
        {
            *n -= 1;
            if *n == 0 {
                c.per_net.remove(net);
            }
        }
    }
}

/// Accepts control connections until `shutdown` resolves, then closes the
/// listener and ends the sessions (see [`drain`]).
pub async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    // SIGHUP: re-read the configuration and apply new rate limits, also to
    // transfers in progress (the master forwards the signal to this process).
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        let s = Arc::clone(&shared);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let s2 = Arc::clone(&s);
                match tokio::task::spawn_blocking(move || reload(&s2)).await {
                    Ok(Ok((n, kept))) => {
                        if !kept.is_empty() {
                            warn!(
                                options = kept.join(","),
                                "SIGHUP: needs a restart: {}; the running values stay in force",
                                kept.join(", ")
                            );
                        }
                        info!(groups = n, "SIGHUP: configuration re-read, rate limits applied");
                        // With privilege separation the master checks, as root.
                        if matches!(s.authority, crate::privsep::Authority::InProcess) {
                            for problem in crate::access::unservable_roots(&s.cfg(), &s.anon_root) {
                                warn!("reload: {problem}");
                            }
                        }
                    }
                    Ok(Err(e)) => warn!("SIGHUP: configuration not reloaded, the old one stays: {e}"),
                    Err(e) => warn!("SIGHUP: reload task failed: {e}"),
                }
            }
        });
    }
    if let Some(dp) = shared.kernel() {
        dp.spawn_log_reader();
    }
    if shared.kernel().is_some() {
        let s = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                if let Some(dp) = s.kernel() {
                    dp.sweep();
                }
            }
        });
    }
    {
        // Bans end on time in the kernel by themselves (XDP compares expiry
        // times); this removes them from both tables and logs each once.
        let s = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                s.sweep_bans();
            }
        });
    }
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (mut stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: log, back off briefly, keep serving.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = stream.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let ip = canonical(peer.ip());
        let _ = stream.set_nodelay(true);
        // Clients send ABOR as urgent data (Python's ftplib marks the whole line
        // MSG_OOB); inline, its last byte is not lost from the line.
        let _ = rustix::net::sockopt::set_socket_oobinline(&stream, true);
        let shared2 = Arc::clone(&shared);
        shared.metrics.sessions_total.inc();
        tokio::spawn(async move {
            if shared2.bans.refuses(&shared2.cfg(), ip, std::time::Instant::now()) {
                // Closed at once, never held: a banned client gets nothing to
                // wait on, and with the kernel plane its next SYNs are dropped.
                debug!(peer = %peer, "connection refused: banned network");
                crate::metrics::Metrics::inc(&shared2.metrics.refused, "reason", "banned");
                session::refuse(&mut stream, BANNED, false).await;
                return;
            }
            let slot = match shared2.admit(ip) {
                Ok(s) => s,
                Err(text) => {
                    warn!(peer = %peer, reason = text, "connection refused");
                    let reason = if text == TOO_MANY_FROM_NETWORK {
                        "max_per_prefix"
                    } else if text.contains("internet address") {
                        "max_per_ip"
                    } else {
                        "max_clients"
                    };
                    crate::metrics::Metrics::inc(&shared2.metrics.refused, "reason", reason);
                    let settings = shared2.settings();
                    match settings.tls.as_ref().filter(|_| settings.cfg.implicit_ssl) {
                        Some(tls) => session::refuse_tls(stream, tls, text).await,
                        None => session::refuse(&mut stream, text, shared2.kernel().is_some()).await,
                    }
                    return;
                }
            };
            let id = shared2.next_id.fetch_add(1, Ordering::Relaxed);
            // Every event of the session, whatever emits it, carries the
            // session id and the peer (as span fields, also in --log-json).
            let span = tracing::info_span!("session", id, %peer);
            async {
                debug!(session = id, peer = %peer, "connected");
                session::Session::new(Arc::clone(&shared2), id, stream, peer, local).run().await;
                info!(session = id, peer = %peer, "disconnected");
            }
            .instrument(span)
            .await;
            drop(slot);
        });
    }
    drop(listener);
    drain(&shared).await;
    info!("{}", shared.plane_status());
}

/// Signals within this time of the first are the same stop request.
const SAME_SIGNAL: Duration = Duration::from_millis(250);

/// Ends the sessions once the listener is closed: idle sessions get `421`
/// at once, running transfers may finish for `ftpd_shutdown_timeout`
/// seconds (a second SIGTERM or SIGINT cuts that short), then every session
/// left ends its transfer through the abort path (an upload is never
/// published half written) and gets `421`.
async fn drain(shared: &Shared) {
    use tokio::signal::unix::{SignalKind, signal};
    let limit = shared.cfg().ftpd_shutdown_timeout;
    let open = shared.clients();
    info!(sessions = open, ftpd_shutdown_timeout = limit, "listener closed; ending the sessions");
    let again = async {
        // What reaches both processes at once (Ctrl-C in a terminal signals
        // the process group; the master forwards its copy) is one request:
        // listen only after a moment, and only for signals from then on (a
        // new listener does not see earlier ones).
        tokio::time::sleep(SAME_SIGNAL).await;
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! {
                    _ = t.recv() => {},
                    _ = i.recv() => {},
                }
            }
            _ => std::future::pending().await,
        }
    };
    let all_gone = async {
        while shared.clients() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::pin!(all_gone);
    let gone = if limit == 0 {
        false
    } else {
        shared.stop.send_replace(Stop::Draining);
        tokio::select! {
            () = &mut all_gone => true,
            () = tokio::time::sleep(Duration::from_secs(u64::from(limit))) => {
                info!(sessions = shared.clients(), "ftpd_shutdown_timeout is over; ending the transfers left");
                false
            }
            () = again => {
                info!(sessions = shared.clients(), "second signal: ending the transfers now");
                false
            }
        }
    };
    if gone {
        return;
    }
    shared.stop.send_replace(Stop::Now);
    // Each session answers and cleans up (an upload's temporary file) in
    // far less than this; a client that does not read its 421 is not waited for.
    if tokio::time::timeout(Duration::from_secs(2), all_gone).await.is_err() {
        warn!(sessions = shared.clients(), "sessions still open after the shutdown; closing them");
    }
}
