//! File workers: the processes that touch a user's files with that user's
//! credentials (docs/ARCHITECTURE.md). The front calls them through `Fs`,
//! which is either the root itself (single-process mode, not started as root)
//! or a channel to the worker for the session's identity.

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
    sync::Mutex,
};

use rustix::fs::Stat;

use crate::{
    fs::{Create, Entry, FsError, Root, VPath},
    ipc::{self, Dec, Enc},
};

/// Where a session's file operations run.
#[derive(Debug)]
pub enum Fs {
    /// In this process (single-process mode).
    Local(Root),
    /// In a worker process running as the user; anonymous downloads may be
    /// opened here first (see [`Direct`]).
    Remote(std::sync::Arc<WorkerLink>, Option<std::sync::Arc<Direct>>),
}

/// Anonymous downloads opened by the front itself, without the worker hop
/// (two process wake-ups, half the latency of a small download). Only when
/// the front runs with exactly `ftp_username`'s credentials (same uid, gid
/// and groups, as with the default `ftp_username=nopriv_user=nobody`): then
/// the kernel's answer to the front's open is the worker's answer, for the
/// search permission of every directory on the path, for ACLs and for
/// anything else the kernel checks. Emulating those rules for another user
/// in the front cannot be made exact, so with different credentials every
/// open goes to the worker.
#[derive(Debug)]
pub struct Direct {
    /// The anonymous root, opened by the master as root before the split.
    root: std::sync::Arc<Root>,
}

impl Direct {
    /// The front's own opens for a session acting as `uid`/`gid`/`groups`,
    /// if this process has exactly those credentials.
    pub fn for_identity(root: &std::sync::Arc<Root>, uid: u32, gid: u32, groups: &[u32]) -> Option<Self> {
        let (my_uid, my_gid, my_groups) = own_credentials();
        let mut theirs: Vec<u32> = groups.iter().copied().chain([gid]).collect();
        theirs.sort_unstable();
        theirs.dedup();
        (uid == *my_uid && gid == *my_gid && theirs == *my_groups).then(|| Self { root: std::sync::Arc::clone(root) })
    }

    fn open_file(&self, path: &VPath) -> Option<(OwnedFd, Stat)> {
        // Served only if everyone may read it (`anon_world_readable_only`);
        // anything else is the worker's decision.
        self.root.open_file(path).ok().filter(|(_, st)| st.st_mode & 0o004 != 0)
    }
}

/// This process's uid, gid, and groups with the gid (sorted), as the kernel
/// checks permissions with them. Read once: the front's never change.
fn own_credentials() -> &'static (u32, u32, Vec<u32>) {
    static CREDS: std::sync::OnceLock<(u32, u32, Vec<u32>)> = std::sync::OnceLock::new();
    CREDS.get_or_init(|| {
        // SAFETY: getgroups with a buffer of the size it is told; a first
        // call with 0 asks for the count.
        let mut groups = unsafe {
            let n = libc::getgroups(0, std::ptr::null_mut());
            let mut v = vec![0 as libc::gid_t; usize::try_from(n).unwrap_or(0)];
            let got = libc::getgroups(n.max(0), v.as_mut_ptr());
            v.truncate(usize::try_from(got).unwrap_or(0));
            v
        };
        let gid = rustix::process::getegid().as_raw();
        groups.push(gid);
        groups.sort_unstable();
        groups.dedup();
        (rustix::process::geteuid().as_raw(), gid, groups)
    })
}

/// The front's end of a worker's channel. One request at a time.
#[derive(Debug)]
pub struct WorkerLink(Mutex<OwnedFd>);

impl WorkerLink {
    /// Wraps the front's end of the channel.
    pub fn new(fd: OwnedFd) -> Self {
        Self(Mutex::new(fd))
    }

    /// Whether the worker is still there (its end not closed). Checked
    /// before a cached grant is reused, so a dead worker is replaced by the
    /// master instead of failing every file operation of new sessions.
    pub fn alive(&self) -> bool {
        // A call in progress holds the lock: the worker was alive just now.
        let Ok(sock) = self.0.try_lock() else { return true };
        let mut fds = [rustix::event::PollFd::new(&*sock, rustix::event::PollFlags::empty())];
        match rustix::event::poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })) {
            Ok(0) => true,
            Ok(_) => !fds[0].revents().intersects(rustix::event::PollFlags::HUP | rustix::event::PollFlags::ERR),
            Err(_) => false,
        }
    }
}

