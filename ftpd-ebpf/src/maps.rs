//! Every map, with why its size is what it is, and the counter helpers.

use core::intrinsics::AtomicOrdering;

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use ftpd_common::{Ban, CONFIG_SLOTS, COUNTER_SLOTS, ConfigSlot, Counter, IpKey, Pinhole, PinholeKey};

/// Ports and caps, written by the daemon at startup (`ConfigSlot`).
#[map]
pub static CONFIG: Array<u32> = Array::with_max_entries(CONFIG_SLOTS, 0);

/// Per-CPU counters (`Counter`); the daemon sums them over CPUs.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Open pinholes by data port and client: one per waiting session, and a
/// port may serve several sessions of different clients. 65 536 covers any
/// passive range with one session per port, or a small range with as many
/// sessions as `max_clients` allows.
#[map]
pub static PASV_ALLOW: HashMap<PinholeKey, Pinhole> = HashMap::with_max_entries(65_536, 0);

/// Established control connections per client. Not LRU: an eviction would
/// silently reset a count. 65 536 distinct clients at once is far beyond
/// `max_clients`' default of 2000.
#[map]
pub static CONN_COUNT: HashMap<IpKey, u64> = HashMap::with_max_entries(65_536, 0);

/// Established control connections per client network (`ftpd_prefix_v4`,
/// `ftpd_prefix_v6`), counted only with `ftpd_max_per_prefix`. Not LRU, and
/// sized like `CONN_COUNT`, for the same reasons.
#[map]
pub static PREFIX_COUNT: HashMap<IpKey, u64> = HashMap::with_max_entries(65_536, 0);

/// Banned client networks, written by the daemon. Not LRU: an eviction
/// would lift a ban early. When it is full the daemon still refuses the
/// network after accept().
#[map]
pub static BANS: HashMap<IpKey, Ban> = HashMap::with_max_entries(65_536, 0);

/// Established control connections in all (slot 0).
#[map]
pub static CONN_TOTAL: Array<u64> = Array::with_max_entries(1, 0);

/// A CONFIG slot (0 when unset).
#[inline(always)]
pub fn config(slot: ConfigSlot) -> u32 {
    CONFIG.get(slot as u32).copied().unwrap_or(0)
}

/// The client network of `key`, as `ftpd_prefix_v4`/`ftpd_prefix_v6` define it.
#[inline(always)]
pub fn network(key: &IpKey) -> IpKey {
    key.masked(config(ConfigSlot::PrefixV4), config(ConfigSlot::PrefixV6))
}

/// Adds to a per-CPU counter.
#[inline(always)]
pub fn count(counter: Counter, n: u64) {
    if let Some(p) = STATS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot from the map lookup; no other writer on this CPU.
        unsafe { *p += n };
    }
}

/// Reads a shared u64 (a plain volatile load: `atomic_load` does not lower on BPF).
#[inline(always)]
pub fn read(p: *const u64) -> u64 {
    // SAFETY: `p` comes from a map lookup and points to a live u64.
    unsafe { core::ptr::read_volatile(p) }
}

/// Atomically adds `n` (use `u64::MAX` to subtract one).
#[inline(always)]
pub fn add(p: *mut u64, n: u64) {
    // SAFETY: `p` comes from a map lookup; BPF_ATOMIC add is what this lowers to.
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, n) };
}
