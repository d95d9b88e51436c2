//! `cargo xtask bench`: ftpd against vsftpd, ProFTPD, Pure-FTPd and a raw
//! kernel "ceiling" server, workload by workload, in one run, so the
//! comparison is made on the same machine in the same minutes. Also the
//! flood benchmark (ftpd's eBPF data plane on and off).
//!
//! Needs root: it installs and runs vsftpd (which must start as root), runs
//! ProFTPD and Pure-FTPd (unpacked from Debian's packages by
//! `setup::ensure_bench_peers`, never installed), mounts a tmpfs for the
//! tmpfs variants, and the flood uses network namespaces and eBPF.
//!
//! # Layout
//! - `servers`: the served files, the shared config, starting and stopping servers.
//! - `ceiling`: the minimal sendfile/splice HTTP server (`bench-ceiling`).
//! - `client`: the blocking FTP client the workloads drive (the test kit's, `ftpd-testkit`).
//! - `workloads`: one sample of each workload.
//! - `procs`: CPU, memory and process accounting from /proc.
//! - `report`: medians, targets, Markdown and JSON.
//! - `flood`: the SYN and connection floods.

mod ceiling;
mod client;
mod fleet;
mod flood;
mod procs;
mod report;
mod servers;
mod workloads;

use anyhow::{Context, Result, bail};
pub(crate) use ceiling::{CeilingArgs, run as ceiling};
use report::Sample;
use servers::{Bins, Fixture, Server};

use crate::{build, setup};

/// Which benchmarks, and how long.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Workloads to run; none means all (the eleven comparisons, then fleet and flood).
    #[arg(value_enum)]
    workloads: Vec<Workload>,
    /// Repetitions of each sample; servers are interleaved within each repetition.
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    reps: usize,
    /// Seconds each login sample runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    login_secs: u64,
    /// SYNs per flood.
    #[arg(long, default_value_t = 200_000)]
    syns: u32,
    /// Full TCP connections per connection flood.
    #[arg(long, default_value_t = 2_000)]
    connects: u32,
    /// Another ftpd binary (an older build) run beside this one, as the row
    /// `ftpd (baseline)`, wherever `ftpd` runs: a before/after comparison in
    /// one run, with the same config and the same minutes.
    #[arg(long, value_name = "FTPD")]
    baseline: Option<std::path::PathBuf>,
}

/// A workload on the command line.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    /// One 1 GiB download with curl, from tmpfs and from disk.
    Download,
    /// One 1 GiB upload with curl, to tmpfs and to disk, each after 1 GiB
    /// was written to and deleted from the upload directory.
    Upload,
    /// 8, 64 and 256 clients each downloading 16 MiB at once (a client not
    /// greeted within 5 s reconnects; those are counted as stalled connects).
    Concurrent,
    /// 64 clients each uploading 64 MiB at once (to tmpfs).
    ConcurrentUpload,
    /// Memory of 1 000 and 10 000 idle logged-in sessions.
    Sessions,
    /// LIST of a 10 000-file directory, repeated on one session.
    List,
    /// 1 000 RETRs of 4 KiB files on one session, EPSV before each.
    Retr,
    /// Login/logout cycles from 16 clients.
    Login,
    /// One 1 GiB download with curl over explicit FTPS (`--ssl-reqd`,
    /// PROT P), every FTP server with FTPS on and the same certificate.
    FtpsDownload,
    /// One 1 GiB upload with curl over explicit FTPS.
    FtpsUpload,
    /// 1 000 concurrent anonymous downloads, each limited by
    /// `anon_max_rate=100000` (what a mirror with limits sees).
    Limited,
    /// SYN and connection floods, ftpd eBPF on against off (network namespaces).
    Flood,
    /// Logins and transfer starts through two ftpd nodes, alone and sharing
    /// their limits through Redis: the Redis calls each costs.
    Fleet,
    /// All of the above.
    All,
}

