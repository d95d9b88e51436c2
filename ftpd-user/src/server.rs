//! The accept loop: connection limits, one task per session, shutdown.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::net::TcpListener;
use tracing::{Instrument, debug, error, info, warn};

use crate::{
    net::canonical,
    session,
    settings::Settings,
    shared::{Refusal, Shared, Stop},
};

/// SIGHUP: reads the configuration again (through the master, which also
/// decides later logins with it) with every file it names, makes it the
/// settings of later sessions, and gives running transfers and logged-in
/// users their new rate limits. Options that need a restart keep their
/// running values; their names are returned with the number of rate groups
/// whose limit changed. A file that does not read changes nothing.
/// Blocking: it waits for the master.
pub fn reload(shared: &Shared) -> Result<(usize, Vec<&'static str>), String> {
    let owners = crate::rates::owners(&shared.rates);
    let reloaded = shared.authority.reload(&shared.source, &owners)?;
    apply(shared, reloaded, owners)
}

/// A front that replaces a dead one starts from ftpd's startup
/// configuration and no bans: this puts the master's last good reload and
/// the bans still running in force before the first session, as the dead
/// front had them. Returns whether there was a reload.
pub fn take_over(shared: &Shared) -> Result<bool, String> {
    let current = shared.authority.current()?;
    let now = std::time::Instant::now();
    if !current.bans.is_empty() {
        // Already in the kernel's map, which outlives fronts: only this
        // front's table (refusals after accept(), lifting on time) lacks them.
        info!(bans = current.bans.len(), "bans of the previous front taken over");
    }
    for (net, left) in current.bans {
        shared.bans.adopt(net, now + left);
    }
    match current.reloaded {
        None => Ok(false),
        Some(reloaded) => apply(shared, reloaded, Vec::new()).map(|_| true),
    }
}

/// Puts a configuration read again in force; see [`reload`].
fn apply(
    shared: &Shared,
    reloaded: crate::privsep::Reloaded,
    owners: Vec<crate::rates::Owner>,
) -> Result<(usize, Vec<&'static str>), String> {
    let crate::privsep::Reloaded { mut cfg, limits, tls } = reloaded;
    let old = shared.cfg();
    let kept = old.keep_running_values(&mut cfg, shared.kernel().is_some());
    // With privilege separation the master read them as root.
    let files = match tls {
        Some(files) if cfg.ssl_enable => Some(files),
        _ => crate::tls::TlsFiles::read(&cfg)?,
    };
    let tls = files.map(|f| crate::tls::Tls::build(&cfg, &f)).transpose()?;
    let limits: HashMap<crate::rates::Owner, u64> = owners.into_iter().zip(limits).collect();
    let settings = Settings::derive(cfg, tls)?;
    if let Some(dp) = shared.kernel() {
        dp.set_caps(&settings.cfg).map_err(|e| format!("the kernel's connection caps: {e:#}"))?;
    }
    shared.set_settings(settings);
    Ok((crate::rates::apply(&shared.rates, limits), kept))
}

/// Gives the allocator's free memory back to the system every 10 s. A burst
/// of logins (a brute force from many addresses) runs one blocking thread
/// per login waiting on the master; when they are gone, glibc kept what they
/// had freed, and the front stayed 30 MB or more above its start (measured
/// after 2,000 wrong passwords from 200 addresses; `malloc_trim` gave back
/// about half of it at once). The walk over free memory runs on a blocking
/// thread.
async fn trim_memory_now_and_then() {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let _ = tokio::task::spawn_blocking(crate::worker::release_memory).await;
    }
}