/// Request, front to worker: open a file for reading.
pub const OP_OPEN_FILE: u8 = 1;
/// Request, front to worker: is it a directory.
pub const OP_IS_DIR: u8 = 2;
/// Request, front to worker: stat.
pub const OP_STAT: u8 = 4;
/// Request, front to worker: lstat.
pub const OP_LSTAT: u8 = 5;
/// Request, front to worker: open for writing.
pub const OP_OPEN_WRITE: u8 = 6;
/// Request, front to worker: mkdir.
pub const OP_MKDIR: u8 = 7;
/// Request, front to worker: rmdir.
pub const OP_RMDIR: u8 = 8;
/// Request, front to worker: unlink.
pub const OP_UNLINK: u8 = 9;
/// Request, front to worker: rename.
pub const OP_RENAME: u8 = 10;
/// Request, front to worker: chmod.
pub const OP_CHMOD: u8 = 11;
/// Request, front to worker: stream a listing on the attached channel.
pub const OP_LIST_STREAM: u8 = 12;
/// Request, front to worker: forget cached listings.
pub const OP_FORGET: u8 = 13;
/// Request, front to worker: create a temporary file.
pub const OP_CREATE_TEMP: u8 = 14;
/// Request, front to worker: open an atomic upload's part file.
pub const OP_OPEN_PART: u8 = 15;
/// Request, front to worker: the part a client may resume.
pub const OP_RESUMABLE_PART: u8 = 16;
/// Request, front to worker: publish an upload.
pub const OP_COMMIT: u8 = 17;
/// Request, front to worker: open what a replace writes.
pub const OP_OPEN_REPLACE: u8 = 18;
/// Request, front to worker: set the modification time.
pub const OP_SET_MTIME: u8 = 19;

/// Entries per listing chunk: small enough that the next chunk is stat'ed
/// while the front formats and sends this one, large enough that messages
/// are few (10 000 entries: 20 messages).
const CHUNK_ENTRIES: u32 = 512;
/// Streamed listings running at once in one process (one thread each);
/// more are refused with EAGAIN rather than queued without bound.
const MAX_LISTINGS: usize = 64;
static LISTINGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Reply status: done (a stat, a path or entries may follow).
pub const ST_OK: u8 = 0;
/// Reply status: failed with the errno that follows.
pub const ST_ERRNO: u8 = 1;
/// Reply status: a name the worker refuses.
pub const ST_BADNAME: u8 = 2;
/// A listing reply that more chunks follow.
pub const ST_MORE: u8 = 3;

fn create_code(c: Create) -> u8 {
    match c {
        Create::Exclusive => 0,
        Create::Truncate => 1,
        Create::Keep => 2,
        Create::Append => 3,
        Create::Existing => 4,
    }
}

fn create_from(c: u8) -> Option<Create> {
    Some(match c {
        0 => Create::Exclusive,
        1 => Create::Truncate,
        2 => Create::Keep,
        3 => Create::Append,
        4 => Create::Existing,
        _ => return None,
    })
}

fn stat_bytes(st: &Stat) -> &[u8] {
    // SAFETY: `Stat` is a plain C struct of integers; viewing it as bytes is sound.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(st).cast::<u8>(), std::mem::size_of::<Stat>()) }
}

/// Reads a stat a reply carries; `None` unless it has exactly its size.
pub fn stat_from(b: &[u8]) -> Option<Stat> {
    if b.len() != std::mem::size_of::<Stat>() {
        return None;
    }
    // SAFETY: the length matches and every bit pattern is a valid `Stat`
    // (integers only); the bytes came from `stat_bytes` in the same binary.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<Stat>()) })
}

fn broken() -> FsError {
    FsError::Io(io::Error::new(io::ErrorKind::BrokenPipe, "file worker sent a malformed reply"))
}

impl Fs {
    /// Which process runs this session's listings (each has its own
    /// listing slots): the worker's channel, or 0 for this process.
    pub fn worker_key(&self) -> usize {
        match self {
            Self::Local(_) => 0,
            Self::Remote(link, _) => std::sync::Arc::as_ptr(link) as usize,
        }
    }

    fn call(link: &WorkerLink, req: &[u8]) -> Result<(Vec<u8>, Option<OwnedFd>), FsError> {
        let sock = link.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut buf = Vec::new();
        let fd = ipc::call(&*sock, req, None, &mut buf).map_err(FsError::Io)?;
        Self::status(&buf)?;
        Ok((buf, fd))
    }

    fn call_with(link: &WorkerLink, req: &[u8], fd: std::os::fd::BorrowedFd<'_>) -> Result<(), FsError> {
        let sock = link.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut buf = Vec::new();
        ipc::call(&*sock, req, Some(fd), &mut buf).map_err(FsError::Io)?;
        Self::status(&buf)
    }

