//! Sockets the tests set up by hand: options std cannot set before the
//! handshake, the arguments of PASV/PORT/EPRT, and the server's connection in
//! active mode.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

/// What [`tcp_connect`] sets on a socket before its handshake, which std's
/// `TcpStream::connect` cannot.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketSetup {
    /// Local address to bind (another loopback address is another client).
    pub source: Option<IpAddr>,
    /// `SO_RCVBUF`: a small window, for a client that reads slowly or not at all.
    pub rcvbuf: Option<i32>,
    /// `TCP_MAXSEG`: a real network's segment size instead of loopback's 64 KiB.
    pub mss: Option<i32>,
}

/// A TCP connection to `to`, set up as `how` says before the handshake.
pub fn tcp_connect(to: SocketAddr, how: SocketSetup) -> std::io::Result<TcpStream> {
    connect_with(to, how, None)
}

/// [`tcp_connect`] that gives up when the handshake takes longer than
/// `limit` (a SYN dropped in XDP goes unanswered; the kernel would retry
/// for minutes).
pub fn tcp_connect_within(to: SocketAddr, how: SocketSetup, limit: Duration) -> std::io::Result<TcpStream> {
    connect_with(to, how, Some(limit))
}

fn connect_with(to: SocketAddr, how: SocketSetup, limit: Option<Duration>) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match a {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
                let sin = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in>() };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in6>() };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = v6.port().to_be();
                sin6.sin6_addr.s6_addr = v6.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, libc::socklen_t::try_from(len).expect("small"))
    }
    let family = if to.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let int = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: plain socket calls on a fresh fd, which the TcpStream owns from
    // its creation on (so it is closed on every failure); every pointer names
    // a local of the length passed.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let check = |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
        if let Some(n) = how.rcvbuf {
            check(libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&raw const n).cast(), int))?;
        }
        if let Some(n) = how.mss {
            check(libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, (&raw const n).cast(), int))?;
        }
        if let Some(limit) = limit {
            // connect(2) honours SO_SNDTIMEO.
            let tv = libc::timeval {
                tv_sec: libc::time_t::try_from(limit.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_usec: libc::suseconds_t::from(limit.subsec_micros()),
            };
            let len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
            check(libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, (&raw const tv).cast(), len))?;
        }
        if let Some(ip) = how.source {
            let (src, slen) = sockaddr(SocketAddr::new(ip, 0));
            check(libc::bind(fd, (&raw const src).cast(), slen))?;
        }
        let (dst, dlen) = sockaddr(to);
        check(libc::connect(fd, (&raw const dst).cast(), dlen))?;
        Ok(stream)
    }
}

/// The address in a 227 reply: `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).`
/// (the six numbers wherever they stand, as RFC 1123 4.1.2.6 asks clients
/// to find them); `None` for any other reply.
pub fn pasv_addr(reply: &str) -> Option<SocketAddrV4> {
    let inner = reply.strip_prefix("227")?;
    let start = inner.find(|c: char| c.is_ascii_digit())?;
    let nums: Vec<u8> = inner[start..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(6)
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d, p1, p2] = nums[..] else { return None };
    Some(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from(p1) << 8 | u16::from(p2)))
}

/// `h1,h2,h3,h4,p1,p2` for PORT.
pub fn port_arg(addr: SocketAddr) -> String {
    let IpAddr::V4(ip) = addr.ip() else { panic!("PORT needs IPv4: {addr}") };
    let o = ip.octets();
    format!("{},{},{},{},{},{}", o[0], o[1], o[2], o[3], addr.port() >> 8, addr.port() & 0xff)
}

/// `|1|ip|port|` or `|2|ip|port|` for EPRT.
pub fn eprt_arg(addr: SocketAddr) -> String {
    let proto = if addr.is_ipv4() { 1 } else { 2 };
    format!("|{proto}|{}|{}|", addr.ip(), addr.port())
}

/// The server's active-mode connection to `l` (blocking again), if it comes
/// within `wait`.
pub fn accept_within(l: &TcpListener, wait: Duration) -> Option<TcpStream> {
    l.set_nonblocking(true).ok()?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok((s, _)) = l.accept() {
            s.set_nonblocking(false).ok()?;
            return Some(s);
        }
        thread::sleep(Duration::from_millis(5));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasv_replies() {
        let want = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 256 * 195 + 80);
        assert_eq!(pasv_addr("227 Entering Passive Mode (127,0,0,1,195,80).\r\n"), Some(want));
        assert_eq!(pasv_addr("227 =127,0,0,1,195,80"), Some(want));
        assert_eq!(pasv_addr("227 Entering Passive Mode (127,0,0,1,195)."), None);
        assert_eq!(pasv_addr("500 Unknown command."), None);
    }

    #[test]
    fn port_and_eprt_arguments() {
        let v4: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        assert_eq!(port_arg(v4), "127,0,0,1,195,80");
        assert_eq!(eprt_arg(v4), "|1|127.0.0.1|50000|");
        assert_eq!(eprt_arg("[::1]:21".parse().unwrap()), "|2|::1|21|");
    }
}
