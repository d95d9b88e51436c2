//! The TLS handshakes that more than one handler starts: the control
//! connection's (AUTH TLS, or implicit FTPS at connect) and each `PROT P`
//! data connection's (every transfer and listing).

use std::io;

use rustls::HandshakeKind;
use tokio::{net::TcpStream, time::timeout};
use tracing::{debug, info, warn};

use crate::{
    control::LineReader,
    metrics::Metrics,
    reply::{self, code},
    session::{HANDSHAKE_TIMEOUT, Raced, Session},
    tls::{self, CtlRead, CtlWrite, DataStream},
};

/// vsftpd's reply to a data connection whose TLS handshake failed, or that
/// did not resume the control connection's session, with `require_ssl_reuse`.
pub const REUSE_REQUIRED: &str =
    "SSL connection failed; session reuse required: see require_ssl_reuse option in vsftpd.conf man page";

impl Session {
    /// Whether the control connection is encrypted now.
    pub(crate) fn control_secure(&self) -> bool {
        matches!(self.ctl.w, CtlWrite::Tls(_))
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
        let r = std::mem::replace(&mut self.ctl.r, CtlRead::Gone);
        let w = std::mem::replace(&mut self.ctl.w, CtlWrite::Gone);
        let (CtlRead::Plain(r), CtlWrite::Plain(w)) = (r, w) else { return false };
        let Ok(tcp) = r.reunite(w) else { return false };
        // Anything the client sent after AUTH in the clear is dropped, never
        // run as if it had come over TLS (the STARTTLS injection attack).
        self.ctl.reader = LineReader::default();
        let err = match timeout(HANDSHAKE_TIMEOUT, hs.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let conn = stream.get_ref().1;
                let st = server.session(&hs, conn, self.names.peer.ip()).await;
                let version = conn.protocol_version();
                let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
                let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
                info!(session = self.id, peer = %self.names.peer, ?version, ?suite, resumed, "control connection encrypted");
                let (r, w) = tokio::io::split(stream);
                self.ctl.r = CtlRead::tls(r);
                self.ctl.w = CtlWrite::Tls(w);
                self.ctl.tls = Some(st);
                return true;
            }
            Ok(Err(e)) => e,
            Err(_) => io::Error::from(io::ErrorKind::TimedOut),
        };
        let reason = tls::failure_reason(&err);
        Metrics::inc(&self.shared.metrics.tls_handshake_failures, "reason", reason);
        info!(session = self.id, peer = %self.names.peer, error = %err, reason, "control TLS handshake failed");
        false
    }

    /// Puts a data connection under TLS when `PROT P` is in force, after the
    /// 150 reply (clients start the handshake once they see it); `download`:
    /// the server sends (see [`tls::SessionTls::data_handshake`]). With
    /// `require_ssl_reuse`, the handshake must resume a session of this
    /// control connection's client (its [`tls::Lineage`]). Replies and
    /// returns `None` on failure.
    pub(crate) async fn secure_data(&mut self, tcp: TcpStream, download: bool) -> io::Result<Option<DataStream>> {
        self.chan.data_tls = false;
        let Some(st) = self.ctl.tls.clone().filter(|_| self.chan.prot_private) else {
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
        let wait = HANDSHAKE_TIMEOUT.min(self.stall());
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
                    info!(session = self.id, peer = %self.names.peer, "data connection presented another client certificate; refused");
                    Metrics::inc(&self.shared.metrics.tls_handshake_failures, "reason", "different_certificate");
                    self.send(reply::DATA_TLS_FAILED).await?;
                    return Ok(None);
                }
                if same_client || !reuse {
                    self.chan.data_tls = true;
                    return Ok(Some(DataStream::Tls(Box::new(s))));
                }
                let how = if hs.was_resumed(conn) {
                    "resumed a session not known to be this client's (another client's, or one forgotten)"
                } else {
                    "did not resume"
                };
                info!(session = self.id, peer = %self.names.peer, how, "data connection is not of this session's TLS client; refused");
                "no_session_reuse"
            }
        };
        Metrics::inc(&self.shared.metrics.tls_handshake_failures, "reason", reason);
        let text = if reuse { REUSE_REQUIRED } else { "SSL connection failed" };
        self.reply(code::BAD_PROTOCOL, text).await?;
        Ok(None)
    }
}
