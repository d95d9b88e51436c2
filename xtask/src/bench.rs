//! `cargo xtask bench`: benchmarks that compare configurations side by side
//! in one run. Implemented so far: `flood` (issue 4), the SYN and connection
//! floods that the kernel data plane stops before they reach ftpd.
//!
//! Needs root: the flood comes from a client network namespace over a veth
//! into ftpd's namespace, and the eBPF side needs CAP_BPF.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{build, exec, setup, workspace_root};

/// Which benchmark.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// `download` (root, installs vsftpd), `sessions`, `flood` (root), or `all` (sessions and flood).
    #[arg(default_value = "all")]
    which: String,
    /// Repetitions of each configuration (interleaved).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// SYNs per flood.
    #[arg(long, default_value_t = 200_000)]
    syns: u32,
    /// Full TCP connections per connection flood.
    #[arg(long, default_value_t = 2_000)]
    connects: u32,
}

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

/// Runs the chosen benchmarks.
pub(crate) fn run(args: &Args) -> Result<()> {
    setup::run(setup::Verbosity::Summary)?;
    match args.which.as_str() {
        "flood" => flood(args),
        "sessions" => sessions(),
        "download" => download(args),
        "all" => {
            sessions()?;
            if setup::is_root()? {
                flood(args)
            } else {
                bail!("the flood benchmark needs root; `cargo xtask bench sessions` ran")
            }
        }
        other => bail!("unknown benchmark {other:?}: use download, sessions, flood or all"),
    }
}

/// Holds N logged-in sessions and prints how many it holds, then waits.
const HOLD_SESSIONS: &str = r#"
import socket, sys, resource
n, port = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
for i in range(n):
    try:
        c = socket.create_connection(('127.0.0.1', port), 5)
        c.recv(100); c.sendall(b'USER anonymous\r\n')
        if not c.recv(100).startswith(b'230'):
            break
        held.append(c)
    except OSError:
        break
print(len(held), flush=True)
sys.stdin.read()
"#;

/// RSS (bytes) of a process and all its descendants.
fn rss_tree(pid: u32) -> u64 {
    let mut total = 0;
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if let Ok(statm) = std::fs::read_to_string(format!("/proc/{p}/statm")) {
            total += statm.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 4096;
        }
        let kids = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        todo.extend(kids.split_whitespace().filter_map(|k| k.parse::<u32>().ok()));
    }
    total
}

