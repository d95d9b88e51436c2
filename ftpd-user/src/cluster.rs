//! Limits shared by a fleet of nodes through Redis (`ftpd_cluster_redis`).
//!
//! Each node keeps its own counts, as without a fleet, and publishes them:
//! in Redis, one hash per limited thing (all connections, one client IP,
//! one rate group) holds one field per node, `count:expiry` in Redis's own
//! milliseconds. A node adds the live fields of the other nodes to its own
//! count when it decides: a client at `max_per_ip` on node A is refused on
//! node B; a rate group's limit is split over the transfers of every node.
//!
//! Every field is a lease: a node rewrites its fields a few times per lease
//! (`ftpd_cluster_lease`), so the fields of a node that died stop counting
//! when their lease ends. A node's own count is always its local one, so
//! every write repairs whatever a lost write left behind.
//!
//! Redis out of reach (down, slow, wrong address): each node falls back to
//! its local limits, says so once in the log and in `ftpd_cluster_up`, keeps
//! serving, and rejoins by itself when Redis answers again.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{info, warn};

/// Longest an admission waits for Redis before it decides locally.
const ADMIT_WAIT: Duration = Duration::from_millis(500);
/// How often counts that changed are published, and the other nodes'
/// rate-group counts read: a node re-splits a rate group within this time
/// of a transfer starting or ending on another node (at once for its own).
pub const SYNC_EVERY: Duration = Duration::from_millis(100);
/// Longest one connection attempt or command may take.
const REDIS_WAIT: Duration = Duration::from_secs(1);

/// Lua shared by the scripts: the server's clock, and a hash's live fields
/// of other nodes (expired ones are removed on the way).
const COMMON: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node, lease = ARGV[1], tonumber(ARGV[2])
local function others(key)
  local sum, all = 0, redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if all[i] ~= node then
      local c, e = string.match(all[i + 1], '^(%d+):(%d+)$')
      if c and tonumber(e) > now then sum = sum + tonumber(c) else redis.call('HDEL', key, all[i]) end
    end
  end
  return sum
end
local function put(key, count)
  if count > 0 then
    redis.call('HSET', key, node, count .. ':' .. (now + lease))
    redis.call('PEXPIRE', key, 2 * lease)
  else
    redis.call('HDEL', key, node)
  end
end
";

/// KEYS: the counters; ARGV: node, lease, then this node's count for each
/// key. Writes them; returns the other nodes' sum for each key.
const SYNC: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  put(key, tonumber(ARGV[2 + i]))
  out[i] = others(key)
end
return out
";

/// KEYS: all connections, this client IP's; ARGV: node, lease, this node's
/// counts with the new connection, `max_clients`, `max_per_ip`. Returns 0
/// (admitted), 1 (over `max_clients`) or 2 (over `max_per_ip`); a refused
/// connection is not counted.
const ADMIT: &str = r"
local total, ip = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_total, max_ip = tonumber(ARGV[5]), tonumber(ARGV[6])
local verdict = 0
if max_total > 0 and others(KEYS[1]) + total > max_total then
  verdict = 1
elseif max_ip > 0 and others(KEYS[2]) + ip > max_ip then
  verdict = 2
end
if verdict ~= 0 then total, ip = total - 1, ip - 1 end
put(KEYS[1], total)
put(KEYS[2], ip)
return verdict
";

/// What the fleet says about a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within every fleet-wide cap (or Redis is out of reach).
    Admit,
    /// The fleet holds `max_clients` connections.
    MaxClients,
    /// The fleet holds `max_per_ip` connections from this address.
    MaxPerIp,
}

/// One node's link to the fleet's shared counts.
pub struct Cluster {
    /// This node's field name in every hash (`ftpd_cluster_node`).
    pub node: String,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    lease: Duration,
    /// Whether the last exchange with Redis worked.
    up: AtomicBool,
    /// Client IPs whose local count changed since the last publication.
    dirty: Mutex<HashSet<IpAddr>>,
    sync: redis::Script,
    admit: redis::Script,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).field("up", &self.up).finish_non_exhaustive()
    }
}

