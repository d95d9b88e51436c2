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
        atomic::{AtomicU64, Ordering},
    },
};

use tracing::{error, info, warn};

use crate::{
    auth,
    config::Config,
    fs::Root,
    ipc::{self, LoginRequest, MasterReply, MasterRequest, Secret},
    login::{self, Denial, Grant},
    process,
    rates::Owner,
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

/// What a reload read: the configuration, the per-user config text of each
/// user asked for, and (from the master) the FTPS files' bytes.
#[derive(Debug)]
pub struct Reloaded {
    /// The new configuration, validated.
    pub cfg: Config,
    /// The rate limit of each owner asked for, in order, decided as at login.
    pub limits: Vec<u64>,
    /// The TLS certificate, key and CA files, read as root; `None` without
    /// privilege separation (the process reads them itself) or without FTPS.
    pub tls: Option<crate::tls::TlsFiles>,
}

/// What a front takes over from the master as it starts.
#[derive(Debug, Default)]
pub struct Current {
    /// The configuration of the last good reload, if there was one.
    pub reloaded: Option<Reloaded>,
    /// Bans still running, with the time each has left.
    pub bans: Vec<(ftpd_common::IpKey, std::time::Duration)>,
}

/// A granted anonymous login and the worker it uses.
type AnonGrant = (Grant, Arc<WorkerLink>);

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
                let req = MasterRequest::Login(LoginRequest {
                    user: user.to_owned(),
                    password: Secret(password.to_vec()),
                    rhost: rhost.to_owned(),
                });
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
                match ipc::decode::<MasterReply>(&buf) {
                    Ok(MasterReply::Denied { reply }) => {
                        Err(Denial { reply, reason: "refused by the master".into(), config_error: false })
                    }
                    // Told apart in the log; the client gets vsftpd's 530, as for
                    // any refused login (it may simply try again).
                    Ok(MasterReply::Busy) => Err(Denial {
                        reply: "Login incorrect.".into(),
                        reason: "server busy: too many logins waiting for a password check".into(),
                        config_error: false,
                    }),
                    Ok(MasterReply::Granted { grant, worker: id }) => {
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
                    Ok(_) => Err(broken("unexpected reply to a login")),
                    Err(e) => Err(broken(&format!("login reply: {e}"))),
                }
            }
        }
    }
}

impl Authority {
    /// Re-reads the configuration (the master does it: the file may be
    /// readable by root only), the rate limit of each of `owners` under it,
    /// decided by the master as at their login, and the TLS certificate and
    /// key when FTPS is on (the key may be `0600 root`).
    pub fn reload(&self, source: &crate::config::ConfigSource, owners: &[Owner]) -> Result<Reloaded, String> {
        let Self::Master { chan, anon, .. } = self else {
            let cfg = source.load()?;
            let limits = reload_limits(&cfg, owners)?;
            return Ok(Reloaded { cfg, limits, tls: None });
        };
        let (mine, theirs) = ipc::pair().map_err(|e| e.to_string())?;
        let req = MasterRequest::Reload { owners: owners.to_vec() };
        {
            let chan = chan.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ipc::send(chan.as_fd(), &req, Some(theirs.as_fd())).map_err(|e| e.to_string())?;
        }
        drop(theirs);
        let mut buf = Vec::new();
        ipc::recv(mine.as_fd(), &mut buf).map_err(|e| e.to_string())?.ok_or("master closed the channel")?;
        match ipc::decode::<MasterReply>(&buf) {
            Ok(MasterReply::Reloaded { config, limits, tls }) if limits.len() == owners.len() => {
                // The next anonymous login is decided under the new config.
                *anon.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                Ok(Reloaded { cfg: *config, limits, tls })
            }
            Ok(MasterReply::ReloadFailed { reason }) => Err(reason),
            Ok(_) => Err("unexpected reply to a reload from the master".into()),
            Err(e) => Err(format!("reload reply from the master: {e}")),
        }
    }