/// Accepts control connections until `shutdown` resolves, then closes the
/// listener and ends the sessions (see [`drain`]).
pub async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let s = Arc::clone(&shared);
    match tokio::task::spawn_blocking(move || take_over(&s)).await {
        Ok(Ok(true)) => info!("configuration of the last SIGHUP reload taken over from the master"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => warn!("cannot take over the configuration of the last reload, serving the startup one: {e}"),
        Err(e) => warn!("cannot take over the configuration of the last reload: {e}"),
    }
    // SIGHUP: re-read the configuration and apply new rate limits, also to
    // transfers in progress (the master forwards the signal to this process).
    tokio::spawn(trim_memory_now_and_then());
    // Listened for now: a SIGHUP held since the process started comes in.
    if let Ok(mut hup) = crate::process::listen_for_sighup() {
        let s = Arc::clone(&shared);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let s2 = Arc::clone(&s);
                match tokio::task::spawn_blocking(move || reload(&s2)).await {
                    Ok(Ok((n, kept))) => {
                        if !kept.is_empty() {
                            warn!(
                                options = kept.join(","),
                                "SIGHUP: needs a restart: {}; the running values stay in force",
                                kept.join(", ")
                            );
                        }
                        info!(groups = n, "SIGHUP: configuration re-read, rate limits applied");
                        // With privilege separation the master checks, as root.
                        if matches!(s.authority, crate::privsep::Authority::InProcess) {
                            for problem in crate::access::unservable_roots(&s.cfg(), &s.anon_root) {
                                warn!("reload: {problem}");
                            }
                        }
                    }
                    Ok(Err(e)) => warn!("SIGHUP: configuration not reloaded, the old one stays: {e}"),
                    Err(e) => warn!("SIGHUP: reload task failed: {e}"),
                }
            }
        });
    }
    if let Some(dp) = shared.kernel() {
        dp.spawn_log_reader();
    }
    if let Some(cluster) = &shared.cluster {
        info!(node = %cluster.node, "cluster: sharing max_clients, max_per_ip and rate limits through Redis");
        let changed = Arc::clone(&shared.rates.changed);
        tokio::spawn(crate::cluster::run(
            Arc::clone(cluster),
            Arc::clone(&shared) as Arc<dyn crate::cluster::Node>,
            changed,
        ));
    }
    if shared.kernel().is_some() {
        let s = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                if let Some(dp) = s.kernel() {
                    dp.sweep();
                }
            }
        });
    }
    {
        // Bans end on time in the kernel by themselves (XDP compares expiry
        // times); this removes them from both tables and logs each once.
        let s = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                s.sweep_bans();
            }
        });
    }
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
        let _ = stream.set_nodelay(true);
        // Clients send ABOR as urgent data (Python's ftplib marks the whole line
        // MSG_OOB); inline, its last byte is not lost from the line.
        let _ = rustix::net::sockopt::set_socket_oobinline(&stream, true);
        let shared2 = Arc::clone(&shared);
        shared.metrics.sessions_total.inc();
        tokio::spawn(async move {
            // The client's address, for admission and for the session: the
            // one place it is decided.
            let Some((peer, proxied)) = client_of(&shared2, &mut stream, peer).await else { return };
            let ip = peer.ip();
            let admitted = match shared2.admit(ip) {
                Ok(slot) => shared2.admit_in_fleet(&slot).await.map(|()| slot),
                Err(refusal) => Err(refusal),
            };
            let slot = match admitted {
                Ok(s) => s,
                Err(refusal) => {
                    crate::metrics::Metrics::inc(&shared2.metrics.refused, "reason", refusal.label());
                    let text = refusal.text();
                    if refusal == Refusal::Banned {
                        // Closed at once, never held: a banned client gets
                        // nothing to wait on, and with the kernel plane its
                        // next SYNs are dropped.
                        debug!(peer = %peer, reason = refusal.label(), "connection refused");
                        session::refuse(&mut stream, text, false).await;
                        return;
                    }
                    warn!(peer = %peer, reason = refusal.label(), "connection refused");
                    let settings = shared2.settings();
                    match settings.tls.as_ref().filter(|_| settings.cfg.implicit_ssl) {
                        Some(tls) => session::refuse_tls(stream, tls, text).await,
                        None => session::refuse(&mut stream, text, shared2.kernel().is_some()).await,
                    }
                    return;
                }
            };
            let id = shared2.next_id.fetch_add(1, Ordering::Relaxed);
            // Every event of the session, whatever emits it, carries the
            // session id and the peer (as span fields, also in --log-json).
            let span = tracing::info_span!("session", id, %peer);
            async {
                debug!(session = id, peer = %peer, "connected");
                let mut session = session::Session::new(Arc::clone(&shared2), id, stream, peer, local);
                session.slot = Some(slot);
                session.names.proxied = proxied;
                crate::commands::dispatch::run(session).await;
                info!(session = id, peer = %peer, "disconnected");
            }
            .instrument(span)
            .await;
        });
    }
    // The master keeps a copy of the listening socket (to hand to a front
    // that replaces a dead one), so closing ours would leave the kernel
    // accepting connections into the queue. Shutting the socket down stops
    // it listening for every holder: new connections are refused at once.
    if let Err(e) = rustix::net::shutdown(&listener, rustix::net::Shutdown::Read) {
        warn!("cannot stop the control listener: {e}");
    }
    drop(listener);
    drain(&shared).await;
    info!("{}", shared.plane_status());
}

