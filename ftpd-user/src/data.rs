//! Data connections: passive listeners inside the configured port range, and
//! zero-copy file sends.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    time::Duration,
};

use tokio::{
    io::{AsyncWriteExt, Interest},
    net::{TcpListener, TcpSocket, TcpStream},
    time::timeout,
};

use crate::rates::Pacer;

/// Why a data transfer did not complete; each maps to vsftpd's reply.
#[derive(Debug)]
pub enum DataError {
    /// No data connection arrived in time (`425 Failed to establish connection.`).
    AcceptTimeout,
    /// A connection arrived from the wrong IP (`425 Security: Bad IP connecting.`).
    BadIp(IpAddr),
    /// A connection from a balancer without a usable PROXY header.
    Proxy(crate::proxy::Reason),
    /// Accepting failed.
    Accept(io::Error),
    /// Writing to the client failed or it went away (`426`).
    Network(io::Error),
    /// Reading the file failed (`451`).
    File(io::Error),
    /// No progress for `data_connection_timeout` seconds.
    Stalled,
}

/// Bytes moved by one transfer: read by STAT during the transfer, and added
/// as they move to the metrics' byte counter, so throughput shows live.
#[derive(Debug, Default)]
pub struct Progress {
    moved: std::sync::atomic::AtomicU64,
    total: Option<prometheus_client::metrics::counter::Counter>,
}

impl Progress {
    /// A transfer counted into `total`.
    pub fn new(total: prometheus_client::metrics::counter::Counter) -> Self {
        Self { moved: std::sync::atomic::AtomicU64::new(0), total: Some(total) }
    }

    /// Records `n` more bytes.
    pub fn add(&self, n: u64) {
        self.moved.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = &self.total {
            t.inc_by(n);
        }
    }

