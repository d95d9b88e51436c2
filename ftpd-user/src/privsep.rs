//! The process split of docs/ARCHITECTURE.md: the privileged master, the
//! unprivileged front, and one file worker per identity.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI32, AtomicU64, Ordering},
    },
};

use tracing::{info, warn};

use crate::{
    auth,
    config::Config,
    fs::Root,
    ipc::{self, Dec, Enc},
    login::{self, Denial, Grant},
    worker::{Direct, Fs, WorkerLink},
};

/// What a login gives the front.
#[derive(Debug)]
pub struct LoggedIn {
    /// The decision (identity, root, start directory, per-user config).
    pub grant: Grant,
    /// Where the session's file operations run.
    pub fs: Fs,
}

/// How the front logs users in.
#[derive(Debug)]
pub enum Authority {
    /// Not started as root: decisions and file access in this process, with
    /// this process's credentials.
    InProcess,
    /// Through the privileged master.
    Master {
        /// The front's end of the master channel.
        chan: Mutex<OwnedFd>,
        /// Channels to the file workers, by the id the master gave them.
        links: Mutex<HashMap<u64, Arc<WorkerLink>>>,
        /// Signalled when a link is added: two first logins of one identity
        /// can race, and the one without the channel waits for the other.
        added: std::sync::Condvar,
        /// The last anonymous grant and its worker. When the password is not
        /// checked, an anonymous login depends on the config alone, so later
        /// ones reuse it instead of a round trip to the master (and a thread
        /// there): half the CPU of a login. Cleared on reload.
        anon: Mutex<Option<Box<AnonGrant>>>,
        /// The anonymous root, opened before the split, for [`Direct`] opens.
        anon_root: Option<Arc<Root>>,
    },
}

/// A granted anonymous login and the worker it uses.
type AnonGrant = (Grant, Arc<WorkerLink>);

/// Front to master: check a login ([`decode_login`]).
pub const REQ_LOGIN: u8 = 1;
/// Front to master: bind the data source port ([`decode_bind`]).
pub const REQ_BIND: u8 = 2;
/// Front to master: re-read the configuration ([`decode_reload`]).
pub const REQ_RELOAD: u8 = 3;
/// Master to front: refused, with the reply text.
pub const REP_DENIED: u8 = 0;
/// Master to front: granted ([`decode_grant`]) or done.
pub const REP_OK: u8 = 1;
/// Refused unchecked: too many logins were waiting for a password check.
pub const REP_BUSY: u8 = 2;

fn broken(what: &str) -> Denial {
    Denial {
        reply: "Login incorrect.".into(),
        reason: format!("privilege separation failure: {what}"),
        config_error: false,
    }
}

impl Authority {
    /// The front's end of the master channel, for a new front; `anon_root`
    /// (opened as root) lets it open anonymous downloads itself.
    pub fn master(chan: OwnedFd, anon_root: Option<Root>) -> Self {
        Self::Master {
            chan: Mutex::new(chan),
            links: Mutex::default(),
            added: std::sync::Condvar::new(),
            anon: Mutex::default(),
            anon_root: anon_root.map(Arc::new),
        }
    }

    /// The file access of a granted login: the worker, and for anonymous
    /// users under `anon_world_readable_only` the front's own opens.
    fn remote(&self, cfg: &Config, grant: &Grant, link: Arc<WorkerLink>) -> Fs {
        let direct = match self {
            Self::Master { anon_root: Some(root), .. } if grant.anonymous && cfg.anon_world_readable_only => {
                Direct::for_identity(root, grant.uid, grant.gid, &grant.groups).map(Arc::new)
            }
            _ => None,
        };
        Fs::Remote(link, direct)
    }

    /// An anonymous login that needs no decision: same config as the last
    /// one the master granted, no password check, and its worker still
    /// running. `None`: ask [`Authority::login`]. Never blocks.
    pub fn login_cached(&self, cfg: &Config, user: &str) -> Option<LoggedIn> {
        let Self::Master { anon, .. } = self else { return None };
        if !login::is_anonymous(user) || !cfg.anonymous_enable || cfg.deny_email_enable || cfg.secure_email_list_enable
        {
            return None;
        }
        let mut slot = anon.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (grant, link) = slot.as_deref()?;
        if !link.alive() {
            *slot = None;
            return None;
        }
        Some(LoggedIn { grant: grant.clone(), fs: self.remote(cfg, grant, Arc::clone(link)) })
    }

