//! Prometheus metrics (`ftpd_metrics_listen`), built with `prometheus-client`
//! and served over HTTP/1 by hyper.
//!
//! Label values come from small fixed sets (class, direction, result, reason,
//! reply class, command verb), plus user names only for the users listed in
//! `ftpd_metrics_users`, so cardinality stays bounded whatever clients do.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue},
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::net::TcpListener;
use tracing::debug;

type Labels = Vec<(String, String)>;

/// Every metric ftpd exports.
pub struct Metrics {
    registry: Registry,
    /// Logged-in sessions by class (anonymous, local, virtual).
    pub sessions_active: Family<Labels, Gauge>,
    /// Control connections accepted.
    pub sessions_total: Counter,
    /// Logins by result (ok, failed).
    pub logins: Family<Labels, Counter>,
    /// Transfers by direction and result (complete, failed, aborted).
    pub transfers: Family<Labels, Counter>,
    /// Bytes moved by direction.
    pub bytes: Family<Labels, Counter>,
    /// Bytes moved by user and direction, for `ftpd_metrics_users` only.
    pub user_bytes: Family<Labels, Counter>,
    /// Bytes moved by top-level directory (`ftpd_metrics_dirs`) and direction.
    pub dir_bytes: Family<Labels, Counter>,
    /// Transfers by top-level directory and direction.
    pub dir_transfers: Family<Labels, Counter>,
    /// Transfer durations by direction.
    pub durations: Family<Labels, Histogram>,
    /// Commands by verb (unknown verbs count as OTHER).
    pub commands: Family<Labels, Counter>,
    /// Replies by class (1xx … 5xx).
    pub replies: Family<Labels, Counter>,
    /// Connections refused by reason.
    pub refused: Family<Labels, Counter>,
    /// Passive pinholes by event (opened, used, expired).
    pub pinholes: Family<Labels, Counter>,
    /// Kernel decisions by event (the eBPF counters).
    pub kernel: Family<Labels, Counter>,
    /// Rate-limited transfers by direction and how they were paced.
    pub paced: Family<Labels, Counter>,
    /// Bans started (`ftpd_ban_enable`).
    pub bans_total: Counter,
    /// Bans in force.
    pub bans_active: Gauge,
    /// Seconds each ban has left, by network (the longest [`BANS_LISTED`]).
    pub ban_seconds_left: Family<Labels, Gauge>,
    /// Passive ports a session waits on now (not those kept for a
    /// session's next transfer).
    pub pasv_in_use: Gauge,
    /// Size of the passive port range (0: any port).
    pub pasv_range: Gauge,
    /// 1 when the eBPF data plane is loaded.
    pub ebpf_enabled: Gauge,
    /// Logins by whether the control connection was encrypted (tls=yes|no).
    pub tls_sessions: Family<Labels, Counter>,
    /// Finished transfers by direction and whether the data was encrypted.
    pub tls_transfers: Family<Labels, Counter>,
    /// Failed TLS handshakes (control and data) by reason.
    pub tls_handshake_failures: Family<Labels, Counter>,
    /// 1 when the kernel offers TLS offload (kTLS); 0 also when FTPS is off.
    pub ktls_available: Gauge,
    /// 1 while Redis answers a fleet node (`ftpd_cluster_redis`), 0 while the
    /// node holds its limits alone.
    pub cluster_up: Gauge,
    /// Times a fleet node lost Redis and fell back to its local limits.
    pub cluster_fallbacks: Counter,
    rss: Gauge,
    fds: Gauge,
    cpu: Counter<f64, std::sync::atomic::AtomicU64>,
}

/// The entry of `dirs` (comma-separated, leading `/` optional) that is the
/// first component of `path`, or `other`. A file directly in the root has no
/// directory, so it is `other` too.
pub fn project_of<'a>(dirs: &'a str, path: &[u8]) -> &'a str {
    let path = path.strip_prefix(b"/").unwrap_or(path);
    let Some(end) = path.iter().position(|&b| b == b'/') else { return "other" };
    let top = &path[..end];
    dirs.split(',')
        .map(|d| d.trim().trim_matches('/'))
        .find(|d| !d.is_empty() && d.as_bytes() == top)
        .unwrap_or("other")
}