    /// Bytes so far.
    pub fn get(&self) -> u64 {
        self.moved.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Connections the kernel queues for the control listener before `accept`
/// (capped by `net.core.somaxconn`). std's 128 overflowed when 256 clients
/// connected at once: the kernel then drops the handshake's last ACK, and
/// those clients waited a second for a retransmission.
const CONTROL_BACKLOG: i32 = 4096;

/// The control listener (SO_REUSEADDR, as std's), with a deep accept queue.
pub fn bind_control(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let sock = crate::net::bound_socket(addr)?;
    sock.listen(CONTROL_BACKLOG)?;
    Ok(sock.into())
}

/// Binds a passive listener on `ip`, on a free port in `range` (1024–65535
/// when `None`, as vsftpd). `seed` picks where the scan starts, so concurrent
/// sessions do not all race for the lowest port.
///
/// The port is always chosen here, never by the kernel: `bind` to port 0
/// searches the whole ephemeral range for a port with no socket at all, and
/// with thousands of finished transfers in TIME_WAIT that search was 70% of
/// the CPU of a small download (measured with perf).
pub fn bind_passive(ip: IpAddr, range: Option<(u16, u16)>, seed: u64) -> io::Result<TcpListener> {
    let (lo, hi) = range.unwrap_or((1024, 65535));
    let span = u64::from(hi - lo) + 1;
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "every port in the passive range is busy");
    for i in 0..span {
        // span <= 65536 and the sum is reduced mod span, so this fits a u16.
        let port = lo + u16::try_from((seed + i) % span).unwrap_or(0);
        match bind_one(SocketAddr::new(ip, port)) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // A port whose last transfer sits in TIME_WAIT is free for a new listener.
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1)
}

/// Waits for the client's data connection. Unless `promiscuous`, one from any IP
/// but `client` is refused, as vsftpd's `pasv_promiscuous=NO` does.
///
/// A connection from one of `balancers` (`ftpd_proxy_trusted`, with
/// `ftpd_proxy_protocol`) must start with a PROXY header, and the client it
/// names is the one checked: data connections forwarded by the balancer
/// (`ftpd_proxy_data`).
pub async fn accept(
    listener: &TcpListener,
    client: IpAddr,
    promiscuous: bool,
    wait: Duration,
    balancers: Option<&crate::net::Allow>,
) -> Result<TcpStream, DataError> {
    let (mut stream, peer) = match timeout(wait, listener.accept()).await {
        Err(_) => return Err(DataError::AcceptTimeout),
        Ok(Err(e)) => return Err(DataError::Accept(e)),
        Ok(Ok(x)) => x,
    };
    let mut from = crate::net::canonical(peer.ip());
    if balancers.is_some_and(|b| b.contains(from)) {
        match crate::proxy::read_header(&mut stream).await {
            Ok(Some(ends)) => from = crate::net::canonical(ends.client.ip()),
            // The balancer's own connection is no client's data connection.
            Ok(None) => return Err(DataError::BadIp(from)),
            Err(r) => return Err(DataError::Proxy(r)),
        }
    }
    if !promiscuous && from != crate::net::canonical(client) {
        return Err(DataError::BadIp(from));
    }
    Ok(stream)
}

/// Sends `len` bytes of `file` from `offset` with `sendfile(2)`: the bytes go
/// from the page cache to the socket without passing through userspace.
///
/// The socket is non-blocking; the loop waits for writability between calls, so
/// a slow client costs a parked task, not a thread. `pacer` keeps it to the
/// transfer's share of a rate limit (and waits for nothing without one).
pub async fn send_file(
    stream: &mut TcpStream,
    file: &OwnedFd,
    mut offset: u64,
    len: u64,
    stall: Duration,
    progress: &Progress,
    pacer: &mut Pacer,
) -> Result<u64, DataError> {
    const CHUNK: u64 = 16 << 20;
    let end = offset.saturating_add(len);
    let mut sent = 0u64;
    while offset < end {
        let want = usize::try_from((end - offset).min(CHUNK)).unwrap_or(usize::MAX);
        let count = pacer.budget(stream.as_fd(), want).await;
        match timeout(stall, pacer.while_waiting(stream.as_fd(), stream.writable())).await {
            Err(_) => return Err(DataError::Stalled),
            Ok(Err(e)) => return Err(DataError::Network(e)),
            Ok(Ok(())) => {}
        }
        let res = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream.as_fd(), file, Some(&mut offset), count).map_err(io::Error::from)
        });
        match res {
            Ok(0) => break, // the file shrank under us: send what there is
            Ok(n) => {
                sent += n as u64;
                pacer.moved(n);
                progress.add(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if is_network_error(&e) => return Err(DataError::Network(e)),
            Err(e) => return Err(DataError::File(e)),
        }
    }
    stream.shutdown().await.map_err(DataError::Network)?;
    Ok(sent)
}

/// `sendfile` reports both sides' errors; these come from the socket.
fn is_network_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    ) || e.raw_os_error() == Some(libc::ETIMEDOUT)
}

/// Writes a buffer to the data connection with the same stall timeout.
pub async fn send_bytes<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    stall: Duration,
) -> Result<(), DataError> {
    match timeout(stall, stream.write_all(bytes)).await {
        Err(_) => Err(DataError::Stalled),
        Ok(r) => r.map_err(DataError::Network),
    }
}

