//! The kernel data plane: loads the embedded eBPF object, attaches it, reads
//! its counters. The only module that knows about aya.
//!
//! The XDP links live inside `Ebpf`; dropping `Dataplane` detaches them, and
//! because they are bpf_links the kernel detaches them too if ftpd is killed.

use std::net::IpAddr;

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, PerCpuArray},
    programs::{Xdp, XdpMode},
};
use ftpd_common::{CONFIG_MAP, ConfigSlot, Counter, STATS_MAP, XDP_PROGRAM};
use tracing::info;

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

/// Loaded and attached kernel programs.
pub struct Dataplane {
    ebpf: Ebpf,
    interfaces: Vec<String>,
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
        let mut ebpf =
            Ebpf::load(bytes).context("loading the eBPF object (needs root, or CAP_BPF and CAP_NET_ADMIN)")?;
        {
            let mut conf: Array<_, u32> = Array::try_from(
                ebpf.map_mut(CONFIG_MAP).ok_or_else(|| anyhow!("map {CONFIG_MAP} missing from the object"))?,
            )?;
            let (lo, hi) = cfg.pasv_range().unwrap_or((0, 0));
            conf.set(ConfigSlot::ControlPort as u32, cfg.listen_port, 0)?;
            conf.set(ConfigSlot::PasvMin as u32, u32::from(lo), 0)?;
            conf.set(ConfigSlot::PasvMax as u32, u32::from(hi), 0)?;
        }
        let prog: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or_else(|| anyhow!("program {XDP_PROGRAM} missing from the object"))?
            .try_into()?;
        prog.load().context("the verifier rejected the XDP program")?;
        for iface in &interfaces {
            // Native mode where the driver has it; `lo` and some drivers only do generic.
            let first = if iface == "lo" { XdpMode::Skb } else { XdpMode::Default };
            if let Err(e) = prog.attach(iface, first) {
                if first == XdpMode::Skb {
                    return Err(e).with_context(|| format!("attaching XDP to {iface}"));
                }
                prog.attach(iface, XdpMode::Skb).with_context(|| {
                    format!("attaching XDP to {iface} (native mode failed: {e}; generic mode failed too)")
                })?;
            }
        }
        info!(interfaces = ?interfaces, "eBPF data plane loaded: XDP attached");
        Ok(Self { ebpf, interfaces })
    }

    /// The interfaces XDP is attached to.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// Every kernel counter, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        let stats: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(STATS_MAP).ok_or_else(|| anyhow!("map {STATS_MAP} missing"))?)?;
        Counter::ALL.iter().map(|&c| Ok((c, stats.get(&(c as u32), 0)?.iter().sum()))).collect()
    }
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
    for (name, addr) in interface_addresses()? {
        if (listen.is_unspecified() || addr == listen) && !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// `(interface, address)` for every address configured on this host.
fn interface_addresses() -> Result<Vec<(String, IpAddr)>> {
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
        out.push((name, ip));
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}
