//! Messages between ftpd's processes: SOCK_SEQPACKET datagrams of
//! length-prefixed fields, with at most one file descriptor attached.
//!
//! Every decoder returns `None` on a short or malformed message; the receiver
//! treats that as a broken peer (see docs/ARCHITECTURE.md).

use std::{
    io::{self, IoSlice, IoSliceMut},
    mem::MaybeUninit,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};

/// Largest message: a listing chunk or a login request with its limits.
pub const MAX_MSG: usize = 128 * 1024;

/// A connected pair of SOCK_SEQPACKET sockets (close-on-exec).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?)
}

/// Sends one message, with `fd` attached if given.
pub fn send(sock: BorrowedFd<'_>, msg: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    loop {
        match rustix::net::sendmsg(sock, &[IoSlice::new(msg)], &mut control, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message into `buf` (resized to fit); `Ok(None)` when the peer closed.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<Option<Option<OwnedFd>>> {
    buf.resize(MAX_MSG, 0);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(sock, &mut [IoSliceMut::new(buf)], &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(r) => break r,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    let mut fd = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for f in fds {
                // More than one fd is a protocol error; extra ones are closed here.
                if fd.is_none() {
                    fd = Some(f);
                }
            }
        }
    }
    if got.bytes == 0 && fd.is_none() {
        return Ok(None);
    }
    buf.truncate(got.bytes);
    Ok(Some(fd))
}

/// Builds a message.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    /// A message starting with a tag byte.
    pub fn tag(t: u8) -> Self {
        Self(vec![t])
    }
    /// Appends a byte.
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    /// Appends a u32 (little endian).
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u64 (little endian).
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends length-prefixed bytes.
    pub fn bytes(mut self, v: &[u8]) -> Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(&v[..len as usize]);
        self
    }
}

/// Reads a message field by field.
pub struct Dec<'a>(pub &'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    /// Next byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    /// Next u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Next u64.
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    /// Next length-prefixed byte string.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// Next length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

/// Sends and waits for the answer, on a socket nobody else uses meanwhile.
pub fn call(
    sock: &impl AsFd,
    msg: &[u8],
    fd: Option<BorrowedFd<'_>>,
    buf: &mut Vec<u8>,
) -> io::Result<Option<OwnedFd>> {
    send(sock.as_fd(), msg, fd)?;
    match recv(sock.as_fd(), buf)? {
        Some(fd) => Ok(fd),
        None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "peer process closed the channel")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_fd() {
        let (a, b) = pair().unwrap();
        let file = rustix::fs::open("/dev/null", rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty()).unwrap();
        let msg = Enc::tag(7).u32(42).bytes(b"hello").u64(9).0;
        send(a.as_fd(), &msg, Some(file.as_fd())).unwrap();
        let mut buf = Vec::new();
        let fd = recv(b.as_fd(), &mut buf).unwrap().unwrap();
        assert!(fd.is_some());
        let mut d = Dec(&buf);
        assert_eq!(
            (d.u8(), d.u32(), d.bytes(), d.u64(), d.u8()),
            (Some(7), Some(42), Some(&b"hello"[..]), Some(9), None)
        );
        drop(a);
        assert!(recv(b.as_fd(), &mut buf).unwrap().is_none());
    }
}
