//! The accept loop: connection limits, one task per session, shutdown.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::{config::Config, data::canonical, dataplane::Dataplane, session};

/// Which data plane enforces limits in this process.
#[derive(Debug)]
pub enum Plane {
    /// eBPF programs are attached.
    Kernel(Dataplane),
    /// eBPF is not in use; the reason is shown in logs and STAT.
    Userspace(String),
}

/// State every session can see.
#[derive(Debug)]
pub struct Shared {
    /// The validated configuration.
    pub cfg: Config,
    /// Absolute directory served to anonymous users.
    pub anon_root: PathBuf,
    /// The data plane in use.
    pub plane: Plane,
    next_id: AtomicU64,
    conns: Mutex<Conns>,
}

#[derive(Debug, Default)]
struct Conns {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

impl Shared {
    /// Bundles what sessions need.
    pub fn new(cfg: Config, anon_root: PathBuf, plane: Plane) -> Self {
        Self { cfg, anon_root, plane, next_id: AtomicU64::new(1), conns: Mutex::default() }
    }

    /// One line on the data plane and its counters, for STAT and the shutdown log.
    pub fn plane_status(&self) -> String {
        match &self.plane {
            Plane::Userspace(why) => format!("Data plane: userspace ({why})"),
            Plane::Kernel(dp) => match dp.counters() {
                Ok(c) => {
                    let list: Vec<String> = c.iter().map(|(k, v)| format!("{}={v}", k.name())).collect();
                    format!("Data plane: eBPF on {} ({})", dp.interfaces().join(","), list.join(" "))
                }
                Err(e) => format!("Data plane: eBPF (counters unreadable: {e})"),
            },
        }
    }

    /// Counts a new control connection, or says which vsftpd refusal applies.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut c = self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let max = self.cfg.max_clients;
        if max != 0 && c.total >= max {
            return Err("There are too many connected users, please try later.");
        }
        let per_ip = self.cfg.max_per_ip;
        let n = c.per_ip.get(&ip).copied().unwrap_or(0);
        if per_ip != 0 && n >= per_ip {
            return Err("There are too many connections from your internet address.");
        }
        c.total += 1;
        c.per_ip.insert(ip, n + 1);
        Ok(Slot { shared: Arc::clone(self), ip })
    }
}

/// A counted connection; dropping it frees the slot.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.shared.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Accepts control connections until `shutdown` resolves.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (mut stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: log, back off briefly, keep serving.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = stream.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let ip = canonical(peer.ip());
        let _ = stream.set_nodelay(true);
        let shared2 = Arc::clone(&shared);
        tokio::spawn(async move {
            let slot = match shared2.admit(ip) {
                Ok(s) => s,
                Err(text) => {
                    warn!(peer = %peer, reason = text, "connection refused");
                    session::refuse(&mut stream, text).await;
                    return;
                }
            };
            let id = shared2.next_id.fetch_add(1, Ordering::Relaxed);
            info!(session = id, peer = %peer, "connected");
            session::Session::new(Arc::clone(&shared2), id, peer, local).run(stream).await;
            info!(session = id, peer = %peer, "disconnected");
            drop(slot);
        });
    }
    info!("{}", shared.plane_status());
}
