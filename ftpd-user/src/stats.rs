//! `ftpd stats [--watch SECS] [ADDR...]`: a running ftpd's metrics as a
//! compact table for the terminal, with per-second rates from two scrapes.
//! Given several nodes of a fleet, one table per node, then the fleet's.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

/// Metric samples by `name{labels}` as exposed.
pub type Samples = HashMap<String, f64>;

/// Bans listed one per line; the rest are counted.
const BANS_SHOWN: usize = 20;

/// Fetches and parses `http://ADDR/metrics`.
pub fn scrape(addr: &str) -> Result<Samples, String> {
    let mut s =
        TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e} (is ftpd_metrics_listen set?)"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| format!("reading from {addr}: {e}"))?;
    let Some((head, text)) = body.split_once("\r\n\r\n") else {
        return Err(format!("{addr} did not answer HTTP"));
    };
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{addr}: {}", head.lines().next().unwrap_or_default()));
    }
    Ok(parse(text))
}

/// Parses exposition text into samples (comments and `# EOF` skipped).
pub fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Sum of every sample of `name` whose labels contain all of `with`.
pub fn sum(s: &Samples, name: &str, with: &[&str]) -> f64 {
    s.iter()
        .filter(|(k, _)| {
            let base = k.split('{').next().unwrap_or_default();
            base == name && with.iter().all(|w| k.contains(w))
        })
        .map(|(_, v)| v)
        .sum::<f64>()
        + 0.0 // an empty float sum is -0.0
}

/// The table, with rates computed between `before` and `now` over `secs`.
pub fn table(addr: &str, before: &Samples, now: &Samples, secs: f64) -> String {
    let rate = |name: &str, with: &[&str]| (sum(now, name, with) - sum(before, name, with)).max(0.0) / secs.max(0.001);
    let mb = 1e6;
    let mut out = format!("ftpd at {addr}\n");
    out.push_str(&format!(
        "sessions active   {:>8}  (anonymous {}, local {}, virtual {})\n",
        sum(now, "ftpd_sessions_active", &[]),
        sum(now, "ftpd_sessions_active", &["anonymous"]),
        sum(now, "ftpd_sessions_active", &["local"]),
        sum(now, "ftpd_sessions_active", &["virtual"]),
    ));
    out.push_str(&format!(
        "sessions total    {:>8}  logins ok {}, failed {}\n",
        sum(now, "ftpd_sessions_total", &[]),
        sum(now, "ftpd_logins_total", &["\"ok\""]),
        sum(now, "ftpd_logins_total", &["\"failed\""]),
    ));
    out.push_str(&format!(
        "download          {:>8.2} MB/s  (total {:.1} MB)\n",
        rate("ftpd_transfer_bytes_total", &["download"]) / mb,
        sum(now, "ftpd_transfer_bytes_total", &["download"]) / mb
    ));
    out.push_str(&format!(
        "upload            {:>8.2} MB/s  (total {:.1} MB)\n",
        rate("ftpd_transfer_bytes_total", &["upload"]) / mb,
        sum(now, "ftpd_transfer_bytes_total", &["upload"]) / mb
    ));
    // Per-project rows (`ftpd_metrics_dirs`), busiest first.
    let mut dirs: Vec<&str> = now
        .keys()
        .filter(|k| k.starts_with("ftpd_dir_transfer_bytes_total{"))
        .filter_map(|k| k.split("dir=\"").nth(1)?.split('"').next())
        .collect();
    dirs.sort_unstable();
    dirs.dedup();
    let dir_total = |d: &str| sum(now, "ftpd_dir_transfer_bytes_total", &[&format!("dir=\"{d}\"")]);
    dirs.sort_by(|a, b| dir_total(b).total_cmp(&dir_total(a)));
    for d in dirs {
        let with = format!("dir=\"{d}\"");
        out.push_str(&format!(
            "  {d:<15} {:>8.2} MB/s  (total {:.1} MB, {} transfers)\n",
            rate("ftpd_dir_transfer_bytes_total", &[&with]) / mb,
            dir_total(d) / mb,
            sum(now, "ftpd_dir_transfers_total", &[&with]),
        ));
    }
    out.push_str(&format!(
        "refused           {:>8.2} /s    (max_clients {}, max_per_ip {}, max_per_prefix {}, banned {})\n",
        rate("ftpd_connections_refused_total", &[]),
        sum(now, "ftpd_connections_refused_total", &["\"max_clients\""]),
        sum(now, "ftpd_connections_refused_total", &["\"max_per_ip\""]),
        sum(now, "ftpd_connections_refused_total", &["\"max_per_prefix\""]),
        sum(now, "ftpd_connections_refused_total", &["\"banned\""]),
    ));
    out.push_str(&format!(
        "bans active       {:>8}  (total {}; SYNs dropped in XDP {})\n",
        sum(now, "ftpd_bans_active", &[]),
        sum(now, "ftpd_bans_total", &[]),
        sum(now, "ftpd_kernel_events_total", &["\"ban_drop\""]),
    ));
    // The bans themselves, longest first (ftpd lists at most 100).
    let mut bans: Vec<(&str, f64)> = now
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("ftpd_ban_seconds_left{network=\"")?.strip_suffix("\"}")?, *v)))
        .collect();
    bans.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    for (net, left) in bans.iter().take(BANS_SHOWN) {
        out.push_str(&format!("  banned {net:<40} {left:>6} s left\n"));
    }
    if bans.len() > BANS_SHOWN {
        out.push_str(&format!("  ... and {} more (ftpd_ban_seconds_left in /metrics)\n", bans.len() - BANS_SHOWN));
    }
    let drops = ["pinhole_drop", "cap_drop_per_ip", "cap_drop_per_prefix", "cap_drop_total", "ban_drop"];
    let kernel_drops: f64 = drops.iter().map(|d| sum(now, "ftpd_kernel_events_total", &[d])).sum();
    let kernel_rate: f64 = drops.iter().map(|d| rate("ftpd_kernel_events_total", &[d])).sum();
    out.push_str(&format!(
        "kernel drops      {kernel_rate:>8.2} /s    (total {kernel_drops}; eBPF {})\n",
        if sum(now, "ftpd_ebpf_enabled", &[]) > 0.0 { "on" } else { "off" }
    ));
    out.push_str(&format!(
        "passive ports     {:>8}  in use of {}\n",
        sum(now, "ftpd_pasv_ports_in_use", &[]),
        sum(now, "ftpd_pasv_ports_range", &[])
    ));
    out
}

