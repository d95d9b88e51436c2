//! The SYN and connection floods (issue 4) that the kernel data plane stops
//! before they reach ftpd: ftpd with its eBPF programs against
//! `ftpd_ebpf=off`, interleaved.
//!
//! The flood comes from a client network namespace over a veth into ftpd's
//! namespace, so it needs root (and CAP_BPF for the eBPF side).

use std::{
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use ftpd_testkit::{Cgroup, NetPair, process_tree};

use super::Args;
use crate::workspace_root;

/// A raw-socket SYN generator: `count` SYNs from the client address (random source
/// ports) to ports cycling through `ports`.
const SYN_FLOOD: &str = r#"
import socket, struct, random, sys
src, dst, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
ports = [int(p) for p in sys.argv[4].split(',')]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
sa, da = socket.inet_aton(src), socket.inet_aton(dst)
def csum(b):
    if len(b) % 2: b += b'\0'
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xffff); t += t >> 16
    return ~t & 0xffff
for i in range(count):
    sport = 1024 + (i * 7919) % 60000
    dport = ports[i % len(ports)]
    tcp = struct.pack('!HHIIBBHHH', sport, dport, random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = sa + da + struct.pack('!BBH', 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack('!H', csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 40, i & 0xffff, 0, 64, 6, 0, sa, da)
    s.sendto(ip + tcp, (dst, 0))
"#;

/// Opens `hold` connections and keeps them, then makes `count` full connects
/// (each closed at once), non-blocking with a short timeout.
const CONNECT_FLOOD: &str = r#"
import socket, sys, time
dst, hold, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = [socket.create_connection((dst, 2121), 3) for _ in range(hold)]
time.sleep(0.5)
ok = dropped = 0
for i in range(count):
    s = socket.socket()
    s.settimeout(0.01)
    try:
        s.connect((dst, 2121)); ok += 1
    except OSError:
        dropped += 1
    s.close()
print(ok, dropped)
"#;

/// CPU seconds (user + system) of a process and its descendants (the front).
fn cpu_seconds(pid: u32) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for p in process_tree(pid) {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            // Fields after the command name, which is in parentheses.
            if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
                let f: Vec<&str> = rest.split(' ').collect();
                let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                total += (ut + st) / tick;
            }
        }
    }
    total
}

/// System-wide CPU seconds spent outside idle (includes softirq, where
/// packets are handled).
fn host_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    let v: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let busy: f64 = v.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum();
    busy / 100.0
}

