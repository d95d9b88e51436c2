//! Bans on client networks that fail too many logins, and the client
//! network an address belongs to (`ftpd_prefix_v4`, `ftpd_prefix_v6`).
//!
//! The master decides every login, but only the front sees all sessions, so
//! the front counts the failures it is told about and decides bans: it is
//! the one process that can sum them over every session of a network. The
//! kernel's copy (`BANS`, written through the map fd the front inherited, as
//! it writes pinholes) only makes refusals cheaper: this table is the
//! authority, and refuses after accept() whether or not the kernel plane runs.
//! The master keeps a copy of each ban only to hand it to a front that
//! replaces a dead one ([`Bans::adopt`]).

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use ftpd_common::IpKey;

use crate::{config::Config, net::Allow};

/// Most networks with failed logins remembered at once: a client that
/// rotates through many IPv6 networks must not grow this without bound.
/// Beyond it, failures of new networks are not counted until old ones expire.
const MAX_TRACKED: usize = 65_536;

/// The client network of `ip` under `cfg`'s prefix lengths.
pub fn network(cfg: &Config, ip: IpAddr) -> IpKey {
    crate::net::ip_key(ip).masked(cfg.ftpd_prefix_v4, cfg.ftpd_prefix_v6)
}

/// The length of `net`'s prefix in the 128-bit key space (IPv4 keys are
/// v4-mapped: 96 + `ftpd_prefix_v4`).
pub fn key_bits(net: &IpKey, cfg: &Config) -> u32 {
    if net.is_v4() { 96 + cfg.ftpd_prefix_v4.min(32) } else { cfg.ftpd_prefix_v6.min(128) }
}

/// A network key written as `ADDR/LEN`, for logs.
pub fn show(net: &IpKey, cfg: &Config) -> String {
    if net.is_v4() {
        let a = &net.addr;
        format!("{}.{}.{}.{}/{}", a[12], a[13], a[14], a[15], cfg.ftpd_prefix_v4)
    } else {
        format!("{}/{}", std::net::Ipv6Addr::from(net.addr), cfg.ftpd_prefix_v6)
    }
}

/// A ban that ended, for the one log line about it.
#[derive(Debug)]
pub struct Lifted {
    /// The network.
    pub net: IpKey,
    /// Connections refused after accept() while it lasted.
    pub refused: u64,
}

#[derive(Debug)]
struct Ban {
    until: Instant,
    refused: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Times of recent failed logins per network, oldest first, at most
    /// `Config::ban_fails` of them.
    fails: HashMap<IpKey, VecDeque<Instant>>,
    bans: HashMap<IpKey, Ban>,
}

/// Failed logins per network, and the bans they led to.
#[derive(Debug, Default)]
pub struct Bans {
    state: Mutex<State>,
}

