//! FTPS commands (RFC 4217): AUTH, PBSZ, PROT, CCC, and the TLS handshakes
//! of the control connection and of each `PROT P` data connection.

use std::{io, time::Duration};

use rustls::HandshakeKind;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tracing::{debug, info, warn};

use crate::{
    command::{AuthKind, Prot},
    control::LineReader,
    metrics::Metrics,
    reply::{self, code},
    session::{HANDSHAKE_TIMEOUT, Next, Raced, Session},
    tls::{self, CtlRead, CtlWrite, DataStream},
};

/// vsftpd's reply to a data connection whose TLS handshake failed, or that
/// did not resume the control connection's session, with `require_ssl_reuse`.
pub const REUSE_REQUIRED: &str =
    "SSL connection failed; session reuse required: see require_ssl_reuse option in vsftpd.conf man page";

impl Session {
    /// Whether the control connection is encrypted now.
    pub(crate) fn control_secure(&self) -> bool {
        matches!(self.w, CtlWrite::Tls(_))
    }

    pub(crate) async fn cmd_auth(&mut self, kind: Option<AuthKind>) -> io::Result<Next> {
        let Some(kind) = kind else {
            self.send(reply::BAD_AUTH_TYPE).await?;
            return Ok(Next::Continue);
        };
        self.send(reply::AUTH_OK).await?;
        if !self.start_tls().await {
            return Ok(Next::Quit);
        }
        // vsftpd: the old `AUTH SSL` (and `TLS-P`) also protects data.
        if kind == AuthKind::Ssl {
            self.prot_private = true;
        }
        Ok(Next::Continue)
    }

