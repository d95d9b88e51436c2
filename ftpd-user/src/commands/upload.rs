//! Uploads: STOR, APPE and STOU. Where the bytes go is decided before the
//! data connection opens (`plan_upload`), so that an existing file is never
//! damaged; they arrive by `splice`, or through a buffer for TYPE A
//! (`ascii_upload_enable`) and TLS, inside `Session::race`.

use std::{io, os::fd::OwnedFd, sync::Arc, time::Instant};

use tokio::{io::AsyncWriteExt, time::timeout};
use tracing::{debug, info, warn};

use crate::{
    data::{self, RecvError},
    fs::{self, Create, FsError, VPath},
    policy::Op,
    reply::{self, Reply, code},
    session::{Raced, Session, transfer::Sent},
    tls::DataStream,
    worker::Fs,
    xferlog::Direction,
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
impl Session {
    pub(crate) async fn cmd_store(&mut self, arg: &[u8], kind: StoreKind) -> io::Result<()> {
        let offset = std::mem::take(&mut self.nav.rest);
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
            mode: cfg.file_open_mode & !self.nav.umask,
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
                info!(session = self.id, peer = %self.names.peer, file = %shown, reason = %e, "upload refused");
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
        self.chan.progress = std::sync::Arc::new(data::Progress::new(self.shared.metrics.bytes_counter("upload")));
        let progress = std::sync::Arc::clone(&self.chan.progress);
        let stall = self.stall();
        let flow = self.start_flow();
        let mut pacer = crate::rates::Pacer::receiving(Arc::clone(&flow.flow));
        let ascii = !self.chan.binary && cfg.ascii_upload_enable;
        let started = Instant::now();
        let write_off = up.plan.write_offset;
        let fd = up.plan.fd.try_clone()?;
        let shared = Arc::clone(&self.shared);
        let recv = async move {
            let r = match &mut data {
                DataStream::Plain(tcp) if !ascii => {
                    data::receive_file(tcp, &fd, write_off, stall, &progress, &mut pacer, &shared.uploads).await
                }
                _ => {
                    data::copy::recv_copy(&mut data, &fd, write_off, stall, &progress, &mut pacer, ascii, strict_eof)
                        .await
                }
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
            Err(_) => (self.chan.progress.get(), false),
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
                info!(session = self.id, peer = %self.names.peer, user = %self.user().name, file = %shown, bytes = n, secs = started.elapsed().as_secs_f64(), paced, "upload complete");
                self.send(reply::TRANSFER_OK).await
            }
            Err(e) => {
                info!(session = self.id, peer = %self.names.peer, file = %shown, error = ?e, "upload failed");
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

/// An upload decided before the data connection.
struct Upload {
    plan: UploadPlan,
    /// The name as the client gave it (STOU: plus its unique suffix).
    shown: String,
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
        // On disk before it is published: a crash cannot leave an empty or
        // partial file under the name, where the old one was or where a
        // client was told 226 (an atomic upload's whole promise). A file
        // written in place is not synced, as vsftpd syncs nothing. The cost
        // is the disk's speed for big files: a 1 GiB atomic upload to disk
        // runs at about half the speed of one written in place here.
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
