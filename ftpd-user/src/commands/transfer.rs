//! File transfers: RETR STOR APPE STOU, and HASH/XSHA256.
//!
//! Downloads use `sendfile` and uploads `splice`, unless TYPE A conversion is
//! on (`ascii_*_enable`) or `use_sendfile=NO`. Every transfer runs inside
//! `Session::race`, so the control connection is answered meanwhile.

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::timeout,
};
use tracing::{debug, info, warn};

use crate::{
    command::HashAlg,
    data::{self, DataError, RecvError},
    fs::{self, Create, FsError, VPath},
    policy::Op,
    reply::{self, Reply, code},
    session::{Raced, Session},
    tls::DataStream,
    worker::Fs,
    xferlog::{Direction, Who},
};

/// Which upload command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// Create or replace.
    Stor,
    /// Append.
    Appe,
    /// Store under a new unique name.
    Stou,
}

/// Largest file whose TYPE A `SIZE` is computed. Reading the file is the
/// only way to count its LFs; vsftpd never does it ("a potential I/O DoS")
/// and answers the binary size. ftpd answers the converted size, which a
/// client resuming a TYPE A download needs, for files up to this size, and
/// `550 Could not get file size.` above it rather than a wrong number.
pub const ASCII_SIZE_MAX: u64 = 16 << 20;

/// Size of `file` after LF → CRLF conversion (what a TYPE A download sends),
/// reading at most [`ASCII_SIZE_MAX`] bytes: `None` if it is longer (it may
/// have grown since it was stat'ed). Blocking: call it off the async threads.
pub fn ascii_size(file: &OwnedFd) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    let mut size = 0u64;
    let mut prev = 0u8;
    loop {
        if off > ASCII_SIZE_MAX {
            return Ok(None);
        }
        let n = rustix::io::pread(file, &mut buf, off)?;
        if n == 0 {
            return Ok(Some(size));
        }
        for &b in &buf[..n] {
            size += if b == b'\n' && prev != b'\r' { 2 } else { 1 };
            prev = b;
        }
        off += n as u64;
    }
}

impl Session {
    /// Records a transfer in the metrics.
    fn count_transfer(&self, direction: &str, result: &str, bytes: u64, secs: f64, path: &[u8]) {
        let name = &self.user().name;
        let user = self.settings.metrics_users.iter().any(|u| u == name).then_some(name.as_str());
        self.shared.metrics.transfer(direction, result, bytes, secs, user);
        if self.settings.tls.is_some() {
            self.shared.metrics.tls_transfer(direction, self.data_tls);
        }
        self.shared.metrics.dir_transfer(&self.cfg().ftpd_metrics_dirs, path, direction, bytes);
    }

    /// Writes the transfer to the xferlog / vsftpd log, as configured.
    fn log_transfer(&self, dir: Direction, path: &[u8], bytes: u64, secs: f64, complete: bool) {
        let class = if self.user().anonymous {
            'a'
        } else if self.cfg().guest_enable {
            'g'
        } else {
            'r'
        };
        let who =
            Who { client: &self.client, user: &self.xfer_user, log_user: &self.log_user, class, binary: self.binary };
        self.shared.logs.transfer(&who, dir, path, bytes, secs, complete);
    }

    /// Joins the rate group for a transfer about to start, limited or not
    /// (a reload may limit it later).
    fn start_flow(&self) -> crate::rates::FlowGuard {
        let limit = self.rate();
        let key = match self.cfg().ftpd_rate_scope {
            crate::config::RateScope::User => format!("u:{}", self.user().name),
            crate::config::RateScope::Ip => format!("i:{}", self.peer_ip()),
            crate::config::RateScope::Session => format!("s:{}", self.id),
        };
        crate::rates::Rates::start(&self.shared.rates, key, self.owner(), limit)
    }

