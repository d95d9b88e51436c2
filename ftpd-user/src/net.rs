//! Addresses and sockets, below every process: the master binds source
//! ports with them; the data plane, the bans and the front compare and
//! mask client addresses with them.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::OwnedFd,
};

/// An IPv4 address stays itself; a v4-mapped IPv6 address becomes IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A TCP socket bound to `ip:port` (SO_REUSEADDR), not yet connected or
/// listening: what `connect_from_port_20` needs, and the control listener. Binding a port below 1024 needs privilege.
pub fn bind_source(ip: IpAddr, port: u16) -> io::Result<OwnedFd> {
    Ok(bound_socket(SocketAddr::new(ip, port))?.into())
}

/// A TCP socket (close-on-exec, as socket2 makes every socket) with
/// SO_REUSEADDR, bound to `addr`. IPV6_V6ONLY is left at the system's
/// default (`net.ipv6.bindv6only`, 0 on Linux), so a listener on `::` takes
/// IPv4 clients too, as vsftpd's `listen_ipv6` does.
pub fn bound_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

/// The map key for an address: IPv4 (and v4-mapped IPv6) as `::ffff:a.b.c.d`.
pub fn ip_key(ip: std::net::IpAddr) -> ftpd_common::IpKey {
    match canonical(ip) {
        std::net::IpAddr::V4(v4) => ftpd_common::IpKey::v4(v4.octets()),
        std::net::IpAddr::V6(v6) => ftpd_common::IpKey { addr: v6.octets() },
    }
}

/// A list of networks: `ftpd_ban_allow` (never banned), `ftpd_proxy_trusted`
/// (may send a PROXY header).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allow(Vec<(u128, u32)>);

impl Allow {
    /// Parses a comma- or space-separated list of addresses and CIDR networks.
    ///
    /// # Errors
    /// The first entry that is not an address or a network, with an example.
    pub fn parse(option: &str, text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in text.split([',', ' ', '\t']).filter(|s| !s.is_empty()) {
            let bad =
                || format!("{option}: {item:?} is not an address or a network (e.g. 192.0.2.0/24, 2001:db8::/32)");
            let (addr, len) = match item.split_once('/') {
                Some((a, l)) => (a, Some(l.parse::<u32>().map_err(|_| bad())?)),
                None => (item, None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| bad())?;
            let key = u128::from_be_bytes(ip_key(ip).addr);
            let v4 = canonical(ip).is_ipv4();
            let bits = match (v4, len) {
                (true, Some(l)) if l <= 32 => 96 + l,
                (false, Some(l)) if l <= 128 => l,
                (_, Some(_)) => return Err(bad()),
                (_, None) => 128,
            };
            out.push((key & mask(bits), bits));
        }
        Ok(Self(out))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` lies in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let key = u128::from_be_bytes(ip_key(ip).addr);
        self.0.iter().any(|&(net, bits)| key & mask(bits) == net)
    }

    /// Whether any address of the network `net` (a masked key, `bits` long
    /// in the 128-bit key space: 96 + the IPv4 length for IPv4) is listed.
    pub fn overlaps(&self, net: &ftpd_common::IpKey, bits: u32) -> bool {
        let key = u128::from_be_bytes(net.addr);
        self.0.iter().any(|&(allowed, len)| {
            let m = mask(len.min(bits));
            key & m == allowed & m
        })
    }
}

fn mask(bits: u32) -> u128 {
    if bits == 0 { 0 } else { u128::MAX << (128 - bits) }
}
