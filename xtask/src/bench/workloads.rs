//! The comparison workloads: one sample of one workload against one server.
//!
//! Each returns its metric values and a short text for the progress line,
//! and fails (rather than reporting a number) when the server sent the
//! wrong bytes, so a fast wrong answer never looks like a win.

use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
    sync::{
        RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    Kind, Place,
    client::{self, Ftp},
    nofile_arg, procs,
    servers::{BIG_FILES, Fixture, GIB, LIMITED_SIZE, MID, SMALL_FILES, SMALL_SIZE, Server},
};

/// Metric names and values of one sample.
pub(super) type Metrics = Vec<(&'static str, f64)>;

/// Grace after a sample before the final CPU read, so the work of tearing
/// down the sample's sessions (vsftpd: two processes exiting) is counted too.
const REAP: Duration = Duration::from_millis(300);
/// How long a concurrent client waits for a greeting before it gives up
/// on the connection and connects again.
const STALL: Duration = Duration::from_secs(5);
/// Clients of the login workload.
const LOGIN_CLIENTS: usize = 16;
/// Least time the LIST workload runs.
const LIST_SECS: Duration = Duration::from_secs(3);
/// Whole-transfer limit for curl: a 1 GiB transfer at a crawling 10 MB/s.
const CURL_MAX_SECS: &str = "120";
/// How long the sessions workload may spend opening sessions.
const OPEN_SECS: u64 = 120;
/// How long closed sessions may take to go away.
const DRAIN: Duration = Duration::from_secs(60);

/// Runs `f` and returns its result with the server CPU seconds it cost.
fn with_cpu<T>(server: &Server, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let before = server.cpu_seconds();
    let out = f()?;
    thread::sleep(REAP);
    // One clock tick is the resolution; a zero would make "per CPU-second"
    // figures infinite.
    let cpu = (server.cpu_seconds() - before).max(0.01);
    Ok((out, cpu))
}

/// The URL of `path` on `server` (FTP, or HTTP for the ceiling).
fn url(server: &Server, path: &str) -> String {
    let scheme = if server.kind == Kind::Ceiling { "http" } else { "ftp" };
    format!("{scheme}://127.0.0.1:{}/{path}", server.port)
}

/// Runs curl and returns the two numbers of its `-w` output. Against an
/// FTPS server: explicit TLS on control and data (`-k`: the benchmark's
/// certificate is self-signed).
fn curl(server: &Server, args: &[&str]) -> Result<(f64, f64)> {
    let tls: &[&str] = if server.tls { &["--ssl-reqd", "-k"] } else { &[] };
    let out = Command::new("curl")
        .args(["-sS", "--max-time", CURL_MAX_SECS])
        .args(tls)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running curl")?;
    if !out.status.success() {
        bail!("curl {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<f64> = text.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    match nums[..] {
        [a, b] => Ok((a, b)),
        _ => bail!("unexpected curl output {text:?}"),
    }
}

/// The kernel's count of TCP segments sent (`Tcp: OutSegs` in
/// /proc/net/snmp, what `nstat TcpOutSegs` reads), all sockets of the
/// network namespace.
fn tcp_out_segs() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").context("reading /proc/net/snmp")?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().context("no Tcp: line")?, tcp.next().context("no second Tcp: line")?);
    let i = names.split_whitespace().position(|n| n == "OutSegs").context("no OutSegs in /proc/net/snmp")?;
    values.split_whitespace().nth(i).and_then(|v| v.parse().ok()).context("unparsable OutSegs")
}

/// One 1 GiB download with curl from `place`: MB/s, server CPU per GiB and
/// TCP segments per GiB. The segments are every segment sent on the host
/// while curl ran: the server's data segments and the client's ACKs (client
/// and server share loopback), so fewer means bigger segments (GSO, TSO
/// sizing) and fewer ACKs; other traffic on the machine adds noise.
pub(super) fn download(server: &Server, fx: &Fixture, place: Option<Place>) -> Result<(Metrics, String)> {
    let name = format!("{}1g.bin", Fixture::prefix(place));
    in_page_cache(&fx.root.join(&name))?;
    let target = url(server, &name);
    let segs_before = tcp_out_segs()?;
    let ((size, speed), cpu) =
        with_cpu(server, || curl(server, &["-o", "/dev/null", "-w", "%{size_download} %{speed_download}", &target]))?;
    let segs = tcp_out_segs()?.saturating_sub(segs_before) as f64;
    if size != GIB as f64 {
        bail!("downloaded {size} bytes of {GIB}");
    }
    let mb_s = speed / 1e6;
    Ok((
        vec![
            ("MB/s", mb_s),
            ("MB per server CPU-s", size / 1e6 / cpu),
            ("server CPU-s per GiB", cpu),
            ("TCP segments per GiB", segs),
        ],
        format!("{mb_s:.0} MB/s, {cpu:.2} CPU-s/GiB, {segs:.0} segments/GiB"),
    ))
}

/// Reads `file` whole, so that every server's sample starts with it in the
/// page cache. This machine's kernel pages idle file pages out on its own
/// (DAMON's `pageout` scheme: a tenth of a 1 GiB file read once was gone 45 s
/// later), and the server that read the disk-backed file first after a
/// pause paid for reading part of it from disk.
fn in_page_cache(file: &std::path::Path) -> Result<()> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf).with_context(|| format!("reading {}", file.display()))? > 0 {}
    Ok(())
}

