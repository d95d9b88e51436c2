//! The blocking FTP client (the test kit's, with bench timeouts and
//! counting) and an HTTP GET and PUT for the ceiling, for the workloads that curl
//! cannot drive: many clients at once, many commands on one session.
//!
//! Every socket has a read and write timeout, so a stuck server fails the
//! sample instead of hanging the run.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use ftpd_testkit::{self as testkit, Response};

/// How long any one read, write or connect may take. Above 31 s: when a
/// server's accept queue overflows (vsftpd listens with a backlog of 32) the
/// client's handshake ACK is dropped and the server retransmits its SYN-ACK
/// after 1, 3, 7, 15 and 31 s, so a slow but working server can take that long
/// to greet.
pub(super) const TIMEOUT: Duration = Duration::from_secs(60);
/// Read buffer for data connections.
const DATA_BUF: usize = 256 * 1024;

/// A TCP connection to `addr` with the bench timeouts.
fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reads `s` to EOF into a reused buffer and returns the byte count,
/// adding each read to `live` too (bytes of many clients, sampled meanwhile).
fn drain(s: &mut TcpStream, buf: &mut [u8], live: Option<&AtomicU64>) -> Result<u64> {
    let mut total = 0u64;
    loop {
        match s.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                total += n as u64;
                if let Some(l) = live {
                    l.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the data connection"),
        }
    }
}

/// One FTP control connection: the test kit's client, with the bench's
/// timeouts and errors that say which step failed.
pub(super) struct Ftp {
    ctrl: testkit::Ftp,
    buf: Vec<u8>,
}

impl Ftp {
    /// A control connection on `s`, with the bench timeouts.
    fn on(s: TcpStream) -> Result<Self> {
        Ok(Self { ctrl: testkit::Ftp::with_timeout(s, TIMEOUT)?, buf: Vec::new() })
    }

    /// Connects and reads the 220 greeting.
    pub(super) fn connect(port: u16) -> Result<Self> {
        let mut ftp = Self::on(connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?)?;
        ftp.expect(220).context("greeting")?;
        Ok(ftp)
    }

    /// Connects and reads the greeting like [`Ftp::connect`], but gives up
    /// on a connection that has not been greeted after `stall` and connects
    /// again, as a user would, until [`TIMEOUT`] has passed. Returns the
    /// session and how many connections stalled.
    ///
    /// A server-speaks-first protocol can leave a client waiting forever:
    /// when the listen backlog overflows the kernel answers with SYN cookies,
    /// and if the accept queue is still full when the client's ACK arrives
    /// that ACK is dropped with no state left to retransmit from. The client
    /// believes it is connected; the server never heard of it. vsftpd's
    /// backlog of 32 makes this happen to some of 256 clients connecting at
    /// once.
    pub(super) fn connect_patient(port: u16, stall: Duration) -> Result<(Self, u32)> {
        let start = Instant::now();
        let mut stalls = 0;
        loop {
            let s = connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
            s.set_read_timeout(Some(stall))?;
            match s.peek(&mut [0u8; 1]) {
                Ok(_) => {
                    let mut ftp = Self::on(s)?;
                    ftp.expect(220).context("greeting")?;
                    return Ok((ftp, stalls));
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    stalls += 1;
                    if start.elapsed() > TIMEOUT {
                        bail!("no greeting in {} s ({stalls} connections stalled)", TIMEOUT.as_secs());
                    }
                }
                Err(e) => return Err(e).context("waiting for the greeting"),
            }
        }
    }

    /// Connects and logs in anonymously.
    pub(super) fn login(port: u16) -> Result<Self> {
        let mut ftp = Self::connect(port)?;
        ftp.user()?;
        Ok(ftp)
    }

    /// `USER anonymous`, `PASS bench@`, expecting 230. Pure-FTPd logs
    /// anonymous users in on USER (230, no password asked): then no PASS.
    pub(super) fn user(&mut self) -> Result<()> {
        let (code, text) = self.cmd("USER anonymous")?;
        match code {
            230 => Ok(()),
            331 => self.cmd_expect("PASS bench@", 230).map(drop),
            _ => bail!("USER anonymous: expected 331 or 230, got {text:?}"),
        }
    }

    /// Reads one reply, following multi-line replies (`123-` ... `123 `).
    /// Returns the code and the last line.
    pub(super) fn reply(&mut self) -> Result<(u16, String)> {
        let (code, text) = self.ctrl.next_reply().context("reading a reply")?;
        Ok((code, text.trim_end().lines().last().unwrap_or_default().to_owned()))
    }

    /// Reads a reply and fails unless its code is `want`.
    pub(super) fn expect(&mut self, want: u16) -> Result<String> {
        let (code, text) = self.reply()?;
        if code != want {
            bail!("expected {want}, got {text:?}");
        }
        Ok(text)
    }

    /// Sends one command line and reads the reply.
    pub(super) fn cmd(&mut self, line: &str) -> Result<(u16, String)> {
        self.ctrl.send_raw(format!("{line}\r\n").as_bytes()).with_context(|| format!("sending {line}"))?;
        self.reply().with_context(|| format!("reply to {line}"))
    }

    /// Sends one command line and fails unless the reply code is `want`.
    pub(super) fn cmd_expect(&mut self, line: &str, want: u16) -> Result<String> {
        let (code, text) = self.cmd(line)?;
        if code != want {
            bail!("{line}: expected {want}, got {text:?}");
        }
        Ok(text)
    }