/// The Redis key of all connections.
const TOTAL_KEY: &str = "ftpd:conns";

fn ip_key(ip: IpAddr) -> String {
    format!("ftpd:ip:{ip}")
}

fn rate_key(group: &str) -> String {
    format!("ftpd:rate:{group}")
}

/// The name a node goes by without `ftpd_cluster_node`: its host name.
pub fn default_node() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

impl Cluster {
    /// A link to the Redis at `url` (checked by the config, already resolved
    /// to an address), not yet connected.
    ///
    /// # Errors
    /// A URL the redis crate does not take.
    pub fn new(url: &str, node: String, lease: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("ftpd_cluster_redis={url:?}: {e}"))?;
        Ok(Self {
            node,
            client,
            conn: tokio::sync::Mutex::new(None),
            lease,
            up: AtomicBool::new(false),
            dirty: Mutex::default(),
            sync: redis::Script::new(&format!("{COMMON}{SYNC}")),
            admit: redis::Script::new(&format!("{COMMON}{ADMIT}")),
        })
    }

    /// Whether Redis answered the last request.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Notes that the local count of `ip` changed.
    pub fn touch(&self, ip: IpAddr) {
        self.dirty.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(ip);
    }

    fn take_dirty(&self) -> HashSet<IpAddr> {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    async fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            let cfg = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(REDIS_WAIT))
                .set_response_timeout(Some(REDIS_WAIT));
            *slot = self.client.get_multiplexed_async_connection_with_config(&cfg).await.ok();
        }
        slot.clone()
    }

    /// Records how the last exchange went; logs each change once. Returns
    /// whether this was a fall back (up to down).
    async fn mark(&self, ok: bool, error: Option<&redis::RedisError>) -> bool {
        if !ok {
            *self.conn.lock().await = None;
        }
        let was = self.up.swap(ok, Ordering::Relaxed);
        match (was, ok) {
            (false, true) => info!(node = %self.node, "cluster: Redis reachable; limits are shared with the fleet"),
            (true, false) => warn!(
                node = %self.node,
                error = %error.map_or_else(|| "no answer".to_string(), ToString::to_string),
                "cluster: Redis out of reach; each limit holds for this node alone until it is back"
            ),
            _ => {}
        }
        was && !ok
    }

    /// The fleet's verdict on a connection from `ip` that made this node's
    /// counts `total` and `per_ip` (the new one included). Redis out of
    /// reach: [`Verdict::Admit`] (the node's own caps have already held).
    /// The second value says whether Redis was just found out of reach.
    pub async fn admit(
        &self,
        ip: IpAddr,
        total: u32,
        per_ip: u32,
        max_clients: u32,
        max_per_ip: u32,
    ) -> (Verdict, bool) {
        self.touch(ip);
        if !self.up() {
            return (Verdict::Admit, false);
        }
        let Some(mut conn) = self.connection().await else {
            return (Verdict::Admit, self.mark(false, None).await);
        };
        let mut call = self.admit.prepare_invoke();
        call.key(TOTAL_KEY)
            .key(ip_key(ip))
            .arg(&self.node)
            .arg(lease_ms(self.lease))
            .arg(total)
            .arg(per_ip)
            .arg(max_clients)
            .arg(max_per_ip);
        let call = tokio::time::timeout(ADMIT_WAIT, call.invoke_async::<i64>(&mut conn)).await;
        match call {
            Ok(Ok(1)) => (Verdict::MaxClients, false),
            Ok(Ok(2)) => (Verdict::MaxPerIp, false),
            Ok(Ok(_)) => (Verdict::Admit, false),
            Ok(Err(e)) => (Verdict::Admit, self.mark(false, Some(&e)).await),
            Err(_) => (Verdict::Admit, self.mark(false, None).await),
        }
    }

    /// Publishes `counts` (this node's) and returns the other nodes' sum for
    /// each, or `None` when Redis is out of reach; the bool says whether it
    /// was just found so.
    pub async fn exchange(&self, counts: &[(String, u64)]) -> (Option<Vec<u64>>, bool) {
        let Some(mut conn) = self.connection().await else {
            return (None, self.mark(false, None).await);
        };
        let mut call = self.sync.prepare_invoke();
        call.arg(&self.node).arg(lease_ms(self.lease));
        for (key, _) in counts {
            call.key(key);
        }
        for (_, n) in counts {
            call.arg(*n);
        }
        match call.invoke_async::<Vec<u64>>(&mut conn).await {
            Ok(others) if others.len() == counts.len() => {
                self.mark(true, None).await;
                (Some(others), false)
            }
            Ok(_) => (None, self.mark(false, None).await),
            Err(e) => (None, self.mark(false, Some(&e)).await),
        }
    }
}