    /// Counts a limited transfer by how it was paced; returns that for the log.
    fn count_paced(&self, direction: &str, pacer: &crate::rates::Pacer) -> &'static str {
        match pacer.how() {
            Some(how) => {
                self.shared.metrics.paced(direction, how);
                how
            }
            None => "no",
        }
    }

    /// Opens a file for reading as RETR may: `download_enable`, the path
    /// confined and not denied, opened by the user's worker (or the front
    /// with the same credentials), and for anonymous users only a file
    /// everyone may read. The refusal is the reply to send.
    fn open_download(&self, arg: &[u8]) -> Result<(VPath, OwnedFd, rustix::fs::Stat), Reply> {
        let cfg = self.cfg();
        if !cfg.download_enable {
            return Err(reply::PERMISSION_DENIED);
        }
        let opened = self.path(arg).and_then(|p| self.user().root.open_file(&p).ok().map(|(f, st)| (p, f, st)));
        let Some((vpath, file, st)) = opened else {
            return Err(reply::FAILED_TO_OPEN_FILE);
        };
        if self.user().policy.world_readable_only && st.st_mode & 0o004 == 0 {
            return Err(reply::FAILED_TO_OPEN_FILE);
        }
        Ok((vpath, file, st))
    }

    /// `HASH` (draft-bryan-ftpext-hash) and `XSHA256` (`alg` given): the
    /// digest of a whole file a client may download, so that a mirror user
    /// can check a download without fetching it again. The file is read on
    /// a blocking thread, never on the session's event loop; ABOR stops it.
    pub(crate) async fn cmd_hash(&mut self, arg: &[u8], alg: Option<HashAlg>) -> io::Result<()> {
        let draft = alg.is_none();
        let alg = alg.unwrap_or(self.hash_alg);
        let (_, file, _) = match self.open_download(arg) {
            Ok(x) => x,
            Err(r) => return self.send(r).await,
        };
        let shared = Arc::clone(&self.shared);
        let Some(_slot) = shared.hashing.take(self.peer.ip()) else {
            return self.send(reply::HASH_BUSY).await;
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let work = async move { tokio::task::spawn_blocking(move || hash_file(&file, alg, &stopped)).await };
        match self.race(work).await? {
            Raced::Done(Ok(Ok((digest, len)))) => {
                let text = if draft {
                    format!("{} 0-{len} {digest} {}", alg.name(), String::from_utf8_lossy(arg))
                } else {
                    digest
                };
                self.reply(code::FILE_STATUS, &text).await
            }
            Raced::Done(Ok(Err(e))) => {
                warn!(session = self.id, file = %String::from_utf8_lossy(arg), error = %e, "hashing the file failed");
                self.send(reply::FILE_READ_FAILED).await
            }
            Raced::Done(Err(e)) => Err(io::Error::other(e)),
            Raced::Aborted => {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                self.send(reply::HASH_ABORTED).await?;
                self.send(reply::ABOR_OK).await
            }
        }
    }

    pub(crate) async fn cmd_retr(&mut self, arg: &[u8]) -> io::Result<()> {
        let offset = std::mem::take(&mut self.rest);
        let plan = match self.plan_retr(arg, offset) {
            Ok(p) => p,
            Err(r) => return self.send(r).await,
        };
        let Some(data) = self.open_data().await? else { return Ok(()) };
        let flow = self.start_flow();
        // vsftpd names the mode the bytes actually travel in.
        let mode = if plan.ascii { "ASCII" } else { "BINARY" };
        let text = format!("Opening {mode} mode data connection for {} ({} bytes).", plan.name, plan.size);
        self.reply(code::OPENING_DATA, &text).await?;
        let Some(data) = self.secure_data(data, true).await? else { return Ok(()) };
        let sent = self.run_retr(&plan, data, &flow).await?;
        drop(flow);
        self.finish_retr(&plan, sent).await
    }

    /// RETR's checks, before any data connection: what to send, or the refusal.
    fn plan_retr(&self, arg: &[u8], offset: u64) -> Result<Download, Reply> {
        let (vpath, file, st) = self.open_download(arg)?;
        Ok(Download {
            file,
            offset,
            size: u64::try_from(st.st_size).unwrap_or(0),
            name: String::from_utf8_lossy(arg).into_owned(),
            shown_path: vpath.as_bytes().to_vec(),
            ascii: !self.binary && self.cfg().ascii_download_enable,
        })
    }

    /// Sends the file, answering the control connection meanwhile.
    async fn run_retr(
        &mut self,
        plan: &Download,
        mut data: DataStream,
        flow: &crate::rates::FlowGuard,
    ) -> io::Result<Sent<Result<u64, DataError>>> {
        let cfg = self.cfg();
        let strict_shutdown = cfg.strict_ssl_write_shutdown;
        // The socket's own TCP pacing, applied before the first byte, plus a
        // schedule for what TCP does not pace (see `rates::Pacer`): the same
        // on both planes, passive or active, with or without a port range.
        let mut pacer = crate::rates::Pacer::sending(Arc::clone(&flow.flow));
        self.progress = std::sync::Arc::new(data::Progress::new(self.shared.metrics.bytes_counter("download")));
        let progress = std::sync::Arc::clone(&self.progress);
        let stall = self.stall();
        let (file, offset, ascii) = (&plan.file, plan.offset, plan.ascii);
        let len = plan.size.saturating_sub(offset);
        let started = Instant::now();
        let use_sendfile = cfg.use_sendfile;
        let send = async move {
            // Over TLS the bytes must pass through rustls: the buffered path,
            // paced the same way. In the clear, sendfile as before.
            let r = match &mut data {
                DataStream::Plain(tcp) if use_sendfile && !ascii => {
                    data::send_file(tcp, file, offset, len, stall, &progress, &mut pacer).await
                }
                _ => send_buffered(&mut data, file, offset, stall, &progress, ascii, &mut pacer, strict_shutdown).await,
            };
            drop(data);
            (r, pacer)
        };
        Ok(match self.race(send).await? {
            Raced::Done((r, pacer)) => {
                Sent { raced: Raced::Done(r), paced: self.count_paced("download", &pacer), started }
            }
            Raced::Aborted => Sent { raced: Raced::Aborted, paced: "no", started },
        })
    }

    /// Logs and counts a download, and gives its final reply.
    async fn finish_retr(&mut self, plan: &Download, sent: Sent<Result<u64, DataError>>) -> io::Result<()> {
        let Sent { raced, paced, started } = sent;
        let name = &plan.name;
        let (moved, complete) = match &raced {
            Raced::Done(Ok(n)) => (*n, true),
            _ => (self.progress.get(), false),
        };
        self.log_transfer(Direction::Download, &plan.shown_path, moved, started.elapsed().as_secs_f64(), complete);
        let result = match &raced {
            Raced::Done(Ok(_)) => "complete",
            Raced::Aborted => "aborted",
            Raced::Done(Err(_)) => "failed",
        };
        self.count_transfer("download", result, moved, started.elapsed().as_secs_f64(), &plan.shown_path);
        match raced {
            Raced::Done(Ok(sent)) => {
                info!(session = self.id, peer = %self.peer, user = %self.user().name, file = %name, bytes = sent, secs = started.elapsed().as_secs_f64(), paced, "download complete");
                self.send(reply::TRANSFER_OK).await
            }
            Raced::Done(Err(DataError::File(e))) => {
                warn!(session = self.id, file = %name, error = %e, "reading the file failed");
                self.send(reply::FILE_READ_FAILED).await
            }
            Raced::Done(Err(DataError::Stalled)) => {
                info!(session = self.id, peer = %self.peer, file = %name, "data connection stalled");
                self.send(reply::DATA_TIMEOUT).await
            }
            Raced::Done(Err(e)) => {
                info!(session = self.id, peer = %self.peer, file = %name, error = ?e, "download aborted");
                self.send(reply::NETWORK_WRITE_FAILED).await
            }
            Raced::Aborted => self.abort_replies().await,
        }
    }

    pub(crate) async fn cmd_store(&mut self, arg: &[u8], kind: StoreKind) -> io::Result<()> {
        let offset = std::mem::take(&mut self.rest);
        let up = match self.plan_store(arg, kind, offset) {
            Ok(u) => u,
            Err(r) => return self.send(r).await,
        };
        let Some(data) = self.open_data().await? else {
            up.plan.discard(&self.user().root);
            return Ok(());
        };
        if kind == StoreKind::Stou {
            self.reply(code::OPENING_DATA, &format!("FILE: {}", up.shown)).await?;
        } else {
            self.send(reply::SEND_DATA).await?;
        }
        let Some(data) = self.secure_data(data, false).await? else {
            up.plan.discard(&self.user().root);
            return Ok(());
        };
        if up.plan.truncate {
            // An in-place replace: emptied only now that the data is coming,
            // after the data connection's TLS handshake (a refused or
            // aborted handshake leaves the file as it was).
            let fd = up.plan.fd.try_clone()?;
            let cut =
                tokio::task::spawn_blocking(move || rustix::fs::ftruncate(&fd, 0)).await.map_err(io::Error::other)?;
            if let Err(e) = cut {
                warn!(session = self.id, error = %e, "cannot truncate the upload target");
                return self.send(reply::FILE_WRITE_FAILED).await;
            }
        }
        let received = self.run_store(&up, data).await?;
        self.finish_store(up, received).await
    }

    /// STOR/APPE/STOU's checks and where the upload goes, before any data
    /// connection; or the refusal.
    fn plan_store(&self, arg: &[u8], kind: StoreKind, mut offset: u64) -> Result<Upload, Reply> {
        let cfg = self.cfg();
        // vsftpd: a user who may not change existing files cannot resume
        // either, and its REST is ignored (the file is written from 0).
        // ftpd's atomic uploads keep their own resume of a part file.
        if !cfg.ftpd_atomic_uploads && self.anon_rules() && !self.may(Op::Other) {
            offset = 0;
        }
        // STOU without a name: a unique name in the current directory.
        let given = if kind == StoreKind::Stou && arg.is_empty() { STOU_BASE } else { arg };
        let Some(mut target) = self.path(given).filter(|_| self.may(Op::Upload)) else {
            return Err(reply::PERMISSION_DENIED);
        };
        // vsftpd: APPE is an "other write", even when the file is new.
        if kind == StoreKind::Appe && !self.may(Op::Other) {
            return Err(reply::PERMISSION_DENIED);
        }
        let root = &self.user().root;
        // STOU names the file as the client gave it, plus the suffix that
        // made it unique (vsftpd's `150 FILE: up/old.txt.1`).
        let mut shown = String::from_utf8_lossy(given).into_owned();
        if kind == StoreKind::Stou {
            let t = unique_name(root, &target).ok_or(reply::COULD_NOT_CREATE_FILE)?;
            let suffix = t.file_name().get(target.file_name().len()..).unwrap_or_default();
            shown.push_str(&String::from_utf8_lossy(suffix));
            target = t;
        }
        let existing = root.lstat(&target).ok();
        if existing.as_ref().is_some_and(|st| !fs::is_file(st)) {
            return Err(reply::COULD_NOT_CREATE_FILE);
        }
        let overwrite = existing.is_some() && kind == StoreKind::Stor && offset == 0;
        let append = kind == StoreKind::Appe || (existing.is_some() && offset > 0);
        // Overwriting, appending and resuming change an existing file: "other write".
        if (overwrite || append && existing.is_some()) && !self.may(Op::Other) {
            return Err(reply::COULD_NOT_CREATE_FILE);
        }
        let rules = Rules {
            atomic: cfg.ftpd_atomic_uploads,
            mode: cfg.file_open_mode & !self.umask,
            may_overwrite: self.may(Op::Other),
        };
        match plan_upload(root, &target, kind, offset, existing.is_some(), rules, &self.user().name) {
            Ok(mut plan) => {
                // A replace's temporary file is always removed on failure;
                // with delete_failed_uploads, so is a new file or a part.
                plan.delete_on_fail |= cfg.delete_failed_uploads && existing.is_none();
                Ok(Upload { plan, shown })
            }
            // A refusal of ftpd's own says why in the log; the rest is what
            // the file system said (no permission, no such directory).
            Err(FsError::Io(e)) if e.get_ref().is_some() => {
                info!(session = self.id, peer = %self.peer, file = %shown, reason = %e, "upload refused");
                Err(reply::COULD_NOT_CREATE_FILE)
            }
            Err(e) => {
                debug!(session = self.id, error = ?e, "cannot open upload target");
                Err(reply::COULD_NOT_CREATE_FILE)
            }
        }
    }

    /// Receives the upload, answering the control connection meanwhile.
    async fn run_store(&mut self, up: &Upload, mut data: DataStream) -> io::Result<Sent<Result<u64, RecvError>>> {
        let cfg = self.cfg();
        let strict_eof = cfg.strict_ssl_read_eof;
        self.progress = std::sync::Arc::new(data::Progress::new(self.shared.metrics.bytes_counter("upload")));
        let progress = std::sync::Arc::clone(&self.progress);
        let stall = self.stall();
        let flow = self.start_flow();
        let mut pacer = crate::rates::Pacer::receiving(Arc::clone(&flow.flow));
        let ascii = !self.binary && cfg.ascii_upload_enable;
        let started = Instant::now();
        let write_off = up.plan.write_offset;
        let fd = up.plan.fd.try_clone()?;
        let recv = async move {
            let r = match &mut data {
                DataStream::Plain(tcp) if !ascii => {
                    data::receive_file(tcp, &fd, write_off, stall, &progress, &mut pacer).await
                }
                _ => recv_copy(&mut data, &fd, write_off, stall, &progress, &mut pacer, ascii, strict_eof).await,
            };
            if r.is_ok() && matches!(data, DataStream::Tls(_)) {
                // The client's close_notify is answered with ours: clients
                // that shut TLS down both ways (Python's unwrap) wait for it.
                let _ = timeout(stall, data.shutdown()).await;
            }
            (r, pacer)
        };
        let raced = self.race(recv).await?;
        drop(flow);
        Ok(match raced {
            Raced::Done((r, pacer)) => {
                let paced = self.count_paced("upload", &pacer);
                Sent { raced: Raced::Done(r), paced, started }
            }
            Raced::Aborted => Sent { raced: Raced::Aborted, paced: "no", started },
        })
    }

    /// Publishes (or cleans up) the upload, logs and counts it, and gives
    /// its final reply.
    async fn finish_store(&mut self, up: Upload, received: Sent<Result<u64, RecvError>>) -> io::Result<()> {
        let Sent { raced, paced, started } = received;
        let Upload { plan, shown } = up;
        let target = plan.target.clone();
        let (result, aborted) = match raced {
            Raced::Done(r) => (r, false),
            Raced::Aborted => (Err(RecvError::Network(io::Error::from(io::ErrorKind::Interrupted))), true),
        };
        // The commit syncs and renames: blocking calls, kept off the runtime
        // so that other sessions are answered meanwhile. So is the clean-up
        // of a failure (a worker round trip).
        let fs = Arc::clone(&self.user().root);
        let result = tokio::task::spawn_blocking(move || {
            let r = match result {
                Ok(n) => plan.commit(&fs).map(|()| n).map_err(Failure::Commit),
                Err(e) => Err(Failure::Recv(e)),
            };
            match &r {
                Err(Failure::Commit(e)) if is_refusal(e) => plan.drop_upload(&fs),
                Err(_) => plan.fail(&fs),
                Ok(_) => {}
            }
            r
        })
        .await
        .map_err(io::Error::other)?;
        let (moved, complete) = match &result {
            Ok(n) => (*n, true),
            Err(_) => (self.progress.get(), false),
        };
        self.log_transfer(Direction::Upload, target.as_bytes(), moved, started.elapsed().as_secs_f64(), complete);
        let outcome = if complete {
            "complete"
        } else if aborted {
            "aborted"
        } else {
            "failed"
        };
        self.count_transfer("upload", outcome, moved, started.elapsed().as_secs_f64(), target.as_bytes());
        match result {
            Ok(n) => {
                info!(session = self.id, peer = %self.peer, user = %self.user().name, file = %shown, bytes = n, secs = started.elapsed().as_secs_f64(), paced, "upload complete");
                self.send(reply::TRANSFER_OK).await
            }
            Err(e) => {
                info!(session = self.id, peer = %self.peer, file = %shown, error = ?e, "upload failed");
                if aborted {
                    return self.abort_replies().await;
                }
                match e {
                    // Someone else's file is there now, one this user may not replace.
                    Failure::Commit(e) if is_refusal(&e) => self.send(reply::COULD_NOT_CREATE_FILE).await,
                    Failure::Recv(RecvError::File(e)) | Failure::Commit(e) if is_space_error(&e) => {
                        self.send(reply::NO_SPACE).await
                    }
                    Failure::Recv(RecvError::File(_)) | Failure::Commit(_) => self.send(reply::FILE_WRITE_FAILED).await,
                    Failure::Recv(RecvError::Stalled) => self.send(reply::DATA_TIMEOUT).await,
                    Failure::Recv(RecvError::Network(_)) => self.send(reply::NETWORK_READ_FAILED).await,
                }
            }
        }
    }
}

