//! `cargo xtask bench fleet`: what sharing limits through Redis costs. Two
//! ftpd nodes serve logins and transfer starts, once holding their limits
//! alone and once sharing them through one Redis (Debian's redis-server),
//! interleaved, with the Redis calls counted and Redis's own CPU measured:
//! from those, how many logins and transfer starts per second one Redis
//! carries.

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use ftpd_testkit::{Server, free_port};

use super::{Args, client::Ftp, procs};

/// Clients per node for each workload.
const CLIENTS: usize = 8;

/// A Redis for the run, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(dir: &Path) -> Result<Self> {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (cargo xtask setup installs it)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not listen on {port}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { child, port })
    }

    /// Script calls so far (EVAL and EVALSHA), from Redis's own statistics.
    fn calls(&self) -> Result<u64> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "INFO", "commandstats"])
            .output()
            .context("redis-cli")?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter(|l| l.starts_with("cmdstat_eval"))
            .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
            .sum())
    }

    fn cpu_seconds(&self) -> f64 {
        procs::tree_cpu_seconds(self.child.id())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two nodes, with or without the fleet link.
fn nodes(root: &Path, redis: Option<&Redis>) -> Result<Vec<Server>> {
    (0..2)
        .map(|i| {
            let port = free_port();
            let mut settings = Server::base_settings(port);
            settings.extend(
                [
                    "no_anon_password=NO",
                    "max_per_ip=0",
                    "max_clients=0",
                    // A limit high enough to cost nothing, in a scope the
                    // fleet shares: every transfer start and end is published.
                    "anon_max_rate=1000000000",
                    "ftpd_rate_scope=ip",
                ]
                .map(String::from),
            );
            if let Some(r) = redis {
                settings.push(format!("ftpd_cluster_redis=redis://127.0.0.1:{}", r.port));
                settings.push(format!("ftpd_cluster_node=bench-{i}"));
            }
            Server::spawn(None, root, &settings, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                .map_err(anyhow::Error::msg)
        })
        .collect()
}

/// Runs `per_client` on `CLIENTS` threads per node for `secs`; returns how
/// many operations completed per second.
fn drive(servers: &[Server], secs: u64, per_client: impl Fn(u16, Instant) -> Result<u64> + Sync) -> Result<f64> {
    let done = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    thread::scope(|scope| {
        let handles: Vec<_> = servers
            .iter()
            .flat_map(|s| (0..CLIENTS).map(move |_| s.addr.port()))
            .map(|port| {
                let (done, per_client) = (&done, &per_client);
                scope.spawn(move || -> Result<()> {
                    done.fetch_add(per_client(port, deadline)?, Ordering::Relaxed);
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| bail!("client thread panicked")))
    })?;
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn logins(port: u16, deadline: Instant) -> Result<u64> {
    let mut n = 0;
    while Instant::now() < deadline {
        let mut ftp = Ftp::connect(port)?;
        ftp.user()?;
        ftp.quit()?;
        ftp.linger_zero()?;
        n += 1;
    }
    Ok(n)
}

fn transfers(port: u16, deadline: Instant) -> Result<u64> {
    let mut ftp = Ftp::login(port)?;
    let mut n = 0;
    while Instant::now() < deadline {
        let (got, _) = ftp.retr("f.bin")?;
        if got != 4096 {
            bail!("RETR f.bin: {got} bytes of 4096");
        }
        n += 1;
    }
    ftp.quit()?;
    Ok(n)
}

/// One sample's figures.
struct Figures {
    logins: f64,
    login_calls: u64,
    retrs: f64,
    retr_calls: u64,
    redis_cpu: f64,
}

/// One sample: both workloads on two fresh nodes.
fn sample(root: &Path, redis: Option<&Redis>, secs: u64) -> Result<Figures> {
    let servers = nodes(root, redis)?;
    if redis.is_some() {
        // Until both nodes have reached Redis, admissions are local.
        thread::sleep(Duration::from_millis(500));
    }
    let calls = || redis.map_or(Ok(0), Redis::calls);
    let cpu = || redis.map_or(0.0, Redis::cpu_seconds);
    let (c0, cpu0) = (calls()?, cpu());
    let logins = drive(&servers, secs, logins)?;
    let c1 = calls()?;
    let retrs = drive(&servers, secs, transfers)?;
    let (c2, cpu1) = (calls()?, cpu());
    for s in servers {
        let log = s.stop();
        if redis.is_some() && log.contains("Redis out of reach") {
            bail!("a node lost Redis during the sample");
        }
    }
    Ok(Figures { logins, login_calls: c1 - c0, retrs, retr_calls: c2 - c1, redis_cpu: cpu1 - cpu0 })
}

/// Runs the fleet workload and prints its table.
pub(super) fn run(args: &Args) -> Result<()> {
    let dir = std::env::temp_dir().join("ftpd-bench-fleet");
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    std::fs::write(root.join("f.bin"), vec![7u8; 4096])?;
    for p in [&dir, &root] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::set_permissions(root.join("f.bin"), std::fs::Permissions::from_mode(0o644))?;
    let redis = Redis::start(&dir)?;
    let secs = args.login_secs;
    let mut table = String::from(
        "| rep | two nodes | logins/s | RETR/s (one session each) | Redis calls per login | per RETR | Redis CPU µs per call |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut cost = Vec::new();
    for rep in 1..=args.reps {
        for with in [false, true] {
            println!("[bench] fleet: rep {rep}, two nodes {}", if with { "sharing through Redis" } else { "alone" });
            let f = sample(&root, with.then_some(&redis), secs)?;
            let n = secs as f64;
            if with {
                let calls = f.login_calls + f.retr_calls;
                let per_call = if calls > 0 { f.redis_cpu * 1e6 / calls as f64 } else { 0.0 };
                cost.push(per_call);
                let _ = writeln!(
                    table,
                    "| {rep} | Redis | {:.0} | {:.0} | {:.2} | {:.3} | {per_call:.1} |",
                    f.logins,
                    f.retrs,
                    f.login_calls as f64 / (f.logins * n).max(1.0),
                    f.retr_calls as f64 / (f.retrs * n).max(1.0),
                );
            } else {
                let _ = writeln!(table, "| {rep} | alone | {:.0} | {:.0} | | | |", f.logins, f.retrs);
            }
        }
    }
    println!("\n{table}");
    if let Some(worst) = cost.iter().copied().reduce(f64::max).filter(|c| *c > 0.0) {
        println!(
            "At {worst:.1} µs of Redis CPU per script call, one Redis core carries about {:.0} calls/s.",
            1e6 / worst
        );
    }
    Ok(())
}
