//! Work that one client address may hold only so much of, counted per
//! address: HASH commands (each holds a blocking thread and reads a whole
//! file) and directory listings (each holds one of its file worker's
//! listing slots). [`crate::shared::Shared`] owns one of each for the
//! process; they were process-global statics before, which tests could not
//! reach and which outlived a front's state.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Instant,
};

use tracing::info;

use crate::net::canonical;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// HASH commands running at once from one client address.
pub const HASHES_PER_IP: u32 = 1;
/// HASH commands running at once in this process.
pub const HASHES: u32 = 4;

/// Who is hashing now. A HASH beyond either limit is answered at once with a
/// busy reply (450) rather than queued: a queue let four sessions hashing
/// huge files from one address keep every other client's HASH of a small
/// file waiting for as long as they ran.
#[derive(Debug, Default)]
pub struct HashSlots {
    running: Mutex<HashMap<IpAddr, u32>>,
}

/// One running HASH; its slot is given back when dropped.
#[derive(Debug)]
pub struct HashSlot<'a> {
    slots: &'a HashSlots,
    ip: IpAddr,
}

impl HashSlots {
    /// A slot for `ip`, or `None` when that address or the process is at its limit.
    pub fn take(&self, ip: IpAddr) -> Option<HashSlot<'_>> {
        let ip = canonical(ip);
        let mut running = lock(&self.running);
        let total: u32 = running.values().sum();
        let mine = running.get(&ip).copied().unwrap_or(0);
        if total >= HASHES || mine >= HASHES_PER_IP {
            return None;
        }
        running.insert(ip, mine + 1);
        Some(HashSlot { slots: self, ip })
    }
}

impl Drop for HashSlot<'_> {
    fn drop(&mut self) {
        let mut running = lock(&self.slots.running);
        if let Some(n) = running.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.ip);
            }
        }
    }
}

/// The listings running in this process, per client address and per worker.
#[derive(Debug, Default)]
pub struct Listings {
    inner: Mutex<ListingsInner>,
}

#[derive(Debug, Default)]
struct ListingsInner {
    /// Per client address (`ftpd_max_listings_per_ip`).
    by_ip: HashMap<IpAddr, u32>,
    running: Vec<Running>,
    next_id: u64,
}

/// A running listing, as [`Listings::preempt`] sees it.
#[derive(Debug)]
struct Running {
    id: u64,
    ip: IpAddr,
    /// The file worker whose listing slots it holds.
    worker: usize,
    started: Instant,
    /// Notified to end the listing.
    stop: Arc<tokio::sync::Notify>,
    stopped: bool,
}

/// One running listing of a client address; dropping it frees the slot.
#[derive(Debug)]
pub struct ListingSlot {
    listings: Arc<Listings>,
    ip: IpAddr,
    id: u64,
    stop: Arc<tokio::sync::Notify>,
}

impl Listings {
    /// A slot for `ip` in `worker`, unless `ip` already has `max` (0: no limit).
    pub fn take(self: &Arc<Self>, ip: IpAddr, worker: usize, max: u32) -> Option<ListingSlot> {
        let mut inner = lock(&self.inner);
        let n = inner.by_ip.entry(ip).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        let stop = Arc::new(tokio::sync::Notify::new());
        inner.running.push(Running {
            id,
            ip,
            worker,
            started: Instant::now(),
            stop: Arc::clone(&stop),
            stopped: false,
        });
        Some(ListingSlot { listings: Arc::clone(self), ip, id, stop })
    }

