//! Messages between ftpd's processes: SOCK_SEQPACKET datagrams, each one
//! typed message (postcard, serde's compact binary format) with at most one
//! file descriptor attached (`SCM_RIGHTS`).
//!
//! There is one message type per channel direction: [`MasterRequest`] and
//! [`MasterReply`] between the front and the master, [`WorkerRequest`] and
//! [`WorkerReply`] between the front and a file worker (a streamed listing's
//! own channel carries [`WorkerReply::Entries`]). [`decode`] returns an error
//! on a short, long or malformed message, and the receiver treats that as a
//! broken peer (see docs/ARCHITECTURE.md).

use std::{
    borrow::Cow,
    fmt,
    io::{self, IoSlice, IoSliceMut},
    mem::MaybeUninit,
    net::IpAddr,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
};

use rustix::{
    fs::Stat,
    net::{
        AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
        SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
    },
};
use serde::{Deserialize, Serialize};

use crate::{
    config::Config,
    fs::{Create, Entry},
    login::Grant,
};

/// Largest message: a listing chunk or a login request with its limits.
pub const MAX_MSG: usize = 128 * 1024;

/// A connected pair of SOCK_SEQPACKET sockets (close-on-exec).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?)
}

/// Sends one message, with `fd` attached if given.
pub fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    send_bytes(sock, &encode(msg)?, fd)
}

/// Sends one encoded message.
fn send_bytes(sock: BorrowedFd<'_>, msg: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
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

/// Receives one message into `buf` (resized to fit), to [`decode`];
/// `Ok(None)` when the peer closed. A message longer than [`MAX_MSG`] is an
/// error: its end was cut off.
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
    if got.flags.contains(ReturnFlags::TRUNC) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "message longer than MAX_MSG"));
    }
    buf.truncate(got.bytes);
    Ok(Some(fd))
}

/// Sends and waits for the answer (in `buf`, to [`decode`]), on a socket
/// nobody else uses meanwhile.
pub fn call<T: Serialize>(
    sock: &impl AsFd,
    msg: &T,
    fd: Option<BorrowedFd<'_>>,
    buf: &mut Vec<u8>,
) -> io::Result<Option<OwnedFd>> {
    send(sock.as_fd(), msg, fd)?;
    match recv(sock.as_fd(), buf)? {
        Some(fd) => Ok(fd),
        None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "peer process closed the channel")),
    }
}

/// Encodes a message. Fails only for a message over [`MAX_MSG`], which the
/// receiver could not take.
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> io::Result<Vec<u8>> {
    let bytes = postcard::to_allocvec(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if bytes.len() > MAX_MSG {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "message longer than MAX_MSG"));
    }
    Ok(bytes)
}

/// Decodes one whole message. Never panics: garbage, a cut-off message or
/// bytes left over are errors. What it allocates is bounded by the length of
/// `msg` (every element takes at least one byte; serde caps what a claimed
/// length makes it reserve ahead).
///
/// # Errors
/// [`DecodeError`]: the peer that sent it is broken.
pub fn decode<'a, T: Deserialize<'a>>(msg: &'a [u8]) -> Result<T, DecodeError> {
    if msg.len() > MAX_MSG {
        return Err(DecodeError::TooLong);
    }
    match postcard::take_from_bytes(msg) {
        Ok((value, [])) => Ok(value),
        Ok((_, _rest)) => Err(DecodeError::Trailing),
        Err(e) => Err(DecodeError::Malformed(e)),
    }
}