impl Workload {
    const COMPARISONS: [Self; 11] = [
        Self::Download,
        Self::Upload,
        Self::Concurrent,
        Self::ConcurrentUpload,
        Self::Sessions,
        Self::List,
        Self::Retr,
        Self::Login,
        Self::FtpsDownload,
        Self::FtpsUpload,
        Self::Limited,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Upload => "upload",
            Self::Concurrent => "concurrent",
            Self::ConcurrentUpload => "concurrent-upload",
            Self::Sessions => "sessions",
            Self::List => "list",
            Self::Retr => "retr",
            Self::Login => "login",
            Self::FtpsDownload => "ftps-download",
            Self::FtpsUpload => "ftps-upload",
            Self::Limited => "limited",
            Self::Flood => "flood",
            Self::Fleet => "fleet",
            Self::All => "all",
        }
    }

    /// The sizes the workload is run at (clients or sessions); `[0]` for
    /// a workload without one.
    fn sizes(self) -> &'static [usize] {
        match self {
            Self::Concurrent => &[8, 64, 256],
            Self::ConcurrentUpload => &[workloads::UPLOAD_CLIENTS],
            Self::Sessions => &[1000, 10_000],
            Self::Limited => &[workloads::LIMITED_CLIENTS],
            _ => &[0],
        }
    }

    /// Where the workload's file or upload directory is: tmpfs and disk for
    /// the single streams (the targets hold on both), `None` (the
    /// fixture root, on the temp dir's file system) for the rest.
    fn places(self) -> &'static [Option<Place>] {
        match self {
            Self::Download | Self::Upload => &[Some(Place::Tmpfs), Some(Place::Disk)],
            Self::ConcurrentUpload => &[Some(Place::Tmpfs)],
            _ => &[None],
        }
    }

    /// Which servers a workload runs against. The ceiling speaks only enough
    /// HTTP to move files (and has no limits). The ftpd variants run only
    /// where their option matters. ProFTPD and Pure-FTPd are not run in the
    /// limited workload: their rate limits are configured and enforced
    /// differently, so the row would not compare like with like.
    fn runs_on(self, kind: Kind) -> bool {
        match kind {
            Kind::Ftpd | Kind::Vsftpd => true,
            Kind::Ceiling => {
                matches!(self, Self::Download | Self::Upload | Self::Concurrent | Self::ConcurrentUpload)
            }
            Kind::FtpdAtomic => matches!(self, Self::Upload | Self::ConcurrentUpload),
            Kind::FtpdReadOnly | Kind::FtpdReadOnlyKernel => self == Self::Retr,
            Kind::FtpdBaseline => BASELINE.get().is_some(),
            Kind::Proftpd | Kind::PureFtpd => self != Self::Limited,
        }
    }

    /// Whether the workload runs against the FTPS-enabled servers.
    fn tls(self) -> bool {
        matches!(self, Self::FtpsDownload | Self::FtpsUpload)
    }

    /// Samples per repetition, for the progress counter.
    fn samples_per_rep(self) -> usize {
        let per_size: usize =
            self.sizes().iter().map(|&n| Kind::ALL.iter().filter(|k| self.runs_at(**k, n)).count()).sum();
        per_size * self.places().len()
    }

    /// Whether the workload runs against `kind` at size `n`. ProFTPD and
    /// Pure-FTPd fork a process (Pure-FTPd two) for every session, each with
    /// its own private pages: 10 000 idle sessions would take gigabytes on
    /// a machine others share, so they run the 1 000-session sample only.
    fn runs_at(self, kind: Kind, n: usize) -> bool {
        self.runs_on(kind) && !(self == Self::Sessions && matches!(kind, Kind::Proftpd | Kind::PureFtpd) && n > 1000)
    }
}

/// Where a single-stream workload's file lives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    /// The tmpfs the bench mounts at `tmpfs/` in the served tree.
    Tmpfs,
    /// The served tree itself, in the temp dir (a disk unless the temp dir
    /// is a tmpfs, which `Fixture::prepare` warns about).
    Disk,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Self::Tmpfs => "tmpfs",
            Self::Disk => "disk",
        }
    }
}

/// A server under test, in the order of the report's rows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// ftpd with the shared config: what a user who changes nothing gets.
    Ftpd,
    /// ftpd with `ftpd_atomic_uploads=YES` (uploads only).
    FtpdAtomic,
    /// ftpd with anonymous writes off, a mirror's config (RETR only): its
    /// front opens anonymous downloads itself; the `ftpd` row, with the
    /// shared config's anonymous uploads, goes through the file worker.
    FtpdReadOnly,
    /// The read-only mirror on the kernel data plane (`ftpd_ebpf=on`, with
    /// a passive range, so every PASV opens and closes a pinhole); the row
    /// above runs `ftpd_ebpf=off`.
    FtpdReadOnlyKernel,
    /// Another ftpd binary with the shared config (`--baseline`).
    FtpdBaseline,
    Vsftpd,
    Proftpd,
    PureFtpd,
    Ceiling,
}

