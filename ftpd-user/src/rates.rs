//! Bandwidth shares: with `ftpd_rate_scope=user|ip`, one limit is split
//! evenly between the concurrent transfers of a user (or a client IP), and
//! re-split whenever one starts or ends. Each transfer reads its current share
//! from a `Flow`; downloads in the kernel plane also get it through the
//! `PACING` map, which sock_ops applies to the live socket on its next RTT.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::server::{Plane, Shared};

/// One transfer's share of a limit.
#[derive(Debug)]
pub struct Flow {
    /// Current rate in bytes per second.
    pub rate: AtomicU64,
    /// The passive data port paced through the kernel map (0: none).
    port: u16,
}

/// A group's limit and the transfers sharing it.
type Group = (u64, Vec<Arc<Flow>>);

/// Whose limit a rate group is: user name, and whether anonymous rules apply.
pub type Owner = (String, bool);

/// The transfers sharing each limit, by group key.
#[derive(Debug, Default)]
pub struct Rates {
    groups: Mutex<HashMap<String, Group>>,
    /// The owner of each group, for reloads.
    owners: Mutex<HashMap<String, Owner>>,
    /// Limits set by a reload, for transfers that start afterwards.
    overrides: Mutex<HashMap<Owner, u64>>,
}

/// A running transfer's membership; leaving the group on drop re-splits it.
pub struct FlowGuard {
    shared: Arc<Shared>,
    key: String,
    /// This transfer's share.
    pub flow: Arc<Flow>,
}

impl Rates {
    /// Adds a transfer limited to `limit` in group `key` (paced in the kernel
    /// on `port` when the kernel plane is on and `port` is not 0).
    pub fn start(shared: &Arc<Shared>, key: String, owner: Owner, limit: u64, port: u16) -> FlowGuard {
        let limit = lock(&shared.rates.overrides).get(&owner).copied().unwrap_or(limit);
        let flow = Arc::new(Flow { rate: AtomicU64::new(limit), port });
        lock(&shared.rates.owners).insert(key.clone(), owner);
        {
            let mut groups = lock(&shared.rates.groups);
            let group = groups.entry(key.clone()).or_insert_with(|| (limit, Vec::new()));
            group.0 = limit;
            group.1.push(Arc::clone(&flow));
            resplit(&shared.plane, group);
        }
        FlowGuard { shared: Arc::clone(shared), key, flow }
    }
}

fn resplit(plane: &Plane, (limit, flows): &mut Group) {
    if flows.is_empty() {
        return;
    }
    let share = (*limit / flows.len() as u64).max(1);
    tracing::debug!(transfers = flows.len(), share, "rate group re-split");
    for f in flows.iter() {
        f.rate.store(share, Ordering::Relaxed);
        if let (Plane::Kernel(dp), true) = (plane, f.port != 0) {
            let _ = dp.set_pacing(f.port, share);
        }
    }
}

impl FlowGuard {
    /// Whether sock_ops paces this transfer (kernel plane, passive port).
    pub fn kernel_paced(&self) -> bool {
        self.flow.port != 0 && self.shared.kernel().is_some()
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        if let (Plane::Kernel(dp), true) = (&self.shared.plane, self.flow.port != 0) {
            dp.clear_pacing(self.flow.port);
        }
        let mut groups = lock(&self.shared.rates.groups);
        if let Some(group) = groups.get_mut(&self.key) {
            group.1.retain(|f| !Arc::ptr_eq(f, &self.flow));
            if group.1.is_empty() {
                groups.remove(&self.key);
                lock(&self.shared.rates.owners).remove(&self.key);
            } else {
                resplit(&self.shared.plane, group);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SIGHUP: reads the configuration again and gives every running rate group
/// (and later transfers of the same users) the new limit. Returns how many
/// groups changed. Blocking: it waits for the master.
pub fn reload(shared: &Arc<Shared>) -> Result<usize, String> {
    let owners: Vec<(String, Owner)> = lock(&shared.rates.owners).iter().map(|(k, o)| (k.clone(), o.clone())).collect();
    let names: Vec<String> = owners.iter().map(|(_, (n, _))| n.clone()).collect();
    let (cfg, texts) = shared.authority.reload(&shared.source, &names)?;
    let mut changed = 0;
    let mut groups = lock(&shared.rates.groups);
    let mut overrides = lock(&shared.rates.overrides);
    for ((key, owner), text) in owners.into_iter().zip(texts) {
        let mut eff = cfg.clone();
        if let Some(t) = text {
            eff.apply_text(&format!("{}/{}", eff.user_config_dir, owner.0), &t).map_err(|e| e.to_string())?;
        }
        let limit = u64::from(if owner.1 { eff.anon_max_rate } else { eff.local_max_rate });
        overrides.insert(owner, limit);
        if let Some(group) = groups.get_mut(&key).filter(|g| limit != 0 && g.0 != limit) {
            group.0 = limit;
            resplit(&shared.plane, group);
            changed += 1;
        }
    }
    Ok(changed)
}
