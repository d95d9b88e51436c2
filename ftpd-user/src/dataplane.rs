//! The kernel data plane: loads the embedded eBPF object, attaches it, reads
//! its counters. The only module that knows about aya.
//!
//! The XDP links live inside `Ebpf`; dropping `Dataplane` detaches them, and
//! because they are bpf_links the kernel detaches them too if ftpd is killed.

use std::net::IpAddr;

use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{CgroupAttachMode, SockOps, Xdp, XdpMode},
};
use ftpd_common::{
    BANS_MAP, Ban, CONFIG_MAP, CONN_COUNT_MAP, ConfigSlot, Counter, IpKey, PASV_ALLOW_MAP, PREFIX_COUNT_MAP, Pinhole,
    PinholeKey, SOCKOPS_PROGRAM, STATS_MAP, XDP_PROGRAM,
};
use tracing::{info, warn};

use crate::config::Config;

/// The eBPF object built by `build.rs`, if this binary was built with the toolchain.
fn object() -> Option<&'static [u8]> {
    #[cfg(ftpd_ebpf_embedded)]
    {
        Some(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ftpd-ebpf.o")))
    }
    #[cfg(not(ftpd_ebpf_embedded))]
    {
        None
    }
}

/// Loaded and attached kernel programs, and the maps the daemon writes.
pub struct Dataplane {
    ebpf: Ebpf,
    interfaces: Vec<String>,
    cgroup: String,
    pinholes_on: bool,
    pasv: Mutex<HashMap<MapData, PinholeKey, Pinhole>>,
    conns: Mutex<HashMap<MapData, IpKey, u64>>,
    nets: Mutex<HashMap<MapData, IpKey, u64>>,
    bans: Mutex<HashMap<MapData, IpKey, Ban>>,
    /// The programs' settings: the hard caps change on SIGHUP.
    conf: Mutex<Array<MapData, u32>>,
    /// The kernel programs' log records (`ftpd_ebpf_log`), until the front
    /// takes it to read them.
    logger: Mutex<Option<aya_log::EbpfLogger<&'static dyn log::Log>>>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").field("interfaces", &self.interfaces).finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Loads the programs, writes the port configuration and attaches XDP to
    /// `interfaces`. Any failure is returned with advice; the caller decides
    /// whether that means the userspace fallback or refusing to start.
    pub fn load(cfg: &Config, interfaces: Vec<String>) -> Result<Self> {
        let bytes = object()
            .ok_or_else(|| anyhow!("this ftpd binary was built without its eBPF object (run `cargo xtask build`)"))?;
        if interfaces.is_empty() {
            bail!("no interface to attach XDP to (set ftpd_xdp_interfaces)");
        }
        // aya-log's level, patched into the object before load: 4 (debug)
        // lets the programs' `debug!` through, 0 silences them all.
        let log_on = cfg.ftpd_ebpf_log || tracing::enabled!(target: "ftpd_ebpf", tracing::Level::DEBUG);
        let level: u8 = if log_on { 4 } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .override_global("AYA_LOG_LEVEL", &level, true)
            .load(bytes)
            .context("loading the eBPF object (needs root, or CAP_BPF and CAP_NET_ADMIN)")?;
        let logger = if log_on {
            match aya_log::EbpfLogger::init(&mut ebpf) {
                Ok(l) => Some(l),
                Err(e) => {
                    warn!("kernel debug events unavailable (ftpd_ebpf_log): {e}");
                    None
                }
            }
        } else {
            None
        };
        let (lo, hi) = cfg.pasv_range().unwrap_or((0, 0));
        // Pinholes need a bounded range: with "any port" there is nothing to guard.
        let pinholes_on = lo != 0;
        {
            let mut conf: Array<_, u32> = Array::try_from(
                ebpf.map_mut(CONFIG_MAP).ok_or_else(|| anyhow!("map {CONFIG_MAP} missing from the object"))?,
            )?;
            conf.set(ConfigSlot::ControlPort as u32, u32::from(cfg.listen_port), 0)?;
            conf.set(ConfigSlot::PasvMin as u32, u32::from(lo), 0)?;
            conf.set(ConfigSlot::PasvMax as u32, u32::from(hi), 0)?;
            conf.set(ConfigSlot::HardPerIp as u32, cfg.kernel_max_per_ip(), 0)?;
            conf.set(ConfigSlot::HardTotal as u32, cfg.kernel_max_clients(), 0)?;
            conf.set(ConfigSlot::PinholesOn as u32, u32::from(pinholes_on), 0)?;
            // Fixed for the programs' lifetime (a reload does not rewrite
            // them): sock_ops must find at close the entry it counted in.
            conf.set(ConfigSlot::PrefixV4 as u32, cfg.ftpd_prefix_v4, 0)?;
            conf.set(ConfigSlot::PrefixV6 as u32, cfg.ftpd_prefix_v6, 0)?;
            conf.set(ConfigSlot::HardPerPrefix as u32, cfg.kernel_max_per_prefix(), 0)?;
        }
        if !pinholes_on {
            warn!(
                "no passive port range (pasv_min_port/pasv_max_port): passive pinholes are not enforced in the kernel"
            );
        }
        // sock_ops on our own cgroup: sockets inherit the cgroup of the
        // process that creates them, and our listeners are created by us.
        let cgroup = own_cgroup()?;
        let dir = std::fs::File::open(&cgroup)
            .with_context(|| format!("opening cgroup {cgroup} (cgroup v2 must be mounted at /sys/fs/cgroup)"))?;
        let sockops: &mut SockOps = ebpf
            .program_mut(SOCKOPS_PROGRAM)
            .ok_or_else(|| anyhow!("program {SOCKOPS_PROGRAM} missing from the object"))?
            .try_into()?;
        sockops.load().context("the verifier rejected the sock_ops program")?;
        sockops.attach(dir, CgroupAttachMode::Single).with_context(|| format!("attaching sock_ops to {cgroup}"))?;
        let prog: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or_else(|| anyhow!("program {XDP_PROGRAM} missing from the object"))?
            .try_into()?;
        prog.load().context("the verifier rejected the XDP program")?;
        for iface in &interfaces {
            // Native mode where the driver has it; `lo` and some drivers only
            // do generic, which runs after the socket buffer is built (slower,
            // but the same verdicts).
            let first = if iface == "lo" { XdpMode::Skb } else { XdpMode::Driver };
            let mode = match prog.attach(iface, first) {
                Ok(_) if first == XdpMode::Skb => "generic",
                Ok(_) => "native",
                Err(e) if first == XdpMode::Skb => return Err(e).with_context(|| format!("attaching XDP to {iface}")),
                Err(e) => {
                    prog.attach(iface, XdpMode::Skb).with_context(|| {
                        format!("attaching XDP to {iface} (native mode failed: {e}; generic mode failed too)")
                    })?;
                    "generic"
                }
            };
            info!(interface = %iface, mode = %mode, "XDP attached");
        }
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing from the object"))
        };
        let pasv = Mutex::new(HashMap::try_from(take(&mut ebpf, PASV_ALLOW_MAP)?)?);
        let conns = Mutex::new(HashMap::try_from(take(&mut ebpf, CONN_COUNT_MAP)?)?);
        let nets = Mutex::new(HashMap::try_from(take(&mut ebpf, PREFIX_COUNT_MAP)?)?);
        let bans = Mutex::new(HashMap::try_from(take(&mut ebpf, BANS_MAP)?)?);
        let conf = Mutex::new(Array::try_from(take(&mut ebpf, CONFIG_MAP)?)?);
        info!(interfaces = ?interfaces, cgroup = %cgroup, "eBPF data plane loaded: XDP and sock_ops attached");
        Ok(Self { ebpf, interfaces, cgroup, pinholes_on, pasv, conns, nets, bans, conf, logger: Mutex::new(logger) })
    }

    /// Forwards the kernel programs' log records to ftpd's log (target
    /// `ftpd_ebpf`), from a task on the current runtime; once, and only
    /// with `ftpd_ebpf_log`.
    pub fn spawn_log_reader(&self) {
        let Some(logger) = lock(&self.logger).take() else { return };
        // SAFETY: the fd is the logger's ring buffer map, owned by it and
        // open, unchanged, for as long as the AsyncFd owns the logger.
        let fd =
            match unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) } {
                Ok(fd) => fd,
                Err(e) => {
                    warn!("kernel debug events unavailable (ftpd_ebpf_log): {e}");
                    return;
                }
            };
        tokio::spawn(async move {
            let mut fd = fd;
            while let Ok(mut ready) = fd.readable_mut().await {
                ready.get_inner_mut().flush();
                ready.clear_ready();
            }
        });
    }

    /// Opens a one-shot pinhole for `client` to `port`, until `ttl` from now.
    /// Must happen before the 227/229 reply, or the client's SYN may arrive first.
    pub fn open_pinhole(
        &self,
        port: u16,
        client: std::net::IpAddr,
        ttl: std::time::Duration,
        any_ip: bool,
    ) -> Result<()> {
        if !self.pinholes_on {
            return Ok(());
        }
        let expires_ns = monotonic_ns().saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX));
        lock(&self.pasv)
            .insert(pinhole_key(port, client, any_ip), Pinhole { expires_ns }, 0)
            .context("PASV_ALLOW insert")?;
        Ok(())
    }

    /// Closes a pinhole that was not used (timeout, abort, a new PASV).
    pub fn close_pinhole(&self, port: u16, client: std::net::IpAddr, any_ip: bool) {
        let _ = lock(&self.pasv).remove(&pinhole_key(port, client, any_ip));
    }

    /// Established control connections from `ip`, as the kernel counts them.
    pub fn connections_from(&self, ip: std::net::IpAddr) -> u64 {
        lock(&self.conns).get(&crate::net::ip_key(ip), 0).unwrap_or(0)
    }

    /// Bans the client network `net` (a key masked as the kernel masks it)
    /// for `time`: XDP drops its control-port SYNs until then.
    pub fn ban(&self, net: IpKey, time: std::time::Duration) -> Result<()> {
        let expires_ns = monotonic_ns().saturating_add(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
        lock(&self.bans).insert(net, Ban { expires_ns, drops: 0 }, 0).context("BANS insert")?;
        Ok(())
    }

    /// Removes `net`'s ban; returns how many SYNs it dropped.
    pub fn lift(&self, net: &IpKey) -> Option<u64> {
        let mut m = lock(&self.bans);
        let drops = m.get(net, 0).ok().map(|b| b.drops);
        let _ = m.remove(net);
        drops
    }

    /// Open pinholes right now (a gauge for metrics and tests).
    pub fn open_pinholes(&self) -> usize {
        lock(&self.pasv).keys().count()
    }

    /// Drops per-IP entries that have fallen to zero, so that clients that
    /// came and went cannot fill the map.
    pub fn sweep(&self) {
        let mut m = lock(&self.conns);
        let zero: Vec<IpKey> = m.iter().filter_map(Result::ok).filter(|(_, v)| *v == 0).map(|(k, _)| k).collect();
        for k in zero {
            let _ = m.remove(&k);
        }
        drop(m);
        let mut m = lock(&self.nets);
        let zero: Vec<IpKey> = m.iter().filter_map(Result::ok).filter(|(_, v)| *v == 0).map(|(k, _)| k).collect();
        for k in zero {
            let _ = m.remove(&k);
        }
        drop(m);
        let now = monotonic_ns();
        let mut p = lock(&self.pasv);
        let stale: Vec<PinholeKey> = p
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, h)| h.expires_ns != 0 && h.expires_ns < now)
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            let _ = p.remove(&k);
        }
    }

    /// The cgroup sock_ops is attached to.
    pub fn cgroup(&self) -> &str {
        &self.cgroup
    }

    /// The interfaces XDP is attached to.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// Gives the XDP hard caps the values of a reloaded `cfg`: they follow
    /// `max_per_ip`, `max_clients` and `ftpd_max_per_prefix`, which a reload
    /// changes, so a raised limit is not still cut at the old cap in the
    /// kernel. (The prefix lengths stay: sock_ops must find, when a
    /// connection closes, the entry it counted when it opened.)
    pub fn set_caps(&self, cfg: &Config) -> Result<()> {
        let mut conf = lock(&self.conf);
        conf.set(ConfigSlot::HardPerIp as u32, cfg.kernel_max_per_ip(), 0)?;
        conf.set(ConfigSlot::HardTotal as u32, cfg.kernel_max_clients(), 0)?;
        conf.set(ConfigSlot::HardPerPrefix as u32, cfg.kernel_max_per_prefix(), 0)?;
        Ok(())
    }

    /// Every kernel counter, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        let stats: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(STATS_MAP).ok_or_else(|| anyhow!("map {STATS_MAP} missing"))?)?;
        Counter::ALL.iter().map(|&c| Ok((c, stats.get(&(c as u32), 0)?.iter().sum()))).collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// This process's cgroup v2 directory (`0::/path` in /proc/self/cgroup, under
