//! FTPS commands (RFC 4217): AUTH, PBSZ, PROT, CCC. The handshakes
//! themselves are in `session::tls`: implicit FTPS and every data command
//! start them too.

use std::io;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::timeout,
};
use tracing::{debug, info};

use crate::{
    command::{AuthKind, Prot},
    control::LineReader,
    reply,
    session::{HANDSHAKE_TIMEOUT, Next, Session},
    tls::{CtlRead, CtlWrite},
};

impl Session {
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
            self.chan.prot_private = true;
        }
        Ok(Next::Continue)
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
                self.chan.prot_private = false;
                self.send(reply::PROT_CLEAR).await
            }
            Prot::Private => {
                self.chan.prot_private = true;
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
        let r = std::mem::replace(&mut self.ctl.r, CtlRead::Gone);
        let w = std::mem::replace(&mut self.ctl.w, CtlWrite::Gone);
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
        self.ctl.r = CtlRead::Plain(r);
        self.ctl.w = CtlWrite::Plain(w);
        self.ctl.reader = LineReader::default();
        info!(session = self.id, peer = %self.names.peer, "control connection back in clear text (CCC)");
        Ok(Next::Continue)
    }
}