/// What RETR sends, decided before the data connection.
struct Download {
    file: OwnedFd,
    /// REST: where sending starts (a file offset, also in ASCII mode).
    offset: u64,
    size: u64,
    /// The argument as given, for the 150 reply and the log.
    name: String,
    /// The path from the root, for xferlog and the metrics.
    shown_path: Vec<u8>,
    /// TYPE A with `ascii_download_enable`: LF becomes CRLF.
    ascii: bool,
}

/// An upload decided before the data connection.
struct Upload {
    plan: UploadPlan,
    /// The name as the client gave it (STOU: plus its unique suffix).
    shown: String,
}

/// How a transfer's data phase ended.
struct Sent<R> {
    raced: Raced<R>,
    /// How the rate limit paced it, for the log.
    paced: &'static str,
    started: Instant,
}

fn is_space_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG))
}

/// A commit refused because of what is at the target now, not an I/O error.
fn is_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EEXIST | libc::EACCES | libc::EPERM | libc::EISDIR | libc::ENOTEMPTY))
}

/// Why an upload did not end with 226.
#[derive(Debug)]
enum Failure {
    /// Receiving or writing the data.
    Recv(RecvError),
    /// Publishing the complete upload under its name.
    Commit(io::Error),
}

/// What decides how an upload is written.
#[derive(Clone, Copy)]
struct Rules {
    /// `ftpd_atomic_uploads`.
    atomic: bool,
    /// Mode of a new file, umask applied.
    mode: u32,
    /// Whether the user may replace an existing file (vsftpd's "other write").
    may_overwrite: bool,
}