/// Bans listed one by one in the metrics (`ftpd_ban_seconds_left`): enough
/// for an operator to see who is banned, bounded against an attack that
/// gets thousands of networks banned.
pub const BANS_LISTED: usize = 100;

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

impl Metrics {
    /// Registers everything. A fleet node's metrics all carry its name
    /// (`node`), so that Prometheus can tell nodes apart when it federates
    /// them or scrapes them through one name.
    pub fn new(node: Option<&str>) -> Self {
        let mut r = match node {
            Some(n) => Registry::with_prefix_and_labels(
                "ftpd",
                [(std::borrow::Cow::Borrowed("node"), std::borrow::Cow::Owned(n.to_owned()))].into_iter(),
            ),
            None => Registry::with_prefix("ftpd"),
        };
        let m = Self {
            sessions_active: Family::default(),
            sessions_total: Counter::default(),
            logins: Family::default(),
            transfers: Family::default(),
            bytes: Family::default(),
            user_bytes: Family::default(),
            dir_bytes: Family::default(),
            dir_transfers: Family::default(),
            durations: Family::new_with_constructor(|| {
                Histogram::new([0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0])
            }),
            commands: Family::default(),
            replies: Family::default(),
            refused: Family::default(),
            pinholes: Family::default(),
            kernel: Family::default(),
            paced: Family::default(),
            bans_total: Counter::default(),
            bans_active: Gauge::default(),
            ban_seconds_left: Family::default(),
            pasv_in_use: Gauge::default(),
            pasv_range: Gauge::default(),
            ebpf_enabled: Gauge::default(),
            tls_sessions: Family::default(),
            tls_transfers: Family::default(),
            tls_handshake_failures: Family::default(),
            ktls_available: Gauge::default(),
            cluster_up: Gauge::default(),
            cluster_fallbacks: Counter::default(),
            rss: Gauge::default(),
            fds: Gauge::default(),
            cpu: Counter::default(),
            registry: Registry::default(),
        };
        r.register("sessions_active", "Logged-in sessions by user class", m.sessions_active.clone());
        r.register("sessions", "Control connections accepted", m.sessions_total.clone());
        r.register("logins", "Login attempts by result", m.logins.clone());
        r.register("transfers", "Transfers by direction and result", m.transfers.clone());
        r.register("transfer_bytes", "Bytes transferred by direction", m.bytes.clone());
        r.register("user_transfer_bytes", "Bytes transferred by user (ftpd_metrics_users only)", m.user_bytes.clone());
        r.register(
            "dir_transfer_bytes",
            "Bytes transferred by top-level directory (ftpd_metrics_dirs; others: other)",
            m.dir_bytes.clone(),
        );
        r.register(
            "dir_transfers",
            "Transfers by top-level directory (ftpd_metrics_dirs; others: other)",
            m.dir_transfers.clone(),
        );
        r.register("transfer_duration_seconds", "Transfer durations", m.durations.clone());
        r.register("commands", "Commands received by verb", m.commands.clone());
        r.register("replies", "Replies sent by class", m.replies.clone());
        r.register("connections_refused", "Control connections refused, by reason", m.refused.clone());
        r.register("pasv_pinholes", "Passive pinholes by event", m.pinholes.clone());
        r.register("kernel_events", "Decisions of the eBPF data plane, by event", m.kernel.clone());
        r.register(
            "paced_transfers",
            "Rate-limited transfers by direction and pacing: tcp_pacing (the socket's TCP pacing plus a send \
             schedule) or userspace (a schedule alone: uploads, or a socket that refused the pacing rate)",
            m.paced.clone(),
        );
        r.register("bans", "Client networks banned for failed logins (ftpd_ban_enable)", m.bans_total.clone());
        r.register("bans_active", "Client networks banned now", m.bans_active.clone());
        r.register(
            "ban_seconds_left",
            "Seconds each banned client network has left (the longest 100; ftpd_bans_active counts them all)",
            m.ban_seconds_left.clone(),
        );
        r.register("pasv_ports_in_use", "Passive ports a session waits on now", m.pasv_in_use.clone());
        r.register("pasv_ports_range", "Size of the passive port range (0: any port)", m.pasv_range.clone());
        r.register("ebpf_enabled", "1 when the eBPF data plane is loaded", m.ebpf_enabled.clone());
        r.register("tls_sessions", "Logins by whether the control connection was encrypted", m.tls_sessions.clone());
        r.register(
            "tls_transfers",
            "Finished transfers by direction and whether the data connection was encrypted",
            m.tls_transfers.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "Failed TLS handshakes (control and data connections) by reason; no_session_reuse: a data \
             connection that did not resume its control connection's session (require_ssl_reuse)",
            m.tls_handshake_failures.clone(),
        );
        r.register("ktls_available", "1 when the kernel offers TLS offload (kTLS)", m.ktls_available.clone());
        if node.is_some() {
            r.register(
                "cluster_up",
                "1 while Redis answers (limits shared with the fleet), 0 while this node holds its limits alone",
                m.cluster_up.clone(),
            );
            r.register(
                "cluster_fallbacks",
                "Times Redis went out of reach and this node fell back to its local limits",
                m.cluster_fallbacks.clone(),
            );
        }
        r.register("process_resident_memory_bytes", "Resident memory of all ftpd processes", m.rss.clone());
        r.register("process_open_fds", "Open file descriptors of the network process", m.fds.clone());
        r.register("process_cpu_seconds", "CPU time of all ftpd processes", m.cpu.clone());
        // A gauge fixed at 1 (the classic `_info` idiom), not an OpenMetrics
        // info metric, which the Prometheus text parser (promtool) rejects.
        let build: Family<Labels, Gauge> = Family::default();
        build.get_or_create(&l(&[("version", env!("CARGO_PKG_VERSION"))])).set(1);
        r.register("build_info", "ftpd build information", build);
        for reason in [
            "max_clients",
            "max_per_ip",
            "max_per_prefix",
            "banned",
            "kernel_hard_cap",
            "kernel_ban",
            "proxy_untrusted",
            "proxy_missing",
            "proxy_malformed",
            "proxy_truncated",
        ] {
            let _ = m.refused.get_or_create(&l(&[("reason", reason)]));
        }
        for dir in ["download", "upload"] {
            let _ = m.bytes.get_or_create(&l(&[("direction", dir)]));
        }
        Self { registry: r, ..m }
    }