    /// Starts a streamed listing of the directory `path`: a thread (in the
    /// worker, or here) reads and sorts the names, then stats and sends the
    /// entries a chunk at a time on a channel of their own. The front formats
    /// and sends each chunk as it comes, so neither side holds the listing,
    /// and the worker keeps serving other sessions meanwhile.
    ///
    /// Must be called inside the tokio runtime. Errors (not a directory, no
    /// permission) come back here, before anything is streamed.
    pub fn list_stream(&self, path: &VPath, all: bool, cache_ms: u32) -> Result<Listing, FsError> {
        let (mine, theirs) = ipc::pair().map_err(FsError::Io)?;
        match self {
            Self::Local(r) => start_listing(r.open_dir(path)?, all, cache_ms, theirs)?,
            Self::Remote(l, _) => {
                let req = Enc::tag(OP_LIST_STREAM).bytes(path.as_bytes()).u8(u8::from(all)).u32(cache_ms);
                Self::call_with(l, &req.0, theirs.as_fd())?;
                drop(theirs);
            }
        }
        rustix::io::ioctl_fionbio(&mine, true).map_err(|e| FsError::Io(e.into()))?;
        // SAFETY: `mine` is an open OwnedFd, moved into the AsyncFd, which
        // owns it (and so its fd number) until it is dropped.
        let sock = unsafe { tokio::io::unix::AsyncFd::register_with_interest(mine, tokio::io::Interest::READABLE) }
            .map_err(|e| FsError::Io(io::Error::other(e.to_string())))?;
        Ok(Listing { sock, buf: Vec::new(), done: false })
    }

    /// The outcome a worker reply states in its first bytes.
    pub fn status(buf: &[u8]) -> Result<(), FsError> {
        let mut d = Dec(buf);
        match d.u8() {
            Some(ST_OK | ST_MORE) => Ok(()),
            Some(ST_ERRNO) => Err(FsError::Io(io::Error::from_raw_os_error(d.u32().map_or(libc::EIO, |e| e as i32)))),
            Some(ST_BADNAME) => Err(FsError::BadName),
            _ => Err(broken()),
        }
    }

    fn simple(&self, req: Enc) -> Result<(Vec<u8>, Option<OwnedFd>), FsError> {
        match self {
            Self::Remote(l, _) => Self::call(l, &req.0),
            Self::Local(_) => unreachable!("local Fs handled by the caller"),
        }
    }

    /// Opens a regular file for reading.
    pub fn open_file(&self, path: &VPath) -> Result<(OwnedFd, Stat), FsError> {
        match self {
            Self::Local(r) => r.open_file(path),
            Self::Remote(_, direct) => {
                if let Some(opened) = direct.as_ref().and_then(|d| d.open_file(path)) {
                    return Ok(opened);
                }
                let (buf, fd) = self.simple(Enc::tag(OP_OPEN_FILE).bytes(path.as_bytes()))?;
                let st = Dec(&buf[1..]).bytes().and_then(stat_from).ok_or_else(broken)?;
                Ok((fd.ok_or_else(broken)?, st))
            }
        }
    }

    /// Whether `path` is an enterable directory.
    pub fn is_dir(&self, path: &VPath) -> bool {
        match self {
            Self::Local(r) => r.is_dir(path),
            Self::Remote(..) => self.simple(Enc::tag(OP_IS_DIR).bytes(path.as_bytes())).is_ok(),
        }
    }

    /// `stat`, following symlinks inside the root.
    pub fn stat(&self, path: &VPath) -> Result<Stat, FsError> {
        match self {
            Self::Local(r) => r.stat(path),
            Self::Remote(..) => {
                let (buf, _) = self.simple(Enc::tag(OP_STAT).bytes(path.as_bytes()))?;
                Dec(&buf[1..]).bytes().and_then(stat_from).ok_or_else(broken)
            }
        }
    }

    /// `lstat`.
    pub fn lstat(&self, path: &VPath) -> Result<Stat, FsError> {
        match self {
            Self::Local(r) => r.lstat(path),
            Self::Remote(..) => {
                let (buf, _) = self.simple(Enc::tag(OP_LSTAT).bytes(path.as_bytes()))?;
                Dec(&buf[1..]).bytes().and_then(stat_from).ok_or_else(broken)
            }
        }
    }

    /// Opens for writing (see `Root::open_write`).
    pub fn open_write(&self, path: &VPath, how: Create, mode: u32) -> Result<OwnedFd, FsError> {
        match self {
            Self::Local(r) => {
                ListCache::clear();
                r.open_write(path, how, mode)
            }
            Self::Remote(..) => {
                let req = Enc::tag(OP_OPEN_WRITE).bytes(path.as_bytes()).u8(create_code(how)).u32(mode);
                self.simple(req)?.1.ok_or_else(broken)
            }
        }
    }

