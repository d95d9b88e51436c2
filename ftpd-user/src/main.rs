//! `ftpd [CONFIG]`: parse arguments, load the config, attach the data plane,
//! serve until SIGINT/SIGTERM. `anyhow` and printing live only here.

use std::{
    io::IsTerminal,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ftpd::{
    config::{Config, EbpfMode},
    dataplane::{self, Dataplane},
    privsep::Authority,
    process::Fork,
    server,
    settings::Settings,
    shared::{Plane, Shared},
};
use tracing::{info, warn};

/// An FTP server for mirror hosts: vsftpd.conf compatible, zero-copy, with an eBPF/XDP data plane.
#[derive(Parser, Debug)]
#[command(name = "ftpd", version, args_conflicts_with_subcommands = true, disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// vsftpd.conf-style config file. Without one, ftpd serves the current
    /// directory (or --root) anonymously and read-only on 127.0.0.1:2121.
    config: Option<PathBuf>,
    /// Directory to serve to anonymous users (same as -o anon_root=DIR).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// A setting applied after the config file, as `-oNAME=VALUE` (repeatable, applied in order).
    #[arg(short = 'o', value_name = "NAME=VALUE")]
    settings: Vec<String>,
    /// Print every config option with its type, default and meaning, then exit.
    #[arg(long)]
    help_config: bool,
    /// Log as JSON lines (one object per event, with session id and peer) instead of text.
    #[arg(long)]
    log_json: bool,
    /// Write the man pages ftpd.8 and ftpd.conf.5 into DIR, then exit (used to build the package).
    #[arg(long, value_name = "DIR", hide = true)]
    man: Option<PathBuf>,
}

/// The subcommands; without one, ftpd serves.
#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Show a running ftpd's metrics as a table with per-second rates: `ftpd stats [--watch SECS] [ADDR...]`.
    #[command(
        override_usage = "ftpd stats [--watch SECS] [ADDR...]   (ADDR: ftpd_metrics_listen, default 127.0.0.1:9121; several: each node, then the fleet)"
    )]
    Stats {
        /// `--watch SECS` to refresh, and the `ftpd_metrics_listen` address (default 127.0.0.1:9121).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Set a user's password in a `virtual_users_file` (read from standard input).
    #[command(override_usage = "ftpd passwd FILE USER   (the password is read from standard input)")]
    Passwd {
        /// The `virtual_users_file`; created if missing.
        file: PathBuf,
        /// The user name.
        user: String,
    },
    /// Tell what ftpd would do differently from vsftpd with a vsftpd.conf; exit 1 if anything differs.
    CheckConfig {
        /// The vsftpd.conf (or ftpd.conf) to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "--ftpd-worker") {
        let seccomp = args.get(2).is_some_and(|a| a == "seccomp");
        return ExitCode::from(u8::try_from(ftpd::privsep::worker_main(seccomp)).unwrap_or(1));
    }
    let cli = Cli::parse();
    match &cli.command {
        Some(Sub::Passwd { file, user }) => return passwd(file, user),
        Some(Sub::Stats { args }) => return ExitCode::from(u8::try_from(ftpd::stats::main(args)).unwrap_or(1)),
        Some(Sub::CheckConfig { file }) => return check_config(file),
        None => {}
    }
    if let Some(dir) = &cli.man {
        return match write_man_pages(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ftpd --man: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if cli.help_config {
        print!("{}", Config::describe());
        return ExitCode::SUCCESS;
    }
    let filter = log_filter(std::env::var("RUST_LOG").ok());
    let journal = if stderr_is_journal() && !cli.log_json { tracing_journald::layer().ok() } else { None };
    if let Some(journal) = journal {
        // Under systemd: structured entries (SESSION=, PEER=, USER= ...) that
        // `journalctl -u ftpd SESSION=42` can select, instead of text lines.
        use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
        tracing_subscriber::registry()
            .with(filter)
            .with(journal.with_syslog_identifier("ftpd".into()).with_field_prefix(None))
            .init();
    } else if cli.log_json {
        tracing_subscriber::fmt().json().with_writer(std::io::stderr).with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(filter)
            .init();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ftpd: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The log filter: `RUST_LOG`, or `info`. rustls warns about what a peer
/// does: an IP address where a host name belongs (clients connecting by
/// address), a renegotiation attempt (scanners), a warning alert. Every
/// such client is normal, and a failed handshake is logged by ftpd itself
/// with its reason; so rustls's warnings are shown only when `RUST_LOG`
/// names rustls.
fn log_filter(env: Option<String>) -> tracing_subscriber::EnvFilter {
    let mut spec = env.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "info".into());
    if !spec.contains("rustls") {
        spec.push_str(",rustls=error");
    }
    tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("ftpd: RUST_LOG={spec:?} is not a valid log filter ({e}); logging at info");
        "info".into()
    })
}

/// `ftpd passwd FILE USER`: sets USER's password in a `virtual_users_file`,
/// read from standard input (without echo on a terminal).
fn passwd(file: &std::path::Path, user: &str) -> ExitCode {
    let password = match read_password() {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            eprintln!("ftpd passwd: empty password refused");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("ftpd passwd: cannot read the password: {e}");
            return ExitCode::from(2);
        }
    };
    match ftpd::auth::set_virtual_password(file, user, password.as_bytes()) {
        Ok(()) => {
            eprintln!("ftpd passwd: password for {user} set in {}", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ftpd passwd: {e}");
            ExitCode::from(2)
        }
    }
}

/// Whether stderr is connected to the journal: systemd then sets
/// `JOURNAL_STREAM` to that stream's `DEVICE:INODE`.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else { return false };
    let Ok(st) = rustix::fs::fstat(std::io::stderr()) else { return false };
    dev.parse::<u64>().is_ok_and(|d| d == st.st_dev) && ino.parse::<u64>().is_ok_and(|i| i == st.st_ino)
}