    /// Tells the master of a ban, which it keeps for a front that replaces
    /// this one. Nothing to wait for: the master does not answer.
    pub fn note_ban(&self, net: &ftpd_common::IpKey, time: std::time::Duration) {
        let Self::Master { chan, .. } = self else { return };
        let millis = u64::try_from(time.as_millis()).unwrap_or(u64::MAX);
        let sent = ipc::pair().and_then(|(_mine, theirs)| {
            let chan = chan.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ipc::send(chan.as_fd(), &MasterRequest::Banned { net: net.addr, millis }, Some(theirs.as_fd()))
        });
        if let Err(e) = sent {
            warn!("cannot tell the master of a ban (a new front would not know it): {e}");
        }
    }

    /// What a front that replaces a dead one takes over from the master: the
    /// configuration of the last good reload (`None`: no reload since ftpd
    /// started) and the bans still running. Nothing without a master.
    /// Blocking.
    pub fn current(&self) -> Result<Current, String> {
        let Self::Master { chan, anon, .. } = self else {
            return Ok(Current::default());
        };
        let (mine, theirs) = ipc::pair().map_err(|e| e.to_string())?;
        {
            let chan = chan.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ipc::send(chan.as_fd(), &MasterRequest::Current, Some(theirs.as_fd())).map_err(|e| e.to_string())?;
        }
        drop(theirs);
        let mut buf = Vec::new();
        ipc::recv(mine.as_fd(), &mut buf).map_err(|e| e.to_string())?.ok_or("master closed the channel")?;
        match ipc::decode::<MasterReply>(&buf) {
            Ok(MasterReply::Current { reloaded, bans }) => {
                if reloaded.is_some() {
                    *anon.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                }
                Ok(Current {
                    reloaded: reloaded.map(|(config, tls)| Reloaded { cfg: *config, limits: Vec::new(), tls }),
                    bans: bans
                        .into_iter()
                        .map(|(addr, ms)| (ftpd_common::IpKey { addr }, std::time::Duration::from_millis(ms)))
                        .collect(),
                })
            }
            Ok(_) => Err("unexpected reply to Current from the master".into()),
            Err(e) => Err(format!("Current reply from the master: {e}")),
        }
    }

    /// A socket bound to `ip:port` for `connect_from_port_20`. Ports below
    /// 1024 need privilege, so with privilege separation the master binds it.
    pub fn bind_data_port(&self, ip: std::net::IpAddr, port: u16) -> io::Result<OwnedFd> {
        let Self::Master { chan, .. } = self else {
            return crate::net::bind_source(ip, port);
        };
        let (mine, theirs) = ipc::pair()?;
        let req = MasterRequest::BindDataPort { ip, port };
        {
            let chan = chan.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ipc::send(chan.as_fd(), &req, Some(theirs.as_fd()))?;
        }
        drop(theirs);
        let mut buf = Vec::new();
        let fd = ipc::recv(mine.as_fd(), &mut buf)?.ok_or_else(|| io::Error::other("master closed the channel"))?;
        match (ipc::decode::<MasterReply>(&buf), fd) {
            (Ok(MasterReply::Bound), Some(fd)) => Ok(fd),
            (Ok(MasterReply::BindFailed { reason }), _) => {
                Err(io::Error::other(format!("master could not bind the data port: {reason}")))
            }
            (Ok(_), _) => Err(io::Error::other("unexpected reply to a bind from the master")),
            (Err(e), _) => Err(io::Error::other(format!("bind reply from the master: {e}"))),
        }
    }
}

/// The rate limit of each of `owners` under `cfg`: the rule of their login,
/// with their per-user files read again. A bad file refuses the reload.
fn reload_limits(cfg: &Config, owners: &[Owner]) -> Result<Vec<u64>, String> {
    owners
        .iter()
        .map(|(name, anonymous)| login::user_settings(cfg, name, *anonymous).map(|(_, p)| p.max_rate))
        .collect::<Result<_, _>>()
        .map_err(|d| d.reason)
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
    /// What the last good reload sent the front (configuration and TLS
    /// files), for a front that replaces it.
    last_reload: Mutex<Option<(Box<Config>, Option<crate::tls::TlsFiles>)>>,
    /// The bans the front made, with their end, for a front that replaces it.
    bans: Mutex<Vec<([u8; 16], std::time::Instant)>>,
    /// `seccomp_sandbox` at startup: workers confine themselves.
    seccomp: bool,
}