fn lease_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What [`run`] needs from the node: its counts, and where the fleet's
/// answers go.
pub trait Node: Send + Sync + 'static {
    /// This node's connections: all, and per client IP.
    fn conns(&self) -> (u32, HashMap<IpAddr, u32>);
    /// The rate groups shared across the fleet, with this node's transfers
    /// in each.
    fn rate_groups(&self) -> Vec<(String, u64)>;
    /// The other nodes' transfers in each rate group (empty: none, or
    /// Redis out of reach).
    fn set_fleet_flows(&self, others: &HashMap<String, u64>);
    /// Redis was found out of reach (metrics).
    fn fell_back(&self);
    /// Whether Redis answers, for the metrics.
    fn set_up(&self, up: bool);
}

/// Publishes this node's counts and reads the fleet's, every
/// [`SYNC_EVERY`] and whenever `changed` is woken (a shared rate group
/// gained or lost a transfer here): what changed at once, everything a few
/// times per lease.
pub async fn run(cluster: Arc<Cluster>, node: Arc<dyn Node>, changed: Arc<tokio::sync::Notify>) {
    let mut tick = tokio::time::interval(SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let refresh = cluster.lease / 3;
    let mut last_full: Option<Instant> = None;
    // Rate groups written with transfers last time: a group that ended has
    // no entry any more, so it gets a 0 (its field removed). Client
    // addresses need no such list: a change of their count marks them
    // dirty, and one left unchanged stays published until its renewal.
    let mut running_groups: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = changed.notified() => {}
        }
        let full = last_full.is_none_or(|t| t.elapsed() >= refresh) || !cluster.up();
        let dirty = cluster.take_dirty();
        let (total, per_ip) = node.conns();
        let groups = node.rate_groups();
        let mut counts: Vec<(String, u64)> = vec![(TOTAL_KEY.to_string(), u64::from(total))];
        for ip in &dirty {
            counts.push((ip_key(*ip), u64::from(per_ip.get(ip).copied().unwrap_or(0))));
        }
        if full {
            for (ip, n) in &per_ip {
                if !dirty.contains(ip) {
                    counts.push((ip_key(*ip), u64::from(*n)));
                }
            }
        }
        let rate_at = counts.len();
        counts.extend(groups.iter().map(|(g, n)| (rate_key(g), *n)));
        let running: HashSet<String> = groups.iter().filter(|(_, n)| *n > 0).map(|(g, _)| rate_key(g)).collect();
        counts.extend(running_groups.difference(&running).map(|k| (k.clone(), 0)));
        let (answer, fell) = cluster.exchange(&counts).await;
        if fell {
            node.fell_back();
        }
        node.set_up(answer.is_some());
        match answer {
            Some(others) => {
                if full {
                    last_full = Some(Instant::now());
                }
                running_groups = running;
                let fleet: HashMap<String, u64> = groups
                    .iter()
                    .zip(&others[rate_at..rate_at + groups.len()])
                    .map(|((g, _), o)| (g.clone(), *o))
                    .collect();
                node.set_fleet_flows(&fleet);
            }
            None => {
                // Published again in full once Redis is back.
                for ip in dirty {
                    cluster.touch(ip);
                }
                node.set_fleet_flows(&HashMap::new());
                tokio::time::sleep(REDIS_WAIT).await;
            }
        }
    }
}