/// Why a message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Longer than [`MAX_MSG`].
    TooLong,
    /// Bytes after the message.
    Trailing,
    /// Not a message of this type: cut short, an unknown tag, bad UTF-8...
    Malformed(postcard::Error),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => write!(f, "message longer than {MAX_MSG} bytes"),
            Self::Trailing => f.write_str("bytes after the end of the message"),
            Self::Malformed(e) => write!(f, "malformed message: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// What the front asks the master. Each request comes with the socket its
/// reply goes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterRequest {
    /// USER and PASS: decide a login.
    Login(LoginRequest),
    /// A socket bound to `ip:port` for `connect_from_port_20` (ports below
    /// 1024 need privilege). The master binds only `ftp_data_port`.
    BindDataPort {
        /// The control connection's local address.
        ip: IpAddr,
        /// Must be `ftp_data_port`.
        port: u16,
    },
    /// SIGHUP: read the configuration again, and decide the rate limit of
    /// these logged-in users under it.
    Reload {
        /// User name, and whether the session is anonymous (a rate owner).
        owners: Vec<(String, bool)>,
    },
    /// A front starting: what it must take over that its startup copy of
    /// the configuration lacks (a front that replaces a dead one).
    Current,
    /// The front banned a client network: kept by the master (no reply) for
    /// a front that replaces this one.
    Banned {
        /// The network's key, masked (`ftpd_common::IpKey`).
        net: [u8; 16],
        /// How long the ban lasts, in milliseconds.
        millis: u64,
    },
}

/// A login to decide: the only network bytes the master sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The USER argument.
    pub user: String,
    /// The PASS argument, unparsed.
    pub password: Secret,
    /// The client's address, for PAM's `PAM_RHOST` and the login queue.
    pub rhost: String,
}

/// Bytes that no log and no `Debug` output may show (a password).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// What the master answers the front.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterReply {
    /// The login is granted. The front's end of a channel to the worker comes
    /// attached when the worker is new; otherwise the front has it already.
    Granted {
        /// Who the session acts as, where, and with which settings.
        grant: Grant,
        /// The worker's id, under which the front keeps its channel.
        worker: u64,
    },
    /// The login is refused.
    Denied {
        /// vsftpd's text for the 530 reply.
        reply: String,
    },
    /// Refused unchecked: too many logins were waiting for a password check.
    Busy,
    /// The bound socket comes attached.
    Bound,
    /// The data port could not be bound, or was not `ftp_data_port`.
    BindFailed {
        /// For the log.
        reason: String,
    },
    /// The configuration was read again and is in force for later logins.
    Reloaded {
        /// The new configuration.
        config: Box<Config>,
        /// The rate limit of each owner of the request, in its order.
        limits: Vec<u64>,
        /// The TLS certificate, key and CA, read as root, when FTPS is on.
        tls: Option<crate::tls::TlsFiles>,
    },
    /// The configuration (or a logged-in user's file) is bad; nothing changed.
    ReloadFailed {
        /// What is wrong, with file and line.
        reason: String,
    },
    /// The answer to [`MasterRequest::Current`].
    Current {
        /// The configuration of the last good reload, as sent then, with
        /// its TLS files; `None` before any reload.
        reloaded: Option<(Box<Config>, Option<crate::tls::TlsFiles>)>,
        /// The bans still running, with the milliseconds each has left.
        bans: Vec<([u8; 16], u64)>,
    },
}