    /// Opens and locks an atomic upload's part file (see `Root::open_part`).
    pub fn open_part(&self, part: &VPath, resume: bool, mode: u32) -> Result<OwnedFd, FsError> {
        match self {
            Self::Local(r) => {
                ListCache::clear();
                r.open_part(part, resume, mode)
            }
            Self::Remote(..) => {
                let req = Enc::tag(OP_OPEN_PART).bytes(part.as_bytes()).u8(u8::from(resume)).u32(mode);
                self.simple(req)?.1.ok_or_else(broken)
            }
        }
    }

    /// This user's part file, if no upload holds it (see `Root::resumable_part`).
    pub fn resumable_part(&self, part: &VPath) -> Result<(OwnedFd, Stat), FsError> {
        match self {
            Self::Local(r) => r.resumable_part(part),
            Self::Remote(..) => {
                let (buf, fd) = self.simple(Enc::tag(OP_RESUMABLE_PART).bytes(part.as_bytes()))?;
                let st = Dec(&buf[1..]).bytes().and_then(stat_from).ok_or_else(broken)?;
                Ok((fd.ok_or_else(broken)?, st))
            }
        }
    }

    /// A new temporary file beside `target` (see `Root::create_temp`).
    pub fn create_temp(&self, target: &VPath, mode: u32) -> Result<(OwnedFd, VPath), FsError> {
        match self {
            Self::Local(r) => {
                ListCache::clear();
                r.create_temp(target, mode)
            }
            Self::Remote(..) => {
                let (buf, fd) = self.simple(Enc::tag(OP_CREATE_TEMP).bytes(target.as_bytes()).u32(mode))?;
                let tmp = Dec(&buf[1..]).bytes().and_then(|p| VPath::root().join(p).ok()).ok_or_else(broken)?;
                Ok((fd.ok_or_else(broken)?, tmp))
            }
        }
    }

    /// Where a replace of `target` is written (see `Root::open_replace`).
    pub fn open_replace(&self, target: &VPath) -> Result<(OwnedFd, Option<VPath>), FsError> {
        match self {
            Self::Local(r) => {
                ListCache::clear();
                r.open_replace(target)
            }
            Self::Remote(..) => {
                let (buf, fd) = self.simple(Enc::tag(OP_OPEN_REPLACE).bytes(target.as_bytes()))?;
                let mut d = Dec(&buf[1..]);
                let tmp = match d.u8().ok_or_else(broken)? {
                    0 => None,
                    _ => Some(d.bytes().and_then(|p| VPath::root().join(p).ok()).ok_or_else(broken)?),
                };
                Ok((fd.ok_or_else(broken)?, tmp))
            }
        }
    }

    /// Publishes a complete upload (see `Root::commit`). Blocks: call it off
    /// the runtime.
    pub fn commit(&self, from: &VPath, to: &VPath, replace: bool) -> Result<(), FsError> {
        match self {
            Self::Local(r) => {
                ListCache::clear();
                r.commit(from, to, replace)
            }
            Self::Remote(..) => {
                let req = Enc::tag(OP_COMMIT).bytes(from.as_bytes()).bytes(to.as_bytes()).u8(u8::from(replace));
                self.simple(req).map(drop)
            }
        }
    }

    /// Creates a directory.
    pub fn mkdir(&self, path: &VPath, mode: u32) -> Result<(), FsError> {
        match self {
            Self::Local(r) => {
                ListCache::clear();
                r.mkdir(path, mode)
            }
            Self::Remote(..) => self.simple(Enc::tag(OP_MKDIR).bytes(path.as_bytes()).u32(mode)).map(drop),
        }
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, path: &VPath) -> Result<(), FsError> {
        match self {
            Self::Local(r) => {
                ListCache::clear();
                r.rmdir(path)
            }
            Self::Remote(..) => self.simple(Enc::tag(OP_RMDIR).bytes(path.as_bytes())).map(drop),
        }
    }

    /// Removes a file.
    pub fn unlink(&self, path: &VPath) -> Result<(), FsError> {
        match self {
            Self::Local(r) => {
                ListCache::clear();
                r.unlink(path)
            }
            Self::Remote(..) => self.simple(Enc::tag(OP_UNLINK).bytes(path.as_bytes())).map(drop),
        }
    }

    /// Renames.
    pub fn rename(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        match self {
            Self::Local(r) => {
                ListCache::clear();
                r.rename(from, to)
            }
            Self::Remote(..) => self.simple(Enc::tag(OP_RENAME).bytes(from.as_bytes()).bytes(to.as_bytes())).map(drop),
        }
    }

    /// Drops the cached listings (`ftpd_list_cache_ms`) after the front
    /// wrote to a file in place, which no directory time shows.
    pub fn forget_listings(&self) {
        match self {
            Self::Local(_) => ListCache::clear(),
            Self::Remote(..) => {
                let _ = self.simple(Enc::tag(OP_FORGET).bytes(b"/"));
            }
        }
    }

