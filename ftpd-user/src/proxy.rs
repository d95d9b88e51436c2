//! The PROXY protocol (v1 text and v2 binary) on the control listener.
//!
//! Behind an L4 balancer (HAProxy `send-proxy-v2`, AWS NLB, Envoy), every
//! control connection comes from the balancer, which prefixes it with a
//! header naming the real client. ftpd reads that header before anything
//! else, from trusted senders only (`ftpd_proxy_trusted`), and from then on
//! the client is the header's source address: admission caps, bans, the
//! data-connection address checks, pinholes, logs and metrics all see it.
//!
//! The header is read without consuming a byte past it: an implicit-FTPS
//! client's TLS ClientHello follows it in the same segment, and must reach
//! the handshake intact.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{io::AsyncReadExt, net::TcpStream};

/// Longest a header may take to arrive: balancers send it with the
/// connection's first segment.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest header read. A v1 header is at most 107 bytes; HAProxy's v2
/// headers carry a few TLVs (unique id, TLS facts) in well under this.
const MAX_HEADER: usize = 1024;

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Too few bytes yet to tell.
    Incomplete,
    /// A whole header of `len` bytes. `ends` is `None` when the header
    /// names no client (v2 `LOCAL`: the balancer's own health check; v1
    /// `UNKNOWN`): the connection is then the balancer's own.
    Header { len: usize, ends: Option<Ends> },
    /// Not a header, or a broken one: why, for the log.
    Invalid(Reason),
}

/// The two ends of the client's own connection, as the balancer saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    /// The real client.
    pub client: SocketAddr,
    /// The address the client connected to: the balancer's.
    pub server: SocketAddr,
}

impl Ends {
    fn new(client: (IpAddr, u16), server: (IpAddr, u16)) -> Self {
        Self { client: SocketAddr::from(client), server: SocketAddr::from(server) }
    }
}

/// Why a connection was closed before its greeting (the `reason` label of
/// `ftpd_connections_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The connection's source is not in `ftpd_proxy_trusted`.
    Untrusted,
    /// No header: the first bytes are something else, or nothing came in
    /// time.
    Missing,
    /// A header that does not parse, or one for something other than TCP
    /// over IPv4/IPv6.
    Malformed,
    /// The sender closed the connection inside the header.
    Truncated,
}

impl Reason {
    /// The metric label and log word.
    pub fn label(self) -> &'static str {
        match self {
            Self::Untrusted => "proxy_untrusted",
            Self::Missing => "proxy_missing",
            Self::Malformed => "proxy_malformed",
            Self::Truncated => "proxy_truncated",
        }
    }
}

/// The v2 signature; a v1 header starts with `PROXY `.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// Reads what `buf` (the connection's first bytes) holds.
pub fn parse(buf: &[u8]) -> Parsed {
    // Whether `buf` could still become a header: ppp reads a few non-header
    // prefixes as incomplete v1 headers, so the prefix decides first.
    let could_be = |sig: &[u8]| buf.iter().zip(sig).all(|(a, b)| a == b);
    if !could_be(V2_SIGNATURE) && !could_be(V1_PREFIX) {
        return Parsed::Invalid(Reason::Missing);
    }
    if buf.len() < V1_PREFIX.len() {
        return Parsed::Incomplete;
    }
    if could_be(V1_PREFIX) {
        return parse_v1(buf);
    }
    match ppp::v2::Header::try_from(buf) {
        Ok(h) => {
            let ends = match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) if h.protocol == ppp::v2::Protocol::Stream => Some(Ends::new(
                    (a.source_address.into(), a.source_port),
                    (a.destination_address.into(), a.destination_port),
                )),
                (_, ppp::v2::Addresses::IPv6(a)) if h.protocol == ppp::v2::Protocol::Stream => Some(Ends::new(
                    (a.source_address.into(), a.source_port),
                    (a.destination_address.into(), a.destination_port),
                )),
                // No address (AF_UNSPEC): the spec has the receiver use the
                // connection's own ends, as for v1 `UNKNOWN`.
                (_, ppp::v2::Addresses::Unspecified) => None,
                // UDP or UNIX sockets: nothing an FTP client can be.
                _ => return Parsed::Invalid(Reason::Malformed),
            };
            Parsed::Header { len: h.len(), ends }
        }
        Err(ppp::v2::ParseError::Incomplete(_) | ppp::v2::ParseError::Partial(..)) if buf.len() < MAX_HEADER => {
            Parsed::Incomplete
        }
        Err(_) => Parsed::Invalid(Reason::Malformed),
    }
}