/// Where an upload is written and what happens at the end.
struct UploadPlan {
    /// For an atomic upload's part, the fd holding its lock: kept open until
    /// the upload is over (committed or failed).
    fd: OwnedFd,
    /// Where writing starts; `None` appends.
    write_offset: Option<u64>,
    /// Written under another name, renamed over `target` on success.
    temp: Option<VPath>,
    target: VPath,
    /// On failure, delete what was written (a replace's temp file) or keep it
    /// for a resume (vsftpd's partial file, or an atomic upload's part).
    delete_on_fail: bool,
    /// Whether the commit may replace a file found at `target` by then
    /// (re-checked against that file); if not, it never replaces one.
    replace: bool,
    /// An existing file written in place: truncated once the data connection is there.
    truncate: bool,
}

impl UploadPlan {
    fn commit(&self, root: &Fs) -> io::Result<()> {
        let Some(t) = &self.temp else {
            // Written in place: listings cached before or during the upload
            // show an old size (renames clear them in the worker anyway).
            root.forget_listings();
            return Ok(());
        };
        // On disk before it replaces anything, so a crash cannot leave an
        // empty file where the old one was. A new file has nothing to lose,
        // and is not synced (as vsftpd).
        rustix::fs::fsync(&self.fd).ok();
        root.commit(t, &self.target, self.replace).map_err(|e| match e {
            FsError::Io(e) => e,
            FsError::BadName => io::Error::from(io::ErrorKind::InvalidInput),
        })
    }