    /// Sets a file's modification time (`MDTM` with a time).
    pub fn set_mtime(&self, path: &VPath, secs: i64) -> Result<(), FsError> {
        match self {
            Self::Local(r) => {
                ListCache::clear();
                r.set_mtime(path, secs)
            }
            Self::Remote(..) => {
                // Two's complement round trip: times before 1970 stay negative.
                self.simple(Enc::tag(OP_SET_MTIME).bytes(path.as_bytes()).u64(secs.cast_unsigned())).map(drop)
            }
        }
    }

    /// Changes permission bits.
    pub fn chmod(&self, path: &VPath, mode: u32) -> Result<(), FsError> {
        match self {
            Self::Local(r) => {
                ListCache::clear();
                r.chmod(path, mode)
            }
            Self::Remote(..) => self.simple(Enc::tag(OP_CHMOD).bytes(path.as_bytes()).u32(mode)).map(drop),
        }
    }
}

/// Appends the entries of one listing chunk (after its status byte) to `out`.
pub fn decode_entries(chunk: &[u8], out: &mut Vec<Entry>) -> Result<(), FsError> {
    let mut d = Dec(chunk);
    let n = d.u32().ok_or_else(broken)?;
    for _ in 0..n {
        let name = d.bytes().ok_or_else(broken)?.to_vec();
        let stat = d.bytes().and_then(stat_from).ok_or_else(broken)?;
        let link = match d.u8().ok_or_else(broken)? {
            0 => None,
            _ => Some(d.bytes().ok_or_else(broken)?.to_vec()),
        };
        out.push(Entry { name, stat, link });
    }
    Ok(())
}

/// The front's end of a streamed listing (see [`Fs::list_stream`]).
#[derive(Debug)]
pub struct Listing {
    sock: tokio::io::unix::AsyncFd<OwnedFd>,
    buf: Vec<u8>,
    done: bool,
}

impl Listing {
    /// The next chunk of entries, waiting without blocking the thread;
    /// `None` after the last. Dropping the listing stops its producer.
    pub async fn next(&mut self) -> Result<Option<Vec<Entry>>, FsError> {
        if self.done {
            return Ok(None);
        }
        loop {
            let mut guard = self.sock.readable().await.map_err(FsError::Io)?;
            match guard.try_io(|s| ipc::recv(s.get_ref().as_fd(), &mut self.buf)) {
                Err(_would_block) => {}
                Ok(Err(e)) => return Err(FsError::Io(e)),
                // The producer went away before its last chunk.
                Ok(Ok(None)) => return Err(broken()),
                Ok(Ok(Some(_))) => break,
            }
        }
        Fs::status(&self.buf)?;
        self.done = self.buf[0] != ST_MORE;
        let mut out = Vec::new();
        decode_entries(&self.buf[1..], &mut out)?;
        Ok(Some(out))
    }
}

/// Starts the thread that streams the listing of `dir` to `out`, unless
/// [`MAX_LISTINGS`] are already running.
fn start_listing(dir: OwnedFd, all: bool, cache_ms: u32, out: OwnedFd) -> Result<(), FsError> {
    use std::sync::atomic::Ordering;
    if LISTINGS.fetch_add(1, Ordering::AcqRel) >= MAX_LISTINGS {
        LISTINGS.fetch_sub(1, Ordering::AcqRel);
        return Err(FsError::Io(io::Error::from_raw_os_error(libc::EAGAIN)));
    }
    let spawned = std::thread::Builder::new().name("listing".into()).spawn(move || {
        stream_listing(&dir, all, cache_ms, &out);
        drop((dir, out));
        if LISTINGS.fetch_sub(1, Ordering::AcqRel) == 1 {
            release_memory();
        }
    });
    spawned.map(drop).map_err(|e| {
        LISTINGS.fetch_sub(1, Ordering::AcqRel);
        FsError::Io(e)
    })
}

/// Gives freed heap back to the system once no listing runs. Each listing
/// thread allocates from its own malloc arena, which glibc keeps after the
/// thread ends: 64 big listings left a worker at 182 MB (issue 10).
fn release_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes glibc's malloc give memory back when it is freed, for processes
/// whose peaks come from clients (listings here, password hashes in the
/// master): blocks from 128 KiB are mapped and unmapped on their own, and a
/// heap's free top is returned from 128 KiB. By default glibc raises both
/// thresholds after the first big free, up to 32 MiB and 64 MiB, so a
/// client's burst stayed resident after it ended.
pub fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's tuning parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Bytes of entries held by running listings for [`ListCache`] (a copy made
/// while the listing is sent, kept only if it completes). Bounded in all, not
/// per listing: clients that do not read would otherwise make every running
/// listing hold its copy, a quarter of the cache's budget each.
static KEEPING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A running listing's share of [`KEEPING`], returned when dropped.
struct Kept {
    entries: Vec<Entry>,
    bytes: usize,
}

