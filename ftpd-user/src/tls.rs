//! FTPS (RFC 4217 explicit, and implicit): the TLS configuration built from
//! vsftpd's options, the per-control-connection session store that makes
//! `require_ssl_reuse` mean "resumes *this* session", and the stream types
//! that carry control and data over TLS or in the clear.
//!
//! The certificate and key are read by the process that starts ftpd (root,
//! before the privilege split); the unprivileged front inherits the parsed
//! key in memory and never opens the key file (docs/ARCHITECTURE.md).

use std::{
    collections::VecDeque,
    io,
    os::fd::{AsFd, BorrowedFd},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use rustls::{
    DistinguishedName, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    server::{
        StoresServerSessions, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf, ReadHalf, WriteHalf},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};
use tokio_rustls::server::TlsStream;

use crate::{config::Config, control::ControlRead};

/// The server's TLS setup, shared by every session.
#[derive(Debug)]
pub struct Tls {
    /// Certificate, key, versions, suites and client-certificate policy. Each
    /// control connection gets a copy with its own session store.
    base: ServerConfig,
    /// Whether the kernel offers TLS offload (see [`ktls_available`]).
    pub ktls: bool,
}

/// One FTP session's TLS state: its configuration, whose session store only
/// ever holds what this control connection and its data connections issued.
#[derive(Clone, Debug)]
pub struct SessionTls {
    /// Used for the control connection and all its data connections.
    pub config: Arc<ServerConfig>,
    /// This session's resumption data.
    pub store: Arc<SessionStore>,
    /// The client certificate the control connection presented, if any: a
    /// data connection that does not resume must present the same one
    /// (vsftpd's "DIFFERENT cert on data channel" check).
    pub peer_cert: Arc<std::sync::OnceLock<Vec<u8>>>,
}

/// The bytes of the files FTPS reads: read as root (the key may be `0600
/// root`), then built into a [`Tls`] by whichever process serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsFiles {
    /// `rsa_cert_file`.
    #[serde(with = "serde_bytes")]
    pub cert: Vec<u8>,
    /// `rsa_private_key_file`, or `rsa_cert_file` when that is empty.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// `ca_certs_file`, when `require_cert` and `validate_cert` need it.
    #[serde(with = "serde_bytes")]
    pub ca: Vec<u8>,
}

impl TlsFiles {
    /// Reads the files `cfg` names; `None` when `ssl_enable=NO`.
    pub fn read(cfg: &Config) -> Result<Option<Self>, String> {
        if !cfg.ssl_enable {
            return Ok(None);
        }
        let cert = read("rsa_cert_file", &cfg.rsa_cert_file)?;
        let (key_option, key_path) = key_file(cfg);
        let key = if key_path == cfg.rsa_cert_file { cert.clone() } else { read(key_option, key_path)? };
        let ca = if cfg.require_cert && cfg.validate_cert && !cfg.ca_certs_file.is_empty() {
            read("ca_certs_file", &cfg.ca_certs_file)?
        } else {
            Vec::new()
        };
        Ok(Some(Self { cert, key, ca }))
    }
}

/// Where the key is: vsftpd reads it from the certificate file when no key file is named.
fn key_file(cfg: &Config) -> (&'static str, &str) {
    if cfg.rsa_private_key_file.is_empty() {
        ("rsa_cert_file", cfg.rsa_cert_file.as_str())
    } else {
        ("rsa_private_key_file", cfg.rsa_private_key_file.as_str())
    }
}

impl Tls {
    /// Reads the certificate and key and builds the configuration, or says
    /// which option is wrong and why. `None` when `ssl_enable=NO`.
    pub fn load(cfg: &Config) -> Result<Option<Self>, String> {
        match TlsFiles::read(cfg)? {
            Some(files) => Self::build(cfg, &files).map(Some),
            None => Ok(None),
        }
    }