    fn fail(&self, root: &Fs) {
        if self.delete_on_fail {
            let victim = self.temp.as_ref().unwrap_or(&self.target);
            let _ = root.unlink(victim);
        }
    }

    /// The commit was refused: what was uploaded can never be published
    /// under its name, so it is not kept for a resume either.
    fn drop_upload(&self, root: &Fs) {
        if let Some(t) = &self.temp {
            let _ = root.unlink(t);
        }
    }

    /// The data connection never came: undo whatever creating the file did.
    fn discard(&self, root: &Fs) {
        if let Some(t) = self.temp.as_ref().filter(|_| self.delete_on_fail) {
            let _ = root.unlink(t);
        }
    }
}

/// Chooses how to write an upload so that an existing file is never damaged
/// and nobody else's upload is touched: replacing goes through a temporary
/// file renamed over the old one (see `Root::open_replace` for when it is
/// written in place instead); with `atomic`, new files are written as
/// `.NAME.ftpd-part`, locked by this session, and renamed when complete.
/// Resumes (REST, APPE) write in place, as they must; an atomic resume
/// only from within its part (see below). The part is `user`'s
/// ([`fs::part_path`]).
fn plan_upload(
    root: &Fs,
    target: &VPath,
    kind: StoreKind,
    offset: u64,
    existing: bool,
    rules: Rules,
    user: &str,
) -> Result<UploadPlan, FsError> {
    let mode = rules.mode;
    // Written to a temporary file renamed over the target when complete
    // (deleted if the upload fails).
    let via_temp = |fd, tmp| UploadPlan {
        fd,
        write_offset: Some(0),
        temp: Some(tmp),
        target: target.clone(),
        delete_on_fail: true,
        replace: true,
        truncate: false,
    };
    let in_place = |fd, write_offset| UploadPlan {
        fd,
        write_offset,
        temp: None,
        target: target.clone(),
        delete_on_fail: false,
        replace: false,
        truncate: false,
    };
    match (existing, kind) {
        (true, StoreKind::Appe) => {
            let fd = root.open_write(target, Create::Append, mode)?;
            let end = u64::try_from(rustix::fs::fstat(&fd)?.st_size).unwrap_or(0);
            Ok(in_place(fd, Some(end)))
        }
        (true, _) if offset > 0 => Ok(in_place(root.open_write(target, Create::Keep, mode)?, Some(offset))),
        (true, _) => match root.open_replace(target)? {
            (fd, Some(tmp)) => Ok(via_temp(fd, tmp)),
            (fd, None) => Ok(UploadPlan { truncate: true, ..in_place(fd, Some(0)) }),
        },
        (false, _) if rules.atomic => {
            let part = fs::part_path(target, user).ok_or(FsError::BadName)?;
            let resume = offset > 0 || kind == StoreKind::Appe;
            let fd = match root.open_part(&part, resume, mode) {
                Ok(fd) => fd,
                // Another session's upload of this name (or another user's
                // part): a user who may overwrite uploads beside it, and the
                // later commit wins; anyone else is refused.
                Err(FsError::Io(e))
                    if !resume
                        && rules.may_overwrite
                        && matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EPERM | libc::EACCES)) =>
                {
                    let (fd, tmp) = root.create_temp(target, mode)?;
                    return Ok(via_temp(fd, tmp));
                }
                Err(e) => return Err(e),
            };
            let size = u64::try_from(rustix::fs::fstat(&fd)?.st_size).unwrap_or(0);
            // A REST beyond the part (none left to resume, or a client's
            // wrong offset) would publish a hole of zeros as the start of
            // the file. vsftpd writes past the end of a file in place; a
            // file that appears only complete must not.
            if kind != StoreKind::Appe && offset > size {
                if size == 0 {
                    // Made just now by this open, or empty anyway: nothing to keep.
                    let _ = root.unlink(&part);
                }
                return Err(FsError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("REST {offset} is beyond the {size} bytes of the part to resume"),
                )));
            }
            let write_offset = Some(if kind == StoreKind::Appe { size } else { offset });
            Ok(UploadPlan {
                fd,
                write_offset,
                temp: Some(part),
                target: target.clone(),
                delete_on_fail: false,
                replace: rules.may_overwrite,
                truncate: false,
            })
        }
        (false, _) => {
            let how = if offset > 0 { Create::Keep } else { Create::Exclusive };
            Ok(in_place(root.open_write(target, how, mode)?, Some(offset)))
        }
    }
}