    /// Logs a user in. Blocking (PAM may take seconds): call it off the async threads.
    pub fn login(
        &self,
        cfg: &Config,
        anon_root: &Path,
        user: &str,
        password: &[u8],
        rhost: &str,
    ) -> Result<LoggedIn, Denial> {
        match self {
            Self::InProcess => {
                let grant = login::decide(cfg, anon_root, user, password, rhost)?;
                let root = Root::open(&grant.root_dir).map_err(|e| Denial {
                    reply: "OOPS: cannot change directory.".into(),
                    reason: format!("{}: {e}", grant.root_dir.display()),
                    config_error: false,
                })?;
                Ok(LoggedIn { grant, fs: Fs::Local(root) })
            }
            Self::Master { chan, links, added, anon, .. } => {
                let (mine, theirs) = ipc::pair().map_err(|e| broken(&e.to_string()))?;
                let req = Enc::tag(REQ_LOGIN).bytes(user.as_bytes()).bytes(password).bytes(rhost.as_bytes()).0;
                {
                    let chan = chan.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    ipc::send(chan.as_fd(), &req, Some(theirs.as_fd())).map_err(|e| broken(&e.to_string()))?;
                }
                drop(theirs);
                let mut buf = Vec::new();
                let fd = match ipc::recv(mine.as_fd(), &mut buf) {
                    Ok(Some(fd)) => fd,
                    Ok(None) => return Err(broken("master closed the login channel")),
                    Err(e) => return Err(broken(&e.to_string())),
                };
                let mut d = Dec(&buf);
                match d.u8() {
                    Some(REP_DENIED) => Err(Denial {
                        reply: d.str().unwrap_or("Login incorrect.").to_owned(),
                        reason: "refused by the master".into(),
                        config_error: false,
                    }),
                    // Told apart in the log; the client gets vsftpd's 530, as for
                    // any refused login (it may simply try again).
                    Some(REP_BUSY) => Err(Denial {
                        reply: "Login incorrect.".into(),
                        reason: "server busy: too many logins waiting for a password check".into(),
                        config_error: false,
                    }),
                    Some(REP_OK) => {
                        let grant = decode_grant(&mut d).ok_or_else(|| broken("malformed grant"))?;
                        let id = d.u64().ok_or_else(|| broken("malformed grant"))?;
                        let mut links = links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if let Some(fd) = fd {
                            links.insert(id, Arc::new(WorkerLink::new(fd)));
                            added.notify_all();
                        }
                        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                        loop {
                            if let Some(link) = links.get(&id).cloned() {
                                if grant.anonymous {
                                    *anon.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                                        Some(Box::new((grant.clone(), Arc::clone(&link))));
                                }
                                let fs = self.remote(cfg, &grant, link);
                                return Ok(LoggedIn { grant, fs });
                            }
                            let left = deadline.saturating_duration_since(std::time::Instant::now());
                            if left.is_zero() {
                                return Err(broken("unknown worker"));
                            }
                            links =
                                added.wait_timeout(links, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
                        }
                    }
                    _ => Err(broken("malformed reply")),
                }
            }
        }
    }
}

impl Authority {
    /// Re-reads the configuration (the master does it: the file may be
    /// readable by root only) and the per-user config of `users`.
    pub fn reload(
        &self,
        source: &crate::config::ConfigSource,
        users: &[String],
    ) -> Result<(Config, Vec<Option<String>>), String> {
        let Self::Master { chan, anon, .. } = self else {
            let cfg = source.load()?;
            let texts = users.iter().map(|u| login::read_user_config(&cfg, u).ok().flatten()).collect();
            return Ok((cfg, texts));
        };
        let (mine, theirs) = ipc::pair().map_err(|e| e.to_string())?;
        let mut req = Enc::tag(REQ_RELOAD).u32(u32::try_from(users.len()).unwrap_or(0));
        for u in users {
            req = req.bytes(u.as_bytes());
        }
        {
            let chan = chan.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ipc::send(chan.as_fd(), &req.0, Some(theirs.as_fd())).map_err(|e| e.to_string())?;
        }
        drop(theirs);
        let mut buf = Vec::new();
        ipc::recv(mine.as_fd(), &mut buf).map_err(|e| e.to_string())?.ok_or("master closed the channel")?;
        let mut d = Dec(&buf);
        match d.u8() {
            Some(REP_OK) => {
                let text = d.str().ok_or("malformed reload reply")?;
                let mut cfg = Config::default();
                cfg.apply_text("<reloaded>", text).map_err(|e| e.to_string())?;
                let mut texts = Vec::new();
                for _ in users {
                    texts.push(match d.u8().ok_or("malformed reload reply")? {
                        0 => None,
                        _ => Some(d.str().ok_or("malformed reload reply")?.to_owned()),
                    });
                }
                // The next anonymous login is decided under the new config.
                *anon.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                Ok((cfg, texts))
            }
            _ => Err(d.str().unwrap_or("the master refused to reload").to_owned()),
        }
    }

