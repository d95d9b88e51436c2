//! Directory listings: LIST, NLST and MLSD over a data connection, and
//! STAT PATH's listing on the control connection. Streamed from the file
//! worker a chunk at a time; one address may hold only so many of a
//! worker's listing slots (see [`crate::slots::Listings`]).

use std::{
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

use crate::{
    command::ListArgs,
    data::{self, DataError, finish_send},
    fs::{self, Entry, FsError, ListStyle, VPath},
    reply,
    session::{Raced, Session},
    tls::DataStream,
    worker::Fs,
};

/// Most bytes of a listing buffered before they are written to the client.
const LIST_CHUNK: usize = 64 * 1024;
/// Deepest `LIST -R` recursion followed.
const MAX_RECURSION: usize = 32;

/// Which listing format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// `LIST`: `ls -l` lines.
    Long,
    /// `NLST`: names only.
    Names,
    /// `MLSD`: RFC 3659 facts.
    Machine,
}

impl Session {
    fn list_style(&self) -> ListStyle {
        let c = self.cfg();
        ListStyle { hide_ids: c.hide_ids, localtime: c.use_localtime, names: c.text_userdb_names }
    }

    /// What a listing of this session needs, owned (see [`Lister`]).
    /// `all`: dot files; `dots`: also `.` and `..` (an explicit `-a`, not
    /// `force_dot_files`, as in vsftpd).
    fn lister(&self, kind: ListKind, all: bool, dots: bool, recurse: bool) -> Lister {
        Lister {
            fs: Arc::clone(&self.user().root),
            settings: Arc::clone(&self.settings),
            kind,
            style: self.list_style(),
            now: fs::now_secs(),
            perms: [self.perm_fact(false), self.perm_fact(true)],
            all,
            dots,
            recurse,
            anon_check: self.user().policy.world_readable_only,
            cache_ms: self.cfg().ftpd_list_cache_ms,
            session: self.id,
            ip: self.peer_ip(),
            worker: self.user().root.worker_key(),
            listings: Arc::clone(&self.shared.listings),
        }
    }

    /// A whole `LIST` in memory, for STAT PATH, which answers on the control
    /// connection; empty when the path cannot be listed.
    /// As vsftpd, STAT always lists as `-a` (and `-R` with `ls_recurse_enable`).
    async fn listing_bytes(&self, path: VPath, given: &[u8], recurse: bool) -> Vec<u8> {
        let mut out = Vec::new();
        match self.lister(ListKind::Long, true, true, recurse).walk(path, given.to_vec(), Sink::Memory(&mut out)).await
        {
            Ok(false) => out,
            Ok(true) | Err(_) => Vec::new(),
        }
    }

    /// STAT PATH: a listing over the control connection.
    pub(crate) async fn cmd_stat_path(&mut self, args: ListArgs<'_>) -> io::Result<()> {
        if !self.cfg().dirlist_enable {
            return self.send(reply::PERMISSION_DENIED).await;
        }
        let path_arg = args.path;
        let recurse = args.recurse && self.cfg().ls_recurse_enable;
        let listing = match self.path(path_arg) {
            Some(p) => self.listing_bytes(p, path_arg, recurse).await,
            None => Vec::new(),
        };
        let lines: Vec<String> = String::from_utf8_lossy(&listing).lines().map(str::to_owned).collect();
        self.reply_listing(reply::code::FILE_STATUS, "Status follows:", &lines, "End of status").await
    }