/// A table row: its label and how to read it from a sample.
type Row = (&'static str, fn(&Sample) -> f64);

struct Sample {
    mode: &'static str,
    syn_ftpd: f64,
    syn_host: f64,
    conn_ftpd: f64,
    accepted: u32,
}

/// Starts ftpd in `net`'s server namespace, inside `cgroup` (where its
/// sock_ops program attaches).
fn start_ftpd(bin: &Path, root: &Path, net: &NetPair, cgroup: &Cgroup, ebpf: bool) -> Result<Child> {
    let child = Command::new("sh")
        .args(["-c", &cgroup.enter_netns_script(&net.server_ns)])
        .arg(bin)
        .arg("--root")
        .arg(root)
        .args([
            format!("-olisten_address={}", net.server_ip),
            "-olisten_port=2121".into(),
            "-opasv_min_port=50000".into(),
            "-opasv_max_port=50099".into(),
            "-omax_per_ip=3".into(),
            format!("-oftpd_ebpf={}", if ebpf { "on" } else { "off" }),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ftpd")?;
    thread::sleep(Duration::from_millis(700));
    Ok(child)
}

fn in_client(net: &NetPair, script: &str, args: &[String]) -> Result<String> {
    let out =
        net.client_cmd("python3").args(["-c", script]).args(args).output().context("running the flood generator")?;
    if !out.status.success() {
        bail!("flood generator failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn one(bin: &Path, root: &Path, net: &NetPair, cgroup: &Cgroup, ebpf: bool, args: &Args) -> Result<Sample> {
    let mut child = start_ftpd(bin, root, net, cgroup, ebpf)?;
    let pid = child.id();
    let (server_ip, client_ip) = (net.server_ip.to_string(), net.client_ip.to_string());
    // The control port from an IP over its cap (3 connections held first,
    // from a separate process, so the kernel counts them), and the passive range.
    let ports: Vec<String> = std::iter::once("2121".to_string()).chain((50000..50100).map(|p| p.to_string())).collect();
    let holder = net
        .client_cmd("python3")
        .arg("-c")
        .arg(format!("import socket,time\nh=[socket.create_connection(('{server_ip}',2121),3) for _ in range(6)]\ntime.sleep(600)"))
        .spawn()
        .context("holding connections")?;
    let mut holder = scopeguard(holder);
    thread::sleep(Duration::from_millis(500));
    let (c0, h0) = (cpu_seconds(pid), host_busy_seconds());
    in_client(net, SYN_FLOOD, &[client_ip, server_ip.clone(), args.syns.to_string(), ports.join(",")])?;
    thread::sleep(Duration::from_millis(300));
    let (c1, h1) = (cpu_seconds(pid), host_busy_seconds());
    let out = in_client(net, CONNECT_FLOOD, &[server_ip, "0".into(), args.connects.to_string()])?;
    thread::sleep(Duration::from_millis(300));
    let c2 = cpu_seconds(pid);
    let accepted = out.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let _ = holder.0.kill();
    let _ = holder.0.wait();
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();
    Ok(Sample {
        mode: if ebpf { "ebpf" } else { "off" },
        syn_ftpd: c1 - c0,
        syn_host: h1 - h0,
        conn_ftpd: c2 - c1,
        accepted,
    })
}

/// Kills the wrapped child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scopeguard(c: Child) -> Guard {
    Guard(c)
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Runs the flood benchmark on `bin` and writes bench-results/flood.{json,md}.
pub(super) fn run(args: &Args, bin: &Path) -> Result<()> {
    let net = NetPair::try_new().map_err(anyhow::Error::msg)?;
    let root = std::env::temp_dir().join("ftpd-bench-root");
    std::fs::create_dir_all(&root)?;
    let mount = Cgroup::mount_point_or_mount().context("mounting cgroup2")?;
    let cgroup = Cgroup::create_in(&mount, "ftpd-bench-", "flood")
        .with_context(|| format!("creating a cgroup under {}", mount.display()))?;
    let mut samples = Vec::new();
    for rep in 1..=args.reps {
        for ebpf in [true, false] {
            let t = Instant::now();
            let s = one(bin, &root, &net, &cgroup, ebpf, args)?;
            println!(
                "[bench flood] rep {rep}/{} {:<4}: SYN flood ftpd {:.3} s CPU, host {:.2} s busy; connect flood ftpd {:.3} s CPU, {} of {} accepted ({:.1} s)",
                args.reps,
                s.mode,
                s.syn_ftpd,
                s.syn_host,
                s.conn_ftpd,
                s.accepted,
                args.connects,
                t.elapsed().as_secs_f64()
            );
            samples.push(s);
        }
    }
    drop(cgroup);
    let pick = |mode: &str, f: fn(&Sample) -> f64| median(samples.iter().filter(|s| s.mode == mode).map(f).collect());
    let rows: [Row; 3] = [
        ("SYN flood: ftpd CPU s", |s| s.syn_ftpd),
        ("SYN flood: host busy CPU s", |s| s.syn_host),
        ("connect flood: ftpd CPU s", |s| s.conn_ftpd),
    ];
    let mut md = format!(
        "# ftpd flood benchmark\n\n{} SYNs (control port of an IP over its cap, and the passive range), then {} connects from that IP; medians of {} interleaved runs (min–max).\n\n| metric | eBPF | ftpd_ebpf=off | ratio eBPF/off |\n| --- | --- | --- | --- |\n",
        args.syns, args.connects, args.reps
    );
    let mut json = String::from("{\"benchmark\":\"flood\",\"rows\":[");
    for (i, (name, f)) in rows.iter().enumerate() {
        let (e, emin, emax) = pick("ebpf", *f);
        let (o, omin, omax) = pick("off", *f);
        // Both zero (no CPU at all in either mode): no ratio to show.
        let ratio = if o > 0.0 { e / o } else { f64::NAN };
        let shown = if ratio.is_nan() { "—".to_string() } else { format!("{ratio:.3}") };
        let _ = writeln!(md, "| {name} | {e:.3} ({emin:.3}–{emax:.3}) | {o:.3} ({omin:.3}–{omax:.3}) | {shown} |");
        let _ = write!(
            json,
            "{}{{\"metric\":\"{name}\",\"ebpf\":{e},\"off\":{o},\"ratio\":{}}}",
            if i > 0 { "," } else { "" },
            if ratio.is_nan() { "null".to_string() } else { ratio.to_string() }
        );
    }
    json.push_str("]}\n");
    println!("\n{md}");
    let dir = workspace_root().join("bench-results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("flood.md"), &md)?;
    std::fs::write(dir.join("flood.json"), &json)?;
    println!("wrote {}", dir.join("flood.md").display());
    Ok(())
}
