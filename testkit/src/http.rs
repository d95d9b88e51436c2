//! HTTP GET over a plain TCP socket: ftpd's `/metrics`, a Prometheus
//! server's API, and the benchmark's ceiling server. No client library: the
//! tests must see exactly what the server sent, and no proxy settings of the
//! machine may stand in between.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// A whole HTTP response, as received.
#[derive(Clone, Debug)]
pub struct Response {
    /// Head and body, exactly as received.
    pub raw: String,
}

impl Response {
    /// The status line and headers (everything when there is no blank line).
    pub fn head(&self) -> &str {
        self.raw.split_once("\r\n\r\n").map_or(self.raw.as_str(), |(h, _)| h)
    }

    /// The body (everything when there is no blank line).
    pub fn body(&self) -> &str {
        self.raw.split_once("\r\n\r\n").map_or(self.raw.as_str(), |(_, b)| b)
    }

    /// The numbers of a Prometheus text exposition body, by series
    /// (`name{labels}`).
    pub fn samples(&self) -> HashMap<String, f64> {
        metric_samples(self.body())
    }
}

/// `GET path HTTP/1.1` to `addr` (`host:port`) with `Host: x` and `headers`
/// (whole `Name: value\r\n` lines), read until the server closes. Panics
/// when the server cannot be reached.
pub fn http_get(addr: &str, path: &str, headers: &str) -> Response {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    // The response is read to the end: the server must close after it
    // (an HTTP/1.1 server keeps the connection otherwise).
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    exchange(&mut s, &request).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

impl Response {
    /// `GET path HTTP/1.0` to `addr` with `Host: addr`, where connecting and
    /// each read may take up to `timeout`: for servers that may hang.
    ///
    /// # Errors
    /// Connecting, sending or reading failed or timed out.
    pub fn get_within(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Self> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        exchange(&mut s, &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"))
    }

    /// Reads a response head from `r` byte by byte, so that no body byte
    /// is consumed with it (the caller streams the body); at most `max`
    /// bytes.
    ///
    /// # Errors
    /// The stream ended or failed before the blank line, or the head is
    /// longer than `max`.
    pub fn read_head(r: &mut impl Read, max: usize) -> io::Result<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if r.read(&mut byte)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the end of the HTTP head"));
            }
            head.push(byte[0]);
            if head.len() > max {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "HTTP head too long"));
            }
        }
        Ok(String::from_utf8_lossy(&head).into_owned())
    }

    /// The `Content-Length` of a response head.
    pub fn content_length(head: &str) -> Option<u64> {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-length")))
            .and_then(|(_, v)| v.trim().parse().ok())
    }
}

/// Sends `request` and reads the response until the server closes.
fn exchange(s: &mut TcpStream, request: &str) -> io::Result<Response> {
    s.write_all(request.as_bytes())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    Ok(Response { raw })
}

/// The numbers of a Prometheus text exposition, by series (`name{labels}`);
/// comments and lines without a number are left out.
pub fn metric_samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_body_and_samples() {
        let r = Response {
            raw: "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n# HELP x\nftpd_up 1\nftpd_bytes{dir=\"a\"} 2.5\n".into(),
        };
        assert_eq!(Response::content_length(r.head()), Some(42));
        let s = r.samples();
        assert_eq!((s.len(), s["ftpd_up"], s["ftpd_bytes{dir=\"a\"}"]), (2, 1.0, 2.5));
        let mut input: &[u8] = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(Response::read_head(&mut input, 100).unwrap(), "HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(input, b"body");
    }
}