/// Idle logged-in sessions: RSS per session (all ftpd processes), and
/// whether every session was held. Writes bench-results/sessions.{json,md}.
fn sessions() -> Result<()> {
    let bin = build::run()?;
    let root = std::env::temp_dir().join("ftpd-bench-root");
    std::fs::create_dir_all(&root)?;
    let mut md = String::from(
        "# ftpd idle sessions

| sessions | held | RSS per session (KiB) |
| --- | --- | --- |
",
    );
    let mut json = String::from("{\"benchmark\":\"sessions\",\"rows\":[");
    for (i, n) in [1000u32, 10_000].into_iter().enumerate() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let mut server = Guard(
            Command::new(&bin)
                .arg("--root")
                .arg(&root)
                .args([
                    format!("-olisten_port={port}"),
                    "-oftpd_ebpf=off".into(),
                    "-oftpd_metrics_listen=".into(),
                    "-omax_clients=0".into(),
                    "-omax_per_ip=0".into(),
                    "-oidle_session_timeout=0".into(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting ftpd")?,
        );
        thread::sleep(Duration::from_millis(500));
        let pid = server.0.id();
        let mut warm = Command::new("python3")
            .args(["-c", HOLD_SESSIONS, "1", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(warm.stdout.take().context("stdout")?), &mut line)?;
        thread::sleep(Duration::from_millis(300));
        let base = rss_tree(pid);
        let t = Instant::now();
        let mut holder = Command::new("python3")
            .args(["-c", HOLD_SESSIONS, &n.to_string(), &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut held = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().context("stdout")?), &mut held)?;
        thread::sleep(Duration::from_millis(500));
        let after = rss_tree(pid);
        let held: u32 = held.trim().parse().unwrap_or(0);
        let per = (after.saturating_sub(base)) as f64 / f64::from(held.max(1)) / 1024.0;
        println!(
            "[bench sessions] {n}: held {held}, {per:.2} KiB per session ({:.1} s to open)",
            t.elapsed().as_secs_f64()
        );
        let _ = writeln!(md, "| {n} | {held} | {per:.2} |");
        let _ = write!(
            json,
            "{}{{\"sessions\":{n},\"held\":{held},\"kib_per_session\":{per:.3}}}",
            if i > 0 { "," } else { "" }
        );
        drop(holder.stdin.take());
        drop(warm.stdin.take());
        let _ = holder.wait();
        let _ = warm.wait();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let _ = server.0.wait();
    }
    json.push_str("]}\n");
    println!("\n{md}");
    let dir = workspace_root().join("bench-results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("sessions.md"), &md)?;
    std::fs::write(dir.join("sessions.json"), &json)?;
    Ok(())
}

/// The raw ceiling: a minimal HTTP server that sendfile()s the file, so the
/// same curl binary downloads from all three servers.
const SENDFILE_SERVER: &str = r#"
import socket, os, sys
path, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', port)); s.listen(8)
while True:
    c, _ = s.accept()
    req = b''
    while b'\r\n\r\n' not in req:
        d = c.recv(4096)
        if not d: break
        req += d
    with open(path, 'rb') as f:
        off, size = 0, os.fstat(f.fileno()).st_size
        c.sendall(b'HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n' % size)
        while off < size:
            off += os.sendfile(c.fileno(), f.fileno(), off, size - off)
    c.close()
"#;

/// CPU seconds of a process, its live children, and its reaped children.
fn cpu_all(pid: u32) -> f64 {
    let mut total = cpu_seconds(pid);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    if let Some((_, rest)) = stat.rsplit_once(") ") {
        let f: Vec<&str> = rest.split(' ').collect();
        total +=
            [13usize, 14].iter().filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok())).sum::<f64>() / 100.0;
    }
    total
}

fn free_local_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Single-stream 1 GiB download: ftpd against vsftpd (sendfile on) and a
/// raw sendfile loop, interleaved. MB/s from curl, server CPU per GiB.
fn download(args: &Args) -> Result<()> {
    if !setup::is_root()? {
        bail!("the download benchmark needs root (it installs and runs vsftpd)");
    }
    let bin = build::run()?;
    if !Path::new("/usr/sbin/vsftpd").exists() {
        println!("[bench] installing vsftpd (the peer)");
        exec(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "vsftpd"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        let _ = Command::new("systemctl").args(["stop", "vsftpd"]).stderr(Stdio::null()).status();
        let _ = Command::new("pkill").args(["-x", "vsftpd"]).status();
    }
    let dir = std::env::temp_dir().join("ftpd-bench-dl");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("1g.bin");
    let size: u64 = 1 << 30;
    if std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) != size {
        println!("[bench] writing a 1 GiB random file");
        exec(Command::new("sh").arg("-c").arg(format!("head -c {size} /dev/urandom > {}", file.display())))?;
    }
    std::fs::create_dir_all("/var/run/vsftpd/empty")?;
    // vsftpd changes to ftp_username's home before anon_root, so it needs a
    // user whose home exists (nobody's is /nonexistent): daemon's is /usr/sbin.
    let (fp, vp, cp) = (free_local_port()?, free_local_port()?, free_local_port()?);
    let conf = dir.join("vsftpd.conf");
    std::fs::write(
        &conf,
        format!(
            "listen=YES\nlisten_ipv6=NO\nlisten_port={vp}\nanonymous_enable=YES\nno_anon_password=YES\nanon_root={}\nftp_username=daemon\nnopriv_user=nobody\nlocal_enable=NO\nwrite_enable=NO\npasv_min_port=51000\npasv_max_port=51099\nuse_sendfile=YES\nseccomp_sandbox=NO\nsecure_chroot_dir=/var/run/vsftpd/empty\nbackground=NO\n",
            dir.display()
        ),
    )?;
    let ftpd = Guard(
        Command::new(&bin)
            .arg("--root")
            .arg(&dir)
            .args([
                format!("-olisten_port={fp}"),
                "-oftpd_ebpf=off".into(),
                "-oftpd_metrics_listen=".into(),
                "-opasv_min_port=52000".into(),
                "-opasv_max_port=52099".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let vsftpd =
        Guard(Command::new("/usr/sbin/vsftpd").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?);
    let ceiling = Guard(Command::new("python3").args(["-c", SENDFILE_SERVER]).arg(&file).arg(cp.to_string()).spawn()?);
    thread::sleep(Duration::from_millis(800));
    let targets: [(&str, u32, String); 3] = [
        ("ftpd", ftpd.0.id(), format!("ftp://127.0.0.1:{fp}/1g.bin")),
        ("vsftpd", vsftpd.0.id(), format!("ftp://127.0.0.1:{vp}/1g.bin")),
        ("sendfile ceiling", ceiling.0.id(), format!("http://127.0.0.1:{cp}/1g.bin")),
    ];
    let mut results: Vec<(&str, f64, f64)> = Vec::new();
    for rep in 1..=args.reps {
        for (name, pid, url) in &targets {
            let c0 = cpu_all(*pid);
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{size_download} %{speed_download}", url])
                .stdin(Stdio::null())
                .output()?;
            // vsftpd's session processes are counted once reaped.
            thread::sleep(Duration::from_millis(500));
            let c1 = cpu_all(*pid);
            let text = String::from_utf8_lossy(&out.stdout);
            let mut it = text.split_whitespace();
            let got: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let speed: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            if got != size {
                bail!("{name}: downloaded {got} bytes of {size}");
            }
            let mb_s = speed / 1e6;
            let mb_per_cpu = if c1 > c0 { size as f64 / 1e6 / (c1 - c0) } else { f64::INFINITY };
            println!(
                "[bench download] rep {rep}/{} {name:<16} {mb_s:8.0} MB/s, {:.3} server CPU s ({mb_per_cpu:.0} MB per CPU s)",
                args.reps,
                c1 - c0
            );
            results.push((name, mb_s, mb_per_cpu));
        }
    }
    let med =
        |name: &str, f: fn(&(&str, f64, f64)) -> f64| median(results.iter().filter(|r| r.0 == name).map(f).collect());
    let mut md = format!(
        "# 1 GiB single-stream download (curl, loopback), medians of {} interleaved runs (min–max)\n\n| server | MB/s | MB per server CPU-second |\n| --- | --- | --- |\n",
        args.reps
    );
    for (name, _, _) in &targets {
        let (s, smin, smax) = med(name, |r| r.1);
        let (c, cmin, cmax) = med(name, |r| r.2);
        let _ = writeln!(md, "| {name} | {s:.0} ({smin:.0}–{smax:.0}) | {c:.0} ({cmin:.0}–{cmax:.0}) |");
    }
    let f = med("ftpd", |r| r.1).0;
    let v = med("vsftpd", |r| r.1).0;
    let c = med("sendfile ceiling", |r| r.1).0;
    let fc = med("ftpd", |r| r.2).0;
    let vc = med("vsftpd", |r| r.2).0;
    let _ = writeln!(
        md,
        "\nftpd/vsftpd {:.2}, ftpd/ceiling {:.2}; MB per CPU-second ftpd/vsftpd {:.2}",
        f / v,
        f / c,
        fc / vc
    );
    println!("\n{md}");
    let out = workspace_root().join("bench-results");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("download.md"), &md)?;
    std::fs::write(
        out.join("download.json"),
        format!(
            "{{\"benchmark\":\"download\",\"ftpd_mb_s\":{f},\"vsftpd_mb_s\":{v},\"ceiling_mb_s\":{c},\"ftpd_mb_per_cpu_s\":{fc},\"vsftpd_mb_per_cpu_s\":{vc}}}\n"
        ),
    )?;
    drop((ftpd, vsftpd, ceiling));
    Ok(())
}

/// Runs the flood benchmark and writes bench-results/flood.{json,md}.
fn flood(args: &Args) -> Result<()> {
    if !setup::is_root()? {
        bail!("the flood benchmark needs root (network namespaces, eBPF)");
    }
    let bin = build::run()?;
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
            let s = one(&bin, &root, &cgroup, ebpf, args)?;
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
        let ratio = if o > 0.0 { e / o } else { f64::NAN };
        let _ = writeln!(md, "| {name} | {e:.3} ({emin:.3}–{emax:.3}) | {o:.3} ({omin:.3}–{omax:.3}) | {ratio:.3} |");
        let _ = write!(
            json,
            "{}{{\"metric\":\"{name}\",\"ebpf\":{e},\"off\":{o},\"ratio\":{ratio}}}",
            if i > 0 { "," } else { "" }
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