impl Kept {
    /// Adds `more` (costing `bytes`), unless that takes the running
    /// listings' copies past a quarter of the cache's budget.
    fn add(&mut self, more: Vec<Entry>, bytes: usize) -> bool {
        use std::sync::atomic::Ordering;
        let before = KEEPING.fetch_add(bytes, Ordering::AcqRel);
        self.bytes += bytes;
        if before + bytes > ListCache::BUDGET / 4 {
            return false;
        }
        self.entries.extend(more);
        true
    }

    fn take(mut self) -> (Vec<Entry>, usize) {
        (std::mem::take(&mut self.entries), self.bytes)
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        KEEPING.fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Sends the listing of `dir` in chunks. Blocks on `out` while the reader is
/// behind, so memory stays within the channel's buffer; returns when the
/// reader goes away (ABOR, client gone).
///
/// A big directory is stat'ed by two threads, alternate chunks each: the
/// stats are most of a listing's cost, and the front meanwhile only formats.
/// With `cache_ms`, an unchanged directory listed that recently is sent from
/// [`ListCache`] without reading it again.
fn stream_listing(dir: &OwnedFd, all: bool, cache_ms: u32, out: &OwnedFd) {
    let key = (cache_ms > 0).then(|| ListKey::of(dir, all)).flatten();
    if let Some(key) = &key
        && let Some(entries) = ListCache::get(key, cache_ms)
    {
        send_chunk(out, &entries, true);
        return;
    }
    let names = match crate::fs::read_names(dir, all) {
        Ok(n) => n,
        Err(e) => {
            let _ = ipc::send(out.as_fd(), &err_reply(&e), None);
            return;
        }
    };
    // Kept for the cache while it fits its budget.
    let mut keep: Option<Kept> = key.as_ref().map(|_| Kept { entries: Vec::new(), bytes: 0 });
    let mut send = |entries: Vec<Entry>, last: bool| -> bool {
        let ok = send_chunk(out, &entries, last);
        if let Some(kept) = &mut keep {
            let bytes = entries.iter().map(ListCache::cost).sum::<usize>();
            if !kept.add(entries, bytes) {
                keep = None;
            }
        }
        ok
    };
    let mut chunks: Vec<&[Vec<u8>]> = names.chunks(CHUNK_ENTRIES as usize).collect();
    if chunks.is_empty() {
        // An empty directory still ends with a (last, empty) message.
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    let stat_all =
        |names: &[Vec<u8>]| -> Vec<Entry> { names.iter().filter_map(|n| crate::fs::entry(dir, n)).collect() };
    let complete = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Entry>>(1);
        let odd: Vec<&[Vec<u8>]> = chunks.iter().skip(1).step_by(2).copied().collect();
        // Without a helper (small directory, or no thread to be had) this
        // thread stats every chunk itself.
        let helper = (chunks.len() >= PARALLEL_CHUNKS).then(|| {
            std::thread::Builder::new().name("listing-stat".into()).spawn_scoped(scope, move || {
                for c in odd {
                    // The sender hung up: the listing was abandoned.
                    if tx.send(stat_all(c)).is_err() {
                        return;
                    }
                }
            })
        });
        let helped = matches!(helper, Some(Ok(_)));
        // Dropping `rx` when this returns early stops the helper at its next chunk.
        chunks.iter().enumerate().all(|(i, c)| {
            let entries = if helped && i % 2 == 1 { rx.recv().ok() } else { Some(stat_all(c)) };
            entries.is_some_and(|e| send(e, i == last))
        })
    });
    // Cached only if the directory did not change while it was read.
    if complete
        && let (Some(key), Some(kept)) = (key, keep)
        && ListKey::of(dir, all).as_ref() == Some(&key)
    {
        let (entries, bytes) = kept.take();
        ListCache::put(key, entries, bytes);
    }
}

/// Which directory a cached listing is of, and its state when it was read:
/// any entry added, removed or renamed changes the directory's mtime/ctime.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ListKey {
    dev: u64,
    ino: u64,
    all: bool,
    mtime: (i64, u64),
    ctime: (i64, u64),
}

impl ListKey {
    fn of(dir: &OwnedFd, all: bool) -> Option<Self> {
        let st = rustix::fs::fstat(dir).ok()?;
        Some(Self {
            dev: st.st_dev,
            ino: st.st_ino,
            all,
            mtime: (st.st_mtime, st.st_mtime_nsec as u64),
            ctime: (st.st_ctime, st.st_ctime_nsec as u64),
        })
    }
}