/// The client behind the connection from `peer`: `peer` itself, or with
/// `ftpd_proxy_protocol`, the address its PROXY header names, with the
/// address the client connected to. `None`: the connection is closed before
/// its greeting (counted by reason).
async fn client_of(
    shared: &Shared,
    stream: &mut tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<(SocketAddr, Option<session::Proxied>)> {
    let peer = SocketAddr::new(canonical(peer.ip()), peer.port());
    let settings = shared.settings();
    if !settings.cfg.ftpd_proxy_protocol {
        return Some((peer, None));
    }
    let header = if settings.proxy_trusted.contains(peer.ip()) {
        crate::proxy::read_header(stream).await
    } else {
        Err(crate::proxy::Reason::Untrusted)
    };
    match header {
        Ok(Some(ends)) => {
            let client = SocketAddr::new(canonical(ends.client.ip()), ends.client.port());
            debug!(balancer = %peer, client = %client, dialed = %ends.server, "PROXY header");
            let proxied = session::Proxied { balancer: peer.ip(), dialed: canonical(ends.server.ip()) };
            Some((client, Some(proxied)))
        }
        // The balancer's own connection (a health check): it is the client.
        Ok(None) => Some((peer, None)),
        Err(reason) => {
            crate::metrics::Metrics::inc(&shared.metrics.refused, "reason", reason.label());
            if reason == crate::proxy::Reason::Missing {
                // Also what a balancer's plain TCP health check looks like.
                debug!(peer = %peer, reason = reason.label(), "connection closed before the greeting");
            } else {
                info!(peer = %peer, reason = reason.label(), "connection closed before the greeting");
            }
            None
        }
    }
}

/// Signals within this time of the first are the same stop request.
const SAME_SIGNAL: Duration = Duration::from_millis(250);

/// Ends the sessions once the listener is closed: idle sessions get `421`
/// at once, running transfers may finish for `ftpd_shutdown_timeout`
/// seconds (a second SIGTERM or SIGINT cuts that short), then every session
/// left ends its transfer through the abort path (an upload is never
/// published half written) and gets `421`.
async fn drain(shared: &Shared) {
    let limit = shared.cfg().ftpd_shutdown_timeout;
    let open = shared.clients();
    info!(sessions = open, ftpd_shutdown_timeout = limit, "listener closed; ending the sessions");
    let again = async {
        // What reaches both processes at once (Ctrl-C in a terminal signals
        // the process group; the master forwards its copy) is one request:
        // listen only after a moment, and only for signals from then on (a
        // new listener does not see earlier ones).
        tokio::time::sleep(SAME_SIGNAL).await;
        crate::process::next_stop_signal().await;
    };
    let all_gone = async {
        while shared.clients() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::pin!(all_gone);
    let gone = if limit == 0 {
        false
    } else {
        shared.stop.send_replace(Stop::Draining);
        tokio::select! {
            () = &mut all_gone => true,
            () = tokio::time::sleep(Duration::from_secs(u64::from(limit))) => {
                info!(sessions = shared.clients(), "ftpd_shutdown_timeout is over; ending the transfers left");
                false
            }
            () = again => {
                info!(sessions = shared.clients(), "second signal: ending the transfers now");
                false
            }
        }
    };
    if gone {
        return;
    }
    shared.stop.send_replace(Stop::Now);
    // Each session answers and cleans up (an upload's temporary file) in
    // far less than this; a client that does not read its 421 is not waited for.
    if tokio::time::timeout(Duration::from_secs(2), all_gone).await.is_err() {
        warn!(sessions = shared.clients(), "sessions still open after the shutdown; closing them");
    }
}