impl Kind {
    const ALL: [Self; 9] = [
        Self::Ftpd,
        Self::FtpdAtomic,
        Self::FtpdReadOnly,
        Self::FtpdReadOnlyKernel,
        Self::FtpdBaseline,
        Self::Vsftpd,
        Self::Proftpd,
        Self::PureFtpd,
        Self::Ceiling,
    ];

    /// The name in the report.
    fn name(self) -> &'static str {
        match self {
            Self::Ftpd => "ftpd",
            Self::FtpdAtomic => "ftpd (atomic uploads)",
            Self::FtpdReadOnly => "ftpd (read-only mirror)",
            Self::FtpdReadOnlyKernel => "ftpd (read-only mirror, kernel plane)",
            Self::FtpdBaseline => "ftpd (baseline)",
            Self::Vsftpd => "vsftpd",
            Self::Proftpd => "proftpd",
            Self::PureFtpd => "pure-ftpd",
            Self::Ceiling => "ceiling",
        }
    }

    /// The name in file names and cgroups.
    fn slug(self) -> &'static str {
        match self {
            Self::FtpdAtomic => "ftpd-atomic",
            Self::FtpdReadOnly => "ftpd-read-only",
            Self::FtpdReadOnlyKernel => "ftpd-read-only-kernel",
            Self::FtpdBaseline => "ftpd-baseline",
            k => k.name(),
        }
    }

    /// Whether this server must have the kernel data plane (started before
    /// any other ftpd of its workload, which would take `lo`'s XDP slot).
    fn kernel_plane(self) -> bool {
        self == Self::FtpdReadOnlyKernel
    }
}

/// The `--baseline` binary, set once at the start of a run; read where the
/// servers of a workload are chosen.
static BASELINE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Runs the chosen benchmarks.
pub(crate) fn run(args: &Args) -> Result<()> {
    if !setup::is_root()? {
        bail!(
            "cargo xtask bench needs root: it installs and runs vsftpd (which starts as root), raises open-file \
             limits for 10 000 sessions, and the flood uses network namespaces and eBPF"
        );
    }
    setup::run(setup::Verbosity::Summary)?;
    let bin = build::run()?;
    if let Some(b) = &args.baseline {
        if !b.is_file() {
            bail!("--baseline {}: no such file", b.display());
        }
        let _ = BASELINE.set(b.clone());
    }
    let all = args.workloads.is_empty() || args.workloads.contains(&Workload::All);
    let compare: Vec<Workload> =
        Workload::COMPARISONS.into_iter().filter(|w| all || args.workloads.contains(w)).collect();
    let mut written = None;
    if !compare.is_empty() {
        raise_nofile()?;
        servers::ensure_vsftpd()?;
        let peers = setup::ensure_bench_peers()?;
        let proftpd_modules = peers.proftpd_tls.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let bins = Bins { ftpd: bin.clone(), proftpd: peers.proftpd, proftpd_modules, pure_ftpd: peers.pure_ftpd };
        let fx = Fixture::prepare()?;
        let meta = report::Meta::collect(args, &bin, &peers.versions);
        let mut samples = Vec::new();
        let outcome = compare_all(args, &compare, &fx, &bins, &mut samples);
        // Whatever was measured before an error is still worth keeping.
        if !samples.is_empty() {
            written = Some(report::write(&meta, &samples)?);
        }
        if let Err(e) = outcome {
            if let Some(w) = &written {
                eprintln!("[bench] partial results in {}", w.md_path.display());
            }
            return Err(e);
        }
    }
    if all || args.workloads.contains(&Workload::Fleet) {
        println!("[bench] fleet: two nodes alone and through Redis");
        fleet::run(args)?;
    }
    if all || args.workloads.contains(&Workload::Flood) {
        println!("[bench] flood: SYN and connection floods, ftpd eBPF on against off");
        flood::run(args, &bin)?;
    }
    if let Some(w) = written {
        println!("\n{}", w.markdown);
        println!("wrote {}\nwrote {}", w.md_path.display(), w.json_path.display());
        println!("(copied to bench-results/latest.md and latest.json)");
    }
    Ok(())
}