/// Recent listings of this process (one identity: a worker, or the front in
/// single-process mode), bounded by [`ListCache::BUDGET`] bytes. Cleared by
/// every write this process makes (`ftpd_list_cache_ms`).
struct ListCache {
    map: std::collections::HashMap<ListKey, (std::time::Instant, std::sync::Arc<Vec<Entry>>, usize)>,
    bytes: usize,
}

static LIST_CACHE: Mutex<Option<ListCache>> = Mutex::new(None);

impl ListCache {
    /// Bytes of entries kept in all; one directory may use a quarter.
    const BUDGET: usize = 32 << 20;

    fn cost(e: &Entry) -> usize {
        e.name.len() + e.link.as_ref().map_or(0, Vec::len) + std::mem::size_of::<Entry>()
    }

    fn get(key: &ListKey, cache_ms: u32) -> Option<std::sync::Arc<Vec<Entry>>> {
        let mut guard = LIST_CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let cache = guard.as_mut()?;
        let (at, entries, bytes) = cache.map.get(key)?;
        if at.elapsed() < std::time::Duration::from_millis(u64::from(cache_ms)) {
            return Some(std::sync::Arc::clone(entries));
        }
        cache.bytes -= *bytes;
        cache.map.remove(key);
        None
    }

    fn put(key: ListKey, entries: Vec<Entry>, bytes: usize) {
        let mut guard = LIST_CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let cache = guard.get_or_insert_with(|| Self { map: std::collections::HashMap::new(), bytes: 0 });
        // The directory's older states, and the oldest entries beyond the budget, go.
        cache.map.retain(|k, _| (k.dev, k.ino, k.all) != (key.dev, key.ino, key.all));
        cache.bytes = cache.map.values().map(|v| v.2).sum();
        while cache.bytes + bytes > Self::BUDGET {
            let Some(oldest) = cache.map.iter().min_by_key(|(_, v)| v.0).map(|(k, _)| k.clone()) else { break };
            if let Some(v) = cache.map.remove(&oldest) {
                cache.bytes -= v.2;
            }
        }
        cache.bytes += bytes;
        cache.map.insert(key, (std::time::Instant::now(), std::sync::Arc::new(entries), bytes));
    }

