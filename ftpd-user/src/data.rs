//! Data connections: passive listeners inside the configured port range, and
//! zero-copy file sends.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use tokio::{
    io::{AsyncWriteExt, Interest},
    net::{TcpListener, TcpSocket, TcpStream},
    time::timeout,
};

use crate::rates::Pacer;

pub mod copy;

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

/// What a passive port hands the session waiting for a client.
type Arrival = Result<(TcpStream, IpAddr), DataError>;

/// Who a session waits for on a passive port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Waiter {
    /// Its client's address: sessions of other clients may wait on the same
    /// port.
    Client(IpAddr),
    /// The port is this session's alone, and what arrives is its to check
    /// (`pasv_promiscuous=YES`, or data forwarded by a balancer).
    Anyone,
}

/// The sessions on one port.
#[derive(Debug, Default)]
struct Waiting {
    /// Every session holding a place on the port, from PASV until it lets
    /// go (its data connection may have arrived already): what sharing the
    /// port is decided by.
    members: std::collections::HashSet<Waiter>,
    /// Those still waiting for their data connection.
    senders: HashMap<Waiter, tokio::sync::oneshot::Sender<Arrival>>,
    /// Counts the times a kept port was taken again: a connection the
    /// accept loop took before that is not handed to anyone.
    epoch: u64,
}

impl Waiting {
    /// Whether `waiter` may join: a session alone takes only a port nobody
    /// waits on; another one a port no session of its client, and no session
    /// alone, waits on.
    fn admits(&self, waiter: Waiter) -> bool {
        if waiter == Waiter::Anyone {
            self.members.is_empty()
        } else {
            !self.members.contains(&waiter) && !self.members.contains(&Waiter::Anyone)
        }
    }
}

/// One bound passive port and the sessions on it.
#[derive(Debug, Default)]
struct Port {
    waiting: Mutex<Waiting>,
    /// The accept loop and its listener; both end when no session waits
    /// any more ([`Port::close`]).
    task: OnceLock<(tokio::task::AbortHandle, Arc<TcpListener>)>,
    /// The balancers its accept loop reads a PROXY header from: a kept port
    /// is taken again only while they are still the session's (a reload
    /// may change them).
    balancers: Option<crate::net::Allow>,
    /// Wakes the accept loop when a session joins or leaves: it accepts
    /// only while someone waits.
    changed: Arc<tokio::sync::Notify>,
}

impl Port {
    /// Closes what waits in the listener's queue, for a kept port taken
    /// again: those connections were made before its session asked, and
    /// the port number was known in advance.
    fn drain(&self) {
        if let Some((_, listener)) = self.task.get() {
            // Bounded: a flood must not hold the lock.
            for _ in 0..1024 {
                if rustix::net::accept(&**listener).is_err() {
                    break;
                }
            }
        }
    }

    /// Makes a place for `waiter` on this port if it may join. A kept port
    /// nobody waits on is emptied first: what its listener queued was made
    /// before anyone asked (the port number was known in advance), and a
    /// connection its accept loop took meanwhile goes to nobody (the new
    /// epoch). A port other clients' sessions wait on is joined as it is:
    /// their connections, queued or being handed over, are theirs.
    fn take_back(&self, waiter: Waiter) -> bool {
        let mut waiting = lock(&self.waiting);
        if !waiting.admits(waiter) {
            return false;
        }
        if waiting.members.is_empty() {
            self.drain();
            waiting.epoch += 1;
        }
        true
    }

    /// Refuses connections from now on: the listener is shut down here,
    /// not when the aborted accept loop is next polled on some thread, so
    /// a client connecting right after the reply that gave the port up
    /// (PASV again, PORT, QUIT) is refused, not accepted and closed.
    fn close(&self) {
        if let Some((task, listener)) = self.task.get() {
            let _ = rustix::net::shutdown(&**listener, rustix::net::Shutdown::Both);
            task.abort();
        }
    }
}

/// The passive ports in use, each shared by the sessions of different
/// client addresses: a small range (4 ports published by a container or a
/// firewall) serves as many clients at once as they have addresses, one
/// session per client and port. The connection a port accepts goes to the
/// session waiting there for that address.
#[derive(Debug, Default)]
pub struct PassivePorts {
    ports: Mutex<HashMap<SocketAddr, Arc<Port>>>,
}

