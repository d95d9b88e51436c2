//! What every session sees: the settings in force, the data plane, the
//! process split's handle, rates, metrics, bans and the connection counts.
//! Below the session and the handlers; the server builds it.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock, atomic::AtomicU64},
};

use tracing::{info, warn};

use crate::{
    config::Config, dataplane::Dataplane, net::canonical, privsep::Authority, settings::Settings, xferlog::Logs,
};

/// Why a new control connection is refused. The one decision gives the 421
/// text, the `reason` label of `ftpd_connections_refused_total` and the log
/// line, so that a new cap (the fleet's shared ones) is one variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_clients`.
    MaxClients,
    /// `max_per_ip`.
    MaxPerIp,
    /// `ftpd_max_per_prefix`.
    MaxPerPrefix,
    /// The client's network is banned (`ftpd_ban_enable`).
    Banned,
}

impl Refusal {
    /// The 421 text (vsftpd's, where vsftpd has the limit).
    pub fn text(self) -> &'static str {
        match self {
            Self::MaxClients => "There are too many connected users, please try later.",
            Self::MaxPerIp => "There are too many connections from your internet address.",
            Self::MaxPerPrefix => "There are too many connections from your network.",
            Self::Banned => "Too many failed logins from your network; try again later.",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::MaxClients => "max_clients",
            Self::MaxPerIp => "max_per_ip",
            Self::MaxPerPrefix => "max_per_prefix",
            Self::Banned => "banned",
        }
    }
}

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
    pub(crate) stop: tokio::sync::watch::Sender<Stop>,
    /// Failed logins per client network and the bans they started.
    pub bans: crate::bans::Bans,
    pub(crate) next_id: AtomicU64,
    conns: Mutex<Conns>,
    /// HASH commands running, per client address and in all.
    pub hashing: crate::slots::HashSlots,
    /// Directory listings running, per client address and per file worker.
    pub listings: Arc<crate::slots::Listings>,
    /// The fleet's shared counts (`ftpd_cluster_redis`), if this node is in one.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The passive ports in use and the sessions waiting on each.
    pub passive: Arc<crate::data::PassivePorts>,
    /// The uploads running, which give each other turns.
    pub uploads: crate::data::Uploads,
    /// Where each PASV starts its scan of the port range.
    pub(crate) pasv_seeds: PasvSeeds,
}

/// Starting points for PASV's scan of the port range: a different one for
/// each call, also within one session and one second, so that sessions
/// opening ports at once do not all try the same port first.
#[derive(Debug, Default)]
pub(crate) struct PasvSeeds(AtomicU64);

impl PasvSeeds {
    /// The next seed for session `id`.
    pub(crate) fn next(&self, id: u64) -> u64 {
        let call = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (id ^ call.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ crate::fs::now_secs().unsigned_abs()
    }
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
        let cfg = &settings.cfg;
        let cluster = (!cfg.ftpd_cluster_redis.is_empty())
            .then(|| {
                let node = if cfg.ftpd_cluster_node.is_empty() {
                    crate::cluster::default_node()
                } else {
                    cfg.ftpd_cluster_node.clone()
                };
                let lease = std::time::Duration::from_secs(u64::from(cfg.ftpd_cluster_lease));
                crate::cluster::Cluster::new(&cfg.ftpd_cluster_redis, node, lease)
                    .inspect_err(|e| warn!("{e}; limits hold for this node alone"))
                    .ok()
                    .map(Arc::new)
            })
            .flatten();
        let node = match &cluster {
            Some(c) => Some(c.node.clone()),
            None => Some(cfg.ftpd_cluster_node.clone()).filter(|n| !n.is_empty()),
        };
        let metrics = crate::metrics::Metrics::new(node.as_deref());
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
            hashing: crate::slots::HashSlots::default(),
            listings: Arc::default(),
            cluster,
            passive: Arc::default(),
            uploads: crate::data::Uploads::default(),
            pasv_seeds: PasvSeeds::default(),
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

    /// Admits a new control connection from `ip` (counted until the slot is
    /// dropped), or says why not: a banned network first, then the caps.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let settings = self.settings();
        if self.bans.refuses(&settings.cfg, &settings.ban_allow, ip, std::time::Instant::now()) {
            return Err(Refusal::Banned);
        }
        let cfg = &settings.cfg;
        let mut c = self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let max = cfg.max_clients;
        if max != 0 && c.total >= max {
            return Err(Refusal::MaxClients);
        }
        let per_ip = cfg.max_per_ip;
        let n = c.per_ip.get(&ip).copied().unwrap_or(0);
        if per_ip != 0 && n >= per_ip {
            return Err(Refusal::MaxPerIp);
        }
        let net = (cfg.ftpd_max_per_prefix != 0).then(|| crate::bans::network(cfg, ip));
        if let Some(net) = net {
            let have = c.per_net.get(&net).copied().unwrap_or(0);
            if have >= cfg.ftpd_max_per_prefix {
                return Err(Refusal::MaxPerPrefix);
            }
            c.per_net.insert(net, have + 1);
        }
        c.total += 1;
        c.per_ip.insert(ip, n + 1);
        Ok(Slot { shared: Arc::clone(self), ip, net })
    }