    /// Builds the configuration from files already read (a reload: the
    /// master reads them as root and hands the bytes to the front).
    pub fn build(cfg: &Config, files: &TlsFiles) -> Result<Self, String> {
        let provider = Arc::new(crate::ciphers::provider(&cfg.ssl_ciphers)?);
        let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
        if cfg.ssl_tlsv1_3 {
            versions.push(&rustls::version::TLS13);
        }
        if cfg.ssl_tlsv1_2 {
            versions.push(&rustls::version::TLS12);
        }
        let certs = CertificateDer::pem_slice_iter(&files.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("rsa_cert_file={}: not a PEM certificate file ({e})", cfg.rsa_cert_file))?;
        if certs.is_empty() {
            return Err(format!("rsa_cert_file={}: no CERTIFICATE block in the file", cfg.rsa_cert_file));
        }
        let (key_option, key_path) = key_file(cfg);
        let key = PrivateKeyDer::from_pem_slice(&files.key)
            .map_err(|e| format!("{key_option}={key_path}: no usable PEM private key ({e})"))?;
        let builder =
            ServerConfig::builder_with_provider(Arc::clone(&provider)).with_protocol_versions(&versions).map_err(
                |e| format!("ssl_ciphers={:?}: no cipher suite for the enabled TLS versions ({e})", cfg.ssl_ciphers),
            )?;
        let builder = builder.with_client_cert_verifier(client_verifier(cfg, &files.ca, &provider)?);
        let mut base = builder.with_single_cert(certs, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                format!(
                    "{key_option}={key_path}: the private key does not match the certificate in rsa_cert_file={}",
                    cfg.rsa_cert_file
                )
            }
            e => format!("{key_option}={key_path} / rsa_cert_file={}: {e}", cfg.rsa_cert_file),
        })?;
        // Each data connection gets fresh tickets too: clients that use a
        // TLS 1.3 ticket once never run out over many transfers.
        base.send_tls13_tickets = 2;
        base.max_early_data_size = 0;
        Ok(Self { base, ktls: ktls_available() })
    }

    /// A configuration for a new control connection, with an empty store of
    /// its own (TLS 1.2 session ids) and a ticket key of its own (TLS 1.2 and
    /// 1.3 tickets): a data connection can resume this control connection's
    /// session by either means, and no other's, since no other connection
    /// can read these tickets.
    pub fn for_session(&self) -> SessionTls {
        let store = Arc::new(SessionStore::default());
        let mut config = self.base.clone();
        config.session_storage = Arc::clone(&store) as Arc<dyn StoresServerSessions>;
        match rustls::crypto::ring::Ticketer::new() {
            Ok(t) => config.ticketer = t,
            // Session ids still work; only ticket resumption is lost.
            Err(e) => tracing::warn!(error = %e, "TLS: no ticket key for this session; resumption by session id only"),
        }
        SessionTls { config: Arc::new(config), store, peer_cert: Arc::default() }
    }
}

fn read(option: &str, path: &str) -> Result<Vec<u8>, String> {
    if path.is_empty() {
        return Err(format!("{option} is empty; ssl_enable=YES needs a certificate"));
    }
    std::fs::read(path).map_err(|e| format!("{option}={path}: cannot read ({e})"))
}

/// `require_cert`, `validate_cert`, `ca_certs_file`, as vsftpd reads them:
/// a client certificate is asked for only when one is required, checked
/// against `ca_certs_file` only with `validate_cert`.
fn client_verifier(
    cfg: &Config,
    ca: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    if !cfg.require_cert {
        return Ok(WebPkiClientVerifier::no_client_auth());
    }
    if !cfg.validate_cert {
        return Ok(Arc::new(AnyClientCert(Arc::clone(provider))));
    }
    if cfg.ca_certs_file.is_empty() {
        return Err(
            "validate_cert=YES needs ca_certs_file=FILE (the CAs client certificates are checked against)".into()
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        let c = c.map_err(|e| format!("ca_certs_file={}: not a PEM file ({e})", cfg.ca_certs_file))?;
        roots.add(c).map_err(|e| format!("ca_certs_file={}: {e}", cfg.ca_certs_file))?;
    }
    if roots.is_empty() {
        return Err(format!("ca_certs_file={}: no certificate in the file", cfg.ca_certs_file));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| format!("ca_certs_file={}: {e}", cfg.ca_certs_file))
}

/// `require_cert=YES validate_cert=NO`: a certificate must be presented and
/// its key must sign the handshake, but who issued it is not checked
/// (vsftpd's meaning).
#[derive(Debug)]
struct AnyClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Most resumption entries one FTP session keeps besides its control
/// connection's own (each data connection adds two TLS 1.3 tickets).
const STORE_MAX: usize = 32;

/// The resumption store of one control connection.
///
/// Because every FTP session has its own, a data connection can resume only
/// a session that this control connection (or one of its data connections)
/// was issued: a ticket from another FTP session is unknown here, the
/// handshake is a full one, and `require_ssl_reuse` refuses it.
///
/// `take` does not remove: clients such as Python's `ssl` offer the control
/// connection's ticket again on every data connection, and a single-use
/// ticket would fail their second transfer. Reuse is confined to one FTP
/// session and 0-RTT is off, so a replayed ticket buys an attacker nothing
/// (it still needs the resumption secret to finish the handshake).
#[derive(Debug, Default)]
pub struct SessionStore {
    inner: Mutex<StoreInner>,
}

#[derive(Debug, Default)]
struct StoreInner {
    /// Oldest first; the first `pinned` came from the control handshake and
    /// are never evicted.
    entries: VecDeque<(Vec<u8>, Vec<u8>)>,
    pinned: usize,
}

impl SessionStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, StoreInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps what the control handshake issued for as long as the session lasts.
    pub fn pin(&self) {
        let mut s = self.lock();
        s.pinned = s.entries.len();
    }
}