    /// LIST, NLST and MLSD (whose argument is a path only).
    pub(crate) async fn cmd_list(&mut self, args: ListArgs<'_>, kind: ListKind) -> io::Result<()> {
        if !self.cfg().dirlist_enable {
            return self.send(reply::PERMISSION_DENIED).await;
        }
        let path_arg = args.path;
        // vsftpd: `NLST -l` is a long listing.
        let kind = if kind == ListKind::Names && args.long { ListKind::Long } else { kind };
        let all = args.all || self.cfg().force_dot_files;
        let recurse = args.recurse && self.cfg().ls_recurse_enable && kind != ListKind::Machine;
        let path = self.path(path_arg);
        if kind == ListKind::Machine {
            let ok = path.as_ref().is_some_and(|p| self.user().root.is_dir(p));
            if !ok {
                return self.send(reply::MLSD_FAILED).await;
            }
        }
        // One address may not hold all of a worker's listing slots (a session
        // runs one command at a time, so it holds at most one).
        let worker = self.user().root.worker_key();
        let Some(slot) = self.shared.listings.take(self.peer_ip(), worker, self.cfg().ftpd_max_listings_per_ip) else {
            info!(session = self.id, peer = %self.names.peer, "listing refused: ftpd_max_listings_per_ip reached");
            return self.send(reply::TOO_MANY_LISTINGS).await;
        };
        let Some(data) = self.open_data().await? else { return Ok(()) };
        self.send(reply::LISTING_FOLLOWS).await?;
        let Some(mut data) = self.secure_data(data, true).await? else { return Ok(()) };
        let strict_shutdown = self.cfg().strict_ssl_write_shutdown;
        // Streamed: each chunk of entries is formatted and written before the
        // next is read, so a listing costs one chunk of memory whatever its size.
        let lister = self.lister(kind, all, args.all, recurse);
        // A listing whose client does not read holds a worker thread and its
        // memory: it gets less time than a file download.
        let stall = match self.cfg().ftpd_list_stall_timeout {
            0 => self.stall(),
            s => self.stall().min(Duration::from_secs(u64::from(s))),
        };
        let given = path_arg.to_vec();
        let stop = slot.stop_signal();
        let send = async move {
            let work = async {
                let failed = match path {
                    None => true,
                    Some(p) => lister.walk(p, given, Sink::Data(&mut data, stall)).await?,
                };
                finish_send(&mut data, stall, strict_shutdown).await?;
                Ok::<bool, DataError>(failed)
            };
            // `None`: ended to give its slot to another address (see [`crate::slots::Listings::preempt`]).
            tokio::select! {
                r = work => Some(r),
                () = stop.notified() => None,
            }
        };
        match self.race(send).await? {
            Raced::Done(None) => {
                info!(session = self.id, peer = %self.names.peer, "listing preempted: the worker's listing slots were full and this address had the most");
                self.send(reply::NETWORK_WRITE_FAILED).await
            }
            Raced::Done(Some(Ok(true))) if kind != ListKind::Machine => {
                // vsftpd reports an unreadable directory as a successful, empty listing.
                self.send(reply::LISTING_DONE_UNREADABLE).await
            }
            Raced::Done(Some(Ok(_))) => self.send(reply::LISTING_OK).await,
            Raced::Done(Some(Err(DataError::File(e)))) => {
                warn!(session = self.id, error = %e, "listing failed");
                self.send(reply::DIRECTORY_READ_FAILED).await
            }
            Raced::Done(Some(Err(DataError::Stalled))) => {
                info!(session = self.id, peer = %self.names.peer, "data connection stalled during a listing");
                self.send(reply::DATA_TIMEOUT).await
            }
            Raced::Done(Some(Err(e))) => {
                debug!(session = self.id, error = ?e, "listing aborted");
                self.send(reply::NETWORK_WRITE_FAILED).await
            }
            Raced::Aborted => self.abort_replies().await,
        }
    }
}

/// What a streamed listing needs from its session, owned, so the transfer
/// can run while the session answers ABOR and STAT.
struct Lister {
    fs: Arc<Fs>,
    /// The session's settings (`hide_file`).
    settings: Arc<crate::settings::Settings>,
    kind: ListKind,
    style: ListStyle,
    now: i64,
    /// MLSD `perm` facts for a file and for a directory.
    perms: [String; 2],
    all: bool,
    /// List `.` and `..` too.
    dots: bool,
    recurse: bool,
    /// `anon_world_readable_only` for an anonymous session.
    anon_check: bool,
    /// `ftpd_list_cache_ms`.
    cache_ms: u32,
    session: u64,
    /// The client's address and [`Fs::worker_key`], for [`crate::slots::Listings::preempt`].
    ip: std::net::IpAddr,
    worker: usize,
    listings: Arc<crate::slots::Listings>,
}

