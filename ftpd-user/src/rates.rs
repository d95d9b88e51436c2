//! Bandwidth limits: which share of a limit each transfer gets, and how a
//! transfer keeps to it.
//!
//! With `ftpd_rate_scope=user|ip`, one limit is split evenly between the
//! concurrent transfers of a user (or a client IP), and re-split whenever one
//! starts or ends; with `session` each transfer has the whole limit. Each
//! transfer reads its current share from a [`Flow`], and a [`Pacer`] keeps
//! its data connection to it: downloads through the socket's own TCP pacing
//! (`SO_MAX_PACING_RATE`) plus a schedule of what is handed to the kernel,
//! uploads by reading no faster than the share (TCP flow control slows the
//! client). Both are tied to the data socket, never to a port range, so the
//! same limit holds in passive and active mode, with or without
//! `pasv_min_port`/`pasv_max_port`, on both data planes.

use std::{
    collections::HashMap,
    os::fd::BorrowedFd,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// One transfer's share of a limit.
#[derive(Debug, Default)]
pub struct Flow {
    /// Current rate in bytes per second; 0: no limit.
    pub rate: AtomicU64,
}

/// The limit of one owner's sessions, shared by all of them: a reload
/// writes it once, and every session that logged in before reads the new
/// value for its next transfer without looking anything up.
#[derive(Debug)]
pub struct Limit {
    owner: Owner,
    /// Bytes per second (0: none); [`UNDECIDED`] until a reload decides it.
    bytes_per_sec: AtomicU64,
}

/// No reload has decided the owner's limit since its first session logged
/// in: each session keeps to its own config, which a `user_config_dir` file
/// edited between two logins can make differ. No configured limit is this
/// high (they are 32-bit).
const UNDECIDED: u64 = u64::MAX;

impl Limit {
    /// The limit a session whose own config says `configured` uses for its
    /// next transfer.
    pub fn get(&self, configured: u64) -> u64 {
        self.decided().unwrap_or(configured)
    }

    fn decided(&self) -> Option<u64> {
        Some(self.bytes_per_sec.load(Ordering::Relaxed)).filter(|&v| v != UNDECIDED)
    }
}

/// A group's limit and the transfers sharing it.
#[derive(Debug)]
struct Group {
    limit: u64,
    /// The limit cell of the session that started the group's last
    /// transfer: a reload that writes it re-splits the group.
    cell: Arc<Limit>,
    flows: Vec<Arc<Flow>>,
    /// Transfers of the same group on other nodes of a fleet
    /// (`ftpd_cluster_redis`): the limit is split over them too.
    elsewhere: u64,
}

/// Whose limit a rate group is: the user name, and whether the session is
/// anonymous (the rule for which limit applies is [`crate::policy::Policy::decide`]).
pub type Owner = (String, bool);

/// The transfers sharing each limit, by group key, and the limit cells of
/// the owners logged in.
#[derive(Debug, Default)]
pub struct Rates {
    groups: Mutex<HashMap<String, Group>>,
    /// Each owner's cell while a session or a running group holds it: a
    /// reload finds the owners here and writes their cells. Weak, so that
    /// the cell of an owner whose last session ended goes with it.
    cells: Mutex<HashMap<Owner, Weak<Limit>>>,
    /// Woken when a limited group a fleet shares gains or loses a transfer,
    /// so that the fleet hears of it at once (see `cluster::run`).
    pub changed: Arc<tokio::sync::Notify>,
}

/// Whether a group's limit is shared by a fleet: user and IP scopes (a
/// session's own group means nothing on another node), when limited.
fn shareable(key: &str, limit: u64) -> bool {
    limit > 0 && !key.starts_with("s:")
}

/// A running transfer's membership; leaving the group on drop re-splits it.
pub struct FlowGuard {
    rates: Arc<Rates>,
    key: String,
    /// This transfer's share.
    pub flow: Arc<Flow>,
}

/// A logged-in session's hold on its owner's limit cell; the cell leaves
/// [`Rates`] with the last hold on it.
pub struct SessionLimit {
    rates: Arc<Rates>,
    /// `None` only while dropping.
    cell: Option<Arc<Limit>>,
}

impl SessionLimit {
    /// The limit this session uses for its next transfer: what the last
    /// reload decided for its owner, else `configured` (its own config).
    pub fn get(&self, configured: u64) -> u64 {
        self.cell.as_ref().map_or(configured, |c| c.get(configured))
    }

    /// Adds a transfer of this session to group `key` (see [`Rates::start`]).
    pub fn start(&self, key: String, configured: u64) -> FlowGuard {
        let limit = self.get(configured);
        match &self.cell {
            Some(cell) => Rates::start(&self.rates, key, cell, limit),
            None => unreachable!("a session's limit is released only on drop"),
        }
    }
}

impl Drop for SessionLimit {
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take() {
            release(&self.rates, cell);
        }
    }
}