    /// Runs the server side of the control connection's handshake. `false`:
    /// it failed and the session must end (nothing readable can be sent).
    pub(crate) async fn start_tls(&mut self) -> bool {
        let Some(server) = self.settings.tls.clone() else { return false };
        let hs = match server.control_handshake(tls::CONTROL_TICKETS) {
            Ok(h) => h,
            Err(e) => {
                warn!(session = self.id, error = %e, "TLS: no random stamp for the session; connection closed");
                return false;
            }
        };
        let r = std::mem::replace(&mut self.r, CtlRead::Gone);
        let w = std::mem::replace(&mut self.w, CtlWrite::Gone);
        let (CtlRead::Plain(r), CtlWrite::Plain(w)) = (r, w) else { return false };
        let Ok(tcp) = r.reunite(w) else { return false };
        // Anything the client sent after AUTH in the clear is dropped, never
        // run as if it had come over TLS (the STARTTLS injection attack).
        self.reader = LineReader::default();
        let err = match timeout(HANDSHAKE_TIMEOUT, hs.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let conn = stream.get_ref().1;
                let st = server.session(&hs, conn, self.peer.ip()).await;
                let version = conn.protocol_version();
                let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
                let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
                info!(session = self.id, peer = %self.peer, ?version, ?suite, resumed, "control connection encrypted");
                let (r, w) = tokio::io::split(stream);
                self.r = CtlRead::tls(r);
                self.w = CtlWrite::Tls(w);
                self.tls = Some(st);
                return true;
            }
            Ok(Err(e)) => e,
            Err(_) => io::Error::from(io::ErrorKind::TimedOut),
        };
        let reason = tls::failure_reason(&err);
        Metrics::inc(&self.shared.metrics.tls_handshake_failures, "reason", reason);
        info!(session = self.id, peer = %self.peer, error = %err, reason, "control TLS handshake failed");
        false
    }

    pub(crate) async fn cmd_pbsz(&mut self) -> io::Result<()> {
        if !self.control_secure() {
            return self.send(reply::PBSZ_NEEDS_TLS).await;
        }
        self.send(reply::PBSZ_OK).await
    }

    pub(crate) async fn cmd_prot(&mut self, level: Prot) -> io::Result<()> {
        if !self.control_secure() {
            return self.send(reply::PROT_NEEDS_TLS).await;
        }
        match level {
            Prot::Clear => {
                self.prot_private = false;
                self.send(reply::PROT_CLEAR).await
            }
            Prot::Private => {
                self.prot_private = true;
                self.send(reply::PROT_PRIVATE).await
            }
            Prot::Unsupported => self.send(reply::PROT_UNSUPPORTED).await,
            Prot::Unknown => self.send(reply::PROT_UNKNOWN).await,
        }
    }

    /// RFC 4217 CCC: the control connection goes back to clear text after
    /// login (so forced-encryption logins stay encrypted); data keeps its PROT.
    pub(crate) async fn cmd_ccc(&mut self) -> io::Result<Next> {
        if !self.control_secure() {
            self.send(reply::CCC_NEEDS_TLS).await?;
            return Ok(Next::Continue);
        }
        if !matches!(self.phase, crate::session::Phase::Ready(_)) {
            self.send(reply::CCC_BEFORE_LOGIN).await?;
            return Ok(Next::Continue);
        }
        self.send(reply::CCC_OK).await?;
        let r = std::mem::replace(&mut self.r, CtlRead::Gone);
        let w = std::mem::replace(&mut self.w, CtlWrite::Gone);
        let (CtlRead::Tls { half, .. }, CtlWrite::Tls(w)) = (r, w) else { return Ok(Next::Quit) };
        let mut stream = half.unsplit(w);
        stream.get_mut().1.send_close_notify();
        let closed = async {
            stream.flush().await?;
            // RFC 4217 has the client answer with its own close_notify, but
            // some (curl) go straight on in clear text. The first byte tells
            // which: a TLS record starts with 0x15 (an alert; TLS 1.2) or
            // 0x17 (TLS 1.3 wraps its alerts), a command with a letter. The
            // records are handed to rustls one at a time, read exactly, so
            // clear text that follows in the same segment stays in the socket
            // for the command reader.
            loop {
                let mut first = [0u8; 1];
                if stream.get_ref().0.peek(&mut first).await? == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                if !matches!(first[0], 0x15 | 0x17) {
                    return Ok(());
                }
                let mut header = [0u8; 5];
                stream.get_mut().0.read_exact(&mut header).await?;
                let mut record = vec![0u8; 5 + usize::from(u16::from_be_bytes([header[3], header[4]]))];
                record[..5].copy_from_slice(&header);
                stream.get_mut().0.read_exact(&mut record[5..]).await?;
                let conn = stream.get_mut().1;
                conn.read_tls(&mut &record[..])?;
                let state = conn.process_new_packets().map_err(io::Error::other)?;
                if state.peer_has_closed() {
                    return Ok::<(), io::Error>(());
                }
            }
        };
        if let Err(e) = timeout(HANDSHAKE_TIMEOUT, closed)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))
            .and_then(|r| r)
        {
            debug!(session = self.id, error = %e, "CCC: no close_notify from the client");
            return Ok(Next::Quit);
        }
        let (tcp, _) = stream.into_inner();
        let (r, w) = tcp.into_split();
        self.r = CtlRead::Plain(r);
        self.w = CtlWrite::Plain(w);
        self.reader = LineReader::default();
        info!(session = self.id, peer = %self.peer, "control connection back in clear text (CCC)");
        Ok(Next::Continue)
    }

    /// Puts a data connection under TLS when `PROT P` is in force, after the
    /// 150 reply (clients start the handshake once they see it); `download`:
    /// the server sends (see [`tls::SessionTls::data_handshake`]). With
    /// `require_ssl_reuse`, the handshake must resume a session of this
    /// control connection's client (its [`tls::Lineage`]). Replies and
    /// returns `None` on failure.
    pub(crate) async fn secure_data(&mut self, tcp: TcpStream, download: bool) -> io::Result<Option<DataStream>> {
        self.data_tls = false;
        let Some(st) = self.tls.clone().filter(|_| self.prot_private) else {
            return Ok(Some(DataStream::Plain(tcp)));
        };
        let reuse = self.cfg().require_ssl_reuse;
        let hs = match st.data_handshake(download) {
            Ok(hs) => hs,
            Err(e) => {
                warn!(session = self.id, error = %e, "TLS: no random stamp for the data connection");
                self.send(reply::DATA_TLS_FAILED).await?;
                return Ok(None);
            }
        };
        let acceptor = hs.acceptor.clone();
        // A data connection that never finishes its handshake is a stalled
        // transfer: data_connection_timeout applies, if it is shorter.
        let wait = match self.shared.cfg().data_connection_timeout {
            0 => HANDSHAKE_TIMEOUT,
            s => HANDSHAKE_TIMEOUT.min(Duration::from_secs(u64::from(s))),
        };
        let handshake = async move { timeout(wait, acceptor.accept(tcp)).await };
        let reason = match self.race(handshake).await? {
            Raced::Aborted => {
                self.send(reply::NETWORK_READ_FAILED).await?;
                self.send(reply::ABOR_OK).await?;
                return Ok(None);
            }
            Raced::Done(Err(_)) => "timeout",
            Raced::Done(Ok(Err(e))) => {
                debug!(session = self.id, error = %e, "data TLS handshake failed");
                tls::failure_reason(&e)
            }
            Raced::Done(Ok(Ok(s))) => {
                let conn = s.get_ref().1;
                let same_client = st.admit(&hs, conn).await;
                // Any other handshake (require_ssl_reuse=NO) must come from
                // the holder of the control connection's client certificate.
                let same_cert = match &st.peer_cert {
                    None => true,
                    Some(want) => conn.peer_certificates().and_then(<[_]>::first).is_some_and(|c| c.as_ref() == want),
                };
                if !same_client && !same_cert {
                    info!(session = self.id, peer = %self.peer, "data connection presented another client certificate; refused");
                    Metrics::inc(&self.shared.metrics.tls_handshake_failures, "reason", "different_certificate");
                    self.send(reply::DATA_TLS_FAILED).await?;
                    return Ok(None);
                }
                if same_client || !reuse {
                    self.data_tls = true;
                    return Ok(Some(DataStream::Tls(Box::new(s))));
                }
                let how = if hs.was_resumed(conn) {
                    "resumed a session not known to be this client's (another client's, or one forgotten)"
                } else {
                    "did not resume"
                };
                info!(session = self.id, peer = %self.peer, how, "data connection is not of this session's TLS client; refused");
                "no_session_reuse"
            }
        };
        Metrics::inc(&self.shared.metrics.tls_handshake_failures, "reason", reason);
        let text = if reuse { REUSE_REQUIRED } else { "SSL connection failed" };
        self.reply(code::BAD_PROTOCOL, text).await?;
        Ok(None)
    }
}