impl Bans {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a failed login from `ip`. Returns the network and the length
    /// of the ban when this failure starts one.
    pub fn login_failed(&self, cfg: &Config, allow: &Allow, ip: IpAddr, now: Instant) -> Option<(IpKey, Duration)> {
        if !cfg.ftpd_ban_enable || allow.contains(ip) {
            return None;
        }
        let net = network(cfg, ip);
        let window = Duration::from_secs(u64::from(cfg.ftpd_ban_window));
        let limit = cfg.ban_fails().max(1) as usize;
        let mut st = self.lock();
        if st.bans.get(&net).is_some_and(|b| b.until > now) {
            return None;
        }
        if st.fails.len() >= MAX_TRACKED && !st.fails.contains_key(&net) {
            st.fails.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < window));
            if st.fails.len() >= MAX_TRACKED {
                return None;
            }
        }
        let times = st.fails.entry(net).or_default();
        times.push_back(now);
        while times.len() > limit || times.front().is_some_and(|t| now.duration_since(*t) >= window) {
            times.pop_front();
        }
        if times.len() < limit {
            return None;
        }
        st.fails.remove(&net);
        let time = Duration::from_secs(u64::from(cfg.ftpd_ban_time));
        st.bans.insert(net, Ban { until: now + time, refused: 0 });
        Some((net, time))
    }

    /// Takes over a ban made by a front that died, until `until`.
    pub fn adopt(&self, net: IpKey, until: Instant) {
        self.lock().bans.insert(net, Ban { until, refused: 0 });
    }

    /// Whether `ip`'s network is banned now and `ip` is not on the
    /// allow-list (which may lie inside a banned network); counts the
    /// refusal if so.
    pub fn refuses(&self, cfg: &Config, allow: &Allow, ip: IpAddr, now: Instant) -> bool {
        let mut st = self.lock();
        if st.bans.is_empty() || allow.contains(ip) {
            return false;
        }
        match st.bans.get_mut(&network(cfg, ip)) {
            Some(b) if b.until > now => {
                b.refused += 1;
                true
            }
            _ => false,
        }
    }

    /// How many bans are in force, and the `max` with the longest time left:
    /// network (as [`show`] writes it) and whole seconds left, longest first.
    pub fn listing(&self, cfg: &Config, now: Instant, max: usize) -> (usize, Vec<(String, u64)>) {
        let st = self.lock();
        let mut all: Vec<(&IpKey, Duration)> =
            st.bans.iter().map(|(net, b)| (net, b.until.saturating_duration_since(now))).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.addr.cmp(&b.0.addr)));
        let listed =
            all.iter().take(max).map(|(net, left)| (show(net, cfg), left.as_secs_f64().ceil() as u64)).collect();
        (st.bans.len(), listed)
    }

    /// Bans in force (some may have just expired and wait for [`Bans::sweep`]).
    pub fn active(&self) -> usize {
        self.lock().bans.len()
    }

    /// Removes expired bans (returned, for the log) and failures older than
    /// the window.
    pub fn sweep(&self, cfg: &Config, now: Instant) -> Vec<Lifted> {
        let window = Duration::from_secs(u64::from(cfg.ftpd_ban_window));
        let mut st = self.lock();
        st.fails.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < window));
        let ended: Vec<IpKey> = st.bans.iter().filter(|(_, b)| b.until <= now).map(|(k, _)| *k).collect();
        ended.into_iter().filter_map(|net| st.bans.remove(&net).map(|b| Lifted { net, refused: b.refused })).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let mut c = Config::default();
        c.apply_text("test", &format!("ftpd_ban_enable=YES\nftpd_ban_fails=3\nftpd_ban_window=60\n{extra}")).unwrap();
        c
    }

    #[test]
    fn fails_are_summed_per_network_within_the_window() {
        let c = cfg("ftpd_ban_time=10\n");
        let b = Bans::default();
        let none = Allow::default();
        let t = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(b.login_failed(&c, &none, ip, t).is_none());
        // Outside the window: the first failure no longer counts.
        assert!(b.login_failed(&c, &none, ip, t + Duration::from_secs(61)).is_none());
        assert!(b.login_failed(&c, &none, ip, t + Duration::from_secs(62)).is_none());
        let (net, time) = b.login_failed(&c, &none, ip, t + Duration::from_secs(63)).unwrap();
        assert_eq!((show(&net, &c), time), ("192.0.2.1/32".to_string(), Duration::from_secs(10)));
        assert!(b.refuses(&c, &Allow::default(), ip, t + Duration::from_secs(64)));
        assert!(!b.refuses(&c, &Allow::default(), "192.0.2.2".parse().unwrap(), t + Duration::from_secs(64)));
        assert!(!b.refuses(&c, &Allow::default(), ip, t + Duration::from_secs(73)));
        let lifted = b.sweep(&c, t + Duration::from_secs(73));
        assert_eq!((lifted.len(), lifted[0].refused), (1, 1));
        assert_eq!(b.active(), 0);
    }

    /// Unless `ftpd_ban_fails` says otherwise, a ban starts at
    /// `max_login_fails` failures summed over the network's sessions.
    #[test]
    fn the_threshold_is_max_login_fails_unless_ftpd_ban_fails_is_set() {
        let none = Allow::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Instant::now();
        for (text, bans_at) in [
            ("ftpd_ban_enable=YES\n", 3),
            ("ftpd_ban_enable=YES\nmax_login_fails=2\n", 2),
            ("ftpd_ban_enable=YES\nmax_login_fails=2\nftpd_ban_fails=5\n", 5),
        ] {
            let mut c = Config::default();
            c.apply_text("test", text).unwrap();
            c.validate().unwrap();
            let b = Bans::default();
            let first = (1..=10).find(|_| b.login_failed(&c, &none, ip, t).is_some());
            assert_eq!(first, Some(bans_at), "{text:?}");
        }
        // Nothing to count to: refused, not a ban at the first failure.
        let mut c = Config::default();
        c.apply_text("test", "ftpd_ban_enable=YES\nmax_login_fails=0\n").unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("ftpd_ban_fails") && e.contains("max_login_fails"), "{e}");
    }

    #[test]
    fn ipv6_addresses_of_one_network_share_a_count() {
        let c = cfg("");
        let b = Bans::default();
        let t = Instant::now();
        for (i, a) in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"].iter().enumerate() {
            let got = b.login_failed(&c, &Allow::default(), a.parse().unwrap(), t);
            assert_eq!(got.is_some(), i == 2, "{a}");
        }
        assert!(b.refuses(&c, &Allow::default(), "2001:db8:1:2::99".parse().unwrap(), t));
        assert!(!b.refuses(&c, &Allow::default(), "2001:db8:1:3::1".parse().unwrap(), t));
    }

    #[test]
    fn an_allowed_address_inside_a_banned_network_is_not_refused() {
        let c = cfg("ftpd_prefix_v4=24\nftpd_prefix_v6=64\n");
        let allow = Allow::parse("ftpd_ban_allow", "192.0.2.7, 2001:db8:1:2::/80").unwrap();
        let b = Bans::default();
        let t = Instant::now();
        let mut banned = Vec::new();
        for ip in ["192.0.2.1", "2001:db8:1:2:ffff::1"] {
            for _ in 0..3 {
                if let Some((net, _)) = b.login_failed(&c, &allow, ip.parse().unwrap(), t) {
                    banned.push(net);
                }
            }
        }
        assert_eq!(banned.len(), 2);
        assert!(b.refuses(&c, &allow, "192.0.2.8".parse().unwrap(), t));
        assert!(!b.refuses(&c, &allow, "192.0.2.7".parse().unwrap(), t));
        assert!(b.refuses(&c, &allow, "2001:db8:1:2:ffff::9".parse().unwrap(), t));
        assert!(!b.refuses(&c, &allow, "2001:db8:1:2::9".parse().unwrap(), t));
        // Both networks hold allowed addresses: neither may go to the kernel.
        for net in &banned {
            assert!(allow.overlaps(net, key_bits(net, &c)), "{}", show(net, &c));
        }
        let other = network(&c, "192.0.3.1".parse().unwrap());
        assert!(!allow.overlaps(&other, key_bits(&other, &c)));
        // A listed network wider than the banned one overlaps it too.
        let wide = Allow::parse("ftpd_ban_allow", "192.0.0.0/16").unwrap();
        let net = network(&c, "192.0.2.1".parse().unwrap());
        assert!(wide.overlaps(&net, key_bits(&net, &c)));
    }

    #[test]
    fn allow_list_parses_and_matches() {
        let a = Allow::parse("ftpd_ban_allow", "192.0.2.0/24, 2001:db8::/32 198.51.100.7").unwrap();
        assert!(a.contains("192.0.2.200".parse().unwrap()));
        assert!(a.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!a.contains("192.0.3.1".parse().unwrap()));
        assert!(a.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(a.contains("198.51.100.7".parse().unwrap()));
        assert!(!a.contains("198.51.100.8".parse().unwrap()));
        for bad in ["192.0.2.0/33", "2001:db8::/129", "example.org", "10.0.0.0/x"] {
            let e = Allow::parse("ftpd_ban_allow", bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("ftpd_ban_allow"), "{e}");
        }
        let c = cfg("");
        let b = Bans::default();
        let allow = Allow::parse("ftpd_ban_allow", "192.0.2.0/24").unwrap();
        for _ in 0..10 {
            assert!(b.login_failed(&c, &allow, "192.0.2.9".parse().unwrap(), Instant::now()).is_none());
        }
    }
}