/// Deletes an uploaded file however the sample ends.
struct Upload(std::path::PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes 1 GiB to a file in `dir` and deletes it, so the upload that
/// follows writes into memory (page cache, or tmpfs pages) the kernel has
/// already handed out once, not into the first touch of fresh VM memory,
/// which one server would otherwise pay for and the next not.
fn touch_gib(dir: &std::path::Path) -> Result<()> {
    touch(dir, GIB)
}

/// [`touch_gib`] for `bytes` (rounded down to MiB).
fn touch(dir: &std::path::Path, bytes: u64) -> Result<()> {
    use std::io::Write as _;
    let path = dir.join("prefill.bin");
    let guard = Upload(path.clone());
    let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..bytes >> 20 {
        f.write_all(&chunk).with_context(|| format!("writing {}", path.display()))?;
    }
    drop(f);
    drop(guard);
    Ok(())
}

/// One 1 GiB upload with curl to `place`, checked on disk, after
/// [`touch_gib`] in the upload directory.
pub(super) fn upload(server: &Server, fx: &Fixture, place: Option<Place>, rep: usize) -> Result<(Metrics, String)> {
    let tls = if server.tls { "-tls" } else { "" };
    let prefix = Fixture::prefix(place);
    touch_gib(&fx.root.join(prefix).join("up"))?;
    let name = format!("{prefix}up/u-{}{tls}-{rep}.bin", server.kind.slug());
    let file = Upload(fx.root.join(&name));
    let source = fx.root.join(prefix).join("1g.bin");
    // The client reads it: from memory for every server alike.
    in_page_cache(&source)?;
    let source = source.to_string_lossy();
    let target = url(server, &name);
    let mut args = vec!["-o", "/dev/null", "-w", "%{size_upload} %{speed_upload}", "-T", &source];
    if server.kind == Kind::Ceiling {
        // Without this curl waits a second for a "100 Continue" that never comes.
        args.extend(["-H", "Expect:", "--fail"]);
    }
    args.push(&target);
    let ((size, speed), cpu) = with_cpu(server, || curl(server, &args))?;
    let on_disk = std::fs::metadata(&file.0).map_or(0, |m| m.len());
    if size != GIB as f64 || on_disk != GIB {
        bail!("uploaded {size} bytes of {GIB}; {} has {on_disk} bytes", file.0.display());
    }
    drop(file);
    let mb_s = speed / 1e6;
    Ok((
        vec![("MB/s", mb_s), ("MB per server CPU-s", size / 1e6 / cpu), ("server CPU-s per GiB", cpu)],
        format!("{mb_s:.0} MB/s, {cpu:.2} CPU-s/GiB"),
    ))
}

/// Clients of the concurrent-upload workload.
pub(super) const UPLOAD_CLIENTS: usize = 64;
/// What each of them uploads.
const UPLOAD_SIZE: u64 = 64 << 20;

/// `n` clients each upload [`UPLOAD_SIZE`] bytes at once into `place`'s
/// `up/`: aggregate MB/s (all bytes over the time from the release to the
/// last 226), and each client's time from its release to its 226.
pub(super) fn concurrent_upload(
    server: &Server,
    fx: &Fixture,
    place: Option<Place>,
    n: usize,
) -> Result<(Metrics, String)> {
    let prefix = Fixture::prefix(place);
    // Random bytes, one MiB sent again and again: nothing on the way can
    // compress them, and the clients cost no more than a memcpy each.
    let mut chunk = vec![0u8; 1 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in &mut chunk {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let times = usize::try_from(UPLOAD_SIZE >> 20).unwrap_or(64);
    let next = AtomicU64::new(0);
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}up/c-{}-{i}.bin", server.kind.slug())).collect();
    let _cleanup: Vec<Upload> = names.iter().map(|name| Upload(fx.root.join(name))).collect();
    // As for the single upload: all of the memory the sample will write
    // into, touched once first (the first server to write 4 GiB into a fresh
    // tmpfs paid twice the CPU of the next, in one run).
    touch(&fx.root.join(format!("{prefix}up")), UPLOAD_SIZE * n as u64)?;
    let ((released, results), cpu) = with_cpu(server, || {
        all_at_once(n, |_| {
            let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(0);
            let start = Instant::now();
            let (done, stalls) = if server.kind == Kind::Ceiling {
                (client::http_put(server.port, &names[i], &chunk, times)?, 0)
            } else {
                let (mut ftp, stalls) = Ftp::connect_patient(server.port, STALL)?;
                ftp.user()?;
                ftp.cmd_expect("TYPE I", 200)?;
                let done = ftp.stor(&names[i], &chunk, times)?;
                ftp.quit()?;
                (done, stalls)
            };
            Ok((UPLOAD_SIZE, done - start, done, stalls))
        })
    })?;
    for name in &names {
        let path = fx.root.join(name);
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        if size != UPLOAD_SIZE {
            bail!("{} has {size} bytes of {UPLOAD_SIZE}", path.display());
        }
    }
    let crowd = Crowd::of(released, &results)?;
    let cpu_gib = cpu / (crowd.bytes as f64 / GIB as f64);
    let Crowd { mb_s, p50, p99, stalls, .. } = crowd;
    Ok((
        crowd.metrics(&[("server CPU-s per GiB", cpu_gib)]),
        format!("{mb_s:.0} MB/s, p50 {p50:.0} ms, p99 {p99:.0} ms, {cpu_gib:.2} CPU-s/GiB, {stalls} stalled connects"),
    ))
}

/// What a crowd of clients started at once made of it.
struct Crowd {
    /// Bytes moved by all.
    bytes: u64,
    /// From the release to the last client's end.
    mb_s: f64,
    /// Time to finish, over the clients (ms).
    p50: f64,
    p99: f64,
    /// Connections that stalled without a greeting.
    stalls: u32,
}

impl Crowd {
    fn of(released: Instant, results: &[Finish]) -> Result<Self> {
        let last = results.iter().map(|r| r.2).max().context("no clients")?;
        let wall = (last - released).as_secs_f64();
        let mut times_ms: Vec<f64> = results.iter().map(|r| r.1.as_secs_f64() * 1e3).collect();
        times_ms.sort_by(f64::total_cmp);
        let bytes: u64 = results.iter().map(|r| r.0).sum();
        Ok(Self {
            bytes,
            mb_s: bytes as f64 / 1e6 / wall,
            p50: percentile(&times_ms, 0.50),
            p99: percentile(&times_ms, 0.99),
            stalls: results.iter().map(|r| r.3).sum(),
        })
    }

    /// The rows, with `extra` before the stalled connects.
    fn metrics(&self, extra: &[(&'static str, f64)]) -> Metrics {
        let mut rows = vec![
            ("aggregate MB/s", self.mb_s),
            ("p50 ms", self.p50),
            ("p99 ms", self.p99),
            ("p99/p50", self.p99 / self.p50),
        ];
        rows.extend_from_slice(extra);
        rows.push(("stalled connects", f64::from(self.stalls)));
        rows
    }
}

/// One client of the concurrent workload: 16m.bin once. Returns the bytes,
/// when the data connection reached EOF, and how many connections stalled
/// without a greeting (see [`Ftp::connect_patient`]).
fn fetch_mid(server: &Server, buf: &mut [u8]) -> Result<(u64, Instant, u32)> {
    if server.kind == Kind::Ceiling {
        // The client speaks first in HTTP, so a dropped handshake ACK is
        // repaired by the request's retransmission: no stalls to count.
        let n = client::http_get(server.port, "16m.bin", buf)?;
        return Ok((n, Instant::now(), 0));
    }
    let (mut ftp, stalls) = Ftp::connect_patient(server.port, STALL)?;
    ftp.user()?;
    ftp.cmd_expect("TYPE I", 200)?;
    let (n, eof) = ftp.retr("16m.bin")?;
    ftp.quit()?;
    Ok((n, eof, stalls))
}

/// What one concurrent client reports: bytes, its time to the end of the
/// data, when that was, and its stalled connections.
type Finish = (u64, Duration, Instant, u32);

/// `n` clients download 16m.bin at once.
pub(super) fn concurrent(server: &Server, n: usize) -> Result<(Metrics, String)> {
    let (released, results) = all_at_once(n, |buf| {
        let start = Instant::now();
        let (bytes, eof, stalls) = fetch_mid(server, buf)?;
        Ok((bytes, eof - start, eof, stalls))
    })?;
    if let Some(bad) = results.iter().find(|r| r.0 != MID) {
        bail!("a client got {} bytes of {MID}", bad.0);
    }
    let crowd = Crowd::of(released, &results)?;
    let Crowd { mb_s, p50, p99, stalls, .. } = crowd;
    Ok((crowd.metrics(&[]), format!("{mb_s:.0} MB/s, p50 {p50:.0} ms, p99 {p99:.0} ms, {stalls} stalled connects")))
}

/// Clients of the limited workload.
pub(super) const LIMITED_CLIENTS: usize = 1000;
/// The limit each of them has.
const LIMITED_RATE: f64 = 100_000.0;
/// What the limited workload adds to the shared config.
pub(super) const LIMITED_CONF: &str = "anon_max_rate=100000\n";

/// How long the limited workload's clients take to arrive (evenly spread):
/// a mirror's clients come and go, they do not all connect in the same
/// millisecond (which vsftpd's backlog of 32 cannot take at 1 000).
const LIMITED_RAMP: Duration = Duration::from_secs(2);
/// The window, after the ramp, in which every client is transferring and
/// the aggregate is measured.
const LIMITED_WINDOW: (Duration, Duration) = (Duration::from_secs(4), Duration::from_secs(12));

/// `n` clients download limited.bin (15 s at 100 kB/s), arriving over
/// [`LIMITED_RAMP`], each limited to 100 kB/s: the aggregate while all are
/// transferring against n × 100 kB/s, each client's own rate (from its RETR
/// to its last byte), and the server's CPU per GB moved.
pub(super) fn limited(server: &Server, n: usize) -> Result<(Metrics, String)> {
    let live = AtomicU64::new(0);
    let window = std::sync::Mutex::new(None);
    let ((_, results), cpu) = with_cpu(server, || {
        thread::scope(|s| {
            // Samples the bytes all clients have received at both ends of
            // the window.
            let sampler = s.spawn(|| {
                let t0 = Instant::now();
                thread::sleep(LIMITED_WINDOW.0);
                let (a, ta) = (live.load(Ordering::Relaxed), Instant::now());
                thread::sleep(LIMITED_WINDOW.1 - LIMITED_WINDOW.0);
                let (b, tb) = (live.load(Ordering::Relaxed), Instant::now());
                *window.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(((b - a) as f64 / (tb - ta).as_secs_f64(), t0));
            });
            let next = AtomicU64::new(0);
            let out = all_at_once(n, |_| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                thread::sleep(LIMITED_RAMP.mul_f64(i as f64 / n as f64));
                let (mut ftp, stalls) = Ftp::connect_patient(server.port, STALL)?;
                ftp.user()?;
                ftp.cmd_expect("TYPE I", 200)?;
                let asked = Instant::now();
                let (bytes, eof) = ftp.retr_counted("limited.bin", &live)?;
                ftp.quit()?;
                Ok((bytes, eof - asked, eof, stalls))
            });
            let _ = sampler.join();
            out
        })
    })?;
    if let Some(bad) = results.iter().find(|r| r.0 != LIMITED_SIZE) {
        bail!("a client got {} bytes of {LIMITED_SIZE}", bad.0);
    }
    let Some((aggregate, _)) = *window.lock().unwrap_or_else(std::sync::PoisonError::into_inner) else {
        bail!("the rate window was not sampled");
    };
    let total = (LIMITED_SIZE * n as u64) as f64;
    let of_target = aggregate / (LIMITED_RATE * n as f64);
    let mut rates: Vec<f64> = results.iter().map(|r| LIMITED_SIZE as f64 / r.1.as_secs_f64() / 1e3).collect();
    rates.sort_by(f64::total_cmp);
    let (p1, p50, p99) = (percentile(&rates, 0.01), percentile(&rates, 0.50), percentile(&rates, 0.99));
    let cpu_per_gb = cpu / (total / 1e9);
    let stalls: u32 = results.iter().map(|r| r.3).sum();
    Ok((
        vec![
            ("aggregate MB/s", aggregate / 1e6),
            ("aggregate / (N × limit)", of_target),
            ("client kB/s p1", p1),
            ("client kB/s p50", p50),
            ("client kB/s p99", p99),
            ("server CPU-s per GB", cpu_per_gb),
            ("stalled connects", f64::from(stalls)),
        ],
        format!(
            "{:.1} MB/s ({:.3} of {n} × 100 kB/s), clients p1/p50/p99 {p1:.1}/{p50:.1}/{p99:.1} kB/s, \
             {cpu_per_gb:.2} CPU-s/GB, {stalls} stalled connects",
            aggregate / 1e6,
            of_target
        ),
    ))
}

/// Runs `client` on `n` threads released together; returns when they were
/// released and what each reported.
fn all_at_once(n: usize, client: impl Fn(&mut [u8]) -> Result<Finish> + Sync) -> Result<(Instant, Vec<Finish>)> {
    // Every client blocks on the read side until the write lock is dropped:
    // a start gate like a Barrier, but one that still opens (with `abort`
    // set) if spawning a thread fails halfway.
    let gate = RwLock::new(());
    let abort = AtomicBool::new(false);
    let (released, results) = thread::scope(|scope| -> Result<(Instant, Vec<Result<Finish>>)> {
        let hold = gate.write().map_err(|_| anyhow::anyhow!("start gate poisoned"))?;
        let mut handles = Vec::with_capacity(n);
        for _ in 0..n {
            let spawned = thread::Builder::new().stack_size(256 << 10).spawn_scoped(scope, || {
                drop(gate.read());
                if abort.load(Ordering::Relaxed) {
                    bail!("aborted");
                }
                let mut buf = vec![0u8; 256 << 10];
                client(&mut buf)
            });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    abort.store(true, Ordering::Relaxed);
                    drop(hold);
                    return Err(e).context("starting a client thread");
                }
            }
        }
        let released = Instant::now();
        drop(hold);
        let out = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("client thread panicked"))))
            .collect();
        Ok((released, out))
    })?;
    let results: Vec<Finish> = results.into_iter().collect::<Result<_>>()?;
    Ok((released, results))
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
}

