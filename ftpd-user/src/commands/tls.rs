//! FTPS commands (RFC 4217): AUTH, PBSZ, PROT, CCC, and the TLS handshakes
//! of the control connection and of each `PROT P` data connection.

use std::{io, sync::Arc, time::Duration};

use rustls::HandshakeKind;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use crate::{
    control::LineReader,
    metrics::Metrics,
    session::{HANDSHAKE_TIMEOUT, Next, Raced, Session},
    tls::{self, CtlRead, CtlWrite, DataStream},
};

/// vsftpd's reply to a data connection whose TLS handshake failed, or that
/// did not resume the control connection's session, with `require_ssl_reuse`.
pub const REUSE_REQUIRED: &str =
    "SSL connection failed; session reuse required: see require_ssl_reuse option in vsftpd.conf man page";

/// What an accepted `AUTH` argument asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `TLS`, `TLS-C`: the control connection only.
    ControlOnly,
    /// vsftpd: the old `SSL` (and `TLS-P`) also protects data, as `PROT P` would.
    ProtectData,
}

/// Reads an `AUTH` argument (RFC 4217 section 4), in any case; `None`: 504.
pub fn parse_auth(arg: &[u8]) -> Option<Auth> {
    match arg.to_ascii_uppercase().as_slice() {
        b"TLS" | b"TLS-C" => Some(Auth::ControlOnly),
        b"SSL" | b"TLS-P" => Some(Auth::ProtectData),
        _ => None,
    }
}

/// A `PROT` level (RFC 4217 section 9; RFC 2228's letters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// `C`: data in the clear.
    Clear,
    /// `P`: data over TLS.
    Private,
    /// `S`, `E`: RFC 2228 levels TLS does not have (536).
    Unsupported,
    /// Anything else (504).
    Unknown,
}

/// Reads a `PROT` argument, in any case.
pub fn parse_prot(arg: &[u8]) -> Prot {
    match arg.to_ascii_uppercase().as_slice() {
        b"C" => Prot::Clear,
        b"P" => Prot::Private,
        b"S" | b"E" => Prot::Unsupported,
        _ => Prot::Unknown,
    }
}

impl Session {
    /// Whether the control connection is encrypted now.
    pub(crate) fn control_secure(&self) -> bool {
        matches!(self.w, CtlWrite::Tls(_))
    }

    pub(crate) async fn cmd_auth(&mut self, arg: &[u8]) -> io::Result<Next> {
        let Some(kind) = parse_auth(arg) else {
            self.reply(504, "Unknown AUTH type.").await?;
            return Ok(Next::Continue);
        };
        self.reply(234, "Proceed with negotiation.").await?;
        if !self.start_tls().await {
            return Ok(Next::Quit);
        }
        if kind == Auth::ProtectData {
            self.prot_private = true;
        }
        Ok(Next::Continue)
    }