/// The longest v1 header, CRLF included.
const V1_MAX: usize = 107;

/// A v1 line, strictly: `PROXY TCP4|TCP6 src dst sport dport` or `PROXY
/// UNKNOWN`, single spaces, CRLF. (ppp's v1 reader also takes a bare LF and
/// a trailing space, and could then read a longer line as a shorter one.)
fn parse_v1(buf: &[u8]) -> Parsed {
    let seen = &buf[..buf.len().min(V1_MAX)];
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'.' | b':');
    let Some(end) = seen.windows(2).position(|w| w == b"\r\n") else {
        // Incomplete only while it can still become a header: short enough,
        // and nothing but a header's characters (a CR only last).
        let body = seen.strip_suffix(b"\r").unwrap_or(seen);
        return if buf.len() >= V1_MAX || !body.iter().all(allowed) {
            Parsed::Invalid(Reason::Malformed)
        } else {
            Parsed::Incomplete
        };
    };
    let line = &seen[..end];
    let len = end + 2;
    let text = match std::str::from_utf8(line) {
        Ok(t) if line.iter().all(allowed) => t,
        _ => return Parsed::Invalid(Reason::Malformed),
    };
    let port = |p: &str| if p.bytes().all(|b| b.is_ascii_digit()) { p.parse::<u16>().ok() } else { None };
    let ends = match text.split(' ').collect::<Vec<_>>().as_slice() {
        ["PROXY", "UNKNOWN", ..] => return Parsed::Header { len, ends: None },
        ["PROXY", "TCP4", src, dst, sport, dport] => {
            match (src.parse::<std::net::Ipv4Addr>(), dst.parse::<std::net::Ipv4Addr>()) {
                (Ok(s), Ok(d)) => {
                    port(sport).zip(port(dport)).map(|(sp, dp)| Ends::new((s.into(), sp), (d.into(), dp)))
                }
                _ => None,
            }
        }
        ["PROXY", "TCP6", src, dst, sport, dport] => {
            match (src.parse::<std::net::Ipv6Addr>(), dst.parse::<std::net::Ipv6Addr>()) {
                (Ok(s), Ok(d)) => {
                    port(sport).zip(port(dport)).map(|(sp, dp)| Ends::new((s.into(), sp), (d.into(), dp)))
                }
                _ => None,
            }
        }
        _ => None,
    };
    match ends {
        Some(e) => Parsed::Header { len, ends: Some(e) },
        None => Parsed::Invalid(Reason::Malformed),
    }
}