    /// Counts a command by its label in the command table
    /// (`command::Verb::label`, a fixed set).
    pub fn command(&self, label: &'static str) {
        self.commands.get_or_create(&l(&[("command", label)])).inc();
    }

    /// Counts a reply by class.
    pub fn reply(&self, code: u16) {
        let class = match code / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        self.replies.get_or_create(&l(&[("class", class)])).inc();
    }

    /// Counts a labelled event.
    pub fn inc(family: &Family<Labels, Counter>, key: &str, value: &str) {
        family.get_or_create(&l(&[(key, value)])).inc();
    }

    /// Records a finished transfer.
    pub fn transfer(&self, direction: &str, result: &str, bytes: u64, secs: f64, user: Option<&str>) {
        // Bytes went into `bytes` while they moved (see `data::Progress`).
        self.transfers.get_or_create(&l(&[("direction", direction), ("result", result)])).inc();
        self.durations.get_or_create(&l(&[("direction", direction)])).observe(secs);
        if let Some(u) = user {
            self.user_bytes.get_or_create(&l(&[("user", u), ("direction", direction)])).inc_by(bytes);
        }
    }

    /// Counts a finished transfer by whether its data connection was encrypted.
    pub fn tls_transfer(&self, direction: &str, tls: bool) {
        let t = if tls { "yes" } else { "no" };
        self.tls_transfers.get_or_create(&l(&[("direction", direction), ("tls", t)])).inc();
    }

