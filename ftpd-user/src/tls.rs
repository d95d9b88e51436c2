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
    DistinguishedName, HandshakeKind, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    server::{
        ProducesTickets, StoresServerSessions, WebPkiClientVerifier,
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
    /// Certificate, key, versions, suites and client-certificate policy.
    /// Each handshake gets a copy whose ticket key and session cache are
    /// wrapped to record and stamp [`Lineage`]s.
    base: ServerConfig,
    /// The ticket key every control and data connection of this
    /// configuration shares (rotated by rustls), so that a client may resume
    /// on any of its connections a session any other of them was issued.
    tickets: Arc<dyn ProducesTickets>,
    /// Which full handshake each resumed control connection descends from.
    lineages: Arc<Lineages>,
    /// Whether the kernel offers TLS offload (see [`ktls_available`]).
    pub ktls: bool,
}

/// Names one full TLS handshake: every session resumed from it, directly or
/// through other resumed connections, belongs to the same client.
///
/// This is what `require_ssl_reuse` binds a data connection to. One FTP
/// client may open several control connections (rclone: one per transfer)
/// that resume each other's sessions, from one session cache shared by all
/// its connections; any of their data connections may then present any of
/// those sessions. A client that made a full handshake of its own, even from
/// the same address with the same login, is another lineage: its sessions
/// cannot take over this one's data connections, since resuming needs the
/// secret of the handshake the lineage began with.
pub type Lineage = [u8; 16];

/// Most resumed connections remembered (about 20 MB at 80 bytes an entry
/// with the maps' overhead): one for each resumed control connection and
/// each admitted download's data connection. Past it the oldest are
/// forgotten: a data connection presenting a session issued to such a
/// connection is then refused as foreign (522), never accepted wrongly.
const LINEAGES_MAX: usize = 1 << 18;

/// Most entries one client network (IPv4 /24, IPv6 /48) keeps; past it that
/// network's oldest go first. A client needs only its newest few (its
/// clients keep the latest session, or one per connection), and one network
/// cannot push every other client's entries out: resumed handshakes cost an
/// attacker almost nothing, and need no login.
const LINEAGES_PER_NET: usize = 4096;

/// The client network an entry is counted against.
pub type NetKey = [u8; 16];

/// A client address's [`NetKey`]: IPv4 /24, IPv6 /48.
pub fn net_key(ip: std::net::IpAddr) -> NetKey {
    let (v6, keep) = match crate::net::canonical(ip) {
        std::net::IpAddr::V4(v4) => (v4.to_ipv6_mapped(), 15),
        std::net::IpAddr::V6(v6) => (v6, 6),
    };
    let mut k = v6.octets();
    k[keep..].fill(0);
    k
}

/// The stamp of each resumed connection, and the full handshake its lineage
/// began with.
#[derive(Debug, Default)]
struct Lineages {
    inner: Mutex<LineagesInner>,
}

#[derive(Debug, Default)]
struct LineagesInner {
    root: std::collections::HashMap<Lineage, Lineage>,
    /// Each network's stamps, oldest first.
    by_net: std::collections::HashMap<NetKey, VecDeque<Lineage>>,
    /// Every stamp, oldest first, with the network it counts against
    /// (stamps already forgotten per network are skipped when reached).
    order: VecDeque<(Lineage, NetKey)>,
    /// The stamps of handshakes still running: what they issued may already
    /// be in a client's hands before they are recorded (see
    /// [`SessionTls::admit`]).
    running: std::collections::HashSet<Lineage>,
}

impl LineagesInner {
    /// Forgets the oldest stamp of `net`.
    fn forget_oldest_of(&mut self, net: &NetKey) {
        if let Some(q) = self.by_net.get_mut(net) {
            if let Some(old) = q.pop_front() {
                self.root.remove(&old);
            }
            if q.is_empty() {
                self.by_net.remove(net);
            }
        }
    }
}

impl Lineages {
    fn lock(&self) -> std::sync::MutexGuard<'_, LineagesInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The full handshake `stamp` descends from (itself, if it was one).
    #[cfg(test)]
    fn root(&self, stamp: &Lineage) -> Lineage {
        self.lock().root.get(stamp).copied().unwrap_or(*stamp)
    }