/// What the front asks a file worker: one operation on a path in the
/// worker's root (every path is checked again by the worker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerRequest<'a> {
    /// Open a regular file for reading: [`WorkerReply::Stat`] with the file attached.
    OpenFile {
        /// The file.
        #[serde(borrow, with = "serde_bytes")]
        path: &'a [u8],
    },
    /// Whether `path` is an enterable directory: [`WorkerReply::Done`].
    IsDir {
        /// The directory.
        #[serde(borrow, with = "serde_bytes")]
        path: &'a [u8],
    },
    /// `stat` (symlinks followed inside the root): [`WorkerReply::Stat`].
    Stat {
        /// The file.
        #[serde(borrow, with = "serde_bytes")]
        path: &'a [u8],
    },
    /// `lstat`: [`WorkerReply::Stat`].
    Lstat {
        /// The file.
        #[serde(borrow, with = "serde_bytes")]
        path: &'a [u8],
    },
    /// Open for writing: [`WorkerReply::Done`] with the file attached.
    OpenWrite {
        /// The file.
        #[serde(borrow, with = "serde_bytes")]
        path: &'a [u8],
        /// What to do with an existing file.
        how: Create,
        /// Permission bits of a new file.
        mode: u32,
    },
    /// Open and lock an atomic upload's part file: [`WorkerReply::Done`] with
    /// the file attached.
    OpenPart {
        /// The part file.
        #[serde(borrow, with = "serde_bytes")]
        part: &'a [u8],
        /// Keep its contents (REST, APPE).
        resume: bool,
        /// Permission bits of a new part.
        mode: u32,
    },
    /// This user's part file, if no upload holds it: [`WorkerReply::Stat`]
    /// with the file attached.
    ResumablePart {
        /// The part file.
        #[serde(borrow, with = "serde_bytes")]
        part: &'a [u8],
    },
    /// A new temporary file beside `target`: [`WorkerReply::Temp`].
    CreateTemp {
        /// The file the upload will replace.
        #[serde(borrow, with = "serde_bytes")]
        target: &'a [u8],
        /// Permission bits.
        mode: u32,
    },
    /// Where a replace of `target` is written: [`WorkerReply::Replace`].
    OpenReplace {
        /// The file to replace.
        #[serde(borrow, with = "serde_bytes")]
        target: &'a [u8],
    },
    /// Publish a complete upload: [`WorkerReply::Done`].
    Commit {
        /// The part or temporary file.
        #[serde(borrow, with = "serde_bytes")]
        from: &'a [u8],
        /// Its final name.
        #[serde(borrow, with = "serde_bytes")]
        to: &'a [u8],
        /// Whether it may replace a file there.
        replace: bool,
    },
    /// `mkdir`: [`WorkerReply::Done`].
    Mkdir {
        /// The new directory.
        #[serde(borrow, with = "serde_bytes")]
        path: &'a [u8],
        /// Permission bits.
        mode: u32,
    },
    /// `rmdir`: [`WorkerReply::Done`].
    Rmdir {
        /// The directory.
        #[serde(borrow, with = "serde_bytes")]
        path: &'a [u8],
    },
    /// `unlink`: [`WorkerReply::Done`].
    Unlink {
        /// The file.
        #[serde(borrow, with = "serde_bytes")]
        path: &'a [u8],
    },
    /// `rename`: [`WorkerReply::Done`].
    Rename {
        /// The old name.
        #[serde(borrow, with = "serde_bytes")]
        from: &'a [u8],
        /// The new name.
        #[serde(borrow, with = "serde_bytes")]
        to: &'a [u8],
    },
    /// `chmod`: [`WorkerReply::Done`].
    Chmod {
        /// The file.
        #[serde(borrow, with = "serde_bytes")]
        path: &'a [u8],
        /// The new permission bits.
        mode: u32,
    },
    /// Set the modification time (`MDTM` with a time): [`WorkerReply::Done`].
    SetMtime {
        /// The file.
        #[serde(borrow, with = "serde_bytes")]
        path: &'a [u8],
        /// Seconds since 1970 (negative before).
        secs: i64,
    },
    /// Stream the listing of a directory on the channel that comes attached
    /// ([`WorkerReply::Entries`] there); [`WorkerReply::Done`] here once it started.
    ListStream {
        /// The directory.
        #[serde(borrow, with = "serde_bytes")]
        path: &'a [u8],
        /// Dot files too.
        all: bool,
        /// How old a cached listing may be (`ftpd_list_cache_ms`).
        cache_ms: u32,
    },
    /// Drop the cached listings: the front wrote to a file in place.
    Forget,
}