/// Adds every node's samples: the fleet's totals. Nodes with a `node` label
/// keep their samples apart; without one, equal names add up.
pub fn merge<'a>(nodes: impl IntoIterator<Item = &'a Samples>) -> Samples {
    let mut out = Samples::new();
    for s in nodes {
        for (k, v) in s {
            *out.entry(k.clone()).or_default() += v;
        }
    }
    out
}

/// Scrapes every address; the nodes that answered, and one line per node
/// that did not.
fn scrape_all(addrs: &[String]) -> (Vec<Option<Samples>>, Vec<String>) {
    let mut errors = Vec::new();
    let got = addrs.iter().map(|a| scrape(a).map_err(|e| errors.push(format!("ftpd stats: {e}"))).ok()).collect();
    (got, errors)
}

const USAGE: &str = "usage: ftpd stats [--watch SECS] [ADDR...]   (ADDR: ftpd_metrics_listen, default 127.0.0.1:9121; several: one table per node, then the fleet's)";

/// Runs the command; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let mut watch: Option<f64> = None;
    let mut addrs: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--watch" => match it.next().and_then(|v| v.parse::<f64>().ok()).filter(|v| *v > 0.0) {
                Some(v) => watch = Some(v),
                None => {
                    eprintln!("ftpd stats: --watch needs a number of seconds");
                    return 2;
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            other if other.starts_with('-') => {
                eprintln!("ftpd stats: unknown option {other}");
                return 2;
            }
            other => addrs.push(other.to_string()),
        }
    }
    if addrs.is_empty() {
        addrs.push("127.0.0.1:9121".to_string());
    }
    let interval = watch.unwrap_or(1.0);
    let (mut before, errors) = scrape_all(&addrs);
    if before.iter().all(Option::is_none) {
        for e in errors {
            eprintln!("{e}");
        }
        return 1;
    }
    let mut t = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs_f64(interval));
        let (now, errors) = scrape_all(&addrs);
        for e in &errors {
            eprintln!("{e}");
        }
        if now.iter().all(Option::is_none) {
            return 1;
        }
        let secs = t.elapsed().as_secs_f64();
        let mut answered = (Vec::new(), Vec::new());
        for ((addr, b), n) in addrs.iter().zip(&before).zip(&now) {
            if let (Some(b), Some(n)) = (b, n) {
                print!("{}", table(addr, b, n, secs));
                answered.0.push(b);
                answered.1.push(n);
            }
        }
        if addrs.len() > 1 {
            let name = format!("the fleet ({} of {} nodes)", answered.1.len(), addrs.len());
            print!("\n{}", table(&name, &merge(answered.0), &merge(answered.1), secs));
        }
        if watch.is_none() {
            return i32::from(!errors.is_empty());
        }
        println!();
        before = now;
        t = Instant::now();
    }
}