/// Starts the servers `w` runs against, in the report's row order. A
/// workload's servers live only while it runs: the one XDP slot of `lo` goes
/// to the server that asks for the kernel plane (started first), and in
/// other workloads to `ftpd` (`ftpd_ebpf=auto`), as for a user who changes
/// nothing. FTPS workloads get servers started with FTPS on
/// (`ssl_enable=YES`, ProFTPD's mod_tls, Pure-FTPd's -Y 1), so the plaintext
/// rows measure servers configured exactly as before.
fn start_servers(w: Workload, fx: &Fixture, bins: &Bins) -> Result<Vec<Server>> {
    if w.tls() {
        fx.ensure_cert()?;
    }
    let mut kinds: Vec<Kind> =
        Kind::ALL.into_iter().filter(|&k| w.runs_on(k) && !(w.tls() && k == Kind::Ceiling)).collect();
    kinds.sort_by_key(|k| !k.kernel_plane());
    // A kernel-plane ftpd guards its passive range on `lo` (below the
    // ephemeral ports). Without a range, every other server (ftpd, an older
    // ftpd as the baseline, vsftpd, ProFTPD, Pure-FTPd) picks passive ports
    // anywhere from 1024 up: they are kept to the ephemeral ports while it
    // runs.
    let peer_pasv = if kinds.iter().any(|k| k.kernel_plane()) {
        let (low, high) = ftpd_testkit::ephemeral_ports().map_err(anyhow::Error::msg)?;
        if low <= servers::KERNEL_PASV.1 {
            bail!(
                "the ephemeral ports start at {low}, inside the kernel-plane row's passive range {}-{}: \
                 raise net.ipv4.ip_local_port_range",
                servers::KERNEL_PASV.0,
                servers::KERNEL_PASV.1
            );
        }
        Some((low, high))
    } else {
        None
    };
    let mut servers =
        kinds.into_iter().map(|k| Server::start_as(k, fx, bins, w.tls(), "", peer_pasv)).collect::<Result<Vec<_>>>()?;
    servers.sort_by_key(|s| Kind::ALL.iter().position(|k| *k == s.kind));
    Ok(servers)
}