    /// Counts a finished transfer of `path` (as the client named it, from the
    /// user's root) under its top-level directory when that is listed in
    /// `dirs` (`ftpd_metrics_dirs`), else under `other`: the label's values
    /// are the operator's list, never a client's choice.
    pub fn dir_transfer(&self, dirs: &str, path: &[u8], direction: &str, bytes: u64) {
        if dirs.trim().is_empty() {
            return;
        }
        let dir = project_of(dirs, path);
        let labels = l(&[("dir", dir), ("direction", direction)]);
        self.dir_bytes.get_or_create(&labels).inc_by(bytes);
        self.dir_transfers.get_or_create(&labels).inc();
    }

    /// Counts a rate-limited transfer (see [`crate::rates::Pacer::how`]).
    pub fn paced(&self, direction: &str, how: &str) {
        self.paced.get_or_create(&l(&[("direction", direction), ("how", how)])).inc();
    }

    /// The byte counter of a direction, for `data::Progress`.
    pub fn bytes_counter(&self, direction: &str) -> Counter {
        self.bytes.get_or_create(&l(&[("direction", direction)])).clone()
    }

    /// Session gauge for a user class.
    pub fn active(&self, class: &str) -> Gauge {
        self.sessions_active.get_or_create(&l(&[("class", class)])).clone()
    }

    /// The OpenMetrics text, with kernel and process figures read now.
    /// `bans`: how many bans are in force, and the networks (as shown in
    /// logs) of the longest [`BANS_LISTED`] with the seconds each has left.
    pub fn render(&self, kernel: Option<&crate::dataplane::Dataplane>, bans: (usize, Vec<(String, u64)>)) -> String {
        let (bans_active, listed) = bans;
        // Rebuilt at each scrape: a lifted ban's series goes with it.
        self.ban_seconds_left.clear();
        for (net, left) in listed {
            self.ban_seconds_left.get_or_create(&l(&[("network", &net)])).set(i64::try_from(left).unwrap_or(i64::MAX));
        }
        if let Some(Ok(counters)) = kernel.map(crate::dataplane::Dataplane::counters) {
            let (mut hard_cap, mut ban) = (0, 0);
            for (c, v) in counters {
                let counter = self.kernel.get_or_create(&l(&[("event", c.name())]));
                counter.inner().store(v, Ordering::Relaxed);
                match c {
                    ftpd_common::Counter::CapDropPerIp
                    | ftpd_common::Counter::CapDropTotal
                    | ftpd_common::Counter::CapDropPerPrefix => hard_cap += v,
                    ftpd_common::Counter::BanDrop => ban += v,
                    _ => {}
                }
            }
            // SYNs the XDP hard caps and bans dropped, beside userspace's refusals.
            self.refused.get_or_create(&l(&[("reason", "kernel_hard_cap")])).inner().store(hard_cap, Ordering::Relaxed);
            self.refused.get_or_create(&l(&[("reason", "kernel_ban")])).inner().store(ban, Ordering::Relaxed);
        }
        self.bans_active.set(i64::try_from(bans_active).unwrap_or(i64::MAX));
        let (rss, cpu) = process_totals();
        self.rss.set(rss);
        self.cpu.inner().store(cpu.to_bits(), Ordering::Relaxed);
        self.fds.set(std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64));
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// RSS bytes and CPU seconds of this process, its parent (the master, when
/// ftpd started as root) and the parent's other children (file workers).
fn process_totals() -> (i64, f64) {
    let me = std::process::id();
    let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
    let master_is_ftpd = std::fs::read_to_string(format!("/proc/{parent}/comm")).is_ok_and(|c| c.trim() == "ftpd");
    let mut pids = vec![me];
    if master_is_ftpd {
        pids.push(parent);
        let kids = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap_or_default();
        pids.extend(kids.split_whitespace().filter_map(|k| k.parse::<u32>().ok()).filter(|k| *k != me));
    }
    let page = 4096i64;
    let (mut rss, mut cpu) = (0i64, 0f64);
    for p in pids {
        if let Ok(statm) = std::fs::read_to_string(format!("/proc/{p}/statm")) {
            rss += statm.split_whitespace().nth(1).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) * page;
        }
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(") ") {
            let f: Vec<&str> = rest.split(' ').collect();
            let t: f64 = [11, 12].iter().filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok())).sum();
            cpu += t / 100.0;
        }
    }
    (rss, cpu)
}