    /// The fleet's word on a connection this node has admitted (`slot`):
    /// refused when the fleet as a whole is at `max_clients` or at
    /// `max_per_ip` for this address. Without a fleet, or with Redis out of
    /// reach, the node's own caps (already passed) are the whole answer.
    pub(crate) async fn admit_in_fleet(&self, slot: &Slot) -> Result<(), Refusal> {
        let Some(cluster) = &self.cluster else { return Ok(()) };
        let cfg = self.cfg();
        let (total, per_ip) = {
            let c = self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (c.total, c.per_ip.get(&slot.ip).copied().unwrap_or(0))
        };
        let (verdict, fell) = cluster.admit(slot.ip, total, per_ip, cfg.max_clients, cfg.max_per_ip).await;
        if fell {
            crate::cluster::Node::fell_back(self);
        }
        match verdict {
            crate::cluster::Verdict::Admit => Ok(()),
            crate::cluster::Verdict::MaxClients => Err(Refusal::MaxClients),
            crate::cluster::Verdict::MaxPerIp => Err(Refusal::MaxPerIp),
        }
    }

    /// Counts a failed login from `ip` (`ftpd_ban_enable`), and bans its
    /// network when this failure is one too many: in the kernel too, when
    /// the kernel plane runs. Logged once per ban.
    pub fn login_failed(&self, ip: IpAddr) {
        let cfg = self.cfg();
        if !cfg.ftpd_ban_enable {
            return;
        }
        let settings = self.settings();
        let allow = &settings.ban_allow;
        let Some((net, time)) = self.bans.login_failed(&cfg, allow, canonical(ip), std::time::Instant::now()) else {
            return;
        };
        let shown = crate::bans::show(&net, &cfg);
        // XDP cannot tell an allowed address from the rest of its network:
        // such a network is refused after accept() only, allow-list checked.
        let in_kernel = !allow.overlaps(&net, crate::bans::key_bits(&net, &cfg));
        let kernel = match self.kernel().filter(|_| in_kernel).map(|dp| dp.ban(net, time)) {
            None if self.kernel().is_some() => "no (the network holds ftpd_ban_allow addresses)",
            None => "no (userspace plane)",
            Some(Ok(())) => "yes",
            Some(Err(e)) => {
                warn!(network = %shown, error = %e, "ban not written to the kernel; refused after accept() only");
                "no (map update failed)"
            }
        };
        warn!(
            network = %shown,
            fails = cfg.ban_fails(),
            window_s = cfg.ftpd_ban_window,
            seconds = time.as_secs(),
            kernel,
            "client network banned: too many failed logins"
        );
        self.metrics.bans_total.inc();
        self.authority.note_ban(&net, time);
    }

    /// Lifts the bans that have expired, in the kernel too, with one log
    /// line each saying how much they refused.
    pub(crate) fn sweep_bans(&self) {
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

/// A counted connection; dropping it frees the slot.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
    net: Option<ftpd_common::IpKey>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(cluster) = &self.shared.cluster {
            cluster.touch(self.ip);
        }
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

impl crate::cluster::Node for Shared {
    fn conns(&self) -> (u32, HashMap<IpAddr, u32>) {
        let c = self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (c.total, c.per_ip.clone())
    }

    fn rate_groups(&self) -> Vec<(String, u64)> {
        crate::rates::fleet_groups(&self.rates)
    }

    fn set_fleet_flows(&self, others: &HashMap<String, u64>) {
        crate::rates::set_elsewhere(&self.rates, others);
    }

    fn fell_back(&self) {
        self.metrics.cluster_fallbacks.inc();
    }

    fn set_up(&self, up: bool) {
        self.metrics.cluster_up.set(i64::from(up));
    }
}

#[cfg(test)]
mod tests {
    use super::PasvSeeds;

    #[test]
    fn each_pasv_of_a_session_starts_its_scan_elsewhere() {
        let seeds = PasvSeeds::default();
        let mine: Vec<u64> = (0..4).map(|_| seeds.next(7)).collect();
        let mut distinct = mine.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), mine.len(), "{mine:?}");
        assert_ne!(seeds.next(8), seeds.next(9));
    }
}