/// Drops a hold on a cell, and the cell's entry with the last one. Under
/// the lock a login takes, so that no login revives the cell meanwhile.
fn release(rates: &Rates, cell: Arc<Limit>) {
    let mut cells = lock(&rates.cells);
    let owner = cell.owner.clone();
    drop(cell);
    if cells.get(&owner).is_some_and(|w| w.strong_count() == 0) {
        cells.remove(&owner);
    }
}

impl Rates {
    /// Adds a transfer to group `key`, whose limit is `limit` (0: none), of
    /// the session holding `cell`. Every transfer joins, limited or not, so
    /// a reload can give a running transfer a limit it started without.
    pub fn start(rates: &Arc<Self>, key: String, cell: &Arc<Limit>, limit: u64) -> FlowGuard {
        let flow = Arc::new(Flow::default());
        let replaced = {
            let mut groups = lock(&rates.groups);
            let group = groups.entry(key.clone()).or_insert_with(|| Group {
                limit,
                cell: Arc::clone(cell),
                flows: Vec::new(),
                elsewhere: 0,
            });
            group.limit = limit;
            let replaced = std::mem::replace(&mut group.cell, Arc::clone(cell));
            group.flows.push(Arc::clone(&flow));
            resplit(group);
            replaced
        };
        if !Arc::ptr_eq(&replaced, cell) {
            release(rates, replaced);
        }
        if shareable(&key, limit) {
            rates.changed.notify_one();
        }
        FlowGuard { rates: Arc::clone(rates), key, flow }
    }

    /// A session of `owner` logged in: it shares the owner's cell with the
    /// owner's other sessions, or makes it, so that a reload finds it.
    pub fn login(rates: &Arc<Self>, owner: Owner) -> SessionLimit {
        let mut cells = lock(&rates.cells);
        let cell = cells.get(&owner).and_then(Weak::upgrade).unwrap_or_else(|| {
            let cell = Arc::new(Limit { owner: owner.clone(), bytes_per_sec: AtomicU64::new(UNDECIDED) });
            cells.insert(owner, Arc::downgrade(&cell));
            cell
        });
        drop(cells);
        SessionLimit { rates: Arc::clone(rates), cell: Some(cell) }
    }
}