/// A session's place on a passive port, from PASV/EPSV until its data
/// connection arrives or it gives up; dropping it leaves the port (the last
/// one out closes it).
#[derive(Debug)]
pub struct PassiveWait {
    ports: Arc<PassivePorts>,
    at: SocketAddr,
    waiter: Waiter,
    arrival: Option<tokio::sync::oneshot::Receiver<Arrival>>,
    /// Left the port by [`PassiveWait::keep`]: the drop has nothing to do.
    kept: bool,
}

/// How long a used passive port waits for its session's next PASV/EPSV.
/// A client fetching files one after another asks within milliseconds; one
/// that does not is given no listener to hold while it idles.
pub const KEPT_FOR: Duration = Duration::from_secs(1);

/// A passive port whose data connection came, still listening for the same
/// session's next PASV/EPSV ([`PassivePorts::wait`] takes it back). A
/// mirror client fetching many small files asks for a passive port before
/// each: taking the same one back saves binding a new listener per file
/// (seven system calls and a task). Nobody waits on it meanwhile: its
/// accept loop accepts nothing, and what queues meanwhile is closed when the
/// port is taken again (see `Port::drain`); on the kernel plane its pinhole
/// is closed and nothing reaches it. Dropping it closes the port unless a
/// session waits there again.
#[derive(Debug)]
pub struct KeptPort {
    ports: Arc<PassivePorts>,
    at: SocketAddr,
    port: Arc<Port>,
    until: tokio::time::Instant,
}

impl KeptPort {
    /// When it is given up if its session has not asked for it again.
    pub fn until(&self) -> tokio::time::Instant {
        self.until
    }
}

impl Drop for KeptPort {
    fn drop(&mut self) {
        let mut ports = lock(&self.ports.ports);
        let ours = ports.get(&self.at).is_some_and(|p| Arc::ptr_eq(p, &self.port));
        if ours && lock(&self.port.waiting).members.is_empty() {
            ports.remove(&self.at);
            self.port.close();
        }
    }
}

impl PassiveWait {
    /// The port the client is to connect to.
    pub fn port(&self) -> u16 {
        self.at.port()
    }

    /// Leaves the port but keeps it listening for this session's next
    /// PASV/EPSV, for [`KEPT_FOR`]. `None` if the port is gone already.
    pub fn keep(&mut self) -> Option<KeptPort> {
        let ports = lock(&self.ports.ports);
        let port = Arc::clone(ports.get(&self.at)?);
        {
            let mut waiting = lock(&port.waiting);
            waiting.members.remove(&self.waiter);
            waiting.senders.remove(&self.waiter);
        }
        port.changed.notify_waiters();
        self.kept = true;
        Some(KeptPort {
            ports: Arc::clone(&self.ports),
            at: self.at,
            port,
            until: tokio::time::Instant::now() + KEPT_FOR,
        })
    }
}

