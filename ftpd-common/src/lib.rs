//! Types shared by the kernel programs (`ftpd-ebpf`) and the daemon (`ftpd-user`).
//!
//! Everything here is `#[repr(C)]` or a plain integer so that both sides agree on
//! the byte layout of every map key and value without a serialisation step. The
//! kernel side builds this crate without features (`no_std`, no aya); the daemon
//! turns on `user`, which adds the `aya::Pod` impls it needs to touch the maps.
#![no_std]

/// Name of the XDP program in the object file; the daemon looks it up by this name.
pub const XDP_PROGRAM: &str = "ftpd_xdp";
/// Name of the sock_ops program (attached to ftpd's cgroup).
pub const SOCKOPS_PROGRAM: &str = "ftpd_sockops";

/// `HashMap<u32 data port, Pinhole>`: passive ports open to one client.
pub const PASV_ALLOW_MAP: &str = "PASV_ALLOW";
/// `HashMap<IpKey, u64>`: established control connections per client IP.
pub const CONN_COUNT_MAP: &str = "CONN_COUNT";
/// `Array<u64>` with one slot: established control connections in all.
pub const CONN_TOTAL_MAP: &str = "CONN_TOTAL";
/// `HashMap<IpKey, u64>`: established control connections per client
/// network (the key masked with `ConfigSlot::PrefixV4`/`PrefixV6`).
pub const PREFIX_COUNT_MAP: &str = "PREFIX_COUNT";
/// `HashMap<IpKey, Ban>`: banned client networks (masked keys, as above).
pub const BANS_MAP: &str = "BANS";

/// A client address as a map key: IPv6 as is, IPv4 as the v4-mapped IPv6
/// address (`::ffff:a.b.c.d`), so one map serves both families and a
/// dual-stack listener's v4-mapped peers land on the same key as plain IPv4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpKey {
    /// The 16 address bytes in network order.
    pub addr: [u8; 16],
}

impl IpKey {
    /// The key for an IPv4 address given in network byte order bytes.
    pub const fn v4(octets: [u8; 4]) -> Self {
        Self { addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3]] }
    }
}

impl IpKey {
    /// Whether this is an IPv4 address (v4-mapped).
    pub const fn is_v4(&self) -> bool {
        let a = &self.addr;
        a[0] == 0
            && a[1] == 0
            && a[2] == 0
            && a[3] == 0
            && a[4] == 0
            && a[5] == 0
            && a[6] == 0
            && a[7] == 0
            && a[8] == 0
            && a[9] == 0
            && a[10] == 0xff
            && a[11] == 0xff
    }

    /// The key of the client network this address belongs to: the first
    /// `v4` bits of an IPv4 address, or the first `v6` bits of an IPv6 one,
    /// the rest zeroed. One function for the kernel and the daemon, so a
    /// ban or a count written by one is found by the other.
    ///
    /// Done on two big-endian u64 halves, not byte by byte: a byte loop
    /// unrolls to hundreds of BPF instructions at every call site.
    #[inline(always)]
    pub fn masked(&self, v4: u32, v6: u32) -> Self {
        let a = &self.addr;
        let hi = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
        let lo = u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
        // `is_v4`, on the halves.
        let v4_mapped = hi == 0 && lo >> 32 == 0xffff;
        let bits = if v4_mapped {
            96 + if v4 > 32 { 32 } else { v4 }
        } else if v6 > 128 {
            128
        } else {
            v6
        };
        let (hi, lo) = if bits >= 64 { (hi, lo & top_bits(bits - 64)) } else { (hi & top_bits(bits), 0) };
        let (h, l) = (hi.to_be_bytes(), lo.to_be_bytes());
        Self { addr: [h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]] }
    }
}

/// A u64 with its `n` leading bits set (`n` ≤ 64).
#[inline(always)]
const fn top_bits(n: u32) -> u64 {
    if n == 0 {
        0
    } else if n >= 64 {
        u64::MAX
    } else {
        u64::MAX << (64 - n)
    }
}

const _: () = assert!(core::mem::size_of::<IpKey>() == 16);

/// A ban on a client network: its control-port SYNs are dropped until
/// `expires_ns` (CLOCK_MONOTONIC, `bpf_ktime_get_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    /// When the ban ends; the kernel compares, the daemon removes the entry later.
    pub expires_ns: u64,
    /// SYNs dropped under this ban (added to by XDP), for the daemon's
    /// one log line when the ban ends.
    pub drops: u64,
}

const _: () = assert!(core::mem::size_of::<Ban>() == 16);

/// Which passive pinhole: a data port and the one client allowed through it.
/// Several sessions may wait on one port, each for its own client address;
/// [`PinholeKey::ANY`] as the client admits any (`pasv_promiscuous=YES`,
/// and then the session has the port to itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PinholeKey {
    /// The data port, host byte order.
    pub port: u32,
    /// Explicit padding before the address.
    pub _pad: u32,
    /// The client allowed through.
    pub client: IpKey,
}

impl PinholeKey {
    /// "Any client": `::`, which is never the source of a packet.
    pub const ANY: IpKey = IpKey { addr: [0; 16] };
}

const _: () = assert!(core::mem::size_of::<PinholeKey>() == 24);

