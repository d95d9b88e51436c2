//! A raw FTP control connection: send exactly the bytes a test wants, read
//! each reply whole (multi-line replies included), and run data commands
//! over PASV or EPSV.
//!
//! The `cmd*` methods panic with the command and reply, as a test wants;
//! [`Ftp::next_reply`] and [`Ftp::try_cmd`] return errors instead, for the
//! benchmark, which reports them and goes on.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use crate::{SocketSetup, pasv_addr, tcp_connect};

/// How long a test waits for any one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A raw FTP control connection.
pub struct Ftp {
    /// Replies are read through the buffer; commands are written to the
    /// stream under it (one socket per session: the benchmark holds
    /// thousands).
    r: BufReader<TcpStream>,
    /// The server's address.
    pub peer: SocketAddr,
}

impl Ftp {
    /// Connects from `source` (another local address, such as 127.0.0.2,
    /// is another client as far as the server is concerned); no greeting read.
    pub fn connect_from(addr: SocketAddr, source: IpAddr) -> Self {
        let s = tcp_connect(addr, SocketSetup { source: Some(source), ..SocketSetup::default() })
            .unwrap_or_else(|e| panic!("connect from {source} to {addr}: {e}"));
        s.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
        Self { r: BufReader::new(s), peer: addr }
    }