/// Runs the comparison workloads, each against its own servers
/// ([`start_servers`]), appending each sample to `samples` as it finishes.
/// A workload's servers stop when it ends, error or not.
fn compare_all(args: &Args, compare: &[Workload], fx: &Fixture, bins: &Bins, samples: &mut Vec<Sample>) -> Result<()> {
    let total: usize = compare.iter().map(|w| w.samples_per_rep() * args.reps).sum();
    let mut done = 0;
    for &w in compare {
        println!("[bench] {}: {} sample(s) per repetition", w.name(), w.samples_per_rep());
        let mut servers = start_servers(w, fx, bins)?;
        let pool = &mut servers;
        if matches!(w, Workload::Download | Workload::FtpsDownload) {
            // One unmeasured download from each server: the first transfer
            // after a start ran at half speed, and ftpd always came first.
            println!("[bench] {}: one warm-up transfer per server, not counted", w.name());
            for server in pool.iter().filter(|s| w.runs_on(s.kind)) {
                workloads::download(server, fx, w.places()[0])
                    .with_context(|| format!("warm-up download from {}", server.kind.name()))?;
            }
        }
        for rep in 1..=args.reps {
            for &n in w.sizes() {
                for &place in w.places() {
                    let mut label = if n == 0 { w.name().to_owned() } else { format!("{} {n}", w.name()) };
                    if let Some(p) = place {
                        label = format!("{label} ({})", p.name());
                    }
                    // The limited workload needs servers with a rate limit: the
                    // same config plus `anon_max_rate`, for both FTP servers.
                    let mut limited = Vec::new();
                    if w == Workload::Limited {
                        for kind in [Kind::Ftpd, Kind::Vsftpd] {
                            limited.push(Server::start_as(kind, fx, bins, false, workloads::LIMITED_CONF, None)?);
                        }
                    }
                    let pool = if w == Workload::Limited { &mut limited } else { &mut *pool };
                    // Each repetition starts with another server (the
                    // report's rows keep their order): none is always the
                    // first to run after the last one's sample, or after a
                    // pause, when whatever the machine does between samples
                    // lands on it.
                    let mut order: Vec<usize> = (0..pool.len()).filter(|&i| w.runs_at(pool[i].kind, n)).collect();
                    if !order.is_empty() {
                        let first = (rep - 1) % order.len();
                        order.rotate_left(first);
                    }
                    for i in order {
                        let server = &mut pool[i];
                        if w == Workload::Sessions {
                            // Memory a server freed after an earlier sample stays
                            // with its allocator and would be reused by the next
                            // sessions: ftpd measured ~0 KiB per session after a
                            // previous 10 000. A fresh server is a clean baseline.
                            server.restart(fx, bins)?;
                        }
                        let server = &*server;
                        server.check_alive()?;
                        let (metrics, text) = match w {
                            Workload::Download | Workload::FtpsDownload => workloads::download(server, fx, place),
                            Workload::Upload | Workload::FtpsUpload => workloads::upload(server, fx, place, rep),
                            Workload::Concurrent => workloads::concurrent(server, n),
                            Workload::ConcurrentUpload => workloads::concurrent_upload(server, fx, place, n),
                            Workload::Sessions => workloads::sessions(server, n),
                            Workload::List => workloads::list(server),
                            Workload::Retr => workloads::retr(server),
                            Workload::Login => workloads::login(server, args.login_secs),
                            Workload::Limited => workloads::limited(server, n),
                            Workload::Flood | Workload::Fleet | Workload::All => continue,
                        }
                        .map_err(|e| match server.check_alive() {
                            // A crash explains the client's error better than the client can.
                            Err(dead) => {
                                eprintln!("[bench] {dead:#}");
                                e.context(format!("{} has exited (its output is above)", server.kind.name()))
                            }
                            Ok(()) => e,
                        })
                        .with_context(|| format!("{label} against {} (repetition {rep})", server.kind.name()))?;
                        done += 1;
                        println!(
                            "[bench {done}/{total}] {label} {} rep {rep}/{}: {text}",
                            server.kind.name(),
                            args.reps
                        );
                        samples.push(Sample { workload: label.clone(), kind: server.kind, rep, metrics });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Open files wanted per process: 10 000 sessions, each a socket and more.
const NOFILE: libc::rlim_t = 65536;

/// This process's open-file limits (soft, hard).
fn nofile_limits() -> Result<(libc::rlim_t, libc::rlim_t)> {
    let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut now) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading RLIMIT_NOFILE");
    }
    Ok((now.rlim_cur, now.rlim_max))
}

/// The `prlimit` argument for servers and helpers: [`NOFILE`], or the hard
/// limit if that is lower (raising it needs CAP_SYS_RESOURCE, which a
/// container's root may lack).
fn nofile_arg() -> String {
    let limit = nofile_limits().map_or(NOFILE, |(_, hard)| hard.min(NOFILE));
    format!("--nofile={limit}:{limit}")
}

/// Raises this process's open-file limit (the concurrent clients' sockets;
/// servers and helpers inherit the hard limit) to [`NOFILE`], or as far as
/// the hard limit allows when that cannot be raised.
fn raise_nofile() -> Result<()> {
    let (soft, hard) = nofile_limits()?;
    let set = |cur, max| {
        let want = libc::rlimit { rlim_cur: cur, rlim_max: max };
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const want) == 0 }
    };
    if hard >= NOFILE || set(NOFILE, NOFILE) {
        if soft < NOFILE && !set(NOFILE, hard.max(NOFILE)) {
            return Err(std::io::Error::last_os_error()).context("raising the soft RLIMIT_NOFILE");
        }
        return Ok(());
    }
    println!(
        "[bench] note: the open-file hard limit is {hard} and cannot be raised here (no CAP_SYS_RESOURCE); \
         servers run with {hard}, which may cap the 10 000-session sample"
    );
    if !set(hard, hard) {
        return Err(std::io::Error::last_os_error()).context("raising the soft RLIMIT_NOFILE");
    }
    Ok(())
}