/// A one-shot passive pinhole: open until `expires_ns` (CLOCK_MONOTONIC,
/// `bpf_ktime_get_ns`), or its data connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pinhole {
    /// When the pinhole closes by itself.
    pub expires_ns: u64,
}

const _: () = assert!(core::mem::size_of::<Pinhole>() == 8);

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` integers and arrays, no padding (asserted above).
unsafe impl aya::Pod for IpKey {}
#[cfg(feature = "user")]
// SAFETY: one u64.
unsafe impl aya::Pod for Pinhole {}
#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` integers and an array, no padding (`_pad` is explicit; size asserted).
unsafe impl aya::Pod for PinholeKey {}
#[cfg(feature = "user")]
// SAFETY: two u64s, no padding (asserted above).
unsafe impl aya::Pod for Ban {}

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
    /// SYNs to the control port from an IP with this many established
    /// control connections are dropped (`ftpd_kernel_max_per_ip`; 0: off).
    HardPerIp = 3,
    /// SYNs to the control port are dropped when this many control
    /// connections are established in all (0: off).
    HardTotal = 4,
    /// 1: passive pinholes are enforced (the kernel data plane owns the range).
    PinholesOn = 5,
    /// Bits of an IPv4 address that make one client network (`ftpd_prefix_v4`).
    PrefixV4 = 6,
    /// Bits of an IPv6 address that make one client network (`ftpd_prefix_v6`).
    PrefixV6 = 7,
    /// SYNs to the control port from a client network with this many
    /// established control connections are dropped (0: off, and sock_ops
    /// does not count per network).
    HardPerPrefix = 8,
}

/// Number of slots in `CONFIG`; the kernel map is declared with this size.
pub const CONFIG_SLOTS: u32 = 9;

/// Slots of the per-CPU `STATS` array. The daemon sums each slot over all CPUs.
///
/// Counting per CPU avoids atomics, which the BPF target lacks in the form
/// `core` exposes: `bpfel-unknown-none` has no compare-and-swap, so
/// `AtomicU64::fetch_add` does not exist there, and an atomic load makes LLVM
/// fail to select an instruction.
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
    /// SYNs to the passive range let through an open pinhole.
    PinholePass = 4,
    /// SYNs to the passive range dropped (no pinhole, wrong IP, expired, reused).
    PinholeDrop = 5,
    /// Control-port SYNs dropped: the IP is at `ftpd_kernel_max_per_ip`.
    CapDropPerIp = 6,
    /// Control-port SYNs dropped: the server is at its hard total.
    CapDropTotal = 7,
    /// Control connections established (counted by sock_ops).
    ControlEstablished = 8,
    /// Control connections closed.
    ControlClosed = 9,
    /// Data connections established on a pinhole (which then closed).
    PinholeUsed = 10,
    /// Control-port SYNs dropped: the client network is banned.
    BanDrop = 11,
    /// Control-port SYNs dropped: the client network is at its hard cap.
    CapDropPerPrefix = 12,
}

/// Number of slots in `STATS`; the kernel map is declared with this size.
pub const COUNTER_SLOTS: u32 = 13;

impl Counter {
    /// Every counter, in slot order, so the daemon can export all of them without
    /// a list that could drift from the enum.
    pub const ALL: [Self; COUNTER_SLOTS as usize] = [
        Self::ControlPackets,
        Self::ControlBytes,
        Self::PasvPackets,
        Self::PasvBytes,
        Self::PinholePass,
        Self::PinholeDrop,
        Self::CapDropPerIp,
        Self::CapDropTotal,
        Self::ControlEstablished,
        Self::ControlClosed,
        Self::PinholeUsed,
        Self::BanDrop,
        Self::CapDropPerPrefix,
    ];

    /// Stable name used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ControlPackets => "control_packets",
            Self::ControlBytes => "control_bytes",
            Self::PasvPackets => "pasv_packets",
            Self::PasvBytes => "pasv_bytes",
            Self::PinholePass => "pinhole_pass",
            Self::PinholeDrop => "pinhole_drop",
            Self::CapDropPerIp => "cap_drop_per_ip",
            Self::CapDropTotal => "cap_drop_total",
            Self::ControlEstablished => "control_established",
            Self::ControlClosed => "control_closed",
            Self::PinholeUsed => "pinhole_used",
            Self::BanDrop => "ban_drop",
            Self::CapDropPerPrefix => "cap_drop_per_prefix",
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

    #[test]
    fn masks_keep_the_network_bits_only() {
        let v4 = IpKey::v4([192, 0, 2, 77]);
        assert_eq!(v4.masked(32, 64), v4);
        assert_eq!(v4.masked(24, 64), IpKey::v4([192, 0, 2, 0]));
        assert_eq!(v4.masked(20, 64), IpKey::v4([192, 0, 0, 0]));
        assert_eq!(v4.masked(0, 64), IpKey::v4([0, 0, 0, 0]));
        let v6 = IpKey { addr: [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 2, 0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3, 4] };
        assert_eq!(v6.masked(24, 64).addr, [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(v6.masked(24, 60).addr, [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(v6.masked(24, 128), v6);
        assert!(v4.is_v4() && !v6.is_v4());
    }
}