    /// Runs the server side of the control connection's handshake. `false`:
    /// it failed and the session must end (nothing readable can be sent).
    pub(crate) async fn start_tls(&mut self) -> bool {
        let Some(server) = &self.shared.tls else { return false };
        let st = server.for_session();
        let r = std::mem::replace(&mut self.r, CtlRead::Gone);
        let w = std::mem::replace(&mut self.w, CtlWrite::Gone);
        let (CtlRead::Plain(r), CtlWrite::Plain(w)) = (r, w) else { return false };
        let Ok(tcp) = r.reunite(w) else { return false };
        // Anything the client sent after AUTH in the clear is dropped, never
        // run as if it had come over TLS (the STARTTLS injection attack).
        self.reader = LineReader::default();
        let acceptor = TlsAcceptor::from(Arc::clone(&st.config));
        let err = match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                // The control handshake's tickets stay resumable for as long
                // as the session lasts, however many transfers follow.
                st.store.pin();
                if let Some(cert) = stream.get_ref().1.peer_certificates().and_then(<[_]>::first) {
                    let _ = st.peer_cert.set(cert.as_ref().to_vec());
                }
                let version = stream.get_ref().1.protocol_version();
                let suite = stream.get_ref().1.negotiated_cipher_suite().map(|s| s.suite());
                info!(session = self.id, peer = %self.peer, ?version, ?suite, "control connection encrypted");
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

    pub(crate) async fn cmd_pbsz(&mut self, _arg: &[u8]) -> io::Result<()> {
        if !self.control_secure() {
            return self.reply(503, "PBSZ needs a secure connection.").await;
        }
        self.reply(200, "PBSZ set to 0.").await
    }

    pub(crate) async fn cmd_prot(&mut self, arg: &[u8]) -> io::Result<()> {
        if !self.control_secure() {
            return self.reply(503, "PROT needs a secure connection.").await;
        }
        match parse_prot(arg) {
            Prot::Clear => {
                self.prot_private = false;
                self.reply(200, "PROT now Clear.").await
            }
            Prot::Private => {
                self.prot_private = true;
                self.reply(200, "PROT now Private.").await
            }
            Prot::Unsupported => self.reply(536, "PROT not supported.").await,
            Prot::Unknown => self.reply(504, "PROT not recognized.").await,
        }
    }

    /// RFC 4217 CCC: the control connection goes back to clear text after
    /// login (so forced-encryption logins stay encrypted); data keeps its PROT.
    pub(crate) async fn cmd_ccc(&mut self) -> io::Result<Next> {
        if !self.control_secure() {
            self.reply(533, "CCC needs a secure connection.").await?;
            return Ok(Next::Continue);
        }
        if !matches!(self.phase, crate::session::Phase::Ready(_)) {
            self.reply(533, "CCC is only allowed after login.").await?;
            return Ok(Next::Continue);
        }
        self.reply(200, "Control connection now in clear text.").await?;
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
    /// 150 reply (clients start the handshake once they see it). With
    /// `require_ssl_reuse`, the handshake must resume this control
    /// connection's session. Replies and returns `None` on failure.
    pub(crate) async fn secure_data(&mut self, tcp: TcpStream) -> io::Result<Option<DataStream>> {
        self.data_tls = false;
        let Some(st) = self.tls.clone().filter(|_| self.prot_private) else {
            return Ok(Some(DataStream::Plain(tcp)));
        };
        let reuse = self.cfg().require_ssl_reuse;
        let acceptor = TlsAcceptor::from(Arc::clone(&st.config));
        // A data connection that never finishes its handshake is a stalled
        // transfer: data_connection_timeout applies, if it is shorter.
        let wait = match self.shared.cfg().data_connection_timeout {
            0 => HANDSHAKE_TIMEOUT,
            s => HANDSHAKE_TIMEOUT.min(Duration::from_secs(u64::from(s))),
        };
        let handshake = async move { timeout(wait, acceptor.accept(tcp)).await };
        let reason = match self.race(handshake).await? {
            Raced::Aborted => {
                self.reply(426, "Failure reading network stream.").await?;
                self.reply(226, "ABOR successful.").await?;
                return Ok(None);
            }
            Raced::Done(Err(_)) => "timeout",
            Raced::Done(Ok(Err(e))) => {
                debug!(session = self.id, error = %e, "data TLS handshake failed");
                tls::failure_reason(&e)
            }
            Raced::Done(Ok(Ok(s))) => {
                let conn = s.get_ref().1;
                let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
                // A full handshake (require_ssl_reuse=NO) must come from the
                // holder of the control connection's client certificate.
                let same_cert = match st.peer_cert.get() {
                    None => true,
                    Some(want) => conn.peer_certificates().and_then(<[_]>::first).is_some_and(|c| c.as_ref() == want),
                };
                if !resumed && !same_cert {
                    info!(session = self.id, peer = %self.peer, "data connection presented another client certificate; refused");
                    Metrics::inc(&self.shared.metrics.tls_handshake_failures, "reason", "different_certificate");
                    self.reply(522, "SSL connection failed").await?;
                    return Ok(None);
                }
                if resumed || !reuse {
                    self.data_tls = true;
                    return Ok(Some(DataStream::Tls(Box::new(s))));
                }
                info!(session = self.id, peer = %self.peer, "data connection did not resume this session's TLS session; refused");
                "no_session_reuse"
            }
        };
        Metrics::inc(&self.shared.metrics.tls_handshake_failures, "reason", reason);
        let text = if reuse { REUSE_REQUIRED } else { "SSL connection failed" };
        self.reply(522, text).await?;
        Ok(None)
    }
}