/// What a file worker answers the front.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WorkerReply<'a> {
    /// Done (an opened file may come attached).
    Done,
    /// A file's status (an opened file may come attached).
    Stat(#[serde(with = "crate::fs::wire_stat")] Stat),
    /// A temporary file, attached, and its path.
    Temp {
        /// Where it is, in the root.
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
    /// Where a replace is written, attached: a temporary file to rename over
    /// the target, or `None`: the target itself, truncated.
    Replace {
        /// The temporary file's path.
        #[serde(with = "serde_bytes")]
        temp: Option<Vec<u8>>,
    },
    /// Entries of a streamed listing, on its own channel.
    Entries {
        /// No more follow.
        last: bool,
        /// The entries, in listing order.
        entries: Cow<'a, [Entry]>,
    },
    /// The operation failed with this `errno`.
    Errno(i32),
    /// The path was refused (NUL, too long, or leaves the root).
    BadName,
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, ffi::OsStr, os::unix::ffi::OsStrExt, path::PathBuf};

    use super::*;
    use crate::policy::Policy;

    fn stat_of(path: &str) -> Stat {
        rustix::fs::stat(path).unwrap()
    }

    fn grant(config: Option<Box<Config>>) -> Grant {
        let mut c = Config::default();
        c.apply_text("t", "write_enable=YES\nlocal_max_rate=5000\n").unwrap();
        Grant {
            name: "alice".into(),
            anonymous: false,
            uid: 1000,
            gid: 100,
            groups: vec![100, 27, 4],
            // Home directories need not be UTF-8.
            root_dir: PathBuf::from(OsStr::from_bytes(b"/home/al\xffice")),
            cwd: b"/pub".to_vec(),
            config,
            policy: Policy::decide(&c, false),
        }
    }

    fn master_requests() -> Vec<MasterRequest> {
        vec![
            MasterRequest::Login(LoginRequest {
                user: "alice".into(),
                password: Secret(b"hunter2\x00\xff".to_vec()),
                rhost: "192.0.2.7".into(),
            }),
            MasterRequest::BindDataPort { ip: "192.0.2.1".parse().unwrap(), port: 20 },
            MasterRequest::BindDataPort { ip: "2001:db8::1".parse().unwrap(), port: 20 },
            MasterRequest::Reload { owners: vec![("alice".into(), false), ("anonymous".into(), true)] },
            MasterRequest::Reload { owners: Vec::new() },
            MasterRequest::Current,
            MasterRequest::Banned { net: [0xff; 16], millis: 900_000 },
        ]
    }

    fn master_replies() -> Vec<MasterReply> {
        let mut own = Config::default();
        own.apply_text("u", "local_max_rate=100\nftpd_banner=hi there\nlocal_root=/srv/x\n").unwrap();
        vec![
            MasterReply::Granted { grant: grant(None), worker: 7 },
            MasterReply::Granted { grant: grant(Some(Box::new(own.clone()))), worker: u64::MAX },
            MasterReply::Denied { reply: "Login incorrect.".into() },
            MasterReply::Busy,
            MasterReply::Bound,
            MasterReply::BindFailed { reason: "bad bind request".into() },
            MasterReply::Reloaded {
                config: Box::new(own.clone()),
                limits: vec![0, 100, u64::MAX],
                tls: Some(crate::tls::TlsFiles { cert: b"c".to_vec(), key: vec![0, 255], ca: Vec::new() }),
            },
            MasterReply::ReloadFailed { reason: "/etc/ftpd.conf:3: no `=`".into() },
            MasterReply::Current { reloaded: None, bans: Vec::new() },
            MasterReply::Current {
                reloaded: Some((
                    Box::new(own.clone()),
                    Some(crate::tls::TlsFiles { cert: b"c".to_vec(), key: vec![1], ca: vec![2] }),
                )),
                bans: vec![([1; 16], 1), ([0; 16], u64::MAX)],
            },
            MasterReply::Current { reloaded: Some((Box::new(own), None)), bans: Vec::new() },
        ]
    }

    fn worker_requests() -> Vec<WorkerRequest<'static>> {
        let p: &[u8] = b"/pub/a file\xff";
        vec![
            WorkerRequest::OpenFile { path: p },
            WorkerRequest::IsDir { path: b"/" },
            WorkerRequest::Stat { path: p },
            WorkerRequest::Lstat { path: p },
            WorkerRequest::OpenWrite { path: p, how: Create::Exclusive, mode: 0o644 },
            WorkerRequest::OpenWrite { path: p, how: Create::Truncate, mode: 0 },
            WorkerRequest::OpenWrite { path: p, how: Create::Keep, mode: 0o600 },
            WorkerRequest::OpenWrite { path: p, how: Create::Append, mode: 0o666 },
            WorkerRequest::OpenWrite { path: p, how: Create::Existing, mode: 0o7777 },
            WorkerRequest::OpenPart { part: b"/.x.0123.ftpd-part", resume: true, mode: 0o644 },
            WorkerRequest::ResumablePart { part: b"/.x.0123.ftpd-part" },
            WorkerRequest::CreateTemp { target: p, mode: 0o644 },
            WorkerRequest::OpenReplace { target: p },
            WorkerRequest::Commit { from: b"/.x.0123.ftpd-part", to: p, replace: false },
            WorkerRequest::Mkdir { path: p, mode: 0o755 },
            WorkerRequest::Rmdir { path: p },
            WorkerRequest::Unlink { path: p },
            WorkerRequest::Rename { from: p, to: b"/b" },
            WorkerRequest::Chmod { path: p, mode: 0o600 },
            WorkerRequest::SetMtime { path: p, secs: -86_400 },
            WorkerRequest::SetMtime { path: p, secs: i64::MAX },
            WorkerRequest::ListStream { path: b"/pub", all: true, cache_ms: 2000 },
            WorkerRequest::Forget,
        ]
    }

    fn worker_replies() -> Vec<WorkerReply<'static>> {
        let entries = vec![
            Entry { name: b"a".to_vec(), stat: stat_of("/"), link: None },
            Entry { name: b"link\xff".to_vec(), stat: stat_of("/dev/null"), link: Some(b"../target".to_vec()) },
        ];
        vec![
            WorkerReply::Done,
            WorkerReply::Stat(stat_of("/dev/null")),
            WorkerReply::Temp { path: b"/pub/.ftpd-tmp.a.0011223344556677".to_vec() },
            WorkerReply::Replace { temp: Some(b"/pub/.ftpd-tmp.a.0011223344556677".to_vec()) },
            WorkerReply::Replace { temp: None },
            WorkerReply::Entries { last: false, entries: Cow::Owned(entries) },
            WorkerReply::Entries { last: true, entries: Cow::Owned(Vec::new()) },
            WorkerReply::Errno(libc::EACCES),
            WorkerReply::BadName,
        ]
    }

    /// Whether `bytes` decode as a message of one channel's type.
    type Decodes = fn(&[u8]) -> bool;

    /// Every message of every channel, encoded, with its type's decoder.
    fn all_encoded() -> Vec<(Vec<u8>, Decodes)> {
        let mut out: Vec<(Vec<u8>, Decodes)> = Vec::new();
        let decodes: Decodes = |b| decode::<MasterRequest>(b).is_ok();
        out.extend(master_requests().iter().map(|m| (encode(m).unwrap(), decodes)));
        let decodes: Decodes = |b| decode::<MasterReply>(b).is_ok();
        out.extend(master_replies().iter().map(|m| (encode(m).unwrap(), decodes)));
        let decodes: Decodes = |b| decode::<WorkerRequest<'_>>(b).is_ok();
        out.extend(worker_requests().iter().map(|m| (encode(m).unwrap(), decodes)));
        let decodes: Decodes = |b| decode::<WorkerReply<'_>>(b).is_ok();
        out.extend(worker_replies().iter().map(|m| (encode(m).unwrap(), decodes)));
        out
    }

    #[test]
    fn master_messages_round_trip() {
        for m in master_requests() {
            assert_eq!(decode::<MasterRequest>(&encode(&m).unwrap()).unwrap(), m);
        }
        for m in master_replies() {
            assert_eq!(decode::<MasterReply>(&encode(&m).unwrap()).unwrap(), m);
        }
    }

    #[test]
    fn worker_messages_round_trip() {
        for m in worker_requests() {
            assert_eq!(decode::<WorkerRequest<'_>>(&encode(&m).unwrap()).unwrap(), m);
        }
        // `Stat` has no `==`: a reply must encode back to the same bytes,
        // and its fields come back.
        for m in worker_replies() {
            let bytes = encode(&m).unwrap();
            let back: WorkerReply<'_> = decode(&bytes).unwrap();
            assert_eq!(encode(&back).unwrap(), bytes, "{m:?}");
        }
        let null = stat_of("/dev/null");
        let Ok(WorkerReply::Stat(st)) = decode(&encode(&WorkerReply::Stat(null)).unwrap()) else { panic!() };
        assert_eq!((st.st_ino, st.st_mode, st.st_rdev), (null.st_ino, null.st_mode, null.st_rdev));
    }

    #[test]
    fn the_password_is_never_shown() {
        let shown = format!("{:?}", master_requests()[0]);
        assert!(shown.contains("alice") && shown.contains("****") && !shown.contains("hunter"), "{shown}");
    }

    #[test]
    fn cut_off_or_extended_messages_are_errors() {
        for (bytes, decodes) in all_encoded() {
            for cut in 0..bytes.len() {
                assert!(!decodes(&bytes[..cut]), "{bytes:?} cut at {cut} decoded");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(!decodes(&longer), "{bytes:?} with a byte more decoded");
        }
        assert_eq!(decode::<WorkerReply<'_>>(&[0, 0]).unwrap_err(), DecodeError::Trailing);
        assert_eq!(decode::<MasterReply>(&vec![3; MAX_MSG + 1]).unwrap_err(), DecodeError::TooLong);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic_nor_a_big_allocation() {
        // Unknown tags, lengths past the end (up to 2^64) for strings,
        // bytes and sequences, bad UTF-8, a `Stat` of the wrong size, a bool
        // that is 2.
        let far = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        for tag in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 200] {
            for (_, decodes) in all_encoded() {
                let mut b = vec![tag];
                b.extend_from_slice(&far);
                assert!(!decodes(&b), "{b:?} decoded");
            }
        }
        assert!(decode::<MasterRequest>(&[0, 5, b'a', 0xff, b'b', b'c', b'd', 0, 0]).is_err());
        assert!(decode::<WorkerReply<'_>>(&[1, 3, 1, 2, 3]).is_err());
        assert!(decode::<WorkerRequest<'_>>(&[9, 1, b'/', 2, 0]).is_err());
        // A listing that claims 2^32 entries and holds none.
        assert!(decode::<WorkerReply<'_>>(&[4, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        // Random bytes, and every valid message with one byte changed: any
        // outcome but a panic (the test harness would report it).
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let everything = all_encoded();
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            for (_, decodes) in &everything {
                decodes(&bytes);
            }
        }
        for (bytes, decodes) in &everything {
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] = next() as u8;
                decodes(&b);
            }
        }
    }

    #[test]
    fn a_message_too_long_to_receive_is_not_sent() {
        let huge = MasterReply::Denied { reply: "x".repeat(MAX_MSG) };
        assert!(encode(&huge).is_err());
        let (a, _b) = pair().unwrap();
        assert!(send(a.as_fd(), &huge, None).is_err());
    }

    #[test]
    fn round_trip_with_fd() {
        let (a, b) = pair().unwrap();
        let file = rustix::fs::open("/dev/null", rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty()).unwrap();
        let msg = WorkerRequest::ListStream { path: b"/pub", all: false, cache_ms: 9 };
        send(a.as_fd(), &msg, Some(file.as_fd())).unwrap();
        let mut buf = Vec::new();
        let fd = recv(b.as_fd(), &mut buf).unwrap().unwrap();
        assert!(fd.is_some());
        assert_eq!(decode::<WorkerRequest<'_>>(&buf).unwrap(), msg);
        drop(a);
        assert!(recv(b.as_fd(), &mut buf).unwrap().is_none());
    }
}