/// Opens N logged-in sessions and keeps them until its stdin closes. Prints
/// how many it holds (and why it stopped short, if it did) on stdout.
const HOLD_SESSIONS: &str = r#"
import socket, sys, time
n, port, label = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
deadline = time.time() + float(sys.argv[4])
def reply(f):
    first = None
    while True:
        line = f.readline()
        if not line:
            raise OSError('connection closed')
        first = first or line[:3]
        if line[:3] == first and line[3:4] != b'-':
            return first
held, why = [], ''
for i in range(n):
    if time.time() > deadline:
        why = 'time limit'
        break
    try:
        c = socket.create_connection(('127.0.0.1', port), 5)
        f = c.makefile('rb')
        if reply(f) != b'220':
            why = 'no 220 greeting'
            break
        c.sendall(b'USER anonymous\r\n')
        code = reply(f)
        if code == b'331':
            c.sendall(b'PASS bench@\r\n')
            code = reply(f)
        if code != b'230':
            why = 'no 230 after USER/PASS'
            break
        held.append((c, f))
    except OSError as e:
        why = str(e)
        break
    if (i + 1) % 1000 == 0:
        print(f'[bench]   {label}: {i + 1}/{n} sessions open', file=sys.stderr, flush=True)
print(len(held), why, flush=True)
sys.stdin.read()
"#;