/// The crate's OpenMetrics text as the classic Prometheus text format, for
/// clients that do not ask for OpenMetrics (curl, promtool): counter families
/// are named with their `_total` suffix in HELP/TYPE, and `# EOF` is dropped.
/// Prometheus itself asks for OpenMetrics and gets the crate's output as is.
pub fn prometheus_text(om: &str) -> String {
    let counters: Vec<&str> =
        om.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(&name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// How long a client may take to send a request's headers, counted from the
/// connection (or the previous response on a kept-alive one): a client that
/// trickles a byte a second (slowloris), or idles, loses the connection then
/// instead of holding its task forever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest life of a connection, whatever it does: also bounds a client that
/// sends requests but never reads the answers. Prometheus reconnects per
/// scrape anyway when its interval is longer than `HEADER_TIMEOUT`.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Largest request head (request line and headers) accepted; a larger one
/// gets `431 Request Header Fields Too Large` and the connection closes.
const MAX_HEAD_BYTES: usize = 8192;

/// Most headers in one request (a scrape sends about five).
const MAX_HEADERS: usize = 32;

/// Serves `/metrics` until the process ends, over HTTP/1.x with hyper:
/// `GET` and `HEAD` (the text format, or OpenMetrics when the `Accept`
/// header asks for it); another method gets 405, another path 404.
/// Connections are kept alive between requests, within the bounds above.
pub async fn serve<F>(listener: TcpListener, render: Arc<F>)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    loop {
        let Ok((sock, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let render = Arc::clone(&render);
        let conn = http.serve_connection(
            hyper_util::rt::TokioIo::new(sock),
            hyper::service::service_fn(move |req| {
                let resp = respond(&*render, peer, &req);
                std::future::ready(Ok::<_, std::convert::Infallible>(resp))
            }),
        );
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "metrics connection ended"),
                Err(_) => debug!(%peer, "metrics connection closed after {CONNECTION_LIFETIME:?}"),
            }
        });
    }
}

/// The answer to one request. A `HEAD` gets the `GET` answer's headers:
/// hyper sends no body for it.
fn respond<B>(render: &dyn Fn() -> String, peer: SocketAddr, req: &Request<B>) -> Response<Full<Bytes>> {
    let status = |code: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = code;
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r
    };
    let resp = if req.uri().path() != "/metrics" {
        status(StatusCode::NOT_FOUND, "not found\n")
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else {
        let openmetrics = req.headers().get_all(ACCEPT).iter().any(|v| {
            let v = v.as_bytes();
            v.windows(b"openmetrics".len()).any(|w| w.eq_ignore_ascii_case(b"openmetrics"))
        });
        let om = render();
        let (body, ctype) = if openmetrics {
            (om, "application/openmetrics-text; version=1.0.0; charset=utf-8")
        } else {
            (prometheus_text(&om), "text/plain; version=0.0.4; charset=utf-8")
        };
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        r
    };
    debug!(%peer, method = %req.method(), uri = %req.uri(), status = resp.status().as_u16(), "metrics request");
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_is_a_listed_top_level_directory_or_other() {
        let dirs = "debian, /ubuntu/ ,";
        assert_eq!(project_of(dirs, b"/debian/pool/a.deb"), "debian");
        assert_eq!(project_of(dirs, b"/ubuntu/x"), "ubuntu");
        assert_eq!(project_of(dirs, b"/debian"), "other");
        assert_eq!(project_of(dirs, b"/debian-backports/x"), "other");
        assert_eq!(project_of(dirs, b"/top.bin"), "other");
        assert_eq!(project_of(dirs, b"//x"), "other");
    }
}