/// Reads the header at the start of `stream`, consuming exactly its bytes.
/// `Ok(None)`: the header names no client (the balancer's own connection).
///
/// # Errors
/// Why the connection must be closed.
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<Ends>, Reason> {
    let read = async {
        let mut buf = [0u8; MAX_HEADER];
        let mut seen = 0;
        // The wait between looks at a header that has stopped growing: short
        // at first (a balancer's header comes in one segment; a split one
        // completes at once), longer the longer it stalls, so that hundreds
        // of connections trickling headers cost little until they are cut.
        let mut nap = Duration::from_millis(2);
        loop {
            // Peek, so that what follows the header stays in the socket.
            let n = stream.peek(&mut buf).await.map_err(|_| Reason::Truncated)?;
            if n == 0 {
                return Err(if seen == 0 { Reason::Missing } else { Reason::Truncated });
            }
            match parse(&buf[..n]) {
                Parsed::Header { len, ends } => {
                    stream.read_exact(&mut buf[..len]).await.map_err(|_| Reason::Truncated)?;
                    return Ok(ends);
                }
                Parsed::Invalid(r) => return Err(r),
                Parsed::Incomplete if n == seen => {
                    // Nothing new since the last look. Peek returns at once
                    // while anything is queued, and cannot see the end of
                    // the stream behind it: readiness can.
                    let ready = stream.ready(tokio::io::Interest::READABLE).await.map_err(|_| Reason::Truncated)?;
                    if ready.is_read_closed() {
                        return Err(Reason::Truncated);
                    }
                    tokio::time::sleep(nap).await;
                    nap = (nap * 2).min(Duration::from_millis(250));
                }
                Parsed::Incomplete => {
                    seen = n;
                    nap = Duration::from_millis(2);
                }
            }
        }
    };
    tokio::time::timeout(HEADER_TIMEOUT, read).await.unwrap_or(Err(Reason::Missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = u16::try_from(addrs.len() + tlvs.len()).unwrap();
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addrs);
        h.extend_from_slice(tlvs);
        h
    }

    fn hdr(len: usize, client: &str, server: &str) -> Parsed {
        Parsed::Header { len, ends: Some(Ends { client: client.parse().unwrap(), server: server.parse().unwrap() }) }
    }

    #[test]
    fn v1_headers_name_the_client_and_their_length() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 21\r\n";
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"\x16\x03\x01"); // a ClientHello follows
        assert_eq!(parse(&buf), hdr(line.len(), "192.0.2.7:40000", "198.51.100.1:21"));
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 21\r\n"),
            hdr(45, "[2001:db8::7]:40000", "[2001:db8::1]:21")
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Parsed::Header { len: 15, ends: None });
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000"), Parsed::Incomplete);
        assert_eq!(parse(b"PRO"), Parsed::Incomplete);
        assert_eq!(parse(b"PROXY TCP4 192.0.2.999 198.51.100.1 40000 21\r\n"), Parsed::Invalid(Reason::Malformed));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 21\n"), Parsed::Invalid(Reason::Malformed));
        // Found by the fuzz target in ppp's reader: a trailing space and a
        // bare LF, read as a header of a different length.
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::7 2002:db8::1 40000 51 \n\r\nUSER x\r\n"),
            Parsed::Invalid(Reason::Malformed)
        );
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 21\r"), Parsed::Incomplete);
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 4000\r0 21"), Parsed::Invalid(Reason::Malformed));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 +4000 21\r\n"), Parsed::Invalid(Reason::Malformed));
    }

    #[test]
    fn v2_headers_name_the_client_and_skip_their_tlvs() {
        let addrs = [192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 0, 21];
        let tlv = [0x05, 0, 3, b'a', b'b', b'c']; // a unique id
        let h = v2(1, 0x11, &addrs, &tlv);
        let mut buf = h.clone();
        buf.extend_from_slice(b"USER x\r\n");
        assert_eq!(parse(&buf), hdr(h.len(), "192.0.2.7:40000", "198.51.100.1:21"));
        let mut a6 = Vec::new();
        a6.extend_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
        a6.extend_from_slice(&[0; 16]);
        a6.extend_from_slice(&[0x9c, 0x40, 0, 21]);
        assert_eq!(parse(&v2(1, 0x21, &a6, &[])), hdr(16 + 36, "[2001:db8::7]:40000", "[::]:21"));
        assert_eq!(parse(&v2(0, 0x00, &[], &[])), Parsed::Header { len: 16, ends: None }, "LOCAL: a health check");
        assert_eq!(
            parse(&v2(1, 0x00, &[], &[])),
            Parsed::Header { len: 16, ends: None },
            "PROXY, AF_UNSPEC: as v1 UNKNOWN"
        );
        assert_eq!(parse(&h[..20]), Parsed::Incomplete);
        assert_eq!(parse(&v2(1, 0x12, &addrs, &[])), Parsed::Invalid(Reason::Malformed), "UDP is no FTP client");
        assert_eq!(parse(&v2(1, 0x31, &[0; 216], &[])), Parsed::Invalid(Reason::Malformed), "nor a UNIX socket");
        assert_eq!(parse(&v2(1, 0x11, &addrs[..8], &[])), Parsed::Invalid(Reason::Malformed), "short addresses");
        let mut bad_version = h.clone();
        bad_version[12] = 0x11;
        assert_eq!(parse(&bad_version), Parsed::Invalid(Reason::Malformed));
    }

    #[test]
    fn anything_else_is_no_header_and_a_huge_one_is_refused() {
        assert_eq!(parse(b"USER anonymous\r\n"), Parsed::Invalid(Reason::Missing));
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Parsed::Invalid(Reason::Missing), "a bare ClientHello");
        assert_eq!(parse(b"proxy TCP4"), Parsed::Invalid(Reason::Missing));
        let mut big = v2(1, 0x11, &[0; 12], &[]);
        big[14..16].copy_from_slice(&60000u16.to_be_bytes());
        big.resize(MAX_HEADER, 0);
        assert_eq!(parse(&big), Parsed::Invalid(Reason::Malformed));
        assert_eq!(parse(&big[..100]), Parsed::Incomplete);
    }
}