fn resplit(Group { limit, flows, elsewhere, .. }: &mut Group) {
    if flows.is_empty() {
        return;
    }
    let share = if *limit == 0 { 0 } else { (*limit / (flows.len() as u64 + *elsewhere)).max(1) };
    tracing::debug!(transfers = flows.len(), elsewhere, share, "rate group re-split");
    for f in flows.iter() {
        f.rate.store(share, Ordering::Relaxed);
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        let mut groups = lock(&self.rates.groups);
        if let Some(group) = groups.get_mut(&self.key) {
            group.flows.retain(|f| !Arc::ptr_eq(f, &self.flow));
            if shareable(&self.key, group.limit) {
                self.rates.changed.notify_one();
            }
            if group.flows.is_empty() {
                if let Some(group) = groups.remove(&self.key) {
                    drop(groups);
                    release(&self.rates, group.cell);
                }
            } else {
                resplit(group);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The limited rate groups a fleet shares (user and IP scopes: a session's
/// own group means nothing on another node), with this node's transfers in
/// each.
pub fn fleet_groups(rates: &Rates) -> Vec<(String, u64)> {
    lock(&rates.groups)
        .iter()
        .filter(|(key, g)| shareable(key, g.limit))
        .map(|(key, g)| (key.clone(), g.flows.len() as u64))
        .collect()
}

/// Splits each group's limit over the transfers of the other nodes too:
/// `elsewhere` has their count by group (absent: none).
pub fn set_elsewhere(rates: &Rates, elsewhere: &HashMap<String, u64>) {
    for (key, group) in lock(&rates.groups).iter_mut() {
        let n = elsewhere.get(key).copied().unwrap_or(0);
        if group.elsewhere != n {
            group.elsewhere = n;
            resplit(group);
        }
    }
}

/// The users whose limits a reload recomputes: those logged in and those
/// owning running transfers.
pub fn owners(rates: &Rates) -> Vec<Owner> {
    let mut cells = lock(&rates.cells);
    cells.retain(|_, w| w.strong_count() > 0);
    cells.keys().cloned().collect()
}

/// Gives every logged-in user and every running rate group its new limit
/// (decided by the master, as at login): from none to one, from one to
/// another, and back to none. Writes each owner's cell, which its sessions
/// read for their next transfer, and re-splits the groups whose cell now
/// says another limit. Returns how many running groups changed.
pub fn apply(rates: &Rates, limits: HashMap<Owner, u64>) -> usize {
    {
        let cells = lock(&rates.cells);
        for (owner, limit) in limits {
            if let Some(cell) = cells.get(&owner).and_then(Weak::upgrade) {
                cell.bytes_per_sec.store(limit, Ordering::Relaxed);
            }
        }
    }
    let mut changed = 0;
    for group in lock(&rates.groups).values_mut() {
        if let Some(limit) = group.cell.decided().filter(|&l| l != group.limit) {
            group.limit = limit;
            resplit(group);
            changed += 1;
        }
    }
    changed
}

/// How far ahead of its schedule a paced download may hand bytes to the
/// kernel once TCP pacing is in force: enough that the socket never runs dry
/// (TCP gives a flow that fell behind a burst of credit), few enough wake-ups
/// (two a second) that thousands of slow clients cost little CPU.
const LEAD: f64 = 1.0;
/// The step of the schedule where nothing else paces: 50 ms of the rate.
const SLICE: f64 = 0.05;
/// The smallest step, for very low rates.
const MIN_SLICE: f64 = 1024.0;
/// The longest the schedule sleeps before it looks at the share again.
const MAX_NAP: f64 = 0.25;
/// TCP paces nothing until a connection has sent this many data segments
/// (`tcp_update_skb_after_send`); on loopback one segment is 64 KiB, so a
/// whole small file could leave unpaced. The schedule covers that start.
const UNPACED_SEGMENTS: u32 = 10;

/// Keeps one transfer's data connection to its flow's current share.
///
/// Sending, the socket's `SO_MAX_PACING_RATE` is set to the share before the
/// first byte and again whenever the share changes, and the bytes handed to
/// the kernel follow a schedule: one 50 ms step at a time until TCP pacing
/// is in force (or always, when the socket refused the pacing rate), then at
/// most [`LEAD`] ahead. Receiving, bytes are read one step at a time on the
/// schedule. A change of share restarts the schedule from that moment.
#[derive(Debug)]
pub struct Pacer {
    flow: Arc<Flow>,
    /// The share the schedule runs at; `None` before the first step.
    rate: Option<u64>,
    since: Instant,
    /// Seconds of transfer the bytes moved since `since` are worth.
    due: f64,
    /// Whether this end sends (and so may use TCP pacing).
    sending: bool,
    /// The socket took the pacing rate.
    kernel: bool,
    /// TCP pacing is in force on the socket (past its first segments).
    warm: bool,
    /// A limit applied at some point of the transfer.
    limited: bool,
}

impl Pacer {
    /// A pacer for a download (this end sends).
    pub fn sending(flow: Arc<Flow>) -> Self {
        Self::new(flow, true)
    }

    /// A pacer for an upload (this end receives).
    pub fn receiving(flow: Arc<Flow>) -> Self {
        Self::new(flow, false)
    }

    fn new(flow: Arc<Flow>, sending: bool) -> Self {
        Self { flow, rate: None, since: Instant::now(), due: 0.0, sending, kernel: false, warm: false, limited: false }
    }

    /// Waits until the schedule lets more bytes through `sock`, and returns
    /// how many may be moved now (at most `max`, at least 1).
    pub async fn budget(&mut self, sock: BorrowedFd<'_>, max: usize) -> usize {
        loop {
            let r = self.flow.rate.load(Ordering::Relaxed);
            if self.rate != Some(r) {
                self.restart(sock, r);
            }
            if r == 0 {
                return max;
            }
            let rf = r as f64;
            let slice = (rf * SLICE).max(MIN_SLICE);
            if self.kernel && !self.warm {
                self.warm = data_segments_out(sock).is_some_and(|n| n >= UNPACED_SEGMENTS);
            }
            // `lead`: bytes that may be ahead of the schedule; `step`: the
            // least worth waking up for. The last second goes in steps too:
            // TCP sends what is queued in segments of up to two MSS (128 KiB
            // on loopback) and paces the gap *after* each, so a big last
            // segment would arrive early by its own length.
            let (lead, step) = if self.kernel && self.warm && max as f64 > rf * LEAD {
                (rf * LEAD, rf * LEAD / 2.0)
            } else {
                (slice, slice)
            };
            let ready = self.due + (step - lead) / rf;
            let now = self.since.elapsed().as_secs_f64();
            if ready > now {
                // In naps, so that a new share (a reload, a re-split) is
                // seen within one: after a big cut the wait can be long.
                tokio::time::sleep(Duration::from_secs_f64((ready - now).min(MAX_NAP))).await;
                continue;
            }
            let allowed = (now - self.due) * rf + lead;
            // Truncation is the intent: whole bytes, at least one.
            return (allowed.max(1.0) as usize).min(max).max(1);
        }
    }

    /// Applies a changed share to `sock` at once. A write that waits for room
    /// in the socket calls this every [`MAX_NAP`] ([`Pacer::while_waiting`]): after a deep cut the socket
    /// drains at the old, low pacing rate, and a raise must not wait for it.
    pub fn refresh(&mut self, sock: BorrowedFd<'_>) {
        let r = self.flow.rate.load(Ordering::Relaxed);
        if self.rate.is_some_and(|old| old != r) {
            self.restart(sock, r);
        }
    }

    /// Runs `wait` (a write waiting for room in `sock`) and meanwhile
    /// applies a changed share to `sock` every [`MAX_NAP`] (see
    /// [`Pacer::refresh`]).
    pub async fn while_waiting<T>(&mut self, sock: BorrowedFd<'_>, wait: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(wait);
        loop {
            tokio::select! {
                // The write first: one with room at once (a small file)
                // never sets the timer, which would wake the runtime's I/O
                // driver for nothing.
                biased;
                r = &mut wait => return r,
                () = tokio::time::sleep(Duration::from_secs_f64(MAX_NAP)) => self.refresh(sock),
            }
        }
    }

    /// Starts the schedule again at share `r` (0: none), applying it to the
    /// socket's pacing rate when this end sends.
    fn restart(&mut self, sock: BorrowedFd<'_>, r: u64) {
        // Bytes already handed over ahead of the old schedule are still
        // ahead: they count against the new one (a re-split share would
        // otherwise overshoot by up to `LEAD` of the old rate).
        let ahead = match self.rate {
            Some(old) if old != 0 => (self.due - self.since.elapsed().as_secs_f64()).max(0.0) * old as f64,
            _ => 0.0,
        };
        self.rate = Some(r);
        self.since = Instant::now();
        self.due = if r == 0 { 0.0 } else { ahead / r as f64 };
        self.warm = false;
        self.limited |= r != 0;
        // A socket never capped has no pacing rate to lift: an unlimited
        // download makes no call (one per small RETR).
        if self.sending && (r != 0 || self.kernel) {
            self.kernel = match set_max_pacing_rate(sock, r) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "SO_MAX_PACING_RATE refused; the download is paced in userspace");
                    false
                }
            };
        }
    }

    /// Whether the last step ran without a limit (no share to keep to).
    pub fn unlimited(&self) -> bool {
        self.rate.is_none_or(|r| r == 0)
    }

    /// Records `n` bytes moved.
    pub fn moved(&mut self, n: usize) {
        if let Some(r) = self.rate.filter(|&r| r != 0) {
            self.due += n as f64 / r as f64;
        }
    }

    /// How the transfer was limited, for the metrics: `None` if it never was;
    /// `tcp_pacing` (the socket's pacing rate and the schedule) or
    /// `userspace` (the schedule alone: uploads, or a socket that refused).
    pub fn how(&self) -> Option<&'static str> {
        self.limited.then_some(if self.kernel { "tcp_pacing" } else { "userspace" })
    }
}

/// Caps a socket's send rate with TCP pacing (`u32::MAX`: no cap). TCP paces
/// by itself without the fq qdisc (Linux 4.20 and later).
fn set_max_pacing_rate(sock: BorrowedFd<'_>, rate: u64) -> std::io::Result<()> {
    let v: libc::c_uint = if rate == 0 { u32::MAX } else { u32::try_from(rate).unwrap_or(u32::MAX - 1) };
    // SAFETY: setsockopt reads `size_of::<c_uint>()` bytes from `&v`.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// `tcpi_data_segs_out` of a TCP socket.
fn data_segments_out(sock: BorrowedFd<'_>) -> Option<u32> {
    // SAFETY: tcp_info is plain data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let r = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    (r == 0).then_some(info.tcpi_data_segs_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(g: &FlowGuard) -> u64 {
        g.flow.rate.load(Ordering::Relaxed)
    }

    fn owner(name: &str) -> Owner {
        (name.to_string(), false)
    }

    #[test]
    fn a_reload_writes_the_cell_its_users_sessions_share() {
        let rates = Arc::new(Rates::default());
        let first = Rates::login(&rates, owner("alice"));
        let second = Rates::login(&rates, owner("alice"));
        let bob = Rates::login(&rates, owner("bob"));
        // Before any reload each session keeps to its own config (a
        // `user_config_dir` file may have changed between two logins).
        assert_eq!((first.get(1000), second.get(2000)), (1000, 2000));
        let running = first.start("u:alice".into(), 1000);
        let own = bob.start("s:9".into(), 0);
        let mut listed = owners(&rates);
        listed.sort();
        assert_eq!(listed, vec![owner("alice"), owner("bob")]);
        let limits = HashMap::from([(owner("alice"), 500), (owner("bob"), 300)]);
        assert_eq!(apply(&rates, limits), 2, "both running groups re-split");
        assert_eq!((share(&running), share(&own)), (500, 300));
        assert_eq!((first.get(1000), second.get(2000), bob.get(0)), (500, 500, 300));
        // A later login of alice shares the cell the reload wrote; a reload
        // that leaves a limit as it is re-splits nothing.
        let third = Rates::login(&rates, owner("alice"));
        assert_eq!(third.get(9999), 500);
        let limits = HashMap::from([(owner("alice"), 500), (owner("bob"), 0)]);
        assert_eq!(apply(&rates, limits), 1);
        assert_eq!((share(&running), share(&own)), (500, 0));
        // The cell goes with the owner's last session and last transfer:
        // alice's next session reads its own config again.
        drop((first, second, third));
        assert_eq!(owners(&rates).len(), 2, "alice's running transfer still holds her cell");
        drop(running);
        assert_eq!(owners(&rates), vec![owner("bob")]);
        assert_eq!(lock(&rates.cells).len(), 1, "no entry left for alice");
        assert_eq!(Rates::login(&rates, owner("alice")).get(1000), 1000);
        drop((own, bob));
        assert!(lock(&rates.cells).is_empty() && lock(&rates.groups).is_empty());
    }

    #[test]
    fn a_groups_limit_is_split_over_the_fleets_transfers_and_back() {
        let rates = Arc::new(Rates::default());
        let alice = Rates::login(&rates, owner("alice"));
        let a = alice.start("u:alice".into(), 1_000_000);
        let b = alice.start("u:alice".into(), 1_000_000);
        let own = alice.start("s:7".into(), 1_000_000);
        let free = Rates::login(&rates, owner("bob")).start("u:bob".into(), 0);
        assert_eq!((share(&a), share(&b)), (500_000, 500_000));
        let mut groups = fleet_groups(&rates);
        groups.sort();
        assert_eq!(groups, vec![("u:alice".to_string(), 2)], "limited user/IP groups only: {groups:?}");
        // Two more of alice's transfers run on other nodes.
        set_elsewhere(&rates, &HashMap::from([("u:alice".to_string(), 2)]));
        assert_eq!((share(&a), share(&b)), (250_000, 250_000));
        assert_eq!(share(&own), 1_000_000, "a session's own limit is never shared");
        assert_eq!(share(&free), 0);
        drop(b);
        assert_eq!(share(&a), 333_333, "re-split when a local transfer ends");
        // The fleet forgotten (Redis out of reach): the node's own limit.
        set_elsewhere(&rates, &HashMap::new());
        assert_eq!(share(&a), 1_000_000);
    }
}
