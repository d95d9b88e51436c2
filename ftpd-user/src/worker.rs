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
    ipc::{self, WorkerReply, WorkerRequest},
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

/// Entries per listing chunk: small enough that the next chunk is stat'ed
/// while the front formats and sends this one, large enough that messages
/// are few (10 000 entries: 20 messages).
const CHUNK_ENTRIES: u32 = 512;
/// Streamed listings running at once in one process (one thread each);
/// more are refused with EAGAIN rather than queued without bound.
const MAX_LISTINGS: usize = 64;
static LISTINGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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

    /// Runs `req` (with `fd`, a listing's channel): here, through the
    /// worker's own [`handle`], or in the worker, its reply decoded into
    /// `buf`. Either way an error comes back as its [`FsError`] and anything
    /// else for the caller to check, so the two cannot drift apart.
    fn call<'b>(
        &self,
        req: &WorkerRequest<'_>,
        fd: Option<OwnedFd>,
        buf: &'b mut Vec<u8>,
    ) -> Result<(WorkerReply<'b>, Option<OwnedFd>), FsError> {
        let link = match self {
            // `None` is a request the front never makes.
            Self::Local(root) => return handle(root, req, fd).unwrap_or_else(|| Err(broken())),
            Self::Remote(link, _) => link,
        };
        let got = {
            let sock = link.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ipc::call(&*sock, req, fd.as_ref().map(AsFd::as_fd), buf).map_err(FsError::Io)?
        };
        // The worker has its own copy of a descriptor sent with the request.
        drop(fd);
        let buf: &'b [u8] = buf;
        Ok((reply_status(ipc::decode(buf).map_err(|_| broken())?)?, got))
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
        let req = WorkerRequest::ListStream { path: path.as_bytes(), all, cache_ms };
        expect_done(self.call(&req, Some(theirs), &mut Vec::new())?)?;
        rustix::io::ioctl_fionbio(&mine, true).map_err(|e| FsError::Io(e.into()))?;
        // SAFETY: `mine` is an open OwnedFd, moved into the AsyncFd, which
        // owns it (and so its fd number) until it is dropped.
        let sock = unsafe { tokio::io::unix::AsyncFd::register_with_interest(mine, tokio::io::Interest::READABLE) }
            .map_err(|e| FsError::Io(io::Error::other(e.to_string())))?;
        Ok(Listing { sock, buf: Vec::new(), done: false })
    }

    /// A request answered with a file's status and the file itself.
    fn ask_file(&self, req: &WorkerRequest<'_>) -> Result<(OwnedFd, Stat), FsError> {
        match self.call(req, None, &mut Vec::new())? {
            (WorkerReply::Stat(st), Some(fd)) => Ok((fd, st)),
            _ => Err(broken()),
        }
    }

    /// A request answered with a file's status.
    fn ask_stat(&self, req: &WorkerRequest<'_>) -> Result<Stat, FsError> {
        match self.call(req, None, &mut Vec::new())? {
            (WorkerReply::Stat(st), None) => Ok(st),
            _ => Err(broken()),
        }
    }

    /// A request answered with an opened file.
    fn ask_fd(&self, req: &WorkerRequest<'_>) -> Result<OwnedFd, FsError> {
        match self.call(req, None, &mut Vec::new())? {
            (WorkerReply::Done, Some(fd)) => Ok(fd),
            _ => Err(broken()),
        }
    }

    /// A request answered with done or an error.
    fn ask_done(&self, req: &WorkerRequest<'_>) -> Result<(), FsError> {
        expect_done(self.call(req, None, &mut Vec::new())?)
    }

    /// Opens a regular file for reading.
    pub fn open_file(&self, path: &VPath) -> Result<(OwnedFd, Stat), FsError> {
        if let Self::Remote(_, Some(direct)) = self
            && let Some(opened) = direct.open_file(path)
        {
            return Ok(opened);
        }
        self.ask_file(&WorkerRequest::OpenFile { path: path.as_bytes() })
    }

    /// Whether `path` is an enterable directory.
    pub fn is_dir(&self, path: &VPath) -> bool {
        self.ask_done(&WorkerRequest::IsDir { path: path.as_bytes() }).is_ok()
    }

    /// `stat`, following symlinks inside the root.
    pub fn stat(&self, path: &VPath) -> Result<Stat, FsError> {
        self.ask_stat(&WorkerRequest::Stat { path: path.as_bytes() })
    }

    /// `lstat`.
    pub fn lstat(&self, path: &VPath) -> Result<Stat, FsError> {
        self.ask_stat(&WorkerRequest::Lstat { path: path.as_bytes() })
    }

    /// Opens for writing (see `Root::open_write`).
    pub fn open_write(&self, path: &VPath, how: Create, mode: u32) -> Result<OwnedFd, FsError> {
        self.ask_fd(&WorkerRequest::OpenWrite { path: path.as_bytes(), how, mode })
    }

    /// Opens and locks an atomic upload's part file (see `Root::open_part`).
    pub fn open_part(&self, part: &VPath, resume: bool, mode: u32) -> Result<OwnedFd, FsError> {
        self.ask_fd(&WorkerRequest::OpenPart { part: part.as_bytes(), resume, mode })
    }

    /// This user's part file, if no upload holds it (see `Root::resumable_part`).
    pub fn resumable_part(&self, part: &VPath) -> Result<(OwnedFd, Stat), FsError> {
        self.ask_file(&WorkerRequest::ResumablePart { part: part.as_bytes() })
    }

    /// A new temporary file beside `target` (see `Root::create_temp`).
    pub fn create_temp(&self, target: &VPath, mode: u32) -> Result<(OwnedFd, VPath), FsError> {
        let req = WorkerRequest::CreateTemp { target: target.as_bytes(), mode };
        match self.call(&req, None, &mut Vec::new())? {
            (WorkerReply::Temp { path }, Some(fd)) => Ok((fd, VPath::root().join(&path).map_err(|_| broken())?)),
            _ => Err(broken()),
        }
    }

    /// Where a replace of `target` is written (see `Root::open_replace`).
    pub fn open_replace(&self, target: &VPath) -> Result<(OwnedFd, Option<VPath>), FsError> {
        match self.call(&WorkerRequest::OpenReplace { target: target.as_bytes() }, None, &mut Vec::new())? {
            (WorkerReply::Replace { temp }, Some(fd)) => {
                let temp = temp.map(|p| VPath::root().join(&p).map_err(|_| broken())).transpose()?;
                Ok((fd, temp))
            }
            _ => Err(broken()),
        }
    }

    /// Publishes a complete upload (see `Root::commit`). Blocks: call it off
    /// the runtime.
    pub fn commit(&self, from: &VPath, to: &VPath, replace: bool) -> Result<(), FsError> {
        self.ask_done(&WorkerRequest::Commit { from: from.as_bytes(), to: to.as_bytes(), replace })
    }

    /// Creates a directory.
    pub fn mkdir(&self, path: &VPath, mode: u32) -> Result<(), FsError> {
        self.ask_done(&WorkerRequest::Mkdir { path: path.as_bytes(), mode })
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, path: &VPath) -> Result<(), FsError> {
        self.ask_done(&WorkerRequest::Rmdir { path: path.as_bytes() })
    }

    /// Removes a file.
    pub fn unlink(&self, path: &VPath) -> Result<(), FsError> {
        self.ask_done(&WorkerRequest::Unlink { path: path.as_bytes() })
    }

    /// Renames.
    pub fn rename(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        self.ask_done(&WorkerRequest::Rename { from: from.as_bytes(), to: to.as_bytes() })
    }

    /// Drops the cached listings (`ftpd_list_cache_ms`) after the front
    /// wrote to a file in place, which no directory time shows.
    pub fn forget_listings(&self) {
        let _ = self.ask_done(&WorkerRequest::Forget);
    }

    /// Sets a file's modification time (`MDTM` with a time).
    pub fn set_mtime(&self, path: &VPath, secs: i64) -> Result<(), FsError> {
        self.ask_done(&WorkerRequest::SetMtime { path: path.as_bytes(), secs })
    }

    /// Changes permission bits.
    pub fn chmod(&self, path: &VPath, mode: u32) -> Result<(), FsError> {
        self.ask_done(&WorkerRequest::Chmod { path: path.as_bytes(), mode })
    }
}