impl StoresServerSessions for SessionStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut s = self.lock();
        if let Some(e) = s.entries.iter_mut().find(|e| e.0 == key) {
            e.1 = value;
            return true;
        }
        if s.entries.len() >= STORE_MAX + s.pinned {
            let oldest = s.pinned;
            s.entries.remove(oldest);
        }
        s.entries.push_back((key, value));
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().entries.iter().find(|e| e.0 == key).map(|e| e.1.clone())
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// Whether this kernel can take over TLS record encryption (kTLS): the
/// `tls` upper-layer protocol must be registered (CONFIG_TLS). Checked by
/// attaching it to a connected loopback socket, which also loads the module
/// if it exists; a kernel without it says ENOENT.
pub fn ktls_available() -> bool {
    let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else { return false };
    let Ok(addr) = listener.local_addr() else { return false };
    let Ok(sock) = std::net::TcpStream::connect(addr) else { return false };
    let name = b"tls";
    // SAFETY: setsockopt with a valid fd, a pointer to 3 bytes and their length.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Why a TLS handshake failed, as the metrics label it.
pub fn failure_reason(e: &io::Error) -> &'static str {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::AlertReceived(_) => "alert_received",
            rustls::Error::PeerIncompatible(_) => "incompatible",
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => "client_certificate",
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => "protocol",
            _ => "other",
        };
    }
    match e.kind() {
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => "closed",
        io::ErrorKind::InvalidData => "protocol",
        _ => "io",
    }
}

/// A data connection, in the clear or under TLS.
pub enum DataStream {
    /// `PROT C`: sendfile and splice work on it directly.
    Plain(TcpStream),
    /// `PROT P`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl DataStream {
    /// The TCP socket underneath (for pacing and socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsFd for DataStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tcp().as_fd()
    }
}

impl AsyncRead for DataStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DataStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            // Sends close_notify, then the TCP FIN.
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The reading side of the control connection.
pub enum CtlRead {
    /// In the clear (before AUTH, or after CCC).
    Plain(OwnedReadHalf),
    /// Under TLS; `ready` holds plaintext read while waiting for input.
    Tls { half: ReadHalf<TlsStream<TcpStream>>, ready: Vec<u8>, eof: bool },
    /// Between taking the halves apart and putting them back together.
    Gone,
}

/// The writing side of the control connection.
pub enum CtlWrite {
    /// In the clear.
    Plain(OwnedWriteHalf),
    /// Under TLS.
    Tls(WriteHalf<TlsStream<TcpStream>>),
    /// Between taking the halves apart and putting them back together.
    Gone,
}

impl CtlRead {
    /// A TLS control connection's reading half.
    pub fn tls(half: ReadHalf<TlsStream<TcpStream>>) -> Self {
        Self::Tls { half, ready: Vec::new(), eof: false }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "control connection is being switched")
}

impl ControlRead for CtlRead {
    fn read_queued(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(r) => r.read_queued(buf),
            Self::Tls { half, ready, eof } => {
                if !ready.is_empty() {
                    let n = ready.len().min(buf.len());
                    buf[..n].copy_from_slice(&ready[..n]);
                    ready.drain(..n);
                    if ready.is_empty() {
                        *ready = Vec::new();
                    }
                    return Ok(n);
                }
                if *eof {
                    return Ok(0);
                }
                // Whatever rustls has decrypted already, without waiting.
                let mut cx = Context::from_waker(Waker::noop());
                let mut rb = ReadBuf::new(buf);
                match Pin::new(half).poll_read(&mut cx, &mut rb) {
                    Poll::Ready(Ok(())) => Ok(rb.filled().len()),
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
            Self::Gone => Err(gone()),
        }
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(r) => r.wait_readable().await,
            Self::Tls { half, ready, eof } => {
                // TLS needs a read to know whether plaintext arrived; what it
                // returns waits in `ready` for `read_queued`.
                let mut chunk = [0u8; 1024];
                let n = half.read(&mut chunk).await?;
                if n == 0 {
                    *eof = true;
                }
                ready.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Self::Gone => Err(gone()),
        }
    }
}

impl AsyncRead for CtlRead {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(r) => Pin::new(r).poll_read(cx, buf),
            Self::Tls { half, ready, .. } => {
                if !ready.is_empty() {
                    let n = ready.len().min(buf.remaining());
                    buf.put_slice(&ready[..n]);
                    ready.drain(..n);
                    return Poll::Ready(Ok(()));
                }
                Pin::new(half).poll_read(cx, buf)
            }
            Self::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for CtlWrite {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(w) => Pin::new(w).poll_write(cx, buf),
            Self::Tls(w) => Pin::new(w).poll_write(cx, buf),
            Self::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(w) => Pin::new(w).poll_flush(cx),
            Self::Tls(w) => Pin::new(w).poll_flush(cx),
            Self::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(w) => Pin::new(w).poll_shutdown(cx),
            Self::Tls(w) => Pin::new(w).poll_shutdown(cx),
            Self::Gone => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_keeps_pinned_entries_and_reuses_tickets() {
        let s = SessionStore::default();
        s.put(b"control".to_vec(), b"v".to_vec());
        s.pin();
        for i in 0..200u32 {
            s.put(i.to_be_bytes().to_vec(), b"d".to_vec());
        }
        assert_eq!(s.take(b"control").as_deref(), Some(&b"v"[..]));
        assert_eq!(s.take(b"control").as_deref(), Some(&b"v"[..]));
        assert!(s.get(&0u32.to_be_bytes()).is_none());
        assert!(s.get(&199u32.to_be_bytes()).is_some());
        assert!(s.lock().entries.len() <= STORE_MAX + 1);
    }
}