/// the cgroup2 mount). On hosts that mount only cgroup v1 hierarchies, the
/// unified hierarchy still exists unmounted; ftpd mounts it at
/// `/run/ftpd/cgroup2` (a mount of the same hierarchy, no new cgroups).
fn own_cgroup() -> Result<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| anyhow!("no cgroup v2 entry in /proc/self/cgroup"))?
        .to_owned();
    let mount = match cgroup2_mount()? {
        Some(m) => m,
        None => {
            let m = "/run/ftpd/cgroup2";
            std::fs::create_dir_all(m).with_context(|| format!("creating {m}"))?;
            rustix::mount::mount("cgroup2", m, "cgroup2", rustix::mount::MountFlags::empty(), None)
                .with_context(|| format!("no cgroup2 mount on this host, and mounting one at {m} failed"))?;
            info!(at = m, "mounted the cgroup v2 hierarchy for sock_ops");
            m.to_owned()
        }
    };
    Ok(format!("{mount}{}", if path == "/" { "" } else { path.as_str() }))
}

/// Where cgroup2 is mounted, from /proc/self/mountinfo.
fn cgroup2_mount() -> Result<Option<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4).map(str::to_owned)).flatten()
    }))
}

/// The interfaces to attach to: `ftpd_xdp_interfaces` if set, else the ones
/// that carry the listening address (`lo` for loopback, all for the wildcard).
pub fn interfaces_for(cfg: &Config, listen: IpAddr) -> Result<Vec<String>> {
    if !cfg.ftpd_xdp_interfaces.is_empty() {
        return Ok(cfg.ftpd_xdp_interfaces.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect());
    }
    if listen.is_loopback() {
        return Ok(vec!["lo".into()]);
    }
    let mut out: Vec<String> = Vec::new();
    // An interface that is down carries no traffic to guard; attaching
    // generic XDP to it would only disturb its driver's offloads.
    for (name, addr, up) in interface_addresses()? {
        if up && (listen.is_unspecified() || addr == listen) && !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// `(interface, address, is up)` for every address configured on this host.
fn interface_addresses() -> Result<Vec<(String, IpAddr, bool)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getifaddrs");
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
        // SAFETY: ifa_addr is non-null and points to a sockaddr whose family
        // tells which larger struct it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let ip = match family {
            libc::AF_INET => {
                // SAFETY: family AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: family AF_INET6 means the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                IpAddr::from(sin6.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        let up = ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
        out.push((name, ip, up));
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The map key of the pinhole on `port` for `client` (or any client).
fn pinhole_key(port: u16, client: std::net::IpAddr, any_ip: bool) -> PinholeKey {
    let client = if any_ip { PinholeKey::ANY } else { crate::net::ip_key(client) };
    PinholeKey { port: u32::from(port), _pad: 0, client }
}
