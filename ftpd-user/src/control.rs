//! The control connection's wire format: bounded line framing in, RFC 959
//! replies out.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Longest command line accepted, CRLF included (vsftpd's `VSFTP_MAX_COMMAND_LINE`).
pub const MAX_LINE: usize = 4096;

/// Why no command line could be read.
#[derive(Debug)]
pub enum LineError {
    /// The client closed the connection.
    Closed,
    /// A line longer than `MAX_LINE`: the session ends, as in vsftpd.
    TooLong,
    /// The socket failed.
    Io(io::Error),
}

/// A control-connection reader that can also take what is already queued
/// without waiting for a readiness event.
///
/// Needed because a TCP read stops at the urgent mark: ftplib sends
/// `ABOR\r\n` as urgent data, the first read returns `ABOR\r`, tokio takes
/// the short read as "drained" and clears readiness, and the `\n` already in
/// the socket would wait for the next packet that never comes.
pub trait ControlRead: AsyncRead + Unpin {
    /// Reads queued bytes; `WouldBlock` when there are none.
    fn read_queued(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Waits until bytes (or the end) can be read, without a buffer: an idle
    /// session then holds no read buffer at all.
    fn wait_readable(&mut self) -> impl std::future::Future<Output = io::Result<()>> + Send;
}

impl ControlRead for tokio::net::tcp::OwnedReadHalf {
    fn read_queued(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsFd;
        let sock: &tokio::net::TcpStream = self.as_ref();
        // Through try_io, so tokio clears readiness only on a real EAGAIN (its
        // own reads also clear it after a short read, which loses the rest of
        // an urgent-data line).
        sock.try_io(tokio::io::Interest::READABLE, || {
            rustix::net::recv(sock.as_fd(), buf, rustix::net::RecvFlags::DONTWAIT)
                .map(|(n, _)| n)
                .map_err(io::Error::from)
        })
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        let sock: &tokio::net::TcpStream = self.as_ref();
        sock.readable().await
    }
}

impl ControlRead for &[u8] {
    fn read_queued(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        std::io::Read::read(self, buf)
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads CRLF- (or bare LF-) terminated lines with a hard length bound.
///
/// The buffer starts empty and grows only as far as the longest line seen (at
/// most `MAX_LINE`), so an idle session holds no read buffer.
#[derive(Default)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed out as the previous line.
    consumed: usize,
}

impl LineReader {
    /// Returns the next line without its line ending.
    pub async fn read_line<R: ControlRead>(&mut self, r: &mut R) -> Result<&[u8], LineError> {
        self.buf.drain(..self.consumed);
        self.consumed = 0;
        if self.buf.is_empty() {
            // Nothing pending: give the memory back while the session idles.
            self.buf = Vec::new();
        }
        let mut scanned = 0;
        loop {
            if let Some(i) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i;
                self.consumed = end + 1;
                let line = &self.buf[..end];
                return Ok(line.strip_suffix(b"\r").unwrap_or(line));
            }
            scanned = self.buf.len();
            if self.buf.len() >= MAX_LINE {
                return Err(LineError::TooLong);
            }
            let want = (MAX_LINE - self.buf.len()).min(1024);
            let mut chunk = [0u8; 1024];
            match r.read_queued(&mut chunk[..want]) {
                Ok(0) => return Err(LineError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => r.wait_readable().await.map_err(LineError::Io)?,
                Err(e) => return Err(LineError::Io(e)),
            }
        }
    }
}

/// Splits a command line into its verb (upper-cased; RFC 959 verbs are
/// case-insensitive; letters and digits, as in `XSHA256`) and its argument (raw bytes after the first space:
/// file names may contain anything but NUL and CR/LF).
pub fn split_command(line: &[u8]) -> (String, &[u8]) {
    let (verb, arg) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let verb = if verb.len() <= 8 && verb.iter().all(u8::is_ascii_alphanumeric) {
        String::from_utf8_lossy(verb).to_ascii_uppercase()
    } else {
        String::new()
    };
    (verb, arg)
}

/// Drops Telnet commands in front of a command: clients send `IAC IP IAC DM`
/// (some with the DM as urgent data, which may or may not arrive inline)
/// before ABOR, and `ABOR` must be recognised either way.
pub fn strip_telnet(mut line: &[u8]) -> &[u8] {
    loop {
        match line {
            [0xff, 0xf0..=0xfe, rest @ ..] => line = rest,
            [0xf2, rest @ ..] => line = rest,
            _ => return line,
        }
    }
}

/// Writes a single-line reply: `CODE TEXT\r\n`.
pub async fn reply<W: AsyncWrite + Unpin>(w: &mut W, code: u16, text: &str) -> io::Result<()> {
    let mut out = Vec::with_capacity(text.len() + 6);
    out.extend_from_slice(format!("{code} ").as_bytes());
    push_text(&mut out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
    w.write_all(&out).await?;
    // Under TLS the record may still sit in rustls's buffer.
    w.flush().await
}

/// Writes a multi-line reply: `CODE-first`, the middle lines indented by one
/// space (so none can be mistaken for the end), then `CODE last`.
pub async fn reply_multi<W: AsyncWrite + Unpin>(
    w: &mut W,
    code: u16,
    first: &str,
    lines: &[String],
    last: &str,
) -> io::Result<()> {
    write_multi(w, code, first, lines, last, b" ").await
}

/// A multi-line reply whose middle lines are sent as they are, without the
/// leading space: vsftpd's `STAT PATH`, whose lines start with the permissions.
pub async fn reply_listing<W: AsyncWrite + Unpin>(
    w: &mut W,
    code: u16,
    first: &str,
    lines: &[String],
    last: &str,
) -> io::Result<()> {
    write_multi(w, code, first, lines, last, b"").await
}

/// `CODE-first`, each middle line after `indent`, then `CODE last`, in one write.
async fn write_multi<W: AsyncWrite + Unpin>(
    w: &mut W,
    code: u16,
    first: &str,
    lines: &[String],
    last: &str,
    indent: &[u8],
) -> io::Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(format!("{code}-").as_bytes());
    push_text(&mut out, first.as_bytes());
    out.extend_from_slice(b"\r\n");
    for l in lines {
        out.extend_from_slice(indent);
        push_text(&mut out, l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("{code} ").as_bytes());
    push_text(&mut out, last.as_bytes());
    out.extend_from_slice(b"\r\n");
    w.write_all(&out).await?;
    // Under TLS the record may still sit in rustls's buffer.
    w.flush().await
}

/// Copies reply text, turning CR and LF into spaces so that text echoed from a
/// client (a file name) can never end the reply line early or forge another one.
fn push_text(out: &mut Vec<u8>, text: &[u8]) {
    out.extend(text.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8]) -> Vec<Result<Vec<u8>, String>> {
        let mut r = input;
        let mut lr = LineReader::default();
        let mut out = Vec::new();
        loop {
            match lr.read_line(&mut r).await {
                Ok(l) => out.push(Ok(l.to_vec())),
                Err(LineError::Closed) => return out,
                Err(e) => {
                    out.push(Err(format!("{e:?}")));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn crlf_and_bare_lf() {
        let got = lines(b"USER a\r\nPASS b\nNOOP\r\n").await;
        assert_eq!(got, vec![Ok(b"USER a".to_vec()), Ok(b"PASS b".to_vec()), Ok(b"NOOP".to_vec())]);
    }

    #[tokio::test]
    async fn overlong_line_is_an_error() {
        let mut long = vec![b'a'; MAX_LINE + 10];
        long.extend_from_slice(b"\r\n");
        let got = lines(&long).await;
        assert_eq!(got, vec![Err("TooLong".to_string())]);
        // A line of exactly the limit, LF included, is fine.
        let mut ok = vec![b'a'; MAX_LINE - 1];
        ok.push(b'\n');
        assert_eq!(lines(&ok).await.len(), 1);
    }

    #[tokio::test]
    async fn partial_line_at_eof_is_dropped() {
        assert_eq!(lines(b"NOOP\r\nQUI").await, vec![Ok(b"NOOP".to_vec())]);
    }

    #[test]
    fn verbs_are_case_insensitive_and_args_raw() {
        assert_eq!(split_command(b"retr a b"), ("RETR".into(), &b"a b"[..]));
        assert_eq!(split_command(b"NOOP"), ("NOOP".into(), &b""[..]));
        assert_eq!(split_command(b"RETR  x"), ("RETR".into(), &b" x"[..]));
        assert_eq!(split_command(b"R\0TR x").0, "");
        assert_eq!(split_command(b"\xff\xfe x").0, "");
    }

    #[test]
    fn telnet_interrupt_before_abor() {
        assert_eq!(strip_telnet(b"\xff\xf4\xff\xf2ABOR"), b"ABOR");
        assert_eq!(strip_telnet(b"\xff\xf4\xf2ABOR"), b"ABOR");
        assert_eq!(strip_telnet(b"ABOR"), b"ABOR");
    }

    #[tokio::test]
    async fn replies_cannot_be_forged() {
        let mut out = Vec::new();
        reply(&mut out, 550, "no such file a\r\n226 ok").await.unwrap();
        assert_eq!(out, b"550 no such file a  226 ok\r\n");
        let mut out = Vec::new();
        reply_multi(&mut out, 211, "Features:", &["SIZE".into()], "End").await.unwrap();
        assert_eq!(out, b"211-Features:\r\n SIZE\r\n211 End\r\n");
    }
}