impl Drop for PassiveWait {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut ports = lock(&self.ports.ports);
        let Some(port) = ports.get(&self.at) else { return };
        let empty = {
            let mut waiting = lock(&port.waiting);
            waiting.members.remove(&self.waiter);
            waiting.senders.remove(&self.waiter);
            waiting.members.is_empty()
        };
        if empty && let Some(p) = ports.remove(&self.at) {
            p.close();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a session asks a passive port for.
#[derive(Debug)]
pub struct PassiveAsk {
    /// The address to listen on.
    pub ip: IpAddr,
    /// The ports to choose from (1024–65535 when `None`, as vsftpd).
    pub range: Option<(u16, u16)>,
    /// Where the scan starts, so concurrent sessions do not all race for
    /// the lowest port.
    pub seed: u64,
    /// The session's client.
    pub client: IpAddr,
    /// The session takes a port to itself (any address may connect, or
    /// every data connection comes from a balancer).
    pub alone: bool,
    /// Addresses whose connections start with a PROXY header naming the
    /// client (`ftpd_proxy_data`).
    pub balancers: Option<crate::net::Allow>,
}

impl PassivePorts {
    /// A place for a session on a passive port: a free port if there is
    /// one, else a port no other session of the same client waits on (never
    /// for a session `alone`).
    ///
    /// `kept`: this session's last used port ([`PassiveWait::keep`]),
    /// taken again when it still fits (same address, in the range, not
    /// waited on by this client or by one alone), else closed.
    ///
    /// The port is always chosen here, never by the kernel: `bind` to port 0
    /// searches the whole ephemeral range for a port with no socket at all,
    /// and with thousands of finished transfers in TIME_WAIT that search was
    /// 70% of the CPU of a small download (measured with perf).
    ///
    /// # Errors
    /// Every port is in use (or waited on by this client already), or binding
    /// failed otherwise.
    pub fn wait(self: &Arc<Self>, ask: PassiveAsk, kept: Option<KeptPort>) -> io::Result<PassiveWait> {
        let found = self.find(ask, kept.as_ref());
        // After the lock is released: a kept port not taken again closes.
        drop(kept);
        found
    }

    fn find(self: &Arc<Self>, ask: PassiveAsk, kept: Option<&KeptPort>) -> io::Result<PassiveWait> {
        let PassiveAsk { ip, range, seed, client, alone, balancers } = ask;
        let waiter = if alone { Waiter::Anyone } else { Waiter::Client(crate::net::canonical(client)) };
        let (lo, hi) = range.unwrap_or((1024, 65535));
        let span = u64::from(hi - lo) + 1;
        let mut ports = lock(&self.ports);
        if let Some(k) = kept
            && k.at.ip() == ip
            && (lo..=hi).contains(&k.at.port())
            && ports.get(&k.at).is_some_and(|p| Arc::ptr_eq(p, &k.port))
            && k.port.balancers == balancers
            && k.port.take_back(waiter)
        {
            return Ok(self.join(&ports, k.at, waiter));
        }
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "every port in the passive range is busy");
        let mut shareable = None;
        // A port kept for another session's next transfer, nobody waiting
        // there: taken over, listener and all, if no port is free (binding
        // its address again fails while its socket, shut down, still holds
        // it).
        let mut kept_elsewhere = None;
        // One kept for other balancers (a reload changed them): closed and
        // bound again, the last resort.
        let mut kept_other = None;
        for i in 0..span {
            // span <= 65536 and the sum is reduced mod span, so this fits a u16.
            let at = SocketAddr::new(ip, lo + u16::try_from((seed + i) % span).unwrap_or(0));
            if let Some(port) = ports.get(&at) {
                let waiting = lock(&port.waiting);
                if waiting.members.is_empty() {
                    if port.balancers == balancers {
                        kept_elsewhere.get_or_insert(at);
                    } else {
                        kept_other.get_or_insert(at);
                    }
                } else if shareable.is_none() && waiting.admits(waiter) {
                    shareable = Some(at);
                }
                continue;
            }
            match listen(&mut ports, at, balancers.as_ref()) {
                Ok(()) => return Ok(self.join(&ports, at, waiter)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(e),
            }
        }
        // Its session finds it taken if it asks again, and binds another.
        if let Some(at) = kept_elsewhere
            && ports.get(&at).is_some_and(|p| p.take_back(waiter))
        {
            return Ok(self.join(&ports, at, waiter));
        }
        if shareable.is_none()
            && let Some(at) = kept_other
            && let Some(old) = ports.remove(&at)
        {
            old.close();
            listen(&mut ports, at, balancers.as_ref())?;
            return Ok(self.join(&ports, at, waiter));
        }
        match shareable {
            Some(at) => Ok(self.join(&ports, at, waiter)),
            None => Err(last),
        }
    }

    fn join(self: &Arc<Self>, ports: &HashMap<SocketAddr, Arc<Port>>, at: SocketAddr, waiter: Waiter) -> PassiveWait {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(port) = ports.get(&at) {
            {
                let mut waiting = lock(&port.waiting);
                waiting.members.insert(waiter);
                waiting.senders.insert(waiter, tx);
            }
            port.changed.notify_waiters();
        }
        PassiveWait { ports: Arc::clone(self), at, waiter, arrival: Some(rx), kept: false }
    }
}

/// Accepts on one passive port while sessions wait there, and hands each
/// connection to the session waiting for its address. While nobody waits (a
/// port kept for its session's next transfer) it accepts nothing: what comes
/// stays in the listener's queue, which taking the port again empties.
async fn accept_loop(listener: Arc<TcpListener>, port: std::sync::Weak<Port>, changed: Arc<tokio::sync::Notify>) {
    loop {
        // Registered before the state is read: no change is missed.
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let epoch = {
            let Some(port) = port.upgrade() else { return };
            let waiting = lock(&port.waiting);
            (!waiting.members.is_empty()).then_some(waiting.epoch)
        };
        let Some(epoch) = epoch else {
            notified.await;
            continue;
        };
        let accepted = tokio::select! {
            // A change first: someone left (the port may be kept now) or
            // joined (a kept port taken again, with a new epoch). A
            // connection accepted with the epoch read before that would be
            // judged as from before it, and closed.
            biased;
            () = &mut notified => continue,
            r = listener.accept() => r,
        };
        let Ok((mut stream, peer)) = accepted else {
            if port.strong_count() == 0 {
                // Shut down by `Port::close`.
                return;
            }
            // EMFILE and the like: the session's accept_timeout still holds.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Some(port) = port.upgrade() else { return };
        let from = crate::net::canonical(peer.ip());
        if port.balancers.as_ref().is_some_and(|b| b.contains(from)) {
            // The header may take a moment: read apart from the loop.
            tokio::spawn(async move {
                let arrival = match crate::proxy::read_header(&mut stream).await {
                    Ok(Some(ends)) => Ok((stream, crate::net::canonical(ends.client.ip()))),
                    // The balancer's own connection is no client's.
                    Ok(None) => Err(DataError::BadIp(from)),
                    Err(r) => Err(DataError::Proxy(r)),
                };
                hand_over(&port, arrival, epoch);
            });
        } else {
            hand_over(&port, Ok((stream, from)), epoch);
        }
    }
}

/// Gives an arrival to the session waiting for its address. A session alone
/// on its port gets whatever arrives (another address too, which it refuses
/// as vsftpd does: `425 Security: Bad IP connecting.`); on a port other
/// sessions hold too (even those whose connection has come), an arrival for
/// no waiting session is closed and disturbs none of them.
///
/// `epoch`: when the connection was accepted. One accepted before a kept
/// port was taken again goes to nobody.
fn hand_over(port: &Port, arrival: Arrival, epoch: u64) {
    let mut waiting = lock(&port.waiting);
    if waiting.epoch != epoch {
        tracing::debug!("passive connection from before the port was taken again closed");
        return;
    }
    let who = match &arrival {
        Ok((_, from)) | Err(DataError::BadIp(from)) => Waiter::Client(*from),
        Err(_) => Waiter::Anyone,
    };
    let tx = match waiting.senders.remove(&who) {
        Some(tx) => Some(tx),
        None if waiting.members.len() == 1 => waiting.senders.drain().next().map(|(_, tx)| tx),
        None => None,
    };
    match tx {
        Some(tx) => {
            let _ = tx.send(arrival);
        }
        None => tracing::debug!(?who, "passive connection for no waiting session closed"),
    }
}

/// Binds `at` and starts its accept loop.
fn listen(
    ports: &mut HashMap<SocketAddr, Arc<Port>>,
    at: SocketAddr,
    balancers: Option<&crate::net::Allow>,
) -> io::Result<()> {
    let listener = Arc::new(bind_one(at)?);
    let port = Arc::new(Port { balancers: balancers.cloned(), ..Port::default() });
    let task = tokio::spawn(accept_loop(Arc::clone(&listener), Arc::downgrade(&port), Arc::clone(&port.changed)));
    let _ = port.task.set((task.abort_handle(), listener));
    ports.insert(at, port);
    Ok(())
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // A port whose last transfer sits in TIME_WAIT is free for a new listener.
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    // Several sessions may wait on one port: their clients connect at once.
    sock.listen(64)
}

/// Waits for the client's data connection on `wait`'s port. Unless
/// `promiscuous`, one from any IP but `client` is refused, as vsftpd's
/// `pasv_promiscuous=NO` does (a balancer's connection counts as the client
/// its PROXY header names: `ftpd_proxy_data`).
pub async fn accept(
    wait: &mut PassiveWait,
    client: IpAddr,
    promiscuous: bool,
    limit: Duration,
) -> Result<TcpStream, DataError> {
    let Some(arrival) = wait.arrival.as_mut() else { return Err(DataError::AcceptTimeout) };
    let (stream, from) = match timeout(limit, arrival).await {
        Err(_) => return Err(DataError::AcceptTimeout),
        Ok(Err(_)) => return Err(DataError::Accept(io::Error::other("the passive port closed"))),
        Ok(Ok(a)) => {
            wait.arrival = None;
            a?
        }
    };
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
    // A file that takes more than one call: read ahead further (the disk
    // sees one long read), and cork the socket while no limit paces it, so
    // that every segment is full: each call's last partial page otherwise
    // goes out as a short segment of its own. A small file goes in one call
    // and is spared the system calls.
    let long = len > CORK_FROM;
    if long {
        let _ = rustix::fs::fadvise(file, offset, std::num::NonZeroU64::new(len), rustix::fs::Advice::Sequential);
    }
    let mut corked = false;
    while offset < end {
        let want = usize::try_from((end - offset).min(CHUNK)).unwrap_or(usize::MAX);
        let count = pacer.budget(stream.as_fd(), want).await;
        // A limit paces segments out one by one: no cork under one (it
        // would hold a paced step's tail back for up to 200 ms).
        if long && corked != pacer.unlimited() {
            corked = !corked;
            let _ = rustix::net::sockopt::set_tcp_cork(stream.as_fd(), corked);
        }
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
    if corked {
        // The FIN would push the tail out too; uncorked, it goes at once.
        let _ = rustix::net::sockopt::set_tcp_cork(stream.as_fd(), false);
    }
    stream.shutdown().await.map_err(DataError::Network)?;
    Ok(sent)
}

/// Bytes an upload moves before it lets other uploads have a turn.
const TURN_AFTER: usize = 16 << 20;

/// The uploads running in this process, so that one knows whether others
/// wait for a turn (see [`receive_file`]).
#[derive(Debug, Default)]
pub struct Uploads(std::sync::atomic::AtomicUsize);

/// An upload counted in [`Uploads`] until dropped.
pub struct UploadRunning<'a>(&'a Uploads);

impl Uploads {
    /// Counts an upload until the guard is dropped.
    pub fn enter(&self) -> UploadRunning<'_> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        UploadRunning(self)
    }

    /// Whether more than one upload runs.
    pub fn crowded(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed) > 1
    }
}

impl Drop for UploadRunning<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Files longer than this are corked and read ahead (see [`send_file`]).
const CORK_FROM: u64 = 1 << 20;

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

/// Size of each runtime thread's splice pipe: one splice moves up to this
/// much (a 64 KiB pipe, the default, moves at most 16 socket buffers per
/// call). 1 MiB is `fs.pipe-max-size`'s default, the most an unprivileged
/// process may ask for; if refused, the default size still works, slower.
const UPLOAD_PIPE: usize = 1 << 20;

std::thread_local! {
    /// The splice pipe of the thread running an upload's step. A step (socket
    /// into the pipe, then the pipe drained into the file) has no await in
    /// it, so no other upload can use the pipe in between: one pipe per
    /// runtime thread serves every upload, however many sessions upload at
    /// once. A pipe per session ran out of the kernel's allowance for one
    /// user's pipes (`fs.pipe-user-pages-soft`) after a few hundred
    /// uploaders, and later pipes shrank to one page.
    static PIPE: std::cell::RefCell<Option<(OwnedFd, OwnedFd)>> = const { std::cell::RefCell::new(None) };
}

/// This thread's pipe, made on its first upload. Given back with
/// [`return_pipe`] only when empty.
fn take_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    if let Some(p) = PIPE.with(|p| p.borrow_mut().take()) {
        return Ok(p);
    }
    let p = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let _ = rustix::pipe::fcntl_setpipe_size(&p.1, UPLOAD_PIPE);
    Ok(p)
}