/// Where a listing goes: the data connection, or memory (STAT PATH).
enum Sink<'a> {
    Data(&'a mut DataStream, Duration),
    Memory(&'a mut Vec<u8>),
}

impl Sink<'_> {
    async fn put(&mut self, bytes: &[u8]) -> Result<(), DataError> {
        match self {
            Self::Data(stream, stall) => data::send_bytes(stream, bytes, *stall).await,
            Self::Memory(v) => {
                v.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// What one directory of a listing turned out to be.
enum Opened {
    Dir(crate::worker::Listing),
    /// Not a listable directory: shown as its one entry, as `ls` does.
    One(Entry),
}

impl Lister {
    fn format(&self, e: &Entry, prefix: &[u8], out: &mut Vec<u8>) {
        match self.kind {
            ListKind::Names => {
                out.extend_from_slice(prefix);
                out.extend_from_slice(&e.name);
                out.extend_from_slice(b"\r\n");
            }
            ListKind::Long => fs::list_line(e, self.now, self.style, out),
            ListKind::Machine => {
                fs::mlsx_line(&e.name, &e.stat, &self.perms[usize::from(fs::is_dir(&e.stat))], out);
            }
        }
    }

    fn open(&self, dir: &VPath, given: &[u8]) -> Result<Opened, FsError> {
        // vsftpd: with anon_world_readable_only, anonymous users cannot list
        // a directory that is not world-readable either.
        if self.anon_check {
            let st = self.fs.stat(dir)?;
            if fs::is_dir(&st) && st.st_mode & 0o004 == 0 {
                return Err(FsError::Io(io::Error::from(io::ErrorKind::PermissionDenied)));
            }
        }
        match self.fs.list_stream(dir, self.all, self.cache_ms) {
            Ok(l) => Ok(Opened::Dir(l)),
            Err(FsError::Io(e)) if e.raw_os_error() == Some(libc::EAGAIN) => Err(FsError::Io(e)),
            Err(_) => {
                let stat = self.fs.stat(dir)?;
                Ok(Opened::One(Entry { name: given.to_vec(), stat, link: None }))
            }
        }
    }

    /// [`Lister::open`], and when the worker has no listing slot left,
    /// [`crate::slots::Listings::preempt`] another address's listing and try again for a while.
    async fn open_fair(&self, dir: &VPath, given: &[u8]) -> Result<Opened, FsError> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut preempted: Option<Instant> = None;
        loop {
            match self.open(dir, given) {
                Err(FsError::Io(e)) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    // Again if the freed slot went to someone else.
                    if preempted.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
                        if !self.listings.preempt(self.ip, self.worker) {
                            return Err(FsError::Io(e));
                        }
                        preempted = Some(Instant::now());
                    }
                    if Instant::now() >= deadline {
                        return Err(FsError::Io(e));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    /// Formats the listing of `top` (recursively with `-R`) and hands it to
    /// `sink` a bufferful at a time. `Ok(true)`: the top directory could
    /// not be listed at all.
    ///
    /// As vsftpd: an argument that is not a directory is a filter (`*`, `?`)
    /// on the names of its parent directory (`LIST README`, `LIST *.txt`);
    /// NLST names carry the directory as given (`NLST pub` → `pub/a.txt`).
    async fn walk(&self, top: VPath, given: Vec<u8>, mut sink: Sink<'_>) -> Result<bool, DataError> {
        let mut out = Vec::with_capacity(LIST_CHUNK + 4096);
        let mut filter: Option<Vec<u8>> = None;
        let (top, given) = match top.split_last() {
            Some((parent, name)) if self.kind != ListKind::Machine && !self.fs.is_dir(&top) => {
                filter = Some(name.to_vec());
                let dir_part = match given.iter().rposition(|&b| b == b'/') {
                    Some(0) => b"/".to_vec(),
                    Some(i) => given[..i].to_vec(),
                    None => b".".to_vec(),
                };
                (parent, dir_part)
            }
            _ if given.is_empty() => (top, b".".to_vec()),
            _ => (top, given),
        };
        let mut stack: Vec<(VPath, Vec<u8>, usize)> = vec![(top, given, 0)];
        let mut first = true;
        let mut failed = false;
        while let Some((dir, shown, depth)) = stack.pop() {
            let filter = filter.as_deref().filter(|_| depth == 0);
            let passes = |name: &[u8]| filter.is_none_or(|f| fs::glob(f, name));
            let mut listing = match self.open_fair(&dir, &shown).await {
                Ok(Opened::Dir(l)) => l,
                Ok(Opened::One(e)) => {
                    first = false;
                    self.format(&e, &[], &mut out);
                    continue;
                }
                // Too many listings in progress: an error, not an empty listing.
                Err(FsError::Io(e)) if e.raw_os_error() == Some(libc::EAGAIN) => return Err(DataError::File(e)),
                Err(e) => {
                    debug!(session = self.session, error = ?e, path = %String::from_utf8_lossy(dir.as_bytes()), "cannot list");
                    failed |= first;
                    first = false;
                    continue;
                }
            };
            if self.recurse {
                if !first {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(&shown);
                out.extend_from_slice(b":\r\n");
            }
            first = false;
            // NLST names carry their directory, unless it is the current one.
            let prefix: Vec<u8> = match shown.as_slice() {
                b"." => Vec::new(),
                s if s.ends_with(b"/") => s.to_vec(),
                s => [s, b"/"].concat(),
            };
            // `-a` shows `.` and `..` as readdir gives them, in name order.
            let mut dots: Vec<Entry> = if self.dots && self.kind != ListKind::Machine {
                let parent = dir.split_last().map_or_else(VPath::root, |(p, _)| p);
                [(&b"."[..], &dir), (&b".."[..], &parent)]
                    .into_iter()
                    .filter(|(n, _)| passes(n))
                    .filter_map(|(n, p)| Some(Entry { name: n.to_vec(), stat: self.fs.stat(p).ok()?, link: None }))
                    .collect()
            } else {
                Vec::new()
            };
            dots.reverse();
            let mut subdirs = Vec::new();
            loop {
                let chunk = match listing.next().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(FsError::Io(e)) => return Err(DataError::File(e)),
                    Err(FsError::BadName) => return Err(DataError::File(io::Error::from(io::ErrorKind::InvalidData))),
                };
                for e in &chunk {
                    // deny_file names stay listed, as vsftpd's manual says
                    // ("not hidden"); only using them is refused.
                    if !passes(&e.name) || self.settings.hide.matches_name(&e.name) {
                        continue;
                    }
                    while dots.last().is_some_and(|d| d.name < e.name) {
                        let d = dots.pop().expect("checked");
                        self.format(&d, &prefix, &mut out);
                    }
                    self.format(e, &prefix, &mut out);
                    if self.recurse && depth < MAX_RECURSION && fs::is_dir(&e.stat) && e.link.is_none() {
                        subdirs.push(e.name.clone());
                    }
                }
                if out.len() >= LIST_CHUNK {
                    sink.put(&out).await?;
                    out.clear();
                }
            }
            while let Some(d) = dots.pop() {
                self.format(&d, &prefix, &mut out);
            }
            for name in subdirs.into_iter().rev() {
                let Ok(child) = dir.join(&name) else { continue };
                let mut label = shown.clone();
                if !label.is_empty() && !label.ends_with(b"/") {
                    label.push(b'/');
                }
                label.extend_from_slice(&name);
                stack.push((child, label, depth + 1));
            }
        }
        if !out.is_empty() {
            sink.put(&out).await?;
        }
        Ok(failed)
    }
}