/// The name STOU without an argument starts from, in the current directory.
const STOU_BASE: &[u8] = b"ftpd.upload";

/// `NAME`, else `NAME.1`, `NAME.2`, … beside it.
fn unique_name(root: &Fs, wanted: &VPath) -> Option<VPath> {
    if root.lstat(wanted).is_err() {
        return Some(wanted.clone());
    }
    let (dir, name) = wanted.split_last()?;
    (1..1000).find_map(|i| {
        let mut n = name.to_vec();
        n.extend_from_slice(format!(".{i}").as_bytes());
        let p = dir.join(&n).ok()?;
        root.lstat(&p).is_err().then_some(p)
    })
}

/// The lower-case hex digest of `file` from its start to its end, and the
/// number of bytes read. Blocking. Stops early, with an error, once `stop` is set.
fn hash_file(file: &OwnedFd, alg: HashAlg, stop: &std::sync::atomic::AtomicBool) -> io::Result<(String, u64)> {
    use sha2::Digest;
    let mut sha256 = sha2::Sha256::new();
    let mut sha512 = sha2::Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let n = rustix::io::pread(file, &mut buf, off)?;
        if n == 0 {
            break;
        }
        match alg {
            HashAlg::Sha256 => sha256.update(&buf[..n]),
            HashAlg::Sha512 => sha512.update(&buf[..n]),
        }
        off += n as u64;
    }
    let digest: Vec<u8> = match alg {
        HashAlg::Sha256 => sha256.finalize().to_vec(),
        HashAlg::Sha512 => sha512.finalize().to_vec(),
    };
    Ok((digest.iter().map(|b| format!("{b:02x}")).collect(), off))
}