/// The session-holding helper; its sessions close when it is dropped.
struct Holder {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Holder {
    fn spawn(server: &Server, n: usize, secs: u64) -> Result<Self> {
        let mut child = Command::new("prlimit")
            .arg(nofile_arg())
            .args(["python3", "-c", HOLD_SESSIONS])
            .args([n.to_string(), server.port.to_string(), server.kind.name().to_owned(), secs.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the session holder (python3)")?;
        let out = BufReader::new(child.stdout.take().context("holder stdout")?);
        Ok(Self { child, out })
    }

    /// Waits until the helper has opened what it could; returns the count
    /// and why it stopped short.
    fn held(&mut self) -> Result<(usize, String)> {
        let mut line = String::new();
        self.out.read_line(&mut line).context("reading from the session holder")?;
        let (count, why) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        let count = count.parse().with_context(|| format!("session holder said {line:?}"))?;
        Ok((count, why.to_owned()))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Closing its stdin is the helper's signal to close the sessions and exit.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Idle logged-in sessions: memory per session of the whole server tree.
pub(super) fn sessions(server: &Server, n: usize) -> Result<(Metrics, String)> {
    let started = Instant::now();
    let mut warm = Holder::spawn(server, 1, 30)?;
    if warm.held()?.0 != 1 {
        bail!("could not open even one session");
    }
    thread::sleep(Duration::from_millis(300));
    let base = procs::memory(&server.pids());
    let mut holder = Holder::spawn(server, n, OPEN_SECS)?;
    let (held, why) = holder.held()?;
    let open_secs = started.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(500));
    let after = procs::memory(&server.pids());
    drop(holder);
    drop(warm);
    drain(server, base.procs, base.fds);
    if held == 0 {
        bail!("no session held ({why})");
    }
    let per = |a: f64, b: f64| (a - b) / held as f64;
    let rss = per(after.rss_kib, base.rss_kib);
    let pss = per(after.pss_kib, base.pss_kib);
    let short = if held < n { format!(" (stopped: {why})") } else { String::new() };
    Ok((
        vec![("RSS KiB per session", rss), ("PSS KiB per session", pss), ("held/N", held as f64 / n as f64)],
        format!(
            "held {held}/{n}{short} in {open_secs:.1} s, {rss:.1} KiB RSS, {pss:.1} KiB PSS per session, {} processes",
            after.procs
        ),
    ))
}

/// Waits until closed sessions have left the server (vsftpd: their
/// processes exited; ftpd: their sockets closed), so the next sample starts
/// from the same state.
fn drain(server: &Server, procs: usize, fds: usize) {
    let start = Instant::now();
    loop {
        let pids = server.pids();
        let (p, f) = (pids.len(), pids.iter().map(|p| procs::open_files(*p)).sum::<usize>());
        if p <= procs && f <= fds {
            return;
        }
        if start.elapsed() > DRAIN {
            println!(
                "[bench] warning: {} still has {p} processes and {f} open files {} s after the sessions closed (before: {procs}, {fds})",
                server.kind.name(),
                DRAIN.as_secs()
            );
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Lines of a LIST reply, not counting a leading `total N` line (ls prints
/// one, vsftpd does not).
fn listing_lines(listing: &[u8]) -> usize {
    let text = String::from_utf8_lossy(listing);
    text.lines().filter(|l| !l.is_empty() && !l.starts_with("total ")).count()
}

/// `LIST big` (10 000 files) again and again on one session.
pub(super) fn list(server: &Server) -> Result<(Metrics, String)> {
    let mut ftp = Ftp::login(server.port)?;
    let ((count, secs), cpu) = with_cpu(server, || {
        let start = Instant::now();
        let mut count = 0u32;
        while count < 3 || start.elapsed() < LIST_SECS {
            let listing = ftp.list("big")?;
            let lines = listing_lines(&listing);
            if lines != BIG_FILES {
                bail!("LIST big returned {lines} lines, not {BIG_FILES}");
            }
            count += 1;
        }
        Ok((count, start.elapsed().as_secs_f64()))
    })?;
    ftp.quit()?;
    let rate = f64::from(count) / secs;
    let ms = cpu * 1e3 / f64::from(count);
    Ok((
        vec![("listings/s", rate), ("server CPU ms per listing", ms)],
        format!("{rate:.1} listings/s, {ms:.1} CPU ms each"),
    ))
}

/// 1 000 sequential RETRs of 4 KiB files on one session, each with its own
/// EPSV: RETR/s and the server's CPU per RETR.
pub(super) fn retr(server: &Server) -> Result<(Metrics, String)> {
    let mut ftp = Ftp::login(server.port)?;
    ftp.cmd_expect("TYPE I", 200)?;
    let (secs, cpu) = with_cpu(server, || {
        let start = Instant::now();
        for i in 0..SMALL_FILES {
            let got = ftp.retr(&format!("small/s{i:04}"))?.0;
            if got != SMALL_SIZE {
                bail!("RETR small/s{i:04}: {got} bytes of {SMALL_SIZE}");
            }
        }
        Ok(start.elapsed().as_secs_f64())
    })?;
    ftp.quit()?;
    let rate = SMALL_FILES as f64 / secs;
    let us = cpu * 1e6 / SMALL_FILES as f64;
    Ok((vec![("RETR/s", rate), ("server CPU µs per RETR", us)], format!("{rate:.0} RETR/s, {us:.0} CPU µs each")))
}

/// One login cycle: connect, log in, QUIT, close with a RST.
fn login_once(port: u16) -> Result<()> {
    let mut ftp = Ftp::connect(port)?;
    ftp.user()?;
    ftp.quit()?;
    ftp.linger_zero()
}

/// Clients logging in and out as fast as the server lets them.
pub(super) fn login(server: &Server, secs: u64) -> Result<(Metrics, String)> {
    let logins = AtomicU64::new(0);
    let (wall, cpu) = with_cpu(server, || {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(secs);
        thread::scope(|scope| {
            let handles: Vec<_> = (0..LOGIN_CLIENTS)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        while Instant::now() < deadline {
                            login_once(server.port)?;
                            logins.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| bail!("login thread panicked")))
        })?;
        Ok(start.elapsed().as_secs_f64())
    })?;
    let total = logins.load(Ordering::Relaxed);
    if total == 0 {
        bail!("no login completed");
    }
    let rate = total as f64 / wall;
    let us = cpu * 1e6 / total as f64;
    Ok((
        vec![("logins/s", rate), ("server CPU µs per login", us)],
        format!("{rate:.0} logins/s, {us:.0} CPU µs each ({total} logins)"),
    ))
}