    /// Forgets every listing: a write may have changed a file in place,
    /// which its directory's times do not show.
    fn clear() {
        *LIST_CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// Chunks from which a listing is stat'ed by two threads (4 096 entries).
const PARALLEL_CHUNKS: usize = 8;

/// Sends `entries` as one or more messages (each within [`ipc::MAX_MSG`]);
/// the last one of the listing says so. False when the reader is gone.
fn send_chunk(out: &OwnedFd, entries: &[Entry], last: bool) -> bool {
    let mut rest = entries;
    loop {
        let mut body = Enc::default();
        let mut n = 0u32;
        // An entry is at most a name (255), a Stat and a link target
        // (PATH_MAX): the 8 KiB margin always fits one more.
        while let Some((e, tail)) = rest.split_first() {
            if body.0.len() >= ipc::MAX_MSG - 8 * 1024 {
                break;
            }
            body = body.bytes(&e.name).bytes(stat_bytes(&e.stat));
            body = match &e.link {
                Some(t) => body.u8(1).bytes(t),
                None => body.u8(0),
            };
            n += 1;
            rest = tail;
        }
        let more = !rest.is_empty() || !last;
        let mut msg = Enc::tag(if more { ST_MORE } else { ST_OK }).u32(n).0;
        msg.extend_from_slice(&body.0);
        if ipc::send(out.as_fd(), &msg, None).is_err() {
            return false;
        }
        if rest.is_empty() {
            return true;
        }
    }
}

fn err_reply(e: &FsError) -> Vec<u8> {
    match e {
        FsError::BadName => Enc::tag(ST_BADNAME).0,
        FsError::Io(e) => Enc::tag(ST_ERRNO).u32(e.raw_os_error().map_or(libc::EIO as u32, |n| n as u32)).0,
    }
}

/// The worker's loop: answers the front's requests on `sock` for `root`
/// until the front closes the channel. Runs with the user's credentials.
pub fn serve(sock: &OwnedFd, root: &Root) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some(fd_in) = ipc::recv(sock.as_fd(), &mut buf)? else {
            return Ok(());
        };
        let mut d = Dec(&buf);
        let op = d.u8();
        let path = d.bytes().and_then(|p| VPath::root().join(p).ok());
        let (Some(op), Some(path)) = (op, path) else {
            // A malformed request means the front is broken: stop serving it.
            return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed request from the front"));
        };
        let mut fd_out: Option<OwnedFd> = None;
        if matches!(
            op,
            OP_OPEN_WRITE
                | OP_MKDIR
                | OP_RMDIR
                | OP_UNLINK
                | OP_RENAME
                | OP_CHMOD
                | OP_SET_MTIME
                | OP_FORGET
                | OP_OPEN_PART
                | OP_CREATE_TEMP
                | OP_OPEN_REPLACE
                | OP_COMMIT
        ) {
            ListCache::clear();
        }
        let reply: Vec<u8> = match op {
            OP_OPEN_FILE => match root.open_file(&path) {
                Ok((fd, st)) => {
                    fd_out = Some(fd);
                    Enc::tag(ST_OK).bytes(stat_bytes(&st)).0
                }
                Err(e) => err_reply(&e),
            },
            OP_IS_DIR => {
                if root.is_dir(&path) {
                    Enc::tag(ST_OK).0
                } else {
                    Enc::tag(ST_ERRNO).u32(libc::ENOTDIR as u32).0
                }
            }
            OP_LIST_STREAM => {
                let all = d.u8().unwrap_or(0) != 0;
                let Some(chan) = fd_in else {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "listing request without a channel"));
                };
                let cache_ms = d.u32().unwrap_or(0);
                unit(root.open_dir(&path).and_then(|dir| start_listing(dir, all, cache_ms, chan)))
            }
            OP_STAT | OP_LSTAT => {
                let r = if op == OP_STAT { root.stat(&path) } else { root.lstat(&path) };
                match r {
                    Ok(st) => Enc::tag(ST_OK).bytes(stat_bytes(&st)).0,
                    Err(e) => err_reply(&e),
                }
            }
            OP_OPEN_WRITE => {
                let how = d.u8().and_then(create_from);
                let mode = d.u32();
                match (how, mode) {
                    (Some(how), Some(mode)) => match root.open_write(&path, how, mode) {
                        Ok(fd) => {
                            fd_out = Some(fd);
                            Enc::tag(ST_OK).0
                        }
                        Err(e) => err_reply(&e),
                    },
                    _ => err_reply(&FsError::BadName),
                }
            }
            OP_FORGET => Enc::tag(ST_OK).0,
            OP_OPEN_PART => match (d.u8(), d.u32()) {
                (Some(resume), Some(mode)) => match root.open_part(&path, resume != 0, mode) {
                    Ok(fd) => {
                        fd_out = Some(fd);
                        Enc::tag(ST_OK).0
                    }
                    Err(e) => err_reply(&e),
                },
                _ => err_reply(&FsError::BadName),
            },
            OP_RESUMABLE_PART => match root.resumable_part(&path) {
                Ok((fd, st)) => {
                    fd_out = Some(fd);
                    Enc::tag(ST_OK).bytes(stat_bytes(&st)).0
                }
                Err(e) => err_reply(&e),
            },
            OP_CREATE_TEMP => match d.u32().map_or(Err(FsError::BadName), |m| root.create_temp(&path, m)) {
                Ok((fd, tmp)) => {
                    fd_out = Some(fd);
                    Enc::tag(ST_OK).bytes(tmp.as_bytes()).0
                }
                Err(e) => err_reply(&e),
            },
            OP_OPEN_REPLACE => match root.open_replace(&path) {
                Ok((fd, tmp)) => {
                    fd_out = Some(fd);
                    match tmp {
                        Some(t) => Enc::tag(ST_OK).u8(1).bytes(t.as_bytes()).0,
                        None => Enc::tag(ST_OK).u8(0).0,
                    }
                }
                Err(e) => err_reply(&e),
            },
            OP_COMMIT => {
                let to = d.bytes().and_then(|p| VPath::root().join(p).ok());
                match (to, d.u8()) {
                    (Some(to), Some(replace)) => unit(root.commit(&path, &to, replace != 0)),
                    _ => err_reply(&FsError::BadName),
                }
            }
            OP_MKDIR => unit(d.u32().map_or(Err(FsError::BadName), |m| root.mkdir(&path, m))),
            OP_RMDIR => unit(root.rmdir(&path)),
            OP_UNLINK => unit(root.unlink(&path)),
            OP_RENAME => {
                let to = d.bytes().and_then(|p| VPath::root().join(p).ok());
                unit(to.map_or(Err(FsError::BadName), |to| root.rename(&path, &to)))
            }
            OP_CHMOD => unit(d.u32().map_or(Err(FsError::BadName), |m| root.chmod(&path, m))),
            OP_SET_MTIME => unit(d.u64().map_or(Err(FsError::BadName), |t| root.set_mtime(&path, t.cast_signed()))),
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "unknown request from the front")),
        };
        ipc::send(sock.as_fd(), &reply, fd_out.as_ref().map(AsFd::as_fd))?;
    }
}

fn unit(r: Result<(), FsError>) -> Vec<u8> {
    match r {
        Ok(()) => Enc::tag(ST_OK).0,
        Err(e) => err_reply(&e),
    }
}