/// Download through a buffer: for `use_sendfile=NO`, and for TYPE A with
/// `ascii_download_enable`, where LF becomes CRLF. `off` counts file bytes
/// (REST in ASCII mode is a file offset, as in vsftpd).
#[allow(clippy::too_many_arguments)]
async fn send_buffered(
    data: &mut DataStream,
    file: &OwnedFd,
    mut off: u64,
    stall: Duration,
    progress: &data::Progress,
    ascii: bool,
    pacer: &mut crate::rates::Pacer,
    strict_shutdown: bool,
) -> Result<u64, DataError> {
    // Under TLS, bigger reads hand rustls many records per write: with 32 KiB
    // (two records) a 1 GiB download ran at 440 MB/s against vsftpd's 577.
    let size = if matches!(data, DataStream::Tls(_)) { 256 * 1024 } else { 32 * 1024 };
    let mut buf = vec![0u8; size];
    let mut out = Vec::with_capacity(64 * 1024);
    let mut prev = 0u8;
    let mut sent = 0;
    loop {
        let n = rustix::io::pread(file, &mut buf, off).map_err(|e| DataError::File(e.into()))?;
        if n == 0 {
            break;
        }
        let chunk: &[u8] = if ascii {
            out.clear();
            for &b in &buf[..n] {
                if b == b'\n' && prev != b'\r' {
                    out.push(b'\r');
                }
                out.push(b);
                prev = b;
            }
            &out
        } else {
            &buf[..n]
        };
        data::send_paced(data, chunk, stall, pacer).await?;
        off += n as u64;
        sent += chunk.len() as u64;
        progress.add(chunk.len() as u64);
    }
    data::finish_send(data, stall, strict_shutdown).await?;
    Ok(sent)
}