/// [`send_bytes`] in the steps `pacer` allows.
pub async fn send_paced<S: tokio::io::AsyncWrite + AsFd + Unpin>(
    stream: &mut S,
    mut bytes: &[u8],
    stall: Duration,
    pacer: &mut Pacer,
) -> Result<(), DataError> {
    while !bytes.is_empty() {
        let n = pacer.budget(stream.as_fd(), bytes.len()).await;
        // SAFETY: `stream` owns this descriptor and outlives the borrow,
        // through which only its pacing rate is set while the write waits.
        let sock = unsafe { BorrowedFd::borrow_raw(stream.as_fd().as_raw_fd()) };
        pacer.while_waiting(sock, send_bytes(stream, &bytes[..n], stall)).await?;
        pacer.moved(n);
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Connects to the client for an active-mode (PORT/EPRT) transfer, from
/// `bound` if given (a socket bound to `ftp_data_port` by the privileged
/// process, for `connect_from_port_20`), else from any port.
pub async fn connect_active(bound: Option<OwnedFd>, to: SocketAddr, wait: Duration) -> Result<TcpStream, DataError> {
    let sock = match bound {
        Some(fd) => {
            let sock = socket2::Socket::from(fd);
            sock.set_nonblocking(true).map_err(DataError::Accept)?;
            TcpSocket::from_std_stream(sock.into())
        }
        None => if to.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(DataError::Accept)?,
    };
    match timeout(wait, sock.connect(to)).await {
        Err(_) => Err(DataError::AcceptTimeout),
        Ok(r) => r.map_err(DataError::Accept),
    }
}

/// Why an upload did not complete.
#[derive(Debug)]
pub enum RecvError {
    /// The client's side failed (reset, timeout).
    Network(io::Error),
    /// Writing the file failed; `ENOSPC`/`EDQUOT` are told apart by the caller.
    File(io::Error),
    /// No progress for `data_connection_timeout` seconds.
    Stalled,
}

/// Receives into `file` with `splice(2)`: socket → pipe → file, no copy
/// through userspace. `offset` is where writing starts (`None`: the file
/// position, for O_APPEND). Returns the bytes written, counting into
/// `progress`. With a rate limit, `pacer` lets each read wait for the
/// schedule, and TCP flow control slows the client. Splice stays.
pub async fn receive_file(
    stream: &mut TcpStream,
    file: &OwnedFd,
    pipe: &(OwnedFd, OwnedFd),
    mut offset: Option<u64>,
    stall: Duration,
    progress: &Progress,
    pacer: &mut Pacer,
) -> Result<u64, RecvError> {
    use rustix::pipe::{SpliceFlags, splice};
    const CHUNK: usize = 1 << 20;
    let (pipe_r, pipe_w) = pipe;
    let mut total = 0u64;
    loop {
        let chunk = pacer.budget(stream.as_fd(), CHUNK).await;
        match timeout(stall, stream.readable()).await {
            Err(_) => return Err(RecvError::Stalled),
            Ok(Err(e)) => return Err(RecvError::Network(e)),
            Ok(Ok(())) => {}
        }
        let got = stream.try_io(Interest::READABLE, || {
            splice(stream.as_fd(), None, pipe_w, None, chunk, SpliceFlags::MOVE | SpliceFlags::NONBLOCK)
                .map_err(io::Error::from)
        });
        let n = match got {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(RecvError::Network(e)),
        };
        pacer.moved(n);
        // Drain the pipe into the file; the file side blocks only on the disk.
        let mut left = n;
        while left > 0 {
            let w = splice(pipe_r, None, file, offset.as_mut(), left, SpliceFlags::MOVE)
                .map_err(|e| RecvError::File(e.into()))?;
            if w == 0 {
                return Err(RecvError::File(io::Error::from(io::ErrorKind::WriteZero)));
            }
            left -= w;
            total += w as u64;
            progress.add(w as u64);
        }
    }
}

/// Ends a download's data connection: under TLS with close_notify (so the
/// client can tell a complete file from a cut one), then the TCP FIN. With
/// `strict_ssl_write_shutdown`, the client's close_notify must come back.
pub async fn finish_send(
    data: &mut crate::tls::DataStream,
    stall: Duration,
    strict_shutdown: bool,
) -> Result<(), DataError> {
    data.shutdown().await.map_err(DataError::Network)?;
    if strict_shutdown && matches!(data, crate::tls::DataStream::Tls(_)) {
        let mut buf = [0u8; 4096];
        loop {
            match timeout(stall, tokio::io::AsyncReadExt::read(data, &mut buf)).await {
                Err(_) => return Err(DataError::Stalled),
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(DataError::Network(e)),
            }
        }
    }
    Ok(())
}