    /// When a worker has no listing slot left: ends the oldest listing of
    /// the address with the most running in that worker, if it has more than
    /// `ip` (whose own listing counts). Clients that start listings and never
    /// read hold a slot each until `ftpd_list_stall_timeout`; the per-address
    /// cap keeps one address to 8, but 8 addresses fill a worker's 64, and
    /// without this anyone else got 451 until the stalls timed out.
    ///
    /// What this does not cover: an attacker with as many addresses as slots
    /// (an IPv6 /64 has plenty) holds one listing per address, and nobody has
    /// more than the newcomer; a limit per prefix (/24, /64) would be next.
    pub fn preempt(&self, ip: IpAddr, worker: usize) -> bool {
        let mut inner = lock(&self.inner);
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for r in inner.running.iter().filter(|r| r.worker == worker && !r.stopped) {
            *counts.entry(r.ip).or_default() += 1;
        }
        let mine = counts.get(&ip).copied().unwrap_or(0);
        let Some((&busiest, &n)) = counts.iter().max_by_key(|(_, n)| **n) else { return false };
        if n <= mine.max(1) {
            return false;
        }
        let victim = inner
            .running
            .iter_mut()
            .filter(|r| r.worker == worker && !r.stopped && r.ip == busiest)
            .min_by_key(|r| r.started);
        let Some(victim) = victim else { return false };
        victim.stopped = true;
        victim.stop.notify_one();
        info!(peer = %busiest, running = n, for_peer = %ip, "listing preempted: a worker's listing slots are full");
        true
    }
}

impl ListingSlot {
    /// Notified when [`Listings::preempt`] ends this listing.
    pub fn stop_signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.stop)
    }
}

impl Drop for ListingSlot {
    fn drop(&mut self) {
        let mut inner = lock(&self.listings.inner);
        inner.running.retain(|r| r.id != self.id);
        if let Some(n) = inner.by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn hash_slots_are_one_per_address_and_four_in_all_and_come_back() {
        let slots = HashSlots::default();
        let a = ip("192.0.2.1");
        let first = slots.take(a).expect("a first HASH runs");
        assert!(slots.take(a).is_none(), "a second from the same address is busy");
        // The same address written as IPv4-mapped IPv6 is the same client.
        assert!(slots.take(ip("::ffff:192.0.2.1")).is_none());
        let others: Vec<_> = (2..=4).map(|i| slots.take(ip(&format!("192.0.2.{i}")))).collect();
        assert!(others.iter().all(Option::is_some), "other addresses are not held up by the first");
        assert!(slots.take(ip("192.0.2.9")).is_none(), "the server's limit");
        drop(first);
        assert!(slots.take(a).is_some(), "a finished HASH gives its slot back");
    }

    #[test]
    fn listing_slots_count_per_address_and_come_back() {
        let l = Arc::new(Listings::default());
        let a = ip("192.0.2.1");
        let s1 = l.take(a, 0, 2).expect("first");
        let s2 = l.take(a, 1, 2).expect("second, in another worker");
        assert!(l.take(a, 0, 2).is_none(), "the per-address cap counts every worker");
        assert!(l.take(ip("192.0.2.2"), 0, 2).is_some());
        drop(s1);
        let s3 = l.take(a, 0, 2).expect("a freed slot is taken again");
        assert!(l.take(a, 0, 0).is_some(), "0: no cap");
        drop((s2, s3));
        assert!(lock(&l.inner).by_ip.get(&a).is_none_or(|n| *n == 1), "counts go back down");
    }

    #[test]
    fn preempt_ends_the_busiest_addresss_oldest_listing_in_that_worker_only() {
        let l = Arc::new(Listings::default());
        let (hog, newcomer) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let oldest = l.take(hog, 0, 0).expect("slot");
        let newer = l.take(hog, 0, 0).expect("slot");
        let elsewhere = l.take(hog, 1, 0).expect("slot");
        assert!(l.preempt(newcomer, 0), "the hog has 2 in worker 0, the newcomer none");
        let woken = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime").block_on(
            async {
                let wait = |s: &ListingSlot| {
                    let n = s.stop_signal();
                    async move { tokio::time::timeout(std::time::Duration::from_millis(50), n.notified()).await.is_ok() }
                };
                (wait(&oldest).await, wait(&newer).await, wait(&elsewhere).await)
            },
        );
        assert_eq!(woken, (true, false, false), "only the oldest of worker 0 is told to stop");
        assert!(!l.preempt(newcomer, 0), "one running (not stopped) against the newcomer's none: no more");
        assert!(!l.preempt(hog, 1), "nobody has more than the asker");
    }
}
