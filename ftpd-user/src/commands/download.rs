//! Downloads: RETR, and HASH/XSHA256 (the digest of a file RETR would send).
//!
//! RETR uses `sendfile`, unless TYPE A conversion is on
//! (`ascii_download_enable`), the data connection is encrypted, or
//! `use_sendfile=NO`. Both run inside `Session::race`, so the control
//! connection is answered meanwhile.

use std::{io, os::fd::OwnedFd, sync::Arc, time::Instant};

use tracing::{info, warn};

use crate::{
    command::HashAlg,
    data::{self, DataError},
    reply::{self, Reply, code},
    session::{Raced, Session, transfer::Sent},
    tls::DataStream,
    xferlog::Direction,
};

impl Session {
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
        let Some(_slot) = shared.hashing.take(self.names.peer.ip()) else {
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
        let offset = std::mem::take(&mut self.nav.rest);
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
            ascii: !self.chan.binary && self.cfg().ascii_download_enable,
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
        self.chan.progress = std::sync::Arc::new(data::Progress::new(self.shared.metrics.bytes_counter("download")));
        let progress = std::sync::Arc::clone(&self.chan.progress);
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
                _ => {
                    data::copy::send_buffered(
                        &mut data,
                        file,
                        offset,
                        stall,
                        &progress,
                        ascii,
                        &mut pacer,
                        strict_shutdown,
                    )
                    .await
                }
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
            _ => (self.chan.progress.get(), false),
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
                info!(session = self.id, peer = %self.names.peer, user = %self.user().name, file = %name, bytes = sent, secs = started.elapsed().as_secs_f64(), paced, "download complete");
                self.send(reply::TRANSFER_OK).await
            }
            Raced::Done(Err(DataError::File(e))) => {
                warn!(session = self.id, file = %name, error = %e, "reading the file failed");
                self.send(reply::FILE_READ_FAILED).await
            }
            Raced::Done(Err(DataError::Stalled)) => {
                info!(session = self.id, peer = %self.names.peer, file = %name, "data connection stalled");
                self.send(reply::DATA_TIMEOUT).await
            }
            Raced::Done(Err(e)) => {
                info!(session = self.id, peer = %self.names.peer, file = %name, error = ?e, "download aborted");
                self.send(reply::NETWORK_WRITE_FAILED).await
            }
            Raced::Aborted => self.abort_replies().await,
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
