//! Socket helpers below every process: the master binds source ports with
//! them, the data plane and the front compare client addresses with them.

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