/// A worker's error reply as its [`FsError`]; any other reply passes.
fn reply_status(reply: WorkerReply<'_>) -> Result<WorkerReply<'_>, FsError> {
    match reply {
        WorkerReply::Errno(e) => Err(FsError::Io(io::Error::from_raw_os_error(e))),
        WorkerReply::BadName => Err(FsError::BadName),
        other => Ok(other),
    }
}

/// A reply that must be [`WorkerReply::Done`] without a file.
fn expect_done((reply, fd): (WorkerReply<'_>, Option<OwnedFd>)) -> Result<(), FsError> {
    match (reply, fd) {
        (WorkerReply::Done, None) => Ok(()),
        _ => Err(broken()),
    }
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
                // No descriptor belongs to a listing's messages.
                Ok(Ok(Some(Some(_)))) => return Err(broken()),
                Ok(Ok(Some(None))) => break,
            }
        }
        match reply_status(ipc::decode(&self.buf).map_err(|_| broken())?)? {
            WorkerReply::Entries { last, entries } => {
                self.done = last;
                Ok(Some(entries.into_owned()))
            }
            _ => Err(broken()),
        }
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

/// Gives freed heap back to the system (`malloc_trim`): a worker's once no
/// listing runs, the front's now and then. Each thread allocates from its
/// own malloc arena, which glibc keeps after the thread ends: 64 big
/// listings left a worker at 182 MB (issue 10).
pub fn release_memory() {
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
    // Before any entry is stat'ed: a write while this listing runs (MFMT on
    // another connection) must keep it out of the cache.
    let generation = ListCache::generation();
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
        ListCache::put(key, entries, bytes, generation);
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
/// How many times [`ListCache::clear`] ran: a listing read across a clear
/// may hold a file's old size or time, and is not kept.
static LIST_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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

    fn generation() -> u64 {
        LIST_GENERATION.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps a listing read since `generation`, unless a write cleared the
    /// cache meanwhile (that write may have changed an entry it holds).
    fn put(key: ListKey, entries: Vec<Entry>, bytes: usize, generation: u64) {
        let mut guard = LIST_CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if Self::generation() != generation {
            return;
        }
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
        let mut guard = LIST_CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        LIST_GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *guard = None;
    }
}

/// Chunks from which a listing is stat'ed by two threads (4 096 entries).
const PARALLEL_CHUNKS: usize = 8;

/// Sends `entries` as one or more messages (each within [`ipc::MAX_MSG`]);
/// the last one of the listing says so. False when the reader is gone.
fn send_chunk(out: &OwnedFd, entries: &[Entry], last: bool) -> bool {
    // What an entry takes encoded, at most: its bytes, and length prefixes
    // and tags (a few bytes each).
    let size = |e: &Entry| e.name.len() + std::mem::size_of::<Stat>() + e.link.as_ref().map_or(0, Vec::len) + 32;
    let mut rest = entries;
    loop {
        // The message's own tag, flag and count, then whole entries.
        let mut bytes = 32;
        let mut n = 0;
        while let Some(e) = rest.get(n) {
            bytes += size(e);
            if n > 0 && bytes > ipc::MAX_MSG {
                break;
            }
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let msg = WorkerReply::Entries { last: last && rest.is_empty(), entries: std::borrow::Cow::Borrowed(chunk) };
        if ipc::send(out.as_fd(), &msg, None).is_err() {
            return false;
        }
        if rest.is_empty() {
            return true;
        }
    }
}

fn err_reply(e: &FsError) -> WorkerReply<'static> {
    match e {
        FsError::BadName => WorkerReply::BadName,
        FsError::Io(e) => WorkerReply::Errno(e.raw_os_error().unwrap_or(libc::EIO)),
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
        // A malformed request means the front is broken: stop serving it.
        let malformed = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let req: WorkerRequest<'_> =
            ipc::decode(&buf).map_err(|e| malformed(format!("malformed request from the front: {e}")))?;
        let answered = handle(root, &req, fd_in).ok_or_else(|| malformed(format!("bad request: {req:?}")))?;
        let (reply, fd_out) = answered.unwrap_or_else(|e| (err_reply(&e), None));
        ipc::send(sock.as_fd(), &reply, fd_out.as_ref().map(AsFd::as_fd))?;
    }
}

/// The answer to one request, and the file that goes with it: the worker's
/// request handler, also what `Fs::Local` runs in this process, and the one
/// place that drops the cached listings. `None`: the request is one the
/// front never makes (a path outside every root, a listing without its
/// channel).
fn handle(
    root: &Root,
    req: &WorkerRequest<'_>,
    fd_in: Option<OwnedFd>,
) -> Option<Result<(WorkerReply<'static>, Option<OwnedFd>), FsError>> {
    use WorkerRequest as R;
    let vpath = |p: &[u8]| VPath::root().join(p).ok();
    let done = |r: Result<(), FsError>| r.map(|()| (WorkerReply::Done, None));
    let with_fd = |r: Result<(OwnedFd, WorkerReply<'static>), FsError>| r.map(|(fd, reply)| (reply, Some(fd)));
    let stat = |r: Result<Stat, FsError>| r.map(|st| (WorkerReply::Stat(st), None));
    // Anything that may change a directory drops the cached listings.
    if !matches!(
        req,
        R::OpenFile { .. }
            | R::IsDir { .. }
            | R::Stat { .. }
            | R::Lstat { .. }
            | R::ListStream { .. }
            | R::ResumablePart { .. }
    ) {
        ListCache::clear();
    }
    Some(match *req {
        R::OpenFile { path } => with_fd(root.open_file(&vpath(path)?).map(|(fd, st)| (fd, WorkerReply::Stat(st)))),
        R::IsDir { path } => {
            if root.is_dir(&vpath(path)?) {
                Ok((WorkerReply::Done, None))
            } else {
                Err(FsError::Io(io::Error::from_raw_os_error(libc::ENOTDIR)))
            }
        }
        R::Stat { path } => stat(root.stat(&vpath(path)?)),
        R::Lstat { path } => stat(root.lstat(&vpath(path)?)),
        R::ListStream { path, all, cache_ms } => {
            let path = vpath(path)?;
            let chan = fd_in?;
            done(root.open_dir(&path).and_then(|dir| start_listing(dir, all, cache_ms, chan)))
        }
        R::OpenWrite { path, how, mode } => {
            with_fd(root.open_write(&vpath(path)?, how, mode).map(|fd| (fd, WorkerReply::Done)))
        }
        R::OpenPart { part, resume, mode } => {
            with_fd(root.open_part(&vpath(part)?, resume, mode).map(|fd| (fd, WorkerReply::Done)))
        }
        R::ResumablePart { part } => {
            with_fd(root.resumable_part(&vpath(part)?).map(|(fd, st)| (fd, WorkerReply::Stat(st))))
        }
        R::CreateTemp { target, mode } => with_fd(
            root.create_temp(&vpath(target)?, mode)
                .map(|(fd, tmp)| (fd, WorkerReply::Temp { path: tmp.as_bytes().to_vec() })),
        ),
        R::OpenReplace { target } => with_fd(
            root.open_replace(&vpath(target)?)
                .map(|(fd, tmp)| (fd, WorkerReply::Replace { temp: tmp.map(|t| t.as_bytes().to_vec()) })),
        ),
        R::Commit { from, to, replace } => {
            let from = vpath(from)?;
            done(vpath(to).ok_or(FsError::BadName).and_then(|to| root.commit(&from, &to, replace)))
        }
        R::Mkdir { path, mode } => done(root.mkdir(&vpath(path)?, mode)),
        R::Rmdir { path } => done(root.rmdir(&vpath(path)?)),
        R::Unlink { path } => done(root.unlink(&vpath(path)?)),
        R::Rename { from, to } => {
            let from = vpath(from)?;
            done(vpath(to).ok_or(FsError::BadName).and_then(|to| root.rename(&from, &to)))
        }
        R::Chmod { path, mode } => done(root.chmod(&vpath(path)?, mode)),
        R::SetMtime { path, secs } => done(root.set_mtime(&vpath(path)?, secs)),
        R::Forget => Ok((WorkerReply::Done, None)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Fs::Local` runs the worker's own handler: the same answers, errors
    /// kept as the file system gave them, and writes drop cached listings.
    #[test]
    fn the_in_process_fs_answers_through_the_workers_handler() {
        let dir = std::env::temp_dir().join(format!("ftpd-worker-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fs = Fs::Local(Root::open(&dir).unwrap());
        let p = |s: &str| VPath::root().join(s.as_bytes()).unwrap();
        let before = ListCache::generation();
        fs.mkdir(&p("d"), 0o755).unwrap();
        assert!(ListCache::generation() > before, "mkdir kept the cached listings");
        assert!(fs.is_dir(&p("d")) && !fs.is_dir(&p("nothing")));
        let fd = fs.open_write(&p("d/f"), Create::Exclusive, 0o644).unwrap();
        rustix::io::write(&fd, b"abc").unwrap();
        assert_eq!(fs.stat(&p("d/f")).unwrap().st_size, 3);
        fs.rename(&p("d/f"), &p("g")).unwrap();
        let (_, st) = fs.open_file(&p("g")).unwrap();
        assert_eq!(st.st_size, 3);
        let (_, temp) = fs.create_temp(&p("g"), 0o644).unwrap();
        assert!(fs.lstat(&temp).is_ok());
        fs.unlink(&temp).unwrap();
        match fs.stat(&p("d/f")) {
            Err(FsError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT)),
            other => panic!("{other:?}"),
        }
        fs.unlink(&p("g")).unwrap();
        fs.rmdir(&p("d")).unwrap();
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn a_listing_read_across_a_write_is_not_cached() {
        let key = ListKey { dev: 7, ino: 7, all: false, mtime: (1, 0), ctime: (1, 0) };
        let before = ListCache::generation();
        // A write (MFMT, SITE CHMOD) on another connection while the listing ran.
        ListCache::clear();
        ListCache::put(key.clone(), Vec::new(), 0, before);
        assert!(ListCache::get(&key, 60_000).is_none(), "a listing that may hold an old time was kept");
        let now = ListCache::generation();
        ListCache::put(key.clone(), Vec::new(), 0, now);
        assert!(ListCache::get(&key, 60_000).is_some(), "an undisturbed listing is kept");
        ListCache::clear();
    }
}