    /// `EPSV`, then connects to the port the 229 reply gives (on the
    /// control connection's address, loopback). EPSV rather than PASV: it is
    /// what curl and current clients send first, so it is the path servers
    /// are measured on.
    fn epsv(&mut self) -> Result<TcpStream> {
        let text = self.cmd_expect("EPSV", 229)?;
        let port = epsv_port(&text).with_context(|| format!("unparsable EPSV reply {text:?}"))?;
        connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).context("passive data connection")
    }

    /// `EPSV` + `command`: the whole data connection read to EOF and the
    /// final 226. Returns the bytes (or only their count when `keep` is
    /// false) and when the data reached EOF.
    fn transfer(&mut self, command: &str, keep: bool, live: Option<&AtomicU64>) -> Result<(u64, Vec<u8>, Instant)> {
        let mut data = self.epsv()?;
        let (code, text) = self.cmd(command)?;
        if code != 150 && code != 125 {
            bail!("{command}: expected 150, got {text:?}");
        }
        let mut kept = Vec::new();
        let n = if keep {
            data.read_to_end(&mut kept).context("reading the data connection")? as u64
        } else {
            if self.buf.len() < DATA_BUF {
                self.buf.resize(DATA_BUF, 0);
            }
            drain(&mut data, &mut self.buf, live)?
        };
        let eof = Instant::now();
        drop(data);
        self.expect(226).with_context(|| format!("end of {command}"))?;
        Ok((n, kept, eof))
    }

    /// Downloads `path`; returns its size and when the data ended.
    pub(super) fn retr(&mut self, path: &str) -> Result<(u64, Instant)> {
        let (n, _, eof) = self.transfer(&format!("RETR {path}"), false, None)?;
        Ok((n, eof))
    }

    /// [`Ftp::retr`], adding the bytes to `live` as they arrive.
    pub(super) fn retr_counted(&mut self, path: &str, live: &AtomicU64) -> Result<(u64, Instant)> {
        let (n, _, eof) = self.transfer(&format!("RETR {path}"), false, Some(live))?;
        Ok((n, eof))
    }

    /// `STOR path` with `chunk` sent `times` times; returns when the 226
    /// arrived (the server has all the bytes).
    pub(super) fn stor(&mut self, path: &str, chunk: &[u8], times: usize) -> Result<Instant> {
        let mut data = self.epsv()?;
        let (code, text) = self.cmd(&format!("STOR {path}"))?;
        if code != 150 && code != 125 {
            bail!("STOR {path}: expected 150, got {text:?}");
        }
        for _ in 0..times {
            data.write_all(chunk).context("writing the data connection")?;
        }
        drop(data);
        self.expect(226).with_context(|| format!("end of STOR {path}"))?;
        Ok(Instant::now())
    }

    /// Lists `path` and returns the listing.
    pub(super) fn list(&mut self, path: &str) -> Result<Vec<u8>> {
        Ok(self.transfer(&format!("LIST {path}"), true, None)?.1)
    }

    /// `QUIT`, expecting 221.
    pub(super) fn quit(&mut self) -> Result<()> {
        self.cmd_expect("QUIT", 221).map(drop)
    }

    /// Makes the close send a RST instead of a FIN, so the client keeps no
    /// TIME_WAIT socket: a login loop would otherwise run out of local ports.
    pub(super) fn linger_zero(&self) -> Result<()> {
        let l = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: the fd is open (we own the stream) and `l` is a valid
        // `linger` of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.ctrl.stream().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const l).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("SO_LINGER");
        }
        Ok(())
    }
}

/// The port of a 229 reply: `229 Entering Extended Passive Mode (|||PORT|)`.
fn epsv_port(text: &str) -> Option<u16> {
    let inner = &text[text.find('(')? + 1..text.rfind(')')?];
    let delim = inner.chars().next()?;
    inner.split(delim).nth(3)?.parse().ok()
}

/// `PUT /path` over HTTP/1.0 to the ceiling server with `chunk` sent `times`
/// times; returns when the server answered (it has written all the bytes).
pub(super) fn http_put(port: u16, path: &str, chunk: &[u8], times: usize) -> Result<Instant> {
    let mut s = connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    let length = chunk.len() * times;
    s.write_all(format!("PUT /{path} HTTP/1.0\r\nContent-Length: {length}\r\n\r\n").as_bytes())
        .context("sending PUT")?;
    for _ in 0..times {
        s.write_all(chunk).context("sending the body")?;
    }
    let head = Response::read_head(&mut s, 4096).context("reading the HTTP head")?;
    if !head.starts_with("HTTP/1.0 20") {
        bail!("PUT /{path}: {:?}", head.lines().next().unwrap_or_default());
    }
    Ok(Instant::now())
}

/// `GET /path` over HTTP/1.0 to the ceiling server; returns the body size
/// after checking it against Content-Length.
pub(super) fn http_get(port: u16, path: &str, buf: &mut [u8]) -> Result<u64> {
    let mut s = connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    s.write_all(format!("GET /{path} HTTP/1.0\r\n\r\n").as_bytes()).context("sending GET")?;
    // Byte by byte so no body byte is consumed with the head; the head is
    // ~40 bytes, so this costs nothing measurable.
    let head = Response::read_head(&mut s, 4096).context("reading the HTTP head")?;
    if !head.starts_with("HTTP/1.0 200") {
        bail!("GET /{path}: {:?}", head.lines().next().unwrap_or_default());
    }
    let length = Response::content_length(&head).context("no Content-Length")?;
    let got = drain(&mut s, buf, None)?;
    if got != length {
        bail!("GET /{path}: {got} bytes of {length}");
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::epsv_port;

    #[test]
    fn epsv_replies() {
        assert_eq!(epsv_port("229 Entering Extended Passive Mode (|||40123|)"), Some(40123));
        assert_eq!(epsv_port("229 Extended Passive mode OK (!!!21!)"), Some(21));
        assert_eq!(epsv_port("229 Entering Extended Passive Mode"), None);
        assert_eq!(epsv_port("229 (|||x|)"), None);
    }
}