    /// [`Lineages::root`] once the handshake that stamped `parent` has
    /// ended (at most [`ISSUER_WAIT`]).
    ///
    /// A session can be resumed before the handshake that issued it has been
    /// recorded: a TLS 1.2 resumption hands the client its new ticket before
    /// the client's last message, and a fast client with several
    /// connections (rclone) presents it on another one at once. Read too
    /// early, the stamp would stand for itself, a lineage of its own, and
    /// that connection's data connections would then be refused. What a
    /// handshake that ends as a full one issued is never recorded, so
    /// waiting admits nothing that would not have been admitted.
    async fn settled_root(&self, parent: &Lineage) -> Lineage {
        let deadline = std::time::Instant::now() + ISSUER_WAIT;
        loop {
            let (root, running) = self.root_or_running(parent);
            if root != *parent || !running || std::time::Instant::now() >= deadline {
                return root;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Records that the handshake stamped `stamp`, from `net`, resumed the
    /// session stamped `parent`, and returns the lineage both belong to.
    ///
    /// What the handshake issued belongs to the lineage it resumed even when
    /// that is not the lineage of the FTP session it serves (a refused data
    /// connection): a client whose connections share one session cache
    /// (rclone keeps one session per server) presents it next on another
    /// connection, which must lead back to the same full handshake, not to a
    /// stamp that stands for nothing.
    async fn join(&self, parent: &Lineage, stamp: Lineage, net: NetKey) -> Lineage {
        let root = self.settled_root(parent).await;
        self.descend(stamp, root, net);
        root
    }

    /// [`Lineages::root`], and whether the handshake that stamped `stamp` is
    /// still running.
    fn root_or_running(&self, stamp: &Lineage) -> (Lineage, bool) {
        let l = self.lock();
        (l.root.get(stamp).copied().unwrap_or(*stamp), l.running.contains(stamp))
    }

    /// Records that the connection stamping `stamp`, from client network
    /// `net`, resumed a session of `root`.
    fn descend(&self, stamp: Lineage, root: Lineage, net: NetKey) {
        let mut l = self.lock();
        if l.by_net.get(&net).is_some_and(|q| q.len() >= LINEAGES_PER_NET) {
            l.forget_oldest_of(&net);
        }
        while l.root.len() >= LINEAGES_MAX {
            let Some((old, old_net)) = l.order.pop_front() else { break };
            // The oldest overall is also the oldest of its network, if that
            // network has not forgotten it already.
            if l.by_net.get(&old_net).and_then(|q| q.front()) == Some(&old) {
                l.forget_oldest_of(&old_net);
            }
        }
        if l.order.len() > 2 * l.root.len() + 1024 {
            let LineagesInner { root, order, .. } = &mut *l;
            order.retain(|(s, _)| root.contains_key(s));
        }
        l.root.insert(stamp, root);
        l.by_net.entry(net).or_default().push_back(stamp);
        l.order.push_back((stamp, net));
    }
}

/// What one handshake presented and what it stamps on what it issues.
///
/// Every connection stamps what it issues with a new random value, which
/// stands for nothing until the handshake has ended resumed: only then is
/// it recorded as descending from the lineage it resumed. A client that
/// ends up with a full handshake (it presented no session, or one that
/// rustls would not resume) holds sessions that lead nowhere.
#[derive(Debug)]
struct Note {
    /// The stamp put on every ticket and session id this connection issues.
    stamp: Lineage,
    /// The stamp of the last session that was presented and could be read.
    /// When the handshake ends resumed, this is the session it resumed
    /// (rustls tries the offered sessions in turn and stops at the one it
    /// accepts).
    seen: Mutex<Option<Lineage>>,
}

impl Note {
    fn see(&self, stamp: Lineage) {
        *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stamp);
    }

    fn seen(&self) -> Option<Lineage> {
        *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Splits a stamped plaintext into its stamp and the rustls part.
fn unstamp(stamped: &[u8]) -> Option<(Lineage, &[u8])> {
    let (stamp, rest) = stamped.split_first_chunk::<16>()?;
    Some((*stamp, rest))
}

fn stamped(stamp: &Lineage, plain: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(stamp.len() + plain.len());
    v.extend_from_slice(stamp);
    v.extend_from_slice(plain);
    v
}

/// The shared ticket key, with each ticket's lineage stamped inside the
/// encryption (so it cannot be changed or forged by the client).
#[derive(Debug)]
struct StampedTickets {
    inner: Arc<dyn ProducesTickets>,
    note: Arc<Note>,
}

impl ProducesTickets for StampedTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(&stamped(&self.note.stamp, plain))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let plain = self.inner.decrypt(cipher)?;
        let (stamp, rest) = unstamp(&plain)?;
        self.note.see(stamp);
        Some(rest.to_vec())
    }
}

/// One FTP session's TLS 1.2 sessions by id, with each entry's lineage
/// stamped. Only the control connection stores: a session cache shared by
/// every client could be emptied by anyone's full handshakes (16,384 of
/// them took 22 s), and then a client that resumes by id (no tickets) would
/// get 522 on its next data connection.
#[derive(Debug)]
struct StampedSessions {
    inner: Arc<dyn StoresServerSessions>,
    note: Arc<Note>,
    /// Whether this connection may add sessions (the control connection).
    stores: bool,
}

impl StoresServerSessions for StampedSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.stores && self.inner.put(key, stamped(&self.note.stamp, &value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let value = self.inner.get(key)?;
        let (stamp, rest) = unstamp(&value)?;
        self.note.see(stamp);
        Some(rest.to_vec())
    }

    /// Does not remove: a session id is presented by every data connection
    /// of an FTP session. Replaying one buys nothing without its secret, and
    /// 0-RTT is off.
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// TLS 1.3 tickets after a control connection's handshake: clients that use
/// a ticket once have a second for their next connection.
pub const CONTROL_TICKETS: usize = 2;

/// TLS 1.2 sessions one FTP session keeps for clients that resume by id
/// (its control handshake adds one).
const SESSION_IDS: usize = 4;

/// A handshake about to run: the acceptor, and what it will have seen.
pub struct Handshake {
    /// Runs the server side of the handshake.
    pub acceptor: tokio_rustls::TlsAcceptor,
    note: Arc<Note>,
    /// The FTP session's TLS 1.2 sessions by id.
    ids: Arc<dyn StoresServerSessions>,
    /// Where its stamp is marked running until it is dropped.
    lineages: Arc<Lineages>,
}

impl Drop for Handshake {
    /// Dropped once the handshake's outcome is recorded (or it failed).
    fn drop(&mut self) {
        self.lineages.lock().running.remove(&self.note.stamp);
    }
}

impl Handshake {
    /// The stamp of the session the finished handshake `conn` resumed,
    /// `None` after a full one.
    fn resumed(&self, conn: &rustls::ServerConnection) -> Option<Lineage> {
        if conn.handshake_kind() != Some(HandshakeKind::Resumed) {
            return None;
        }
        self.note.seen()
    }

    /// Whether the finished handshake `conn` resumed some session.
    pub fn was_resumed(&self, conn: &rustls::ServerConnection) -> bool {
        self.resumed(conn).is_some()
    }
}

/// One FTP session's TLS state, fixed by its control connection's handshake.
#[derive(Clone, Debug)]
pub struct SessionTls {
    /// The configuration the control connection used; data connections use
    /// the same key, certificate and versions.
    pub tls: Arc<Tls>,
    /// The full handshake the control connection's session descends from.
    pub lineage: Lineage,
    /// The client's network, which entries of the lineage count against.
    pub net: NetKey,
    /// This session's TLS 1.2 sessions by id (see [`StampedSessions`]).
    ids: Arc<dyn StoresServerSessions>,
    /// The client certificate the control connection presented, if any: a
    /// data connection that does not resume must present the same one
    /// (vsftpd's "DIFFERENT cert on data channel" check).
    pub peer_cert: Option<Vec<u8>>,
}

impl SessionTls {
    /// A data connection's handshake. It issues one TLS 1.3 ticket when the
    /// server sends the file (the client reads to the end, ticket included)
    /// and none when the client does: an uploading client never reads what
    /// the server sent, and when it closes, its kernel answers the unread
    /// bytes with a reset and drops what it had not yet sent, so the upload
    /// ends truncated. Clients that use a TLS 1.3 session only once (OpenSSL's
    /// session cache: curl) need the new ticket for their next transfer; the
    /// control connection's session stays resumable for the others.
    pub fn data_handshake(&self, download: bool) -> Result<Handshake, rustls::Error> {
        self.tls.handshake(usize::from(download), Arc::clone(&self.ids), false)
    }

    /// Whether the finished data handshake `conn` belongs to this session's
    /// client: it resumed a session of the same lineage (once the handshake
    /// that issued it has ended: [`Lineages::settled_root`]). Whatever it
    /// issued joins the lineage it resumed.
    pub async fn admit(&self, hs: &Handshake, conn: &rustls::ServerConnection) -> bool {
        let Some(parent) = hs.resumed(conn) else { return false };
        self.admit_resumed(parent, hs.note.stamp).await
    }

    async fn admit_resumed(&self, parent: Lineage, stamp: Lineage) -> bool {
        let root = self.tls.lineages.join(&parent, stamp, self.net).await;
        if root != self.lineage {
            tracing::debug!(parent = %hex(&parent), root = %hex(&root), lineage = %hex(&self.lineage), "resumed session of another lineage");
        }
        root == self.lineage
    }
}

fn hex(l: &Lineage) -> String {
    l.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Longest a data connection waits for the handshake that issued its session.
const ISSUER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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
        base.max_early_data_size = 0;
        // The server's order of suites, not the client's: the strongest
        // suite both sides have, whatever a client lists first.
        base.ignore_client_order = true;
        let tickets = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("TLS: no session ticket key could be made ({e})"))?;
        Ok(Self { base, tickets, lineages: Arc::default(), ktls: ktls_available() })
    }

    /// A handshake that sends `tickets` TLS 1.3 tickets, whose tickets and
    /// sessions carry a new stamp, and that finds (and with `stores`, adds)
    /// TLS 1.2 sessions in `ids`.
    fn handshake(
        &self,
        tickets: usize,
        ids: Arc<dyn StoresServerSessions>,
        stores: bool,
    ) -> Result<Handshake, rustls::Error> {
        let mut stamp = Lineage::default();
        self.base.crypto_provider().secure_random.fill(&mut stamp)?;
        let note = Arc::new(Note { stamp, seen: Mutex::default() });
        let mut config = self.base.clone();
        config.ticketer = Arc::new(StampedTickets { inner: Arc::clone(&self.tickets), note: Arc::clone(&note) });
        config.session_storage = Arc::new(StampedSessions { inner: Arc::clone(&ids), note: Arc::clone(&note), stores });
        config.send_tls13_tickets = tickets;
        self.lineages.lock().running.insert(stamp);
        Ok(Handshake {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            note,
            ids,
            lineages: Arc::clone(&self.lineages),
        })
    }

    /// A control connection's handshake (`tickets` TLS 1.3 tickets), with a
    /// new store for the session's TLS 1.2 sessions by id.
    pub fn control_handshake(&self, tickets: usize) -> Result<Handshake, rustls::Error> {
        self.handshake(tickets, rustls::server::ServerSessionMemoryCache::new(SESSION_IDS), true)
    }

    /// The session state of a finished control handshake from `client`. Its
    /// lineage is its own stamp after a full handshake, else that of the
    /// session it resumed, which from now on is also what its stamp stands
    /// for.
    pub async fn session(
        self: &Arc<Self>,
        hs: &Handshake,
        conn: &rustls::ServerConnection,
        client: std::net::IpAddr,
    ) -> SessionTls {
        let net = net_key(client);
        let stamp = hs.note.stamp;
        let lineage = match hs.resumed(conn) {
            None => stamp,
            Some(parent) => self.lineages.join(&parent, stamp, net).await,
        };
        tracing::debug!(stamp = %hex(&stamp), lineage = %hex(&lineage), "control lineage");
        let ids = Arc::clone(&hs.ids);
        SessionTls {
            tls: Arc::clone(self),
            lineage,
            net,
            ids,
            peer_cert: conn.peer_certificates().and_then(<[_]>::first).map(|c| c.as_ref().to_vec()),
        }
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

    fn key() -> Arc<dyn ProducesTickets> {
        rustls::crypto::ring::Ticketer::new().expect("ticket key")
    }

    fn note(stamp: Lineage) -> Arc<Note> {
        Arc::new(Note { stamp, seen: Mutex::default() })
    }

    #[test]
    fn a_resumed_connection_joins_the_lineage_of_what_it_resumed() {
        let l = Lineages::default();
        let (a, b, c) = ([1; 16], [2; 16], [3; 16]);
        assert_eq!(l.root(&a), a, "a full handshake is its own lineage");
        l.descend(b, l.root(&a), [0; 16]);
        l.descend(c, l.root(&b), [0; 16]);
        assert_eq!(l.root(&c), a, "a chain of resumptions leads back to the full handshake");
        assert_eq!(l.root(&[4; 16]), [4; 16]);
    }

    #[tokio::test]
    async fn a_session_resumed_while_its_issuer_runs_joins_the_issuers_lineage() {
        let l = Arc::new(Lineages::default());
        let net = [0; 16];
        let (a, issuer, next) = ([1; 16], [2; 16], [3; 16]);
        l.lock().running.insert(issuer);
        let l2 = Arc::clone(&l);
        let finish = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            l2.join(&a, issuer, net).await;
            l2.lock().running.remove(&issuer);
        });
        assert_eq!(l.join(&issuer, next, net).await, a, "waits for the issuer, then follows it to its root");
        finish.await.expect("issuer");
        assert_eq!(l.root(&next), a);
        // An issuer that ended as a full handshake records nothing: its
        // sessions are a lineage of their own.
        let (full, after) = ([4; 16], [5; 16]);
        assert_eq!(l.join(&full, after, net).await, full);
    }

