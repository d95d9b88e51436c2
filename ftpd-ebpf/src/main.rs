//! ftpd's kernel programs. Entry points only; each one calls a `try_*` function
//! so that `?` works, and fails open (`XDP_PASS`): a packet this code does not
//! understand is left to the kernel stack and the daemon.
#![no_std]
#![no_main]

mod packet;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use ftpd_common::{CONFIG_SLOTS, COUNTER_SLOTS, ConfigSlot, Counter};

/// Ports the daemon cares about, written once at startup (`ConfigSlot`).
#[map]
static CONFIG: Array<u32> = Array::with_max_entries(CONFIG_SLOTS, 0);

/// Per-CPU counters (`Counter`); the daemon sums them over CPUs.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Counts TCP packets addressed to the control port and to the passive range.
///
/// This program only observes; later programs in the same hook make drop
/// decisions. It never returns anything but `XDP_PASS`.
#[xdp]
pub fn ftpd_xdp(ctx: XdpContext) -> u32 {
    let _ = try_ftpd_xdp(&ctx);
    xdp_action::XDP_PASS
}

fn try_ftpd_xdp(ctx: &XdpContext) -> Result<(), ()> {
    let tcp = packet::tcp_dest(ctx)?;
    let control = config(ConfigSlot::ControlPort);
    if control != 0 && u32::from(tcp.dport) == control {
        count(Counter::ControlPackets, 1);
        count(Counter::ControlBytes, u64::from(tcp.l3_len));
        return Ok(());
    }
    let lo = config(ConfigSlot::PasvMin);
    let hi = config(ConfigSlot::PasvMax);
    let port = u32::from(tcp.dport);
    if lo != 0 && port >= lo && port <= hi {
        count(Counter::PasvPackets, 1);
        count(Counter::PasvBytes, u64::from(tcp.l3_len));
    }
    Ok(())
}

#[inline(always)]
fn config(slot: ConfigSlot) -> u32 {
    CONFIG.get(slot as u32).copied().unwrap_or(0)
}

#[inline(always)]
fn count(counter: Counter, n: u64) {
    if let Some(p) = STATS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from the map lookup and is valid for this
        // CPU's slot for the duration of the program; per-CPU, so no other
        // writer races with this one.
        unsafe { *p += n };
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