    /// A socket bound to `ip:port` for `connect_from_port_20`. Ports below
    /// 1024 need privilege, so with privilege separation the master binds it.
    pub fn bind_data_port(&self, ip: std::net::IpAddr, port: u16) -> io::Result<OwnedFd> {
        let Self::Master { chan, .. } = self else {
            return crate::data::bind_source(ip, port);
        };
        let (mine, theirs) = ipc::pair()?;
        let req = Enc::tag(REQ_BIND).bytes(ip.to_string().as_bytes()).u32(u32::from(port)).0;
        {
            let chan = chan.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ipc::send(chan.as_fd(), &req, Some(theirs.as_fd()))?;
        }
        drop(theirs);
        let mut buf = Vec::new();
        match ipc::recv(mine.as_fd(), &mut buf)? {
            Some(Some(fd)) => Ok(fd),
            _ => {
                let why = Dec(&buf).str().unwrap_or("refused").to_owned();
                Err(io::Error::other(format!("master could not bind the data port: {why}")))
            }
        }
    }
}

/// Appends a login decision to a master reply (read by [`decode_grant`]).
pub fn encode_grant(g: &Grant, e: Enc) -> Enc {
    use std::os::unix::ffi::OsStrExt;
    let mut e = e
        .bytes(g.name.as_bytes())
        .u8(u8::from(g.anonymous))
        .u32(g.uid)
        .u32(g.gid)
        .u32(u32::try_from(g.groups.len()).unwrap_or(0));
    for group in &g.groups {
        e = e.u32(*group);
    }
    e = e.bytes(g.root_dir.as_os_str().as_bytes()).bytes(&g.cwd);
    e = match &g.user_config {
        Some(t) => e.u8(1).bytes(t.as_bytes()),
        None => e.u8(0),
    };
    e
}

/// Reads what [`encode_grant`] wrote; `None`: a malformed reply.
pub fn decode_grant(d: &mut Dec<'_>) -> Option<Grant> {
    use std::os::unix::ffi::OsStrExt;
    let name = d.str()?.to_owned();
    let anonymous = d.u8()? != 0;
    let uid = d.u32()?;
    let gid = d.u32()?;
    let n = d.u32()?;
    let groups = (0..n.min(65_536)).map(|_| d.u32()).collect::<Option<Vec<u32>>>()?;
    let root_dir = PathBuf::from(std::ffi::OsStr::from_bytes(d.bytes()?));
    let cwd = d.bytes()?.to_vec();
    let user_config = match d.u8()? {
        0 => None,
        _ => Some(d.str()?.to_owned()),
    };
    Some(Grant { name, anonymous, uid, gid, groups, root_dir, cwd, user_config })
}

/// Reads a login request: user, password, client address.
pub fn decode_login(req: &[u8]) -> Option<(&str, &[u8], &str)> {
    let mut d = Dec(req);
    match (d.u8(), d.str(), d.bytes(), d.str()) {
        (Some(REQ_LOGIN), Some(user), Some(password), Some(rhost)) => Some((user, password, rhost)),
        _ => None,
    }
}

/// Reads a reload request: the users whose `user_config_dir` file the
/// front wants again (at most 10 000; unreadable ones are skipped).
pub fn decode_reload(req: &[u8]) -> Vec<String> {
    let mut d = Dec(req.get(1..).unwrap_or_default());
    let n = d.u32().unwrap_or(0).min(10_000);
    (0..n).filter_map(|_| d.str().map(str::to_owned)).collect()
}

/// Reads a bind request: the address and port to bind.
pub fn decode_bind(req: &[u8]) -> Option<(std::net::IpAddr, u32)> {
    let mut d = Dec(req.get(1..)?);
    let ip = d.str().and_then(|s| s.parse::<std::net::IpAddr>().ok());
    Some((ip?, d.u32()?))
}

/// Who a worker acts as: uid, gid, groups, root.
type Identity = (u32, u32, Vec<u32>, PathBuf);

/// The master's state: running workers by identity.
struct Master {
    /// Decides logins: the startup config, replaced by each good SIGHUP reload.
    cfg: std::sync::RwLock<Arc<Config>>,
    source: crate::config::ConfigSource,
    anon_root: PathBuf,
    workers: Mutex<HashMap<Identity, (u64, Child)>>,
    next_id: AtomicU64,
    /// Held by the reload running, so that two SIGHUPs apply in order.
    reloading: Mutex<()>,
}

static FRONT_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FRONT_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Runs the master until the front exits. Returns the exit code for ftpd.
pub fn run_master(
    cfg: Config,
    source: crate::config::ConfigSource,
    anon_root: PathBuf,
    chan: OwnedFd,
    front_pid: i32,
) -> i32 {
    FRONT_PID.store(front_pid, Ordering::Relaxed);
    // SAFETY: the handler only calls kill(2).
    unsafe {
        libc::signal(libc::SIGTERM, forward_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, forward_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, forward_signal as *const () as libc::sighandler_t);
    }
    crate::worker::return_freed_memory();
    let master = Arc::new(Master {
        cfg: std::sync::RwLock::new(Arc::new(cfg)),
        source,
        anon_root,
        workers: Mutex::default(),
        next_id: AtomicU64::new(1),
        reloading: Mutex::new(()),
    });
    let queue = Arc::new(LoginQueue::default());
    for i in 0..login_threads() {
        let (m, q) = (Arc::clone(&master), Arc::clone(&queue));
        let started = std::thread::Builder::new().name(format!("login-{i}")).spawn(move || {
            loop {
                let (req, reply) = q.next();
                m.handle_login(&req, &reply);
            }
        });
        if let Err(e) = started {
            warn!("master: cannot start a login thread: {e}");
        }
    }
    let mut buf = Vec::new();
    loop {
        match ipc::recv(chan.as_fd(), &mut buf) {
            // A reload reads files (the config, the users file, roots on
            // network file systems): on a thread of its own, so that this
            // loop keeps queueing logins meanwhile. One at a time.
            Ok(Some(Some(reply_fd))) if buf.first() == Some(&REQ_RELOAD) => {
                let (m, req) = (Arc::clone(&master), buf.clone());
                let started = std::thread::Builder::new().name("reload".into()).spawn(move || {
                    let _one = m.reloading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    m.handle_reload(&req, &reply_fd);
                });
                if let Err(e) = started {
                    warn!("master: cannot start the reload thread: {e}");
                }
            }
            // Binds are quick: answered here, not queued behind password checks.
            Ok(Some(Some(reply_fd))) if buf.first() != Some(&REQ_LOGIN) => master.handle_login(&buf, &reply_fd),
            Ok(Some(Some(reply_fd))) => {
                let host = {
                    let mut d = Dec(&buf[1..]);
                    let _ = (d.str(), d.bytes());
                    d.str().unwrap_or_default().to_owned()
                };
                if let Some(reply_fd) = queue.push(host, buf.clone(), reply_fd) {
                    let _ = ipc::send(reply_fd.as_fd(), &Enc::tag(REP_BUSY).0, None);
                }
            }
            Ok(Some(None)) => {
                warn!("master: request without a reply channel; the front is broken, stopping");
                break;
            }
            Ok(None) => break,
            Err(e) => {
                warn!("master: channel error {e}; stopping");
                break;
            }
        }
    }
    // The front is gone (or broken): stop the workers and report its status.
    let mut workers = master.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (_, (_, child)) in workers.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(front_pid, &mut status, 0) };
    if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 1 }
}

