//! Bounds-checked header access. Every read goes through `ptr_at`, which the
//! verifier needs to see before any dereference of packet memory.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

const ETH_HDR_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const IPV6_HDR_LEN: usize = 40;

/// What the programs need to know about a TCP packet.
pub struct TcpDest {
    /// Destination port, host byte order.
    pub dport: u16,
    /// Length of the IP packet (header and payload), from the IP header.
    pub l3_len: u16,
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
/// the TCP destination port. Anything else is `Err`, and the caller passes it.
#[inline(always)]
pub fn tcp_dest(ctx: &XdpContext) -> Result<TcpDest, ()> {
    let ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    let (l4_off, l3_len) = match ethertype {
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
            (ETH_HDR_LEN + ihl, total)
        }
        ETH_P_IPV6 => {
            let next: u8 = read(ctx, ETH_HDR_LEN + 6)?;
            if next != IPPROTO_TCP {
                return Err(());
            }
            let payload = u16::from_be(read::<u16>(ctx, ETH_HDR_LEN + 4)?);
            (ETH_HDR_LEN + IPV6_HDR_LEN, payload.saturating_add(IPV6_HDR_LEN as u16))
        }
        _ => return Err(()),
    };
    let dport = u16::from_be(read::<u16>(ctx, l4_off + 2)?);
    Ok(TcpDest { dport, l3_len })
}