/// Fronts that may die within [`RESTART_WINDOW`] before ftpd gives up: a
/// front that cannot start (or dies at once every time) would otherwise be
/// restarted forever.
const RESTARTS_MAX: usize = 5;
const RESTART_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the master: starts the front with `start_front` (a fork: the child
/// never returns from it; the parent gets the front's pid and the master's
/// end of its channel), serves it, and starts a new one when it dies. Returns
/// the exit code for ftpd when the front ends on SIGTERM/SIGINT (or cannot
/// be kept running).
pub fn run_master(
    cfg: Config,
    source: crate::config::ConfigSource,
    anon_root: PathBuf,
    start_front: &mut dyn FnMut() -> io::Result<(i32, OwnedFd)>,
) -> i32 {
    let seccomp = cfg.seccomp_sandbox;
    // The first front is forked before any thread of the master exists.
    let (mut front_pid, mut chan) = match start_front() {
        Ok(x) => x,
        Err(e) => {
            warn!("master: cannot start the front: {e}");
            return 2;
        }
    };
    process::install_master_signals();
    process::front_started(front_pid);
    crate::worker::return_freed_memory();
    let master = Arc::new(Master {
        cfg: std::sync::RwLock::new(Arc::new(cfg)),
        source,
        anon_root,
        workers: Mutex::default(),
        next_id: AtomicU64::new(1),
        reloading: Mutex::new(()),
        last_reload: Mutex::new(None),
        bans: Mutex::default(),
        seccomp,
    });
    let queue = Arc::new(LoginQueue::default());
    for i in 0..login_threads() {
        let (m, q) = (Arc::clone(&master), Arc::clone(&queue));
        let started = std::thread::Builder::new().name(format!("login-{i}")).spawn(move || {
            loop {
                let (req, reply) = q.next();
                m.handle_login(req, &reply);
            }
        });
        if let Err(e) = started {
            warn!("master: cannot start a login thread: {e}");
        }
    }
    let m = Arc::clone(&master);
    if let Err(e) = std::thread::Builder::new().name("reaper".into()).spawn(move || m.reap_workers()) {
        warn!("master: cannot start the worker reaper: {e}");
    }
    let mut deaths = std::collections::VecDeque::new();
    let mut first = true;
    loop {
        let served = serve_front(&master, &queue, &chan);
        // A reload from now on waits for the next front.
        process::front_stopped_serving();
        // The front is gone (or broken): its sessions are lost; stop its
        // workers (each holds the dead front's channel) and find out why.
        master.stop_workers();
        let status = wait_front(front_pid);
        // Reaped: its pid may be reused.
        process::front_reaped();
        // The first front exiting on its own (not by a signal) before it
        // served failed to start (a config file it could not read, say): its
        // code is ftpd's, and restarting would fail the same way. One that
        // served and then exited with an error hit a bug: it is replaced.
        if process::stopping() || status.success() || (first && !served && status.code().is_some()) {
            return status.code().unwrap_or(1);
        }
        first = false;
        let why = crate::sandbox::describe_status(status);
        deaths.push_back(std::time::Instant::now());
        while deaths.front().is_some_and(|t| t.elapsed() > RESTART_WINDOW) {
            deaths.pop_front();
        }
        if deaths.len() > RESTARTS_MAX {
            error!(
                pid = front_pid,
                "master: the front {why}; {RESTARTS_MAX} restarts within {RESTART_WINDOW:?} already, stopping ftpd"
            );
            return 1;
        }
        error!(pid = front_pid, "master: the front {why}; its sessions are lost, starting a new front");
        drop(chan);
        match start_front() {
            Ok((pid, c)) => {
                (front_pid, chan) = (pid, c);
                process::front_started(pid);
                info!(pid, "master: new front started");
            }
            Err(e) => {
                error!("master: cannot start a new front: {e}; stopping ftpd");
                return 1;
            }
        }
    }
}

/// How the front ended. Its channel is closed: it has exited or is about
/// to (a shutdown, which may take a while), or it is broken and gets a
/// second before SIGKILL.
fn wait_front(pid: i32) -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut status = 0;
    loop {
        let flags = if process::stopping() { 0 } else { libc::WNOHANG };
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == pid || (r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            return std::process::ExitStatus::from_raw(status);
        }
        if r == 0 && std::time::Instant::now() >= deadline {
            warn!(pid, "master: the front closed its channel but still runs; killing it");
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Serves one front's requests until its channel ends. Returns whether the
/// front got as far as serving: it asks [`MasterRequest::Current`] as its
/// accept loop starts.
fn serve_front(master: &Arc<Master>, queue: &Arc<LoginQueue>, chan: &OwnedFd) -> bool {
    let mut buf = Vec::new();
    let mut serving = false;
    loop {
        match ipc::recv(chan.as_fd(), &mut buf) {
            Ok(Some(Some(reply_fd))) => match ipc::decode::<MasterRequest>(&buf) {
                // A reload reads files (the config, the users file, roots on
                // network file systems): on a thread of its own, so that this
                // loop keeps queueing logins meanwhile. One at a time.
                Ok(MasterRequest::Reload { owners }) => {
                    // Every SIGHUP so far: the files are read after this.
                    process::reloads_covered();
                    let m = Arc::clone(master);
                    let started = std::thread::Builder::new().name("reload".into()).spawn(move || {
                        let _one = m.reloading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        m.handle_reload(&owners, &reply_fd);
                    });
                    if let Err(e) = started {
                        warn!("master: cannot start the reload thread: {e}");
                    }
                }
                Ok(MasterRequest::Banned { net, millis }) => master.note_ban(net, millis),
                Ok(MasterRequest::Current) => {
                    serving = true;
                    let reloaded = master.last_reload.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                    let bans = master.running_bans();
                    if let Err(e) = ipc::send(reply_fd.as_fd(), &MasterReply::Current { reloaded, bans }, None) {
                        warn!("master: cannot hand the reloaded configuration to the new front: {e}");
                    }
                }
                // Binds are quick: answered here, not queued behind password checks.
                Ok(MasterRequest::BindDataPort { ip, port }) => master.handle_bind(ip, port, &reply_fd),
                // An anonymous login checks no password: decided here at
                // once. Queued, a crowd of them (a mirror just restarted, many
                // clients behind one NAT) was refused as busy past the
                // per-address limit that keeps one address from holding every
                // password check.
                Ok(MasterRequest::Login(req)) if login::is_anonymous(&req.user) && master.cfg().anonymous_enable => {
                    master.handle_login(req, &reply_fd);
                }
                Ok(MasterRequest::Login(req)) => {
                    if let Some(reply_fd) = queue.push(req.rhost.clone(), req, reply_fd) {
                        let _ = ipc::send(reply_fd.as_fd(), &MasterReply::Busy, None);
                    }
                }
                // Refused as a bad login was, and left for the front to notice.
                Err(e) => {
                    warn!("master: malformed request from the front ({e}); refused");
                    let _ =
                        ipc::send(reply_fd.as_fd(), &MasterReply::Denied { reply: "Login incorrect.".into() }, None);
                }
            },
            Ok(Some(None)) => {
                warn!("master: request without a reply channel; the front is broken");
                return serving;
            }
            Ok(None) => return serving,
            Err(e) => {
                warn!("master: channel error {e}; the front is broken");
                return serving;
            }
        }
    }
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
    fn push_back(&mut self, host: String, req: LoginRequest, reply: OwnedFd) {
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
    by_host: HashMap<String, std::collections::VecDeque<(LoginRequest, OwnedFd)>>,
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
    fn push(&self, host: String, req: LoginRequest, reply: OwnedFd) -> Option<OwnedFd> {
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
    fn next(&self) -> (LoginRequest, OwnedFd) {
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

    fn handle_login(&self, req: LoginRequest, reply: &OwnedFd) {
        let LoginRequest { user, password, rhost } = req;
        let outcome = login::decide(&self.cfg(), &self.anon_root, &user, &password.0, &rhost)
            .and_then(|g| self.worker_for(&g).map(|w| (g, w)));
        match outcome {
            Ok((grant, (worker, link))) => {
                let msg = MasterReply::Granted { grant, worker };
                if let Err(e) = ipc::send(reply.as_fd(), &msg, link.as_ref().map(AsFd::as_fd)) {
                    warn!(user, rhost, "master: cannot send a grant: {e}");
                    if link.is_some() {
                        // The front that asked is gone: nobody holds this
                        // worker's other end, and the next front must not be
                        // given its id.
                        self.stop_worker(worker);
                    }
                }
            }
            Err(denial) => {
                if denial.config_error {
                    warn!(user, rhost, reason = %denial.reason, "login refused");
                } else {
                    info!(user, rhost, reason = %denial.reason, "login refused");
                }
                let _ = ipc::send(reply.as_fd(), &MasterReply::Denied { reply: denial.reply }, None);
            }
        }
    }

    /// Re-reads the configuration for the front, and decides later logins
    /// with it. The front already runs with the startup settings that need
    /// privilege (listeners, logs); a reload changes what sessions do (rate
    /// limits, for running transfers too) and how logins are decided. The
    /// limits of logged-in `owners` are decided here, as at their login; a
    /// bad per-user file of one refuses the whole reload, so the master and
    /// the front never use different configurations.
    fn handle_reload(&self, owners: &[Owner], reply: &OwnedFd) {
        let loaded =
            self.reread().and_then(|(sent, cfg, tls)| reload_limits(&cfg, owners).map(|l| (sent, cfg, tls, l)));
        match loaded {
            Ok((sent, cfg, tls, limits)) => {
                // Re-read now so that a bad file is reported at reload
                // (the users read before stay in use).
                if !cfg.virtual_users_file.is_empty() {
                    let _ = auth::virtual_users(Path::new(&cfg.virtual_users_file));
                }
                for problem in crate::access::unservable_roots(&cfg, &self.anon_root) {
                    warn!("reload: {problem}");
                }
                let kept = (Box::new(sent.clone()), tls.clone());
                let msg = MasterReply::Reloaded { config: Box::new(sent), limits, tls };
                if let Err(e) = ipc::send(reply.as_fd(), &msg, None) {
                    // Too long (big TLS files) or a front gone: either way the
                    // front keeps its configuration, and so does the master.
                    let reason = format!(
                        "cannot send the reloaded configuration with its TLS files ({e}; a reload carries at most \
                         {} bytes): restart ftpd to use these files",
                        ipc::MAX_MSG
                    );
                    warn!("master: reload refused: {reason}");
                    let _ = ipc::send(reply.as_fd(), &MasterReply::ReloadFailed { reason }, None);
                    return;
                }
                *self.cfg.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(cfg);
                *self.last_reload.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(kept);
            }
            Err(err) => {
                warn!("master: reload refused: {err}");
                let _ = ipc::send(reply.as_fd(), &MasterReply::ReloadFailed { reason: err }, None);
            }
        }
    }

    /// Reads the configuration and, with FTPS, the certificate and key, and
    /// checks what the front will derive from them (banner file, passive
    /// address, the TLS setup), so that a bad file is refused here and the
    /// master and the front keep deciding with the same configuration.
    /// Returns the configuration as read (the front reports the options
    /// that need a restart), the same with the running values of those
    /// options (the one in force from now on), and the TLS files.
    fn reread(&self) -> Result<(Config, Config, Option<crate::tls::TlsFiles>), String> {
        let read = self.source.load()?;
        let mut cfg = read.clone();
        self.cfg().keep_running_values(&mut cfg, false);
        let tls = crate::tls::TlsFiles::read(&cfg)?;
        if let Some(files) = &tls {
            crate::tls::Tls::build(&cfg, files)?;
        }
        crate::settings::Settings::derive(cfg.clone(), None)?;
        Ok((read, cfg, tls))
    }

    /// Keeps a ban the front made. Bounded: a front that bans networks
    /// without end cannot grow the master, whose oldest copies go first.
    fn note_ban(&self, net: [u8; 16], millis: u64) {
        const MAX_KEPT: usize = 65_536;
        let now = std::time::Instant::now();
        let until = now + std::time::Duration::from_millis(millis.min(u64::from(u32::MAX) * 1000));
        let mut bans = self.bans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        bans.retain(|(n, end)| *end > now && *n != net);
        if bans.len() >= MAX_KEPT {
            bans.remove(0);
        }
        bans.push((net, until));
    }

    /// The bans still running, with the milliseconds each has left.
    fn running_bans(&self) -> Vec<([u8; 16], u64)> {
        let now = std::time::Instant::now();
        let mut bans = self.bans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        bans.retain(|(_, end)| *end > now);
        bans.iter()
            .map(|(n, end)| (*n, u64::try_from(end.duration_since(now).as_millis()).unwrap_or(u64::MAX)))
            .collect()
    }

    /// Binds `ftp_data_port` for the front; any other port is refused, so the
    /// front can never use the master to bind a privileged port of its choice.
    fn handle_bind(&self, ip: std::net::IpAddr, port: u16, reply: &OwnedFd) {
        let cfg = self.cfg();
        let result = if port == cfg.ftp_data_port && cfg.connect_from_port_20 {
            crate::net::bind_source(ip, port).map_err(|e| e.to_string())
        } else {
            Err("bad bind request".to_string())
        };
        match result {
            Ok(fd) => {
                let _ = ipc::send(reply.as_fd(), &MasterReply::Bound, Some(fd.as_fd()));
            }
            Err(e) => {
                warn!("master: {e}");
                let _ = ipc::send(reply.as_fd(), &MasterReply::BindFailed { reason: e }, None);
            }
        }
    }

    /// Stops every file worker: the front that held their channels is gone
    /// (each would end when its channel does, unless a copy of it is still
    /// held somewhere; a new front must not find them).
    fn stop_workers(&self) {
        let mut workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, (_, mut child)) in workers.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the worker `id`: its channel never reached a front.
    fn stop_worker(&self, id: u64) {
        let mut workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        workers.retain(|_, (wid, child)| {
            if *wid == id {
                let _ = child.kill();
                let _ = child.wait();
            }
            *wid != id
        });
    }

    /// Notices dead workers and says how each ended: a worker killed by
    /// its seccomp filter (or anything else) is logged when it happens, not
    /// when its identity next logs in.
    fn reap_workers(&self) {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            workers.retain(|(uid, ..), (_, child)| match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    info!(uid, pid = child.id(), "file worker exited");
                    false
                }
                Ok(Some(status)) => {
                    let why = crate::sandbox::describe_status(status);
                    error!(
                        uid,
                        pid = child.id(),
                        "master: a file worker {why}; its sessions' transfers fail, logins start a new one"
                    );
                    false
                }
                _ => true,
            });
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
        let child = spawn_worker(&worker_end, root.as_fd(), g, self.seccomp)
            .map_err(|e| oops(format!("cannot start a file worker: {e}")))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        info!(uid = g.uid, root = %g.root_dir.display(), pid = child.id(), "file worker started");
        workers.insert(key, (id, child));
        Ok((id, Some(front_end)))
    }
}

/// Starts `ftpd --ftpd-worker` with the channel on fd 3 and the root on fd 4,
/// already switched to the user's groups, gid and uid.
fn spawn_worker(sock: &OwnedFd, root: std::os::fd::BorrowedFd<'_>, g: &Grant, seccomp: bool) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let (sock_fd, root_fd) = (sock.as_raw_fd(), root.as_raw_fd());
    let (uid, gid, groups) = (g.uid, g.gid, g.groups.clone());
    let mut cmd = Command::new(exe);
    cmd.arg("--ftpd-worker").stdin(std::process::Stdio::null());
    if seccomp {
        cmd.arg("seccomp");
    }
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

/// Entry point of `ftpd --ftpd-worker [seccomp]` (fd 3: channel, fd 4:
/// root); `seccomp`: install the worker's filter (`seccomp_sandbox`).
pub fn worker_main(seccomp: bool) -> i32 {
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
    // Before the first request and before any thread: every listing thread
    // inherits the filter.
    if seccomp && let Err(e) = crate::sandbox::install(crate::sandbox::Role::Worker) {
        eprintln!("ftpd file worker: {e}");
        return 2;
    }
    match crate::worker::serve(&sock, &root) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ftpd file worker: {e}");
            2
        }
    }
}

/// Turns the current (root) process into the front: parent-death signal, then
/// the front user's credentials (`acct`, looked up before any fork) and no
/// way back.
pub fn become_front(acct: &auth::Account) -> Result<(), String> {
    // SAFETY: plain system calls; this process is still single-threaded.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() == 1 {
            return Err("the master exited during startup".into());
        }
        if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(acct.gid) != 0 || libc::setuid(acct.uid) != 0 {
            return Err(format!("cannot switch to user {}: {}", acct.name, io::Error::last_os_error()));
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