/// Upload through a buffer, for TYPE A conversion (CRLF → LF) and for TLS,
/// paced like `data::receive_file`. Under TLS the end must be a
/// close_notify unless `strict_ssl_read_eof=NO`: a bare TCP close may be a
/// cut connection, and the upload then fails instead of being kept as
/// complete.
#[allow(clippy::too_many_arguments)]
async fn recv_copy(
    data: &mut DataStream,
    file: &OwnedFd,
    mut off: Option<u64>,
    stall: Duration,
    progress: &data::Progress,
    pacer: &mut crate::rates::Pacer,
    ascii: bool,
    strict_eof: bool,
) -> Result<u64, RecvError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut pending_cr = false;
    loop {
        let want = pacer.budget(data.as_fd(), buf.len()).await;
        let n = match timeout(stall, data.read(&mut buf[..want])).await {
            Err(_) => return Err(RecvError::Stalled),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof && !strict_eof => 0,
            Ok(Err(e)) => return Err(RecvError::Network(e)),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            if pending_cr {
                write_all_at(file, b"\r", &mut off).map_err(RecvError::File)?;
                total += 1;
            }
            return Ok(total);
        }
        let bytes: &[u8] = if ascii {
            out.clear();
            for &b in &buf[..n] {
                if pending_cr && b != b'\n' {
                    out.push(b'\r');
                }
                pending_cr = b == b'\r';
                if !pending_cr {
                    out.push(b);
                }
            }
            &out
        } else {
            &buf[..n]
        };
        write_all_at(file, bytes, &mut off).map_err(RecvError::File)?;
        total += bytes.len() as u64;
        progress.add(n as u64);
        pacer.moved(n);
    }
}

fn write_all_at(file: &OwnedFd, mut bytes: &[u8], off: &mut Option<u64>) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = match off {
            Some(o) => {
                let n = rustix::io::pwrite(file.as_fd(), bytes, *o)?;
                *o += n as u64;
                n
            }
            None => rustix::io::write(file.as_fd(), bytes)?,
        };
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        bytes = &bytes[n..];
    }
    Ok(())
}