/// Tells systemd (`Type=notify`) that the listeners are bound: connections
/// are queued from now on. Without `NOTIFY_SOCKET` this does nothing.
fn notify_ready(addr: SocketAddr) {
    let status = format!("serving on {addr}");
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)])
    {
        warn!("cannot notify systemd: {e}");
    }
}

/// `ftpd check-config FILE`.
fn check_config(file: &std::path::Path) -> ExitCode {
    match ftpd::check::check_file(file) {
        Ok(report) => {
            print!("{}", report.text());
            ExitCode::from(u8::from(!report.same()))
        }
        Err(e) => {
            eprintln!("ftpd check-config: {e}");
            ExitCode::from(2)
        }
    }
}

/// Writes `ftpd.8` (from the parser above plus the sections an operator
/// needs: signals, files, exit status) and `ftpd.conf.5`.
fn write_man_pages(dir: &std::path::Path) -> Result<()> {
    use clap::CommandFactory;
    use roff::{Roff, bold, roman};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let man = clap_mangen::Man::new(Cli::command())
        .section("8")
        .date(ftpd::manual::DATE)
        .manual("System Administration")
        .source(concat!("ftpd ", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let mut r = Roff::new();
    r.control("SH", ["COMMANDS"]);
    for (name, what) in [
        (
            "ftpd [CONFIG] [-o NAME=VALUE]...",
            "Serve, with CONFIG (vsftpd.conf syntax, see ftpd.conf(5)) and the -o settings after it. Without CONFIG: anonymous read-only on 127.0.0.1:2121 from the current directory or --root.",
        ),
        (
            "ftpd check-config FILE",
            "Read a vsftpd.conf and print, line by line, what ftpd does differently: options accepted without effect, options ftpd refuses and why, defaults that differ, unknown names with the closest real ones, and ftpd options that would serve better. Exit 0 when ftpd behaves as vsftpd would, 1 otherwise.",
        ),
        (
            "ftpd stats [--watch SECS] [ADDR...]",
            "Print a running server's metrics (from ftpd_metrics_listen, default 127.0.0.1:9121) as a table, with per-second rates.",
        ),
        (
            "ftpd passwd FILE USER",
            "Set USER's password in the virtual_users_file FILE, read from standard input without echo.",
        ),
        ("ftpd --help-config", "Print every option of ftpd.conf(5) with its type, default and meaning."),
    ] {
        r.control("TP", []).text([bold(name)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["SIGNALS"]);
    for (sig, what) in [
        (
            "SIGHUP",
            "Re-read the configuration and every file it names (banner_file, userlist_file, the TLS certificate and key, ...). Later sessions use the new settings; new rate limits apply to running transfers too. Options that cannot change while running (listen address and port, nopriv_user, ftpd_ebpf, log files, ssl_enable, ...) keep their running values and are logged as needing a restart. A file with an error is refused, logged with file, line and reason, and the old configuration stays.",
        ),
        (
            "SIGTERM, SIGINT",
            "Stop: close the listeners at once, end idle sessions with 421, let running transfers finish for ftpd_shutdown_timeout seconds (default 30), then end the rest (426, 421) and exit 0. A second signal ends them at once; an upload cut off is never published half written under its name when it goes through a temporary or part file.",
        ),
    ] {
        r.control("TP", []).text([bold(sig)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["FILES"]);
    for (file, what) in [
        ("/etc/ftpd/ftpd.conf", "The configuration the packaged service reads (ftpd.conf(5))."),
        (
            "/lib/systemd/system/ftpd.service",
            "The systemd unit. Local users' homes are hidden by ProtectHome=; with local_enable=YES add a drop-in (systemctl edit ftpd) with ProtectHome=no, and ReadWritePaths= for trees users upload to.",
        ),
        (
            "/var/log/ftpd/xferlog, /var/log/ftpd/vsftpd.log",
            "Transfer logs (xferlog_file, vsftpd_log_file), rotated by /etc/logrotate.d/ftpd. ftpd's own log goes to the journal.",
        ),
        ("/srv/ftp", "The anonymous root of the packaged configuration."),
    ] {
        r.control("TP", []).text([bold(file)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["EXIT STATUS"]);
    for (code, what) in [
        (
            "0",
            "Stopped by a signal; or a subcommand succeeded; or check-config found nothing that differs from vsftpd.",
        ),
        ("1", "check-config found a difference; ftpd stats could not reach the server."),
        (
            "2",
            "The configuration was refused (the message names file, line and reason), a port could not be bound, or the command line is wrong.",
        ),
    ] {
        r.control("TP", []).text([bold(code)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["SEE ALSO"]).text([roman("ftpd.conf(5), vsftpd(8), systemd.service(5)")]);
    page.extend_from_slice(r.to_roff().as_bytes());
    man.render_version_section(&mut page)?;
    let w = |name: &str, text: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    w("ftpd.8", &page)?;
    w("ftpd.conf.5", ftpd::manual::conf_page().as_bytes())
}

fn read_password() -> std::io::Result<String> {
    use std::io::BufRead;
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let saved = if tty {
        eprint!("Password: ");
        let t = rustix::termios::tcgetattr(&stdin)?;
        let mut quiet = t.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)?;
        Some(t)
    } else {
        None
    };
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &t);
        eprintln!();
    }
    r?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn config_source(cli: &Cli) -> Result<ftpd::config::ConfigSource> {
    let root = match &cli.root {
        Some(r) => Some(r.to_str().context("--root must be valid UTF-8")?.to_owned()),
        None => None,
    };
    Ok(ftpd::config::ConfigSource { path: cli.config.clone(), settings: cli.settings.clone(), root })
}

/// The anonymous root: `anon_root`, else (as vsftpd) the home of
/// `ftp_username` from the user database, else, for the embedded default
/// only, the current directory.
///
/// With `anonymous_enable=NO` nobody is ever served from it, so, as vsftpd,
/// it is neither looked up nor required to exist: a local-users-only config
/// starts on a machine without `/srv/ftp` or without user `ftp`. The empty
/// path returned then is never opened (anonymous logins are refused).
fn anon_root(cfg: &Config, embedded: bool) -> Result<PathBuf> {
    if !cfg.anonymous_enable {
        return Ok(PathBuf::new());
    }
    let dir = if !cfg.anon_root.is_empty() {
        PathBuf::from(&cfg.anon_root)
    } else if embedded {
        std::env::current_dir().context("reading the current directory")?
    } else {
        match ftpd::auth::lookup(&cfg.ftp_username) {
            Ok(Some(a)) => a.home,
            Ok(None) => bail!(
                "anonymous_enable=YES needs anon_root=DIR (there is no user `{}` (ftp_username) whose home could be used)",
                cfg.ftp_username
            ),
            Err(e) => bail!(
                "anonymous_enable=YES without anon_root=DIR needs the home of ftp_username={}, but the user database \
                 failed: {e}",
                cfg.ftp_username
            ),
        }
    };
    let abs = dir.canonicalize().with_context(|| format!("anonymous root {}", dir.display()))?;
    if !abs.is_dir() {
        bail!("anonymous root {} is not a directory", abs.display());
    }
    Ok(abs)
}

fn run(cli: Cli) -> Result<()> {
    let source = config_source(&cli)?;
    let cfg = source.load().map_err(anyhow::Error::msg)?;
    let root = anon_root(&cfg, cli.config.is_none())?;
    // Before the "serving" line, where an operator looks first.
    for problem in ftpd::access::unservable_roots(&cfg, &root) {
        warn!("{problem}");
    }
    // Checked whole now: a bad line found only at login time would refuse
    // every virtual user with the reason in the log alone.
    if !cfg.virtual_users_file.is_empty() {
        ftpd::auth::virtual_users(std::path::Path::new(&cfg.virtual_users_file))
            .map_err(|e| anyhow::anyhow!("virtual_users_file: {e}"))?;
    }
    let listen_ip: IpAddr = if cfg.listen_ipv6 {
        IpAddr::V6(cfg.listen_address6.unwrap_or(Ipv6Addr::UNSPECIFIED))
    } else {
        IpAddr::V4(cfg.listen_address.unwrap_or(Ipv4Addr::UNSPECIFIED))
    };
    let addr = SocketAddr::new(listen_ip, cfg.listen_port);
    raise_fd_limit(&cfg);
    // Modes are computed from the configured umasks, not inherited.
    rustix::process::umask(rustix::fs::Mode::empty());

    let listener = ftpd::data::bind_control(addr)
        .with_context(|| format!("cannot listen on {addr} (is another server on that port? set listen_port)"))?;
    listener.set_nonblocking(true)?;
    let shown =
        if listen_ip.is_unspecified() { SocketAddr::new(Ipv4Addr::LOCALHOST.into(), cfg.listen_port) } else { addr };
    let shown = match shown {
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
        v4 => v4.to_string(),
    };
    let served = if cfg.anonymous_enable { root.display().to_string() } else { "local users".into() };
    println!("ftpd {} serving {served} on {addr}; try: curl ftp://{shown}/", env!("CARGO_PKG_VERSION"));
    if cfg.background {
        ftpd::process::daemonize().context("fork for background=YES")?;
    }
    let metrics_listener = match cfg.ftpd_metrics_listen {
        None => None,
        Some(at) => {
            let l = std::net::TcpListener::bind(at)
                .with_context(|| format!("cannot listen on ftpd_metrics_listen={at}"))?;
            l.set_nonblocking(true)?;
            Some(l)
        }
    };
    // The data plane and the log files need privilege: before the split.
    let plane = start_plane(&cfg, listen_ip)?;
    let logs = ftpd::xferlog::Logs::open(&cfg).map_err(anyhow::Error::msg)?;
    // Read as root, before the split: the unprivileged front gets the key in
    // memory (inherited across fork) and could not open the file itself.
    let tls = ftpd::tls::Tls::load(&cfg).map_err(anyhow::Error::msg)?;
    if let Some(t) = &tls {
        if t.ktls {
            info!("FTPS on; the kernel offers TLS offload (kTLS), not used yet: rustls encrypts in userspace");
        } else {
            info!("FTPS on; no kernel TLS offload (kTLS) in this kernel: rustls encrypts in userspace");
        }
    }

    let parts = FrontParts { cfg, root, plane, logs, source, tls, listener, metrics_listener };
    if rustix::process::geteuid().is_root() {
        // Privilege separation (docs/ARCHITECTURE.md): this process stays root
        // as the master; its child becomes the unprivileged front, and a new
        // one when a front dies (the master keeps everything a front needs).
        let (cfg, source, root) = (parts.cfg.clone(), parts.source.clone(), parts.root.clone());
        // Opened as root, as the master opens every root: the front opens
        // world-readable anonymous downloads in it itself (worker::Direct).
        // Without it (no anonymous access, or not openable) the worker does.
        let anon_root_fd = cfg.anonymous_enable.then(|| ftpd::fs::Root::open(&root).ok()).flatten();
        // Looked up now, while no thread exists: a front forked later must
        // not depend on locks of the C library's user database. A read-only
        // anonymous server's front acts as ftp_username (see
        // `Config::front_user`), never root: the front parses every byte from
        // the network. Without that account anonymous logins fail anyway
        // (and say why), and the front keeps nopriv_user's identity.
        let wanted = cfg.front_user();
        let nopriv = match ftpd::auth::account(wanted) {
            Some(a) if wanted == cfg.nopriv_user || a.uid != 0 => Some(a),
            None if wanted == cfg.nopriv_user => None,
            _ => {
                warn!(
                    ftp_username = wanted,
                    "ftp_username does not exist or is root: the front runs as nopriv_user (ftpd_anon_fast_path)"
                );
                ftpd::auth::account(&cfg.nopriv_user)
            }
        }
        .ok_or_else(|| anyhow::anyhow!("nopriv_user={} does not exist", cfg.nopriv_user))?;
        let mut parts = Some((parts, anon_root_fd));
        let mut start_front = move || -> std::io::Result<(i32, std::os::fd::OwnedFd)> {
            let (master_end, front_end) = ftpd::ipc::pair()?;
            // The child uses only memory it owns: its copy of `parts`.
            match ftpd::process::fork_front()? {
                Fork::Child => {
                    drop(master_end);
                    let Some((parts, anon_root_fd)) = parts.take() else { std::process::exit(2) };
                    let code = match front_main(parts, anon_root_fd, front_end, &nopriv) {
                        Ok(()) => 0,
                        Err(e) => {
                            eprintln!("ftpd front: {e:#}");
                            2
                        }
                    };
                    std::process::exit(code);
                }
                Fork::Parent(front) => Ok((front, master_end)),
            }
        };
        // The master is the service's main process: it says ready, with
        // its signal handlers in place.
        ftpd::process::install_master_signals();
        notify_ready(addr);
        let code = ftpd::privsep::run_master(cfg, source, root, &mut start_front);
        // Detaches the programs (the plane is in the closure's copy).
        drop(start_front);
        std::process::exit(code);
    }
    warn!("not started as root: no privilege separation; every session acts as this process's user");
    // A reload right after READY waits until the accept loop listens for it
    // (held before the runtime's threads exist, so that they inherit it; a
    // front has it held from its fork).
    let _ = ftpd::process::hold_sighup();
    notify_ready(addr);
    serve(parts, Authority::InProcess)
}

/// What the master keeps for every front it starts: opened with privilege,
/// handed over across fork.
struct FrontParts {
    cfg: Config,
    root: PathBuf,
    plane: Plane,
    logs: ftpd::xferlog::Logs,
    source: ftpd::config::ConfigSource,
    tls: Option<ftpd::tls::Tls>,
    listener: std::net::TcpListener,
    metrics_listener: Option<std::net::TcpListener>,
}

/// A forked front: drops privilege, installs its seccomp filter while it
/// is still one thread (every runtime thread inherits it), then serves.
fn front_main(
    parts: FrontParts,
    anon_root_fd: Option<ftpd::fs::Root>,
    chan: std::os::fd::OwnedFd,
    nopriv: &ftpd::auth::Account,
) -> Result<()> {
    ftpd::privsep::become_front(nopriv).map_err(anyhow::Error::msg)?;
    if nopriv.name == parts.cfg.nopriv_user {
        info!(user = %nopriv.name, "front process running unprivileged; file access through per-user workers");
    } else {
        // As ftp_username the front could change what that user may change:
        // the kernel takes that away before any byte from the network is
        // read. Required where anonymous users may write (every change must
        // go through the worker, after the front's own rule checks);
        // elsewhere it only narrows a front that could not write through
        // FTP anyway.
        let writes = parts.cfg.anon_writes();
        match ftpd::sandbox::forbid_fs_writes() {
            Ok(true) => info!("front may not change any file (Landlock); uploads are written by the file workers"),
            Ok(false) if !writes => {
                warn!("front acting as ftp_username with a partial Landlock write lock (kernel older than Linux 6.12)")
            }
            Ok(false) => anyhow::bail!("front as ftp_username with anonymous writes on: Landlock holds only in part"),
            Err(e) if writes => anyhow::bail!("front as ftp_username with anonymous writes on: {e}"),
            Err(e) => warn!(error = %e, "front acting as ftp_username without a Landlock write lock"),
        }
        match ftpd::sandbox::forbid_attribute_changes() {
            Ok(()) => {}
            Err(e) if writes => anyhow::bail!("front as ftp_username with anonymous writes on: {e}"),
            Err(e) => warn!(error = %e, "front acting as ftp_username may change file attributes"),
        }
        info!(user = %nopriv.name, "front process running unprivileged as ftp_username (ftpd_anon_fast_path): it opens anonymous downloads itself; other file access through per-user workers");
    }
    if parts.cfg.seccomp_sandbox {
        ftpd::sandbox::install(ftpd::sandbox::Role::Front).map_err(anyhow::Error::msg)?;
        info!("seccomp_sandbox: front confined to its system call allow-list");
    }
    serve(parts, Authority::master(chan, anon_root_fd))
}

/// The front's work: the runtime, the metrics endpoint, the accept loop.
fn serve(parts: FrontParts, authority: Authority) -> Result<()> {
    let FrontParts { cfg, root, plane, logs, source, tls, listener, metrics_listener } = parts;
    let addr = listener.local_addr()?;
    // A panic ends its session's task only (tokio catches it); the line
    // goes to the log with the session's fields instead of bare stderr.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("bug: {info}; this session ends, the others go on");
    }));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let settings = Settings::derive(cfg, tls).map_err(anyhow::Error::msg)?;
        let shared = Arc::new(Shared::new(settings, root.clone(), plane, authority, logs, source));
        if let Some(l) = metrics_listener {
            let l = tokio::net::TcpListener::from_std(l)?;
            info!(addr = %l.local_addr()?, "metrics: GET /metrics");
            let s = Arc::clone(&shared);
            let render = move || {
                let bans = s.bans.listing(&s.cfg(), std::time::Instant::now(), ftpd::metrics::BANS_LISTED);
                s.metrics.render(s.kernel(), bans)
            };
            tokio::spawn(ftpd::metrics::serve(l, Arc::new(render)));
        }
        info!(%addr, root = %root.display(), "ftpd listening");
        // The accept loop runs on a worker thread, not in block_on: a session
        // spawned from there starts on the same thread, with no cross-thread
        // wake-up per connection (a quarter of a login's CPU, measured).
        tokio::spawn(server::run(listener, shared, ftpd::process::shutdown_signal())).await?;
        info!("ftpd stopped");
        Ok(())
    });
    // The sessions have ended; a blocking call still running (a worker
    // round trip of a session that was cut off) is not waited for.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: every session holds a
/// control socket, and a transfer up to five more descriptors (passive
/// listener, data socket, file, splice pipe). Says so when the limit is
/// lower than `max_clients` sessions need.
fn raise_fd_limit(cfg: &Config) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let Some(hard) = lim.maximum.filter(|h| lim.current != Some(*h)) {
        lim.current = Some(hard);
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            warn!("cannot raise RLIMIT_NOFILE to {hard}: {e}");
        }
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    // Idle sessions need one descriptor; budget two, plus 64 for ftpd itself.
    let sessions = soft.saturating_sub(64) / 2;
    if cfg.max_clients == 0 || u64::from(cfg.max_clients) > sessions {
        warn!(
            nofile = soft,
            max_clients = cfg.max_clients,
            "RLIMIT_NOFILE allows about {sessions} sessions, fewer than max_clients; raise the hard limit (LimitNOFILE= in systemd)"
        );
    } else {
        info!(nofile = soft, "file descriptor limit");
    }
}

fn start_plane(cfg: &Config, listen_ip: IpAddr) -> Result<Plane> {
    // validate() accepted the value.
    let mode = cfg.ftpd_ebpf;
    if mode == EbpfMode::Off {
        info!("eBPF data plane off (ftpd_ebpf=off): limits enforced in userspace");
        return Ok(Plane::Userspace("ftpd_ebpf=off".into()));
    }
    let loaded = dataplane::interfaces_for(cfg, listen_ip).and_then(|ifaces| Dataplane::load(cfg, ifaces));
    match loaded {
        Ok(dp) => Ok(Plane::Kernel(Box::new(dp))),
        Err(e) if mode == EbpfMode::On => Err(e.context("ftpd_ebpf=on but the eBPF data plane cannot start")),
        Err(e) => {
            warn!("eBPF data plane unavailable, falling back to userspace enforcement: {e:#}");
            Ok(Plane::Userspace(format!("{e:#}")))
        }
    }
}
