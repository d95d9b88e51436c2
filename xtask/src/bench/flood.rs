//! The SYN and connection floods (issue 4) that the kernel data plane stops
//! before they reach ftpd: ftpd with its eBPF programs against
//! `ftpd_ebpf=off`, interleaved.
//!
//! The flood comes from a client network namespace over a veth into ftpd's
//! namespace, so it needs root (and CAP_BPF for the eBPF side).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::Args;
use crate::{exec, workspace_root};

const SERVER_NS: &str = "ftpdbench-s";
const CLIENT_NS: &str = "ftpdbench-c";
const SERVER_IP: &str = "10.199.0.1";
const CLIENT_IP: &str = "10.199.0.2";

/// Deletes the benchmark namespaces (and so the veth) on drop.
struct Net;

impl Net {
    fn create() -> Result<Self> {
        Self::remove();
        let me = Self;
        for args in [
            vec!["netns", "add", SERVER_NS],
            vec!["netns", "add", CLIENT_NS],
            vec!["link", "add", "vbs", "netns", SERVER_NS, "type", "veth", "peer", "name", "vbc", "netns", CLIENT_NS],
            vec!["-n", SERVER_NS, "addr", "add", "10.199.0.1/24", "dev", "vbs"],
            vec!["-n", CLIENT_NS, "addr", "add", "10.199.0.2/24", "dev", "vbc"],
            vec!["-n", SERVER_NS, "link", "set", "vbs", "up"],
            vec!["-n", CLIENT_NS, "link", "set", "vbc", "up"],
            vec!["-n", SERVER_NS, "link", "set", "lo", "up"],
            vec!["-n", CLIENT_NS, "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip").args(&args).output().context("running ip")?;
            if !out.status.success() {
                bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
            }
        }
        thread::sleep(Duration::from_millis(500));
        Ok(me)
    }

    fn remove() {
        for ns in [SERVER_NS, CLIENT_NS] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        Self::remove();
    }
}

/// A raw-socket SYN generator: `count` SYNs from CLIENT_IP (random source
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

/// CPU seconds (user + system) of a process and its children (the front).
fn cpu_seconds(pid: u32) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            // Fields after the command name, which is in parentheses.
            if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
                let f: Vec<&str> = rest.split(' ').collect();
                let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                total += (ut + st) / tick;
            }
        }
        let kids = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        todo.extend(kids.split_whitespace().filter_map(|k| k.parse::<u32>().ok()));
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

fn start_ftpd(bin: &Path, root: &Path, cgroup: &Path, ebpf: bool) -> Result<Child> {
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec nsenter --net=/run/netns/{SERVER_NS} \"$0\" \"$@\"",
        cgroup.display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .arg(bin)
        .arg("--root")
        .arg(root)
        .args([
            format!("-olisten_address={SERVER_IP}"),
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

fn in_client(script: &str, args: &[String]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", CLIENT_NS, "python3", "-c", script])
        .args(args)
        .output()
        .context("running the flood generator")?;
    if !out.status.success() {
        bail!("flood generator failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn one(bin: &Path, root: &Path, cgroup: &Path, ebpf: bool, args: &Args) -> Result<Sample> {
    let mut child = start_ftpd(bin, root, cgroup, ebpf)?;
    let pid = child.id();
    // The control port from an IP over its cap (3 connections held first,
    // from a separate process, so the kernel counts them), and the passive range.
    let ports: Vec<String> = std::iter::once("2121".to_string()).chain((50000..50100).map(|p| p.to_string())).collect();
    let holder = Command::new("ip")
        .args(["netns", "exec", CLIENT_NS, "python3", "-c"])
        .arg(format!("import socket,time\nh=[socket.create_connection(('{SERVER_IP}',2121),3) for _ in range(6)]\ntime.sleep(600)"))
        .spawn()
        .context("holding connections")?;
    let mut holder = scopeguard(holder);
    thread::sleep(Duration::from_millis(500));
    let (c0, h0) = (cpu_seconds(pid), host_busy_seconds());
    in_client(SYN_FLOOD, &[CLIENT_IP.into(), SERVER_IP.into(), args.syns.to_string(), ports.join(",")])?;
    thread::sleep(Duration::from_millis(300));
    let (c1, h1) = (cpu_seconds(pid), host_busy_seconds());
    let out = in_client(CONNECT_FLOOD, &[SERVER_IP.into(), "0".into(), args.connects.to_string()])?;
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
    let _net = Net::create()?;
    let root = std::env::temp_dir().join("ftpd-bench-root");
    std::fs::create_dir_all(&root)?;
    let cg_mount = String::from_utf8_lossy(
        &Command::new("findmnt").args(["-n", "-t", "cgroup2", "-o", "TARGET"]).output().context("findmnt")?.stdout,
    )
    .lines()
    .next()
    .map(str::to_owned);
    let cg_mount = match cg_mount {
        Some(m) => PathBuf::from(m.trim()),
        None => {
            let m = PathBuf::from("/run/ftpd/cgroup2");
            std::fs::create_dir_all(&m)?;
            exec(Command::new("mount").args(["-t", "cgroup2", "cgroup2"]).arg(&m))?;
            m
        }
    };
    let cgroup = cg_mount.join(format!("ftpd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&cgroup)?;
    let mut samples = Vec::new();
    for rep in 1..=args.reps {
        for ebpf in [true, false] {
            let t = Instant::now();
            let s = one(bin, &root, &cgroup, ebpf, args)?;
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
    let _ = std::fs::remove_dir(&cgroup);
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
