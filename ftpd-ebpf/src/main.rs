//! ftpd's kernel programs. Entry points only; each calls a `try_*` function so
//! that `?` works, and fails open: a packet this code does not understand is
//! left to the kernel stack and the daemon (`XDP_PASS`). Drops happen only on
//! purpose: a SYN to the passive range without a pinhole, or a SYN to the
//! control port from a banned client network, or from an IP, a network (or
//! a server) at its hard cap.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod maps;
mod packet;
mod sockops;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, macros::xdp, programs::XdpContext};
// Rare events only (a drop on purpose), and off unless the daemon turns them
// on (`ftpd_ebpf_log`, or RUST_LOG enabling `ftpd_ebpf` at debug): it sets
// `AYA_LOG_LEVEL` before load, and a disabled level costs one global read.
use aya_log_ebpf::debug;
use ftpd_common::{ConfigSlot, Counter, PinholeKey};

use crate::maps::{BANS, CONN_COUNT, CONN_TOTAL, PASV_ALLOW, PREFIX_COUNT, config, count, network};

/// Counts TCP packets to the control port and the passive range, and drops
/// the SYNs that the pinholes and the hard caps forbid.
#[xdp]
pub fn ftpd_xdp(ctx: XdpContext) -> u32 {
    try_ftpd_xdp(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

fn try_ftpd_xdp(ctx: &XdpContext) -> Result<u32, ()> {
    let tcp = packet::tcp(ctx)?;
    let port = u32::from(tcp.dport);
    let control = config(ConfigSlot::ControlPort);
    if control != 0 && port == control {
        count(Counter::ControlPackets, 1);
        count(Counter::ControlBytes, u64::from(tcp.l3_len));
        if tcp.syn_only {
            let net = network(&tcp.src);
            if let Some(ban) = BANS.get_ptr_mut(&net) {
                let now = unsafe { bpf_ktime_get_ns() };
                // SAFETY: `ban` comes from the map lookup and points to a live `Ban`.
                let expires = maps::read(unsafe { &raw const (*ban).expires_ns });
                if now < expires {
                    // SAFETY: as above; the drop count is shared by all CPUs.
                    maps::add(unsafe { &raw mut (*ban).drops }, 1);
                    count(Counter::BanDrop, 1);
                    debug!(ctx, "SYN dropped: {:i} is in a banned network", tcp.src.addr);
                    return Ok(xdp_action::XDP_DROP);
                }
            }
            let per_ip = u64::from(config(ConfigSlot::HardPerIp));
            // SAFETY: map values are plain u64 counters.
            let have = unsafe { CONN_COUNT.get(&tcp.src) }.map_or(0, |p| maps::read(p));
            if per_ip != 0 && have >= per_ip {
                count(Counter::CapDropPerIp, 1);
                debug!(ctx, "SYN dropped: {:i} is at its connection cap", tcp.src.addr);
                return Ok(xdp_action::XDP_DROP);
            }
            let per_net = u64::from(config(ConfigSlot::HardPerPrefix));
            if per_net != 0 {
                // SAFETY: map values are plain u64 counters.
                let have = unsafe { PREFIX_COUNT.get(&net) }.map_or(0, |p| maps::read(p));
                if have >= per_net {
                    count(Counter::CapDropPerPrefix, 1);
                    debug!(ctx, "SYN dropped: the network of {:i} is at its connection cap", tcp.src.addr);
                    return Ok(xdp_action::XDP_DROP);
                }
            }
            let total = u64::from(config(ConfigSlot::HardTotal));
            let all = CONN_TOTAL.get_ptr(0).map_or(0, |p| maps::read(p));
            if total != 0 && all >= total {
                count(Counter::CapDropTotal, 1);
                debug!(ctx, "SYN dropped: the server is at its connection cap");
                return Ok(xdp_action::XDP_DROP);
            }
        }
        return Ok(xdp_action::XDP_PASS);
    }
    let lo = config(ConfigSlot::PasvMin);
    let hi = config(ConfigSlot::PasvMax);
    if lo == 0 || port < lo || port > hi {
        return Ok(xdp_action::XDP_PASS);
    }
    count(Counter::PasvPackets, 1);
    count(Counter::PasvBytes, u64::from(tcp.l3_len));
    if !tcp.syn_only || config(ConfigSlot::PinholesOn) == 0 {
        return Ok(xdp_action::XDP_PASS);
    }
    // The client's own pinhole on this port, else one for any client.
    let mut key = PinholeKey { port, _pad: 0, client: tcp.src };
    // SAFETY: the value is a plain `Pinhole`, copied out at once.
    let mut open = unsafe { PASV_ALLOW.get(&key) }.copied();
    if open.is_none() {
        key.client = PinholeKey::ANY;
        // SAFETY: as above.
        open = unsafe { PASV_ALLOW.get(&key) }.copied();
    }
    let allowed = match open {
        Some(p) => {
            let now = unsafe { bpf_ktime_get_ns() };
            p.expires_ns == 0 || now <= p.expires_ns
        }
        None => false,
    };
    if allowed {
        count(Counter::PinholePass, 1);
        Ok(xdp_action::XDP_PASS)
    } else {
        count(Counter::PinholeDrop, 1);
        Ok(xdp_action::XDP_DROP)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