    fn stamp(i: u32) -> Lineage {
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&i.to_be_bytes());
        s
    }

    #[test]
    fn one_network_forgets_only_its_own_oldest() {
        let l = Lineages::default();
        let (flood, victim) = (net_key("192.0.2.7".parse().unwrap()), net_key("198.51.100.1".parse().unwrap()));
        assert_eq!(flood, net_key("::ffff:192.0.2.200".parse().unwrap()), "a /24, v4-mapped or not");
        l.descend(stamp(u32::MAX), [9; 16], victim);
        for i in 0..(LINEAGES_PER_NET as u32 * 3) {
            l.descend(stamp(i), [8; 16], flood);
        }
        assert_eq!(l.root(&stamp(u32::MAX)), [9; 16], "another network's entry survives a flood");
        assert_eq!(l.root(&stamp(0)), stamp(0), "the flood's oldest are forgotten");
        assert_eq!(l.root(&stamp(LINEAGES_PER_NET as u32 * 3 - 1)), [8; 16]);
        assert_eq!(l.lock().root.len(), LINEAGES_PER_NET + 1);
    }

    #[test]
    fn past_the_global_bound_the_oldest_overall_go_first() {
        let l = Lineages::default();
        let per = LINEAGES_PER_NET as u32;
        for i in 0..=LINEAGES_MAX as u32 {
            let net = net_key(std::net::IpAddr::from([10, ((i / per) >> 8) as u8, (i / per) as u8, 1]));
            l.descend(stamp(i), [9; 16], net);
        }
        let inner = l.lock();
        assert_eq!(inner.root.len(), LINEAGES_MAX);
        assert!(!inner.root.contains_key(&stamp(0)), "the first was forgotten: it stands for itself");
        assert!(inner.root.contains_key(&stamp(LINEAGES_MAX as u32)));
        assert!(inner.order.len() <= 2 * inner.root.len() + 1024);
    }

    #[test]
    fn tickets_carry_the_issuers_stamp_sealed_by_the_shared_key() {
        let inner = key();
        let control = StampedTickets { inner: Arc::clone(&inner), note: note([7; 16]) };
        let ticket = control.encrypt(b"session").expect("tickets are issued");
        let data = StampedTickets { inner: Arc::clone(&inner), note: note([8; 16]) };
        assert_eq!(data.note.seen(), None);
        assert_eq!(data.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        assert_eq!(data.note.seen(), Some([7; 16]), "the presented ticket's stamp, not the reader's own");
        let mut forged = ticket.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let other = StampedTickets { inner: Arc::clone(&inner), note: note([9; 16]) };
        assert_eq!(other.decrypt(&forged), None, "a changed ticket is not read");
        assert_eq!(other.note.seen(), None);
        // A ticket from another key (another server, a reload) is not read.
        let foreign = StampedTickets { inner: key(), note: note([9; 16]) };
        assert_eq!(foreign.decrypt(&ticket), None);
    }

    #[test]
    fn session_ids_carry_the_issuers_stamp_and_stay_for_every_data_connection() {
        let inner: Arc<dyn StoresServerSessions> = rustls::server::ServerSessionMemoryCache::new(8);
        let control = StampedSessions { inner: Arc::clone(&inner), note: note([5; 16]), stores: true };
        assert!(control.put(b"id".to_vec(), b"v".to_vec()));
        let data = StampedSessions { inner: Arc::clone(&inner), note: note([6; 16]), stores: false };
        assert!(!data.put(b"id2".to_vec(), b"w".to_vec()), "a data connection adds nothing");
        assert_eq!(data.get(b"id2"), None);
        assert_eq!(data.get(b"none"), None);
        assert_eq!(data.note.seen(), None);
        // Every data connection of a session presents the same id.
        assert_eq!(data.take(b"id").as_deref(), Some(&b"v"[..]));
        assert_eq!(data.take(b"id").as_deref(), Some(&b"v"[..]));
        assert_eq!(data.note.seen(), Some([5; 16]));
    }
}
