//! Bounds-checked header access. Every read goes through `ptr_at`, which the
//! verifier needs to see before any dereference of packet memory.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use ftpd_common::IpKey;

const ETH_HDR_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const IPV6_HDR_LEN: usize = 40;

/// What the programs need to know about a TCP packet.
pub struct Tcp {
    /// Source address (IPv4 as v4-mapped IPv6).
    pub src: IpKey,
    /// Destination port, host byte order.
    pub dport: u16,
    /// Length of the IP packet (header and payload), from the IP header.
    pub l3_len: u16,
    /// SYN without ACK: a new connection attempt.
    pub syn_only: bool,
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, ()> {
    // SAFETY: `ptr_at` checked that `offset..offset + size_of::<T>()` lies inside
    // the packet; unaligned because packet headers carry no alignment promise.
    Ok(unsafe { ptr_at::<T>(ctx, offset)?.read_unaligned() })
}

/// Parses Ethernet, then IPv4 (with options) or IPv6 (no extension headers), then
/// the TCP header. Anything else is `Err`, and the caller passes it.
#[inline(always)]
pub fn tcp(ctx: &XdpContext) -> Result<Tcp, ()> {
    let ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    let (l4_off, l3_len, src) = match ethertype {
        ETH_P_IP => {
            let ver_ihl: u8 = read(ctx, ETH_HDR_LEN)?;
            let ihl = usize::from(ver_ihl & 0x0f) * 4;
            if ihl < 20 {
                return Err(());
            }
            let proto: u8 = read(ctx, ETH_HDR_LEN + 9)?;
            if proto != IPPROTO_TCP {
                return Err(());
            }
            let total = u16::from_be(read::<u16>(ctx, ETH_HDR_LEN + 2)?);
            let src: [u8; 4] = read(ctx, ETH_HDR_LEN + 12)?;
            (ETH_HDR_LEN + ihl, total, IpKey::v4(src))
        }
        ETH_P_IPV6 => {
            let next: u8 = read(ctx, ETH_HDR_LEN + 6)?;
            if next != IPPROTO_TCP {
                return Err(());
            }
            let payload = u16::from_be(read::<u16>(ctx, ETH_HDR_LEN + 4)?);
            let src: [u8; 16] = read(ctx, ETH_HDR_LEN + 8)?;
            (ETH_HDR_LEN + IPV6_HDR_LEN, payload.saturating_add(IPV6_HDR_LEN as u16), IpKey { addr: src })
        }
        _ => return Err(()),
    };
    let dport = u16::from_be(read::<u16>(ctx, l4_off + 2)?);
    let flags: u8 = read(ctx, l4_off + 13)?;
    let syn_only = flags & 0x02 != 0 && flags & 0x10 == 0;
    Ok(Tcp { src, dport, l3_len, syn_only })
}