/// Threads that check passwords in the master. A check is CPU and memory
/// bound (argon2id: 19 MiB each): a thread per check let 300 concurrent
/// wrong passwords take the master to 3.9 GiB.
fn login_threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from).clamp(2, 8)
}

/// Logins waiting for a thread, at most.
const QUEUED_MAX: usize = 256;
/// Logins from one address waiting for a thread, at most: one address
/// cannot fill the queue, and the others' logins go first in turn.
const QUEUED_PER_HOST_MAX: usize = 16;

impl Pending {
    fn push_back(&mut self, host: String, req: Vec<u8>, reply: OwnedFd) {
        let q = self.by_host.entry(host.clone()).or_default();
        if q.is_empty() {
            self.order.push_back(host);
        }
        q.push_back((req, reply));
        self.total += 1;
    }
}

/// Login requests waiting for a login thread, served in turn by address
/// (round robin), so a flood from one address delays the others by at most
/// one check each.
#[derive(Default)]
struct LoginQueue {
    state: Mutex<Pending>,
    ready: std::sync::Condvar,
}

#[derive(Default)]
struct Pending {
    by_host: HashMap<String, std::collections::VecDeque<(Vec<u8>, OwnedFd)>>,
    /// Addresses with waiting logins, in serving order.
    order: std::collections::VecDeque<String>,
    total: usize,
    /// Logins refused since the last warning, and when it was.
    refused: u64,
    warned: Option<std::time::Instant>,
}

