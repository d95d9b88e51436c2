//! Types shared by the kernel programs (`ftpd-ebpf`) and the daemon (`ftpd-user`).
//!
//! Everything here is `#[repr(C)]` or a plain integer so that both sides agree on
//! the byte layout of every map key and value without a serialisation step. The
//! kernel side builds this crate without features (`no_std`, no aya); the daemon
//! turns on `user`, which adds the `aya::Pod` impls it needs to touch the maps.
#![no_std]

/// Name of the XDP program in the object file; the daemon looks it up by this name.
pub const XDP_PROGRAM: &str = "ftpd_xdp";

/// Name of the `Array<u32>` that tells the XDP program which ports matter.
pub const CONFIG_MAP: &str = "CONFIG";
/// Name of the `PerCpuArray<u64>` the XDP program counts into.
pub const STATS_MAP: &str = "STATS";

/// Slots of the `CONFIG` array. Ports are stored in host byte order.
///
/// A `u32` per slot (not a struct) so the control plane can update one value
/// without rewriting the others, and so an unset slot (0) is harmless: port 0
/// never appears in a TCP header.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSlot {
    /// The control-connection listening port (`listen_port`).
    ControlPort = 0,
    /// First port of the passive range (`pasv_min_port`).
    PasvMin = 1,
    /// Last port of the passive range, inclusive (`pasv_max_port`).
    PasvMax = 2,
}

/// Number of slots in `CONFIG`; the kernel map is declared with this size.
pub const CONFIG_SLOTS: u32 = 3;

/// Slots of the per-CPU `STATS` array. The daemon sums each slot over all CPUs.
///
/// Counting per CPU avoids atomics, which the BPF target lacks in the form
/// `core` exposes (see `design/ebpf.md` §9).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// TCP packets whose destination is the control port.
    ControlPackets = 0,
    /// Bytes of those packets (L3 and up, as seen by XDP).
    ControlBytes = 1,
    /// TCP packets whose destination port lies in the passive range.
    PasvPackets = 2,
    /// Bytes of those packets.
    PasvBytes = 3,
}

/// Number of slots in `STATS`; the kernel map is declared with this size.
pub const COUNTER_SLOTS: u32 = 4;

impl Counter {
    /// Every counter, in slot order, so the daemon can export all of them without
    /// a list that could drift from the enum.
    pub const ALL: [Self; COUNTER_SLOTS as usize] =
        [Self::ControlPackets, Self::ControlBytes, Self::PasvPackets, Self::PasvBytes];

    /// Stable name used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ControlPackets => "control_packets",
            Self::ControlBytes => "control_bytes",
            Self::PasvPackets => "pasv_packets",
            Self::PasvBytes => "pasv_bytes",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_slots_are_dense_and_in_range() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{} is out of order", c.name());
        }
    }
}