    /// Connects (no greeting read).
    pub fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to ftpd");
        s.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
        Self { r: BufReader::new(s), peer: addr }
    }

    /// Wraps a connected stream (e.g. one bound to a chosen source address);
    /// no greeting read.
    pub fn from_stream(s: TcpStream) -> Self {
        s.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
        let peer = s.peer_addr().expect("peer addr");
        Self { r: BufReader::new(s), peer }
    }

    /// Wraps a connected stream whose replies may take up to `timeout`
    /// each; no greeting read.
    ///
    /// # Errors
    /// When the timeout cannot be set or the stream is not connected.
    pub fn with_timeout(s: TcpStream, timeout: Duration) -> io::Result<Self> {
        s.set_read_timeout(Some(timeout))?;
        let peer = s.peer_addr()?;
        Ok(Self { r: BufReader::new(s), peer })
    }

    /// The control connection's socket (for socket options).
    pub fn stream(&self) -> &TcpStream {
        self.r.get_ref()
    }

    /// The local address of the control connection (what PORT/EPRT should name).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream().local_addr().expect("local addr")
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.r.get_mut().write_all(bytes)
    }

    /// Reads one (possibly multi-line) reply: code and full text.
    pub fn read_reply(&mut self) -> (u16, String) {
        self.try_read_reply().expect("a reply")
    }

    /// Reads one reply, or `None` if the server closed the connection.
    pub fn try_read_reply(&mut self) -> Option<(u16, String)> {
        self.next_reply().ok()
    }

    /// Reads one (possibly multi-line) reply: code and full text.
    ///
    /// # Errors
    /// `UnexpectedEof` when the server closed the connection, `InvalidData`
    /// for a line that is not a reply, and the read's own error (a timeout).
    pub fn next_reply(&mut self) -> io::Result<(u16, String)> {
        let mut all = String::new();
        let mut line = String::new();
        self.line(&mut line)?;
        all.push_str(&line);
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not an FTP reply: {line:?}")))?;
        if line.as_bytes().get(3) == Some(&b'-') {
            let end = format!("{code} ");
            loop {
                line.clear();
                self.line(&mut line)?;
                all.push_str(&line);
                if line.starts_with(&end) {
                    break;
                }
            }
        }
        Ok((code, all))
    }

    /// Reads one line into `line`; end of stream is an error.
    fn line(&mut self, line: &mut String) -> io::Result<()> {
        if self.r.read_line(line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the control connection"));
        }
        Ok(())
    }

    /// Sends a command and returns the reply.
    ///
    /// # Errors
    /// As [`Ftp::send_raw`] and [`Ftp::next_reply`].
    pub fn try_cmd(&mut self, line: &str) -> io::Result<(u16, String)> {
        self.send_raw(format!("{line}\r\n").as_bytes())?;
        self.next_reply()
    }

    /// Sends a command and returns the reply.
    pub fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send_raw(format!("{line}\r\n").as_bytes()).expect("send");
        self.read_reply()
    }

    /// Sends a command and asserts the reply code.
    pub fn cmd_ok(&mut self, line: &str, code: u16) -> String {
        let (c, text) = self.cmd(line);
        assert_eq!(c, code, "{line} -> {text}");
        text
    }

    /// PASV, then connects to the announced port.
    pub fn pasv_connect(&mut self) -> TcpStream {
        let text = self.cmd_ok("PASV", 227);
        let addr = pasv_addr(&text).unwrap_or_else(|| panic!("PASV: {text}"));
        TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5)).expect("data connect")
    }

    /// EPSV, then connects to the announced port on the server's address.
    pub fn epsv_connect(&mut self) -> TcpStream {
        let text = self.cmd_ok("EPSV", 229);
        let port: u16 = text.split('|').nth(3).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("EPSV: {text}"));
        let addr = SocketAddr::new(self.peer.ip(), port);
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("data connect")
    }

    /// Runs an upload command (STOR, APPE, STOU) over PASV, sending `bytes`
    /// and closing the data connection; returns the 150 reply text (empty if
    /// the command was refused) and the final reply.
    pub fn upload(&mut self, line: &str, bytes: &[u8]) -> (String, u16, String) {
        let mut data = self.pasv_connect();
        let (code, text) = self.cmd(line);
        if code != 150 {
            return (String::new(), code, text);
        }
        data.write_all(bytes).expect("send upload data");
        drop(data);
        let (code, end) = self.read_reply();
        (text, code, end)
    }

    /// Runs a data command (LIST, RETR …) over PASV; returns the bytes and the final reply.
    pub fn transfer(&mut self, line: &str) -> (Vec<u8>, u16, String) {
        let data = self.pasv_connect();
        self.transfer_on(data, line)
    }

    /// Runs a data command over a data connection already made (from a
    /// source address of the caller's choosing, say); returns the bytes and
    /// the final reply.
    pub fn transfer_on(&mut self, mut data: TcpStream, line: &str) -> (Vec<u8>, u16, String) {
        let (code, text) = self.cmd(line);
        if code != 150 {
            return (Vec::new(), code, text);
        }
        let mut buf = Vec::new();
        data.read_to_end(&mut buf).expect("read data");
        let (code, text) = self.read_reply();
        (buf, code, text)
    }

    /// Starts `STOR name` over PASV and sends `part`, waiting until the
    /// server has written it (and no more); the upload stays open on the
    /// returned data connection.
    pub fn start_upload(&mut self, name: &str, part: &[u8]) -> TcpStream {
        let mut data = self.pasv_connect();
        self.cmd_ok(&format!("STOR {name}"), 150);
        data.write_all(part).expect("send");
        let moved = self.wait_progress(part.len());
        assert_eq!(moved, part.len(), "the server wrote more than was sent");
        data
    }

    /// Polls STAT during the running transfer until the server reports at
    /// least `bytes` moved (for uploads: written to the file); returns what
    /// it reported.
    pub fn wait_progress(&mut self, bytes: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.cmd_ok("STAT", 211);
            let moved: usize = text
                .split("Transfer in progress: ")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("STAT during a transfer: {text}"));
            if moved >= bytes {
                return moved;
            }
            assert!(Instant::now() < deadline, "upload stuck at {moved} of {bytes} bytes");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends ABOR during a transfer and expects 426 for the transfer, then
    /// 226 (RFC 959).
    pub fn abort_transfer(&mut self) {
        self.send_raw(b"ABOR\r\n").expect("send ABOR");
        let (code, text) = self.read_reply();
        assert_eq!(code, 426, "{text}");
        let (code, text) = self.read_reply();
        assert_eq!(code, 226, "{text}");
    }
}