fn return_pipe(p: (OwnedFd, OwnedFd)) {
    PIPE.with(|slot| *slot.borrow_mut() = Some(p));
}

/// Receives into `file` with `splice(2)`: socket → pipe → file, no copy
/// through userspace. `offset` is where writing starts (`None`: the file
/// position, for O_APPEND). Returns the bytes written, counting into
/// `progress`. With a rate limit, `pacer` lets each read wait for the
/// schedule, and TCP flow control slows the client. Splice stays.
#[allow(clippy::too_many_arguments)]
pub async fn receive_file(
    stream: &mut TcpStream,
    file: &OwnedFd,
    mut offset: Option<u64>,
    stall: Duration,
    progress: &Progress,
    pacer: &mut Pacer,
    uploads: &Uploads,
) -> Result<u64, RecvError> {
    use rustix::pipe::{SpliceFlags, splice};
    const CHUNK: usize = UPLOAD_PIPE;
    let _running = uploads.enter();
    let mut total = 0u64;
    let mut since_turn = 0usize;
    loop {
        // A client that sends faster than the file takes it keeps the socket
        // readable, and readiness never makes this task wait: tokio would
        // let it run 128 steps (128 MiB) before another task of its thread,
        // so of 64 uploads at once some finished long before the others
        // (the last at 1.8 times the median). Every 16 MiB it gives them a
        // turn, when there are others (1.2 times the median, for 10 % less
        // aggregate speed in the same run; every 4 MiB cost 20 %). Alone, a
        // turn only wakes the runtime's other thread for nothing (single
        // uploads lost 15 % of their speed to it).
        if since_turn >= TURN_AFTER {
            since_turn = 0;
            if uploads.crowded() {
                tokio::task::yield_now().await;
            }
        }
        let chunk = pacer.budget(stream.as_fd(), CHUNK).await;
        match timeout(stall, stream.readable()).await {
            Err(_) => return Err(RecvError::Stalled),
            Ok(Err(e)) => return Err(RecvError::Network(e)),
            Ok(Ok(())) => {}
        }
        // From here to the end of the step, no await: the pipe is this
        // thread's (see `PIPE`).
        let pipe = take_pipe().map_err(RecvError::File)?;
        let (pipe_r, pipe_w) = &pipe;
        let got = stream.try_io(Interest::READABLE, || {
            splice(stream.as_fd(), None, pipe_w, None, chunk, SpliceFlags::MOVE | SpliceFlags::NONBLOCK)
                .map_err(io::Error::from)
        });
        let n = match got {
            Ok(0) => {
                return_pipe(pipe);
                return Ok(total);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return_pipe(pipe);
                continue;
            }
            Err(e) => {
                return_pipe(pipe); // a failed read leaves nothing in it
                return Err(RecvError::Network(e));
            }
        };
        pacer.moved(n);
        since_turn += n;
        // Drain the pipe into the file; the file side blocks only on the
        // disk. A failure leaves bytes in the pipe: it is closed, not given
        // back.
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
        return_pipe(pipe);
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

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, sync::Arc, time::Duration};

    use super::{PassiveAsk, PassivePorts, Uploads, accept};

    /// A connection made to a kept port before its session asks again (from
    /// another address, or early) never becomes that session's data
    /// connection: the port number was known in advance, so whatever waited
    /// in the listener's queue is closed when the port is taken again.
    #[tokio::test]
    async fn a_connection_made_before_a_kept_port_is_taken_again_is_not_handed_over() {
        let (ports, port, kept) = used_and_kept().await;
        let client = IpAddr::from([127, 0, 0, 1]);

        // Queued before the session asks again: a blocking connect, so the
        // accept loop does not run in between.
        let early = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        early.bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into()).expect("bind 127.0.0.2");
        early.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()).expect("early connect");

        let mut again = ports.wait(ask(port, true), Some(kept)).expect("the kept port");
        let _late = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let got = accept(&mut again, client, true, Duration::from_secs(5)).await.expect("a data connection");
        assert_eq!(got.peer_addr().expect("peer").ip(), client, "the early connection was handed over");
    }

    /// A port shared by sessions of two clients: one session's transfer
    /// ends (its port kept) while the other still waits, and its client has
    /// connected already (queued, not yet accepted). The first session
    /// taking the port back must leave that connection alone: emptying the
    /// queue (or a new epoch) would lose it, and the other session would
    /// wait out its accept timeout and answer 425.
    #[tokio::test]
    async fn taking_back_a_shared_kept_port_leaves_the_other_clients_connection() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let ports = Arc::new(PassivePorts::default());
        let (a, c) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        let mut first = ports.wait(PassiveAsk { client: a, ..ask(port, false) }, None).expect("a port");
        let mut other = ports.wait(PassiveAsk { client: c, ..ask(port, false) }, None).expect("the port, shared");
        let _a1 = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        accept(&mut first, a, false, Duration::from_secs(5)).await.expect("the first session's connection");
        let kept = first.keep().expect("kept");

        // The other client's connection, queued while the accept loop
        // cannot run (a blocking connect, no await until the accept).
        let queued = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        queued.bind(&std::net::SocketAddr::from((c, 0)).into()).expect("bind 127.0.0.2");
        queued.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()).expect("connect");
        let _again = ports.wait(PassiveAsk { client: a, ..ask(port, false) }, Some(kept)).expect("taken back");

        let got = accept(&mut other, c, false, Duration::from_secs(3)).await;
        assert_eq!(got.expect("the other session's connection").peer_addr().expect("peer").ip(), c);
    }

    /// A one-port range whose port served one data connection and is kept.
    async fn used_and_kept() -> (Arc<PassivePorts>, u16, super::KeptPort) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let ports = Arc::new(PassivePorts::default());
        let mut first = ports.wait(ask(port, true), None).expect("a port");
        let _c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        accept(&mut first, IpAddr::from([127, 0, 0, 1]), true, Duration::from_secs(5))
            .await
            .expect("the first data connection");
        let kept = first.keep().expect("kept");
        (ports, port, kept)
    }

    fn ask(port: u16, alone: bool) -> PassiveAsk {
        let ip = IpAddr::from([127, 0, 0, 1]);
        PassiveAsk { ip, range: Some((port, port)), seed: 0, client: ip, alone, balancers: None }
    }

    /// A port kept for its session's next transfer is no port taken: with
    /// one port in the range, another session that must have it to itself
    /// gets it, and the first session's kept port going away later leaves
    /// the new session's listener alone.
    #[tokio::test]
    async fn a_kept_port_is_given_to_a_session_that_needs_it() {
        let (ports, port, kept) = used_and_kept().await;
        let client = IpAddr::from([127, 0, 0, 1]);

        let mut second = ports.wait(ask(port, true), None).expect("the kept port, for another session");
        drop(kept);
        let _c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        accept(&mut second, client, true, Duration::from_secs(5)).await.expect("the second session's connection");
    }

    /// A kept port's accept loop reads PROXY headers from the balancers
    /// trusted when it was bound: after a reload that changed them, the
    /// session's next port is bound again, not taken back.
    #[tokio::test]
    async fn a_kept_port_is_not_taken_again_for_other_balancers() {
        use tokio::io::AsyncWriteExt as _;
        let (ports, port, kept) = used_and_kept().await;

        // Now this address is a balancer that names the client in a header.
        let trusted = crate::net::Allow::parse("ftpd_proxy_trusted", "127.0.0.1").expect("list");
        let client = IpAddr::from([192, 0, 2, 7]);
        let mut again = ports
            .wait(PassiveAsk { client, balancers: Some(trusted), ..ask(port, true) }, Some(kept))
            .expect("a port again");
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        c.write_all(format!("PROXY TCP4 192.0.2.7 127.0.0.1 40000 {port}\r\n").as_bytes()).await.expect("header");
        let got = accept(&mut again, client, false, Duration::from_secs(5)).await;
        assert!(got.is_ok(), "the header was not read: {got:?}");
    }

    /// The data connection of a session that took its kept port again
    /// reaches it, however the accept loop's turns fall: the loop may still
    /// be in the accept it started before the port was kept when the
    /// connection comes.
    #[tokio::test]
    async fn a_kept_port_taken_again_hands_over_the_next_connection() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let ports = Arc::new(PassivePorts::default());
        let client = IpAddr::from([127, 0, 0, 1]);
        let mut wait = ports.wait(ask(port, true), None).expect("a port");
        for round in 0..20 {
            let _c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
            accept(&mut wait, client, true, Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("round {round}: the data connection did not come: {e:?}"));
            let kept = wait.keep().expect("kept");
            drop(wait);
            wait = ports.wait(ask(port, true), Some(kept)).expect("the kept port");
        }
    }

    #[test]
    fn an_upload_gives_turns_only_while_another_runs() {
        let uploads = Uploads::default();
        let first = uploads.enter();
        assert!(!uploads.crowded(), "alone: no turn to give");
        let second = uploads.enter();
        assert!(uploads.crowded());
        drop(second);
        assert!(!uploads.crowded(), "the other one ended");
        drop(first);
        assert_eq!(uploads.0.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