impl LoginQueue {
    /// Queues a login. Gives back the reply channel of a login to refuse,
    /// if one must be: when the queue is full, a waiting login of the
    /// address with the most queued (its newest) makes room for an address
    /// with fewer, so addresses that flood cannot lock others out: the
    /// newcomer is served within one round. The newcomer itself is refused
    /// when its address has as many waiting as any (or its own cap).
    fn push(&self, host: String, req: Vec<u8>, reply: OwnedFd) -> Option<OwnedFd> {
        let mut p = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let waiting = p.by_host.get(&host).map_or(0, std::collections::VecDeque::len);
        let mut refused = None;
        if waiting >= QUEUED_PER_HOST_MAX {
            refused = Some(reply);
        } else if p.total >= QUEUED_MAX {
            let busiest = p.by_host.iter().max_by_key(|(_, q)| q.len()).map(|(h, q)| (h.clone(), q.len()));
            match busiest {
                Some((busy, n)) if n > waiting + 1 => {
                    let q = p.by_host.get_mut(&busy).expect("the busiest address's queue");
                    let (_, evicted) = q.pop_back().expect("a waiting login");
                    // Not empty: it had more than one waiting.
                    p.total -= 1;
                    refused = Some(evicted);
                    p.push_back(host, req, reply);
                }
                _ => refused = Some(reply),
            }
        } else {
            p.push_back(host, req, reply);
        }
        if refused.is_some() {
            p.refused += 1;
            if p.warned.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10)) {
                warn!(
                    refused = p.refused,
                    waiting = p.total,
                    "master: too many logins waiting for a password check; refusing those of the busiest addresses ({QUEUED_PER_HOST_MAX} per address, {QUEUED_MAX} in all)"
                );
                p.refused = 0;
                p.warned = Some(std::time::Instant::now());
            }
        }
        drop(p);
        self.ready.notify_one();
        refused
    }

    /// The next login to check, waiting for one.
    fn next(&self) -> (Vec<u8>, OwnedFd) {
        let mut p = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(host) = p.order.pop_front() {
                if let Some(q) = p.by_host.get_mut(&host)
                    && let Some(item) = q.pop_front()
                {
                    if q.is_empty() {
                        p.by_host.remove(&host);
                    } else {
                        p.order.push_back(host);
                    }
                    p.total -= 1;
                    return item;
                }
                continue;
            }
            p = self.ready.wait(p).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl Master {
    fn cfg(&self) -> Arc<Config> {
        Arc::clone(&self.cfg.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn handle_login(&self, req: &[u8], reply: &OwnedFd) {
        if req.first() == Some(&REQ_BIND) {
            self.handle_bind(req, reply);
            return;
        }
        if req.first() == Some(&REQ_RELOAD) {
            self.handle_reload(req, reply);
            return;
        }
        let Some((user, password, rhost)) = decode_login(req) else {
            let _ = ipc::send(reply.as_fd(), &Enc::tag(REP_DENIED).bytes(b"Login incorrect.").0, None);
            return;
        };
        let outcome = login::decide(&self.cfg(), &self.anon_root, user, password, rhost)
            .and_then(|g| self.worker_for(&g).map(|w| (g, w)));
        match outcome {
            Ok((grant, (id, link))) => {
                let msg = encode_grant(&grant, Enc::tag(REP_OK)).u64(id).0;
                let _ = ipc::send(reply.as_fd(), &msg, link.as_ref().map(AsFd::as_fd));
            }
            Err(denial) => {
                if denial.config_error {
                    warn!(user, rhost, reason = %denial.reason, "login refused");
                } else {
                    info!(user, rhost, reason = %denial.reason, "login refused");
                }
                let _ = ipc::send(reply.as_fd(), &Enc::tag(REP_DENIED).bytes(denial.reply.as_bytes()).0, None);
            }
        }
    }

    /// Re-reads the configuration for the front, and decides later logins
    /// with it. The front already runs with the startup settings that need
    /// privilege (listeners, logs); a reload changes what sessions do (rate
    /// limits, for running transfers too) and how logins are decided.
    fn handle_reload(&self, req: &[u8], reply: &OwnedFd) {
        let users = decode_reload(req);
        match self.source.load() {
            Ok(cfg) => {
                // Re-read now so that a bad file is reported at reload
                // (the users read before stay in use).
                if !cfg.virtual_users_file.is_empty() {
                    let _ = auth::virtual_users(Path::new(&cfg.virtual_users_file));
                }
                for problem in crate::access::unservable_roots(&cfg, &self.anon_root) {
                    warn!("reload: {problem}");
                }
                let mut e = Enc::tag(REP_OK).bytes(cfg.to_text().as_bytes());
                for u in &users {
                    e = match login::read_user_config(&cfg, u).ok().flatten() {
                        Some(t) => e.u8(1).bytes(t.as_bytes()),
                        None => e.u8(0),
                    };
                }
                let _ = ipc::send(reply.as_fd(), &e.0, None);
                *self.cfg.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(cfg);
            }
            Err(err) => {
                warn!("master: reload refused: {err}");
                let _ = ipc::send(reply.as_fd(), &Enc::tag(REP_DENIED).bytes(err.as_bytes()).0, None);
            }
        }
    }

    /// Binds `ftp_data_port` for the front; any other port is refused, so the
    /// front can never use the master to bind a privileged port of its choice.
    fn handle_bind(&self, req: &[u8], reply: &OwnedFd) {
        let cfg = self.cfg();
        let result = match decode_bind(req) {
            Some((ip, port)) if port == cfg.ftp_data_port && cfg.connect_from_port_20 => {
                crate::data::bind_source(ip, u16::try_from(port).unwrap_or(20)).map_err(|e| e.to_string())
            }
            _ => Err("bad bind request".to_string()),
        };
        match result {
            Ok(fd) => {
                let _ = ipc::send(reply.as_fd(), b"\x01", Some(fd.as_fd()));
            }
            Err(e) => {
                warn!("master: {e}");
                let _ = ipc::send(reply.as_fd(), &Enc::default().bytes(e.as_bytes()).0, None);
            }
        }
    }

    /// The worker for this identity: its id, and the front's end of a new
    /// channel if it was just started.
    fn worker_for(&self, g: &Grant) -> Result<(u64, Option<OwnedFd>), Denial> {
        let key = (g.uid, g.gid, g.groups.clone(), g.root_dir.clone());
        let mut workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((id, child)) = workers.get_mut(&key) {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok((*id, None));
            }
            workers.remove(&key);
        }
        let oops =
            |e: String| Denial { reply: "OOPS: cannot change directory.".into(), reason: e, config_error: false };
        // The root is opened here, as root, as vsftpd's chroot() is done as root.
        let root = Root::open(&g.root_dir).map_err(|e| oops(format!("{}: {e}", g.root_dir.display())))?;
        let (front_end, worker_end) = ipc::pair().map_err(|e| oops(e.to_string()))?;
        let child =
            spawn_worker(&worker_end, root.as_fd(), g).map_err(|e| oops(format!("cannot start a file worker: {e}")))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        info!(uid = g.uid, root = %g.root_dir.display(), pid = child.id(), "file worker started");
        workers.insert(key, (id, child));
        Ok((id, Some(front_end)))
    }
}

/// Starts `ftpd --ftpd-worker` with the channel on fd 3 and the root on fd 4,
/// already switched to the user's groups, gid and uid.
fn spawn_worker(sock: &OwnedFd, root: std::os::fd::BorrowedFd<'_>, g: &Grant) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let (sock_fd, root_fd) = (sock.as_raw_fd(), root.as_raw_fd());
    let (uid, gid, groups) = (g.uid, g.gid, g.groups.clone());
    let mut cmd = Command::new(exe);
    cmd.arg("--ftpd-worker").stdin(std::process::Stdio::null());
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls on values prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // Close-on-exec copies (dup2 clears the flag on 3 and 4): the
            // worker gets each descriptor once.
            let a = libc::fcntl(sock_fd, libc::F_DUPFD_CLOEXEC, 10);
            let b = libc::fcntl(root_fd, libc::F_DUPFD_CLOEXEC, 10);
            if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Entry point of `ftpd --ftpd-worker` (fd 3: channel, fd 4: root).
pub fn worker_main() -> i32 {
    // No parent-death signal here: it fires when the *thread* that forked us
    // exits, and the master starts workers from its login threads.
    // A worker ends when its channel does, i.e. when the front exits (and the
    // front dies with the master).
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    rustix::process::umask(rustix::fs::Mode::empty());
    crate::worker::return_freed_memory();
    // Anything else inherited without close-on-exec (from whoever started
    // ftpd) is not the worker's to hold.
    // SAFETY: close_range on descriptors this process does not use.
    unsafe {
        libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32);
    }
    // SAFETY: the master put these descriptors there for us; nothing else owns them.
    let (sock, root) = unsafe {
        (<OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(3), <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(4))
    };
    let root = Root::from_fd(root);
    match crate::worker::serve(&sock, &root) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ftpd file worker: {e}");
            2
        }
    }
}

/// Turns the current (root) process into the front: parent-death signal, then
/// `nopriv_user`'s credentials and no way back.
pub fn become_front(cfg: &Config) -> Result<(), String> {
    let acct =
        auth::account(&cfg.nopriv_user).ok_or_else(|| format!("nopriv_user={} does not exist", cfg.nopriv_user))?;
    // SAFETY: plain system calls; this process is still single-threaded.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() == 1 {
            return Err("the master exited during startup".into());
        }
        if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(acct.gid) != 0 || libc::setuid(acct.uid) != 0 {
            return Err(format!("cannot switch to nopriv_user={}: {}", cfg.nopriv_user, io::Error::last_os_error()));
        }
        // Setting the parent-death signal again: changing credentials clears it.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    if rustix::process::geteuid().as_raw() == 0 {
        return Err("still root after dropping privileges".into());
    }
    Ok(())
}
